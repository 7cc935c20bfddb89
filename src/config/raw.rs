//! The policy file as written: serde structs that mirror the TOML exactly.
//!
//! Values with a syntax of their own (durations, cron expressions, time zones) are the types
//! of [`super::scalar`], parsed where they stand so that `toml` attaches the exact position of a
//! bad value to the error. Values needed by later cross-field checks (duplicate names, options given for
//! the wrong kind) are wrapped in [`Spanned`] to keep their position.
//!
//! The same types derive `JsonSchema`: their `///` docs become the descriptions of
//! `config/schema.json` (see [`super::schema`]), which editors show while the file is written.
//! `Spanned<T>` fields name their schema with `#[schemars(with = "T")]`, since the position
//! wrapper is invisible in the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

use super::describe::{Forbidden, NonNegative};
use super::scalar::{CronStr, Dur, PositiveDur, TzStr};
use super::{
    BudgetActionKind, ConcurrencyPolicy, ConsumptionEndpoint, EndpointType, Granularity, JobKind,
    JobMode, MissedPolicy, PullRequestCondition,
};
use crate::forge::ForgeKind;

/// The neon-steward policy file: how to reach Neon, where to keep history, what to serve,
/// and which jobs to run when. Unknown keys are errors.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "neon-steward policy file")]
pub struct RawConfig {
    /// How to reach Neon's management API.
    #[serde(default)]
    pub api: RawApi,
    /// Where run history, the audit ledger and consumption samples are kept.
    #[serde(default)]
    pub store: RawStore,
    /// The HTTP server: /metrics, /healthz, /readyz and the /api/v1 history.
    #[serde(default)]
    pub http: RawHttp,
    /// Values every job inherits unless it sets its own.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// The jobs (`[[jobs]]`), each with a unique `name`, a `kind` and a `schedule` or `every`.
    #[serde(default)]
    pub jobs: Vec<RawJob>,
    /// Notification sinks (`[[notify]]`): signed webhooks and Slack.
    #[serde(default)]
    pub notify: Vec<super::notify::RawNotify>,
}

/// `[api]`: Neon's management API. The API key is never written in this file: it comes
/// from the NEON_API_KEY environment variable, `api_key_file`, or systemd's
/// `$CREDENTIALS_DIRECTORY/neon-api-key`.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Api")]
pub struct RawApi {
    /// Base URL of the Neon API: https, or plain http only to a loopback host (localhost,
    /// 127.0.0.0/8, ::1), since the API key goes with every request. The environment
    /// variable NEON_STEWARD_BASE_URL overrides it, e.g. to point at neon-sim.
    #[schemars(with = "Option<String>", regex(pattern = r"^https?://"))]
    #[schemars(extend("default" = "https://console.neon.tech/api/v2"))]
    pub base_url: Option<Spanned<String>>,
    /// A file holding the Neon API key (relative paths are relative to this policy file).
    /// Used when NEON_API_KEY is not set.
    pub api_key_file: Option<PathBuf>,
    /// Not allowed: a key written here would leak with the file. Use NEON_API_KEY,
    /// `api_key_file` or the systemd credential `neon-api-key` instead.
    // Accepted by the parser only so it can be rejected with a helpful message.
    #[schemars(with = "Option<Forbidden>")]
    pub api_key: Option<Spanned<IgnoredAny>>,
    /// Timeout of each API request (at most 1h).
    #[schemars(with = "Option<PositiveDur>", extend("default" = "30s"))]
    pub timeout: Option<Spanned<PositiveDur>>,
    /// Client-side rate limit, in requests per minute (Neon allows 700 per account).
    #[schemars(with = "Option<u32>", range(min = 1), extend("default" = 700))]
    pub rate_limit_per_minute: Option<Spanned<u32>>,
    /// Requests that may be sent at once before the rate limit applies (Neon allows 40).
    #[schemars(with = "Option<u32>", range(min = 1), extend("default" = 40))]
    pub burst: Option<Spanned<u32>>,
    /// Retries of 429, 503, other 5xx and transport errors, with exponential backoff (at
    /// most 20). A 423 (project locked) is handled by the jobs, which wait for the project's
    /// operations and call again.
    #[schemars(with = "Option<u32>", range(max = 20), extend("default" = 5))]
    pub max_retries: Option<Spanned<u32>>,
    /// Projects a run processes in parallel (changes within one project are always serial),
    /// at most 64 (Neon's burst of 40 requests is the real bound).
    #[schemars(with = "Option<u32>", range(min = 1, max = 64), extend("default" = 4))]
    pub concurrency: Option<Spanned<usize>>,
    /// The shortest interval between polls of an operation Neon is running, and the first
    /// one until an operation has been seen to finish; after that the first poll comes when
    /// operations have lately taken, then the interval doubles up to `poll_max`. At most
    /// `poll_max`.
    #[schemars(with = "Option<PositiveDur>", extend("default" = "5ms"))]
    pub poll_initial: Option<Spanned<PositiveDur>>,
    /// The longest interval between polls of an operation (at most 1m).
    #[schemars(with = "Option<PositiveDur>", extend("default" = "5s"))]
    pub poll_max: Option<Spanned<PositiveDur>>,
}

