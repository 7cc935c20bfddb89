//! The audit ledger as the jobs use it: every action is written to the store *before* it is
//! attempted and updated after, and every final outcome is emitted as an
//! [`ActionRecorded`] event (log line + `actions_total`).
//!
//! A [`Ledger`] belongs to one run. It also keeps the run's action counts, so the run's final
//! status (`succeeded`, `partial`, `failed`) follows from what was recorded rather than from
//! a second bookkeeping that could drift.

use std::sync::{Arc, Mutex};

use crate::store::{
    ActionCounts, ActionId, ActionOutcome, NewAction, RunId, RunStatus, Store, StoreResult,
};
use crate::telemetry::events::ActionRecorded;

pub use super::vocab::{Action, ResourceKind};

/// How long an action's outcome is held and retried while the store cannot be written.
pub const FINISH_HOLD: std::time::Duration = std::time::Duration::from_secs(60);
const FINISH_FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);
const FINISH_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// What a job intends to do to one resource, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    pub resource_kind: ResourceKind,
    pub resource_id: String,
    pub resource_name: Option<String>,
    pub project_id: Option<String>,
    pub action: Action,
    /// The policy rule that matched (`ttl`, `keep_daily`, `window`, `idle_for+window`,
    /// `threshold 80%`, ...): text for the reader, composed from what matched.
    pub rule: Option<String>,
    /// Human reason, e.g. `age 9d > ttl 7d`.
    pub reason: String,
}

/// The ledger of one run.
pub struct Ledger {
    store: Arc<dyn Store>,
    run_id: RunId,
    job: String,
    dry_run: bool,
    counts: Mutex<ActionCounts>,
}

