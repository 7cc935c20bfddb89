//! Every route of the HTTP server, against a fake `Control` and a real SQLite store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use neon_steward::health::Health;
use neon_steward::http::{self, Control, HttpState, JobView, TriggerError, TriggerOutcome};
use neon_steward::secret::Secret;
use neon_steward::store::{
    ActionCounts, ActionOutcome, NewAction, NewRun, RunStatus, StateRecord, Store, StoreError,
    StoreResult, Trigger,
};
use serde_json::Value;
use tokio::sync::oneshot;

const TOKEN: &str = "admin-token-d1e2f3";

struct FakeControl {
    running: AtomicBool,
    config: AtomicBool,
    triggered: Mutex<Vec<String>>,
}

#[async_trait]
impl Control for FakeControl {
    fn jobs(&self) -> Vec<JobView> {
        vec![
            JobView {
                name: "nightly-snapshot".into(),
                kind: "snapshot".into(),
                schedule: "0 3 * * *".into(),
                timezone: "Europe/Berlin".into(),
                enabled: true,
                last_run: None,
                next_run: Some(Utc.with_ymd_and_hms(2025, 3, 31, 1, 0, 0).unwrap()),
            },
            JobView {
                name: "idle".into(),
                kind: "suspend_idle".into(),
                schedule: "every 15m".into(),
                timezone: "UTC".into(),
                enabled: false,
                last_run: None,
                next_run: None,
            },
        ]
    }
    fn scheduler_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
    fn config_loaded(&self) -> bool {
        self.config.load(Ordering::SeqCst)
    }
    async fn trigger(&self, job: &str) -> Result<TriggerOutcome, TriggerError> {
        self.triggered.lock().unwrap().push(job.to_string());
        match job {
            "nightly-snapshot" => Ok(TriggerOutcome::Started { run_id: 42 }),
            "idle" => Ok(TriggerOutcome::AlreadyRunning { run_id: Some(7) }),
            "off" => Err(TriggerError::Disabled(
                "job `off` is disabled (enabled = false)".into(),
            )),
            other => Err(TriggerError::UnknownJob(other.to_string())),
        }
    }
}

struct Server {
    base: String,
    control: Arc<FakeControl>,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _fixture: crate::store::Fixture,
}

impl Server {
    async fn start(admin_token: Option<&str>) -> Server {
        Server::start_with(admin_token, None).await
    }

    async fn start_with(admin_token: Option<&str>, store: Option<Arc<dyn Store>>) -> Server {
        Server::start_full(admin_token, store, None).await
    }

