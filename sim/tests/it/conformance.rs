//! Conformance: every emulated operation, exercised against a running emulator, answers with
//! bodies that match the response schemas of Neon's OpenAPI document, for success and error
//! statuses alike. Coverage is tracked per operation: the test fails if any operation in
//! `EMULATED_OPERATIONS` lacks a validated success answer or a validated error answer.
//! Request bodies the test sends (the valid ones) are checked against the request schemas too.
//!
//! Every operation of the document that the emulator does not emulate must answer 501 with a
//! `GeneralError`.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use neon_sim::openapi::{validate_neon_request, validate_neon_response, Spec};
use neon_sim::{Sim, SimConfig, EMULATED_OPERATIONS};
use serde_json::{json, Value};

type OpKey = (String, String);

/// A client that validates every answer and records which operations it covered.
struct Harness {
    sim: Sim,
    http: reqwest::Client,
    key: String,
    success: BTreeSet<OpKey>,
    errors: BTreeSet<OpKey>,
    /// Every (operation, status) answered and validated, to check that each status the
    /// document lists for an emulated operation is exercised.
    statuses: BTreeSet<(String, String, u16)>,
    failures: Vec<String>,
    /// The same bodies checked by `boon` over the converted document (not `openapi.rs`).
    independent: crate::independent::Independent,
    independently_checked: usize,
}

enum Expect {
    Success,
    Error(u16),
    /// Exactly this status (a success the document lists besides the usual one, e.g. 204).
    Status(u16),
}

impl Harness {
    async fn start() -> Harness {
        let sim = Sim::start(SimConfig::default().orgs(1).projects(3))
            .await
            .expect("the emulator starts");
        let key = sim.api_key();
        Harness {
            sim,
            http: reqwest::Client::new(),
            key,
            success: BTreeSet::new(),
            errors: BTreeSet::new(),
            statuses: BTreeSet::new(),
            failures: Vec::new(),
            independent: crate::independent::Independent::neon(),
            independently_checked: 0,
        }
    }

