//! Running a job of any kind: plan everything, check the limits, then act (or, in a dry
//! run, record). The engine knows no kind: what to do comes from the [`JobKind`].
//!
//! A run has two phases so that `max_actions` can refuse *before anything happens*:
//!
//! 1. **Plan.** For every selected project (concurrently, at most `api.concurrency` at a
//!    time) the kind lists what it needs and decides the actions, each with its rule and
//!    reason, from what it finds and from its state (read here, one record per project).
//!    Decisions not to act are kept as skips so they are recorded too.
//! 2. **Act.** If the plan exceeds the limits the run fails and nothing is done. A dry run
//!    records each action as `planned` and makes no mutating call. Otherwise projects are
//!    processed concurrently (bounded) while the actions *within* a project run one after
//!    the other, as Neon serialises a project's mutations. For each action: its
//!    dependencies must have succeeded, the kind verifies it against a fresh read, its
//!    intent is written to the kind's state, it is written to the ledger as `pending`, the
//!    call is made, and the outcome is written to the state and the ledger. A failure is
//!    recorded and the run goes on with the next action (`partial`).
//!
//! A saved plan ([`SavedPlan`], see [`super::saved`]) changes only what is between the two
//! phases: `plan --out` records the plan (with the facts of every action) as it is recorded
//! in the ledger; `apply` plans only the saved plan's projects, keeps only the fresh actions
//! the saved plan has with the same facts, and records the saved plan's other actions as
//! skipped with the reason. The limits, the ledger, the fresh-read `verify` and the fencing
//! are then the same as for any run.
//!
//! Cancellation ([`RunControl::cancel`]) is checked before each action is begun, so a
//! cancelled run stops between actions and reports what it did; an action already begun
//! finishes its call (bounded by the client's timeout).

use futures::StreamExt;

use super::kind::{ActCx, JobKind, PendingRef, PlanCx};
use super::ledger::{Action, ActionSpec, Ledger, ResourceKind};
use super::limits::Limits;
use super::notice::{self, Candidate, Step};
use super::plan::{JobEnv, PlanError, ProjectPlan, RunClock, RunContext, RunControl, RunError};
use super::saved::SavedPlan;
use super::scope::selected_projects;
use super::state::Recorded;
use crate::config::JobConfig;
use crate::neon::{ApiError, Project, ProjectId};
use crate::store::{ActionCounts, ActionOutcome, RunStatus};

/// How a run ended. The caller passes it to `Store::finish_run`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub status: RunStatus,
    pub counts: ActionCounts,
    pub error: Option<String>,
}

/// How a run's phases ended when nothing failed outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed,
    /// `RunControl::cancel` fired; the run stopped between actions.
    Cancelled,
}

impl Ended {
    /// The run's result from how it ended and what its ledger recorded.
    pub(crate) fn into_result(outcome: Result<Ended, RunError>, ledger: &Ledger) -> RunResult {
        let counts = ledger.counts();
        match outcome {
            Ok(Ended::Completed) => RunResult {
                status: ledger.status(),
                counts,
                error: (counts.failed > 0)
                    .then(|| format!("{} action(s) failed; see the run's actions", counts.failed)),
            },
            Ok(Ended::Cancelled) => RunResult {
                status: RunStatus::Interrupted,
                counts,
                error: Some(format!(
                    "cancelled: stopped between actions after {} succeeded and {} failed; \
                     the rest of the plan was not attempted",
                    counts.succeeded, counts.failed
                )),
            },
            Err(e) => RunResult {
                status: RunStatus::Failed,
                counts,
                error: Some(e.to_string()),
            },
        }
    }
}

/// One project's plan with the kind's state it was made from.
struct Planned<K: JobKind> {
    plan: ProjectPlan<K::Action>,
    /// The project's name (keeps may name a project by it).
    project_name: String,
    /// `None`: the kind keeps no state for this job, or it could not be read.
    state: Option<Recorded<K::State>>,
}

