//! The HTTP surface: `/api/v2` (Neon's API) and `/_sim` (admin), with the middleware that gives
//! every answer a request id, authenticates bearer keys and records mutations.

pub mod admin;
pub mod branches;
pub mod consumption;
pub mod endpoints;
pub mod extract;
pub mod identity;
pub mod operations;
pub mod projects;
pub mod roles;
pub mod snapshots;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, on, patch, post, MethodFilter};
use axum::Router;

use crate::config::SimConfig;
use crate::error::ApiError;
use crate::mutations::{Mutation, MutationLog};
use crate::state::SharedState;

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    pub state: SharedState,
    pub config: Arc<SimConfig>,
    pub mutations: MutationLog,
    request_counter: Arc<AtomicU64>,
    /// Fault injection (seeded from the config's seed).
    pub faults: crate::faults::FaultHandle,
    /// Neon's rate limits (from the config).
    pub rate_limiter: crate::ratelimit::RateLimiter,
}

impl AppState {
    pub fn new(state: SharedState, config: Arc<SimConfig>) -> AppState {
        let mutations = MutationLog::with_limit(config.mutation_log_limit);
        AppState {
            state,
            faults: crate::faults::FaultHandle::new(config.seed),
            rate_limiter: crate::ratelimit::RateLimiter::new(config.rate_limit.clone()),
            config,
            mutations,
            request_counter: Arc::new(AtomicU64::new(1)),
        }
    }

    fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

/// The request id of the current request (set by the request-id middleware).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// `(method, path template under /api/v2, operationId)` of every emulated operation.
pub const EMULATED_OPERATIONS: &[(&str, &str, &str)] = &[
    ("GET", "/auth", "getAuthDetails"),
    ("GET", "/users/me", "getCurrentUserInfo"),
    (
        "GET",
        "/users/me/organizations",
        "getCurrentUserOrganizations",
    ),
    ("GET", "/organizations/{org_id}", "getOrganization"),
    ("GET", "/api_keys", "listApiKeys"),
    ("POST", "/api_keys", "createApiKey"),
    ("DELETE", "/api_keys/{key_id}", "revokeApiKey"),
    ("GET", "/regions", "getActiveRegions"),
    ("GET", "/projects", "listProjects"),
    ("POST", "/projects", "createProject"),
    ("GET", "/projects/shared", "listSharedProjects"),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/recover",
        "recoverProjectBranch",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/compare_schema",
        "getProjectBranchSchemaComparison",
    ),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/restore",
        "restoreProjectBranch",
    ),
    (
        "GET",
        "/projects/{project_id}/connection_uri",
        "getConnectionURI",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/roles",
        "listProjectBranchRoles",
    ),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/roles",
        "createProjectBranchRole",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/roles/{role_name}",
        "getProjectBranchRole",
    ),
    (
        "DELETE",
        "/projects/{project_id}/branches/{branch_id}/roles/{role_name}",
        "deleteProjectBranchRole",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reveal_password",
        "getProjectBranchRolePassword",
    ),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reset_password",
        "resetProjectBranchRolePassword",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/databases",
        "listProjectBranchDatabases",
    ),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/databases",
        "createProjectBranchDatabase",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/databases/{database_name}",
        "getProjectBranchDatabase",
    ),
    (
        "PATCH",
        "/projects/{project_id}/branches/{branch_id}/databases/{database_name}",
        "updateProjectBranchDatabase",
    ),
    (
        "DELETE",
        "/projects/{project_id}/branches/{branch_id}/databases/{database_name}",
        "deleteProjectBranchDatabase",
    ),
    ("POST", "/projects/{project_id}/recover", "recoverProject"),
    ("GET", "/projects/{project_id}", "getProject"),
    ("PATCH", "/projects/{project_id}", "updateProject"),
    ("DELETE", "/projects/{project_id}", "deleteProject"),
    (
        "GET",
        "/projects/{project_id}/branches",
        "listProjectBranches",
    ),
    (
        "POST",
        "/projects/{project_id}/branches",
        "createProjectBranch",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/count",
        "countProjectBranches",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}",
        "getProjectBranch",
    ),
    (
        "PATCH",
        "/projects/{project_id}/branches/{branch_id}",
        "updateProjectBranch",
    ),
    (
        "DELETE",
        "/projects/{project_id}/branches/{branch_id}",
        "deleteProjectBranch",
    ),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/set_as_default",
        "setDefaultProjectBranch",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/endpoints",
        "listProjectBranchEndpoints",
    ),
    (
        "GET",
        "/projects/{project_id}/endpoints",
        "listProjectEndpoints",
    ),
    (
        "POST",
        "/projects/{project_id}/endpoints",
        "createProjectEndpoint",
    ),
    (
        "GET",
        "/projects/{project_id}/endpoints/{endpoint_id}",
        "getProjectEndpoint",
    ),
    (
        "PATCH",
        "/projects/{project_id}/endpoints/{endpoint_id}",
        "updateProjectEndpoint",
    ),
    (
        "DELETE",
        "/projects/{project_id}/endpoints/{endpoint_id}",
        "deleteProjectEndpoint",
    ),
    (
        "POST",
        "/projects/{project_id}/endpoints/{endpoint_id}/start",
        "startProjectEndpoint",
    ),
    (
        "POST",
        "/projects/{project_id}/endpoints/{endpoint_id}/suspend",
        "suspendProjectEndpoint",
    ),
    (
        "POST",
        "/projects/{project_id}/endpoints/{endpoint_id}/restart",
        "restartProjectEndpoint",
    ),
    (
        "POST",
        "/projects/{project_id}/branches/{branch_id}/snapshot",
        "createSnapshot",
    ),
    ("GET", "/projects/{project_id}/snapshots", "listSnapshots"),
    (
        "PATCH",
        "/projects/{project_id}/snapshots/{snapshot_id}",
        "updateSnapshot",
    ),
    (
        "DELETE",
        "/projects/{project_id}/snapshots/{snapshot_id}",
        "deleteSnapshot",
    ),
    (
        "POST",
        "/projects/{project_id}/snapshots/{snapshot_id}/restore",
        "restoreSnapshot",
    ),
    (
        "GET",
        "/projects/{project_id}/branches/{branch_id}/backup_schedule",
        "getSnapshotSchedule",
    ),
    (
        "PUT",
        "/projects/{project_id}/branches/{branch_id}/backup_schedule",
        "setSnapshotSchedule",
    ),
    (
        "GET",
        "/projects/{project_id}/operations",
        "listProjectOperations",
    ),
    (
        "GET",
        "/projects/{project_id}/operations/{operation_id}",
        "getProjectOperation",
    ),
    (
        "GET",
        "/consumption_history/v2/projects",
        "getConsumptionHistoryPerProjectV2",
    ),
    (
        "GET",
        "/consumption_history/v2/branches",
        "getConsumptionHistoryPerBranchV2",
    ),
    (
        "GET",
        "/consumption_history/projects",
        "getConsumptionHistoryPerProject",
    ),
    (
        "GET",
        "/consumption_history/account",
        "getConsumptionHistoryPerAccount",
    ),
];