/// `[store]`: run history, audit ledger and consumption samples.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Store")]
pub struct RawStore {
    /// Database URL, e.g. `sqlite:///var/lib/neon-steward/neon-steward.db` or
    /// `postgres://...`. Default: `sqlite://$STATE_DIRECTORY/neon-steward.db` under systemd,
    /// else `sqlite://./neon-steward.db`. NEON_STEWARD_STORE_URL overrides it.
    #[schemars(
        with = "Option<String>",
        regex(pattern = r"^(sqlite|postgres|postgresql):")
    )]
    pub url: Option<Spanned<String>>,
    /// Finished runs (with their actions) and finished notifications older than this are
    /// pruned.
    #[schemars(extend("default" = "90d"))]
    pub history_retention: Option<PositiveDur>,
    /// Consumption samples (per project and per branch) whose period ended longer ago than
    /// this are pruned. At least 35d: the budget guard reads the whole current month.
    #[schemars(with = "Option<PositiveDur>", extend("default" = "400d"))]
    pub consumption_retention: Option<Spanned<PositiveDur>>,
    /// How long a replica holds a run it claimed without renewing it. A replica that dies,
    /// hangs or loses the store loses its runs after this long, and another replica (or the
    /// next start) takes them over. At least 3 heartbeats.
    #[schemars(with = "Option<Dur>", extend("default" = "30s"))]
    pub lease: Option<Spanned<Dur>>,
    /// How often a running run renews its lease, and how often every replica looks for
    /// runs whose lease has expired.
    #[schemars(with = "Option<Dur>", extend("default" = "10s"))]
    pub heartbeat: Option<Spanned<Dur>>,
}

/// `[http]`: the metrics, health and history server.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Http")]
pub struct RawHttp {
    /// Address and port to listen on, e.g. `127.0.0.1:9187` (loopback by default).
    /// NEON_STEWARD_LISTEN overrides it.
    #[schemars(with = "Option<String>", extend("default" = "127.0.0.1:9187"))]
    pub listen: Option<Spanned<String>>,
    /// A file holding a bearer token (relative paths are relative to this policy file).
    /// Only when set does `POST /api/v1/jobs/{name}/trigger` exist.
    pub admin_token_file: Option<PathBuf>,
}