/// Runs one job of kind `K` to its end. Never panics on API or store trouble: everything
/// ends in the returned status (`failed` with the error when the run could not even start
/// acting).
pub(crate) async fn run<K: JobKind>(
    kind: &K,
    env: &JobEnv,
    job: &JobConfig,
    ctx: &RunContext,
    control: &RunControl,
    ledger: &Ledger,
    saved: SavedPlan<'_>,
) -> Result<Ended, RunError> {
    let clock = RunClock::start(control, ctx.now);
    // Phase 1: plan every project (bounded concurrency, read-only calls). Planning only
    // reads, so a cancellation may simply drop it.
    let planning = async {
        let mut projects = selected_projects(&env.client, job).await?;
        if let SavedPlan::Apply(allowed) = saved {
            // Only the projects the saved plan acts in.
            let wanted = allowed.projects();
            projects.retain(|p| wanted.contains(p.id.as_str()));
        }
        let cx = PlanCx::new(env, ctx);
        let cx = &cx;
        let results: Vec<Result<Planned<K>, (ProjectId, PlanError)>> =
            futures::stream::iter(projects.into_iter().map(|p| async move {
                plan_project(kind, cx, job, &p)
                    .await
                    .map_err(|e| (p.id.clone(), e))
            }))
            .buffer_unordered(env.concurrency.max(1))
            .collect()
            .await;
        Ok::<_, RunError>(results)
    };
    let results = tokio::select! {
        r = planning => r?,
        _ = control.cancel.cancelled() => return Ok(Ended::Cancelled),
    };

    let mut plans = Vec::new();
    for r in results {
        match r {
            Ok(p) => plans.push(p),
            Err((project, e)) => {
                // Its notice marks are left as they are: whether they are still due is unknown.
                // One project's listing failing does not stop the others.
                tracing::warn!(job = %job.name, %project, error = %e, "planning failed for project");
                let spec = ActionSpec {
                    resource_kind: ResourceKind::Project,
                    resource_id: project.to_string(),
                    resource_name: None,
                    project_id: Some(project.to_string()),
                    action: Action::Plan,
                    rule: None,
                    reason: "listing the project's resources".into(),
                };
                let pending = ledger.begin(&spec).await?;
                ledger.failed(pending, &e.to_string()).await?;
            }
        }
    }
    // Deterministic order for the ledger and for tests.
    plans.sort_by(|a, b| a.plan.project_id.cmp(&b.plan.project_id));
    match saved {
        SavedPlan::None => {}
        SavedPlan::Record(recording) => {
            let mut r = recording
                .lock()
                .expect("the recording lock is never poisoned: no panics while held");
            for p in &plans {
                r.add(
                    &p.plan.project_id,
                    &p.plan.actions,
                    &p.plan.skips,
                    K::is_destructive,
                );
            }
        }
        SavedPlan::Apply(allowed) => {
            // Exactly the saved plan's actions that still hold; the others are recorded
            // as skipped with the reason, and the fresh plan's own skips (of resources the
            // saved plan does not act on) are not part of this run.
            let mut not_done = allowed.unplanned_projects(
                &plans
                    .iter()
                    .map(|p| p.plan.project_id.to_string())
                    .collect(),
            );
            for p in &mut plans {
                let fresh = std::mem::take(&mut p.plan.actions);
                let (kept, skipped) = allowed.restrict(&p.plan.project_id, fresh, &p.plan.skips);
                p.plan.actions = kept;
                p.plan.skips = Vec::new();
                not_done.extend(skipped);
            }
            ledger.record_all(&not_done, ActionOutcome::Skipped).await?;
        }
    }

    // Phase 2a: the limits, before anything is done. `max_actions` bounds every action;
    // `max_actions_percent` bounds the destructive ones over what they could destroy.
    let planned: usize = plans.iter().map(|p| p.plan.actions.len()).sum();
    let destructive: usize = plans
        .iter()
        .flat_map(|p| &p.plan.actions)
        .filter(|a| K::is_destructive(&a.action))
        .count();
    let matched: usize = plans.iter().map(|p| p.plan.matched).sum();
    Limits::of(job).check(planned, destructive, matched)?;

    // Skips are recorded in dry runs and real runs alike; these rows (and a dry run's
    // planned actions) are final when written, so each kind is one batch, one transaction.
    let skips: Vec<ActionSpec> = plans
        .iter()
        .flat_map(|p| p.plan.skips.iter().cloned())
        .collect();
    ledger.record_all(&skips, ActionOutcome::Skipped).await?;
    for (spec, error) in plans.iter().flat_map(|p| p.plan.failures.iter()) {
        let pending = ledger.begin(spec).await?;
        ledger.failed(pending, error).await?;
    }
    // The notice step: keeps, and the job's `notice` period (see `notice`).
    let steps = notice_step(env, job, ctx, ledger, &plans).await?;
    if ctx.dry_run {
        let (mut planned, mut held) = (Vec::new(), Vec::new());
        for (p, steps) in plans.iter().zip(&steps) {
            for (a, step) in p.plan.actions.iter().zip(steps) {
                match step {
                    Step::Hold(why) => {
                        let mut spec = a.spec.clone();
                        spec.reason = format!("{}; {why}", spec.reason);
                        held.push(spec);
                    }
                    _ => planned.push(a.spec.clone()),
                }
            }
        }
        ledger.record_all(&held, ActionOutcome::Skipped).await?;
        ledger.record_all(&planned, ActionOutcome::Planned).await?;
        return Ok(Ended::Completed);
    }
    if control.cancel.is_cancelled() {
        return Ok(Ended::Cancelled);
    }

    // Phase 2b: act. Projects concurrently, actions within a project in order.
    // The futures are collected first so that no closure type is part of the stream held
    // across the await: rustc cannot prove such a closure's future `Send` for every
    // lifetime of the borrowed plan (rust-lang/rust#64552), and the scheduler needs
    // `run_job` to be `Send` to await it on the runtime's worker threads.
    let clock = &clock;
    let per_project: Vec<_> = plans
        .into_iter()
        .zip(steps)
        .map(|(p, steps)| act_on_project(kind, env, (job, ctx), clock, ledger, p, steps))
        .collect();
    let results: Vec<Result<Ended, RunError>> = futures::stream::iter(per_project)
        .buffer_unordered(env.concurrency.max(1))
        .collect()
        .await;
    let mut ended = Ended::Completed;
    for r in results {
        if r? == Ended::Cancelled {
            ended = Ended::Cancelled;
        }
    }
    Ok(ended)
}

