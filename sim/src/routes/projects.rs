//! Projects: list (cursor pagination), create, get, update, delete.

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::endpoints::validate_suspend_timeout;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::error::ApiError;
use crate::state::{EndpointType, KeyScope, Principal, REGIONS};
use crate::wire::{self, Operation, ProjectListItem};

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<i64>,
    search: Option<String>,
    org_id: Option<String>,
    /// Only deleted projects still in their recovery window.
    #[serde(default, deserialize_with = "super::extract::query_bool")]
    recoverable: Option<bool>,
}

#[derive(Deserialize)]
pub struct SharedQuery {
    cursor: Option<String>,
    limit: Option<i64>,
    search: Option<String>,
}

/// Cursor of a project in `(created_at, id)` order: robust to deletions between pages.
/// Full (nanosecond) precision: with the real clock a truncated time would sort before the
/// project it came from, so the last project would be served again after its own cursor.
fn cursor_of(p: &crate::state::Project) -> String {
    format!(
        "{}~{}",
        p.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        p.id
    )
}

fn parse_cursor(c: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid cursor {c:?}"));
    let (at, id) = c.split_once('~').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|_| bad())?
        .with_timezone(&Utc);
    Ok((at, id.to_string()))
}

/// The common paging of project listings: `(created_at, id)` order, `limit` 1..=400 (default
/// 10), `search` on part of the name or id (case-insensitive), an opaque cursor.
struct Paging {
    limit: usize,
    after: Option<(DateTime<Utc>, String)>,
    search: Option<String>,
}

impl Paging {
    fn parse(
        limit: Option<i64>,
        cursor: Option<&str>,
        search: Option<&str>,
    ) -> Result<Paging, ApiError> {
        let limit = limit.unwrap_or(10);
        if !(1..=400).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and 400, got {limit}"
            )));
        }
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(parse_cursor)
            .transpose()?;
        Ok(Paging {
            limit: limit as usize,
            after,
            search: search.map(str::to_lowercase),
        })
    }

    fn page<'a>(
        &self,
        mut projects: Vec<&'a crate::state::Project>,
    ) -> Vec<&'a crate::state::Project> {
        projects.retain(|p| {
            self.search.as_ref().is_none_or(|t| {
                p.name.to_lowercase().contains(t.as_str())
                    || p.id.to_lowercase().contains(t.as_str())
            })
        });
        projects.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        projects
            .into_iter()
            .filter(|p| {
                self.after
                    .as_ref()
                    .is_none_or(|(at, id)| (p.created_at, &p.id) > (*at, id))
            })
            .take(self.limit)
            .collect()
    }
}

fn pagination(page: &[&crate::state::Project]) -> Option<wire::Pagination> {
    page.last().map(|last| wire::Pagination {
        cursor: cursor_of(last),
    })
}