/// `[defaults]`: values every job inherits unless it sets its own.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Defaults")]
pub struct RawDefaults {
    /// Record what would be done without making any change.
    #[schemars(extend("default" = false))]
    pub dry_run: Option<bool>,
    /// IANA time zone cron schedules are evaluated in (daylight saving is followed).
    #[schemars(extend("default" = "UTC"))]
    pub timezone: Option<TzStr>,
    /// Upper bound of a random delay added to each tick (at most 24h, and at most the
    /// interval of an `every` job). `0s`: none.
    #[schemars(with = "Option<Dur>", extend("default" = "0s"))]
    pub jitter: Option<Spanned<Dur>>,
    /// Cancel a run still going after this long (at most 7d; it is recorded failed).
    /// Absent or `0s`: no timeout.
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
    /// What to do when a tick comes while the previous run of the same job still runs.
    #[schemars(extend("default" = "forbid"))]
    pub concurrency: Option<ConcurrencyPolicy>,
    /// What to do at start-up about ticks missed while the daemon was down.
    #[schemars(extend("default" = "skip"))]
    pub missed: Option<MissedPolicy>,
    /// With `missed = "run_once"`: the newest missed tick is run only if it is no older than
    /// this. Absent: any age.
    pub starting_deadline: Option<PositiveDur>,
    /// Safety rail: a run that would take more actions than this (creates included) acts
    /// on none and fails.
    pub max_actions: Option<u32>,
    /// Safety rail: a run whose destructive actions (deletes, suspends, native expiry)
    /// exceed this percentage (0-100] of the resources they could destroy (owned snapshots,
    /// matched branches, matched endpoints) acts on none and fails. Creates do not count.
    #[schemars(with = "Option<f64>", range(max = 100), extend("exclusiveMinimum" = 0))]
    pub max_actions_percent: Option<Spanned<f64>>,
}

/// One `[[jobs]]` entry. Keys shared by every kind come first; the others belong to one
/// `kind` each (their descriptions say which) and are errors on a job of another kind.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Job", transform = super::describe::job_kind_rules)]
pub struct RawJob {
    /// Unique name of the job; it appears in metrics, logs and the history API, so it has no
    /// whitespace and no `/`.
    #[schemars(with = "String", regex(pattern = r"^[^\s/]+$"))]
    pub name: Spanned<String>,
    /// What the job does.
    #[schemars(with = "JobKind")]
    pub kind: Spanned<JobKind>,
    /// When the job runs, as a cron expression. Give exactly one of `schedule` and `every`.
    #[schemars(with = "Option<CronStr>")]
    pub schedule: Option<Spanned<CronStr>>,
    /// Run at a fixed interval (at least 1s), aligned to multiples of it since the Unix
    /// epoch. Give exactly one of `schedule` and `every`.
    #[schemars(with = "Option<Dur>")]
    pub every: Option<Spanned<Dur>>,
    /// IANA time zone `schedule` is evaluated in and snapshot names are rendered in.
    /// Overrides `[defaults].timezone` (default UTC).
    pub timezone: Option<TzStr>,
    /// Upper bound of a random delay added to each tick (at most 24h, and at most the
    /// interval of an `every` job). Overrides `[defaults].jitter`.
    #[schemars(with = "Option<Dur>")]
    pub jitter: Option<Spanned<Dur>>,
    /// Cancel a run still going after this long (at most 7d; `0s`: never). Overrides
    /// `[defaults].timeout`.
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
    /// What to do when a tick comes while the previous run still runs. Overrides
    /// `[defaults].concurrency`.
    pub concurrency: Option<ConcurrencyPolicy>,
    /// What to do at start-up about missed ticks. Overrides `[defaults].missed`.
    pub missed: Option<MissedPolicy>,
    /// With `missed = "run_once"`: how old the newest missed tick may be. Overrides
    /// `[defaults].starting_deadline`.
    pub starting_deadline: Option<PositiveDur>,
    /// Record what would be done without making any change. Overrides `[defaults].dry_run`.
    pub dry_run: Option<bool>,
    /// `false` suspends the job without deleting it from the file.
    #[schemars(extend("default" = true))]
    pub enabled: Option<bool>,

    /// Which projects the job looks at (every list empty: all projects).
    pub projects: Option<RawProjects>,
    /// Which branches the job looks at (every list empty: all branches).
    #[schemars(with = "Option<RawBranches>")]
    pub branches: Option<Spanned<RawBranches>>,
    /// `suspend_computes` only: which compute endpoints the job looks at.
    #[schemars(with = "Option<RawEndpoints>")]
    pub endpoints: Option<Spanned<RawEndpoints>>,

