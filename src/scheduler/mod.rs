//! The scheduler: one tokio task that knows every job's next fire time, sleeps until the
//! earliest, and owns the runs it starts.
//!
//! Why our own loop rather than tokio-cron-scheduler: see "Decisions" in
//! `docs/ARCHITECTURE.md` (time zones frozen to an offset, overlapping detached runs, no
//! wait at shutdown, 500 ms polling). Here:
//! - fire times are computed in the job's IANA zone each time they are needed
//!   ([`crate::schedule::Schedule::next_after`]);
//! - the loop sleeps with `sleep_until` on the earliest fire time, and wakes early only for
//!   commands (reload, trigger), finished runs, shutdown and watchdog pings;
//! - every run is a task in the loop's `JoinSet`, so the concurrency policy can see it and
//!   shutdown can wait for it;
//! - every run is *claimed* in the [`Store`] first (`(job, scheduled_for)` is unique), so two
//!   replicas, or a restart, never run the same tick twice.
//!
//! How a job runs is not the scheduler's business: it calls an [`Executor`].

pub mod clock;
mod lease;
mod run;
pub(crate) use run::panic_message;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::store::LeaseTiming;
pub use clock::{Clock, SystemClock, TokioClock};
pub use lease::LeaseWatch;
pub use run::{run_now, run_now_as};

use crate::config::{ConcurrencyPolicy, JobConfig, MissedPolicy};
use crate::store::{ActionCounts, Claim, NewRun, RunFilter, RunId, RunStatus, Store, Trigger};
use crate::telemetry::events::{JobScheduled, JobTickSkipped, JobUnscheduled, RunTakenOver};

/// Stand-in for a wake-up time that a tokio `Instant` cannot represent.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 86_400);

/// `d` from now, clamped to what a tokio `Instant` can hold ($WATCHDOG_USEC is arbitrary).
fn after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// How many times an interrupted tick is run again before it is given up on.
const MAX_TICK_RETRIES: u32 = 3;

/// For the newest scheduled run of `job`, claimed as `claimed_as` and found interrupted: the
/// tick to run again and the number of this attempt, or `None` once [`MAX_TICK_RETRIES`] is
/// reached.
///
/// The store's claim is `(job, scheduled_for)` and the interrupted run holds its tick, so
/// the n-th re-run claims `tick + n ms`: unique, portable, still inside the tick's schedule
/// window (ticks are at least a second apart), and the offset tells how many attempts there
/// were. Every replica computes the same claim, so only one of them re-runs the tick.
fn interrupted_tick(job: &JobConfig, claimed_as: DateTime<Utc>) -> Option<(DateTime<Utc>, u32)> {
    let from = claimed_as.checked_sub_signed(chrono::Duration::seconds(1))?;
    let tick = job.schedule.last_between(from, claimed_as, job.timezone)?;
    let done = claimed_as.signed_duration_since(tick).num_milliseconds();
    let attempt = u32::try_from(done).ok()? + 1;
    (attempt <= MAX_TICK_RETRIES).then_some((tick, attempt))
}

/// What a run is given besides its job.
#[derive(Debug, Clone)]
pub struct RunHandle {
    pub run_id: RunId,
    /// The tick this run is for (the jitter-free fire time; for manual runs, when asked).
    pub scheduled_for: DateTime<Utc>,
    pub trigger: Trigger,
    /// The job's `dry_run`, or forced by `plan`. A dry run makes no mutating API call.
    pub dry_run: bool,
    /// Cancelled on timeout, on `replace` and at the end of the shutdown grace period.
    /// Executors check it between actions and stop promptly.
    pub cancel: CancellationToken,
    /// How long this replica surely still holds the run (renewed by its heartbeat): no
    /// mutation is sent once it may have lapsed.
    pub lease: LeaseWatch,
}

/// How a run ended, as reported by the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub status: RunStatus,
    pub counts: ActionCounts,
    pub error: Option<String>,
}

