//! One struct per observable event. `emit()` writes the log line and updates the metric,
//! so logs and metrics cannot drift. Add new events here rather than calling `tracing` or
//! the metric families from elsewhere for things that are also counted.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::metrics::metrics;
use crate::store::{ActionCounts, ActionOutcome, RunId, RunStatus, Trigger};

/// A Neon API request finished (successfully or not). `route` is the path template.
pub struct ApiRequestCompleted<'a> {
    pub method: &'a str,
    pub route: &'a str,
    /// HTTP status, or `None` for a transport error / timeout.
    pub status: Option<u16>,
    pub elapsed: Duration,
    pub request_id: &'a str,
}

impl ApiRequestCompleted<'_> {
    pub fn emit(&self) {
        let class = match self.status {
            Some(s) => match s {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            None => "error",
        };
        tracing::debug!(
            method = self.method,
            route = self.route,
            status = self.status,
            elapsed_ms = self.elapsed.as_millis() as u64,
            request_id = self.request_id,
            "neon api request"
        );
        let m = metrics();
        m.api_requests_total
            .with_label_values(&[self.method, self.route, class])
            .inc();
        m.api_request_duration_seconds
            .with_label_values(&[self.method, self.route])
            .observe(self.elapsed.as_secs_f64());
        if self.status == Some(429) {
            m.api_rate_limited_total
                .with_label_values(&[self.route])
                .inc();
        }
    }
}

/// A request is about to be retried.
pub struct ApiRetry<'a> {
    pub method: &'a str,
    pub route: &'a str,
    /// One of `locked`, `rate_limited`, `unavailable`, `server_error`, `timeout`, `connect`.
    pub reason: &'static str,
    pub attempt: u32,
    pub delay: Duration,
}

impl ApiRetry<'_> {
    pub fn emit(&self) {
        tracing::info!(
            method = self.method,
            route = self.route,
            reason = self.reason,
            attempt = self.attempt,
            delay_ms = self.delay.as_millis() as u64,
            "retrying neon api request"
        );
        metrics()
            .api_retries_total
            .with_label_values(&[self.reason])
            .inc();
    }
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A run of a job starts (after its tick was claimed in the store).
pub struct JobRunStarted<'a> {
    pub job: &'a str,
    pub kind: &'a str,
    pub run_id: RunId,
    pub trigger: Trigger,
    pub dry_run: bool,
}

impl JobRunStarted<'_> {
    pub fn emit(&self) {
        tracing::info!(
            job = self.job,
            kind = self.kind,
            run_id = self.run_id,
            trigger = self.trigger.as_str(),
            dry_run = self.dry_run,
            "job run started"
        );
        init_job_series(self.job, self.kind);
        metrics().job_running.with_label_values(&[self.job]).inc();
    }
}

/// The outcomes [`JobRunFinished`] counts a run under in `job_runs_total`.
pub const RUN_OUTCOMES: [RunStatus; 4] = [
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Partial,
    RunStatus::Interrupted,
];

/// The reasons [`JobTickSkipped`] counts a tick under in `job_skipped_ticks_total`.
pub const SKIP_REASONS: [&str; 4] = ["overlap", "missed", "claimed_elsewhere", "store_error"];

/// Creates the job's counter series for every outcome and skip reason, at 0 (or leaves them
/// as they are). A counter series that is born at 1 has no earlier sample, so `increase()`
/// cannot see its first step: without this, an alert on
/// `increase(job_runs_total{outcome="failed"}[1h]) > 0` would miss a job's first failure.
fn init_job_series(job: &str, kind: &str) {
    let m = metrics();
    for outcome in RUN_OUTCOMES {
        m.job_runs_total
            .with_label_values(&[job, kind, outcome.as_str()])
            .inc_by(0);
    }
    for reason in SKIP_REASONS {
        m.job_skipped_ticks_total
            .with_label_values(&[job, reason])
            .inc_by(0);
    }
}

/// A run started with [`JobRunStarted`] ended. Emit exactly once per started run: it
/// decrements the running gauge.
pub struct JobRunFinished<'a> {
    pub job: &'a str,
    pub kind: &'a str,
    pub run_id: RunId,
    /// One of [`RUN_OUTCOMES`]: `Succeeded`, `Failed`, `Partial` or `Interrupted`.
    pub outcome: RunStatus,
    pub elapsed: Duration,
    pub finished_at: DateTime<Utc>,
    pub counts: ActionCounts,
    pub error: Option<&'a str>,
}

impl JobRunFinished<'_> {
    pub fn emit(&self) {
        let outcome = self.outcome.as_str();
        let elapsed_ms = self.elapsed.as_millis() as u64;
        let c = self.counts;
        match self.outcome {
            RunStatus::Succeeded => tracing::info!(
                job = self.job,
                kind = self.kind,
                run_id = self.run_id,
                outcome,
                elapsed_ms,
                succeeded = c.succeeded,
                failed = c.failed,
                skipped = c.skipped,
                planned = c.planned,
                "job run finished"
            ),
            _ => tracing::warn!(
                job = self.job,
                kind = self.kind,
                run_id = self.run_id,
                outcome,
                elapsed_ms,
                succeeded = c.succeeded,
                failed = c.failed,
                skipped = c.skipped,
                planned = c.planned,
                error = self.error,
                "job run finished"
            ),
        }
        debug_assert!(
            RUN_OUTCOMES.contains(&self.outcome),
            "outcome {outcome} is missing from RUN_OUTCOMES, so its series is not pre-created"
        );
        let m = metrics();
        m.job_runs_total
            .with_label_values(&[self.job, self.kind, outcome])
            .inc();
        m.job_run_duration_seconds
            .with_label_values(&[self.job, self.kind])
            .observe(self.elapsed.as_secs_f64());
        let at = unix_seconds(self.finished_at);
        m.job_last_run_timestamp_seconds
            .with_label_values(&[self.job])
            .set(at);
        if self.outcome == RunStatus::Succeeded {
            m.job_last_success_timestamp_seconds
                .with_label_values(&[self.job])
                .set(at);
        }
        m.job_running.with_label_values(&[self.job]).dec();
    }
}

