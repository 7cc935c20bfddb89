//! The emulator's model of a Neon account: users, organizations, API keys, projects, branches,
//! endpoints (computes), snapshots, backup schedules and operations, plus the simple activity
//! model that makes computes go active and idle.
//!
//! Time-dependent behaviour is evaluated lazily: [`State::settle`] brings the model up to the
//! clock's "now" (autosuspend, branch and snapshot expiry) and is called before every request is
//! served (and by a background ticker in real-clock mode). Operation status is a pure function of
//! the clock, so moving a virtual clock is all a test needs to do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::clock::Clock;
use crate::error::ApiError;
use crate::ids;

/// The model behind a mutex, shared by the server, its ticker and tests.
#[derive(Clone)]
pub struct SharedState(Arc<Mutex<State>>);

impl SharedState {
    pub fn new(state: State) -> SharedState {
        SharedState(Arc::new(Mutex::new(state)))
    }

    /// Locks the model without settling it.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the emulator; keep serving anyway.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the model and brings it up to the clock's current time.
    pub fn settled(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.settle();
        state
    }
}

/// Manual snapshots a project may hold on the Free plan, and on paid plans (Neon's docs).
pub const MANUAL_SNAPSHOT_LIMIT_FREE: usize = 1;
pub const MANUAL_SNAPSHOT_LIMIT_PAID: usize = 100;
/// Longest retention a backup schedule item may have (Neon's docs: 35 days, the default).
pub const MAX_SCHEDULE_RETENTION_SECONDS: i64 = 35 * 86_400;

/// Effective autosuspend delay when `suspend_timeout_seconds` is 0.
pub const DEFAULT_SUSPEND_TIMEOUT_SECONDS: i64 = 300;
/// Longest branch TTL Neon accepts.
pub const MAX_BRANCH_TTL: TimeDelta = TimeDelta::days(30);
/// Bytes written per second a compute is active (activity model; feeds consumption).
pub const WRITTEN_BYTES_PER_ACTIVE_SECOND: i64 = 16 * 1024;
/// Bytes transferred out per second a compute is active (activity model; feeds consumption).
pub const TRANSFER_BYTES_PER_ACTIVE_SECOND: i64 = 4 * 1024;
/// Regions the emulator offers (`GET /regions`).
pub const REGIONS: &[(&str, &str, &str, &str)] = &[
    (
        "aws-us-east-1",
        "AWS US East (N. Virginia)",
        "38.9",
        "-77.0",
    ),
    ("aws-us-east-2", "AWS US East (Ohio)", "39.9", "-82.9"),
    ("aws-us-west-2", "AWS US West (Oregon)", "45.5", "-122.6"),
    ("aws-eu-central-1", "AWS Europe (Frankfurt)", "50.1", "8.6"),
    (
        "aws-ap-southeast-1",
        "AWS Asia Pacific (Singapore)",
        "1.3",
        "103.8",
    ),
];
pub const DEFAULT_REGION: &str = "aws-us-east-2";

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub login: String,
    pub name: String,
    pub last_name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub handle: String,
    pub plan: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// User ids of the members.
    pub members: Vec<String>,
}

/// What an API key may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// A personal key: everything its user owns or can reach through organizations.
    Personal { user_id: String },
    /// An organization key: the organization's projects.
    Org { org_id: String },
    /// A project-scoped (organization) key: exactly one project.
    Project {
        org_id: Option<String>,
        project_id: String,
    },
}

/// An API key. `secret` is the bearer token; it is never printed by `Debug`.
#[derive(Clone)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub secret: String,
    pub scope: KeyScope,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("scope", &self.scope)
            .field("revoked", &self.revoked)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub region_id: String,
    pub pg_version: i32,
    pub org_id: Option<String>,
    pub owner_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Default `suspend_timeout_seconds` for new endpoints.
    pub default_suspend_timeout_seconds: i64,
    pub history_retention_seconds: i32,
    /// Users (ids) outside the project's owner and organization it is shared with; they see
    /// it under `GET /projects/shared`, not `GET /projects`.
    pub shared_with: Vec<String>,
}

/// A deleted project in its recovery window, with everything `recover` brings back.
#[derive(Debug, Clone)]
pub struct DeletedProject {
    pub project: Project,
    pub deleted_at: DateTime<Utc>,
    pub branches: Vec<Branch>,
    pub endpoints: Vec<Endpoint>,
    pub snapshots: Vec<Snapshot>,
}

/// How long a deleted project can be recovered ("Recovers a deleted project within the 7-day
/// deletion recovery period", the document's recoverProject).
pub const PROJECT_RECOVERY_WINDOW: TimeDelta = TimeDelta::days(7);

impl DeletedProject {
    pub fn recoverable_until(&self) -> DateTime<Utc> {
        self.deleted_at + PROJECT_RECOVERY_WINDOW
    }
}

#[derive(Debug, Clone)]
pub struct Branch {
    pub id: String,
    pub project_id: String,
    pub parent_id: Option<String>,
    pub parent_timestamp: Option<DateTime<Utc>>,
    pub name: String,
    pub default: bool,
    pub protected: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub logical_size: i64,
    /// Until then the branch's create operation runs: Neon reports it `init`, pending `ready`.
    pub ready_at: Option<DateTime<Utc>>,
    /// When the branch was last restored (reset).
    pub last_reset_at: Option<DateTime<Utc>>,
}

/// A branch that no longer exists; kept for consumption history and recovery info.
#[derive(Debug, Clone)]
pub struct DeletedBranch {
    pub branch: Branch,
    pub deleted_at: DateTime<Utc>,
    /// `user` or `ttl`, as in Neon's `BranchRecoveryInfo.deletion_method`.
    pub deletion_method: &'static str,
    /// Deleted with `hard_delete=true`: never recoverable (kept only for consumption).
    pub hard: bool,
    /// Its computes when it was deleted (recovery brings them back idle).
    pub endpoints: Vec<Endpoint>,
}

