//! Request counts: what the client and the jobs cost under Neon's 700 requests/minute.
//!
//! Every test counts the requests neon-sim received (the recorder in `helpers`), never
//! timings. Each guards one fix from `docs/BENCHMARKS.md`: scans of a project's operations
//! that stop early, one listing per poll round for several pending operations, Neon's
//! maximum page sizes by default, no branch listing the suspend job does not need, and one
//! store write per batch of final ledger rows; and issue 11's minimum per sweep (no empty
//! projects page, one re-check listing and one recovery read per project for expire, no
//! operations listing for suspend, no second snapshot listing per create).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use neon_sim::ratelimit::RateLimitConfig;
use neon_sim::state::{Activity, EndpointType};
use neon_sim::SimConfig;
use neon_steward::config::{self, JobConfig};
use neon_steward::jobs::{run_job, JobEnv, RunContext, RunResult};
use neon_steward::neon::*;
use neon_steward::secret::Secret;
use neon_steward::store::{
    self, ActionCounts, ActionId, ActionOutcome, ActionRecord, ConsumptionSample, NewAction,
    NewRun, RunFilter, RunId, RunRecord, RunStatus, StateRecord, Store, StoreResult, Trigger,
};
use neon_steward::telemetry::consumption::ConsumptionExporter;

use crate::helpers::{spawn_sim, Sent, TestSim};

/// An emulator whose rate limits never bite, so that counts are not muddied by 429s.
async fn sim() -> TestSim {
    spawn_sim(SimConfig::default().rate_limit(RateLimitConfig::scaled(1_000))).await
}

fn client(sim: &TestSim) -> NeonClient {
    let mut cc = sim.client_config();
    cc.rate_limit_per_minute = 1_000_000;
    cc.burst = 100_000;
    NeonClient::new(cc).expect("valid test client config")
}

fn gets(sim: &TestSim, pred: impl Fn(&str) -> bool) -> Vec<Sent> {
    sim.sent()
        .into_iter()
        .filter(|s| s.method == "GET" && pred(&s.path))
        .collect()
}

/// `GET /projects/{id}/operations` (listings).
fn op_listings(sim: &TestSim) -> Vec<Sent> {
    gets(sim, |p| p.ends_with("/operations"))
}

/// `GET /projects/{id}/operations/{id}`.
fn op_gets(sim: &TestSim) -> usize {
    gets(sim, |p| p.contains("/operations/")).len()
}

fn branch_listings(sim: &TestSim) -> usize {
    gets(sim, |p| p.ends_with("/branches")).len()
}

fn query_has(s: &Sent, pair: &str) -> bool {
    s.query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == pair)
}

/// Adds `n` operations to the project's history, each lasting `lasting` (zero: finished at
/// once), newest last. Returns their ids.
fn push_ops(
    sim: &TestSim,
    project: &str,
    endpoint: Option<&str>,
    n: usize,
    lasting: Duration,
) -> Vec<String> {
    let state = sim.state();
    let mut s = state.settled();
    let before = s.operation_duration;
    s.operation_duration = TimeDelta::from_std(lasting).expect("a test duration fits");
    let ids = (0..n)
        .map(|i| {
            let action = if i % 2 == 0 {
                "start_compute"
            } else {
                "suspend_compute"
            };
            s.push_operation(project, None, endpoint, action).id
        })
        .collect();
    s.operation_duration = before;
    ids
}

/// Advances the emulator's clock by `by` once `seen` holds for the requests sent so far
/// (checked every millisecond), so that a test knows which poll round saw the operations
/// still running. Run it joined with the call under test. If the requests never show up
/// (a client that polls differently) it advances after 3 s anyway, so that the test fails
/// on its request counts instead of hanging.
async fn advance_when(sim: &TestSim, by: Duration, seen: impl Fn(&[Sent]) -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(3);
    while !seen(&sim.sent()) && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sim.clock().advance(by);
}

fn is_op_listing(s: &Sent) -> bool {
    s.method == "GET" && s.path.ends_with("/operations")
}

fn is_op_get(s: &Sent) -> bool {
    s.method == "GET" && s.path.contains("/operations/")
}

const MINUTE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------- fix 1/2: early stop

