//! The policy file: what to connect to, where to keep history, and which jobs to run when.
//!
//! Loading happens in two steps. [`raw`] mirrors the TOML (with `deny_unknown_fields`
//! everywhere, so a typo is an error rather than a silently ignored key); [`load`] then
//! validates it into the domain types below, which the rest of the daemon uses. Every error
//! is a [`ConfigError`] naming the file, line and column.
//!
//! Secrets never come from the policy file: the Neon API key is read from `NEON_API_KEY`,
//! `api.api_key_file` or systemd's `$CREDENTIALS_DIRECTORY/neon-api-key`, so the file can
//! be committed and reviewed like any other code.

mod backup;
mod describe;
mod error;
pub mod hash;
mod notify;
pub mod pattern;
mod raw;
mod scalar;
mod schema;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
pub use pattern::{NamePattern, SelectorError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use backup::SnapshotMode;
pub use error::{line_col, ConfigError};
pub use notify::{NotifyEvent, NotifyKind, NotifyRoute, SigningKey, SinkConfig};
pub use schema::{json_schema, json_schema_text, SCHEMA_PATH};
pub use window::{Window, WindowRule};

use crate::schedule::Schedule;
use crate::secret::Secret;
use raw::{RawConfig, RawJob};

pub const DEFAULT_BASE_URL: &str = "https://console.neon.tech/api/v2";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";
/// File name of the API key inside systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`).
pub const CREDENTIAL_NAME: &str = "neon-api-key";
/// Longest `jitter`: a random delay of more than a day is a mistake, not a spread.
pub const MAX_JITTER: Duration = Duration::from_secs(86_400);
/// Longest run `timeout`: a run that may go on for more than a week has no timeout.
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);
/// Shortest `store.consumption_retention`: the budget guard reads the current month.
pub const MIN_CONSUMPTION_RETENTION: Duration = Duration::from_secs(35 * 86_400);
/// `store.consumption_retention` by default: over a year.
pub const DEFAULT_CONSUMPTION_RETENTION: Duration = Duration::from_secs(400 * 86_400);
/// Longest API request `timeout`.
pub use crate::store::DEFAULT_HEARTBEAT;
pub const MAX_API_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most projects a run may process in parallel (`api.concurrency`). Neon lets 40 requests
/// through at once (its burst); more parallel projects than that only wait on the limiter
/// while holding memory and connections.
pub const MAX_API_CONCURRENCY: usize = 64;
/// Most retries of one API request (`api.max_retries`); the retry budget bounds the time too.
pub const MAX_API_RETRIES: u32 = 20;
/// Longest `api.poll_max`: polling a running operation less often than once a minute only
/// delays the next mutation of its project.
pub const MAX_POLL_MAX: Duration = Duration::from_secs(60);
/// Largest policy file read, in bytes. A real policy is a few kilobytes; this refuses
/// `/dev/zero` and runaway generated files before they are read into memory.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;
/// Most jobs in one policy (the snapshot-name collision check compares every pair).
pub const MAX_JOBS: usize = 1000;
/// Metric names Neon's `/consumption_history/v2/projects` accepts.
pub const V2_METRICS: [&str; 8] = [
    "compute_unit_seconds",
    "root_branch_bytes_month",
    "child_branch_bytes_month",
    "instant_restore_bytes_month",
    "public_network_transfer_bytes",
    "private_network_transfer_bytes",
    "extra_branches_month",
    "snapshot_storage_bytes_month",
];
/// The [`V2_METRICS`] Neon's per-branch `/consumption_history/v2/branches` accepts (not
/// `extra_branches_month` and `snapshot_storage_bytes_month`, which are per project only).
pub const V2_BRANCH_METRICS: [&str; 6] = [
    "compute_unit_seconds",
    "root_branch_bytes_month",
    "child_branch_bytes_month",
    "instant_restore_bytes_month",
    "public_network_transfer_bytes",
    "private_network_transfer_bytes",
];
/// Metric names Neon's legacy `/consumption_history/projects` accepts.
pub const LEGACY_METRICS: [&str; 7] = [
    "active_time_seconds",
    "compute_time_seconds",
    "written_data_bytes",
    "synthetic_storage_size_bytes",
    "data_storage_bytes_hour",
    "logical_size_bytes",
    "logical_size_bytes_hour",
];

/// The whole validated policy.
#[derive(Debug, Clone)]
pub struct Config {
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub jobs: Vec<Arc<JobConfig>>,
    /// The notification sinks (`[[notify]]`).
    pub notify: Vec<Arc<SinkConfig>>,
    /// The file this was loaded from (reloads read it again).
    pub source: PathBuf,
    /// The hash of the normalised policy ([`hash::policy_hash`]): a saved plan is applied
    /// only under the policy it was made from.
    pub policy_hash: String,
}

impl Config {
    pub fn job(&self, name: &str) -> Option<&Arc<JobConfig>> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Things that are valid but probably not what the operator meant; `validate` prints
    /// them and `run` logs them at start-up. Each is a complete sentence.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.jobs.is_empty() {
            out.push(format!(
                "{}: the policy has no jobs (is the file empty or truncated?); the daemon would \
                 schedule nothing",
                self.source.display()
            ));
        }
        for j in &self.jobs {
            if let JobSpec::SnapshotBranches(spec) = &j.spec {
                if spec.mode == SnapshotMode::BackupSchedule
                    && j.selectors.branches.default == DefaultBranchFilter::Exclude
                {
                    out.push(format!(
                        "job `{}`: `default = false` with `mode = \"backup_schedule\"` selects \
                         only branches other than the default one, and a project's root branch \
                         is its default branch unless the default was moved; Neon's backup \
                         schedules cover root branches only, so the job likely sets none",
                        j.name
                    ));
                }
            }
        }
        if !self.http.listen.ip().is_loopback() {
            let trigger = if self.http.admin_token.is_some() {
                "the manual trigger needs the admin token"
            } else {
                "no admin token is set, so the manual trigger is off"
            };
            out.push(format!(
                "listening on {} beyond loopback: /metrics and the read-only /api/v1 history \
                 (job names, project and branch ids, run errors) are open to anyone who can \
                 reach it ({trigger}); restrict it with a firewall or network policy, or listen \
                 on 127.0.0.1",
                self.http.listen
            ));
        }
        for job in &self.jobs {
            if let JobSpec::ExpireBranches(ExpireSpec {
                pull_request: Some(f),
                ..
            }) = &job.spec
            {
                if f.token.is_none() {
                    out.push(format!(
                        "job `{}`: no {} token in {}; every branch it maps to a pull request \
                         will be kept (skipped) until there is one",
                        job.name,
                        f.kind.display(),
                        f.token_source
                    ));
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub base_url: String,
    /// `None` when no key was found; commands that talk to Neon fail with
    /// [`ApiConfig::require_key`]'s message, while `validate` and `jobs` still work.
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub rate_limit_per_minute: u32,
    pub burst: u32,
    pub max_retries: u32,
    /// Projects processed in parallel within one run.
    pub concurrency: usize,
    /// Bounds of the interval between operation polls (`poll_initial`, `poll_max`; see
    /// [`crate::neon::retry::PollPolicy`]).
    pub poll_initial: Duration,
    pub poll_max: Duration,
}

impl ApiConfig {
    /// The API key, or an error telling the operator where it may come from.
    pub fn require_key(&self, source: &Path) -> Result<&Secret, ConfigError> {
        self.api_key.as_ref().ok_or_else(|| {
            ConfigError::whole_file(
                source,
                format!(
                    "no Neon API key: set NEON_API_KEY, or `api_key_file` in [api], or provide the \
                     systemd credential `{CREDENTIAL_NAME}` (LoadCredential=)"
                ),
            )
        })
    }
}

#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://path` or `postgres://...`. It may carry a PostgreSQL password: show it only
    /// through [`crate::store::redact_url`] (as `Debug` does).
    pub url: String,
    /// Finished runs (with their actions) and finished notifications older than this are
    /// pruned.
    pub history_retention: Duration,
    /// Consumption samples whose period ended longer ago than this are pruned.
    pub consumption_retention: Duration,
    /// How long a claim holds a run without renewal (`store.lease`).
    pub lease: Duration,
    /// How often a run renews its lease and replicas look for expired ones.
    pub heartbeat: Duration,
}

impl StoreConfig {
    /// How runs keep their lease.
    pub fn lease_timing(&self) -> crate::store::LeaseTiming {
        crate::store::LeaseTiming {
            heartbeat: self.heartbeat,
            lease: self.lease,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &crate::store::redact_url(&self.url))
            .field("history_retention", &self.history_retention)
            .field("consumption_retention", &self.consumption_retention)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Enables `POST /api/v1/jobs/{name}/trigger` (bearer token) when set.
    pub admin_token: Option<Secret>,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Create a snapshot branch of each selected branch, and prune old snapshots by
    /// `[jobs.retention]`.
    SnapshotBranches,
    /// Delete (or set Neon's `expires_at` on) branches older than `ttl` or idle longer than
    /// `idle_ttl`.
    ExpireBranches,
    /// Suspend compute endpoints idle longer than `idle_for` or inside `windows`.
    SuspendComputes,
    /// Collect consumption metrics per project into the store and Prometheus gauges.
    CollectConsumption,
    /// Compare the month-to-date spend (priced consumption) with a monthly budget, export it,
    /// and take the thresholds' actions (notice, reversible cost actions).
    EnforceBudget,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SnapshotBranches => "snapshot_branches",
            JobKind::ExpireBranches => "expire_branches",
            JobKind::SuspendComputes => "suspend_computes",
            JobKind::CollectConsumption => "collect_consumption",
            JobKind::EnforceBudget => "enforce_budget",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do when a tick comes while the previous run of the same job still runs
/// (the semantics of Kubernetes CronJob's `concurrencyPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyPolicy {
    /// Skip the new tick (recorded as a skipped run and counted).
    #[default]
    Forbid,
    /// Start the new run alongside.
    Allow,
    /// Cancel the running one, then start the new run.
    Replace,
}

/// What to do at start-up about ticks missed while the daemon was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissedPolicy {
    /// Do not run missed ticks; wait for the next one.
    #[default]
    Skip,
    /// Run once for the newest missed tick, if within `starting_deadline`.
    RunOnce,
}

/// The type of a compute endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointType {
    /// The primary read-write compute of a branch.
    ReadWrite,
    /// A read replica.
    ReadOnly,
}

impl EndpointType {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::ReadWrite => "read_write",
            EndpointType::ReadOnly => "read_only",
        }
    }
}

/// How an expired branch goes away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpireMode {
    /// Delete the branch.
    #[default]
    Delete,
    /// Set Neon's native `expires_at` on the branch and let Neon delete it.
    SetExpiresAt,
}

