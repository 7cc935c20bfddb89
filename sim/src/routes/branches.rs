//! Branches: list (sorting, search, cursor pagination), count, get, create (with computes),
//! update (name, protected, expires_at with Neon's rules), delete (with Neon's refusals) and
//! set_as_default.

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::endpoints::{new_endpoint, EndpointOptions};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::error::ApiError;
use crate::state::{Branch, Principal, State, MAX_BRANCH_TTL};
use crate::wire::{self, Operation};

#[derive(Deserialize)]
pub struct ListQuery {
    search: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
    /// Also list soft-deleted branches still in their recovery window, with `recovery`.
    #[serde(default, deserialize_with = "super::extract::query_bool")]
    include_deleted: Option<bool>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn sort_key(b: &Branch, sort_by: &str) -> String {
    let t = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    match sort_by {
        "name" => b.name.clone(),
        "created_at" => t(b.created_at),
        _ => t(b.updated_at),
    }
}

fn matches_search(b: &Branch, search: &Option<String>) -> bool {
    search.as_ref().is_none_or(|t| {
        let t = t.to_lowercase();
        b.name.to_lowercase().contains(&t) || b.id.to_lowercase().contains(&t)
    })
}

pub async fn list(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let sort_by = q.sort_by.as_deref().unwrap_or("updated_at").to_string();
    if !matches!(sort_by.as_str(), "name" | "created_at" | "updated_at") {
        return Err(ApiError::bad_request(format!(
            "sort_by must be one of name, created_at, updated_at; got {sort_by:?}"
        )));
    }
    let sort_order = q.sort_order.as_deref().unwrap_or("desc").to_string();
    if !matches!(sort_order.as_str(), "asc" | "desc") {
        return Err(ApiError::bad_request(format!(
            "sort_order must be asc or desc; got {sort_order:?}"
        )));
    }
    if let Some(l) = q.limit {
        if !(1..=10_000).contains(&l) {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and 10000, got {l}"
            )));
        }
    }
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let decoded =
                unhex(c).ok_or_else(|| ApiError::bad_request(format!("invalid cursor {c:?}")))?;
            let parts: Vec<&str> = decoded.splitn(4, '\n').collect();
            if parts.len() != 4 || parts[0] != sort_by || parts[1] != sort_order {
                return Err(ApiError::bad_request(
                    "invalid cursor: it does not belong to this sort_by/sort_order",
                ));
            }
            Some((parts[2].to_string(), parts[3].to_string()))
        }
    };
    let s = app.state.settled();
    s.project_for(&who, &project_id)?;
    let now = s.now();
    let deleted: std::collections::HashMap<&str, &crate::state::DeletedBranch> =
        if q.include_deleted == Some(true) {
            s.deleted_branches
                .iter()
                .filter(|d| d.branch.project_id == project_id && d.is_recoverable(now))
                .map(|d| (d.branch.id.as_str(), d))
                .collect()
        } else {
            Default::default()
        };
    let mut rows: Vec<(String, &Branch)> = s
        .project_branches(&project_id)
        .into_iter()
        .chain(deleted.values().map(|d| &d.branch))
        .filter(|b| matches_search(b, &q.search))
        .map(|b| (sort_key(b, &sort_by), b))
        .collect();
    let desc = sort_order == "desc";
    rows.sort_by(|(ka, a), (kb, b)| {
        let ord = (ka, &a.id).cmp(&(kb, &b.id));
        if desc {
            ord.reverse()
        } else {
            ord
        }
    });
    let rows: Vec<(String, &Branch)> = rows
        .into_iter()
        .filter(|(k, b)| {
            after.as_ref().is_none_or(|(ak, aid)| {
                let ord = (k, &b.id).cmp(&(ak, aid));
                if desc {
                    ord.is_lt()
                } else {
                    ord.is_gt()
                }
            })
        })
        .collect();
    let limit = q.limit.map(|l| l as usize).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    let page: Vec<&(String, &Branch)> = rows.iter().take(limit).collect();
    let mut pagination = json!({ "sort_by": sort_by, "sort_order": sort_order });
    if more {
        if let Some((k, b)) = page.last() {
            pagination["next"] = json!(hex(&format!("{sort_by}\n{sort_order}\n{k}\n{}", b.id)));
        }
    }
    Ok(Json(json!({
        "branches": page
            .iter()
            .map(|(_, b)| match deleted.get(b.id.as_str()) {
                Some(d) => wire::Branch::deleted(&s, d),
                None => wire::Branch::from(&s, b),
            })
            .collect::<Vec<_>>(),
        "annotations": {},
        "pagination": pagination,
    })))
}

