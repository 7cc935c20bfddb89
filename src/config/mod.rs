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

mod error;
pub mod hash;
pub mod pattern;
mod raw;
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

pub use error::{line_col, ConfigError};
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
/// Longest API request `timeout`.
pub use crate::store::DEFAULT_HEARTBEAT;
pub const MAX_API_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most projects a run may process in parallel (`api.concurrency`). Neon lets 40 requests
/// through at once (its burst); more parallel projects than that only wait on the limiter
/// while holding memory and connections.
pub const MAX_API_CONCURRENCY: usize = 64;
/// Most retries of one API request (`api.max_retries`); the retry budget bounds the time too.
pub const MAX_API_RETRIES: u32 = 20;
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
    /// Finished runs older than this are pruned.
    pub history_retention: Duration,
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
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SnapshotBranches => "snapshot_branches",
            JobKind::ExpireBranches => "expire_branches",
            JobKind::SuspendComputes => "suspend_computes",
            JobKind::CollectConsumption => "collect_consumption",
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
}

#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub name_template: NameTemplate,
    /// Sets Neon's `expires_at` on each snapshot this long after creation.
    pub expires_in: Option<Duration>,
    pub retention: Retention,
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
        let mut jobs = Vec::with_capacity(raw.jobs.len());
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
            let built = self.job(job, &defaults)?;
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
        Ok(Config {
            api,
            store,
            http,
            jobs,
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
        let lease = raw.lease.map_or(crate::store::DEFAULT_LEASE, |d| d.0);
        let heartbeat = raw.heartbeat.map_or(DEFAULT_HEARTBEAT, |d| d.0);
        if heartbeat.is_zero() || heartbeat.saturating_mul(3) > lease {
            return Err(ConfigError::whole_file(
                self.path,
                format!(
                    "store.heartbeat = {} and store.lease = {}: the lease must last at least 3 \
                     heartbeats (and the heartbeat be above zero), so that one slow renewal \
                     does not lose a run",
                    humantime::format_duration(heartbeat),
                    humantime::format_duration(lease)
                ),
            ));
        }
        if lease > Duration::from_secs(3600) {
            return Err(ConfigError::whole_file(
                self.path,
                format!(
                    "store.lease = {}: at most 1h (a dead replica's runs wait this long to be \
                     taken over)",
                    humantime::format_duration(lease)
                ),
            ));
        }
        Ok(StoreConfig {
            url,
            history_retention: raw
                .history_retention
                .map_or(Duration::from_secs(90 * 86_400), |d| d.0),
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

    /// A duration with a bound tighter than [`raw::MAX_DURATION`], refused at its position.
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
            dry_run: j.dry_run.or(d.dry_run).unwrap_or(false),
            enabled: j.enabled.unwrap_or(true),
            selectors,
            limits,
            spec,
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

    fn wrong_kind(&self, option: &str, span: Range<usize>, kind: JobKind) -> ConfigError {
        let valid = match option
            .trim_start_matches('[')
            .trim_start_matches("jobs.")
            .trim_end_matches(']')
        {
            "name_template" | "expires_in" | "retention" => "snapshot_branches",
            "ttl" | "idle_ttl" | "mode" => "expire_branches",
            "idle_for" | "windows" | "window_timezone" | "exclude_until" | "resume"
            | "endpoints" | "exclusions" => "suspend_computes",
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
        let options: [(&str, JobKind, Option<Range<usize>>); 19] = [
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
            ("mode", JobKind::ExpireBranches, span(&j.mode)),
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
            ("", kind, None),
        ];
        for (option, owner, sp) in options {
            if let Some(sp) = sp {
                if owner != kind {
                    return Err(self.wrong_kind(option, sp, kind));
                }
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
                JobSpec::SnapshotBranches(SnapshotSpec {
                    name_template,
                    expires_in: j.expires_in.as_ref().map(|d| d.get_ref().0),
                    retention,
                })
            }
            JobKind::ExpireBranches => {
                let (ttl, idle_ttl) = (
                    j.ttl.as_ref().map(|d| d.get_ref().0),
                    j.idle_ttl.as_ref().map(|d| d.get_ref().0),
                );
                if ttl.is_none() && idle_ttl.is_none() {
                    return Err(self.err(
                        job_span,
                        "kind `expire_branches` needs `ttl`, `idle_ttl` or both",
                    ));
                }
                JobSpec::ExpireBranches(ExpireSpec {
                    ttl,
                    idle_ttl,
                    mode: j.mode.as_ref().map(|m| *m.get_ref()).unwrap_or_default(),
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
                    Some(m) => m.get_ref().clone(),
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
                for name in &metrics {
                    if !known.contains(&name.as_str()) {
                        return Err(self.err(
                            m.span(),
                            format!(
                                "unknown consumption metric `{name}` for the {endpoint_name} \
                                 endpoint; expected one of {}",
                                known.join(", ")
                            ),
                        ));
                    }
                    if !seen_metrics.insert(name.as_str()) {
                        return Err(self.err(m.span(), format!("metric `{name}` is listed twice")));
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
                JobSpec::CollectConsumption(ConsumptionSpec {
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
        })
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
    let s = &without_userinfo(raw);
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

/// `s` with anything between `scheme://` and an `@` before the path removed (the user info
/// of a URL), so that a URL can be quoted in an error without its credentials.
pub fn without_userinfo(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => s.to_string(),
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
            crate::store::redact_url(&without_userinfo(s))
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
