//! The jobs' safety rails end to end against neon-sim: snapshot ownership is a record (not a
//! name guess), retention never prunes when the new snapshot failed, `max_actions_percent`
//! counts destructive actions against what they could destroy, branches are read again
//! before they are deleted, ancestors of a failed delete are skipped, expiry times are
//! computed when the call is made, a run's status follows its attempts, and a cancelled
//! run stops between actions and reports what it did.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use neon_sim::faults::{Fault, FaultRule};
use neon_sim::{Sim, SimConfig};
use neon_steward::config::{self, JobConfig};
use neon_steward::jobs::snapshot::ownership_key;
use neon_steward::jobs::{run_job_with, JobEnv, RunContext, RunControl, RunResult};
use neon_steward::neon::{ClientConfig, NeonClient};
use neon_steward::scheduler::{Clock, Executor, LeaseTiming, LeaseWatch, RunHandle};
use neon_steward::secret::Secret;
use neon_steward::store::{ActionOutcome, ActionRecord, NewRun, RunStatus, Trigger};
use neon_steward::telemetry::consumption::ConsumptionExporter;

const DAY: Duration = Duration::from_secs(86_400);

fn jobs(toml_jobs: &str) -> Vec<Arc<JobConfig>> {
    let text = format!("[api]\nconcurrency = 2\n\n{toml_jobs}");
    let cfg = config::parse_with_env(Path::new("jobs-safety.toml"), &text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    cfg.jobs.clone()
}

fn job(toml_jobs: &str) -> Arc<JobConfig> {
    jobs(toml_jobs)[0].clone()
}

/// The emulator's clock as the daemon's clock.
struct SimClock(neon_sim::Clock);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

struct Env {
    sim: Sim,
    env: JobEnv,
    /// Makes every run's tick unique (a tick can be claimed once); ticks stay in the same
    /// schedule window.
    ticks: std::sync::atomic::AtomicI64,
}

/// `max_retries = 0` where a test needs the job's own 423 handling (not the client's).
async fn env_with(max_retries: Option<u32>) -> Env {
    let sim = Sim::start(SimConfig::default())
        .await
        .expect("emulator starts");
    let mut cc = ClientConfig::new(sim.base_url(), Secret::new(sim.api_key()));
    cc.poll_initial = Duration::from_millis(1);
    cc.poll_max = Duration::from_millis(5);
    cc.max_retry_elapsed = Duration::from_secs(5);
    if let Some(n) = max_retries {
        cc.max_retries = n;
    }
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
        ticks: Default::default(),
    }
}

async fn env() -> Env {
    env_with(None).await
}

impl Env {
    async fn claim(&self, job: &JobConfig, tick: DateTime<Utc>) -> i64 {
        self.env
            .store
            .claim_run(&NewRun {
                job: job.name.clone(),
                kind: job.kind.as_str().to_string(),
                scheduled_for: tick,
                trigger: Trigger::Manual,
                dry_run: false,
                status: RunStatus::Running,
                error: None,
                plan_id: None,
            })
            .await
            .unwrap()
            .expect("fresh tick")
    }

    async fn run_with(
        &self,
        job: &JobConfig,
        tick: DateTime<Utc>,
        control: &RunControl,
    ) -> (RunResult, Vec<ActionRecord>) {
        let run_id = self.claim(job, tick).await;
        let ctx = RunContext {
            run_id,
            scheduled_for: tick,
            now: self.sim.clock().now(),
            dry_run: false,
        };
        let r = run_job_with(&self.env, job, ctx, control).await;
        let actions = self.env.store.actions_for_run(run_id).await.unwrap();
        (r, actions)
    }

    async fn run(&self, job: &JobConfig) -> (RunResult, Vec<ActionRecord>) {
        let control = RunControl {
            clock: Some(Arc::new(SimClock(self.sim.clock()))),
            ..Default::default()
        };
        let offset = self
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tick = self.sim.clock().now() + TimeDelta::milliseconds(offset);
        self.run_with(job, tick, &control).await
    }

    fn snapshot_names(&self, project: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .sim
            .snapshots(project)
            .into_iter()
            .map(|s| s.name)
            .collect();
        v.sort();
        v
    }

