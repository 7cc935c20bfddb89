//! The daemon's lifecycle: wire config -> store -> client -> scheduler -> HTTP, then wait
//! for signals.
//!
//! - SIGTERM / SIGINT: stop scheduling, let running runs finish within the grace period,
//!   cancel the rest (recorded `interrupted`), stop the HTTP server, exit 0.
//! - SIGHUP: re-read the policy file. An invalid file keeps the running configuration
//!   (logged, and exported as a failed reload); a valid one swaps the job list without
//!   touching runs in progress. Only `[[jobs]]` and `[defaults]` take effect on reload:
//!   the API client, store and listener are built once (a warning says so when they differ).
//! - systemd: `READY=1` once the listener is bound and the scheduler runs, `STOPPING=1` at
//!   shutdown, and `WATCHDOG=1` from the scheduler loop when `$WATCHDOG_USEC` is set, so a
//!   wedged loop gets the service restarted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::Utc;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, JobConfig};
use crate::health::Health;
use crate::http::{self, Control, JobView, TriggerOutcome};
use crate::jobs::{run_job_with, JobEnv, RunContext, RunControl};
use crate::neon::{ClientConfig, NeonClient};
use crate::scheduler::{
    self, Clock, Executor, RunHandle, RunReport, Scheduler, SchedulerHandle, SchedulerOptions,
    SystemClock,
};
use crate::store::{self, Store};
use crate::telemetry::consumption::ConsumptionExporter;
use crate::telemetry::events::ConfigReloaded;

/// How long Neon operations (and locked projects) are waited for within a run.
const OPERATION_DEADLINE: Duration = Duration::from_secs(600);
/// How often what is older than `store.history_retention` and `store.consumption_retention`
/// is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Running runs get this long to finish at shutdown before they are cancelled.
    pub grace_period: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            grace_period: Duration::from_secs(30),
        }
    }
}

/// Runs jobs through `crate::jobs`: the production [`Executor`].
pub struct JobsExecutor {
    env: JobEnv,
    clock: Arc<dyn Clock>,
}

impl JobsExecutor {
    pub fn new(env: JobEnv, clock: Arc<dyn Clock>) -> Self {
        JobsExecutor { env, clock }
    }
}

#[async_trait]
impl Executor for JobsExecutor {
    async fn execute(&self, job: Arc<JobConfig>, run: RunHandle) -> RunReport {
        let ctx = RunContext {
            run_id: run.run_id,
            scheduled_for: run.scheduled_for,
            now: self.clock.now(),
            dry_run: run.dry_run,
        };
        // The run watches the token itself and stops between actions, so an action it has
        // begun finishes its call (bounded by the client's timeout) and is recorded, and the
        // report carries the counts of what was done. Should it not stop, the scheduler
        // aborts it after `cancel_wait`.
        let control = RunControl {
            cancel: run.cancel.clone(),
            clock: Some(self.clock.clone()),
            lease: run.lease.clone(),
        };
        let r = run_job_with(&self.env, &job, ctx, &control).await;
        RunReport {
            status: r.status,
            counts: r.counts,
            error: r.error,
        }
    }

    async fn reconcile(&self) -> usize {
        match crate::jobs::reconcile_pending(&self.env).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reconcile pending actions now; trying again at the next heartbeat");
                0
            }
        }
    }
}

/// Builds the Neon client from `[api]` (fails without an API key).
pub fn client(cfg: &Config) -> Result<NeonClient, ConfigError> {
    client_with(cfg, None)
}

/// [`client`], recording the outcome of every call in `health` (the daemon's, for `/readyz`).
fn client_with(cfg: &Config, health: Option<Arc<Health>>) -> Result<NeonClient, ConfigError> {
    let key = cfg.api.require_key(&cfg.source)?.clone();
    let mut cc = ClientConfig::new(cfg.api.base_url.clone(), key);
    cc.health = health.map(|h| h as Arc<dyn crate::neon::ApiObserver>);
    cc.timeout = cfg.api.timeout;
    cc.rate_limit_per_minute = cfg.api.rate_limit_per_minute;
    cc.burst = cfg.api.burst;
    cc.max_retries = cfg.api.max_retries;
    cc.poll_initial = cfg.api.poll_initial;
    cc.poll_max = cfg.api.poll_max;
    NeonClient::new(cc).map_err(|e| {
        ConfigError::whole_file(&cfg.source, format!("cannot build the Neon client: {e}"))
    })
}

