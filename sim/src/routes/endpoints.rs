//! Endpoints (computes): list, get, create, update, delete, start, suspend, restart.

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath};
use super::AppState;
use crate::error::ApiError;
use crate::state::{Endpoint, EndpointState, EndpointType, Principal, State};
use crate::wire::{self, Operation};

/// Neon's rule: 0 (default, 300 s), -1 (never) or 60..=604800.
pub fn validate_suspend_timeout(t: i64) -> Result<(), ApiError> {
    if t == 0 || t == -1 || (60..=604_800).contains(&t) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "suspend_timeout_seconds must be 0 (default), -1 (never) or between 60 and 604800; got {t}"
        )))
    }
}

fn validate_cu(min: Option<f64>, max: Option<f64>) -> Result<(), ApiError> {
    for v in [min, max].into_iter().flatten() {
        if !(0.25..=56.0).contains(&v) {
            return Err(ApiError::bad_request(format!(
                "compute units must be between 0.25 and 56; got {v}"
            )));
        }
    }
    if let (Some(a), Some(b)) = (min, max) {
        if a > b {
            return Err(ApiError::bad_request(
                "autoscaling_limit_min_cu must not exceed autoscaling_limit_max_cu",
            ));
        }
    }
    Ok(())
}

/// Options of a compute to create (a branch-create `endpoints` item or an endpoint-create body).
#[derive(Deserialize, Debug)]
pub struct EndpointOptions {
    #[serde(rename = "type")]
    pub kind: String,
    pub branch_id: Option<String>,
    pub autoscaling_limit_min_cu: Option<f64>,
    pub autoscaling_limit_max_cu: Option<f64>,
    pub suspend_timeout_seconds: Option<i64>,
    pub disabled: Option<bool>,
    pub name: Option<String>,
}

impl EndpointOptions {
    pub fn validate(&self) -> Result<(), ApiError> {
        if EndpointType::parse(&self.kind).is_none() {
            return Err(ApiError::bad_request(format!(
                "endpoint type must be read_write or read_only; got {:?}",
                self.kind
            )));
        }
        if let Some(t) = self.suspend_timeout_seconds {
            validate_suspend_timeout(t)?;
        }
        validate_cu(self.autoscaling_limit_min_cu, self.autoscaling_limit_max_cu)
    }
}

/// Creates and starts a compute on `branch_id` (the caller checked the project and lock).
pub fn new_endpoint(
    s: &mut State,
    branch_id: &str,
    o: &EndpointOptions,
) -> Result<Endpoint, ApiError> {
    o.validate()?;
    let kind = EndpointType::parse(&o.kind).unwrap_or(EndpointType::ReadWrite);
    if kind == EndpointType::ReadWrite
        && s.branch_endpoints(branch_id)
            .iter()
            .any(|e| e.kind == EndpointType::ReadWrite)
    {
        return Err(ApiError::bad_request(format!(
            "branch {branch_id} already has a read_write compute endpoint"
        )));
    }
    let now = s.now();
    let ep = s
        .insert_endpoint(branch_id, kind, now)
        .ok_or_else(|| ApiError::not_found(format!("branch {branch_id} not found")))?;
    let e = s
        .endpoints
        .get_mut(&ep.id)
        .ok_or_else(|| ApiError::not_found("endpoint vanished"))?;
    if let Some(v) = o.autoscaling_limit_min_cu {
        e.autoscaling_limit_min_cu = v;
    }
    if let Some(v) = o.autoscaling_limit_max_cu {
        e.autoscaling_limit_max_cu = v;
    }
    if e.autoscaling_limit_min_cu > e.autoscaling_limit_max_cu {
        e.autoscaling_limit_max_cu = e.autoscaling_limit_min_cu;
    }
    if let Some(t) = o.suspend_timeout_seconds {
        e.suspend_timeout_seconds = t;
    }
    e.disabled = o.disabled.unwrap_or(false);
    e.name = o.name.clone();
    let disabled = e.disabled;
    if !disabled {
        s.start_endpoint_at(&ep.id, now);
    }
    Ok(s.endpoints[&ep.id].clone())
}