#[tokio::test]
async fn operations_in_progress_reads_one_page_of_a_long_history() {
    let sim = sim().await;
    let (pid, main) = sim.add_project("busy-history", None);
    let ep = sim.add_endpoint(&main);
    push_ops(&sim, &pid, Some(&ep), 2_500, Duration::ZERO);
    let c = client(&sim);
    let project = ProjectId::from(pid.as_str());

    // Nothing running: the first page (all finished) ends the scan. Reading the whole
    // history cost 3 requests at 1,000 per page (26 at the former 100).
    sim.clear_sent();
    assert!(c.operations_in_progress(&project).await.unwrap().is_empty());
    let listings = op_listings(&sim);
    assert_eq!(listings.len(), 1, "{listings:?}");
    assert!(query_has(&listings[0], "limit=100"), "{listings:?}");

    // One running operation on top: its page is not all finished, the next one is.
    let running = push_ops(&sim, &pid, Some(&ep), 1, MINUTE);
    sim.clear_sent();
    let busy = c.operations_in_progress(&project).await.unwrap();
    assert_eq!(
        busy.iter().map(|o| o.id.to_string()).collect::<Vec<_>>(),
        running
    );
    assert_eq!(
        busy[0].endpoint_id.as_ref().map(|e| e.as_str()),
        Some(ep.as_str())
    );
    assert_eq!(op_listings(&sim).len(), 2);
}

#[tokio::test]
async fn wait_for_project_idle_costs_one_request_per_poll() {
    let sim = sim().await;
    let (pid, main) = sim.add_project("idle-history", None);
    let ep = sim.add_endpoint(&main);
    push_ops(&sim, &pid, Some(&ep), 2_500, Duration::ZERO);
    let c = client(&sim);
    let project = ProjectId::from(pid.as_str());

    sim.clear_sent();
    c.wait_for_project_idle(&project, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(sim.sent().len(), 1, "{:?}", sim.sent());

    // Busy: each poll reads the running operation's page and the finished one after it,
    // never the rest of the history.
    push_ops(&sim, &pid, Some(&ep), 1, MINUTE);
    sim.clear_sent();
    let (idle, ()) = tokio::join!(
        c.wait_for_project_idle(&project, Duration::from_secs(5)),
        advance_when(&sim, 2 * MINUTE, |sent| sent
            .iter()
            .filter(|s| is_op_listing(s))
            .count()
            >= 4)
    );
    idle.unwrap();
    let listings = op_listings(&sim);
    // Busy polls cost 2 requests each, the final idle poll 1.
    assert!(listings.len() >= 5, "{}", listings.len());
    assert_eq!(listings.len() % 2, 1, "{}", listings.len());
    let with_cursor = listings
        .iter()
        .filter(|s| s.query.as_deref().unwrap_or("").contains("cursor="))
        .count();
    assert_eq!(
        with_cursor,
        listings.len() / 2,
        "one second page per busy poll, no third"
    );
}

// --------------------------------------------------------- fix 3: one listing per round

#[tokio::test]
async fn several_pending_operations_are_polled_with_one_listing_per_round() {
    let sim = sim().await;
    let (pid, main) = sim.add_project("three-ops", None);
    let ep = sim.add_endpoint(&main);
    push_ops(&sim, &pid, Some(&ep), 50, Duration::ZERO);
    push_ops(&sim, &pid, Some(&ep), 3, MINUTE);
    let c = client(&sim);
    let project = ProjectId::from(pid.as_str());
    let pending = c.operations_in_progress(&project).await.unwrap();
    assert_eq!(pending.len(), 3);

    sim.clear_sent();
    let (done, ()) = tokio::join!(
        c.wait_for_operations(&project, &pending, Duration::from_secs(5)),
        advance_when(&sim, 2 * MINUTE, |sent| sent.iter().any(is_op_listing))
    );
    let done = done.unwrap();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|o| o.status == OperationStatus::Finished));
    // One GET per operation per round before: at least 6 GETs for these two rounds.
    assert_eq!(op_gets(&sim), 0, "{:?}", sim.sent());
    let listings = op_listings(&sim);
    assert!(
        listings.len() >= 2,
        "a round saw them running, one finished"
    );
    assert!(
        listings.iter().all(|s| !query_has_key(s, "cursor")),
        "ours are on the first page: {listings:?}"
    );
    assert!(
        listings.iter().all(|s| query_has(s, "limit=20")),
        "{listings:?}"
    );
}