impl RunReport {
    pub fn succeeded(counts: ActionCounts) -> Self {
        RunReport {
            status: RunStatus::Succeeded,
            counts,
            error: None,
        }
    }
    pub fn failed(error: impl Into<String>) -> Self {
        RunReport {
            status: RunStatus::Failed,
            counts: ActionCounts::default(),
            error: Some(error.into()),
        }
    }
}

/// Runs one job once. Implemented by `crate::jobs` for real, and by fakes in tests.
///
/// The executor must not panic (the scheduler catches it anyway and records the run
/// failed) and should return soon after `run.cancel` fires.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn execute(&self, job: Arc<JobConfig>, run: RunHandle) -> RunReport;

    /// Resolves the `pending` actions of runs that are over (the run died, or was taken
    /// over, during a call) by checking Neon. Called after every takeover and heartbeat
    /// while some remain; returns how many were resolved.
    async fn reconcile(&self) -> usize {
        0
    }
}

/// Called from the scheduler loop to tell systemd it is alive (`WATCHDOG=1`).
pub type WatchdogPing = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
pub struct SchedulerOptions {
    /// At shutdown, how long running runs may take to finish before they are cancelled.
    pub grace_period: Duration,
    /// After cancelling (timeout or shutdown), how long a run may take to stop before its
    /// task is aborted.
    pub cancel_wait: Duration,
    /// Ping interval and function, when systemd's watchdog is on.
    pub watchdog: Option<(Duration, WatchdogPing)>,
    /// How runs keep their lease (`store.heartbeat`, `store.lease`); the heartbeat is also
    /// how often the loop takes over runs whose lease has expired.
    pub lease: LeaseTiming,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            grace_period: Duration::from_secs(30),
            cancel_wait: Duration::from_secs(5),
            watchdog: None,
            lease: LeaseTiming::default(),
        }
    }
}

/// What the HTTP API and `jobs` show about a job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobStatus {
    pub name: String,
    pub kind: String,
    /// The cron expression as written (`0 3 * * *`) or `every 15m`.
    pub schedule: String,
    pub timezone: String,
    pub enabled: bool,
    pub dry_run: bool,
    pub next_run: Option<DateTime<Utc>>,
    pub running: usize,
    pub last_run: Option<LastRun>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastRun {
    pub id: RunId,
    pub status: RunStatus,
    pub scheduled_for: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriggerError {
    #[error("no job named `{0}`")]
    UnknownJob(String),
    #[error("job `{0}` is running and its concurrency policy is `forbid`")]
    AlreadyRunning(String),
    #[error("job `{0}` is disabled (enabled = false)")]
    Disabled(String),
    #[error("a run of `{0}` for this instant exists already")]
    Claimed(String),
    #[error("cannot record the run: {0}")]
    Store(String),
    #[error("the scheduler is not running")]
    Stopped,
}

enum Command {
    Reload(Vec<Arc<JobConfig>>, oneshot::Sender<()>),
    Trigger {
        job: String,
        reply: oneshot::Sender<Result<RunId, TriggerError>>,
    },
}

/// Cheap to clone; talks to the scheduler task.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    status: Arc<RwLock<Vec<JobStatus>>>,
    alive: CancellationToken,
    /// Cancelled once the loop has loaded its jobs and published their status, so that
    /// nobody (readiness, `/api/v1/jobs`) sees an empty job list during start-up.
    started: CancellationToken,
}

impl SchedulerHandle {
    /// Each job with its schedule, next and last run (as of the loop's last iteration).
    pub fn jobs(&self) -> Vec<JobStatus> {
        self.status.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether the loop is scheduling (false before it has started and once shutdown
    /// began), for `/readyz`.
    pub fn is_running(&self) -> bool {
        self.started.is_cancelled() && !self.alive.is_cancelled()
    }

    /// Waits until the loop has loaded its jobs and published their status (or has
    /// stopped before getting there).
    pub async fn started(&self) {
        tokio::select! {
            _ = self.started.cancelled() => {}
            _ = self.alive.cancelled() => {}
        }
    }

    /// Starts a manual run of `job` now (honouring its concurrency policy).
    pub async fn trigger(&self, job: &str) -> Result<RunId, TriggerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Trigger {
                job: job.to_string(),
                reply,
            })
            .await
            .map_err(|_| TriggerError::Stopped)?;
        rx.await.map_err(|_| TriggerError::Stopped)?
    }