#[derive(Deserialize)]
pub struct CountQuery {
    search: Option<String>,
}

pub async fn count(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<CountQuery>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.project_for(&who, &project_id)?;
    let n = s
        .project_branches(&project_id)
        .into_iter()
        .filter(|b| matches_search(b, &q.search))
        .count();
    Ok(Json(wire::CountResponse { count: n }))
}

pub async fn get(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let s = app.state.settled();
    let b = s.branch_for(&who, &project_id, &branch_id)?;
    Ok(Json(json!({
        "branch": wire::Branch::from(&s, b),
        "annotation": { "object": { "type": "console/branch", "id": b.id }, "value": {} },
    })))
}

#[derive(Deserialize, Default)]
pub struct BranchOptions {
    parent_id: Option<String>,
    name: Option<String>,
    parent_timestamp: Option<DateTime<Utc>>,
    protected: Option<bool>,
    /// When the branch is deleted automatically (Neon's branch expiration, the same rules as
    /// on update).
    #[serde(default, deserialize_with = "super::extract::timestamp")]
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Default)]
pub struct CreateBody {
    #[serde(default)]
    branch: Option<BranchOptions>,
    #[serde(default)]
    endpoints: Vec<EndpointOptions>,
}

/// Neon's rules for a branch's `expires_at` (on create and update alike): in the future, at
/// most 30 days ahead, never on the default or a protected branch, nor on a branch with
/// children.
fn check_expiry(
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    default: bool,
    protected: bool,
    has_children: bool,
) -> Result<(), ApiError> {
    if at <= now {
        return Err(ApiError::bad_request("expires_at must be in the future"));
    }
    if at > now + MAX_BRANCH_TTL {
        return Err(ApiError::bad_request(
            "expires_at must be at most 30 days in the future",
        ));
    }
    if default {
        return Err(ApiError::bad_request(
            "cannot set expires_at on the default branch",
        ));
    }
    if has_children {
        return Err(ApiError::bad_request(
            "cannot set expires_at on a branch that has child branches",
        ));
    }
    if protected {
        return Err(ApiError::bad_request(
            "cannot set expires_at on a protected branch",
        ));
    }
    Ok(())
}

fn ensure_unique_name(
    s: &State,
    project_id: &str,
    name: &str,
    except: Option<&str>,
) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > 256 {
        return Err(ApiError::bad_request(
            "branch name must be 1 to 256 characters",
        ));
    }
    if s.project_branches(project_id)
        .iter()
        .any(|b| b.name == name && Some(b.id.as_str()) != except)
    {
        return Err(ApiError::conflict(format!(
            "branch with name {name:?} already exists"
        )));
    }
    Ok(())
}