    /// Safety rail: a run that would act on more resources than this acts on none and fails.
    /// Overrides `[defaults].max_actions`.
    pub max_actions: Option<u32>,
    /// Safety rail: a run whose destructive actions (deletes, suspends, native expiry)
    /// exceed this percentage (0-100] of the resources they could destroy (owned snapshots,
    /// matched branches, matched endpoints) acts on none and fails. Creates do not count.
    /// Overrides `[defaults].max_actions_percent`.
    #[schemars(with = "Option<f64>", range(max = 100), extend("exclusiveMinimum" = 0))]
    pub max_actions_percent: Option<Spanned<f64>>,

    /// `expire_branches` and `suspend_computes` (with `windows`) only: a resource that
    /// becomes due is first marked and announced (a `notice` notification), and acted on
    /// only at a run this long after, if it is still due then and not kept
    /// (`neon-steward keep`). Absent: act at once.
    #[schemars(with = "Option<PositiveDur>")]
    pub notice: Option<Spanned<PositiveDur>>,
    /// The events this job sends to the `[[notify]]` sinks that take them. Absent: all.
    #[schemars(with = "Option<Vec<super::notify::NotifyEvent>>")]
    pub notify: Option<Spanned<Vec<super::notify::NotifyEvent>>>,

    // snapshot_branches
    /// `snapshot_branches` only: name of each snapshot, with the placeholders `{branch}`,
    /// `{date}` (YYYY-MM-DD), `{time}` (HHMMSS) and `{job}`, rendered at the tick in the job's
    /// time zone. `{job}`, `{date}` and `{time}` are required, and no two snapshot jobs may
    /// have templates that can render the same name.
    #[schemars(
        with = "Option<String>",
        regex(
            pattern = r"^\s*([^{\s]|\{(branch|date|time|job)\})([^{]|\{(branch|date|time|job)\})*$"
        )
    )]
    #[schemars(extend("default" = "{job}-{branch}-{date}-{time}"))]
    pub name_template: Option<Spanned<String>>,
    /// `snapshot_branches` only: Neon deletes each snapshot by itself this long after
    /// creation (Neon's native branch expiry). Absent: snapshots do not expire.
    #[schemars(with = "Option<PositiveDur>")]
    pub expires_in: Option<Spanned<PositiveDur>>,
    /// `snapshot_branches` only: which of the snapshots this job created to keep
    /// (restic-forget semantics); the rest are deleted. Absent: keep all.
    #[schemars(with = "Option<RawRetention>")]
    pub retention: Option<Spanned<RawRetention>>,

    // expire_branches
    /// `expire_branches` only: branches created longer ago than this expire. At least one
    /// of `ttl` and `idle_ttl` is required.
    #[schemars(with = "Option<PositiveDur>")]
    pub ttl: Option<Spanned<PositiveDur>>,
    /// `expire_branches` only: branches without activity for this long expire. At least one
    /// of `ttl` and `idle_ttl` is required.
    #[schemars(with = "Option<PositiveDur>")]
    pub idle_ttl: Option<Spanned<PositiveDur>>,
    /// `expire_branches` and `snapshot_branches` only: what the job does.
    /// `expire_branches`: how an expired branch goes away, `delete` (default) or
    /// `set_expires_at`. `snapshot_branches`: `snapshots` (default; the daemon makes and
    /// prunes snapshots) or `backup_schedule` (the daemon sets Neon's own backup schedule
    /// of each selected root branch from `[[jobs.backup_schedule]]`).
    #[schemars(with = "Option<JobMode>")]
    pub mode: Option<Spanned<JobMode>>,
    /// `snapshot_branches` with `mode = "backup_schedule"` only: the backup schedule the job
    /// sets on each selected root branch (an empty list takes back the schedules this job
    /// set). Neon takes the snapshots itself.
    #[schemars(with = "Option<Vec<RawBackupRule>>")]
    pub backup_schedule: Option<Spanned<Vec<Spanned<RawBackupRule>>>>,
    /// `expire_branches` only: `"closed"` also expires a branch once its pull request (merge
    /// request on GitLab) is merged or closed, on the forge `[jobs.forge]` names. With it,
    /// `ttl` and `idle_ttl` are optional (with them: "closed, or older than `ttl`"); the
    /// branch selector's `older_than` is a floor ("closed, and older than"). A branch whose
    /// pull request cannot be found or read is kept, and recorded as skipped with why.
    /// Only with `mode = "delete"`.
    #[schemars(with = "Option<PullRequestCondition>")]
    pub pull_request: Option<Spanned<PullRequestCondition>>,
    /// `expire_branches` with `pull_request` only: the forge and repository, how branch
    /// names map to pull requests, and where the token comes from.
    #[schemars(with = "Option<RawForge>")]
    pub forge: Option<Spanned<RawForge>>,

    // suspend_computes
    /// `suspend_computes` only: suspend active endpoints idle longer than this. At least one
    /// of `idle_for` and `windows` is required.
    #[schemars(with = "Option<PositiveDur>")]
    pub idle_for: Option<Spanned<PositiveDur>>,
    /// `suspend_computes` only: suspend endpoints while inside any of these windows. Each is
    /// `DAYS [HH:MM-HH:MM] [ZONE]` (e.g. `Mon-Fri 20:00-08:00`, `Sat-Sun`,
    /// `Fri 18:00-23:59 America/New_York`; an overnight range ends the next morning) or
    /// `YYYY-MM-DD[..YYYY-MM-DD] [ZONE]` (e.g. `2026-12-24..2026-12-26`).
    #[schemars(with = "Option<Vec<String>>")]
    pub windows: Option<Spanned<Vec<Spanned<String>>>>,
    /// `suspend_computes` only: IANA time zone of the `windows` that name none. Default: the
    /// job's `timezone`.
    #[schemars(with = "Option<TzStr>")]
    pub window_timezone: Option<Spanned<TzStr>>,
    /// `suspend_computes` only: suspend nothing before this instant: `YYYY-MM-DD` (midnight
    /// in `window_timezone`) or an RFC 3339 time such as `2026-12-31T00:00:00Z`.
    #[schemars(
        with = "Option<String>",
        regex(pattern = r"^\d{4}-\d{2}-\d{2}([Tt].+)?$")
    )]
    pub exclude_until: Option<Spanned<String>>,
    /// `suspend_computes` only: temporary exclusions (`[[jobs.exclusions]]`), each naming one
    /// endpoint, branch glob or project and the date `until` which it is left alone.
    #[schemars(with = "Option<Vec<RawExclusion>>")]
    pub exclusions: Option<Spanned<Vec<Spanned<RawExclusion>>>>,
    /// `suspend_computes` only: start the endpoints this job suspended again when their
    /// window ends.
    #[schemars(with = "Option<bool>", extend("default" = false))]
    pub resume: Option<Spanned<bool>>,

    // collect_consumption
    /// `collect_consumption` only: time bucket of the consumption samples fetched.
    #[schemars(with = "Option<Granularity>", extend("default" = "hourly"))]
    pub granularity: Option<Spanned<Granularity>>,
    /// `collect_consumption` only (and required there): the Neon consumption metrics to
    /// collect, named as the `endpoint` names them: for `v2` e.g. `compute_unit_seconds`,
    /// `root_branch_bytes_month`, `child_branch_bytes_month`, `public_network_transfer_bytes`;
    /// for `legacy` e.g. `active_time_seconds`, `compute_time_seconds`, `written_data_bytes`.
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub metrics: Option<Spanned<Vec<Spanned<String>>>>,
    /// `collect_consumption` only: the Neon organization whose consumption is collected.
    /// Required unless `endpoint = "legacy"` (Neon's v2 endpoint needs it).
    #[schemars(with = "Option<String>")]
    pub org_id: Option<Spanned<String>>,
    /// `collect_consumption` only: which of Neon's consumption endpoints to poll; it depends
    /// on the account's plan.
    #[schemars(with = "Option<ConsumptionEndpoint>", extend("default" = "v2"))]
    pub endpoint: Option<Spanned<ConsumptionEndpoint>>,
    /// `collect_consumption` only: per-project gauges are exported for at most this many
    /// projects; the rest are summed as `other` (bounds metric cardinality).
    #[schemars(with = "Option<u32>", extend("default" = 50))]
    pub max_projects_exported: Option<Spanned<usize>>,
    /// `collect_consumption` only: price per unit of each metric (metric name = price), for
    /// the estimated-cost gauge.
    #[schemars(with = "Option<BTreeMap<String, NonNegative>>")]
    pub prices: Option<Spanned<BTreeMap<String, f64>>>,
    /// `collect_consumption` only: also collect each branch's consumption into the store
    /// (Neon's `/consumption_history/v2/branches`, usage-based plans; `endpoint = "v2"` only),
    /// for the job's metrics that endpoint takes (all but `extra_branches_month` and
    /// `snapshot_storage_bytes_month`). Per-branch samples are stored, not exported as gauges.
    #[schemars(with = "Option<bool>", extend("default" = false))]
    pub per_branch: Option<Spanned<bool>>,

    // enforce_budget
    /// `enforce_budget` only: the budget, its thresholds and their actions.
    #[schemars(with = "Option<RawBudget>")]
    pub budget: Option<Spanned<RawBudget>>,
}