    /// Replaces the job list. Running runs continue with the configuration they started
    /// with; unchanged schedules keep their next fire time.
    pub async fn reload(&self, jobs: Vec<Arc<JobConfig>>) -> Result<(), TriggerError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Reload(jobs, done))
            .await
            .map_err(|_| TriggerError::Stopped)?;
        // Returns once the new jobs are in effect (and visible through `jobs()`).
        rx.await.map_err(|_| TriggerError::Stopped)
    }
}

pub struct Scheduler {
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    opts: SchedulerOptions,
}

impl Scheduler {
    pub fn new(
        store: Arc<dyn Store>,
        executor: Arc<dyn Executor>,
        clock: Arc<dyn Clock>,
        opts: SchedulerOptions,
    ) -> Self {
        Scheduler {
            store,
            executor,
            clock,
            opts,
        }
    }

    /// Starts the loop. It stops scheduling when `shutdown` is cancelled, then waits for
    /// running runs (see [`SchedulerOptions::grace_period`]); the returned task ends when
    /// every run is recorded.
    pub fn spawn(
        self,
        jobs: Vec<Arc<JobConfig>>,
        shutdown: CancellationToken,
    ) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(16);
        let status = Arc::new(RwLock::new(Vec::new()));
        let alive = CancellationToken::new();
        let started = CancellationToken::new();
        let handle = SchedulerHandle {
            tx,
            status: status.clone(),
            alive: alive.clone(),
            started: started.clone(),
        };
        let lp = Loop {
            store: self.store,
            executor: self.executor,
            clock: self.clock,
            opts: self.opts,
            slots: Vec::new(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
            last: HashMap::new(),
            status,
            missed_in_outage: Default::default(),
            reconciling: None,
        };
        let task = tokio::spawn(lp.run(jobs, rx, shutdown, alive, started));
        (handle, task)
    }
}

struct Slot {
    job: Arc<JobConfig>,
    /// The next tick (what the run is recorded as `scheduled_for`).
    next_tick: Option<DateTime<Utc>>,
    /// `next_tick` plus jitter: when the loop actually starts it.
    fire_at: Option<DateTime<Utc>>,
}

/// A run in progress, seen from the loop.
struct Running {
    job: String,
    scheduled_for: DateTime<Utc>,
    cancel: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

struct Loop {
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    opts: SchedulerOptions,
    slots: Vec<Slot>,
    running: HashMap<RunId, Running>,
    tasks: JoinSet<run::Finished>,
    last: HashMap<String, LastRun>,
    status: Arc<RwLock<Vec<JobStatus>>>,
    /// Jobs whose tick could not be claimed because the store failed: their missed-run
    /// policy is applied once the store answers again.
    missed_in_outage: std::collections::BTreeSet<String>,
    /// The reconciliation of pending actions in progress, if any.
    reconciling: Option<tokio::task::JoinHandle<usize>>,
}

impl Loop {
    async fn run(
        mut self,
        jobs: Vec<Arc<JobConfig>>,
        mut rx: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        alive: CancellationToken,
        started: CancellationToken,
    ) {
        // However the loop ends (shutdown, or a panic unwinding through it), `alive` is
        // cancelled: `/readyz` turns false and `started()` returns instead of waiting forever
        // for a loop that will never publish.
        let _alive = alive.clone().drop_guard();
        self.set_jobs(jobs).await;
        // Runs a dead replica (or this process's previous life) left behind are taken over
        // once their lease has expired; live ones are never touched.
        self.take_over().await;
        self.catch_up().await;
        self.publish();
        started.cancel();
        let mut next_ping = self.opts.watchdog.as_ref().map(|(every, _)| after(*every));
        let mut next_maintenance = after(self.opts.lease.heartbeat);
        if let Some((_, ping)) = &self.opts.watchdog {
            ping();
        }
        loop {
            self.publish();
            let wake = self.earliest_fire().map(|t| self.instant_for(t));
            let sleep = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let ping_at = next_ping;
            let ping = async move {
                match ping_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(cmd) = rx.recv() => self.command(cmd).await,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(done),
                _ = ping => {
                    if let Some((every, ping)) = &self.opts.watchdog {
                        ping();
                        next_ping = Some(after(*every));
                    }
                }
                _ = tokio::time::sleep_until(next_maintenance) => {
                    self.maintain().await;
                    next_maintenance = after(self.opts.lease.heartbeat);
                }
                _ = sleep => self.fire_due().await,
            }
        }
        alive.cancel();
        self.publish();
        tracing::info!(
            running = self.running.len(),
            "scheduler stopping; waiting for running jobs"
        );
        self.drain().await;
    }

