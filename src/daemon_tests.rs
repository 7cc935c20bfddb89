//! The daemon's supervision of its scheduler task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::scheduler::tests::MemStore;
use crate::scheduler::{RunHandle, RunReport, Scheduler, SchedulerOptions, TokioClock};

struct NoExec;

#[async_trait]
impl Executor for NoExec {
    async fn execute(&self, _: Arc<JobConfig>, _: RunHandle) -> RunReport {
        RunReport::failed("the supervision tests run nothing")
    }
}

fn spawn(store: Arc<MemStore>) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
    let text = "[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nttl = \"1d\"\nevery = \"1h\"\n";
    let cfg = config::parse_with_env(std::path::Path::new("t.toml"), text, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("a valid instant");
    let clock = Arc::new(TokioClock::starting_at(at));
    Scheduler::new(store, Arc::new(NoExec), clock, SchedulerOptions::default())
        .spawn(cfg.jobs.clone(), CancellationToken::new())
}

#[tokio::test(start_paused = true)]
async fn a_scheduler_dying_during_start_up_is_an_error() {
    let store: Arc<MemStore> = Arc::default();
    store.poisoned.store(true, Ordering::SeqCst);
    let (handle, mut task) = spawn(store);
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        wait_started(&handle, &mut task, std::future::pending()),
    )
    .await
    .expect("start-up does not hang on a dead scheduler");
    let e = r.expect_err("a dead scheduler is an error");
    assert_eq!(e.to_string(), "the scheduler panicked: poisoned test store");
}

#[tokio::test(start_paused = true)]
async fn start_up_waits_for_the_scheduler_or_a_stop() {
    let (handle, mut task) = spawn(Arc::default());
    let r = wait_started(&handle, &mut task, std::future::pending()).await;
    assert_eq!(r.unwrap(), None, "started");

    // A stop (SIGTERM) before the loop has started ends the wait.
    let (handle, mut task) = spawn(Arc::default());
    let r = wait_started(&handle, &mut task, async { "SIGTERM" }).await;
    assert_eq!(r.unwrap(), Some("SIGTERM"));
}

#[test]
fn a_retention_past_the_earliest_instant_cuts_off_nothing() {
    let now = Utc::now();
    assert_eq!(
        cutoff(now, Duration::from_secs(3600)),
        now - chrono::Duration::hours(1)
    );
    for far in [Duration::from_secs(1_000_000_000_000_000), Duration::MAX] {
        assert_eq!(cutoff(now, far), chrono::DateTime::<Utc>::MIN_UTC);
    }
}

#[tokio::test(start_paused = true)]
async fn prune_survives_a_retention_past_the_earliest_instant() {
    let shutdown = CancellationToken::new();
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let far = Duration::from_secs(1_000_000_000_000_000);
    let task = tokio::spawn(prune_loop(
        store,
        Retentions {
            history: far,
            consumption: far,
        },
        shutdown.clone(),
    ));
    tokio::time::sleep(PRUNE_EVERY * 3).await;
    assert!(!task.is_finished(), "the prune task is still alive");
    shutdown.cancel();
    task.await.expect("the prune task did not panic");
}

/// `once` and `plan` open the store while a daemon may be running: they must not mark its
/// running runs interrupted. Only the daemon's start-up recovers.
#[tokio::test]
async fn opening_the_store_leaves_running_runs_alone() {
    use crate::store::{NewRun, RunStatus, Trigger};
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}/s.db", dir.path().display());
    let text = format!(
        "[store]\nurl = \"{url}\"\n[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nttl = \"1d\"\nevery = \"1h\"\n"
    );
    let cfg = config::parse_with_env(std::path::Path::new("t.toml"), &text, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let daemon_store = open_store(&cfg).await.expect("store");
    let id = daemon_store
        .claim_run(&NewRun {
            job: "a".into(),
            kind: "expire_branches".into(),
            scheduled_for: Utc::now(),
            trigger: Trigger::Schedule,
            dry_run: false,
            status: RunStatus::Running,
            error: None,
            plan_id: None,
        })
        .await
        .expect("claim")
        .expect("fresh tick");

    let cli_store = open_store(&cfg).await.expect("store");
    let r = cli_store.get_run(id).await.unwrap().unwrap();
    assert_eq!(
        r.status,
        RunStatus::Running,
        "`once`/`plan` left the daemon's run alone"
    );

    // A daemon starting next to it leaves it alone too: its lease is live.
    let daemon_store = open_store(&cfg).await.expect("store");
    assert!(daemon_store.take_over_expired().await.unwrap().is_empty());
    let r = daemon_store.get_run(id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Running);
}
