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

#[tokio::test]
async fn backup_schedules_apply_to_root_branches_only_and_an_empty_schedule_clears() {
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("p", None);
    let now = api.sim.clock().now();
    let child = api
        .sim
        .add_branch(&p.id, "dev", Some(&main.id), now)
        .expect("the child branch is added");
    let url = |b: &str| format!("/projects/{}/branches/{b}/backup_schedule", p.id);
    let daily =
        json!({"schedule": [{"frequency": "daily", "hour": 3, "retention_seconds": 86400}]});
    let (st, body) = api
        .call(reqwest::Method::PUT, &url(&child.id), Some(daily.clone()))
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "root branches only");
    assert!(api.sim.backup_schedule(&child.id).is_empty());
    // Retention beyond 35 days and the listed-but-refused frequencies.
    for (item, word) in [
        (
            json!({"frequency": "daily", "retention_seconds": 35 * 86400 + 1}),
            "35 days",
        ),
        (json!({"frequency": "hourly"}), "hourly"),
        (json!({"frequency": "yearly", "month": 1}), "yearly"),
    ] {
        let (st, body) = api
            .call(
                reqwest::Method::PUT,
                &url(&main.id),
                Some(json!({"schedule": [item]})),
            )
            .await;
        assert_error(st, &body, StatusCode::BAD_REQUEST, word);
    }
    let (st, _) = api
        .call(
            reqwest::Method::PUT,
            &url(&main.id),
            Some(json!({"schedule": [{"frequency": "daily", "retention_seconds": 35 * 86400}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "35 days is allowed");
    assert_eq!(api.sim.backup_schedule(&main.id).len(), 1);
    let (st, _) = api
        .call(
            reqwest::Method::PUT,
            &url(&main.id),
            Some(json!({"schedule": []})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(api.sim.backup_schedule(&main.id).is_empty());
    let (_, body) = api.get(&url(&main.id)).await;
    assert_eq!(body, json!({"schedule": []}));
    api.sim.shutdown().await;
}

#[tokio::test]
async fn fixtures_carry_backup_schedules_checked_by_neons_rules() {
    let dir = std::env::temp_dir().join(format!("neon-sim-schedule-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fixture.json");
    std::fs::write(
        &path,
        r#"{"projects":[{"name":"shop","branches":[
              {"name":"main","backup_schedule":[{"frequency":"weekly","day":7,"hour":4,"retention_seconds":1209600}]}]}]}"#,
    )
    .unwrap();
    let api = Api::start(SimConfig::default().fixture(&path)).await;
    let p = &api.sim.projects()[0];
    let main = api
        .sim
        .branches(&p.id)
        .into_iter()
        .find(|b| b.name == "main")
        .unwrap();
    let (_, body) = api
        .get(&format!(
            "/projects/{}/branches/{}/backup_schedule",
            p.id, main.id
        ))
        .await;
    assert_eq!(
        body,
        json!({"schedule": [{"frequency": "weekly", "day": 7, "hour": 4, "retention_seconds": 1209600}]})
    );
    api.sim.shutdown().await;
    for (text, word) in [
        (
            r#"{"projects":[{"name":"x","branches":[{"name":"dev","backup_schedule":[{"frequency":"daily"}]}]}]}"#,
            "root branches only",
        ),
        (
            r#"{"projects":[{"name":"x","branches":[{"name":"main","backup_schedule":[{"frequency":"hourly"}]}]}]}"#,
            "hourly",
        ),
        (
            r#"{"projects":[{"name":"x","branches":[{"name":"main","backup_schedule":[{"frequency":"daily","retention_seconds":3888000}]}]}]}"#,
            "35 days",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = SimConfig::default()
            .fixture(&path)
            .build_state()
            .err()
            .expect("the fixture is refused")
            .to_string();
        assert!(err.contains(word), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