/// A schedule tick was not run.
pub struct JobTickSkipped<'a> {
    pub job: &'a str,
    /// One of [`SKIP_REASONS`]: `overlap` (concurrency policy `forbid`), `missed` (daemon was
    /// down), `claimed_elsewhere` (another replica claimed the tick), `store_error` (the tick
    /// could not be claimed in the store).
    pub reason: &'static str,
    pub scheduled_for: DateTime<Utc>,
}

impl JobTickSkipped<'_> {
    pub fn emit(&self) {
        tracing::info!(
            job = self.job,
            reason = self.reason,
            scheduled_for = %self.scheduled_for.to_rfc3339(),
            "job tick skipped"
        );
        debug_assert!(
            SKIP_REASONS.contains(&self.reason),
            "skip reason {} is missing from SKIP_REASONS, so its series is not pre-created",
            self.reason
        );
        metrics()
            .job_skipped_ticks_total
            .with_label_values(&[self.job, self.reason])
            .inc();
    }
}

/// The scheduler computed a job's next fire time (at start, on reload, after each tick).
///
/// Also creates the job's `job_runs_total` series for every outcome and its
/// `job_skipped_ticks_total` series for every reason at 0, so a first failure is a visible
/// step from 0 to 1 for `increase()` rather than a series born at 1.
pub struct JobScheduled<'a> {
    pub job: &'a str,
    /// The job's kind as in the policy (`snapshot_branches`, ...), the `kind` label of
    /// `job_runs_total`.
    pub kind: &'a str,
    pub next_run: DateTime<Utc>,
    /// Nominal time between two runs (the interval, or the gap between the next two cron
    /// fire times), exported so alerts can say "no success for 2 intervals".
    pub interval: Option<Duration>,
}

impl JobScheduled<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            job = self.job,
            next_run = %self.next_run.to_rfc3339(),
            interval_s = self.interval.map(|d| d.as_secs()),
            "job scheduled"
        );
        init_job_series(self.job, self.kind);
        let m = metrics();
        m.job_next_run_timestamp_seconds
            .with_label_values(&[self.job])
            .set(unix_seconds(self.next_run));
        if let Some(interval) = self.interval {
            m.job_interval_seconds
                .with_label_values(&[self.job])
                .set(interval.as_secs_f64());
        }
    }
}

/// A job left the policy (reload) and has no run in progress any more: every series with
/// its `job_name` is removed, so a job that no longer exists neither fires the staleness
/// alert (`job_last_success_timestamp_seconds` frozen while `job_interval_seconds` stays)
/// nor lingers on dashboards.
pub struct JobUnscheduled<'a> {
    pub job: &'a str,
}

impl JobUnscheduled<'_> {
    pub fn emit(&self) {
        tracing::info!(
            job = self.job,
            "job removed from the policy; its metric series are removed"
        );
        let m = metrics();
        remove_job_series(&m.job_runs_total, self.job);
        remove_job_series(&m.job_run_duration_seconds, self.job);
        remove_job_series(&m.job_last_run_timestamp_seconds, self.job);
        remove_job_series(&m.job_last_success_timestamp_seconds, self.job);
        remove_job_series(&m.job_next_run_timestamp_seconds, self.job);
        remove_job_series(&m.job_interval_seconds, self.job);
        remove_job_series(&m.job_running, self.job);
        remove_job_series(&m.job_skipped_ticks_total, self.job);
        remove_job_series(&m.actions_total, self.job);
    }
}

/// Removes every series of `family` whose `job_name` label is `job`, whatever its other
/// labels (the families only offer removal by the full label set).
fn remove_job_series<T: prometheus::core::MetricVecBuilder>(
    family: &prometheus::core::MetricVec<T>,
    job: &str,
) {
    use prometheus::core::Collector;
    for mf in family.collect() {
        for metric in mf.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("job_name") == Some(&job) {
                // Absent already (a concurrent removal): nothing to do.
                let _ = family.remove(&labels);
            }
        }
    }
}

/// An action of a job on a Neon resource reached its outcome (emit once per action, with
/// the final outcome; a `Pending` outcome is logged but not counted).
pub struct ActionRecorded<'a> {
    pub job: &'a str,
    pub run_id: RunId,
    pub action: &'a str,
    pub outcome: ActionOutcome,
    pub dry_run: bool,
    pub resource_kind: &'a str,
    pub resource_id: &'a str,
    pub resource_name: Option<&'a str>,
    pub project_id: Option<&'a str>,
    pub reason: &'a str,
    /// Error message for a failure, extra facts otherwise.
    pub detail: Option<&'a str>,
}