/// `mode` as the policy file gives it; each kind takes its own values (`expire_branches`:
/// `delete`, `set_expires_at`; `snapshot_branches`: `snapshots`, `backup_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    /// `expire_branches` (default): delete the branch.
    Delete,
    /// `expire_branches`: set Neon's native `expires_at` on the branch and let Neon delete it.
    SetExpiresAt,
    /// `snapshot_branches` (default): the daemon makes snapshots and prunes them.
    Snapshots,
    /// `snapshot_branches`: the daemon sets Neon's backup schedule of each selected root
    /// branch from `[[jobs.backup_schedule]]`, and Neon takes the snapshots.
    BackupSchedule,
}

impl JobMode {
    pub fn as_str(self) -> &'static str {
        match self {
            JobMode::Delete => "delete",
            JobMode::SetExpiresAt => "set_expires_at",
            JobMode::Snapshots => "snapshots",
            JobMode::BackupSchedule => "backup_schedule",
        }
    }
}

/// `expire_branches`' `pull_request` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestCondition {
    /// The branch's pull request is merged or closed.
    Closed,
}

/// Time bucket of consumption samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One sample per project, metric and hour.
    #[default]
    Hourly,
    /// One sample per project, metric and day.
    Daily,
    /// One sample per project, metric and month.
    Monthly,
}

/// Which of Neon's consumption endpoints a `collect_consumption` job polls.
///
/// Chosen explicitly, not guessed from `org_id`: the two differ by the account's *plan*, not
/// by whether an org is named. `/consumption_history/v2/projects` (usage-based plans) requires
/// `org_id` and takes the v2 metric names; the legacy `/consumption_history/projects` (older
/// Scale/Business/Enterprise plans) takes `org_id` optionally and has its own metric names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsumptionEndpoint {
    /// `/consumption_history/v2/projects`, for usage-based plans; needs `org_id`.
    #[default]
    V2,
    /// `/consumption_history/projects`, for older Scale, Business and Enterprise plans.
    Legacy,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hourly => "hourly",
            Granularity::Daily => "daily",
            Granularity::Monthly => "monthly",
        }
    }
}

/// One job of the policy. Shared as `Arc<JobConfig>`: a running run keeps the version it
/// started with even if a reload replaces the job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub kind: JobKind,
    pub schedule: Schedule,
    /// The zone cron expressions are evaluated in (and `{date}`/`{time}` are rendered in).
    pub timezone: Tz,
    /// Upper bound of a random delay added to each tick, spreading load across replicas.
    pub jitter: Option<Duration>,
    /// A run still going after this is cancelled and recorded failed.
    pub timeout: Option<Duration>,
    pub concurrency: ConcurrencyPolicy,
    pub missed: MissedPolicy,
    /// With `missed = "run_once"`: how old the missed tick may be. `None`: any age.
    pub starting_deadline: Option<Duration>,
    pub dry_run: bool,
    pub enabled: bool,
    pub selectors: Selectors,
    pub limits: Limits,
    pub spec: JobSpec,
    /// `notice`: destructive actions wait this long after the resource was announced.
    pub notice: Option<Duration>,
    /// The sinks this job's events go to, and which events each gets.
    pub notify: Vec<NotifyRoute>,
}

/// Which resources a job looks at. Empty lists mean "no restriction".
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub projects: ProjectSelector,
    pub branches: BranchSelector,
    pub endpoints: EndpointSelector,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectSelector {
    pub ids: Vec<String>,
    pub org_id: Option<String>,
    pub names: GlobList,
    pub name_regex: Option<regex::Regex>,
    pub exclude_ids: Vec<String>,
    pub exclude_names: GlobList,
}

/// Whether the project's default branch is selected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefaultBranchFilter {
    /// Default and other branches alike (no `default` key).
    #[default]
    Any,
    /// Only the default branch (`default = true`).
    Only,
    /// Never the default branch (`default = false`).
    Exclude,
}

#[derive(Debug, Clone, Default)]
pub struct BranchSelector {
    pub names: GlobList,
    pub exclude: GlobList,
    /// Only branches created longer ago than this.
    pub older_than: Option<Duration>,
    /// Only branches without activity for this long.
    pub inactive_for: Option<Duration>,
    pub default: DefaultBranchFilter,
}

#[derive(Debug, Clone, Default)]
pub struct EndpointSelector {
    pub endpoint_type: Option<EndpointType>,
    /// Branch name globs the endpoint must be attached to.
    pub branches: GlobList,
    /// Endpoint ids never acted on.
    pub exclude_ids: Vec<String>,
    /// Endpoints of branches matching these globs are never acted on.
    pub exclude_branches: GlobList,
}

/// A temporary exclusion of a `suspend_computes` job (`[[jobs.exclusions]]`): what it covers
/// is left alone before `until`.
#[derive(Debug, Clone)]
pub struct Exclusion {
    pub target: ExclusionTarget,
    pub until: DateTime<Utc>,
    /// The operator's note, recorded in the ledger's reason.
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub enum ExclusionTarget {
    Endpoint(String),
    /// Endpoints attached to branches whose name matches this glob (one pattern).
    Branch(GlobList),
    Project(String),
}

impl Exclusion {
    /// Whether it covers this endpoint at `now`.
    pub fn covers(
        &self,
        now: DateTime<Utc>,
        project_id: &str,
        endpoint_id: &str,
        branch_name: &str,
    ) -> bool {
        now < self.until
            && match &self.target {
                ExclusionTarget::Endpoint(e) => e == endpoint_id,
                ExclusionTarget::Branch(g) => g.is_match(branch_name),
                ExclusionTarget::Project(p) => p == project_id,
            }
    }

    /// How it reads in a ledger reason: `exclusion of endpoint ep-1 until 2026-12-31T00:00:00+00:00 (launch)`.
    pub fn describe(&self) -> String {
        let what = match &self.target {
            ExclusionTarget::Endpoint(e) => format!("endpoint {e}"),
            ExclusionTarget::Branch(g) => format!(
                "branches {:?}",
                g.patterns.first().map(String::as_str).unwrap_or_default()
            ),
            ExclusionTarget::Project(p) => format!("project {p}"),
        };
        let note = self
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        format!(
            "exclusion of {what} until {}{note}",
            self.until.to_rfc3339()
        )
    }
}

/// Compiled shell-style globs (`preview/*`, `pr-*`), keeping the patterns for display.
#[derive(Debug, Clone, Default)]
pub struct GlobList {
    pub patterns: Vec<String>,
    compiled: Vec<NamePattern>,
}

impl GlobList {
    pub fn new(patterns: &[&str]) -> Result<GlobList, String> {
        let compiled = patterns
            .iter()
            .map(|p| {
                NamePattern::glob("", p).map_err(|e| match e {
                    SelectorError::Glob { message, .. } | SelectorError::Regex { message, .. } => {
                        format!("invalid glob `{p}`: {message}")
                    }
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(GlobList {
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            compiled,
        })
    }
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
    pub fn is_match(&self, s: &str) -> bool {
        self.compiled.iter().any(|p| p.is_match(s))
    }
    /// The compiled patterns, in the policy's order, for the jobs' selectors.
    pub fn compiled(&self) -> &[NamePattern] {
        &self.compiled
    }
}

/// Safety rails: a run that would act on more resources than this acts on none and fails.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub max_actions: Option<u32>,
    /// Percent (0-100] of the matched resources.
    pub max_actions_percent: Option<f64>,
}

/// The kind-specific part of a job.
#[derive(Debug, Clone)]
pub enum JobSpec {
    SnapshotBranches(SnapshotSpec),
    ExpireBranches(ExpireSpec),
    SuspendComputes(SuspendSpec),
    CollectConsumption(ConsumptionSpec),
    EnforceBudget(BudgetSpec),
}

#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub name_template: NameTemplate,
    /// Sets Neon's `expires_at` on each snapshot this long after creation.
    pub expires_in: Option<Duration>,
    pub retention: Retention,
    /// `snapshots` (the fields above) or `backup_schedule` (the field below).
    pub mode: SnapshotMode,
    /// `mode = "backup_schedule"`: the schedule set on each selected root branch (checked
    /// against Neon's rules, defaults filled in); empty: take back what the job set.
    pub backup_schedule: crate::neon::BackupSchedule,
}

/// `restic forget` style retention of the snapshots this job created. All `None`: keep all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
}

impl Retention {
    pub fn is_keep_all(&self) -> bool {
        *self == Retention::default()
    }
}

/// A snapshot name with placeholders `{branch}`, `{date}` (YYYY-MM-DD), `{time}` (HHMMSS),
/// `{job}`; date and time are those of the tick in the job's time zone.
///
/// `{job}`, `{date}` and `{time}` are required. `{job}` keeps the names of two policies apart
/// (ownership is recorded by snapshot id, but the name is the second check and a reader of
/// the console must be able to tell whose snapshot it is). `{date}` and `{time}` make each
/// tick's name unique: the name is also the idempotency key of a tick, so a template without
/// `{time}` on a schedule that fires more often than daily would render the same name for
/// every tick of a day, and every tick after the first would find "its" snapshot already
/// made and create nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate(String);

impl NameTemplate {
    pub const DEFAULT: &'static str = "{job}-{branch}-{date}-{time}";
    /// Placeholders every template must contain (see the type's documentation).
    pub const REQUIRED: [&'static str; 3] = ["job", "date", "time"];
    const PLACEHOLDERS: [&'static str; 4] = ["branch", "date", "time", "job"];

    pub fn parse(s: &str) -> Result<NameTemplate, String> {
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in name template `{s}`"))?;
            let name = &after[..close];
            if !Self::PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder `{{{name}}}` in name template `{s}`; expected {{branch}}, {{date}}, {{time}} or {{job}}"
                ));
            }
            rest = &after[close + 1..];
        }
        if s.trim().is_empty() {
            return Err("empty name template".into());
        }
        let missing: Vec<String> = Self::REQUIRED
            .iter()
            .filter(|p| !s.contains(&format!("{{{p}}}")))
            .map(|p| format!("{{{p}}}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "name template `{s}` lacks {}: every template needs {{job}} (so two policies' \
                 snapshots never share names) and {{date}} and {{time}} (so each tick's snapshot \
                 has its own name), e.g. \"{}\"",
                missing.join(", "),
                Self::DEFAULT
            ));
        }
        Ok(NameTemplate(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The template as a pattern over characters, with `{job}` filled in: `{branch}` is
    /// any non-empty text (Neon branch names are free-form), `{date}` and `{time}` digits.
    fn pattern(&self, job: &str) -> Vec<NameElem> {
        let mut out = Vec::new();
        let mut rest = self.0.as_str();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{job}") {
                out.extend(job.chars().map(NameElem::Char));
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{branch}") {
                out.extend([NameElem::Any, NameElem::AnyRepeated]);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{date}") {
                // YYYY-MM-DD
                out.extend("dddd-dd-dd".chars().map(|c| {
                    if c == 'd' {
                        NameElem::Digit
                    } else {
                        NameElem::Char(c)
                    }
                }));
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{time}") {
                out.extend(std::iter::repeat_n(NameElem::Digit, 6));
                rest = r;
            } else {
                let c = rest.chars().next().expect("rest is not empty");
                out.push(NameElem::Char(c));
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    /// Whether this template (of job `job`) and `other` (of job `other_job`) can render the
    /// same name for some branches and ticks; if so, one such name.
    ///
    /// Both are patterns of literal characters, digits and "any text" (`{branch}`), so the
    /// question is whether two such patterns share a string: a search over pairs of
    /// positions, advancing both by one character both allow (or skipping an "any text"
    /// repetition). The patterns are short, so this is instant.
    pub fn collides_with(
        &self,
        job: &str,
        other: &NameTemplate,
        other_job: &str,
    ) -> Option<String> {
        let a = self.pattern(job);
        let b = other.pattern(other_job);
        let (n, m) = (a.len(), b.len());
        let idx = |i: usize, j: usize| i * (m + 1) + j;
        // Predecessor of each reached state and the character read to get there.
        let mut prev: Vec<Option<(usize, Option<char>)>> = vec![None; (n + 1) * (m + 1)];
        let mut seen = vec![false; (n + 1) * (m + 1)];
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize)]);
        seen[idx(0, 0)] = true;
        while let Some((i, j)) = queue.pop_front() {
            if i == n && j == m {
                let mut chars = Vec::new();
                let mut at = idx(i, j);
                while let Some((from, c)) = prev[at] {
                    chars.extend(c);
                    at = from;
                }
                chars.reverse();
                return Some(chars.into_iter().collect());
            }
            let mut next = Vec::new();
            // Leave a repetition without reading.
            if a.get(i) == Some(&NameElem::AnyRepeated) {
                next.push((i + 1, j, None));
            }
            if b.get(j) == Some(&NameElem::AnyRepeated) {
                next.push((i, j + 1, None));
            }
            if let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
                if let Some(c) = x.common(*y) {
                    let ni = if *x == NameElem::AnyRepeated {
                        i
                    } else {
                        i + 1
                    };
                    let nj = if *y == NameElem::AnyRepeated {
                        j
                    } else {
                        j + 1
                    };
                    next.push((ni, nj, Some(c)));
                }
            }
            for (ni, nj, c) in next {
                if !seen[idx(ni, nj)] {
                    seen[idx(ni, nj)] = true;
                    prev[idx(ni, nj)] = Some((idx(i, j), c));
                    queue.push_back((ni, nj));
                }
            }
        }
        None
    }

    pub fn render<Z: TimeZone>(&self, branch: &str, job: &str, at: &DateTime<Z>) -> String
    where
        Z::Offset: std::fmt::Display,
    {
        self.0
            .replace("{branch}", branch)
            .replace("{job}", job)
            .replace("{date}", &at.format("%Y-%m-%d").to_string())
            .replace("{time}", &at.format("%H%M%S").to_string())
    }
}