/// Projects the key owns (personally or through an organization), oldest first; `org_id`
/// narrows to one organization. Projects shared with the user are listed by `shared`;
/// `recoverable=true` lists deleted projects still in their recovery window instead.
pub async fn list(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<wire::ProjectsList>, ApiError> {
    let paging = Paging::parse(q.limit, q.cursor.as_deref(), q.search.as_deref())?;
    let s = app.state.settled();
    if let Some(org) = &q.org_id {
        if !s.visible_orgs(&who).iter().any(|o| &o.id == org) {
            return Err(ApiError::not_found(format!("organization {org} not found")));
        }
    }
    let in_org = |p: &crate::state::Project| q.org_id.is_none() || p.org_id == q.org_id;
    if q.recoverable == Some(true) {
        let deleted: Vec<&crate::state::DeletedProject> = s
            .deleted_projects
            .iter()
            .filter(|d| s.can_see_project(&who, &d.project) && !s.is_shared_with(&who, &d.project))
            .filter(|d| in_org(&d.project))
            .collect();
        let page = paging.page(deleted.iter().map(|d| &d.project).collect());
        let items = page
            .iter()
            .filter_map(|p| deleted.iter().find(|d| d.project.id == p.id))
            .map(|d| ProjectListItem::deleted(&s, d))
            .collect();
        return Ok(Json(wire::ProjectsList {
            projects: items,
            pagination: pagination(&page),
            applications: Default::default(),
            integrations: Default::default(),
        }));
    }
    let visible: Vec<&crate::state::Project> = s
        .projects
        .values()
        .filter(|p| s.can_see_project(&who, p) && !s.is_shared_with(&who, p))
        .filter(|p| in_org(p))
        .collect();
    let page = paging.page(visible);
    Ok(Json(wire::ProjectsList {
        projects: page.iter().map(|p| ProjectListItem::from(&s, p)).collect(),
        pagination: pagination(&page),
        applications: Default::default(),
        integrations: Default::default(),
    }))
}

/// `GET /projects/shared`: projects other accounts shared with the calling user (personal keys;
/// an organization or project key has none), in the same order and paging as `list`.
pub async fn shared(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<SharedQuery>,
) -> Result<Json<wire::ProjectsList>, ApiError> {
    let paging = Paging::parse(q.limit, q.cursor.as_deref(), q.search.as_deref())?;
    let s = app.state.settled();
    let shared: Vec<&crate::state::Project> = s
        .projects
        .values()
        .filter(|p| s.is_shared_with(&who, p))
        .collect();
    let page = paging.page(shared);
    Ok(Json(wire::ProjectsList {
        projects: page.iter().map(|p| ProjectListItem::from(&s, p)).collect(),
        pagination: pagination(&page),
        applications: Default::default(),
        integrations: Default::default(),
    }))
}

/// `POST /projects/{id}/recover`: a deleted project in its recovery window comes back with its
/// branches, computes (idle) and snapshots.
pub async fn recover(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    if s.projects.contains_key(&project_id) {
        s.project_for(&who, &project_id)?;
        return Err(ApiError::bad_request(format!(
            "project {project_id} is not deleted"
        )));
    }
    let visible = s
        .deleted_projects
        .iter()
        .any(|d| d.project.id == project_id && s.can_see_project(&who, &d.project));
    let now = s.now();
    let project = visible
        .then(|| s.recover_project(&project_id, now))
        .flatten()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "project {project_id} not found among recoverable projects"
            ))
        })?;
    let branches: Vec<wire::Branch> = s
        .project_branches(&project.id)
        .into_iter()
        .map(|b| wire::Branch::from(&s, b))
        .collect();
    Ok(Json(wire::RecoveredProject {
        project: wire::Project::from(&s, &project),
        branches,
    }))
}

pub async fn get(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    let p = s.project_for(&who, &project_id)?;
    Ok(Json(wire::ProjectResponse {
        project: wire::Project::from(&s, p),
    }))
}