/// How long a deleted branch stays recoverable ("By default, deleted branches can be
/// recovered within a 7-day grace period", the document's deleteProjectBranch).
pub const RECOVERY_WINDOW: TimeDelta = TimeDelta::days(7);

impl DeletedBranch {
    pub fn recoverable_until(&self) -> DateTime<Utc> {
        self.deleted_at + RECOVERY_WINDOW
    }

    /// Still inside its recovery window at `now`.
    pub fn is_recoverable(&self, now: DateTime<Utc>) -> bool {
        !self.hard && now < self.recoverable_until()
    }
}

/// A Postgres role of a branch. `password` is a secret: generated, shown by create, reset and
/// reveal only, never by `Debug`. `None` for a `no_login` role.
#[derive(Clone)]
pub struct Role {
    pub name: String,
    pub password: Option<String>,
    pub protected: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Role")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("protected", &self.protected)
            .finish()
    }
}

/// A database of a branch.
#[derive(Debug, Clone)]
pub struct Database {
    pub id: i64,
    pub name: String,
    pub owner_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The schema, as the DDL lines `pg_dump --schema-only` would print (the model behind
    /// schema compare; set with `Sim::set_schema`). Children inherit their parent's.
    pub schema: Vec<String>,
}

/// The owner role and database Neon creates on a new root branch.
pub const DEFAULT_ROLE: &str = "neondb_owner";
pub const DEFAULT_DATABASE: &str = "neondb";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointType {
    ReadWrite,
    ReadOnly,
}

impl EndpointType {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::ReadWrite => "read_write",
            EndpointType::ReadOnly => "read_only",
        }
    }
    pub fn parse(s: &str) -> Option<EndpointType> {
        match s {
            "read_write" => Some(EndpointType::ReadWrite),
            "read_only" => Some(EndpointType::ReadOnly),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Init,
    Active,
    Idle,
}

impl EndpointState {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Init => "init",
            EndpointState::Active => "active",
            EndpointState::Idle => "idle",
        }
    }
}

/// The simulated workload on a compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// No client traffic: the compute autosuspends after its timeout.
    Idle,
    /// Clients keep the compute busy: it is (re)started and never idles.
    Busy,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub project_id: String,
    pub branch_id: String,
    pub name: Option<String>,
    pub kind: EndpointType,
    pub region_id: String,
    pub disabled: bool,
    /// As given: 0 = default (300 s), -1 = never, else 60..=604800.
    pub suspend_timeout_seconds: i64,
    pub autoscaling_limit_min_cu: f64,
    pub autoscaling_limit_max_cu: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub current_state: EndpointState,
    pub last_active: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub activity: Activity,
    /// Until then the compute's create operation runs: Neon reports it `init`.
    pub init_until: Option<DateTime<Utc>>,
    /// The state a running create operation leads to, and when it finishes.
    pub pending: Option<(EndpointState, DateTime<Utc>)>,
}

impl Endpoint {
    /// Autosuspend delay, or `None` for "never".
    pub fn effective_suspend_timeout(&self) -> Option<TimeDelta> {
        match self.suspend_timeout_seconds {
            0 => Some(TimeDelta::seconds(DEFAULT_SUSPEND_TIMEOUT_SECONDS)),
            s if s < 0 => None,
            s => Some(TimeDelta::seconds(s)),
        }
    }
    /// Compute units billed while active (the autoscaling minimum, at least 0.25).
    pub fn billed_cu(&self) -> f64 {
        self.autoscaling_limit_min_cu.max(0.25)
    }
}

