//! The Neon client against neon-sim (in process, port 0, virtual clock).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};
use neon_sim::faults::{Fault, FaultRule};
use neon_sim::ratelimit::RateLimitConfig;
use neon_sim::SimConfig;
use neon_steward::neon::*;
use neon_steward::secret::Secret;

use crate::helpers::{spawn_sim, TestSim};

const SNAPSHOT_ROUTE: &str = "/projects/{project_id}/branches/{branch_id}/snapshot";

/// Every request body the client sent validates against Neon's document.
fn assert_bodies_match_spec(sim: &TestSim) {
    let mut checked = 0;
    for s in sim.sent() {
        if s.method == "GET" {
            continue;
        }
        let path = s.path.strip_prefix("/api/v2").unwrap_or(&s.path);
        neon_sim::openapi::validate_neon_request(&s.method, path, s.body.as_ref()).unwrap_or_else(
            |e| {
                panic!(
                    "{} {} body {:?} breaks the spec: {e:?}",
                    s.method, path, s.body
                )
            },
        );
        checked += 1;
    }
    assert!(checked > 0, "no mutating request was checked");
}

fn snapshot_posts(sim: &TestSim) -> usize {
    sim.mutations()
        .iter()
        .filter(|m| m.method == "POST" && m.route.as_deref() == Some(SNAPSHOT_ROUTE))
        .count()
}