fn query_has_key(s: &Sent, key: &str) -> bool {
    s.query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv.split('=').next() == Some(key))
}

#[tokio::test]
async fn a_single_pending_operation_is_one_get_per_round() {
    let sim = sim().await;
    let (pid, main) = sim.add_project("one-op", None);
    let ep = sim.add_endpoint(&main);
    push_ops(&sim, &pid, Some(&ep), 1, MINUTE);
    let c = client(&sim);
    let project = ProjectId::from(pid.as_str());
    let pending = c.operations_in_progress(&project).await.unwrap();

    sim.clear_sent();
    let (done, ()) = tokio::join!(
        c.wait_for_operations(&project, &pending, Duration::from_secs(5)),
        advance_when(&sim, 2 * MINUTE, |sent| sent.iter().any(is_op_get))
    );
    assert_eq!(done.unwrap()[0].status, OperationStatus::Finished);
    assert_eq!(op_listings(&sim).len(), 0);
    assert!(op_gets(&sim) >= 2);
}

#[tokio::test]
async fn operations_buried_under_newer_ones_fall_back_to_gets() {
    let sim = sim().await;
    let (pid, main) = sim.add_project("buried", None);
    let ep = sim.add_endpoint(&main);
    let ours = push_ops(&sim, &pid, Some(&ep), 2, MINUTE);
    // 100 newer operations, already finished (not something Neon's lock lets happen often,
    // but nothing may hang on it): finding ours takes ceil(102 / 20) = 6 pages, more than
    // the 2 GETs a round would cost, so later rounds use GETs.
    push_ops(&sim, &pid, None, 100, Duration::ZERO);
    let c = client(&sim);
    let project = ProjectId::from(pid.as_str());
    let mut pending: Vec<Operation> = Vec::new();
    for id in &ours {
        pending.push(
            c.get_operation(&project, &OperationId::from(id.as_str()))
                .await
                .unwrap(),
        );
    }
    assert!(pending.iter().all(|o| !o.status.is_terminal()));

    sim.clear_sent();
    let (done, ()) = tokio::join!(
        c.wait_for_operations(&project, &pending, Duration::from_secs(5)),
        advance_when(&sim, 2 * MINUTE, |sent| sent.iter().any(is_op_get))
    );
    assert_eq!(done.unwrap().len(), 2);
    assert_eq!(op_listings(&sim).len(), 6, "one listing round only");
    assert!(op_gets(&sim) >= 2);
}

// ------------------------------------------------------------------- fix 4: page sizes