/// A closed interval during which a compute was active; kept after the compute is gone.
#[derive(Debug, Clone)]
pub struct ActivityRecord {
    pub project_id: String,
    pub branch_id: String,
    pub endpoint_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub cu: f64,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub source_branch_id: String,
    pub lsn: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub manual: bool,
    pub full_size: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

impl BackupScheduleItem {
    /// Neon's rules for one item of a branch's backup schedule (the message names the
    /// field): `daily`, `weekly` or `monthly` (the document also lists `hourly` and
    /// `yearly`, which Neon refuses), `hour` 0..=23, `day` 1..=7 (weekly) or 1..=31
    /// (monthly), `month` 1..=12, `retention_seconds` from 3600 to 35 days.
    pub fn check(&self) -> Result<(), String> {
        match self.frequency.as_str() {
            "daily" | "weekly" | "monthly" => {}
            f @ ("hourly" | "yearly") => {
                return Err(format!(
                    "frequency {f:?} is not supported; use daily, weekly or monthly"
                ))
            }
            f => {
                return Err(format!(
                    "frequency must be daily, weekly or monthly; got {f:?}"
                ))
            }
        }
        if self.hour.is_some_and(|h| !(0..=23).contains(&h)) {
            return Err("hour must be between 0 and 23".into());
        }
        let day_max = if self.frequency == "weekly" { 7 } else { 31 };
        if self.day.is_some_and(|d| !(1..=day_max).contains(&d)) {
            return Err(format!(
                "day must be between 1 and {day_max} for {} schedules",
                self.frequency
            ));
        }
        if self.month.is_some_and(|m| !(1..=12).contains(&m)) {
            return Err("month must be between 1 and 12".into());
        }
        if self.retention_seconds.is_some_and(|r| r < 3600) {
            return Err("retention_seconds must be at least 3600".into());
        }
        if self
            .retention_seconds
            .is_some_and(|r| r > MAX_SCHEDULE_RETENTION_SECONDS)
        {
            return Err(format!(
                "retention_seconds must be at most {MAX_SCHEDULE_RETENTION_SECONDS} (35 days)"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationStatus {
    Scheduling,
    Running,
    Finished,
    Failed,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Scheduling => "scheduling",
            OperationStatus::Running => "running",
            OperationStatus::Finished => "finished",
            OperationStatus::Failed => "failed",
        }
    }
    pub fn is_in_progress(self) -> bool {
        matches!(self, OperationStatus::Scheduling | OperationStatus::Running)
    }
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    pub project_id: String,
    pub branch_id: Option<String>,
    pub endpoint_id: Option<String>,
    /// One of Neon's `OperationAction` values.
    pub action: &'static str,
    pub created_at: DateTime<Utc>,
    pub duration: TimeDelta,
    /// When set, the operation ends `failed` with this error instead of `finished`.
    pub failure: Option<String>,
}

impl Operation {
    /// Status at `now`: scheduling for the first fifth of its duration, then running, then done.
    pub fn status_at(&self, now: DateTime<Utc>) -> OperationStatus {
        let elapsed = now - self.created_at;
        if elapsed >= self.duration {
            if self.failure.is_some() {
                OperationStatus::Failed
            } else {
                OperationStatus::Finished
            }
        } else if elapsed < self.duration / 5 {
            OperationStatus::Scheduling
        } else {
            OperationStatus::Running
        }
    }
    /// When the operation last changed state, as of `now`.
    pub fn updated_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let done = self.created_at + self.duration;
        if now >= done {
            done
        } else if now - self.created_at >= self.duration / 5 {
            self.created_at + self.duration / 5
        } else {
            self.created_at
        }
    }
}

/// Who is calling: the API key that authenticated the request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: i64,
    pub scope: KeyScope,
    /// The user who created the key.
    pub user_id: String,
}

/// The whole emulated account.
pub struct State {
    pub clock: Clock,
    /// How long each new operation takes to finish (on the emulator's clock).
    pub operation_duration: TimeDelta,
    /// The next `n` operations created end `failed` (a knob for tests and fault injection).
    pub fail_next_operations: u32,
    rng: ChaCha8Rng,
    /// Role passwords come from their own stream, so adding roles does not move seeded ids.
    password_rng: ChaCha8Rng,
    next_key_id: i64,
    next_database_id: i64,
    /// Roles and databases by branch id (kept after a branch is deleted, for recovery).
    pub roles: BTreeMap<String, Vec<Role>>,
    pub databases: BTreeMap<String, Vec<Database>>,
    pub users: BTreeMap<String, User>,
    pub orgs: BTreeMap<String, Org>,
    pub api_keys: Vec<ApiKey>,
    pub projects: BTreeMap<String, Project>,
    pub branches: BTreeMap<String, Branch>,
    pub deleted_branches: Vec<DeletedBranch>,
    /// Deleted projects; those past [`PROJECT_RECOVERY_WINDOW`] are dropped by `settle`.
    pub deleted_projects: Vec<DeletedProject>,
    pub endpoints: BTreeMap<String, Endpoint>,
    pub activity_log: Vec<ActivityRecord>,
    pub snapshots: BTreeMap<String, Snapshot>,
    pub backup_schedules: BTreeMap<String, Vec<BackupScheduleItem>>,
    /// Every operation, in creation order.
    pub operations: Vec<Operation>,
    /// The id of the primary user (owner of personal keys given in the config).
    pub primary_user_id: String,
}

impl State {
    /// An empty account with one user, `seed` driving every generated id.
    pub fn new(clock: Clock, seed: u64, operation_duration: Duration) -> State {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let now = clock.now();
        let user_id = ids::uuid(&mut rng);
        let user = User {
            id: user_id.clone(),
            email: "sim-user@example.com".into(),
            login: "sim-user".into(),
            name: "Sim".into(),
            last_name: "User".into(),
            created_at: now - TimeDelta::days(400),
        };
        let mut users = BTreeMap::new();
        users.insert(user_id.clone(), user);
        State {
            clock,
            operation_duration: TimeDelta::from_std(operation_duration).unwrap_or(TimeDelta::MAX),
            fail_next_operations: 0,
            rng,
            password_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x7061_7373_776f_7264),
            next_key_id: 1,
            next_database_id: 1,
            roles: BTreeMap::new(),
            databases: BTreeMap::new(),
            users,
            orgs: BTreeMap::new(),
            api_keys: Vec::new(),
            projects: BTreeMap::new(),
            branches: BTreeMap::new(),
            deleted_branches: Vec::new(),
            deleted_projects: Vec::new(),
            endpoints: BTreeMap::new(),
            activity_log: Vec::new(),
            snapshots: BTreeMap::new(),
            backup_schedules: BTreeMap::new(),
            operations: Vec::new(),
            primary_user_id: user_id,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The deterministic random source for generated ids and seeded data.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    // ----- time -------------------------------------------------------------------------------

    /// Brings the model up to the clock: busy computes are active, idle ones past their timeout
    /// are suspended (at the instant the timeout elapsed), and expired branches and snapshots are
    /// deleted.
    pub fn settle(&mut self) {
        let now = self.now();
        let ids: Vec<String> = self.endpoints.keys().cloned().collect();
        for id in ids {
            self.settle_endpoint(&id, now);
        }
        let expired: Vec<String> = self
            .branches
            .values()
            .filter(|b| b.expires_at.is_some_and(|at| at <= now))
            .filter(|b| !b.default && !b.protected)
            .map(|b| b.id.clone())
            .collect();
        for id in expired {
            // Branches that became parents after their TTL was set are kept (Neon forbids
            // TTLs on parents; here the child appeared later).
            if self.has_children(&id) {
                continue;
            }
            let at = self.branches[&id].expires_at.unwrap_or(now);
            let project_id = self.branches[&id].project_id.clone();
            self.remove_branch(&id, at, "ttl");
            self.push_operation_at(&project_id, Some(&id), None, "delete_timeline", at);
        }
        self.snapshots
            .retain(|_, s| s.expires_at.is_none_or(|at| at > now));
        self.deleted_projects
            .retain(|d| d.recoverable_until() > now);
    }

    fn settle_endpoint(&mut self, id: &str, now: DateTime<Utc>) {
        let Some(ep) = self.endpoints.get(id) else {
            return;
        };
        let ep = ep.clone();
        if ep.disabled {
            if ep.current_state == EndpointState::Active {
                self.suspend_endpoint_at(id, now);
            }
            return;
        }
        match ep.activity {
            Activity::Busy => {
                if ep.current_state != EndpointState::Active {
                    self.start_endpoint_at(id, now);
                }
                if let Some(ep) = self.endpoints.get_mut(id) {
                    ep.last_active = Some(now);
                }
            }
            Activity::Idle => {
                if ep.current_state == EndpointState::Active {
                    if let Some(timeout) = ep.effective_suspend_timeout() {
                        let since = ep.last_active.or(ep.started_at).unwrap_or(ep.created_at);
                        let at = since + timeout;
                        if at <= now {
                            self.suspend_endpoint_at(id, at);
                        }
                    }
                }
            }
        }
    }

    /// Marks a compute active from `at` (no-op if already active).
    pub fn start_endpoint_at(&mut self, id: &str, at: DateTime<Utc>) {
        if let Some(ep) = self.endpoints.get_mut(id) {
            if ep.current_state != EndpointState::Active {
                ep.current_state = EndpointState::Active;
                ep.started_at = Some(at);
            }
            ep.last_active = Some(at);
        }
    }

    /// Suspends a compute at `at`, recording its active interval.
    pub fn suspend_endpoint_at(&mut self, id: &str, at: DateTime<Utc>) {
        let Some(ep) = self.endpoints.get_mut(id) else {
            return;
        };
        if ep.current_state == EndpointState::Active {
            let from = ep.started_at.unwrap_or(ep.created_at);
            let at = at.max(from);
            ep.current_state = EndpointState::Idle;
            ep.suspended_at = Some(at);
            self.activity_log.push(ActivityRecord {
                project_id: ep.project_id.clone(),
                branch_id: ep.branch_id.clone(),
                endpoint_id: ep.id.clone(),
                from,
                to: at,
                cu: ep.billed_cu(),
            });
        } else if ep.current_state == EndpointState::Init {
            ep.current_state = EndpointState::Idle;
        }
    }

    // ----- operations -------------------------------------------------------------------------

    /// Whether `project_id` has an operation still scheduling or running.
    pub fn has_running_operations(&self, project_id: &str) -> bool {
        let now = self.now();
        self.operations
            .iter()
            .any(|op| op.project_id == project_id && op.status_at(now).is_in_progress())
    }

    /// Refuses with 423 while the project has an operation in progress.
    pub fn ensure_unlocked(&self, project_id: &str) -> Result<(), ApiError> {
        if self.has_running_operations(project_id) {
            Err(ApiError::locked())
        } else {
            Ok(())
        }
    }

    /// Records a new operation starting now and returns it.
    pub fn push_operation(
        &mut self,
        project_id: &str,
        branch_id: Option<&str>,
        endpoint_id: Option<&str>,
        action: &'static str,
    ) -> Operation {
        let now = self.now();
        self.push_operation_at(project_id, branch_id, endpoint_id, action, now)
    }

    fn push_operation_at(
        &mut self,
        project_id: &str,
        branch_id: Option<&str>,
        endpoint_id: Option<&str>,
        action: &'static str,
        at: DateTime<Utc>,
    ) -> Operation {
        let failure = if self.fail_next_operations > 0 {
            self.fail_next_operations -= 1;
            Some(format!("simulated failure of {action}"))
        } else {
            None
        };
        let op = Operation {
            id: ids::uuid(&mut self.rng),
            project_id: project_id.to_string(),
            branch_id: branch_id.map(str::to_string),
            endpoint_id: endpoint_id.map(str::to_string),
            action,
            created_at: at,
            duration: self.operation_duration,
            failure,
        };
        self.operations.push(op.clone());
        op
    }

    /// [`State::push_operation`] for an operation that creates its branch or compute (see
    /// [`State::mark_created`]).
    pub fn push_create_operation(
        &mut self,
        project_id: &str,
        branch_id: Option<&str>,
        endpoint_id: Option<&str>,
        action: &'static str,
    ) -> Operation {
        let op = self.push_operation(project_id, branch_id, endpoint_id, action);
        self.mark_created(&op);
        op
    }

    /// Marks what a create operation creates as `init` until the operation finishes: the
    /// branch of `create_timeline`/`create_branch`, the compute of `create_compute` or of the
    /// `start_compute` that creates it (pending `active`). Called by the routes that create.
    pub fn mark_created(&mut self, op: &Operation) {
        if op.duration <= TimeDelta::zero() {
            return;
        }
        let done = op.created_at + op.duration;
        match (op.action, &op.branch_id, &op.endpoint_id) {
            ("create_timeline" | "create_branch", Some(b), None) => {
                if let Some(b) = self.branches.get_mut(b) {
                    b.ready_at = Some(done);
                }
            }
            ("create_compute" | "start_compute", _, Some(e)) => {
                if let Some(e) = self.endpoints.get_mut(e) {
                    e.init_until = Some(done);
                    e.pending = Some((EndpointState::Active, done));
                }
            }
            _ => {}
        }
    }

    // ----- identity and scope -----------------------------------------------------------------

    /// Finds the (unrevoked) key with this bearer secret and notes its use.
    pub fn authenticate(&mut self, secret: &str) -> Option<Principal> {
        let now = self.now();
        let key = self
            .api_keys
            .iter_mut()
            .find(|k| !k.revoked && k.secret == secret)?;
        key.last_used_at = Some(now);
        Some(Principal {
            key_id: key.id,
            scope: key.scope.clone(),
            user_id: key.created_by.clone(),
        })
    }

    /// Adds an API key and returns it (with its secret).
    pub fn add_api_key(&mut self, name: &str, scope: KeyScope, secret: Option<String>) -> ApiKey {
        let secret = secret.unwrap_or_else(|| ids::api_key_secret(&mut self.rng));
        let created_by = match &scope {
            KeyScope::Personal { user_id } => user_id.clone(),
            _ => self.primary_user_id.clone(),
        };
        let key = ApiKey {
            id: self.next_key_id,
            name: name.to_string(),
            secret,
            scope,
            created_at: self.now(),
            created_by,
            last_used_at: None,
            revoked: false,
        };
        self.next_key_id += 1;
        self.api_keys.push(key.clone());
        key
    }

    /// Whether the caller may see this project.
    pub fn can_see_project(&self, who: &Principal, project: &Project) -> bool {
        match &who.scope {
            KeyScope::Personal { user_id } => {
                self.owns_project(user_id, project) || project.shared_with.contains(user_id)
            }
            KeyScope::Org { org_id } => project.org_id.as_deref() == Some(org_id.as_str()),
            KeyScope::Project { project_id, .. } => project_id == &project.id,
        }
    }

    /// The plan a project is billed on: its organization's, else the owner's (`scale`).
    pub fn project_plan(&self, project: &Project) -> &str {
        project
            .org_id
            .as_ref()
            .and_then(|o| self.orgs.get(o))
            .map(|o| o.plan.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("scale")
    }

    /// How many manual snapshots the project may hold on its plan.
    pub fn manual_snapshot_limit(&self, project: &Project) -> usize {
        if self.project_plan(project).starts_with("free") {
            MANUAL_SNAPSHOT_LIMIT_FREE
        } else {
            MANUAL_SNAPSHOT_LIMIT_PAID
        }
    }

    /// Whether the user owns the project: personally, or as a member of its organization.
    pub fn owns_project(&self, user_id: &str, project: &Project) -> bool {
        match &project.org_id {
            None => project.owner_id == user_id,
            Some(org) => self
                .orgs
                .get(org)
                .is_some_and(|o| o.members.iter().any(|m| m == user_id)),
        }
    }

    /// Whether the project is visible to the caller only because it was shared with them
    /// (what `GET /projects/shared` lists and `GET /projects` leaves out).
    pub fn is_shared_with(&self, who: &Principal, project: &Project) -> bool {
        match &who.scope {
            KeyScope::Personal { user_id } => {
                project.shared_with.contains(user_id) && !self.owns_project(user_id, project)
            }
            _ => false,
        }
    }

    /// Organizations the caller can see.
    pub fn visible_orgs(&self, who: &Principal) -> Vec<&Org> {
        self.orgs
            .values()
            .filter(|o| match &who.scope {
                KeyScope::Personal { user_id } => o.members.iter().any(|m| m == user_id),
                KeyScope::Org { org_id } => &o.id == org_id,
                KeyScope::Project { org_id, .. } => org_id.as_deref() == Some(o.id.as_str()),
            })
            .collect()
    }

    /// The project, or 404 when unknown or outside the caller's scope.
    pub fn project_for(&self, who: &Principal, project_id: &str) -> Result<&Project, ApiError> {
        self.projects
            .get(project_id)
            .filter(|p| self.can_see_project(who, p))
            .ok_or_else(|| ApiError::not_found(format!("project {project_id} not found")))
    }

    /// The branch of a visible project, or 404.
    pub fn branch_for(
        &self,
        who: &Principal,
        project_id: &str,
        branch_id: &str,
    ) -> Result<&Branch, ApiError> {
        self.project_for(who, project_id)?;
        self.branches
            .get(branch_id)
            .filter(|b| b.project_id == project_id)
            .ok_or_else(|| ApiError::not_found(format!("branch {branch_id} not found")))
    }

    /// The endpoint of a visible project, or 404.
    pub fn endpoint_for(
        &self,
        who: &Principal,
        project_id: &str,
        endpoint_id: &str,
    ) -> Result<&Endpoint, ApiError> {
        self.project_for(who, project_id)?;
        self.endpoints
            .get(endpoint_id)
            .filter(|e| e.project_id == project_id)
            .ok_or_else(|| ApiError::not_found(format!("endpoint {endpoint_id} not found")))
    }

    /// The snapshot of a visible project, or 404.
    pub fn snapshot_for(
        &self,
        who: &Principal,
        project_id: &str,
        snapshot_id: &str,
    ) -> Result<&Snapshot, ApiError> {
        self.project_for(who, project_id)?;
        self.snapshots
            .get(snapshot_id)
            .filter(|s| s.project_id == project_id)
            .ok_or_else(|| ApiError::not_found(format!("snapshot {snapshot_id} not found")))
    }

    // ----- structure helpers ------------------------------------------------------------------

    pub fn project_branches(&self, project_id: &str) -> Vec<&Branch> {
        self.branches
            .values()
            .filter(|b| b.project_id == project_id)
            .collect()
    }

    pub fn project_endpoints(&self, project_id: &str) -> Vec<&Endpoint> {
        self.endpoints
            .values()
            .filter(|e| e.project_id == project_id)
            .collect()
    }

    pub fn branch_endpoints(&self, branch_id: &str) -> Vec<&Endpoint> {
        self.endpoints
            .values()
            .filter(|e| e.branch_id == branch_id)
            .collect()
    }

    pub fn has_children(&self, branch_id: &str) -> bool {
        self.branches
            .values()
            .any(|b| b.parent_id.as_deref() == Some(branch_id))
    }

    pub fn default_branch(&self, project_id: &str) -> Option<&Branch> {
        self.branches
            .values()
            .find(|b| b.project_id == project_id && b.default)
    }

    /// Removes a branch, its computes (closing their activity) and its backup schedule.
    pub fn remove_branch(&mut self, branch_id: &str, at: DateTime<Utc>, method: &'static str) {
        let eps: Vec<Endpoint> = self
            .branch_endpoints(branch_id)
            .into_iter()
            .cloned()
            .collect();
        for ep in &eps {
            self.remove_endpoint(&ep.id, at);
        }
        self.backup_schedules.remove(branch_id);
        if let Some(branch) = self.branches.remove(branch_id) {
            self.deleted_branches.push(DeletedBranch {
                branch,
                deleted_at: at,
                deletion_method: method,
                hard: false,
                endpoints: eps,
            });
        }
    }

    /// Removes a compute, closing its current active interval.
    pub fn remove_endpoint(&mut self, endpoint_id: &str, at: DateTime<Utc>) {
        self.suspend_endpoint_at(endpoint_id, at);
        self.endpoints.remove(endpoint_id);
    }

    /// Removes a project and everything in it; it stays recoverable for
    /// [`PROJECT_RECOVERY_WINDOW`] (see [`State::recover_project`]).
    pub fn remove_project(&mut self, project_id: &str, at: DateTime<Utc>) -> Option<Project> {
        let branches: Vec<Branch> = self
            .project_branches(project_id)
            .into_iter()
            .cloned()
            .collect();
        let endpoints: Vec<Endpoint> = self
            .project_endpoints(project_id)
            .into_iter()
            .cloned()
            .collect();
        for b in &branches {
            self.remove_branch(&b.id, at, "user");
        }
        let snapshots: Vec<Snapshot> = self
            .snapshots
            .values()
            .filter(|s| s.project_id == project_id)
            .cloned()
            .collect();
        self.snapshots.retain(|_, s| s.project_id != project_id);
        self.api_keys.retain(|k| match &k.scope {
            KeyScope::Project { project_id: p, .. } => p != project_id,
            _ => true,
        });
        let project = self.projects.remove(project_id)?;
        self.deleted_projects.push(DeletedProject {
            project: project.clone(),
            deleted_at: at,
            branches,
            endpoints,
            snapshots,
        });
        Some(project)
    }

    /// Brings back a soft-deleted branch in its recovery window with its computes (idle) and
    /// without its TTL (Neon: "TTL branches become non-TTL branches after recovery").
    pub fn recover_branch(
        &mut self,
        project_id: &str,
        branch_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(Branch, Vec<Endpoint>), ApiError> {
        let i = self
            .deleted_branches
            .iter()
            .position(|d| {
                d.branch.id == branch_id
                    && d.branch.project_id == project_id
                    && d.is_recoverable(at)
            })
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "branch {branch_id} not found among recoverable branches"
                ))
            })?;
        let d = &self.deleted_branches[i];
        if let Some(p) = &d.branch.parent_id {
            if !self.branches.contains_key(p) {
                return Err(ApiError::bad_request(format!(
                    "the parent branch {p} of {branch_id} no longer exists; recover it first"
                )));
            }
        }
        if self
            .project_branches(project_id)
            .iter()
            .any(|b| b.name == d.branch.name)
        {
            return Err(ApiError::conflict(format!(
                "a branch named {:?} exists again; rename it first",
                d.branch.name
            )));
        }
        let d = self.deleted_branches.remove(i);
        let mut branch = d.branch;
        branch.expires_at = None;
        branch.updated_at = at;
        self.branches.insert(branch.id.clone(), branch.clone());
        let mut eps = Vec::new();
        for mut e in d.endpoints {
            e.current_state = EndpointState::Idle;
            e.activity = Activity::Idle;
            e.updated_at = at;
            self.endpoints.insert(e.id.clone(), e.clone());
            eps.push(e);
        }
        Ok((branch, eps))
    }

