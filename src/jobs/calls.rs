//! Neon's discipline for a project's mutations, as every kind calls them: a project runs
//! one mutation at a time, so a call answered 423 (after the client's own retries) waits
//! for the project's running operations and is tried again; and a call is done only when
//! the operations it started have finished.

use crate::neon::{ApiError, Operation, ProjectId};

use super::plan::JobEnv;

/// How many times a locked project's call is made in all.
const LOCKED_ATTEMPTS: u32 = 3;

/// Makes `call`, waiting for the project to become idle when it is locked (423).
pub(crate) async fn with_lock_retry<T, F, Fut>(
    env: &JobEnv,
    project: &ProjectId,
    mut call: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_locked() && attempt < LOCKED_ATTEMPTS => {
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