pub async fn list(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.project_for(&who, &project_id)?;
    let now = s.now();
    let eps: Vec<_> = s
        .project_endpoints(&project_id)
        .into_iter()
        .map(|e| wire::Endpoint::from(e, now))
        .collect();
    Ok(Json(wire::EndpointsResponse { endpoints: eps }))
}

pub async fn list_for_branch(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let now = s.now();
    let eps: Vec<_> = s
        .branch_endpoints(&branch_id)
        .into_iter()
        .map(|e| wire::Endpoint::from(e, now))
        .collect();
    Ok(Json(wire::EndpointsResponse { endpoints: eps }))
}

pub async fn get(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, endpoint_id)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    let e = s.endpoint_for(&who, &project_id, &endpoint_id)?;
    Ok(Json(wire::EndpointResponse {
        endpoint: wire::Endpoint::from(e, s.now()),
    }))
}

#[derive(Deserialize)]
pub struct CreateBody {
    endpoint: EndpointOptions,
}

pub async fn create(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    let mut s = app.state.settled();
    s.project_for(&who, &project_id)?;
    let branch_id = body
        .endpoint
        .branch_id
        .clone()
        .ok_or_else(|| ApiError::bad_request("endpoint.branch_id is required"))?;
    s.branch_for(&who, &project_id, &branch_id)?;
    s.ensure_unlocked(&project_id)?;
    let ep = new_endpoint(&mut s, &branch_id, &body.endpoint)?;
    let mut ops = vec![s.push_create_operation(
        &project_id,
        Some(&branch_id),
        Some(&ep.id),
        "create_compute",
    )];
    if !ep.disabled {
        ops.push(s.push_create_operation(
            &project_id,
            Some(&branch_id),
            Some(&ep.id),
            "start_compute",
        ));
    }
    let now = s.now();
    let ep = s.endpoints[&ep.id].clone();
    Ok((
        StatusCode::CREATED,
        Json(wire::EndpointOperations {
            endpoint: wire::Endpoint::from(&ep, now),
            operations: Operation::list(&ops, now),
        }),
    ))
}

#[derive(Deserialize)]
pub struct UpdateOptions {
    autoscaling_limit_min_cu: Option<f64>,
    autoscaling_limit_max_cu: Option<f64>,
    suspend_timeout_seconds: Option<i64>,
    disabled: Option<bool>,
    name: Option<String>,
}

#[derive(Deserialize)]
pub struct UpdateBody {
    endpoint: UpdateOptions,
}

pub async fn update(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, endpoint_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    let cur = s.endpoint_for(&who, &project_id, &endpoint_id)?.clone();
    s.ensure_unlocked(&project_id)?;
    let u = body.endpoint;
    if let Some(t) = u.suspend_timeout_seconds {
        validate_suspend_timeout(t)?;
    }
    validate_cu(
        Some(
            u.autoscaling_limit_min_cu
                .unwrap_or(cur.autoscaling_limit_min_cu),
        ),
        Some(
            u.autoscaling_limit_max_cu
                .unwrap_or(cur.autoscaling_limit_max_cu),
        ),
    )?;
    if u.name
        .as_deref()
        .is_some_and(|n| n.is_empty() || n.len() > 64)
    {
        return Err(ApiError::bad_request(
            "endpoint name must be 1 to 64 characters",
        ));
    }
    let now = s.now();
    let e = s
        .endpoints
        .get_mut(&endpoint_id)
        .ok_or_else(|| ApiError::not_found("endpoint vanished"))?;
    if let Some(v) = u.autoscaling_limit_min_cu {
        e.autoscaling_limit_min_cu = v;
    }
    if let Some(v) = u.autoscaling_limit_max_cu {
        e.autoscaling_limit_max_cu = v;
    }
    if let Some(t) = u.suspend_timeout_seconds {
        e.suspend_timeout_seconds = t;
    }
    if let Some(n) = u.name {
        e.name = Some(n);
    }
    let disabling = u.disabled == Some(true) && !e.disabled;
    if let Some(d) = u.disabled {
        e.disabled = d;
    }
    e.updated_at = now;
    let mut ops = vec![s.push_operation(
        &project_id,
        Some(&cur.branch_id),
        Some(&endpoint_id),
        "apply_config",
    )];
    if disabling {
        s.suspend_endpoint_at(&endpoint_id, now);
        ops.push(s.push_operation(
            &project_id,
            Some(&cur.branch_id),
            Some(&endpoint_id),
            "suspend_compute",
        ));
    }
    let e = s.endpoints[&endpoint_id].clone();
    Ok(Json(wire::EndpointOperations {
        endpoint: wire::Endpoint::from(&e, now),
        operations: Operation::list(&ops, now),
    }))
}

