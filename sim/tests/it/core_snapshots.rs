use chrono::TimeDelta;
use neon_sim::SimConfig;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{assert_error, Api};

#[tokio::test]
async fn snapshot_lifecycle_and_expiry() {
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("p", None);
    let now = api.sim.clock().now();
    let base = format!("/projects/{}/branches/{}/snapshot", p.id, main.id);
    let exp = (now + TimeDelta::hours(2)).to_rfc3339();
    let (st, body) = api
        .post(
            &format!("{base}?name=nightly&expires_at={}", exp.replace('+', "%2B")),
            json!(null),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let snap = body["snapshot"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["snapshot"]["name"], "nightly");
    assert_eq!(body["snapshot"]["source_branch_id"], main.id.as_str());
    let (st, body) = api
        .post(
            &format!("{base}?lsn=0/16B3748&timestamp=2025-01-01T00:00:00Z"),
            json!(null),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "together");
    let (st, body) = api
        .post(
            &format!("{base}?expires_at=2000-01-01T00:00:00Z"),
            json!(null),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "future");

    let (st, body) = api
        .patch(
            &format!("/projects/{}/snapshots/{snap}", p.id),
            json!({"snapshot": {"name": "renamed"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["snapshot"]["name"], "renamed");
    let (st, body) = api
        .post(
            &format!("/projects/{}/snapshots/{snap}/restore", p.id),
            json!({"name": "restored"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["branch"]["name"], "restored");
    assert_eq!(body["branch"]["parent_id"], main.id.as_str());

    let (_, body) = api.get(&format!("/projects/{}/snapshots", p.id)).await;
    assert_eq!(body["snapshots"].as_array().unwrap().len(), 1);
    api.sim
        .clock()
        .advance(std::time::Duration::from_secs(3 * 3600));
    let (_, body) = api.get(&format!("/projects/{}/snapshots", p.id)).await;
    assert!(body["snapshots"].as_array().unwrap().is_empty());

    let (_, body) = api.post(&base, json!(null)).await;
    let snap = body["snapshot"]["id"].as_str().unwrap().to_string();
    let (st, body) = api
        .delete(&format!("/projects/{}/snapshots/{snap}", p.id))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert!(body["operations"].is_array());
    let (st, _) = api
        .delete(&format!("/projects/{}/snapshots/{snap}", p.id))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn backup_schedule_is_validated_and_stored() {
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("p", None);
    let url = format!("/projects/{}/branches/{}/backup_schedule", p.id, main.id);
    let (_, body) = api.get(&url).await;
    assert_eq!(body, json!({"schedule": []}));
    let (st, body) = api
        .call(
            reqwest::Method::PUT,
            &url,
            Some(json!({"schedule": [{"frequency": "minutely"}]})),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "frequency");
    let (st, body) = api
        .call(
            reqwest::Method::PUT,
            &url,
            Some(json!({"schedule": [{"frequency": "daily", "hour": 24}]})),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "hour");
    let (st, body) = api
        .call(
            reqwest::Method::PUT,
            &url,
            Some(json!({"schedule": [{"frequency": "daily", "retention_seconds": 60}]})),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "retention_seconds");
    let schedule = json!({"schedule": [{"frequency": "daily", "hour": 3, "retention_seconds": 604800}, {"frequency": "weekly", "day": 7}]});
    let (st, _) = api
        .call(reqwest::Method::PUT, &url, Some(schedule.clone()))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = api.get(&url).await;
    assert_eq!(body, schedule);
    api.sim.shutdown().await;
}
