use std::time::Duration;

use neon_sim::SimConfig;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{assert_error, Api};

#[tokio::test]
async fn project_list_paginates_across_many_pages_and_filters() {
    let api = Api::start(SimConfig::default().projects(37)).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/projects?limit=5&cursor={c}"),
            None => "/projects?limit=5".to_string(),
        };
        let (st, body) = api.get(&path).await;
        assert_eq!(st, StatusCode::OK);
        let page = body["projects"].as_array().unwrap();
        if page.is_empty() {
            assert!(body.get("pagination").is_none());
            break;
        }
        pages += 1;
        assert!(page.len() <= 5);
        seen.extend(page.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        cursor = Some(body["pagination"]["cursor"].as_str().unwrap().to_string());
    }
    assert_eq!(pages, 8);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 37);
    // Default limit is 10.
    let (_, body) = api.get("/projects").await;
    assert_eq!(body["projects"].as_array().unwrap().len(), 10);
    // Search by part of a name.
    let name = api.sim.projects()[3].name.clone();
    let (_, body) = api
        .get(&format!("/projects?search={}", &name[..name.len()]))
        .await;
    assert!(body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == name.as_str()));
    api.sim.shutdown().await;
}

#[tokio::test]
async fn project_crud_and_423_while_an_operation_runs() {
    let api = Api::start(SimConfig::default().operation_duration(Duration::from_secs(10))).await;
    let (st, body) = api
        .post("/projects", json!({"project": {"name": "shop"}}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let id = body["project"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["branch"]["name"], "main");
    assert_eq!(body["branch"]["default"], true);
    assert_eq!(body["endpoints"][0]["type"], "read_write");
    let ops = body["operations"].as_array().unwrap();
    assert!(ops.iter().all(|o| o["status"] == "scheduling"));

    let (st, body) = api
        .patch(
            &format!("/projects/{id}"),
            json!({"project": {"name": "shop2"}}),
        )
        .await;
    assert_error(
        st,
        &body,
        StatusCode::LOCKED,
        "project already has running conflicting operations, scheduling of new ones is prohibited",
    );

    api.sim.clock().advance(Duration::from_secs(5));
    let op_id = ops[0]["id"].as_str().unwrap();
    let (_, op) = api.get(&format!("/projects/{id}/operations/{op_id}")).await;
    assert_eq!(op["operation"]["status"], "running");
    api.sim.clock().advance(Duration::from_secs(5));
    let (_, op) = api.get(&format!("/projects/{id}/operations/{op_id}")).await;
    assert_eq!(op["operation"]["status"], "finished");
    assert_eq!(op["operation"]["total_duration_ms"], 10_000);

    let (st, body) = api.patch(&format!("/projects/{id}"), json!({"project": {"name": "shop2", "default_endpoint_settings": {"suspend_timeout_seconds": 600}}})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["project"]["name"], "shop2");
    let (st, body) = api
        .patch(
            &format!("/projects/{id}"),
            json!({"project": {"default_endpoint_settings": {"suspend_timeout_seconds": 30}}}),
        )
        .await;
    assert_error(
        st,
        &body,
        StatusCode::BAD_REQUEST,
        "suspend_timeout_seconds",
    );

    let (_, list) = api.get(&format!("/projects/{id}/operations?limit=1")).await;
    assert_eq!(list["operations"].as_array().unwrap().len(), 1);
    let c = list["pagination"]["cursor"].as_str().unwrap();
    let (_, next) = api
        .get(&format!("/projects/{id}/operations?limit=1&cursor={c}"))
        .await;
    assert_ne!(next["operations"][0]["id"], list["operations"][0]["id"]);

    let (st, _) = api.delete(&format!("/projects/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api.get(&format!("/projects/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let muts = api.sim.mutations();
    let routes: Vec<(String, Option<String>, u16)> = muts
        .iter()
        .map(|m| (m.method.clone(), m.route.clone(), m.status))
        .collect();
    assert_eq!(routes[0], ("POST".into(), Some("/projects".into()), 201));
    assert_eq!(
        routes[1],
        ("PATCH".into(), Some("/projects/{project_id}".into()), 423)
    );
    assert_eq!(muts[0].body.as_ref().unwrap()["project"]["name"], "shop");
    assert_eq!(
        routes.last().unwrap(),
        &("DELETE".into(), Some("/projects/{project_id}".into()), 200)
    );
    api.sim.clear_mutations();
    assert!(api.sim.mutations().is_empty());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn admin_routes_move_the_virtual_clock_and_expose_mutations() {
    let api = Api::start(SimConfig::default()).await;
    let before = api.sim.clock().now();
    let resp: serde_json::Value = api
        .http
        .post(format!("{}/_sim/clock/advance", api.sim.root_url()))
        .json(&json!({"seconds": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["virtual"], true);
    assert_eq!(api.sim.clock().now(), before + chrono::TimeDelta::hours(1));
    api.post("/api_keys", json!({"key_name": "x"})).await;
    let m: serde_json::Value = api
        .http
        .get(format!("{}/_sim/mutations", api.sim.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["mutations"][0]["route"], "/api_keys");
    api.sim.shutdown().await;
}

/// The mutation log is bounded: a long-running `serve` keeps the newest entries and counts
/// the ones it dropped, both through the library and `GET /_sim/mutations`.
#[tokio::test]
async fn the_mutation_log_keeps_the_newest_entries_and_counts_the_dropped() {
    let api = Api::start(SimConfig::default().mutation_log_limit(3)).await;
    for i in 0..5 {
        let (st, body) = api
            .post("/api_keys", json!({ "key_name": format!("k{i}") }))
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let names: Vec<String> = api
        .sim
        .mutations()
        .iter()
        .map(|m| {
            m.body.as_ref().unwrap()["key_name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["k2", "k3", "k4"]);
    assert_eq!(api.sim.mutations_dropped(), 2);
    let m: serde_json::Value = api
        .http
        .get(format!("{}/_sim/mutations", api.sim.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["mutations"].as_array().unwrap().len(), 3);
    assert_eq!(m["dropped"], 2);
    assert_eq!(m["limit"], 3);
    api.sim.clear_mutations();
    assert_eq!(api.sim.mutations_dropped(), 0);
    assert_eq!(
        SimConfig::default().mutation_log_limit,
        neon_sim::mutations::DEFAULT_MUTATION_LOG_LIMIT
    );
    api.sim.shutdown().await;
}

/// A project created at a sub-microsecond instant (the real clock) is not served again after
/// its own cursor: the listing ends instead of repeating the last page forever.
#[tokio::test]
async fn project_cursor_keeps_full_precision() {
    let api = Api::start(SimConfig::default()).await;
    let (p, _) = api.sim.add_project("nanos", None);
    {
        let state = api.sim.state();
        let mut s = state.lock();
        let proj = s.projects.get_mut(&p.id).unwrap();
        proj.created_at += chrono::TimeDelta::nanoseconds(123_456_789);
    }
    let (st, first) = api.get("/projects?limit=1").await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(first["projects"][0]["id"], json!(p.id));
    let c = first["pagination"]["cursor"].as_str().unwrap().to_string();
    let (st, next) = api.get(&format!("/projects?limit=1&cursor={c}")).await;
    assert_eq!(st, StatusCode::OK, "{next}");
    assert_eq!(
        next["projects"],
        json!([]),
        "the last project came back: {next}"
    );
    api.sim.shutdown().await;
}
