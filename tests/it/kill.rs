//! The real binary killed with SIGKILL at random points, again and again, against one
//! emulator and one SQLite store: after the last start, no action is left `pending`, every
//! outcome in the ledger agrees with the emulator's mutation log, no tick made a second
//! snapshot, and every snapshot the job made is in its ownership record (none leaked).
//!
//! Kill points come from a fixed-seed generator (printed), so a failure can be replayed.
//! Waits are lower bounds (let the daemon run at least this long) plus generous upper bounds
//! on progress; nothing depends on the machine being fast.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use neon_steward::store::{self, ActionOutcome, RunFilter, RunStatus, Store};

use crate::helpers::spawn_sim;

const BIN: &str = env!("CARGO_BIN_EXE_neon-steward");
const KILLS: u32 = 20;

const POLICY: &str = r#"
[api]
concurrency = 2

[store]
lease = "3s"
heartbeat = "1s"

[http]
listen = "127.0.0.1:0"

[[jobs]]
name = "snap"
kind = "snapshot_branches"
every = "2s"
missed = "run_once"
name_template = "{job}-{branch}-{date}-{time}"
[jobs.retention]
keep_last = 2
[jobs.branches]
names = ["main"]
"#;

fn start(dir: &Path, base: &str, key: &str) -> Child {
    let url = format!("sqlite://{}/state.db", dir.display());
    start_on(dir, base, key, &url, "daemon.log")
}

fn start_on(dir: &Path, base: &str, key: &str, store_url: &str, log: &str) -> Child {
    Command::new(BIN)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NEON_API_KEY", key)
        .env("NEON_STEWARD_BASE_URL", base)
        .env("NEON_STEWARD_STORE_URL", store_url)
        .arg("--config")
        .arg(dir.join("policy.toml"))
        .args(["--log-format", "json", "run"])
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(log))
                .unwrap(),
        )
        .spawn()
        .expect("the binary starts")
}

/// A small deterministic generator (xorshift), so kill points are reproducible.
struct Points(u64);

impl Points {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            // Snapshot names here are `[a-z0-9-]`: percent-decoding `%2D`-style escapes is
            // all that can occur.
            let mut out = String::new();
            let mut bytes = v.bytes();
            while let Some(b) = bytes.next() {
                if b == b'%' {
                    let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                    out.push(u8::from_str_radix(&hex, 16).unwrap() as char);
                } else {
                    out.push(b as char);
                }
            }
            out
        })
    })
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
        let runs = store
            .list_runs(&RunFilter {
                job: None,
                limit: 1000,
                before: None,
            })
            .await
            .unwrap();
        let mut pending = 0;
        for r in &runs {
            if r.status != RunStatus::Running {
                pending += store
                    .actions_for_run(r.id)
                    .await
                    .unwrap()
                    .iter()
                    .filter(|a| a.outcome == ActionOutcome::Pending)
                    .count();
            }
        }
        let running = runs
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

    check_ledger_against_neon(&*store, &sim).await;
}