/// Opens the store as this replica, with the policy's lease, and applies migrations.
///
/// Runs a previous process left `running` are not touched here: the scheduler takes over
/// those whose lease has expired (by the store's clock), at start-up and at every
/// heartbeat, so a replica starting next to live ones, or `once` and `plan` run beside a
/// daemon, never interrupt their runs.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let opts = store::StoreOptions {
        replica: store::ReplicaId::of_this_process(),
        lease: cfg.store.lease,
    };
    // Its errors say "store: cannot open ..." and "store: migration failed: ...": no
    // context to add that would not repeat them.
    let store = store::open_with(&cfg.store.url, opts).await?;
    store.migrate().await?;
    Ok(store)
}

/// The executor for `cfg`, for the daemon and for `once`/`plan`.
pub fn executor(
    cfg: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Executor>, ConfigError> {
    executor_with(cfg, store, clock, None)
}

fn executor_with(
    cfg: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    health: Option<Arc<Health>>,
) -> Result<Arc<dyn Executor>, ConfigError> {
    let env = job_env_with(cfg, store, health)?;
    Ok(Arc::new(JobsExecutor::new(env, clock)))
}

/// What the jobs run with, from the policy (fails without an API key).
pub fn job_env(cfg: &Config, store: Arc<dyn Store>) -> Result<JobEnv, ConfigError> {
    job_env_with(cfg, store, None)
}

fn job_env_with(
    cfg: &Config,
    store: Arc<dyn Store>,
    health: Option<Arc<Health>>,
) -> Result<JobEnv, ConfigError> {
    Ok(JobEnv {
        client: client_with(cfg, health)?,
        store,
        concurrency: cfg.api.concurrency,
        operation_deadline: OPERATION_DEADLINE,
        // One per process: it exports into `/metrics`.
        consumption: Arc::new(ConsumptionExporter::new()),
    })
}

/// What the HTTP server sees of the daemon.
struct DaemonControl {
    handle: SchedulerHandle,
    config_loaded: AtomicBool,
}

#[async_trait]
impl Control for DaemonControl {
    fn jobs(&self) -> Vec<JobView> {
        self.handle
            .jobs()
            .into_iter()
            .map(|j| JobView {
                name: j.name,
                kind: j.kind,
                schedule: j.schedule,
                timezone: j.timezone,
                enabled: j.enabled,
                // The HTTP layer fills the full record in from the store.
                last_run: None,
                next_run: j.next_run,
            })
            .collect()
    }
    fn scheduler_running(&self) -> bool {
        self.handle.is_running()
    }
    fn config_loaded(&self) -> bool {
        self.config_loaded.load(Ordering::SeqCst)
    }
    async fn trigger(&self, job: &str) -> Result<TriggerOutcome, http::TriggerError> {
        use scheduler::TriggerError as T;
        match self.handle.trigger(job).await {
            Ok(run_id) => Ok(TriggerOutcome::Started { run_id }),
            Err(T::UnknownJob(j)) => Err(http::TriggerError::UnknownJob(j)),
            Err(T::AlreadyRunning(_)) => Ok(TriggerOutcome::AlreadyRunning { run_id: None }),
            Err(e @ T::Disabled(_)) => Err(http::TriggerError::Disabled(e.to_string())),
            Err(e @ (T::Stopped | T::Claimed(_))) => {
                Err(http::TriggerError::Unavailable(e.to_string()))
            }
            Err(e @ T::Store(_)) => Err(http::TriggerError::Internal(e.to_string())),
        }
    }
}

fn notify(state: &[sd_notify::NotifyState]) {
    // Outside systemd ($NOTIFY_SOCKET unset) this is a no-op.
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Runs the daemon until SIGTERM/SIGINT. `cfg` is already validated (the caller reports
/// its errors with exit code 2).
pub async fn run(cfg: Config, opts: DaemonOptions) -> anyhow::Result<()> {
    run_until(cfg, opts, CancellationToken::new(), |_| {}).await
}

/// [`run`], which also stops when `stop` is cancelled (the same graceful shutdown as
/// SIGTERM), and calls `on_ready` with the bound HTTP address once the daemon is ready.
/// `demo` uses it to run the daemon for a bounded time on a port it may have let the OS pick.
pub async fn run_until(
    cfg: Config,
    opts: DaemonOptions,
    stop_requested: CancellationToken,
    on_ready: impl FnOnce(std::net::SocketAddr) + Send,
) -> anyhow::Result<()> {
    let path: PathBuf = cfg.source.clone();
    ConfigReloaded {
        path: &path.display().to_string(),
        result: Ok(()),
        at: Utc::now(),
    }
    .emit();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // What the daemon can do (last API and store outcomes), for `/readyz`.
    let health = Health::new();
    let store = health.observe_store(open_store(&cfg).await?);
    let executor = executor_with(&cfg, store.clone(), clock.clone(), Some(health.clone()))?;

    // Signal handlers first, so a SIGTERM during start-up is not the default (abrupt) exit.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| {
        // Ping at half the interval systemd expects, as sd_watchdog_enabled(3) advises.
        let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
        let ping: scheduler::WatchdogPing =
            Arc::new(|| notify(&[sd_notify::NotifyState::Watchdog]));
        (every, ping)
    });
    let shutdown = CancellationToken::new();
    let sched_opts = SchedulerOptions {
        grace_period: opts.grace_period,
        watchdog,
        lease: cfg.store.lease_timing(),
        ..Default::default()
    };
    declare_series(&cfg.jobs, &cfg.notify);
    let (handle, mut sched_task) =
        Scheduler::new(store.clone(), executor, clock.clone(), sched_opts)
            .spawn(cfg.jobs.clone(), shutdown.clone());

    let control = Arc::new(DaemonControl {
        handle: handle.clone(),
        config_loaded: AtomicBool::new(true),
    });
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding the HTTP listener to {}", cfg.http.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let http_stop = CancellationToken::new();
    let state = http::HttpState {
        control: control.clone(),
        store: store.clone(),
        admin_token: cfg.http.admin_token.clone(),
        health: Some(health.clone()),
    };
    let stop = http_stop.clone();
    let http_task = tokio::spawn(async move {
        http::serve(listener, state, async move { stop.cancelled().await }).await
    });

    let prune_task = tokio::spawn(prune_loop(
        store.clone(),
        Retentions {
            history: cfg.store.history_retention,
            consumption: cfg.store.consumption_retention,
        },
        shutdown.clone(),
    ));

    // The outbox's deliveries: their own task, so a dead or slow sink never holds up a job.
    // `[[notify]]` sinks are read at start-up (a reload changes which events jobs send,
    // not where sinks are).
    let notify_task = (!cfg.notify.is_empty()).then(|| {
        let deliverer = crate::notify::Deliverer::new(
            store.clone(),
            &cfg.notify,
            crate::notify::deliver::DeliveryTiming::default(),
        );
        tokio::spawn(deliverer.run(shutdown.clone()))
    });

    // Ready only once the scheduler has its jobs: `/api/v1/jobs` and `/readyz` are true from
    // the first request systemd or a probe may send after READY=1. Meanwhile the signals and
    // the scheduler task are watched: a SIGTERM during start-up stops cleanly, and a loop that
    // dies before it starts is an error rather than a daemon waiting forever for it.
    let stop_signal = async {
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
            _ = stop_requested.cancelled() => "stop requested",
        }
    };
    let mut died = None;
    let mut stopping = false;
    match wait_started(&handle, &mut sched_task, stop_signal).await {
        Ok(None) => {
            tracing::info!(%bound, jobs = cfg.jobs.len(), replica = %store.replica(), "neon-steward ready");
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("scheduling"),
            ]);
            on_ready(bound);
        }
        Ok(Some(why)) => {
            tracing::info!("{why} during start-up: shutting down");
            stopping = true;
        }
        Err(e) => died = Some(e),
    }

    let mut current = cfg;
    while died.is_none() && !stopping {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = stop_requested.cancelled() => { tracing::info!("stop requested: shutting down"); break; }
            _ = sighup.recv() => reload(&mut current, &handle).await,
            // Only shutdown ends the loop; ending on its own means it died.
            r = &mut sched_task => died = Some(scheduler_died(r)),
        }
    }

    notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    if died.is_none() {
        if let Err(e) = sched_task.await {
            died = Some(scheduler_died(Err(e)));
        }
    }
    if let Some(e) = &died {
        tracing::error!(error = %e, "the scheduler died; stopping");
    }
    http_stop.cancel();
    match http_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "http server error"),
        Err(e) => tracing::error!(error = %e, "http server task failed"),
        Ok(Ok(())) => {}
    }
    let _ = prune_task.await;
    if let Some(t) = notify_task {
        let _ = t.await;
    }
    if let Some(e) = died {
        return Err(e);
    }
    tracing::info!("neon-steward stopped");
    Ok(())
}

