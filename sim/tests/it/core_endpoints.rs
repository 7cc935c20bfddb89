use std::time::Duration;

use neon_sim::state::{Activity, EndpointType};
use neon_sim::SimConfig;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{assert_error, Api};

#[tokio::test]
async fn endpoints_autosuspend_by_the_clock_and_busy_ones_stay_active() {
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("p", None);
    let idle = api
        .sim
        .add_endpoint(&main.id, EndpointType::ReadWrite)
        .unwrap();
    let b = api
        .sim
        .add_branch(&p.id, "dev", None, api.sim.clock().now())
        .unwrap();
    let busy = api
        .sim
        .add_endpoint(&b.id, EndpointType::ReadWrite)
        .unwrap();
    api.sim.set_endpoint_activity(&busy.id, Activity::Busy);
    let url = |id: &str| format!("/projects/{}/endpoints/{id}", p.id);

    let (st, body) = api
        .post(&format!("{}/start", url(&idle.id)), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["endpoint"]["current_state"], "active");
    assert_eq!(body["operations"][0]["action"], "start_compute");
    let started = api.sim.clock().now();

    api.sim.clock().advance(Duration::from_secs(299));
    let (_, body) = api.get(&url(&idle.id)).await;
    assert_eq!(body["endpoint"]["current_state"], "active");
    api.sim.clock().advance(Duration::from_secs(2));
    let (_, body) = api.get(&url(&idle.id)).await;
    assert_eq!(body["endpoint"]["current_state"], "idle");
    let expected = (started + chrono::TimeDelta::seconds(300))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(body["endpoint"]["suspended_at"], expected.as_str());
    let (_, body) = api.get(&url(&busy.id)).await;
    assert_eq!(body["endpoint"]["current_state"], "active");

    // Consumption facts follow the activity: exactly 300 s for the idle compute.
    {
        let s = api.sim.state();
        let model = s.lock();
        assert_eq!(
            model.endpoint_active_seconds(&idle.id, started, model.now()),
            300
        );
    }

    // -1 never suspends; invalid values are refused.
    let (st, body) = api
        .patch(
            &url(&idle.id),
            json!({"endpoint": {"suspend_timeout_seconds": 59}}),
        )
        .await;
    assert_error(
        st,
        &body,
        StatusCode::BAD_REQUEST,
        "suspend_timeout_seconds",
    );
    let (st, _) = api
        .patch(
            &url(&idle.id),
            json!({"endpoint": {"suspend_timeout_seconds": -1}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    api.post(&format!("{}/start", url(&idle.id)), json!({}))
        .await;
    api.sim.clock().advance(Duration::from_secs(7 * 86_400));
    let (_, body) = api.get(&url(&idle.id)).await;
    assert_eq!(body["endpoint"]["current_state"], "active");

    let (st, body) = api
        .post(&format!("{}/suspend", url(&idle.id)), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["endpoint"]["current_state"], "idle");
    let (st, body) = api
        .post(&format!("{}/restart", url(&busy.id)), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["operations"].as_array().unwrap().len(), 2);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn endpoint_crud_and_listing() {
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("p", None);
    let base = format!("/projects/{}/endpoints", p.id);
    let (st, body) = api
        .post(
            &base,
            json!({"endpoint": {"branch_id": main.id, "type": "read_write"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let ep = body["endpoint"]["id"].as_str().unwrap().to_string();
    let (st, body) = api
        .post(
            &base,
            json!({"endpoint": {"branch_id": main.id, "type": "read_write"}}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "read_write");
    let (st, body) = api
        .post(
            &base,
            json!({"endpoint": {"branch_id": main.id, "type": "writer"}}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "type");
    let (st, _) = api
        .post(
            &base,
            json!({"endpoint": {"branch_id": main.id, "type": "read_only"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, body) = api.get(&base).await;
    assert_eq!(body["endpoints"].as_array().unwrap().len(), 2);
    let (_, body) = api
        .get(&format!(
            "/projects/{}/branches/{}/endpoints",
            p.id, main.id
        ))
        .await;
    assert_eq!(body["endpoints"].as_array().unwrap().len(), 2);
    let (st, body) = api
        .patch(
            &format!("{base}/{ep}"),
            json!({"endpoint": {"disabled": true}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["endpoint"]["disabled"], true);
    assert_eq!(body["endpoint"]["current_state"], "idle");
    let (st, body) = api.post(&format!("{base}/{ep}/start"), json!({})).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "disabled");
    let (st, _) = api.delete(&format!("{base}/{ep}")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api.get(&format!("{base}/{ep}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    api.sim.shutdown().await;
}