/// Waits (bounded) for a run in progress and returns the index of the replica holding it
/// (its owner id is `host:pid:suffix`), other than `not`.
async fn owner_of_a_running_run(
    store: &dyn Store,
    replicas: &[Child],
    not: Option<usize>,
) -> usize {
    let started = Instant::now();
    loop {
        let runs = store
            .list_runs(&RunFilter {
                job: None,
                limit: 20,
                before: None,
            })
            .await
            .unwrap();
        for r in runs.iter().filter(|r| r.status == RunStatus::Running) {
            let pid = r
                .owner
                .as_deref()
                .and_then(|o| o.split(':').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(i) = replicas.iter().position(|c| Some(c.id()) == pid) {
                if Some(i) != not {
                    return i;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no run in progress within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The emulator on the real clock, with operations that take a while (as Neon's do), so
/// that kills and pauses land in the middle of runs and calls.
fn slow_operations() -> neon_sim::SimConfig {
    let mut c = neon_sim::SimConfig::default().real_clock();
    c.operation_duration = Duration::from_millis(600);
    c
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Three replicas on one PostgreSQL store: one is killed, one paused past its lease and
/// resumed, the killed one restarted. Every tick runs once, the paused replica can neither
/// act nor overwrite after the takeover, and the ledger agrees with Neon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_a_kill_and_a_pause_agree_with_neon() {
    let fixture = crate::store::postgres_fixture().await;
    let sim = spawn_sim(slow_operations()).await;
    for name in ["alpha", "beta"] {
        sim.add_project(name, None);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let (base, key) = (sim.base_url(), sim.api_key());
    let url = fixture.url.clone();
    let logs = ["r0.log", "r1.log", "r2.log"];
    let mut replicas: Vec<Child> = logs
        .iter()
        .map(|log| start_on(dir.path(), &base, &key, &url, log))
        .collect();
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    let store = fixture.store.clone();
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
        let runs = store
            .list_runs(&RunFilter {
                job: None,
                limit: 1000,
                before: None,
            })
            .await
            .unwrap();
        let mut pending = 0;
        for r in runs.iter().filter(|r| r.status != RunStatus::Running) {
            pending += store
                .actions_for_run(r.id)
                .await
                .unwrap()
                .iter()
                .filter(|a| a.outcome == ActionOutcome::Pending)
                .count();
        }
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

    // Every tick ran once: at most one run per tick did any work (re-runs of an
    // interrupted tick are claimed as the tick plus a few milliseconds).
    let runs = store
        .list_runs(&RunFilter {
            job: None,
            limit: 1000,
            before: None,
        })
        .await
        .unwrap();
    let taken_over = runs
        .iter()
        .filter(|r| {
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("taken over by"))
        })
        .count();
    assert!(
        taken_over >= 2,
        "the killed and the paused replica's runs were taken over: {runs:?}"
    );
    let owners: BTreeSet<&str> = runs.iter().filter_map(|r| r.owner.as_deref()).collect();
    assert!(
        owners.len() >= 3,
        "runs were spread over the replicas: {owners:?}"
    );
    let mut worked: BTreeMap<i64, u32> = BTreeMap::new();
    for r in &runs {
        if matches!(r.status, RunStatus::Succeeded | RunStatus::Partial) {
            *worked.entry(r.scheduled_for.timestamp()).or_default() += 1;
        }
    }
    assert!(
        worked.values().all(|n| *n == 1),
        "a tick ran twice: {worked:?}"
    );
    check_ledger_against_neon(&*store, &sim).await;
    crate::store::drop_pg_database(&fixture.url).await;
}

async fn check_ledger_against_neon(store: &dyn Store, sim: &crate::helpers::TestSim) {
    let runs = store
        .list_runs(&RunFilter {
            job: None,
            limit: 1000,
            before: None,
        })
        .await
        .unwrap();
    assert!(
        runs.iter().all(|r| r.status != RunStatus::Running),
        "{runs:?}"
    );
    let interrupted = runs
        .iter()
        .filter(|r| r.status == RunStatus::Interrupted)
        .count();
    eprintln!(
        "{} runs, {interrupted} interrupted (taken over or cut short)",
        runs.len()
    );
    let mut created_in_ledger: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut deleted_in_ledger: BTreeSet<String> = BTreeSet::new();
    let mut reconciled = 0;
    for r in &runs {
        for a in store.actions_for_run(r.id).await.unwrap() {
            assert_ne!(a.outcome, ActionOutcome::Pending, "{a:?}");
            assert_ne!(
                a.outcome,
                ActionOutcome::Unknown,
                "Neon can always tell for snapshots: {a:?}"
            );
            reconciled += usize::from(a.reconciled_at.is_some());
            if a.outcome != ActionOutcome::Succeeded {
                continue;
            }
            match a.action.as_str() {
                "create_snapshot" => {
                    *created_in_ledger
                        .entry((
                            a.project_id.clone().unwrap(),
                            a.resource_name.clone().unwrap(),
                        ))
                        .or_default() += 1
                }
                "delete_snapshot" => {
                    deleted_in_ledger.insert(a.resource_id.clone());
                }
                _ => {}
            }
        }
    }
    let mut created_at_neon: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut deleted_at_neon: BTreeSet<String> = BTreeSet::new();
    for m in sim.mutations() {
        if !(200..300).contains(&m.status) {
            continue;
        }
        match (m.method.as_str(), m.route.as_deref()) {
            ("POST", Some("/projects/{project_id}/branches/{branch_id}/snapshot")) => {
                let name = query_param(m.query.as_deref(), "name").expect("named snapshot");
                let mut segments = m.path.split('/');
                let project = segments
                    .by_ref()
                    .find(|s| *s == "projects")
                    .and_then(|_| segments.next())
                    .expect("a project's path");
                *created_at_neon
                    .entry((project.to_string(), name))
                    .or_default() += 1;
            }
            ("DELETE", Some("/projects/{project_id}/snapshots/{snapshot_id}")) => {
                deleted_at_neon.insert(m.path.rsplit('/').next().unwrap().to_string());
            }
            _ => {}
        }
    }
    eprintln!(
        "{} snapshots created, {} deleted, {reconciled} actions reconciled",
        created_at_neon.len(),
        deleted_at_neon.len()
    );
    assert!(
        !created_at_neon.is_empty(),
        "the daemon did work between kills"
    );
    assert!(
        created_at_neon.values().all(|n| *n == 1),
        "a tick made a second snapshot: {created_at_neon:?}"
    );
    assert_eq!(
        created_in_ledger, created_at_neon,
        "creates recorded vs made at Neon"
    );
    assert_eq!(
        deleted_in_ledger, deleted_at_neon,
        "deletes recorded vs made at Neon"
    );

    // Nothing leaked: every snapshot of ours still at Neon is in the job's record.
    let ours: Vec<(String, String, String)> = {
        let st = sim.state();
        let s = st.settled();
        s.snapshots
            .values()
            .filter(|x| x.name.starts_with("snap-main-"))
            .map(|x| (x.project_id.clone(), x.id.clone(), x.name.clone()))
            .collect()
    };
    assert!(!ours.is_empty());
    for (project_id, id, name) in ours {
        let record = store
            .get_state("snap", &format!("owned_snapshots/{project_id}"))
            .await
            .unwrap()
            .map(|r| r.value)
            .unwrap_or_default();
        assert!(
            record.contains(&id),
            "snapshot {id} ({name}) is not in the record: {record}"
        );
    }
}
