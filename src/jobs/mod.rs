//! The job kinds and what they share: selectors, limits, retention, the branch-tree safety
//! rules, calendar windows, dry-run, typed state and the audit ledger.
//!
//! The engine ([`engine`]) runs a job of any kind that implements [`kind::JobKind`]; this
//! module is the registry that maps a policy's `kind` to its implementation. It is the only
//! place that knows every kind.

pub mod backup_schedule;
pub mod branch_tree;
pub mod budget;
mod calls;
pub mod consumption;
pub mod engine;
pub mod expire;
pub mod kind;
pub mod ledger;
pub mod limits;
pub mod notice;
pub mod plan;
mod reconcile;
pub mod retention;
pub mod saved;
pub mod scope;
pub mod select;
pub mod snapshot;
pub mod snapshot_quota;
pub mod state;
pub mod suspend;
pub mod vocab;
pub mod windows;

pub use engine::RunResult;
pub use plan::{JobEnv, RunContext, RunControl};
pub use reconcile::reconcile_pending;

use crate::config::{JobConfig, JobSpec};
use engine::Ended;
use ledger::Ledger;
use plan::RunError;

/// Runs one job to its end. Never panics on API or store trouble: everything ends in the
/// returned status (`failed` with the error when the run could not even start acting).
///
/// The run cannot be cancelled and takes "now" from `ctx`; the daemon uses
/// [`run_job_with`].
pub async fn run_job(env: &JobEnv, job: &JobConfig, ctx: RunContext) -> RunResult {
    run_job_with(env, job, ctx, &RunControl::default()).await
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
    run_job_saved(env, job, ctx, control, saved::SavedPlan::None).await
}

/// [`run_job_with`] for a saved plan: recorded as it is planned (`plan --out`, a dry run),
/// or restricted to it (`apply`). `collect_consumption` has no plan of actions: the saved
/// plan commands leave it out.
pub async fn run_job_saved(
    env: &JobEnv,
    job: &JobConfig,
    ctx: RunContext,
    control: &RunControl,
    saved: saved::SavedPlan<'_>,
) -> RunResult {
    let ledger = Ledger::new(env.store.clone(), ctx.run_id, &job.name, ctx.dry_run);
    let outcome: Result<Ended, RunError> = match &job.spec {
        JobSpec::SnapshotBranches(spec)
            if spec.mode == crate::config::SnapshotMode::BackupSchedule =>
        {
            let kind = backup_schedule::BackupSchedules::new(job, spec);
            engine::run(&kind, env, job, &ctx, control, &ledger, saved).await
        }
        JobSpec::SnapshotBranches(spec) => {
            let kind = snapshot::Snapshots::new(job, spec);
            engine::run(&kind, env, job, &ctx, control, &ledger, saved).await
        }
        JobSpec::ExpireBranches(spec) => {
            let kind = expire::Expire::new(job, spec);
            engine::run(&kind, env, job, &ctx, control, &ledger, saved).await
        }
        JobSpec::SuspendComputes(spec) => {
            let kind = suspend::Suspend::new(job, spec);
            engine::run(&kind, env, job, &ctx, control, &ledger, saved).await
        }
        JobSpec::EnforceBudget(spec) => {
            let kind = budget::Budget::new(job, spec);
            engine::run(&kind, env, job, &ctx, control, &ledger, saved).await
        }
        // Collection only reads Neon and upserts idempotently: it is no plan of actions,
        // and dropping it midway is safe.
        JobSpec::CollectConsumption(spec) => tokio::select! {
            r = consumption::run(env, job, spec, &ctx, &ledger) => r.map(|()| Ended::Completed),
            _ = control.cancel.cancelled() => Ok(Ended::Cancelled),
        },
    };
    Ended::into_result(outcome, &ledger)
}