/// The whole application: `/api/v2` and `/_sim`.
pub fn router(app: AppState) -> Router {
    Router::new()
        .nest("/api/v2", api_router(app.clone()))
        .merge(admin::router(app.clone()))
        .merge(crate::faults::admin_router(app.faults.clone()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(app, request_id_layer))
}

/// The `/api/v2` router: emulated routes, 501 for the rest of the document, and middleware.
pub fn api_router(app: AppState) -> Router {
    let emulated: Router<AppState> = Router::new()
        .route("/auth", get(identity::auth))
        .route("/users/me", get(identity::me))
        .route("/users/me/organizations", get(identity::my_orgs))
        .route("/organizations/{org_id}", get(identity::org))
        .route(
            "/api_keys",
            get(identity::list_keys).post(identity::create_key),
        )
        .route("/api_keys/{key_id}", delete(identity::revoke_key))
        .route("/regions", get(identity::regions))
        .route("/projects", get(projects::list).post(projects::create))
        .route("/projects/shared", get(projects::shared))
        .route(
            "/projects/{project_id}/branches/{branch_id}/recover",
            post(branches::recover),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/compare_schema",
            get(roles::compare_schema),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/restore",
            post(branches::restore),
        )
        .route(
            "/projects/{project_id}/connection_uri",
            get(roles::connection_uri),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/roles",
            get(roles::list_roles).post(roles::create_role),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/roles/{role_name}",
            get(roles::get_role).delete(roles::delete_role),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reveal_password",
            get(roles::reveal_password),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reset_password",
            post(roles::reset_password),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/databases",
            get(roles::list_databases).post(roles::create_database),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/databases/{database_name}",
            get(roles::get_database)
                .patch(roles::update_database)
                .delete(roles::delete_database),
        )
        .route("/projects/{project_id}/recover", post(projects::recover))
        .route(
            "/projects/{project_id}",
            get(projects::get)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route(
            "/projects/{project_id}/branches",
            get(branches::list).post(branches::create),
        )
        .route(
            "/projects/{project_id}/branches/count",
            get(branches::count),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}",
            get(branches::get)
                .patch(branches::update)
                .delete(branches::delete),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/set_as_default",
            post(branches::set_as_default),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/endpoints",
            get(endpoints::list_for_branch),
        )
        .route(
            "/projects/{project_id}/endpoints",
            get(endpoints::list).post(endpoints::create),
        )
        .route(
            "/projects/{project_id}/endpoints/{endpoint_id}",
            get(endpoints::get)
                .patch(endpoints::update)
                .delete(endpoints::delete),
        )
        .route(
            "/projects/{project_id}/endpoints/{endpoint_id}/start",
            post(endpoints::start),
        )
        .route(
            "/projects/{project_id}/endpoints/{endpoint_id}/suspend",
            post(endpoints::suspend),
        )
        .route(
            "/projects/{project_id}/endpoints/{endpoint_id}/restart",
            post(endpoints::restart),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/snapshot",
            post(snapshots::create),
        )
        .route("/projects/{project_id}/snapshots", get(snapshots::list))
        .route(
            "/projects/{project_id}/snapshots/{snapshot_id}",
            patch(snapshots::update).delete(snapshots::delete),
        )
        .route(
            "/projects/{project_id}/snapshots/{snapshot_id}/restore",
            post(snapshots::restore),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/backup_schedule",
            get(snapshots::get_schedule).put(snapshots::put_schedule),
        )
        .route("/projects/{project_id}/operations", get(operations::list))
        .route(
            "/projects/{project_id}/operations/{operation_id}",
            get(operations::get),
        );

    let emulated = emulated.merge(consumption::routes());

    let api = with_not_implemented(emulated)
        .fallback(|| async { ApiError::not_found("no such API route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), auth_layer))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            mutation_log_layer,
        ));

    // ==== HOOK (sim-conf): fault injection and rate limiting layers go here, e.g.
    // let api = api.layer(crate::ratelimit::layer(&app)).layer(crate::faults::layer(&app));
    // (outside auth and the mutation log; inside the request-id layer added in `router`).
    // ====
    // Faults outermost: an injected fault answers before the request counts against a limit.
    let api = api
        .layer(middleware::from_fn_with_state(
            app.rate_limiter.clone(),
            crate::ratelimit::middleware,
        ))
        .layer(middleware::from_fn_with_state(
            app.faults.clone(),
            crate::faults::middleware,
        ));

    api.with_state(app)
}

/// Registers a 501 handler for every operation of the document that has no route yet.
fn with_not_implemented(mut router: Router<AppState>) -> Router<AppState> {
    let ops = match crate::spec::operations() {
        Ok(ops) => ops,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the bundled OpenAPI document; no 501 routes");
            return router;
        }
    };
    let emulated: std::collections::HashSet<(&str, &str)> = EMULATED_OPERATIONS
        .iter()
        .map(|(m, p, _)| (*m, *p))
        .collect();
    // axum (matchit) requires one parameter name per position; the document sometimes uses
    // another name at the same position (`{source_org_id}` vs `{org_id}`), so canonicalise.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut canonical = |path: &str| -> String {
        let mut prefix = String::new();
        let mut out = String::new();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            let seg = if seg.starts_with('{') {
                names
                    .entry(prefix.clone())
                    .or_insert_with(|| seg.to_string())
                    .clone()
            } else {
                seg.to_string()
            };
            prefix.push('/');
            prefix.push_str(if seg.starts_with('{') { "{}" } else { &seg });
            out.push('/');
            out.push_str(&seg);
        }
        out
    };
    for (_, path, _) in EMULATED_OPERATIONS {
        canonical(path);
    }
    for op in ops {
        if emulated.contains(&(op.method.as_str(), op.path.as_str())) {
            continue;
        }
        let filter = match op.method.as_str() {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            _ => continue,
        };
        let (method, path, id) = (op.method.clone(), op.path.clone(), op.operation_id.clone());
        let handler = move || {
            let err = ApiError::not_implemented(&method, &path, &id);
            async move { err }
        };
        router = router.route(&canonical(&op.path), on(filter, handler));
    }
    router
}

