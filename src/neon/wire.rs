//! Serde mirrors of Neon's JSON. Private to `neon`: the rest of the daemon sees `types`.
//!
//! Unknown fields are ignored (Neon adds fields often); fields the domain types need are
//! required, so a body missing them becomes a `Decode` error instead of a half-filled value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::types::{self as t, Granularity};

#[derive(Deserialize)]
pub struct GeneralError {
    #[serde(default)]
    pub code: Option<String>,
    pub message: String,
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Deserialize)]
pub struct CurrentUser {
    pub id: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub plan: String,
}

impl From<CurrentUser> for t::CurrentUser {
    fn from(u: CurrentUser) -> Self {
        t::CurrentUser {
            id: u.id,
            email: u.email,
            name: u.name,
            plan: u.plan,
        }
    }
}

/// `Organization` (`GET /organizations/{org_id}`): only its billing plan is read.
#[derive(Deserialize)]
pub struct Organization {
    pub plan: String,
}

#[derive(Deserialize, Default)]
pub struct CursorPage {
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct NextPage {
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub org_id: Option<String>,
    pub region_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Project> for t::Project {
    fn from(p: Project) -> Self {
        t::Project {
            id: p.id.into(),
            name: p.name,
            org_id: p.org_id.map(Into::into),
            region_id: p.region_id,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Deserialize)]
pub struct ProjectsPage {
    pub projects: Vec<Project>,
    #[serde(default)]
    pub pagination: Option<CursorPage>,
    /// Projects that exist but were not fetched before the listing's timeout: a page that
    /// names any is incomplete, whatever its length.
    #[serde(default)]
    pub unavailable_project_ids: Vec<String>,
}

#[derive(Deserialize)]
pub struct Recovery {
    #[serde(default)]
    pub recoverable_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub struct Branch {
    pub id: String,
    pub project_id: String,
    pub name: String,
    /// Absent (or null) only on a root branch, which is never deletable: a body without it
    /// errs on the safe side.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Required by the document, and no default: the jobs decide what is safe to delete from
    /// `default` and `protected`, so a body that omits them must be a decode error, not a
    /// branch that looks unprotected.
    pub default: bool,
    pub protected: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    pub current_state: String,
    #[serde(default)]
    pub logical_size: Option<i64>,
    #[serde(default)]
    pub recovery: Option<Recovery>,
}

impl From<Branch> for t::Branch {
    fn from(b: Branch) -> Self {
        t::Branch {
            id: b.id.into(),
            project_id: b.project_id.into(),
            name: b.name,
            parent_id: b.parent_id.map(Into::into),
            default: b.default,
            protected: b.protected,
            created_at: b.created_at,
            updated_at: b.updated_at,
            expires_at: b.expires_at,
            current_state: b.current_state,
            logical_size: b.logical_size,
            deleted_at: b.recovery.as_ref().and_then(|r| r.deleted_at),
            recoverable_until: b.recovery.and_then(|r| r.recoverable_until),
        }
    }
}

#[derive(Deserialize)]
pub struct BranchesPage {
    pub branches: Vec<Branch>,
    #[serde(default)]
    pub pagination: Option<NextPage>,
}

#[derive(Deserialize)]
pub struct BranchResponse {
    pub branch: Branch,
}

#[derive(Deserialize)]
pub struct BranchOperations {
    pub branch: Branch,
    #[serde(default)]
    pub operations: Vec<Operation>,
}

#[derive(Serialize)]
pub struct BranchUpdateRequest {
    pub branch: BranchUpdateBody,
}

#[derive(Serialize)]
pub struct BranchUpdateBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// `Some(None)` serialises as `null`, which is how Neon removes an expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
}

#[derive(Serialize)]
pub struct EndpointUpdateRequest {
    pub endpoint: EndpointUpdateBody,
}

#[derive(Serialize)]
pub struct EndpointUpdateBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling_limit_min_cu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling_limit_max_cu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend_timeout_seconds: Option<i64>,
}

impl From<&t::EndpointUpdate> for EndpointUpdateRequest {
    fn from(u: &t::EndpointUpdate) -> Self {
        EndpointUpdateRequest {
            endpoint: EndpointUpdateBody {
                autoscaling_limit_min_cu: u.autoscaling_limit_min_cu,
                autoscaling_limit_max_cu: u.autoscaling_limit_max_cu,
                suspend_timeout_seconds: u.suspend_timeout_seconds,
            },
        }
    }
}

impl From<&t::BranchUpdate> for BranchUpdateRequest {
    fn from(u: &t::BranchUpdate) -> Self {
        BranchUpdateRequest {
            branch: BranchUpdateBody {
                name: u.name.clone(),
                protected: u.protected,
                expires_at: u.expires_at.map(|e| e.map(rfc3339)),
            },
        }
    }
}

/// RFC 3339 with whole seconds and `Z`, the form Neon documents for timestamps it accepts.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub project_id: String,
    pub branch_id: String,
    #[serde(rename = "type")]
    pub endpoint_type: t::EndpointType,
    pub current_state: t::EndpointState,
    #[serde(default)]
    pub pending_state: Option<t::EndpointState>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub last_active: Option<DateTime<Utc>>,
    #[serde(default)]
    pub suspend_timeout_seconds: i64,
    #[serde(default)]
    pub autoscaling_limit_min_cu: f64,
    #[serde(default)]
    pub autoscaling_limit_max_cu: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Endpoint> for t::Endpoint {
    fn from(e: Endpoint) -> Self {
        t::Endpoint {
            id: e.id.into(),
            project_id: e.project_id.into(),
            branch_id: e.branch_id.into(),
            endpoint_type: e.endpoint_type,
            current_state: e.current_state,
            pending_state: e.pending_state,
            disabled: e.disabled,
            last_active: e.last_active,
            suspend_timeout_seconds: e.suspend_timeout_seconds,
            autoscaling_limit_min_cu: e.autoscaling_limit_min_cu,
            autoscaling_limit_max_cu: e.autoscaling_limit_max_cu,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Deserialize)]
pub struct EndpointsResponse {
    pub endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
pub struct EndpointResponse {
    pub endpoint: Endpoint,
}

#[derive(Deserialize)]
pub struct EndpointOperations {
    pub endpoint: Endpoint,
    #[serde(default)]
    pub operations: Vec<Operation>,
}

#[derive(Deserialize)]
pub struct Operation {
    pub id: String,
    pub project_id: String,
    #[serde(default)]
    pub branch_id: Option<String>,
    #[serde(default)]
    pub endpoint_id: Option<String>,
    pub action: String,
    pub status: t::OperationStatus,
    #[serde(default)]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Operation> for t::Operation {
    fn from(o: Operation) -> Self {
        t::Operation {
            id: o.id.into(),
            project_id: o.project_id.into(),
            branch_id: o.branch_id.map(Into::into),
            endpoint_id: o.endpoint_id.map(Into::into),
            action: o.action,
            status: o.status,
            error: o.error,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

#[derive(Deserialize)]
pub struct OperationResponse {
    pub operation: Operation,
}

#[derive(Deserialize)]
pub struct OperationsPage {
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub pagination: Option<CursorPage>,
}

#[derive(Deserialize)]
pub struct OperationsResponse {
    #[serde(default)]
    pub operations: Vec<Operation>,
}

#[derive(Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub source_branch_id: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub manual: Option<bool>,
}

impl From<Snapshot> for t::Snapshot {
    fn from(s: Snapshot) -> Self {
        t::Snapshot {
            id: s.id.into(),
            name: s.name,
            source_branch_id: s.source_branch_id.map(Into::into),
            created_at: s.created_at,
            expires_at: s.expires_at,
            manual: s.manual,
        }
    }
}

#[derive(Deserialize)]
pub struct SnapshotOperations {
    pub snapshot: Snapshot,
    #[serde(default)]
    pub operations: Vec<Operation>,
}

#[derive(Deserialize)]
pub struct SnapshotsResponse {
    pub snapshots: Vec<Snapshot>,
}

/// `BackupSchedule` (the body of `GET` and `PUT .../backup_schedule`).
#[derive(Serialize, Deserialize)]
pub struct BackupSchedule {
    pub schedule: Vec<BackupScheduleItem>,
}

#[derive(Serialize, Deserialize)]
pub struct BackupScheduleItem {
    pub frequency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_seconds: Option<i64>,
}

impl From<BackupSchedule> for t::BackupSchedule {
    fn from(s: BackupSchedule) -> Self {
        t::BackupSchedule::new(
            s.schedule
                .into_iter()
                .map(|i| t::BackupScheduleItem {
                    frequency: i.frequency.into(),
                    hour: i.hour,
                    day: i.day,
                    month: i.month,
                    retention_seconds: i.retention_seconds,
                })
                .collect(),
        )
    }
}

impl From<&t::BackupSchedule> for BackupSchedule {
    fn from(s: &t::BackupSchedule) -> Self {
        BackupSchedule {
            schedule: s
                .items()
                .iter()
                .map(|i| BackupScheduleItem {
                    frequency: i.frequency.as_str().to_string(),
                    hour: i.hour,
                    day: i.day,
                    month: i.month,
                    retention_seconds: i.retention_seconds,
                })
                .collect(),
        }
    }
}

// --- consumption (v2) ---

#[derive(Deserialize)]
pub struct ConsumptionV2Page {
    pub projects: Vec<ConsumptionV2Project>,
    #[serde(default)]
    pub pagination: Option<CursorPage>,
}

#[derive(Deserialize)]
pub struct ConsumptionV2Project {
    pub project_id: String,
    #[serde(default)]
    pub periods: Vec<ConsumptionV2Period>,
}

#[derive(Deserialize)]
pub struct ConsumptionV2Period {
    #[serde(default)]
    pub consumption: Vec<ConsumptionV2Timeframe>,
}

#[derive(Deserialize)]
pub struct ConsumptionV2Timeframe {
    pub timeframe_start: DateTime<Utc>,
    pub timeframe_end: DateTime<Utc>,
    #[serde(default)]
    pub metrics: Vec<MetricValue>,
}

#[derive(Deserialize)]
pub struct MetricValue {
    pub metric_name: String,
    pub value: f64,
}

impl ConsumptionV2Page {
    pub fn into_periods(self, granularity: Granularity) -> Vec<t::ConsumptionPeriod> {
        let mut out = Vec::new();
        for p in self.projects {
            for period in p.periods {
                for tf in period.consumption {
                    out.push(t::ConsumptionPeriod {
                        project_id: p.project_id.as_str().into(),
                        granularity,
                        timeframe_start: tf.timeframe_start,
                        timeframe_end: tf.timeframe_end,
                        metrics: tf
                            .metrics
                            .into_iter()
                            .map(|m| (m.metric_name, m.value))
                            .collect(),
                    });
                }
            }
        }
        out
    }
}

/// `ConsumptionHistoryPerBranchV2Response` with its pagination.
#[derive(Deserialize)]
pub struct ConsumptionV2BranchPage {
    pub branches: Vec<ConsumptionV2Branch>,
    #[serde(default)]
    pub pagination: Option<CursorPage>,
}

#[derive(Deserialize)]
pub struct ConsumptionV2Branch {
    pub project_id: String,
    pub branch_id: String,
    #[serde(default)]
    pub periods: Vec<ConsumptionV2Period>,
}

impl ConsumptionV2BranchPage {
    pub fn into_periods(self, granularity: Granularity) -> Vec<t::BranchConsumptionPeriod> {
        let mut out = Vec::new();
        for b in self.branches {
            for period in b.periods {
                for tf in period.consumption {
                    out.push(t::BranchConsumptionPeriod {
                        branch_id: b.branch_id.as_str().into(),
                        period: t::ConsumptionPeriod {
                            project_id: b.project_id.as_str().into(),
                            granularity,
                            timeframe_start: tf.timeframe_start,
                            timeframe_end: tf.timeframe_end,
                            metrics: tf
                                .metrics
                                .into_iter()
                                .map(|m| (m.metric_name, m.value))
                                .collect(),
                        },
                    });
                }
            }
        }
        out
    }
}

// --- consumption (legacy) ---

#[derive(Deserialize)]
pub struct ConsumptionLegacyPage {
    pub projects: Vec<ConsumptionLegacyProject>,
    #[serde(default)]
    pub pagination: Option<CursorPage>,
}

#[derive(Deserialize)]
pub struct ConsumptionLegacyProject {
    pub project_id: String,
    #[serde(default)]
    pub periods: Vec<ConsumptionLegacyPeriod>,
}

#[derive(Deserialize)]
pub struct ConsumptionLegacyPeriod {
    #[serde(default)]
    pub consumption: Vec<ConsumptionLegacyTimeframe>,
}

/// The legacy endpoint has one field per metric instead of a list.
#[derive(Deserialize)]
pub struct ConsumptionLegacyTimeframe {
    pub timeframe_start: DateTime<Utc>,
    pub timeframe_end: DateTime<Utc>,
    #[serde(flatten)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl ConsumptionLegacyPage {
    pub fn into_periods(self, granularity: Granularity) -> Vec<t::ConsumptionPeriod> {
        let mut out = Vec::new();
        for p in self.projects {
            for period in p.periods {
                for tf in period.consumption {
                    let metrics = tf
                        .values
                        .into_iter()
                        .filter_map(|(k, v)| v.as_f64().map(|v| (k, v)))
                        .collect();
                    out.push(t::ConsumptionPeriod {
                        project_id: p.project_id.as_str().into(),
                        granularity,
                        timeframe_start: tf.timeframe_start,
                        timeframe_end: tf.timeframe_end,
                        metrics,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_update_body_shapes() {
        let u = t::BranchUpdate {
            expires_at: Some(None),
            ..Default::default()
        };
        let v = serde_json::to_value(BranchUpdateRequest::from(&u)).unwrap();
        assert_eq!(v, serde_json::json!({"branch": {"expires_at": null}}));
        let at = DateTime::parse_from_rfc3339("2025-06-09T18:02:16.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let u = t::BranchUpdate {
            name: Some("x".into()),
            protected: Some(true),
            expires_at: Some(Some(at)),
        };
        let v = serde_json::to_value(BranchUpdateRequest::from(&u)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"branch": {"name": "x", "protected": true, "expires_at": "2025-06-09T18:02:16Z"}})
        );
    }

    #[test]
    fn branch_tolerates_unknown_fields_and_reads_recovery() {
        let b: Branch = serde_json::from_value(serde_json::json!({
            "id": "br-a", "project_id": "p", "name": "main", "current_state": "ready",
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-02T00:00:00Z",
            "default": true, "protected": false, "something_new": {"x": 1},
            "recovery": {"deleted_at": "2024-01-03T00:00:00Z", "recoverable_until": "2024-01-10T00:00:00Z", "deletion_method": "user"}
        }))
        .unwrap();
        let b = t::Branch::from(b);
        assert!(b.default);
        assert_eq!(
            b.recoverable_until.unwrap().to_rfc3339(),
            "2024-01-10T00:00:00+00:00"
        );
    }

    #[test]
    fn legacy_consumption_keeps_numeric_fields() {
        let p: ConsumptionLegacyPage = serde_json::from_value(serde_json::json!({
            "projects": [{"project_id": "p1", "periods": [{"period_id": "x", "period_plan": "scale",
              "period_start": "2024-01-01T00:00:00Z", "consumption": [{
                "timeframe_start": "2024-01-01T00:00:00Z", "timeframe_end": "2024-01-01T01:00:00Z",
                "active_time_seconds": 10, "compute_time_seconds": 5, "written_data_bytes": 1,
                "synthetic_storage_size_bytes": 2}]}]}],
            "pagination": {"cursor": "p1"}
        }))
        .unwrap();
        let periods = p.into_periods(Granularity::Hourly);
        assert_eq!(periods.len(), 1);
        assert_eq!(periods[0].metrics.len(), 4);
        assert!(periods[0]
            .metrics
            .contains(&("active_time_seconds".to_string(), 10.0)));
    }
}