    fn branch_names(&self, project: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .sim
            .branches(project)
            .into_iter()
            .map(|b| b.name)
            .collect();
        v.sort();
        v
    }

    /// Waits (real time, bounded) until the emulator has injected a fault on `method`.
    async fn fault_fired(&self, method: &str) {
        for _ in 0..2000 {
            if self
                .sim
                .faults()
                .injected()
                .iter()
                .any(|f| f.method == method)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("no {method} reached the emulator's fault layer");
    }
}

fn outcomes(actions: &[ActionRecord], action: &str) -> Vec<ActionOutcome> {
    actions
        .iter()
        .filter(|a| a.action == action)
        .map(|a| a.outcome)
        .collect()
}

const NIGHTLY_KEEP_1: &str = r#"
[[jobs]]
name = "nightly"
kind = "snapshot_branches"
schedule = "0 3 * * *"
timezone = "UTC"
[jobs.branches]
default = true
[jobs.retention]
keep_last = 1
"#;

const SNAPSHOT_ROUTE: &str = "/projects/{project_id}/branches/{branch_id}/snapshot";

// ------------------------------------------------------------------ P0-2

/// keep_last = 1: when today's create fails, yesterday's (only) snapshot survives, the
/// delete is recorded as skipped, and the run (whose only attempt failed) is `failed`.
#[tokio::test]
async fn failed_create_never_prunes_the_last_good_snapshot() {
    let e = env().await;
    let (p, _main) = e.sim.add_project("app", None);
    let j = job(NIGHTLY_KEEP_1);
    e.sim.clock().advance(DAY);
    let (r, _) = e.run(&j).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let first = e.snapshot_names(&p.id);
    assert_eq!(first, vec!["nightly-main-2025-06-03-030000"]);

    e.sim.clock().advance(DAY);
    e.sim
        .faults()
        .inject(
            FaultRule::on(
                "POST",
                SNAPSHOT_ROUTE,
                Fault::Status {
                    status: 400,
                    retry_after_secs: None,
                },
            )
            .times(1),
        )
        .unwrap();
    let (r, actions) = e.run(&j).await;
    assert_eq!(e.snapshot_names(&p.id), first, "the only snapshot survives");
    assert_eq!(
        outcomes(&actions, "create_snapshot"),
        [ActionOutcome::Failed]
    );
    assert_eq!(
        outcomes(&actions, "delete_snapshot"),
        [ActionOutcome::Skipped]
    );
    let skip = actions
        .iter()
        .find(|a| a.action == "delete_snapshot")
        .unwrap();
    assert!(
        skip.reason.contains("new snapshot was not created")
            && skip.rule.as_deref() == Some("retention"),
        "{}",
        skip.reason
    );
    // P2-3: skips are not attempts; the only attempt failed.
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    assert_eq!((r.counts.failed, r.counts.skipped), (1, 1));

    // The fault is gone: a re-run of the same tick creates today's and then prunes.
    let (r, actions) = e.run(&j).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    assert_eq!(
        e.snapshot_names(&p.id),
        vec!["nightly-main-2025-06-04-030000"]
    );
}

// ------------------------------------------------------------------ P0-1

/// A snapshot whose name fits the job's pattern on the job's branch, but which the job did
/// not create (by hand, or by a policy long gone), is never pruned.
#[tokio::test]
async fn retention_deletes_only_snapshots_the_job_recorded() {
    let e = env().await;
    let (p, main) = e.sim.add_project("app", None);
    e.env
        .client
        .create_snapshot(
            &p.id.as_str().into(),
            &main.id.as_str().into(),
            neon_steward::neon::SnapshotRequest {
                name: Some("nightly-main-2025-06-01-030000".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let j = job(NIGHTLY_KEEP_1);
    for _ in 0..3 {
        e.sim.clock().advance(DAY);
        let (r, actions) = e.run(&j).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    }
    assert_eq!(
        e.snapshot_names(&p.id),
        vec![
            "nightly-main-2025-06-01-030000",
            "nightly-main-2025-06-05-030000"
        ],
        "the look-alike stays; of ours only the newest is kept"
    );
    // The record names exactly the snapshot the job keeps.
    let record = e
        .env
        .store
        .get_state("nightly", &ownership_key(&p.id.as_str().into()))
        .await
        .unwrap()
        .expect("the job recorded its snapshots")
        .value;
    let ours = e
        .sim
        .snapshots(&p.id)
        .into_iter()
        .find(|s| s.name == "nightly-main-2025-06-05-030000")
        .unwrap();
    assert!(record.contains(&ours.id), "{record}");
    assert_eq!(record.matches("\"id\"").count(), 1, "{record}");
}

/// Two snapshot jobs on the same branch with the default template: each prunes only its own.
#[tokio::test]
async fn another_policys_snapshots_are_not_ours() {
    let e = env().await;
    let (p, _main) = e.sim.add_project("app", None);
    let js = jobs(
        r#"
[[jobs]]
name = "monthly"
kind = "snapshot_branches"
schedule = "0 4 1 * *"
timezone = "UTC"
[jobs.branches]
default = true
[jobs.retention]
keep_monthly = 12

[[jobs]]
name = "hourly"
kind = "snapshot_branches"
schedule = "0 * * * *"
timezone = "UTC"
[jobs.branches]
default = true
[jobs.retention]
keep_last = 1
"#,
    );
    let (monthly, hourly) = (&js[0], &js[1]);
    e.sim.clock().advance(DAY);
    let (r, _) = e.run(monthly).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    for _ in 0..2 {
        e.sim.clock().advance(Duration::from_secs(3600));
        let (r, actions) = e.run(hourly).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    }
    let names = e.snapshot_names(&p.id);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("monthly-main-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("hourly-main-")),
        "{names:?}"
    );
}

/// A crash during the create call: the attempt was recorded, the snapshot exists, the
/// ledger row stayed pending. The re-run adopts the snapshot (no second one) and later
/// retention prunes it like any other of ours.
#[tokio::test]
async fn a_create_interrupted_by_a_crash_is_adopted() {
    let e = env().await;
    let (p, main) = e.sim.add_project("app", None);
    let j = job(NIGHTLY_KEEP_1);
    e.sim.clock().advance(DAY);
    let name = "nightly-main-2025-06-03-030000";
    // What the crashed run left: the snapshot at Neon and the attempt in the record.
    e.env
        .client
        .create_snapshot(
            &p.id.as_str().into(),
            &main.id.as_str().into(),
            neon_steward::neon::SnapshotRequest {
                name: Some(name.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let writer = e.claim(&job("[[jobs]]\nname = \"test-writer\"\nkind = \"expire_branches\"\nttl = \"1d\"\nevery = \"1h\"\n"), e.sim.clock().now()).await;
    e.env
        .store
        .put_state(
            writer,
            "nightly",
            &ownership_key(&p.id.as_str().into()),
            None,
            &format!(
                r#"{{"snapshots":[],"attempts":[{{"branch_id":"{}","name":"{name}"}}]}}"#,
                main.id
            ),
        )
        .await
        .unwrap();
    e.sim.clear_mutations();
    let (r, actions) = e.run(&j).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(e.sim.mutations().is_empty(), "{:?}", e.sim.mutations());
    assert_eq!(
        outcomes(&actions, "create_snapshot"),
        [ActionOutcome::Skipped]
    );
    // Adopted: the next tick's retention prunes it.
    e.sim.clock().advance(DAY);
    let (r, _) = e.run(&j).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(
        e.snapshot_names(&p.id),
        vec!["nightly-main-2025-06-04-030000"]
    );
}

// ------------------------------------------------------------------ P1-2

/// `max_actions_percent` on a snapshot job: the creates do not count, the retention deletes
/// count against the snapshots the job owns.
#[tokio::test]
async fn percent_limit_counts_snapshot_deletes_against_owned_snapshots() {
    let e = env().await;
    let (p, _main) = e.sim.add_project("app", None);
    let policy = |keep: u32| {
        job(&format!(
            r#"
[[jobs]]
name = "nightly"
kind = "snapshot_branches"
schedule = "0 3 * * *"
timezone = "UTC"
max_actions_percent = 50.0
[jobs.branches]
default = true
[jobs.retention]
keep_last = {keep}
"#
        ))
    };
    let j = policy(3);
    // Four runs: three to fill, the fourth creates one and prunes one of three owned (33%).
    for n in 0..4 {
        e.sim.clock().advance(DAY);
        let (r, actions) = e.run(&j).await;
        assert_eq!(r.status, RunStatus::Succeeded, "run {n}: {r:?} {actions:?}");
    }
    assert_eq!(e.snapshot_names(&p.id).len(), 3);
    // Shrinking to keep_last = 1 would delete three of the four owned (75% > 50%): refused.
    e.sim.clock().advance(DAY);
    e.sim.clear_mutations();
    let (r, actions) = e.run(&policy(1)).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    let err = r.error.unwrap();
    assert!(
        err.contains("3 destructive actions") && err.contains("50% of the 3 resources"),
        "{err}"
    );
    assert!(e.sim.mutations().is_empty(), "nothing was done");
    assert!(actions.is_empty());
}

// ------------------------------------------------------------------ P2-1

const EXPIRE: &str = r#"
[[jobs]]
name = "expire-previews"
kind = "expire_branches"
every = "15m"
ttl = "7d"
[jobs.branches]
names = ["preview/*"]
"#;

/// A child created after the plan's listing, before the deletes: the project's branches are
/// listed again right before its first delete, and the branch is kept. (The policy has an
/// `idle_ttl`, so the plan lists the endpoints after the branches: holding that listing
/// makes the plan's view of the branches stale.)
#[tokio::test]
async fn a_branch_that_got_children_after_planning_is_not_deleted() {
    let e = Arc::new(env().await);
    let (p, _main) = e.sim.add_project("app", None);
    let old = e
        .sim
        .add_branch(
            &p.id,
            "preview/old",
            None,
            e.sim.clock().now() - TimeDelta::days(10),
        )
        .unwrap();
    e.sim
        .faults()
        .inject(FaultRule::on("GET", "/projects/{project_id}/endpoints", Fault::Hold).times(1))
        .unwrap();
    let j = job(&EXPIRE.replace("ttl = \"7d\"", "ttl = \"7d\"\nidle_ttl = \"30d\""));
    let run = {
        let e = e.clone();
        tokio::spawn(async move { e.run(&j).await })
    };
    e.fault_fired("GET").await;
    e.sim
        .add_branch(&p.id, "feature/on-top", Some(&old.id), e.sim.clock().now())
        .unwrap();
    e.sim.faults().release();
    let (r, actions) = run.await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(
        outcomes(&actions, "delete_branch"),
        [ActionOutcome::Skipped]
    );
    assert!(
        actions[0]
            .reason
            .contains("now has children (feature/on-top)"),
        "{}",
        actions[0].reason
    );
    assert!(e.branch_names(&p.id).contains(&"preview/old".to_string()));
    assert!(
        !e.sim.mutations().iter().any(|m| m.method == "DELETE"),
        "no delete was sent"
    );
}

/// Between the fresh listing and a later delete of the same project, Neon's own refusal is
/// the guard: a child created while the project's first delete runs makes Neon refuse the
/// second, which is recorded as failed, and the branch stays.
#[tokio::test]
async fn neon_refuses_a_delete_the_recheck_listing_could_not_see() {
    let e = Arc::new(env().await);
    let (p, _main) = e.sim.add_project("app", None);
    let at = e.sim.clock().now() - TimeDelta::days(10);
    let first = e.sim.add_branch(&p.id, "preview/one", None, at).unwrap();
    let second = e.sim.add_branch(&p.id, "preview/two", None, at).unwrap();
    e.sim
        .faults()
        .inject(
            FaultRule::on(
                "DELETE",
                "/projects/{project_id}/branches/{branch_id}",
                Fault::Hold,
            )
            .times(1),
        )
        .unwrap();
    let j = job(EXPIRE);
    let run = {
        let e = e.clone();
        tokio::spawn(async move { e.run(&j).await })
    };
    e.fault_fired("DELETE").await;
    let held = e.sim.faults().injected()[0].path.clone();
    let later = if held.ends_with(first.id.as_str()) {
        &second
    } else {
        &first
    };
    e.sim
        .add_branch(
            &p.id,
            "feature/on-top",
            Some(&later.id),
            e.sim.clock().now(),
        )
        .unwrap();
    e.sim.faults().release();
    let (r, actions) = run.await.unwrap();
    assert_eq!(r.status, RunStatus::Partial, "{r:?}");
    let failed: Vec<_> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{actions:#?}");
    assert_eq!(failed[0].resource_id, later.id.as_str());
    assert!(
        failed[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("child branches"),
        "Neon's refusal: {:?}",
        failed[0].detail
    );
    assert!(e.branch_names(&p.id).contains(&later.name));
}

/// A replica whose own clock says its lease of the run may have lapsed (here at once: a
/// lease no longer than its heartbeat) sends no mutation: a survivor may already have taken
/// the run over and reconciled the action as not made. The action is recorded failed, "not
/// sent", and Neon sees no call.
#[tokio::test]
async fn no_mutation_is_sent_once_the_lease_may_have_lapsed() {
    let e = env().await;
    let (p, _main) = e.sim.add_project("app", None);
    let at = e.sim.clock().now() - TimeDelta::days(10);
    e.sim.add_branch(&p.id, "preview/old", None, at).unwrap();
    let second = Duration::from_secs(1);
    let control = RunControl {
        clock: Some(Arc::new(SimClock(e.sim.clock()))),
        lease: LeaseWatch::claimed_at(
            tokio::time::Instant::now(),
            LeaseTiming {
                heartbeat: second,
                lease: second,
            },
        ),
        ..Default::default()
    };
    let (r, actions) = e
        .run_with(&job(EXPIRE), e.sim.clock().now(), &control)
        .await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    assert_eq!(outcomes(&actions, "delete_branch"), [ActionOutcome::Failed]);
    let detail = actions[0].detail.as_deref().unwrap_or("");
    assert!(
        detail.contains("not sent") && detail.contains("lease"),
        "{detail}"
    );
    assert!(
        e.sim.mutations().is_empty(),
        "no call reached Neon: {:?}",
        e.sim.mutations()
    );
    assert!(e.branch_names(&p.id).contains(&"preview/old".to_string()));
}

/// A failed child delete: its parent is skipped (not attempted), unrelated branches go on,
/// and the run is `partial`.
#[tokio::test]
async fn ancestors_of_a_failed_delete_are_skipped() {
    let e = env().await;
    let (p, _main) = e.sim.add_project("app", None);
    let now = e.sim.clock().now();
    let parent = e
        .sim
        .add_branch(&p.id, "preview/parent", None, now - TimeDelta::days(10))
        .unwrap();
    let child = e
        .sim
        .add_branch(
            &p.id,
            "preview/child",
            Some(&parent.id),
            now - TimeDelta::days(9),
        )
        .unwrap();
    e.sim
        .add_branch(&p.id, "preview/other", None, now - TimeDelta::days(8))
        .unwrap();
    // Neon refuses the child's delete.
    let mut refuse = FaultRule::prefix(
        &format!("/projects/{}/branches/{}", p.id, child.id),
        Fault::Status {
            status: 400,
            retry_after_secs: None,
        },
    )
    .times(1);
    refuse.method = Some("DELETE".into());
    e.sim.faults().inject(refuse).unwrap();
    e.sim.clear_mutations();
    let (r, actions) = e.run(&job(EXPIRE)).await;
    let by_name = |n: &str| {
        actions
            .iter()
            .find(|a| a.resource_name.as_deref() == Some(n))
            .unwrap_or_else(|| panic!("no action for {n}: {actions:?}"))
    };
    assert_eq!(by_name("preview/child").outcome, ActionOutcome::Failed);
    let skipped = by_name("preview/parent");
    assert_eq!(skipped.outcome, ActionOutcome::Skipped);
    assert!(
        skipped
            .reason
            .contains("its child branch preview/child was not deleted in this run"),
        "{}",
        skipped.reason
    );
    assert_eq!(by_name("preview/other").outcome, ActionOutcome::Succeeded);
    // The parent's delete was never sent; the unrelated branch's was.
    let deletes: Vec<String> = e
        .sim
        .mutations()
        .into_iter()
        .filter(|m| m.method == "DELETE" && m.status < 300)
        .map(|m| m.path)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(!deletes[0].contains(&parent.id), "{deletes:?}");
    assert_eq!(
        e.branch_names(&p.id),
        vec!["main", "preview/child", "preview/parent"]
    );
    assert_eq!(r.status, RunStatus::Partial, "{r:?}");
}

/// The expiry handed to Neon is computed when the call is made: a project locked for half
/// an hour after planning still gets a future `expires_at` (the plan's "now + 10 minutes"
/// has passed by then).
#[tokio::test]
async fn expires_at_is_computed_when_the_call_is_made() {
    // The job's own 423 handling (wait for the project, call again), not the client's.
    let e = env_with(Some(0)).await;
    let (p, _main) = e.sim.add_project("app", None);
    let now = e.sim.clock().now();
    let b = e
        .sim
        .add_branch(&p.id, "preview/x", None, now - TimeDelta::days(10))
        .unwrap();
    let lock_end = {
        let st = e.sim.state();
        let mut s = st.settled();
        s.push_operation(&p.id, None, None, "apply_config");
        let op = s.operations.last_mut().expect("just pushed");
        op.duration = TimeDelta::minutes(30);
        op.created_at + op.duration
    };
    let j = job(&EXPIRE.replace("ttl = \"7d\"", "ttl = \"7d\"\nmode = \"set_expires_at\""));
    let clock = e.sim.clock();
    let driver = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            clock.advance(Duration::from_secs(10));
        }
    });
    let (r, actions) = e.run(&j).await;
    driver.abort();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:?}");
    let set = e.sim.branch(&b.id).unwrap().expires_at.expect("expiry set");
    assert!(set > lock_end, "{set} after the lock ended at {lock_end}");
    let detail = actions[0].detail.clone().unwrap_or_default();
    assert_eq!(detail, format!("expires_at={}", set.to_rfc3339()));
}

// ------------------------------------------------------------------ P1-7

/// Cancelled while an action's call is in flight: the call finishes and is recorded, the
/// rest is not attempted, and the report says what was done.
#[tokio::test]
async fn a_cancelled_run_stops_between_actions_and_reports_what_it_did() {
    let e = env().await;
    let (p, _main) = e.sim.add_project("app", None);
    let now = e.sim.clock().now();
    for n in ["preview/a", "preview/b", "preview/c"] {
        e.sim
            .add_branch(&p.id, n, None, now - TimeDelta::days(10))
            .unwrap();
    }
    e.sim
        .faults()
        .inject(
            FaultRule::on(
                "DELETE",
                "/projects/{project_id}/branches/{branch_id}",
                Fault::Hold,
            )
            .times(1),
        )
        .unwrap();
    let j = job(EXPIRE);
    let exec =
        neon_steward::daemon::JobsExecutor::new(e.env.clone(), Arc::new(SimClock(e.sim.clock())));
    let tick = e.sim.clock().now();
    let run_id = e.claim(&j, tick).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = RunHandle {
        run_id,
        scheduled_for: tick,
        trigger: Trigger::Manual,
        dry_run: false,
        cancel: cancel.clone(),
        lease: Default::default(),
    };
    let jj = j.clone();
    let running = tokio::spawn(async move { exec.execute(jj, handle).await });
    e.fault_fired("DELETE").await;
    cancel.cancel();
    // The delete already sent goes through once the run has been cancelled.
    e.sim.faults().release();
    let report = running.await.unwrap();
    assert_eq!(report.status, RunStatus::Interrupted, "{report:?}");
    assert_eq!(report.counts.succeeded, 1, "{report:?}");
    let actions = e.env.store.actions_for_run(run_id).await.unwrap();
    assert_eq!(
        outcomes(&actions, "delete_branch"),
        [ActionOutcome::Succeeded],
        "the begun action finished and was recorded; nothing else was begun"
    );
    assert_eq!(e.branch_names(&p.id).len(), 3, "main and two previews left");
}
