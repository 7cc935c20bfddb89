//! Running a job: plan everything, check the limits, then act (or, in a dry run, record).
//!
//! A run has two phases so that `max_actions` can refuse *before anything happens*:
//!
//! 1. **Plan.** For every selected project (concurrently, at most `api.concurrency` at a
//!    time) list what the job needs and decide the actions, each with its rule and reason.
//!    Decisions not to act (a disabled endpoint, a parent with kept children) are kept as
//!    skips so they are recorded too.
//! 2. **Act.** If the plan exceeds the limits the run fails and nothing is done. A dry run
//!    records each action as `planned` and makes no mutating call. Otherwise projects are
//!    processed concurrently (bounded) while the actions *within* a project run one after
//!    the other, each waiting for the operations Neon returns, as Neon serialises a
//!    project's mutations. Each action is written to the ledger before the call and updated
//!    after; a failure is recorded and the run goes on with the next action (`partial`).
//!
//! Acting is careful about the plan being old by the time it is carried out:
//! - An action can depend on earlier actions of its project ([`PlannedAction::requires`]):
//!   a branch's retention deletes depend on its new snapshot, a parent's delete on its
//!   children's. When a dependency did not succeed, the action is skipped with the reason.
//! - Before a branch is deleted it is read again: a branch that became default or
//!   protected, or got children, since the listing is not deleted.
//! - Times handed to Neon (`expires_at`) are computed when the call is made, not when the
//!   run was planned.
//! - Cancellation ([`RunControl::cancel`]) is checked before each action is begun, so a
//!   cancelled run stops between actions and reports what it did; an action already begun
//!   finishes its call (bounded by the client's timeout).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::ledger::{ActionSpec, Ledger};
use super::limits::Limits;
use super::select::{
    BranchSelector, ComputeActivity, DefaultBranch, NamePattern, ProjectFacts, ProjectSelector,
    SelectorError,
};
use crate::config::{DefaultBranchFilter, JobConfig, JobSpec};
use crate::neon::{
    ApiError, BranchId, BranchUpdate, EndpointId, EndpointState, NeonClient, Operation, OrgId,
    Project, ProjectFilter, ProjectId, SnapshotId, SnapshotRequest,
};
use crate::store::{ActionCounts, ActionOutcome, RunId, RunStatus, Store};

/// What every run needs from the daemon.
#[derive(Clone)]
pub struct JobEnv {
    pub client: NeonClient,
    pub store: Arc<dyn Store>,
    /// Projects processed at the same time (`api.concurrency`).
    pub concurrency: usize,
    /// How long to wait for Neon's operations (and for a locked project to become idle).
    pub operation_deadline: Duration,
}

/// One run of one job, as claimed by the scheduler.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: RunId,
    /// The tick the run is for: snapshot names are rendered from it, so a re-run of the
    /// same tick finds what an interrupted run made.
    pub scheduled_for: DateTime<Utc>,
    /// "Now" for ages and windows (the wall clock in production, the emulator's clock in
    /// tests).
    pub now: DateTime<Utc>,
    /// The job's `dry_run` or a global `plan`.
    pub dry_run: bool,
}

/// What the daemon controls while a run is under way (separate from [`RunContext`], which
/// says *what* to run).
#[derive(Clone, Default)]
pub struct RunControl {
    /// Cancelled when the run must stop (timeout, `concurrency = "replace"`, shutdown). The
    /// run stops before its next action and returns `interrupted` with what it did.
    pub cancel: CancellationToken,
    /// "Now" while acting (times handed to Neon are computed from it when the call is
    /// made). `None`: the run's `now` plus the (tokio) time elapsed since the run started.
    pub clock: Option<Arc<dyn crate::scheduler::Clock>>,
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("cancelled", &self.cancel.is_cancelled())
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// The time source of one run's act phase.
struct ActClock<'a> {
    control: &'a RunControl,
    base: DateTime<Utc>,
    started: tokio::time::Instant,
}

impl ActClock<'_> {
    fn now(&self) -> DateTime<Utc> {
        match &self.control.clock {
            Some(c) => c.now(),
            None => {
                self.base
                    + chrono::Duration::from_std(self.started.elapsed())
                        .unwrap_or(chrono::Duration::zero())
            }
        }
    }
}

