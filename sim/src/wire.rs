//! The emulator's wire types: serde structs shaped exactly like the response schemas of Neon's
//! OpenAPI document (required fields always present, optional ones omitted when unknown, never
//! `null` unless the schema says `nullable`). Built from the model in [`crate::state`].

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Serialize;

use crate::state::{self, State};

/// RFC 3339 with second precision and `Z`, the way Neon prints timestamps.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ts_opt(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts)
}

/// Start of the calendar month of `t` (Neon's consumption period).
pub fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(t)
}

#[derive(Serialize)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub handle: String,
    pub plan: String,
    pub created_at: String,
    pub managed_by: String,
    pub updated_at: String,
}

impl Organization {
    pub fn from(o: &state::Org) -> Organization {
        Organization {
            id: o.id.clone(),
            name: o.name.clone(),
            handle: o.handle.clone(),
            plan: o.plan.clone(),
            created_at: ts(o.created_at),
            managed_by: "console".into(),
            updated_at: ts(o.updated_at),
        }
    }
}

/// `CurrentUserInfoResponse` (`GET /users/me`). Neon sends `billing_account` though the
/// document marks it optional, and Neon's python SDK requires it.
#[derive(Serialize)]
pub struct CurrentUser {
    pub active_seconds_limit: i64,
    pub billing_account: BillingAccount,
    pub auth_accounts: Vec<AuthAccount>,
    pub email: String,
    pub id: String,
    pub image: String,
    pub login: String,
    pub name: String,
    pub last_name: String,
    pub projects_limit: i64,
    pub branches_limit: i64,
    pub max_autoscaling_limit: f64,
    pub plan: String,
}

#[derive(Serialize)]
pub struct AuthAccount {
    pub email: String,
    pub image: String,
    pub login: String,
    pub name: String,
    pub provider: String,
}

/// `BillingAccount`: every required field, for an active account on the Scale plan.
#[derive(Serialize)]
pub struct BillingAccount {
    pub state: String,
    pub payment_source: PaymentSource,
    pub subscription_type: String,
    pub payment_method: String,
    pub quota_reset_at_last: String,
    pub name: String,
    pub email: String,
    pub address_city: String,
    pub address_country: String,
    pub address_line1: String,
    pub address_line2: String,
    pub address_postal_code: String,
    pub address_state: String,
}

#[derive(Serialize)]
pub struct PaymentSource {
    #[serde(rename = "type")]
    pub kind: String,
}

impl CurrentUser {
    pub fn from(state: &State, u: &state::User) -> CurrentUser {
        let full_name = format!("{} {}", u.name, u.last_name).trim().to_string();
        CurrentUser {
            active_seconds_limit: 0,
            billing_account: BillingAccount {
                state: "active".into(),
                payment_source: PaymentSource {
                    kind: "card".into(),
                },
                subscription_type: "scale".into(),
                payment_method: "stripe".into(),
                quota_reset_at_last: ts(month_start(state.now())),
                name: full_name,
                email: u.email.clone(),
                address_city: String::new(),
                address_country: String::new(),
                address_line1: String::new(),
                address_line2: String::new(),
                address_postal_code: String::new(),
                address_state: String::new(),
            },
            auth_accounts: vec![AuthAccount {
                email: u.email.clone(),
                image: String::new(),
                login: u.login.clone(),
                name: u.name.clone(),
                provider: "github".into(),
            }],
            email: u.email.clone(),
            id: u.id.clone(),
            image: String::new(),
            login: u.login.clone(),
            name: u.name.clone(),
            last_name: u.last_name.clone(),
            projects_limit: 1000,
            branches_limit: 5000,
            max_autoscaling_limit: 8.0,
            plan: "scale".into(),
        }
    }
}

#[derive(Serialize, Default)]
pub struct DefaultEndpointSettings {
    pub suspend_timeout_seconds: i64,
}

#[derive(Serialize)]
pub struct ProjectListItem {
    pub id: String,
    pub platform_id: String,
    pub region_id: String,
    pub name: String,
    pub provisioner: String,
    pub default_endpoint_settings: DefaultEndpointSettings,
    pub pg_version: i32,
    pub proxy_host: String,
    pub branch_logical_size_limit: i64,
    pub branch_logical_size_limit_bytes: i64,
    pub store_passwords: bool,
    pub active_time: i64,
    pub cpu_used_sec: i64,
    pub creation_source: String,
    pub created_at: String,
    pub updated_at: String,
    pub synthetic_storage_size: i64,
    pub owner_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_last_active_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_name: Option<String>,
    pub history_retention_seconds: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recoverable_until: Option<String>,
}

