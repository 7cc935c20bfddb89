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

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

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
    SetBranchExpiry(BranchId, DateTime<Utc>),
    /// Take back an `expires_at` this job set (`expires_at: null`).
    ClearBranchExpiry(BranchId),
    CreateSnapshot {
        branch: BranchId,
        name: String,
        expires_at: Option<DateTime<Utc>>,
    },
    DeleteSnapshot(SnapshotId),
    SuspendEndpoint(EndpointId),
    StartEndpoint(EndpointId),
}

impl Op {
    /// Whether the action removes or stops something (or schedules Neon to): what
    /// `max_actions_percent` guards. Creating a snapshot, starting an endpoint and taking
    /// back an expiry this job set are not.
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
    /// Indices (in the same project's plan) of earlier actions that must have succeeded for
    /// this one to be attempted: a snapshot's retention deletes need the new snapshot, a
    /// parent branch's delete needs its children's. Otherwise it is skipped and recorded.
    pub requires: Vec<usize>,
}

/// The plan for one project.
#[derive(Debug, Clone)]
pub struct ProjectPlan {
    pub project_id: ProjectId,
    pub actions: Vec<PlannedAction>,
    pub skips: Vec<ActionSpec>,
    /// Resources the selectors matched (the base of `max_actions` as a percentage).
    pub matched: usize,
    /// Parts of the plan that could not be decided (e.g. the job's state could not be
    /// read), with the error: recorded as failed actions, so the run ends `partial`.
    pub failures: Vec<(ActionSpec, String)>,
}

