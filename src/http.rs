//! The HTTP endpoint: Prometheus metrics, health probes and a small JSON API over the run
//! history.
//!
//! The server knows the scheduler only through the [`Control`] trait, so it can be tested
//! with a fake and the scheduler does not depend on axum. Everything is read-only except
//! `POST /api/v1/jobs/{name}/trigger`, which is not even routed unless an admin token is
//! configured, and then requires `Authorization: Bearer <token>`.
//!
//! Every error is a JSON object `{"error": "..."}` with a fitting status code; bad query
//! parameters are a 400 naming the parameter, never a panic, and so are unknown ones (as
//! unknown keys of the policy file are errors).
//!
//! The server is bounded so that it cannot take the daemon's resources from the jobs: at
//! most [`ServeLimits::max_connections`] connections are open at once (more wait in the
//! kernel's backlog, using no file descriptor of ours), and a connection that sends no
//! complete request head within [`ServeLimits::header_read_timeout`] is closed, whether it
//! is new and silent or idle between keep-alive requests.

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

use crate::health::Health;
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
    /// The daemon's last API and store outcomes, which `/readyz` reports when given.
    pub health: Option<Arc<Health>>,
}

/// Bounds of the HTTP server (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections open at once. Prometheus, probes and an operator need a handful; this
    /// leaves the process's file descriptors to the store and the Neon client.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, including the wait for the
    /// next request on a keep-alive connection.
    pub header_read_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The application: all routes, with a JSON 404 for anything else.
pub fn router(state: HttpState) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/notifications", get(list_notifications));
    if state.admin_token.is_some() {
        app = app.route("/api/v1/jobs/{name}/trigger", post(trigger));
        app = app.route(
            "/api/v1/keeps",
            get(list_keeps).post(add_keep).delete(remove_keep),
        );
    } else {
        app = app.route("/api/v1/keeps", get(list_keeps));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves `router(state)` on `listener` with the default [`ServeLimits`] until `shutdown`
/// completes, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, ServeLimits::default(), shutdown).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: HttpState,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            trigger_enabled = state.admin_token.is_some(),
            max_connections = limits.max_connections,
            "http listening"
        );
    }
    let app = router(state);
    let max = limits.max_connections.max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first, then a connection: beyond the limit, connections wait in the
        // backlog rather than holding a descriptor here.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: wait, do not spin.
                    tracing::warn!(error = %e, "http: cannot accept a connection");
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), service));
            let mut asked_to_stop = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "http: connection ended with an error");
                        }
                        break;
                    }
                    _ = stopping.cancelled(), if !asked_to_stop => {
                        asked_to_stop = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    // Stop accepting, let each connection finish its request in flight, wait for all.
    drop(listener);
    stopping.cancel();
    let _all = permits.acquire_many(max as u32).await;
    Ok(())
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

async fn metrics_text(uri: Uri) -> Response {
    if let Err(e) = no_query(&uri) {
        return e.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(),
    )
        .into_response()
}

async fn healthz(uri: Uri) -> Result<Json<serde_json::Value>, ApiError> {
    no_query(&uri)?;
    Ok(Json(json!({ "status": "ok" })))
}

/// The longest parameter name quoted back in an error.
const MAX_QUOTED: usize = 64;

fn quoted(s: &str) -> String {
    let mut q: String = s.chars().take(MAX_QUOTED).collect();
    if q.len() < s.len() {
        q.push_str("...");
    }
    format!("{q:?}")
}

/// Routes without parameters refuse any.
fn no_query(uri: &Uri) -> Result<(), ApiError> {
    match uri.query() {
        None | Some("") => Ok(()),
        Some(q) => {
            let name = q.split('&').next().unwrap_or(q);
            let name = name.split('=').next().unwrap_or(name);
            Err(ApiError::bad_request(format!(
                "unknown query parameter {}: {} takes none",
                quoted(name),
                uri.path()
            )))
        }
    }
}

async fn readyz(State(state): State<HttpState>, uri: Uri) -> Response {
    if let Err(e) = no_query(&uri) {
        return e.into_response();
    }
    let mut not_ready = Vec::new();
    if !state.control.config_loaded() {
        not_ready.push("config: no valid policy file loaded".to_string());
    }
    match tokio::time::timeout(STORE_PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => {}
        // The store's errors begin with "store: " already.
        Ok(Err(e)) => not_ready.push(e.to_string()),
        Err(_) => not_ready.push(format!(
            "store: no answer within {}s",
            STORE_PING_TIMEOUT.as_secs()
        )),
    }
    if !state.control.scheduler_running() {
        not_ready.push("scheduler: not running".to_string());
    }
    // What the daemon last tried: a wrong key, Neon unreachable, a locked or full store.
    if let Some(h) = &state.health {
        if let Some(f) = h.api_failure() {
            not_ready.push(format!("api: {} (at {})", f.message, f.at.to_rfc3339()));
        }
        if let Some(f) = h.store_failure() {
            not_ready.push(format!(
                "store: the last operation failed: {} (at {})",
                f.message,
                f.at.to_rfc3339()
            ));
        }
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

async fn list_jobs(
    State(state): State<HttpState>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    no_query(&uri)?;
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
#[derive(Debug, Default, Deserialize)]
struct RunsQuery {
    job: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// The query string of `GET /api/v1/runs` (without the `?`): each known parameter at most
/// once, no other. Public for the fuzz test; every error names the parameter.
pub fn parse_runs_query_string(query: Option<&str>) -> Result<RunFilter, (StatusCode, String)> {
    let pairs: Vec<(String, String)> = match query {
        None | Some("") => Vec::new(),
        Some(q) => {
            let uri: Uri = format!("/?{q}").parse().map_err(|_| {
                (
                    StatusCode::BAD_REQUEST,
                    "the query string is not valid in a URL".to_string(),
                )
            })?;
            Query::<Vec<(String, String)>>::try_from_uri(&uri)
                .map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("query string: {}", e.body_text()),
                    )
                })?
                .0
        }
    };
    let mut q = RunsQuery::default();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "job" => &mut q.job,
            "limit" => &mut q.limit,
            "before" => &mut q.before,
            _ => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter {}; expected `job`, `limit` or `before`",
                        quoted(&name)
                    ),
                ))
            }
        };
        if slot.replace(value).is_some() {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("query parameter `{name}` is given more than once"),
            ));
        }
    }
    parse_runs_query(q).map_err(|e| (e.status, e.message))
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
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = parse_runs_query_string(uri.query())
        .map_err(|(status, message)| ApiError::new(status, message))?;
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
    uri: Uri,
) -> Result<Json<RunWithActions>, ApiError> {
    no_query(&uri)?;
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
    uri: Uri,
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
    if let Err(e) = no_query(&uri) {
        return e.into_response();
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

// --- notifications (the outbox) and keeps (issue 13) ---

/// Splits a query string into known parameters; an unknown or repeated one is a 400.
fn query_params(
    query: Option<&str>,
    known: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let mut out = std::collections::BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "query parameter `{k}` is not valid percent-encoding"
            ))
        })?;
        if !known.contains(&k) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {}; expected {}",
                quoted(k),
                known.join(", ")
            )));
        }
        if out.insert(k.to_string(), v).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter `{k}` given twice"
            )));
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn list_notifications(
    State(state): State<HttpState>,
    uri: Uri,
) -> Result<Json<Vec<crate::store::NotificationRecord>>, ApiError> {
    let q = query_params(uri.query(), &["status", "sink", "limit"])?;
    let status = match q.get("status") {
        None => None,
        Some(s) => Some(crate::store::NotificationStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status {} is not pending, delivered or failed",
                quoted(s)
            ))
        })?),
    };
    let limit = match q.get("limit") {
        None => 0,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_RUN_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={MAX_RUN_LIMIT}")))?,
    };
    let filter = crate::store::NotificationFilter {
        status,
        sink: q.get("sink").cloned(),
        limit,
    };
    Ok(Json(
        state
            .store
            .list_notifications(&filter)
            .await
            .map_err(ApiError::store)?,
    ))
}