/// `ProjectsResponse` with `PaginationResponse` (`GET /projects`, `GET /projects/shared`).
#[derive(Serialize)]
pub struct ProjectsList {
    pub projects: Vec<ProjectListItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    pub applications: serde_json::Map<String, serde_json::Value>,
    pub integrations: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
pub struct Pagination {
    pub cursor: String,
}

const LOGICAL_SIZE_LIMIT_MIB: i64 = 512 * 1024;

fn proxy_host(p: &state::Project) -> String {
    format!("{}.aws.neon.tech", p.region_id.trim_start_matches("aws-"))
}

fn compute_last_active(state: &State, project_id: &str) -> Option<DateTime<Utc>> {
    state
        .project_endpoints(project_id)
        .iter()
        .filter_map(|e| e.last_active)
        .max()
}

impl ProjectListItem {
    pub fn from(state: &State, p: &state::Project) -> ProjectListItem {
        let now = state.now();
        let period = month_start(now);
        ProjectListItem {
            id: p.id.clone(),
            platform_id: "aws".into(),
            region_id: p.region_id.clone(),
            name: p.name.clone(),
            provisioner: "k8s-neonvm".into(),
            default_endpoint_settings: DefaultEndpointSettings {
                suspend_timeout_seconds: p.default_suspend_timeout_seconds,
            },
            pg_version: p.pg_version,
            proxy_host: proxy_host(p),
            branch_logical_size_limit: LOGICAL_SIZE_LIMIT_MIB,
            branch_logical_size_limit_bytes: LOGICAL_SIZE_LIMIT_MIB * 1024 * 1024,
            store_passwords: true,
            active_time: state.project_active_seconds(&p.id, period, now),
            cpu_used_sec: state.project_compute_seconds(&p.id, period, now),
            creation_source: "console".into(),
            created_at: ts(p.created_at),
            updated_at: ts(p.updated_at),
            synthetic_storage_size: state.project_logical_size(&p.id),
            owner_id: p.owner_id.clone(),
            compute_last_active_at: ts_opt(compute_last_active(state, &p.id)),
            org_id: p.org_id.clone(),
            org_name: p
                .org_id
                .as_ref()
                .and_then(|o| state.orgs.get(o))
                .map(|o| o.name.clone()),
            history_retention_seconds: p.history_retention_seconds,
            deleted_at: None,
            recoverable_until: None,
        }
    }