pub async fn delete(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, endpoint_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let mut s = app.state.settled();
    // The document: "204 Returned if the endpoint doesn't exist or has already been deleted";
    // an unknown or invisible project is still 404.
    s.project_for(&who, &project_id)?;
    let Ok(e) = s.endpoint_for(&who, &project_id, &endpoint_id).cloned() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    let mut ops = Vec::new();
    if e.current_state == EndpointState::Active {
        ops.push(s.push_operation(
            &project_id,
            Some(&e.branch_id),
            Some(&endpoint_id),
            "suspend_compute",
        ));
    }
    s.remove_endpoint(&endpoint_id, now);
    Ok(Json(wire::EndpointOperations {
        endpoint: wire::Endpoint::from(&e, now),
        operations: Operation::list(&ops, now),
    })
    .into_response())
}

/// start / suspend / restart share their shape.
async fn lifecycle(
    app: AppState,
    who: Principal,
    project_id: String,
    endpoint_id: String,
    action: &'static str,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    let e = s.endpoint_for(&who, &project_id, &endpoint_id)?.clone();
    s.ensure_unlocked(&project_id)?;
    if e.disabled && action != "suspend" {
        return Err(ApiError::bad_request(format!(
            "compute endpoint {endpoint_id} is disabled"
        )));
    }
    let now = s.now();
    let mut ops = Vec::new();
    match action {
        "start" => {
            s.start_endpoint_at(&endpoint_id, now);
            ops.push(s.push_operation(
                &project_id,
                Some(&e.branch_id),
                Some(&endpoint_id),
                "start_compute",
            ));
        }
        "suspend" => {
            s.suspend_endpoint_at(&endpoint_id, now);
            ops.push(s.push_operation(
                &project_id,
                Some(&e.branch_id),
                Some(&endpoint_id),
                "suspend_compute",
            ));
        }
        _ => {
            s.suspend_endpoint_at(&endpoint_id, now);
            ops.push(s.push_operation(
                &project_id,
                Some(&e.branch_id),
                Some(&endpoint_id),
                "suspend_compute",
            ));
            s.start_endpoint_at(&endpoint_id, now);
            ops.push(s.push_operation(
                &project_id,
                Some(&e.branch_id),
                Some(&endpoint_id),
                "start_compute",
            ));
        }
    }
    let e = s.endpoints[&endpoint_id].clone();
    Ok(Json(wire::EndpointOperations {
        endpoint: wire::Endpoint::from(&e, now),
        operations: Operation::list(&ops, now),
    }))
}

pub async fn start(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((p, e)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    lifecycle(app, who, p, e, "start").await
}

pub async fn suspend(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((p, e)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    lifecycle(app, who, p, e, "suspend").await
}

pub async fn restart(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((p, e)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    lifecycle(app, who, p, e, "restart").await
}
