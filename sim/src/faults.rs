//! Seeded, reproducible fault injection for the emulator.
//!
//! Why: the daemon's client must survive what Neon actually does on a bad day (500/503,
//! 423 while an operation runs, 429, slow answers, answers that never come, connections that
//! drop and bodies cut in half). Tests can only check that if the emulator produces those
//! failures on demand, on the route they target, and the same way every run: each rule fires
//! with a probability drawn from a `ChaCha8Rng` seeded once, or for the next N matching
//! requests.
//!
//! Faults apply only to API requests (paths under `/api/v2`); the admin routes under `/_sim`
//! are never faulted, so a test can always clear what it injected.
//!
//! Control: [`FaultHandle::inject`] / [`FaultHandle::clear`] from the library, or the admin
//! routes of [`admin_router`]: `POST /_sim/faults` (one rule or an array of rules, JSON),
//! `GET /_sim/faults` (rules and the log of injected faults), `DELETE /_sim/faults`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How long a `hang` fault holds a request at most. Far beyond any client timeout; the bound
/// only keeps a forgotten hung request from living forever. Measured on tokio's timer, not on
/// the emulator's virtual clock, so advancing virtual time does not end a hang.
pub const HANG_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Header carrying the request id, echoed by Neon.
const REQUEST_ID: &str = "x-request-id";

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this status (meant for 500, 503, 423 and 429) and Neon's `GeneralError`
    /// body, without passing the request on. `retry_after_secs` adds a `Retry-After` header.
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_secs: Option<u64>,
    },
    /// Wait this long (tokio time), then serve the request normally.
    Latency { millis: u64 },
    /// Never answer: hold the request until the client gives up, the server shuts down, or
    /// [`HANG_LIMIT`] passes.
    Hang,
    /// Close the connection without sending a response.
    DropConnection,
    /// Serve the request, then send its body cut in half (invalid JSON) with a 2xx status.
    MalformedBody,
}

/// When a rule applies to a request and how often it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// HTTP method (case-insensitive); `None` matches any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A path template of Neon's document, relative to `/api/v2`
    /// (`/projects/{project_id}/branches`); `{...}` matches one non-empty segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Alternatively a path prefix relative to `/api/v2` (`/projects`). With neither `route`
    /// nor `path_prefix`, the rule matches every API path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The fault to inject (`{"kind": "status", "status": 503}`).
    pub fault: Fault,
    /// Chance in 0..=1 that a matching request gets the fault (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Fire at most this many times, then retire the rule (default: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule for `method` on the spec route template `route` (`/projects/{project_id}`).
    pub fn on(method: &str, route: &str, fault: Fault) -> FaultRule {
        FaultRule {
            method: Some(method.to_ascii_uppercase()),
            route: Some(route.to_string()),
            path_prefix: None,
            fault,
            probability: None,
            times: None,
        }
    }

    /// A rule for any method on every path starting with `prefix` (relative to `/api/v2`).
    pub fn prefix(prefix: &str, fault: Fault) -> FaultRule {
        FaultRule {
            method: None,
            route: None,
            path_prefix: Some(prefix.to_string()),
            fault,
            probability: None,
            times: None,
        }
    }

    /// Fire with probability `p` (0..=1) on each matching request.
    pub fn with_probability(mut self, p: f64) -> FaultRule {
        self.probability = Some(p);
        self
    }

    /// Fire for the next `n` matching requests only.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.times = Some(n);
        self
    }

    /// Checks the rule makes sense; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("probability must be within 0..=1, got {p}"));
            }
        }
        if self.route.is_some() && self.path_prefix.is_some() {
            return Err("give either `route` or `path_prefix`, not both".to_string());
        }
        for p in [&self.route, &self.path_prefix].into_iter().flatten() {
            if !p.starts_with('/') {
                return Err(format!(
                    "route and path_prefix must start with '/', got {p:?}"
                ));
            }
        }
        if let Fault::Status { status, .. } = self.fault {
            if !(400..=599).contains(&status) {
                return Err(format!(
                    "a status fault needs a 4xx or 5xx status, got {status}"
                ));
            }
        }
        if self.times == Some(0) {
            return Err("times must be at least 1".to_string());
        }
        Ok(())
    }

    fn matches(&self, method: &str, api_path: &str) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(method) {
                return false;
            }
        }
        if let Some(route) = &self.route {
            return template_matches(route, api_path);
        }
        if let Some(prefix) = &self.path_prefix {
            return api_path.starts_with(prefix.as_str());
        }
        true
    }
}

