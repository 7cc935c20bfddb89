//! Roles and databases of a branch, and connection URIs. Role passwords are secrets: generated
//! by the emulator, shown only by create, reset_password and reveal_password.

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::error::ApiError;
use crate::state::{EndpointType, Principal, State};
use crate::wire::{self, Operation};

/// Postgres's identifier limit (`NAMEDATALEN - 1`).
const MAX_NAME_BYTES: usize = 63;

fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "{kind} name must be 1 to {MAX_NAME_BYTES} bytes, got {} bytes",
            name.len()
        )));
    }
    Ok(())
}

/// An `apply_config` operation on each compute of the branch (how Neon applies role and
/// database changes).
fn apply_config(s: &mut State, project_id: &str, branch_id: &str) -> Vec<Operation> {
    let now = s.now();
    let eps: Vec<String> = s
        .branch_endpoints(branch_id)
        .iter()
        .map(|e| e.id.clone())
        .collect();
    let ops: Vec<_> = eps
        .iter()
        .map(|e| s.push_operation(project_id, Some(branch_id), Some(e), "apply_config"))
        .collect();
    Operation::list(&ops, now)
}

// ----- roles -------------------------------------------------------------------------------------

pub async fn list_roles(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let roles: Vec<wire::Role> = s
        .branch_roles(&branch_id)
        .iter()
        .map(|r| wire::Role::from(&branch_id, r))
        .collect();
    Ok(Json(wire::RolesResponse { roles }))
}

fn find_role<'a>(
    s: &'a State,
    branch_id: &str,
    name: &str,
) -> Result<&'a crate::state::Role, ApiError> {
    s.branch_roles(branch_id)
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!("role {name:?} not found on branch {branch_id}"))
        })
}

pub async fn get_role(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id, name)): ApiPath<(String, String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let r = find_role(&s, &branch_id, &name)?;
    Ok(Json(wire::RoleResponse {
        role: wire::Role::from(&branch_id, r),
    }))
}

#[derive(Deserialize)]
pub struct RoleIn {
    name: String,
    #[serde(default)]
    no_login: bool,
}

#[derive(Deserialize)]
pub struct CreateRole {
    role: RoleIn,
}

pub async fn create_role(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<CreateRole>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    let mut s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    check_name("role", &body.role.name)?;
    if s.branch_roles(&branch_id)
        .iter()
        .any(|r| r.name == body.role.name)
    {
        return Err(ApiError::conflict(format!(
            "role {:?} already exists",
            body.role.name
        )));
    }
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    let role = s.add_role(&branch_id, &body.role.name, !body.role.no_login, now);
    let ops = apply_config(&mut s, &project_id, &branch_id);
    Ok((
        StatusCode::CREATED,
        Json(wire::RoleOperations {
            role: wire::Role::with_password(&branch_id, &role),
            operations: ops,
        }),
    ))
}

pub async fn delete_role(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id, name)): ApiPath<(String, String, String)>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let mut s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    // The document: 204 when the role does not exist (or is already deleted).
    let Ok(role) = find_role(&s, &branch_id, &name).cloned() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if let Some(db) = s
        .branch_databases(&branch_id)
        .iter()
        .find(|d| d.owner_name == name)
    {
        return Err(ApiError::bad_request(format!(
            "role {name:?} owns database {:?}; delete the database or change its owner first",
            db.name
        )));
    }
    s.ensure_unlocked(&project_id)?;
    if let Some(roles) = s.roles.get_mut(&branch_id) {
        roles.retain(|r| r.name != name);
    }
    let ops = apply_config(&mut s, &project_id, &branch_id);
    Ok(Json(wire::RoleOperations {
        role: wire::Role::from(&branch_id, &role),
        operations: ops,
    })
    .into_response())
}

pub async fn reveal_password(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id, name)): ApiPath<(String, String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let role = find_role(&s, &branch_id, &name)?;
    // 412: no password is stored for this role (a `no_login` role has none).
    let password = role.password.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED",
            format!("role {name:?} has no stored password"),
        )
    })?;
    Ok(Json(wire::RolePasswordResponse { password }))
}

