//! The typed Neon API client.
//!
//! One [`NeonClient`] per API key, cloned freely (it is an `Arc`). Every HTTP attempt goes
//! through [`NeonClient::execute`]: the client-side rate limiter, a fresh `X-Request-ID`, a
//! per-request timeout, a telemetry event, and retries per [`retry`](super::retry). List calls
//! are streams that fetch pages lazily, so a job can stop early without paying for the rest.

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use reqwest::header::{HeaderValue, ACCEPT, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;

use super::error::ApiError;
use super::ratelimit::RateLimiter;
use super::retry::{
    parse_retry_after, poll_until, retry, retry_reason, Label, OperationPace, PollPolicy,
    RetryPolicy,
};
use super::types::*;
use super::wire;
use crate::secret::Secret;
use crate::telemetry::events::ApiRequestCompleted;

/// Neon's own maximum of `project_ids` per consumption call.
pub const MAX_CONSUMPTION_PROJECT_IDS: usize = 100;

/// The largest `limit` each list endpoint accepts, from Neon's OpenAPI document
/// (`sim/spec/neon-v2.json`). Neon's rate limit charges per request, not per item, so by
/// default every listing asks for these.
pub mod page_max {
    /// `GET /projects` (`listProjects`).
    pub const PROJECTS: u32 = 400;
    /// `GET /projects/{project_id}/branches` (`listProjectBranches`).
    pub const BRANCHES: u32 = 10_000;
    /// `GET /projects/{project_id}/operations` (`listProjectOperations`).
    pub const OPERATIONS: u32 = 1_000;
    /// `GET /consumption_history/v2/projects` and the legacy `/consumption_history/projects`.
    pub const CONSUMPTION_PROJECTS: u32 = 100;
    /// `GET /consumption_history/v2/branches` (`getConsumptionHistoryPerBranchV2`), in branches.
    pub const CONSUMPTION_BRANCHES: u32 = 1_000;
}

/// [`ClientConfig::page_size`]'s default: the largest maximum of any list endpoint, so that
/// each endpoint is asked for its own maximum ([`page_max`]).
pub const DEFAULT_PAGE_SIZE: u32 = page_max::BRANCHES;

/// Page size of the scan for unfinished operations ([`NeonClient::operations_in_progress`]).
/// The scan stops after the first page whose operations have all ended, so this page is
/// also the margin of finished operations that must lie between the newest operation and
/// an unfinished one for the scan to stop before it (see that method); 100 keeps the page
/// small in bytes (the scan runs per project and per poll) and the margin wide.
const IN_PROGRESS_SCAN_PAGE: u32 = 100;

/// Told the final outcome of every logical API call (after retries): how `/readyz` learns
/// that Neon refuses the key or cannot be reached, without the client knowing who listens.
pub trait ApiObserver: Send + Sync + std::fmt::Debug {
    fn record(&self, outcome: Result<(), &ApiError>);
}

/// How to reach Neon and how politely.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Including the `/api/v2` prefix, e.g. `https://console.neon.tech/api/v2`.
    pub base_url: String,
    pub api_key: Secret,
    /// For one HTTP attempt, connection through the last byte of the body.
    pub timeout: Duration,
    /// Client-side limit; Neon allows about 700/min per account.
    pub rate_limit_per_minute: u32,
    /// Requests that may go out back to back (Neon allows bursts of 40/s per route).
    pub burst: u32,
    /// Extra client-side limit for `/consumption_history/*`, which Neon limits harder
    /// (about 30/min). Requests there take a token from both buckets.
    pub consumption_rate_limit_per_minute: u32,
    pub consumption_burst: u32,
    /// Retries after the first attempt of one call.
    pub max_retries: u32,
    /// Total time one call may spend retrying.
    pub max_retry_elapsed: Duration,
    /// Upper bound of the first retry delay (doubles per retry, capped at `retry_max_delay`).
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub user_agent: String,
    /// The largest page asked for in list calls; each endpoint's own maximum ([`page_max`])
    /// applies on top. The default ([`DEFAULT_PAGE_SIZE`]) asks every endpoint for its
    /// maximum, because Neon's rate limit counts requests: listing 2,000 branches is one
    /// request at 10,000 per page and 20 at 100. Lower it only to bound response sizes.
    pub page_size: u32,
    /// The shortest interval between polls in `wait_for_operations` /
    /// `wait_for_project_idle`, and the first one until an operation has been seen to finish;
    /// after that the first poll comes when operations have lately taken (see
    /// [`PollPolicy`]). `poll_max` is the longest interval.
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// Where the final outcome of every call is recorded (for `/readyz`), if anywhere.
    pub health: Option<Arc<dyn ApiObserver>>,
}

impl ClientConfig {
    /// Defaults that suit Neon's documented limits.
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            api_key,
            timeout: Duration::from_secs(30),
            rate_limit_per_minute: 700,
            burst: 40,
            consumption_rate_limit_per_minute: 30,
            consumption_burst: 10,
            max_retries: 6,
            max_retry_elapsed: Duration::from_secs(120),
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            user_agent: format!("neon-steward/{}", env!("CARGO_PKG_VERSION")),
            page_size: DEFAULT_PAGE_SIZE,
            poll_initial: DEFAULT_POLL_INITIAL,
            poll_max: DEFAULT_POLL_MAX,
            health: None,
        }
    }
}

/// The default shortest (and first) interval between operation polls: soon, because the
/// first poll of an operation comes when operations have lately taken, so this only
/// matters until one has been seen to finish, and for operations that end at once.
pub const DEFAULT_POLL_INITIAL: Duration = Duration::from_millis(5);
/// The default longest interval between operation polls.
pub const DEFAULT_POLL_MAX: Duration = Duration::from_secs(5);

/// Decides, right before each request of a call is sent, whether it may still be sent:
/// `None` to send, `Some(reason)` to refuse it ([`ApiError::NotSent`]).
pub type SendGate = Arc<dyn Fn() -> Option<String> + Send + Sync>;

tokio::task_local! {
    static SEND_GATE: SendGate;
}

/// Runs `call` with `gate` consulted before every request it sends, its retries included
/// (the jobs: "is this run still surely ours?", see `jobs/calls.rs`).
pub async fn with_send_gate<T>(gate: SendGate, call: impl std::future::Future<Output = T>) -> T {
    SEND_GATE.scope(gate, call).await
}