/// Waits until the scheduler has started. `Ok(Some(why))`: `stop` fired first. `Err`: the
/// scheduler task ended before it started (it panicked), which the daemon cannot run without.
async fn wait_started(
    handle: &SchedulerHandle,
    task: &mut tokio::task::JoinHandle<()>,
    stop: impl std::future::Future<Output = &'static str>,
) -> anyhow::Result<Option<&'static str>> {
    tokio::select! {
        // `started()` also returns when the loop dies (its `alive` drop guard).
        _ = handle.started() => {}
        r = &mut *task => return Err(scheduler_died(r)),
        why = stop => return Ok(Some(why)),
    }
    if handle.is_running() {
        return Ok(None);
    }
    Err(scheduler_died(task.await))
}

/// The error for a scheduler task that ended although shutdown was not requested.
fn scheduler_died(r: Result<(), tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(()) => anyhow::anyhow!("the scheduler stopped unexpectedly"),
        Err(e) if e.is_panic() => anyhow::anyhow!(
            "the scheduler panicked: {}",
            crate::scheduler::panic_message(&*e.into_panic())
        ),
        Err(e) => anyhow::anyhow!("the scheduler task failed: {e}"),
    }
}

/// Creates at 0 the counter series the alert rules take `increase()` of, which a counter
/// otherwise gets only on its first step (so the first failure would be missed): each
/// enabled job's `actions_total` per action of its kind and outcome `succeeded`/`failed`,
/// and each sink's `notifications_total` per event it takes and outcome. (The scheduler
/// does the same for `job_runs_total`.) A few series per job and sink, not per resource.
pub fn declare_series(jobs: &[Arc<config::JobConfig>], sinks: &[Arc<config::SinkConfig>]) {
    for job in jobs.iter().filter(|j| j.enabled) {
        let actions: Vec<&str> = crate::jobs::action_names(&job.spec)
            .iter()
            .map(|a| a.as_str())
            .collect();
        crate::telemetry::events::ActionsDeclared {
            job: &job.name,
            dry_run: job.dry_run,
            actions: &actions,
        }
        .emit();
    }
    for sink in sinks {
        let events: Vec<&str> = sink.events.iter().map(|e| e.as_str()).collect();
        crate::telemetry::events::SinkDeclared {
            sink: &sink.name,
            events: &events,
        }
        .emit();
    }
}

