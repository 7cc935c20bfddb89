//! Shared projects (`GET /projects/shared`), deleted projects (`recoverable=true`, recover).

use neon_sim::SimConfig;
use reqwest::StatusCode;

use crate::support::{assert_error, Api};

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["projects"]
        .as_array()
        .unwrap_or_else(|| panic!("no projects in {body}"))
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn shared_projects_are_listed_apart_from_owned_ones() {
    let api = Api::start(SimConfig::default().projects(2)).await;
    let owned: Vec<String> = api.sim.projects().iter().map(|p| p.id.clone()).collect();
    let (shared, _) = api.sim.add_shared_project("from-a-friend");
    api.sim.add_shared_project("from-another-friend");

    let (st, body) = api.get("/projects/shared").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let listed = ids(&body);
    assert_eq!(listed.len(), 2, "{body}");
    assert!(listed.contains(&shared.id));
    assert!(listed.iter().all(|id| !owned.contains(id)));
    let me = api.sim.state().lock().primary_user_id.clone();
    assert_ne!(body["projects"][0]["owner_id"], me.as_str());

    // Paging as in GET /projects: one per page, then an empty page without a cursor.
    let (_, page1) = api.get("/projects/shared?limit=1").await;
    assert_eq!(ids(&page1).len(), 1);
    let cursor = page1["pagination"]["cursor"].as_str().unwrap().to_string();
    let (_, page2) = api
        .get(&format!("/projects/shared?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(ids(&page2).len(), 1);
    assert_ne!(ids(&page1), ids(&page2));
    let cursor = page2["pagination"]["cursor"].as_str().unwrap().to_string();
    let (_, page3) = api
        .get(&format!("/projects/shared?limit=1&cursor={cursor}"))
        .await;
    assert!(ids(&page3).is_empty() && page3.get("pagination").is_none());
    let (_, found) = api.get("/projects/shared?search=another").await;
    assert_eq!(ids(&found).len(), 1);

    // GET /projects lists only the owned ones; the shared project is still reachable.
    let (_, own) = api.get("/projects?limit=400").await;
    let mut own = ids(&own);
    own.sort();
    let mut want = owned.clone();
    want.sort();
    assert_eq!(own, want);
    let (st, _) = api.get(&format!("/projects/{}", shared.id)).await;
    assert_eq!(st, StatusCode::OK);

    let (st, body) = api.get("/projects/shared?limit=401").await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "limit");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn a_deleted_project_is_recoverable_for_seven_days() {
    let api = Api::start(SimConfig::default().projects(3)).await;
    let victim = api.sim.projects()[1].clone();
    let branches_before = api.sim.branches(&victim.id).len();
    let (st, body) = api.delete(&format!("/projects/{}", victim.id)).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let (_, live) = api.get("/projects").await;
    assert!(!ids(&live).contains(&victim.id));
    let (st, rec) = api.get("/projects?recoverable=true").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ids(&rec), vec![victim.id.clone()], "{rec}");
    assert!(rec["projects"][0]["deleted_at"].is_string());
    assert!(rec["projects"][0]["recoverable_until"].is_string());
    let (st, body) = api.get("/projects?recoverable=nope").await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "recoverable");

    let (st, body) = api
        .post(
            &format!("/projects/{}/recover", victim.id),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["project"]["id"], victim.id.as_str());
    assert_eq!(body["branches"].as_array().unwrap().len(), branches_before);
    assert_eq!(api.sim.branches(&victim.id).len(), branches_before);
    let (_, rec) = api.get("/projects?recoverable=true").await;
    assert!(ids(&rec).is_empty());
    // A live project is not recoverable.
    let (st, body) = api
        .post(
            &format!("/projects/{}/recover", victim.id),
            serde_json::json!({}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "not deleted");

    // Past the window it is gone for good.
    api.delete(&format!("/projects/{}", victim.id)).await;
    api.sim
        .clock()
        .advance(std::time::Duration::from_secs(7 * 86_400 + 1));
    let (_, rec) = api.get("/projects?recoverable=true").await;
    assert!(ids(&rec).is_empty(), "{rec}");
    let (st, body) = api
        .post(
            &format!("/projects/{}/recover", victim.id),
            serde_json::json!({}),
        )
        .await;
    assert_error(st, &body, StatusCode::NOT_FOUND, "recoverable");
    api.sim.shutdown().await;
}
