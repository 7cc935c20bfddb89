//! A fake code forge: GitHub's pull requests and GitLab's merge requests, enough of both
//! for neon-steward's `pull_request = "closed"` condition (its tests and `demo`).
//!
//! One repository, served on 127.0.0.1 with the forge's response shapes:
//!
//! - GitHub: `GET /repos/{owner}/{repo}/pulls?state=&sort=updated&direction=desc&per_page=
//!   &page=`, `Authorization: Bearer <token>`, pages linked by `Link: <...>; rel="next"`.
//! - GitLab: `GET /projects/{url-encoded path}/merge_requests?state=&order_by=updated_at
//!   &sort=desc&updated_after=&per_page=&page=`, `PRIVATE-TOKEN: <token>`, `X-Next-Page`,
//!   `X-Page`, `X-Per-Page`, `X-Total`.
//!
//! Every answer carries rate-limit headers (`X-RateLimit-Limit/Remaining/Reset` on GitHub,
//! `RateLimit-*` on GitLab) from a quota that [`FakeForge::set_quota`] sets. Faults are
//! injected per request ([`FakeForge::fail`]): a status (5xx, 401, 404, ...) or a rate limit
//! (429 or 403 with `Retry-After` and a spent quota), for the next `n` requests or all.
//! Every request is counted and logged (path and query, never the token).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

/// Which forge the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeFlavor {
    Github,
    Gitlab,
}

/// A pull (merge) request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeState {
    Open,
    Closed,
    Merged,
    /// GitLab's `locked` (GitHub shows it as open).
    Locked,
}

#[derive(Debug, Clone)]
pub struct FakePull {
    pub number: u64,
    pub state: FakeState,
    pub head_ref: String,
    pub updated_at: DateTime<Utc>,
    /// When it was closed or merged.
    pub ended_at: Option<DateTime<Utc>>,
}

/// An injected answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and the forge's error body).
    Status(u16),
    /// A rate limit: GitHub's 403 (or 429 when `too_many`), GitLab's 429, with this
    /// `Retry-After` and a spent quota.
    RateLimited {
        retry_after_secs: u64,
        too_many: bool,
    },
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct ForgeRequest {
    pub path: String,
    pub query: String,
    /// The answer's status.
    pub status: u16,
}

struct Inner {
    pulls: Vec<FakePull>,
    max_page: usize,
    faults: VecDeque<Fault>,
    fault_forever: Option<Fault>,
    quota_limit: u64,
    quota_remaining: u64,
    quota_reset: DateTime<Utc>,
    log: Vec<ForgeRequest>,
}