pub async fn reset_password(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id, name)): ApiPath<(String, String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let role = find_role(&s, &branch_id, &name)?;
    if role.password.is_none() {
        return Err(ApiError::bad_request(format!(
            "role {name:?} cannot log in; it has no password to reset"
        )));
    }
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    let role = s
        .reset_role_password(&branch_id, &name, now)
        .ok_or_else(|| ApiError::not_found(format!("role {name:?} not found")))?;
    let ops = apply_config(&mut s, &project_id, &branch_id);
    Ok(Json(wire::RoleOperations {
        role: wire::Role::with_password(&branch_id, &role),
        operations: ops,
    }))
}

// ----- databases ---------------------------------------------------------------------------------

pub async fn list_databases(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let dbs: Vec<wire::Database> = s
        .branch_databases(&branch_id)
        .iter()
        .map(|d| wire::Database::from(&branch_id, d))
        .collect();
    Ok(Json(wire::DatabasesResponse { databases: dbs }))
}

fn find_database<'a>(
    s: &'a State,
    branch_id: &str,
    name: &str,
) -> Result<&'a crate::state::Database, ApiError> {
    s.branch_databases(branch_id)
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!("database {name:?} not found on branch {branch_id}"))
        })
}

pub async fn get_database(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id, name)): ApiPath<(String, String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let d = find_database(&s, &branch_id, &name)?;
    Ok(Json(wire::DatabaseResponse {
        database: wire::Database::from(&branch_id, d),
    }))
}

#[derive(Deserialize)]
pub struct DatabaseIn {
    name: String,
    owner_name: String,
}

#[derive(Deserialize)]
pub struct CreateDatabase {
    database: DatabaseIn,
}

pub async fn create_database(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<CreateDatabase>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    let mut s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let d = body.database;
    check_name("database", &d.name)?;
    find_role(&s, &branch_id, &d.owner_name)?;
    if s.branch_databases(&branch_id)
        .iter()
        .any(|x| x.name == d.name)
    {
        return Err(ApiError::conflict(format!(
            "database {:?} already exists",
            d.name
        )));
    }
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    let db = s.add_database(&branch_id, &d.name, &d.owner_name, now);
    let ops = apply_config(&mut s, &project_id, &branch_id);
    Ok((
        StatusCode::CREATED,
        Json(wire::DatabaseOperations {
            database: wire::Database::from(&branch_id, &db),
            operations: ops,
        }),
    ))
}

#[derive(Deserialize)]
pub struct DatabaseUpdateIn {
    name: Option<String>,
    owner_name: Option<String>,
}

#[derive(Deserialize)]
pub struct UpdateDatabase {
    database: DatabaseUpdateIn,
}

pub async fn update_database(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id, name)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<UpdateDatabase>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    find_database(&s, &branch_id, &name)?;
    let u = body.database;
    if let Some(n) = &u.name {
        check_name("database", n)?;
        if n != &name && s.branch_databases(&branch_id).iter().any(|x| &x.name == n) {
            return Err(ApiError::conflict(format!("database {n:?} already exists")));
        }
    }
    if let Some(o) = &u.owner_name {
        find_role(&s, &branch_id, o)?;
    }
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    let db = s
        .databases
        .get_mut(&branch_id)
        .and_then(|dbs| dbs.iter_mut().find(|d| d.name == name))
        .ok_or_else(|| ApiError::not_found(format!("database {name:?} not found")))?;
    if let Some(n) = u.name {
        db.name = n;
    }
    if let Some(o) = u.owner_name {
        db.owner_name = o;
    }
    db.updated_at = now;
    let db = db.clone();
    let ops = apply_config(&mut s, &project_id, &branch_id);
    Ok(Json(wire::DatabaseOperations {
        database: wire::Database::from(&branch_id, &db),
        operations: ops,
    }))
}

pub async fn delete_database(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id, name)): ApiPath<(String, String, String)>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let mut s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    // The document: 204 when the database does not exist (or is already deleted).
    let Ok(db) = find_database(&s, &branch_id, &name).cloned() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    s.ensure_unlocked(&project_id)?;
    if let Some(dbs) = s.databases.get_mut(&branch_id) {
        dbs.retain(|d| d.name != name);
    }
    let ops = apply_config(&mut s, &project_id, &branch_id);
    Ok(Json(wire::DatabaseOperations {
        database: wire::Database::from(&branch_id, &db),
        operations: ops,
    })
    .into_response())
}

// ----- connection URI ----------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct UriQuery {
    branch_id: Option<String>,
    endpoint_id: Option<String>,
    database_name: String,
    role_name: String,
    #[serde(default, deserialize_with = "super::extract::query_bool")]
    pooled: Option<bool>,
}