    /// A deleted project as `?recoverable=true` lists it.
    pub fn deleted(state: &State, d: &state::DeletedProject) -> ProjectListItem {
        ProjectListItem {
            deleted_at: Some(ts(d.deleted_at)),
            recoverable_until: Some(ts(d.recoverable_until())),
            ..ProjectListItem::from(state, &d.project)
        }
    }
}

#[derive(Serialize)]
pub struct Project {
    pub data_storage_bytes_hour: i64,
    pub data_transfer_bytes: i64,
    pub written_data_bytes: i64,
    pub compute_time_seconds: i64,
    pub active_time_seconds: i64,
    pub cpu_used_sec: i64,
    pub id: String,
    pub platform_id: String,
    pub region_id: String,
    pub name: String,
    pub provisioner: String,
    pub default_endpoint_settings: DefaultEndpointSettings,
    pub pg_version: i32,
    pub proxy_host: String,
    pub branch_logical_size_limit: i64,
    pub branch_logical_size_limit_bytes: i64,
    pub store_passwords: bool,
    pub creation_source: String,
    pub history_retention_seconds: i32,
    pub created_at: String,
    pub updated_at: String,
    pub synthetic_storage_size: i64,
    pub consumption_period_start: String,
    pub consumption_period_end: String,
    pub owner_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_last_active_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
}

impl Project {
    pub fn from(state: &State, p: &state::Project) -> Project {
        let now = state.now();
        let start = month_start(now);
        let end = month_start(start + chrono::TimeDelta::days(32));
        let branch_ids = state.project_branch_ids_between(&p.id, start, now);
        let sum = |f: &dyn Fn(&str) -> i64| -> i64 { branch_ids.iter().map(|b| f(b)).sum() };
        let compute = state.project_compute_seconds(&p.id, start, now);
        Project {
            data_storage_bytes_hour: sum(&|b| state.branch_storage_byte_hours(b, start, now)),
            data_transfer_bytes: sum(&|b| state.branch_transfer_bytes(b, start, now)),
            written_data_bytes: sum(&|b| state.branch_written_bytes(b, start, now)),
            compute_time_seconds: compute,
            active_time_seconds: state.project_active_seconds(&p.id, start, now),
            cpu_used_sec: compute,
            id: p.id.clone(),
            platform_id: "aws".into(),
            region_id: p.region_id.clone(),
            name: p.name.clone(),
            provisioner: "k8s-neonvm".into(),
            default_endpoint_settings: DefaultEndpointSettings {
                suspend_timeout_seconds: p.default_suspend_timeout_seconds,
            },
            pg_version: p.pg_version,
            proxy_host: proxy_host(p),
            branch_logical_size_limit: LOGICAL_SIZE_LIMIT_MIB,
            branch_logical_size_limit_bytes: LOGICAL_SIZE_LIMIT_MIB * 1024 * 1024,
            store_passwords: true,
            creation_source: "console".into(),
            history_retention_seconds: p.history_retention_seconds,
            created_at: ts(p.created_at),
            updated_at: ts(p.updated_at),
            synthetic_storage_size: state.project_logical_size(&p.id),
            consumption_period_start: ts(start),
            consumption_period_end: ts(end),
            owner_id: p.owner_id.clone(),
            compute_last_active_at: ts_opt(compute_last_active(state, &p.id)),
            org_id: p.org_id.clone(),
        }
    }
}

#[derive(Serialize)]
pub struct Branch {
    pub id: String,
    pub project_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_lsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_timestamp: Option<String>,
    pub name: String,
    pub current_state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_state: Option<String>,
    pub state_changed_at: String,
    pub logical_size: i64,
    pub creation_source: String,
    pub primary: bool,
    pub default: bool,
    pub protected: bool,
    pub cpu_used_sec: i64,
    pub compute_time_seconds: i64,
    pub active_time_seconds: i64,
    pub written_data_bytes: i64,
    pub data_transfer_bytes: i64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_interval_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reset_at: Option<String>,
    pub init_source: String,
    /// Only on soft-deleted branches listed with `include_deleted=true`, as the document says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<BranchRecoveryInfo>,
}

/// Neon's `BranchRecoveryInfo`.
#[derive(Serialize)]
pub struct BranchRecoveryInfo {
    pub deleted_at: String,
    pub recoverable_until: String,
    pub deletion_method: &'static str,
}

impl Branch {
    /// A soft-deleted branch, still recoverable, with its recovery information.
    pub fn deleted(state: &State, d: &state::DeletedBranch) -> Branch {
        let mut b = Branch::from(state, &d.branch);
        b.recovery = Some(BranchRecoveryInfo {
            deleted_at: ts(d.deleted_at),
            recoverable_until: ts(d.recoverable_until()),
            deletion_method: d.deletion_method,
        });
        b
    }

