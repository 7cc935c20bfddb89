//! The chaos test of `kill.rs` for the newest job kinds: the real binary, SIGKILLed at
//! seeded points while it runs `enforce_budget` (whose limit flips from one life to the next,
//! so lives alternate between applying cost changes and restoring them), `snapshot_branches`
//! with `mode = "backup_schedule"` (whose hour flips too, so every life changes schedules),
//! the notifications outbox (a webhook sink that records every `webhook-id`), and
//! `expire_branches` on closed pull requests of a fake forge. Afterwards the ledger is
//! compared with the emulator's mutation log: no action is `pending`, every mutation Neon
//! carried out has a ledger row that says so (or, where Neon cannot tell after the fact,
//! `unknown`), no `succeeded` row lacks its mutation, the budget's restores put back the
//! values the account had before the guard, every outbox row reached the sink under its one
//! id, and no branch was deleted twice.
//!
//! Kill points come from a fixed seed (printed), so a failure can be replayed; waits are
//! lower bounds plus generous upper bounds on progress.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{TimeDelta, Utc};
use neon_sim::forge::{FakeForge, FakeState, ForgeFlavor};
use neon_sim::state::{Activity, ActivityRecord};
use neon_steward::store::{
    self, ActionOutcome, ActionRecord, NotificationFilter, NotificationStatus, RunStatus, Store,
};

use crate::chaos::{all_runs, pending_in_ended_runs, signal, slow_operations, Points, BIN};
use crate::helpers::{spawn_sim, TestSim};

const SINK_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FORGE_TOKEN: &str = "ghp_fake-forge-token-for-chaos";

/// The webhook sink: every `webhook-id` it was sent, in order (duplicates kept).
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<String>>>);

async fn receive(State(s): State<Sink>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    s.0.lock().unwrap().push(id);
    StatusCode::OK
}

async fn sink() -> (Sink, String) {
    let s = Sink::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (s, url)
}

/// A daemon the test started; killed when dropped, so a failing assertion leaves no
/// process behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn sigkill(mut self) {
        self.0.kill().expect("SIGKILL");
        let _ = self.0.wait();
    }
}

/// `neon-steward run` in `dir` on its SQLite store, with the sink's URL and key and the
/// forge's token in its environment, logging (JSON) to `dir/daemon.log`.
fn start(dir: &Path, sim: &TestSim, sink_url: &str) -> Daemon {
    let child = Command::new(BIN)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NEON_API_KEY", sim.api_key())
        .env("NEON_STEWARD_BASE_URL", sim.base_url())
        .env("NEON_STEWARD_STORE_URL", store_url(dir))
        .env("SINK_URL", sink_url)
        .env("SINK_KEY", SINK_KEY)
        .env("FORGE_TOKEN", FORGE_TOKEN)
        .arg("--config")
        .arg(dir.join("policy.toml"))
        .args(["--log-format", "json", "run"])
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("daemon.log"))
                .unwrap(),
        )
        .spawn()
        .expect("the binary starts");
    Daemon(child)
}

fn store_url(dir: &Path) -> String {
    format!("sqlite://{}/state.db", dir.display())
}

/// The budget's time zone: one where this month has run for 6 hours at least and has 2 hours
/// left at least, so that the account's consumption (an hour ending two hours ago) falls in
/// the budget's current month and no month boundary passes during the test, whenever it
/// runs. Chosen once per process.
fn budget_zone() -> &'static str {
    use chrono::{Datelike, TimeZone};
    static ZONE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| {
        let now = Utc::now();
        let fits = |name: &str| {
            let Ok(tz) = name.parse::<chrono_tz::Tz>() else {
                return false;
            };
            let local = now.with_timezone(&tz);
            let start = tz
                .with_ymd_and_hms(local.year(), local.month(), 1, 0, 0, 0)
                .single();
            let (y, m) = match local.month() {
                12 => (local.year() + 1, 1),
                m => (local.year(), m + 1),
            };
            let end = tz.with_ymd_and_hms(y, m, 1, 0, 0, 0).single();
            matches!((start, end), (Some(s), Some(e))
                if now - s.with_timezone(&Utc) >= TimeDelta::hours(6)
                    && e.with_timezone(&Utc) - now >= TimeDelta::hours(2))
        };
        ["UTC", "Etc/GMT+12", "Etc/GMT-12"]
            .into_iter()
            .find(|z| fits(z))
            .unwrap_or("UTC")
    })
}