fn gate_refusal() -> Option<String> {
    SEND_GATE.try_with(|gate| gate()).ok().flatten()
}

/// A cheap-to-clone handle on the Neon API.
#[derive(Clone)]
pub struct NeonClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    key: Secret,
    limiter: RateLimiter,
    consumption_limiter: RateLimiter,
    policy: RetryPolicy,
    timeout: Duration,
    page_size: u32,
    poll_initial: Duration,
    poll_max: Duration,
    /// How long operations have lately taken (the first poll's delay).
    pace: OperationPace,
    health: Option<Arc<dyn ApiObserver>>,
}

impl fmt::Debug for NeonClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NeonClient")
            .field("base_url", &self.inner.base.as_str())
            .field("api_key", &self.inner.key)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.policy)
            .finish()
    }
}

/// One logical API call (possibly several HTTP attempts).
struct Call {
    method: Method,
    /// Path template, for telemetry and errors.
    route: &'static str,
    /// Unencoded path segments after the base URL.
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<serde_json::Value>,
    /// Safe to repeat after a timeout or a 5xx.
    idempotent: bool,
}

impl Call {
    fn get(route: &'static str, segments: &[&str]) -> Self {
        Call {
            method: Method::GET,
            route,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
            idempotent: true,
        }
    }

    fn with_method(mut self, method: Method, idempotent: bool) -> Self {
        self.method = method;
        self.idempotent = idempotent;
        self
    }

    fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    fn query_opt(self, key: &'static str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.query(key, v),
            None => self,
        }
    }

    fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// A 2xx answer.
struct Reply {
    status: u16,
    body: Vec<u8>,
    request_id: Option<String>,
}

/// How one page of a list is read: its items, the cursor for the next page, and how many
/// records the page held (projects for consumption, whose items are their periods).
///
/// A page shorter than the `limit` asked for is NOT taken as the last one: the document only
/// calls `limit` a maximum (and `GET /projects` returns short, incomplete pages on its
/// server-side timeout), and a listing cut short could make a parent branch look childless.
/// A listing ends on a missing or empty cursor, or an empty page. The one exception is
/// `GET /projects`, whose incomplete pages say so (`unavailable_project_ids`): a short page
/// that names none is its last (see `list_projects`).
type Extract<W, T> = Box<dyn Fn(W) -> (Vec<T>, Option<String>, usize) + Send + Sync>;

struct PageSpec<W, T> {
    base: Call,
    cursor_param: &'static str,
    extract: Extract<W, T>,
    /// A page for which this holds is the last one fetched, whatever its cursor says: the
    /// caller knows from the data that older pages cannot matter.
    last_page_if: Option<fn(&[T]) -> bool>,
}

