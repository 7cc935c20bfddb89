//! The jobs end to end against neon-sim: dry runs change nothing, real runs change exactly
//! what the policy says (asserted on the emulator's state and mutation log), `max_actions`
//! refuses before acting, and a re-run of a tick leaves no duplicate snapshots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use neon_sim::{Sim, SimConfig};
use neon_steward::config::{self, JobConfig};
use neon_steward::jobs::{run_job, JobEnv, RunContext, RunResult};
use neon_steward::neon::{ClientConfig, NeonClient};
use neon_steward::secret::Secret;
use neon_steward::store::{ActionOutcome, ActionRecord, NewRun, RunStatus, Trigger};
use neon_steward::telemetry::consumption::ConsumptionExporter;

const DAY: Duration = Duration::from_secs(86_400);

fn job(toml_jobs: &str) -> Arc<JobConfig> {
    let text = format!("[api]\nconcurrency = 2\n\n{toml_jobs}");
    let cfg = config::parse_with_env(Path::new("jobs-test.toml"), &text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    cfg.jobs[0].clone()
}

struct Env {
    sim: Sim,
    env: JobEnv,
}

async fn env() -> Env {
    let sim = Sim::start(SimConfig::default())
        .await
        .expect("emulator starts");
    let mut cc = ClientConfig::new(sim.base_url(), Secret::new(sim.api_key()));
    cc.poll_initial = Duration::from_millis(1);
    cc.poll_max = Duration::from_millis(5);
    let client = NeonClient::new(cc).expect("client builds");
    let store = neon_steward::store::open("sqlite::memory:")
        .await
        .expect("store opens");
    Env {
        sim,
        env: JobEnv {
            client,
            store,
            concurrency: 2,
            operation_deadline: Duration::from_secs(10),
            consumption: Arc::new(ConsumptionExporter::detached()),
        },
    }
}

async fn run(
    e: &Env,
    job: &JobConfig,
    tick: DateTime<Utc>,
    dry_run: bool,
) -> (RunResult, Vec<ActionRecord>) {
    let run_id = e
        .env
        .store
        .claim_run(&NewRun {
            job: job.name.clone(),
            kind: job.kind.as_str().to_string(),
            scheduled_for: tick,
            trigger: Trigger::Manual,
            dry_run,
            status: RunStatus::Running,
            error: None,
            plan_id: None,
        })
        .await
        .unwrap()
        .expect("fresh tick");
    let r = run_job(
        &e.env,
        job,
        RunContext {
            run_id,
            scheduled_for: tick,
            now: e.sim.clock().now(),
            dry_run,
        },
    )
    .await;
    let actions = e.env.store.actions_for_run(run_id).await.unwrap();
    (r, actions)
}

fn branch_names(sim: &Sim, project: &str) -> Vec<String> {
    let mut v: Vec<String> = sim.branches(project).into_iter().map(|b| b.name).collect();
    v.sort();
    v
}

/// main ─┬─ preview/old (10d) ── preview/old-child (9d)
///       ├─ preview/kept-parent (10d) ── preview/young (1d)
///       ├─ preview/new (1d)
///       └─ feature-x (20d)
fn seed_tree(sim: &Sim) -> String {
    let (p, main) = sim.add_project("app", None);
    let now = sim.clock().now();
    let ago = |d: i64| now - chrono::Duration::days(d);
    let old = sim
        .add_branch(&p.id, "preview/old", Some(&main.id), ago(10))
        .unwrap();
    sim.add_branch(&p.id, "preview/old-child", Some(&old.id), ago(9))
        .unwrap();
    let kp = sim
        .add_branch(&p.id, "preview/kept-parent", None, ago(10))
        .unwrap();
    sim.add_branch(&p.id, "preview/young", Some(&kp.id), ago(1))
        .unwrap();
    sim.add_branch(&p.id, "preview/new", None, ago(1)).unwrap();
    sim.add_branch(&p.id, "feature-x", None, ago(20)).unwrap();
    p.id
}

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
async fn expire_dry_run_changes_nothing_and_records_the_plan() {
    let e = env().await;
    let p = seed_tree(&e.sim);
    e.sim.clear_mutations();
    let before = branch_names(&e.sim, &p);
    let (r, actions) = run(&e, &job(EXPIRE), e.sim.clock().now(), true).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(
        e.sim.mutations().is_empty(),
        "dry run mutated: {:?}",
        e.sim.mutations()
    );
    assert_eq!(branch_names(&e.sim, &p), before);
    let planned: Vec<_> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Planned)
        .map(|a| a.resource_name.clone().unwrap())
        .collect();
    assert_eq!(planned, vec!["preview/old-child", "preview/old"]);
    let old = actions
        .iter()
        .find(|a| a.resource_name.as_deref() == Some("preview/old"))
        .unwrap();
    assert_eq!(old.rule.as_deref(), Some("ttl"));
    assert!(old.reason.starts_with("age 10d > ttl 7d"), "{}", old.reason);
    let skipped = actions
        .iter()
        .find(|a| a.outcome == ActionOutcome::Skipped)
        .expect("the parent of a kept branch is recorded as skipped");
    assert_eq!(
        skipped.resource_name.as_deref(),
        Some("preview/kept-parent")
    );
    assert!(
        skipped.reason.contains("children that are kept"),
        "{}",
        skipped.reason
    );
}