/// One position of a name template seen as a pattern (see [`NameTemplate::collides_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameElem {
    Char(char),
    Digit,
    /// Exactly one character of any kind.
    Any,
    /// Any number of characters of any kind (zero or more).
    AnyRepeated,
}

impl NameElem {
    /// A character both positions accept, if there is one.
    fn common(self, other: NameElem) -> Option<char> {
        use NameElem::*;
        match (self, other) {
            (Char(a), Char(b)) => (a == b).then_some(a),
            (Char(c), Digit) | (Digit, Char(c)) => c.is_ascii_digit().then_some(c),
            (Char(c), Any | AnyRepeated) | (Any | AnyRepeated, Char(c)) => Some(c),
            (Digit, _) | (_, Digit) => Some('0'),
            _ => Some('x'),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExpireSpec {
    /// Age (since `created_at`) after which a branch expires.
    pub ttl: Option<Duration>,
    /// Inactivity after which a branch expires.
    pub idle_ttl: Option<Duration>,
    pub mode: ExpireMode,
    /// `pull_request = "closed"`: also expire a branch once its pull request has ended.
    pub pull_request: Option<crate::forge::ForgeConfig>,
}

#[derive(Debug, Clone)]
pub struct SuspendSpec {
    /// Suspend endpoints idle longer than this.
    pub idle_for: Option<Duration>,
    /// Suspend endpoints while inside any of these windows.
    pub windows: Vec<Window>,
    pub window_timezone: Tz,
    /// The job suspends nothing before this instant.
    pub exclude_until: Option<DateTime<Utc>>,
    /// Per-resource exclusions, each until its own instant (`[[jobs.exclusions]]`).
    pub exclusions: Vec<Exclusion>,
    /// Start endpoints again (that this job suspended) when their window ends.
    pub resume: bool,
}

#[derive(Debug, Clone)]
pub struct ConsumptionSpec {
    pub granularity: Granularity,
    pub metrics: Vec<String>,
    pub org_id: Option<String>,
    /// `v2` (the default; needs `org_id`) or `legacy`.
    pub endpoint: ConsumptionEndpoint,
    /// Cardinality cap of per-project gauges; the rest is summed as `other`.
    pub max_projects_exported: usize,
    /// Metric name -> price per unit, for the estimated cost gauge.
    pub prices: BTreeMap<String, f64>,
    /// Also collect per branch (`per_branch = true`): the job's metrics that
    /// `/consumption_history/v2/branches` takes; empty when per-branch collection is off.
    pub branch_metrics: Vec<String>,
}

/// An action of a budget threshold (`[[jobs.budget.thresholds]].actions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetActionKind {
    /// A log line, a metric and a ledger row, once a month per threshold.
    Notify,
    /// Suspend the active computes of non-default branches.
    SuspendComputes,
    /// Lower `autoscaling_limit_max_cu` to the threshold's `max_cu`.
    LowerMaxCu,
    /// Shorten `suspend_timeout_seconds` to the threshold's `suspend_timeout`.
    ShortenSuspendTimeout,
}

/// `enforce_budget`: a monthly budget over the job's selected projects.
#[derive(Debug, Clone)]
pub struct BudgetSpec {
    /// The `collect_consumption` job whose samples and prices give the spend.
    pub consumption_job: String,
    /// Per calendar month in `timezone`, in `currency`.
    pub limit: f64,
    pub currency: String,
    /// The zone of the calendar month.
    pub timezone: Tz,
    /// Each selected project has a budget of `limit` of its own.
    pub per_project: bool,
    /// The projection is the run rate of the last this many days.
    pub projection_days: u32,
    /// Ascending by `percent`, no two alike.
    pub thresholds: Vec<BudgetThreshold>,
    /// From the consumption job (resolved when the policy is read): the granularity of the
    /// samples read, and the price of every metric the budget counts (its `metrics`, default
    /// all of the consumption job's).
    pub granularity: Granularity,
    pub prices: BTreeMap<String, f64>,
}

/// One threshold of a budget: what to do once the month-to-date spend reaches `percent` of
/// the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetThreshold {
    pub percent: f64,
    pub notify: bool,
    pub suspend_computes: bool,
    /// `lower_max_cu`: the new `autoscaling_limit_max_cu`.
    pub max_cu: Option<f64>,
    /// `shorten_suspend_timeout`: the new `suspend_timeout_seconds`.
    pub suspend_timeout_seconds: Option<i64>,
}

/// Loads and validates the policy at `path`, with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, &|k| std::env::var(k).ok())
}

/// Like [`load`], with the environment given as a function (for tests).
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let bytes = read_capped(path)?;
    let text = decode_policy(path, bytes)?;
    parse_with_env(path, &text, env)
}

/// Reads at most [`MAX_POLICY_BYTES`] (and one byte more, to tell that there is more).
fn read_capped(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        ConfigError::whole_file(path, format!("cannot read the policy file: {e}"))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(ConfigError::whole_file(
            path,
            format!(
                "the policy file is larger than {} KiB; a policy is a few kilobytes (is this the \
                 right file?)",
                MAX_POLICY_BYTES / 1024
            ),
        ));
    }
    Ok(bytes)
}

/// The file as text, or an error at the first byte that is not UTF-8.
pub fn decode_policy(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let valid = std::str::from_utf8(&bytes[..at]).expect("valid up to here");
        let (line, col) = line_col(valid, at);
        ConfigError {
            path: path.to_path_buf(),
            position: Some((line, col)),
            message: format!(
                "the policy file is not valid UTF-8: byte 0x{:02x} at offset {at} cannot start \
                 or continue a character (save the file as UTF-8)",
                bytes[at]
            ),
        }
    })
}

