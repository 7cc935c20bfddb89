//! Domain types of the Neon API that the rest of the daemon works with.
//!
//! These are deliberately smaller than Neon's wire schemas: they carry what the jobs need and
//! nothing that changes shape between API versions. The serde structs that mirror the wire
//! format live in `wire.rs` and never leave this module.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_newtype!(
    /// A project id such as `shiny-wind-028834`.
    ProjectId
);
id_newtype!(
    /// A branch id such as `br-aged-salad-637688`.
    BranchId
);
id_newtype!(
    /// A compute endpoint id such as `ep-steep-bush-777093`.
    EndpointId
);
id_newtype!(
    /// An operation id (a UUID in Neon).
    OperationId
);
id_newtype!(
    /// A snapshot id.
    SnapshotId
);
id_newtype!(
    /// An organization id such as `org-morning-bread-81040908`.
    OrgId
);

/// The account behind the API key (`GET /users/me`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurrentUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub plan: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub org_id: Option<OrgId>,
    pub region_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    pub id: BranchId,
    pub project_id: ProjectId,
    pub name: String,
    pub parent_id: Option<BranchId>,
    pub default: bool,
    pub protected: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub current_state: String,
    pub logical_size: Option<i64>,
    /// Until when a deleted branch can still be recovered (Neon's `recovery.recoverable_until`,
    /// present on the answer to a delete when the account has branch recovery).
    pub recoverable_until: Option<DateTime<Utc>>,
    /// When a soft-deleted branch was deleted (Neon's `recovery.deleted_at`, listed with
    /// `include_deleted=true`).
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointType {
    ReadWrite,
    ReadOnly,
}

impl EndpointType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointType::ReadWrite => "read_write",
            EndpointType::ReadOnly => "read_only",
        }
    }
}

/// A compute's state. Neon documents `init`, `active` and `idle`; anything else is kept
/// verbatim rather than failing the whole listing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum EndpointState {
    Init,
    Active,
    Idle,
    Other(String),
}

impl EndpointState {
    pub fn as_str(&self) -> &str {
        match self {
            EndpointState::Init => "init",
            EndpointState::Active => "active",
            EndpointState::Idle => "idle",
            EndpointState::Other(s) => s,
        }
    }
}

impl From<String> for EndpointState {
    fn from(s: String) -> Self {
        match s.as_str() {
            "init" => EndpointState::Init,
            "active" => EndpointState::Active,
            "idle" => EndpointState::Idle,
            _ => EndpointState::Other(s),
        }
    }
}

impl From<EndpointState> for String {
    fn from(s: EndpointState) -> Self {
        s.as_str().to_owned()
    }
}

impl fmt::Display for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub project_id: ProjectId,
    pub branch_id: BranchId,
    pub endpoint_type: EndpointType,
    pub current_state: EndpointState,
    pub pending_state: Option<EndpointState>,
    pub disabled: bool,
    pub last_active: Option<DateTime<Utc>>,
    pub suspend_timeout_seconds: i64,
    /// Autoscaling limits in compute units (0 when Neon's answer has none).
    pub autoscaling_limit_min_cu: f64,
    pub autoscaling_limit_max_cu: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a `PATCH` of an endpoint sets (`None`: left as it is).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointUpdate {
    pub autoscaling_limit_min_cu: Option<f64>,
    pub autoscaling_limit_max_cu: Option<f64>,
    pub suspend_timeout_seconds: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub name: String,
    pub source_branch_id: Option<BranchId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub manual: Option<bool>,
}

/// How often Neon takes a branch's scheduled snapshots (`BackupScheduleItem.frequency`).
/// The document lists `hourly` and `yearly` too; Neon refuses them. Anything else Neon
/// returns is kept as `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum BackupFrequency {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Other(String),
}

impl BackupFrequency {
    pub fn as_str(&self) -> &str {
        match self {
            BackupFrequency::Hourly => "hourly",
            BackupFrequency::Daily => "daily",
            BackupFrequency::Weekly => "weekly",
            BackupFrequency::Monthly => "monthly",
            BackupFrequency::Yearly => "yearly",
            BackupFrequency::Other(s) => s,
        }
    }
}

impl From<String> for BackupFrequency {
    fn from(s: String) -> Self {
        match s.as_str() {
            "hourly" => BackupFrequency::Hourly,
            "daily" => BackupFrequency::Daily,
            "weekly" => BackupFrequency::Weekly,
            "monthly" => BackupFrequency::Monthly,
            "yearly" => BackupFrequency::Yearly,
            _ => BackupFrequency::Other(s),
        }
    }
}

impl From<BackupFrequency> for String {
    fn from(f: BackupFrequency) -> Self {
        f.as_str().to_string()
    }
}

impl std::fmt::Display for BackupFrequency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of a branch's backup schedule: Neon snapshots the branch at `hour` (UTC) every
/// day, on `day` of the week or month, and keeps each snapshot `retention_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackupScheduleItem {
    pub frequency: BackupFrequency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_seconds: Option<i64>,
}

