//! Scheduler semantics under paused tokio time, with an in-memory store and a fake executor.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::*;
use crate::store::{
    ActionId, ActionOutcome, ActionRecord, ConsumptionSample, NewAction, RunRecord, StateRecord,
    StoreError, StoreResult,
};

/// Just enough of a store, in memory, with the same claim semantics as the real one.
#[derive(Default)]
pub(crate) struct MemStore {
    runs: Mutex<Vec<RunRecord>>,
    /// Makes `last_scheduled_run` panic: a stand-in for a bug inside the loop.
    pub(crate) poisoned: std::sync::atomic::AtomicBool,
    /// `finish_run` fails this many more times.
    finish_failures: AtomicUsize,
    /// While set, claims and reads of the last run fail (the store is unreachable).
    pub(crate) down: std::sync::atomic::AtomicBool,
}

impl MemStore {
    fn runs(&self) -> Vec<RunRecord> {
        self.runs.lock().unwrap().clone()
    }
}

#[async_trait]
impl Store for MemStore {
    async fn migrate(&self) -> StoreResult<()> {
        Ok(())
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
    async fn claim_run(&self, run: &NewRun) -> StoreResult<Option<RunId>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("the test store is down".into()));
        }
        let mut runs = self.runs.lock().unwrap();
        if runs
            .iter()
            .any(|r| r.job == run.job && r.scheduled_for == run.scheduled_for)
        {
            return Ok(None);
        }
        let id = runs.len() as RunId + 1;
        runs.push(RunRecord {
            id,
            job: run.job.clone(),
            kind: run.kind.clone(),
            scheduled_for: run.scheduled_for,
            trigger: run.trigger,
            started_at: run.scheduled_for,
            finished_at: (run.status != RunStatus::Running).then_some(run.scheduled_for),
            status: run.status,
            dry_run: run.dry_run,
            error: run.error.clone(),
            counts: ActionCounts::default(),
            owner: None,
            lease_expires_at: None,
            plan_id: run.plan_id.clone(),
        });
        Ok(Some(id))
    }
    async fn finish_run(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
    ) -> StoreResult<()> {
        if self
            .finish_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Corrupt("injected: database is locked".into()));
        }
        let mut runs = self.runs.lock().unwrap();
        let r = runs
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| StoreError::Corrupt(format!("no run {id}")))?;
        r.status = status;
        r.counts = counts;
        r.error = error.map(str::to_string);
        r.finished_at = Some(r.scheduled_for);
        Ok(())
    }
    async fn get_run(&self, id: RunId) -> StoreResult<Option<RunRecord>> {
        Ok(self
            .runs
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned())
    }
    async fn list_runs(&self, f: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let runs = self.runs.lock().unwrap();
        Ok(runs
            .iter()
            .rev()
            .filter(|r| f.job.as_ref().is_none_or(|j| *j == r.job))
            .filter(|r| f.before.is_none_or(|b| r.id < b))
            .take(f.limit as usize)
            .cloned()
            .collect())
    }
    async fn last_scheduled_run(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        if self.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("poisoned test store");
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("the test store is down".into()));
        }
        let runs = self.runs.lock().unwrap();
        Ok(runs
            .iter()
            .filter(|r| r.job == job && matches!(r.trigger, Trigger::Schedule | Trigger::CatchUp))
            .max_by_key(|r| r.scheduled_for)
            .cloned())
    }
    async fn last_success(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        let runs = self.runs.lock().unwrap();
        Ok(runs
            .iter()
            .rev()
            .find(|r| r.job == job && r.status == RunStatus::Succeeded)
            .cloned())
    }
    async fn begin_action(&self, _: &NewAction) -> StoreResult<ActionId> {
        Err(StoreError::Corrupt(
            "the scheduler tests record no actions".into(),
        ))
    }
    async fn finish_action(
        &self,
        _: ActionId,
        _: ActionOutcome,
        _: Option<&str>,
    ) -> StoreResult<()> {
        Err(StoreError::Corrupt(
            "the scheduler tests record no actions".into(),
        ))
    }
    async fn actions_for_run(&self, _: RunId) -> StoreResult<Vec<ActionRecord>> {
        Ok(Vec::new())
    }
    async fn get_state(&self, _: &str, _: &str) -> StoreResult<Option<StateRecord>> {
        Ok(None)
    }
    async fn put_state(
        &self,
        _: RunId,
        _: &str,
        _: &str,
        expected: Option<i64>,
        _: &str,
    ) -> StoreResult<Option<i64>> {
        Ok(Some(expected.map_or(1, |v| v + 1)))
    }
    async fn upsert_consumption(&self, s: &[ConsumptionSample]) -> StoreResult<u64> {
        Ok(s.len() as u64)
    }
    async fn latest_consumption_end(&self, _: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(None)
    }
    async fn list_consumption(
        &self,
        _: &str,
        _: DateTime<Utc>,
    ) -> StoreResult<Vec<ConsumptionSample>> {
        Ok(Vec::new())
    }
    async fn prune(&self, _: &crate::store::PruneBefore) -> StoreResult<crate::store::Pruned> {
        Ok(Default::default())
    }
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Works this long, stopping early (as `partial`) when cancelled.
    Work(Duration),
    /// Works this long and ignores cancellation.
    Stubborn(Duration),
    Panic,
}

