//! The store contract: every test here is written against `Arc<dyn Store>` and run for each
//! backend by `contract_tests!`, so a new backend proves itself by adding one line.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use neon_steward::store::{
    self, ActionCounts, ActionOutcome, BranchConsumptionSample, ConsumptionSample, NewAction,
    NewRun, RunFilter, RunStatus, Store, StoreError, Trigger,
};

/// A freshly opened, empty store plus what keeps it alive and the URL to reopen it with.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("a temp dir can be created");
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = store::open(&url).await.expect("sqlite store opens");
    Fixture {
        store,
        url,
        _dir: Some(dir),
    }
}

/// A fresh database per test on the PostgreSQL server, dropped by [`drop_pg_database`].
pub async fn postgres_fixture() -> Fixture {
    let url = crate::chaos::fresh_pg_database("steward_test").await;
    let store = store::open(&url).await.expect("postgres store opens");
    Fixture {
        store,
        url,
        _dir: None,
    }
}

pub use crate::chaos::drop_pg_database;

/// Nothing to clean for SQLite: the temp dir goes with the fixture.
pub async fn no_cleanup(_url: &str) {}

fn t(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 30, 1, minute, 0).unwrap()
}

fn new_run(job: &str, at: DateTime<Utc>) -> NewRun {
    NewRun {
        job: job.into(),
        kind: "branch_expiry".into(),
        scheduled_for: at,
        trigger: Trigger::Schedule,
        dry_run: false,
        status: RunStatus::Running,
        error: None,
        plan_id: None,
    }
}

fn new_action(run_id: i64, resource: &str, outcome: ActionOutcome) -> NewAction {
    NewAction {
        run_id,
        job: "expire".into(),
        resource_kind: "branch".into(),
        resource_id: resource.into(),
        resource_name: Some(format!("preview/{resource}")),
        project_id: Some("proj-1".into()),
        action: "delete_branch".into(),
        rule: Some("ttl".into()),
        reason: "age 9d > ttl 7d".into(),
        dry_run: outcome == ActionOutcome::Planned,
        outcome,
    }
}

async fn claim_is_unique(f: Fixture) {
    let s = &f.store;
    let first = s.claim_run(&new_run("a", t(0))).await.unwrap();
    assert!(first.is_some());
    assert_eq!(
        s.claim_run(&new_run("a", t(0))).await.unwrap(),
        None,
        "second claim of the same tick"
    );
    let other_tick = s.claim_run(&new_run("a", t(1))).await.unwrap();
    let other_job = s.claim_run(&new_run("b", t(0))).await.unwrap();
    assert!(other_tick.is_some() && other_job.is_some());
    assert_ne!(other_tick, first);
    let run = s
        .get_run(first.unwrap())
        .await
        .unwrap()
        .expect("claimed run exists");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.scheduled_for, t(0));
    assert_eq!(run.trigger, Trigger::Schedule);
    assert_eq!(run.finished_at, None);
    assert_eq!(run.kind, "branch_expiry");
}