/// Reads the kind's state of a project and has the kind plan it.
async fn plan_project<K: JobKind>(
    kind: &K,
    cx: &PlanCx<'_>,
    job: &JobConfig,
    project: &Project,
) -> Result<Planned<K>, PlanError> {
    if !kind.keeps_state() {
        let mut none = K::State::default();
        let plan = kind.plan_project(cx, project, Ok(&mut none)).await?;
        return Ok(Planned {
            plan,
            project_name: project.name.clone(),
            state: None,
        });
    }
    let key = format!("{}/{}", K::STATE_KEY, project.id);
    match Recorded::<K::State>::load(cx.env.store.as_ref(), cx.ctx.run_id, &job.name, &key).await {
        Ok(mut state) => {
            let plan = kind.plan_project(cx, project, Ok(state.get_mut())).await?;
            Ok(Planned {
                plan,
                project_name: project.name.clone(),
                state: Some(state),
            })
        }
        Err(e) => {
            tracing::warn!(job = %job.name, project = %project.id, error = %e, "cannot read the job's state of the project");
            let plan = kind.plan_project(cx, project, Err(&e)).await?;
            Ok(Planned {
                plan,
                project_name: project.name.clone(),
                state: None,
            })
        }
    }
}

/// Carries out one project's planned actions in order (Neon serialises mutations within a
/// project anyway), each written to the kind's state and the ledger before and after.
async fn act_on_project<K: JobKind>(
    kind: &K,
    env: &JobEnv,
    (job, ctx): (&JobConfig, &RunContext),
    clock: &RunClock<'_>,
    ledger: &Ledger,
    planned: Planned<K>,
    steps: Vec<Step>,
) -> Result<Ended, RunError> {
    let Planned {
        plan: p, mut state, ..
    } = planned;
    let store = env.store.as_ref();
    if let Some(s) = &mut state {
        if let Err(e) = s.save_planned(store).await {
            // Another run changed the record since this one planned from it: acting on
            // the old plan could undo what that run did. Nothing is done in the project.
            tracing::warn!(project = %p.project_id, error = %e, "not acting on the project");
            for a in &p.actions {
                let pending = ledger.begin(&a.spec).await?;
                ledger
                    .failed(pending, &format!("not attempted: {e}"))
                    .await?;
            }
            return Ok(Ended::Completed);
        }
    }
    let cx = ActCx {
        env,
        project: &p.project_id,
        clock,
    };
    let mut succeeded = vec![false; p.actions.len()];
    for (i, a) in p.actions.iter().enumerate() {
        if clock.cancelled() {
            return Ok(Ended::Cancelled);
        }
        if let Some(Step::Hold(why)) = steps.get(i) {
            let mut spec = a.spec.clone();
            spec.reason = format!("{}; {why}", spec.reason);
            ledger.record_all(&[spec], ActionOutcome::Skipped).await?;
            continue;
        }
        if let Some(dep) = a.requires.iter().find(|d| !succeeded[**d]) {
            let before = &p.actions[*dep];
            let mut spec = a.spec.clone();
            spec.reason = format!(
                "{}; not attempted: {} (it depends on {} {} {}, which did not succeed)",
                spec.reason,
                K::blocked_by(before),
                before.spec.action,
                before.spec.resource_kind,
                before
                    .spec
                    .resource_name
                    .as_deref()
                    .unwrap_or(&before.spec.resource_id)
            );
            ledger.record_all(&[spec], ActionOutcome::Skipped).await?;
            continue;
        }
        match kind.verify(&cx, &a.action).await {
            Ok(None) => {}
            Ok(Some(refusal)) => {
                let mut spec = a.spec.clone();
                spec.reason = format!("{}; {refusal}", spec.reason);
                ledger.record_all(&[spec], ActionOutcome::Skipped).await?;
                continue;
            }
            Err(e) => {
                let pending = ledger.begin(&a.spec).await?;
                ledger
                    .failed(pending, &format!("re-reading before acting: {e}"))
                    .await?;
                continue;
            }
        }
        if let Some(s) = &mut state {
            // Written before the call: if the daemon dies during it, the next run finds
            // the intent and reconciles it with what Neon has.
            if let Err(e) = s.update(store, |st| kind.intend(st, &a.action)).await {
                let pending = ledger.begin(&a.spec).await?;
                ledger
                    .failed(
                        pending,
                        &format!("not attempted: the intent could not be recorded: {e}"),
                    )
                    .await?;
                continue;
            }
        }
        let pending = ledger.begin(&a.spec).await?;
        match kind.perform(&cx, &a.action).await {
            Ok(done) => {
                let recorded = match &mut state {
                    Some(s) => {
                        s.update(store, |st| kind.record(st, &a.action, &done))
                            .await
                    }
                    None => Ok(()),
                };
                ledger
                    .succeeded(pending, K::detail(&done).as_deref())
                    .await?;
                succeeded[i] = true;
                if let Some(Step::ActThenDrop(key)) = steps.get(i) {
                    // Its notice is spent. Should this fail, the next run finds the
                    // resource gone (or no longer due) and drops the mark then.
                    if let Err(e) = env
                        .store
                        .write_notices(ctx.run_id, &job.name, &[], std::slice::from_ref(key), &[])
                        .await
                    {
                        tracing::warn!(project = %p.project_id, resource = %a.spec.resource_id, error = %e, "cannot drop the notice mark of an action taken");
                    }
                }
                if let Err(e) = recorded {
                    tracing::error!(project = %p.project_id, action = a.spec.action.as_str(), resource = %a.spec.resource_id, error = %e, "the action succeeded but the job's record of it could not be written");
                    return Err(RunError::State(e));
                }
            }
            Err(e) if e.may_have_succeeded() || matches!(e, ApiError::Decode { .. }) => {
                // The call may have been carried out: ask Neon before recording anything.
                let spec = &a.spec;
                let pending_ref = PendingRef {
                    action: spec.action,
                    project_id: p.project_id.as_str(),
                    resource_id: &spec.resource_id,
                    resource_name: spec.resource_name.as_deref(),
                };
                match K::check_outcome(env, &pending_ref).await {
                    Ok(r) => {
                        let detail = format!("{}; checked with Neon after: {e}", r.detail);
                        if r.outcome == ActionOutcome::Succeeded {
                            succeeded[i] = true;
                        }
                        ledger.resolved(pending, r.outcome, &detail).await?
                    }
                    Err(check) => {
                        let detail =
                            format!("{e}; Neon could not be asked whether it happened ({check})");
                        ledger
                            .resolved(pending, ActionOutcome::Unknown, &detail)
                            .await?
                    }
                }
            }
            Err(e) => ledger.failed(pending, &e.to_string()).await?,
        }
    }
    Ok(Ended::Completed)
}