#[derive(Clone)]
struct Shared {
    flavor: ForgeFlavor,
    repository: Arc<str>,
    token: Arc<str>,
    base: Arc<str>,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding it leaves plain data behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake forge for one repository.
pub struct FakeForge {
    addr: SocketAddr,
    shared: Shared,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeForge {
    /// Serves `repository` (`owner/name`, `group/sub/name`) on 127.0.0.1 (a free port),
    /// answering requests that carry `token`.
    pub async fn start(
        flavor: ForgeFlavor,
        repository: &str,
        token: &str,
    ) -> anyhow::Result<FakeForge> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the fake forge: {e}"))?;
        let addr = listener.local_addr()?;
        let base = match flavor {
            ForgeFlavor::Github => format!("http://{addr}"),
            ForgeFlavor::Gitlab => format!("http://{addr}/api/v4"),
        };
        let shared = Shared {
            flavor,
            repository: repository.into(),
            token: token.into(),
            base: base.into(),
            inner: Arc::new(Mutex::new(Inner {
                pulls: Vec::new(),
                max_page: 100,
                faults: VecDeque::new(),
                fault_forever: None,
                quota_limit: 5000,
                quota_remaining: 5000,
                quota_reset: Utc::now() + chrono::Duration::hours(1),
                log: Vec::new(),
            })),
        };
        let app = Router::new()
            .route("/repos/{owner}/{repo}/pulls", get(github_pulls))
            .route("/api/v4/projects/{id}/merge_requests", get(gitlab_mrs))
            .fallback(not_found)
            .with_state(shared.clone());
        let (shutdown, mut rx) = watch::channel(false);
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "fake forge stopped with an error");
            }
        });
        Ok(FakeForge {
            addr,
            shared,
            shutdown,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API root to configure (`api_url`): `http://127.0.0.1:PORT` for GitHub,
    /// `http://127.0.0.1:PORT/api/v4` for GitLab.
    pub fn api_url(&self) -> String {
        self.shared.base.to_string()
    }

    /// Adds or replaces a pull request.
    pub fn upsert(&self, pull: FakePull) {
        let mut g = self.shared.lock();
        g.pulls.retain(|p| p.number != pull.number);
        g.pulls.push(pull);
    }

    /// Adds a pull request `number` from `head_ref` in `state`, updated (and, unless open,
    /// ended) at `at`.
    pub fn add(&self, number: u64, state: FakeState, head_ref: &str, at: DateTime<Utc>) {
        self.upsert(FakePull {
            number,
            state,
            head_ref: head_ref.to_string(),
            updated_at: at,
            ended_at: matches!(state, FakeState::Closed | FakeState::Merged).then_some(at),
        });
    }

    /// Changes a pull request's state at `at` (a merge, a close, a reopen).
    pub fn set_state(&self, number: u64, state: FakeState, at: DateTime<Utc>) {
        let mut g = self.shared.lock();
        if let Some(p) = g.pulls.iter_mut().find(|p| p.number == number) {
            p.state = state;
            p.updated_at = at;
            p.ended_at = matches!(state, FakeState::Closed | FakeState::Merged).then_some(at);
        }
    }

    /// The largest page served, whatever `per_page` asks (default 100, as both forges).
    pub fn max_page(&self, n: usize) {
        self.shared.lock().max_page = n.max(1);
    }

    /// Injects `fault` into the next `times` requests (queued after earlier ones).
    pub fn fail(&self, fault: Fault, times: usize) {
        let mut g = self.shared.lock();
        g.faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Injects `fault` into every request from now on (`None`: stop).
    pub fn fail_always(&self, fault: Option<Fault>) {
        self.shared.lock().fault_forever = fault;
    }

    /// Sets the quota the rate-limit headers report: `remaining` requests until `reset`.
    pub fn set_quota(&self, remaining: u64, reset: DateTime<Utc>) {
        let mut g = self.shared.lock();
        g.quota_remaining = remaining;
        g.quota_reset = reset;
    }

    /// Requests served so far (faulted ones included).
    pub fn requests(&self) -> usize {
        self.shared.lock().log.len()
    }

    pub fn request_log(&self) -> Vec<ForgeRequest> {
        self.shared.lock().log.clone()
    }

    pub fn clear_log(&self) {
        self.shared.lock().log.clear();
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
    updated_after: Option<DateTime<Utc>>,
}

async fn not_found(State(s): State<Shared>, uri: Uri) -> Response {
    log(&s, &uri, 404);
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"message": "Not Found"})),
    )
        .into_response()
}

async fn github_pulls(
    State(s): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    serve(&s, &uri, auth, &format!("{owner}/{repo}"), q)
}

async fn gitlab_mrs(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let auth = headers.get("private-token").and_then(|v| v.to_str().ok());
    serve(&s, &uri, auth, &id, q)
}

