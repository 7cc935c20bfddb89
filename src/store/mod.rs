//! The run store: the history of runs, the audit ledger of actions, per-job state and
//! consumption samples.
//!
//! The contract is the [`Store`] trait, implemented once ([`sql::SqlStore`]) for SQLite (the
//! embedded default) and PostgreSQL (several replicas sharing one store), with what differs
//! between the engines in [`dialect`]. The trait uses nothing engine-specific: a run is
//! *claimed* by inserting a row whose `(job, scheduled_for)` is unique, and whoever's insert
//! wins runs it; job state is written by compare-and-set on its version.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod dialect;
pub mod replica;
pub mod sql;

pub use replica::ReplicaId;

/// The SQLite store.
pub type SqliteStore = sql::SqlStore<sqlx::Sqlite>;
/// The PostgreSQL store.
pub type PgStore = sql::SqlStore<sqlx::Postgres>;

/// Opens the store named by `url`, applies the migrations and returns it behind the trait.
///
/// `sqlite:` URLs (`sqlite:///var/lib/neon-steward/state.db`, `sqlite:state.db`,
/// `sqlite::memory:`) open the embedded SQLite store, creating the file if it is missing.
/// `postgres://`/`postgresql://` URLs open the PostgreSQL store (the database must exist).
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, StoreOptions::default()).await
}

/// How this process holds the runs it claims.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Who this process is, in the `runs.owner` column, logs and `/api/v1`.
    pub replica: ReplicaId,
    /// How long a claim holds a run without being renewed (`store.lease`).
    pub lease: std::time::Duration,
}

/// The default `store.lease`.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);
/// The default `store.heartbeat`.
pub const DEFAULT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// How a run keeps its lease: renewed every `heartbeat`; a run whose renewals have failed for
/// `lease` stops, since another replica may take it over (`store.heartbeat`, `store.lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub heartbeat: std::time::Duration,
    pub lease: std::time::Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            heartbeat: DEFAULT_HEARTBEAT,
            lease: DEFAULT_LEASE,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            replica: ReplicaId::of_this_process(),
            lease: DEFAULT_LEASE,
        }
    }
}

/// [`open`] as a given replica with a given lease.
pub async fn open_with(url: &str, opts: StoreOptions) -> StoreResult<Arc<dyn Store>> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "sqlite" => {
            // One process at a time from the first connection to the last migration (see
            // `dialect::sqlite_lock_path`).
            // Without its directory the database cannot be opened either: that error says so.
            let _lock = match dialect::sqlite_lock_path(url) {
                Some(path)
                    if path
                        .parent()
                        .is_none_or(|d| d.as_os_str().is_empty() || d.is_dir()) =>
                {
                    Some(sql::lock_file(path).await?)
                }
                _ => None,
            };
            let pool = dialect::open_sqlite(url).await?;
            Ok(Arc::new(SqliteStore::new(pool, opts).await?))
        }
        "postgres" | "postgresql" => {
            let pool = dialect::open_postgres(url).await?;
            Ok(Arc::new(PgStore::new(pool, opts).await?))
        }
        _ => Err(StoreError::Unsupported(format!(
            "unknown store URL scheme {scheme:?}: expected sqlite: (for example \
             sqlite:///var/lib/neon-steward/state.db) or postgres:"
        ))),
    }
}

/// Opens an existing store for reading only (`history`): no migration, no file created,
/// and the connection itself read-only. A store that does not exist yet or has no tables is
/// [`StoreError::NotInitialised`], so a read-only command never writes to whatever database
/// it is pointed at.
pub async fn open_read_only(url: &str) -> StoreResult<Arc<dyn Store>> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Arc::new(SqliteStore::existing(
            dialect::open_sqlite_read_only(url).await?,
            StoreOptions::default(),
        ))),
        "postgres" | "postgresql" => Ok(Arc::new(PgStore::existing(
            dialect::open_postgres_read_only(url).await?,
            StoreOptions::default(),
        ))),
        _ => open(url).await,
    }
}