async fn list_keeps(
    State(state): State<HttpState>,
    uri: Uri,
) -> Result<Json<Vec<crate::store::Keep>>, ApiError> {
    no_query(&uri)?;
    Ok(Json(
        state.store.list_keeps().await.map_err(ApiError::store)?,
    ))
}

/// The admin token's check, as for the trigger.
fn admin(state: &HttpState, headers: &HeaderMap, what: &str) -> Result<(), Box<Response>> {
    let authorised = match (&state.admin_token, bearer(headers)) {
        (Some(expected), Some(given)) => expected.constant_time_eq(given),
        _ => false,
    };
    if authorised {
        return Ok(());
    }
    tracing::warn!("http: {what} refused: missing or wrong admin token");
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "a valid admin token is required: Authorization: Bearer <token>",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Err(Box::new(response))
}

/// `POST /api/v1/keeps` `{"target": "<project>/<branch>", "until": "YYYY-MM-DD", "note": "..."}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepRequest {
    target: String,
    until: Option<String>,
    note: Option<String>,
}

async fn add_keep(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    body: String,
) -> Response {
    if let Err(r) = admin(&state, &headers, "keep") {
        return *r;
    }
    if let Err(e) = no_query(&uri) {
        return e.into_response();
    }
    let req: KeepRequest = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!(
                "the body must be {{\"target\": \"<project>/<branch>\", \"until\"?: \"YYYY-MM-DD\", \"note\"?: \"...\"}}: {e}"
            ))
            .into_response()
        }
    };
    let keep = match crate::keep::parse(
        &req.target,
        req.until.as_deref(),
        req.note.as_deref(),
        Utc::now(),
    ) {
        Ok(k) => k,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    match state.store.put_keep(&keep).await {
        Ok(()) => {
            tracing::info!(project = %keep.project, branch = %keep.branch, "http: keep recorded");
            (StatusCode::CREATED, Json(keep)).into_response()
        }
        Err(e) => ApiError::store(e).into_response(),
    }
}

/// `DELETE /api/v1/keeps?target=<project>/<branch>`.
async fn remove_keep(State(state): State<HttpState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = admin(&state, &headers, "keep removal") {
        return *r;
    }
    let target = match query_params(uri.query(), &["target"]) {
        Ok(q) => q.get("target").cloned().unwrap_or_default(),
        Err(e) => return e.into_response(),
    };
    let (project, branch) = match crate::keep::parse_target(&target) {
        Ok(t) => t,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    match state.store.remove_keep(&project, &branch).await {
        Ok(true) => Json(json!({ "removed": format!("{project}/{branch}") })).into_response(),
        Ok(false) => ApiError::not_found(format!("no keep of {project}/{branch}")).into_response(),
        Err(e) => ApiError::store(e).into_response(),
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