/// `{x}` segments match any one non-empty segment; other segments must be equal.
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') && t.ends_with('}') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

/// A fault that was injected, for tests to assert on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InjectedFault {
    pub method: String,
    /// Path relative to `/api/v2`.
    pub path: String,
    pub fault: Fault,
}

struct Inner {
    rules: Vec<FaultRule>,
    rng: ChaCha8Rng,
    log: Vec<InjectedFault>,
}

/// Shared control over the faults of one emulator. Cheap to clone.
#[derive(Clone)]
pub struct FaultHandle {
    inner: Arc<Mutex<Inner>>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for FaultHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultHandle")
            .field("rules", &self.lock().rules.len())
            .finish()
    }
}

impl FaultHandle {
    /// A handle without rules whose random draws come from `seed`: the same seed and the same
    /// sequence of requests give the same faults.
    pub fn new(seed: u64) -> FaultHandle {
        let (tx, _) = watch::channel(false);
        FaultHandle {
            inner: Arc::new(Mutex::new(Inner {
                rules: Vec::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                log: Vec::new(),
            })),
            shutdown: Arc::new(tx),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic elsewhere mid-update of plain data; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule (rules are tried in the order they were added; the first that fires wins).
    pub fn inject(&self, rule: FaultRule) -> Result<(), String> {
        rule.validate()?;
        self.lock().rules.push(rule);
        Ok(())
    }

    /// Removes every rule (the log of injected faults stays).
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Restarts the random sequence from `seed`.
    pub fn reseed(&self, seed: u64) {
        self.lock().rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// The rules still active.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.lock().rules.clone()
    }

    /// Every fault injected so far, in order.
    pub fn injected(&self) -> Vec<InjectedFault> {
        self.lock().log.clone()
    }

    /// Ends every hang in progress (they answer 503) and makes new hangs end at once. Called
    /// when the server shuts down, so graceful shutdown does not wait on hung requests.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Picks the fault for a request, if any, and records it.
    fn pick(&self, method: &str, api_path: &str) -> Option<Fault> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut chosen = None;
        for (i, rule) in inner.rules.iter_mut().enumerate() {
            if !rule.matches(method, api_path) {
                continue;
            }
            let fires = match rule.probability {
                Some(p) => inner.rng.gen_bool(p),
                None => true,
            };
            if fires {
                if let Some(n) = rule.times.as_mut() {
                    *n -= 1;
                }
                chosen = Some((i, rule.fault.clone()));
                break;
            }
        }
        let (i, fault) = chosen?;
        if inner.rules[i].times == Some(0) {
            inner.rules.remove(i);
        }
        inner.log.push(InjectedFault {
            method: method.to_string(),
            path: api_path.to_string(),
            fault: fault.clone(),
        });
        Some(fault)
    }

    async fn wait_shutdown(&self) {
        let mut rx = self.shutdown.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|down| *down).await;
    }
}

/// Neon's error body for an injected status.
fn general_error(status: StatusCode, request_id: &str, retry_after: Option<u64>) -> Response<Body> {
    let (code, message) = match status.as_u16() {
        423 => ("LOCKED", crate::error::LOCKED_MESSAGE),
        429 => ("TOO_MANY_REQUESTS", "rate limit exceeded"),
        503 => ("SERVICE_UNAVAILABLE", "service temporarily unavailable"),
        _ => ("INTERNAL_ERROR", "internal server error"),
    };
    let message = format!("{message} (injected fault)");
    let body = crate::error::GeneralError {
        code: code.into(),
        message: message.clone(),
        request_id: request_id.to_string(),
    };
    let mut resp = (status, Json(body)).into_response();
    // Inside the emulator's request-id layer, this makes the body carry the request's id.
    resp.extensions_mut()
        .insert(crate::error::ApiError::new(status, code, message));
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

/// A body that fails on its first poll: hyper then closes the connection without flushing
/// the response head, which the client sees as a dropped connection.
fn dropping_body() -> Body {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected fault: connection dropped",
        ))
    });
    Body::from_stream(stream)
}