impl std::fmt::Display for BackupScheduleItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.frequency.as_str())?;
        if let Some(d) = self.day {
            write!(f, " day {d}")?;
        }
        if let Some(m) = self.month {
            write!(f, " month {m}")?;
        }
        if let Some(h) = self.hour {
            write!(f, " at {h:02}:00 UTC")?;
        }
        match self.retention_seconds {
            Some(r) if r % 86_400 == 0 => write!(f, ", kept {}d", r / 86_400),
            Some(r) if r % 3600 == 0 => write!(f, ", kept {}h", r / 3600),
            Some(r) => write!(f, ", kept {r}s"),
            None => f.write_str(", kept by Neon's default"),
        }
    }
}

/// A branch's backup schedule (empty: none), in a canonical order so that two schedules
/// with the same rules compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackupSchedule(Vec<BackupScheduleItem>);

impl BackupSchedule {
    pub fn new(mut items: Vec<BackupScheduleItem>) -> Self {
        items.sort();
        items.dedup();
        BackupSchedule(items)
    }

    pub fn items(&self) -> &[BackupScheduleItem] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for BackupSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, it) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{it}")?;
        }
        Ok(())
    }
}

/// Where an operation is in Neon's life cycle. `error` (a failed attempt Neon will retry) and
/// anything undocumented land in `Other` and count as not yet terminal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum OperationStatus {
    Scheduling,
    Running,
    Finished,
    Failed,
    Cancelling,
    Cancelled,
    Skipped,
    Other(String),
}

impl OperationStatus {
    /// True once the operation will not change any more: finished, failed, cancelled, skipped.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            OperationStatus::Finished
                | OperationStatus::Failed
                | OperationStatus::Cancelled
                | OperationStatus::Skipped
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            OperationStatus::Scheduling => "scheduling",
            OperationStatus::Running => "running",
            OperationStatus::Finished => "finished",
            OperationStatus::Failed => "failed",
            OperationStatus::Cancelling => "cancelling",
            OperationStatus::Cancelled => "cancelled",
            OperationStatus::Skipped => "skipped",
            OperationStatus::Other(s) => s,
        }
    }
}

impl From<String> for OperationStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "scheduling" => OperationStatus::Scheduling,
            "running" => OperationStatus::Running,
            "finished" => OperationStatus::Finished,
            "failed" => OperationStatus::Failed,
            "cancelling" => OperationStatus::Cancelling,
            "cancelled" => OperationStatus::Cancelled,
            "skipped" => OperationStatus::Skipped,
            _ => OperationStatus::Other(s),
        }
    }
}

impl From<OperationStatus> for String {
    fn from(s: OperationStatus) -> Self {
        s.as_str().to_owned()
    }
}

impl fmt::Display for OperationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: OperationId,
    pub project_id: ProjectId,
    pub branch_id: Option<BranchId>,
    pub endpoint_id: Option<EndpointId>,
    pub action: String,
    pub status: OperationStatus,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hourly,
    Daily,
    Monthly,
}

impl Granularity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Granularity::Hourly => "hourly",
            Granularity::Daily => "daily",
            Granularity::Monthly => "monthly",
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One project's consumption in one timeframe (an hour, day or month), as `(metric, value)`
/// pairs in the order Neon returned them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsumptionPeriod {
    pub project_id: ProjectId,
    pub granularity: Granularity,
    pub timeframe_start: DateTime<Utc>,
    pub timeframe_end: DateTime<Utc>,
    pub metrics: Vec<(String, f64)>,
}

/// One branch's consumption in one timeframe (`/consumption_history/v2/branches`): the
/// branch, and its values as a [`ConsumptionPeriod`] of its project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BranchConsumptionPeriod {
    pub branch_id: BranchId,
    pub period: ConsumptionPeriod,
}

/// Changes to a branch (`PATCH /projects/{project_id}/branches/{branch_id}`). `None` leaves a
/// field alone; `expires_at: Some(None)` removes the expiry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BranchUpdate {
    pub name: Option<String>,
    pub protected: Option<bool>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// Parameters of `POST .../snapshot`. Neon takes them as query parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotRequest {
    pub name: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub lsn: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
}

/// Filter for [`NeonClient::list_projects`](super::NeonClient::list_projects).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProjectFilter {
    pub org_id: Option<OrgId>,
    pub search: Option<String>,
}

/// Parameters of the consumption history calls.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumptionQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
    /// Metric names (v2 requires at least one; the legacy endpoint ignores them).
    pub metrics: Vec<String>,
    /// Required by the v2 endpoint; optional for the legacy one.
    pub org_id: Option<OrgId>,
    /// At most 100 (Neon's limit); empty means every project of the org.
    pub project_ids: Vec<ProjectId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_transparent() {
        let id = ProjectId::from("shiny-wind-028834");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"shiny-wind-028834\"");
        assert_eq!(id.to_string(), "shiny-wind-028834");
        assert_eq!(id.as_str(), "shiny-wind-028834");
    }

    #[test]
    fn unknown_states_are_kept() {
        let s: OperationStatus = serde_json::from_str("\"error\"").unwrap();
        assert_eq!(s, OperationStatus::Other("error".into()));
        assert!(!s.is_terminal());
        assert!(OperationStatus::Failed.is_terminal());
        assert!(!OperationStatus::Running.is_terminal());
        let e: EndpointState = serde_json::from_str("\"active\"").unwrap();
        assert_eq!(e, EndpointState::Active);
        let e: EndpointState = serde_json::from_str("\"stopping\"").unwrap();
        assert_eq!(e.as_str(), "stopping");
    }
}