    pub fn from(state: &State, b: &state::Branch) -> Branch {
        let now = state.now();
        let start = month_start(now);
        let compute = state.branch_compute_seconds(&b.id, start, now);
        let init = b.ready_at.is_some_and(|at| now < at);
        Branch {
            id: b.id.clone(),
            project_id: b.project_id.clone(),
            parent_id: b.parent_id.clone(),
            parent_lsn: b.parent_id.as_ref().map(|_| "0/1E8E6B0".to_string()),
            parent_timestamp: ts_opt(b.parent_timestamp),
            name: b.name.clone(),
            current_state: if init { "init" } else { "ready" }.into(),
            pending_state: init.then(|| "ready".into()),
            state_changed_at: ts(b.ready_at.filter(|_| !init).unwrap_or(b.created_at)),
            logical_size: b.logical_size,
            creation_source: "console".into(),
            primary: b.default,
            default: b.default,
            protected: b.protected,
            cpu_used_sec: compute,
            compute_time_seconds: compute,
            active_time_seconds: state.branch_active_seconds(&b.id, start, now),
            written_data_bytes: state.branch_written_bytes(&b.id, start, now),
            data_transfer_bytes: state.branch_transfer_bytes(&b.id, start, now),
            created_at: ts(b.created_at),
            updated_at: ts(b.updated_at),
            ttl_interval_seconds: b
                .expires_at
                .map(|e| (e - b.updated_at).num_seconds().max(0)),
            expires_at: ts_opt(b.expires_at),
            last_reset_at: ts_opt(b.last_reset_at),
            init_source: "parent-data".into(),
            recovery: None,
        }
    }
}

#[derive(Serialize, Default)]
pub struct EndpointSettings {}

#[derive(Serialize)]
pub struct Endpoint {
    pub host: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub project_id: String,
    pub branch_id: String,
    pub autoscaling_limit_min_cu: f64,
    pub autoscaling_limit_max_cu: f64,
    pub region_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub current_state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_state: Option<String>,
    pub settings: EndpointSettings,
    pub pooler_enabled: bool,
    pub pooler_mode: String,
    pub disabled: bool,
    pub passwordless_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
    pub creation_source: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<String>,
    pub proxy_host: String,
    pub suspend_timeout_seconds: i64,
    pub provisioner: String,
}

impl Endpoint {
    /// The compute as of `now` (its `init` and `pending_state` while operations run).
    pub fn from(e: &state::Endpoint, now: DateTime<Utc>) -> Endpoint {
        let current = if e.init_until.is_some_and(|at| now < at) {
            state::EndpointState::Init
        } else {
            e.current_state
        };
        let region = e.region_id.trim_start_matches("aws-");
        Endpoint {
            host: format!("{}.{region}.aws.neon.tech", e.id),
            id: e.id.clone(),
            name: e.name.clone(),
            project_id: e.project_id.clone(),
            branch_id: e.branch_id.clone(),
            autoscaling_limit_min_cu: e.autoscaling_limit_min_cu,
            autoscaling_limit_max_cu: e.autoscaling_limit_max_cu,
            region_id: e.region_id.clone(),
            kind: e.kind.as_str().into(),
            current_state: current.as_str().into(),
            // The model changes state at once; Neon shows where a running operation leads.
            pending_state: e
                .pending
                .filter(|(to, until)| now < *until && *to != current)
                .map(|(to, _)| to.as_str().into()),
            settings: EndpointSettings::default(),
            pooler_enabled: false,
            pooler_mode: "transaction".into(),
            disabled: e.disabled,
            passwordless_access: false,
            last_active: ts_opt(e.last_active),
            creation_source: "console".into(),
            created_at: ts(e.created_at),
            updated_at: ts(e.updated_at),
            started_at: ts_opt(e.started_at),
            suspended_at: ts_opt(e.suspended_at),
            proxy_host: format!("{region}.aws.neon.tech"),
            suspend_timeout_seconds: e.suspend_timeout_seconds,
            provisioner: "k8s-neonvm".into(),
        }
    }
}

#[derive(Serialize)]
pub struct Operation {
    pub id: String,
    pub project_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    pub action: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub failures_count: i32,
    pub created_at: String,
    pub updated_at: String,
    pub total_duration_ms: i32,
}

impl Operation {
    /// The operation as of `now`, or as of its creation when `now` is earlier. A mutation
    /// route reads the clock before it creates its operations (its branch, deletion and
    /// endpoint times are that instant), so on the real clock its answer's `now` precedes
    /// them by a few microseconds; without the clamp an operation of 0 ms would be reported
    /// `scheduling` in the answer that started it, where Neon, having finished it, reports it
    /// `finished`. Longer operations are unaffected: they are `scheduling` either way, and the
    /// project stays locked (423) until they end.
    pub fn from(op: &state::Operation, now: DateTime<Utc>) -> Operation {
        let now = now.max(op.created_at);
        let status = op.status_at(now);
        let updated = op.updated_at(now);
        let failed = status == state::OperationStatus::Failed;
        Operation {
            id: op.id.clone(),
            project_id: op.project_id.clone(),
            branch_id: op.branch_id.clone(),
            endpoint_id: op.endpoint_id.clone(),
            action: op.action.into(),
            status: status.as_str().into(),
            error: if failed { op.failure.clone() } else { None },
            failures_count: i32::from(failed),
            created_at: ts(op.created_at),
            updated_at: ts(updated),
            total_duration_ms: i32::try_from((updated - op.created_at).num_milliseconds())
                .unwrap_or(i32::MAX),
        }
    }
    pub fn list(ops: &[state::Operation], now: DateTime<Utc>) -> Vec<Operation> {
        ops.iter().map(|o| Operation::from(o, now)).collect()
    }
}

#[derive(Serialize)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    pub source_branch_id: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub manual: bool,
    pub full_size: i64,
}

impl Snapshot {
    pub fn from(s: &state::Snapshot) -> Snapshot {
        Snapshot {
            id: s.id.clone(),
            name: s.name.clone(),
            lsn: s.lsn.clone(),
            timestamp: ts_opt(s.timestamp),
            source_branch_id: s.source_branch_id.clone(),
            created_at: ts(s.created_at),
            expires_at: ts_opt(s.expires_at),
            manual: s.manual,
            full_size: s.full_size,
        }
    }
}