    /// Brings back a deleted project in its recovery window: its branches, computes (idle) and
    /// snapshots. `None` when there is no such recoverable project.
    pub fn recover_project(&mut self, project_id: &str, at: DateTime<Utc>) -> Option<Project> {
        let i = self
            .deleted_projects
            .iter()
            .position(|d| d.project.id == project_id && d.recoverable_until() > at)?;
        let d = self.deleted_projects.remove(i);
        let ids: Vec<&str> = d.branches.iter().map(|b| b.id.as_str()).collect();
        self.deleted_branches
            .retain(|x| !ids.contains(&x.branch.id.as_str()));
        for b in d.branches {
            self.branches.insert(b.id.clone(), b);
        }
        for mut e in d.endpoints {
            e.current_state = EndpointState::Idle;
            e.activity = Activity::Idle;
            e.updated_at = at;
            self.endpoints.insert(e.id.clone(), e);
        }
        for s in d.snapshots {
            self.snapshots.insert(s.id.clone(), s);
        }
        let mut project = d.project;
        project.updated_at = at;
        self.projects.insert(project.id.clone(), project.clone());
        Some(project)
    }

    // ----- creation helpers (used by routes, seeding and tests) -------------------------------

    /// Adds a project with a default `main` branch (no compute) created at `created_at`.
    pub fn insert_project(
        &mut self,
        name: &str,
        org_id: Option<&str>,
        created_at: DateTime<Utc>,
    ) -> (Project, Branch) {
        let id = ids::project_id(&mut self.rng);
        let project = Project {
            id: id.clone(),
            name: name.to_string(),
            region_id: DEFAULT_REGION.to_string(),
            pg_version: 17,
            org_id: org_id.map(str::to_string),
            owner_id: self.primary_user_id.clone(),
            created_at,
            updated_at: created_at,
            default_suspend_timeout_seconds: 0,
            history_retention_seconds: 86_400,
            shared_with: Vec::new(),
        };
        self.projects.insert(id.clone(), project.clone());
        let branch = self.insert_branch(&id, "main", None, created_at);
        if let Some(b) = self.branches.get_mut(&branch.id) {
            b.default = true;
        }
        let branch = self.branches[&branch.id].clone();
        (project, branch)
    }