#[tokio::test]
async fn every_operation_round_trips() {
    let sim = spawn_sim(SimConfig::default()).await;
    let state = sim.state();
    let org = neon_sim::seed::insert_org(&mut state.settled(), "acme");
    let (pid, main) = sim.add_project("shop", Some(&org));
    let (_other, _) = sim.add_project("blog", Some(&org));
    let child = sim.add_branch(&pid, "preview/pr-1", None);
    let ep = sim.add_endpoint(&main);
    let child_ep = sim.add_endpoint(&child);
    let c = sim.client();
    let project = ProjectId::from(pid.as_str());

    let me = c.current_user().await.unwrap();
    assert!(!me.id.is_empty());

    let all: Vec<Project> = c
        .list_projects(ProjectFilter::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let found: Vec<Project> = c
        .list_projects(ProjectFilter {
            org_id: Some(OrgId::from(org.as_str())),
            search: Some("shop".into()),
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, project);
    assert_eq!(
        found[0].org_id.as_ref().map(|o| o.as_str()),
        Some(org.as_str())
    );

    let branches: Vec<Branch> = c.list_branches(&project).try_collect().await.unwrap();
    assert_eq!(branches.len(), 2);
    let b = c
        .get_branch(&project, &BranchId::from(child.as_str()))
        .await
        .unwrap();
    assert_eq!(b.name, "preview/pr-1");
    assert_eq!(
        b.parent_id.as_ref().map(|p| p.as_str()),
        Some(main.as_str())
    );
    assert!(!b.default);
    let m = c
        .get_branch(&project, &BranchId::from(main.as_str()))
        .await
        .unwrap();
    assert!(m.default);

    // update: rename, protect, then set and clear an expiry.
    let child_id = BranchId::from(child.as_str());
    let expires = sim.clock().now() + TimeDelta::days(3);
    let (b, ops) = c
        .update_branch(
            &project,
            &child_id,
            BranchUpdate {
                name: Some("preview/pr-1-renamed".into()),
                expires_at: Some(Some(expires)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    c.wait_for_operations(&project, &ops, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(b.name, "preview/pr-1-renamed");
    assert_eq!(
        b.expires_at.map(|e| e.timestamp()),
        Some(expires.timestamp())
    );
    let (b, _) = c
        .update_branch(
            &project,
            &child_id,
            BranchUpdate {
                expires_at: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(b.expires_at, None);
    let (b, _) = c
        .update_branch(
            &project,
            &BranchId::from(main.as_str()),
            BranchUpdate {
                protected: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(b.protected);

    // endpoints
    let eps = c.list_endpoints(&project).await.unwrap();
    assert_eq!(eps.len(), 2);
    let on_child: Vec<_> = eps.iter().filter(|e| e.branch_id == child_id).collect();
    assert_eq!(on_child.len(), 1);
    assert_eq!(on_child[0].id.as_str(), child_ep);
    let ep_id = EndpointId::from(ep.as_str());
    let e = c.get_endpoint(&project, &ep_id).await.unwrap();
    assert_eq!(e.endpoint_type, EndpointType::ReadWrite);
    let (_, ops) = c.start_endpoint(&project, &ep_id).await.unwrap();
    let done = c
        .wait_for_operations(&project, &ops, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(done.iter().all(|o| o.status == OperationStatus::Finished));
    assert_eq!(
        c.get_endpoint(&project, &ep_id)
            .await
            .unwrap()
            .current_state,
        EndpointState::Active
    );
    let (_, ops) = c.suspend_endpoint(&project, &ep_id).await.unwrap();
    c.wait_for_operations(&project, &ops, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        c.get_endpoint(&project, &ep_id)
            .await
            .unwrap()
            .current_state,
        EndpointState::Idle
    );

    // snapshots
    let (snap, ops) = c
        .create_snapshot(
            &project,
            &BranchId::from(main.as_str()),
            SnapshotRequest {
                name: Some("nightly-1".into()),
                expires_at: Some(sim.clock().now() + TimeDelta::days(7)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    c.wait_for_operations(&project, &ops, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(snap.name, "nightly-1");
    assert_eq!(
        snap.source_branch_id.as_ref().map(|b| b.as_str()),
        Some(main.as_str())
    );
    let snaps = c.list_snapshots(&project).await.unwrap();
    assert!(snaps.iter().any(|s| s.id == snap.id));
    let ops = c.delete_snapshot(&project, &snap.id).await.unwrap();
    c.wait_for_operations(&project, &ops, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(c
        .list_snapshots(&project)
        .await
        .unwrap()
        .iter()
        .all(|s| s.id != snap.id));

    // operations
    assert!(!ops.is_empty());
    let one = c.get_operation(&project, &ops[0].id).await.unwrap();
    assert_eq!(one.id, ops[0].id);
    c.wait_for_project_idle(&project, Duration::from_secs(5))
        .await
        .unwrap();

    // delete: Neon's answer, then "already gone" on a second delete.
    let (deleted, ops) = c.delete_branch(&project, &child_id).await.unwrap();
    assert_eq!(deleted.id, child_id);
    c.wait_for_operations(&project, &ops, Duration::from_secs(5))
        .await
        .unwrap();
    let again = c.delete_branch(&project, &child_id).await.unwrap_err();
    assert!(
        matches!(again, ApiError::AlreadyDeleted { .. }),
        "Neon answers 204 for an already deleted branch: {again:?}"
    );
    assert!(again.is_not_found(), "{again}");
    let left: Vec<Branch> = c.list_branches(&project).try_collect().await.unwrap();
    assert_eq!(left.len(), 1);

    // typed errors for unknown ids
    let e = c
        .list_endpoints(&ProjectId::from("no-such-project"))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.status(), Some(404));
    assert!(e.request_id().is_some());

    // escape hatch
    let v = c
        .raw(
            reqwest::Method::GET,
            &format!("/projects/{pid}/branches/{main}"),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(v["branch"]["id"], serde_json::json!(main));
    let regions = c.raw(reqwest::Method::GET, "/regions", &[], None).await;
    assert!(regions.is_ok(), "{regions:?}");

    assert_bodies_match_spec(&sim);
    assert!(sim.sent().iter().all(|s| s.path.starts_with("/api/v2/")));

    // Telemetry is labelled by route template, never by the raw path: no series of the
    // request metrics names this test's project or branch, and the templates are there.
    let rendered = neon_steward::telemetry::metrics::render();
    for line in rendered
        .lines()
        .filter(|l| l.starts_with("neon_steward_api_request"))
    {
        assert!(
            !line.contains(pid.as_str()) && !line.contains(main.as_str()),
            "a raw path in a label: {line}"
        );
    }
    let m = neon_steward::telemetry::metrics::metrics();
    assert!(
        m.api_requests_total
            .with_label_values(&["GET", "/projects/{project_id}/branches/{branch_id}", "2xx"])
            .get()
            > 0
    );
    assert!(
        m.api_requests_total
            .with_label_values(&["GET", "/projects/{project_id}/endpoints", "4xx"])
            .get()
            > 0
    );
}

#[tokio::test]
async fn pagination_follows_both_styles_across_many_pages() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, _) = sim.add_project("big", None);
    for i in 0..249 {
        sim.add_branch(&pid, &format!("preview/pr-{i}"), None);
    }
    for i in 0..23 {
        sim.add_project(&format!("p{i}"), None);
    }
    let mut cfg = sim.client_config();
    cfg.page_size = 7;
    let c = NeonClient::new(cfg).unwrap();
    let project = ProjectId::from(pid.as_str());

    let branches: Vec<Branch> = c.list_branches(&project).try_collect().await.unwrap();
    let ids: HashSet<_> = branches.iter().map(|b| b.id.clone()).collect();
    assert_eq!(branches.len(), 250);
    assert_eq!(ids.len(), 250, "no branch twice");
    let pages = sim
        .sent()
        .iter()
        .filter(|s| s.path.ends_with("/branches") && s.method == "GET")
        .count();
    assert!(
        pages >= 36,
        "250 branches at 7 per page need >= 36 pages, saw {pages}"
    );
    assert!(sim
        .sent()
        .iter()
        .filter(|s| s.path.ends_with("/branches"))
        .all(|s| s.query.as_deref().unwrap_or("").contains("limit=7")));

    let projects: Vec<Project> = c
        .list_projects(ProjectFilter::default())
        .try_collect()
        .await
        .unwrap();
    let pids: HashSet<_> = projects.iter().map(|p| p.id.clone()).collect();
    assert_eq!(projects.len(), 24);
    assert_eq!(pids.len(), 24);

    // A stream can stop early without fetching the rest.
    sim.clear_sent();
    let first3: Vec<Branch> = c
        .list_branches(&project)
        .take(3)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(first3.len(), 3);
    assert_eq!(sim.sent().len(), 1);
}

#[tokio::test]
async fn operations_pagination_and_project_idle() {
    let sim = spawn_sim(SimConfig::default().operation_duration(Duration::from_secs(60))).await;
    let (pid, main) = sim.add_project("ops", None);
    let project = ProjectId::from(pid.as_str());
    let mut cfg = sim.client_config();
    cfg.page_size = 2;
    let c = NeonClient::new(cfg).unwrap();
    let mut created = Vec::new();
    for i in 0..5 {
        let ep = sim.add_endpoint(&main);
        let (_, ops) = c
            .start_endpoint(&project, &EndpointId::from(ep.as_str()))
            .await
            .unwrap();
        created.extend(ops);
        // Let each start finish before the next mutation, as Neon requires.
        sim.clock().advance(Duration::from_secs(61));
        let _ = i;
    }
    // Each start has finished: the scan for unfinished operations (pages of 2 here, over
    // a history of 5) finds none, and each is finished by id.
    assert!(c.operations_in_progress(&project).await.unwrap().is_empty());
    for o in &created {
        let now = c.get_operation(&project, &o.id).await.unwrap();
        assert_eq!(now.status, OperationStatus::Finished, "operation {}", o.id);
    }

    // A running operation keeps the project busy until the clock passes its duration.
    let ep = sim.add_endpoint(&main);
    let (_, ops) = c
        .start_endpoint(&project, &EndpointId::from(ep.as_str()))
        .await
        .unwrap();
    assert!(ops.iter().any(|o| !o.status.is_terminal()));
    let err = c
        .wait_for_project_idle(&project, Duration::from_millis(30))
        .await
        .unwrap_err();
    assert!(err.is_deadline(), "{err}");
    let err = c
        .wait_for_operations(&project, &ops, Duration::from_millis(30))
        .await
        .unwrap_err();
    assert!(err.is_deadline(), "{err}");
    // Neon's operations finish once the client has seen them running: the clock moves
    // after the first poll that found them busy (an explicit signal, not a real-time sleep).
    sim.clear_sent();
    let advance = advance_after(&sim, |s| {
        s.method == "GET" && s.path.ends_with("/operations")
    });
    c.wait_for_project_idle(&project, Duration::from_secs(5))
        .await
        .unwrap();
    advance.await.unwrap();
    let done = c
        .wait_for_operations(&project, &ops, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(done.iter().all(|o| o.status == OperationStatus::Finished));
}

/// 423 is handled in one layer, the jobs' (`with_lock_retry`): the client returns it at once
/// instead of backing off, and waiting for the project's operations is what lets the call
/// through.
#[tokio::test]
async fn locked_423_is_returned_at_once_and_waiting_for_the_project_lets_the_call_through() {
    let sim = spawn_sim(SimConfig::default().operation_duration(Duration::from_secs(60))).await;
    let (pid, main) = sim.add_project("busy", None);
    let child = sim.add_branch(&pid, "preview/a", None);
    sim.add_endpoint(&child);
    let other = sim.add_branch(&pid, "preview/b", None);
    let project = ProjectId::from(pid.as_str());
    // A client that does retry (5 retries, as for a 503 or a 429).
    let c = sim.client();

    // Deleting a branch with a compute starts operations that run for 60 s (virtual).
    let (_, ops) = c
        .delete_branch(&project, &BranchId::from(child.as_str()))
        .await
        .unwrap();
    assert!(!ops.is_empty());

    let other = BranchId::from(other.as_str());
    let rename = || {
        c.update_branch(
            &project,
            &other,
            BranchUpdate {
                name: Some("renamed".into()),
                ..Default::default()
            },
        )
    };
    sim.clear_sent();
    let err = rename().await.unwrap_err();
    assert!(err.is_locked(), "{err}");
    assert!(err.to_string().contains("423"), "{err}");
    let patches: Vec<u16> = sim
        .sent()
        .iter()
        .filter(|s| s.method == "PATCH")
        .map(|s| s.status)
        .collect();
    assert_eq!(
        patches,
        vec![423],
        "the client did not retry the 423 itself"
    );

    // The operations finish once the client has seen them running.
    let advance = advance_after(&sim, |s| {
        s.method == "GET" && s.path.ends_with("/operations")
    });
    c.wait_for_project_idle(&project, Duration::from_secs(5))
        .await
        .unwrap();
    advance.await.unwrap();
    let (b, _) = rename().await.unwrap();
    assert_eq!(b.name, "renamed");
    let _ = main;
}

#[tokio::test]
async fn rate_limits_429_are_recovered() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, _) = sim.add_project("rl", None);
    let project = ProjectId::from(pid.as_str());
    let c = sim.client();

    // A burst of injected 429s (no Retry-After): backoff and recover.
    sim.faults
        .inject(
            FaultRule::on(
                "GET",
                "/projects/{project_id}/endpoints",
                Fault::Status {
                    status: 429,
                    retry_after_secs: None,
                },
            )
            .times(3),
        )
        .unwrap();
    c.list_endpoints(&project).await.unwrap();
    assert_eq!(sim.faults.injected().len(), 3);

    // With Retry-After the client waits as told (1 s here).
    sim.faults
        .inject(
            FaultRule::on(
                "GET",
                "/projects/{project_id}/endpoints",
                Fault::Status {
                    status: 429,
                    retry_after_secs: Some(1),
                },
            )
            .times(1),
        )
        .unwrap();
    let started = std::time::Instant::now();
    c.list_endpoints(&project).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(990));

    // The emulator's own limiter: a route burst of 3, 10 concurrent calls, all succeed.
    sim.ratelimit.set_config(RateLimitConfig {
        enabled: true,
        per_minute: 100_000,
        burst_per_second: 3,
        consumption_per_minute: None,
        retry_after: true,
    });
    sim.clear_sent();
    let calls = (0..10).map(|_| {
        let c = c.clone();
        let project = project.clone();
        async move { c.list_endpoints(&project).await }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let limited = sim.sent().iter().filter(|s| s.status == 429).count();
    assert!(limited > 0, "the emulator did rate limit");

    // A client throttled like the daemon's defaults (well under the route's burst refill,
    // at the account's sustained rate) never sees a 429 from limits shaped like Neon's.
    sim.ratelimit.set_config(RateLimitConfig {
        enabled: true,
        per_minute: 600,
        burst_per_second: 40,
        consumption_per_minute: None,
        retry_after: true,
    });
    sim.clear_sent();
    let mut cfg = sim.client_config();
    cfg.rate_limit_per_minute = 600;
    cfg.burst = 40;
    cfg.max_retries = 0;
    let polite = NeonClient::new(cfg).unwrap();
    let started = std::time::Instant::now();
    for _ in 0..45 {
        polite.list_endpoints(&project).await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "5 requests beyond the burst at 10/s"
    );
    assert!(sim.sent().iter().all(|s| s.status == 200));
}

#[tokio::test]
async fn server_errors_retried_for_reads_never_blindly_for_creates() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, main) = sim.add_project("errs", None);
    let project = ProjectId::from(pid.as_str());
    let branch = BranchId::from(main.as_str());
    let c = sim.client();

    // GET: 500 twice, then fine.
    sim.faults
        .inject(
            FaultRule::on(
                "GET",
                "/projects/{project_id}/branches/{branch_id}",
                Fault::Status {
                    status: 500,
                    retry_after_secs: None,
                },
            )
            .times(2),
        )
        .unwrap();
    c.get_branch(&project, &branch).await.unwrap();

    // A 4xx is not retried.
    sim.clear_sent();
    let e = c
        .get_branch(&project, &BranchId::from("br-missing-1"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(sim.sent().len(), 1);

    // POST create answered 500 by a server that did NOT carry it out: the client looks,
    // finds nothing, creates once.
    sim.faults
        .inject(
            FaultRule::on(
                "POST",
                SNAPSHOT_ROUTE,
                Fault::Status {
                    status: 500,
                    retry_after_secs: None,
                },
            )
            .times(1),
        )
        .unwrap();
    let (s1, _) = c
        .create_snapshot(
            &project,
            &branch,
            SnapshotRequest {
                name: Some("s1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s1.name, "s1");
    assert_eq!(
        snapshot_posts(&sim),
        1,
        "exactly one create reached the emulator"
    );

    // POST create carried out, then answered 500: the client finds it and does not repeat.
    sim.fail_after_processing("POST", "/snapshot", 1);
    let (s2, _) = c
        .create_snapshot(
            &project,
            &branch,
            SnapshotRequest {
                name: Some("s2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s2.name, "s2");
    assert_eq!(snapshot_posts(&sim), 2, "one create for s2, not two");
    let names: Vec<String> = c
        .list_snapshots(&project)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "s2").count(), 1);

    // Raw POST on a 500 is reported, not repeated.
    sim.fail_after_processing("POST", "/snapshot", 1);
    let e = c
        .raw(
            reqwest::Method::POST,
            &format!("/projects/{pid}/branches/{main}/snapshot"),
            &[("name", "s3")],
            None,
        )
        .await
        .unwrap_err();
    assert!(e.may_have_succeeded(), "{e}");
    assert_eq!(snapshot_posts(&sim), 3);

    // 503 is always retried, creates included (Neon did not process it).
    sim.faults
        .inject(
            FaultRule::on(
                "POST",
                SNAPSHOT_ROUTE,
                Fault::Status {
                    status: 503,
                    retry_after_secs: None,
                },
            )
            .times(2),
        )
        .unwrap();
    c.create_snapshot(
        &project,
        &branch,
        SnapshotRequest {
            name: Some("s4".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(snapshot_posts(&sim), 4);
    assert_bodies_match_spec(&sim);
}

#[tokio::test]
async fn hang_becomes_timeout() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, _) = sim.add_project("slow", None);
    let project = ProjectId::from(pid.as_str());
    let mut cfg = sim.client_config();
    cfg.timeout = Duration::from_millis(150);
    cfg.max_retries = 1;
    let c = NeonClient::new(cfg).unwrap();
    sim.faults
        .inject(FaultRule::on(
            "GET",
            "/projects/{project_id}/endpoints",
            Fault::Hang,
        ))
        .unwrap();
    let e = c.list_endpoints(&project).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(e.request_id().is_some());
    assert_eq!(
        sim.faults.injected().len(),
        2,
        "a timed-out GET is retried once (max_retries = 1)"
    );

    // A hang that ends: one timeout then success.
    sim.faults.clear();
    sim.faults
        .inject(FaultRule::on("GET", "/projects/{project_id}/endpoints", Fault::Hang).times(1))
        .unwrap();
    c.list_endpoints(&project).await.unwrap();
}

#[tokio::test]
async fn dropped_connections_are_recovered_and_creates_checked() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, main) = sim.add_project("drop", None);
    let project = ProjectId::from(pid.as_str());
    let branch = BranchId::from(main.as_str());
    let c = sim.client();

    sim.faults
        .inject(
            FaultRule::on(
                "GET",
                "/projects/{project_id}/branches",
                Fault::DropConnection,
            )
            .times(2),
        )
        .unwrap();
    let bs: Vec<Branch> = c.list_branches(&project).try_collect().await.unwrap();
    assert_eq!(bs.len(), 1);

    sim.faults
        .inject(FaultRule::on("POST", SNAPSHOT_ROUTE, Fault::DropConnection).times(1))
        .unwrap();
    let (s, _) = c
        .create_snapshot(
            &project,
            &branch,
            SnapshotRequest {
                name: Some("after-drop".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.name, "after-drop");
    assert_eq!(snapshot_posts(&sim), 1);

    // Every attempt failing: the typed transport error comes back, not a panic.
    sim.faults
        .inject(FaultRule::on(
            "GET",
            "/projects/{project_id}/endpoints",
            Fault::DropConnection,
        ))
        .unwrap();
    let e = c.list_endpoints(&project).await.unwrap_err();
    assert!(
        matches!(e, ApiError::Transport { .. } | ApiError::Connect { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn malformed_bodies_are_decode_errors() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, main) = sim.add_project("garbled", None);
    let project = ProjectId::from(pid.as_str());
    let c = sim.client();
    sim.faults
        .inject(
            FaultRule::on(
                "GET",
                "/projects/{project_id}/branches/{branch_id}",
                Fault::MalformedBody,
            )
            .times(1),
        )
        .unwrap();
    let e = c
        .get_branch(&project, &BranchId::from(main.as_str()))
        .await
        .unwrap_err();
    match &e {
        ApiError::Decode {
            route, request_id, ..
        } => {
            assert_eq!(*route, "/projects/{project_id}/branches/{branch_id}");
            assert!(request_id.is_some());
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    assert!(!e.to_string().contains(&main), "no body in the error: {e}");

    // In a stream too.
    sim.faults
        .inject(FaultRule::on("GET", "/projects", Fault::MalformedBody).times(1))
        .unwrap();
    let r: Result<Vec<Project>, _> = c
        .list_projects(ProjectFilter::default())
        .try_collect()
        .await;
    assert!(matches!(r, Err(ApiError::Decode { .. })), "{r:?}");
}

#[tokio::test]
async fn failed_operations_are_typed_errors() {
    let sim = spawn_sim(SimConfig::default().operation_duration(Duration::from_secs(10))).await;
    let (pid, main) = sim.add_project("fails", None);
    let ep = sim.add_endpoint(&main);
    let project = ProjectId::from(pid.as_str());
    let c = sim.client();
    sim.state().lock().fail_next_operations = 1;
    let (_, ops) = c
        .start_endpoint(&project, &EndpointId::from(ep.as_str()))
        .await
        .unwrap();
    sim.clock().advance(Duration::from_secs(11));
    let e = c
        .wait_for_operations(&project, &ops, Duration::from_secs(5))
        .await
        .unwrap_err();
    match e {
        ApiError::OperationFailed {
            operation_id,
            action,
            ..
        } => {
            assert_eq!(operation_id, ops[0].id);
            assert_eq!(action, "start_compute");
        }
        other => panic!("expected OperationFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn the_key_never_shows() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, _) = sim.add_project("secret", None);
    let key = sim.api_key();
    let c = sim.client();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(&key), "{dbg}");
    assert!(!format!("{:?}", sim.client_config()).contains(&key));

    // Wrong key: a typed 401 whose text carries no key.
    let mut cfg = sim.client_config();
    cfg.api_key = Secret::new("napi_wrong_key_value");
    let bad = NeonClient::new(cfg).unwrap();
    let e = bad
        .list_endpoints(&ProjectId::from(pid.as_str()))
        .await
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains("napi_wrong_key_value"), "{text}");
        assert!(!text.contains(&key));
    }

    // Transport errors carry no key either.
    let mut cfg = sim.client_config();
    cfg.base_url = "http://127.0.0.1:1/api/v2".into();
    cfg.max_retries = 0;
    let nowhere = NeonClient::new(cfg).unwrap();
    let e = nowhere.current_user().await.unwrap_err();
    assert!(matches!(e, ApiError::Connect { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(&key));
}

#[tokio::test]
async fn consumption_arguments_are_checked_before_sending() {
    let sim = spawn_sim(SimConfig::default()).await;
    let c = sim.client();
    let now = Utc::now();
    let q = ConsumptionQuery {
        from: now - TimeDelta::days(1),
        to: now,
        granularity: Granularity::Hourly,
        metrics: vec!["compute_unit_seconds".into()],
        org_id: Some(OrgId::from("org-x")),
        project_ids: (0..101)
            .map(|i| ProjectId::from(format!("p-{i}")))
            .collect(),
    };
    let r: Result<Vec<ConsumptionPeriod>, _> =
        c.consumption_v2_projects(q.clone()).try_collect().await;
    assert!(matches!(r, Err(ApiError::InvalidRequest(_))), "{r:?}");
    let r: Result<Vec<ConsumptionPeriod>, _> = c
        .consumption_v2_projects(ConsumptionQuery {
            project_ids: vec![],
            org_id: None,
            ..q.clone()
        })
        .try_collect()
        .await;
    assert!(matches!(r, Err(ApiError::InvalidRequest(_))), "{r:?}");
    let r: Result<Vec<ConsumptionPeriod>, _> = c.consumption_legacy_projects(q).try_collect().await;
    assert!(matches!(r, Err(ApiError::InvalidRequest(_))), "{r:?}");
    assert!(sim.sent().is_empty(), "nothing was sent");
}

/// `/consumption_history/v2/branches` needs `org_id`, 1 to 100 `project_ids` and a metric:
/// a query without them is refused before anything is sent.
#[tokio::test]
async fn branch_consumption_arguments_are_checked_before_sending() {
    let sim = spawn_sim(SimConfig::default()).await;
    let c = sim.client();
    let now = Utc::now();
    let q = ConsumptionQuery {
        from: now - TimeDelta::days(1),
        to: now,
        granularity: Granularity::Hourly,
        metrics: vec!["compute_unit_seconds".into()],
        org_id: Some(OrgId::from("org-x")),
        project_ids: vec![ProjectId::from("p-1")],
    };
    for bad in [
        ConsumptionQuery {
            project_ids: vec![],
            ..q.clone()
        },
        ConsumptionQuery {
            project_ids: (0..101)
                .map(|i| ProjectId::from(format!("p-{i}")))
                .collect(),
            ..q.clone()
        },
        ConsumptionQuery {
            org_id: None,
            ..q.clone()
        },
        ConsumptionQuery {
            metrics: vec![],
            ..q.clone()
        },
    ] {
        let r: Result<Vec<_>, _> = c.consumption_v2_branches(bad).try_collect().await;
        assert!(matches!(r, Err(ApiError::InvalidRequest(_))), "{r:?}");
    }
    assert!(sim.sent().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn consumption_v2_and_legacy_across_pages() {
    let sim = spawn_sim(SimConfig::default()).await;
    let state = sim.state();
    let org = neon_sim::seed::insert_org(&mut state.settled(), "metered");
    let start = sim.clock().now();
    let mut pids = Vec::new();
    for i in 0..12 {
        let (pid, main) = sim.add_project(&format!("m{i}"), Some(&org));
        if i == 0 {
            let ep = sim.add_endpoint(&main);
            // Keep one compute busy so at least one value is non-zero.
            let mut s = state.settled();
            s.endpoints
                .get_mut(&ep)
                .expect("endpoint just added")
                .activity = neon_sim::state::Activity::Busy;
            s.settle();
        }
        pids.push(pid);
    }
    sim.clock().advance(Duration::from_secs(6 * 3600));
    let now = sim.clock().now();
    let mut cfg = sim.client_config();
    cfg.page_size = 5;
    let c = NeonClient::new(cfg).unwrap();
    let q = ConsumptionQuery {
        from: start,
        to: now,
        granularity: Granularity::Hourly,
        metrics: vec![
            "compute_unit_seconds".into(),
            "root_branch_bytes_month".into(),
        ],
        org_id: Some(OrgId::from(org.as_str())),
        project_ids: vec![],
    };
    let periods: Vec<ConsumptionPeriod> = c
        .consumption_v2_projects(q.clone())
        .try_collect()
        .await
        .unwrap();
    let projects: HashSet<_> = periods.iter().map(|p| p.project_id.clone()).collect();
    assert_eq!(projects.len(), 12, "every project, across 3 pages of 5");
    let pages = sim
        .sent()
        .iter()
        .filter(|s| s.path.ends_with("/consumption_history/v2/projects"))
        .count();
    // 3 pages of projects, then the empty page that ends the listing: a short page is not
    // taken as the last one (the document calls `limit` a maximum).
    assert_eq!(pages, 4);
    for p in &periods {
        assert_eq!(p.granularity, Granularity::Hourly);
        assert_eq!(p.timeframe_end - p.timeframe_start, TimeDelta::hours(1));
        assert!(p.metrics.iter().any(|(m, _)| m == "compute_unit_seconds"));
    }
    let busy: f64 = periods
        .iter()
        .filter(|p| p.project_id.as_str() == pids[0])
        .flat_map(|p| p.metrics.iter())
        .filter(|(m, _)| m == "compute_unit_seconds")
        .map(|(_, v)| v)
        .sum();
    assert!(busy > 0.0, "the busy compute used compute time");

    // Filtered to two projects.
    let two: Vec<ConsumptionPeriod> = c
        .consumption_v2_projects(ConsumptionQuery {
            project_ids: vec![pids[0].as_str().into(), pids[1].as_str().into()],
            ..q.clone()
        })
        .try_collect()
        .await
        .unwrap();
    let two_ids: HashSet<_> = two
        .iter()
        .map(|p| p.project_id.as_str().to_string())
        .collect();
    assert_eq!(two_ids, HashSet::from([pids[0].clone(), pids[1].clone()]));

    // Legacy endpoint: fixed fields become metrics.
    let legacy: Vec<ConsumptionPeriod> = c
        .consumption_legacy_projects(ConsumptionQuery {
            metrics: vec![],
            ..q.clone()
        })
        .try_collect()
        .await
        .unwrap();
    let legacy_projects: HashSet<_> = legacy.iter().map(|p| p.project_id.clone()).collect();
    assert_eq!(legacy_projects.len(), 12);
    assert!(legacy
        .iter()
        .all(|p| p.metrics.iter().any(|(m, _)| m == "active_time_seconds")));

    // A range the granularity cannot serve is Neon's 406, typed.
    let r: Result<Vec<ConsumptionPeriod>, _> = c
        .consumption_v2_projects(ConsumptionQuery {
            from: now - TimeDelta::days(30),
            ..q
        })
        .try_collect()
        .await;
    let e = r.unwrap_err();
    assert_eq!(e.status(), Some(406), "{e}");
}

/// A delete that Neon carried out but whose answer was lost (here: done, then 500) is retried;
/// the retry finds the branch gone, Neon answers 204, and the client reports
/// `ApiError::AlreadyDeleted` (not a 404, not a decode error of the empty body). A branch that
/// never existed is the same 204; a project that does not exist stays a 404.
#[tokio::test]
async fn retried_delete_after_a_lost_answer_is_already_deleted() {
    const ROUTE: &str = "/projects/{project_id}/branches/{branch_id}";
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, main) = sim.add_project("gone", None);
    let child = sim.add_branch(&pid, "preview/x", Some(&main));
    let project = ProjectId::from(pid.as_str());
    let c = sim.client();
    sim.fail_after_processing("DELETE", &format!("/branches/{child}"), 1);
    let e = c
        .delete_branch(&project, &BranchId::from(child.as_str()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApiError::AlreadyDeleted { route } if route == ROUTE),
        "{e:?}"
    );
    let deletes: Vec<u16> = sim
        .mutations()
        .iter()
        .filter(|m| m.method == "DELETE" && m.route.as_deref() == Some(ROUTE))
        .map(|m| m.status)
        .collect();
    assert_eq!(deletes, [200, 204], "deleted once, then found gone");
    let left: Vec<Branch> = c.list_branches(&project).try_collect().await.unwrap();
    assert_eq!(left.len(), 1);

    let e = c
        .delete_branch(&project, &BranchId::from("br-never-existed-1"))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::AlreadyDeleted { .. }), "{e:?}");
    let e = c
        .delete_branch(
            &ProjectId::from("no-such-project-1"),
            &BranchId::from(child.as_str()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e:?}");
}

/// The send gate is asked before every request of a call, its retries included: a delete
/// whose answer was lost is not sent again once the gate closes (a run whose lease may have
/// lapsed meanwhile), and a closed gate sends nothing at all.
#[tokio::test]
async fn the_send_gate_is_asked_before_every_attempt() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const ROUTE: &str = "/projects/{project_id}/branches/{branch_id}";
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, main) = sim.add_project("gated", None);
    let child = sim.add_branch(&pid, "preview/x", Some(&main));
    let project = ProjectId::from(pid.as_str());
    let c = sim.client();
    sim.fail_after_processing("DELETE", &format!("/branches/{child}"), 1);
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let first_only: SendGate = Arc::new(move || {
        (counter.fetch_add(1, Ordering::SeqCst) > 0).then(|| "closed after one".to_string())
    });
    let e = with_send_gate(
        first_only,
        c.delete_branch(&project, &BranchId::from(child.as_str())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ApiError::NotSent(why) if why == "closed after one"),
        "{e:?}"
    );
    assert!(!e.may_have_succeeded(), "a refused request was never sent");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "asked before the first and the retry"
    );
    let deletes = sim
        .mutations()
        .iter()
        .filter(|m| m.method == "DELETE" && m.route.as_deref() == Some(ROUTE))
        .count();
    assert_eq!(deletes, 1, "the retry was not sent");

    let closed: SendGate = Arc::new(|| Some("closed".to_string()));
    let e = with_send_gate(closed, c.list_branches(&project).try_collect::<Vec<_>>())
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::NotSent(_)), "{e:?}");
    // Outside a gate's scope, calls go out as before.
    let left: Vec<Branch> = c.list_branches(&project).try_collect().await.unwrap();
    assert_eq!(
        left.len(),
        1,
        "the branch was deleted by the one request sent"
    );
}

// ------------------------------------------------------------------ answers Neon should not give

/// A fake Neon serving `GET /projects/p-1/branches` (pages chosen by `cursor`) and
/// `GET /projects/p-1/branches/br-1` from fixed bodies, for answers the emulator never gives.
async fn fake_neon(
    pages: Vec<(Option<&'static str>, serde_json::Value)>,
    one: serde_json::Value,
) -> (NeonClient, tokio::task::JoinHandle<()>) {
    use axum::extract::Query;
    use axum::routing::get;
    use std::collections::HashMap;
    use std::sync::Arc;
    let pages = Arc::new(pages);
    let app = axum::Router::new()
        .route(
            "/api/v2/projects/p-1/branches",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let pages = pages.clone();
                async move {
                    let cursor = q.get("cursor").map(String::as_str);
                    let body = pages
                        .iter()
                        .find(|(c, _)| *c == cursor)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_else(|| serde_json::json!({"branches": []}));
                    axum::Json(body)
                }
            }),
        )
        .route(
            "/api/v2/projects/p-1/branches/br-1",
            get(move || async move { axum::Json(one) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut cc = ClientConfig::new(format!("http://{addr}/api/v2"), Secret::new("k"));
    cc.page_size = 2;
    cc.max_retries = 0;
    (NeonClient::new(cc).unwrap(), server)
}

fn branch_json(id: &str, parent: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "id": id, "project_id": "p-1", "name": id, "parent_id": parent,
        "default": parent.is_none(), "protected": false, "current_state": "ready",
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
    })
}

/// `default` and `protected` are required by the document and decide what the jobs may
/// delete: a branch without them is a decode error, never an unprotected, non-default branch.
#[tokio::test]
async fn a_branch_without_default_or_protected_is_a_decode_error() {
    for missing in ["default", "protected"] {
        let mut b = branch_json("br-1", Some("br-0"));
        b.as_object_mut().unwrap().remove(missing);
        let (c, server) = fake_neon(
            vec![(None, serde_json::json!({ "branches": [b.clone()] }))],
            serde_json::json!({ "branch": b }),
        )
        .await;
        let project = ProjectId::from("p-1");
        let e = c
            .get_branch(&project, &BranchId::from("br-1"))
            .await
            .unwrap_err();
        match &e {
            ApiError::Decode { route, detail, .. } => {
                assert_eq!(*route, "/projects/{project_id}/branches/{branch_id}");
                assert!(detail.contains(missing), "{detail}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
        let e = c
            .list_branches(&project)
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Decode { .. }), "{e:?}");
        server.abort();
    }
}

/// A short page with a cursor is not the end of the listing (the document calls `limit` a
/// maximum); the client follows the cursor to the end, so no child branch goes unseen.
#[tokio::test]
async fn a_short_page_with_a_cursor_is_followed() {
    let (c, server) = fake_neon(
        vec![
            (
                None,
                serde_json::json!({"branches": [branch_json("br-0", None)],
                                   "pagination": {"next": "c1"}}),
            ),
            (
                Some("c1"),
                serde_json::json!({"branches": [branch_json("br-1", Some("br-0")),
                                                branch_json("br-2", Some("br-1"))],
                                   "pagination": {"next": "c2"}}),
            ),
            (
                Some("c2"),
                serde_json::json!({"branches": [], "pagination": {"next": "c2"}}),
            ),
        ],
        serde_json::json!({}),
    )
    .await;
    let ids: Vec<String> = c
        .list_branches(&ProjectId::from("p-1"))
        .map_ok(|b| b.id.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids, ["br-0", "br-1", "br-2"]);
    server.abort();
}

/// A cursor the listing already followed is an error naming the route, not a silent end of
/// a partial listing (which could make a parent branch look childless).
#[tokio::test]
async fn a_repeated_cursor_is_an_error_not_a_partial_listing() {
    let (c, server) = fake_neon(
        vec![
            (
                None,
                serde_json::json!({"branches": [branch_json("br-0", None),
                                                branch_json("br-1", Some("br-0"))],
                                   "pagination": {"next": "c1"}}),
            ),
            (
                Some("c1"),
                serde_json::json!({"branches": [branch_json("br-2", Some("br-1")),
                                                branch_json("br-3", Some("br-2"))],
                                   "pagination": {"next": "c1"}}),
            ),
        ],
        serde_json::json!({}),
    )
    .await;
    let e = c
        .list_branches(&ProjectId::from("p-1"))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    match &e {
        ApiError::Decode { route, detail, .. } => {
            assert_eq!(*route, "/projects/{project_id}/branches");
            assert!(detail.contains("c1"), "{detail}");
        }
        other => panic!("expected an error for the repeated cursor, got {other:?}"),
    }
    server.abort();
}

/// Moves the emulator's clock past its operations (61 s) as soon as a request matching
/// `seen` has been answered: the signal a test waits for instead of a real-time sleep.
fn advance_after(
    sim: &TestSim,
    seen: impl Fn(&crate::helpers::Sent) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let clock = sim.clock();
    let sent = sim.sent_log();
    tokio::spawn(async move {
        while !sent.lock().unwrap().iter().any(&seen) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        clock.advance(Duration::from_secs(61));
    })
}

#[tokio::test]
async fn backup_schedule_get_and_put_round_trip_and_follow_the_document() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (pid, main) = sim.add_project("shop", None);
    let child = sim.add_branch(&pid, "dev", None);
    let c = sim.client();
    let (project, main) = (ProjectId::from(pid.as_str()), BranchId::from(main.as_str()));
    assert!(c
        .get_backup_schedule(&project, &main)
        .await
        .unwrap()
        .is_empty());
    let item = |frequency: BackupFrequency, hour, day| BackupScheduleItem {
        frequency,
        hour: Some(hour),
        day,
        month: None,
        retention_seconds: Some(86_400),
    };
    // Given in any order, compared in a canonical one.
    let schedule = BackupSchedule::new(vec![
        item(BackupFrequency::Monthly, 2, Some(15)),
        item(BackupFrequency::Daily, 3, None),
    ]);
    c.put_backup_schedule(&project, &main, &schedule)
        .await
        .unwrap();
    let back = c.get_backup_schedule(&project, &main).await.unwrap();
    assert_eq!(back, schedule);
    assert_eq!(
        back.to_string(),
        "daily at 03:00 UTC, kept 1d; monthly day 15 at 02:00 UTC, kept 1d"
    );
    // Neon's rule: root branches only (a 400 the client does not retry).
    let e = c
        .put_backup_schedule(&project, &BranchId::from(child.as_str()), &schedule)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    c.put_backup_schedule(&project, &main, &BackupSchedule::default())
        .await
        .unwrap();
    assert!(c
        .get_backup_schedule(&project, &main)
        .await
        .unwrap()
        .is_empty());
    assert_bodies_match_spec(&sim);
}