impl NeonClient {
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        // Quoted without any user info: that part of a URL is a credential.
        let shown = crate::secret::without_userinfo(&config.base_url);
        let mut base = Url::parse(config.base_url.trim_end_matches('/'))
            .map_err(|e| ApiError::Config(format!("base_url {shown:?}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ApiError::Config(format!(
                "base_url {shown:?} must be an http(s) URL"
            )));
        }
        // reqwest would send user info as Basic credentials instead of the bearer key.
        if !base.username().is_empty() || base.password().is_some() {
            return Err(ApiError::Config(format!(
                "base_url {shown:?} must not contain user info (user:password@)"
            )));
        }
        crate::secret::check_token_shape(config.api_key.expose())
            .map_err(|why| ApiError::Config(format!("the API key {why}")))?;
        base.set_query(None);
        base.set_fragment(None);
        let user_agent = HeaderValue::from_str(&config.user_agent).map_err(|_| {
            ApiError::Config(format!(
                "user_agent {:?} is not a valid header",
                config.user_agent
            ))
        })?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(USER_AGENT, user_agent);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // Neon does not redirect; following one could carry the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| ApiError::Config(format!("HTTP client: {e}")))?;
        Ok(NeonClient {
            inner: Arc::new(Inner {
                http,
                base,
                key: config.api_key,
                limiter: RateLimiter::new(config.rate_limit_per_minute, config.burst),
                consumption_limiter: RateLimiter::new(
                    config.consumption_rate_limit_per_minute,
                    config.consumption_burst,
                ),
                policy: RetryPolicy {
                    max_retries: config.max_retries,
                    max_elapsed: config.max_retry_elapsed,
                    base: config.retry_base_delay,
                    cap: config.retry_max_delay,
                },
                timeout: config.timeout,
                page_size: config.page_size.max(1),
                poll_initial: config.poll_initial,
                poll_max: config.poll_max.max(config.poll_initial),
                pace: OperationPace::default(),
                health: config.health,
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    // ---------------------------------------------------------------- identity

    pub async fn current_user(&self) -> Result<CurrentUser, ApiError> {
        let call = Call::get("/users/me", &["users", "me"]);
        let u: wire::CurrentUser = self.fetch(&call).await?;
        Ok(u.into())
    }

    /// The billing plan of an organization (`GET /organizations/{org_id}`, its `plan`), e.g.
    /// `free_v3` or `scale`: what Neon's per-plan limits (manual snapshots) depend on.
    pub async fn organization_plan(&self, org: &OrgId) -> Result<String, ApiError> {
        let call = Call::get("/organizations/{org_id}", &["organizations", org.as_str()]);
        let o: wire::Organization = self.fetch(&call).await?;
        Ok(o.plan)
    }

    // ---------------------------------------------------------------- projects

    /// Every project the key can see (cursor pagination).
    pub fn list_projects(
        &self,
        filter: ProjectFilter,
    ) -> impl Stream<Item = Result<Project, ApiError>> + Send + 'static {
        let limit = self.limit(page_max::PROJECTS);
        let base = Call::get("/projects", &["projects"])
            .query("limit", limit.to_string())
            .query_opt("org_id", filter.org_id.map(|o| o.to_string()))
            .query_opt("search", filter.search);
        self.paginate(PageSpec {
            base,
            cursor_param: "cursor",
            last_page_if: None,
            // Neon hands out a cursor on the last page too, and the page after it is empty:
            // a page shorter than the limit that names no unavailable project (those a
            // server-side timeout left out) is complete and the last one, so no empty page
            // is asked for.
            extract: Box::new(move |p: wire::ProjectsPage| {
                let n = p.projects.len();
                let last = n < limit && p.unavailable_project_ids.is_empty();
                (
                    p.projects.into_iter().map(Into::into).collect(),
                    p.pagination.and_then(|p| p.cursor).filter(|_| !last),
                    n,
                )
            }),
        })
    }

    // ---------------------------------------------------------------- branches

    /// Every branch of a project (`pagination.next` pagination, oldest first so that pages
    /// stay stable while branches are created).
    pub fn list_branches(
        &self,
        project: &ProjectId,
    ) -> impl Stream<Item = Result<Branch, ApiError>> + Send + 'static {
        self.list_branches_with(project, false)
    }

    /// The project's soft-deleted branches that are still recoverable, each with
    /// `recoverable_until` (`include_deleted=true`, where Neon reports `recovery`; the
    /// feature is in preview, so an account without it may list none).
    pub fn list_recoverable_branches(
        &self,
        project: &ProjectId,
    ) -> impl Stream<Item = Result<Branch, ApiError>> + Send + 'static {
        self.list_branches_with(project, true)
            .try_filter(|b| futures::future::ready(b.recoverable_until.is_some()))
    }

    fn list_branches_with(
        &self,
        project: &ProjectId,
        include_deleted: bool,
    ) -> impl Stream<Item = Result<Branch, ApiError>> + Send + 'static {
        let limit = self.limit(page_max::BRANCHES);
        let mut base = Call::get(
            "/projects/{project_id}/branches",
            &["projects", project.as_str(), "branches"],
        )
        .query("limit", limit.to_string())
        .query("sort_by", "created_at")
        .query("sort_order", "asc");
        if include_deleted {
            base = base.query("include_deleted", "true");
        }
        self.paginate(PageSpec {
            base,
            cursor_param: "cursor",
            last_page_if: None,
            extract: Box::new(|p: wire::BranchesPage| {
                let n = p.branches.len();
                (
                    p.branches.into_iter().map(Into::into).collect(),
                    p.pagination.and_then(|p| p.next),
                    n,
                )
            }),
        })
    }

    pub async fn get_branch(
        &self,
        project: &ProjectId,
        branch: &BranchId,
    ) -> Result<Branch, ApiError> {
        let call = Call::get(
            "/projects/{project_id}/branches/{branch_id}",
            &["projects", project.as_str(), "branches", branch.as_str()],
        );
        let r: wire::BranchResponse = self.fetch(&call).await?;
        Ok(r.branch.into())
    }

    /// `PATCH` a branch. Neon's PATCH sets fields to given values, so it is retried like a PUT.
    pub async fn update_branch(
        &self,
        project: &ProjectId,
        branch: &BranchId,
        update: BranchUpdate,
    ) -> Result<(Branch, Vec<Operation>), ApiError> {
        let body = serde_json::to_value(wire::BranchUpdateRequest::from(&update))
            .map_err(|e| ApiError::InvalidRequest(format!("branch update: {e}")))?;
        let call = Call::get(
            "/projects/{project_id}/branches/{branch_id}",
            &["projects", project.as_str(), "branches", branch.as_str()],
        )
        .with_method(Method::PATCH, true)
        .body(body);
        let r: wire::BranchOperations = self.fetch(&call).await?;
        Ok((r.branch.into(), ops(r.operations)))
    }

    /// Deletes a branch (soft: Neon keeps it recoverable; the returned branch's
    /// `recoverable_until` says until when, where Neon reports it). A branch that is already
    /// gone yields [`ApiError::AlreadyDeleted`] (`is_not_found()`), which makes a retried
    /// delete harmless.
    pub async fn delete_branch(
        &self,
        project: &ProjectId,
        branch: &BranchId,
    ) -> Result<(Branch, Vec<Operation>), ApiError> {
        const ROUTE: &str = "/projects/{project_id}/branches/{branch_id}";
        let call = Call::get(
            ROUTE,
            &["projects", project.as_str(), "branches", branch.as_str()],
        )
        .with_method(Method::DELETE, true);
        let reply = self.execute(&call).await?;
        if reply.status == 204 {
            return Err(ApiError::AlreadyDeleted { route: ROUTE });
        }
        let r: wire::BranchOperations = decode(ROUTE, &reply)?;
        Ok((r.branch.into(), ops(r.operations)))
    }

    // ---------------------------------------------------------------- endpoints

    pub async fn list_endpoints(&self, project: &ProjectId) -> Result<Vec<Endpoint>, ApiError> {
        let call = Call::get(
            "/projects/{project_id}/endpoints",
            &["projects", project.as_str(), "endpoints"],
        );
        let r: wire::EndpointsResponse = self.fetch(&call).await?;
        Ok(r.endpoints.into_iter().map(Into::into).collect())
    }

    pub async fn get_endpoint(
        &self,
        project: &ProjectId,
        endpoint: &EndpointId,
    ) -> Result<Endpoint, ApiError> {
        let call = Call::get(
            "/projects/{project_id}/endpoints/{endpoint_id}",
            &["projects", project.as_str(), "endpoints", endpoint.as_str()],
        );
        let r: wire::EndpointResponse = self.fetch(&call).await?;
        Ok(r.endpoint.into())
    }

    /// `PATCH` an endpoint's settings. Neon's PATCH sets fields to given values, so it is
    /// retried like a PUT.
    pub async fn update_endpoint(
        &self,
        project: &ProjectId,
        endpoint: &EndpointId,
        update: &EndpointUpdate,
    ) -> Result<(Endpoint, Vec<Operation>), ApiError> {
        let body = serde_json::to_value(wire::EndpointUpdateRequest::from(update))
            .map_err(|e| ApiError::InvalidRequest(format!("endpoint update: {e}")))?;
        let call = Call::get(
            "/projects/{project_id}/endpoints/{endpoint_id}",
            &["projects", project.as_str(), "endpoints", endpoint.as_str()],
        )
        .with_method(Method::PATCH, true)
        .body(body);
        let r: wire::EndpointOperations = self.fetch(&call).await?;
        Ok((r.endpoint.into(), ops(r.operations)))
    }

    /// Starts a compute. Starting twice ends in the same state, so it is retried like a PUT.
    pub async fn start_endpoint(
        &self,
        project: &ProjectId,
        endpoint: &EndpointId,
    ) -> Result<(Endpoint, Vec<Operation>), ApiError> {
        let call = Call::get(
            "/projects/{project_id}/endpoints/{endpoint_id}/start",
            &[
                "projects",
                project.as_str(),
                "endpoints",
                endpoint.as_str(),
                "start",
            ],
        )
        .with_method(Method::POST, true);
        let r: wire::EndpointOperations = self.fetch(&call).await?;
        Ok((r.endpoint.into(), ops(r.operations)))
    }

    /// Suspends a compute. Idempotent in effect, so it is retried like a PUT.
    pub async fn suspend_endpoint(
        &self,
        project: &ProjectId,
        endpoint: &EndpointId,
    ) -> Result<(Endpoint, Vec<Operation>), ApiError> {
        let call = Call::get(
            "/projects/{project_id}/endpoints/{endpoint_id}/suspend",
            &[
                "projects",
                project.as_str(),
                "endpoints",
                endpoint.as_str(),
                "suspend",
            ],
        )
        .with_method(Method::POST, true);
        let r: wire::EndpointOperations = self.fetch(&call).await?;
        Ok((r.endpoint.into(), ops(r.operations)))
    }

    // ---------------------------------------------------------------- snapshots

    /// Creates a snapshot of a branch.
    ///
    /// A create is not idempotent, so a timeout, a dropped connection or a 5xx other than 503
    /// is not simply repeated: the client lists the project's snapshots and, if one of this
    /// branch appeared that is the one asked for, returns it (with no operations) instead of
    /// creating a second. Only if none appeared is the create tried again, within the retry
    /// budget. With a `name` the one asked for is the branch's snapshot of that name (Neon
    /// keeps snapshot names unique in a project, so it cannot be another's), and nothing is
    /// listed unless a failure is ambiguous; without one it is the newest of the branch's
    /// snapshots that were not there before, so the snapshots are listed first.
    pub async fn create_snapshot(
        &self,
        project: &ProjectId,
        branch: &BranchId,
        req: SnapshotRequest,
    ) -> Result<(Snapshot, Vec<Operation>), ApiError> {
        const ROUTE: &str = "/projects/{project_id}/branches/{branch_id}/snapshot";
        // Without a name: what existed before, so that a snapshot found after an ambiguous
        // failure is ours. With one the name tells (and the listing costs a request).
        let before: HashSet<SnapshotId> = match &req.name {
            Some(_) => HashSet::new(),
            None => self
                .list_snapshots(project)
                .await?
                .into_iter()
                .map(|s| s.id)
                .collect(),
        };
        let call = Call::get(
            ROUTE,
            &[
                "projects",
                project.as_str(),
                "branches",
                branch.as_str(),
                "snapshot",
            ],
        )
        .with_method(Method::POST, false)
        .query_opt("lsn", req.lsn.clone())
        .query_opt("timestamp", req.timestamp.map(wire::rfc3339))
        .query_opt("name", req.name.clone())
        .query_opt("expires_at", req.expires_at.map(wire::rfc3339));
        // An error that may be retried carries its reason: only an ambiguous failure after
        // which no snapshot of ours appeared.
        let (call, before, req) = (&call, &before, &req);
        let attempt = move || async move {
            let err = match self.execute(call).await {
                Ok(reply) => {
                    let r: wire::SnapshotOperations =
                        decode(ROUTE, &reply).map_err(|e| (e, None))?;
                    return Ok((r.snapshot.into(), ops(r.operations)));
                }
                Err(e) if e.may_have_succeeded() => e,
                Err(e) => return Err((e, None)),
            };
            let created = self
                .list_snapshots(project)
                .await
                .map_err(|e| (e, None))?
                .into_iter()
                .filter(|s| !before.contains(&s.id))
                .filter(|s| s.source_branch_id.as_ref().is_none_or(|b| b == branch))
                .filter(|s| req.name.as_ref().is_none_or(|n| &s.name == n))
                .max_by_key(|s| s.created_at);
            if let Some(s) = created {
                tracing::info!(
                    route = ROUTE,
                    snapshot_id = %s.id,
                    "snapshot create failed ambiguously but the snapshot exists; not repeating it"
                );
                return Ok((s, Vec::new()));
            }
            let reason = retry_reason(&err, true).unwrap_or("server_error");
            Err((err, Some(reason)))
        };
        let label = Label {
            method: "POST",
            route: ROUTE,
        };
        retry(
            &self.inner.policy,
            label,
            attempt,
            |(_, reason): &(ApiError, Option<&'static str>)| *reason,
            |_| None,
        )
        .await
        .map_err(|(e, _)| e)
    }

    pub async fn list_snapshots(&self, project: &ProjectId) -> Result<Vec<Snapshot>, ApiError> {
        let call = Call::get(
            "/projects/{project_id}/snapshots",
            &["projects", project.as_str(), "snapshots"],
        );
        let r: wire::SnapshotsResponse = self.fetch(&call).await?;
        Ok(r.snapshots.into_iter().map(Into::into).collect())
    }

    /// Deletes a snapshot; an already deleted one yields [`ApiError::AlreadyDeleted`].
    pub async fn delete_snapshot(
        &self,
        project: &ProjectId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Operation>, ApiError> {
        const ROUTE: &str = "/projects/{project_id}/snapshots/{snapshot_id}";
        let call = Call::get(
            ROUTE,
            &["projects", project.as_str(), "snapshots", snapshot.as_str()],
        )
        .with_method(Method::DELETE, true);
        let reply = self.execute(&call).await?;
        if reply.status == 204 {
            return Err(ApiError::AlreadyDeleted { route: ROUTE });
        }
        let r: wire::OperationsResponse = decode(ROUTE, &reply)?;
        Ok(ops(r.operations))
    }

    // ---------------------------------------------------------------- backup schedules

    /// A branch's backup schedule (`GET .../backup_schedule`; empty: none). Neon's
    /// endpoint is in beta.
    pub async fn get_backup_schedule(
        &self,
        project: &ProjectId,
        branch: &BranchId,
    ) -> Result<BackupSchedule, ApiError> {
        let call = Call::get(
            "/projects/{project_id}/branches/{branch_id}/backup_schedule",
            &[
                "projects",
                project.as_str(),
                "branches",
                branch.as_str(),
                "backup_schedule",
            ],
        );
        let r: wire::BackupSchedule = self.fetch(&call).await?;
        Ok(r.into())
    }

    /// Replaces a branch's backup schedule (`PUT .../backup_schedule`; an empty schedule
    /// turns it off). A PUT sets the whole schedule, so it is retried like any PUT. Neon
    /// accepts schedules on root branches only.
    pub async fn put_backup_schedule(
        &self,
        project: &ProjectId,
        branch: &BranchId,
        schedule: &BackupSchedule,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_value(wire::BackupSchedule::from(schedule))
            .map_err(|e| ApiError::InvalidRequest(format!("backup schedule: {e}")))?;
        let call = Call::get(
            "/projects/{project_id}/branches/{branch_id}/backup_schedule",
            &[
                "projects",
                project.as_str(),
                "branches",
                branch.as_str(),
                "backup_schedule",
            ],
        )
        .with_method(Method::PUT, true)
        .body(body);
        self.execute(&call).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- operations

    fn list_operations_paged(
        &self,
        project: &ProjectId,
        limit: usize,
        last_page_if: Option<fn(&[Operation]) -> bool>,
    ) -> impl Stream<Item = Result<Operation, ApiError>> + Send + 'static {
        let base = Call::get(
            "/projects/{project_id}/operations",
            &["projects", project.as_str(), "operations"],
        )
        .query("limit", limit.to_string());
        self.paginate(PageSpec {
            base,
            cursor_param: "cursor",
            last_page_if,
            extract: Box::new(|p: wire::OperationsPage| {
                let n = p.operations.len();
                (
                    p.operations.into_iter().map(Into::into).collect(),
                    p.pagination.and_then(|p| p.cursor),
                    n,
                )
            }),
        })
    }

    /// The project's operations still `scheduling`, `running` (or otherwise unfinished),
    /// newest first, without reading the whole history.
    ///
    /// Neon lists operations newest first and runs a project's operations through one queue:
    /// a mutation is refused with 423 while conflicting operations run, and a queued one
    /// stays `scheduling` until those before it end. Unfinished operations are therefore
    /// among the newest, so the scan stops after the first page (of up to 100) whose
    /// operations have all ended: an operation older than a whole page of finished ones is
    /// taken to be finished too. The usual answer costs one request, however long the
    /// history (the whole history cost one request per 100 operations before). Were one
    /// ever missed, the price is a 423 on the next mutation, which the jobs
    /// retry after waiting for the project, not a wrong action.
    pub async fn operations_in_progress(
        &self,
        project: &ProjectId,
    ) -> Result<Vec<Operation>, ApiError> {
        fn all_ended(page: &[Operation]) -> bool {
            page.iter().all(|o| o.status.is_terminal())
        }
        self.list_operations_paged(project, self.limit(IN_PROGRESS_SCAN_PAGE), Some(all_ended))
            .try_filter(|o| futures::future::ready(!o.status.is_terminal()))
            .try_collect()
            .await
    }

    pub async fn get_operation(
        &self,
        project: &ProjectId,
        operation: &OperationId,
    ) -> Result<Operation, ApiError> {
        let call = Call::get(
            "/projects/{project_id}/operations/{operation_id}",
            &[
                "projects",
                project.as_str(),
                "operations",
                operation.as_str(),
            ],
        );
        let r: wire::OperationResponse = self.fetch(&call).await?;
        Ok(r.operation.into())
    }

    /// Polls the given operations until none is scheduling or running, as Neon asks clients
    /// to do before the next mutation. A `failed` operation is an
    /// [`ApiError::OperationFailed`]; running past `deadline` is an [`ApiError::Deadline`].
    /// Returns the operations in their final state.
    ///
    /// One operation is polled with one GET per round. Several are polled with one listing
    /// of the project's operations per round (newest first, read only until every pending
    /// one is seen; ours are normally on the first page since the project is locked while
    /// they run), as long as that costs fewer requests than one GET each: when a listing
    /// needed as many pages as there are pending operations, the next round uses GETs.
    pub async fn wait_for_operations(
        &self,
        project: &ProjectId,
        operations: &[Operation],
        deadline: Duration,
    ) -> Result<Vec<Operation>, ApiError> {
        let start = Instant::now();
        let mut done: Vec<Operation> = Vec::with_capacity(operations.len());
        let mut pending: Vec<Operation> = Vec::new();
        for op in operations {
            check_failed(op)?;
            if op.status.is_terminal() {
                self.observe_duration(op);
                done.push(op.clone());
            } else {
                pending.push(op.clone());
            }
        }
        if pending.is_empty() {
            return Ok(done);
        }
        // The pending operations, the finished ones, and the pages the last listing needed
        // (one is what a listing normally costs).
        let state = (pending, done, 1usize);
        let outcome = poll_until(
            self.poll_policy(),
            start,
            deadline,
            state,
            |(pending, mut done, listing_pages)| async move {
                let (refreshed, listing_pages) =
                    if pending.len() >= 2 && listing_pages < pending.len() {
                        self.find_operations(project, &pending).await?
                    } else {
                        let mut found = Vec::with_capacity(pending.len());
                        for op in &pending {
                            found.push(self.get_operation(project, &op.id).await?);
                        }
                        (found, listing_pages)
                    };
                let mut still = Vec::new();
                for now in refreshed {
                    check_failed(&now)?;
                    if now.status.is_terminal() {
                        self.observe_duration(&now);
                        done.push(now);
                    } else {
                        still.push(now);
                    }
                }
                Ok(if still.is_empty() {
                    ControlFlow::Break(done)
                } else {
                    ControlFlow::Continue((still, done, listing_pages))
                })
            },
        )
        .await?;
        outcome.map_err(|((pending, _, _), elapsed)| {
            ApiError::deadline(
                format!(
                    "waiting for {} operation(s) of project {project} ({})",
                    pending.len(),
                    pending
                        .iter()
                        .map(|o| format!("{} {} {}", o.id, o.action, o.status))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                elapsed,
            )
        })
    }

    /// The current state of `wanted` (all of one project) from the project's operation
    /// list, read newest first only until each was seen; any the listing does not show
    /// (its history ended first) is fetched by id. Returns them and the pages read.
    async fn find_operations(
        &self,
        project: &ProjectId,
        wanted: &[Operation],
    ) -> Result<(Vec<Operation>, usize), ApiError> {
        // Small pages: ours are normally the newest few, and this runs once per poll round.
        let limit = self
            .limit(page_max::OPERATIONS)
            .min((wanted.len() * 4).max(20));
        let mut missing: HashSet<&OperationId> = wanted.iter().map(|o| &o.id).collect();
        let mut found = Vec::with_capacity(wanted.len());
        let mut read = 0usize;
        let listing = self.list_operations_paged(project, limit, None);
        futures::pin_mut!(listing);
        while !missing.is_empty() {
            let Some(op) = listing.try_next().await? else {
                break;
            };
            read += 1;
            if missing.remove(&op.id) {
                found.push(op);
            }
        }
        let pages = read.div_ceil(limit).max(1);
        for op in wanted.iter().filter(|o| missing.contains(&o.id)) {
            found.push(self.get_operation(project, &op.id).await?);
        }
        Ok((found, pages))
    }

    /// Waits until the project has no operation in `scheduling` or `running` (what a 423
    /// waits for), checking with [`Self::operations_in_progress`] (one request per poll,
    /// normally). Failed operations of others are not our concern here and are ignored.
    pub async fn wait_for_project_idle(
        &self,
        project: &ProjectId,
        deadline: Duration,
    ) -> Result<(), ApiError> {
        let start = Instant::now();
        let busy = self.operations_in_progress(project).await?.len();
        if busy == 0 {
            return Ok(());
        }
        poll_until(self.poll_policy(), start, deadline, busy, |_| async move {
            let busy = self.operations_in_progress(project).await?.len();
            Ok::<_, ApiError>(if busy == 0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(busy)
            })
        })
        .await?
        .map_err(|(busy, elapsed)| {
            ApiError::deadline(
                format!("waiting for project {project} to finish {busy} running operation(s)"),
                elapsed,
            )
        })
    }

    /// Learns from a finished operation how long operations take (Neon's own timestamps).
    fn observe_duration(&self, op: &Operation) {
        if let Ok(took) = (op.updated_at - op.created_at).to_std() {
            self.inner.pace.observe(took);
        }
    }

    fn poll_policy(&self) -> PollPolicy {
        PollPolicy {
            initial: self.inner.poll_initial,
            max: self.inner.poll_max,
            expected: self.inner.pace.expected(),
        }
    }

    // ---------------------------------------------------------------- consumption

    /// `GET /consumption_history/v2/projects`: one item per project and timeframe, all pages.
    /// `org_id` and at least one metric are required; at most 100 `project_ids`.
    pub fn consumption_v2_projects(
        &self,
        query: ConsumptionQuery,
    ) -> impl Stream<Item = Result<ConsumptionPeriod, ApiError>> + Send + 'static {
        const ROUTE: &str = "/consumption_history/v2/projects";
        let check = (|| {
            validate_consumption(&query)?;
            if query.org_id.is_none() {
                return Err(ApiError::InvalidRequest(format!("{ROUTE} requires org_id")));
            }
            if query.metrics.is_empty() {
                return Err(ApiError::InvalidRequest(format!(
                    "{ROUTE} requires at least one metric"
                )));
            }
            Ok(())
        })();
        let granularity = query.granularity;
        let requested = requested_ids(&query);
        let limit = self.limit(page_max::CONSUMPTION_PROJECTS);
        let base = consumption_call(
            Call::get(ROUTE, &["consumption_history", "v2", "projects"]),
            &query,
            limit,
        );
        let pages = self.paginate(PageSpec {
            base,
            cursor_param: "cursor",
            last_page_if: None,
            extract: Box::new(move |p: wire::ConsumptionV2Page| {
                let in_page: Vec<&str> = p.projects.iter().map(|x| x.project_id.as_str()).collect();
                let cursor = p
                    .pagination
                    .as_ref()
                    .and_then(|p| p.cursor.clone())
                    .filter(|_| !all_requested_in(&requested, &in_page));
                let n = p.projects.len();
                (p.into_periods(granularity), cursor, n)
            }),
        });
        guard(check, pages)
    }

    /// `GET /consumption_history/v2/branches`: one item per branch and timeframe of the
    /// named projects, all pages (pages hold up to 1,000 branches, ordered by project, then
    /// branch). `org_id`, 1 to 100 `project_ids` and at least one metric are required; the
    /// endpoint takes six of the v2 metrics (not `extra_branches_month` and
    /// `snapshot_storage_bytes_month`, which are per project only).
    pub fn consumption_v2_branches(
        &self,
        query: ConsumptionQuery,
    ) -> impl Stream<Item = Result<BranchConsumptionPeriod, ApiError>> + Send + 'static {
        const ROUTE: &str = "/consumption_history/v2/branches";
        let check = (|| {
            validate_consumption(&query)?;
            if query.org_id.is_none() {
                return Err(ApiError::InvalidRequest(format!("{ROUTE} requires org_id")));
            }
            if query.project_ids.is_empty() {
                return Err(ApiError::InvalidRequest(format!(
                    "{ROUTE} requires 1 to {MAX_CONSUMPTION_PROJECT_IDS} project_ids"
                )));
            }
            if query.metrics.is_empty() {
                return Err(ApiError::InvalidRequest(format!(
                    "{ROUTE} requires at least one metric"
                )));
            }
            Ok(())
        })();
        let granularity = query.granularity;
        let limit = self.limit(page_max::CONSUMPTION_BRANCHES);
        let base = consumption_call(
            Call::get(ROUTE, &["consumption_history", "v2", "branches"]),
            &query,
            limit,
        );
        let pages = self.paginate(PageSpec {
            base,
            cursor_param: "cursor",
            last_page_if: None,
            extract: Box::new(move |p: wire::ConsumptionV2BranchPage| {
                let n = p.branches.len();
                // A page shorter than the limit is the last: no request for an empty one.
                let cursor = p
                    .pagination
                    .as_ref()
                    .and_then(|p| p.cursor.clone())
                    .filter(|_| n >= limit);
                (p.into_periods(granularity), cursor, n)
            }),
        });
        guard(check, pages)
    }

    /// The legacy `GET /consumption_history/projects` (older plans). Metrics are Neon's
    /// fixed per-timeframe fields (`active_time_seconds`, `compute_time_seconds`, ...).
    pub fn consumption_legacy_projects(
        &self,
        query: ConsumptionQuery,
    ) -> impl Stream<Item = Result<ConsumptionPeriod, ApiError>> + Send + 'static {
        const ROUTE: &str = "/consumption_history/projects";
        let check = validate_consumption(&query);
        let granularity = query.granularity;
        let requested = requested_ids(&query);
        let limit = self.limit(page_max::CONSUMPTION_PROJECTS);
        let base = consumption_call(
            Call::get(ROUTE, &["consumption_history", "projects"]),
            &query,
            limit,
        );
        let pages = self.paginate(PageSpec {
            base,
            cursor_param: "cursor",
            last_page_if: None,
            extract: Box::new(move |p: wire::ConsumptionLegacyPage| {
                let in_page: Vec<&str> = p.projects.iter().map(|x| x.project_id.as_str()).collect();
                let cursor = p
                    .pagination
                    .as_ref()
                    .and_then(|p| p.cursor.clone())
                    .filter(|_| !all_requested_in(&requested, &in_page));
                let n = p.projects.len();
                (p.into_periods(granularity), cursor, n)
            }),
        });
        guard(check, pages)
    }

    // ---------------------------------------------------------------- escape hatch

    /// Any other API call. `path` is relative to the base URL (e.g. `/projects/p/branches`),
    /// its segments unencoded. GET/PUT/PATCH/DELETE are retried like idempotent calls, POST
    /// is not retried after an ambiguous failure (check [`ApiError::may_have_succeeded`]).
    /// An empty answer (204) is `Value::Null`. Telemetry labels these calls `(raw)`.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        const ROUTE: &str = "(raw)";
        let idempotent = method != Method::POST;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut call = Call::get(ROUTE, &segments).with_method(method, idempotent);
        call.body = body;
        let mut url_query = Vec::new();
        for (k, v) in query {
            url_query.push(((*k).to_owned(), (*v).to_owned()));
        }
        let reply = self.execute_with(&call, &url_query).await?;
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        decode(ROUTE, &reply)
    }

    // ---------------------------------------------------------------- plumbing

    fn limit(&self, max: u32) -> usize {
        self.inner.page_size.min(max) as usize
    }

    fn url(&self, call: &Call, extra_query: &[(String, String)]) -> Url {
        let mut url = self.inner.base.clone();
        {
            // The base was checked to be a base URL in `new`.
            if let Ok(mut segs) = url.path_segments_mut() {
                segs.pop_if_empty();
                for s in &call.segments {
                    segs.push(s);
                }
            }
        }
        if !call.query.is_empty() || !extra_query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &call.query {
                q.append_pair(k, v);
            }
            for (k, v) in extra_query {
                q.append_pair(k, v);
            }
        }
        url
    }

    async fn fetch<T: DeserializeOwned>(&self, call: &Call) -> Result<T, ApiError> {
        let reply = self.execute(call).await?;
        decode(call.route, &reply)
    }

    async fn execute(&self, call: &Call) -> Result<Reply, ApiError> {
        self.execute_with(call, &[]).await
    }

    /// One logical call: attempts and retries; its final outcome is recorded for `/readyz`.
    async fn execute_with(
        &self,
        call: &Call,
        extra_query: &[(String, String)],
    ) -> Result<Reply, ApiError> {
        let result = self.execute_with_retries(call, extra_query).await;
        if let Some(h) = &self.inner.health {
            // A call the gate refused says nothing about Neon.
            if !matches!(result, Err(ApiError::NotSent(_))) {
                h.record(result.as_ref().map(|_| ()));
            }
        }
        result
    }

    async fn execute_with_retries(
        &self,
        call: &Call,
        extra_query: &[(String, String)],
    ) -> Result<Reply, ApiError> {
        let url = self.url(call, extra_query);
        let label = Label {
            method: call.method.as_str(),
            route: call.route,
        };
        retry(
            &self.inner.policy,
            label,
            || self.attempt(call, &url),
            |(err, _): &(ApiError, Option<Duration>)| retry_reason(err, call.idempotent),
            |(_, retry_after)| *retry_after,
        )
        .await
        .map_err(|(err, _)| err)
    }

    /// One HTTP attempt. Errors carry the `Retry-After` delay when the answer had one.
    async fn attempt(&self, call: &Call, url: &Url) -> Result<Reply, (ApiError, Option<Duration>)> {
        if call.route.starts_with("/consumption_history/") {
            self.inner.consumption_limiter.acquire().await;
        }
        self.inner.limiter.acquire().await;
        // Last, right before the request leaves: every retry and every wait for the
        // limiter may have been a pause.
        if let Some(refusal) = gate_refusal() {
            return Err((ApiError::NotSent(refusal), None));
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::debug_span!(
            "neon_api",
            method = %call.method,
            route = call.route,
            request_id = %request_id
        );
        async {
            let started = Instant::now();
            let outcome =
                tokio::time::timeout(self.inner.timeout, self.send(call, url, &request_id))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ApiError::Timeout {
                            route: call.route,
                            request_id: request_id.clone(),
                            timeout: self.inner.timeout,
                        })
                    });
            let status = match &outcome {
                Ok((status, ..)) => Some(*status),
                Err(_) => None,
            };
            ApiRequestCompleted {
                method: call.method.as_str(),
                route: call.route,
                status,
                elapsed: started.elapsed(),
                request_id: &request_id,
            }
            .emit();
            let (status, body, header_rid, retry_after) = outcome.map_err(|e| (e, None))?;
            if (200..300).contains(&status) {
                return Ok(Reply {
                    status,
                    body,
                    request_id: header_rid.or(Some(request_id)),
                });
            }
            let err = status_error(call.route, status, &body, header_rid.or(Some(request_id)));
            let retry_after = match status {
                429 | 503 => retry_after,
                _ => None,
            };
            Err((err, retry_after))
        }
        .instrument(span)
        .await
    }

    /// Sends and reads the whole body: (status, body, echoed request id, Retry-After).
    async fn send(
        &self,
        call: &Call,
        url: &Url,
        request_id: &str,
    ) -> Result<(u16, Vec<u8>, Option<String>, Option<Duration>), ApiError> {
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), url.clone())
            .bearer_auth(self.inner.key.expose())
            .header("X-Request-ID", request_id);
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(call.route, request_id, self.inner.timeout, e))?;
        let status = resp.status().as_u16();
        let header_rid = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(call.route, request_id, self.inner.timeout, e))?
            .to_vec();
        Ok((status, body, header_rid, retry_after))
    }

    fn paginate<W, T>(
        &self,
        spec: PageSpec<W, T>,
    ) -> impl Stream<Item = Result<T, ApiError>> + Send + 'static
    where
        W: DeserializeOwned + Send + 'static,
        T: Send + 'static,
    {
        struct State<W, T> {
            client: NeonClient,
            spec: Arc<PageSpec<W, T>>,
            cursor: Option<String>,
            seen: HashSet<String>,
            done: bool,
        }
        let state = State {
            client: self.clone(),
            spec: Arc::new(spec),
            cursor: None,
            seen: HashSet::new(),
            done: false,
        };
        stream::try_unfold(state, |mut st| async move {
            if st.done {
                return Ok(None);
            }
            let extra: Vec<(String, String)> = st
                .cursor
                .iter()
                .map(|c| (st.spec.cursor_param.to_owned(), c.clone()))
                .collect();
            let reply = st.client.execute_with(&st.spec.base, &extra).await?;
            let page: W = decode(st.spec.base.route, &reply)?;
            let (items, next, records) = (st.spec.extract)(page);
            if st.spec.last_page_if.is_some_and(|last| last(&items)) {
                st.done = true;
                return Ok(Some((items, st)));
            }
            match next {
                // Neon returns a cursor even on the last page: the page after it is empty.
                Some(c) if !c.is_empty() && records > 0 => {
                    // A cursor we already followed would loop forever; stopping there would
                    // silently return a partial listing. Both are wrong: fail loudly.
                    if !st.seen.insert(c.clone()) {
                        return Err(ApiError::Decode {
                            route: st.spec.base.route,
                            request_id: reply.request_id.clone(),
                            detail: format!(
                                "pagination returned cursor {c:?} a second time; the listing \
                                 cannot be completed"
                            ),
                        });
                    }
                    st.cursor = Some(c)
                }
                _ => st.done = true,
            }
            Ok(Some((items, st)))
        })
        .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
        .try_flatten()
    }
}