#[tokio::test]
async fn expire_real_run_deletes_exactly_the_plan_children_first() {
    let e = env().await;
    let p = seed_tree(&e.sim);
    e.sim.clear_mutations();
    let (r, actions) = run(&e, &job(EXPIRE), e.sim.clock().now(), false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(r.counts.succeeded, 2);
    assert_eq!(r.counts.skipped, 1);
    assert_eq!(
        branch_names(&e.sim, &p),
        vec![
            "feature-x",
            "main",
            "preview/kept-parent",
            "preview/new",
            "preview/young"
        ]
    );
    let deletes: Vec<_> = e
        .sim
        .mutations()
        .into_iter()
        .filter(|m| m.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert_eq!(e.sim.mutations().len(), 2, "no other mutation");
    let done: Vec<_> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Succeeded)
        .collect();
    assert_eq!(done[0].resource_name.as_deref(), Some("preview/old-child"));
    assert!(
        deletes[0].path.ends_with(&done[0].resource_id),
        "child deleted first"
    );
    assert!(done[0]
        .detail
        .as_deref()
        .unwrap()
        .starts_with("recoverable_until="));
    assert!(done.iter().all(|a| a.finished_at.is_some()));
}

#[tokio::test]
async fn max_actions_aborts_before_acting() {
    let e = env().await;
    let p = seed_tree(&e.sim);
    e.sim.clear_mutations();
    let limited = EXPIRE.replace("mode = \"delete\"", "mode = \"delete\"\nmax_actions = 1");
    let (r, actions) = run(&e, &job(&limited), e.sim.clock().now(), false).await;
    assert_eq!(r.status, RunStatus::Failed);
    let err = r.error.unwrap();
    assert!(
        err.contains("max_actions = 1") && err.contains("nothing was done"),
        "{err}"
    );
    assert!(e.sim.mutations().is_empty());
    assert!(actions.is_empty());
    assert_eq!(branch_names(&e.sim, &p).len(), 7);
}

const SNAPSHOT: &str = r#"
[[jobs]]
name = "nightly"
kind = "snapshot_branches"
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
name_template = "{branch}-snap-{job}-{date}-{time}"
[jobs.branches]
default = true
[jobs.retention]
keep_last = 2
"#;

#[tokio::test]
async fn snapshots_with_retention_and_no_duplicates_on_rerun() {
    let e = env().await;
    let (p, main) = e.sim.add_project("app", None);
    // A snapshot made by hand is never touched by retention.
    e.env
        .client
        .create_snapshot(
            &p.id.as_str().into(),
            &main.id.as_str().into(),
            neon_steward::neon::SnapshotRequest {
                name: Some("manual-before-upgrade".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let j = job(SNAPSHOT);
    let mut ticks = Vec::new();
    for _ in 0..3 {
        e.sim.clock().advance(DAY);
        let tick = e.sim.clock().now();
        ticks.push(tick);
        let (r, _) = run(&e, &j, tick, false).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    }
    let mut names: Vec<String> = e.sim.snapshots(&p.id).into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"manual-before-upgrade".to_string()));
    // Names come from the schedule window (03:00 Berlin) each tick belongs to; the oldest
    // of our three was deleted by keep_last = 2.
    assert!(
        names.contains(&"main-snap-nightly-2025-06-05-030000".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"main-snap-nightly-2025-06-04-030000".to_string()),
        "{names:?}"
    );

    // A crash after the create (before the ledger was updated), then a manual re-run later
    // in the same schedule window: the snapshot is found by its deterministic name.
    e.sim.clear_mutations();
    let rerun = ticks[2] + chrono::Duration::hours(1);
    let (r, actions) = run(&e, &j, rerun, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(e.sim.mutations().is_empty(), "{:?}", e.sim.mutations());
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].outcome, ActionOutcome::Skipped);
    assert!(
        actions[0].reason.contains("exists already"),
        "{}",
        actions[0].reason
    );
    assert_eq!(e.sim.snapshots(&p.id).len(), 3);
}

/// A failed create must not be followed by the retention deletes it would have made
/// room for: with keep_last = 2, a third tick whose snapshot cannot be created leaves the
/// two existing snapshots alone.
#[tokio::test]
async fn retention_waits_for_a_successful_create() {
    let e = env().await;
    let (p, main) = e.sim.add_project("app", None);
    let j = job(SNAPSHOT);
    for _ in 0..2 {
        e.sim.clock().advance(DAY);
        let (r, _) = run(&e, &j, e.sim.clock().now(), false).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    }
    assert_eq!(e.sim.snapshots(&p.id).len(), 2);
    // Every create of a snapshot of `main` is refused (a 400 is not retried).
    e.sim
        .faults()
        .inject(
            neon_sim::faults::FaultRule::on(
                "POST",
                &format!("/projects/{}/branches/{}/snapshot", p.id, main.id),
                neon_sim::faults::Fault::Status {
                    status: 400,
                    retry_after_secs: None,
                },
            )
            .with_probability(1.0)
            .times(50),
        )
        .unwrap();
    e.sim.clock().advance(DAY);
    let (r, actions) = run(&e, &j, e.sim.clock().now(), false).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    assert_eq!(e.sim.snapshots(&p.id).len(), 2, "no snapshot was deleted");
    let create = actions
        .iter()
        .find(|a| a.action == "create_snapshot")
        .expect("the create is in the ledger");
    assert_eq!(create.outcome, ActionOutcome::Failed);
    let delete = actions
        .iter()
        .find(|a| a.action == "delete_snapshot")
        .expect("the retention delete is in the ledger");
    assert_eq!(delete.outcome, ActionOutcome::Skipped);
    assert!(
        delete.reason.contains("depends on create_snapshot"),
        "{}",
        delete.reason
    );
}

/// `max_actions_percent` guards destructive actions against what they could destroy: a
/// snapshot job at steady state (one create and one retention delete per tick) runs under a
/// 50% limit, which used to fail every run because creates counted against branches.
#[tokio::test]
async fn snapshot_jobs_run_under_a_percentage_limit() {
    let e = env().await;
    let (p, _main) = e.sim.add_project("app", None);
    let j = job(&SNAPSHOT.replace(
        "[jobs.branches]",
        "max_actions_percent = 50.0\n[jobs.branches]",
    ));
    for _ in 0..4 {
        e.sim.clock().advance(DAY);
        let (r, _) = run(&e, &j, e.sim.clock().now(), false).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    }
    assert_eq!(e.sim.snapshots(&p.id).len(), 2, "keep_last = 2 held");
}

const SUSPEND: &str = r#"
[[jobs]]
name = "suspend-mondays"
kind = "suspend_computes"
every = "10m"
windows = ["Mon"]
window_timezone = "UTC"
[jobs.endpoints]
branches = ["main"]
"#;

#[tokio::test]
async fn suspend_inside_window_only_selected_endpoints() {
    let e = env().await;
    // The emulator's clock starts on Monday 2025-06-02 12:00Z.
    let (p, main) = e.sim.add_project("app", None);
    let dev = e
        .sim
        .add_branch(&p.id, "dev", None, e.sim.clock().now())
        .unwrap();
    let ep_main = e
        .sim
        .add_endpoint(&main.id, neon_sim::state::EndpointType::ReadWrite)
        .unwrap();
    let ep_dev = e
        .sim
        .add_endpoint(&dev.id, neon_sim::state::EndpointType::ReadWrite)
        .unwrap();
    for id in [&ep_main.id, &ep_dev.id] {
        assert!(e
            .sim
            .set_endpoint_activity(id, neon_sim::state::Activity::Busy));
    }
    e.sim.clear_mutations();
    let j = job(SUSPEND);

    let (r, actions) = run(&e, &j, e.sim.clock().now(), true).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(e.sim.mutations().is_empty());
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].outcome, ActionOutcome::Planned);
    assert_eq!(actions[0].resource_id, ep_main.id);
    assert_eq!(actions[0].reason, "inside window \"Mon\"");

    let (r, actions) = run(
        &e,
        &j,
        e.sim.clock().now() + chrono::Duration::seconds(1),
        false,
    )
    .await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let muts = e.sim.mutations();
    assert_eq!(muts.len(), 1, "{muts:?}");
    assert_eq!(muts[0].method, "POST");
    assert!(
        muts[0].path.ends_with(&format!("{}/suspend", ep_main.id)),
        "{}",
        muts[0].path
    );
    assert_eq!(actions[0].outcome, ActionOutcome::Succeeded);

    // Tuesday: outside the window, nothing to do.
    e.sim.clock().advance(DAY);
    e.sim.clear_mutations();
    let (r, actions) = run(&e, &j, e.sim.clock().now(), false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(actions.is_empty(), "{actions:?}");
    assert!(e.sim.mutations().is_empty());
}