#[derive(Serialize)]
pub struct Role {
    pub branch_id: String,
    pub name: String,
    /// Only in the answers of create and reset_password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub protected: bool,
    pub authentication_method: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Role {
    /// The role without its password (what listings and get show).
    pub fn from(branch_id: &str, r: &state::Role) -> Role {
        Role {
            branch_id: branch_id.to_string(),
            name: r.name.clone(),
            password: None,
            protected: r.protected,
            authentication_method: if r.password.is_some() {
                "password"
            } else {
                "no_login"
            }
            .into(),
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
        }
    }

    /// The role with its password (create and reset_password answers).
    pub fn with_password(branch_id: &str, r: &state::Role) -> Role {
        Role {
            password: r.password.clone(),
            ..Role::from(branch_id, r)
        }
    }
}

#[derive(Serialize)]
pub struct Database {
    pub id: i64,
    pub branch_id: String,
    pub name: String,
    pub owner_name: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Database {
    pub fn from(branch_id: &str, d: &state::Database) -> Database {
        Database {
            id: d.id,
            branch_id: branch_id.to_string(),
            name: d.name.clone(),
            owner_name: d.owner_name.clone(),
            created_at: ts(d.created_at),
            updated_at: ts(d.updated_at),
        }
    }
}

#[derive(Serialize)]
pub struct ConnectionParameters {
    pub database: String,
    pub password: String,
    pub role: String,
    pub host: String,
    pub pooler_host: String,
}

#[derive(Serialize)]
pub struct ConnectionDetails {
    pub connection_uri: String,
    pub connection_parameters: ConnectionParameters,
}

/// The host of a compute, and of its pooler.
pub fn endpoint_hosts(ep: &state::Endpoint) -> (String, String) {
    let region = ep.region_id.trim_start_matches("aws-");
    (
        format!("{}.{region}.aws.neon.tech", ep.id),
        format!("{}-pooler.{region}.aws.neon.tech", ep.id),
    )
}

/// `postgresql://role:password@host/db?sslmode=require` (nothing listens there).
pub fn connection_uri(host: &str, role: &str, password: &str, db: &str) -> String {
    format!("postgresql://{role}:{password}@{host}/{db}?sslmode=require")
}

/// Connection URIs of the read-write compute for every database of its branch, with the
/// database owner's password (what create answers return).
pub fn connection_uris(state: &State, ep: Option<&state::Endpoint>) -> Vec<ConnectionDetails> {
    let Some(ep) = ep else { return Vec::new() };
    let (host, pooler) = endpoint_hosts(ep);
    state
        .branch_databases(&ep.branch_id)
        .iter()
        .filter_map(|db| {
            let role = state
                .branch_roles(&ep.branch_id)
                .iter()
                .find(|r| r.name == db.owner_name)?;
            let password = role.password.clone()?;
            Some(ConnectionDetails {
                connection_uri: connection_uri(&host, &role.name, &password, &db.name),
                connection_parameters: ConnectionParameters {
                    database: db.name.clone(),
                    password,
                    role: role.name.clone(),
                    host: host.clone(),
                    pooler_host: pooler.clone(),
                },
            })
        })
        .collect()
}

// ----- consumption -----------------------------------------------------------------------------

/// A billing period of a consumption answer (`ConsumptionHistoryPerPeriod` and its v2 form).
#[derive(Serialize)]
pub struct ConsumptionPeriod<T> {
    pub period_id: String,
    pub period_plan: String,
    pub period_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_end: Option<String>,
    pub consumption: Vec<T>,
}

#[derive(Serialize)]
pub struct MetricValue {
    pub metric_name: String,
    pub value: i64,
}

/// A v2 timeframe: its metrics as name/value pairs.
#[derive(Serialize)]
pub struct V2Timeframe {
    pub timeframe_start: String,
    pub timeframe_end: String,
    pub metrics: Vec<MetricValue>,
}

/// A legacy timeframe: each metric a field.
#[derive(Serialize)]
pub struct LegacyTimeframe {
    pub timeframe_start: String,
    pub timeframe_end: String,
    #[serde(flatten)]
    pub values: std::collections::BTreeMap<&'static str, i64>,
}

#[derive(Serialize)]
pub struct ProjectConsumption<T> {
    pub project_id: String,
    pub periods: Vec<ConsumptionPeriod<T>>,
}

#[derive(Serialize)]
pub struct BranchConsumption {
    pub project_id: String,
    pub branch_id: String,
    pub periods: Vec<ConsumptionPeriod<V2Timeframe>>,
}

#[derive(Serialize)]
pub struct ProjectsConsumption<T> {
    pub projects: Vec<ProjectConsumption<T>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
}

#[derive(Serialize)]
pub struct BranchesConsumption {
    pub branches: Vec<BranchConsumption>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
}

#[derive(Serialize)]
pub struct AccountConsumption {
    pub periods: Vec<ConsumptionPeriod<LegacyTimeframe>>,
}

// ----- answer envelopes ------------------------------------------------------------------------

/// Defines an answer envelope: a struct whose fields are the answer's top-level keys.
macro_rules! envelope {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Serialize)]
        pub struct $name {
            $(pub $field: $ty),*
        }
    };
}