/// The `project_ids` a consumption query names (empty: every project of the account or org).
fn requested_ids(query: &ConsumptionQuery) -> Vec<String> {
    query
        .project_ids
        .iter()
        .map(|p| p.as_str().to_string())
        .collect()
}

/// Whether a consumption page holds every project the query named. The document says that
/// with `project_ids` "the response is limited to those projects", so once all of them have
/// come the listing is complete and the next page (empty) need not be fetched; this is the
/// only place where a page is known to be the last without asking for the next one.
fn all_requested_in(requested: &[String], in_page: &[&str]) -> bool {
    !requested.is_empty() && requested.iter().all(|id| in_page.contains(&id.as_str()))
}

fn ops(ops: Vec<wire::Operation>) -> Vec<Operation> {
    ops.into_iter().map(Into::into).collect()
}

fn check_failed(op: &Operation) -> Result<(), ApiError> {
    if op.status == OperationStatus::Failed {
        return Err(ApiError::OperationFailed {
            operation_id: op.id.clone(),
            action: op.action.clone(),
            error: op.error.clone(),
        });
    }
    Ok(())
}

fn validate_consumption(q: &ConsumptionQuery) -> Result<(), ApiError> {
    if q.project_ids.len() > MAX_CONSUMPTION_PROJECT_IDS {
        return Err(ApiError::InvalidRequest(format!(
            "{} project_ids given, Neon accepts at most {MAX_CONSUMPTION_PROJECT_IDS} per call",
            q.project_ids.len()
        )));
    }
    if q.from >= q.to {
        return Err(ApiError::InvalidRequest(format!(
            "consumption range is empty: from {} is not before to {}",
            wire::rfc3339(q.from),
            wire::rfc3339(q.to)
        )));
    }
    Ok(())
}