/// Neon takes snapshots of root branches only: a selected child branch is skipped with that
/// reason, and no call is made for it.
#[tokio::test]
async fn child_branches_are_not_snapshotted() {
    let e = env().await;
    let (p, main) = e.sim.add_project("app", None);
    let child = e
        .sim
        .add_branch(&p.id, "dev", None, e.sim.clock().now())
        .unwrap();
    let j = job(&SNAPSHOT.replace("default = true", "names = [\"*\"]"));
    e.sim.clock().advance(DAY);
    let tick = e.sim.clock().now();
    let (r, actions) = run(&e, &j, tick, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    let of = |branch: &str| {
        actions
            .iter()
            .filter(|a| a.resource_id == branch && a.action == "create_snapshot")
            .map(|a| (a.outcome, a.reason.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&main.id).len(), 1);
    assert_eq!(of(&main.id)[0].0, ActionOutcome::Succeeded);
    let skipped = of(&child.id);
    assert_eq!(skipped.len(), 1, "{actions:?}");
    assert_eq!(skipped[0].0, ActionOutcome::Skipped);
    assert!(skipped[0].1.contains("not a root branch"), "{skipped:?}");
    let posts = e
        .sim
        .mutations()
        .into_iter()
        .filter(|m| m.method == "POST" && m.path.contains(&child.id))
        .count();
    assert_eq!(posts, 0, "no call for the child branch");
}

/// Neon's manual snapshot limit (1 on Free plans): a project at its limit is skipped at
/// planning with the reason, no create is sent (it would be a quota 423), and retention
/// still runs and deletes what the policy no longer keeps.
#[tokio::test]
async fn a_project_at_its_snapshot_limit_is_skipped_and_retention_still_runs() {
    let e = env().await;
    let org = e.sim.add_org("acme");
    let (p, main) = e.sim.add_project("app", Some(&org));
    // Two snapshots made while the organization was on a paid plan.
    let keep_two = job(SNAPSHOT);
    for _ in 0..2 {
        e.sim.clock().advance(DAY);
        let (r, _) = run(&e, &keep_two, e.sim.clock().now(), false).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    }
    assert_eq!(e.sim.snapshots(&p.id).len(), 2);
    // Downgraded to Free (limit 1), and the policy now keeps one.
    assert!(e.sim.set_org_plan(&org, "free_v3"));
    let keep_one = job(&SNAPSHOT.replace("keep_last = 2", "keep_last = 1"));
    e.sim.clock().advance(DAY);
    e.sim.clear_mutations();
    let (r, actions) = run(&e, &keep_one, e.sim.clock().now(), false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    let creates: Vec<_> = actions
        .iter()
        .filter(|a| a.action == "create_snapshot")
        .collect();
    assert_eq!(creates.len(), 1, "{actions:?}");
    assert_eq!(creates[0].outcome, ActionOutcome::Skipped);
    assert_eq!(creates[0].resource_id, main.id);
    assert!(
        creates[0].reason.contains("free_v3") && creates[0].reason.contains("allows 1"),
        "{}",
        creates[0].reason
    );
    let deletes: Vec<_> = actions
        .iter()
        .filter(|a| a.action == "delete_snapshot")
        .collect();
    assert_eq!(deletes.len(), 1, "{actions:?}");
    assert_eq!(deletes[0].outcome, ActionOutcome::Succeeded, "{deletes:?}");
    let posts = e
        .sim
        .mutations()
        .into_iter()
        .filter(|m| m.method == "POST" && m.path.ends_with("/snapshot"))
        .count();
    assert_eq!(posts, 0, "no create was sent: {:?}", e.sim.mutations());
    assert_eq!(e.sim.snapshots(&p.id).len(), 1);

    // Still at the limit (one held): skipped again, nothing left to delete.
    e.sim.clock().advance(DAY);
    let (r, actions) = run(&e, &keep_one, e.sim.clock().now(), false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(
        actions
            .iter()
            .all(|a| a.outcome == ActionOutcome::Skipped && a.action == "create_snapshot"),
        "{actions:?}"
    );

    // Back on a paid plan (limit 100): the create is planned and made.
    assert!(e.sim.set_org_plan(&org, "scale"));
    e.sim.clock().advance(DAY);
    let (r, actions) = run(&e, &keep_one, e.sim.clock().now(), false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(
        actions
            .iter()
            .any(|a| a.action == "create_snapshot" && a.outcome == ActionOutcome::Succeeded),
        "{actions:?}"
    );
}

/// Two root branches of a Free project with no snapshot yet: the first create takes the only
/// slot, the second is skipped at planning instead of being refused by Neon.
#[tokio::test]
async fn the_snapshot_limit_counts_creates_planned_in_the_same_run() {
    let e = env().await;
    let org = e.sim.add_org("tiny");
    assert!(e.sim.set_org_plan(&org, "free_v3"));
    let (p, _main) = e.sim.add_project("app", Some(&org));
    let other = e
        .sim
        .add_branch(&p.id, "other-root", None, e.sim.clock().now())
        .unwrap();
    assert!(e.sim.update_branch(&other.id, |b| b.parent_id = None));
    let j = job(&SNAPSHOT.replace("default = true", "names = [\"*\"]"));
    e.sim.clock().advance(DAY);
    let (r, actions) = run(&e, &j, e.sim.clock().now(), false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    let outcomes: Vec<_> = actions
        .iter()
        .filter(|a| a.action == "create_snapshot")
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes.len(), 2, "{actions:?}");
    assert!(outcomes.contains(&ActionOutcome::Succeeded), "{actions:?}");
    let skipped: Vec<_> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Skipped)
        .collect();
    assert_eq!(skipped.len(), 1, "{actions:?}");
    assert!(
        skipped[0].reason.contains("more are planned"),
        "{skipped:?}"
    );
    assert_eq!(e.sim.snapshots(&p.id).len(), 1);
}