async fn concurrent_claims_have_one_winner(f: Fixture) {
    // Two handles on the same database, as two daemon replicas (or processes) would have.
    let second = store::open(&f.url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 {
            f.store.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.claim_run(&new_run("race", t(5))).await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let runs = f
        .store
        .list_runs(&RunFilter {
            job: Some("race".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
}

async fn skipped_tick_is_recorded_finished(f: Fixture) {
    let mut run = new_run("a", t(0));
    run.status = RunStatus::Skipped;
    run.error = Some("previous run still running (forbid)".into());
    let id = f.store.claim_run(&run).await.unwrap().unwrap();
    let rec = f.store.get_run(id).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Skipped);
    assert!(rec.finished_at.is_some());
    assert_eq!(
        rec.error.as_deref(),
        Some("previous run still running (forbid)")
    );
}

async fn finish_run_records_outcome(f: Fixture) {
    let s = &f.store;
    let id = s.claim_run(&new_run("a", t(0))).await.unwrap().unwrap();
    let counts = ActionCounts {
        succeeded: 3,
        failed: 1,
        skipped: 2,
        planned: 0,
    };
    s.finish_run(
        id,
        RunStatus::Partial,
        counts,
        Some("1 of 4 deletions failed"),
    )
    .await
    .unwrap();
    let rec = s.get_run(id).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Partial);
    assert_eq!(rec.counts, counts);
    assert_eq!(rec.error.as_deref(), Some("1 of 4 deletions failed"));
    let finished = rec.finished_at.expect("finished run has an end");
    assert!(finished >= rec.started_at);
    assert!(matches!(
        s.finish_run(id + 1000, RunStatus::Succeeded, counts, None)
            .await,
        Err(StoreError::NotFound { what: "run", .. })
    ));
    assert!(s.get_run(id + 1000).await.unwrap().is_none());
}

/// A handle on the fixture's database as replica `name` with lease `lease`.
async fn replica(f: &Fixture, name: &str, lease: std::time::Duration) -> Arc<dyn Store> {
    store::open_with(
        &f.url,
        store::StoreOptions {
            replica: store::ReplicaId::named(name),
            lease,
        },
    )
    .await
    .unwrap()
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
const ONE_MS: std::time::Duration = std::time::Duration::from_millis(1);

/// Lets a lease of [`ONE_MS`] expire by the store's clock (a lower bound on time only).
async fn outlive_short_lease() {
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
}

async fn a_live_lease_is_never_taken_over_and_fences_others(f: Fixture) {
    let a = replica(&f, "host-a:1:aa", HOUR).await;
    let b = replica(&f, "host-b:2:bb", HOUR).await;
    let run = a.claim_run(&new_run("j", t(0))).await.unwrap().unwrap();
    let rec = a.get_run(run).await.unwrap().unwrap();
    assert_eq!(rec.owner.as_deref(), Some("host-a:1:aa"));
    assert!(rec.lease_expires_at.is_some());
    // Another replica starting (or looking for dead runs) leaves it alone...
    assert!(b.take_over_expired().await.unwrap().is_empty());
    assert_eq!(
        b.get_run(run).await.unwrap().unwrap().status,
        RunStatus::Running
    );
    // ...and cannot write for it: not its actions, its state, its end, nor its lease.
    let e = b
        .begin_action(&new_action(run, "br-1", ActionOutcome::Pending))
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(e.to_string().contains("held by host-a:1:aa"), "{e}");
    let e = b.put_state(run, "j", "k", None, "{}").await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
    let e = b
        .finish_run(run, RunStatus::Succeeded, ActionCounts::default(), None)
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(matches!(
        b.renew_lease(run).await.unwrap(),
        store::Lease::Lost { .. }
    ));
    // The owner can.
    assert!(matches!(
        a.renew_lease(run).await.unwrap(),
        store::Lease::Held {
            cancel_requested: false,
            ..
        }
    ));
    a.begin_action(&new_action(run, "br-1", ActionOutcome::Pending))
        .await
        .unwrap();
    a.finish_run(run, RunStatus::Succeeded, ActionCounts::default(), None)
        .await
        .unwrap();
    assert_eq!(
        a.get_run(run).await.unwrap().unwrap().lease_expires_at,
        None,
        "a finished run holds no lease"
    );
}

async fn an_expired_lease_is_taken_over_and_its_pending_actions_reconciled(f: Fixture) {
    let a = replica(&f, "host-a:1:aa", HOUR).await;
    // Replica c claims a run and begins an action (with a long lease), then stops renewing:
    // its last renewal gives a lease of one millisecond, as a dying replica's would end.
    let c = replica(&f, "host-c:3:cc", HOUR).await;
    let run = c.claim_run(&new_run("j", t(0))).await.unwrap().unwrap();
    let pending = c
        .begin_action(&new_action(run, "br-1", ActionOutcome::Pending))
        .await
        .unwrap();
    let c_short = replica(&f, "host-c:3:cc", ONE_MS).await;
    assert!(matches!(
        c_short.renew_lease(run).await.unwrap(),
        store::Lease::Held { .. }
    ));
    outlive_short_lease().await;
    assert!(
        a.unresolved_actions(10).await.unwrap().is_empty(),
        "the run still counts as running"
    );

    let taken = a.take_over_expired().await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].id, run);
    let rec = a.get_run(run).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Interrupted);
    assert!(rec.finished_at.is_some());
    let why = rec.error.unwrap();
    assert!(
        why.contains("lease of host-c:3:cc expired") && why.contains("taken over by host-a:1:aa"),
        "{why}"
    );
    assert!(a.take_over_expired().await.unwrap().is_empty(), "once");

    // The stalled owner, resumed, can neither act nor overwrite the takeover.
    let e = c
        .begin_action(&new_action(run, "br-2", ActionOutcome::Pending))
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    let e = c
        .finish_action(pending, ActionOutcome::Succeeded, None)
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    let e = c
        .finish_run(run, RunStatus::Succeeded, ActionCounts::default(), None)
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert_eq!(
        a.get_run(run).await.unwrap().unwrap().status,
        RunStatus::Interrupted
    );

    // Its pending action is now for reconciliation, and resolved once.
    let open = a.unresolved_actions(10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, pending);
    a.reconcile_action(pending, ActionOutcome::Succeeded, "found at Neon")
        .await
        .unwrap();
    a.reconcile_action(pending, ActionOutcome::Failed, "again")
        .await
        .unwrap();
    let actions = a.actions_for_run(run).await.unwrap();
    assert_eq!(actions[0].outcome, ActionOutcome::Succeeded);
    assert_eq!(actions[0].detail.as_deref(), Some("found at Neon"));
    assert!(actions[0].reconciled_at.is_some());
    assert!(a.unresolved_actions(10).await.unwrap().is_empty());
}

async fn forbid_and_replace_hold_across_replicas(f: Fixture) {
    let a = replica(&f, "host-a:1:aa", HOUR).await;
    let b = replica(&f, "host-b:2:bb", HOUR).await;
    let first = match a.claim_exclusive(&new_run("j", t(0))).await.unwrap() {
        store::Claim::Claimed(id) => id,
        other => panic!("{other:?}"),
    };
    match b.claim_exclusive(&new_run("j", t(1))).await.unwrap() {
        store::Claim::Busy(r) => {
            assert_eq!(r.id, first);
            assert_eq!(r.owner.as_deref(), Some("host-a:1:aa"));
        }
        other => panic!("{other:?}"),
    }
    // Another job is not affected; the same tick is taken.
    assert!(matches!(
        b.claim_exclusive(&new_run("other", t(1))).await.unwrap(),
        store::Claim::Claimed(_)
    ));
    assert!(matches!(
        b.claim_exclusive(&new_run("j", t(0))).await.unwrap(),
        store::Claim::Busy(_) | store::Claim::TickTaken
    ));
    // `replace`: b's newer run asks a's to stop; a's heartbeat sees it.
    let newer = b.claim_run(&new_run("j", t(2))).await.unwrap().unwrap();
    assert_eq!(b.request_cancel("j", newer).await.unwrap(), 1);
    assert!(matches!(
        a.renew_lease(first).await.unwrap(),
        store::Lease::Held {
            cancel_requested: true,
            ..
        }
    ));
    assert!(matches!(
        b.renew_lease(newer).await.unwrap(),
        store::Lease::Held {
            cancel_requested: false,
            ..
        }
    ));
    a.finish_run(first, RunStatus::Interrupted, ActionCounts::default(), None)
        .await
        .unwrap();
    b.finish_run(newer, RunStatus::Succeeded, ActionCounts::default(), None)
        .await
        .unwrap();
    assert!(matches!(
        a.claim_exclusive(&new_run("j", t(3))).await.unwrap(),
        store::Claim::Claimed(_)
    ));
}

/// Replicas racing to claim different ticks of a `forbid` job: exactly one wins.
async fn concurrent_exclusive_claims_have_one_winner(f: Fixture) {
    let mut handles = Vec::new();
    for i in 0..6u32 {
        handles.push(replica(&f, &format!("host-{i}:{i}:00"), HOUR).await);
    }
    let tasks: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(async move { s.claim_exclusive(&new_run("j", t(i as u32))).await })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        if let store::Claim::Claimed(_) = task.await.unwrap().unwrap() {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 1);
}

async fn list_runs_pages_and_filters(f: Fixture) {
    let s = &f.store;
    let mut a_ids = Vec::new();
    for m in 0..5 {
        a_ids.push(s.claim_run(&new_run("a", t(m))).await.unwrap().unwrap());
        s.claim_run(&new_run("b", t(m))).await.unwrap().unwrap();
    }
    let all = s.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .list_runs(&RunFilter {
                job: Some("a".into()),
                limit: 2,
                before,
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        assert!(page.iter().all(|r| r.job == "a"));
        before = Some(page.last().unwrap().id);
        seen.extend(page.into_iter().map(|r| r.id));
    }
    a_ids.reverse();
    assert_eq!(
        seen, a_ids,
        "paging backwards visits every run of the job once, newest first"
    );

    let none = s
        .list_runs(&RunFilter {
            job: Some("nope".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn last_scheduled_and_last_success(f: Fixture) {
    let s = &f.store;
    assert!(s.last_scheduled_run("a").await.unwrap().is_none());
    assert!(s.last_success("a").await.unwrap().is_none());
    let ok = s.claim_run(&new_run("a", t(0))).await.unwrap().unwrap();
    s.finish_run(ok, RunStatus::Succeeded, ActionCounts::default(), None)
        .await
        .unwrap();
    let failed = s.claim_run(&new_run("a", t(10))).await.unwrap().unwrap();
    s.finish_run(
        failed,
        RunStatus::Failed,
        ActionCounts::default(),
        Some("boom"),
    )
    .await
    .unwrap();
    let mut manual = new_run("a", t(20));
    manual.trigger = Trigger::Manual;
    s.claim_run(&manual).await.unwrap().unwrap();

    let last = s.last_scheduled_run("a").await.unwrap().unwrap();
    assert_eq!(last.id, failed, "manual runs are not schedule ticks");
    assert_eq!(s.last_success("a").await.unwrap().unwrap().id, ok);
    assert!(s.last_success("b").await.unwrap().is_none());
}

async fn actions_before_and_after(f: Fixture) {
    let s = &f.store;
    let run = s
        .claim_run(&new_run("expire", t(0)))
        .await
        .unwrap()
        .unwrap();
    let other = s
        .claim_run(&new_run("expire", t(1)))
        .await
        .unwrap()
        .unwrap();
    let pending = s
        .begin_action(&new_action(run, "br-1", ActionOutcome::Pending))
        .await
        .unwrap();
    let planned = s
        .begin_action(&new_action(run, "br-2", ActionOutcome::Planned))
        .await
        .unwrap();
    s.begin_action(&new_action(other, "br-3", ActionOutcome::Skipped))
        .await
        .unwrap();

    let before = s.actions_for_run(run).await.unwrap();
    assert_eq!(before.len(), 2);
    assert_eq!(before[0].id, pending);
    assert_eq!(before[0].outcome, ActionOutcome::Pending);
    assert_eq!(
        before[0].finished_at, None,
        "written before it is attempted"
    );
    assert_eq!(before[0].resource_name.as_deref(), Some("preview/br-1"));
    assert_eq!(before[0].rule.as_deref(), Some("ttl"));
    assert_eq!(before[1].id, planned);
    assert_eq!(before[1].outcome, ActionOutcome::Planned);
    assert!(before[1].dry_run);
    assert!(
        before[1].finished_at.is_some(),
        "a planned action is over when written"
    );

    s.finish_action(
        pending,
        ActionOutcome::Failed,
        Some("409 branch is protected"),
    )
    .await
    .unwrap();
    let after = s.actions_for_run(run).await.unwrap();
    assert_eq!(after[0].outcome, ActionOutcome::Failed);
    assert_eq!(after[0].detail.as_deref(), Some("409 branch is protected"));
    assert!(after[0].finished_at.unwrap() >= after[0].created_at);
    assert!(matches!(
        s.finish_action(pending + 1000, ActionOutcome::Succeeded, None)
            .await,
        Err(StoreError::NotFound { what: "action", .. })
    ));
    assert_eq!(s.actions_for_run(other).await.unwrap().len(), 1);
}

async fn job_state_is_compare_and_set(f: Fixture) {
    let s = &f.store;
    let r = s
        .claim_run(&new_run("collect", t(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.get_state("collect", "cursor").await.unwrap(), None);
    // Created once: a second creator (who also read "absent") is refused.
    assert_eq!(
        s.put_state(r, "collect", "cursor", None, "a")
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        s.put_state(r, "collect", "cursor", None, "b")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.put_state(r, "other", "cursor", None, "x").await.unwrap(),
        Some(1)
    );
    // A write names the version it read; a stale one writes nothing.
    assert_eq!(
        s.put_state(r, "collect", "cursor", Some(1), "c")
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        s.put_state(r, "collect", "cursor", Some(1), "d")
            .await
            .unwrap(),
        None
    );
    let got = s.get_state("collect", "cursor").await.unwrap().unwrap();
    assert_eq!((got.value.as_str(), got.version), ("c", 2));
    let got = s.get_state("other", "cursor").await.unwrap().unwrap();
    assert_eq!((got.value.as_str(), got.version), ("x", 1));
    // Only while the run holds its lease.
    s.finish_run(r, RunStatus::Succeeded, ActionCounts::default(), None)
        .await
        .unwrap();
    let e = s
        .put_state(r, "collect", "cursor", Some(2), "e")
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
}

/// Several writers updating one record at once through the typed layer: every update
/// lands (a conflicting write is re-applied to the newer record, never lost).
async fn concurrent_state_updates_lose_nothing(f: Fixture) {
    use neon_steward::jobs::state::Recorded;
    const WRITERS: u32 = 4;
    const EACH: u32 = 5;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = f.store.clone();
            tokio::spawn(async move {
                let run = store.claim_run(&new_run("j", t(w))).await.unwrap().unwrap();
                for i in 0..EACH {
                    let mut r = Recorded::<Vec<u32>>::load(store.as_ref(), run, "j", "k")
                        .await
                        .unwrap();
                    r.update(store.as_ref(), |v| v.push(w * 100 + i))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let r = Recorded::<Vec<u32>>::load(f.store.as_ref(), 0, "j", "k")
        .await
        .unwrap();
    let mut got = r.get().clone();
    got.sort_unstable();
    let mut want: Vec<u32> = (0..WRITERS)
        .flat_map(|w| (0..EACH).map(move |i| w * 100 + i))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let stored = f.store.get_state("j", "k").await.unwrap().unwrap();
    assert_eq!(stored.version, i64::from(WRITERS * EACH));
}

fn sample(project: &str, start: DateTime<Utc>, value: f64) -> ConsumptionSample {
    ConsumptionSample {
        project_id: project.into(),
        metric: "compute_time_seconds".into(),
        granularity: "hourly".into(),
        timeframe_start: start,
        timeframe_end: start + Duration::hours(1),
        value,
    }
}

async fn consumption_upsert_is_idempotent(f: Fixture) {
    let s = &f.store;
    let h0 = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    let h1 = h0 + Duration::hours(1);
    assert_eq!(s.upsert_consumption(&[]).await.unwrap(), 0);
    assert_eq!(s.latest_consumption_end("hourly").await.unwrap(), None);
    assert_eq!(
        s.upsert_consumption(&[sample("p1", h0, 10.0), sample("p2", h0, 5.0)])
            .await
            .unwrap(),
        2
    );
    // The same period again (an overlapping collection window) with a corrected value.
    s.upsert_consumption(&[sample("p1", h0, 12.5), sample("p1", h1, 1.0)])
        .await
        .unwrap();

    let rows = s.list_consumption("hourly", h0).await.unwrap();
    assert_eq!(
        rows,
        vec![
            sample("p1", h0, 12.5),
            sample("p2", h0, 5.0),
            sample("p1", h1, 1.0)
        ]
    );
    assert_eq!(
        s.list_consumption("hourly", h1).await.unwrap(),
        vec![sample("p1", h1, 1.0)]
    );
    assert!(s.list_consumption("daily", h0).await.unwrap().is_empty());
    assert_eq!(
        s.latest_consumption_end("hourly").await.unwrap(),
        Some(h1 + Duration::hours(1))
    );
    assert_eq!(s.latest_consumption_end("daily").await.unwrap(), None);
}

fn branch_sample(
    project: &str,
    branch: &str,
    start: DateTime<Utc>,
    value: f64,
) -> BranchConsumptionSample {
    BranchConsumptionSample {
        project_id: project.into(),
        branch_id: branch.into(),
        metric: "compute_unit_seconds".into(),
        granularity: "hourly".into(),
        timeframe_start: start,
        timeframe_end: start + Duration::hours(1),
        value,
    }
}

async fn branch_consumption_is_kept_apart_and_upserted(f: Fixture) {
    let s = &f.store;
    let h0 = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    let h1 = h0 + Duration::hours(1);
    assert_eq!(s.upsert_branch_consumption(&[]).await.unwrap(), 0);
    assert_eq!(
        s.latest_branch_consumption_end("hourly").await.unwrap(),
        None
    );
    assert_eq!(
        s.upsert_branch_consumption(&[
            branch_sample("p1", "br-b", h0, 3.0),
            branch_sample("p1", "br-a", h0, 2.0),
        ])
        .await
        .unwrap(),
        2
    );
    // Re-collected with a corrected value, and a later hour.
    s.upsert_branch_consumption(&[
        branch_sample("p1", "br-a", h0, 2.5),
        branch_sample("p1", "br-a", h1, 1.0),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.list_branch_consumption("hourly", h0).await.unwrap(),
        vec![
            branch_sample("p1", "br-a", h0, 2.5),
            branch_sample("p1", "br-b", h0, 3.0),
            branch_sample("p1", "br-a", h1, 1.0),
        ]
    );
    assert!(s
        .list_branch_consumption("daily", h0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.latest_branch_consumption_end("hourly").await.unwrap(),
        Some(h1 + Duration::hours(1))
    );
    // Never mixed with the project samples.
    assert!(s.list_consumption("hourly", h0).await.unwrap().is_empty());
    assert_eq!(s.latest_consumption_end("hourly").await.unwrap(), None);
}

async fn prune_removes_what_is_older_than_the_retentions(f: Fixture) {
    let s = &f.store;
    let old = s.claim_run(&new_run("a", t(0))).await.unwrap().unwrap();
    s.begin_action(&new_action(old, "br-1", ActionOutcome::Planned))
        .await
        .unwrap();
    // Its end reports two notifications: one delivered, one still pending.
    s.finish_run_notifying(
        old,
        RunStatus::Succeeded,
        ActionCounts::default(),
        None,
        &[note("msg_done", 3_600_000), note("msg_waiting", 3_600_000)],
    )
    .await
    .unwrap();
    let claimed = s.claim_notifications(1, 3_600_000).await.unwrap();
    let delivered = claimed[0].id.clone();
    s.settle_notification(&delivered, &store::Delivery::Delivered)
        .await
        .unwrap();
    let running = s.claim_run(&new_run("a", t(1))).await.unwrap().unwrap();
    // Samples of two days: hourly and daily, per project and per branch.
    let d0 = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    let d1 = d0 + Duration::days(1);
    let daily = |start| ConsumptionSample {
        granularity: "daily".into(),
        timeframe_end: start + Duration::days(1),
        ..sample("p1", start, 1.0)
    };
    s.upsert_consumption(&[
        sample("p1", d0, 1.0),
        sample("p1", d1, 2.0),
        daily(d0),
        daily(d1),
    ])
    .await
    .unwrap();
    s.upsert_branch_consumption(&[
        branch_sample("p1", "br-a", d0, 1.0),
        branch_sample("p1", "br-a", d1, 1.0),
    ])
    .await
    .unwrap();

    let at = |history, consumption| store::PruneBefore {
        history,
        consumption,
    };
    assert_eq!(
        s.prune(&at(Utc::now() - Duration::hours(1), d0))
            .await
            .unwrap(),
        store::Pruned::default(),
        "nothing is that old"
    );
    // The first day's samples: the hourly and daily ones that ended by the cutoff (the
    // daily one of d0 ends at d1, so it stays until a cutoff past d1).
    let got = s
        .prune(&at(Utc::now() - Duration::hours(1), d1))
        .await
        .unwrap();
    assert_eq!(got.samples, 2, "{got:?}");
    assert_eq!(
        s.list_consumption("hourly", d0).await.unwrap(),
        vec![sample("p1", d1, 2.0)]
    );
    assert_eq!(
        s.list_consumption("daily", d0).await.unwrap(),
        vec![daily(d0), daily(d1)]
    );
    assert_eq!(
        s.list_branch_consumption("hourly", d0).await.unwrap(),
        vec![branch_sample("p1", "br-a", d1, 1.0)]
    );

    let got = s
        .prune(&at(Utc::now() + Duration::seconds(5), d0))
        .await
        .unwrap();
    assert_eq!(
        got,
        store::Pruned {
            runs: 1,
            notifications: 1,
            samples: 0
        }
    );
    assert!(s.get_run(old).await.unwrap().is_none());
    assert!(
        s.actions_for_run(old).await.unwrap().is_empty(),
        "actions go with their run"
    );
    assert!(
        s.get_run(running).await.unwrap().is_some(),
        "running runs are never pruned"
    );
    let left: Vec<String> = s
        .list_notifications(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(left.len(), 1, "the pending notification stays: {left:?}");
    assert_ne!(left[0], delivered);

    // More than one batch (of 2,000 rows) is pruned whole.
    let many: Vec<ConsumptionSample> = (0..2_500)
        .map(|i| sample(&format!("p{i}"), d0 - Duration::days(10), 1.0))
        .collect();
    s.upsert_consumption(&many).await.unwrap();
    let got = s
        .prune(&at(Utc::now() - Duration::hours(1), d0))
        .await
        .unwrap();
    assert_eq!(got.samples, 2_500, "{got:?}");
    assert_eq!(
        s.list_consumption("hourly", d0 - Duration::days(11))
            .await
            .unwrap()
            .len(),
        1,
        "only the sample of d1 is left"
    );
}

async fn ping_and_migrate_again(f: Fixture) {
    f.store.ping().await.unwrap();
    f.store.migrate().await.unwrap();
    f.store.ping().await.unwrap();
}

async fn batch_of_actions_is_one_write_all_or_none(f: Fixture) {
    let s = &f.store;
    let run = s
        .claim_run(&new_run("expire", t(0)))
        .await
        .unwrap()
        .unwrap();
    assert!(s.begin_actions(&[]).await.unwrap().is_empty());

    // A large batch keeps its order and every field; final outcomes are finished when
    // written, a pending one stays open.
    let mut batch: Vec<NewAction> = (0..300)
        .map(|i| {
            let outcome = if i % 3 == 0 {
                ActionOutcome::Skipped
            } else {
                ActionOutcome::Planned
            };
            new_action(run, &format!("br-{i:03}"), outcome)
        })
        .collect();
    batch.push(new_action(run, "br-pending", ActionOutcome::Pending));
    let ids = s.begin_actions(&batch).await.unwrap();
    assert_eq!(ids.len(), batch.len());
    let stored = s.actions_for_run(run).await.unwrap();
    assert_eq!(stored.len(), batch.len());
    for ((row, id), sent) in stored.iter().zip(&ids).zip(&batch) {
        assert_eq!(row.id, *id, "ids come back in the batch's order");
        assert_eq!(row.resource_id, sent.resource_id);
        assert_eq!(row.resource_name, sent.resource_name);
        assert_eq!(row.outcome, sent.outcome);
        assert_eq!(row.dry_run, sent.dry_run);
        assert_eq!(row.reason, sent.reason);
        assert_eq!(
            row.finished_at.is_some(),
            sent.outcome != ActionOutcome::Pending,
            "{}: only a pending action is open",
            row.resource_id
        );
    }
    let pending = *ids.last().unwrap();
    s.finish_action(pending, ActionOutcome::Succeeded, None)
        .await
        .unwrap();

    // A row that cannot be written (its run does not exist) fails the whole batch: none of
    // the rows before it is left behind.
    let bad = vec![
        new_action(run, "br-ok-1", ActionOutcome::Planned),
        new_action(run, "br-ok-2", ActionOutcome::Skipped),
        new_action(run + 10_000, "br-no-run", ActionOutcome::Planned),
    ];
    assert!(s.begin_actions(&bad).await.is_err());
    assert_eq!(s.actions_for_run(run).await.unwrap().len(), batch.len());
    assert!(s.actions_for_run(run + 10_000).await.unwrap().is_empty());

    // Single writes after a batch go on as before.
    let next = s
        .begin_action(&new_action(run, "br-after", ActionOutcome::Pending))
        .await
        .unwrap();
    assert!(ids.iter().all(|id| *id < next));
}

fn note(id: &str, give_up_after_ms: i64) -> store::NewNotification {
    store::NewNotification {
        id: id.into(),
        sink: "ops".into(),
        event: "run_failed".into(),
        job: Some("a".into()),
        run_id: None,
        payload: "{\"summary\":\"x\"}".into(),
        give_up_after_ms,
    }
}

/// The outbox row is written with the run's end or not at all; an id is written once; a
/// due row is claimed by one replica at a time, settled only by its holder, retried and
/// finally given up by the store's clock.
async fn outbox_is_written_with_its_fact_and_claimed_by_one_replica(f: Fixture) {
    let a = replica(&f, "a", HOUR).await;
    let b = replica(&f, "b", HOUR).await;
    let run = a.claim_run(&new_run("a", t(0))).await.unwrap().unwrap();
    // Fenced (b does not hold the run): neither the run's end nor its notification.
    let e = b
        .finish_run_notifying(
            run,
            RunStatus::Failed,
            ActionCounts::default(),
            None,
            &[note("msg_1", 3_600_000)],
        )
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(a
        .list_notifications(&Default::default())
        .await
        .unwrap()
        .is_empty());
    a.finish_run_notifying(
        run,
        RunStatus::Failed,
        ActionCounts::default(),
        Some("boom"),
        &[
            note("msg_1", 3_600_000),
            note("msg_1", 3_600_000),
            note("msg_2", 0),
        ],
    )
    .await
    .unwrap();
    let rows = a.list_notifications(&Default::default()).await.unwrap();
    assert_eq!(rows.len(), 2, "an id is written once: {rows:?}");
    // Claimed by one replica at a time, even when both ask at once.
    let (ca, cb) = tokio::join!(
        a.claim_notifications(10, 3_600_000),
        b.claim_notifications(10, 3_600_000)
    );
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.len() + cb.len(), 2, "{ca:?} {cb:?}");
    let mut ids: Vec<&str> = ca.iter().chain(&cb).map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["msg_1", "msg_2"]);
    assert!(
        a.claim_notifications(10, 3_600_000)
            .await
            .unwrap()
            .is_empty(),
        "held by a live lease"
    );
    let (holder_of_1, other) = if ca.iter().any(|r| r.id == "msg_1") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // Only the holder settles.
    assert_eq!(
        other
            .settle_notification("msg_1", &store::Delivery::Delivered)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        holder_of_1
            .settle_notification("msg_1", &store::Delivery::Delivered)
            .await
            .unwrap(),
        Some(store::NotificationStatus::Delivered)
    );
    // msg_2 may take 0 ms: a failed attempt gives it up.
    let holder_of_2 = if ca.iter().any(|r| r.id == "msg_2") {
        &a
    } else {
        &b
    };
    let gave_up = holder_of_2
        .settle_notification(
            "msg_2",
            &store::Delivery::Retry {
                after_ms: 1,
                error: "HTTP 500".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(gave_up, Some(store::NotificationStatus::Failed));
    let rows = a.list_notifications(&Default::default()).await.unwrap();
    let r2 = rows.iter().find(|r| r.id == "msg_2").unwrap();
    assert_eq!(
        (r2.status, r2.attempts, r2.last_error.as_deref()),
        (store::NotificationStatus::Failed, 1, Some("HTTP 500"))
    );
    assert!(r2.finished_at.is_some());
    let r1 = rows.iter().find(|r| r.id == "msg_1").unwrap();
    assert_eq!(r1.status, store::NotificationStatus::Delivered);
}

/// A claim whose holder died (its lease expired) is claimed again, with the same id; a row
/// retried later is not due before its time.
async fn an_outbox_claim_whose_holder_died_is_taken_again(f: Fixture) {
    let a = replica(&f, "a", HOUR).await;
    let b = replica(&f, "b", HOUR).await;
    let run = a.claim_run(&new_run("a", t(0))).await.unwrap().unwrap();
    a.finish_run_notifying(
        run,
        RunStatus::Partial,
        ActionCounts::default(),
        None,
        &[note("msg_x", 86_400_000)],
    )
    .await
    .unwrap();
    assert_eq!(a.claim_notifications(10, 1).await.unwrap().len(), 1);
    outlive_short_lease().await;
    let again = b.claim_notifications(10, 3_600_000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id.as_str(), again[0].attempts), ("msg_x", 2));
    // The dead holder's late answer is not taken.
    assert_eq!(
        a.settle_notification("msg_x", &store::Delivery::Delivered)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        b.settle_notification(
            "msg_x",
            &store::Delivery::Retry {
                after_ms: 3_600_000,
                error: "down".into()
            }
        )
        .await
        .unwrap(),
        Some(store::NotificationStatus::Pending)
    );
    assert!(
        b.claim_notifications(10, 3_600_000)
            .await
            .unwrap()
            .is_empty(),
        "not due for an hour"
    );
}

fn mark(resource: &str, due: DateTime<Utc>) -> store::NoticeMark {
    store::NoticeMark {
        job: "expire".into(),
        project_id: "proj-1".into(),
        resource_kind: "branch".into(),
        resource_id: resource.into(),
        resource_name: Some(format!("preview/{resource}")),
        action: "delete_branch".into(),
        rule: Some("ttl".into()),
        reason: "age 9d > ttl 7d".into(),
        marked_at: t(0),
        due_at: due,
        run_id: None,
    }
}

/// Notice marks: added once (a second mark keeps the first time), dropped, fenced by the
/// run's lease, and written with their notifications in one transaction.
async fn notice_marks_and_keeps(f: Fixture) {
    let a = replica(&f, "a", HOUR).await;
    let b = replica(&f, "b", HOUR).await;
    let run = a
        .claim_run(&new_run("expire", t(0)))
        .await
        .unwrap()
        .unwrap();
    let e = b
        .write_notices(
            run,
            "expire",
            &[mark("br-1", t(10))],
            &[],
            &[note("msg_n", 3_600_000)],
        )
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(a.notice_marks("expire").await.unwrap().is_empty());
    assert!(
        a.list_notifications(&Default::default())
            .await
            .unwrap()
            .is_empty(),
        "nothing without its mark"
    );
    a.write_notices(
        run,
        "expire",
        &[mark("br-1", t(10)), mark("br-2", t(10))],
        &[],
        &[note("msg_n", 3_600_000)],
    )
    .await
    .unwrap();
    a.write_notices(run, "expire", &[mark("br-1", t(30))], &[], &[])
        .await
        .unwrap();
    let marks = a.notice_marks("expire").await.unwrap();
    assert_eq!(marks.len(), 2);
    assert_eq!(marks[0].due_at, t(10), "the first notice stands");
    assert_eq!(
        a.list_notifications(&Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
    a.write_notices(run, "expire", &[], &[marks[0].key()], &[])
        .await
        .unwrap();
    let left: Vec<String> = a
        .notice_marks("expire")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.resource_id)
        .collect();
    assert_eq!(left, ["br-2"]);
    assert!(a.notice_marks("other-job").await.unwrap().is_empty());

    // Keeps: upsert, list, remove.
    let keep = store::Keep {
        project: "proj-1".into(),
        branch: "preview/br-2".into(),
        until: Some(t(50)),
        note: Some("demo".into()),
        created_at: t(0),
    };
    a.put_keep(&keep).await.unwrap();
    a.put_keep(&store::Keep {
        note: Some("demo, longer".into()),
        until: None,
        ..keep.clone()
    })
    .await
    .unwrap();
    let keeps = b.list_keeps().await.unwrap();
    assert_eq!(keeps.len(), 1);
    assert_eq!(
        (keeps[0].note.as_deref(), keeps[0].until),
        (Some("demo, longer"), None)
    );
    assert!(b.remove_keep("proj-1", "preview/br-2").await.unwrap());
    assert!(!b.remove_keep("proj-1", "preview/br-2").await.unwrap());
    assert!(a.list_keeps().await.unwrap().is_empty());
}

/// An `apply` run keeps its trigger and plan id, and is no schedule tick.
async fn an_apply_run_records_its_plan(f: Fixture) {
    let s = &f.store;
    let scheduled = s.claim_run(&new_run("a", t(0))).await.unwrap().unwrap();
    let mut apply = new_run("a", t(5));
    apply.trigger = Trigger::Apply;
    apply.plan_id = Some("5b3f0c1e-plan".into());
    let id = s.claim_run(&apply).await.unwrap().unwrap();
    let run = s.get_run(id).await.unwrap().unwrap();
    assert_eq!(run.trigger, Trigger::Apply);
    assert_eq!(run.plan_id.as_deref(), Some("5b3f0c1e-plan"));
    let listed = s
        .list_runs(&RunFilter {
            job: Some("a".into()),
            limit: 10,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(listed[0].plan_id.as_deref(), Some("5b3f0c1e-plan"));
    assert_eq!(listed[1].plan_id, None);
    assert_eq!(
        s.last_scheduled_run("a").await.unwrap().unwrap().id,
        scheduled,
        "apply runs are not schedule ticks"
    );
}

macro_rules! contract_tests {
    ($backend:ident, $fixture:path, $cleanup:path) => {
        mod $backend {
            contract_tests!(@each $fixture, $cleanup;
                claim_is_unique,
                concurrent_claims_have_one_winner,
                skipped_tick_is_recorded_finished,
                finish_run_records_outcome,
                a_live_lease_is_never_taken_over_and_fences_others,
                an_expired_lease_is_taken_over_and_its_pending_actions_reconciled,
                forbid_and_replace_hold_across_replicas,
                concurrent_exclusive_claims_have_one_winner,
                list_runs_pages_and_filters,
                last_scheduled_and_last_success,
                actions_before_and_after,
                batch_of_actions_is_one_write_all_or_none,
                job_state_is_compare_and_set,
                concurrent_state_updates_lose_nothing,
                consumption_upsert_is_idempotent,
                branch_consumption_is_kept_apart_and_upserted,
                prune_removes_what_is_older_than_the_retentions,
                ping_and_migrate_again,
                outbox_is_written_with_its_fact_and_claimed_by_one_replica,
                an_outbox_claim_whose_holder_died_is_taken_again,
                notice_marks_and_keeps,
                an_apply_run_records_its_plan,
            );
        }
    };
    (@each $fixture:path, $cleanup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture().await;
                let url = fixture.url.clone();
                super::$name(fixture).await;
                $cleanup(&url).await;
            }
        )*
    };
}

contract_tests!(sqlite, super::sqlite_fixture, super::no_cleanup);
contract_tests!(postgres, super::postgres_fixture, super::drop_pg_database);

#[tokio::test]
async fn sqlite_file_is_created_with_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    assert!(!path.exists());
    let s = store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    s.ping().await.unwrap();
    assert!(path.exists());
}

/// Replicas (and a CLI command) starting at once on a store that does not exist yet: each
/// opens it, and the migrations are applied once (they used to race: "duplicate column
/// name" from the second to run an `ALTER TABLE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_opening_a_fresh_sqlite_store_at_once_all_start() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/fresh.db", dir.path().display());
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { store::open(&url).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            let opened = open.await.unwrap();
            assert!(opened.is_ok(), "round {round}: {:?}", opened.err());
        }
    }
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let s = store::open("sqlite::memory:").await.unwrap();
    let id = s.claim_run(&new_run("a", t(0))).await.unwrap().unwrap();
    assert!(s.get_run(id).await.unwrap().is_some());
}

#[tokio::test]
async fn bad_store_urls_say_what_is_wrong() {
    // Port 1 on loopback: nothing listens there. The password must not leak into the error.
    let err = store::open("postgres://u:hunter2@127.0.0.1:1/db")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot open postgres database \"db\" on 127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let err = store::open("mysql://x").await.err().unwrap().to_string();
    assert!(err.contains("unknown store URL scheme \"mysql\""), "{err}");
    let err = store::open("sqlite:///nonexistent-dir/sub/x.db")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot open"), "{err}");
}