/// The store URL as it may be shown (logs, errors, `Debug`, the demo's output): a password
/// in the user info (`postgres://user:secret@host/db`) or in a `password=` query parameter
/// is replaced by `[redacted]`; everything else is kept so the operator sees which database
/// is meant.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "[redacted]";
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{user}:{HIDDEN}@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_string(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={HIDDEN}"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

// Time encoding shared by every backend: an instant is an integer of milliseconds since the
// Unix epoch, UTC. It orders and indexes alike everywhere and has no zone to get wrong.

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64, column: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} = {ms} is not a valid instant")))
}

pub(crate) fn opt_from_ms(ms: Option<i64>, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
    ms.map(|ms| from_ms(ms, column)).transpose()
}

/// Primary key of a run.
pub type RunId = i64;
/// Primary key of an action in the audit ledger.
pub type ActionId = i64;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: cannot open {what}: {source}")]
    Open {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("store: migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: corrupt row: {0}")]
    Corrupt(String),
    /// An update named a row that does not exist.
    #[error("store: no {what} with id {id}")]
    NotFound { what: &'static str, id: i64 },
    /// The store URL names a backend this build cannot use.
    #[error("store: {0}")]
    Unsupported(String),
    /// A read-only command found no store, or one without neon-steward's tables.
    #[error("store: {0}")]
    NotInitialised(String),
    /// A write of a run that this replica no longer holds: its lease expired, or another
    /// replica took the run over. Nothing was written.
    #[error("store: run {run_id} is no longer held by this replica ({why}); nothing written")]
    Fenced { run_id: i64, why: String },
}

impl StoreError {
    /// Whether the error means "this run is not ours any more" (stop, do not retry).
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Some actions succeeded and some failed.
    Partial,
    /// The tick was not run (overlap with a running run under `forbid`, etc.).
    Skipped,
    /// The daemon stopped (crash, shutdown past the grace period) while it ran.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Partial => "partial",
            RunStatus::Skipped => "skipped",
            RunStatus::Interrupted => "interrupted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "partial" => RunStatus::Partial,
            "skipped" => RunStatus::Skipped,
            "interrupted" => RunStatus::Interrupted,
            _ => return None,
        })
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    /// A missed tick run once at start-up (`missed = "run_once"`).
    CatchUp,
    /// `once`, `plan` or `POST /api/v1/jobs/{name}/trigger`.
    Manual,
    /// `apply plan.json`: a saved plan carried out (the run's `plan_id` names it).
    Apply,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::Manual => "manual",
            Trigger::Apply => "apply",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "schedule" => Trigger::Schedule,
            "catch_up" => Trigger::CatchUp,
            "manual" => Trigger::Manual,
            "apply" => Trigger::Apply,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub job: String,
    pub kind: String,
    /// The tick this run is for. Manual runs use the time they were asked for.
    pub scheduled_for: DateTime<Utc>,
    pub trigger: Trigger,
    pub dry_run: bool,
    /// `Running` for a run that starts now, `Skipped` to record a skipped tick.
    pub status: RunStatus,
    /// For skipped ticks: why.
    pub error: Option<String>,
    /// The saved plan an `apply` run carries out (`Trigger::Apply`); `None` otherwise.
    pub plan_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ActionCounts {
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Actions a dry run would have taken.
    pub planned: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub job: String,
    pub kind: String,
    pub scheduled_for: DateTime<Utc>,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    pub dry_run: bool,
    pub error: Option<String>,
    pub counts: ActionCounts,
    /// The replica that claimed the run (`None` for runs recorded before leases existed).
    pub owner: Option<String>,
    /// Until when the owner holds the run, by the store's clock, while it is `running`.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The saved plan an `apply` run carried out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// Written before the API call; still pending means the daemon died during the call.
    Pending,
    Succeeded,
    Failed,
    /// Decided not to act (e.g. an endpoint with an operation in progress).
    Skipped,
    /// A dry run: what would have been done.
    Planned,
    /// Reconciled after the fact (the daemon died, or the answer was lost) and Neon cannot
    /// tell whether the action happened; the detail says why.
    Unknown,
}