/// `[jobs.budget]` (`enforce_budget` only): a monthly budget over the job's selected
/// projects (together, or each on its own with `per_project = true`), priced with the price
/// table of a `collect_consumption` job, whose stored samples are the spend.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Budget")]
pub struct RawBudget {
    /// The `collect_consumption` job (by name) whose stored samples and `[jobs.prices]` give
    /// the spend. Its granularity must be `hourly` or `daily`, and it must price every metric
    /// the budget counts (the guard never runs on invented prices).
    #[schemars(with = "String")]
    pub consumption_job: Spanned<String>,
    /// The metrics of the consumption job that make up the spend (each needs a price in its
    /// `[jobs.prices]`). Default: all of that job's metrics.
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub metrics: Option<Spanned<Vec<String>>>,
    /// The budget per calendar month, in the price table's currency (greater than 0).
    #[schemars(with = "f64", extend("exclusiveMinimum" = 0))]
    pub limit: Spanned<f64>,
    /// The price table's currency (ISO 4217 code such as `USD`), for the gauges and the
    /// ledger; it does not convert anything.
    #[schemars(with = "String", regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: Spanned<String>,
    /// IANA time zone of the calendar month. Default: the job's `timezone`.
    pub timezone: Option<TzStr>,
    /// `true`: each selected project has a budget of `limit` of its own; `false` (default):
    /// one budget for all of them together.
    #[serde(default)]
    pub per_project: bool,
    /// The projection to the month's end is the run rate (cost per hour) of the last this
    /// many days of collected consumption (1 to 31; default 7).
    #[schemars(with = "Option<u32>", range(min = 1, max = 31))]
    pub projection_days: Option<Spanned<u32>>,
    /// Percentages of `limit` whose crossing by the month-to-date spend triggers actions.
    #[schemars(with = "Vec<RawThreshold>", length(min = 1))]
    pub thresholds: Spanned<Vec<Spanned<RawThreshold>>>,
}