impl ActionRecorded<'_> {
    pub fn emit(&self) {
        let outcome = self.outcome.as_str();
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    job = self.job,
                    run_id = self.run_id,
                    action = self.action,
                    outcome,
                    dry_run = self.dry_run,
                    resource_kind = self.resource_kind,
                    resource_id = self.resource_id,
                    resource_name = self.resource_name,
                    project_id = self.project_id,
                    reason = self.reason,
                    detail = self.detail,
                    "action"
                )
            };
        }
        match self.outcome {
            ActionOutcome::Pending => {
                log!(debug);
                return;
            }
            ActionOutcome::Failed | ActionOutcome::Unknown => log!(warn),
            _ => log!(info),
        }
        metrics()
            .actions_total
            .with_label_values(&[self.job, self.action, outcome, bool_label(self.dry_run)])
            .inc();
    }
}

fn bool_label(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// The policy file was loaded (at start) or reloaded (SIGHUP).
pub struct ConfigReloaded<'a> {
    pub path: &'a str,
    /// `Err` carries the full, human-readable reason (file, line, column).
    pub result: Result<(), &'a str>,
    pub at: DateTime<Utc>,
}

impl ConfigReloaded<'_> {
    pub fn emit(&self) {
        let m = metrics();
        match self.result {
            Ok(()) => {
                tracing::info!(path = self.path, "configuration loaded");
                m.config_last_reload_successful.set(1.0);
                m.config_last_reload_success_timestamp_seconds
                    .set(unix_seconds(self.at));
                m.config_reloads_total.with_label_values(&["success"]).inc();
            }
            Err(error) => {
                tracing::error!(
                    path = self.path,
                    error,
                    "configuration reload failed; keeping the previous configuration"
                );
                m.config_last_reload_successful.set(0.0);
                m.config_reloads_total.with_label_values(&["failure"]).inc();
            }
        }
    }
}

/// One exported consumption value (the latest complete period of one project and metric).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumptionPoint {
    pub project_id: String,
    pub metric: String,
    pub granularity: String,
    /// Start of the period the value covers: only points of one period are exported
    /// together, so a sum (`other`) never adds up different periods.
    pub period_start: DateTime<Utc>,
    pub value: f64,
    /// From the configured price table; `None` when the metric has no price.
    pub cost: Option<f64>,
}

/// The project id under which projects beyond the cap are summed.
pub const OTHER_PROJECTS: &str = "other";

/// `(project_id, metric)` label pairs exported for one granularity.
type SeriesKeys = HashSet<(String, String)>;

/// What one job last handed in for one granularity.
struct Contribution {
    points: Vec<ConsumptionPoint>,
    max_projects: usize,
}

/// Per granularity: each job's latest contribution, and the label sets last exported (so
/// series of projects that disappeared, or fell under the cap, are removed instead of
/// reporting a stale value forever).
#[derive(Default)]
struct Exported {
    contributions: HashMap<String, Contribution>,
    series: SeriesKeys,
}

static EXPORTED: LazyLock<Mutex<HashMap<String, Exported>>> = LazyLock::new(Default::default);

/// Consumption gauges are replaced with the latest complete period of one granularity.
///
/// Several `collect_consumption` jobs may share a granularity (one per organization, say):
/// the gauges have no job label (that would duplicate a project's series per job and make
/// every sum over them count it twice), so each job's points are kept as its contribution
/// and the series of a granularity are computed from all contributions together. A job thus
/// never removes another job's series, and a project selected by two jobs has one series.
///
/// Only the newest period among the contributions is exported: a project whose latest
/// sample is older (deleted, no longer selected, a lagging job) gets no series, and
/// `project_id="other"` sums one period only.
///
/// At most `max_projects` projects get their own series (the smallest cap of the jobs
/// contributing); they are the ones with the highest estimated cost (then the highest summed
/// value, then project id, so the choice is stable). The rest are summed into
/// `project_id="other"`, which keeps label cardinality bounded on accounts with thousands of
/// projects.
pub struct ConsumptionExported<'a> {
    /// The policy job exporting (its previous contribution is replaced).
    pub job: &'a str,
    pub granularity: &'a str,
    pub points: &'a [ConsumptionPoint],
    pub max_projects: usize,
}