    async fn start_full(
        admin_token: Option<&str>,
        store: Option<Arc<dyn Store>>,
        health: Option<Arc<Health>>,
    ) -> Server {
        let fixture = crate::store::sqlite_fixture().await;
        let store = store.unwrap_or_else(|| fixture.store.clone());
        let control = Arc::new(FakeControl {
            running: AtomicBool::new(true),
            config: AtomicBool::new(true),
            triggered: Mutex::new(Vec::new()),
        });
        let state = HttpState {
            control: control.clone(),
            store: store.clone(),
            admin_token: admin_token.map(Secret::new),
            health,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Server {
            base,
            control,
            store,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task,
            _fixture: fixture,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn post(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Two runs of `nightly-snapshot`, the second with two actions.
async fn seed(store: &Arc<dyn Store>) -> (i64, i64) {
    let run = |minute| NewRun {
        job: "nightly-snapshot".into(),
        kind: "snapshot".into(),
        scheduled_for: Utc.with_ymd_and_hms(2025, 3, 30, 1, minute, 0).unwrap(),
        trigger: Trigger::Schedule,
        dry_run: false,
        status: RunStatus::Running,
        error: None,
        plan_id: None,
    };
    let first = store.claim_run(&run(0)).await.unwrap().unwrap();
    store
        .finish_run(first, RunStatus::Succeeded, ActionCounts::default(), None)
        .await
        .unwrap();
    let second = store.claim_run(&run(1)).await.unwrap().unwrap();
    for branch in ["br-1", "br-2"] {
        let id = store
            .begin_action(&NewAction {
                run_id: second,
                job: "nightly-snapshot".into(),
                resource_kind: "branch".into(),
                resource_id: branch.into(),
                resource_name: Some("main".into()),
                project_id: Some("p-1".into()),
                action: "create_snapshot".into(),
                rule: Some("keep_daily".into()),
                reason: "daily snapshot".into(),
                dry_run: false,
                outcome: ActionOutcome::Pending,
            })
            .await
            .unwrap();
        store
            .finish_action(id, ActionOutcome::Succeeded, None)
            .await
            .unwrap();
    }
    let counts = ActionCounts {
        succeeded: 2,
        ..Default::default()
    };
    store
        .finish_run(second, RunStatus::Succeeded, counts, None)
        .await
        .unwrap();
    (first, second)
}

#[tokio::test]
async fn metrics_and_healthz() {
    let s = Server::start(None).await;
    let r = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(text.contains("neon_steward_build_info"), "{text}");
    assert_eq!(
        s.get("/healthz").await,
        (200, serde_json::json!({"status": "ok"}))
    );
    s.stop().await;
}

#[tokio::test]
async fn readyz_lists_what_is_not_ready() {
    let s = Server::start(None).await;
    assert_eq!(s.get("/readyz").await.0, 200);
    s.control.running.store(false, Ordering::SeqCst);
    s.control.config.store(false, Ordering::SeqCst);
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, 503);
    let reasons: Vec<&str> = body["not_ready"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{body}");
    assert!(
        reasons[0].starts_with("config:") && reasons[1].starts_with("scheduler:"),
        "{body}"
    );
    s.stop().await;
}

/// A store whose every call fails, to see `/readyz` report it.
struct BrokenStore;

#[async_trait]
impl Store for BrokenStore {
    async fn migrate(&self) -> StoreResult<()> {
        Ok(())
    }
    async fn ping(&self) -> StoreResult<()> {
        Err(StoreError::Corrupt("disk on fire".into()))
    }
    async fn claim_run(&self, _: &NewRun) -> StoreResult<Option<i64>> {
        unreachable!("not used by the HTTP server")
    }
    async fn finish_run(
        &self,
        _: i64,
        _: RunStatus,
        _: ActionCounts,
        _: Option<&str>,
    ) -> StoreResult<()> {
        unreachable!("not used by the HTTP server")
    }
    async fn get_run(&self, _: i64) -> StoreResult<Option<neon_steward::store::RunRecord>> {
        // A failure of the database itself (as a locked or full one gives).
        Err(StoreError::Db(sqlx::Error::PoolTimedOut))
    }
    async fn list_runs(
        &self,
        _: &neon_steward::store::RunFilter,
    ) -> StoreResult<Vec<neon_steward::store::RunRecord>> {
        Err(StoreError::Corrupt("disk on fire".into()))
    }
    async fn last_scheduled_run(
        &self,
        _: &str,
    ) -> StoreResult<Option<neon_steward::store::RunRecord>> {
        unreachable!("not used by the HTTP server")
    }
    async fn last_success(&self, _: &str) -> StoreResult<Option<neon_steward::store::RunRecord>> {
        unreachable!("not used by the HTTP server")
    }
    async fn begin_action(&self, _: &NewAction) -> StoreResult<i64> {
        unreachable!("not used by the HTTP server")
    }
    async fn finish_action(&self, _: i64, _: ActionOutcome, _: Option<&str>) -> StoreResult<()> {
        unreachable!("not used by the HTTP server")
    }
    async fn actions_for_run(&self, _: i64) -> StoreResult<Vec<neon_steward::store::ActionRecord>> {
        unreachable!("not used by the HTTP server")
    }
    async fn get_state(&self, _: &str, _: &str) -> StoreResult<Option<StateRecord>> {
        unreachable!("not used by the HTTP server")
    }
    async fn put_state(
        &self,
        _: neon_steward::store::RunId,
        _: &str,
        _: &str,
        _: Option<i64>,
        _: &str,
    ) -> StoreResult<Option<i64>> {
        unreachable!("not used by the HTTP server")
    }
    async fn upsert_consumption(
        &self,
        _: &[neon_steward::store::ConsumptionSample],
    ) -> StoreResult<u64> {
        unreachable!("not used by the HTTP server")
    }
    async fn list_consumption(
        &self,
        _: &str,
        _: chrono::DateTime<Utc>,
    ) -> StoreResult<Vec<neon_steward::store::ConsumptionSample>> {
        unreachable!("not used by the HTTP server")
    }
    async fn latest_consumption_end(&self, _: &str) -> StoreResult<Option<chrono::DateTime<Utc>>> {
        unreachable!("not used by the HTTP server")
    }
    async fn prune(
        &self,
        _: &neon_steward::store::PruneBefore,
    ) -> StoreResult<neon_steward::store::Pruned> {
        unreachable!("not used by the HTTP server")
    }
}

#[tokio::test]
async fn broken_store_is_not_ready_and_errors_are_json() {
    let s = Server::start_with(None, Some(Arc::new(BrokenStore))).await;
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["not_ready"][0], "store: corrupt row: disk on fire");
    let (status, body) = s.get("/api/v1/runs").await;
    assert_eq!(status, 500);
    assert!(
        body["error"].as_str().unwrap().contains("disk on fire"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn jobs_show_schedule_and_last_run_from_the_store() {
    let s = Server::start(None).await;
    let (_, second) = seed(&s.store).await;
    let (status, body) = s.get("/api/v1/jobs").await;
    assert_eq!(status, 200);
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["name"], "nightly-snapshot");
    assert_eq!(jobs[0]["schedule"], "0 3 * * *");
    assert_eq!(jobs[0]["timezone"], "Europe/Berlin");
    assert_eq!(jobs[0]["enabled"], true);
    assert_eq!(jobs[0]["next_run"], "2025-03-31T01:00:00Z");
    assert_eq!(jobs[0]["last_run"]["id"], second);
    assert_eq!(jobs[0]["last_run"]["status"], "succeeded");
    assert_eq!(jobs[1]["enabled"], false);
    assert!(jobs[1]["last_run"].is_null() && jobs[1]["next_run"].is_null());
    s.stop().await;
}

#[tokio::test]
async fn runs_list_pages_and_filters() {
    let s = Server::start(None).await;
    let (first, second) = seed(&s.store).await;
    let (status, body) = s.get("/api/v1/runs").await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![second, first]);
    assert!(
        body["next_before"].is_null(),
        "a short page has no next page"
    );

    let (_, page) = s.get("/api/v1/runs?job=nightly-snapshot&limit=1").await;
    assert_eq!(page["runs"][0]["id"], second);
    assert_eq!(page["next_before"], second);
    let (_, page) = s
        .get(&format!("/api/v1/runs?limit=1&before={second}"))
        .await;
    assert_eq!(page["runs"][0]["id"], first);
    assert_eq!(page["runs"][0]["trigger"], "schedule");
    assert_eq!(page["runs"][0]["scheduled_for"], "2025-03-30T01:00:00Z");

    let (_, none) = s.get("/api/v1/runs?job=nope").await;
    assert_eq!(none["runs"].as_array().unwrap().len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let s = Server::start(None).await;
    for (path, needle) in [
        ("/api/v1/runs?limit=abc", "`limit`"),
        ("/api/v1/runs?limit=0", "`limit`"),
        ("/api/v1/runs?limit=100000", "`limit`"),
        ("/api/v1/runs?before=-3", "`before`"),
        ("/api/v1/runs?before=1e3", "`before`"),
        ("/api/v1/runs/abc", "run id must be an integer"),
        // Unknown parameters are refused, like unknown keys of the policy file.
        ("/api/v1/runs?limt=5", "unknown query parameter \"limt\""),
        ("/api/v1/runs?job=a&job=b", "`job` is given more than once"),
        (
            "/api/v1/jobs?verbose=1",
            "unknown query parameter \"verbose\"",
        ),
        ("/api/v1/runs/1?x", "unknown query parameter \"x\""),
        ("/healthz?probe", "unknown query parameter"),
        ("/readyz?probe=1", "unknown query parameter"),
        ("/metrics?name[]=up", "unknown query parameter"),
    ] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn run_detail_has_its_actions() {
    let s = Server::start(None).await;
    let (first, second) = seed(&s.store).await;
    let (status, body) = s.get(&format!("/api/v1/runs/{second}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], second);
    assert_eq!(body["counts"]["succeeded"], 2);
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0]["resource_id"], "br-1");
    assert_eq!(actions[0]["outcome"], "succeeded");
    assert_eq!(actions[0]["rule"], "keep_daily");
    let (_, body) = s.get(&format!("/api/v1/runs/{first}")).await;
    assert_eq!(body["actions"].as_array().unwrap().len(), 0);

    let (status, body) = s.get("/api/v1/runs/999999").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no run with id 999999");
    let (status, body) = s.get("/no/such/route").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no route for GET /no/such/route");
    s.stop().await;
}

#[tokio::test]
async fn trigger_is_not_routed_without_a_token() {
    let s = Server::start(None).await;
    let r = s
        .post("/api/v1/jobs/nightly-snapshot/trigger", Some(TOKEN))
        .await;
    assert_eq!(r.status(), 404);
    assert!(s.control.triggered.lock().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn trigger_requires_the_token() {
    let s = Server::start(Some(TOKEN)).await;
    for token in [None, Some("wrong"), Some("admin-token-d1e2f"), Some("")] {
        let r = s.post("/api/v1/jobs/nightly-snapshot/trigger", token).await;
        assert_eq!(r.status(), 401, "{token:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert!(!body.to_string().contains(TOKEN));
    }
    // Unknown jobs are not revealed to the unauthenticated either.
    assert_eq!(
        s.post("/api/v1/jobs/nope/trigger", Some("wrong"))
            .await
            .status(),
        401
    );
    assert!(
        s.control.triggered.lock().unwrap().is_empty(),
        "nothing triggered without the token"
    );

    let r = s
        .post("/api/v1/jobs/nightly-snapshot/trigger", Some(TOKEN))
        .await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["run_id"], 42);
    assert_eq!(body["job"], "nightly-snapshot");

    let r = s.post("/api/v1/jobs/idle/trigger", Some(TOKEN)).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["run_id"], 7);
    assert!(body["error"].as_str().unwrap().contains("already running"));

    let r = s.post("/api/v1/jobs/off/trigger", Some(TOKEN)).await;
    assert_eq!(
        r.status(),
        409,
        "a disabled job is a conflict with the policy"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "job `off` is disabled (enabled = false)");

    let r = s.post("/api/v1/jobs/nope/trigger", Some(TOKEN)).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no job named \"nope\"");

    let r = s
        .client
        .get(format!("{}/api/v1/jobs/nightly-snapshot/trigger", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "GET on the trigger route");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "method GET is not allowed on /api/v1/jobs/nightly-snapshot/trigger"
    );
    assert_eq!(
        *s.control.triggered.lock().unwrap(),
        vec!["nightly-snapshot", "idle", "off", "nope"]
    );
    s.stop().await;
}

/// `/readyz` reflects what the daemon last tried: a refused API key, a failing store.
#[tokio::test]
async fn readyz_reports_the_last_api_and_store_outcomes() {
    use neon_steward::neon::ApiError;
    let health = Health::new();
    let s = Server::start_full(None, None, Some(health.clone())).await;
    assert_eq!(s.get("/readyz").await.0, 200);

    health.record_api::<()>(&Err(ApiError::Status {
        status: 401,
        code: None,
        message: "authentication required".into(),
        request_id: None,
        route: "/projects",
    }));
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let reasons = body["not_ready"].to_string();
    assert!(
        reasons.contains("api: the Neon API refused the API key"),
        "{body}"
    );

    // The store the daemon uses, observed: a failing write makes it not ready.
    let observed = health.observe_store(Arc::new(BrokenStore));
    assert!(observed.get_run(1).await.is_err());
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body["not_ready"]
            .to_string()
            .contains("store: the last operation failed"),
        "{body}"
    );

    // Successes clear both.
    health.record_api(&Ok(()));
    health.record_store(&Ok(()));
    assert_eq!(s.get("/readyz").await.0, 200);
    s.stop().await;
}

/// A server on paused time with small limits, for the connection tests below.
/// (`/healthz` touches no store; SQLite's pool would time out on paused time.)
async fn limited_server(limits: http::ServeLimits) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let control = Arc::new(FakeControl {
        running: AtomicBool::new(true),
        config: AtomicBool::new(true),
        triggered: Mutex::new(Vec::new()),
    });
    let state = HttpState {
        control,
        store: Arc::new(BrokenStore),
        admin_token: None,
        health: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(http::serve_with(listener, state, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Reads until the peer closes; what it sent. A server that never closes fails the test
/// (after an hour of virtual time) instead of hanging it.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(3600),
        stream.read_to_end(&mut buf),
    )
    .await
    .expect("the server closes the connection")
    .ok();
    String::from_utf8_lossy(&buf).into_owned()
}

/// A connection that sends nothing, or goes idle after a request, is closed after the
/// header-read timeout (virtual time: the test waits for the close, not for the clock).
#[tokio::test(start_paused = true)]
async fn silent_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let limits = http::ServeLimits {
        max_connections: 8,
        header_read_timeout: std::time::Duration::from_secs(10),
    };
    let (addr, stop) = limited_server(limits).await;

    let t0 = tokio::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, "");
    assert!(
        t0.elapsed() >= limits.header_read_timeout,
        "{:?}",
        t0.elapsed()
    );

    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let t1 = tokio::time::Instant::now();
    let answer = read_to_close(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        t1.elapsed() >= limits.header_read_timeout,
        "{:?}",
        t1.elapsed()
    );
    let _ = stop.send(());
}

/// Beyond `max_connections`, a connection waits (in the backlog) until one closes: two
/// silent connections hold both slots, and a third is answered only once the header-read
/// timeout has closed them.
#[tokio::test(start_paused = true)]
async fn connections_beyond_the_limit_wait_for_a_slot() {
    use tokio::io::AsyncWriteExt;
    let limits = http::ServeLimits {
        max_connections: 2,
        header_read_timeout: std::time::Duration::from_secs(10),
    };
    let (addr, stop) = limited_server(limits).await;
    let t0 = tokio::time::Instant::now();
    let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        t0.elapsed() >= limits.header_read_timeout,
        "{:?}",
        t0.elapsed()
    );
    let _ = stop.send(());
}

/// Keeps through the admin API (token-guarded like the trigger) and the outbox in /api/v1.
#[tokio::test]
async fn keeps_need_the_token_and_the_outbox_is_listed() {
    let s = Server::start(Some(TOKEN)).await;
    let body = r#"{"target": "app/preview/pr-7", "until": "2999-01-01", "note": "demo"}"#;
    let post = |token: Option<&'static str>, body: &'static str| {
        let mut req = s.client.post(format!("{}/api/v1/keeps", s.base)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(post(None, body).await.unwrap().status(), 401);
    assert_eq!(post(Some("wrong"), body).await.unwrap().status(), 401);
    assert!(
        s.store.list_keeps().await.unwrap().is_empty(),
        "nothing kept without the token"
    );
    let r = post(Some(TOKEN), r#"{"target": "no-slash"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("<project>/<branch>"),
        "{e}"
    );
    assert_eq!(
        post(Some(TOKEN), r#"{"target": "a/b", "extra": 1}"#)
            .await
            .unwrap()
            .status(),
        400
    );
    let r = post(Some(TOKEN), body).await.unwrap();
    assert_eq!(r.status(), 201);
    let (status, list) = s.get("/api/v1/keeps").await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["project"], "app");
    assert_eq!(list[0]["branch"], "preview/pr-7");
    assert_eq!(list[0]["note"], "demo");
    let del = |token: &'static str, q: &'static str| {
        s.client
            .delete(format!("{}/api/v1/keeps?{q}", s.base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        del("wrong", "target=app/preview/pr-7")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        del(TOKEN, "target=app%2Fpreview%2Fpr-7")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        del(TOKEN, "target=app/preview/pr-7")
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(del(TOKEN, "nope=1").await.unwrap().status(), 400);

    // The outbox: what a run's end wrote, filtered by status.
    let run = s
        .store
        .claim_run(&neon_steward::store::NewRun {
            plan_id: None,
            job: "nightly-snapshot".into(),
            kind: "snapshot_branches".into(),
            scheduled_for: chrono::Utc::now(),
            trigger: neon_steward::store::Trigger::Manual,
            dry_run: false,
            status: neon_steward::store::RunStatus::Running,
            error: None,
        })
        .await
        .unwrap()
        .unwrap();
    s.store
        .finish_run_notifying(
            run,
            neon_steward::store::RunStatus::Failed,
            Default::default(),
            Some("boom"),
            &[neon_steward::store::NewNotification {
                id: "msg_api".into(),
                sink: "ops".into(),
                event: "run_failed".into(),
                job: Some("nightly-snapshot".into()),
                run_id: Some(run),
                payload: "{}".into(),
                give_up_after_ms: 60_000,
            }],
        )
        .await
        .unwrap();
    let (status, rows) = s.get("/api/v1/notifications?status=pending").await;
    assert_eq!(status, 200);
    assert_eq!(rows[0]["id"], "msg_api");
    assert_eq!(rows[0]["status"], "pending");
    let (_, none) = s.get("/api/v1/notifications?status=delivered").await;
    assert_eq!(none, serde_json::json!([]));
    assert_eq!(s.get("/api/v1/notifications?status=bogus").await.0, 400);
    assert_eq!(s.get("/api/v1/notifications?colour=red").await.0, 400);
    s.stop().await;
}

#[tokio::test]
async fn keeps_are_read_only_without_a_token() {
    let s = Server::start(None).await;
    assert_eq!(s.get("/api/v1/keeps").await.0, 200);
    let r = s
        .client
        .post(format!("{}/api/v1/keeps", s.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    s.stop().await;
}
