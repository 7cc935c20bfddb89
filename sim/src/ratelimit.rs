//! Neon's API rate limits, as axum middleware.
//!
//! Why: the daemon promises never to trip Neon's limits in normal operation and to back off
//! correctly when it does. Both claims are only testable if the emulator enforces the same
//! limits: 700 requests per minute per account (API key), bursts of at most 40 requests per
//! second per route, and a lower limit on the consumption endpoints (about 30 per minute).
//! Over a limit the answer is 429 with Neon's `GeneralError` body; Neon documents no
//! `Retry-After`, so sending one is optional.
//!
//! Each limit is a token bucket. Time comes from `tokio::time::Instant`, so tests running
//! with paused tokio time control refills exactly. Only API paths (under `/api/v2`) count.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::Json;
use tokio::time::Instant;

use crate::openapi::Spec;

/// The limits to enforce. `Default` is Neon's.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Off: every request passes.
    pub enabled: bool,
    /// Sustained requests per minute per API key (Neon: 700). Also the bucket's capacity.
    pub per_minute: u32,
    /// Requests per second per API key and route (Neon: 40); the burst a route allows.
    pub burst_per_second: u32,
    /// Extra limit per API key on `/consumption_history/*` in requests per minute
    /// (Neon: about 30); `None` for none.
    pub consumption_per_minute: Option<u32>,
    /// Add `Retry-After` (whole seconds until a request would pass) to 429 answers.
    pub retry_after: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            per_minute: 700,
            burst_per_second: 40,
            consumption_per_minute: Some(30),
            retry_after: false,
        }
    }
}

impl RateLimitConfig {
    /// No limits at all.
    pub fn disabled() -> Self {
        RateLimitConfig {
            enabled: false,
            ..RateLimitConfig::default()
        }
    }

    /// Neon's limits multiplied by `factor` (benchmarks run faster than real accounts).
    pub fn scaled(factor: u32) -> Self {
        let d = RateLimitConfig::default();
        RateLimitConfig {
            per_minute: d.per_minute.saturating_mul(factor),
            burst_per_second: d.burst_per_second.saturating_mul(factor),
            consumption_per_minute: d.consumption_per_minute.map(|c| c.saturating_mul(factor)),
            ..d
        }
    }
}

