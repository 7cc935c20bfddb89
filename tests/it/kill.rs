//! The real binary killed with SIGKILL at random points, again and again, against one
//! emulator and one SQLite store; and three replicas on one PostgreSQL store with a kill and
//! a pause. Afterwards no action is `pending`, every outcome in the ledger agrees with the
//! emulator's mutation log, no tick made a second snapshot, and every snapshot the job made
//! is in its ownership record (none leaked). The harness is `chaos.rs`.
//!
//! Kill points come from a fixed-seed generator (printed), so a failure can be replayed.
//! Waits are lower bounds (let the daemon run at least this long) plus generous upper bounds
//! on progress; nothing depends on the machine being fast.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use neon_steward::store::{self, RunStatus};

use crate::chaos::{
    all_runs, audit, owner_of_a_running_run, pending_in_ended_runs, signal, slow_operations,
    start_on, Audit, Points, POLICY,
};
use crate::helpers::spawn_sim;

const KILLS: u32 = 20;

fn start(dir: &Path, base: &str, key: &str) -> Child {
    let url = format!("sqlite://{}/state.db", dir.display());
    start_on(dir, base, key, &url, "daemon.log")
}

/// What every chaos run must end with.
fn assert_truthful(a: &Audit) {
    eprintln!("{a:?}");
    assert_eq!(a.pending, 0, "{a:?}");
    assert_eq!(a.unknown, 0, "Neon can always tell for snapshots: {a:?}");
    assert!(a.created_at_neon > 0, "the daemon did work: {a:?}");
    assert_eq!(
        a.duplicate_creates, 0,
        "a tick made a second snapshot: {a:?}"
    );
    assert_eq!(a.disagreements, 0, "ledger vs emulator: {a:?}");
    assert_eq!(a.leaked, 0, "snapshots outside the ownership record: {a:?}");
    assert_eq!(a.ticks_run_twice, 0, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_leaves_a_ledger_that_agrees_with_neon() {
    let sim = spawn_sim(slow_operations()).await;
    for name in ["alpha", "beta", "gamma"] {
        sim.add_project(name, None);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let (base, key) = (sim.base_url(), sim.api_key());
    let seed = 0x5eed_2026_1203_u64;
    eprintln!("kill points from seed {seed:#x}");
    let mut points = Points(seed);

    for _ in 0..KILLS {
        let mut child = start(dir.path(), &base, &key);
        let wait = points.next_ms(300, 2500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }

    // The last start: it takes over what the killed ones left once their leases expire,
    // reconciles their pending actions and goes on. Wait (bounded) until nothing is left
    // running from the killed lives nor pending.
    let mut child = start(dir.path(), &base, &key);
    let store = store::open(&format!("sqlite://{}/state.db", dir.path().display()))
        .await
        .unwrap();
    let started = Instant::now();
    let settled = loop {
        let pending = pending_in_ended_runs(&*store).await;
        let running = all_runs(&*store)
            .await
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .count();
        // The live daemon has at most one run in progress (`forbid`); everything else is
        // over and resolved.
        if pending == 0 && running <= 1 && started.elapsed() > Duration::from_secs(5) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(90) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Stop it the polite way, so its own last run is finished too.
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(
        settled,
        "runs or actions left unresolved after 90 s; last log:\n{log}"
    );
    assert!(status.success(), "exit after SIGTERM: {status}\n{log}");

    let runs = all_runs(&*store).await;
    assert!(
        runs.iter().all(|r| r.status != RunStatus::Running),
        "{runs:?}"
    );
    assert_truthful(&audit(&*store, &sim).await);
}

/// Three replicas on one PostgreSQL store: one is killed, one paused past its lease and
/// resumed, the killed one restarted. Every tick runs once, the paused replica can neither
/// act nor overwrite after the takeover, and the ledger agrees with Neon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_a_kill_and_a_pause_agree_with_neon() {
    let url = crate::chaos::fresh_pg_database("steward_chaos").await;
    let store = store::open(&url).await.unwrap();
    let sim = spawn_sim(slow_operations()).await;
    for name in ["alpha", "beta"] {
        sim.add_project(name, None);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let (base, key) = (sim.base_url(), sim.api_key());
    let logs = ["r0.log", "r1.log", "r2.log"];
    let mut replicas: Vec<Child> = logs
        .iter()
        .map(|log| start_on(dir.path(), &base, &key, &url, log))
        .collect();
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    // Kill the replica that is in the middle of a run, then pause the next one that is.
    let victim = owner_of_a_running_run(&*store, &replicas, None).await;
    replicas[victim].kill().unwrap();
    replicas[victim].wait().unwrap();
    let paused = owner_of_a_running_run(&*store, &replicas, Some(victim)).await;
    signal(&replicas[paused], "-STOP");
    // Longer than the lease (3 s) plus a heartbeat: the others take its runs over.
    pause(6000).await;
    signal(&replicas[paused], "-CONT");
    replicas[victim] = start_on(dir.path(), &base, &key, &url, logs[victim]);
    pause(6000).await;

    let started = Instant::now();
    loop {
        let pending = pending_in_ended_runs(&*store).await;
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{pending} actions still pending after 90 s"
        );
        pause(200).await;
    }
    for r in &replicas {
        signal(r, "-TERM");
    }
    for (r, log) in replicas.iter_mut().zip(logs) {
        let status = r.wait().unwrap();
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
        assert!(status.success(), "{log}: {status}\n{text}");
    }

    let runs = all_runs(&*store).await;
    let owners: std::collections::BTreeSet<&str> =
        runs.iter().filter_map(|r| r.owner.as_deref()).collect();
    assert!(
        owners.len() >= 3,
        "runs were spread over the replicas: {owners:?}"
    );
    let a = audit(&*store, &sim).await;
    assert!(
        a.taken_over >= 2,
        "the killed and the paused replica's runs were taken over: {a:?}"
    );
    assert_truthful(&a);
    crate::chaos::drop_pg_database(&url).await;
}
