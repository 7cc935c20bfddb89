//! One struct per observable event, as plain data. `emit()` writes the log line and updates
//! the metric, so logs and metrics cannot drift. Add new events here, in the file of their
//! area, rather than calling `tracing` or the metric families from elsewhere for things that
//! are also counted.
//!
//! - [`api`]: Neon API requests and retries.
//! - [`jobs`]: scheduling, runs, skipped ticks, removed jobs, leases.
//! - [`actions`]: actions recorded in the ledger or reconciled with Neon.
//! - [`budget`]: budgets evaluated (the budget gauges) and threshold notices.
//! - [`config`]: policy (re)loads.
//! - [`notify`]: notices given and notification deliveries.
//! - [`consumption`]: collections and exports (the gauges themselves belong to
//!   [`ConsumptionExporter`](super::consumption::ConsumptionExporter)).

pub mod actions;
pub mod api;
pub mod budget;
pub mod config;
pub mod consumption;
pub mod jobs;
pub mod notify;

pub use actions::{ActionReconciled, ActionRecorded, ActionsDeclared};
pub use api::{ApiRequestCompleted, ApiRetry};
pub use budget::{BudgetEvaluated, BudgetNotice};
pub use config::ConfigReloaded;
pub use consumption::{ConsumptionCollected, ConsumptionExported};
pub use jobs::{
    JobRunFinished, JobRunStarted, JobScheduled, JobTickSkipped, JobUnscheduled, LeaseLost,
    RunTakenOver, RUN_OUTCOMES, SKIP_REASONS,
};
pub use notify::{NoticeGiven, NotificationAttempted, SinkDeclared, NOTIFY_OUTCOMES};

use chrono::{DateTime, Utc};

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn bool_label(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

#[cfg(test)]
mod tests {
    //! Metrics are process-global: every test uses its own job names / granularities.

    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::store::{ActionCounts, ActionOutcome, RunStatus, Trigger};
    use crate::telemetry::consumption::{ConsumptionExporter, ConsumptionPoint};
    use crate::telemetry::metrics::metrics;

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

    #[test]
    fn consumption_collected_sets_timestamp() {
        // Set to a value no other test uses, then read it straight back.
        ConsumptionCollected {
            job: "t-collect",
            granularity: "hourly",
            per_branch: false,
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
        // The daemon's exporter writes into the process's families.
        ConsumptionExporter::new().export(
            "t-job",
            "t-render",
            vec![ConsumptionPoint {
                project_id: "p".into(),
                metric: "m".into(),
                granularity: "t-render".into(),
                period_start: at(3600),
                value: 1.0,
                cost: Some(1.0),
            }],
            1,
        );

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