/// How a run ended. The caller passes it to `Store::finish_run`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub status: RunStatus,
    pub counts: ActionCounts,
    pub error: Option<String>,
}

/// A mutating call a plan wants made.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    DeleteBranch(BranchId),
    /// Set the branch's `expires_at` to the planned time, or, if that is no longer far
    /// enough ahead when the call is made, to the earliest time Neon accepts.
    SetBranchExpiry(BranchId, DateTime<Utc>),
    /// Take back an `expires_at` this job set (`expires_at: null`).
    ClearBranchExpiry(BranchId),
    CreateSnapshot {
        branch: BranchId,
        name: String,
        /// Neon deletes the snapshot this long after it is made (computed at the call).
        expires_in: Option<Duration>,
    },
    DeleteSnapshot(SnapshotId),
    SuspendEndpoint(EndpointId),
    StartEndpoint(EndpointId),
}

impl Op {
    /// Whether the action can destroy something (the numerator of `max_actions_percent`):
    /// deletes, suspends, and native expiry (Neon deletes the branch when it expires).
    /// Creates, starts and taking back an expiry this job set only count towards
    /// `max_actions`.
    pub fn is_destructive(&self) -> bool {
        match self {
            Op::DeleteBranch(_)
            | Op::SetBranchExpiry(..)
            | Op::DeleteSnapshot(_)
            | Op::SuspendEndpoint(_) => true,
            Op::ClearBranchExpiry(_) | Op::CreateSnapshot { .. } | Op::StartEndpoint(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlannedAction {
    pub spec: ActionSpec,
    pub op: Op,
    /// Indices (into the project's `actions`, all earlier than this one) of actions that
    /// must have succeeded in this run for this one to be attempted.
    pub requires: Vec<usize>,
}

impl PlannedAction {
    pub fn new(spec: ActionSpec, op: Op) -> Self {
        PlannedAction {
            spec,
            op,
            requires: Vec::new(),
        }
    }
}

/// Why an action is skipped when `dep` did not succeed.
fn blocked_by(dep: &PlannedAction) -> String {
    match &dep.op {
        Op::CreateSnapshot { .. } => "new snapshot was not created".to_string(),
        Op::DeleteBranch(_) => format!(
            "its child branch {} was not deleted in this run",
            dep.spec
                .resource_name
                .as_deref()
                .unwrap_or(&dep.spec.resource_id)
        ),
        _ => format!(
            "{} of {} did not succeed in this run",
            dep.spec.action, dep.spec.resource_id
        ),
    }
}

/// The plan for one project.
#[derive(Debug, Clone)]
pub struct ProjectPlan {
    pub project_id: ProjectId,
    pub actions: Vec<PlannedAction>,
    pub skips: Vec<ActionSpec>,
    /// The resources the plan's destructive actions could destroy: the base of
    /// `max_actions_percent`. Matched branches (expire), matched endpoints (suspend), or the
    /// snapshots this job owns of the matched branches (snapshot retention).
    pub matched: usize,
    /// Parts of the plan that could not be decided (e.g. the job's state could not be
    /// read), with the error: recorded as failed actions, so the run ends `partial`.
    pub failures: Vec<(ActionSpec, String)>,
    /// `snapshot_branches`: the job's record of the snapshots it made in this project.
    pub(crate) snapshots: Option<super::snapshot::Ownership>,
}

impl ProjectPlan {
    pub fn new(project_id: ProjectId) -> Self {
        ProjectPlan {
            project_id,
            actions: Vec::new(),
            skips: Vec::new(),
            matched: 0,
            failures: Vec::new(),
            snapshots: None,
        }
    }
}

/// Errors that end a run before any action (listing projects failed, limits exceeded, bad
/// selectors).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Limit(#[from] super::limits::LimitExceeded),
    #[error("selector: {0}")]
    Selector(#[from] SelectorError),
    #[error("listing projects: {0}")]
    Projects(ApiError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A job's state in the store is not what it wrote.
    #[error("job state: {0}")]
    State(String),
}

/// Why one project could not be planned (the run goes on with the others).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The job's own state in the store cannot be read.
    #[error("{0}")]
    State(String),
}

pub(crate) fn project_selector(job: &JobConfig) -> Result<ProjectSelector, SelectorError> {
    let p = &job.selectors.projects;
    Ok(ProjectSelector {
        ids: p.ids.clone(),
        org_id: p.org_id.clone(),
        names: NamePattern::globs("selectors.projects.names", &p.names.patterns)?,
        name_regex: match &p.name_regex {
            Some(r) => Some(NamePattern::regex(
                "selectors.projects.name_regex",
                r.as_str(),
            )?),
            None => None,
        },
        exclude_ids: p.exclude_ids.clone(),
        exclude_names: NamePattern::globs(
            "selectors.projects.exclude_names",
            &p.exclude_names.patterns,
        )?,
    })
}

/// The name part of the branch selector (age and activity are the jobs' business).
pub(crate) fn branch_selector(job: &JobConfig) -> Result<BranchSelector, SelectorError> {
    let b = &job.selectors.branches;
    Ok(BranchSelector {
        names: NamePattern::globs("selectors.branches.names", &b.names.patterns)?,
        exclude_names: NamePattern::globs("selectors.branches.exclude", &b.exclude.patterns)?,
        exclude_ids: Vec::new(),
        default_branch: match b.default {
            DefaultBranchFilter::Any => DefaultBranch::Any,
            DefaultBranchFilter::Only => DefaultBranch::Only,
            DefaultBranchFilter::Exclude => DefaultBranch::Exclude,
        },
        ttl: None,
        idle_ttl: None,
    })
}

/// The selector's own `older_than` / `inactive_for` filters (they narrow; the expire job's
/// `ttl` / `idle_ttl` are the reasons to act).
pub(crate) fn passes_age_filters(
    job: &JobConfig,
    now: DateTime<Utc>,
    created_at: DateTime<Utc>,
    last_activity: DateTime<Utc>,
) -> bool {
    let b = &job.selectors.branches;
    b.older_than
        .is_none_or(|d| super::select::age(now, created_at) > d)
        && b.inactive_for
            .is_none_or(|d| super::select::age(now, last_activity) > d)
}

/// A branch's last activity from the project's endpoints.
pub(crate) fn branch_last_activity(
    now: DateTime<Utc>,
    branch: &crate::neon::Branch,
    endpoints: &[crate::neon::Endpoint],
) -> DateTime<Utc> {
    super::select::last_activity(
        now,
        branch.updated_at,
        endpoints
            .iter()
            .filter(|e| e.branch_id == branch.id)
            .map(|e| ComputeActivity {
                active: e.current_state == EndpointState::Active,
                last_active: e.last_active,
            }),
    )
}

pub(crate) fn limits(job: &JobConfig) -> Limits {
    Limits {
        max_actions: job.limits.max_actions.map(u64::from),
        max_actions_percent: job.limits.max_actions_percent,
    }
}

/// The projects the job's project selector picks, in the API's order.
pub(crate) async fn selected_projects(
    env: &JobEnv,
    job: &JobConfig,
) -> Result<Vec<Project>, RunError> {
    let selector = project_selector(job)?;
    let filter = ProjectFilter {
        org_id: job.selectors.projects.org_id.clone().map(OrgId::from),
        search: None,
    };
    let all: Vec<Project> = env
        .client
        .list_projects(filter)
        .try_collect()
        .await
        .map_err(RunError::Projects)?;
    Ok(all
        .into_iter()
        .filter(|p| {
            let facts = ProjectFacts {
                id: p.id.as_str(),
                name: &p.name,
                org_id: p.org_id.as_ref().map(|o| o.as_str()),
            };
            let sel = selector.select(&facts);
            if let super::select::Selection::Excluded(w) = &sel {
                tracing::debug!(job = %job.name, project = %p.id, reason = %w.reason, "project excluded");
            }
            sel.is_selected()
        })
        .collect())
}

/// Runs one job to its end. Never panics on API or store trouble: everything ends in the
/// returned status (`failed` with the error when the run could not even start acting).
///
/// The run cannot be cancelled and takes "now" from `ctx`; the daemon uses
/// [`run_job_with`].
pub async fn run_job(env: &JobEnv, job: &JobConfig, ctx: RunContext) -> RunResult {
    run_job_with(env, job, ctx, &RunControl::default()).await
}

/// How a run's phases ended when nothing failed outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Completed,
    /// `RunControl::cancel` fired; the run stopped between actions.
    Cancelled,
}

/// [`run_job`] under the daemon's control: `control.cancel` stops the run before its next
/// action (it then ends `interrupted`, with the counts of what it did), and
/// `control.clock` is "now" when acting.
pub async fn run_job_with(
    env: &JobEnv,
    job: &JobConfig,
    ctx: RunContext,
    control: &RunControl,
) -> RunResult {
    let ledger = Ledger::new(env.store.clone(), ctx.run_id, &job.name, ctx.dry_run);
    let outcome = match &job.spec {
        // Collection only reads Neon and upserts idempotently: dropping it midway is safe.
        JobSpec::CollectConsumption(spec) => tokio::select! {
            r = super::consumption::run(env, job, spec, &ctx, &ledger) => r.map(|()| Ended::Completed),
            _ = control.cancel.cancelled() => Ok(Ended::Cancelled),
        },
        _ => run_planned(env, job, &ctx, control, &ledger).await,
    };
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
                "cancelled: stopped between actions after {} succeeded and {} failed; the \
                 rest of the plan was not attempted",
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

async fn run_planned(
    env: &JobEnv,
    job: &JobConfig,
    ctx: &RunContext,
    control: &RunControl,
    ledger: &Ledger,
) -> Result<Ended, RunError> {
    let clock = ActClock {
        control,
        base: ctx.now,
        started: tokio::time::Instant::now(),
    };
    // Phase 1: plan every project (bounded concurrency, read-only calls). Planning only
    // reads, so a cancellation may simply drop it.
    let planning = async {
        let projects = selected_projects(env, job).await?;
        let branch_sel = branch_selector(job)?;
        let branch_sel = &branch_sel;
        let results: Vec<Result<ProjectPlan, (ProjectId, PlanError)>> =
            futures::stream::iter(projects.into_iter().map(|p| async move {
                let id = p.id.clone();
                plan_project(env, job, ctx, branch_sel, &p)
                    .await
                    .map_err(|e| (id, e))
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
                // One project's listing failing does not stop the others.
                tracing::warn!(job = %job.name, %project, error = %e, "planning failed for project");
                let spec = ActionSpec {
                    resource_kind: "project",
                    resource_id: project.to_string(),
                    resource_name: None,
                    project_id: Some(project.to_string()),
                    action: "plan",
                    rule: None,
                    reason: "listing the project's resources".into(),
                };
                let pending = ledger.begin(&spec).await?;
                ledger.failed(pending, &e.to_string()).await?;
            }
        }
    }
    // Deterministic order for the ledger and for tests.
    plans.sort_by(|a, b| a.project_id.cmp(&b.project_id));

    // Phase 2a: the limits, before anything is done. `max_actions` bounds every action;
    // `max_actions_percent` bounds the destructive ones over what they could destroy.
    let planned: usize = plans.iter().map(|p| p.actions.len()).sum();
    let destructive: usize = plans
        .iter()
        .flat_map(|p| &p.actions)
        .filter(|a| a.op.is_destructive())
        .count();
    let matched: usize = plans.iter().map(|p| p.matched).sum();
    limits(job).check(planned, destructive, matched)?;

    // Skips are recorded in dry runs and real runs alike; these rows (and a dry run's
    // planned actions) are final when written, so each kind is one batch, one transaction.
    let skips: Vec<ActionSpec> = plans.iter().flat_map(|p| p.skips.iter().cloned()).collect();
    ledger.record_all(&skips, ActionOutcome::Skipped).await?;
    for (spec, error) in plans.iter().flat_map(|p| p.failures.iter()) {
        let pending = ledger.begin(spec).await?;
        ledger.failed(pending, error).await?;
    }
    if ctx.dry_run {
        let planned: Vec<ActionSpec> = plans
            .iter()
            .flat_map(|p| p.actions.iter().map(|a| a.spec.clone()))
            .collect();
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
        .iter()
        .map(|p| act_on_project(env, job, clock, ledger, p))
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

/// Carries out one project's planned actions in order (Neon serialises mutations within a
/// project anyway), each written to the ledger before and after.
async fn act_on_project(
    env: &JobEnv,
    job: &JobConfig,
    clock: &ActClock<'_>,
    ledger: &Ledger,
    p: &ProjectPlan,
) -> Result<Ended, RunError> {
    let mut done = Vec::new();
    let mut succeeded = vec![false; p.actions.len()];
    let mut ownership = p.snapshots.clone();
    if let Some(o) = &mut ownership {
        o.save_if_changed(env, &job.name).await?;
    }
    let mut ended = Ended::Completed;
    for (i, a) in p.actions.iter().enumerate() {
        if clock.control.cancel.is_cancelled() {
            ended = Ended::Cancelled;
            break;
        }
        if let Some(dep) = a.requires.iter().find(|d| !succeeded[**d]) {
            let before = &p.actions[*dep];
            let mut spec = a.spec.clone();
            spec.reason = format!(
                "{}; not attempted: {} (it depends on {} {} {}, which did not succeed)",
                spec.reason,
                blocked_by(before),
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
        if let Op::DeleteBranch(b) = &a.op {
            match recheck_branch(env, &p.project_id, b).await {
                Ok(None) => {}
                Ok(Some(refusal)) => {
                    let mut spec = a.spec.clone();
                    spec.reason = format!("{}; not deleted: {refusal}", spec.reason);
                    ledger.record_all(&[spec], ActionOutcome::Skipped).await?;
                    continue;
                }
                Err(e) => {
                    let pending = ledger.begin(&a.spec).await?;
                    ledger
                        .failed(
                            pending,
                            &format!("re-reading the branch before deleting it: {e}"),
                        )
                        .await?;
                    continue;
                }
            }
        }
        if let (Op::CreateSnapshot { branch, name, .. }, Some(o)) = (&a.op, &mut ownership) {
            // Written before the call: if the daemon dies during it, the next run adopts a
            // snapshot with exactly this name from this branch as ours.
            o.attempting(branch, name);
            o.save_if_changed(env, &job.name).await?;
        }
        let pending = ledger.begin(&a.spec).await?;
        match execute(env, &p.project_id, &a.op, clock).await {
            Ok(result) => {
                if let Some(o) = &mut ownership {
                    match (&a.op, &result) {
                        (Op::CreateSnapshot { branch, name, .. }, Executed::Created(id)) => {
                            o.created(branch, name, id)
                        }
                        (Op::DeleteSnapshot(id), _) => o.deleted(id),
                        _ => {}
                    }
                    o.save_if_changed(env, &job.name).await?;
                }
                ledger
                    .succeeded(pending, result.detail().as_deref())
                    .await?;
                succeeded[i] = true;
                let mut a = a.clone();
                if let (Op::SetBranchExpiry(b, _), Executed::ExpirySet(sent)) = (&a.op, &result) {
                    // What Neon holds is the time sent, which the record must match.
                    a.op = Op::SetBranchExpiry(b.clone(), *sent);
                }
                done.push(a);
            }
            Err(e) => ledger.failed(pending, &e.to_string()).await?,
        }
    }
    after_project(env, job, clock.now(), p, &done).await?;
    Ok(ended)
}

/// Reads a branch again right before deleting it: the listing the plan was made from can
/// be minutes old on a large account. Returns why it must not be deleted now, if so.
async fn recheck_branch(
    env: &JobEnv,
    project: &ProjectId,
    branch: &BranchId,
) -> Result<Option<String>, ApiError> {
    let b = match env.client.get_branch(project, branch).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(Some("the branch no longer exists".into())),
        Err(e) => return Err(e),
    };
    if b.default {
        return Ok(Some(
            "the branch is now the project's default branch".into(),
        ));
    }
    if b.protected {
        return Ok(Some("the branch is now protected".into()));
    }
    if b.parent_id.is_none() {
        return Ok(Some("the branch is a root branch".into()));
    }
    let children: Vec<String> = env
        .client
        .list_branches(project)
        .try_filter(|c| futures::future::ready(c.parent_id.as_ref() == Some(branch)))
        .map_ok(|c| c.name)
        .try_collect()
        .await?;
    if !children.is_empty() {
        return Ok(Some(format!(
            "the branch now has children ({})",
            children.join(", ")
        )));
    }
    Ok(None)
}

async fn plan_project(
    env: &JobEnv,
    job: &JobConfig,
    ctx: &RunContext,
    branches: &BranchSelector,
    project: &Project,
) -> Result<ProjectPlan, PlanError> {
    match &job.spec {
        JobSpec::SnapshotBranches(spec) => {
            super::snapshot::plan(env, job, spec, ctx, branches, project).await
        }
        JobSpec::ExpireBranches(spec) => {
            Ok(super::expire::plan(env, job, spec, ctx, branches, project).await?)
        }
        JobSpec::SuspendComputes(spec) => {
            Ok(super::suspend::plan(env, job, spec, ctx, branches, project).await?)
        }
        JobSpec::CollectConsumption(_) => Ok(ProjectPlan::new(project.id.clone())),
    }
}

/// Bookkeeping after a project's actions (the suspend job remembers what it suspended).
async fn after_project(
    env: &JobEnv,
    job: &JobConfig,
    now: DateTime<Utc>,
    plan: &ProjectPlan,
    done: &[PlannedAction],
) -> Result<(), RunError> {
    match &job.spec {
        JobSpec::SuspendComputes(_) => super::suspend::remember(env, job, plan, done).await?,
        JobSpec::ExpireBranches(_) => super::expire::remember(env, job, now, plan, done).await?,
        _ => {}
    }
    Ok(())
}

/// Calls Neon with Neon's rules for a project's mutations: on 423 (after the client's own
/// retries) wait for the project's running operations and try again; then wait for the
/// operations the call returned.
async fn with_lock_retry<T, F, Fut>(
    env: &JobEnv,
    project: &ProjectId,
    mut call: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_locked() && attempt < ATTEMPTS => {
                tracing::info!(%project, attempt, "project locked; waiting for its operations");
                env.client
                    .wait_for_project_idle(project, env.operation_deadline)
                    .await?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn wait(env: &JobEnv, project: &ProjectId, ops: &[Operation]) -> Result<(), ApiError> {
    if !ops.is_empty() {
        env.client
            .wait_for_operations(project, ops, env.operation_deadline)
            .await?;
    }
    Ok(())
}

/// The ledger detail of a deleted branch: until when Neon says it can be recovered.
///
/// Neon reports `recovery.recoverable_until` on soft-deleted branches listed with
/// `include_deleted=true` (branch recovery is in preview), so it is looked up there when the
/// delete answer does not carry it. Only a reported time is written as `recoverable_until=`;
/// otherwise the detail says it was not reported and gives Neon's documented 7-day window as
/// an estimate, so nobody mistakes the estimate for Neon's word. The delete itself has
/// succeeded either way: a failed lookup is not a failed action.
async fn recovery_detail(
    env: &JobEnv,
    project: &ProjectId,
    branch: &BranchId,
    from_delete: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    let reported = match from_delete {
        Some(t) => Some(t),
        None => {
            let found: Result<Vec<crate::neon::Branch>, ApiError> = env
                .client
                .list_recoverable_branches(project)
                .try_filter(|d| futures::future::ready(d.id == *branch))
                .try_collect()
                .await;
            match found {
                Ok(v) => v.into_iter().find_map(|d| d.recoverable_until),
                Err(e) => {
                    tracing::warn!(%project, %branch, error = %e, "cannot read the deleted branch's recovery window");
                    None
                }
            }
        }
    };
    match reported {
        Some(t) => format!("recoverable_until={}", t.to_rfc3339()),
        None => format!(
            "recoverable_until not reported by Neon (estimated {} from its 7-day recovery window)",
            super::expire::recoverable_until(now).to_rfc3339()
        ),
    }
}

/// What a successful call did.
enum Executed {
    /// The ledger detail, if any.
    Done(Option<String>),
    /// A snapshot was created with this id.
    Created(SnapshotId),
    /// The branch's `expires_at` was set to this (the time sent, see [`expiry_at_call`]).
    ExpirySet(DateTime<Utc>),
}

impl Executed {
    fn detail(&self) -> Option<String> {
        match self {
            Executed::Done(d) => d.clone(),
            Executed::Created(id) => Some(format!("snapshot_id={id}")),
            Executed::ExpirySet(at) => Some(format!("expires_at={}", at.to_rfc3339())),
        }
    }
}

/// The `expires_at` to send for a planned one, at `now`: the plan's time while it is still
/// comfortably ahead (at least [`MIN_EXPIRY_LEAD`]), otherwise (planning and waiting for a
/// locked project take time) the earliest time the job hands Neon, `now` plus
/// [`super::expire::EXPIRE_NOW_MARGIN`]. Keeping the plan's time when it is still fine keeps
/// re-runs idempotent: Neon then holds exactly the time a re-plan computes.
pub fn expiry_at_call(planned: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let lead = chrono::Duration::from_std(MIN_EXPIRY_LEAD).expect("one minute");
    if planned >= now + lead {
        planned
    } else {
        now + chrono::Duration::from_std(super::expire::EXPIRE_NOW_MARGIN)
            .expect("the margin is ten minutes")
    }
}

/// How far ahead a planned `expires_at` must still be when the call is made to be sent as
/// planned (Neon refuses a time in the past; this absorbs the call's latency and clock skew).
pub const MIN_EXPIRY_LEAD: Duration = Duration::from_secs(60);

/// Performs one action; returns what it did for the ledger and the job's records. Times
/// sent to Neon are computed from `clock` at each attempt, so a retry after waiting for a
/// locked project does not send a time that has passed meanwhile.
async fn execute(
    env: &JobEnv,
    project: &ProjectId,
    op: &Op,
    clock: &ActClock<'_>,
) -> Result<Executed, ApiError> {
    let c = &env.client;
    let done = |d: Option<String>| Ok(Executed::Done(d));
    match op {
        Op::DeleteBranch(b) => {
            let (branch, ops) =
                match with_lock_retry(env, project, || c.delete_branch(project, b)).await {
                    Ok(r) => r,
                    Err(ApiError::AlreadyDeleted { .. }) => {
                        return done(Some("already deleted".into()));
                    }
                    Err(e) => return Err(e),
                };
            wait(env, project, &ops).await?;
            done(Some(
                recovery_detail(env, project, b, branch.recoverable_until, clock.now()).await,
            ))
        }
        Op::SetBranchExpiry(b, planned) => {
            let mut sent = *planned;
            let (_, ops) = with_lock_retry(env, project, || {
                sent = expiry_at_call(*planned, clock.now());
                let update = BranchUpdate {
                    expires_at: Some(Some(sent)),
                    ..Default::default()
                };
                c.update_branch(project, b, update)
            })
            .await?;
            wait(env, project, &ops).await?;
            Ok(Executed::ExpirySet(sent))
        }
        Op::ClearBranchExpiry(b) => {
            let update = BranchUpdate {
                expires_at: Some(None),
                ..Default::default()
            };
            let (_, ops) =
                with_lock_retry(env, project, || c.update_branch(project, b, update.clone()))
                    .await?;
            wait(env, project, &ops).await?;
            done(Some("expires_at cleared".into()))
        }
        Op::CreateSnapshot {
            branch,
            name,
            expires_in,
        } => {
            let (snap, ops) = with_lock_retry(env, project, || {
                let req = SnapshotRequest {
                    name: Some(name.clone()),
                    expires_at: super::snapshot::expiry(clock.now(), *expires_in),
                    ..Default::default()
                };
                c.create_snapshot(project, branch, req)
            })
            .await?;
            wait(env, project, &ops).await?;
            Ok(Executed::Created(snap.id))
        }
        Op::DeleteSnapshot(s) => {
            match with_lock_retry(env, project, || c.delete_snapshot(project, s)).await {
                Ok(ops) => wait(env, project, &ops).await?,
                Err(ApiError::AlreadyDeleted { .. }) => {
                    return done(Some("already deleted".into()))
                }
                Err(e) => return Err(e),
            }
            done(None)
        }
        Op::SuspendEndpoint(e) => {
            let (_, ops) = with_lock_retry(env, project, || c.suspend_endpoint(project, e)).await?;
            wait(env, project, &ops).await?;
            done(None)
        }
        Op::StartEndpoint(e) => {
            let (_, ops) = with_lock_retry(env, project, || c.start_endpoint(project, e)).await?;
            wait(env, project, &ops).await?;
            done(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    #[test]
    fn expiry_keeps_the_plan_while_it_is_ahead_and_moves_it_when_it_is_not() {
        let t = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap();
        let planned = t(12, 10);
        // Called soon after planning: the plan's time (a re-plan computes the same).
        assert_eq!(expiry_at_call(planned, t(12, 0)), planned);
        assert_eq!(expiry_at_call(planned, t(12, 9)), planned);
        // Less than a minute ahead, or past (a locked project held the call): now + 10 min.
        assert_eq!(
            expiry_at_call(planned, t(12, 9) + TimeDelta::seconds(30)),
            t(12, 19) + TimeDelta::seconds(30)
        );
        assert_eq!(expiry_at_call(planned, t(13, 0)), t(13, 10));
    }
}