/// An action written as `pending`, waiting for its outcome.
#[must_use = "a pending action must be finished with succeeded() or failed()"]
pub struct PendingAction {
    id: ActionId,
    spec: ActionSpec,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>, run_id: RunId, job: &str, dry_run: bool) -> Self {
        Ledger {
            store,
            run_id,
            job: job.to_string(),
            dry_run,
            counts: Mutex::new(ActionCounts::default()),
        }
    }

    fn new_action(&self, spec: &ActionSpec, outcome: ActionOutcome) -> NewAction {
        NewAction {
            run_id: self.run_id,
            job: self.job.clone(),
            resource_kind: spec.resource_kind.to_string(),
            resource_id: spec.resource_id.clone(),
            resource_name: spec.resource_name.clone(),
            project_id: spec.project_id.clone(),
            action: spec.action.to_string(),
            rule: spec.rule.clone(),
            reason: spec.reason.clone(),
            dry_run: self.dry_run,
            outcome,
        }
    }

    fn emit(&self, spec: &ActionSpec, outcome: ActionOutcome, detail: Option<&str>) {
        ActionRecorded {
            job: &self.job,
            run_id: self.run_id,
            action: spec.action.as_str(),
            outcome,
            dry_run: self.dry_run,
            resource_kind: spec.resource_kind.as_str(),
            resource_id: &spec.resource_id,
            resource_name: spec.resource_name.as_deref(),
            project_id: spec.project_id.as_deref(),
            reason: &spec.reason,
            detail,
        }
        .emit();
    }

    fn count(&self, outcome: ActionOutcome) {
        let mut c = self
            .counts
            .lock()
            .expect("ledger counts lock is never poisoned: no panics while held");
        match outcome {
            ActionOutcome::Succeeded => c.succeeded += 1,
            // An outcome nobody can confirm counts against the run, as a failure does.
            ActionOutcome::Failed | ActionOutcome::Unknown => c.failed += 1,
            ActionOutcome::Skipped => c.skipped += 1,
            ActionOutcome::Planned => c.planned += 1,
            ActionOutcome::Pending => {}
        }
    }

    /// Records what a dry run would do.
    pub async fn planned(&self, spec: &ActionSpec) -> StoreResult<()> {
        self.store
            .begin_action(&self.new_action(spec, ActionOutcome::Planned))
            .await?;
        self.count(ActionOutcome::Planned);
        self.emit(spec, ActionOutcome::Planned, None);
        Ok(())
    }

    /// Records many skips, or a dry run's planned actions (`outcome` is `Skipped` or
    /// `Planned`), with one store write ([`Store::begin_actions`], one transaction): these
    /// rows are final when written, so nothing is lost by batching them, and a large run no
    /// longer pays one transaction per row.
    pub async fn record_all(
        &self,
        specs: &[ActionSpec],
        outcome: ActionOutcome,
    ) -> StoreResult<()> {
        debug_assert!(
            matches!(outcome, ActionOutcome::Skipped | ActionOutcome::Planned),
            "only final outcomes are batched; real actions use begin()"
        );
        if specs.is_empty() {
            return Ok(());
        }
        let rows: Vec<NewAction> = specs.iter().map(|s| self.new_action(s, outcome)).collect();
        self.store.begin_actions(&rows).await?;
        for spec in specs {
            self.count(outcome);
            self.emit(spec, outcome, None);
        }
        Ok(())
    }

    /// Writes the action as `pending` before it is attempted.
    pub async fn begin(&self, spec: &ActionSpec) -> StoreResult<PendingAction> {
        let id = self
            .store
            .begin_action(&self.new_action(spec, ActionOutcome::Pending))
            .await?;
        self.emit(spec, ActionOutcome::Pending, None);
        Ok(PendingAction {
            id,
            spec: spec.clone(),
        })
    }

    pub async fn succeeded(&self, p: PendingAction, detail: Option<&str>) -> StoreResult<()> {
        self.finish(p, ActionOutcome::Succeeded, detail).await
    }

    pub async fn failed(&self, p: PendingAction, error: &str) -> StoreResult<()> {
        self.finish(p, ActionOutcome::Failed, Some(error)).await
    }

    /// Records the outcome Neon was asked for after the call's answer was lost.
    pub async fn resolved(
        &self,
        p: PendingAction,
        outcome: ActionOutcome,
        detail: &str,
    ) -> StoreResult<()> {
        self.finish(p, outcome, Some(detail)).await
    }

    async fn finish(
        &self,
        p: PendingAction,
        outcome: ActionOutcome,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        // Count first: even if the store write fails, the run must not report success.
        self.count(outcome);
        self.emit(&p.spec, outcome, detail);
        // The call has been made: its outcome is held and written again while the store
        // fails (locked, restarting), for a bounded time. A run no longer ours (fenced) is
        // not retried. Should the store stay down, the action stays `pending` and is
        // reconciled with Neon once the run is over.
        let mut backoff = FINISH_FIRST_BACKOFF;
        let started = tokio::time::Instant::now();
        loop {
            match self.store.finish_action(p.id, outcome, detail).await {
                Err(e) if !e.is_fenced() && started.elapsed() + backoff <= FINISH_HOLD => {
                    tracing::warn!(action_id = p.id, action = p.spec.action.as_str(), error = %e, "cannot record the action's outcome yet; holding it and retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(FINISH_MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }

    pub fn counts(&self) -> ActionCounts {
        *self
            .counts
            .lock()
            .expect("ledger counts lock is never poisoned: no panics while held")
    }

    /// The run's status from the actions it attempted: any failure with some success is
    /// `partial`; only failures is `failed`; otherwise `succeeded`. Skips and planned
    /// actions are decisions, not attempts, so a run whose every attempt failed is `failed`
    /// (and alerts as such) however many resources it skipped.
    pub fn status(&self) -> RunStatus {
        status_from_counts(self.counts())
    }
}

pub fn status_from_counts(c: ActionCounts) -> RunStatus {
    if c.failed == 0 {
        RunStatus::Succeeded
    } else if c.succeeded > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, Trigger};
    use chrono::Utc;

    fn spec(id: &str) -> ActionSpec {
        ActionSpec {
            resource_kind: ResourceKind::Branch,
            resource_id: id.into(),
            resource_name: Some("preview/x".into()),
            project_id: Some("p-1".into()),
            action: Action::DeleteBranch,
            rule: Some("ttl".into()),
            reason: "age 9d > ttl 7d".into(),
        }
    }

    async fn setup(dry_run: bool) -> (Arc<dyn Store>, RunId) {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        let run = store
            .claim_run(&NewRun {
                job: "j".into(),
                kind: "expire_branches".into(),
                scheduled_for: Utc::now(),
                trigger: Trigger::Manual,
                dry_run,
                status: RunStatus::Running,
                error: None,
                plan_id: None,
            })
            .await
            .unwrap()
            .unwrap();
        (store, run)
    }

    #[tokio::test]
    async fn pending_then_outcome_is_recorded_with_rule_and_reason() {
        let (store, run) = setup(false).await;
        let l = Ledger::new(store.clone(), run, "j", false);
        let p = l.begin(&spec("br-1")).await.unwrap();
        let rows = store.actions_for_run(run).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].outcome,
            ActionOutcome::Pending,
            "written before the call"
        );
        l.succeeded(p, Some("recoverable_until=2026-01-08T00:00:00Z"))
            .await
            .unwrap();
        let p2 = l.begin(&spec("br-2")).await.unwrap();
        l.failed(p2, "HTTP 500").await.unwrap();
        let rows = store.actions_for_run(run).await.unwrap();
        let r1 = rows.iter().find(|r| r.resource_id == "br-1").unwrap();
        assert_eq!(r1.outcome, ActionOutcome::Succeeded);
        assert_eq!(r1.rule.as_deref(), Some("ttl"));
        assert_eq!(r1.reason, "age 9d > ttl 7d");
        assert_eq!(
            r1.detail.as_deref(),
            Some("recoverable_until=2026-01-08T00:00:00Z")
        );
        let r2 = rows.iter().find(|r| r.resource_id == "br-2").unwrap();
        assert_eq!(r2.outcome, ActionOutcome::Failed);
        assert_eq!(r2.detail.as_deref(), Some("HTTP 500"));
        assert_eq!(
            l.counts(),
            ActionCounts {
                succeeded: 1,
                failed: 1,
                skipped: 0,
                planned: 0
            }
        );
        assert_eq!(l.status(), RunStatus::Partial);
    }

    #[tokio::test]
    async fn dry_run_records_planned() {
        let (store, run) = setup(true).await;
        let l = Ledger::new(store.clone(), run, "j", true);
        l.planned(&spec("br-1")).await.unwrap();
        l.record_all(&[spec("br-2")], ActionOutcome::Skipped)
            .await
            .unwrap();
        let rows = store.actions_for_run(run).await.unwrap();
        assert!(rows.iter().all(|r| r.dry_run));
        assert_eq!(
            rows.iter().map(|r| r.outcome).collect::<Vec<_>>(),
            vec![ActionOutcome::Planned, ActionOutcome::Skipped]
        );
        assert_eq!(l.status(), RunStatus::Succeeded);
    }

    #[test]
    fn status_follows_counts() {
        let c = |succeeded, failed| ActionCounts {
            succeeded,
            failed,
            skipped: 0,
            planned: 0,
        };
        assert_eq!(status_from_counts(c(0, 0)), RunStatus::Succeeded);
        assert_eq!(status_from_counts(c(3, 0)), RunStatus::Succeeded);
        assert_eq!(status_from_counts(c(3, 1)), RunStatus::Partial);
        assert_eq!(status_from_counts(c(0, 2)), RunStatus::Failed);
        // Skips are not attempts: every attempt failing is a failed run.
        let skipped_and_failed = ActionCounts {
            skipped: 5,
            ..c(0, 1)
        };
        assert_eq!(status_from_counts(skipped_and_failed), RunStatus::Failed);
    }
}