pub async fn create(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
    ApiJson(body): ApiJson<Option<CreateBody>>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    let body = body.unwrap_or_default();
    let opts = body.branch.unwrap_or_default();
    let mut s = app.state.settled();
    s.project_for(&who, &project_id)?;
    s.ensure_unlocked(&project_id)?;
    let parent = match opts.parent_id.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => s
            .branches
            .get(p)
            .filter(|b| b.project_id == project_id)
            .ok_or_else(|| ApiError::not_found(format!("parent branch {p} not found")))?
            .clone(),
        None => s
            .default_branch(&project_id)
            .ok_or_else(|| ApiError::bad_request("project has no default branch"))?
            .clone(),
    };
    let now = s.now();
    if parent.expires_at.is_some() {
        return Err(ApiError::bad_request(
            "cannot create a child of a branch that has expires_at set",
        ));
    }
    if let Some(at) = opts.expires_at {
        check_expiry(at, now, false, opts.protected.unwrap_or(false), false)?;
    }
    if let Some(t) = opts.parent_timestamp {
        if t > now || t < parent.created_at {
            return Err(ApiError::bad_request(
                "parent_timestamp must lie between the parent's creation and now",
            ));
        }
    }
    let mut rw = 0;
    for e in &body.endpoints {
        e.validate()?;
        if e.kind == "read_write" {
            rw += 1;
        }
    }
    if rw > 1 {
        return Err(ApiError::bad_request(
            "a branch can have only one read_write compute endpoint",
        ));
    }
    if let Some(n) = &opts.name {
        ensure_unique_name(&s, &project_id, n, None)?;
    }
    let placeholder = opts.name.clone().unwrap_or_default();
    let branch = s.insert_branch(&project_id, &placeholder, Some(&parent.id), now);
    let b = s
        .branches
        .get_mut(&branch.id)
        .ok_or_else(|| ApiError::not_found("branch vanished"))?;
    if opts.name.is_none() {
        b.name = b.id.clone();
    }
    b.protected = opts.protected.unwrap_or(false);
    b.expires_at = opts.expires_at;
    if let Some(t) = opts.parent_timestamp {
        b.parent_timestamp = Some(t);
    }
    let mut ops =
        vec![s.push_create_operation(&project_id, Some(&branch.id), None, "create_timeline")];
    let mut eps = Vec::new();
    for e in &body.endpoints {
        let ep = new_endpoint(&mut s, &branch.id, e)?;
        ops.push(s.push_create_operation(
            &project_id,
            Some(&branch.id),
            Some(&ep.id),
            "start_compute",
        ));
        eps.push(ep);
    }
    let eps: Vec<_> = eps
        .iter()
        .filter_map(|e| s.endpoints.get(&e.id).cloned())
        .collect();
    let branch = s.branches[&branch.id].clone();
    let rw_ep = eps
        .iter()
        .find(|e| e.kind == crate::state::EndpointType::ReadWrite);
    Ok((
        StatusCode::CREATED,
        Json(wire::CreatedBranch {
            branch: wire::Branch::from(&s, &branch),
            endpoints: eps.iter().map(|e| wire::Endpoint::from(e, now)).collect(),
            operations: Operation::list(&ops, now),
            roles: s
                .branch_roles(&branch.id)
                .iter()
                .map(|r| wire::Role::from(&branch.id, r))
                .collect(),
            databases: s
                .branch_databases(&branch.id)
                .iter()
                .map(|d| wire::Database::from(&branch.id, d))
                .collect(),
            connection_uris: wire::connection_uris(&s, rw_ep),
        }),
    ))
}

#[derive(Deserialize)]
pub struct BranchUpdate {
    name: Option<String>,
    protected: Option<bool>,
    /// Absent: unchanged; `null`: cleared; a timestamp: set.
    #[serde(default, deserialize_with = "super::extract::nullable_timestamp")]
    expires_at: Option<Option<DateTime<Utc>>>,
}

#[derive(Deserialize)]
pub struct UpdateBody {
    branch: BranchUpdate,
}

pub async fn update(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    let current = s.branch_for(&who, &project_id, &branch_id)?.clone();
    s.ensure_unlocked(&project_id)?;
    let BranchUpdate {
        name,
        protected,
        expires_at,
    } = body.branch;
    if let Some(n) = &name {
        ensure_unique_name(&s, &project_id, n, Some(&branch_id))?;
    }
    let now = s.now();
    let will_be_protected = protected.unwrap_or(current.protected);
    let will_expire = match expires_at {
        Some(v) => v,
        None => current.expires_at,
    };
    if let Some(Some(at)) = expires_at {
        check_expiry(
            at,
            now,
            current.default,
            will_be_protected,
            s.has_children(&branch_id),
        )?;
    }
    if will_be_protected && will_expire.is_some() {
        return Err(ApiError::bad_request(
            "cannot set expires_at on a protected branch",
        ));
    }
    let b = s
        .branches
        .get_mut(&branch_id)
        .ok_or_else(|| ApiError::not_found("branch vanished"))?;
    if let Some(n) = name {
        b.name = n;
    }
    if let Some(p) = protected {
        b.protected = p;
    }
    if let Some(e) = expires_at {
        b.expires_at = e;
    }
    b.updated_at = now;
    let b = b.clone();
    Ok(Json(wire::BranchOperations {
        branch: wire::Branch::from(&s, &b),
        operations: Vec::new(),
    }))
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    /// Delete for good, without the 7-day recovery window.
    #[serde(default, deserialize_with = "super::extract::query_bool")]
    hard_delete: Option<bool>,
}