impl ConsumptionExported<'_> {
    pub fn emit(&self) {
        let m = metrics();
        let mut exported = EXPORTED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = exported.entry(self.granularity.to_string()).or_default();
        slot.contributions.insert(
            self.job.to_string(),
            Contribution {
                points: self
                    .points
                    .iter()
                    .filter(|p| p.granularity == self.granularity)
                    .cloned()
                    .collect(),
                max_projects: self.max_projects,
            },
        );
        let max_projects = slot
            .contributions
            .values()
            .map(|c| c.max_projects)
            .min()
            .unwrap_or(self.max_projects);
        // The newest period, and one point per (project, metric) in it: the values come
        // from the shared store, so two jobs selecting a project report the same number.
        let latest = slot
            .contributions
            .values()
            .flat_map(|c| c.points.iter().map(|p| p.period_start))
            .max();
        let mut unique: HashMap<(&str, &str), &ConsumptionPoint> = HashMap::new();
        for p in slot.contributions.values().flat_map(|c| c.points.iter()) {
            if Some(p.period_start) == latest {
                unique.insert((p.project_id.as_str(), p.metric.as_str()), p);
            }
        }
        let points: Vec<&ConsumptionPoint> = unique.into_values().collect();

        // Rank projects.
        let mut totals: HashMap<&str, (f64, f64)> = HashMap::new();
        for p in &points {
            let e = totals.entry(p.project_id.as_str()).or_default();
            e.0 += p.cost.unwrap_or(0.0);
            e.1 += p.value;
        }
        let mut ranked: Vec<(&str, (f64, f64))> = totals.into_iter().collect();
        ranked.sort_by(|a, b| {
            b.1 .0
                .total_cmp(&a.1 .0)
                .then(b.1 .1.total_cmp(&a.1 .1))
                .then(a.0.cmp(b.0))
        });
        let kept: HashSet<&str> = ranked.iter().take(max_projects).map(|(p, _)| *p).collect();

        // Aggregate into the series to export: (project label, metric) -> (value, cost).
        let mut series: HashMap<(String, String), (f64, Option<f64>)> = HashMap::new();
        for p in &points {
            let project = if kept.contains(p.project_id.as_str()) {
                p.project_id.clone()
            } else {
                OTHER_PROJECTS.to_string()
            };
            let e = series
                .entry((project, p.metric.clone()))
                .or_insert((0.0, None));
            e.0 += p.value;
            if let Some(cost) = p.cost {
                e.1 = Some(e.1.unwrap_or(0.0) + cost);
            }
        }

        for (project, metric) in slot.series.iter() {
            if !series.contains_key(&(project.clone(), metric.clone())) {
                let labels = [project.as_str(), metric.as_str(), self.granularity];
                let _ = m.consumption.remove_label_values(&labels);
                let _ = m.estimated_cost.remove_label_values(&labels);
            }
        }
        for ((project, metric), (value, cost)) in &series {
            let labels = [project.as_str(), metric.as_str(), self.granularity];
            m.consumption.with_label_values(&labels).set(*value);
            match cost {
                Some(cost) => m.estimated_cost.with_label_values(&labels).set(*cost),
                None => {
                    let _ = m.estimated_cost.remove_label_values(&labels);
                }
            }
        }
        slot.series = series.keys().cloned().collect();
        tracing::debug!(
            job = self.job,
            granularity = self.granularity,
            projects = ranked.len(),
            series = series.len(),
            capped = ranked.len().saturating_sub(max_projects),
            "consumption exported"
        );
    }
}

/// A consumption collection finished successfully.
pub struct ConsumptionCollected<'a> {
    pub job: &'a str,
    pub granularity: &'a str,
    pub projects: usize,
    pub samples: usize,
    pub at: DateTime<Utc>,
}

impl ConsumptionCollected<'_> {
    pub fn emit(&self) {
        tracing::info!(
            job = self.job,
            granularity = self.granularity,
            projects = self.projects,
            samples = self.samples,
            "consumption collected"
        );
        metrics()
            .consumption_last_collected_timestamp_seconds
            .set(unix_seconds(self.at));
    }
}

/// A run whose lease had expired was taken over by this replica: marked interrupted, its
/// pending actions to be reconciled and its tick handled by the job's missed-run policy.
pub struct RunTakenOver<'a> {
    pub job: &'a str,
    pub run_id: i64,
    /// The replica that held it (`None`: a run written before leases existed).
    pub owner: Option<&'a str>,
    pub by: &'a str,
}

impl RunTakenOver<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            job = self.job,
            run_id = self.run_id,
            owner = self.owner.unwrap_or("unknown"),
            by = self.by,
            "run taken over: its lease expired (the replica died, hung or lost the store); \
             marked interrupted"
        );
        metrics()
            .runs_taken_over_total
            .with_label_values(&[self.job])
            .inc();
    }
}

/// This replica's run stopped because it no longer holds the run's lease.
pub struct LeaseLost<'a> {
    pub job: &'a str,
    pub run_id: i64,
    pub why: &'a str,
}

impl LeaseLost<'_> {
    pub fn emit(&self) {
        tracing::error!(
            job = self.job,
            run_id = self.run_id,
            why = self.why,
            "lost the run's lease: stopping before the next action"
        );
        metrics()
            .lease_lost_total
            .with_label_values(&[self.job])
            .inc();
    }
}

/// A pending action was resolved by checking Neon.
pub struct ActionReconciled<'a> {
    pub job: &'a str,
    pub run_id: i64,
    pub action: &'a str,
    pub resource_id: &'a str,
    pub outcome: ActionOutcome,
    pub detail: &'a str,
}

