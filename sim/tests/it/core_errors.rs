use neon_sim::state::KeyScope;
use neon_sim::SimConfig;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{assert_error, Api};

#[tokio::test]
async fn missing_and_unknown_keys_are_401_with_request_id_echo() {
    let api = Api::start(SimConfig::default().projects(1)).await;
    let url = format!("{}/projects", api.sim.base_url());
    let resp = api
        .http
        .get(&url)
        .header("X-Request-ID", "req-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["x-request-id"], "req-abc");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["request_id"], "req-abc");
    assert_error(
        StatusCode::UNAUTHORIZED,
        &body,
        StatusCode::UNAUTHORIZED,
        "missing",
    );

    let (st, body) = api
        .call_with_key("nope", reqwest::Method::GET, "/projects", None)
        .await;
    assert_error(st, &body, StatusCode::UNAUTHORIZED, "unknown");

    // A generated request id is returned in both header and body.
    let resp = api
        .http
        .get(format!("{}/projects/nope", api.sim.base_url()))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    let header = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["request_id"], header.as_str());
    assert_eq!(body["message"], "project nope not found");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_400_general_error_not_plain_text() {
    let api = Api::start(SimConfig::default().projects(1)).await;
    let (st, body) = api.get("/projects?limit=0").await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "limit");
    let (st, body) = api.get("/projects?limit=abc").await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "query");
    let (st, body) = api.get("/projects?limit=401").await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "400");
    let p = api.sim.projects()[0].id.clone();
    let resp = api
        .http
        .patch(format!("{}/projects/{p}", api.sim.base_url()))
        .bearer_auth(&api.key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("invalid request body"));
    let (st, body) = api
        .call(reqwest::Method::DELETE, "/api_keys/not-a-number", None)
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "path");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn non_emulated_spec_operations_answer_501_naming_them() {
    let api = Api::start(SimConfig::default().projects(1)).await;
    let (st, body) = api.get("/projects/p/vpc_endpoints").await;
    assert_error(
        st,
        &body,
        StatusCode::NOT_IMPLEMENTED,
        "listProjectVPCEndpoints",
    );
    let (st, body) = api
        .post("/organizations/org-x/projects/transfer", json!({}))
        .await;
    assert_error(
        st,
        &body,
        StatusCode::NOT_IMPLEMENTED,
        "transferProjectsFromOrgToOrg",
    );
    let (st, body) = api.get("/no/such/thing").await;
    assert_error(st, &body, StatusCode::NOT_FOUND, "no such");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn emulated_operations_exist_in_the_spec() {
    let ops = neon_sim::spec::operations().unwrap();
    for (m, p, id) in neon_sim::EMULATED_OPERATIONS {
        assert!(
            ops.iter()
                .any(|o| o.method == *m && o.path == *p && o.operation_id == *id),
            "{m} {p} {id} is not in the spec"
        );
    }
}

#[tokio::test]
async fn project_scoped_and_org_keys_see_only_their_scope() {
    let api = Api::start(SimConfig::default().orgs(2).projects(4)).await;
    let projects = api.sim.projects();
    let target = &projects[0];
    let other = projects.iter().find(|p| p.id != target.id).unwrap();
    let key = api.sim.add_api_key(
        "ci",
        KeyScope::Project {
            org_id: target.org_id.clone(),
            project_id: target.id.clone(),
        },
    );
    let (st, body) = api
        .call_with_key(&key, reqwest::Method::GET, "/projects", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let ids: Vec<&str> = body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![target.id.as_str()]);
    let (st, body) = api
        .call_with_key(
            &key,
            reqwest::Method::GET,
            &format!("/projects/{}", other.id),
            None,
        )
        .await;
    assert_error(st, &body, StatusCode::NOT_FOUND, "not found");
    let (st, _) = api
        .call_with_key(
            &key,
            reqwest::Method::GET,
            &format!("/projects/{}/branches", other.id),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = api
        .call_with_key(
            &key,
            reqwest::Method::GET,
            &format!("/projects/{}/branches", target.id),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    let org = target.org_id.clone().unwrap();
    let org_key = api.sim.add_api_key(
        "org",
        KeyScope::Org {
            org_id: org.clone(),
        },
    );
    let (_, body) = api
        .call_with_key(&org_key, reqwest::Method::GET, "/projects?limit=400", None)
        .await;
    let list = body["projects"].as_array().unwrap();
    assert_eq!(
        list.len(),
        projects
            .iter()
            .filter(|p| p.org_id.as_deref() == Some(org.as_str()))
            .count()
    );
    assert!(list.iter().all(|p| p["org_id"] == org.as_str()));
    let (_, auth) = api
        .call_with_key(&org_key, reqwest::Method::GET, "/auth", None)
        .await;
    assert_eq!(auth["auth_method"], "api_key_org");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn identity_routes_and_api_key_lifecycle() {
    let api = Api::start(SimConfig::default().orgs(1)).await;
    let (st, me) = api.get("/users/me").await;
    assert_eq!(st, StatusCode::OK);
    assert!(me["email"].is_string() && me["auth_accounts"].is_array());
    let (_, orgs) = api.get("/users/me/organizations").await;
    let org_id = orgs["organizations"][0]["id"].as_str().unwrap().to_string();
    let (st, org) = api.get(&format!("/organizations/{org_id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(org["id"], org_id.as_str());
    let (st, _) = api.get("/organizations/org-unknown").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, regions) = api.get("/regions").await;
    assert!(regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["default"] == true));

    let (st, created) = api.post("/api_keys", json!({"key_name": "ci"})).await;
    assert_eq!(st, StatusCode::OK);
    let new_key = created["key"].as_str().unwrap().to_string();
    let (st, _) = api
        .call_with_key(&new_key, reqwest::Method::GET, "/auth", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, list) = api.get("/api_keys").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (st, revoked) = api.delete(&format!("/api_keys/{}", created["id"])).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(revoked["revoked"], true);
    let (st, _) = api
        .call_with_key(&new_key, reqwest::Method::GET, "/auth", None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    api.sim.shutdown().await;
}