/// Runs the notice step over every project's plan (see [`notice`]) and writes what it
/// decided: new marks, their announcement and dropped marks in one transaction, and the
/// dropped marks in the ledger. A dry run writes nothing but the ledger rows it is shown by.
async fn notice_step<K: JobKind>(
    env: &JobEnv,
    job: &JobConfig,
    ctx: &RunContext,
    ledger: &Ledger,
    plans: &[Planned<K>],
) -> Result<Vec<Vec<Step>>, RunError> {
    let destructive = plans
        .iter()
        .flat_map(|p| &p.plan.actions)
        .any(|a| K::is_destructive(&a.action));
    if !destructive && job.notice.is_none() {
        return Ok(plans
            .iter()
            .map(|p| vec![Step::Act; p.plan.actions.len()])
            .collect());
    }
    let keeps = if destructive {
        env.store.list_keeps().await?
    } else {
        Vec::new()
    };
    let marks = match job.notice {
        Some(_) => env.store.notice_marks(&job.name).await?,
        None => Vec::new(),
    };
    let candidates: Vec<Option<Candidate<'_>>> = plans
        .iter()
        .flat_map(|p| {
            p.plan.actions.iter().map(|a| {
                K::is_destructive(&a.action).then(|| Candidate {
                    project_name: &p.project_name,
                    spec: &a.spec,
                    on_branch: K::on_branch(&a.action),
                    under_notice: K::under_notice(&a.action),
                })
            })
        })
        .collect();
    let projects = plans
        .iter()
        .map(|p| p.plan.project_id.to_string())
        .collect();
    let decision = notice::decide(
        &job.name,
        ctx.run_id,
        ctx.now,
        job.notice,
        &keeps,
        &marks,
        &candidates,
        &projects,
    );
    let mut steps = decision.steps.into_iter();
    let per_project: Vec<Vec<Step>> = plans
        .iter()
        .map(|p| steps.by_ref().take(p.plan.actions.len()).collect())
        .collect();
    if !decision.new_marks.is_empty() || !decision.dropped.is_empty() {
        let dropped_rows: Vec<ActionSpec> = decision
            .dropped
            .iter()
            .filter(|(_, why)| why.starts_with("notice of"))
            .map(|(m, why)| notice::dropped_spec(m, why))
            .collect();
        if !ctx.dry_run {
            let notes = crate::notify::notice(job, ctx.run_id, &decision.new_marks, ctx.now);
            let keys: Vec<_> = decision.dropped.iter().map(|(m, _)| m.key()).collect();
            env.store
                .write_notices(ctx.run_id, &job.name, &decision.new_marks, &keys, &notes)
                .await?;
            crate::telemetry::events::NoticeGiven {
                job: &job.name,
                run_id: ctx.run_id,
                marked: decision.new_marks.len(),
                dropped: keys.len(),
                sinks: notes.len(),
            }
            .emit();
            ledger
                .record_all(&dropped_rows, ActionOutcome::Skipped)
                .await?;
        }
    }
    Ok(per_project)
}