impl ActionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Pending => "pending",
            ActionOutcome::Succeeded => "succeeded",
            ActionOutcome::Failed => "failed",
            ActionOutcome::Skipped => "skipped",
            ActionOutcome::Planned => "planned",
            ActionOutcome::Unknown => "unknown",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ActionOutcome::Pending,
            "succeeded" => ActionOutcome::Succeeded,
            "failed" => ActionOutcome::Failed,
            "skipped" => ActionOutcome::Skipped,
            "planned" => ActionOutcome::Planned,
            "unknown" => ActionOutcome::Unknown,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NewAction {
    pub run_id: RunId,
    pub job: String,
    /// `branch`, `endpoint`, `snapshot`, `project`.
    pub resource_kind: String,
    pub resource_id: String,
    pub resource_name: Option<String>,
    pub project_id: Option<String>,
    /// `delete_branch`, `set_branch_expiry`, `create_snapshot`, `delete_snapshot`,
    /// `suspend_endpoint`, `start_endpoint`, `collect_consumption`.
    pub action: String,
    /// The rule of the policy that matched (e.g. `ttl`, `idle_ttl`, `keep_daily`).
    pub rule: Option<String>,
    /// Human-readable reason (e.g. `age 9d > ttl 7d`).
    pub reason: String,
    pub dry_run: bool,
    /// `Pending` for a real action about to be attempted, `Planned` for a dry run,
    /// `Skipped` for a decision not to act.
    pub outcome: ActionOutcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    pub id: ActionId,
    pub run_id: RunId,
    pub job: String,
    pub resource_kind: String,
    pub resource_id: String,
    pub resource_name: Option<String>,
    pub project_id: Option<String>,
    pub action: String,
    pub rule: Option<String>,
    pub reason: String,
    pub dry_run: bool,
    pub outcome: ActionOutcome,
    /// Error message for failures, or extra facts for successes (e.g. `recoverable_until`).
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when the outcome was established after the fact, by checking Neon (a `pending`
    /// action left by a run that died or was taken over).
    pub reconciled_at: Option<DateTime<Utc>>,
}

/// What [`Store::claim_exclusive`] found.
// One per claim, returned and matched at once, never stored in bulk: boxing the record
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Claim {
    Claimed(RunId),
    /// A run for this `(job, scheduled_for)` exists already.
    TickTaken,
    /// Another run of the job holds a live lease (`concurrency = "forbid"`).
    Busy(RunRecord),
}

/// What [`Store::renew_lease`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lease {
    /// Still ours, now until `expires_at`; `cancel_requested`: another replica asks the run
    /// to stop (`concurrency = "replace"`).
    Held {
        expires_at: DateTime<Utc>,
        cancel_requested: bool,
    },
    /// Not ours any more (taken over, or finished); the run must stop.
    Lost { why: String },
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job: Option<String>,
    /// At most this many runs; `0` means [`DEFAULT_RUN_LIMIT`]. Capped at [`MAX_RUN_LIMIT`].
    pub limit: u32,
    /// Runs with an id below this (for paging backwards through history).
    pub before: Option<RunId>,
}

/// Page size of [`Store::list_runs`] when the filter says `limit: 0`.
pub const DEFAULT_RUN_LIMIT: u32 = 50;
/// The largest page [`Store::list_runs`] returns, whatever the filter asks.
pub const MAX_RUN_LIMIT: u32 = 1000;

impl RunFilter {
    /// The page size actually used.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_RUN_LIMIT,
            n => n.min(MAX_RUN_LIMIT),
        }
    }
}

