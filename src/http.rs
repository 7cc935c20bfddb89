//! The HTTP endpoint: Prometheus metrics, health probes and a small JSON API over the run
//! history.
//!
//! The server knows the scheduler only through the [`Control`] trait, so it can be tested
//! with a fake and the scheduler does not depend on axum. Everything is read-only except
//! `POST /api/v1/jobs/{name}/trigger`, which is not even routed unless an admin token is
//! configured, and then requires `Authorization: Bearer <token>`.
//!
//! Every error is a JSON object `{"error": "..."}` with a fitting status code; bad query
//! parameters are a 400 naming the parameter, never a panic.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::secret::Secret;
use crate::store::{ActionRecord, RunFilter, RunId, RunRecord, Store, MAX_RUN_LIMIT};
use crate::telemetry::metrics;

/// How long `/readyz` waits for the store before calling it unreachable.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub name: String,
    pub kind: String,
    /// The schedule as written in the policy file (`0 3 * * *`, `every 15m`).
    pub schedule: String,
    /// IANA zone the cron expression is evaluated in (`UTC` for intervals).
    pub timezone: String,
    pub enabled: bool,
    /// The newest run of the job. A [`Control`] may leave it `None`: the HTTP layer then
    /// fills it in from the store.
    pub last_run: Option<RunRecord>,
    pub next_run: Option<DateTime<Utc>>,
}

/// What happened when a run was requested through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerOutcome {
    /// A run was claimed and started; it continues in the background.
    Started { run_id: RunId },
    /// The job is running and its concurrency policy forbids a second run.
    AlreadyRunning { run_id: Option<RunId> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("no job named {0:?}")]
    UnknownJob(String),
    /// The daemon is shutting down: not now.
    #[error("{0}")]
    Unavailable(String),
    /// The job is disabled (`enabled = false`): not until the policy enables it.
    #[error("{0}")]
    Disabled(String),
    #[error("{0}")]
    Internal(String),
}

/// What the HTTP server needs from the scheduler. Implemented by the scheduler handle.
#[async_trait]
pub trait Control: Send + Sync + 'static {
    /// Every configured job, in policy-file order.
    fn jobs(&self) -> Vec<JobView>;
    /// The scheduler loop is running (false before start and after shutdown began).
    fn scheduler_running(&self) -> bool;
    /// A valid policy file is loaded.
    fn config_loaded(&self) -> bool;
    /// Starts a manual run of `job` now.
    async fn trigger(&self, job: &str) -> Result<TriggerOutcome, TriggerError>;
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub control: Arc<dyn Control>,
    pub store: Arc<dyn Store>,
    /// When set, `POST /api/v1/jobs/{name}/trigger` is routed and requires this token.
    pub admin_token: Option<Secret>,
}

/// The application: all routes, with a JSON 404 for anything else.
pub fn router(state: HttpState) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run));
    if state.admin_token.is_some() {
        app = app.route("/api/v1/jobs/{name}/trigger", post(trigger));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, trigger_enabled = state.admin_token.is_some(), "http listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error answer: `{"error": message}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    fn store(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "http: store query failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

async fn metrics_text() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let mut not_ready = Vec::new();
    if !state.control.config_loaded() {
        not_ready.push("config: no valid policy file loaded".to_string());
    }
    match tokio::time::timeout(STORE_PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => not_ready.push(format!("store: {e}")),
        Err(_) => not_ready.push(format!(
            "store: no answer within {}s",
            STORE_PING_TIMEOUT.as_secs()
        )),
    }
    if !state.control.scheduler_running() {
        not_ready.push("scheduler: not running".to_string());
    }
    if not_ready.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "not_ready": not_ready })),
        )
            .into_response()
    }
}