fn consumption_call(mut call: Call, q: &ConsumptionQuery, limit: usize) -> Call {
    call = call
        .query("from", wire::rfc3339(q.from))
        .query("to", wire::rfc3339(q.to))
        .query("granularity", q.granularity.as_str())
        .query("limit", limit.to_string())
        .query_opt("org_id", q.org_id.as_ref().map(|o| o.to_string()));
    // Arrays as repeated parameters: OpenAPI's default (form, explode) that Neon documents.
    for m in &q.metrics {
        call = call.query("metrics", m.clone());
    }
    for p in &q.project_ids {
        call = call.query("project_ids", p.to_string());
    }
    call
}

/// A stream that yields the validation error alone, or the real stream.
fn guard<T: Send + 'static>(
    check: Result<(), ApiError>,
    s: impl Stream<Item = Result<T, ApiError>> + Send + 'static,
) -> impl Stream<Item = Result<T, ApiError>> + Send + 'static {
    match check {
        Ok(()) => s.left_stream(),
        Err(e) => stream::once(futures::future::ready(Err(e))).right_stream(),
    }
}

fn decode<T: DeserializeOwned>(route: &'static str, reply: &Reply) -> Result<T, ApiError> {
    serde_json::from_slice(&reply.body).map_err(|e| ApiError::Decode {
        route,
        request_id: reply.request_id.clone(),
        detail: decode_detail(&e),
    })
}

