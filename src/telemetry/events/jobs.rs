//! The scheduler's and runs' events: scheduling, starts, ends, skipped ticks, removed
//! jobs, and the leases of runs.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::unix_seconds;
use crate::store::{ActionCounts, RunId, RunStatus, Trigger};
use crate::telemetry::metrics::metrics;

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