    async fn now(&self) -> DateTime<Utc> {
        let v: Value = self
            .http
            .get(format!("{}/_sim/clock", self.sim.root_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        DateTime::parse_from_rfc3339(v["now"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Sends a request (path relative to `/api/v2`, query included), validates the answer
    /// against the document and records coverage. Returns the body (`Null` when empty).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        expect: Expect,
    ) -> Value {
        self.call_with_key(Some(self.key.clone()), method, path, body, expect)
            .await
    }

    async fn call_with_key(
        &mut self,
        key: Option<String>,
        method: &str,
        path: &str,
        body: Option<Value>,
        expect: Expect,
    ) -> Value {
        let spec = Spec::neon();
        let Some(op) = spec.find_operation(method, path) else {
            self.failures.push(format!(
                "{method} {path}: no such operation in the document"
            ));
            return Value::Null;
        };
        let op_key = (method.to_string(), op.template().to_string());
        if let (Expect::Success, Some(b)) = (&expect, &body) {
            if let Err(e) = validate_neon_request(method, path, Some(b)) {
                self.failures.push(format!(
                    "{method} {path}: the test's request body is invalid:\n{e}"
                ));
            }
        }
        let url = format!("{}{}", self.sim.base_url(), path);
        let mut req = self
            .http
            .request(method.parse().expect("a valid method"), &url);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.failures
                    .push(format!("{method} {path}: request failed: {e}"));
                return Value::Null;
            }
        };
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        let parsed: Option<Value> = if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.failures.push(format!(
                        "{method} {path} -> {status}: body is not JSON ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    ));
                    return Value::Null;
                }
            }
        };
        let shown = parsed.clone().unwrap_or(Value::Null);
        match expect {
            Expect::Success if !(200..300).contains(&status) => {
                self.failures.push(format!(
                    "{method} {path}: expected success, got {status}: {shown}"
                ));
                return shown;
            }
            Expect::Error(want) | Expect::Status(want) if status != want => {
                self.failures.push(format!(
                    "{method} {path}: expected {want}, got {status}: {shown}"
                ));
                return shown;
            }
            _ => {}
        }
        match self
            .independent
            .validate(method, op.template(), status, parsed.as_ref())
        {
            Err(e) => self
                .failures
                .push(format!("{method} {path}: independent validator: {e}")),
            Result::Ok(()) => self.independently_checked += 1,
        }
        if let Err(e) = op.validate_response(status, parsed.as_ref()) {
            self.failures.push(format!(
                "{method} {} ({path}) -> {status}: response does not match the document:\n{e}",
                op.template()
            ));
            return shown;
        }
        self.statuses
            .insert((op_key.0.clone(), op_key.1.clone(), status));
        if (200..300).contains(&status) {
            self.success.insert(op_key);
        } else {
            self.errors.insert(op_key);
        }
        shown
    }
}

fn s(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(|x| {
            x.as_str()
                .map(str::to_string)
                .or_else(|| x.as_i64().map(|n| n.to_string()))
        })
        .unwrap_or_else(|| panic!("no {pointer} in {v}"))
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn every_emulated_operation_conforms_to_the_document() {
    use Expect::{Error as E, Success as Ok};
    let mut h = Harness::start().await;
    let now = h.now().await;

    // ----- identity --------------------------------------------------------------------------
    h.call("GET", "/auth", None, Ok).await;
    h.call_with_key(Some("not-a-key".into()), "GET", "/auth", None, E(401))
        .await;
    h.call("GET", "/users/me", None, Ok).await;
    h.call_with_key(None, "GET", "/users/me", None, E(401))
        .await;
    let orgs = h.call("GET", "/users/me/organizations", None, Ok).await;
    h.call_with_key(None, "GET", "/users/me/organizations", None, E(401))
        .await;
    let org = s(&orgs, "/organizations/0/id");
    h.call("GET", &format!("/organizations/{org}"), None, Ok)
        .await;
    h.call("GET", "/organizations/org-does-not-exist-1", None, E(404))
        .await;
    h.call("GET", "/api_keys", None, Ok).await;
    h.call_with_key(None, "GET", "/api_keys", None, E(401))
        .await;
    let created = h
        .call(
            "POST",
            "/api_keys",
            Some(json!({"key_name": "conformance"})),
            Ok,
        )
        .await;
    h.call("POST", "/api_keys", Some(json!({"key_name": 5})), E(400))
        .await;
    let key_id = s(&created, "/id");
    h.call("DELETE", &format!("/api_keys/{key_id}"), None, Ok)
        .await;
    h.call("DELETE", "/api_keys/987654321", None, E(404)).await;
    h.call("GET", "/regions", None, Ok).await;
    h.call_with_key(None, "GET", "/regions", None, E(401)).await;

    // ----- projects --------------------------------------------------------------------------
    h.call("GET", "/projects", None, Ok).await;
    h.call("GET", &format!("/projects?limit=2&org_id={org}"), None, Ok)
        .await;
    h.call("GET", "/projects?limit=0", None, E(400)).await;
    h.sim.add_shared_project("conformance-shared");
    h.call("GET", "/projects/shared", None, Ok).await;
    h.call("GET", "/projects/shared?limit=0", None, E(400))
        .await;
    let created = h
        .call(
            "POST",
            "/projects",
            Some(json!({"project": {"name": "conformance", "org_id": org}})),
            Ok,
        )
        .await;
    h.call("POST", "/projects", Some(json!({"project": 5})), E(400))
        .await;
    let p = s(&created, "/project/id");
    let main = s(&created, "/branch/id");
    let op_id = s(&created, "/operations/0/id");
    h.call("GET", &format!("/projects/{p}"), None, Ok).await;
    h.call("GET", "/projects/no-such-project-1", None, E(404))
        .await;
    h.call(
        "PATCH",
        &format!("/projects/{p}"),
        Some(json!({"project": {"name": "conformance-renamed"}})),
        Ok,
    )
    .await;
    h.call(
        "PATCH",
        "/projects/no-such-project-1",
        Some(json!({"project": {"name": "x"}})),
        E(404),
    )
    .await;

    // ----- branches --------------------------------------------------------------------------
    let bp = format!("/projects/{p}/branches");
    h.call("GET", &bp, None, Ok).await;
    h.call("GET", &format!("{bp}?sort_by=size"), None, E(400))
        .await;
    let b1 = h
        .call(
            "POST",
            &bp,
            Some(
                json!({"branch": {"name": "preview/conformance-1", "parent_id": main},
                        "endpoints": [{"type": "read_write"}]}),
            ),
            Ok,
        )
        .await;
    h.call(
        "POST",
        &bp,
        Some(json!({"branch": {"parent_id": "br-does-not-exist-1"}})),
        E(404),
    )
    .await;
    let e1 = s(&b1, "/endpoints/0/id");
    let b1 = s(&b1, "/branch/id");
    let b2 = h
        .call(
            "POST",
            &bp,
            Some(json!({"branch": {"name": "conformance-2"}})),
            Ok,
        )
        .await;
    let b2 = s(&b2, "/branch/id");
    let b3 = h
        .call(
            "POST",
            &bp,
            Some(json!({"branch": {"name": "conformance-3"}})),
            Ok,
        )
        .await;
    let b3 = s(&b3, "/branch/id");
    h.call("GET", &format!("{bp}/count"), None, Ok).await;
    h.call(
        "GET",
        "/projects/no-such-project-1/branches/count",
        None,
        E(404),
    )
    .await;
    h.call("GET", &format!("{bp}/{b1}"), None, Ok).await;
    h.call("GET", &format!("{bp}/br-does-not-exist-1"), None, E(404))
        .await;
    h.call(
        "PATCH",
        &format!("{bp}/{b1}"),
        Some(json!({"branch": {"expires_at": rfc(now + TimeDelta::days(1))}})),
        Ok,
    )
    .await;
    h.call(
        "PATCH",
        &format!("{bp}/{b1}"),
        Some(json!({"branch": {"expires_at": rfc(now + TimeDelta::days(40))}})),
        E(400),
    )
    .await;
    h.call("POST", &format!("{bp}/{b2}/set_as_default"), None, Ok)
        .await;
    h.call(
        "POST",
        &format!("{bp}/br-does-not-exist-1/set_as_default"),
        None,
        E(404),
    )
    .await;
    h.call("DELETE", &format!("{bp}/{b3}"), None, Ok).await;
    h.call("POST", &format!("{bp}/{b3}/recover"), None, Ok)
        .await;
    h.call(
        "POST",
        &format!("{bp}/br-does-not-exist-1/recover"),
        None,
        E(404),
    )
    .await;
    h.call("DELETE", &format!("{bp}/{b3}"), None, Ok).await;
    // The soft-deleted branch is listed with its recovery information (BranchRecoveryInfo).
    let listed = h
        .call("GET", &format!("{bp}?include_deleted=true"), None, Ok)
        .await;
    let recovered = listed["branches"]
        .as_array()
        .expect("branches array")
        .iter()
        .find(|b| b["id"] == json!(b3))
        .expect("the deleted branch is listed with include_deleted=true");
    assert_eq!(recovered["recovery"]["deletion_method"], json!("user"));
    assert!(recovered["recovery"]["recoverable_until"].is_string());
    // The document: 204 "if the branch doesn't exist or has already been deleted".
    h.call(
        "DELETE",
        &format!("{bp}/br-does-not-exist-1"),
        None,
        Expect::Status(204),
    )
    .await;
    h.call("DELETE", &format!("{bp}/{b3}"), None, Expect::Status(204))
        .await;
    h.call(
        "DELETE",
        "/projects/no-such-project-1/branches/br-does-not-exist-1",
        None,
        E(404),
    )
    .await;
    h.call("GET", &format!("{bp}/{b1}/endpoints"), None, Ok)
        .await;
    h.call(
        "GET",
        &format!("{bp}/br-does-not-exist-1/endpoints"),
        None,
        E(404),
    )
    .await;

    // ----- endpoints -------------------------------------------------------------------------
    let ep = format!("/projects/{p}/endpoints");
    h.call("GET", &ep, None, Ok).await;
    h.call("GET", "/projects/no-such-project-1/endpoints", None, E(404))
        .await;
    let e2 = h
        .call(
            "POST",
            &ep,
            Some(json!({"endpoint": {"branch_id": b2, "type": "read_write"}})),
            Ok,
        )
        .await;
    h.call(
        "POST",
        &ep,
        Some(json!({"endpoint": {"branch_id": b2, "type": "bogus"}})),
        E(400),
    )
    .await;
    let e2 = s(&e2, "/endpoint/id");
    h.call("GET", &format!("{ep}/{e1}"), None, Ok).await;
    h.call("GET", &format!("{ep}/ep-does-not-exist-1"), None, E(404))
        .await;
    h.call(
        "PATCH",
        &format!("{ep}/{e1}"),
        Some(json!({"endpoint": {"suspend_timeout_seconds": 600}})),
        Ok,
    )
    .await;
    h.call(
        "PATCH",
        &format!("{ep}/{e1}"),
        Some(json!({"endpoint": {"suspend_timeout_seconds": 5}})),
        E(400),
    )
    .await;
    for action in ["start", "suspend", "restart"] {
        h.call("POST", &format!("{ep}/{e1}/{action}"), None, Ok)
            .await;
        h.call(
            "POST",
            &format!("{ep}/ep-does-not-exist-1/{action}"),
            None,
            E(404),
        )
        .await;
    }
    h.call("DELETE", &format!("{ep}/{e2}"), None, Ok).await;
    h.call(
        "DELETE",
        &format!("{ep}/ep-does-not-exist-1"),
        None,
        Expect::Status(204),
    )
    .await;
    h.call("DELETE", &format!("{ep}/{e2}"), None, Expect::Status(204))
        .await;
    h.call(
        "DELETE",
        "/projects/no-such-project-1/endpoints/ep-does-not-exist-1",
        None,
        E(404),
    )
    .await;

    // ----- snapshots and backup schedules ----------------------------------------------------
    let snap = h
        .call(
            "POST",
            &format!("{bp}/{main}/snapshot?name=conformance-snap"),
            None,
            Ok,
        )
        .await;
    h.call(
        "POST",
        &format!("{bp}/{main}/snapshot?timestamp=yesterday"),
        None,
        E(400),
    )
    .await;
    let sid = s(&snap, "/snapshot/id");
    let sp = format!("/projects/{p}/snapshots");
    h.call("GET", &sp, None, Ok).await;
    h.call("GET", "/projects/no-such-project-1/snapshots", None, E(404))
        .await;
    h.call(
        "PATCH",
        &format!("{sp}/{sid}"),
        Some(json!({"snapshot": {"name": "renamed-snap"}})),
        Ok,
    )
    .await;
    h.call(
        "PATCH",
        &format!("{sp}/snap-does-not-exist-1"),
        Some(json!({"snapshot": {"name": "x"}})),
        E(404),
    )
    .await;
    h.call(
        "POST",
        &format!("{sp}/{sid}/restore"),
        Some(json!({"name": "restored-from-snap"})),
        Ok,
    )
    .await;
    h.call(
        "POST",
        &format!("{sp}/snap-does-not-exist-1/restore"),
        Some(json!({})),
        E(404),
    )
    .await;
    h.call("GET", &format!("{bp}/{b1}/backup_schedule"), None, Ok)
        .await;
    h.call(
        "GET",
        &format!("{bp}/br-does-not-exist-1/backup_schedule"),
        None,
        E(404),
    )
    .await;
    h.call(
        "PUT",
        &format!("{bp}/{main}/backup_schedule"),
        Some(json!({"schedule": [{"frequency": "daily", "hour": 3, "retention_seconds": 604800}]})),
        Ok,
    )
    .await;
    // Root branches only (Neon's rule).
    h.call(
        "PUT",
        &format!("{bp}/{b1}/backup_schedule"),
        Some(json!({"schedule": [{"frequency": "daily", "hour": 3}]})),
        E(400),
    )
    .await;
    h.call(
        "PUT",
        &format!("{bp}/{main}/backup_schedule"),
        Some(json!({"schedule": [{"frequency": "never"}]})),
        E(400),
    )
    .await;
    h.call("DELETE", &format!("{sp}/{sid}"), None, Ok).await;
    h.call(
        "DELETE",
        &format!("{sp}/snap-does-not-exist-1"),
        None,
        E(404),
    )
    .await;

    // ----- operations ------------------------------------------------------------------------
    h.call("GET", &format!("/projects/{p}/operations"), None, Ok)
        .await;
    h.call(
        "GET",
        "/projects/no-such-project-1/operations",
        None,
        E(404),
    )
    .await;
    h.call(
        "GET",
        &format!("/projects/{p}/operations/{op_id}"),
        None,
        Ok,
    )
    .await;
    h.call(
        "GET",
        &format!("/projects/{p}/operations/00000000-0000-4000-8000-000000000000"),
        None,
        E(404),
    )
    .await;

    // ----- consumption -----------------------------------------------------------------------
    let day_ago = rfc(now - TimeDelta::days(2));
    let today = rfc(now);
    let ten_days_ago = rfc(now - TimeDelta::days(10));
    let q = format!("from={day_ago}&to={today}&granularity=daily&org_id={org}");
    h.call(
        "GET",
        &format!("/consumption_history/v2/projects?{q}&metrics=compute_unit_seconds,extra_branches_month"),
        None,
        Ok,
    )
    .await;
    h.call(
        "GET",
        &format!("/consumption_history/v2/projects?from={ten_days_ago}&to={today}&granularity=hourly&org_id={org}&metrics=compute_unit_seconds"),
        None,
        E(406),
    )
    .await;
    h.call(
        "GET",
        &format!("/consumption_history/v2/branches?{q}&project_ids={p}&metrics=compute_unit_seconds&metrics=root_branch_bytes_month"),
        None,
        Ok,
    )
    .await;
    h.call(
        "GET",
        &format!("/consumption_history/v2/branches?{q}&metrics=compute_unit_seconds"),
        None,
        E(400),
    )
    .await;
    h.call(
        "GET",
        &format!("/consumption_history/projects?from={day_ago}&to={today}&granularity=hourly"),
        None,
        Ok,
    )
    .await;
    h.call(
        "GET",
        &format!("/consumption_history/projects?from={day_ago}&to={today}&granularity=weekly"),
        None,
        E(400),
    )
    .await;
    h.call(
        "GET",
        &format!(
            "/consumption_history/account?from={day_ago}&to={today}&granularity=daily&org_id={org}"
        ),
        None,
        Ok,
    )
    .await;
    h.call(
        "GET",
        &format!("/consumption_history/account?from={ten_days_ago}&to={today}&granularity=hourly"),
        None,
        E(406),
    )
    .await;

    // Every status the document lists for the consumption endpoints (but 403, see below):
    // 404 for an org that is not the caller's, 406 for a range outside the window (here a `to`
    // in the future), and 429 from the consumption endpoints' own, lower rate limit.
    let future = rfc(now + TimeDelta::days(3));
    let consumption_paths = [
        "/consumption_history/v2/projects?metrics=compute_unit_seconds".to_string(),
        format!("/consumption_history/v2/branches?project_ids={p}&metrics=compute_unit_seconds"),
        "/consumption_history/projects?limit=1".to_string(),
        "/consumption_history/account?include_v1_metrics=false".to_string(),
    ];
    for path in &consumption_paths {
        h.call(
            "GET",
            &format!("{path}&{q}").replace(&org, "org-not-mine-1"),
            None,
            E(404),
        )
        .await;
        h.call(
            "GET",
            &format!("{path}&from={day_ago}&to={future}&granularity=daily&org_id={org}"),
            None,
            E(406),
        )
        .await;
    }
    // The consumption limit is shared by the four routes: exhaust it on one, then each answers 429.
    let mut limited = false;
    for _ in 0..100 {
        let url = format!("{}{}&{q}", h.sim.base_url(), consumption_paths[0]);
        let r = h.http.get(&url).bearer_auth(&h.key).send().await.unwrap();
        if r.status().as_u16() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the consumption rate limit never answered 429");
    for path in &consumption_paths {
        h.call("GET", &format!("{path}&{q}"), None, E(429)).await;
    }

    h.call(
        "POST",
        &format!("{bp}/{b1}/restore"),
        Some(json!({"source_branch_id": main, "preserve_under_name": "conformance-1-old"})),
        Ok,
    )
    .await;
    h.call(
        "POST",
        &format!("{bp}/{b1}/restore"),
        Some(json!({"source_branch_id": "br-does-not-exist-1"})),
        E(404),
    )
    .await;

    h.call(
        "GET",
        &format!("{bp}/{b2}/compare_schema?db_name=neondb"),
        None,
        Ok,
    )
    .await;
    h.call(
        "GET",
        &format!("{bp}/{b2}/compare_schema?db_name=nothing"),
        None,
        E(404),
    )
    .await;

    // ----- roles, databases, connection URIs ---------------------------------------------------
    let rp = format!("/projects/{p}/branches/{main}/roles");
    let dp = format!("/projects/{p}/branches/{main}/databases");
    h.call("GET", &rp, None, Ok).await;
    h.call(
        "GET",
        "/projects/no-such-project-1/branches/br-x-1/roles",
        None,
        E(404),
    )
    .await;
    h.call("POST", &rp, Some(json!({"role": {"name": "app"}})), Ok)
        .await;
    h.call("POST", &rp, Some(json!({"role": {"name": "app"}})), E(409))
        .await;
    h.call(
        "POST",
        &rp,
        Some(json!({"role": {"name": "robot", "no_login": true}})),
        Ok,
    )
    .await;
    h.call("GET", &format!("{rp}/app"), None, Ok).await;
    h.call("GET", &format!("{rp}/nobody"), None, E(404)).await;
    h.call("GET", &format!("{rp}/app/reveal_password"), None, Ok)
        .await;
    h.call("GET", &format!("{rp}/nobody/reveal_password"), None, E(404))
        .await;
    h.call("GET", &format!("{rp}/robot/reveal_password"), None, E(412))
        .await;
    h.call("POST", &format!("{rp}/app/reset_password"), None, Ok)
        .await;
    h.call("POST", &format!("{rp}/nobody/reset_password"), None, E(404))
        .await;
    h.call("GET", &dp, None, Ok).await;
    h.call(
        "GET",
        "/projects/no-such-project-1/branches/br-x-1/databases",
        None,
        E(404),
    )
    .await;
    h.call(
        "POST",
        &dp,
        Some(json!({"database": {"name": "shop", "owner_name": "app"}})),
        Ok,
    )
    .await;
    h.call(
        "POST",
        &dp,
        Some(json!({"database": {"name": "shop2", "owner_name": "nobody"}})),
        E(404),
    )
    .await;
    h.call("GET", &format!("{dp}/shop"), None, Ok).await;
    h.call("GET", &format!("{dp}/nothing"), None, E(404)).await;
    h.call(
        "PATCH",
        &format!("{dp}/shop"),
        Some(json!({"database": {"name": "store"}})),
        Ok,
    )
    .await;
    h.call(
        "PATCH",
        &format!("{dp}/nothing"),
        Some(json!({"database": {"name": "x"}})),
        E(404),
    )
    .await;
    h.call(
        "GET",
        &format!(
            "/projects/{p}/connection_uri?branch_id={b1}&database_name=neondb\
             &role_name=neondb_owner&pooled=true"
        ),
        None,
        Ok,
    )
    .await;
    h.call(
        "GET",
        &format!("/projects/{p}/connection_uri?database_name=store&role_name=nobody"),
        None,
        E(404),
    )
    .await;
    h.call("DELETE", &format!("{rp}/app"), None, E(400)).await;
    h.call(
        "DELETE",
        "/projects/no-such-project-1/branches/br-x-1/databases/store",
        None,
        E(404),
    )
    .await;
    h.call("DELETE", &format!("{dp}/store"), None, Ok).await;
    h.call("DELETE", &format!("{dp}/store"), None, Expect::Status(204))
        .await;
    h.call("DELETE", &format!("{rp}/app"), None, Ok).await;
    h.call("DELETE", &format!("{rp}/app"), None, Expect::Status(204))
        .await;

    // ----- and finally delete the project ----------------------------------------------------
    h.call("DELETE", &format!("/projects/{p}"), None, Ok).await;
    h.call("DELETE", "/projects/no-such-project-1", None, E(404))
        .await;
    h.call("GET", "/projects?recoverable=true", None, Ok).await;
    h.call("POST", &format!("/projects/{p}/recover"), None, Ok)
        .await;
    h.call("POST", "/projects/no-such-project-1/recover", None, E(404))
        .await;

    eprintln!(
        "covered: {} successes, {} errors; {} answers checked by the independent validator",
        h.success.len(),
        h.errors.len(),
        h.independently_checked
    );
    // ----- verdict -----------------------------------------------------------------------------
    let emulated: BTreeSet<OpKey> = EMULATED_OPERATIONS
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let no_success: Vec<_> = emulated.difference(&h.success).collect();
    let no_error: Vec<_> = emulated.difference(&h.errors).collect();
    let stray: Vec<_> = h.success.difference(&emulated).collect();
    // Each explicit status the document lists for an emulated operation (204 for deleting a
    // missing branch or endpoint, 406 for consumption ranges, ...) must have been answered
    // and validated. Exempt: 403 on the consumption endpoints ("not available for this
    // account's plan"), as every emulated account is on an eligible plan.
    let spec = Spec::neon();
    let mut unexercised: Vec<String> = Vec::new();
    for (m, path) in &emulated {
        let op = spec
            .operation(m, path)
            .unwrap_or_else(|| panic!("{m} {path} is emulated but not in the document"));
        for code in op.documented_statuses() {
            let Result::Ok(code) = code.parse::<u16>() else {
                continue; // `default`
            };
            let exempt = code == 403 && path.starts_with("/consumption_history/");
            if !exempt && !h.statuses.contains(&(m.clone(), path.clone(), code)) {
                unexercised.push(format!("{m} {path} -> {code}"));
            }
        }
    }
    let mut report = String::new();
    for f in &h.failures {
        report.push_str(&format!("\n- {f}"));
    }
    if !unexercised.is_empty() {
        report.push_str(&format!(
            "\n- documented statuses never exercised: {unexercised:?}"
        ));
    }
    assert!(
        h.failures.is_empty() && unexercised.is_empty() && no_success.is_empty() && no_error.is_empty() && stray.is_empty(),
        "conformance failures ({}):{report}\n\nemulated operations without a validated success: {no_success:?}\n\
         without a validated error: {no_error:?}\nsuccesses on operations not listed as emulated: {stray:?}",
        h.failures.len()
    );
    h.sim.shutdown().await;
}

/// Every operation of the document that is not emulated answers 501 with a `GeneralError`.
#[tokio::test]
async fn every_other_operation_answers_501() {
    let sim = Sim::start(SimConfig::default().projects(1))
        .await
        .expect("the emulator starts");
    let http = reqwest::Client::new();
    let emulated: BTreeSet<(String, String)> = EMULATED_OPERATIONS
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for op in Spec::neon().operations() {
        let method = op.method().to_uppercase();
        if emulated.contains(&(method.clone(), op.template().to_string())) {
            continue;
        }
        // Fill every `{param}` with a plausible id.
        let path: String = op
            .template()
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "x-1".to_string()
                } else {
                    seg.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("{}{}", sim.base_url(), path);
        let resp = http
            .request(method.parse().unwrap(), &url)
            .bearer_auth(sim.api_key())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Option<Value> = resp.json().await.ok();
        checked += 1;
        if status != 501 {
            failures.push(format!(
                "{method} {}: expected 501, got {status}",
                op.template()
            ));
            continue;
        }
        let Some(body) = body else {
            failures.push(format!(
                "{method} {}: 501 without a JSON body",
                op.template()
            ));
            continue;
        };
        if let Err(e) = validate_neon_response(&method, &path, 501, Some(&body)) {
            failures.push(format!("{method} {}: 501 body: {e}", op.template()));
        }
        let message = body["message"].as_str().unwrap_or_default();
        if let Some(id) = op.operation_id() {
            if !message.contains(id) {
                failures.push(format!(
                    "{method} {}: message {message:?} does not name {id}",
                    op.template()
                ));
            }
        }
    }
    assert_eq!(
        checked + EMULATED_OPERATIONS.len(),
        Spec::neon().operations().count(),
        "every operation of the document is either emulated or checked here"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    sim.shutdown().await;
}

/// 423 while an operation runs and 429 over the rate limit are `GeneralError`s too.
#[tokio::test]
async fn locked_and_rate_limited_answers_conform() {
    // Five requests a minute: one token back every 12 s, so timing cannot blur the count.
    let limits = neon_sim::ratelimit::RateLimitConfig {
        per_minute: 5,
        ..Default::default()
    };
    let sim = Sim::start(
        SimConfig::default()
            .projects(1)
            .operation_duration(std::time::Duration::from_secs(60))
            .rate_limit(limits),
    )
    .await
    .expect("the emulator starts");
    let http = reqwest::Client::new();
    let p = sim.projects()[0].id.clone();
    let path = format!("/projects/{p}/branches");
    let mut statuses = Vec::new();
    for i in 0..2 {
        let r = http
            .post(format!("{}{path}", sim.base_url()))
            .bearer_auth(sim.api_key())
            .json(&json!({"branch": {"name": format!("locked-{i}")}}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        validate_neon_response("POST", &path, status, Some(&body))
            .unwrap_or_else(|e| panic!("POST {path} -> {status}: {e}"));
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [201, 423],
        "the second mutation meets the running operation"
    );

    // Two POSTs and three GETs use the five tokens; the fourth GET is refused.
    let mut last = 0;
    for _ in 0..4 {
        let r = http
            .get(format!("{}/projects/{p}", sim.base_url()))
            .bearer_auth(sim.api_key())
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        validate_neon_response("GET", &format!("/projects/{p}"), last, Some(&body)).unwrap();
    }
    assert_eq!(last, 429);
    sim.shutdown().await;
}