/// `GET /projects/{id}/connection_uri`: the default branch unless `branch_id`, its read-write
/// compute unless `endpoint_id`, with the role's stored password.
pub async fn connection_uri(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UriQuery>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.project_for(&who, &project_id)?;
    let branch_id = match &q.branch_id {
        Some(b) => s.branch_for(&who, &project_id, b)?.id.clone(),
        None => s
            .default_branch(&project_id)
            .ok_or_else(|| ApiError::not_found("the project has no default branch"))?
            .id
            .clone(),
    };
    let ep = match &q.endpoint_id {
        Some(e) => {
            let ep = s.endpoint_for(&who, &project_id, e)?;
            if ep.branch_id != branch_id {
                return Err(ApiError::bad_request(format!(
                    "endpoint {e} does not belong to branch {branch_id}"
                )));
            }
            ep
        }
        None => s
            .branch_endpoints(&branch_id)
            .into_iter()
            .find(|e| e.kind == EndpointType::ReadWrite)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "branch {branch_id} has no read_write compute endpoint"
                ))
            })?,
    };
    find_database(&s, &branch_id, &q.database_name)?;
    let role = find_role(&s, &branch_id, &q.role_name)?;
    let password = role
        .password
        .clone()
        .ok_or_else(|| ApiError::bad_request(format!("role {:?} cannot log in", q.role_name)))?;
    let (host, pooler) = wire::endpoint_hosts(ep);
    let host = if q.pooled == Some(true) { pooler } else { host };
    Ok(Json(wire::ConnectionUriResponse {
        uri: wire::connection_uri(&host, &role.name, &password, &q.database_name),
    }))
}

// ----- schema compare ----------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct CompareQuery {
    base_branch_id: Option<String>,
    db_name: String,
    lsn: Option<String>,
    timestamp: Option<chrono::DateTime<chrono::Utc>>,
    base_lsn: Option<String>,
    base_timestamp: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET .../branches/{id}/compare_schema`: a unified diff of the database's schema (the DDL
/// lines the model keeps per database, see `Sim::set_schema`) against the same database on
/// `base_branch_id` (default: the parent). The model keeps no schema history, so `lsn` and
/// `timestamp` are accepted but read the current schema.
pub async fn compare_schema(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<CompareQuery>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    let branch = s.branch_for(&who, &project_id, &branch_id)?;
    let base_id = match q.base_branch_id.as_deref().filter(|b| !b.is_empty()) {
        Some(b) => s.branch_for(&who, &project_id, b)?.id.clone(),
        None => branch.parent_id.clone().ok_or_else(|| {
            ApiError::bad_request(format!(
                "branch {branch_id} has no parent; give base_branch_id"
            ))
        })?,
    };
    let _ = (&q.lsn, &q.timestamp, &q.base_lsn, &q.base_timestamp);
    let ours = find_database(&s, &branch_id, &q.db_name)?.schema.clone();
    let theirs = s
        .branch_databases(&base_id)
        .iter()
        .find(|d| d.name == q.db_name)
        .map(|d| d.schema.clone())
        .unwrap_or_default();
    let diff = unified_diff(
        &format!("{base_id}/{}", q.db_name),
        &format!("{branch_id}/{}", q.db_name),
        &theirs,
        &ours,
    );
    Ok(Json(wire::SchemaCompareResponse { diff }))
}

/// A unified diff (one hunk, whole files) of two line lists; empty when they are equal.
fn unified_diff(a_name: &str, b_name: &str, a: &[String], b: &[String]) -> String {
    if a == b {
        return String::new();
    }
    // Longest common subsequence table, then walk it.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = format!("--- {a_name}\n+++ {b_name}\n@@ -1,{n} +1,{m} @@\n");
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push_str(&format!(" {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified_diff;

    #[test]
    fn diffs_lines() {
        let a: Vec<String> = ["CREATE TABLE a ();", "CREATE TABLE b ();"]
            .map(String::from)
            .to_vec();
        let b: Vec<String> = ["CREATE TABLE a ();", "CREATE TABLE c ();"]
            .map(String::from)
            .to_vec();
        assert_eq!(unified_diff("x", "y", &a, &a), "");
        assert_eq!(
            unified_diff("x", "y", &a, &b),
            "--- x\n+++ y\n@@ -1,2 +1,2 @@\n CREATE TABLE a ();\n+CREATE TABLE c ();\n-CREATE TABLE b ();\n"
        );
    }
}
