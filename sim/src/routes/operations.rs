//! Operations: list (cursor) and get.

use axum::extract::State as AxState;
use axum::Json;
use serde::Deserialize;

use super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::error::ApiError;
use crate::state::Principal;
use crate::wire::{self, Operation};

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

/// Newest first; the cursor is the id of the last operation of the previous page.
pub async fn list(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let limit = q.limit.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let s = app.state.settled();
    s.project_for(&who, &project_id)?;
    let now = s.now();
    let ops: Vec<&crate::state::Operation> = s
        .operations
        .iter()
        .rev()
        .filter(|o| o.project_id == project_id)
        .collect();
    let start = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => ops
            .iter()
            .position(|o| o.id == c)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::bad_request(format!("invalid cursor {c:?}")))?,
    };
    let page: Vec<Operation> = ops
        .iter()
        .skip(start)
        .take(limit as usize)
        .map(|o| Operation::from(o, now))
        .collect();
    let pagination = page.last().map(|last| wire::Pagination {
        cursor: last.id.clone(),
    });
    Ok(Json(wire::OperationsPage {
        operations: page,
        pagination,
    }))
}

pub async fn get(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, operation_id)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.project_for(&who, &project_id)?;
    let op = s
        .operations
        .iter()
        .find(|o| o.project_id == project_id && o.id == operation_id)
        .ok_or_else(|| ApiError::not_found(format!("operation {operation_id} not found")))?;
    Ok(Json(wire::OperationResponse {
        operation: Operation::from(op, s.now()),
    }))
}