/// The policy of one life: a collect job, the budget guard at `limit` USD (tiny: every
/// threshold is crossed; huge: none is, so its changes are restored), backup schedules at
/// `hour`, digests to the sink, and `extra` jobs.
fn policy(org: &str, limit: f64, hour: u32, extra: &str) -> String {
    let zone = budget_zone();
    format!(
        r#"
[api]
concurrency = 2

[store]
lease = "3s"
heartbeat = "1s"

[http]
listen = "127.0.0.1:0"

[[notify]]
name = "ops"
kind = "webhook"
url_env = "SINK_URL"
secret_env = "SINK_KEY"
timeout = "2s"
events = ["digest"]

[[jobs]]
name = "usage"
kind = "collect_consumption"
every = "2s"
granularity = "hourly"
metrics = ["compute_unit_seconds"]
org_id = "{org}"
notify = []
[jobs.prices]
compute_unit_seconds = 0.001

[[jobs]]
name = "guard"
kind = "enforce_budget"
every = "2s"
missed = "run_once"
dry_run = false
max_actions = 50
[jobs.projects]
org_id = "{org}"
[jobs.budget]
consumption_job = "usage"
limit = {limit:.1}
currency = "USD"
timezone = "{zone}"
[[jobs.budget.thresholds]]
percent = 100
actions = ["suspend_computes", "lower_max_cu"]
max_cu = 0.25
[[jobs.budget.thresholds]]
percent = 120
actions = ["shorten_suspend_timeout"]
suspend_timeout = "1m"

[[jobs]]
name = "backups"
kind = "snapshot_branches"
mode = "backup_schedule"
every = "2s"
missed = "run_once"
max_actions = 50
[jobs.projects]
org_id = "{org}"
[jobs.branches]
default = true
[[jobs.backup_schedule]]
frequency = "daily"
hour = {hour}
retention = "7d"
{extra}
"#
    )
}

/// `(min, max, suspend_timeout_seconds)` of every endpoint.
fn settings(sim: &TestSim) -> BTreeMap<String, (f64, f64, i64)> {
    let st = sim.state();
    let s = st.settled();
    s.endpoints
        .values()
        .map(|e| {
            (
                e.id.clone(),
                (
                    e.autoscaling_limit_min_cu,
                    e.autoscaling_limit_max_cu,
                    e.suspend_timeout_seconds,
                ),
            )
        })
        .collect()
}

/// The ids of the branches that exist.
fn branch_ids(sim: &TestSim) -> BTreeSet<String> {
    sim.state().settled().branches.keys().cloned().collect()
}

/// What a mutation or a ledger row did, for counting one against the other: the resource
/// and the setting it changed (`max_cu`, `suspend_timeout`, `suspend`, `backup_schedule`,
/// `delete_branch`).
type Effect = (String, &'static str);

fn segment_after<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let mut it = path.split('/');
    it.by_ref().find(|s| *s == name)?;
    it.next()
}

/// The effects of the emulator's successful mutations, counted.
fn effects_at_neon(sim: &TestSim) -> BTreeMap<Effect, usize> {
    let mut out = BTreeMap::new();
    for m in sim.mutations() {
        if !(200..300).contains(&m.status) {
            continue;
        }
        let route = m.route.as_deref().unwrap_or("");
        let mut add = |id: Option<&str>, what: &'static str| {
            *out.entry((id.unwrap_or("?").to_string(), what))
                .or_default() += 1;
        };
        match (m.method.as_str(), route) {
            ("PATCH", "/projects/{project_id}/endpoints/{endpoint_id}") => {
                let id = segment_after(&m.path, "endpoints");
                let ep = m.body.as_ref().map(|b| &b["endpoint"]);
                let has = |k: &str| ep.is_some_and(|e| !e[k].is_null());
                if has("autoscaling_limit_max_cu") {
                    add(id, "max_cu");
                }
                if has("suspend_timeout_seconds") {
                    add(id, "suspend_timeout");
                }
            }
            ("POST", "/projects/{project_id}/endpoints/{endpoint_id}/suspend") => {
                add(segment_after(&m.path, "endpoints"), "suspend");
            }
            ("PUT", "/projects/{project_id}/branches/{branch_id}/backup_schedule") => {
                add(segment_after(&m.path, "branches"), "backup_schedule");
            }
            ("DELETE", "/projects/{project_id}/branches/{branch_id}") => {
                add(segment_after(&m.path, "branches"), "delete_branch");
            }
            _ => {}
        }
    }
    out
}

