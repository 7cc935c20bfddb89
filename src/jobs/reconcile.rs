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

/// Asks the kind that owns the action.
async fn check(env: &JobEnv, a: &ActionRecord) -> Result<Resolution, ApiError> {
    let Some(project_id) = a.project_id.as_deref() else {
        return Ok(Resolution::unknown("the action names no project to check"));
    };
    let p = PendingRef {
        action: &a.action,
        project_id,
        resource_id: &a.resource_id,
        resource_name: a.resource_name.as_deref(),
    };
    let found = if Snapshots::owns_action(p.action) {
        Snapshots::check_outcome(env, &p).await
    } else if Expire::owns_action(p.action) {
        Expire::check_outcome(env, &p).await
    } else if Suspend::owns_action(p.action) {
        Suspend::check_outcome(env, &p).await
    } else if Budget::owns_action(p.action) {
        Budget::check_outcome(env, &p).await
    } else if BackupSchedules::owns_action(p.action) {
        BackupSchedules::check_outcome(env, &p).await
    } else {
        // Reading actions (a consumption collection, a project's listing) change nothing
        // at Neon: the run that died did not finish them, and the next run does them again.
        return Ok(Resolution::failed(
            "the run ended before this read finished; the next run does it again",
        ));
    };
    match found {
        Err(e) if e.is_not_found() => Ok(Resolution::unknown(format!(
            "Neon no longer knows the project or resource ({e})"
        ))),
        other => other,
    }
}
