//! Neon's discipline for a project's mutations, as every kind calls them: a project runs
//! one mutation at a time, so a call answered 423 waits for the project's running operations
//! and is tried again (the only layer that handles a 423: the client does not retry it, see
//! [`crate::neon::retry`], which also gives the worst case per action); and a call is done
//! only when the operations it started have finished.

use crate::neon::retry::retry_when_locked;
use crate::neon::{ApiError, Operation, ProjectId};

use super::plan::JobEnv;

/// How many times a locked project's call is made in all.
const LOCKED_ATTEMPTS: u32 = 3;

/// Makes `call`, waiting for the project to become idle when it is locked (423), up to
/// [`LOCKED_ATTEMPTS`] calls and so at most `LOCKED_ATTEMPTS - 1` waits of
/// `env.operation_deadline` each.
pub(crate) async fn with_lock_retry<T, F, Fut>(
    env: &JobEnv,
    project: &ProjectId,
    call: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    retry_when_locked(LOCKED_ATTEMPTS, call, |attempt| async move {
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