/// serde's message names the missing field or expected type; it can quote a short value
/// from the body, so it is cut short rather than copied whole.
fn decode_detail(e: &serde_json::Error) -> String {
    let mut msg = e.to_string();
    if msg.len() > 200 {
        let mut cut = 200;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push('…');
    }
    msg
}

fn status_error(
    route: &'static str,
    status: u16,
    body: &[u8],
    request_id: Option<String>,
) -> ApiError {
    match serde_json::from_slice::<wire::GeneralError>(body) {
        Ok(ge) => ApiError::Status {
            status,
            code: ge.code.filter(|c| !c.is_empty()),
            message: ge.message,
            request_id: ge.request_id.or(request_id),
            route,
        },
        Err(_) => ApiError::Status {
            status,
            code: None,
            message: format!(
                "{} (the answer carried no Neon error body)",
                reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("unexpected status")
            ),
            request_id,
            route,
        },
    }
}

fn transport_error(
    route: &'static str,
    request_id: &str,
    timeout: Duration,
    e: reqwest::Error,
) -> ApiError {
    if e.is_timeout() {
        return ApiError::Timeout {
            route,
            request_id: request_id.to_owned(),
            timeout,
        };
    }
    let connect = e.is_connect();
    // The URL carries no key, but it does carry ids and search terms: keep it out.
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if connect {
        ApiError::Connect { route, detail }
    } else {
        ApiError::Transport {
            route,
            request_id: request_id.to_owned(),
            detail,
        }
    }
}
