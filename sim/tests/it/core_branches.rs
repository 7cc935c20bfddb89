use std::time::Duration;

use chrono::TimeDelta;
use neon_sim::SimConfig;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{assert_error, Api};

#[tokio::test]
async fn branch_list_sorts_searches_and_paginates() {
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("p", None);
    let now = api.sim.clock().now();
    for i in 0..23 {
        api.sim
            .add_branch(
                &p.id,
                &format!("preview/pr-{i:02}"),
                None,
                now - TimeDelta::hours(i + 1),
            )
            .unwrap();
    }
    let mut names = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "/projects/{}/branches?sort_by=name&sort_order=asc&limit=4&cursor={c}",
                p.id
            ),
            None => format!(
                "/projects/{}/branches?sort_by=name&sort_order=asc&limit=4",
                p.id
            ),
        };
        let (st, body) = api.get(&path).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(body["pagination"]["sort_by"], "name");
        names.extend(
            body["branches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["name"].as_str().unwrap().to_string()),
        );
        match body["pagination"].get("next") {
            Some(n) => cursor = Some(n.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(names.len(), 24);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let (_, body) = api
        .get(&format!(
            "/projects/{}/branches?sort_by=created_at&sort_order=desc&limit=1",
            p.id
        ))
        .await;
    // The project (and its main) was created now; the other branches are back-dated.
    assert_eq!(body["branches"][0]["name"], "main");
    let (_, body) = api
        .get(&format!("/projects/{}/branches?search=pr-1", p.id))
        .await;
    assert_eq!(body["branches"].as_array().unwrap().len(), 10);
    let (_, body) = api
        .get(&format!("/projects/{}/branches/count?search=pr-2", p.id))
        .await;
    assert_eq!(body["count"], 3); // pr-20, pr-21, pr-22
    let (st, body) = api
        .get(&format!("/projects/{}/branches?sort_by=size", p.id))
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "sort_by");
    let (st, body) = api
        .get(&format!("/projects/{}/branches/{}", p.id, main.id))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["annotation"]["object"]["id"], main.id.as_str());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn branch_create_with_endpoints_then_delete_refusals() {
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("p", None);
    let base = format!("/projects/{}/branches", p.id);
    let (st, body) = api.delete(&format!("{base}/{}", main.id)).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "last branch");

    let (st, body) = api
        .post(&base, json!({"branch": {"name": "dev/alice"}, "endpoints": [{"type": "read_write", "suspend_timeout_seconds": 120}]}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let dev = body["branch"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["branch"]["parent_id"], main.id.as_str());
    assert_eq!(body["endpoints"][0]["current_state"], "active");
    assert_eq!(body["endpoints"][0]["suspend_timeout_seconds"], 120);
    let (st, body) = api
        .post(&base, json!({"branch": {"name": "dev/alice"}}))
        .await;
    assert_error(st, &body, StatusCode::CONFLICT, "already exists");

    let (_, body) = api
        .post(
            &base,
            json!({"branch": {"name": "child", "parent_id": dev}}),
        )
        .await;
    let child = body["branch"]["id"].as_str().unwrap().to_string();
    let (st, body) = api.delete(&format!("{base}/{}", main.id)).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "default branch");
    let (st, body) = api.delete(&format!("{base}/{dev}")).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "child branches");
    api.patch(
        &format!("{base}/{child}"),
        json!({"branch": {"protected": true}}),
    )
    .await;
    let (st, body) = api.delete(&format!("{base}/{child}")).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "protected");
    api.patch(
        &format!("{base}/{child}"),
        json!({"branch": {"protected": false}}),
    )
    .await;
    let (st, body) = api.delete(&format!("{base}/{child}")).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["operations"][0]["action"], "delete_timeline");
    // Root branch that is not default.
    let (st, _) = api
        .post(&format!("{base}/{dev}/set_as_default"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = api.delete(&format!("{base}/{}", main.id)).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "root branch");
    let (st, _) = api.get(&format!("{base}/nope")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn expires_at_rules_and_background_expiry() {
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("p", None);
    let now = api.sim.clock().now();
    let b = api
        .sim
        .add_branch(&p.id, "preview/pr-1-x", None, now)
        .unwrap();
    let url = format!("/projects/{}/branches/{}", p.id, b.id);
    let at = |d: TimeDelta| (now + d).to_rfc3339();

    let (st, body) = api
        .patch(&url, json!({"branch": {"expires_at": "tomorrow"}}))
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "RFC 3339");
    let (st, body) = api
        .patch(
            &url,
            json!({"branch": {"expires_at": at(-TimeDelta::hours(1))}}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "future");
    let (st, body) = api
        .patch(
            &url,
            json!({"branch": {"expires_at": at(TimeDelta::days(31))}}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "30 days");
    let (st, body) = api
        .patch(
            &format!("/projects/{}/branches/{}", p.id, main.id),
            json!({"branch": {"expires_at": at(TimeDelta::days(1))}}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "default");
    let (st, body) = api
        .patch(
            &url,
            json!({"branch": {"protected": true, "expires_at": at(TimeDelta::days(1))}}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "protected");

    let (st, body) = api
        .patch(
            &url,
            json!({"branch": {"expires_at": at(TimeDelta::days(2))}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["branch"]["expires_at"].is_string());
    let (_, body) = api
        .patch(&url, json!({"branch": {"expires_at": null}}))
        .await;
    assert!(body["branch"].get("expires_at").is_none());

    // A parent cannot get a TTL.
    let child = api
        .sim
        .add_branch(&p.id, "child", Some(&b.id), now)
        .unwrap();
    let (st, body) = api
        .patch(
            &url,
            json!({"branch": {"expires_at": at(TimeDelta::days(1))}}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "child");
    let child_url = format!("/projects/{}/branches/{}", p.id, child.id);
    let (st, _) = api
        .patch(
            &child_url,
            json!({"branch": {"expires_at": at(TimeDelta::hours(3))}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    api.sim.clock().advance(Duration::from_secs(2 * 3600));
    assert!(api.sim.branch(&child.id).is_some());
    api.sim.clock().advance(Duration::from_secs(3600));
    let (st, _) = api.get(&child_url).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(api.sim.branch(&child.id).is_none());
    api.sim.shutdown().await;
}

/// The statuses of an answer's `operations`.
fn op_statuses(body: &serde_json::Value) -> Vec<String> {
    body["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| o["status"].as_str().expect("status").to_string())
        .collect()
}

/// On the real clock a mutation's answer is stamped a little before its operations are
/// created; operations of 0 ms must still come back `finished` in that answer (as Neon
/// reports an operation it has finished), so a client has nothing to poll. The mutation log
/// still records every call.
#[tokio::test]
async fn zero_ms_operations_are_answered_finished_on_the_real_clock() {
    let api = Api::start(SimConfig::default().real_clock()).await;
    let (p, _main) = api.sim.add_project("p", None);
    api.sim.clear_mutations();
    let base = format!("/projects/{}/branches", p.id);
    for round in 0..5 {
        let (st, body) = api
            .post(
                &base,
                json!({"branch": {"name": format!("dev-{round}")}, "endpoints": [{"type": "read_write"}]}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{body}");
        assert_eq!(op_statuses(&body), ["finished", "finished"], "{body}");
        let dev = body["branch"]["id"].as_str().unwrap().to_string();
        // A compute on the branch: its delete starts two operations.
        let (st, body) = api.delete(&format!("{base}/{dev}")).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let actions: Vec<&str> = body["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["suspend_compute", "delete_timeline"]);
        assert_eq!(op_statuses(&body), ["finished", "finished"], "{body}");
        for o in body["operations"].as_array().unwrap() {
            assert_eq!(o["total_duration_ms"], 0, "{o}");
            assert_eq!(o["updated_at"], o["created_at"], "{o}");
        }
    }
    let log: Vec<(String, u16)> = api
        .sim
        .mutations()
        .iter()
        .map(|m| (m.method.clone(), m.status))
        .collect();
    let expected: Vec<(String, u16)> = (0..5)
        .flat_map(|_| [("POST".to_string(), 201), ("DELETE".to_string(), 200)])
        .collect();
    assert_eq!(log, expected);
    api.sim.shutdown().await;
}

/// Operations that take time are answered in progress on the real clock, and the project
/// refuses the next mutation (423) until they end: one mutation at a time.
#[tokio::test]
async fn longer_operations_are_answered_in_progress_and_lock_the_project() {
    let api = Api::start(
        SimConfig::default()
            .real_clock()
            .operation_duration(Duration::from_secs(600)),
    )
    .await;
    let (p, _main) = api.sim.add_project("p", None);
    api.sim.clear_mutations();
    let base = format!("/projects/{}/branches", p.id);
    let (st, body) = api.post(&base, json!({"branch": {"name": "dev"}})).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(op_statuses(&body), ["scheduling"], "{body}");
    let dev = body["branch"]["id"].as_str().unwrap().to_string();
    let (st, body) = api.delete(&format!("{base}/{dev}")).await;
    assert_error(st, &body, StatusCode::LOCKED, "conflicting operations");
    let statuses: Vec<u16> = api.sim.mutations().iter().map(|m| m.status).collect();
    assert_eq!(statuses, [201, 423]);
    api.sim.shutdown().await;
}