/// SIGHUP: load the file again; keep the old configuration if the new one is invalid.
async fn reload(current: &mut Config, handle: &SchedulerHandle) {
    let path = current.source.clone();
    let shown = path.display().to_string();
    match config::load(&path) {
        Err(e) => {
            let msg = e.to_string();
            ConfigReloaded {
                path: &shown,
                result: Err(&msg),
                at: Utc::now(),
            }
            .emit();
        }
        Ok(new) => {
            if new.api.base_url != current.api.base_url
                || new.store.url != current.store.url
                || new.http.listen != current.http.listen
            {
                tracing::warn!(
                    "[api], [store] and [http] changes take effect only after a restart"
                );
            }
            if let Err(e) = handle.reload(new.jobs.clone()).await {
                let msg = format!("the scheduler did not accept the new jobs: {e}");
                ConfigReloaded {
                    path: &shown,
                    result: Err(&msg),
                    at: Utc::now(),
                }
                .emit();
                return;
            }
            ConfigReloaded {
                path: &shown,
                result: Ok(()),
                at: Utc::now(),
            }
            .emit();
            // The sinks are those of the start (see `run_until`).
            declare_series(&new.jobs, &[]);
            current.jobs = new.jobs;
        }
    }
}

/// How long the store keeps what it prunes (`[store]`).
#[derive(Debug, Clone, Copy)]
struct Retentions {
    history: Duration,
    consumption: Duration,
}

/// The instant `retention` before `now`; a retention reaching back before the earliest
/// instant keeps everything (the earliest instant is the cut-off).
fn cutoff(now: chrono::DateTime<Utc>, retention: Duration) -> chrono::DateTime<Utc> {
    chrono::Duration::from_std(retention)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
}

/// Deletes what is older than the retentions, at start and then hourly.
async fn prune_loop(store: Arc<dyn Store>, keep: Retentions, shutdown: CancellationToken) {
    loop {
        let now = Utc::now();
        let before = store::PruneBefore {
            history: cutoff(now, keep.history),
            consumption: cutoff(now, keep.consumption),
        };
        match store.prune(&before).await {
            Ok(n) if n != store::Pruned::default() => tracing::info!(
                runs = n.runs,
                notifications = n.notifications,
                consumption_samples = n.samples,
                "pruned old history"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning history failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