#[derive(Deserialize, Default)]
pub struct EndpointSettingsIn {
    suspend_timeout_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
pub struct BranchIn {
    name: Option<String>,
}

#[derive(Deserialize)]
pub struct CreateProject {
    name: Option<String>,
    region_id: Option<String>,
    pg_version: Option<i32>,
    org_id: Option<String>,
    default_endpoint_settings: Option<EndpointSettingsIn>,
    branch: Option<BranchIn>,
    history_retention_seconds: Option<i32>,
}

#[derive(Deserialize)]
pub struct CreateBody {
    project: CreateProject,
}

pub async fn create(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    let p = body.project;
    let mut s = app.state.settled();
    let org_id = match (&who.scope, p.org_id) {
        (KeyScope::Personal { .. }, Some(org)) => {
            if !s.visible_orgs(&who).iter().any(|o| o.id == org) {
                return Err(ApiError::not_found(format!("organization {org} not found")));
            }
            Some(org)
        }
        (KeyScope::Personal { .. }, None) => None,
        (KeyScope::Org { org_id }, requested) => {
            if requested.as_ref().is_some_and(|r| r != org_id) {
                return Err(ApiError::bad_request(
                    "org_id does not match the API key's organization",
                ));
            }
            Some(org_id.clone())
        }
        (KeyScope::Project { .. }, _) => {
            return Err(ApiError::forbidden(
                "a project-scoped API key cannot create projects",
            ))
        }
    };
    let region = p
        .region_id
        .unwrap_or_else(|| crate::state::DEFAULT_REGION.to_string());
    if !REGIONS.iter().any(|(id, ..)| *id == region) {
        return Err(ApiError::bad_request(format!(
            "unknown region_id {region:?}"
        )));
    }
    let pg_version = p.pg_version.unwrap_or(17);
    if !(14..=18).contains(&pg_version) {
        return Err(ApiError::bad_request(format!(
            "pg_version must be between 14 and 18, got {pg_version}"
        )));
    }
    let timeout = p
        .default_endpoint_settings
        .and_then(|d| d.suspend_timeout_seconds)
        .unwrap_or(0);
    validate_suspend_timeout(timeout)?;
    let retention = p.history_retention_seconds.unwrap_or(86_400);
    if !(0..=2_592_000).contains(&retention) {
        return Err(ApiError::bad_request(
            "history_retention_seconds must be between 0 and 2592000",
        ));
    }
    let now = s.now();
    let name = p.name.unwrap_or_else(|| crate::ids::word_pair(s.rng()));
    let (project, branch) = s.insert_project(&name, org_id.as_deref(), now);
    if let Some(pr) = s.projects.get_mut(&project.id) {
        pr.region_id = region;
        pr.pg_version = pg_version;
        pr.default_suspend_timeout_seconds = timeout;
        pr.history_retention_seconds = retention;
    }
    if let Some(bname) = p.branch.and_then(|b| b.name) {
        if let Some(b) = s.branches.get_mut(&branch.id) {
            b.name = bname;
        }
    }
    let ep = s
        .insert_endpoint(&branch.id, EndpointType::ReadWrite, now)
        .ok_or_else(|| ApiError::bad_request("cannot create the default compute"))?;
    s.start_endpoint_at(&ep.id, now);
    let ops = vec![
        s.push_create_operation(&project.id, Some(&branch.id), None, "create_timeline"),
        s.push_create_operation(&project.id, Some(&branch.id), Some(&ep.id), "start_compute"),
    ];
    let project = s.projects[&project.id].clone();
    let branch = s.branches[&branch.id].clone();
    let ep = s.endpoints[&ep.id].clone();
    let roles: Vec<wire::Role> = s
        .branch_roles(&branch.id)
        .iter()
        .map(|r| wire::Role::with_password(&branch.id, r))
        .collect();
    let dbs: Vec<wire::Database> = s
        .branch_databases(&branch.id)
        .iter()
        .map(|d| wire::Database::from(&branch.id, d))
        .collect();
    let body = wire::CreatedProject {
        project: wire::Project::from(&s, &project),
        connection_uris: wire::connection_uris(&s, Some(&ep)),
        roles,
        databases: dbs,
        operations: Operation::list(&ops, now),
        branch: wire::Branch::from(&s, &branch),
        endpoints: vec![wire::Endpoint::from(&ep, now)],
    };
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
pub struct UpdateProject {
    name: Option<String>,
    default_endpoint_settings: Option<EndpointSettingsIn>,
    history_retention_seconds: Option<i32>,
}

#[derive(Deserialize)]
pub struct UpdateBody {
    project: UpdateProject,
}

pub async fn update(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    s.project_for(&who, &project_id)?;
    s.ensure_unlocked(&project_id)?;
    let u = body.project;
    let timeout = u
        .default_endpoint_settings
        .and_then(|d| d.suspend_timeout_seconds);
    if let Some(t) = timeout {
        validate_suspend_timeout(t)?;
    }
    if let Some(r) = u.history_retention_seconds {
        if !(0..=2_592_000).contains(&r) {
            return Err(ApiError::bad_request(
                "history_retention_seconds must be between 0 and 2592000",
            ));
        }
    }
    if u.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::bad_request("project name must not be empty"));
    }
    let now = s.now();
    let p = s
        .projects
        .get_mut(&project_id)
        .ok_or_else(|| ApiError::not_found("project not found"))?;
    if let Some(n) = u.name {
        p.name = n;
    }
    if let Some(t) = timeout {
        p.default_suspend_timeout_seconds = t;
    }
    if let Some(r) = u.history_retention_seconds {
        p.history_retention_seconds = r;
    }
    p.updated_at = now;
    let p = p.clone();
    Ok(Json(wire::ProjectOperations {
        project: wire::Project::from(&s, &p),
        operations: Vec::new(),
    }))
}

pub async fn delete(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    let p = s.project_for(&who, &project_id)?.clone();
    s.ensure_unlocked(&project_id)?;
    let body = wire::ProjectResponse {
        project: wire::Project::from(&s, &p),
    };
    let now = s.now();
    s.remove_project(&project_id, now);
    Ok(Json(body))
}