async fn list_jobs(State(state): State<HttpState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut jobs = state.control.jobs();
    for job in &mut jobs {
        if job.last_run.is_none() {
            let filter = RunFilter {
                job: Some(job.name.clone()),
                limit: 1,
                before: None,
            };
            job.last_run = state
                .store
                .list_runs(&filter)
                .await
                .map_err(ApiError::store)?
                .into_iter()
                .next();
        }
    }
    Ok(Json(json!({ "jobs": jobs })))
}

/// Query of `GET /api/v1/runs`. Strings, parsed by hand, so that a bad value gets a message
/// naming the parameter and what it should be.
#[derive(Debug, Deserialize)]
struct RunsQuery {
    job: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

fn parse_runs_query(q: RunsQuery) -> Result<RunFilter, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_RUN_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                "query parameter `limit`: expected an integer from 1 to {MAX_RUN_LIMIT}, got {s:?}"
            )))
            }
        },
    };
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(s) => match s.parse::<RunId>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "query parameter `before`: expected a positive run id, got {s:?}"
                )))
            }
        },
    };
    let job = q.job.filter(|j| !j.is_empty());
    Ok(RunFilter { job, limit, before })
}

async fn list_runs(
    State(state): State<HttpState>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = parse_runs_query(query)?;
    let runs = state
        .store
        .list_runs(&filter)
        .await
        .map_err(ApiError::store)?;
    // The cursor for the next (older) page, when this one was full.
    let next_before = (runs.len() as u32 == filter.effective_limit())
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({ "runs": runs, "next_before": next_before })))
}

#[derive(Serialize)]
struct RunWithActions {
    #[serde(flatten)]
    run: RunRecord,
    actions: Vec<ActionRecord>,
}

async fn get_run(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<RunWithActions>, ApiError> {
    let id: RunId = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("run id must be an integer, got {id:?}")))?;
    let run = state
        .store
        .get_run(id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(format!("no run with id {id}")))?;
    let actions = state
        .store
        .actions_for_run(id)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(RunWithActions { run, actions }))
}

/// The bearer token of the request, if it has a well-formed `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn trigger(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    // Authenticate before anything else, so the answer does not reveal which jobs exist.
    let authorised = match (&state.admin_token, bearer(&headers)) {
        (Some(expected), Some(given)) => expected.constant_time_eq(given),
        _ => false,
    };
    if !authorised {
        tracing::warn!(job = %name, "http: trigger refused: missing or wrong admin token");
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid admin token is required: Authorization: Bearer <token>",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    match state.control.trigger(&name).await {
        Ok(TriggerOutcome::Started { run_id }) => {
            tracing::info!(job = %name, run_id, "http: manual run triggered");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "job": name, "run_id": run_id, "status": "started" })),
            )
                .into_response()
        }
        Ok(TriggerOutcome::AlreadyRunning { run_id }) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("job {name:?} is already running"),
                "run_id": run_id,
            })),
        )
            .into_response(),
        Err(e @ TriggerError::UnknownJob(_)) => ApiError::not_found(e.to_string()).into_response(),
        Err(e @ TriggerError::Disabled(_)) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string()).into_response()
        }
        Err(e @ TriggerError::Unavailable(_)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e @ TriggerError::Internal(_)) => {
            tracing::error!(job = %name, error = %e, "http: trigger failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn runs_query_validation() {
        let q = |limit: Option<&str>, before: Option<&str>| {
            parse_runs_query(RunsQuery {
                job: Some("a".into()),
                limit: limit.map(Into::into),
                before: before.map(Into::into),
            })
        };
        let f = q(Some("10"), Some("5")).unwrap();
        assert_eq!(
            (f.limit, f.before, f.job.as_deref()),
            (10, Some(5), Some("a"))
        );
        assert_eq!(q(None, None).unwrap().limit, 0);
        for bad in ["0", "-1", "x", "1001", "99999999999"] {
            let e = q(Some(bad), None).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("`limit`"), "{}", e.message);
        }
        let e = q(None, Some("abc")).unwrap_err();
        assert!(
            e.message.contains("`before`") && e.message.contains("\"abc\""),
            "{}",
            e.message
        );
    }
}