/// Gives every request an id (the caller's `X-Request-ID`, or a generated one), echoes it in the
/// response header, and renders `ApiError`s as `GeneralError` bodies carrying it.
async fn request_id_layer(
    AxState(app): AxState<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| app.next_request_id());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    if let Some(err) = response.extensions().get::<ApiError>().cloned() {
        let headers = std::mem::take(response.headers_mut());
        response = (err.status, axum::Json(err.body(&id))).into_response();
        for (name, value) in headers.iter() {
            if name != axum::http::header::CONTENT_LENGTH
                && name != axum::http::header::CONTENT_TYPE
            {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Resolves the bearer key into a [`crate::state::Principal`]; 401 when missing or unknown.
async fn auth_layer(AxState(app): AxState<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return ApiError::unauthorized("authentication required: missing bearer API key")
            .into_response();
    };
    let principal = app.state.lock().authenticate(token);
    match principal {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => ApiError::unauthorized("authentication failed: unknown or revoked API key")
            .into_response(),
    }
}

/// Largest request body the emulator reads.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Records every mutating request with its outcome.
async fn mutation_log_layer(AxState(app): AxState<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().trim_start_matches("/api/v2").to_string());
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "request body too large or unreadable",
            )
            .into_response()
        }
    };
    let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let at = app.state.lock().now();
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    app.mutations.push(Mutation {
        method: method.to_string(),
        path,
        route,
        query,
        body: json,
        status: response.status().as_u16(),
        at,
    });
    response
}