    /// Adds a user (not the primary one) and returns its id.
    pub fn insert_user(&mut self, login: &str) -> String {
        let id = ids::uuid(&mut self.rng);
        let now = self.now();
        self.users.insert(
            id.clone(),
            User {
                id: id.clone(),
                email: format!("{login}@example.com"),
                login: login.to_string(),
                name: login.to_string(),
                last_name: String::new(),
                created_at: now,
            },
        );
        id
    }

    /// Adds a branch to a project (no checks: callers validate).
    pub fn insert_branch(
        &mut self,
        project_id: &str,
        name: &str,
        parent_id: Option<&str>,
        created_at: DateTime<Utc>,
    ) -> Branch {
        let id = ids::branch_id(&mut self.rng);
        let parent_size = parent_id
            .and_then(|p| self.branches.get(p))
            .map(|p| p.logical_size);
        let logical_size = parent_size
            .unwrap_or_else(|| 30 * 1024 * 1024 + self.rng.gen_range(0..8 * 1024 * 1024));
        let branch = Branch {
            id: id.clone(),
            project_id: project_id.to_string(),
            parent_id: parent_id.map(str::to_string),
            parent_timestamp: parent_id.map(|_| created_at),
            name: name.to_string(),
            default: false,
            protected: false,
            expires_at: None,
            created_at,
            updated_at: created_at,
            logical_size,
            ready_at: None,
            last_reset_at: None,
        };
        self.branches.insert(id.clone(), branch.clone());
        match parent_id {
            Some(p) => {
                let roles = self.roles.get(p).cloned().unwrap_or_default();
                let dbs = self.databases.get(p).cloned().unwrap_or_default();
                self.roles.insert(id.clone(), roles);
                let dbs = dbs
                    .into_iter()
                    .map(|d| {
                        let id = self.next_database_id;
                        self.next_database_id += 1;
                        Database { id, ..d }
                    })
                    .collect();
                self.databases.insert(id, dbs);
            }
            None => {
                self.add_role(&id, DEFAULT_ROLE, true, created_at);
                self.add_database(&id, DEFAULT_DATABASE, DEFAULT_ROLE, created_at);
            }
        }
        branch
    }