fn effect_of(a: &ActionRecord) -> Option<Effect> {
    let what = match a.action.as_str() {
        "budget_lower_max_cu" | "budget_restore_max_cu" => "max_cu",
        "budget_shorten_suspend_timeout" | "budget_restore_suspend_timeout" => "suspend_timeout",
        "budget_suspend_compute" => "suspend",
        "set_backup_schedule" | "take_back_backup_schedule" => "backup_schedule",
        "delete_branch" => "delete_branch",
        _ => return None,
    };
    Some((a.resource_id.clone(), what))
}

/// The ledger against the emulator, per effect.
#[derive(Debug, Default)]
struct Audit {
    taken_over: usize,
    rows: usize,
    pending: usize,
    reconciled: usize,
    /// Mutations Neon carried out (successful ones), and by what they changed.
    mutations: usize,
    by_kind: BTreeMap<&'static str, usize>,
    /// Ledger rows `succeeded` / `unknown` for those effects.
    succeeded: usize,
    unknown: usize,
    /// Effects with more mutations at Neon than ledger rows that could stand for them
    /// (`succeeded` or `unknown`): a change made and not recorded.
    unrecorded: Vec<(Effect, usize, usize)>,
    /// Effects with more `succeeded` rows than mutations: a success recorded that Neon
    /// did not see.
    phantom: Vec<(Effect, usize, usize)>,
}