/// The middleware that applies a [`FaultHandle`]'s rules (add it with
/// `axum::middleware::from_fn_with_state(handle, faults::middleware)`).
pub async fn middleware(
    State(handle): State<FaultHandle>,
    req: Request<Body>,
    next: Next,
) -> Response<Body> {
    let Some(api_path) = crate::openapi::api_path(req.uri().path()) else {
        return next.run(req).await;
    };
    let Some(fault) = handle.pick(req.method().as_str(), api_path) else {
        return next.run(req).await;
    };
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("sim-fault-{:016x}", rand::random::<u64>()));
    let mut resp = match fault {
        Fault::Status {
            status,
            retry_after_secs,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            general_error(status, &request_id, retry_after_secs)
        }
        Fault::Latency { millis } => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            return next.run(req).await;
        }
        Fault::Hang => {
            tokio::select! {
                _ = tokio::time::sleep(HANG_LIMIT) => {}
                _ = handle.wait_shutdown() => {}
            }
            general_error(StatusCode::SERVICE_UNAVAILABLE, &request_id, None)
        }
        Fault::DropConnection => Response::new(dropping_body()),
        Fault::MalformedBody => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let mut cut = bytes.slice(..bytes.len() / 2).to_vec();
            if serde_json::from_slice::<serde_json::Value>(&cut).is_ok() {
                // Half of a tiny body can still be valid JSON (`{}` -> `{`, `1` -> ``).
                cut = b"{\"truncated".to_vec();
            }
            // An error answer must not be re-rendered as a proper GeneralError.
            parts.extensions.remove::<crate::error::ApiError>();
            if !parts.status.is_success() {
                parts.status = StatusCode::OK;
            }
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            parts.headers.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Response::from_parts(parts, Body::from(cut))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Body of `POST /_sim/faults`: one rule or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum RulesBody {
    One(FaultRule),
    Many(Vec<FaultRule>),
}

/// Admin routes controlling faults: `POST`, `GET` and `DELETE /_sim/faults`. Merge into the
/// emulator's router (they are outside `/api/v2`, so never faulted themselves).
pub fn admin_router(handle: FaultHandle) -> Router {
    Router::new()
        .route(
            "/_sim/faults",
            post(post_faults).get(get_faults).delete(delete_faults),
        )
        .with_state(handle)
}

async fn post_faults(State(h): State<FaultHandle>, body: Bytes) -> Response<Body> {
    let rules = match serde_json::from_slice::<RulesBody>(&body) {
        Ok(RulesBody::One(r)) => vec![r],
        Ok(RulesBody::Many(r)) => r,
        Err(e) => return admin_error(format!("POST /_sim/faults: bad rule JSON: {e}")),
    };
    for (i, r) in rules.iter().enumerate() {
        if let Err(e) = r.validate() {
            return admin_error(format!("POST /_sim/faults: rule {i}: {e}"));
        }
    }
    for r in rules {
        // Validated above; inject only fails on invalid rules.
        let _ = h.inject(r);
    }
    (
        StatusCode::OK,
        Json(serde_json::json!({"rules": h.rules()})),
    )
        .into_response()
}

async fn get_faults(State(h): State<FaultHandle>) -> Response<Body> {
    Json(serde_json::json!({"rules": h.rules(), "injected": h.injected()})).into_response()
}

async fn delete_faults(State(h): State<FaultHandle>) -> Response<Body> {
    h.clear();
    StatusCode::NO_CONTENT.into_response()
}

