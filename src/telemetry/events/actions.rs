//! Actions of jobs on Neon resources: recorded in the ledger, or reconciled with Neon.

use super::bool_label;
use crate::store::{ActionOutcome, RunId};
use crate::telemetry::metrics::metrics;

/// An action of a job on a Neon resource reached its outcome (emit once per action, with
/// the final outcome; a `Pending` outcome is logged but not counted).
pub struct ActionRecorded<'a> {
    pub job: &'a str,
    pub run_id: RunId,
    pub action: &'a str,
    pub outcome: ActionOutcome,
    pub dry_run: bool,
    pub resource_kind: &'a str,
    pub resource_id: &'a str,
    pub resource_name: Option<&'a str>,
    pub project_id: Option<&'a str>,
    pub reason: &'a str,
    /// Error message for a failure, extra facts otherwise.
    pub detail: Option<&'a str>,
}

impl ActionRecorded<'_> {
    pub fn emit(&self) {
        let outcome = self.outcome.as_str();
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    job = self.job,
                    run_id = self.run_id,
                    action = self.action,
                    outcome,
                    dry_run = self.dry_run,
                    resource_kind = self.resource_kind,
                    resource_id = self.resource_id,
                    resource_name = self.resource_name,
                    project_id = self.project_id,
                    reason = self.reason,
                    detail = self.detail,
                    "action"
                )
            };
        }
        match self.outcome {
            ActionOutcome::Pending => {
                log!(debug);
                return;
            }
            ActionOutcome::Failed | ActionOutcome::Unknown => log!(warn),
            _ => log!(info),
        }
        metrics()
            .actions_total
            .with_label_values(&[self.job, self.action, outcome, bool_label(self.dry_run)])
            .inc();
    }
}

/// A pending action was resolved by checking Neon.
pub struct ActionReconciled<'a> {
    pub job: &'a str,
    pub run_id: i64,
    pub action: &'a str,
    pub resource_id: &'a str,
    pub outcome: ActionOutcome,
    pub detail: &'a str,
}

impl ActionReconciled<'_> {
    pub fn emit(&self) {
        let outcome = self.outcome.as_str();
        tracing::warn!(
            job = self.job,
            run_id = self.run_id,
            action = self.action,
            resource_id = self.resource_id,
            outcome,
            detail = self.detail,
            "pending action reconciled with Neon"
        );
        metrics()
            .actions_reconciled_total
            .with_label_values(&[self.action, outcome])
            .inc();
    }
}

/// The outcomes whose `actions_total` series [`ActionsDeclared`] creates at 0: those alerts
/// and panels count (`failed` and `succeeded`); `planned` and `skipped` stay born on first use.
pub const DECLARED_OUTCOMES: [ActionOutcome; 2] = [ActionOutcome::Succeeded, ActionOutcome::Failed];

/// A job of the policy, with the actions its kind can take, at start-up or after a reload:
/// creates its `actions_total` series for each action x [`DECLARED_OUTCOMES`] at 0 (with
/// the job's `dry_run` label), or leaves them as they are. A counter series born at 1 has
/// no earlier sample, so `increase()` (the alert on failed backup-schedule changes) would
/// miss the first failure. At most a few series a job: a kind has at most seven actions.
pub struct ActionsDeclared<'a> {
    pub job: &'a str,
    pub dry_run: bool,
    pub actions: &'a [&'a str],
}

impl ActionsDeclared<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            job = self.job,
            actions = self.actions.len(),
            "job actions declared"
        );
        let m = metrics();
        for action in self.actions {
            for outcome in DECLARED_OUTCOMES {
                m.actions_total
                    .with_label_values(&[
                        self.job,
                        action,
                        outcome.as_str(),
                        bool_label(self.dry_run),
                    ])
                    .inc_by(0);
            }
        }
    }
}
