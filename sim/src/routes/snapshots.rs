//! Snapshots (create, list, update, delete, restore) and branch backup schedules.
//!
//! Neon's `OperationAction` enum has no snapshot-specific action, so snapshot operations use the
//! closest ones: `create_timeline` (create), `delete_timeline` (delete), `create_branch` (restore).

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::error::ApiError;
use crate::state::{BackupScheduleItem, Principal};
use crate::wire::{self, Operation};

#[derive(Deserialize)]
pub struct CreateQuery {
    lsn: Option<String>,
    timestamp: Option<String>,
    name: Option<String>,
    expires_at: Option<String>,
}

fn parse_time(field: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::bad_request(format!("{field} must be an RFC 3339 timestamp: {e}")))
}

fn valid_lsn(l: &str) -> bool {
    l.split_once('/').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit())
    })
}

pub async fn create(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<CreateQuery>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    let branch = s.branch_for(&who, &project_id, &branch_id)?.clone();
    let retention = s.projects[&project_id].history_retention_seconds;
    let now = s.now();
    if q.lsn.is_some() && q.timestamp.is_some() {
        return Err(ApiError::bad_request(
            "lsn and timestamp cannot be used together",
        ));
    }
    if let Some(l) = &q.lsn {
        if !valid_lsn(l) {
            return Err(ApiError::bad_request(format!(
                "invalid lsn {l:?}; expected e.g. 0/1A2B3C4"
            )));
        }
    }
    let timestamp = q
        .timestamp
        .as_deref()
        .map(|t| parse_time("timestamp", t))
        .transpose()?;
    if let Some(t) = timestamp {
        let window_start = (now - TimeDelta::seconds(i64::from(retention))).max(branch.created_at);
        if t > now || t < window_start {
            return Err(ApiError::bad_request(
                "timestamp must fall within the branch's restore window",
            ));
        }
    }
    let expires_at = q
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    if expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::bad_request("expires_at must be in the future"));
    }
    if q.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::bad_request("name must not be empty"));
    }
    // Neon's rules: snapshots of root branches only, names unique per project, a manual
    // snapshot limit per project by plan (the limit is a quota 423, not an operation lock).
    if branch.parent_id.is_some() {
        return Err(ApiError::bad_request(format!(
            "snapshots can be taken of root branches only; branch {branch_id} has a parent"
        )));
    }
    if let Some(n) = &q.name {
        if s.snapshots
            .values()
            .any(|x| x.project_id == project_id && &x.name == n)
        {
            return Err(ApiError::conflict(format!(
                "a snapshot named {n:?} already exists in project {project_id}"
            )));
        }
    }
    let project = s.projects[&project_id].clone();
    let limit = s.manual_snapshot_limit(&project);
    let manual = s
        .snapshots
        .values()
        .filter(|x| x.project_id == project_id && x.manual)
        .count();
    if manual >= limit {
        return Err(ApiError::quota_exceeded(format!(
            "snapshot quota exceeded: project {project_id} already has {manual} manual snapshots, \
             the limit of the {} plan is {limit}; delete one first",
            s.project_plan(&project)
        )));
    }
    s.ensure_unlocked(&project_id)?;
    let mut snap = s
        .insert_snapshot(&branch_id, q.name.as_deref(), now, expires_at, true)
        .ok_or_else(|| ApiError::not_found(format!("branch {branch_id} not found")))?;
    if let Some(sn) = s.snapshots.get_mut(&snap.id) {
        if let Some(l) = &q.lsn {
            sn.lsn = Some(l.clone());
            sn.timestamp = None;
        }
        if let Some(t) = timestamp {
            sn.timestamp = Some(t);
        }
        snap = sn.clone();
    }
    let op = s.push_operation(&project_id, Some(&branch_id), None, "create_timeline");
    Ok(Json(wire::SnapshotOperations {
        snapshot: wire::Snapshot::from(&snap),
        operations: Operation::list(&[op], now),
    }))
}

pub async fn list(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath(project_id): ApiPath<String>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.project_for(&who, &project_id)?;
    let mut snaps: Vec<&crate::state::Snapshot> = s
        .snapshots
        .values()
        .filter(|x| x.project_id == project_id)
        .collect();
    snaps.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    Ok(Json(wire::SnapshotsResponse {
        snapshots: snaps.into_iter().map(wire::Snapshot::from).collect(),
    }))
}

#[derive(Deserialize)]
pub struct UpdateSnapshot {
    name: Option<String>,
}

#[derive(Deserialize)]
pub struct UpdateBody {
    snapshot: UpdateSnapshot,
}

pub async fn update(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, snapshot_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let mut s = app.state.settled();
    s.snapshot_for(&who, &project_id, &snapshot_id)?;
    let sn = s
        .snapshots
        .get_mut(&snapshot_id)
        .ok_or_else(|| ApiError::not_found("snapshot vanished"))?;
    if let Some(n) = body.snapshot.name {
        if n.trim().is_empty() {
            return Err(ApiError::bad_request("snapshot name must not be empty"));
        }
        sn.name = n;
    }
    Ok(Json(wire::SnapshotResponse {
        snapshot: wire::Snapshot::from(sn),
    }))
}

