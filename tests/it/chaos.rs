//! The chaos harness: real `neon-steward` binaries against one emulator and one store,
//! killed, paused and cut off from the store, and an audit of the ledger against the
//! emulator's mutation log afterwards. Used by the tests in `kill.rs` (which assert on the
//! audit) and by the soak benchmark (`benches/soak.rs`, which prints it).

#![allow(dead_code)] // each user takes what it needs

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use neon_steward::store::{ActionOutcome, RunFilter, RunRecord, RunStatus, Store};

use crate::helpers::TestSim;

pub const BIN: &str = env!("CARGO_BIN_EXE_neon-steward");

/// Snapshots of `main` every 2 s with retention, a 3 s lease renewed every second.
pub const POLICY: &str = r#"
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

/// Starts `neon-steward run` on `store_url`, logging (JSON) to `dir/log`.
pub fn start_on(dir: &Path, base: &str, key: &str, store_url: &str, log: &str) -> Child {
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
pub struct Points(pub u64);

impl Points {
    pub fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(&format!("http://q/?{}", query?)).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Waits (bounded) for a run in progress and returns the index of the replica holding it
/// (its owner id is `host:pid:suffix`), other than `not`.
pub async fn owner_of_a_running_run(
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
pub fn slow_operations() -> neon_sim::SimConfig {
    let mut c = neon_sim::SimConfig::default().real_clock();
    c.operation_duration = Duration::from_millis(600);
    c
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Every run in the store (newest first).
pub async fn all_runs(store: &dyn Store) -> Vec<RunRecord> {
    store
        .list_runs(&RunFilter {
            job: None,
            limit: 1000,
            before: None,
        })
        .await
        .unwrap()
}

/// Actions still `pending` in runs that are over.
pub async fn pending_in_ended_runs(store: &dyn Store) -> usize {
    let mut pending = 0;
    for r in all_runs(store)
        .await
        .iter()
        .filter(|r| r.status != RunStatus::Running)
    {
        pending += store
            .actions_for_run(r.id)
            .await
            .unwrap()
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Pending)
            .count();
    }
    pending
}

/// A fresh PostgreSQL database on the test server; returns its URL.
pub async fn fresh_pg_database(prefix: &str) -> String {
    use sqlx::Connection;
    let admin_url = std::env::var("NEON_STEWARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("the PostgreSQL test server is reachable: start PostgreSQL on 127.0.0.1:5432 (trust auth) or set NEON_STEWARD_TEST_POSTGRES to an admin URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .expect("the URL names a database")
        .0;
    format!("{base}/{name}")
}

pub async fn drop_pg_database(url: &str) {
    use sqlx::Connection;
    let (base, name) = url.rsplit_once('/').unwrap();
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// The ledger audited against the emulator.
#[derive(Debug, Default)]
pub struct Audit {
    pub runs: usize,
    pub interrupted: usize,
    pub taken_over: usize,
    /// Ticks (to the second) with more than one run that did work.
    pub ticks_run_twice: usize,
    pub pending: usize,
    pub unknown: usize,
    pub reconciled: usize,
    pub created_at_neon: usize,
    pub deleted_at_neon: usize,
    /// Snapshot names made more than once at Neon (per project).
    pub duplicate_creates: usize,
    /// Creates and deletes on one side only (ledger vs emulator).
    pub disagreements: usize,
    /// Snapshots of the job at Neon that its ownership record does not name.
    pub leaked: usize,
    /// For a failure's message: what disagrees, and every ledger row about it.
    pub why: Vec<String>,
}

/// Audits the ledger in `store` against `sim`'s mutation log and state.
pub async fn audit(store: &dyn Store, sim: &TestSim) -> Audit {
    let runs = all_runs(store).await;
    let mut a = Audit {
        runs: runs.len(),
        interrupted: runs
            .iter()
            .filter(|r| r.status == RunStatus::Interrupted)
            .count(),
        taken_over: runs
            .iter()
            .filter(|r| {
                r.error
                    .as_deref()
                    .is_some_and(|e| e.contains("taken over by"))
            })
            .count(),
        ..Default::default()
    };
    let mut worked: BTreeMap<i64, u32> = BTreeMap::new();
    for r in &runs {
        if matches!(r.status, RunStatus::Succeeded | RunStatus::Partial) {
            *worked.entry(r.scheduled_for.timestamp()).or_default() += 1;
        }
    }
    a.ticks_run_twice = worked.values().filter(|n| **n > 1).count();

    let mut created_in_ledger: BTreeSet<(String, String)> = BTreeSet::new();
    let mut deleted_in_ledger: BTreeSet<String> = BTreeSet::new();
    for r in &runs {
        for x in store.actions_for_run(r.id).await.unwrap() {
            a.pending += usize::from(x.outcome == ActionOutcome::Pending);
            a.unknown += usize::from(x.outcome == ActionOutcome::Unknown);
            a.reconciled += usize::from(x.reconciled_at.is_some());
            if x.outcome != ActionOutcome::Succeeded {
                continue;
            }
            match x.action.as_str() {
                // An adopted snapshot (the create refused with 409 because an earlier
                // attempt of the tick made it) names the same snapshot: counted once.
                "create_snapshot" => {
                    created_in_ledger.insert((
                        x.project_id.clone().unwrap_or_default(),
                        x.resource_name.clone().unwrap_or_default(),
                    ));
                }
                "delete_snapshot" => {
                    deleted_in_ledger.insert(x.resource_id.clone());
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
                let name = query_param(m.query.as_deref(), "name").unwrap_or_default();
                let mut segments = m.path.split('/');
                let project = segments
                    .by_ref()
                    .find(|s| *s == "projects")
                    .and_then(|_| segments.next())
                    .unwrap_or_default();
                *created_at_neon
                    .entry((project.to_string(), name))
                    .or_default() += 1;
            }
            ("DELETE", Some("/projects/{project_id}/snapshots/{snapshot_id}")) => {
                deleted_at_neon.insert(m.path.rsplit('/').next().unwrap_or_default().to_string());
            }
            _ => {}
        }
    }
    a.created_at_neon = created_at_neon.values().map(|n| *n as usize).sum();
    a.deleted_at_neon = deleted_at_neon.len();
    a.duplicate_creates = created_at_neon.values().filter(|n| **n > 1).count();
    let made: BTreeSet<(String, String)> = created_at_neon.keys().cloned().collect();
    a.disagreements = made.symmetric_difference(&created_in_ledger).count()
        + deleted_at_neon
            .symmetric_difference(&deleted_in_ledger)
            .count();
    for (project, name) in made.symmetric_difference(&created_in_ledger) {
        a.why.push(format!(
            "create of {name} in {project}: at Neon {}, succeeded in the ledger {}",
            made.contains(&(project.clone(), name.clone())),
            created_in_ledger.contains(&(project.clone(), name.clone()))
        ));
        for r in &runs {
            for x in store.actions_for_run(r.id).await.unwrap() {
                if x.resource_name.as_deref() == Some(name.as_str()) {
                    a.why.push(format!(
                        "  run {} ({:?}, {:?}, owner {:?}): {} {:?} {:?} reconciled {:?}",
                        r.id,
                        r.status,
                        r.error,
                        r.owner,
                        x.action,
                        x.outcome,
                        x.detail,
                        x.reconciled_at
                    ));
                }
            }
        }
    }

    // Owned is a recorded id, or an unfinished create of that name (an attempt whose answer
    // was not recorded: the next plan adopts it by name, see `jobs/snapshot.rs`).
    let ours: Vec<(String, String, String)> = {
        let st = sim.state();
        let s = st.settled();
        s.snapshots
            .values()
            .filter(|x| x.name.starts_with("snap-main-"))
            .map(|x| (x.project_id.clone(), x.id.clone(), x.name.clone()))
            .collect()
    };
    for (project_id, id, name) in ours {
        let record: serde_json::Value = store
            .get_state("snap", &format!("owned_snapshots/{project_id}"))
            .await
            .unwrap()
            .and_then(|r| serde_json::from_str(&r.value).ok())
            .unwrap_or_default();
        let listed = |list: &str, key: &str, want: &str| {
            record[list]
                .as_array()
                .is_some_and(|v| v.iter().any(|e| e[key] == want))
        };
        a.leaked +=
            usize::from(!listed("snapshots", "id", &id) && !listed("attempts", "name", &name));
    }
    a
}