/// One `[[jobs.budget.thresholds]]` entry: when the month-to-date spend reaches `percent` of
/// the limit, take `actions` (each at most once a month for the notice; the cost actions are
/// undone when the month rolls over or the threshold is no longer reached).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Threshold")]
pub struct RawThreshold {
    /// Percentage of the limit (greater than 0, at most 1000), e.g. 80, 100, 120.
    #[schemars(with = "f64", extend("exclusiveMinimum" = 0), range(max = 1000))]
    pub percent: Spanned<f64>,
    /// What to do: `notify`, `suspend_computes` (suspend the active computes of non-default
    /// branches), `lower_max_cu` (needs `max_cu`), `shorten_suspend_timeout` (needs
    /// `suspend_timeout`).
    #[schemars(with = "Vec<BudgetActionKind>", length(min = 1))]
    pub actions: Spanned<Vec<BudgetActionKind>>,
    /// With `lower_max_cu`: the `autoscaling_limit_max_cu` endpoints are lowered to (0.25,
    /// 0.5 or a whole number up to 56); a higher minimum is lowered with it.
    #[schemars(with = "Option<f64>")]
    pub max_cu: Option<Spanned<f64>>,
    /// With `shorten_suspend_timeout`: the `suspend_timeout_seconds` endpoints with a longer
    /// (or no) suspend timeout get (between 1m and 7d, whole seconds).
    #[schemars(with = "Option<PositiveDur>")]
    pub suspend_timeout: Option<Spanned<PositiveDur>>,
}