fn log(s: &Shared, uri: &Uri, status: u16) {
    s.lock().log.push(ForgeRequest {
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        status,
    });
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn serve(s: &Shared, uri: &Uri, token: Option<&str>, repo: &str, q: ListQuery) -> Response {
    let gh = s.flavor == ForgeFlavor::Github;
    let mut g = s.lock();
    // The route of the other forge is not this forge's.
    let route_ok = gh == uri.path().starts_with("/repos/");
    let fault = g.faults.pop_front().or(g.fault_forever);
    g.quota_remaining = g.quota_remaining.saturating_sub(1);
    let mut headers = HeaderMap::new();
    let (limit, remaining, reset) = (g.quota_limit, g.quota_remaining, g.quota_reset);
    let mut quota = |remaining: u64| {
        let prefix = if gh { "x-ratelimit-" } else { "ratelimit-" };
        for (k, v) in [
            ("limit", limit.to_string()),
            ("remaining", remaining.to_string()),
            ("reset", reset.timestamp().to_string()),
        ] {
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::from_bytes(format!("{prefix}{k}").as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                headers.insert(name, value);
            }
        }
    };
    let error = |status: u16, message: &str| {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(json!({ "message": message })),
        )
    };
    let answer: (u16, Response) = match fault {
        Some(Fault::Status(st)) => {
            quota(remaining);
            (st, (headers, error(st, "injected fault")).into_response())
        }
        Some(Fault::RateLimited {
            retry_after_secs,
            too_many,
        }) => {
            quota(0);
            headers.insert("retry-after", HeaderValue::from(retry_after_secs));
            let st = if gh && !too_many { 403 } else { 429 };
            (
                st,
                (headers, error(st, "API rate limit exceeded")).into_response(),
            )
        }
        None if token != Some(&*s.token) => {
            quota(remaining);
            (
                401,
                (headers, error(401, "Bad credentials")).into_response(),
            )
        }
        None if !route_ok || repo != &*s.repository => {
            quota(remaining);
            (404, (headers, error(404, "Not Found")).into_response())
        }
        None => {
            quota(remaining);
            let mut pulls: Vec<&FakePull> = g
                .pulls
                .iter()
                .filter(|p| match q.state.as_deref() {
                    None | Some("all") => true,
                    Some("open") | Some("opened") => {
                        matches!(p.state, FakeState::Open | FakeState::Locked)
                    }
                    Some("closed") => {
                        p.state == FakeState::Closed || (gh && p.state == FakeState::Merged)
                    }
                    Some("merged") => p.state == FakeState::Merged,
                    Some(_) => false,
                })
                .filter(|p| q.updated_after.is_none_or(|a| gh || p.updated_at >= a))
                .collect();
            pulls.sort_by(|a, b| {
                b.updated_at
                    .cmp(&a.updated_at)
                    .then(b.number.cmp(&a.number))
            });
            let per_page = q.per_page.unwrap_or(30).clamp(1, g.max_page);
            let page = q.page.unwrap_or(1).max(1);
            let total = pulls.len();
            let items: Vec<serde_json::Value> = pulls
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|p| if gh { github_json(p) } else { gitlab_json(p) })
                .collect();
            let has_next = page * per_page < total;
            if gh {
                if has_next {
                    let mut next: Vec<(String, String)> = url_pairs(uri)
                        .into_iter()
                        .filter(|(k, _)| k != "page")
                        .collect();
                    next.push(("page".into(), (page + 1).to_string()));
                    let query: Vec<String> = next.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let link = format!(
                        "<{}{}?{}>; rel=\"next\"",
                        s.base,
                        uri.path(),
                        query.join("&")
                    );
                    if let Ok(v) = HeaderValue::from_str(&link) {
                        headers.insert("link", v);
                    }
                }
            } else {
                let next = if has_next {
                    (page + 1).to_string()
                } else {
                    String::new()
                };
                for (k, v) in [
                    ("x-next-page", next),
                    ("x-page", page.to_string()),
                    ("x-per-page", per_page.to_string()),
                    ("x-total", total.to_string()),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        headers.insert(k, v);
                    }
                }
            }
            (200, (headers, axum::Json(items)).into_response())
        }
    };
    drop(g);
    log(s, uri, answer.0);
    answer.1
}

fn url_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn github_json(p: &FakePull) -> serde_json::Value {
    let (state, merged_at) = match p.state {
        FakeState::Open | FakeState::Locked => ("open", None),
        FakeState::Closed => ("closed", None),
        FakeState::Merged => ("closed", p.ended_at),
    };
    json!({
        "url": format!("https://api.github.com/repos/x/y/pulls/{}", p.number),
        "number": p.number,
        "state": state,
        "title": format!("Change {}", p.number),
        "draft": false,
        "created_at": rfc3339(p.updated_at - chrono::Duration::days(1)),
        "updated_at": rfc3339(p.updated_at),
        "closed_at": p.ended_at.map(rfc3339),
        "merged_at": merged_at.map(rfc3339),
        "head": {"ref": p.head_ref, "label": format!("x:{}", p.head_ref), "sha": "0".repeat(40)},
        "base": {"ref": "main", "label": "x:main", "sha": "1".repeat(40)},
    })
}

fn gitlab_json(p: &FakePull) -> serde_json::Value {
    let state = match p.state {
        FakeState::Open => "opened",
        FakeState::Locked => "locked",
        FakeState::Closed => "closed",
        FakeState::Merged => "merged",
    };
    json!({
        "id": 1000 + p.number,
        "iid": p.number,
        "project_id": 1,
        "title": format!("Change {}", p.number),
        "state": state,
        "created_at": rfc3339(p.updated_at - chrono::Duration::days(1)),
        "updated_at": rfc3339(p.updated_at),
        "merged_at": (p.state == FakeState::Merged).then_some(p.ended_at).flatten().map(rfc3339),
        "closed_at": (p.state == FakeState::Closed).then_some(p.ended_at).flatten().map(rfc3339),
        "source_branch": p.head_ref,
        "target_branch": "main",
    })
}