/// Parses and validates policy text; `path` is used for messages and relative paths.
pub fn parse_with_env(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    if text.len() as u64 > MAX_POLICY_BYTES {
        return Err(ConfigError::whole_file(
            path,
            format!("the policy is larger than {} KiB", MAX_POLICY_BYTES / 1024),
        ));
    }
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
    if raw.jobs.len() > MAX_JOBS {
        return Err(ConfigError::whole_file(
            path,
            format!(
                "the policy has {} jobs; at most {MAX_JOBS} are allowed",
                raw.jobs.len()
            ),
        ));
    }
    Validator { path, text, env }.config(raw)
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(self.path, self.text, Some(span), msg)
    }

    fn env(&self, key: &str) -> Option<String> {
        (self.env)(key).filter(|v| !v.trim().is_empty())
    }

    /// Relative paths in the file are relative to the file's directory, not the cwd, so a
    /// policy behaves the same whatever directory the daemon starts in.
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn read_secret_file(&self, what: &str, p: &Path) -> Result<Secret, ConfigError> {
        let full = self.resolve(p);
        let value = std::fs::read_to_string(&full).map_err(|e| {
            ConfigError::whole_file(
                self.path,
                format!("cannot read {what} from {}: {e}", full.display()),
            )
        })?;
        let value = value.trim();
        if value.is_empty() {
            return Err(ConfigError::whole_file(
                self.path,
                format!("{what} file {} is empty", full.display()),
            ));
        }
        crate::secret::check_token_shape(value).map_err(|why| {
            ConfigError::whole_file(self.path, format!("{what} in {} {why}", full.display()))
        })?;
        Ok(Secret::new(value))
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let api = self.api(raw.api)?;
        let store = self.store(raw.store)?;
        let http = self.http(raw.http)?;
        let defaults = raw.defaults;
        if let Some(p) = &defaults.max_actions_percent {
            self.percent(p)?;
        }

        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        // Snapshot jobs so far: name, template and where the template is (or the job name,
        // for the default template), to refuse templates whose names can coincide.
        let mut snapshot_templates: Vec<(String, NameTemplate, usize)> = Vec::new();
        let sinks = self.sinks(raw.notify)?;
        let mut jobs = Vec::with_capacity(raw.jobs.len());
        // Budget jobs (index, position of `consumption_job`), resolved once every job is read.
        let mut budget_refs: Vec<BudgetRef> = Vec::new();
        for job in raw.jobs {
            let name = job.name.get_ref().clone();
            if let Some(first) = seen.get(&name) {
                let (l, c) = line_col(self.text, first.start);
                return Err(self.err(
                    job.name.span(),
                    format!("duplicate job name `{name}` (first defined at line {l}, column {c}); job names must be unique"),
                ));
            }
            seen.insert(name, job.name.span());
            let template_span = job
                .name_template
                .as_ref()
                .map_or_else(|| job.name.span(), |t| t.span());
            let budget_ref = job.budget.as_ref().map(|b| {
                let b = b.get_ref();
                (
                    b.consumption_job.span(),
                    b.metrics.as_ref().map(|m| (m.span(), m.get_ref().clone())),
                )
            });
            let job_events = job.notify.as_ref().map(|e| e.get_ref().clone());
            let mut built = self.job(job, &defaults)?;
            built.notify = self.routes(&sinks, &built.name, job_events.as_deref());
            if let (JobSpec::EnforceBudget(_), Some((at, metrics))) = (&built.spec, budget_ref) {
                budget_refs.push(BudgetRef {
                    job: jobs.len(),
                    at,
                    metrics,
                });
            }
            if let JobSpec::SnapshotBranches(spec) = &built.spec {
                for (other_name, other_template, other_span) in &snapshot_templates {
                    if let Some(example) =
                        spec.name_template
                            .collides_with(&built.name, other_template, other_name)
                    {
                        let (l, c) = line_col(self.text, *other_span);
                        return Err(self.err(
                            template_span,
                            format!(
                                "the snapshot names of job `{}` (`{}`) and job `{other_name}` \
                                 (`{}`, line {l}, column {c}) can coincide, e.g. `{example}`; \
                                 give one of them a fixed part the other cannot produce (e.g. \
                                 \"{{job}}/{{branch}}-{{date}}-{{time}}\")",
                                built.name,
                                spec.name_template.as_str(),
                                other_template.as_str(),
                            ),
                        ));
                    }
                }
                snapshot_templates.push((
                    built.name.clone(),
                    spec.name_template.clone(),
                    template_span.start,
                ));
            }
            jobs.push(Arc::new(built));
        }
        self.resolve_budgets(&mut jobs, &budget_refs)?;
        for s in &sinks {
            for j in s.jobs.iter().flatten() {
                if !jobs.iter().any(|b: &Arc<JobConfig>| &b.name == j) {
                    return Err(ConfigError::whole_file(
                        self.path,
                        format!(
                            "[[notify]] `{}` names job `{j}`, which the policy does not have",
                            s.name
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            api,
            store,
            http,
            jobs,
            notify: sinks.into_iter().map(Arc::new).collect(),
            source: self.path.to_path_buf(),
            policy_hash: hash::policy_hash(self.text),
        })
    }

    fn api(&self, raw: raw::RawApi) -> Result<ApiConfig, ConfigError> {
        if let Some(k) = &raw.api_key {
            return Err(self.err(
                k.span(),
                format!(
                    "`api_key` is not allowed in the policy file (it would leak with the file); \
                     set NEON_API_KEY, or `api_key_file = \"/path/to/key\"` in [api], or the \
                     systemd credential `{CREDENTIAL_NAME}` (LoadCredential=)"
                ),
            ));
        }
        let base_url = match self.env("NEON_STEWARD_BASE_URL") {
            Some(u) => {
                check_base_url(&u).map_err(|e| {
                    ConfigError::whole_file(self.path, format!("NEON_STEWARD_BASE_URL: {e}"))
                })?;
                u
            }
            None => match &raw.base_url {
                Some(u) => {
                    check_base_url(u.get_ref()).map_err(|e| self.err(u.span(), e))?;
                    u.get_ref().clone()
                }
                None => DEFAULT_BASE_URL.to_string(),
            },
        };
        let api_key = if let Some(k) = self.env("NEON_API_KEY") {
            crate::secret::check_token_shape(k.trim()).map_err(|why| {
                ConfigError::whole_file(self.path, format!("the API key in NEON_API_KEY {why}"))
            })?;
            Some(Secret::new(k.trim()))
        } else if let Some(f) = &raw.api_key_file {
            Some(self.read_secret_file("the API key", f)?)
        } else if let Some(dir) = self.env("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(CREDENTIAL_NAME);
            if p.exists() {
                Some(self.read_secret_file("the API key", &p)?)
            } else {
                None
            }
        } else {
            None
        };
        let positive =
            |v: &Option<Spanned<u32>>, default: u32, what: &str| -> Result<u32, ConfigError> {
                match v {
                    Some(s) if *s.get_ref() == 0 => {
                        Err(self.err(s.span(), format!("`{what}` must be at least 1")))
                    }
                    Some(s) => Ok(*s.get_ref()),
                    None => Ok(default),
                }
            };
        let concurrency = match &raw.concurrency {
            Some(s) if *s.get_ref() == 0 => {
                return Err(self.err(s.span(), "`concurrency` must be at least 1"))
            }
            Some(s) if *s.get_ref() > MAX_API_CONCURRENCY => {
                return Err(self.err(
                    s.span(),
                    format!(
                        "`concurrency` is {}: at most {MAX_API_CONCURRENCY} projects can be \
                         processed in parallel (Neon lets 40 requests through at once)",
                        s.get_ref()
                    ),
                ))
            }
            Some(s) => *s.get_ref(),
            None => 4,
        };
        let max_retries = match &raw.max_retries {
            Some(s) if *s.get_ref() > MAX_API_RETRIES => {
                return Err(self.err(
                    s.span(),
                    format!(
                        "`max_retries` is {}: at most {MAX_API_RETRIES}",
                        s.get_ref()
                    ),
                ))
            }
            Some(s) => *s.get_ref(),
            None => 5,
        };
        let poll_max = match &raw.poll_max {
            Some(d) => self.at_most(d.get_ref().0, d.span(), MAX_POLL_MAX, "1m", "`poll_max`")?,
            None => crate::neon::DEFAULT_POLL_MAX,
        };
        let poll_initial = match &raw.poll_initial {
            Some(d) if d.get_ref().0 > poll_max => {
                return Err(self.err(
                    d.span(),
                    format!(
                        "`poll_initial` ({}) is longer than `poll_max` ({}): it is the shortest \
                         interval between polls",
                        humantime::format_duration(d.get_ref().0),
                        humantime::format_duration(poll_max)
                    ),
                ))
            }
            Some(d) => d.get_ref().0,
            None => crate::neon::DEFAULT_POLL_INITIAL.min(poll_max),
        };
        Ok(ApiConfig {
            base_url,
            api_key,
            timeout: match &raw.timeout {
                Some(t) => self.at_most(
                    t.get_ref().0,
                    t.span(),
                    MAX_API_TIMEOUT,
                    "1h",
                    "`timeout` of an API request",
                )?,
                None => Duration::from_secs(30),
            },
            rate_limit_per_minute: positive(
                &raw.rate_limit_per_minute,
                700,
                "rate_limit_per_minute",
            )?,
            burst: positive(&raw.burst, 40, "burst")?,
            max_retries,
            concurrency,
            poll_initial,
            poll_max,
        })
    }

    fn store(&self, raw: raw::RawStore) -> Result<StoreConfig, ConfigError> {
        if let Some(u) = self.env("NEON_STEWARD_STORE_URL") {
            check_store_url(&u).map_err(|e| {
                ConfigError::whole_file(self.path, format!("NEON_STEWARD_STORE_URL: {e}"))
            })?;
        } else if let Some(u) = &raw.url {
            check_store_url(u.get_ref()).map_err(|e| self.err(u.span(), e))?;
        }
        let url = self
            .env("NEON_STEWARD_STORE_URL")
            .or(raw.url.map(|u| u.into_inner()))
            .unwrap_or_else(|| {
                let dir = self.env("STATE_DIRECTORY").map(|d| {
                    // systemd may pass several colon-separated directories; the first is ours.
                    d.split(':').next().unwrap_or_default().to_string()
                });
                match dir {
                    Some(d) => format!("sqlite://{}/neon-steward.db", d.trim_end_matches('/')),
                    None => "sqlite://./neon-steward.db".to_string(),
                }
            });
        let lease = raw
            .lease
            .as_ref()
            .map_or(crate::store::DEFAULT_LEASE, |d| d.get_ref().0);
        let heartbeat = raw
            .heartbeat
            .as_ref()
            .map_or(DEFAULT_HEARTBEAT, |d| d.get_ref().0);
        // Errors point at the key that was given (the heartbeat's first).
        let at = |err: String| match raw.heartbeat.as_ref().or(raw.lease.as_ref()) {
            Some(d) => self.err(d.span(), err),
            None => ConfigError::whole_file(self.path, err),
        };
        let lease_at = |err: String| match raw.lease.as_ref() {
            Some(d) => self.err(d.span(), err),
            None => ConfigError::whole_file(self.path, err),
        };
        if heartbeat.is_zero() || heartbeat.saturating_mul(3) > lease {
            return Err(at(format!(
                "store.heartbeat = {} and store.lease = {}: the lease must last at least 3 \
                     heartbeats (and the heartbeat be above zero), so that one slow renewal \
                     does not lose a run",
                humantime::format_duration(heartbeat),
                humantime::format_duration(lease)
            )));
        }
        if lease > Duration::from_secs(3600) {
            return Err(lease_at(format!(
                "store.lease = {}: at most 1h (a dead replica's runs wait this long to be \
                     taken over)",
                humantime::format_duration(lease)
            )));
        }
        let consumption_retention = match &raw.consumption_retention {
            Some(d) if d.get_ref().0 < MIN_CONSUMPTION_RETENTION => {
                return Err(self.err(
                    d.span(),
                    format!(
                        "store.consumption_retention = {}: at least 35d (the budget guard \
                         reads the whole current month of samples)",
                        humantime::format_duration(d.get_ref().0)
                    ),
                ))
            }
            Some(d) => d.get_ref().0,
            None => DEFAULT_CONSUMPTION_RETENTION,
        };
        Ok(StoreConfig {
            url,
            history_retention: raw
                .history_retention
                .map_or(Duration::from_secs(90 * 86_400), |d| d.0),
            consumption_retention,
            lease,
            heartbeat,
        })
    }

    fn http(&self, raw: raw::RawHttp) -> Result<HttpConfig, ConfigError> {
        let listen = match (self.env("NEON_STEWARD_LISTEN"), &raw.listen) {
            (Some(v), _) => SocketAddr::from_str(&v).map_err(|_| {
                ConfigError::whole_file(
                    self.path,
                    format!("invalid NEON_STEWARD_LISTEN `{v}`: expected an address and port such as \"127.0.0.1:9187\""),
                )
            })?,
            (None, Some(s)) => SocketAddr::from_str(s.get_ref()).map_err(|_| {
                self.err(s.span(), format!("invalid listen address `{}`: expected an address and port such as \"127.0.0.1:9187\"", s.get_ref()))
            })?,
            (None, None) => SocketAddr::from_str(DEFAULT_LISTEN).expect("the default listen address is valid"),
        };
        let admin_token = match &raw.admin_token_file {
            Some(p) => Some(self.read_secret_file("the admin token", p)?),
            None => None,
        };
        Ok(HttpConfig {
            listen,
            admin_token,
        })
    }

    /// A duration with a bound tighter than [`scalar::MAX_DURATION`], refused at its position.
    fn at_most(
        &self,
        v: Duration,
        span: Range<usize>,
        max: Duration,
        max_text: &str,
        what: &str,
    ) -> Result<Duration, ConfigError> {
        if v > max {
            return Err(self.err(
                span,
                format!(
                    "{what} is too long ({}): at most {max_text}",
                    humantime::format_duration(v)
                ),
            ));
        }
        Ok(v)
    }

    fn percent(&self, p: &Spanned<f64>) -> Result<f64, ConfigError> {
        let v = *p.get_ref();
        if !(v > 0.0 && v <= 100.0) {
            return Err(self.err(
                p.span(),
                format!("`max_actions_percent` must be in (0, 100], got {v}"),
            ));
        }
        Ok(v)
    }

    /// Compiles a glob list once, here, for every job kind to use as it is.
    fn globs(&self, list: &[Spanned<String>]) -> Result<GlobList, ConfigError> {
        for g in list {
            GlobList::new(&[g.get_ref()]).map_err(|e| self.err(g.span(), e))?;
        }
        let pats: Vec<&str> = list.iter().map(|s| s.get_ref().as_str()).collect();
        GlobList::new(&pats).map_err(|e| ConfigError::whole_file(self.path, e))
    }

    fn job(&self, j: RawJob, d: &raw::RawDefaults) -> Result<JobConfig, ConfigError> {
        let kind = *j.kind.get_ref();
        let name = j.name.get_ref().clone();
        if name.trim().is_empty() || name.contains(char::is_whitespace) || name.contains('/') {
            return Err(self.err(j.name.span(), format!("invalid job name `{name}`: use letters, digits, `-`, `_` or `.` (it appears in URLs and metric labels)")));
        }
        let timezone = j.timezone.or(d.timezone).map_or(chrono_tz::UTC, |t| t.0);
        let schedule = match (&j.schedule, &j.every) {
            (Some(c), None) => {
                let cron = &c.get_ref().0;
                // croner accepts dates that do not exist (`0 3 31 2 *`, the 31st of
                // February); such a job would never run.
                if cron.next_after(Utc::now(), timezone).is_none() {
                    return Err(self.err(
                        c.span(),
                        format!(
                            "cron expression `{}` never fires (no such date in any year?); \
                             check the day-of-month and month fields",
                            cron.as_str()
                        ),
                    ));
                }
                Schedule::Cron(cron.clone())
            }
            (None, Some(e)) => {
                if e.get_ref().0 < Duration::from_secs(1) {
                    return Err(self.err(e.span(), "`every` must be at least 1s"));
                }
                Schedule::Every(e.get_ref().0)
            }
            (Some(_), Some(e)) => {
                return Err(self.err(e.span(), format!("job `{name}` has both `schedule` and `every`; give exactly one")))
            }
            (None, None) => {
                return Err(self.err(j.name.span(), format!("job `{name}` has neither `schedule` (cron) nor `every` (interval); give exactly one")))
            }
        };
        let missed = j.missed.or(d.missed).unwrap_or_default();

        let selectors = self.selectors(&j)?;
        let max_actions_percent = match j
            .max_actions_percent
            .as_ref()
            .or(d.max_actions_percent.as_ref())
        {
            Some(p) => Some(self.percent(p)?),
            None => None,
        };
        let limits = Limits {
            max_actions: j.max_actions.or(d.max_actions),
            max_actions_percent,
        };
        let spec = self.spec(&j, kind, timezone)?;
        let notice = match &j.notice {
            None => None,
            Some(n) => {
                let windows = matches!(&spec, JobSpec::SuspendComputes(s) if !s.windows.is_empty());
                if !(kind == JobKind::ExpireBranches || windows) {
                    return Err(self.err(
                        n.span(),
                        format!("option `notice` is not valid for kind `{kind}` (it belongs to kind `expire_branches`, and to `suspend_computes` with `windows`)"),
                    ));
                }
                Some(n.get_ref().0)
            }
        };

        let jitter = match j.jitter.as_ref().or(d.jitter.as_ref()) {
            Some(s) => {
                let v = self.at_most(s.get_ref().0, s.span(), MAX_JITTER, "24h", "`jitter`")?;
                if let Schedule::Every(every) = &schedule {
                    if v > *every {
                        return Err(self.err(
                            s.span(),
                            format!(
                                "`jitter` ({}) must not exceed the job's `every` interval ({})",
                                humantime::format_duration(v),
                                humantime::format_duration(*every)
                            ),
                        ));
                    }
                }
                Some(v)
            }
            None => None,
        };
        let timeout = match j.timeout.as_ref().or(d.timeout.as_ref()) {
            Some(s) => {
                Some(self.at_most(s.get_ref().0, s.span(), MAX_RUN_TIMEOUT, "7d", "`timeout`")?)
            }
            None => None,
        };

        Ok(JobConfig {
            name,
            kind,
            schedule,
            timezone,
            jitter: jitter.filter(|x| !x.is_zero()),
            timeout: timeout.filter(|x| !x.is_zero()),
            concurrency: j.concurrency.or(d.concurrency).unwrap_or_default(),
            missed,
            starting_deadline: j.starting_deadline.or(d.starting_deadline).map(|x| x.0),
            // A budget guard acts on nothing until its own job says `dry_run = false`.
            dry_run: if kind == JobKind::EnforceBudget {
                j.dry_run.unwrap_or(true)
            } else {
                j.dry_run.or(d.dry_run).unwrap_or(false)
            },
            enabled: j.enabled.unwrap_or(true),
            selectors,
            limits,
            spec,
            notice,
            notify: Vec::new(),
        })
    }

    fn selectors(&self, j: &RawJob) -> Result<Selectors, ConfigError> {
        let mut s = Selectors::default();
        if let Some(p) = &j.projects {
            let name_regex = match &p.name_regex {
                Some(r) => Some(regex::Regex::new(r.get_ref()).map_err(|e| {
                    self.err(
                        r.span(),
                        format!(
                            "invalid name_regex `{}`: {}",
                            r.get_ref(),
                            first_line(&e.to_string())
                        ),
                    )
                })?),
                None => None,
            };
            s.projects = ProjectSelector {
                ids: p.ids.clone(),
                org_id: p.org_id.clone(),
                names: self.globs(&p.names)?,
                name_regex,
                exclude_ids: p.exclude_ids.clone(),
                exclude_names: self.globs(&p.exclude_names)?,
            };
        }
        if let Some(b) = &j.branches {
            let b = b.get_ref();
            s.branches = BranchSelector {
                names: self.globs(&b.names)?,
                exclude: self.globs(&b.exclude)?,
                older_than: b.older_than.map(|d| d.0),
                inactive_for: b.inactive_for.map(|d| d.0),
                default: match b.default {
                    None => DefaultBranchFilter::Any,
                    Some(true) => DefaultBranchFilter::Only,
                    Some(false) => DefaultBranchFilter::Exclude,
                },
            };
        }
        if let Some(e) = &j.endpoints {
            if j.kind.get_ref() != &JobKind::SuspendComputes {
                return Err(self.wrong_kind("[jobs.endpoints]", e.span(), *j.kind.get_ref()));
            }
            let e = e.get_ref();
            s.endpoints = EndpointSelector {
                endpoint_type: e.endpoint_type,
                branches: self.globs(&e.branches)?,
                exclude_ids: e.exclude_ids.clone(),
                exclude_branches: self.globs(&e.exclude_branches)?,
            };
        }
        Ok(s)
    }

    /// A `snapshot_branches` job's mode, and in `backup_schedule` mode its checked schedule.
    /// The options of the other mode are refused, and so are the branch filters a standing
    /// schedule cannot follow.
    fn snapshot_mode(
        &self,
        j: &RawJob,
    ) -> Result<(SnapshotMode, crate::neon::BackupSchedule), ConfigError> {
        let mode = match j.mode.as_ref().map(|m| *m.get_ref()) {
            Some(JobMode::BackupSchedule) => SnapshotMode::BackupSchedule,
            _ => SnapshotMode::Snapshots,
        };
        if mode == SnapshotMode::Snapshots {
            if let Some(b) = &j.backup_schedule {
                return Err(self.err(
                    b.span(),
                    "`[[jobs.backup_schedule]]` needs `mode = \"backup_schedule\"` (the default \
                     mode, `snapshots`, makes the snapshots itself)",
                ));
            }
            return Ok((mode, crate::neon::BackupSchedule::default()));
        }
        let mode_span = j.mode.as_ref().map_or_else(|| j.kind.span(), |m| m.span());
        for (option, sp) in [
            ("name_template", j.name_template.as_ref().map(|s| s.span())),
            ("expires_in", j.expires_in.as_ref().map(|s| s.span())),
            ("[jobs.retention]", j.retention.as_ref().map(|s| s.span())),
        ] {
            if let Some(sp) = sp {
                return Err(self.err(
                    sp,
                    format!(
                        "`{option}` is for `mode = \"snapshots\"`; with `mode = \"backup_schedule\"` \
                         Neon names, takes and expires the snapshots (retention is each rule's \
                         `retention`)"
                    ),
                ));
            }
        }
        if let Some(b) = &j.branches {
            let r = b.get_ref();
            if r.older_than.is_some() || r.inactive_for.is_some() {
                return Err(self.err(
                    b.span(),
                    "`older_than` and `inactive_for` cannot select branches for a backup \
                     schedule: it is a standing setting of a root branch, which the job would \
                     set and take back as the branch ages or is used; select root branches by \
                     `names`, `exclude` and `default`",
                ));
            }
        }
        let Some(rules) = &j.backup_schedule else {
            return Err(self.err(
                mode_span,
                "`mode = \"backup_schedule\"` needs `[[jobs.backup_schedule]]` rules, e.g. \
                 `frequency = \"daily\"`, `hour = 3`, `retention = \"7d\"` (an empty list, \
                 `backup_schedule = []`, takes back the schedules this job set)",
            ));
        };
        let mut items = Vec::new();
        for r in rules.get_ref() {
            let raw = r.get_ref();
            let input = backup::RuleInput {
                frequency: raw.frequency.get_ref(),
                hour: raw.hour.as_ref().map(|h| *h.get_ref()),
                day: raw.day.as_ref().map(|d| *d.get_ref()),
                retention: raw.retention.as_ref().map(|d| d.get_ref().0),
            };
            let item = backup::rule(&input).map_err(|(field, e)| {
                let sp = match field {
                    backup::RuleField::Frequency => Some(raw.frequency.span()),
                    backup::RuleField::Hour => raw.hour.as_ref().map(|h| h.span()),
                    backup::RuleField::Day => raw.day.as_ref().map(|d| d.span()),
                    backup::RuleField::Retention => raw.retention.as_ref().map(|d| d.span()),
                };
                self.err(sp.unwrap_or_else(|| r.span()), e)
            })?;
            items.push(item);
        }
        let schedule = backup::schedule(items).map_err(|i| {
            self.err(
                rules.get_ref()[i].span(),
                "this rule repeats an earlier one of the same job",
            )
        })?;
        Ok((mode, schedule))
    }

    /// `pull_request` and `[jobs.forge]` (they go together), validated, with the token read.
    fn pull_request(
        &self,
        j: &RawJob,
        mode: ExpireMode,
    ) -> Result<Option<crate::forge::ForgeConfig>, ConfigError> {
        use crate::forge::{BranchMapping, ForgeConfig};
        let (cond, forge) =
            match (&j.pull_request, &j.forge) {
                (None, None) => return Ok(None),
                (Some(c), None) => return Err(self.err(
                    c.span(),
                    "`pull_request` needs a `[jobs.forge]` table (kind, repository, branch and \
                     the token's source)",
                )),
                (None, Some(f)) => {
                    return Err(self.err(
                        f.span(),
                        "`[jobs.forge]` is only used with `pull_request = \"closed\"`; add it or \
                     remove the table",
                    ))
                }
                (Some(c), Some(f)) => (c, f),
            };
        if mode != ExpireMode::Delete {
            return Err(self.err(
                cond.span(),
                "`pull_request` works with `mode = \"delete\"` only (native expiry cannot be \
                 taken back when a pull request is reopened)",
            ));
        }
        let f = forge.get_ref();
        let kind = f.kind;
        let repository = f.repository.get_ref().trim().to_string();
        let segments: Vec<&str> = repository.split('/').collect();
        let bad_segment = segments.iter().any(|s| {
            s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        let shape_ok = match kind {
            crate::forge::ForgeKind::Github => segments.len() == 2,
            crate::forge::ForgeKind::Gitlab => segments.len() >= 2,
        };
        if bad_segment || !shape_ok {
            let want = match kind {
                crate::forge::ForgeKind::Github => "`owner/name`",
                crate::forge::ForgeKind::Gitlab => "`group/name` or `group/subgroup/name`",
            };
            return Err(self.err(
                f.repository.span(),
                format!("repository `{repository}` is not {want} (letters, digits, `-`, `_`, `.`)"),
            ));
        }
        let api_url = match self.env(kind.api_url_env()) {
            Some(u) => {
                check_base_url(&u).map_err(|e| {
                    ConfigError::whole_file(self.path, format!("{}: {e}", kind.api_url_env()))
                })?;
                u
            }
            None => match &f.api_url {
                Some(u) => {
                    check_base_url(u.get_ref()).map_err(|e| self.err(u.span(), e))?;
                    u.get_ref().clone()
                }
                None => kind.default_api_url().to_string(),
            },
        };
        let api_url = api_url.trim_end_matches('/').to_string();
        let branch = BranchMapping::parse(f.branch.get_ref())
            .map_err(|e| self.err(f.branch.span(), e.to_string()))?;
        let sources = usize::from(f.token_file.is_some())
            + usize::from(f.token_env.is_some())
            + usize::from(f.token_credential.is_some());
        if sources != 1 {
            return Err(self.err(
                forge.span(),
                format!(
                    "`[jobs.forge]` needs exactly one of `token_file`, `token_env` and \
                     `token_credential` (it has {sources}); the token itself never goes in the \
                     policy file"
                ),
            ));
        }
        let what = format!("the {} token", kind.display());
        let (token, token_source) = if let Some(p) = &f.token_file {
            (
                Some(self.read_secret_file(&what, p)?),
                format!("the file {}", self.resolve(p).display()),
            )
        } else if let Some(var) = &f.token_env {
            let var_name = var.get_ref().trim();
            if var_name.is_empty() || var_name.contains(['=', '\0']) {
                return Err(self.err(var.span(), "`token_env` must name an environment variable"));
            }
            let token = match self.env(var_name) {
                Some(v) => {
                    crate::secret::check_token_shape(v.trim()).map_err(|why| {
                        ConfigError::whole_file(self.path, format!("{what} in {var_name} {why}"))
                    })?;
                    Some(Secret::new(v.trim()))
                }
                None => None,
            };
            (token, format!("the environment variable {var_name}"))
        } else if let Some(c) = &f.token_credential {
            let name = c.get_ref().trim();
            if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
                return Err(self.err(
                    c.span(),
                    "`token_credential` must be a credential name (a file name, no `/`)",
                ));
            }
            let token = match self.env("CREDENTIALS_DIRECTORY") {
                Some(dir) => {
                    let p = Path::new(&dir).join(name);
                    if p.exists() {
                        Some(self.read_secret_file(&what, &p)?)
                    } else {
                        None
                    }
                }
                None => None,
            };
            (token, format!("the systemd credential {name}"))
        } else {
            (None, String::new())
        };
        let max_retries = match &f.max_retries {
            Some(s) if *s.get_ref() > MAX_API_RETRIES => {
                return Err(self.err(
                    s.span(),
                    format!(
                        "`max_retries` is {}: at most {MAX_API_RETRIES}",
                        s.get_ref()
                    ),
                ))
            }
            Some(s) => *s.get_ref(),
            None => 4,
        };
        let timeout = match &f.timeout {
            Some(t) => self.at_most(
                t.get_ref().0,
                t.span(),
                MAX_API_TIMEOUT,
                "1h",
                "`timeout` of a forge request",
            )?,
            None => Duration::from_secs(30),
        };
        let PullRequestCondition::Closed = cond.get_ref();
        Ok(Some(ForgeConfig {
            kind,
            repository,
            api_url,
            token,
            token_source,
            branch,
            max_retries,
            timeout,
        }))
    }

    fn wrong_kind(&self, option: &str, span: Range<usize>, kind: JobKind) -> ConfigError {
        let valid = match option
            .trim_start_matches('[')
            .trim_start_matches("jobs.")
            .trim_end_matches(']')
        {
            "name_template" | "expires_in" | "retention" | "backup_schedule" => "snapshot_branches",
            "mode" => "expire_branches` or kind `snapshot_branches",
            "ttl" | "idle_ttl" | "pull_request" | "forge" => "expire_branches",
            "idle_for" | "windows" | "window_timezone" | "exclude_until" | "resume"
            | "endpoints" | "exclusions" => "suspend_computes",
            "budget" => "enforce_budget",
            _ => "collect_consumption",
        };
        self.err(
            span,
            format!(
                "option `{option}` is not valid for kind `{kind}` (it belongs to kind `{valid}`)"
            ),
        )
    }

    /// Rejects every kind-specific option that belongs to another kind, then builds the spec.
    fn spec(&self, j: &RawJob, kind: JobKind, tz: Tz) -> Result<JobSpec, ConfigError> {
        fn span<T>(o: &Option<Spanned<T>>) -> Option<Range<usize>> {
            o.as_ref().map(|s| s.span())
        }
        let options: [(&str, JobKind, Option<Range<usize>>); 23] = [
            (
                "name_template",
                JobKind::SnapshotBranches,
                span(&j.name_template),
            ),
            ("expires_in", JobKind::SnapshotBranches, span(&j.expires_in)),
            (
                "[jobs.retention]",
                JobKind::SnapshotBranches,
                span(&j.retention),
            ),
            ("ttl", JobKind::ExpireBranches, span(&j.ttl)),
            ("idle_ttl", JobKind::ExpireBranches, span(&j.idle_ttl)),
            (
                "[[jobs.backup_schedule]]",
                JobKind::SnapshotBranches,
                span(&j.backup_schedule),
            ),
            (
                "pull_request",
                JobKind::ExpireBranches,
                span(&j.pull_request),
            ),
            ("[jobs.forge]", JobKind::ExpireBranches, span(&j.forge)),
            ("idle_for", JobKind::SuspendComputes, span(&j.idle_for)),
            ("windows", JobKind::SuspendComputes, span(&j.windows)),
            (
                "window_timezone",
                JobKind::SuspendComputes,
                span(&j.window_timezone),
            ),
            (
                "exclude_until",
                JobKind::SuspendComputes,
                span(&j.exclude_until),
            ),
            ("resume", JobKind::SuspendComputes, span(&j.resume)),
            (
                "[[jobs.exclusions]]",
                JobKind::SuspendComputes,
                span(&j.exclusions),
            ),
            (
                "granularity",
                JobKind::CollectConsumption,
                span(&j.granularity),
            ),
            ("metrics", JobKind::CollectConsumption, span(&j.metrics)),
            ("org_id", JobKind::CollectConsumption, span(&j.org_id)),
            ("endpoint", JobKind::CollectConsumption, span(&j.endpoint)),
            (
                "max_projects_exported",
                JobKind::CollectConsumption,
                span(&j.max_projects_exported),
            ),
            (
                "[jobs.prices]",
                JobKind::CollectConsumption,
                span(&j.prices),
            ),
            ("[jobs.budget]", JobKind::EnforceBudget, span(&j.budget)),
            (
                "per_branch",
                JobKind::CollectConsumption,
                span(&j.per_branch),
            ),
            ("", kind, None),
        ];
        for (option, owner, sp) in options {
            if let Some(sp) = sp {
                if owner != kind {
                    return Err(self.wrong_kind(option, sp, kind));
                }
            }
        }
        if let Some(m) = &j.mode {
            let own: &[JobMode] = match kind {
                JobKind::ExpireBranches => &[JobMode::Delete, JobMode::SetExpiresAt],
                JobKind::SnapshotBranches => &[JobMode::Snapshots, JobMode::BackupSchedule],
                _ => return Err(self.wrong_kind("mode", m.span(), kind)),
            };
            if !own.contains(m.get_ref()) {
                let names: Vec<String> = own.iter().map(|o| format!("`{}`", o.as_str())).collect();
                return Err(self.err(
                    m.span(),
                    format!(
                        "`mode = \"{}\"` is not a mode of kind `{kind}`; it takes {}",
                        m.get_ref().as_str(),
                        names.join(" or ")
                    ),
                ));
            }
        }
        let job_span = j.kind.span();
        Ok(match kind {
            JobKind::SnapshotBranches => {
                let name_template = match &j.name_template {
                    Some(t) => {
                        NameTemplate::parse(t.get_ref()).map_err(|e| self.err(t.span(), e))?
                    }
                    None => NameTemplate::parse(NameTemplate::DEFAULT)
                        .expect("the default template is valid"),
                };
                let retention = j.retention.as_ref().map_or_else(Retention::default, |r| {
                    let r = r.get_ref();
                    Retention {
                        keep_last: r.keep_last,
                        keep_hourly: r.keep_hourly,
                        keep_daily: r.keep_daily,
                        keep_weekly: r.keep_weekly,
                        keep_monthly: r.keep_monthly,
                    }
                });
                let (mode, backup_schedule) = self.snapshot_mode(j)?;
                JobSpec::SnapshotBranches(SnapshotSpec {
                    name_template,
                    expires_in: j.expires_in.as_ref().map(|d| d.get_ref().0),
                    retention,
                    mode,
                    backup_schedule,
                })
            }
            JobKind::ExpireBranches => {
                let (ttl, idle_ttl) = (
                    j.ttl.as_ref().map(|d| d.get_ref().0),
                    j.idle_ttl.as_ref().map(|d| d.get_ref().0),
                );
                let mode = match j.mode.as_ref().map(|m| *m.get_ref()) {
                    Some(JobMode::SetExpiresAt) => ExpireMode::SetExpiresAt,
                    _ => ExpireMode::Delete,
                };
                let pull_request = self.pull_request(j, mode)?;
                if ttl.is_none() && idle_ttl.is_none() && pull_request.is_none() {
                    return Err(self.err(
                        job_span,
                        "kind `expire_branches` needs `ttl`, `idle_ttl`, `pull_request` or several",
                    ));
                }
                JobSpec::ExpireBranches(ExpireSpec {
                    ttl,
                    idle_ttl,
                    mode,
                    pull_request,
                })
            }
            JobKind::SuspendComputes => {
                let window_timezone = j.window_timezone.as_ref().map_or(tz, |t| t.get_ref().0);
                let mut windows = Vec::new();
                for w in j.windows.iter().flat_map(|ws| ws.get_ref().iter()) {
                    windows.push(
                        Window::parse(w.get_ref(), window_timezone)
                            .map_err(|e| self.err(w.span(), e))?,
                    );
                }
                let idle_for = j.idle_for.as_ref().map(|d| d.get_ref().0);
                if idle_for.is_none() && windows.is_empty() {
                    return Err(self.err(
                        job_span,
                        "kind `suspend_computes` needs `idle_for`, `windows` or both",
                    ));
                }
                let exclude_until = match &j.exclude_until {
                    Some(s) => Some(
                        parse_instant(s.get_ref(), window_timezone)
                            .map_err(|e| self.err(s.span(), e))?,
                    ),
                    None => None,
                };
                let mut exclusions = Vec::new();
                for x in j.exclusions.iter().flat_map(|xs| xs.get_ref().iter()) {
                    exclusions.push(self.exclusion(x, window_timezone)?);
                }
                JobSpec::SuspendComputes(SuspendSpec {
                    idle_for,
                    windows,
                    window_timezone,
                    exclude_until,
                    exclusions,
                    resume: j.resume.as_ref().is_some_and(|r| *r.get_ref()),
                })
            }
            JobKind::CollectConsumption => {
                let metrics = match &j.metrics {
                    Some(m) if m.get_ref().is_empty() => return Err(self.err(m.span(), "`metrics` must list at least one metric")),
                    Some(m) => m.get_ref().iter().map(|n| n.get_ref().clone()).collect::<Vec<_>>(),
                    None => return Err(self.err(job_span, "kind `collect_consumption` needs `metrics` (e.g. [\"compute_unit_seconds\"])")),
                };
                let endpoint = j
                    .endpoint
                    .as_ref()
                    .map(|e| *e.get_ref())
                    .unwrap_or_default();
                let (known, endpoint_name): (&[&str], &str) = match endpoint {
                    ConsumptionEndpoint::V2 => (&V2_METRICS, "v2"),
                    ConsumptionEndpoint::Legacy => (&LEGACY_METRICS, "legacy"),
                };
                let m = j.metrics.as_ref().expect("checked above");
                let mut seen_metrics = std::collections::HashSet::new();
                // Each name is positioned at itself, not at the list.
                for (name, at) in metrics.iter().zip(m.get_ref().iter().map(|n| n.span())) {
                    if !known.contains(&name.as_str()) {
                        return Err(self.err(
                            at,
                            format!(
                                "unknown consumption metric `{name}` for the {endpoint_name} \
                                 endpoint; expected one of {}",
                                known.join(", ")
                            ),
                        ));
                    }
                    if !seen_metrics.insert(name.as_str()) {
                        return Err(self.err(at, format!("metric `{name}` is listed twice")));
                    }
                }
                if let Some(p) = &j.prices {
                    if let Some(k) = p.get_ref().keys().find(|k| !metrics.contains(k)) {
                        return Err(self.err(
                            p.span(),
                            format!(
                                "a price is given for `{k}`, which is not one of this job's \
                                 `metrics` ({})",
                                metrics.join(", ")
                            ),
                        ));
                    }
                    if let Some((k, v)) = p
                        .get_ref()
                        .iter()
                        .find(|(_, v)| !v.is_finite() || **v < 0.0)
                    {
                        return Err(self.err(
                            p.span(),
                            format!("price of `{k}` must be a non-negative number, got {v}"),
                        ));
                    }
                }
                if endpoint == ConsumptionEndpoint::V2 && j.org_id.is_none() {
                    let at = j.endpoint.as_ref().map_or(job_span, |e| e.span());
                    return Err(self.err(
                        at,
                        "the v2 consumption endpoint needs `org_id` (Neon requires it); set `org_id`, or `endpoint = \"legacy\"` for a legacy plan",
                    ));
                }
                let mut branch_metrics = Vec::new();
                if let Some(pb) = j.per_branch.as_ref().filter(|pb| *pb.get_ref()) {
                    if endpoint != ConsumptionEndpoint::V2 {
                        return Err(self.err(
                            pb.span(),
                            "`per_branch` needs `endpoint = \"v2\"`: Neon's per-branch consumption (/consumption_history/v2/branches) has no legacy counterpart",
                        ));
                    }
                    branch_metrics = metrics
                        .iter()
                        .filter(|m| V2_BRANCH_METRICS.contains(&m.as_str()))
                        .cloned()
                        .collect();
                    if branch_metrics.is_empty() {
                        return Err(self.err(
                            pb.span(),
                            format!(
                                "`per_branch` collects only metrics Neon reports per branch ({}), and this job's `metrics` has none of them",
                                V2_BRANCH_METRICS.join(", ")
                            ),
                        ));
                    }
                }
                JobSpec::CollectConsumption(ConsumptionSpec {
                    branch_metrics,
                    endpoint,
                    granularity: j
                        .granularity
                        .as_ref()
                        .map(|g| *g.get_ref())
                        .unwrap_or_default(),
                    metrics,
                    org_id: j.org_id.as_ref().map(|o| o.get_ref().clone()),
                    max_projects_exported: j
                        .max_projects_exported
                        .as_ref()
                        .map_or(50, |m| *m.get_ref()),
                    prices: j
                        .prices
                        .as_ref()
                        .map(|p| p.get_ref().clone())
                        .unwrap_or_default(),
                })
            }
            JobKind::EnforceBudget => {
                match &j.budget {
                    Some(b) => JobSpec::EnforceBudget(self.budget(b, tz)?),
                    None => return Err(self.err(
                        job_span,
                        "kind `enforce_budget` needs a `[jobs.budget]` table (consumption_job, \
                         limit, currency, [[jobs.budget.thresholds]])",
                    )),
                }
            }
        })
    }
}

impl Validator<'_> {
    /// `[jobs.budget]`, except what comes from its consumption job ([`Self::resolve_budgets`]).
    fn budget(&self, b: &Spanned<raw::RawBudget>, tz: Tz) -> Result<BudgetSpec, ConfigError> {
        let r = b.get_ref();
        let limit = *r.limit.get_ref();
        if !(limit.is_finite() && limit > 0.0) {
            return Err(self.err(
                r.limit.span(),
                format!("`limit` must be a number greater than 0, got {limit}"),
            ));
        }
        let currency = r.currency.get_ref();
        if currency.len() != 3 || !currency.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(self.err(
                r.currency.span(),
                format!(
                    "`currency` must be the price table's ISO 4217 code, three capital letters \
                     such as \"USD\", got {currency:?}"
                ),
            ));
        }
        let projection_days = match &r.projection_days {
            Some(d) if !(1..=31).contains(d.get_ref()) => {
                return Err(self.err(
                    d.span(),
                    format!(
                        "`projection_days` must be between 1 and 31, got {}",
                        d.get_ref()
                    ),
                ))
            }
            Some(d) => *d.get_ref(),
            None => 7,
        };
        if r.thresholds.get_ref().is_empty() {
            return Err(self.err(
                r.thresholds.span(),
                "a budget needs at least one `[[jobs.budget.thresholds]]` entry",
            ));
        }
        let mut thresholds: Vec<BudgetThreshold> = Vec::new();
        for t in r.thresholds.get_ref() {
            let t_span = t.span();
            let t = t.get_ref();
            let percent = *t.percent.get_ref();
            if !(percent.is_finite() && percent > 0.0 && percent <= 1000.0) {
                return Err(self.err(
                    t.percent.span(),
                    format!("`percent` must be in (0, 1000], got {percent}"),
                ));
            }
            if thresholds.iter().any(|o| o.percent == percent) {
                return Err(self.err(
                    t.percent.span(),
                    format!("threshold {percent}% is given twice"),
                ));
            }
            let actions = t.actions.get_ref();
            if actions.is_empty() {
                return Err(self.err(
                    t.actions.span(),
                    "`actions` must list at least one of notify, suspend_computes, lower_max_cu, \
                     shorten_suspend_timeout",
                ));
            }
            for (i, a) in actions.iter().enumerate() {
                if actions[..i].contains(a) {
                    return Err(self.err(
                        t.actions.span(),
                        format!("action `{}` is listed twice", budget_action_name(*a)),
                    ));
                }
            }
            let has = |k: BudgetActionKind| actions.contains(&k);
            let max_cu = match (&t.max_cu, has(BudgetActionKind::LowerMaxCu)) {
                (Some(cu), true) => {
                    let v = *cu.get_ref();
                    let allowed =
                        v == 0.25 || v == 0.5 || (v.fract() == 0.0 && (1.0..=56.0).contains(&v));
                    if !allowed {
                        return Err(self.err(
                            cu.span(),
                            format!(
                                "`max_cu` must be a compute size Neon has: 0.25, 0.5 or a whole \
                                 number from 1 to 56, got {v}"
                            ),
                        ));
                    }
                    Some(v)
                }
                (None, true) => {
                    return Err(self.err(
                        t_span,
                        "action `lower_max_cu` needs `max_cu` (e.g. max_cu = 1)",
                    ))
                }
                (Some(cu), false) => {
                    return Err(self.err(
                        cu.span(),
                        "`max_cu` is given but `actions` does not list `lower_max_cu`",
                    ))
                }
                (None, false) => None,
            };
            let suspend_timeout_seconds = match (
                &t.suspend_timeout,
                has(BudgetActionKind::ShortenSuspendTimeout),
            ) {
                (Some(d), true) => {
                    let v = d.get_ref().0;
                    if v.subsec_nanos() != 0 || !(60..=604_800).contains(&v.as_secs()) {
                        return Err(self.err(
                            d.span(),
                            format!(
                                "`suspend_timeout` must be whole seconds between 1m and 7d \
                                     (Neon's range), got {}",
                                humantime::format_duration(v)
                            ),
                        ));
                    }
                    Some(v.as_secs() as i64)
                }
                (None, true) => {
                    return Err(self.err(
                        t_span,
                        "action `shorten_suspend_timeout` needs `suspend_timeout` (e.g. \
                         suspend_timeout = \"2m\")",
                    ))
                }
                (Some(d), false) => {
                    return Err(self.err(
                        d.span(),
                        "`suspend_timeout` is given but `actions` does not list \
                             `shorten_suspend_timeout`",
                    ))
                }
                (None, false) => None,
            };
            thresholds.push(BudgetThreshold {
                percent,
                notify: has(BudgetActionKind::Notify),
                suspend_computes: has(BudgetActionKind::SuspendComputes),
                max_cu,
                suspend_timeout_seconds,
            });
        }
        thresholds.sort_by(|a, b| a.percent.total_cmp(&b.percent));
        Ok(BudgetSpec {
            consumption_job: r.consumption_job.get_ref().clone(),
            limit,
            currency: currency.clone(),
            timezone: r.timezone.map_or(tz, |t| t.0),
            per_project: r.per_project,
            projection_days,
            thresholds,
            granularity: Granularity::Hourly,
            prices: BTreeMap::new(),
        })
    }

    /// Gives each budget job the granularity and prices of its `consumption_job`, which must
    /// be a `collect_consumption` job of this file pricing every metric it collects (hourly
    /// or daily: monthly samples are UTC months, which a month in another zone cannot use).
    fn resolve_budgets(
        &self,
        jobs: &mut [Arc<JobConfig>],
        refs: &[BudgetRef],
    ) -> Result<(), ConfigError> {
        for BudgetRef {
            job: i,
            at,
            metrics,
        } in refs
        {
            let Some(JobSpec::EnforceBudget(b)) = jobs.get(*i).map(|j| &j.spec) else {
                continue;
            };
            let wanted = b.consumption_job.clone();
            let found = jobs.iter().find(|j| j.name == wanted);
            let c = match found.map(|j| &j.spec) {
                Some(JobSpec::CollectConsumption(c)) => c.clone(),
                Some(_) => {
                    return Err(self.err(
                        at.clone(),
                        format!("`consumption_job` names `{wanted}`, which is not a `collect_consumption` job"),
                    ))
                }
                None => {
                    return Err(self.err(
                        at.clone(),
                        format!("`consumption_job` names `{wanted}`, but no job of that name is defined"),
                    ))
                }
            };
            if c.granularity == Granularity::Monthly {
                return Err(self.err(
                    at.clone(),
                    format!("`consumption_job` `{wanted}` collects monthly samples (UTC months); a budget needs `granularity = \"hourly\"` or `\"daily\"`"),
                ));
            }
            let counted: Vec<String> = match metrics {
                Some((m_at, m)) => {
                    if m.is_empty() {
                        return Err(
                            self.err(m_at.clone(), "`metrics` must list at least one metric")
                        );
                    }
                    if let Some(x) = m.iter().find(|x| !c.metrics.contains(x)) {
                        return Err(self.err(
                            m_at.clone(),
                            format!(
                                "metric `{x}` is not collected by `consumption_job` `{wanted}` ({})",
                                c.metrics.join(", ")
                            ),
                        ));
                    }
                    m.clone()
                }
                None => c.metrics.clone(),
            };
            let unpriced: Vec<&str> = counted
                .iter()
                .filter(|m| !c.prices.contains_key(*m))
                .map(String::as_str)
                .collect();
            if !unpriced.is_empty() {
                let at = metrics.as_ref().map_or(at, |(m_at, _)| m_at);
                return Err(self.err(
                    at.clone(),
                    format!(
                        "`consumption_job` `{wanted}` has no price for {} in its [jobs.prices]; \
                         the budget guard does not run on invented prices: give each metric \
                         it collects the price of your plan (see config/example.toml)",
                        unpriced.join(", ")
                    ),
                ));
            }
            if let Some(job) = jobs.get_mut(*i).map(Arc::make_mut) {
                if let JobSpec::EnforceBudget(b) = &mut job.spec {
                    b.granularity = c.granularity;
                    b.prices = c
                        .prices
                        .into_iter()
                        .filter(|(m, _)| counted.contains(m))
                        .collect();
                }
            }
        }
        Ok(())
    }
}

/// Where a budget job's `consumption_job` (and `metrics`) are, to resolve them once every
/// job is read.
struct BudgetRef {
    job: usize,
    at: Range<usize>,
    metrics: Option<(Range<usize>, Vec<String>)>,
}

/// The policy's name of a budget action.
pub fn budget_action_name(a: BudgetActionKind) -> &'static str {
    match a {
        BudgetActionKind::Notify => "notify",
        BudgetActionKind::SuspendComputes => "suspend_computes",
        BudgetActionKind::LowerMaxCu => "lower_max_cu",
        BudgetActionKind::ShortenSuspendTimeout => "shorten_suspend_timeout",
    }
}

impl Validator<'_> {
    /// One `[[jobs.exclusions]]` entry: exactly one target, a valid glob, a valid `until`.
    fn exclusion(&self, x: &Spanned<raw::RawExclusion>, tz: Tz) -> Result<Exclusion, ConfigError> {
        let r = x.get_ref();
        let target = match (&r.endpoint, &r.branch, &r.project) {
            (Some(e), None, None) if !e.trim().is_empty() => ExclusionTarget::Endpoint(e.clone()),
            (None, Some(b), None) => ExclusionTarget::Branch(self.globs(std::slice::from_ref(b))?),
            (None, None, Some(p)) if !p.trim().is_empty() => ExclusionTarget::Project(p.clone()),
            _ => {
                return Err(self.err(
                    x.span(),
                    "an exclusion names exactly one of `endpoint` (an endpoint id), `branch` (a glob over branch names) or `project` (a project id), e.g. { endpoint = \"ep-...\", until = \"2026-12-31\" }",
                ))
            }
        };
        let until =
            parse_instant(r.until.get_ref(), tz).map_err(|e| self.err(r.until.span(), e))?;
        Ok(Exclusion {
            target,
            until,
            note: r.note.clone(),
        })
    }
}