envelope!(/// `EndpointResponse`.
    EndpointResponse { endpoint: Endpoint });
envelope!(/// `EndpointsResponse`.
    EndpointsResponse { endpoints: Vec<Endpoint> });
envelope!(/// `EndpointOperations`.
    EndpointOperations { endpoint: Endpoint, operations: Vec<Operation> });
envelope!(/// `RoleResponse`.
    RoleResponse { role: Role });
envelope!(/// `RolesResponse`.
    RolesResponse { roles: Vec<Role> });
envelope!(/// `RoleOperations`.
    RoleOperations { role: Role, operations: Vec<Operation> });
envelope!(/// `RolePasswordResponse`.
    RolePasswordResponse { password: String });
envelope!(/// `DatabaseResponse`.
    DatabaseResponse { database: Database });
envelope!(/// `DatabasesResponse`.
    DatabasesResponse { databases: Vec<Database> });
envelope!(/// `DatabaseOperations`.
    DatabaseOperations { database: Database, operations: Vec<Operation> });
envelope!(/// `ConnectionURIResponse`.
    ConnectionUriResponse { uri: String });
envelope!(/// `BranchSchemaCompareResponse`.
    SchemaCompareResponse { diff: String });
envelope!(/// `SnapshotResponse`.
    SnapshotResponse { snapshot: Snapshot });
envelope!(/// `ListSnapshotsResponse`.
    SnapshotsResponse { snapshots: Vec<Snapshot> });
envelope!(/// A created snapshot and its operation.
    SnapshotOperations { snapshot: Snapshot, operations: Vec<Operation> });
envelope!(/// `OperationsResponse`.
    OperationsResponse { operations: Vec<Operation> });
envelope!(/// `OperationResponse`.
    OperationResponse { operation: Operation });
envelope!(/// `BackupSchedule`.
    BackupScheduleResponse { schedule: Vec<state::BackupScheduleItem> });
envelope!(/// A snapshot restore: the new branch, its computes and the operations.
    RestoredBranch { branch: Branch, endpoints: Vec<Endpoint>, operations: Vec<Operation> });

/// `OperationsResponse` with `PaginationResponse`.
#[derive(Serialize)]
pub struct OperationsPage {
    pub operations: Vec<Operation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
}

/// An empty JSON object (`{}`).
#[derive(Serialize)]
pub struct Empty {}
envelope!(/// `BranchOperations`.
    BranchOperations { branch: Branch, operations: Vec<Operation> });
envelope!(/// `BranchesCountResponse`.
    CountResponse { count: usize });
envelope!(/// A created branch: `CreatedBranch` of the document.
CreatedBranch {
    branch: Branch,
    endpoints: Vec<Endpoint>,
    operations: Vec<Operation>,
    roles: Vec<Role>,
    databases: Vec<Database>,
    connection_uris: Vec<ConnectionDetails>,
});
envelope!(/// `BranchRecoverResponse`.
    RecoveredBranch { branch: Branch, endpoints: Vec<Endpoint> });
envelope!(/// `ProjectResponse`.
    ProjectResponse { project: Project });
envelope!(/// `ProjectOperations`.
    ProjectOperations { project: Project, operations: Vec<Operation> });
envelope!(/// `ProjectRecoverResponse`.
    RecoveredProject { project: Project, branches: Vec<Branch> });
envelope!(/// `CreatedProject`.
CreatedProject {
    project: Project,
    connection_uris: Vec<ConnectionDetails>,
    roles: Vec<Role>,
    databases: Vec<Database>,
    operations: Vec<Operation>,
    branch: Branch,
    endpoints: Vec<Endpoint>,
});