/// A token bucket: `capacity` tokens, refilled at `per_sec` tokens per second.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, capacity: f64, per_sec: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(capacity);
        self.last = now;
    }

    /// Seconds until one token is available (0 if one is).
    fn wait_secs(&self, per_sec: f64) -> f64 {
        if self.tokens >= 1.0 || per_sec <= 0.0 {
            0.0
        } else {
            (1.0 - self.tokens) / per_sec
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BucketKey {
    Account(u64),
    Route(u64, String),
    Consumption(u64),
}

#[derive(Debug)]
struct State {
    config: RateLimitConfig,
    buckets: HashMap<BucketKey, Bucket>,
}

/// Shared control over one emulator's rate limits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    state: Arc<Mutex<State>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// Which limit: `account`, `route` or `consumption`.
    pub limit: &'static str,
    /// Seconds until a request would pass.
    pub wait_secs: f64,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter {
            state: Arc::new(Mutex::new(State {
                config,
                buckets: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning only means a panic elsewhere; the buckets are plain numbers.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits in force.
    pub fn config(&self) -> RateLimitConfig {
        self.lock().config.clone()
    }

    /// Changes the limits; buckets start full again.
    pub fn set_config(&self, config: RateLimitConfig) {
        let mut s = self.lock();
        s.config = config;
        s.buckets.clear();
    }

    /// Takes one token from each bucket the request counts against, or says which is empty
    /// (then nothing is taken). `api_key` is the bearer token (only its hash is kept),
    /// `route` the route template, `api_path` the path below `/api/v2`.
    pub fn check(&self, api_key: &str, route: &str, api_path: &str) -> Result<(), Limited> {
        let now = Instant::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let cfg = &state.config;
        if !cfg.enabled {
            return Ok(());
        }
        let account = {
            let mut h = DefaultHasher::new();
            api_key.hash(&mut h);
            h.finish()
        };
        let mut limits: Vec<(BucketKey, f64, f64, &'static str)> = vec![
            (
                BucketKey::Account(account),
                f64::from(cfg.per_minute),
                f64::from(cfg.per_minute) / 60.0,
                "account",
            ),
            (
                BucketKey::Route(account, route.to_string()),
                f64::from(cfg.burst_per_second),
                f64::from(cfg.burst_per_second),
                "route",
            ),
        ];
        if let Some(c) = cfg.consumption_per_minute {
            if api_path.starts_with("/consumption_history/") {
                limits.push((
                    BucketKey::Consumption(account),
                    f64::from(c),
                    f64::from(c) / 60.0,
                    "consumption",
                ));
            }
        }
        for (key, cap, rate, _) in &limits {
            state
                .buckets
                .entry(key.clone())
                .or_insert_with(|| Bucket::full(*cap, now))
                .refill(*cap, *rate, now);
        }
        let mut refusal: Option<Limited> = None;
        for (key, _, rate, name) in &limits {
            let b = &state.buckets[key];
            if b.tokens < 1.0 {
                let wait = b.wait_secs(*rate);
                if refusal.as_ref().is_none_or(|r| wait > r.wait_secs) {
                    refusal = Some(Limited {
                        limit: name,
                        wait_secs: wait,
                    });
                }
            }
        }
        if let Some(r) = refusal {
            return Err(r);
        }
        for (key, ..) in &limits {
            if let Some(b) = state.buckets.get_mut(key) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }
}

/// The bearer token of a request, or `""` when there is none (those requests share a bucket
/// and are refused as unauthorized further in).
fn api_key(req: &Request<Body>) -> &str {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")))
        .unwrap_or("")
}

/// The route a request counts against: the spec template if Neon's document has one,
/// otherwise the raw path.
fn route_of(method: &str, api_path: &str) -> String {
    match Spec::neon().find_operation(method, api_path) {
        Some(op) => format!("{} {}", method, op.template()),
        None => format!("{method} {api_path}"),
    }
}

/// The middleware enforcing a [`RateLimiter`]'s limits (add it with
/// `axum::middleware::from_fn_with_state(limiter, ratelimit::middleware)`).
pub async fn middleware(
    axum::extract::State(limiter): axum::extract::State<RateLimiter>,
    req: Request<Body>,
    next: Next,
) -> Response<Body> {
    let Some(api_path) = crate::openapi::api_path(req.uri().path()) else {
        return next.run(req).await;
    };
    let route = route_of(req.method().as_str(), api_path);
    let verdict = limiter.check(api_key(&req), &route, api_path);
    match verdict {
        Ok(()) => next.run(req).await,
        Err(limited) => {
            let request_id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| format!("sim-rl-{:016x}", rand::random::<u64>()));
            let message = format!(
                "rate limit exceeded ({} limit), please retry later",
                limited.limit
            );
            let body = crate::error::GeneralError {
                code: "TOO_MANY_REQUESTS".into(),
                message: message.clone(),
                request_id: request_id.clone(),
            };
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            // Inside the emulator's request-id layer, the body gets the request's id.
            resp.extensions_mut().insert(crate::error::ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                message,
            ));
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            if limiter.config().retry_after {
                let secs = limited.wait_secs.ceil().max(1.0) as u64;
                resp.headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn route_burst_then_refill() {
        let rl = RateLimiter::new(RateLimitConfig::default());
        for i in 0..40 {
            assert!(rl.check("k", "GET /projects", "/projects").is_ok(), "{i}");
        }
        let err = rl.check("k", "GET /projects", "/projects").unwrap_err();
        assert_eq!(err.limit, "route");
        // Another route and another key are unaffected.
        assert!(rl.check("k", "GET /regions", "/regions").is_ok());
        assert!(rl.check("other", "GET /projects", "/projects").is_ok());
        tokio::time::advance(Duration::from_millis(30)).await;
        assert!(rl.check("k", "GET /projects", "/projects").is_ok());
        assert!(rl.check("k", "GET /projects", "/projects").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn account_limit_over_a_minute() {
        let rl = RateLimiter::new(RateLimitConfig::default());
        // 700 requests spread over many routes pass, the 701st is refused by the account limit.
        for i in 0..700 {
            let route = format!("GET /r{}", i / 40);
            assert!(rl.check("k", &route, "/x").is_ok(), "{i}");
        }
        let err = rl.check("k", "GET /fresh", "/x").unwrap_err();
        assert_eq!(err.limit, "account");
        assert!((err.wait_secs - 60.0 / 700.0).abs() < 1e-6);
        tokio::time::advance(Duration::from_secs(6)).await; // 70 tokens back
        for _ in 0..40 {
            assert!(rl.check("k", "GET /fresh", "/x").is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consumption_limit_and_disable() {
        let rl = RateLimiter::new(RateLimitConfig::default());
        let p = "/consumption_history/v2/projects";
        for _ in 0..30 {
            assert!(rl.check("k", "GET c", p).is_ok());
        }
        assert_eq!(rl.check("k", "GET c", p).unwrap_err().limit, "consumption");
        rl.set_config(RateLimitConfig::disabled());
        for _ in 0..1000 {
            assert!(rl.check("k", "GET c", p).is_ok());
        }
        rl.set_config(RateLimitConfig::scaled(2));
        for _ in 0..60 {
            assert!(rl.check("k", "GET c", p).is_ok());
        }
        assert!(rl.check("k", "GET c", p).is_err());
    }
}

/// The layer on a router, with paused tokio time.
#[cfg(test)]
mod layer_tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use std::time::Duration;
    use tower::ServiceExt;

    fn app(rl: &RateLimiter) -> Router {
        Router::new()
            .route("/api/v2/projects/{project_id}", get(|| async { "ok" }))
            .route("/api/v2/regions", get(|| async { "ok" }))
            .route("/_sim/clock", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(rl.clone(), middleware))
    }

    fn req(path: &str, key: &str) -> Request<Body> {
        Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    }

    async fn statuses(app: &Router, n: usize, path: &str, key: &str) -> Vec<u16> {
        let mut out = Vec::new();
        for _ in 0..n {
            let r = app.clone().oneshot(req(path, key)).await.unwrap();
            out.push(r.status().as_u16());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn burst_of_41_on_one_route_gives_one_429_then_refills() {
        let rl = RateLimiter::new(RateLimitConfig::default());
        let app = app(&rl);
        // Different project ids are the same route template.
        let mut got = Vec::new();
        for i in 0..41 {
            let r = app
                .clone()
                .oneshot(req(&format!("/api/v2/projects/p-{i}"), "key-a"))
                .await
                .unwrap();
            got.push(r.status().as_u16());
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                assert!(r.headers().get("retry-after").is_none());
                let b = axum::body::to_bytes(r.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let body: serde_json::Value = serde_json::from_slice(&b).unwrap();
                crate::openapi::validate_neon_response("GET", "/projects/p", 429, Some(&body))
                    .unwrap();
            }
        }
        assert_eq!(got.iter().filter(|s| **s == 429).count(), 1, "{got:?}");
        assert_eq!(got[40], 429);
        // Other routes, other keys and admin routes are not limited by that burst.
        assert_eq!(statuses(&app, 1, "/api/v2/regions", "key-a").await, [200]);
        assert_eq!(
            statuses(&app, 1, "/api/v2/projects/p", "key-b").await,
            [200]
        );
        assert_eq!(statuses(&app, 50, "/_sim/clock", "key-a").await, [200; 50]);
        // A second later the route's bucket is full again.
        tokio::time::advance(Duration::from_secs(1)).await;
        let again = statuses(&app, 41, "/api/v2/projects/p", "key-a").await;
        assert_eq!(again.iter().filter(|s| **s == 429).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_when_configured_and_off_switch() {
        let rl = RateLimiter::new(RateLimitConfig {
            retry_after: true,
            burst_per_second: 2,
            ..RateLimitConfig::default()
        });
        let app = app(&rl);
        assert_eq!(statuses(&app, 2, "/api/v2/regions", "k").await, [200, 200]);
        let r = app
            .clone()
            .oneshot(req("/api/v2/regions", "k"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "1");
        rl.set_config(RateLimitConfig::disabled());
        assert_eq!(
            statuses(&app, 100, "/api/v2/regions", "k").await,
            [200; 100]
        );
    }
}
