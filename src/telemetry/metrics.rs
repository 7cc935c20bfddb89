//! The Prometheus metric families of the daemon, registered once in a process-wide registry.
//!
//! Naming: prefix `neon_steward_`, base units (seconds, bytes), `_total` for counters.
//! Labels are bounded: job names come from the policy file, routes are path *templates*
//! (`/projects/{project_id}/branches`), never raw paths; the only per-resource label is
//! `project_id` on consumption gauges, and that is capped (the rest is summed as `other`).
//! The policy's job name is the label `job_name`, never `job`: Prometheus attaches its own
//! `job` and `instance` target labels to every scraped series, and a scraped label of the same
//! name would be renamed to `exported_job` (or, with `honor_labels`, overwrite the target's).
//!
//! Only [`super::events`] should touch these families directly.

use std::sync::LazyLock;

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub const PREFIX: &str = "neon_steward";

pub struct Metrics {
    pub registry: Registry,
    pub build_info: IntGaugeVec,
    pub job_runs_total: IntCounterVec,
    pub job_run_duration_seconds: HistogramVec,
    pub job_last_run_timestamp_seconds: GaugeVec,
    pub job_last_success_timestamp_seconds: GaugeVec,
    pub job_next_run_timestamp_seconds: GaugeVec,
    pub job_interval_seconds: GaugeVec,
    pub job_running: IntGaugeVec,
    pub job_skipped_ticks_total: IntCounterVec,
    pub runs_taken_over_total: IntCounterVec,
    pub lease_lost_total: IntCounterVec,
    pub actions_reconciled_total: IntCounterVec,
    pub actions_total: IntCounterVec,
    pub api_requests_total: IntCounterVec,
    pub api_request_duration_seconds: HistogramVec,
    pub api_retries_total: IntCounterVec,
    pub api_rate_limited_total: IntCounterVec,
    pub config_last_reload_successful: Gauge,
    pub config_last_reload_success_timestamp_seconds: Gauge,
    pub config_reloads_total: IntCounterVec,
    pub consumption: GaugeVec,
    pub estimated_cost: GaugeVec,
    pub consumption_last_collected_timestamp_seconds: Gauge,
    pub budget_spend: GaugeVec,
    pub budget_projected: GaugeVec,
    pub budget_limit: GaugeVec,
    pub budget_notices_total: IntCounterVec,
    pub notifications_total: IntCounterVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique and valid (checked by tests)");
    c
}