/// Records each call (job, handle, the clock's time at the call) and behaves as told.
struct FakeExec {
    behaviour: Behaviour,
    clock: Arc<dyn Clock>,
    calls: mpsc::UnboundedSender<(String, RunHandle, DateTime<Utc>)>,
    /// Stubborn runs that got to the end of their work.
    stubborn_done: Arc<AtomicUsize>,
}

#[async_trait]
impl Executor for FakeExec {
    async fn execute(&self, job: Arc<JobConfig>, run: RunHandle) -> RunReport {
        let _ = self
            .calls
            .send((job.name.clone(), run.clone(), self.clock.now()));
        match self.behaviour {
            Behaviour::Work(d) => tokio::select! {
                _ = tokio::time::sleep(d) => RunReport::succeeded(ActionCounts { succeeded: 1, ..Default::default() }),
                _ = run.cancel.cancelled() => RunReport { status: RunStatus::Partial, counts: ActionCounts::default(), error: Some("stopped".into()) },
            },
            Behaviour::Stubborn(d) => {
                tokio::time::sleep(d).await;
                self.stubborn_done.fetch_add(1, Ordering::SeqCst);
                RunReport::succeeded(ActionCounts::default())
            }
            Behaviour::Panic => panic!("boom"),
        }
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A job from policy text (the parts after `name`/`kind`).
fn job(name: &str, rest: &str) -> Arc<JobConfig> {
    let text =
        format!("[[jobs]]\nname = \"{name}\"\nkind = \"expire_branches\"\nttl = \"1d\"\n{rest}\n");
    let cfg = crate::config::parse_with_env(Path::new("t.toml"), &text, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    cfg.jobs[0].clone()
}

struct Harness {
    store: Arc<MemStore>,
    clock: Arc<dyn Clock>,
    calls: mpsc::UnboundedReceiver<(String, RunHandle, DateTime<Utc>)>,
    handle: SchedulerHandle,
    task: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    stubborn_done: Arc<AtomicUsize>,
}

fn start(
    store: Arc<MemStore>,
    at: &str,
    behaviour: Behaviour,
    jobs: Vec<Arc<JobConfig>>,
    opts: SchedulerOptions,
) -> Harness {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(utc(at)));
    let (tx, calls) = mpsc::unbounded_channel();
    let stubborn_done = Arc::new(AtomicUsize::new(0));
    let exec = Arc::new(FakeExec {
        behaviour,
        clock: clock.clone(),
        calls: tx,
        stubborn_done: stubborn_done.clone(),
    });
    let shutdown = CancellationToken::new();
    let (handle, task) =
        Scheduler::new(store.clone(), exec, clock.clone(), opts).spawn(jobs, shutdown.clone());
    Harness {
        store,
        clock,
        calls,
        handle,
        task,
        shutdown,
        stubborn_done,
    }
}

impl Harness {
    async fn next_call(&mut self) -> (String, RunHandle, DateTime<Utc>) {
        self.calls.recv().await.expect("the executor is alive")
    }
    async fn sleep_until(&self, at: &str) {
        let d = (utc(at) - self.clock.now()).to_std().unwrap();
        tokio::time::sleep(d).await;
    }
    async fn stop(self) -> Arc<MemStore> {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.store
    }
}

fn statuses(store: &MemStore, job: &str) -> Vec<(String, RunStatus)> {
    store
        .runs()
        .into_iter()
        .filter(|r| r.job == job)
        .map(|r| (r.scheduled_for.format("%H:%M:%S").to_string(), r.status))
        .collect()
}

const SHORT: Behaviour = Behaviour::Work(Duration::from_millis(10));

#[tokio::test(start_paused = true)]
async fn berlin_spring_forward_fires_at_exact_instants() {
    let j = job(
        "dst",
        "schedule = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"",
    );
    let j2 = job(
        "hourly",
        "schedule = \"0 * * * *\"\ntimezone = \"Europe/Berlin\"",
    );
    let mut h = start(
        Arc::default(),
        "2026-03-28T12:00:00Z",
        SHORT,
        vec![j, j2],
        SchedulerOptions::default(),
    );
    let mut daily = Vec::new();
    let mut hourly = Vec::new();
    while daily.len() < 2 {
        let (name, run, now) = h.next_call().await;
        // Fired exactly at the tick (no jitter configured), and the tick is what is recorded.
        assert_eq!(run.scheduled_for, now);
        if name == "dst" {
            daily.push(now)
        } else {
            hourly.push(now)
        }
    }
    // 02:30 does not exist on 2026-03-29: fires right after the gap, 03:00 CEST.
    assert_eq!(
        daily,
        [utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")]
    );
    // Hourly across the gap: 01:00 CET (00:00Z), then 03:00 CEST (01:00Z): one hour, no double.
    let around: Vec<_> = hourly
        .iter()
        .filter(|t| **t >= utc("2026-03-28T23:00:00Z") && **t <= utc("2026-03-29T02:00:00Z"))
        .collect();
    assert_eq!(
        around,
        [
            &utc("2026-03-28T23:00:00Z"),
            &utc("2026-03-29T00:00:00Z"),
            &utc("2026-03-29T01:00:00Z"),
            &utc("2026-03-29T02:00:00Z")
        ]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn berlin_fall_back_fires_repeated_time_once() {
    let j = job(
        "dst",
        "schedule = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"",
    );
    let j2 = job(
        "hourly",
        "schedule = \"0 * * * *\"\ntimezone = \"Europe/Berlin\"",
    );
    let mut h = start(
        Arc::default(),
        "2026-10-24T23:10:00Z",
        SHORT,
        vec![j, j2],
        SchedulerOptions::default(),
    );
    let (mut daily, mut hourly) = (Vec::new(), Vec::new());
    while daily.len() < 2 {
        let (name, _, now) = h.next_call().await;
        if name == "dst" {
            daily.push(now)
        } else {
            hourly.push(now)
        }
    }
    // 02:30 happens twice on 2026-10-25 (00:30Z CEST, 01:30Z CET): one run, at the first.
    assert_eq!(
        daily,
        [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
    );
    // Hourly: 02:00 CEST (00:00Z), then the repeated 02:00 CET is not run again, 03:00 CET.
    assert_eq!(
        &hourly[..3],
        [
            utc("2026-10-25T00:00:00Z"),
            utc("2026-10-25T02:00:00Z"),
            utc("2026-10-25T03:00:00Z")
        ]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn forbid_skips_and_records_overlapping_ticks() {
    let j = job("slow", "every = \"10s\"");
    let h = start(
        Arc::default(),
        "2026-01-01T00:00:05Z",
        Behaviour::Work(Duration::from_secs(25)),
        vec![j],
        SchedulerOptions::default(),
    );
    h.sleep_until("2026-01-01T00:00:55Z").await;
    let store = h.stop().await;
    assert_eq!(
        statuses(&store, "slow"),
        [
            ("00:00:10".to_string(), RunStatus::Succeeded),
            ("00:00:20".to_string(), RunStatus::Skipped),
            ("00:00:30".to_string(), RunStatus::Skipped),
            ("00:00:40".to_string(), RunStatus::Succeeded),
            ("00:00:50".to_string(), RunStatus::Skipped),
        ]
    );
    let skipped = store
        .runs()
        .into_iter()
        .find(|r| r.status == RunStatus::Skipped)
        .unwrap();
    assert!(skipped.error.unwrap().contains("concurrency = forbid"));
}

#[tokio::test(start_paused = true)]
async fn allow_runs_overlapping() {
    let j = job("slow", "every = \"10s\"\nconcurrency = \"allow\"");
    let h = start(
        Arc::default(),
        "2026-01-01T00:00:05Z",
        Behaviour::Work(Duration::from_secs(25)),
        vec![j],
        SchedulerOptions::default(),
    );
    h.sleep_until("2026-01-01T00:00:34Z").await;
    let running = h.handle.jobs()[0].running;
    assert_eq!(running, 3, "runs of 00:10, 00:20 and 00:30 overlap");
    let store = h.stop().await;
    assert!(statuses(&store, "slow")
        .iter()
        .all(|(_, s)| *s == RunStatus::Succeeded));
    assert_eq!(store.runs().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn replace_cancels_the_running_run() {
    let j = job("slow", "every = \"10s\"\nconcurrency = \"replace\"");
    let h = start(
        Arc::default(),
        "2026-01-01T00:00:05Z",
        Behaviour::Work(Duration::from_secs(15)),
        vec![j],
        SchedulerOptions::default(),
    );
    h.sleep_until("2026-01-01T00:00:26Z").await;
    let store = h.stop().await;
    let runs = store.runs();
    // 00:10 is cancelled by the 00:20 tick; 00:20 then finishes within the shutdown grace.
    assert_eq!(
        statuses(&store, "slow"),
        [
            ("00:00:10".to_string(), RunStatus::Interrupted),
            ("00:00:20".to_string(), RunStatus::Succeeded)
        ]
    );
    assert_eq!(
        runs[0].error.as_deref(),
        Some("replaced by a newer run (concurrency = replace): stopped")
    );
}

#[tokio::test(start_paused = true)]
async fn missed_run_once_survives_restart_and_skip_does_not_run() {
    let store: Arc<MemStore> = Arc::default();
    let catch = job(
        "catch",
        "every = \"1h\"\nmissed = \"run_once\"\nstarting_deadline = \"2h\"",
    );
    let skip = job("skip", "every = \"1h\"");
    let late = job(
        "late",
        "every = \"1h\"\nmissed = \"run_once\"\nstarting_deadline = \"20m\"",
    );
    let jobs = vec![catch.clone(), skip.clone(), late.clone()];
    // First life: 00:30 to 01:10; each job runs its 01:00 tick.
    let h = start(
        store.clone(),
        "2026-01-01T00:30:00Z",
        SHORT,
        jobs.clone(),
        SchedulerOptions::default(),
    );
    h.sleep_until("2026-01-01T01:10:00Z").await;
    let store = h.stop().await;
    assert_eq!(store.runs().len(), 3);

    // Down until 04:30. Second life: `catch` runs the 04:00 tick once at start.
    let mut h = start(
        store,
        "2026-01-01T04:30:00Z",
        SHORT,
        jobs,
        SchedulerOptions::default(),
    );
    let (name, run, now) = h.next_call().await;
    assert_eq!(
        (name.as_str(), run.scheduled_for, run.trigger, now),
        (
            "catch",
            utc("2026-01-01T04:00:00Z"),
            Trigger::CatchUp,
            utc("2026-01-01T04:30:00Z")
        )
    );
    // Nothing else until the 05:00 ticks of all three.
    let (_, _, next) = h.next_call().await;
    assert_eq!(next, utc("2026-01-01T05:00:00Z"));
    let store = h.stop().await;
    assert_eq!(statuses(&store, "skip").len(), 2, "01:00 and 05:00 only");
    assert_eq!(
        statuses(&store, "late")
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>()[..1],
        ["01:00:00"]
    );

    // A third life at 04:45 must not run 04:00 again (the store says it ran).
    let h = start(
        store,
        "2026-01-01T04:45:00Z",
        SHORT,
        vec![catch],
        SchedulerOptions::default(),
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let store = h.stop().await;
    assert_eq!(
        statuses(&store, "catch")
            .iter()
            .filter(|r| r.0 == "04:00:00")
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_fails_the_run_and_aborts_if_ignored() {
    let polite = job("polite", "every = \"1m\"\ntimeout = \"5s\"");
    let h = start(
        Arc::default(),
        "2026-01-01T00:00:30Z",
        Behaviour::Work(Duration::from_secs(30)),
        vec![polite],
        SchedulerOptions::default(),
    );
    h.sleep_until("2026-01-01T00:01:10Z").await;
    let store = h.stop().await;
    let r = &store.runs()[0];
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_deref(), Some("timed out after 5s: stopped"));

    let stubborn = job("stubborn", "every = \"1m\"\ntimeout = \"5s\"");
    let opts = SchedulerOptions {
        cancel_wait: Duration::from_secs(2),
        ..Default::default()
    };
    let h = start(
        Arc::default(),
        "2026-01-01T00:00:30Z",
        Behaviour::Stubborn(Duration::from_secs(3600)),
        vec![stubborn],
        opts,
    );
    h.sleep_until("2026-01-01T00:01:10Z").await;
    // Recorded at timeout + cancel_wait, long before the executor would have returned.
    let r = h.store.runs()[0].clone();
    assert_eq!(
        (r.status, r.error.as_deref()),
        (RunStatus::Failed, Some("timed out after 5s"))
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn panic_is_caught_and_recorded() {
    let j = job("boom", "every = \"1m\"");
    let mut h = start(
        Arc::default(),
        "2026-01-01T00:00:30Z",
        Behaviour::Panic,
        vec![j],
        SchedulerOptions::default(),
    );
    h.next_call().await;
    // The loop survives: the next tick runs too.
    h.next_call().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let store = h.stop().await;
    let runs = store.runs();
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.error.as_deref(), Some("the run panicked: boom"));
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_runs_within_grace() {
    let j = job("j", "every = \"1m\"");
    let opts = SchedulerOptions {
        grace_period: Duration::from_secs(30),
        ..Default::default()
    };
    let mut h = start(
        Arc::default(),
        "2026-01-01T00:00:50Z",
        Behaviour::Work(Duration::from_secs(20)),
        vec![j],
        opts,
    );
    h.next_call().await;
    let stopped_at = tokio::time::Instant::now();
    let store = h.stop().await;
    assert_eq!(
        stopped_at.elapsed(),
        Duration::from_secs(20),
        "waited for the run, not longer"
    );
    assert_eq!(store.runs()[0].status, RunStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn shutdown_past_grace_interrupts() {
    let j = job("j", "every = \"1m\"");
    let opts = SchedulerOptions {
        grace_period: Duration::from_secs(10),
        cancel_wait: Duration::from_secs(3),
        watchdog: None,
        ..Default::default()
    };
    let mut h = start(
        Arc::default(),
        "2026-01-01T00:00:50Z",
        Behaviour::Work(Duration::from_secs(600)),
        vec![j.clone()],
        opts.clone(),
    );
    h.next_call().await;
    let t = tokio::time::Instant::now();
    let store = h.stop().await;
    assert_eq!(t.elapsed(), Duration::from_secs(10));
    let r = &store.runs()[0];
    assert_eq!(
        (r.status, r.error.as_deref()),
        (
            RunStatus::Interrupted,
            Some("interrupted by shutdown: stopped")
        )
    );

    // A run that ignores cancellation is aborted after cancel_wait and still recorded.
    let mut h = start(
        Arc::default(),
        "2026-01-01T00:00:50Z",
        Behaviour::Stubborn(Duration::from_secs(600)),
        vec![j],
        opts,
    );
    h.next_call().await;
    let t = tokio::time::Instant::now();
    let done = h.stubborn_done.clone();
    let store = h.stop().await;
    assert_eq!(t.elapsed(), Duration::from_secs(13));
    assert_eq!(store.runs()[0].status, RunStatus::Interrupted);
    // Aborted means aborted: the executor's own task does not go on acting after the
    // daemon recorded the run interrupted.
    tokio::time::sleep(Duration::from_secs(1200)).await;
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the aborted run kept working"
    );
}

#[tokio::test(start_paused = true)]
async fn trigger_reload_status_and_watchdog() {
    let pings = Arc::new(AtomicUsize::new(0));
    let p = pings.clone();
    let opts = SchedulerOptions {
        watchdog: Some((
            Duration::from_secs(10),
            Arc::new(move || {
                p.fetch_add(1, Ordering::SeqCst);
            }),
        )),
        ..Default::default()
    };
    let a = job("a", "schedule = \"0 3 * * *\"");
    let mut h = start(Arc::default(), "2026-01-01T00:00:00Z", SHORT, vec![a], opts);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let st = h.handle.jobs();
    assert_eq!(st[0].next_run, Some(utc("2026-01-01T03:00:00Z")));
    assert_eq!(st[0].schedule, "0 3 * * *");

    let id = h.handle.trigger("a").await.unwrap();
    let (_, run, _) = h.next_call().await;
    assert_eq!((run.run_id, run.trigger), (id, Trigger::Manual));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.handle.trigger("nope").await,
        Err(TriggerError::UnknownJob("nope".into()))
    );

    // Reload: `a` changes schedule, `b` is new; the new times apply at once.
    let a2 = job("a", "schedule = \"0 1 * * *\"");
    let b = job("b", "every = \"30m\"");
    h.handle.reload(vec![a2, b]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let st = h.handle.jobs();
    assert_eq!(
        st.iter()
            .map(|s| (s.name.as_str(), s.next_run))
            .collect::<Vec<_>>(),
        [
            ("a", Some(utc("2026-01-01T01:00:00Z"))),
            ("b", Some(utc("2026-01-01T00:30:00Z")))
        ]
    );
    assert_eq!(
        st[0].last_run.as_ref().map(|l| l.status),
        Some(RunStatus::Succeeded)
    );

    tokio::time::sleep(Duration::from_secs(55)).await;
    assert!(
        pings.load(Ordering::SeqCst) >= 6,
        "pinged at start and every 10s"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn disabled_jobs_never_fire() {
    let j = job("off", "every = \"1s\"\nenabled = false");
    let h = start(
        Arc::default(),
        "2026-01-01T00:00:00Z",
        SHORT,
        vec![j],
        SchedulerOptions::default(),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.handle.jobs()[0].next_run, None);
    let store = h.stop().await;
    assert!(store.runs().is_empty());
}

#[tokio::test(start_paused = true)]
async fn started_means_jobs_are_published() {
    let j = job("a", "schedule = \"0 3 * * *\"");
    let j2 = job("b", "every = \"15m\"");
    let h = start(
        Arc::default(),
        "2026-06-01T12:00:00Z",
        SHORT,
        vec![j, j2],
        SchedulerOptions::default(),
    );
    // Before the loop task has run at all, nothing claims to be scheduling.
    assert!(!h.handle.is_running());
    h.handle.started().await;
    assert!(h.handle.is_running());
    let names: Vec<String> = h.handle.jobs().into_iter().map(|j| j.name).collect();
    assert_eq!(names, ["a", "b"]);
    h.stop().await;
}

/// Durations a policy can no longer contain (the parser bounds them), set directly: the
/// loop must survive them rather than panic on `tick + jitter` or `now - deadline`.
#[tokio::test(start_paused = true)]
async fn absurd_durations_do_not_kill_the_loop() {
    let store: Arc<MemStore> = Arc::default();
    let mut jit = (*job("jit", "every = \"1h\"")).clone();
    jit.jitter = Some(Duration::from_secs(1_000_000_000_000_000));
    let mut late = (*job("late", "every = \"1h\"\nmissed = \"run_once\"")).clone();
    late.starting_deadline = Some(Duration::from_secs(1_000_000_000_000_000));
    let (jit, late) = (Arc::new(jit), Arc::new(late));
    // `late` ran once, so the second life has a missed tick to consider.
    let h = start(
        store.clone(),
        "2026-01-01T00:30:00Z",
        SHORT,
        vec![late.clone()],
        SchedulerOptions::default(),
    );
    h.sleep_until("2026-01-01T01:10:00Z").await;
    let store = h.stop().await;

    let mut h = start(
        store,
        "2026-01-01T04:30:00Z",
        SHORT,
        vec![jit, late],
        SchedulerOptions::default(),
    );
    tokio::time::timeout(Duration::from_secs(5), h.handle.started())
        .await
        .expect("started() returns");
    assert!(h.handle.is_running(), "the loop is scheduling");
    // Any age is within an unrepresentable deadline: the 04:00 tick is caught up.
    let (name, run, _) = h.next_call().await;
    assert_eq!((name.as_str(), run.trigger), ("late", Trigger::CatchUp));
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert!(h.handle.is_running(), "still scheduling hours later");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_panics_is_not_reported_alive() {
    let store = Arc::new(MemStore::default());
    store
        .poisoned
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let j = job(
        "a",
        "every = \"1h\"\nmissed = \"run_once\"\nstarting_deadline = \"2h\"",
    );
    let h = start(
        store,
        "2026-06-01T12:30:00Z",
        SHORT,
        vec![j],
        SchedulerOptions::default(),
    );
    // `started()` returns (it does not wait forever) and nobody is told the loop runs.
    tokio::time::timeout(Duration::from_secs(60), h.handle.started())
        .await
        .expect("started() returns once the loop has died");
    assert!(!h.handle.is_running());
    let end = h.task.await;
    assert!(end.is_err_and(|e| e.is_panic()));
}

#[tokio::test(start_paused = true)]
async fn a_disabled_job_cannot_be_triggered() {
    let off = job("off", "every = \"1h\"\nenabled = false");
    let mut h = start(
        Arc::default(),
        "2026-01-01T00:00:00Z",
        SHORT,
        vec![off],
        SchedulerOptions::default(),
    );
    h.handle.started().await;
    assert_eq!(
        h.handle.trigger("off").await,
        Err(TriggerError::Disabled("off".into()))
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(h.calls.try_recv().is_err(), "the executor was not called");
    let store = h.stop().await;
    assert!(store.runs().is_empty(), "no run was recorded");
}

/// Ticks lost while the store is unreachable are not lost for good: once it answers again
/// (seen at the next heartbeat), `missed = "run_once"` runs the newest missed tick once, in
/// the running daemon.
#[tokio::test(start_paused = true)]
async fn ticks_missed_during_a_store_outage_follow_the_missed_policy() {
    let store: Arc<MemStore> = Arc::default();
    let j = job(
        "j",
        "every = \"1m\"\nmissed = \"run_once\"\nstarting_deadline = \"1h\"",
    );
    let mut h = start(
        store.clone(),
        "2026-01-01T00:00:30Z",
        SHORT,
        vec![j],
        SchedulerOptions::default(),
    );
    let (_, first, _) = h.next_call().await;
    assert_eq!(first.scheduled_for, utc("2026-01-01T00:01:00Z"));
    store.down.store(true, Ordering::SeqCst);
    // 00:02, 00:03 and 00:04 cannot be claimed.
    h.sleep_until("2026-01-01T00:04:30Z").await;
    store.down.store(false, Ordering::SeqCst);
    let (_, caught_up, at) = h.next_call().await;
    assert_eq!(caught_up.trigger, Trigger::CatchUp);
    assert_eq!(caught_up.scheduled_for, utc("2026-01-01T00:04:00Z"));
    // Within one heartbeat of the store answering again, before the next tick.
    assert!(at < utc("2026-01-01T00:05:00Z"), "{at}");
    let (_, next, _) = h.next_call().await;
    assert_eq!(
        (next.trigger, next.scheduled_for),
        (Trigger::Schedule, utc("2026-01-01T00:05:00Z"))
    );
    let store = h.stop().await;
    assert_eq!(
        statuses(&store, "j"),
        [
            ("00:01:00".to_string(), RunStatus::Succeeded),
            ("00:04:00".to_string(), RunStatus::Succeeded),
            ("00:05:00".to_string(), RunStatus::Succeeded),
        ]
    );
}

/// A store that fails for a while when the run ends: the end is recorded once it recovers;
/// a store that stays down is given up on in bounded time.
#[tokio::test(start_paused = true)]
async fn the_end_of_a_run_is_recorded_despite_store_errors() {
    let store: Arc<MemStore> = Arc::default();
    store.finish_failures.store(3, Ordering::SeqCst);
    let mut h = start(
        store,
        "2026-01-01T00:00:50Z",
        SHORT,
        vec![job("j", "every = \"1m\"")],
        SchedulerOptions::default(),
    );
    h.next_call().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let store = h.stop().await;
    assert_eq!(store.runs()[0].status, RunStatus::Succeeded);
    assert_eq!(store.finish_failures.load(Ordering::SeqCst), 0);

    store.finish_failures.store(usize::MAX, Ordering::SeqCst);
    let t = tokio::time::Instant::now();
    let recorded =
        run::record_finish(&*store, 1, RunStatus::Failed, ActionCounts::default(), None).await;
    assert!(!recorded);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(store.finish_failures.load(Ordering::SeqCst), usize::MAX - 6);
}

/// A job removed by a reload loses its metric series (else `NeonStewardJobStale` fires for
/// a job that no longer exists); one still running keeps them until its run ends.
#[tokio::test(start_paused = true)]
async fn reload_removes_the_series_of_removed_jobs() {
    use crate::telemetry::metrics::render;
    let series = |job: &str| {
        render()
            .lines()
            .filter(|l| l.contains(&format!("job_name=\"{job}\"")))
            .count()
    };
    let idle = job("t-reload-removed-idle", "every = \"1h\"");
    let busy = job("t-reload-removed-busy", "every = \"1m\"");
    let kept = job("t-reload-kept", "every = \"1h\"");
    let mut h = start(
        Arc::default(),
        "2026-01-01T00:00:50Z",
        Behaviour::Work(Duration::from_secs(30)),
        vec![idle.clone(), busy.clone(), kept.clone()],
        SchedulerOptions::default(),
    );
    h.next_call().await; // `busy` runs from 00:01:00 to 00:01:30
    assert!(series(&idle.name) > 0 && series(&busy.name) > 0);
    h.handle.reload(vec![kept.clone()]).await.unwrap();
    assert_eq!(series(&idle.name), 0, "the removed job's series are gone");
    assert!(series(&busy.name) > 0, "kept while its run is in progress");
    assert!(series(&kept.name) > 0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(series(&busy.name), 0, "gone once its run finished");
    assert!(series(&kept.name) > 0);
    h.stop().await;
}

/// `missed = "run_once"`: a tick whose run was interrupted (crash, shutdown past the grace
/// period) is run again at start-up if still within `starting_deadline`, a bounded number
/// of times, and only once it is the newest tick.
#[tokio::test(start_paused = true)]
async fn an_interrupted_tick_is_run_again() {
    let j = job(
        "j",
        "every = \"1h\"\nmissed = \"run_once\"\nstarting_deadline = \"2h\"",
    );
    let opts = SchedulerOptions {
        grace_period: Duration::from_secs(1),
        cancel_wait: Duration::from_secs(1),
        watchdog: None,
        ..Default::default()
    };
    let long = Behaviour::Work(Duration::from_secs(1200));
    // Each life starts, runs (or re-runs) the 01:00 tick and is stopped mid-run.
    let mut store: Arc<MemStore> = Arc::default();
    for (at, expected) in [
        ("2026-01-01T00:59:00Z", Some(Trigger::Schedule)),
        ("2026-01-01T01:20:00Z", Some(Trigger::CatchUp)),
        ("2026-01-01T01:30:00Z", Some(Trigger::CatchUp)),
        ("2026-01-01T01:40:00Z", Some(Trigger::CatchUp)),
        // Three re-runs were interrupted too: given up.
        ("2026-01-01T01:50:00Z", None),
    ] {
        let mut h = start(store, at, long, vec![j.clone()], opts.clone());
        let call = tokio::time::timeout(Duration::from_secs(65), h.next_call()).await;
        match (expected, call) {
            (Some(trigger), Ok((_, run, _))) => {
                assert_eq!(run.scheduled_for, utc("2026-01-01T01:00:00Z"), "{at}");
                assert_eq!(run.trigger, trigger, "{at}");
            }
            (None, Err(_)) => {}
            (e, c) => panic!("{at}: expected {e:?}, got {:?}", c.map(|c| c.1.trigger)),
        }
        store = h.stop().await;
    }
    let claims: Vec<String> = store
        .runs()
        .iter()
        .map(|r| r.scheduled_for.format("%H:%M:%S%.3f").to_string())
        .collect();
    assert_eq!(
        claims,
        [
            "01:00:00.000",
            "01:00:00.001",
            "01:00:00.002",
            "01:00:00.003"
        ]
    );
    assert!(store
        .runs()
        .iter()
        .all(|r| r.status == RunStatus::Interrupted));

    // Past the starting deadline: not re-run.
    let j = job(
        "j",
        "every = \"1h\"\nmissed = \"run_once\"\nstarting_deadline = \"30m\"",
    );
    let store: Arc<MemStore> = Arc::default();
    let mut h = start(
        store,
        "2026-01-01T00:59:00Z",
        long,
        vec![j.clone()],
        opts.clone(),
    );
    h.next_call().await;
    let store = h.stop().await;
    let mut h = start(store, "2026-01-01T01:45:00Z", SHORT, vec![j], opts);
    let (_, run, _) = h.next_call().await;
    assert_eq!(
        (run.scheduled_for, run.trigger),
        (utc("2026-01-01T02:00:00Z"), Trigger::Schedule),
        "01:00 is 45m old, past the 30m deadline"
    );
    h.stop().await;
}
