//! `cargo bench --bench soak [-- --quick]`: the replicas' truthfulness under trouble, as
//! figures (not a timed test). Three `neon-steward run` replicas share one PostgreSQL store
//! and one emulator (operations take 600 ms); for the duration, every few seconds one of
//! them is killed (SIGKILL, then restarted), paused past its lease (SIGSTOP, SIGCONT), or
//! the store refuses every connection for a while (an outage). Afterwards the ledger is
//! audited against the emulator's mutation log.
//!
//! Prints: fires (ticks in the period), runs, ticks run twice, ticks with no run, the
//! takeover time of each killed replica's run, actions left pending, unknown outcomes,
//! duplicate snapshots, disagreements with the emulator, leaked snapshots, with the goal of
//! each. Needs PostgreSQL on 127.0.0.1:5432 (or NEON_STEWARD_TEST_POSTGRES).

// The harness and helpers of the integration tests (each allows its own unused items).
#[path = "../tests/it/chaos.rs"]
mod chaos;
#[path = "../tests/it/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use chaos::{
    all_runs, audit, owner_of_a_running_run, pending_in_ended_runs, signal, slow_operations,
    start_on, Points, POLICY,
};
use neon_steward::store::{self, RunStatus, Store};
use sqlx::Connection;

/// Makes the store's database refuse every connection (and drops the open ones) for `d`.
async fn outage(url: &str, d: Duration) {
    let (base, name) = url.rsplit_once('/').expect("a database URL");
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("admin connection");
    for sql in [
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
    }
    tokio::time::sleep(d).await;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .expect("allow connections again");
}

/// Waits until run `id` is no longer `running`; returns how long that took.
async fn until_over(store: &dyn Store, id: i64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(r)) = store.get_run(id).await {
            if r.status != RunStatus::Running {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(soak(if quick { 45 } else { 120 }));
}

async fn soak(seconds: u64) {
    let url = chaos::fresh_pg_database("steward_soak").await;
    let store = store::open(&url).await.expect("the store opens");
    let sim = helpers::spawn_sim(slow_operations()).await;
    for name in ["alpha", "beta", "gamma"] {
        sim.add_project(name, None);
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("policy.toml"), POLICY).expect("the policy");
    let (base, key) = (sim.base_url(), sim.api_key());
    let logs = ["r0.log", "r1.log", "r2.log"];
    let mut replicas: Vec<_> = logs
        .iter()
        .map(|log| start_on(dir.path(), &base, &key, &url, log))
        .collect();
    let mut points = Points(0x50a4_2026);
    let started = Instant::now();
    let (mut kills, mut pauses, mut outages) = (0, 0, 0);
    let mut takeovers: Vec<Duration> = Vec::new();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(points.next_ms(2000, 5000))).await;
        match round % 3 {
            0 => {
                let i = owner_of_a_running_run(&*store, &replicas, None).await;
                let run = all_runs(&*store).await.into_iter().find(|r| {
                    r.status == RunStatus::Running
                        && r.owner.as_deref().and_then(|o| o.split(':').nth(1))
                            == Some(replicas[i].id().to_string().as_str())
                });
                replicas[i].kill().expect("SIGKILL");
                replicas[i].wait().expect("reaped");
                kills += 1;
                if let Some(run) = run {
                    if let Some(t) = until_over(&*store, run.id, Duration::from_secs(30)).await {
                        takeovers.push(t);
                    }
                }
                replicas[i] = start_on(dir.path(), &base, &key, &url, logs[i]);
            }
            1 => {
                let i = owner_of_a_running_run(&*store, &replicas, None).await;
                signal(&replicas[i], "-STOP");
                tokio::time::sleep(Duration::from_secs(5)).await;
                signal(&replicas[i], "-CONT");
                pauses += 1;
            }
            _ => {
                outage(&url, Duration::from_secs(5)).await;
                outages += 1;
            }
        }
        round += 1;
    }
    // Let the survivors take over and reconcile what the last trouble left, then stop.
    let settle = Instant::now();
    while pending_in_ended_runs(&*store).await > 0 && settle.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for r in &replicas {
        signal(r, "-TERM");
    }
    for r in replicas.iter_mut() {
        let _ = r.wait();
    }
    let elapsed = started.elapsed();
    let a = audit(&*store, &sim).await;
    let runs = all_runs(&*store).await;
    let fires = elapsed.as_secs() / 2;
    let ticks: std::collections::BTreeSet<i64> =
        runs.iter().map(|r| r.scheduled_for.timestamp()).collect();
    let max_takeover = takeovers.iter().max().copied().unwrap_or_default();
    println!("soak: 3 replicas on PostgreSQL, {elapsed:.0?}, {kills} kills, {pauses} pauses past the lease, {outages} store outages of 5 s");
    println!("{:<44} {:>10}  goal", "figure", "value");
    let row = |name: &str, value: String, goal: &str| println!("{name:<44} {value:>10}  {goal}");
    row("fires (2 s ticks in the period)", fires.to_string(), "");
    row("runs recorded", a.runs.to_string(), "");
    row("ticks with a run (any status)", ticks.len().to_string(), "");
    row(
        "ticks with no run (missed policy)",
        fires.saturating_sub(ticks.len() as u64).to_string(),
        "only during outages and takeovers; newest caught up",
    );
    row(
        "ticks run twice (exactly-once broken)",
        a.ticks_run_twice.to_string(),
        "0",
    );
    row(
        "runs taken over",
        a.taken_over.to_string(),
        ">= kills + pauses that held a run",
    );
    row(
        "takeover time, worst (kill -> interrupted)",
        format!("{max_takeover:.1?}"),
        "<= lease 3 s + heartbeat 1 s + poll",
    );
    row("actions left pending", a.pending.to_string(), "0");
    row("actions reconciled with Neon", a.reconciled.to_string(), "");
    row("unknown outcomes", a.unknown.to_string(), "0");
    row("snapshots made at Neon", a.created_at_neon.to_string(), "");
    row("duplicate snapshots", a.duplicate_creates.to_string(), "0");
    row(
        "ledger vs emulator disagreements",
        a.disagreements.to_string(),
        "0",
    );
    row(
        "leaked snapshots (not in the record)",
        a.leaked.to_string(),
        "0",
    );
    chaos::drop_pg_database(&url).await;
    let ok = a.ticks_run_twice == 0
        && a.pending == 0
        && a.unknown == 0
        && a.duplicate_creates == 0
        && a.disagreements == 0
        && a.leaked == 0;
    if !ok {
        eprintln!(
            "soak: a goal was missed; the replicas' logs are in {}",
            dir.keep().display()
        );
        std::process::exit(1);
    }
}