#[tokio::test]
async fn listings_ask_for_neons_maximum_page_by_default() {
    let sim = sim().await;
    let (pid, _) = sim.add_project("wide", None);
    for i in 0..250 {
        sim.add_branch(&pid, &format!("preview/pr-{i}"), None);
    }
    for i in 0..120 {
        sim.add_project(&format!("p{i}"), None);
    }
    let c = client(&sim);
    let project = ProjectId::from(pid.as_str());

    sim.clear_sent();
    let branches: Vec<Branch> = c.list_branches(&project).try_collect().await.unwrap();
    assert_eq!(branches.len(), 251);
    let projects: Vec<Project> = c
        .list_projects(ProjectFilter::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(projects.len(), 121);
    // At the former default of 100 this was 3 + 2 requests. Projects take one: a short
    // page naming no unavailable project is the last (the empty page after its cursor was
    // asked for until issue 11).
    let sent = sim.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let limit_of = |suffix: &str| {
        sent.iter()
            .find(|s| s.path.ends_with(suffix))
            .and_then(|s| s.query.clone())
            .unwrap_or_default()
    };
    assert!(limit_of("/branches").contains(&format!("limit={}", page_max::BRANCHES)));
    assert!(limit_of("/api/v2/projects").contains(&format!("limit={}", page_max::PROJECTS)));
    assert_eq!(
        ClientConfig::new("http://x", Secret::new("k".to_string())).page_size,
        DEFAULT_PAGE_SIZE
    );

    // Still configurable: a smaller cap applies to every listing.
    let mut cc = sim.client_config();
    cc.page_size = 100;
    let small = NeonClient::new(cc).unwrap();
    sim.clear_sent();
    let branches: Vec<Branch> = small.list_branches(&project).try_collect().await.unwrap();
    assert_eq!(branches.len(), 251);
    assert_eq!(branch_listings(&sim), 3);

    // Projects at 100 per page: 121 is a full page and a short one; 100 a full page, which
    // cannot be known to be the last, and the empty one after its cursor.
    let project_pages = |sim: &TestSim| gets(sim, |p| p.ends_with("/api/v2/projects")).len();
    sim.clear_sent();
    let all: Vec<Project> = small
        .list_projects(ProjectFilter::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!((all.len(), project_pages(&sim)), (121, 2));
    for p in all.iter().skip(100) {
        sim.state().settled().projects.remove(p.id.as_str());
    }
    sim.clear_sent();
    let all: Vec<Project> = small
        .list_projects(ProjectFilter::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!((all.len(), project_pages(&sim)), (100, 2));
}

// ------------------------------------------------------------ fix 1: the suspend job

/// A store that counts ledger writes and passes everything to SQLite.
struct CountingStore {
    inner: Arc<dyn Store>,
    single: AtomicUsize,
    batches: AtomicUsize,
}

#[async_trait]
impl Store for CountingStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn claim_run(&self, run: &NewRun) -> StoreResult<Option<RunId>> {
        self.inner.claim_run(run).await
    }
    async fn finish_run(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
    ) -> StoreResult<()> {
        self.inner.finish_run(id, status, counts, error).await
    }
    async fn get_run(&self, id: RunId) -> StoreResult<Option<RunRecord>> {
        self.inner.get_run(id).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.inner.list_runs(filter).await
    }
    async fn last_scheduled_run(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        self.inner.last_scheduled_run(job).await
    }
    async fn last_success(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        self.inner.last_success(job).await
    }
    async fn begin_action(&self, action: &NewAction) -> StoreResult<ActionId> {
        self.single.fetch_add(1, Ordering::SeqCst);
        self.inner.begin_action(action).await
    }
    async fn begin_actions(&self, actions: &[NewAction]) -> StoreResult<Vec<ActionId>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.inner.begin_actions(actions).await
    }
    async fn finish_action(
        &self,
        id: ActionId,
        outcome: ActionOutcome,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        self.inner.finish_action(id, outcome, detail).await
    }
    async fn actions_for_run(&self, run: RunId) -> StoreResult<Vec<ActionRecord>> {
        self.inner.actions_for_run(run).await
    }
    async fn get_state(&self, job: &str, key: &str) -> StoreResult<Option<StateRecord>> {
        self.inner.get_state(job, key).await
    }
    async fn put_state(
        &self,
        run: RunId,
        job: &str,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> StoreResult<Option<i64>> {
        self.inner.put_state(run, job, key, expected, value).await
    }
    async fn upsert_consumption(&self, samples: &[ConsumptionSample]) -> StoreResult<u64> {
        self.inner.upsert_consumption(samples).await
    }
    async fn list_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ConsumptionSample>> {
        self.inner.list_consumption(granularity, since).await
    }
    async fn latest_consumption_end(
        &self,
        granularity: &str,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        self.inner.latest_consumption_end(granularity).await
    }
    async fn prune(
        &self,
        before: &neon_steward::store::PruneBefore,
    ) -> StoreResult<neon_steward::store::Pruned> {
        self.inner.prune(before).await
    }
}

struct Jobs {
    env: JobEnv,
    counting: Arc<CountingStore>,
}

async fn jobs_env(sim: &TestSim) -> Jobs {
    let counting = Arc::new(CountingStore {
        inner: store::open("sqlite::memory:").await.expect("store opens"),
        single: AtomicUsize::new(0),
        batches: AtomicUsize::new(0),
    });
    Jobs {
        env: JobEnv {
            client: client(sim),
            store: counting.clone(),
            concurrency: 2,
            operation_deadline: Duration::from_secs(10),
            consumption: Arc::new(ConsumptionExporter::detached()),
        },
        counting,
    }
}

fn job(toml_jobs: &str) -> Arc<JobConfig> {
    let text = format!("[api]\nconcurrency = 2\n\n{toml_jobs}");
    let cfg = config::parse_with_env(Path::new("requests-test.toml"), &text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    cfg.jobs[0].clone()
}

async fn dry_run(
    sim: &TestSim,
    j: &Jobs,
    job: &JobConfig,
    minute: i64,
) -> (RunResult, Vec<ActionRecord>) {
    let now = sim.clock().now();
    let scheduled_for = now + TimeDelta::minutes(minute);
    let run_id = j
        .env
        .store
        .claim_run(&NewRun {
            job: job.name.clone(),
            kind: job.kind.as_str().to_string(),
            scheduled_for,
            trigger: Trigger::Manual,
            dry_run: true,
            status: RunStatus::Running,
            error: None,
            plan_id: None,
        })
        .await
        .unwrap()
        .expect("fresh tick");
    let r = run_job(
        &j.env,
        job,
        RunContext {
            run_id,
            scheduled_for,
            now,
            dry_run: true,
        },
    )
    .await;
    let actions = j.env.store.actions_for_run(run_id).await.unwrap();
    (r, actions)
}

const SUSPEND_IDLE: &str = r#"
[[jobs]]
name = "suspend-idle"
kind = "suspend_computes"
every = "10m"
idle_for = "1h"
"#;

/// The emulator's clock starts on a Monday.
const SUSPEND_MONDAYS: &str = r#"
[[jobs]]
name = "suspend-mondays"
kind = "suspend_computes"
every = "10m"
windows = ["Mon"]
window_timezone = "UTC"
"#;

/// Endpoints of `main` only, by branch pattern: the branches must be listed to select.
const SUSPEND_MONDAYS_MAIN: &str = r#"
[[jobs]]
name = "suspend-mondays-main"
kind = "suspend_computes"
every = "10m"
windows = ["Mon"]
window_timezone = "UTC"
[jobs.endpoints]
branches = ["main"]
"#;

#[tokio::test]
async fn suspend_job_lists_only_endpoints_unless_branch_patterns_need_names() {
    let sim = sim().await;
    let (pid, main) = sim.add_project("app", None);
    let ep = sim.add_endpoint(&main);
    let dev = sim.add_branch(&pid, "dev", None);
    let ep_dev = sim.add_endpoint(&dev);
    push_ops(&sim, &pid, Some(&ep), 2_500, Duration::ZERO);
    let j = jobs_env(&sim).await;

    // Idle computes, nothing to decide: the projects page and the endpoints, nothing else.
    // Before issue 11: also one operations page and the empty projects page after the
    // cursor (before that fix, the whole operation history: 3 pages at 1,000, 26 at 100).
    sim.clear_sent();
    let (r, actions) = dry_run(&sim, &j, &job(SUSPEND_IDLE), 0).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(op_listings(&sim).len(), 0);
    assert_eq!(branch_listings(&sim), 0);
    assert_eq!(
        gets(&sim, |p| p.ends_with("/endpoints")).len(),
        1,
        "{:?}",
        sim.sent()
    );
    assert_eq!(sim.sent().len(), 2, "projects, endpoints: {:?}", sim.sent());

    // Active computes inside the window: both planned, still without listing branches or
    // operations (one has an operation running: its suspend would be answered 423 and
    // waited out at the call; Neon's `pending_state` is what makes the plan skip one).
    {
        let state = sim.state();
        let mut s = state.settled();
        for id in [&ep, &ep_dev] {
            s.endpoints.get_mut(id.as_str()).unwrap().activity = Activity::Busy;
        }
        s.settle();
    }
    push_ops(&sim, &pid, Some(&ep_dev), 1, MINUTE);
    sim.clear_sent();
    let (r, actions) = dry_run(&sim, &j, &job(SUSPEND_MONDAYS), 1).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(branch_listings(&sim), 0);
    assert_eq!(op_listings(&sim).len(), 0);
    assert_eq!(sim.sent().len(), 2, "projects, endpoints: {:?}", sim.sent());
    let mut planned: Vec<&str> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Planned)
        .map(|a| a.resource_id.as_str())
        .collect();
    planned.sort();
    let mut both = vec![ep.as_str(), ep_dev.as_str()];
    both.sort();
    assert_eq!(planned, both, "{actions:#?}");
    assert!(actions.iter().all(|a| a.resource_name.is_none()));

    // A branch pattern needs the names: one branch listing, and the ledger names the branch.
    sim.clear_sent();
    let (r, actions) = dry_run(&sim, &j, &job(SUSPEND_MONDAYS_MAIN), 2).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(branch_listings(&sim), 1);
    assert_eq!(sim.sent().len(), 3, "{:?}", sim.sent());
    let planned: Vec<_> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Planned)
        .collect();
    assert_eq!(planned.len(), 1, "{actions:#?}");
    assert_eq!(planned[0].resource_id, ep);
    assert_eq!(planned[0].resource_name.as_deref(), Some("main"));
}

// ------------------------------------------------------ fix 5: ledger writes in batches

const EXPIRE: &str = r#"
[[jobs]]
name = "expire-previews"
kind = "expire_branches"
every = "15m"
ttl = "7d"
mode = "delete"
[jobs.branches]
names = ["preview/*"]
"#;

#[tokio::test]
async fn dry_run_records_planned_actions_and_skips_in_one_write_each() {
    let sim = sim().await;
    let old = sim.clock().now() - TimeDelta::days(30);
    let mut parents = Vec::new();
    for p in 0..3 {
        let (pid, main) = sim.add_project(&format!("shop-{p}"), None);
        let state = sim.state();
        let mut s = state.settled();
        for i in 0..8 {
            let b = s.insert_branch(&pid, &format!("preview/pr-{i}"), Some(&main), old);
            if i == 0 {
                // A kept child makes its expired parent a skip.
                let child = s.insert_branch(&pid, "keep/child", Some(&b.id), old);
                s.insert_endpoint(&child.id, EndpointType::ReadWrite, old);
                parents.push(b.id);
            }
        }
    }
    let j = jobs_env(&sim).await;
    let (r, actions) = dry_run(&sim, &j, &job(EXPIRE), 0).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let planned = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Planned)
        .count();
    let skipped: Vec<_> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Skipped)
        .collect();
    assert_eq!(planned, 21, "{actions:#?}");
    assert_eq!(r.counts.planned, 21);
    assert_eq!(skipped.len(), 3, "{actions:#?}");
    assert!(skipped.iter().all(|a| parents.contains(&a.resource_id)));
    // Before: one write (one transaction) per row, 24 here.
    assert_eq!(j.counting.single.load(Ordering::SeqCst), 0);
    assert_eq!(j.counting.batches.load(Ordering::SeqCst), 2);
}