impl ActionReconciled<'_> {
    pub fn emit(&self) {
        let outcome = self.outcome.as_str();
        tracing::warn!(
            job = self.job,
            run_id = self.run_id,
            action = self.action,
            resource_id = self.resource_id,
            outcome,
            detail = self.detail,
            "pending action reconciled with Neon"
        );
        metrics()
            .actions_reconciled_total
            .with_label_values(&[self.action, outcome])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    //! Metrics are process-global: every test uses its own job names / granularities.

    use super::*;

    #[test]
    fn unscheduled_jobs_lose_their_gauges() {
        let job = "events-test-unscheduled";
        let has = |name: &str| {
            metrics().registry.gather().iter().any(|mf| {
                mf.name() == name
                    && mf
                        .get_metric()
                        .iter()
                        .any(|m| m.get_label().iter().any(|l| l.value() == job))
            })
        };
        JobScheduled {
            job,
            kind: "expire_branches",
            next_run: Utc::now(),
            interval: Some(Duration::from_secs(900)),
        }
        .emit();
        assert!(has("neon_steward_job_interval_seconds"));
        assert!(has("neon_steward_job_next_run_timestamp_seconds"));
        JobUnscheduled { job }.emit();
        assert!(!has("neon_steward_job_interval_seconds"));
        assert!(!has("neon_steward_job_next_run_timestamp_seconds"));
        // Counters go too: no series of a job that no longer exists remains.
        assert!(!has("neon_steward_job_runs_total"));
    }
    use crate::telemetry::metrics::render;

    /// Serialises the tests that emit [`ConfigReloaded`]: its gauges have no label to keep
    /// tests apart.
    static CONFIG_FAMILIES: Mutex<()> = Mutex::new(());

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid test timestamp")
    }

    #[test]
    fn unscheduled_job_loses_every_series() {
        let (gone, kept) = ("t-unscheduled-gone", "t-unscheduled-kept");
        for job in [gone, kept] {
            JobScheduled {
                job,
                kind: "expire_branches",
                next_run: at(1_000),
                interval: Some(Duration::from_secs(3600)),
            }
            .emit();
            JobRunStarted {
                job,
                kind: "expire_branches",
                run_id: 1,
                trigger: Trigger::Schedule,
                dry_run: false,
            }
            .emit();
            JobRunFinished {
                job,
                kind: "expire_branches",
                run_id: 1,
                outcome: RunStatus::Succeeded,
                elapsed: Duration::from_millis(10),
                finished_at: at(900),
                counts: ActionCounts::default(),
                error: None,
            }
            .emit();
            ActionRecorded {
                job,
                run_id: 1,
                action: "delete_branch",
                outcome: ActionOutcome::Succeeded,
                dry_run: false,
                resource_kind: "branch",
                resource_id: "br-1",
                resource_name: None,
                project_id: Some("p-1"),
                reason: "test",
                detail: None,
            }
            .emit();
        }
        let before = render();
        assert!(before.contains(&format!(
            "job_last_success_timestamp_seconds{{job_name=\"{gone}\"}}"
        )));

        JobUnscheduled { job: gone }.emit();
        let after = render();
        assert!(
            !after.contains(&format!("job_name=\"{gone}\"")),
            "series of the removed job remain:\n{}",
            after
                .lines()
                .filter(|l| l.contains(gone))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for family in [
            "job_runs_total",
            "job_run_duration_seconds_count",
            "job_last_success_timestamp_seconds",
            "job_interval_seconds",
            "job_next_run_timestamp_seconds",
            "job_skipped_ticks_total",
            "actions_total",
        ] {
            assert!(
                after
                    .lines()
                    .any(|l| l.starts_with(&format!("neon_steward_{family}{{")) && l.contains(kept)),
                "{family} of the kept job is still there"
            );
        }
    }

    #[test]
    fn run_started_and_finished_move_their_metrics() {
        let m = metrics();
        let job = "t-run-lifecycle";
        JobRunStarted {
            job,
            kind: "snapshot",
            run_id: 1,
            trigger: Trigger::Schedule,
            dry_run: false,
        }
        .emit();
        assert_eq!(m.job_running.with_label_values(&[job]).get(), 1);
        let finished = |outcome, secs| JobRunFinished {
            job,
            kind: "snapshot",
            run_id: 1,
            outcome,
            elapsed: Duration::from_millis(1500),
            finished_at: at(secs),
            counts: ActionCounts {
                succeeded: 2,
                ..Default::default()
            },
            error: None,
        };
        finished(RunStatus::Succeeded, 1_700_000_000).emit();
        assert_eq!(m.job_running.with_label_values(&[job]).get(), 0);
        assert_eq!(
            m.job_runs_total
                .with_label_values(&[job, "snapshot", "succeeded"])
                .get(),
            1
        );
        let h = m
            .job_run_duration_seconds
            .with_label_values(&[job, "snapshot"]);
        assert_eq!(h.get_sample_count(), 1);
        assert!((h.get_sample_sum() - 1.5).abs() < 1e-9);
        assert_eq!(
            m.job_last_run_timestamp_seconds
                .with_label_values(&[job])
                .get(),
            1.7e9
        );
        assert_eq!(
            m.job_last_success_timestamp_seconds
                .with_label_values(&[job])
                .get(),
            1.7e9
        );

        JobRunStarted {
            job,
            kind: "snapshot",
            run_id: 2,
            trigger: Trigger::Manual,
            dry_run: true,
        }
        .emit();
        finished(RunStatus::Failed, 1_700_000_100).emit();
        assert_eq!(
            m.job_runs_total
                .with_label_values(&[job, "snapshot", "failed"])
                .get(),
            1
        );
        assert_eq!(
            m.job_last_run_timestamp_seconds
                .with_label_values(&[job])
                .get(),
            1_700_000_100.0
        );
        assert_eq!(
            m.job_last_success_timestamp_seconds
                .with_label_values(&[job])
                .get(),
            1.7e9,
            "a failure does not move the last success"
        );
        assert_eq!(m.job_running.with_label_values(&[job]).get(), 0);
    }

    #[test]
    fn skipped_and_scheduled() {
        let m = metrics();
        let job = "t-skip-sched";
        JobTickSkipped {
            job,
            reason: "overlap",
            scheduled_for: at(10),
        }
        .emit();
        JobTickSkipped {
            job,
            reason: "overlap",
            scheduled_for: at(20),
        }
        .emit();
        assert_eq!(
            m.job_skipped_ticks_total
                .with_label_values(&[job, "overlap"])
                .get(),
            2
        );
        JobScheduled {
            job,
            kind: "snapshot_branches",
            next_run: at(3600),
            interval: Some(Duration::from_secs(900)),
        }
        .emit();
        assert_eq!(
            m.job_next_run_timestamp_seconds
                .with_label_values(&[job])
                .get(),
            3600.0
        );
        assert_eq!(
            m.job_interval_seconds.with_label_values(&[job]).get(),
            900.0
        );
    }

    /// The exported (not merely declared) series of a counter family for one job:
    /// label `label` -> value. Reads the registry, so it creates no series itself.
    fn job_counters(family: &str, job: &str, label: &str) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        for mf in metrics().registry.gather() {
            if mf.name() != family {
                continue;
            }
            for metric in mf.get_metric() {
                let value = |n: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_string())
                };
                if value("job_name").as_deref() == Some(job) {
                    let key = value(label).expect("the family has the label");
                    out.insert(key, metric.get_counter().get_value());
                }
            }
        }
        out
    }

    #[test]
    fn scheduling_a_job_creates_its_counters_at_zero() {
        let job = "t-init-series";
        let runs = || job_counters("neon_steward_job_runs_total", job, "outcome");
        let skips = || job_counters("neon_steward_job_skipped_ticks_total", job, "reason");
        assert!(
            runs().is_empty() && skips().is_empty(),
            "no series before the event"
        );

        let scheduled = || JobScheduled {
            job,
            kind: "expire_branches",
            next_run: at(120),
            interval: Some(Duration::from_secs(60)),
        };
        scheduled().emit();
        let zeros = |keys: &[&str]| -> HashMap<String, f64> {
            keys.iter().map(|k| (k.to_string(), 0.0)).collect()
        };
        assert_eq!(
            runs(),
            zeros(&["succeeded", "failed", "partial", "interrupted"])
        );
        assert_eq!(
            skips(),
            zeros(&["overlap", "missed", "claimed_elsewhere", "store_error"])
        );
        // The kind label is the one later runs use, so a failure increments this very series.
        let kinds: HashSet<String> = metrics()
            .registry
            .gather()
            .iter()
            .filter(|mf| mf.name() == "neon_steward_job_runs_total")
            .flat_map(|mf| mf.get_metric().to_vec())
            .filter(|m| m.get_label().iter().any(|l| l.value() == job))
            .filter_map(|m| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == "kind")
                    .map(|l| l.value().to_string())
            })
            .collect();
        assert_eq!(kinds, HashSet::from(["expire_branches".to_string()]));

        // A failure, then a reschedule (next tick, or a reload): the count is kept.
        JobRunStarted {
            job,
            kind: "expire_branches",
            run_id: 1,
            trigger: Trigger::Schedule,
            dry_run: false,
        }
        .emit();
        JobRunFinished {
            job,
            kind: "expire_branches",
            run_id: 1,
            outcome: RunStatus::Failed,
            elapsed: Duration::from_millis(5),
            finished_at: at(130),
            counts: ActionCounts::default(),
            error: Some("boom"),
        }
        .emit();
        scheduled().emit();
        let after = runs();
        assert_eq!(after["failed"], 1.0);
        assert_eq!(after["succeeded"], 0.0);
        assert_eq!(after.len(), 4, "{after:?}");
    }

    #[test]
    fn a_started_run_creates_its_counters_at_zero() {
        // A manual run of a job that is never scheduled (disabled) still gets its series
        // before it can fail.
        let job = "t-init-on-start";
        JobRunStarted {
            job,
            kind: "suspend_computes",
            run_id: 1,
            trigger: Trigger::Manual,
            dry_run: true,
        }
        .emit();
        let runs = job_counters("neon_steward_job_runs_total", job, "outcome");
        assert_eq!(runs.len(), 4, "{runs:?}");
        assert!(runs.values().all(|v| *v == 0.0), "{runs:?}");
        assert_eq!(
            job_counters("neon_steward_job_skipped_ticks_total", job, "reason").len(),
            4
        );
    }

    #[test]
    fn actions_count_final_outcomes_only() {
        let m = metrics();
        let job = "t-actions";
        let ev = |outcome, dry_run| ActionRecorded {
            job,
            run_id: 7,
            action: "delete_branch",
            outcome,
            dry_run,
            resource_kind: "branch",
            resource_id: "br-x",
            resource_name: Some("preview/x"),
            project_id: Some("p-1"),
            reason: "age 9d > ttl 7d",
            detail: None,
        };
        let count = |outcome: &str, dry: &str| {
            m.actions_total
                .with_label_values(&[job, "delete_branch", outcome, dry])
                .get()
        };
        ev(ActionOutcome::Pending, false).emit();
        assert_eq!(count("pending", "false"), 0);
        ev(ActionOutcome::Succeeded, false).emit();
        ev(ActionOutcome::Planned, true).emit();
        ev(ActionOutcome::Failed, false).emit();
        assert_eq!(count("succeeded", "false"), 1);
        assert_eq!(count("planned", "true"), 1);
        assert_eq!(count("failed", "false"), 1);
    }

    #[test]
    fn config_reload_success_and_failure() {
        let _serial = CONFIG_FAMILIES.lock().unwrap_or_else(|p| p.into_inner());
        let m = metrics();
        let ok_before = m.config_reloads_total.with_label_values(&["success"]).get();
        let fail_before = m.config_reloads_total.with_label_values(&["failure"]).get();
        ConfigReloaded {
            path: "/etc/x.toml",
            result: Ok(()),
            at: at(500),
        }
        .emit();
        assert_eq!(m.config_last_reload_successful.get(), 1.0);
        assert_eq!(m.config_last_reload_success_timestamp_seconds.get(), 500.0);
        ConfigReloaded {
            path: "/etc/x.toml",
            result: Err("line 3, column 1: unknown key"),
            at: at(600),
        }
        .emit();
        assert_eq!(m.config_last_reload_successful.get(), 0.0);
        assert_eq!(
            m.config_last_reload_success_timestamp_seconds.get(),
            500.0,
            "a failed reload keeps the last success time"
        );
        assert_eq!(
            m.config_reloads_total.with_label_values(&["success"]).get(),
            ok_before + 1
        );
        assert_eq!(
            m.config_reloads_total.with_label_values(&["failure"]).get(),
            fail_before + 1
        );
    }

    /// The exported `(project_id, metric)` series of a granularity and their values.
    fn series(family: &str, granularity: &str) -> HashMap<(String, String), f64> {
        let mut out = HashMap::new();
        for mf in metrics().registry.gather() {
            if mf.name() != family {
                continue;
            }
            for metric in mf.get_metric() {
                let label = |n: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_string())
                };
                if label("granularity").as_deref() == Some(granularity) {
                    out.insert(
                        (label("project_id").unwrap(), label("metric").unwrap()),
                        metric.get_gauge().get_value(),
                    );
                }
            }
        }
        out
    }

    fn point(
        project: &str,
        metric: &str,
        granularity: &str,
        value: f64,
        cost: Option<f64>,
    ) -> ConsumptionPoint {
        ConsumptionPoint {
            project_id: project.into(),
            metric: metric.into(),
            granularity: granularity.into(),
            period_start: at(3600),
            value,
            cost,
        }
    }

    #[test]
    fn consumption_export_caps_projects_and_drops_stale_series() {
        let g = "t-cap";
        let points = vec![
            point("p-cheap", "compute_time_seconds", g, 100.0, Some(1.0)),
            point("p-big", "compute_time_seconds", g, 50.0, Some(9.0)),
            point("p-mid", "compute_time_seconds", g, 10.0, Some(4.0)),
            point("p-mid", "written_data_bytes", g, 7.0, None),
            point("p-small", "compute_time_seconds", g, 3.0, Some(0.5)),
        ];
        ConsumptionExported {
            job: "t-job",
            granularity: g,
            points: &points,
            max_projects: 2,
        }
        .emit();
        let values = series("neon_steward_consumption", g);
        let key = |p: &str, m: &str| (p.to_string(), m.to_string());
        assert_eq!(values.len(), 4, "{values:?}");
        assert_eq!(values[&key("p-big", "compute_time_seconds")], 50.0);
        assert_eq!(values[&key("p-mid", "compute_time_seconds")], 10.0);
        assert_eq!(values[&key("p-mid", "written_data_bytes")], 7.0);
        assert_eq!(values[&key(OTHER_PROJECTS, "compute_time_seconds")], 103.0);
        let costs = series("neon_steward_estimated_cost", g);
        assert_eq!(costs[&key(OTHER_PROJECTS, "compute_time_seconds")], 1.5);
        assert!(
            !costs.contains_key(&key("p-mid", "written_data_bytes")),
            "no price, no cost series"
        );

        // Next period: p-mid is gone, everything fits under the cap.
        let points = vec![point("p-big", "compute_time_seconds", g, 60.0, Some(10.0))];
        ConsumptionExported {
            job: "t-job",
            granularity: g,
            points: &points,
            max_projects: 2,
        }
        .emit();
        let values = series("neon_steward_consumption", g);
        assert_eq!(values.len(), 1, "stale series removed: {values:?}");
        assert_eq!(values[&key("p-big", "compute_time_seconds")], 60.0);
        assert_eq!(series("neon_steward_estimated_cost", g).len(), 1);
    }

    #[test]
    fn consumption_export_leaves_other_granularities_alone() {
        let points = vec![point("p-1", "compute_time_seconds", "t-gran-a", 1.0, None)];
        ConsumptionExported {
            job: "t-job",
            granularity: "t-gran-a",
            points: &points,
            max_projects: 10,
        }
        .emit();
        let points = vec![point("p-1", "compute_time_seconds", "t-gran-b", 2.0, None)];
        ConsumptionExported {
            job: "t-job",
            granularity: "t-gran-b",
            points: &points,
            max_projects: 10,
        }
        .emit();
        assert_eq!(series("neon_steward_consumption", "t-gran-a").len(), 1);
        assert_eq!(series("neon_steward_consumption", "t-gran-b").len(), 1);
    }

    #[test]
    fn two_jobs_of_one_granularity_keep_each_others_series() {
        let g = "t-two-jobs";
        let key = |p: &str, m: &str| (p.to_string(), m.to_string());
        let emit = |job: &str, points: &[ConsumptionPoint]| {
            ConsumptionExported {
                job,
                granularity: g,
                points,
                max_projects: 10,
            }
            .emit()
        };
        emit(
            "org-a",
            &[point("p-a", "compute_unit_seconds", g, 1.0, None)],
        );
        emit(
            "org-b",
            &[point("p-b", "compute_unit_seconds", g, 2.0, None)],
        );
        let values = series("neon_steward_consumption", g);
        assert_eq!(values.len(), 2, "{values:?}");
        // org-a's next export replaces only org-a's series.
        emit(
            "org-a",
            &[point("p-a", "compute_unit_seconds", g, 3.0, None)],
        );
        let values = series("neon_steward_consumption", g);
        assert_eq!(values[&key("p-a", "compute_unit_seconds")], 3.0);
        assert_eq!(values[&key("p-b", "compute_unit_seconds")], 2.0);
        // A job that drops a project removes that series, not the other job's.
        emit("org-a", &[]);
        let values = series("neon_steward_consumption", g);
        assert_eq!(values.len(), 1, "{values:?}");
        assert_eq!(values[&key("p-b", "compute_unit_seconds")], 2.0);
    }

    #[test]
    fn other_sums_one_period_only() {
        let g = "t-one-period";
        let at_period = |mut p: ConsumptionPoint, secs| {
            p.period_start = at(secs);
            p
        };
        // p-old's latest sample is a period behind (deleted project, lagging collection).
        let points = vec![
            at_period(
                point("p-big", "compute_unit_seconds", g, 50.0, Some(5.0)),
                7200,
            ),
            at_period(
                point("p-1", "compute_unit_seconds", g, 2.0, Some(0.2)),
                7200,
            ),
            at_period(
                point("p-2", "compute_unit_seconds", g, 3.0, Some(0.3)),
                7200,
            ),
            at_period(
                point("p-old", "compute_unit_seconds", g, 1000.0, Some(100.0)),
                3600,
            ),
        ];
        ConsumptionExported {
            job: "t-job",
            granularity: g,
            points: &points,
            max_projects: 1,
        }
        .emit();
        let values = series("neon_steward_consumption", g);
        let key = |p: &str| (p.to_string(), "compute_unit_seconds".to_string());
        assert_eq!(values.len(), 2, "{values:?}");
        assert_eq!(values[&key("p-big")], 50.0, "ranked within the period");
        assert_eq!(values[&key(OTHER_PROJECTS)], 5.0, "only the newest period");
        let costs = series("neon_steward_estimated_cost", g);
        assert!(
            (costs[&key(OTHER_PROJECTS)] - 0.5).abs() < 1e-9,
            "{costs:?}"
        );
    }

    #[test]
    fn consumption_collected_sets_timestamp() {
        // Set to a value no other test uses, then read it straight back.
        ConsumptionCollected {
            job: "t-collect",
            granularity: "hourly",
            projects: 2,
            samples: 5,
            at: at(4242),
        }
        .emit();
        assert_eq!(
            metrics().consumption_last_collected_timestamp_seconds.get(),
            4242.0
        );
    }

    #[test]
    fn render_lists_every_family() {
        // Vec families only appear once they have a child; touch every one.
        let job = "t-render";
        JobRunStarted {
            job,
            kind: "k",
            run_id: 1,
            trigger: Trigger::Schedule,
            dry_run: false,
        }
        .emit();
        JobRunFinished {
            job,
            kind: "k",
            run_id: 1,
            outcome: RunStatus::Succeeded,
            elapsed: Duration::from_secs(1),
            finished_at: at(1),
            counts: ActionCounts::default(),
            error: None,
        }
        .emit();
        JobTickSkipped {
            job,
            reason: "missed",
            scheduled_for: at(1),
        }
        .emit();
        JobScheduled {
            job,
            kind: "k",
            next_run: at(2),
            interval: Some(Duration::from_secs(60)),
        }
        .emit();
        ActionRecorded {
            job,
            run_id: 1,
            action: "create_snapshot",
            outcome: ActionOutcome::Succeeded,
            dry_run: false,
            resource_kind: "branch",
            resource_id: "br",
            resource_name: None,
            project_id: None,
            reason: "keep_daily",
            detail: None,
        }
        .emit();
        ApiRequestCompleted {
            method: "GET",
            route: "/t-render",
            status: Some(429),
            elapsed: Duration::from_millis(3),
            request_id: "r",
        }
        .emit();
        ApiRetry {
            method: "GET",
            route: "/t-render",
            reason: "rate_limited",
            attempt: 1,
            delay: Duration::from_millis(1),
        }
        .emit();
        ConfigReloaded {
            path: "x",
            result: Ok(()),
            at: Utc::now(),
        }
        .emit();
        let points = [point("p", "m", "t-render", 1.0, Some(1.0))];
        ConsumptionExported {
            job: "t-job",
            granularity: "t-render",
            points: &points,
            max_projects: 1,
        }
        .emit();

        let text = render();
        for family in [
            "build_info",
            "job_runs_total",
            "job_run_duration_seconds",
            "job_last_run_timestamp_seconds",
            "job_last_success_timestamp_seconds",
            "job_next_run_timestamp_seconds",
            "job_interval_seconds",
            "job_running",
            "job_skipped_ticks_total",
            "actions_total",
            "api_requests_total",
            "api_request_duration_seconds",
            "api_retries_total",
            "api_rate_limited_total",
            "config_last_reload_successful",
            "config_last_reload_success_timestamp_seconds",
            "config_reloads_total",
            "consumption",
            "estimated_cost",
            "consumption_last_collected_timestamp_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE neon_steward_{family} ")),
                "family {family} missing from:\n{text}"
            );
        }
        assert_eq!(
            metrics().registry.gather().len(),
            20,
            "a new family needs a line above"
        );
        // Prometheus attaches `job` and `instance` to every scraped series; a label of the
        // same name would be renamed `exported_*` (see deploy/README.md, Metrics labels).
        for mf in metrics().registry.gather() {
            for metric in mf.get_metric() {
                for label in metric.get_label() {
                    assert!(
                        !["job", "instance"].contains(&label.name()),
                        "{} has the label {:?}, which clashes with a Prometheus target label",
                        mf.name(),
                        label.name()
                    );
                }
            }
        }
        assert!(
            text.contains(&format!("job_runs_total{{job_name=\"{job}\"")),
            "job families are labelled job_name:\n{text}"
        );
    }
}