/// A job's state record as stored: the kind's own encoding (JSON) and the version a
/// compare-and-set write must name ([`Store::put_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    pub value: String,
    pub version: i64,
}

/// One value of one consumption metric for one project and one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumptionSample {
    pub project_id: String,
    pub metric: String,
    /// `hourly`, `daily` or `monthly`.
    pub granularity: String,
    pub timeframe_start: DateTime<Utc>,
    pub timeframe_end: DateTime<Utc>,
    pub value: f64,
}

/// One value of one consumption metric for one branch and one period
/// (`/consumption_history/v2/branches`). Kept apart from the project samples, which are the
/// project's whole consumption: the two are never summed together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchConsumptionSample {
    pub project_id: String,
    pub branch_id: String,
    pub metric: String,
    /// `hourly`, `daily` or `monthly`.
    pub granularity: String,
    pub timeframe_start: DateTime<Utc>,
    pub timeframe_end: DateTime<Utc>,
    pub value: f64,
}

/// A notification to write to the outbox, with the fact it reports (see
/// [`Store::finish_run_notifying`], [`Store::write_notices`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewNotification {
    /// Unique; the Standard Webhooks `webhook-id` (`msg_...`). Writing an id twice writes
    /// it once.
    pub id: String,
    /// The `[[notify]]` sink's name.
    pub sink: String,
    /// `run_failed`, `limit_refused`, `notice`, `digest`, `budget`.
    pub event: String,
    pub job: Option<String>,
    pub run_id: Option<RunId>,
    /// The event as JSON (the webhook body's `data`; a Slack message is rendered from it).
    pub payload: String,
    /// Given up this long after it was written (by the store's clock), in milliseconds.
    pub give_up_after_ms: i64,
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    Pending,
    Delivered,
    /// Given up: not delivered within the sink's `give_up_after`.
    Failed,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Delivered => "delivered",
            NotificationStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => NotificationStatus::Pending,
            "delivered" => NotificationStatus::Delivered,
            "failed" => NotificationStatus::Failed,
            _ => return None,
        })
    }
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationRecord {
    pub id: String,
    pub sink: String,
    pub event: String,
    pub job: Option<String>,
    pub run_id: Option<RunId>,
    pub payload: String,
    pub status: NotificationStatus,
    /// Deliveries attempted (claims), including the one under way.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub give_up_at: DateTime<Utc>,
    /// The replica delivering it now, while its lease lasts.
    pub owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed (never the sink's URL).
    pub last_error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// How a claimed delivery ended ([`Store::settle_notification`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Delivered,
    /// Failed: try again this long from now (store clock), unless that is past the row's
    /// `give_up_at`, in which case it is given up (`failed`).
    Retry {
        after_ms: i64,
        error: String,
    },
}

/// A resource a job announced it will act on ([`Store::write_notices`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoticeMark {
    pub job: String,
    pub project_id: String,
    pub resource_kind: String,
    pub resource_id: String,
    pub resource_name: Option<String>,
    /// The ledger's action name (`delete_branch`, ...).
    pub action: String,
    pub rule: Option<String>,
    pub reason: String,
    pub marked_at: DateTime<Utc>,
    /// From when it may be acted on (the run's clock).
    pub due_at: DateTime<Utc>,
    pub run_id: Option<RunId>,
}

/// What names a notice mark within its job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoticeKey {
    pub project_id: String,
    pub resource_id: String,
    pub action: String,
}

impl NoticeMark {
    pub fn key(&self) -> NoticeKey {
        NoticeKey {
            project_id: self.project_id.clone(),
            resource_id: self.resource_id.clone(),
            action: self.action.clone(),
        }
    }
}