// --------------------------------------------- issue 11: real sweeps at the minimum

/// [`dry_run`], for real.
async fn real_run(
    sim: &TestSim,
    j: &Jobs,
    job: &JobConfig,
    minute: i64,
) -> (RunResult, Vec<ActionRecord>) {
    let now = sim.clock().now();
    let scheduled_for = now + TimeDelta::minutes(minute);
    let run_id = j
        .env
        .store
        .claim_run(&NewRun {
            plan_id: None,
            job: job.name.clone(),
            kind: job.kind.as_str().to_string(),
            scheduled_for,
            trigger: Trigger::Manual,
            dry_run: false,
            status: RunStatus::Running,
            error: None,
        })
        .await
        .unwrap()
        .expect("fresh tick");
    let r = run_job(
        &j.env,
        job,
        RunContext {
            run_id,
            scheduled_for,
            now,
            dry_run: false,
        },
    )
    .await;
    let actions = j.env.store.actions_for_run(run_id).await.unwrap();
    (r, actions)
}

#[tokio::test]
async fn expire_sweep_lists_and_reads_recovery_once_per_project() {
    let sim = sim().await;
    let old = sim.clock().now() - TimeDelta::days(30);
    let (pid, parent, child) = {
        let (pid, main) = sim.add_project("shop", None);
        let state = sim.state();
        let mut s = state.settled();
        s.insert_branch(&pid, "preview/a", Some(&main), old);
        let parent = s.insert_branch(&pid, "preview/b", Some(&main), old);
        let child = s.insert_branch(&pid, "preview/b-child", Some(&parent.id), old);
        let now = s.now();
        s.insert_branch(&pid, "preview/new", Some(&main), now);
        (pid, parent.id, child.id)
    };
    let j = jobs_env(&sim).await;
    sim.clear_sent();
    let (r, actions) = real_run(&sim, &j, &job(EXPIRE), 0).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(r.counts.succeeded, 3, "{actions:#?}");
    let sent = sim.sent();
    let deletes: Vec<&Sent> = sent.iter().filter(|s| s.method == "DELETE").collect();
    assert_eq!(deletes.len(), 3, "{sent:?}");
    let child_at = deletes.iter().position(|s| s.path.ends_with(&child));
    let parent_at = deletes.iter().position(|s| s.path.ends_with(&parent));
    assert!(
        child_at < parent_at,
        "the child first, then its parent: {deletes:?}"
    );
    let listings: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.method == "GET" && s.path.ends_with(&format!("/projects/{pid}/branches")))
        .collect();
    let recovery = listings
        .iter()
        .filter(|s| query_has(s, "include_deleted=true"))
        .count();
    // The plan's listing and the fresh one before the deletes; one recovery read.
    // Before issue 11: a GET of the branch, a listing and a recovery listing per delete.
    assert_eq!((listings.len() - recovery, recovery), (2, 1), "{sent:?}");
    assert_eq!(
        gets(&sim, |p| p.ends_with("/endpoints")).len(),
        0,
        "a ttl-only policy needs no last activity"
    );
    assert_eq!(
        gets(&sim, |p| p.contains("/branches/")).len(),
        0,
        "{sent:?}"
    );
    assert_eq!(
        sent.len(),
        1 + 2 + 1 + 3,
        "one projects page, two listings, one recovery read, three deletes: {sent:?}"
    );
    // Neon's time for the first; the later ones from the window it implies.
    let mut details: Vec<&str> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Succeeded)
        .filter_map(|a| a.detail.as_deref())
        .collect();
    details.sort();
    assert!(
        details[0].starts_with("recoverable_until about ")
            && details[0].contains("plus the 7days recovery window Neon reported"),
        "{details:?}"
    );
    assert_eq!(
        details
            .iter()
            .filter(|d| d.starts_with("recoverable_until="))
            .count(),
        1,
        "{details:?}"
    );
}