fn admin_error(message: String) -> Response<Body> {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"code": "", "message": message})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_prefixes_match() {
        let r = FaultRule::on("get", "/projects/{project_id}/branches", Fault::Hang);
        assert!(r.matches("GET", "/projects/p-1/branches"));
        assert!(!r.matches("POST", "/projects/p-1/branches"));
        assert!(!r.matches("GET", "/projects/p-1/branches/br-1"));
        assert!(!r.matches("GET", "/projects//branches"));
        let p = FaultRule::prefix("/projects", Fault::Hang);
        assert!(p.matches("DELETE", "/projects/p-1/branches/br-1"));
        assert!(!p.matches("GET", "/regions"));
    }

    #[test]
    fn rules_are_validated() {
        let bad = [
            FaultRule::prefix("/x", Fault::Hang).with_probability(1.5),
            FaultRule::prefix(
                "/x",
                Fault::Status {
                    status: 200,
                    retry_after_secs: None,
                },
            ),
            FaultRule::prefix("x", Fault::Hang),
            FaultRule::prefix("/x", Fault::Hang).times(0),
        ];
        for r in bad {
            assert!(r.validate().is_err(), "{r:?}");
        }
        let rule: FaultRule = serde_json::from_str(
            r#"{"method":"GET","route":"/projects","fault":{"kind":"status","status":503,"retry_after_secs":2},"times":1}"#,
        )
        .unwrap();
        assert_eq!(
            rule.fault,
            Fault::Status {
                status: 503,
                retry_after_secs: Some(2)
            }
        );
        assert!(
            serde_json::from_str::<FaultRule>(r#"{"fault":{"kind":"hang"},"typo":1}"#).is_err()
        );
    }

    #[test]
    fn next_n_then_retired_and_seeded_probability_reproducible() {
        let h = FaultHandle::new(7);
        h.inject(FaultRule::prefix("/", Fault::DropConnection).times(2))
            .unwrap();
        assert!(h.pick("GET", "/a").is_some());
        assert!(h.pick("GET", "/a").is_some());
        assert!(h.pick("GET", "/a").is_none());
        assert!(h.rules().is_empty());

        let run = |seed| {
            let h = FaultHandle::new(seed);
            h.inject(FaultRule::prefix("/", Fault::Hang).with_probability(0.5))
                .unwrap();
            (0..64)
                .map(|_| h.pick("GET", "/x").is_some())
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        let hits = a.iter().filter(|x| **x).count();
        assert!((16..=48).contains(&hits), "p=0.5 gave {hits}/64");
    }
}

/// The layer at work on a real router: each kind of fault, and reproducibility.
#[cfg(test)]
mod layer_tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app(h: &FaultHandle) -> Router {
        Router::new()
            .route(
                "/api/v2/projects/{project_id}",
                get(|| async {
                    Json(serde_json::json!({"project": {"id": "p-1", "name": "demo"}}))
                }),
            )
            .route(
                "/api/v2/regions",
                get(|| async { Json(serde_json::json!({"regions": []})) }),
            )
            .merge(admin_router(h.clone()))
            .layer(axum::middleware::from_fn_with_state(h.clone(), middleware))
    }

    fn get_req(path: &str) -> Request<Body> {
        Request::builder()
            .uri(path)
            .header(REQUEST_ID, "req-1")
            .body(Body::empty())
            .unwrap()
    }

    async fn body_json(resp: Response<Body>) -> serde_json::Value {
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn status_faults_answer_general_error_for_n_requests() {
        let h = FaultHandle::new(1);
        for (status, retry) in [(500, None), (503, None), (423, None), (429, Some(3))] {
            h.inject(
                FaultRule::on(
                    "GET",
                    "/projects/{project_id}",
                    Fault::Status {
                        status,
                        retry_after_secs: retry,
                    },
                )
                .times(1),
            )
            .unwrap();
            let resp = app(&h)
                .oneshot(get_req("/api/v2/projects/p-9"))
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers()[REQUEST_ID], "req-1");
            assert_eq!(
                resp.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string()),
                retry.map(|r| r.to_string())
            );
            let body = body_json(resp).await;
            crate::openapi::validate_neon_response("GET", "/projects/p-9", status, Some(&body))
                .unwrap();
            assert_eq!(body["request_id"], "req-1");
        }
        // Rules retired after their one use; other routes never matched.
        let resp = app(&h)
            .oneshot(get_req("/api/v2/projects/p-9"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(h.injected().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_delays_on_tokio_time() {
        let h = FaultHandle::new(1);
        h.inject(FaultRule::prefix(
            "/regions",
            Fault::Latency { millis: 1500 },
        ))
        .unwrap();
        let start = tokio::time::Instant::now();
        let resp = app(&h).oneshot(get_req("/api/v2/regions")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_millis(1500));
        // Unmatched route: no delay.
        let start = tokio::time::Instant::now();
        app(&h)
            .oneshot(get_req("/api/v2/projects/p"))
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn hang_until_client_gives_up_or_shutdown() {
        let h = FaultHandle::new(1);
        h.inject(FaultRule::prefix("/", Fault::Hang)).unwrap();
        let waited = tokio::time::timeout(
            Duration::from_secs(600),
            app(&h).oneshot(get_req("/api/v2/regions")),
        )
        .await;
        assert!(waited.is_err(), "a hung request must not answer");

        let pending = tokio::spawn(app(&h).oneshot(get_req("/api/v2/regions")));
        tokio::task::yield_now().await;
        h.shutdown();
        let resp = pending.await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn malformed_body_is_invalid_json_with_2xx() {
        let h = FaultHandle::new(1);
        h.inject(FaultRule::on("GET", "/projects/{project_id}", Fault::MalformedBody).times(1))
            .unwrap();
        let resp = app(&h)
            .oneshot(get_req("/api/v2/projects/p-1"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(!b.is_empty());
        assert!(
            serde_json::from_slice::<serde_json::Value>(&b).is_err(),
            "{b:?}"
        );
        assert!(br#"{"project":{"id":"p-1","name":"demo"}}"#.starts_with(&b));
    }

    #[tokio::test]
    async fn dropped_connection_gives_no_response() {
        let h = FaultHandle::new(1);
        h.inject(FaultRule::on("GET", "/regions", Fault::DropConnection).times(1))
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app(&h)).await });
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/api/v2/regions");
        let err = client
            .get(&url)
            .send()
            .await
            .expect_err("connection must drop");
        assert!(!err.is_status() && err.status().is_none(), "{err:?}");
        // The next request is served normally.
        let ok = client.get(&url).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        server.abort();
    }

    #[tokio::test]
    async fn works_inside_a_nested_api_router() {
        let h = FaultHandle::new(1);
        h.inject(FaultRule::on(
            "GET",
            "/regions",
            Fault::Status {
                status: 503,
                retry_after_secs: None,
            },
        ))
        .unwrap();
        let api = Router::new()
            .route("/regions", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(h.clone(), middleware));
        let app = Router::new()
            .nest("/api/v2", api)
            .merge(admin_router(h.clone()));
        let r = app
            .clone()
            .oneshot(get_req("/api/v2/regions"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.injected()[0].path, "/regions");
        let r = app.oneshot(get_req("/_sim/faults")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn same_seed_same_faults() {
        async fn run(seed: u64) -> Vec<u16> {
            let h = FaultHandle::new(seed);
            h.inject(
                FaultRule::on(
                    "GET",
                    "/regions",
                    Fault::Status {
                        status: 503,
                        retry_after_secs: None,
                    },
                )
                .with_probability(0.3),
            )
            .unwrap();
            let app = app(&h);
            let mut out = Vec::new();
            for _ in 0..40 {
                let r = app
                    .clone()
                    .oneshot(get_req("/api/v2/regions"))
                    .await
                    .unwrap();
                out.push(r.status().as_u16());
            }
            out
        }
        let a = run(99).await;
        assert_eq!(a, run(99).await);
        assert_ne!(a, run(100).await);
        assert!(a.contains(&503) && a.contains(&200), "{a:?}");
    }

    #[tokio::test]
    async fn admin_route_injects_lists_and_clears() {
        let h = FaultHandle::new(1);
        let app = app(&h);
        let post = |body: &str| {
            Request::builder()
                .method("POST")
                .uri("/_sim/faults")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let resp = app
            .clone()
            .oneshot(post(
                r#"[{"method":"GET","route":"/regions","fault":{"kind":"status","status":500}}]"#,
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let r = app
            .clone()
            .oneshot(get_req("/api/v2/regions"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // Admin routes themselves are never faulted.
        h.inject(FaultRule::prefix("/", Fault::Hang)).unwrap();
        let listed = app.clone().oneshot(get_req("/_sim/faults")).await.unwrap();
        let listed = body_json(listed).await;
        assert_eq!(listed["rules"].as_array().unwrap().len(), 2);
        assert_eq!(listed["injected"][0]["path"], "/regions");

        let bad = app
            .clone()
            .oneshot(post(r#"{"fault":{"kind":"status","status":200}}"#))
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(body_json(bad).await["message"]
            .as_str()
            .unwrap()
            .contains("4xx or 5xx"));

        let del = Request::builder()
            .method("DELETE")
            .uri("/_sim/faults")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(del).await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
        let r = app.oneshot(get_req("/api/v2/regions")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