    /// Adds a role (with a generated password unless `login` is false) to a branch.
    pub fn add_role(
        &mut self,
        branch_id: &str,
        name: &str,
        login: bool,
        at: DateTime<Utc>,
    ) -> Role {
        let role = Role {
            name: name.to_string(),
            password: login.then(|| ids::role_password(&mut self.password_rng)),
            protected: false,
            created_at: at,
            updated_at: at,
        };
        self.roles
            .entry(branch_id.to_string())
            .or_default()
            .push(role.clone());
        role
    }

    /// A new password for a role of a branch (`None` when there is no such role).
    pub fn reset_role_password(
        &mut self,
        branch_id: &str,
        name: &str,
        at: DateTime<Utc>,
    ) -> Option<Role> {
        let password = ids::role_password(&mut self.password_rng);
        let role = self
            .roles
            .get_mut(branch_id)?
            .iter_mut()
            .find(|r| r.name == name)?;
        role.password = Some(password);
        role.updated_at = at;
        Some(role.clone())
    }

    /// Adds a database owned by `owner` to a branch.
    pub fn add_database(
        &mut self,
        branch_id: &str,
        name: &str,
        owner: &str,
        at: DateTime<Utc>,
    ) -> Database {
        let db = Database {
            id: self.next_database_id,
            name: name.to_string(),
            owner_name: owner.to_string(),
            created_at: at,
            updated_at: at,
            schema: Vec::new(),
        };
        self.next_database_id += 1;
        self.databases
            .entry(branch_id.to_string())
            .or_default()
            .push(db.clone());
        db
    }

