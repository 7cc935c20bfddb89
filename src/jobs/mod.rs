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
use kind::JobKind as _;
use ledger::Ledger;
use plan::RunError;
use vocab::Action;

/// The ledger's names of the actions a job of this spec can take (its kind's, and for
/// `snapshot_branches` its mode's): the daemon creates their `actions_total` series at 0 at
/// start-up, so that an alert's `increase()` sees the first failure.
pub fn action_names(spec: &JobSpec) -> &'static [Action] {
    match spec {
        JobSpec::SnapshotBranches(s) if s.mode == crate::config::SnapshotMode::BackupSchedule => {
            backup_schedule::BackupSchedules::LEDGER_ACTIONS
        }
        JobSpec::SnapshotBranches(_) => snapshot::Snapshots::LEDGER_ACTIONS,
        JobSpec::ExpireBranches(_) => expire::Expire::LEDGER_ACTIONS,
        JobSpec::SuspendComputes(_) => suspend::Suspend::LEDGER_ACTIONS,
        JobSpec::CollectConsumption(_) => &[Action::CollectConsumption],
        JobSpec::EnforceBudget(_) => budget::Budget::LEDGER_ACTIONS,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The jobs of the example policy (every kind, both snapshot modes) declare between them
    /// every action a job records, so every `actions_total` series an alert counts exists
    /// from start-up; only the engine's own rows (`plan`, `notice`) are not a kind's.
    #[test]
    fn the_example_policys_jobs_declare_every_action_a_job_records() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let c = crate::config::load_with_env(&path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let mut declared = std::collections::BTreeSet::new();
        for job in &c.jobs {
            let names = action_names(&job.spec);
            assert!(!names.is_empty(), "{} declares no action", job.name);
            declared.extend(names.iter().map(|a| a.as_str()));
        }
        let recorded: std::collections::BTreeSet<&str> = Action::ALL
            .iter()
            .filter(|a| !matches!(a, Action::Plan | Action::Notice))
            .map(|a| a.as_str())
            .collect();
        assert_eq!(declared, recorded);
    }
}