    /// Converts a wall-clock target into a tokio deadline. Recomputed every iteration, so a
    /// wall-clock step only delays a fire until the next wake-up, it never skews the zone.
    fn instant_for(&self, at: DateTime<Utc>) -> tokio::time::Instant {
        let delta = at
            .signed_duration_since(self.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        // Beyond what an Instant can hold, a year from now is as good as never: the target
        // is recomputed at every wake-up anyway.
        after(delta)
    }

    fn earliest_fire(&self) -> Option<DateTime<Utc>> {
        self.slots.iter().filter_map(|s| s.fire_at).min()
    }

    fn jitter(job: &JobConfig) -> chrono::Duration {
        match job.jitter {
            Some(j) if !j.is_zero() => {
                let max = j.as_millis().min(i64::MAX as u128) as i64;
                let ms = rand::thread_rng().gen_range(0..=max);
                chrono::Duration::try_milliseconds(ms).unwrap_or(chrono::Duration::MAX)
            }
            _ => chrono::Duration::zero(),
        }
    }

    fn schedule_slot(slot: &mut Slot, after: DateTime<Utc>, now: DateTime<Utc>) {
        let job = &slot.job;
        slot.next_tick = if job.enabled {
            job.schedule.next_after(after, job.timezone)
        } else {
            None
        };
        // Fell behind (the host slept, the clock stepped): resume from now rather than
        // firing every tick in between.
        if let Some(t) = slot.next_tick {
            if t < now && after < now {
                slot.next_tick = job.schedule.next_after(now, job.timezone);
            }
        }
        // The policy bounds jitter, but a tick near the end of time must still not panic:
        // a fire time that cannot be represented is never reached, so the tick is dropped.
        slot.fire_at = slot
            .next_tick
            .and_then(|t| t.checked_add_signed(Self::jitter(job)));
        if let Some(next_run) = slot.next_tick {
            JobScheduled {
                job: &job.name,
                kind: job.kind.as_str(),
                next_run,
                interval: job.schedule.nominal_interval(now, job.timezone),
            }
            .emit();
        }
    }

    async fn set_jobs(&mut self, jobs: Vec<Arc<JobConfig>>) {
        let now = self.clock.now();
        let mut old: HashMap<String, Slot> = self
            .slots
            .drain(..)
            .map(|s| (s.job.name.clone(), s))
            .collect();
        for job in jobs {
            let mut slot = match old.remove(&job.name) {
                // Same timing: keep the computed tick (and its jitter).
                Some(mut s)
                    if s.job.schedule == job.schedule
                        && s.job.timezone == job.timezone
                        && s.job.enabled == job.enabled
                        && s.job.jitter == job.jitter =>
                {
                    s.job = job;
                    s
                }
                _ => {
                    let mut s = Slot {
                        job,
                        next_tick: None,
                        fire_at: None,
                    };
                    Self::schedule_slot(&mut s, now, now);
                    s
                }
            };
            if !self.last.contains_key(&slot.job.name) {
                let filter = RunFilter {
                    job: Some(slot.job.name.clone()),
                    limit: 1,
                    before: None,
                };
                match self.store.list_runs(&filter).await {
                    Ok(runs) => {
                        if let Some(r) = runs.into_iter().next() {
                            self.last.insert(
                                r.job.clone(),
                                LastRun {
                                    id: r.id,
                                    status: r.status,
                                    scheduled_for: r.scheduled_for,
                                    finished_at: r.finished_at,
                                },
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %slot.job.name, error = %e, "cannot read the last run")
                    }
                }
            }
            slot.job = slot.job.clone();
            self.slots.push(slot);
        }
        for gone in old.keys() {
            tracing::info!(job = %gone, "job removed from the policy; runs in progress continue");
            self.last.remove(gone);
            self.unschedule_if_idle(gone);
        }
    }

    /// `missed = "run_once"` for every job: see [`Self::catch_up_job`].
    async fn catch_up(&mut self) {
        let jobs: Vec<Arc<JobConfig>> = self.slots.iter().map(|s| s.job.clone()).collect();
        for job in jobs {
            if !self.catch_up_job(&job).await {
                self.missed_in_outage.insert(job.name.clone());
            }
        }
    }

    /// `missed = "run_once"`: run the newest tick missed while the daemon was down (or the
    /// store unreachable), if it is within `starting_deadline`, or run again the tick of a
    /// run that was interrupted (crash, takeover). Decided from the store, so it survives
    /// restarts and holds across replicas. Returns false when the store could not be read
    /// (try again later).
    async fn catch_up_job(&mut self, job: &Arc<JobConfig>) -> bool {
        let now = self.clock.now();
        if !job.enabled {
            return true;
        }
        let last_run = match self.store.last_scheduled_run(&job.name).await {
            Ok(Some(r)) => r,
            // Never ran: nothing was missed.
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(job = %job.name, error = %e, "cannot read the last scheduled run; catching up once the store answers");
                return false;
            }
        };
        if last_run.status == RunStatus::Running {
            // Still in progress (on this or another replica): nothing was missed.
            return true;
        }
        let last = last_run.scheduled_for;
        // A deadline reaching back before the earliest representable instant means
        // "any age", the same as no deadline.
        let deadline_start = job
            .starting_deadline
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| now.checked_sub_signed(d));
        let from = deadline_start.map_or(last, |d| d.max(last));
        let missed_tick = job.schedule.last_between(from, now, job.timezone);
        let any_missed = job
            .schedule
            .next_after(last, job.timezone)
            .is_some_and(|t| t <= now);
        let retry = (last_run.status == RunStatus::Interrupted)
            .then(|| interrupted_tick(job, last))
            .flatten()
            .filter(|(tick, _)| deadline_start.is_none_or(|d| *tick >= d));
        match (job.missed, missed_tick, retry) {
            (MissedPolicy::RunOnce, Some(tick), _) => {
                tracing::info!(job = %job.name, tick = %tick.to_rfc3339(), "running a missed tick once");
                self.start(job, tick, Trigger::CatchUp).await;
            }
            // The newest tick's run was cut short (crash, shutdown): it did not happen
            // as far as the policy is concerned, so it is run again, under a claim of
            // its own (see `interrupted_tick`).
            (MissedPolicy::RunOnce, None, Some((tick, attempt))) => {
                tracing::info!(job = %job.name, tick = %tick.to_rfc3339(), attempt, "re-running an interrupted tick");
                let claim_at = tick + chrono::Duration::milliseconds(attempt.into());
                self.start_at(job, claim_at, tick, Trigger::CatchUp).await;
            }
            _ if any_missed => {
                let tick = job
                    .schedule
                    .last_between(last, now, job.timezone)
                    .unwrap_or(now);
                JobTickSkipped {
                    job: &job.name,
                    reason: "missed",
                    scheduled_for: tick,
                }
                .emit();
            }
            _ => {}
        }
        true
    }