/// `neon-steward keep`: a branch left alone by every destructive action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Keep {
    /// A project id or name, as given.
    pub project: String,
    /// A branch id or name, as given.
    pub branch: String,
    /// Until when (absent: until removed).
    pub until: Option<DateTime<Utc>>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Keep {
    /// Whether the keep still holds at `now`.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|u| u > now)
    }

    /// Whether it names this branch of this project (by id or name).
    pub fn names(&self, project: (&str, &str), branch: (&str, Option<&str>)) -> bool {
        (self.project == project.0 || self.project == project.1)
            && (self.branch == branch.0 || Some(self.branch.as_str()) == branch.1)
    }
}

/// Which outbox rows [`Store::list_notifications`] returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub status: Option<NotificationStatus>,
    pub sink: Option<String>,
    /// `0` means [`DEFAULT_RUN_LIMIT`]; capped at [`MAX_RUN_LIMIT`].
    pub limit: u32,
}

fn unsupported<T>(what: &str) -> StoreResult<T> {
    Err(StoreError::Unsupported(format!(
        "this store does not keep {what}"
    )))
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies the embedded migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// The replica this store writes runs as (`runs.owner`).
    fn replica(&self) -> String {
        ReplicaId::of_this_process().to_string()
    }
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// Inserts a run, held by this replica for one lease (a `running` run). Returns `None`
    /// when a run for the same `(job, scheduled_for)` exists already: another replica (or
    /// an earlier life of this process) has claimed the tick.
    async fn claim_run(&self, run: &NewRun) -> StoreResult<Option<RunId>>;
    /// Records how a run ended. Fenced: fails with [`StoreError::Fenced`] unless the run is
    /// still `running` and this replica's (a run taken over stays as the survivor wrote it).
    async fn finish_run(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
    ) -> StoreResult<()>;
    /// [`Store::claim_run`] unless another run of the job holds a live lease, decided in the
    /// store so that it holds across replicas (`concurrency = "forbid"`). The default
    /// (stores that are no SQL database) is the plain claim.
    async fn claim_exclusive(&self, run: &NewRun) -> StoreResult<Claim> {
        Ok(match self.claim_run(run).await? {
            Some(id) => Claim::Claimed(id),
            None => Claim::TickTaken,
        })
    }
    /// Renews this replica's lease on a running run (the heartbeat).
    async fn renew_lease(&self, run: RunId) -> StoreResult<Lease> {
        let _ = run;
        Ok(Lease::Held {
            expires_at: DateTime::<Utc>::MAX_UTC,
            cancel_requested: false,
        })
    }
    /// Marks every `running` run whose lease has expired (by the store's clock) as
    /// `interrupted`, saying which replica held it and who took it over, and returns them.
    /// Runs with a live lease are never touched.
    async fn take_over_expired(&self) -> StoreResult<Vec<RunRecord>> {
        Ok(Vec::new())
    }
    /// Asks every other running run of `job` to stop (seen by its heartbeat).
    async fn request_cancel(&self, job: &str, except: RunId) -> StoreResult<u64> {
        let _ = (job, except);
        Ok(0)
    }
    /// Actions still `pending` in runs that are over (the run died or was taken over
    /// during the call): what reconciliation must resolve, oldest first, at most `limit`.
    async fn unresolved_actions(&self, limit: u32) -> StoreResult<Vec<ActionRecord>> {
        let _ = limit;
        Ok(Vec::new())
    }
    /// Resolves a `pending` action after the fact (`reconciled_at` is set). Does nothing to
    /// an action that is no longer pending.
    async fn reconcile_action(
        &self,
        id: ActionId,
        outcome: ActionOutcome,
        detail: &str,
    ) -> StoreResult<()> {
        let _ = (id, outcome, detail);
        Ok(())
    }
    async fn get_run(&self, id: RunId) -> StoreResult<Option<RunRecord>>;
    /// Newest first.
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>>;
    /// The newest run of the job triggered by its schedule (any status): the basis of the
    /// missed-run decision after a restart.
    async fn last_scheduled_run(&self, job: &str) -> StoreResult<Option<RunRecord>>;
    /// The newest run of the job that ended `succeeded`.
    async fn last_success(&self, job: &str) -> StoreResult<Option<RunRecord>>;

    /// Writes an action to the ledger *before* it is attempted. Fenced: fails with
    /// [`StoreError::Fenced`] unless this replica holds the run's live lease (so a replica
    /// that was paused past its lease never begins another call).
    async fn begin_action(&self, action: &NewAction) -> StoreResult<ActionId>;
    /// Writes several actions at once and returns their ids in the same order: for the
    /// rows that are final when written (`planned`, `skipped`), where one transaction per
    /// row made recording a large dry run cost more than planning it. The SQL backends
    /// write the batch in one transaction (all rows or none). Real actions still go through
    /// [`Store::begin_action`] one by one, each written before its call.
    ///
    /// The default writes row by row (not atomically), for stores without transactions.
    async fn begin_actions(&self, actions: &[NewAction]) -> StoreResult<Vec<ActionId>> {
        let mut ids = Vec::with_capacity(actions.len());
        for a in actions {
            ids.push(self.begin_action(a).await?);
        }
        Ok(ids)
    }
    /// Records how the action ended. Fenced: fails unless the run is still this replica's
    /// and `running` (a run taken over has its pending actions reconciled by the survivor).
    async fn finish_action(
        &self,
        id: ActionId,
        outcome: ActionOutcome,
        detail: Option<&str>,
    ) -> StoreResult<()>;
    async fn actions_for_run(&self, run: RunId) -> StoreResult<Vec<ActionRecord>>;

    /// Small per-job key/value state (the snapshots a job owns, a consumption cursor), with
    /// its version.
    async fn get_state(&self, job: &str, key: &str) -> StoreResult<Option<StateRecord>>;
    /// Writes a job's state for run `run` if it is still at `expected` (`None`: there is
    /// no record yet) and returns the new version; returns `None`, writing nothing, when
    /// another writer changed (or created) the record since it was read. Fenced: fails with
    /// [`StoreError::Fenced`] unless this replica still holds `run`'s lease.
    async fn put_state(
        &self,
        run: RunId,
        job: &str,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> StoreResult<Option<i64>>;

    /// Idempotent upsert keyed by (project, metric, granularity, timeframe_start).
    async fn upsert_consumption(&self, samples: &[ConsumptionSample]) -> StoreResult<u64>;
    /// Samples of a granularity whose timeframe starts at or after `since`, ordered by
    /// timeframe, project and metric.
    async fn list_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ConsumptionSample>>;
    /// The end of the newest stored timeframe for a granularity, to resume collection.
    async fn latest_consumption_end(&self, granularity: &str)
        -> StoreResult<Option<DateTime<Utc>>>;

    /// Idempotent upsert of per-branch samples, keyed by (project, branch, metric,
    /// granularity, timeframe_start). Stores that keep none say so (the default).
    async fn upsert_branch_consumption(
        &self,
        samples: &[BranchConsumptionSample],
    ) -> StoreResult<u64> {
        let _ = samples;
        Err(StoreError::Unsupported(
            "this store keeps no per-branch consumption".into(),
        ))
    }
    /// Per-branch samples of a granularity whose timeframe starts at or after `since`, ordered
    /// by timeframe, project, branch and metric.
    async fn list_branch_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<BranchConsumptionSample>> {
        let _ = (granularity, since);
        Err(StoreError::Unsupported(
            "this store keeps no per-branch consumption".into(),
        ))
    }
    /// The end of the newest stored per-branch timeframe for a granularity.
    async fn latest_branch_consumption_end(
        &self,
        granularity: &str,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let _ = granularity;
        Err(StoreError::Unsupported(
            "this store keeps no per-branch consumption".into(),
        ))
    }

    /// [`Store::finish_run`] and, in the same transaction, the notifications that report how
    /// the run ended (written only if the run's end is). The default (stores without
    /// transactions) finishes the run and refuses notifications.
    async fn finish_run_notifying(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
        notes: &[NewNotification],
    ) -> StoreResult<()> {
        self.finish_run(id, status, counts, error).await?;
        if notes.is_empty() {
            Ok(())
        } else {
            unsupported("an outbox")
        }
    }
    /// Claims up to `limit` pending notifications that are due (by the store's clock) and
    /// not held by a live lease, for `lease_ms`, counting an attempt on each. Two replicas
    /// never hold the same row at once.
    async fn claim_notifications(
        &self,
        limit: u32,
        lease_ms: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let _ = (limit, lease_ms);
        Ok(Vec::new())
    }
    /// Records how a claimed delivery ended and returns the row's status after it. Only the
    /// replica holding the row may settle it (`None`: it is not ours any more, nothing
    /// written).
    async fn settle_notification(
        &self,
        id: &str,
        delivery: &Delivery,
    ) -> StoreResult<Option<NotificationStatus>> {
        let _ = (id, delivery);
        unsupported("an outbox")
    }
    /// Outbox rows, newest first.
    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let _ = filter;
        Ok(Vec::new())
    }

    /// The notice marks of a job.
    async fn notice_marks(&self, job: &str) -> StoreResult<Vec<NoticeMark>> {
        let _ = job;
        Ok(Vec::new())
    }
    /// In one transaction, fenced by run `run`'s live lease: adds the marks (a mark that
    /// exists already is left as it is), removes the marks named in `dropped` for `job`,
    /// and writes the notifications announcing them.
    async fn write_notices(
        &self,
        run: RunId,
        job: &str,
        marks: &[NoticeMark],
        dropped: &[NoticeKey],
        notes: &[NewNotification],
    ) -> StoreResult<()> {
        let _ = (run, job, marks, dropped, notes);
        unsupported("notice marks")
    }

    /// Adds or replaces a keep.
    async fn put_keep(&self, keep: &Keep) -> StoreResult<()> {
        let _ = keep;
        unsupported("keeps")
    }
    /// Removes a keep; whether there was one.
    async fn remove_keep(&self, project: &str, branch: &str) -> StoreResult<bool> {
        let _ = (project, branch);
        unsupported("keeps")
    }
    /// Every keep (also those past their `until`), by project and branch.
    async fn list_keeps(&self) -> StoreResult<Vec<Keep>> {
        Ok(Vec::new())
    }

    /// Deletes what is older than the retentions (see [`PruneBefore`]), in batches of a
    /// bounded number of rows, each its own transaction.
    async fn prune(&self, before: &PruneBefore) -> StoreResult<Pruned>;
}

/// What [`Store::prune`] deletes: finished history - runs (with their actions) and outbox
/// rows delivered or given up - that ended before `history`, and consumption samples, per
/// project and per branch, whose period ended before `consumption`. Running runs and
/// pending notifications are never pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneBefore {
    pub history: DateTime<Utc>,
    pub consumption: DateTime<Utc>,
}

/// How many rows [`Store::prune`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub notifications: u64,
    pub samples: u64,
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_and_the_rest_kept() {
        for (url, shown) in [
            (
                "postgres://u:p%40ss@host:5432/db",
                "postgres://u:[redacted]@host:5432/db",
            ),
            (
                "postgresql://u:a:b@c@host/db?sslmode=require",
                "postgresql://u:[redacted]@host/db?sslmode=require",
            ),
            ("postgres://u@host/db", "postgres://u@host/db"),
            (
                "postgres:///db?user=u&Password=x&host=/run/pg",
                "postgres:///db?user=u&Password=[redacted]&host=/run/pg",
            ),
            ("sqlite:///var/lib/x.db", "sqlite:///var/lib/x.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("sqlite://./a.db?mode=rwc", "sqlite://./a.db?mode=rwc"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