pub async fn delete(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, snapshot_id)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<impl serde::Serialize>), ApiError> {
    let mut s = app.state.settled();
    let snap = s.snapshot_for(&who, &project_id, &snapshot_id)?.clone();
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    s.snapshots.remove(&snapshot_id);
    let branch = s
        .branches
        .contains_key(&snap.source_branch_id)
        .then_some(snap.source_branch_id.as_str());
    let op = s.push_operation(&project_id, branch, None, "delete_timeline");
    Ok((
        StatusCode::ACCEPTED,
        Json(wire::OperationsResponse {
            operations: Operation::list(&[op], now),
        }),
    ))
}

#[derive(Deserialize, Default)]
pub struct RestoreBody {
    name: Option<String>,
    target_branch_id: Option<String>,
    #[serde(default)]
    finalize_restore: bool,
}

#[derive(Deserialize)]
pub struct RestoreQuery {
    name: Option<String>,
}

/// Restores a snapshot into a new branch (child of the target branch, or of the snapshot's
/// source branch). With `finalize_restore`, the target's computes move to the new branch.
pub async fn restore(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, snapshot_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<RestoreQuery>,
    ApiJson(body): ApiJson<Option<RestoreBody>>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let body = body.unwrap_or_default();
    let mut s = app.state.settled();
    let snap = s.snapshot_for(&who, &project_id, &snapshot_id)?.clone();
    let target = body
        .target_branch_id
        .clone()
        .unwrap_or_else(|| snap.source_branch_id.clone());
    let parent = s
        .branches
        .get(&target)
        .filter(|b| b.project_id == project_id)
        .ok_or_else(|| ApiError::not_found(format!("target branch {target} not found")))?
        .clone();
    s.ensure_unlocked(&project_id)?;
    let now = s.now();
    let name = body.name.or(q.name).unwrap_or_else(|| {
        format!(
            "{} (restored {})",
            snap.name,
            now.format("%Y-%m-%dT%H:%M:%S")
        )
    });
    if s.project_branches(&project_id)
        .iter()
        .any(|b| b.name == name)
    {
        return Err(ApiError::conflict(format!(
            "branch with name {name:?} already exists"
        )));
    }
    let branch = s.insert_branch(&project_id, &name, Some(&parent.id), now);
    if let Some(b) = s.branches.get_mut(&branch.id) {
        b.logical_size = snap.full_size;
        b.parent_timestamp = snap.timestamp.or(Some(snap.created_at));
    }
    let mut ops =
        vec![s.push_create_operation(&project_id, Some(&branch.id), None, "create_branch")];
    let mut moved = Vec::new();
    if body.finalize_restore {
        let eps: Vec<String> = s
            .branch_endpoints(&parent.id)
            .iter()
            .map(|e| e.id.clone())
            .collect();
        for id in eps {
            s.suspend_endpoint_at(&id, now);
            if let Some(e) = s.endpoints.get_mut(&id) {
                e.branch_id = branch.id.clone();
                e.updated_at = now;
            }
            ops.push(s.push_operation(&project_id, Some(&branch.id), Some(&id), "start_compute"));
            moved.push(id);
        }
    }
    let branch = s.branches[&branch.id].clone();
    let eps: Vec<wire::Endpoint> = moved
        .iter()
        .filter_map(|id| s.endpoints.get(id))
        .map(|e| wire::Endpoint::from(e, now))
        .collect();
    Ok(Json(wire::RestoredBranch {
        branch: wire::Branch::from(&s, &branch),
        endpoints: eps,
        operations: Operation::list(&ops, now),
    }))
}

pub async fn get_schedule(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    let s = app.state.settled();
    s.branch_for(&who, &project_id, &branch_id)?;
    let schedule = s
        .backup_schedules
        .get(&branch_id)
        .cloned()
        .unwrap_or_default();
    Ok(Json(wire::BackupScheduleResponse { schedule }))
}

#[derive(Deserialize)]
pub struct ScheduleBody {
    schedule: Vec<BackupScheduleItem>,
}

fn validate_item(i: usize, it: &BackupScheduleItem) -> Result<(), ApiError> {
    it.check()
        .map_err(|m| ApiError::bad_request(format!("schedule[{i}]: {m}")))
}

pub async fn put_schedule(
    AxState(app): AxState<AppState>,
    who: Principal,
    ApiPath((project_id, branch_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> Result<Json<impl serde::Serialize>, ApiError> {
    for (i, it) in body.schedule.iter().enumerate() {
        validate_item(i, it)?;
    }
    let mut s = app.state.settled();
    let is_child = s
        .branch_for(&who, &project_id, &branch_id)?
        .parent_id
        .is_some();
    // Neon's rule: backup schedules apply to root branches only.
    if is_child {
        return Err(ApiError::bad_request(format!(
            "backup schedules apply to root branches only; branch {branch_id} has a parent"
        )));
    }
    if body.schedule.is_empty() {
        s.backup_schedules.remove(&branch_id);
    } else {
        s.backup_schedules.insert(branch_id, body.schedule);
    }
    Ok(Json(wire::Empty {}))
}