/// `[jobs.projects]`: which projects a job looks at. Every list empty: all projects.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Projects")]
pub struct RawProjects {
    /// Only these project ids.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Only the projects of this Neon organization.
    pub org_id: Option<String>,
    /// Only projects whose name matches one of these globs (`prod-*`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub names: Vec<Spanned<String>>,
    /// Only projects whose name matches this regular expression.
    #[schemars(with = "Option<String>")]
    pub name_regex: Option<Spanned<String>>,
    /// Never these project ids.
    #[serde(default)]
    pub exclude_ids: Vec<String>,
    /// Never projects whose name matches one of these globs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exclude_names: Vec<Spanned<String>>,
}

/// `[jobs.branches]`: which branches a job looks at. Every list empty: all branches.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Branches")]
pub struct RawBranches {
    /// Only branches whose name matches one of these globs (`preview/*`, `pr-*`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub names: Vec<Spanned<String>>,
    /// Never branches whose name matches one of these globs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exclude: Vec<Spanned<String>>,
    /// Only branches created longer ago than this.
    pub older_than: Option<Dur>,
    /// Only branches without activity for this long.
    pub inactive_for: Option<Dur>,
    /// `true`: only each project's default branch; `false`: never it. Absent: both.
    pub default: Option<bool>,
}

/// `[jobs.forge]` (`expire_branches` with `pull_request`): where a branch's pull request is.
/// The token comes from exactly one of `token_file`, `token_env` and `token_credential`,
/// never from this file.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Forge")]
pub struct RawForge {
    /// `github` (GitHub, GitHub Enterprise Server) or `gitlab` (GitLab.com, self-managed).
    pub kind: ForgeKind,
    /// `owner/name` on GitHub, `group/[subgroup/]name` on GitLab.
    #[schemars(with = "String", regex(pattern = r"^[^/\s]+(/[^/\s]+)+$"))]
    pub repository: Spanned<String>,
    /// The forge's API root: default `https://api.github.com` or
    /// `https://gitlab.com/api/v4`; e.g. `https://github.example.com/api/v3` (Enterprise) or
    /// `https://gitlab.example.com/api/v4`. https, or http only to a loopback host.
    /// NEON_STEWARD_GITHUB_API_URL / NEON_STEWARD_GITLAB_API_URL override it.
    #[schemars(with = "Option<String>", regex(pattern = r"^https?://"))]
    pub api_url: Option<Spanned<String>>,
    /// How a branch name names its pull request: literal text with one `{number}` (the
    /// pull request's number, e.g. `preview/pr-{number}-*`, `pr-{number}`) or one `{ref}`
    /// (its head ref, the git branch, e.g. `preview/{ref}`); `*` is any text (not with
    /// `{ref}`). Branches whose name does not fit are left to `ttl`/`idle_ttl`.
    #[schemars(with = "String")]
    pub branch: Spanned<String>,
    /// A file holding the token (relative paths are relative to this policy file).
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token (e.g. `GITHUB_TOKEN`).
    #[schemars(with = "Option<String>")]
    pub token_env: Option<Spanned<String>>,
    /// The name of a systemd credential (`LoadCredential=`) holding the token, read from
    /// `$CREDENTIALS_DIRECTORY`.
    #[schemars(with = "Option<String>")]
    pub token_credential: Option<Spanned<String>>,
    /// Retries of one forge request (5xx, 429, rate limited, connection failures), at most 20.
    #[schemars(with = "Option<u32>", range(max = 20), extend("default" = 4))]
    pub max_retries: Option<Spanned<u32>>,
    /// Timeout of one forge request (at most 1h).
    #[schemars(with = "Option<PositiveDur>", extend("default" = "30s"))]
    pub timeout: Option<Spanned<PositiveDur>>,
}