pub async fn delete(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Response, ApiError> {
    let mut s = app.state.settled();
    // The document: "204 Returned if the branch doesn't exist or has already been deleted".
    // The project itself must still exist and be visible (404 otherwise), so a wrong project
    // id or key is not mistaken for an idempotent success.
    s.project_for(&who, &project_id)?;
    let Ok(b) = s.branch_for(&who, &project_id, &branch_id).cloned() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if s.project_branches(&project_id).len() <= 1 {
        return Err(ApiError::bad_request(
            "cannot delete the last branch of a project",
        ));
    }
    if b.default {
        return Err(ApiError::bad_request(
            "cannot delete the project's default branch",
        ));
    }
    if b.parent_id.is_none() {
        return Err(ApiError::bad_request("cannot delete the root branch"));
    }
    if b.protected {
        return Err(ApiError::bad_request("cannot delete a protected branch"));
    }
    if s.has_children(&branch_id) {
        return Err(ApiError::bad_request(
            "cannot delete a branch that has child branches",
        ));
    }
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    let body_branch = wire::Branch::from(&s, &b);
    let mut ops = Vec::new();
    for ep in s
        .branch_endpoints(&branch_id)
        .iter()
        .map(|e| e.id.clone())
        .collect::<Vec<_>>()
    {
        ops.push(s.push_operation(&project_id, Some(&branch_id), Some(&ep), "suspend_compute"));
    }
    ops.push(s.push_operation(&project_id, Some(&branch_id), None, "delete_timeline"));
    s.remove_branch(&branch_id, now, "user");
    if q.hard_delete == Some(true) {
        if let Some(d) = s
            .deleted_branches
            .iter_mut()
            .rev()
            .find(|d| d.branch.id == branch_id)
        {
            d.hard = true;
        }
    }
    Ok(Json(wire::BranchOperations {
        branch: body_branch,
        operations: Operation::list(&ops, now),
    })
    .into_response())
}

pub async fn set_as_default(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    let b = s.branch_for(&who, &project_id, &branch_id)?.clone();
    s.ensure_unlocked(&project_id)?;
    if b.expires_at.is_some() {
        return Err(ApiError::bad_request(
            "cannot make a branch with expires_at the default branch",
        ));
    }
    let now = s.now();
    for other in s
        .branches
        .values_mut()
        .filter(|x| x.project_id == project_id)
    {
        if other.default && other.id != branch_id {
            other.default = false;
            other.updated_at = now;
        }
    }
    let b = s
        .branches
        .get_mut(&branch_id)
        .ok_or_else(|| ApiError::not_found("branch vanished"))?;
    b.default = true;
    b.updated_at = now;
    let b = b.clone();
    Ok(Json(wire::BranchOperations {
        branch: wire::Branch::from(&s, &b),
        operations: Vec::new(),
    }))
}

#[derive(Deserialize)]
pub struct RestoreBody {
    source_branch_id: String,
    source_lsn: Option<String>,
    source_timestamp: Option<DateTime<Utc>>,
    preserve_under_name: Option<String>,
}

/// `POST .../branches/{id}/restore`: the branch takes the data, roles and databases of
/// `source_branch_id` (at its head, or at `source_timestamp`/`source_lsn` within the project's
/// history retention). With `preserve_under_name` the previous state is kept as a new branch
/// that takes over the old parent and the children, and becomes the restored branch's parent
/// (required when restoring from the branch itself or when it has children, as the document
/// says). Computes stay attached and are restarted.
pub async fn restore(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    let target = s.branch_for(&who, &project_id, &branch_id)?.clone();
    let source = s
        .branches
        .get(&body.source_branch_id)
        .filter(|b| b.project_id == project_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(format!("source branch {} not found", body.source_branch_id))
        })?;
    let own = source.id == target.id;
    let preserve = body.preserve_under_name.clone().filter(|n| !n.is_empty());
    if own && body.source_lsn.is_none() && body.source_timestamp.is_none() {
        return Err(ApiError::bad_request(
            "restoring a branch from its own history needs source_timestamp or source_lsn",
        ));
    }
    if (own || s.has_children(&branch_id)) && preserve.is_none() {
        return Err(ApiError::bad_request(if own {
            "preserve_under_name is required to restore a branch from its own history"
        } else {
            "preserve_under_name is required to restore a branch that has children"
        }));
    }
    if !own && is_descendant(&s, &source.id, &target.id) {
        return Err(ApiError::bad_request(
            "cannot restore a branch from one of its own descendants",
        ));
    }
    let now = s.now();
    if let Some(t) = body.source_timestamp {
        let retention = s
            .projects
            .get(&project_id)
            .map(|p| chrono::TimeDelta::seconds(p.history_retention_seconds.into()))
            .unwrap_or_default();
        if t > now || t < source.created_at || t < now - retention {
            return Err(ApiError::bad_request(format!(
                "source_timestamp must lie within the source branch's history: between {} and now",
                wire::ts(source.created_at.max(now - retention))
            )));
        }
    }
    if let Some(n) = &preserve {
        ensure_unique_name(&s, &project_id, n, None)?;
    }
    s.ensure_unlocked(&project_id)?;
    let mut ops = Vec::new();
    let old_roles = s.branch_roles(&target.id).to_vec();
    let old_dbs = s.branch_databases(&target.id).to_vec();
    let new_parent = if let Some(name) = &preserve {
        // The backup keeps the old state, the old parent and the children.
        let backup = s.insert_branch(&project_id, name, target.parent_id.as_deref(), now);
        let children: Vec<String> = s
            .branches
            .values()
            .filter(|b| b.parent_id.as_deref() == Some(target.id.as_str()))
            .map(|b| b.id.clone())
            .collect();
        for c in children {
            if let Some(c) = s.branches.get_mut(&c) {
                c.parent_id = Some(backup.id.clone());
            }
        }
        if let Some(b) = s.branches.get_mut(&backup.id) {
            b.logical_size = target.logical_size;
            b.parent_timestamp = target.parent_timestamp;
        }
        s.roles.insert(backup.id.clone(), old_roles);
        s.databases.insert(backup.id.clone(), old_dbs);
        ops.push(s.push_create_operation(&project_id, Some(&backup.id), None, "create_branch"));
        Some(backup.id)
    } else if own {
        target.parent_id.clone()
    } else {
        Some(source.id.clone())
    };
    if !own {
        let roles = s.branch_roles(&source.id).to_vec();
        let dbs = s.branch_databases(&source.id).to_vec();
        s.roles.insert(target.id.clone(), roles);
        s.databases.insert(target.id.clone(), dbs);
    }
    let b = s
        .branches
        .get_mut(&branch_id)
        .ok_or_else(|| ApiError::not_found("branch vanished"))?;
    b.parent_id = new_parent;
    b.parent_timestamp = Some(body.source_timestamp.unwrap_or(now));
    b.logical_size = source.logical_size;
    b.last_reset_at = Some(now);
    b.updated_at = now;
    let eps: Vec<String> = s
        .branch_endpoints(&branch_id)
        .iter()
        .map(|e| e.id.clone())
        .collect();
    for e in eps {
        let active = s
            .endpoints
            .get(&e)
            .is_some_and(|x| x.current_state == crate::state::EndpointState::Active);
        if active {
            s.suspend_endpoint_at(&e, now);
            ops.push(s.push_operation(&project_id, Some(&branch_id), Some(&e), "suspend_compute"));
            s.start_endpoint_at(&e, now);
            ops.push(s.push_operation(&project_id, Some(&branch_id), Some(&e), "start_compute"));
        }
    }
    let b = s.branches[&branch_id].clone();
    Ok(Json(wire::BranchOperations {
        branch: wire::Branch::from(&s, &b),
        operations: Operation::list(&ops, now),
    }))
}

/// Whether `candidate` is `ancestor` or lies below it.
fn is_descendant(s: &State, candidate: &str, ancestor: &str) -> bool {
    let mut cur = Some(candidate.to_string());
    let mut hops = 0;
    while let Some(id) = cur {
        if id == ancestor {
            return true;
        }
        hops += 1;
        if hops > 10_000 {
            return false;
        }
        cur = s.branches.get(&id).and_then(|b| b.parent_id.clone());
    }
    false
}

/// `POST .../branches/{id}/recover`: a soft-deleted branch in its recovery window comes back
/// with its computes, idle, and without its TTL.
pub async fn recover(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    s.project_for(&who, &project_id)?;
    if s.branch_for(&who, &project_id, &branch_id).is_ok() {
        return Err(ApiError::bad_request(format!(
            "branch {branch_id} is not deleted"
        )));
    }
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    let (branch, eps) = s.recover_branch(&project_id, &branch_id, now)?;
    Ok(Json(wire::RecoveredBranch {
        branch: wire::Branch::from(&s, &branch),
        endpoints: eps.iter().map(|e| wire::Endpoint::from(e, now)).collect(),
    }))
}