/// The API base URL must be `https://`, except `http://` to a loopback host (neon-sim, a
/// local proxy): the API key travels in every request's header, and plain HTTP to any other
/// host would send it in clear text. User info (`user:password@`) is refused, and never
/// shown: it would be a credential, and reqwest would send it instead of the API key.
pub fn check_base_url(raw: &str) -> Result<(), String> {
    let s = &crate::secret::without_userinfo(raw);
    let url = reqwest::Url::parse(raw)
        .map_err(|e| format!("invalid base_url `{s}` ({e}); expected an https URL"))?;
    if !url.username().is_empty() || url.password().is_some() || s.len() != raw.len() {
        return Err(format!(
            "base_url `{s}` must not contain user info (`user:password@`, shown here removed): \
             Neon is authenticated with the API key alone (NEON_API_KEY, `api_key_file` or the \
             systemd credential)"
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            // `host_str` is normalised by the parser (`127.1` -> `127.0.0.1`, IPv6 in
            // brackets), so this does not have to know IP literal spellings.
            let loopback = url.host_str().is_some_and(|h| {
                h.eq_ignore_ascii_case("localhost")
                    || h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "base_url `{s}` uses plain http to a host that is not loopback, which would send the API key in clear text; use https (http is allowed only for localhost, 127.0.0.0/8 and ::1)"
                ))
            }
        }
        other => Err(format!(
            "invalid base_url `{s}`: scheme `{other}`; expected an https URL"
        )),
    }
}

/// A store URL must name a backend this build has: `sqlite:` or `postgres:`/`postgresql:`.
/// Shown redacted: a PostgreSQL URL may carry a password.
fn check_store_url(s: &str) -> Result<(), String> {
    let scheme = s.split_once(':').map(|(scheme, _)| scheme);
    match scheme {
        Some("sqlite" | "postgres" | "postgresql") => Ok(()),
        _ => Err(format!(
            "invalid store url `{}`: expected `sqlite://PATH` (e.g. \
             \"sqlite:///var/lib/neon-steward/neon-steward.db\") or `postgres://...`",
            crate::store::redact_url(&crate::secret::without_userinfo(s))
        )),
    }
}

fn first_line(s: &str) -> &str {
    let line = s
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| s.lines().next().unwrap_or(s));
    line.trim_start_matches("error:").trim()
}

/// `YYYY-MM-DD` (start of that day in `tz`) or an RFC 3339 instant.
fn parse_instant(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("invalid date `{s}`: expected YYYY-MM-DD or an RFC 3339 time such as 2026-12-31T00:00:00Z"))?;
    tz.from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("`{s}` does not start at a valid local time in {tz}"))
}

#[cfg(test)]
mod tests;
