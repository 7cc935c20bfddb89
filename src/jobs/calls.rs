//! Neon's discipline for a project's mutations, as every kind calls them: a project runs
//! one mutation at a time, so a call answered 423 waits for the project's running operations
//! and is tried again (the only layer that handles a 423: the client does not retry it, see
//! [`crate::neon::retry`], which also gives the worst case per action); and a call is done
//! only when the operations it started have finished. And no call is sent once this
//! replica's hold of the run may have lapsed (see [`crate::scheduler::LeaseWatch`]).

use std::sync::Arc;

use crate::neon::retry::retry_when_locked;
use crate::neon::{with_send_gate, ApiError, Operation, ProjectId, SendGate};

use super::kind::ActCx;
use super::plan::JobEnv;

/// How many times a locked project's call is made in all.
const LOCKED_ATTEMPTS: u32 = 3;

/// Makes `call` in the project `cx` acts on, waiting for the project to become idle when it
/// is locked (423), up to [`LOCKED_ATTEMPTS`] calls and so at most `LOCKED_ATTEMPTS - 1`
/// waits of `env.operation_deadline` each. Right before each request the call sends (its
/// retries and rate-limit waits included), the run's lease is checked on this replica's
/// clock: once it may have lapsed (the process was paused, or cut off from the store), the
/// request is not sent ([`ApiError::NotSent`], which cannot have been carried out), since a
/// survivor may already have taken the run over and reconciled this action as not made.
pub(crate) async fn with_lock_retry<T, F, Fut>(cx: &ActCx<'_>, mut call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let (env, project) = (cx.env, cx.project);
    let lease = cx.clock.lease();
    let gate: SendGate = Arc::new(move || {
        (!lease.live()).then(|| {
            "this replica's lease of the run may have lapsed (the process was paused or cut \
             off from the store); another replica may have taken the run over"
                .to_string()
        })
    });
    let guarded = || with_send_gate(gate.clone(), call());
    retry_when_locked(LOCKED_ATTEMPTS, guarded, |attempt| async move {
        tracing::info!(%project, attempt, "project locked; waiting for its operations");
        env.client
            .wait_for_project_idle(project, env.operation_deadline)
            .await
    })
    .await
}

/// Waits for the operations a call started.
pub(crate) async fn wait(
    env: &JobEnv,
    project: &ProjectId,
    ops: &[Operation],
) -> Result<(), ApiError> {
    if !ops.is_empty() {
        env.client
            .wait_for_operations(project, ops, env.operation_deadline)
            .await?;
    }
    Ok(())
}