/// New, unregistered `consumption` and `estimated_cost` families: the process's are
/// registered in [`Metrics`]; a detached
/// [`ConsumptionExporter`](super::consumption::ConsumptionExporter) gets its own.
pub(crate) fn consumption_families() -> (GaugeVec, GaugeVec) {
    let labels = &["project_id", "metric", "granularity"];
    let consumption = GaugeVec::new(
        opts("consumption", "Neon consumption of the latest complete period, per project and metric, in the metric's own unit (the metric name says it)."),
        labels,
    )
    .expect("a valid family");
    let estimated_cost = GaugeVec::new(
        opts("estimated_cost", "Estimated cost of the latest complete period from the configured price table, per project and metric."),
        labels,
    )
    .expect("a valid family");
    (consumption, estimated_cost)
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let (consumption, estimated_cost) = consumption_families();
        let secs = vec![
            0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
        ];
        let api_secs = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Metrics {
            build_info: register(
                &r,
                IntGaugeVec::new(
                    opts("build_info", "Always 1; labels carry the version."),
                    &["version"],
                )
                .unwrap(),
            ),
            job_runs_total: register(
                &r,
                IntCounterVec::new(
                    opts("job_runs_total", "Finished job runs by outcome (succeeded, failed, partial, interrupted)."),
                    &["job_name", "kind", "outcome"],
                )
                .unwrap(),
            ),
            job_run_duration_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("job_run_duration_seconds", "Wall time of job runs.")
                        .namespace(PREFIX)
                        .buckets(secs),
                    &["job_name", "kind"],
                )
                .unwrap(),
            ),
            job_last_run_timestamp_seconds: register(
                &r,
                GaugeVec::new(opts("job_last_run_timestamp_seconds", "Unix time the last run of the job finished."), &["job_name"]).unwrap(),
            ),
            job_last_success_timestamp_seconds: register(
                &r,
                GaugeVec::new(opts("job_last_success_timestamp_seconds", "Unix time the last successful run of the job finished."), &["job_name"]).unwrap(),
            ),
            job_next_run_timestamp_seconds: register(
                &r,
                GaugeVec::new(opts("job_next_run_timestamp_seconds", "Unix time of the job's next scheduled run."), &["job_name"]).unwrap(),
            ),
            job_interval_seconds: register(
                &r,
                GaugeVec::new(opts("job_interval_seconds", "Nominal seconds between two runs of the job (for staleness alerts)."), &["job_name"]).unwrap(),
            ),
            job_running: register(
                &r,
                IntGaugeVec::new(opts("job_running", "Runs of the job in progress."), &["job_name"]).unwrap(),
            ),
            job_skipped_ticks_total: register(
                &r,
                IntCounterVec::new(opts("job_skipped_ticks_total", "Schedule ticks not run, by reason (overlap, missed, claimed_elsewhere, store_error)."), &["job_name", "reason"]).unwrap(),
            ),
            runs_taken_over_total: register(
                &r,
                IntCounterVec::new(opts("runs_taken_over_total", "Runs of another replica (or an earlier life of this one) whose lease had expired, taken over by this replica and marked interrupted."), &["job_name"]).unwrap(),
            ),
            lease_lost_total: register(
                &r,
                IntCounterVec::new(opts("lease_lost_total", "Runs of this replica stopped because their lease was lost (taken over after a pause, or the store unreachable for a whole lease)."), &["job_name"]).unwrap(),
            ),
            actions_reconciled_total: register(
                &r,
                IntCounterVec::new(opts("actions_reconciled_total", "Pending actions of runs that died or were taken over, resolved by checking Neon, by outcome (succeeded, failed, unknown)."), &["action", "outcome"]).unwrap(),
            ),
            actions_total: register(
                &r,
                IntCounterVec::new(
                    opts("actions_total", "Actions on Neon resources by outcome (succeeded, failed, skipped, planned)."),
                    &["job_name", "action", "outcome", "dry_run"],
                )
                .unwrap(),
            ),
            api_requests_total: register(
                &r,
                IntCounterVec::new(
                    opts("api_requests_total", "Neon API requests by route template and status class (2xx, 4xx, 5xx, error)."),
                    &["method", "route", "status_class"],
                )
                .unwrap(),
            ),
            api_request_duration_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("api_request_duration_seconds", "Latency of Neon API requests.")
                        .namespace(PREFIX)
                        .buckets(api_secs),
                    &["method", "route"],
                )
                .unwrap(),
            ),
            api_retries_total: register(
                &r,
                IntCounterVec::new(opts("api_retries_total", "Retried Neon API requests by reason (rate_limited, unavailable, server_error, timeout, connect)."), &["reason"]).unwrap(),
            ),
            api_rate_limited_total: register(
                &r,
                IntCounterVec::new(opts("api_rate_limited_total", "429 answers from the Neon API by route template."), &["route"]).unwrap(),
            ),
            config_last_reload_successful: register(
                &r,
                Gauge::with_opts(opts("config_last_reload_successful", "1 if the last configuration (re)load succeeded, else 0.")).unwrap(),
            ),
            config_last_reload_success_timestamp_seconds: register(
                &r,
                Gauge::with_opts(opts("config_last_reload_success_timestamp_seconds", "Unix time of the last successful configuration (re)load.")).unwrap(),
            ),
            config_reloads_total: register(
                &r,
                IntCounterVec::new(opts("config_reloads_total", "Configuration reloads by outcome (success, failure)."), &["outcome"]).unwrap(),
            ),
            consumption: register(&r, consumption),
            estimated_cost: register(&r, estimated_cost),
            consumption_last_collected_timestamp_seconds: register(
                &r,
                Gauge::with_opts(opts("consumption_last_collected_timestamp_seconds", "Unix time consumption was last collected successfully.")).unwrap(),
            ),
            budget_spend: register(
                &r,
                GaugeVec::new(opts("budget_spend", "Month-to-date spend of an enforce_budget job's budget (budget=\"all\" or, with per_project, a project id, capped), from the stored consumption and the price table, in `currency`."), &["job_name", "budget", "currency"]).unwrap(),
            ),
            budget_projected: register(
                &r,
                GaugeVec::new(opts("budget_projected", "Projected spend of the budget at the end of the month: the month-to-date spend plus the run rate of the last projection_days days times the hours left."), &["job_name", "budget", "currency"]).unwrap(),
            ),
            budget_limit: register(
                &r,
                GaugeVec::new(opts("budget_limit", "The budget's monthly limit."), &["job_name", "budget", "currency"]).unwrap(),
            ),
            budget_notices_total: register(
                &r,
                IntCounterVec::new(opts("budget_notices_total", "Budget threshold notices given (the `notify` action), by job and threshold percent."), &["job_name", "threshold"]).unwrap(),
            ),
            notifications_total: register(
                &r,
                IntCounterVec::new(opts("notifications_total", "Notification deliveries by sink, event (run_failed, limit_refused, notice, digest, budget) and outcome (delivered, retry, gave_up)."), &["sink", "event", "outcome"]).unwrap(),
            ),
            registry: r,
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics::new();
    m.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    m
});

/// The process-wide metric families.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Renders every family in the Prometheus text exposition format.
pub fn render() -> String {
    encode(&metrics().registry.gather())
}

/// The size of the last rendering, so the next one allocates its buffer once.
static LAST_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `families` in the Prometheus text exposition format.
pub fn encode(families: &[prometheus::proto::MetricFamily]) -> String {
    use std::sync::atomic::Ordering;
    let mut buf = String::with_capacity(LAST_SIZE.load(Ordering::Relaxed) + 4096);
    prometheus::TextEncoder::new()
        .encode_utf8(families, &mut buf)
        .expect("text encoding into a String cannot fail");
    LAST_SIZE.store(buf.len(), Ordering::Relaxed);
    buf
}