impl ProjectPlan {
    pub fn new(project_id: ProjectId) -> Self {
        ProjectPlan {
            project_id,
            actions: Vec::new(),
            skips: Vec::new(),
            matched: 0,
            failures: Vec::new(),
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
pub async fn run_job(env: &JobEnv, job: &JobConfig, ctx: RunContext) -> RunResult {
    let ledger = Ledger::new(env.store.clone(), ctx.run_id, &job.name, ctx.dry_run);
    let outcome = match &job.spec {
        JobSpec::CollectConsumption(spec) => {
            super::consumption::run(env, job, spec, &ctx, &ledger).await
        }
        _ => run_planned(env, job, &ctx, &ledger).await,
    };
    let counts = ledger.counts();
    match outcome {
        Ok(()) => RunResult {
            status: ledger.status(),
            counts,
            error: (counts.failed > 0)
                .then(|| format!("{} action(s) failed; see the run's actions", counts.failed)),
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
    ledger: &Ledger,
) -> Result<(), RunError> {
    let projects = selected_projects(env, job).await?;
    let branch_sel = branch_selector(job)?;
    let branch_sel = &branch_sel;
    // Phase 1: plan every project (bounded concurrency, read-only calls).
    let results: Vec<Result<ProjectPlan, (ProjectId, ApiError)>> =
        futures::stream::iter(projects.into_iter().map(|p| async move {
            let id = p.id.clone();
            plan_project(env, job, ctx, &branch_sel, &p)
                .await
                .map_err(|e| (id, e))
        }))
        .buffer_unordered(env.concurrency.max(1))
        .collect()
        .await;

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

    // Phase 2a: the limits, before anything is done.
    // `max_actions` bounds every action; `max_actions_percent` bounds the destructive ones
    // against the resources they could destroy (`matched`), so a snapshot job's creates
    // never count against a percentage meant to stop a bad selector wiping an account.
    let planned: usize = plans.iter().map(|p| p.actions.len()).sum();
    let destructive: usize = plans
        .iter()
        .flat_map(|p| &p.actions)
        .filter(|a| a.op.is_destructive())
        .count();
    let matched: usize = plans.iter().map(|p| p.matched).sum();
    let l = limits(job);
    Limits {
        max_actions_percent: None,
        ..l
    }
    .check(planned, matched)?;
    Limits {
        max_actions: None,
        ..l
    }
    .check(destructive, matched)?;

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
        return Ok(());
    }

    // Phase 2b: act. Projects concurrently, actions within a project in order.
    // The futures are collected first so that no closure type is part of the stream held
    // across the await: rustc cannot prove such a closure's future `Send` for every
    // lifetime of the borrowed plan (rust-lang/rust#64552), and the scheduler needs
    // `run_job` to be `Send` to await it on the runtime's worker threads.
    let per_project: Vec<_> = plans
        .iter()
        .map(|p| act_on_project(env, job, ctx.now, ledger, p))
        .collect();
    let results: Vec<Result<(), RunError>> = futures::stream::iter(per_project)
        .buffer_unordered(env.concurrency.max(1))
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Carries out one project's planned actions in order (Neon serialises mutations within a
/// project anyway), each written to the ledger before and after.

async fn act_on_project(
    env: &JobEnv,
    job: &JobConfig,
    now: DateTime<Utc>,
    ledger: &Ledger,
    p: &ProjectPlan,
) -> Result<(), RunError> {
    let mut done = Vec::new();
    let mut succeeded = vec![false; p.actions.len()];
    for (i, a) in p.actions.iter().enumerate() {
        if let Some(&unmet) = a
            .requires
            .iter()
            .find(|&&r| !succeeded.get(r).copied().unwrap_or(false))
        {
            let before = &p.actions[unmet].spec;
            let mut skip = a.spec.clone();
            skip.reason = format!(
                "{}; not attempted: it depends on {} {} {}, which did not succeed",
                a.spec.reason,
                before.action,
                before.resource_kind,
                before
                    .resource_name
                    .as_deref()
                    .unwrap_or(&before.resource_id)
            );
            ledger.record_all(&[skip], ActionOutcome::Skipped).await?;
            continue;
        }
        let pending = ledger.begin(&a.spec).await?;
        match execute(env, &p.project_id, &a.op, now).await {
            Ok(detail) => {
                ledger.succeeded(pending, detail.as_deref()).await?;
                succeeded[i] = true;
                done.push(a.clone());
            }
            Err(e) => ledger.failed(pending, &e.to_string()).await?,
        }
    }
    after_project(env, job, now, p, &done).await
}

async fn plan_project(
    env: &JobEnv,
    job: &JobConfig,
    ctx: &RunContext,
    branches: &BranchSelector,
    project: &Project,
) -> Result<ProjectPlan, ApiError> {
    match &job.spec {
        JobSpec::SnapshotBranches(spec) => {
            super::snapshot::plan(env, job, spec, ctx, branches, project).await
        }
        JobSpec::ExpireBranches(spec) => {
            super::expire::plan(env, job, spec, ctx, branches, project).await
        }
        JobSpec::SuspendComputes(spec) => {
            super::suspend::plan(env, job, spec, ctx, branches, project).await
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

/// Performs one action; returns the detail for the ledger.
async fn execute(
    env: &JobEnv,
    project: &ProjectId,
    op: &Op,
    now: DateTime<Utc>,
) -> Result<Option<String>, ApiError> {
    let c = &env.client;
    match op {
        Op::DeleteBranch(b) => {
            let (branch, ops) =
                match with_lock_retry(env, project, || c.delete_branch(project, b)).await {
                    Ok(r) => r,
                    Err(ApiError::AlreadyDeleted { .. }) => {
                        return Ok(Some("already deleted".into()));
                    }
                    Err(e) => return Err(e),
                };
            wait(env, project, &ops).await?;
            Ok(Some(
                recovery_detail(env, project, b, branch.recoverable_until, now).await,
            ))
        }
        Op::SetBranchExpiry(b, at) => {
            let update = BranchUpdate {
                expires_at: Some(Some(*at)),
                ..Default::default()
            };
            let (_, ops) =
                with_lock_retry(env, project, || c.update_branch(project, b, update.clone()))
                    .await?;
            wait(env, project, &ops).await?;
            Ok(Some(format!("expires_at={}", at.to_rfc3339())))
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
            Ok(Some("expires_at cleared".into()))
        }
        Op::CreateSnapshot {
            branch,
            name,
            expires_at,
        } => {
            let req = SnapshotRequest {
                name: Some(name.clone()),
                expires_at: *expires_at,
                ..Default::default()
            };
            let (snap, ops) = with_lock_retry(env, project, || {
                c.create_snapshot(project, branch, req.clone())
            })
            .await?;
            wait(env, project, &ops).await?;
            Ok(Some(format!("snapshot_id={}", snap.id)))
        }
        Op::DeleteSnapshot(s) => {
            match with_lock_retry(env, project, || c.delete_snapshot(project, s)).await {
                Ok(ops) => wait(env, project, &ops).await?,
                Err(ApiError::AlreadyDeleted { .. }) => return Ok(Some("already deleted".into())),
                Err(e) => return Err(e),
            }
            Ok(None)
        }
        Op::SuspendEndpoint(e) => {
            let (_, ops) = with_lock_retry(env, project, || c.suspend_endpoint(project, e)).await?;
            wait(env, project, &ops).await?;
            Ok(None)
        }
        Op::StartEndpoint(e) => {
            let (_, ops) = with_lock_retry(env, project, || c.start_endpoint(project, e)).await?;
            wait(env, project, &ops).await?;
            Ok(None)
        }
    }
}
