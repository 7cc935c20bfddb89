//! What Neon's own clients rely on beyond the document's required fields, and Neon's rules for
//! branch creation that the CI preview workflows use.

use neon_sim::SimConfig;
use reqwest::StatusCode;

use crate::support::Api;

#[tokio::test]
async fn users_me_carries_a_billing_account() {
    let api = Api::start(SimConfig::default()).await;
    let (st, me) = api.get("/users/me").await;
    assert_eq!(st, StatusCode::OK, "{me}");
    let ba = &me["billing_account"];
    assert_eq!(ba["state"], "active", "{me}");
    assert_eq!(ba["subscription_type"], "scale");
    assert_eq!(ba["payment_source"]["type"], "card");
    assert_eq!(ba["email"], me["email"]);
    assert!(ba["quota_reset_at_last"].as_str().unwrap().ends_with('Z'));
    api.sim.shutdown().await;
}

fn rfc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn branch_create_honours_expires_at_with_neons_rules() {
    use chrono::TimeDelta;
    use serde_json::json;
    let api = Api::start(SimConfig::default().projects(1)).await;
    let p = api.sim.projects()[0].id.clone();
    let now = api.sim.clock().now();
    let url = format!("/projects/{p}/branches");
    let before = api.sim.branches(&p).len();
    let cases = [
        (
            json!({"branch": {"name": "past", "expires_at": rfc(now - TimeDelta::hours(1))}}),
            "future",
        ),
        (
            json!({"branch": {"name": "far", "expires_at": rfc(now + TimeDelta::days(40))}}),
            "30 days",
        ),
        (
            json!({"branch": {"name": "prot", "protected": true, "expires_at": rfc(now + TimeDelta::days(1))}}),
            "protected",
        ),
        (
            json!({"branch": {"name": "bad", "expires_at": "tomorrow"}}),
            "expires_at",
        ),
    ];
    for (body, why) in cases {
        let (st, answer) = api.post(&url, body.clone()).await;
        crate::support::assert_error(st, &answer, StatusCode::BAD_REQUEST, why);
    }
    assert_eq!(
        api.sim.branches(&p).len(),
        before,
        "no refused branch was created"
    );

    let at = now + TimeDelta::hours(2);
    let (st, body) = api
        .post(
            &url,
            json!({"branch": {"name": "preview/pr-1", "expires_at": rfc(at)},
                   "endpoints": [{"type": "read_write"}]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["branch"]["expires_at"], rfc(at).as_str());
    let id = body["branch"]["id"].as_str().unwrap().to_string();
    // A branch with an expiry cannot become a parent.
    let (st, answer) = api
        .post(
            &url,
            json!({"branch": {"name": "grandchild", "parent_id": id}}),
        )
        .await;
    crate::support::assert_error(st, &answer, StatusCode::BAD_REQUEST, "expires_at");

    api.sim
        .clock()
        .advance(std::time::Duration::from_secs(2 * 3600 - 1));
    assert!(api.sim.branch(&id).is_some(), "not before its time");
    api.sim.clock().advance(std::time::Duration::from_secs(1));
    let (st, _) = api.get(&format!("{url}/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "deleted at expires_at");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn hard_delete_leaves_no_recoverable_branch_and_soft_deletes_recover() {
    use serde_json::json;
    let api = Api::start(SimConfig::default().projects(1)).await;
    let p = api.sim.projects()[0].id.clone();
    let url = format!("/projects/{p}/branches");
    let mut ids = Vec::new();
    for name in ["soft", "hard"] {
        let (st, body) = api.post(&url, json!({"branch": {"name": name}})).await;
        assert_eq!(st, StatusCode::CREATED, "{body}");
        ids.push(body["branch"]["id"].as_str().unwrap().to_string());
    }
    let (st, _) = api.delete(&format!("{url}/{}", ids[0])).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api
        .delete(&format!("{url}/{}?hard_delete=true", ids[1]))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, listed) = api.get(&format!("{url}?include_deleted=true")).await;
    let names: Vec<&str> = listed["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"soft"), "{listed}");
    assert!(!names.contains(&"hard"), "{listed}");
    let (st, body) = api
        .delete(&format!("{url}/{}?hard_delete=maybe", ids[0]))
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "hard_delete");

    // The soft-deleted one comes back, the hard-deleted one does not.
    let (st, body) = api
        .post(&format!("{url}/{}/recover", ids[1]), json!({}))
        .await;
    crate::support::assert_error(st, &body, StatusCode::NOT_FOUND, "recoverable");
    let (st, body) = api
        .post(&format!("{url}/{}/recover", ids[0]), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["branch"]["name"], "soft");
    let (st, _) = api.get(&format!("{url}/{}", ids[0])).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = api
        .post(&format!("{url}/{}/recover", ids[0]), json!({}))
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "not deleted");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn a_new_branch_and_compute_are_init_until_their_operations_finish() {
    use serde_json::json;
    let api = Api::start(
        SimConfig::default()
            .projects(1)
            .operation_duration(std::time::Duration::from_secs(10)),
    )
    .await;
    let p = api.sim.projects()[0].id.clone();
    api.sim.clock().advance(std::time::Duration::from_secs(60));
    let (st, body) = api
        .post(
            &format!("/projects/{p}/branches"),
            json!({"branch": {"name": "fresh"}, "endpoints": [{"type": "read_write"}]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["branch"]["current_state"], "init", "{body}");
    assert_eq!(body["branch"]["pending_state"], "ready");
    assert_eq!(body["endpoints"][0]["current_state"], "init");
    assert_eq!(body["endpoints"][0]["pending_state"], "active");
    let b = body["branch"]["id"].as_str().unwrap().to_string();
    let e = body["endpoints"][0]["id"].as_str().unwrap().to_string();

    api.sim.clock().advance(std::time::Duration::from_secs(9));
    let (_, got) = api.get(&format!("/projects/{p}/branches/{b}")).await;
    assert_eq!(got["branch"]["current_state"], "init");
    api.sim.clock().advance(std::time::Duration::from_secs(1));
    let (_, got) = api.get(&format!("/projects/{p}/branches/{b}")).await;
    assert_eq!(got["branch"]["current_state"], "ready", "{got}");
    assert!(got["branch"].get("pending_state").is_none());
    let (_, got) = api.get(&format!("/projects/{p}/endpoints/{e}")).await;
    assert_eq!(got["endpoint"]["current_state"], "active", "{got}");
    assert!(got["endpoint"].get("pending_state").is_none());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn roles_databases_and_connection_uris_with_secret_passwords() {
    use serde_json::json;
    let api = Api::start(SimConfig::default()).await;
    let (st, created) = api
        .post("/projects", json!({"project": {"name": "shop"}}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let p = created["project"]["id"].as_str().unwrap().to_string();
    let main = created["branch"]["id"].as_str().unwrap().to_string();
    let owner_pw = created["roles"][0]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(created["connection_uris"][0]["connection_uri"]
        .as_str()
        .unwrap()
        .contains(&format!("neondb_owner:{owner_pw}@")));
    let roles = format!("/projects/{p}/branches/{main}/roles");
    let (_, listed) = api.get(&roles).await;
    assert_eq!(listed["roles"][0]["name"], "neondb_owner");
    assert!(listed["roles"][0].get("password").is_none(), "{listed}");

    let (st, made) = api.post(&roles, json!({"role": {"name": "app"}})).await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    let pw = made["role"]["password"].as_str().unwrap().to_string();
    let (_, got) = api.get(&format!("{roles}/app")).await;
    assert!(got["role"].get("password").is_none());
    let (_, shown) = api.get(&format!("{roles}/app/reveal_password")).await;
    assert_eq!(shown["password"], pw.as_str());
    let (_, reset) = api
        .post(&format!("{roles}/app/reset_password"), json!({}))
        .await;
    let new_pw = reset["role"]["password"].as_str().unwrap().to_string();
    assert_ne!(new_pw, pw);
    let (_, shown) = api.get(&format!("{roles}/app/reveal_password")).await;
    assert_eq!(shown["password"], new_pw.as_str());
    let (st, body) = api
        .post(&roles, json!({"role": {"name": "x".repeat(64)}}))
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "63 bytes");

    let dbs = format!("/projects/{p}/branches/{main}/databases");
    let (st, db) = api
        .post(
            &dbs,
            json!({"database": {"name": "orders", "owner_name": "app"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{db}");
    let (st, body) = api.delete(&format!("{roles}/app")).await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "owns database");
    let (_, uri) = api
        .get(&format!(
            "/projects/{p}/connection_uri?database_name=orders&role_name=app"
        ))
        .await;
    let uri = uri["uri"].as_str().unwrap().to_string();
    assert!(
        uri.starts_with(&format!("postgresql://app:{new_pw}@ep-")),
        "{uri}"
    );
    assert!(uri.ends_with("/orders?sslmode=require"), "{uri}");
    let (_, pooled) = api
        .get(&format!(
            "/projects/{p}/connection_uri?database_name=orders&role_name=app&pooled=true"
        ))
        .await;
    assert!(pooled["uri"].as_str().unwrap().contains("-pooler."));
    let (st, body) = api
        .get(&format!("/projects/{p}/connection_uri?role_name=app"))
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "database_name");

    // A child branch inherits roles (with their passwords) and databases.
    let (_, child) = api
        .post(
            &format!("/projects/{p}/branches"),
            json!({"branch": {"name": "dev"}}),
        )
        .await;
    let child = child["branch"]["id"].as_str().unwrap().to_string();
    let (_, shown) = api
        .get(&format!(
            "/projects/{p}/branches/{child}/roles/app/reveal_password"
        ))
        .await;
    assert_eq!(shown["password"], new_pw.as_str());
    let (_, listed) = api
        .get(&format!("/projects/{p}/branches/{child}/databases"))
        .await;
    let names: Vec<&str> = listed["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["neondb", "orders"]);
    // Passwords never reach Debug output of the model.
    let debug = format!("{:?}", api.sim.state().lock().roles);
    assert!(!debug.contains(&new_pw), "{debug}");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn branch_restore_resets_from_the_parent_and_preserves_the_old_state() {
    use chrono::TimeDelta;
    use serde_json::json;
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("restore", None);
    let now = api.sim.clock().now();
    let url = format!("/projects/{}/branches", p.id);
    let (_, dev) = api.post(&url, json!({"branch": {"name": "dev"}})).await;
    let dev = dev["branch"]["id"].as_str().unwrap().to_string();
    // dev gets a role main does not have; a reset from the parent drops it.
    api.post(
        &format!("{url}/{dev}/roles"),
        json!({"role": {"name": "tmp"}}),
    )
    .await;
    api.sim.clock().advance(std::time::Duration::from_secs(60));
    let (st, body) = api
        .post(
            &format!("{url}/{dev}/restore"),
            json!({"source_branch_id": main.id}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["branch"]["parent_id"], main.id.as_str());
    assert!(body["branch"]["last_reset_at"].is_string(), "{body}");
    let (st, _) = api.get(&format!("{url}/{dev}/roles/tmp")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "the reset took main's roles");

    // From its own history: needs a point in time and preserve_under_name.
    let own = json!({"source_branch_id": main.id, "source_timestamp": rfc(now)});
    let (st, body) = api
        .post(&format!("{url}/{}/restore", main.id), own.clone())
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "preserve_under_name");
    let (st, body) = api
        .post(
            &format!("{url}/{}/restore", main.id),
            json!({"source_branch_id": main.id}),
        )
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "source_timestamp");
    let (st, body) = api
        .post(
            &format!("{url}/{}/restore", main.id),
            json!({"source_branch_id": main.id, "preserve_under_name": "main_old",
                   "source_timestamp": rfc(now - TimeDelta::days(2))}),
        )
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "history");
    let (st, body) = api
        .post(
            &format!("{url}/{}/restore", main.id),
            json!({"source_branch_id": main.id, "preserve_under_name": "main_old",
                   "source_timestamp": rfc(now)}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let backup = body["branch"]["parent_id"].as_str().unwrap().to_string();
    let backup_branch = api.sim.branch(&backup).expect("the backup branch exists");
    assert_eq!(backup_branch.name, "main_old");
    assert_eq!(
        api.sim.branch(&dev).unwrap().parent_id.as_deref(),
        Some(backup.as_str()),
        "the children moved to the backup"
    );
    let (st, body) = api
        .post(
            &format!("{url}/{}/restore", main.id),
            json!({"source_branch_id": "br-none-1"}),
        )
        .await;
    crate::support::assert_error(st, &body, StatusCode::NOT_FOUND, "source branch");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn snapshot_rules_and_the_quota_423() {
    use serde_json::json;
    let api = Api::start(SimConfig::default()).await;
    let org = api.sim.add_org("free-org");
    api.sim.state().lock().orgs.get_mut(&org).unwrap().plan = "free_v3".into();
    let (p, main) = api.sim.add_project("free", Some(&org));
    let url = format!("/projects/{}/branches", p.id);
    let (_, child) = api.post(&url, json!({"branch": {"name": "child"}})).await;
    let child = child["branch"]["id"].as_str().unwrap().to_string();

    let (st, body) = api
        .post(&format!("{url}/{child}/snapshot?name=c"), json!({}))
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "root branches only");
    let (st, body) = api
        .post(&format!("{url}/{}/snapshot?name=first", main.id), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The Free plan's one manual snapshot is taken: a quota 423, told apart by its code.
    let (st, body) = api
        .post(
            &format!("{url}/{}/snapshot?name=second", main.id),
            json!({}),
        )
        .await;
    crate::support::assert_error(st, &body, StatusCode::LOCKED, "quota");
    assert_eq!(body["code"], "QUOTA_EXCEEDED", "{body}");
    let sid = api.sim.snapshots(&p.id)[0].id.clone();
    api.delete(&format!("/projects/{}/snapshots/{sid}", p.id))
        .await;
    let (st, body) = api
        .post(
            &format!("{url}/{}/snapshot?name=second", main.id),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "deleting one frees the quota: {body}");

    // Names are unique per project (on a paid plan, where the limit is 100).
    let (paid, paid_main) = api.sim.add_project("paid", None);
    let snap = format!("/projects/{}/branches/{}/snapshot", paid.id, paid_main.id);
    let (st, _) = api.post(&format!("{snap}?name=nightly"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = api.post(&format!("{snap}?name=nightly"), json!({})).await;
    crate::support::assert_error(st, &body, StatusCode::CONFLICT, "already exists");

    // Backup schedules: hourly and yearly are refused, retention at most 35 days.
    let sched = format!(
        "/projects/{}/branches/{}/backup_schedule",
        paid.id, paid_main.id
    );
    for (item, why) in [
        (json!({"frequency": "hourly"}), "not supported"),
        (
            json!({"frequency": "yearly", "month": 1, "day": 1}),
            "not supported",
        ),
        (
            json!({"frequency": "daily", "hour": 1, "retention_seconds": 36 * 86_400}),
            "35 days",
        ),
    ] {
        let (st, body) = api
            .call(
                reqwest::Method::PUT,
                &sched,
                Some(json!({"schedule": [item]})),
            )
            .await;
        crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, why);
    }
    let (st, body) = api
        .call(
            reqwest::Method::PUT,
            &sched,
            Some(json!({"schedule": [{"frequency": "daily", "hour": 1, "retention_seconds": 35 * 86_400}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn schema_compare_diffs_a_database_against_the_parent() {
    use serde_json::json;
    let api = Api::start(SimConfig::default()).await;
    let (p, main) = api.sim.add_project("schemas", None);
    assert!(api
        .sim
        .set_schema(&main.id, "neondb", &["CREATE TABLE users (id int);"]));
    let url = format!("/projects/{}/branches", p.id);
    let (_, dev) = api.post(&url, json!({"branch": {"name": "dev"}})).await;
    let dev = dev["branch"]["id"].as_str().unwrap().to_string();
    let compare = format!("{url}/{dev}/compare_schema?db_name=neondb");
    let (st, body) = api.get(&compare).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["diff"], "", "a child starts with its parent's schema");
    api.sim.set_schema(
        &dev,
        "neondb",
        &[
            "CREATE TABLE users (id int);",
            "CREATE TABLE orders (id int);",
        ],
    );
    let (_, body) = api.get(&compare).await;
    let diff = body["diff"].as_str().unwrap();
    assert!(
        diff.contains("\n+CREATE TABLE orders (id int);\n"),
        "{diff}"
    );
    assert!(diff.contains("\n CREATE TABLE users (id int);\n"), "{diff}");
    let (st, body) = api
        .get(&format!("{url}/{}/compare_schema?db_name=neondb", main.id))
        .await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "base_branch_id");
    let (st, body) = api
        .get(&format!(
            "{url}/{}/compare_schema?db_name=neondb&base_branch_id={dev}",
            main.id
        ))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(body["diff"]
        .as_str()
        .unwrap()
        .contains("\n-CREATE TABLE orders"));
    let (st, body) = api.get(&format!("{url}/{dev}/compare_schema")).await;
    crate::support::assert_error(st, &body, StatusCode::BAD_REQUEST, "db_name");
    api.sim.shutdown().await;
}