    /// Every heartbeat: take over runs whose lease expired, apply the missed-run policy of
    /// ticks lost to a store outage once the store answers, and reconcile pending actions.
    async fn maintain(&mut self) {
        self.take_over().await;
        let waiting: Vec<String> = std::mem::take(&mut self.missed_in_outage)
            .into_iter()
            .collect();
        for name in waiting {
            let Some(job) = self
                .slots
                .iter()
                .find(|s| s.job.name == name)
                .map(|s| s.job.clone())
            else {
                continue;
            };
            if !self.catch_up_job(&job).await {
                self.missed_in_outage.insert(name);
            }
        }
        self.reconcile();
    }

    /// Marks runs whose lease expired as interrupted and handles their ticks.
    async fn take_over(&mut self) {
        let taken = match self.store.take_over_expired().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for runs whose lease expired");
                return;
            }
        };
        if taken.is_empty() {
            return;
        }
        let me = self.store.replica();
        for r in &taken {
            RunTakenOver {
                job: &r.job,
                run_id: r.id,
                owner: r.owner.as_deref(),
                by: &me,
            }
            .emit();
        }
        let jobs: std::collections::BTreeSet<&str> = taken.iter().map(|r| r.job.as_str()).collect();
        let jobs: Vec<Arc<JobConfig>> = self
            .slots
            .iter()
            .filter(|s| jobs.contains(s.job.name.as_str()))
            .map(|s| s.job.clone())
            .collect();
        for job in jobs {
            if !self.catch_up_job(&job).await {
                self.missed_in_outage.insert(job.name.clone());
            }
        }
        self.reconcile();
    }

    /// Starts reconciling pending actions, unless that is under way already.
    fn reconcile(&mut self) {
        if self.reconciling.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let executor = self.executor.clone();
        self.reconciling = Some(tokio::spawn(async move { executor.reconcile().await }));
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Reload(jobs, done) => {
                self.set_jobs(jobs).await;
                self.publish();
                let _ = done.send(());
            }
            Command::Trigger { job, reply } => {
                let result = self.trigger(&job).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn trigger(&mut self, name: &str) -> Result<RunId, TriggerError> {
        let job = self
            .slots
            .iter()
            .find(|s| s.job.name == name)
            .map(|s| s.job.clone())
            .ok_or_else(|| TriggerError::UnknownJob(name.to_string()))?;
        // `enabled = false` suspends the job, by hand as well as on schedule.
        if !job.enabled {
            return Err(TriggerError::Disabled(job.name.clone()));
        }
        if job.concurrency == ConcurrencyPolicy::Forbid
            && self.running.values().any(|r| r.job == job.name)
        {
            return Err(TriggerError::AlreadyRunning(job.name.clone()));
        }
        self.replace_running(&job);
        let now = self.clock.now();
        let asked = tokio::time::Instant::now();
        match self
            .claim(&job, now, Trigger::Manual, RunStatus::Running, None)
            .await
        {
            Ok(Some(id)) => {
                self.spawn_run(&job, id, now, Trigger::Manual, asked);
                Ok(id)
            }
            Ok(None) => Err(TriggerError::Claimed(job.name.clone())),
            Err(e) => Err(TriggerError::Store(e.to_string())),
        }
    }

    async fn fire_due(&mut self) {
        let now = self.clock.now();
        let mut due = Vec::new();
        for slot in &mut self.slots {
            if let (Some(fire_at), Some(tick)) = (slot.fire_at, slot.next_tick) {
                if fire_at <= now {
                    due.push((slot.job.clone(), tick));
                    Self::schedule_slot(slot, tick, now);
                }
            }
        }
        for (job, tick) in due {
            self.start(&job, tick, Trigger::Schedule).await;
        }
    }

    fn replace_running(&mut self, job: &JobConfig) {
        if job.concurrency != ConcurrencyPolicy::Replace {
            return;
        }
        for (id, r) in self.running.iter().filter(|(_, r)| r.job == job.name) {
            tracing::info!(job = %job.name, run_id = id, "cancelling the running run (concurrency = replace)");
            let _ = r
                .reason
                .set("replaced by a newer run (concurrency = replace)".into());
            r.cancel.cancel();
        }
    }

    /// Starts a tick, honouring the concurrency policy and the claim.
    async fn start(&mut self, job: &Arc<JobConfig>, tick: DateTime<Utc>, trigger: Trigger) {
        self.start_at(job, tick, tick, trigger).await
    }

    /// [`Self::start`], claiming the run as `claim_at` (a re-run of an interrupted tick) while
    /// the executor sees the tick itself.
    async fn start_at(
        &mut self,
        job: &Arc<JobConfig>,
        claim_at: DateTime<Utc>,
        tick: DateTime<Utc>,
        trigger: Trigger,
    ) {
        let busy = self.running.values().any(|r| r.job == job.name);
        if busy && job.concurrency == ConcurrencyPolicy::Forbid {
            JobTickSkipped {
                job: &job.name,
                reason: "overlap",
                scheduled_for: tick,
            }
            .emit();
            let why = "the previous run was still running (concurrency = forbid)";
            if let Err(e) = self
                .claim(job, claim_at, trigger, RunStatus::Skipped, Some(why))
                .await
            {
                tracing::warn!(job = %job.name, error = %e, "cannot record the skipped tick");
            }
            return;
        }
        if busy {
            self.replace_running(job);
        }
        let new_run = self.new_run(job, claim_at, trigger, RunStatus::Running, None);
        // The lease runs from the claim's statement, which is after this.
        let asked = tokio::time::Instant::now();
        // `forbid` holds across replicas: the store refuses the claim while another run of
        // the job holds a live lease, wherever it runs.
        let claimed = if job.concurrency == ConcurrencyPolicy::Forbid {
            self.store.claim_exclusive(&new_run).await
        } else {
            self.store.claim_run(&new_run).await.map(|c| match c {
                Some(id) => Claim::Claimed(id),
                None => Claim::TickTaken,
            })
        };
        match claimed {
            Ok(Claim::Claimed(id)) => {
                if job.concurrency == ConcurrencyPolicy::Replace {
                    // Other replicas' runs of the job see this at their next heartbeat.
                    if let Err(e) = self.store.request_cancel(&job.name, id).await {
                        tracing::warn!(job = %job.name, error = %e, "cannot ask other replicas' runs to stop (concurrency = replace)");
                    }
                }
                self.spawn_run(job, id, tick, trigger, asked)
            }
            Ok(Claim::Busy(other)) => {
                JobTickSkipped {
                    job: &job.name,
                    reason: "overlap",
                    scheduled_for: tick,
                }
                .emit();
                let why = format!(
                    "run {} on replica {} was still running (concurrency = forbid)",
                    other.id,
                    other.owner.as_deref().unwrap_or("unknown")
                );
                if let Err(e) = self
                    .claim(job, claim_at, trigger, RunStatus::Skipped, Some(&why))
                    .await
                {
                    tracing::warn!(job = %job.name, error = %e, "cannot record the skipped tick");
                }
            }
            Ok(Claim::TickTaken) => JobTickSkipped {
                job: &job.name,
                reason: "claimed_elsewhere",
                scheduled_for: tick,
            }
            .emit(),
            Err(e) => {
                tracing::error!(job = %job.name, error = %e, "cannot claim the run; its missed-run policy applies once the store answers");
                JobTickSkipped {
                    job: &job.name,
                    reason: "store_error",
                    scheduled_for: tick,
                }
                .emit();
                self.missed_in_outage.insert(job.name.clone());
            }
        }
    }

    fn new_run(
        &self,
        job: &JobConfig,
        tick: DateTime<Utc>,
        trigger: Trigger,
        status: RunStatus,
        error: Option<&str>,
    ) -> NewRun {
        NewRun {
            job: job.name.clone(),
            kind: job.kind.as_str().to_string(),
            scheduled_for: tick,
            trigger,
            dry_run: job.dry_run,
            status,
            error: error.map(str::to_string),
            plan_id: None,
        }
    }

    async fn claim(
        &self,
        job: &JobConfig,
        tick: DateTime<Utc>,
        trigger: Trigger,
        status: RunStatus,
        error: Option<&str>,
    ) -> crate::store::StoreResult<Option<RunId>> {
        self.store
            .claim_run(&self.new_run(job, tick, trigger, status, error))
            .await
    }

    /// Starts the run `id` claimed by a claim asked at `asked` (when its lease began at the
    /// earliest, by this replica's clock).
    fn spawn_run(
        &mut self,
        job: &Arc<JobConfig>,
        id: RunId,
        tick: DateTime<Utc>,
        trigger: Trigger,
        asked: tokio::time::Instant,
    ) {
        let cancel = CancellationToken::new();
        let reason = Arc::new(OnceLock::new());
        self.running.insert(
            id,
            Running {
                job: job.name.clone(),
                scheduled_for: tick,
                cancel: cancel.clone(),
                reason: reason.clone(),
            },
        );
        let handle = RunHandle {
            run_id: id,
            scheduled_for: tick,
            trigger,
            dry_run: job.dry_run,
            cancel,
            lease: LeaseWatch::claimed_at(asked, self.opts.lease),
        };
        let ctx = run::RunContext {
            store: self.store.clone(),
            executor: self.executor.clone(),
            clock: self.clock.clone(),
            cancel_wait: self.opts.cancel_wait,
            lease: self.opts.lease,
        };
        self.tasks
            .spawn(run::execute(ctx, job.clone(), handle, reason));
    }

    /// A job no longer in the policy loses its metric series once none of its runs is in
    /// progress (a finishing run would otherwise bring them back).
    fn unschedule_if_idle(&self, job: &str) {
        let scheduled = self.slots.iter().any(|s| s.job.name == job);
        let running = self.running.values().any(|r| r.job == job);
        if !scheduled && !running {
            JobUnscheduled { job }.emit();
        }
    }

    fn finished(&mut self, done: Result<run::Finished, tokio::task::JoinError>) {
        match done {
            Ok(f) => {
                self.running.remove(&f.run_id);
                if self.slots.iter().any(|s| s.job.name == f.job) {
                    self.last.insert(f.job, f.last);
                } else {
                    self.unschedule_if_idle(&f.job);
                }
            }
            // Only the shutdown path aborts run tasks, and it records those runs itself.
            Err(e) => tracing::error!(error = %e, "run task ended abnormally"),
        }
    }

    fn publish(&self) {
        let list = self
            .slots
            .iter()
            .map(|s| JobStatus {
                name: s.job.name.clone(),
                kind: s.job.kind.as_str().to_string(),
                schedule: s.job.schedule.to_string(),
                timezone: s.job.timezone.name().to_string(),
                enabled: s.job.enabled,
                dry_run: s.job.dry_run,
                next_run: s.next_tick,
                running: self
                    .running
                    .values()
                    .filter(|r| r.job == s.job.name)
                    .count(),
                last_run: self.last.get(&s.job.name).cloned(),
            })
            .collect();
        if let Ok(mut w) = self.status.write() {
            *w = list;
        }
    }

    /// Shutdown: wait up to the grace period, then cancel, then abort and record.
    async fn drain(&mut self) {
        let grace = tokio::time::sleep(self.opts.grace_period);
        tokio::pin!(grace);
        loop {
            if self.tasks.is_empty() {
                return;
            }
            tokio::select! {
                Some(done) = self.tasks.join_next() => self.finished(done),
                _ = &mut grace => break,
            }
        }
        tracing::warn!(
            running = self.running.len(),
            "grace period over; cancelling running jobs"
        );
        for r in self.running.values() {
            let _ = r.reason.set("interrupted by shutdown".into());
            r.cancel.cancel();
        }
        let wait = tokio::time::sleep(self.opts.cancel_wait);
        tokio::pin!(wait);
        loop {
            if self.tasks.is_empty() {
                return;
            }
            tokio::select! {
                Some(done) = self.tasks.join_next() => self.finished(done),
                _ = &mut wait => break,
            }
        }
        // Runs that ignored cancellation: stop them and write the record ourselves.
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for (id, r) in self.running.drain() {
            tracing::error!(job = %r.job, run_id = id, scheduled_for = %r.scheduled_for, "run did not stop when cancelled; aborted");
            run::record_finish(
                &*self.store,
                id,
                RunStatus::Interrupted,
                // Aborted runs record no counts: what they did is in their actions.
                ActionCounts::default(),
                Some("interrupted by shutdown (aborted)"),
            )
            .await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