const SNAPSHOT_KEEP_1: &str = r#"
[[jobs]]
name = "nightly"
kind = "snapshot_branches"
schedule = "0 3 * * *"
timezone = "UTC"
name_template = "{job}-{branch}-{date}-{time}"
[jobs.branches]
default = true
[jobs.retention]
keep_last = 1
"#;

#[tokio::test]
async fn snapshot_sweep_lists_snapshots_once_per_project() {
    let sim = sim().await;
    sim.add_project("shop", None);
    let j = jobs_env(&sim).await;
    let (r, _) = real_run(&sim, &j, &job(SNAPSHOT_KEEP_1), 0).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    sim.clock().advance(Duration::from_secs(86_400));
    sim.clear_sent();
    let (r, actions) = real_run(&sim, &j, &job(SNAPSHOT_KEEP_1), 0).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(
        r.counts.succeeded, 2,
        "a create and a retention delete: {actions:#?}"
    );
    let sent = sim.sent();
    let snapshot_listings = gets(&sim, |p| p.ends_with("/snapshots")).len();
    // Before issue 11 the create listed the snapshots again (and the projects listing asked
    // for an empty page).
    assert_eq!(snapshot_listings, 1, "{sent:?}");
    // The project already holds a manual snapshot (yesterday's), so the run reads the
    // account's plan once (`/users/me` for a personal project) to know its snapshot limit.
    let plan_reads = gets(&sim, |p| {
        p.ends_with("/users/me") || p.contains("/organizations/")
    })
    .len();
    assert_eq!(plan_reads, 1, "{sent:?}");
    assert_eq!(
        sent.len(),
        1 + 2 + 1 + 2,
        "projects page, branches and snapshots, the plan, create and delete: {sent:?}"
    );
}
