//! Reconciliation: no action stays `pending`. An action is written `pending` before its
//! call; if the run dies or is taken over during the call, the action is left so. Any
//! replica later asks Neon what happened, through the kind that owns the action, and
//! records `succeeded`, `failed` or `unknown` with what it found (`reconciled_at` set).

use super::backup_schedule::BackupSchedules;
use super::budget::Budget;
use super::expire::Expire;
use super::kind::{JobKind, PendingRef, Resolution};
use super::plan::JobEnv;
use super::snapshot::Snapshots;
use super::suspend::Suspend;
use super::vocab::Action;
use crate::neon::ApiError;
use crate::store::{ActionRecord, StoreResult};
use crate::telemetry::events::ActionReconciled;

/// How many pending actions one pass looks at (the rest wait for the next heartbeat).
const BATCH: u32 = 100;

/// Resolves the pending actions of runs that are over. Returns how many were resolved;
/// those Neon could not be asked about now stay pending for the next pass.
pub async fn reconcile_pending(env: &JobEnv) -> StoreResult<usize> {
    let pending = env.store.unresolved_actions(BATCH).await?;
    let mut resolved = 0;
    for a in &pending {
        let r = match check(env, a).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(action_id = a.id, action = %a.action, error = %e, "cannot check a pending action with Neon now; trying again later");
                continue;
            }
        };
        let detail = format!("reconciled after the run ended: {}", r.detail);
        env.store.reconcile_action(a.id, r.outcome, &detail).await?;
        ActionReconciled {
            job: &a.job,
            run_id: a.run_id,
            action: &a.action,
            resource_id: &a.resource_id,
            outcome: r.outcome,
            detail: &detail,
        }
        .emit();
        resolved += 1;
    }
    Ok(resolved)
}

/// Who answers for an action: a kind, or nobody because the action only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Snapshots,
    Expire,
    Suspend,
    Budget,
    BackupSchedules,
    /// Reading actions (a consumption collection, a project's listing) and notice rows
    /// change nothing at Neon.
    Nobody,
}

/// The kind that checks an action. Exhaustive: a new [`Action`] does not compile until it
/// is given an owner here (and the test below checks this against each kind's
/// `LEDGER_ACTIONS`).
fn owner(action: Action) -> Owner {
    use Action::*;
    match action {
        CreateSnapshot | DeleteSnapshot => Owner::Snapshots,
        DeleteBranch | SetBranchExpiry | ClearBranchExpiry => Owner::Expire,
        SuspendEndpoint | StartEndpoint => Owner::Suspend,
        BudgetNotify
        | BudgetSuspendCompute
        | BudgetLowerMaxCu
        | BudgetShortenSuspendTimeout
        | BudgetRestoreCompute
        | BudgetRestoreMaxCu
        | BudgetRestoreSuspendTimeout => Owner::Budget,
        SetBackupSchedule | TakeBackBackupSchedule => Owner::BackupSchedules,
        CollectConsumption | Plan | Notice => Owner::Nobody,
    }
}

/// Asks the kind that owns the action.
async fn check(env: &JobEnv, a: &ActionRecord) -> Result<Resolution, ApiError> {
    let Some(project_id) = a.project_id.as_deref() else {
        return Ok(Resolution::unknown("the action names no project to check"));
    };
    // A row written by another build may name an action this one does not know: nothing
    // here can check it, and it is said so rather than guessed.
    let action: Action = match a.action.parse() {
        Ok(action) => action,
        Err(e) => return Ok(Resolution::unknown(format!("{e}: nothing can check it"))),
    };
    let p = PendingRef {
        action,
        project_id,
        resource_id: &a.resource_id,
        resource_name: a.resource_name.as_deref(),
    };
    let found = match owner(action) {
        Owner::Snapshots => Snapshots::check_outcome(env, &p).await,
        Owner::Expire => Expire::check_outcome(env, &p).await,
        Owner::Suspend => Suspend::check_outcome(env, &p).await,
        Owner::Budget => Budget::check_outcome(env, &p).await,
        Owner::BackupSchedules => BackupSchedules::check_outcome(env, &p).await,
        Owner::Nobody => {
            // The run that died did not finish the read; the next run does it again.
            return Ok(Resolution::failed(
                "the run ended before this read finished; the next run does it again",
            ));
        }
    };
    match found {
        Err(e) if e.is_not_found() => Ok(Resolution::unknown(format!(
            "Neon no longer knows the project or resource ({e})"
        ))),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(action: &str) -> ActionRecord {
        ActionRecord {
            id: 1,
            run_id: 1,
            job: "j".into(),
            resource_kind: "branch".into(),
            resource_id: "br-1".into(),
            resource_name: None,
            project_id: Some("p-1".into()),
            action: action.into(),
            rule: None,
            reason: "r".into(),
            dry_run: false,
            outcome: crate::store::ActionOutcome::Pending,
            detail: None,
            created_at: chrono::Utc::now(),
            finished_at: None,
            reconciled_at: None,
        }
    }

    /// Nothing is asked of Neon for these (the client points nowhere: a call would fail).
    async fn env() -> JobEnv {
        let client = crate::neon::NeonClient::new(crate::neon::ClientConfig::new(
            "http://127.0.0.1:1/api/v2",
            crate::secret::Secret::new("unused"),
        ))
        .unwrap();
        JobEnv {
            client,
            store: crate::store::open("sqlite::memory:").await.unwrap(),
            concurrency: 1,
            operation_deadline: std::time::Duration::from_secs(1),
            consumption: std::sync::Arc::new(
                crate::telemetry::consumption::ConsumptionExporter::detached(),
            ),
        }
    }

    #[tokio::test]
    async fn an_action_this_build_does_not_know_is_unknown_and_says_so() {
        let r = check(&env().await, &pending("drop_database"))
            .await
            .unwrap();
        assert_eq!(r.outcome, crate::store::ActionOutcome::Unknown);
        assert!(
            r.detail
                .starts_with("unknown ledger action \"drop_database\"")
                && r.detail.ends_with("nothing can check it"),
            "{}",
            r.detail
        );
    }

    #[tokio::test]
    async fn a_read_left_pending_failed_and_is_done_again() {
        let env = env().await;
        for action in ["collect_consumption", "plan"] {
            let r = check(&env, &pending(action)).await.unwrap();
            assert_eq!(r.outcome, crate::store::ActionOutcome::Failed, "{action}");
            assert!(
                r.detail.contains("the next run does it again"),
                "{}",
                r.detail
            );
        }
    }

    /// The dispatch above and the kinds' own declarations agree: every action a kind
    /// declares is sent to it, and only those.
    #[test]
    fn every_action_goes_to_the_kind_that_declares_it() {
        let declared: [(Owner, &[Action]); 5] = [
            (Owner::Snapshots, Snapshots::LEDGER_ACTIONS),
            (Owner::Expire, Expire::LEDGER_ACTIONS),
            (Owner::Suspend, Suspend::LEDGER_ACTIONS),
            (Owner::Budget, Budget::LEDGER_ACTIONS),
            (Owner::BackupSchedules, BackupSchedules::LEDGER_ACTIONS),
        ];
        for a in Action::ALL {
            let declarers: Vec<Owner> = declared
                .iter()
                .filter(|(_, actions)| actions.contains(a))
                .map(|(o, _)| *o)
                .collect();
            match owner(*a) {
                Owner::Nobody => assert!(declarers.is_empty(), "{a} is declared by {declarers:?}"),
                o => assert_eq!(declarers, vec![o], "{a}"),
            }
        }
    }
}