async fn audit(store: &dyn Store, sim: &TestSim) -> Audit {
    let runs = all_runs(store).await;
    let mut a = Audit {
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
    let mut ok: BTreeMap<Effect, usize> = BTreeMap::new();
    let mut maybe: BTreeMap<Effect, usize> = BTreeMap::new();
    for r in &runs {
        for x in store.actions_for_run(r.id).await.unwrap() {
            a.rows += 1;
            a.pending += usize::from(x.outcome == ActionOutcome::Pending);
            a.reconciled += usize::from(x.reconciled_at.is_some());
            let Some(e) = effect_of(&x) else { continue };
            match x.outcome {
                ActionOutcome::Succeeded => {
                    a.succeeded += 1;
                    *ok.entry(e.clone()).or_default() += 1;
                    *maybe.entry(e).or_default() += 1;
                }
                ActionOutcome::Unknown => {
                    a.unknown += 1;
                    *maybe.entry(e).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    let at_neon = effects_at_neon(sim);
    a.mutations = at_neon.values().sum();
    for ((_, what), n) in &at_neon {
        *a.by_kind.entry(what).or_default() += n;
    }
    for (e, &n) in &at_neon {
        let recorded = maybe.get(e).copied().unwrap_or(0);
        if n > recorded {
            a.unrecorded.push((e.clone(), n, recorded));
        }
    }
    for (e, &n) in &ok {
        let made = at_neon.get(e).copied().unwrap_or(0);
        if n > made {
            a.phantom.push((e.clone(), n, made));
        }
    }
    a
}

fn assert_agrees(a: &Audit) {
    eprintln!("{a:#?}");
    assert_eq!(a.pending, 0, "actions left pending: {a:?}");
    assert!(a.mutations > 0, "the daemon did work: {a:?}");
    assert!(
        a.unrecorded.is_empty(),
        "changes Neon made that the ledger lacks: {a:?}"
    );
    assert!(a.phantom.is_empty(), "successes Neon never saw: {a:?}");
}

/// Waits (bounded) until the ledger holds a `succeeded` row of `action`.
async fn wait_for_a_recorded(store: &dyn Store, action: &str) {
    let started = Instant::now();
    loop {
        for r in all_runs(store).await {
            let rows = store.actions_for_run(r.id).await.unwrap();
            if rows
                .iter()
                .any(|x| x.action == action && x.outcome == ActionOutcome::Succeeded)
            {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no succeeded {action} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until `daemon` holds a run of the budget guard (owner `host:pid:...`).
async fn wait_for_a_guard_run_of(store: &dyn Store, daemon: &Daemon) {
    let pid = daemon.0.id().to_string();
    let started = Instant::now();
    loop {
        let held = all_runs(store).await.iter().any(|r| {
            r.job == "guard"
                && r.status == RunStatus::Running
                && r.owner.as_deref().and_then(|o| o.split(':').nth(1)) == Some(pid.as_str())
        });
        if held {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no budget run by {pid} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the runs of the killed lives are over and nothing is pending,
/// with the live daemon up for at least `settle`; then stops it with SIGTERM.
async fn settle_and_stop(dir: &Path, mut child: Daemon, store: &dyn Store, settle: Duration) {
    let started = Instant::now();
    let settled = loop {
        let pending = pending_in_ended_runs(store).await;
        let running = all_runs(store)
            .await
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .count();
        // The live daemon has at most one run per job in progress.
        if pending == 0 && running <= 4 && started.elapsed() > settle {
            break true;
        }
        if started.elapsed() > Duration::from_secs(60) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    signal(&child.0, "-TERM");
    let status = child.0.wait().unwrap();
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        settled,
        "runs or actions unresolved after 60 s; log (newest first):\n{tail}"
    );
    assert!(status.success(), "exit after SIGTERM: {status}\n{tail}");
    let runs = all_runs(store).await;
    assert!(
        runs.iter().all(|r| r.status != RunStatus::Running),
        "{runs:?}"
    );
}

/// An org with two projects, each with a busy compute on `main` (0.25-2 CU, 300 s suspend
/// timeout) and on `dev` (1-4 CU, never suspends), which were active for an hour two hours
/// ago (so the hourly consumption is complete and priced: 0.25 + 1 CU x 3600 s x 0.001 USD
/// = 4.5 USD a project).
fn account(sim: &TestSim) -> String {
    let st = sim.state();
    let mut s = st.settled();
    let org = neon_sim::seed::insert_org(&mut s, "metered");
    let now = s.now();
    // Made a day ago: consumption counts only while a project exists.
    let since = now - TimeDelta::days(1);
    for name in ["alpha", "beta"] {
        let (project, main) = s.insert_project(name, Some(&org), since);
        let dev = s.insert_branch(&project.id, "dev", Some(&main.id), since);
        for (branch, min, max, timeout) in [(&main.id, 0.25, 2.0, 300), (&dev.id, 1.0, 4.0, -1)] {
            let ep = s
                .insert_endpoint(branch, neon_sim::state::EndpointType::ReadWrite, since)
                .expect("branch just added");
            let hour = now - TimeDelta::hours(2);
            s.activity_log.push(ActivityRecord {
                project_id: project.id.clone(),
                branch_id: branch.clone(),
                endpoint_id: ep.id.clone(),
                from: hour - TimeDelta::hours(1),
                to: hour,
                cu: min,
            });
            let e = s.endpoints.get_mut(&ep.id).expect("endpoint just added");
            e.activity = Activity::Busy;
            e.autoscaling_limit_min_cu = min;
            e.autoscaling_limit_max_cu = max;
            e.suspend_timeout_seconds = timeout;
            s.start_endpoint_at(&ep.id, now);
        }
    }
    s.settle();
    org
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_budget_backups_and_outbox_leaves_a_ledger_that_agrees_with_neon() {
    let sim = spawn_sim(slow_operations()).await;
    let org = account(&sim);
    let before = settings(&sim);
    let (received, sink_url) = sink().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |limit: f64, hour: u32| {
        std::fs::write(
            dir.path().join("policy.toml"),
            policy(&org, limit, hour, ""),
        )
        .unwrap();
    };
    let seed = 0x5eed_b0d6_u64;
    eprintln!("kill points from seed {seed:#x}");
    let mut points = Points(seed);
    // Opened (and migrated) before the first life, which the test watches.
    let store = store::open(&store_url(dir.path())).await.unwrap();
    const LIVES: u32 = 12;
    for life in 0..LIVES {
        // Pairs of lives: two over the limit (changes applied), two under it (restored).
        let over = (life / 2) % 2 == 0;
        write(if over { 1.0 } else { 1e9 }, 3 + life % 2);
        let child = start(dir.path(), &sim, &sink_url);
        if life == 0 {
            // However slow the machine, one life gets as far as the guard's last lever, so
            // every kind of change is made (and later restored) at least once.
            wait_for_a_recorded(&*store, "budget_shorten_suspend_timeout").await;
        } else {
            tokio::time::sleep(Duration::from_millis(points.next_ms(400, 2600))).await;
        }
        child.sigkill();
    }
    // A replica paused in the middle of a budget run past its lease while the last life
    // (under the limit, with the hour of the first: every change the guard made is to be
    // restored, every schedule the policy's) starts beside it; resumed, it must neither act
    // nor overwrite, and it is killed soon after.
    write(1.0, 4);
    let paused = start(dir.path(), &sim, &sink_url);
    wait_for_a_guard_run_of(&*store, &paused).await;
    signal(&paused.0, "-STOP");
    write(1e9, 3);
    let child = start(dir.path(), &sim, &sink_url);
    tokio::time::sleep(Duration::from_secs(5)).await;
    signal(&paused.0, "-CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    paused.sigkill();
    settle_and_stop(dir.path(), child, &*store, Duration::from_secs(8)).await;

    let a = audit(&*store, &sim).await;
    assert_agrees(&a);
    assert!(a.taken_over > 0, "some killed life was taken over: {a:?}");
    for what in ["max_cu", "suspend_timeout", "suspend", "backup_schedule"] {
        assert!(
            a.by_kind.get(what).is_some_and(|n| *n > 0),
            "no {what} change: {a:?}"
        );
    }

    // Restores put back what the account had before the guard, and nothing is left
    // recorded as changed.
    assert_eq!(settings(&sim), before, "settings after the restores");
    let projects: Vec<String> = sim.app.state.settled().projects.keys().cloned().collect();
    for p in &projects {
        let rec = store
            .get_state("guard", &format!("budget_changes/{p}"))
            .await
            .unwrap();
        let changes = rec
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.value).ok())
            .map(|v| v["changes"].clone())
            .unwrap_or_default();
        assert!(
            changes.as_object().is_none_or(|m| m.is_empty()),
            "{p}: changes still recorded: {changes}"
        );
    }
    // Every main branch carries the policy's schedule (hour 3).
    {
        let st = sim.state();
        let s = st.settled();
        let mains: Vec<&String> = s
            .branches
            .values()
            .filter(|b| b.default)
            .map(|b| &b.id)
            .collect();
        assert_eq!(mains.len(), 2);
        for main in mains {
            let sched = s.backup_schedules.get(main).cloned().unwrap_or_default();
            assert_eq!(sched.len(), 1, "{main}: {sched:?}");
            assert_eq!(sched[0].hour, Some(3), "{main}: {sched:?}");
        }
    }

    // The outbox: every row delivered (bounded wait: a row whose delivery a kill cut short
    // is held by the dead process's lease, the sink's timeout plus 30 s), each id the sink
    // received is an outbox row's, and an id came more than once only for a row attempted
    // more than once.
    let child = start(dir.path(), &sim, &sink_url);
    let started = Instant::now();
    let rows = loop {
        let rows = store
            .list_notifications(&NotificationFilter {
                limit: store::MAX_RUN_LIMIT,
                ..Default::default()
            })
            .await
            .unwrap();
        if rows
            .iter()
            .all(|r| r.status == NotificationStatus::Delivered)
        {
            break rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "undelivered after 45 s: {:?}",
            rows.iter()
                .filter(|r| r.status != NotificationStatus::Delivered)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    signal(&child.0, "-TERM");
    let mut child = child;
    child.0.wait().unwrap();
    let got = received.0.lock().unwrap().clone();
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let got_ids: BTreeSet<&str> = got.iter().map(String::as_str).collect();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &got {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let again: Vec<(&str, usize, i64)> = rows
        .iter()
        .filter(|r| times.get(r.id.as_str()).copied().unwrap_or(0) > 1)
        .map(|r| (r.id.as_str(), times[r.id.as_str()], r.attempts))
        .collect();
    eprintln!(
        "outbox: {} rows, {} deliveries received, {} ids more than once: {again:?}",
        rows.len(),
        got.len(),
        again.len()
    );
    assert!(!rows.is_empty(), "the runs reported what they changed");
    assert_eq!(got_ids, ids, "the sink got exactly the outbox's ids");
    assert!(
        again
            .iter()
            .all(|(_, n, attempts)| (*n as i64) <= *attempts),
        "an id delivered more often than attempted: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_pull_request_expiry_deletes_each_branch_once_and_records_it() {
    let sim = spawn_sim(slow_operations()).await;
    let org = neon_sim::seed::insert_org(&mut sim.state().settled(), "forge");
    let forge = FakeForge::start(ForgeFlavor::Github, "acme/app", FORGE_TOKEN)
        .await
        .unwrap();
    let now = Utc::now();
    let mut closed = Vec::new();
    let mut open = Vec::new();
    for name in ["alpha", "beta"] {
        let (project, _) = sim.add_project(name, Some(&org));
        for n in 1..=6u64 {
            let number = n + if name == "beta" { 100 } else { 0 };
            let branch = format!("preview/pr-{number}-x");
            let id = sim.add_branch(&project, &branch, None);
            let state = if n % 3 == 0 {
                open.push(id);
                FakeState::Open
            } else {
                closed.push(id);
                if n % 2 == 0 {
                    FakeState::Merged
                } else {
                    FakeState::Closed
                }
            };
            forge.add(number, state, &branch, now - TimeDelta::minutes(5));
        }
    }
    let extra = format!(
        r#"
[[jobs]]
name = "expire-closed"
kind = "expire_branches"
every = "2s"
missed = "run_once"
pull_request = "closed"
max_actions = 50
[jobs.branches]
names = ["preview/*"]
default = false
[jobs.forge]
kind = "github"
repository = "acme/app"
api_url = "{}"
branch = "preview/pr-{{number}}-*"
token_env = "FORGE_TOKEN"
timeout = "5s"
"#,
        forge.api_url()
    );
    let (_received, sink_url) = sink().await;
    let dir = tempfile::tempdir().unwrap();
    // The budget never crosses here (a huge limit); backups are set once.
    std::fs::write(dir.path().join("policy.toml"), policy(&org, 1e9, 3, &extra)).unwrap();
    let seed = 0x5eed_f049_u64;
    eprintln!("kill points from seed {seed:#x}");
    let mut points = Points(seed);
    for _ in 0..8 {
        let child = start(dir.path(), &sim, &sink_url);
        tokio::time::sleep(Duration::from_millis(points.next_ms(400, 2600))).await;
        child.sigkill();
    }
    let child = start(dir.path(), &sim, &sink_url);
    let store = store::open(&store_url(dir.path())).await.unwrap();
    // Long enough for the live daemon to finish the deletes (2 a run, a run every 2 s).
    let started = Instant::now();
    while branch_ids(&sim).iter().any(|b| closed.contains(b)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "closed pull requests' branches still there after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settle_and_stop(dir.path(), child, &*store, Duration::from_secs(4)).await;

    let a = audit(&*store, &sim).await;
    assert_agrees(&a);
    let at_neon = effects_at_neon(&sim);
    let deletes: BTreeMap<&String, usize> = at_neon
        .iter()
        .filter(|((_, what), _)| *what == "delete_branch")
        .map(|((id, _), n)| (id, *n))
        .collect();
    assert!(
        deletes.values().all(|n| *n == 1),
        "a branch deleted twice: {deletes:?}"
    );
    let deleted: BTreeSet<&String> = deletes.keys().copied().collect();
    let want: BTreeSet<&String> = closed.iter().collect();
    assert_eq!(deleted, want, "exactly the closed pull requests' branches");
    let left = branch_ids(&sim);
    assert!(open.iter().all(|b| left.contains(b)), "open ones kept");
}