/// `[jobs.endpoints]` (`suspend_computes` only): which compute endpoints a job looks at.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Endpoints")]
pub struct RawEndpoints {
    /// Only endpoints of this type. Absent: both.
    #[serde(rename = "type")]
    pub endpoint_type: Option<EndpointType>,
    /// Only endpoints attached to a branch whose name matches one of these globs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub branches: Vec<Spanned<String>>,
    /// Never these endpoint ids (`ep-...`). An excluded endpoint the job would have
    /// suspended is recorded as skipped, with the exclusion as the reason.
    #[serde(default)]
    pub exclude_ids: Vec<String>,
    /// Never endpoints attached to a branch whose name matches one of these globs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exclude_branches: Vec<Spanned<String>>,
}

/// One `[[jobs.exclusions]]` entry (`suspend_computes` only): leave one endpoint, the
/// endpoints of matching branches, or a whole project alone until a date, e.g.
/// `{ endpoint = "ep-cool-darkness-123456", until = "2026-12-31" }`. Name exactly one of
/// `endpoint`, `branch` and `project`. For a permanent exclusion use
/// `[jobs.endpoints].exclude_ids` / `exclude_branches` or `[jobs.projects].exclude_ids`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Exclusion")]
#[schemars(extend("oneOf" = [
    { "required": ["endpoint"] },
    { "required": ["branch"] },
    { "required": ["project"] },
]))]
pub struct RawExclusion {
    /// An endpoint id (`ep-...`).
    pub endpoint: Option<String>,
    /// A glob over branch names (`release/*`): endpoints attached to matching branches.
    #[schemars(with = "Option<String>")]
    pub branch: Option<Spanned<String>>,
    /// A project id: every endpoint of the project.
    pub project: Option<String>,
    /// The exclusion holds before this instant: `YYYY-MM-DD` (midnight in `window_timezone`)
    /// or an RFC 3339 time such as `2026-12-31T00:00:00Z`.
    #[schemars(with = "String", regex(pattern = r"^\d{4}-\d{2}-\d{2}([Tt].+)?$"))]
    pub until: Spanned<String>,
    /// Why, for the audit ledger (e.g. "load test until the launch").
    pub note: Option<String>,
}

/// `[jobs.retention]` (`snapshot_branches` only): which of the snapshots the job created to
/// keep, as `restic forget` does; the rest are deleted. All absent: keep everything.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Retention")]
pub struct RawRetention {
    /// Keep the newest this many snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last this many hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last this many days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last this many weeks that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last this many months that have one.
    pub keep_monthly: Option<u32>,
}

/// One `[[jobs.backup_schedule]]` rule: when Neon snapshots the branch and how long it keeps
/// each snapshot.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BackupRule")]
pub struct RawBackupRule {
    /// How often Neon snapshots the branch. `hourly` and `yearly` are not offered by Neon's
    /// schedules: for those, use `mode = "snapshots"` (the daemon makes the snapshots).
    #[schemars(with = "super::backup::BackupFrequencyName")]
    pub frequency: Spanned<String>,
    /// The hour (0-23, UTC) of the snapshot. Default 0.
    #[schemars(with = "Option<u32>", range(max = 23))]
    pub hour: Option<Spanned<u32>>,
    /// `weekly`: the day of the week (1-7); `monthly`: the day of the month (1-31). Default
    /// 1. Not for `daily`.
    #[schemars(with = "Option<u32>", range(min = 1, max = 31))]
    pub day: Option<Spanned<u32>>,
    /// How long Neon keeps each snapshot: at least 1h, at most 35d (Neon's limit). Default
    /// 35d.
    #[schemars(with = "Option<PositiveDur>", extend("default" = "35d"))]
    pub retention: Option<Spanned<PositiveDur>>,
}
