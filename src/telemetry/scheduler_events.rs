//! Events of the scheduler and of configuration (re)loads. Like [`super::events`], each
//! `emit()` writes the log line and updates the metric together.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::metrics::metrics;
use crate::store::{ActionCounts, RunId, RunStatus, Trigger};

/// A run was claimed and is starting.
pub struct RunStarted<'a> {
    pub job: &'a str,
    pub kind: &'a str,
    pub run_id: RunId,
    pub scheduled_for: DateTime<Utc>,
    pub trigger: Trigger,
    pub dry_run: bool,
}

impl RunStarted<'_> {
    pub fn emit(&self) {
        tracing::info!(
            job = self.job,
            kind = self.kind,
            run_id = self.run_id,
            scheduled_for = %self.scheduled_for.to_rfc3339(),
            trigger = ?self.trigger,
            dry_run = self.dry_run,
            "run started"
        );
        metrics().job_running.with_label_values(&[self.job]).inc();
    }
}

/// A run ended (any status but `running`/`skipped`).
pub struct RunFinished<'a> {
    pub job: &'a str,
    pub kind: &'a str,
    pub run_id: RunId,
    pub status: RunStatus,
    pub elapsed: Duration,
    pub counts: ActionCounts,
    pub error: Option<&'a str>,
    pub finished_at: DateTime<Utc>,
}

impl RunFinished<'_> {
    pub fn emit(&self) {
        let c = self.counts;
        match self.status {
            RunStatus::Succeeded => tracing::info!(
                job = self.job,
                run_id = self.run_id,
                status = self.status.as_str(),
                elapsed_ms = self.elapsed.as_millis() as u64,
                succeeded = c.succeeded,
                failed = c.failed,
                skipped = c.skipped,
                planned = c.planned,
                "run finished"
            ),
            _ => tracing::warn!(
                job = self.job,
                run_id = self.run_id,
                status = self.status.as_str(),
                elapsed_ms = self.elapsed.as_millis() as u64,
                succeeded = c.succeeded,
                failed = c.failed,
                skipped = c.skipped,
                planned = c.planned,
                error = self.error.unwrap_or(""),
                "run finished"
            ),
        }
        let m = metrics();
        m.job_runs_total
            .with_label_values(&[self.job, self.kind, self.status.as_str()])
            .inc();
        m.job_run_duration_seconds
            .with_label_values(&[self.job, self.kind])
            .observe(self.elapsed.as_secs_f64());
        let ts = self.finished_at.timestamp_millis() as f64 / 1000.0;
        m.job_last_run_timestamp_seconds
            .with_label_values(&[self.job])
            .set(ts);
        if self.status == RunStatus::Succeeded {
            m.job_last_success_timestamp_seconds
                .with_label_values(&[self.job])
                .set(ts);
        }
        m.job_running.with_label_values(&[self.job]).dec();
    }
}

/// A tick was not run.
pub struct TickSkipped<'a> {
    pub job: &'a str,
    /// `overlap` (forbid policy), `missed` (daemon was down), `claimed_elsewhere` (another
    /// replica or an earlier life ran it), `store_error`.
    pub reason: &'static str,
    pub scheduled_for: DateTime<Utc>,
}

impl TickSkipped<'_> {
    pub fn emit(&self) {
        let level_info = self.reason != "store_error";
        if level_info {
            tracing::info!(job = self.job, reason = self.reason, scheduled_for = %self.scheduled_for.to_rfc3339(), "tick skipped");
        } else {
            tracing::error!(job = self.job, reason = self.reason, scheduled_for = %self.scheduled_for.to_rfc3339(), "tick skipped");
        }
        metrics()
            .job_skipped_ticks_total
            .with_label_values(&[self.job, self.reason])
            .inc();
    }
}

/// The next fire time of a job was (re)computed.
pub struct NextRunScheduled<'a> {
    pub job: &'a str,
    pub next: Option<DateTime<Utc>>,
    pub interval: Option<Duration>,
}

impl NextRunScheduled<'_> {
    pub fn emit(&self) {
        tracing::debug!(job = self.job, next = ?self.next.map(|n| n.to_rfc3339()), "next run");
        let m = metrics();
        match self.next {
            Some(n) => m
                .job_next_run_timestamp_seconds
                .with_label_values(&[self.job])
                .set(n.timestamp_millis() as f64 / 1000.0),
            None => {
                let _ = m
                    .job_next_run_timestamp_seconds
                    .remove_label_values(&[self.job]);
            }
        }
        if let Some(i) = self.interval {
            m.job_interval_seconds
                .with_label_values(&[self.job])
                .set(i.as_secs_f64());
        }
    }
}

/// The policy file was loaded (at start) or reloaded (SIGHUP).
pub struct ConfigLoaded<'a> {
    pub path: &'a str,
    /// `Err(message)` for a file that was rejected (the previous one stays in force).
    pub result: Result<usize, &'a str>,
    pub reload: bool,
    pub at: DateTime<Utc>,
}

impl ConfigLoaded<'_> {
    pub fn emit(&self) {
        let m = metrics();
        match self.result {
            Ok(jobs) => {
                tracing::info!(
                    path = self.path,
                    jobs,
                    reload = self.reload,
                    "configuration loaded"
                );
                m.config_last_reload_successful.set(1.0);
                m.config_last_reload_success_timestamp_seconds
                    .set(self.at.timestamp() as f64);
                m.config_reloads_total.with_label_values(&["success"]).inc();
            }
            Err(e) => {
                tracing::error!(
                    path = self.path,
                    error = e,
                    reload = self.reload,
                    "configuration rejected; keeping the previous one"
                );
                m.config_last_reload_successful.set(0.0);
                m.config_reloads_total.with_label_values(&["failure"]).inc();
            }
        }
    }
}