    pub fn branch_roles(&self, branch_id: &str) -> &[Role] {
        self.roles.get(branch_id).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn branch_databases(&self, branch_id: &str) -> &[Database] {
        self.databases
            .get(branch_id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Adds a compute to a branch, idle, with the project's default suspend timeout.
    pub fn insert_endpoint(
        &mut self,
        branch_id: &str,
        kind: EndpointType,
        created_at: DateTime<Utc>,
    ) -> Option<Endpoint> {
        let branch = self.branches.get(branch_id)?.clone();
        let project = self.projects.get(&branch.project_id)?.clone();
        let id = ids::endpoint_id(&mut self.rng);
        let ep = Endpoint {
            id: id.clone(),
            project_id: project.id.clone(),
            branch_id: branch.id.clone(),
            name: None,
            kind,
            region_id: project.region_id.clone(),
            disabled: false,
            suspend_timeout_seconds: project.default_suspend_timeout_seconds,
            autoscaling_limit_min_cu: 0.25,
            autoscaling_limit_max_cu: 2.0,
            created_at,
            updated_at: created_at,
            current_state: EndpointState::Idle,
            last_active: None,
            started_at: None,
            suspended_at: None,
            activity: Activity::Idle,
            init_until: None,
            pending: None,
        };
        self.endpoints.insert(id, ep.clone());
        Some(ep)
    }

    /// Adds a snapshot of a branch.
    pub fn insert_snapshot(
        &mut self,
        branch_id: &str,
        name: Option<&str>,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        manual: bool,
    ) -> Option<Snapshot> {
        let branch = self.branches.get(branch_id)?.clone();
        let id = ids::snapshot_id(&mut self.rng);
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-{}", branch.name, created_at.format("%Y%m%d%H%M%S")));
        let snap = Snapshot {
            id: id.clone(),
            project_id: branch.project_id.clone(),
            name,
            source_branch_id: branch.id.clone(),
            lsn: Some(ids::lsn(&mut self.rng)),
            timestamp: Some(created_at),
            created_at,
            expires_at,
            manual,
            full_size: branch.logical_size,
        };
        self.snapshots.insert(id, snap.clone());
        Some(snap)
    }

    // ----- consumption facts (deterministic, derived from the activity model) -----------------

    /// Active intervals (closed and current) of computes matching `filter`, clipped to
    /// `[from, to)`, as `(seconds, cu)` pairs.
    fn active_pieces(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        filter: impl Fn(&str, &str, &str) -> bool,
    ) -> Vec<(i64, f64)> {
        let now = self.now();
        let clip = |a: DateTime<Utc>, b: DateTime<Utc>| -> i64 {
            let start = a.max(from);
            let end = b.min(to).min(now);
            (end - start).num_seconds().max(0)
        };
        let mut out = Vec::new();
        for r in &self.activity_log {
            if filter(&r.project_id, &r.branch_id, &r.endpoint_id) {
                out.push((clip(r.from, r.to), r.cu));
            }
        }
        for ep in self.endpoints.values() {
            if ep.current_state == EndpointState::Active
                && filter(&ep.project_id, &ep.branch_id, &ep.id)
            {
                let start = ep.started_at.unwrap_or(ep.created_at);
                out.push((clip(start, now), ep.billed_cu()));
            }
        }
        out
    }

    /// Seconds computes of a project were active within `[from, to)`.
    pub fn project_active_seconds(
        &self,
        project_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.active_pieces(from, to, |p, _, _| p == project_id)
            .iter()
            .map(|(s, _)| s)
            .sum()
    }

    /// Seconds computes of a branch were active within `[from, to)`.
    pub fn branch_active_seconds(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.active_pieces(from, to, |_, b, _| b == branch_id)
            .iter()
            .map(|(s, _)| s)
            .sum()
    }

    /// Seconds one compute was active within `[from, to)`.
    pub fn endpoint_active_seconds(
        &self,
        endpoint_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.active_pieces(from, to, |_, _, e| e == endpoint_id)
            .iter()
            .map(|(s, _)| s)
            .sum()
    }

    /// CU-seconds (active seconds times billed compute units) of a project within `[from, to)`.
    pub fn project_compute_seconds(
        &self,
        project_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.active_pieces(from, to, |p, _, _| p == project_id)
            .iter()
            .map(|(s, cu)| (*s as f64 * cu).round() as i64)
            .sum()
    }

    /// CU-seconds of a branch within `[from, to)`.
    pub fn branch_compute_seconds(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.active_pieces(from, to, |_, b, _| b == branch_id)
            .iter()
            .map(|(s, cu)| (*s as f64 * cu).round() as i64)
            .sum()
    }

    /// Bytes written to a branch within `[from, to)`: its initial size when it was created in
    /// the window (root branches only; children share their parent's data), plus
    /// [`WRITTEN_BYTES_PER_ACTIVE_SECOND`] per active second.
    pub fn branch_written_bytes(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        let initial = self
            .any_branch(branch_id)
            .filter(|b| b.parent_id.is_none() && b.created_at >= from && b.created_at < to)
            .map(|b| b.logical_size)
            .unwrap_or(0);
        initial + self.branch_active_seconds(branch_id, from, to) * WRITTEN_BYTES_PER_ACTIVE_SECOND
    }

    /// Bytes transferred out of a branch's computes within `[from, to)`.
    pub fn branch_transfer_bytes(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.branch_active_seconds(branch_id, from, to) * TRANSFER_BYTES_PER_ACTIVE_SECOND
    }

    /// Byte-hours of storage a branch held within `[from, to)` (its logical size over the hours
    /// it existed in the window; fractional hours count pro rata).
    pub fn branch_storage_byte_hours(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        let (branch, deleted_at) = match self.branches.get(branch_id) {
            Some(b) => (b, None),
            None => match self
                .deleted_branches
                .iter()
                .find(|d| d.branch.id == branch_id)
            {
                Some(d) => (&d.branch, Some(d.deleted_at)),
                None => return 0,
            },
        };
        let start = branch.created_at.max(from);
        let end = deleted_at
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .min(to)
            .min(self.now());
        let secs = (end - start).num_seconds().max(0);
        ((branch.logical_size as i128 * secs as i128) / 3600) as i64
    }

    /// A live or deleted branch by id (consumption covers deleted branches too).
    pub fn any_branch(&self, branch_id: &str) -> Option<&Branch> {
        self.branches.get(branch_id).or_else(|| {
            self.deleted_branches
                .iter()
                .find(|d| d.branch.id == branch_id)
                .map(|d| &d.branch)
        })
    }

    /// Ids of every branch (live or deleted) of a project that existed at some point in `[from, to)`.
    pub fn project_branch_ids_between(
        &self,
        project_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<String> {
        let mut ids: Vec<String> = self
            .branches
            .values()
            .filter(|b| b.project_id == project_id && b.created_at < to)
            .map(|b| b.id.clone())
            .collect();
        ids.extend(
            self.deleted_branches
                .iter()
                .filter(|d| {
                    d.branch.project_id == project_id
                        && d.branch.created_at < to
                        && d.deleted_at > from
                })
                .map(|d| d.branch.id.clone()),
        );
        ids.sort();
        ids.dedup();
        ids
    }

    /// Sum of the logical sizes of a project's live branches (its current storage).
    pub fn project_logical_size(&self, project_id: &str) -> i64 {
        self.project_branches(project_id)
            .iter()
            .map(|b| b.logical_size)
            .sum()
    }
}
