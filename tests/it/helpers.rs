//! Shared test setup: an in-process neon-sim on 127.0.0.1:0 with its virtual clock (its router
//! includes fault injection and Neon's rate limits), plus a recorder of every API request the
//! client sent (so tests can validate request bodies against Neon's document) and a hook that
//! makes the emulator fail *after* carrying out a request.

#![allow(dead_code)] // Not every test module uses every helper.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use neon_sim::faults::FaultHandle;
use neon_sim::ratelimit::RateLimiter;
use neon_sim::{AppState, Clock, Mutation, SharedState, SimConfig};
use neon_steward::neon::{ClientConfig, NeonClient};
use neon_steward::secret::Secret;

/// One API request as the emulator received it (before faults and rate limits).
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    /// Full path, e.g. `/api/v2/projects/p/branches`.
    pub path: String,
    pub query: Option<String>,
    pub body: Option<serde_json::Value>,
    /// The status the client got (after faults and rate limits).
    pub status: u16,
}

/// Makes the emulator carry out a request and then answer 500, as a server that fails
/// after committing would: the create happened, the client cannot know.
#[derive(Debug, Clone)]
struct FailAfter {
    method: String,
    path_suffix: String,
    times: u32,
}

#[derive(Clone, Default)]
struct Hooks {
    sent: Arc<Mutex<Vec<Sent>>>,
    fail_after: Arc<Mutex<Vec<FailAfter>>>,
    /// Moves the emulator's virtual clock by this much after every API request.
    advance_per_request: Arc<Mutex<Option<(Clock, Duration)>>>,
}

/// A running emulator for tests. Dropping it stops the server.
pub struct TestSim {
    pub app: AppState,
    pub faults: FaultHandle,
    pub ratelimit: RateLimiter,
    addr: SocketAddr,
    key: String,
    hooks: Hooks,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestSim {
    fn drop(&mut self) {
        self.faults.shutdown();
        self.server.abort();
    }
}

/// Starts an emulator built from `config` (virtual clock and Neon's rate limits by default;
/// change them with `SimConfig::rate_limit` or `TestSim::ratelimit`), without faults.
pub async fn spawn_sim(config: SimConfig) -> TestSim {
    let state = config.build_state().expect("sim state from a test config");
    let key = state
        .api_keys
        .iter()
        .find(|k| !k.revoked)
        .map(|k| k.secret.clone())
        .expect("build_state always creates a key");
    let app = AppState::new(SharedState::new(state), Arc::new(config));
    let faults = app.faults.clone();
    let ratelimit = app.rate_limiter.clone();
    let hooks = Hooks::default();
    let service = neon_sim::router(app.clone())
        .layer(middleware::from_fn_with_state(
            hooks.clone(),
            fail_after_layer,
        ))
        .layer(middleware::from_fn_with_state(hooks.clone(), record_layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound socket has an address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, service).await;
    });
    TestSim {
        app,
        faults,
        ratelimit,
        addr,
        key,
        hooks,
        server,
    }
}

async fn record_layer(State(hooks): State<Hooks>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if path.starts_with("/api/v2") {
        let advance = hooks.advance_per_request.lock().unwrap().clone();
        if let Some((clock, step)) = advance {
            clock.advance(step);
        }
        hooks.sent.lock().unwrap().push(Sent {
            method,
            path,
            query,
            body: json,
            status: resp.status().as_u16(),
        });
    }
    resp
}

async fn fail_after_layer(State(hooks): State<Hooks>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if !resp.status().is_success() {
        return resp;
    }
    let mut rules = hooks.fail_after.lock().unwrap();
    if let Some(i) = rules
        .iter()
        .position(|r| r.method == method && path.ends_with(&r.path_suffix) && r.times > 0)
    {
        rules[i].times -= 1;
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(
                serde_json::json!({"code": "", "message": "committed, then failed (test hook)"}),
            ),
        )
            .into_response();
    }
    resp
}

impl TestSim {
    /// `http://127.0.0.1:PORT/api/v2`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v2", self.addr)
    }

    pub fn api_key(&self) -> String {
        self.key.clone()
    }

    pub fn clock(&self) -> Clock {
        self.app.state.lock().clock.clone()
    }

    pub fn state(&self) -> SharedState {
        self.app.state.clone()
    }

    /// Mutating requests that reached the emulator (faulted ones did not).
    pub fn mutations(&self) -> Vec<Mutation> {
        self.app.mutations.snapshot()
    }

    /// Every API request received, including faulted and rate-limited ones.
    pub fn sent(&self) -> Vec<Sent> {
        self.hooks.sent.lock().unwrap().clone()
    }

    /// From now on, every API request moves the emulator's virtual clock forward `step`
    /// (`None` stops it): time passes for Neon as fast as the client asks it, whatever the
    /// machine's speed, so a test of waiting on operations is deterministic.
    pub fn advance_clock_per_request(&self, step: Option<Duration>) {
        *self.hooks.advance_per_request.lock().unwrap() = step.map(|d| (self.clock(), d));
    }

    /// The shared log behind [`Self::sent`], for a task that waits for a request.
    pub fn sent_log(&self) -> Arc<Mutex<Vec<Sent>>> {
        self.hooks.sent.clone()
    }

    pub fn clear_sent(&self) {
        self.hooks.sent.lock().unwrap().clear();
    }

    /// The next `times` successful `method` requests whose path ends with `path_suffix` are
    /// carried out, then answered with 500.
    pub fn fail_after_processing(&self, method: &str, path_suffix: &str, times: u32) {
        self.hooks.fail_after.lock().unwrap().push(FailAfter {
            method: method.to_string(),
            path_suffix: path_suffix.to_string(),
            times,
        });
    }

    /// A client config suited to tests: the default client-side rate limit (which keeps under
    /// the emulator's Neon-like limits), small retry and poll delays, a short timeout.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(self.base_url(), Secret::new(self.api_key()));
        c.timeout = Duration::from_secs(5);
        c.max_retries = 5;
        c.max_retry_elapsed = Duration::from_secs(10);
        c.retry_base_delay = Duration::from_millis(2);
        c.retry_max_delay = Duration::from_millis(20);
        c.poll_initial = Duration::from_millis(2);
        c.poll_max = Duration::from_millis(20);
        c
    }

    pub fn client(&self) -> NeonClient {
        NeonClient::new(self.client_config()).expect("valid test client config")
    }
}

/// Setup helpers mirroring `neon_sim::Sim`'s (they edit the model directly, not via the API).
impl TestSim {
    /// A project with its default `main` branch; returns (project id, main branch id).
    pub fn add_project(&self, name: &str, org_id: Option<&str>) -> (String, String) {
        let mut s = self.app.state.settled();
        let now = s.now();
        let (p, b) = s.insert_project(name, org_id, now);
        (p.id, b.id)
    }

    /// A child of `parent` (or of the default branch) created `age` ago; returns its id.
    pub fn add_branch(&self, project_id: &str, name: &str, parent: Option<&str>) -> String {
        let mut s = self.app.state.settled();
        let parent = match parent {
            Some(p) => p.to_string(),
            None => s
                .default_branch(project_id)
                .expect("test project has a default branch")
                .id
                .clone(),
        };
        let now = s.now();
        s.insert_branch(project_id, name, Some(&parent), now).id
    }

    /// An idle read-write compute on `branch_id`; returns its id.
    pub fn add_endpoint(&self, branch_id: &str) -> String {
        let mut s = self.app.state.settled();
        let now = s.now();
        s.insert_endpoint(branch_id, neon_sim::state::EndpointType::ReadWrite, now)
            .expect("test branch exists")
            .id
    }
}

/// A job run against neon-sim with an in-memory store, as the kinds' end-to-end tests need
/// it: [`job_harness`] (or [`job_harness_with`] for an emulator configured otherwise)
/// spawns both, [`JobHarness::run`] claims a fresh tick (a millisecond apart, so re-runs are
/// new ticks) and returns the run with its ledger. `env` is public so that a test can put a
/// failing store or another client in front of the run.
pub struct JobHarness {
    pub sim: TestSim,
    pub env: neon_steward::jobs::JobEnv,
    /// Makes every run's tick unique (a tick can be claimed once).
    ticks: std::sync::atomic::AtomicI64,
}

pub async fn job_harness() -> JobHarness {
    job_harness_with(SimConfig::default()).await
}

pub async fn job_harness_with(config: SimConfig) -> JobHarness {
    let sim = spawn_sim(config).await;
    let store = neon_steward::store::open("sqlite::memory:")
        .await
        .expect("store opens");
    let env = neon_steward::jobs::JobEnv {
        client: sim.client(),
        store,
        concurrency: 4,
        operation_deadline: Duration::from_secs(20),
        consumption: Arc::new(
            neon_steward::telemetry::consumption::ConsumptionExporter::detached(),
        ),
    };
    JobHarness {
        sim,
        env,
        ticks: std::sync::atomic::AtomicI64::new(0),
    }
}

impl JobHarness {
    /// The emulator's "now", which runs are given as theirs.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.sim.clock().now()
    }

    fn next_tick(&self) -> chrono::DateTime<chrono::Utc> {
        self.now()
            + chrono::TimeDelta::milliseconds(
                self.ticks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            )
    }

    pub async fn run(
        &self,
        job: &neon_steward::config::JobConfig,
        dry_run: bool,
    ) -> (
        neon_steward::jobs::RunResult,
        Vec<neon_steward::store::ActionRecord>,
    ) {
        use neon_steward::store::{NewRun, RunStatus, Trigger};
        let now = self.now();
        let tick = self.next_tick();
        let run_id = self
            .env
            .store
            .claim_run(&NewRun {
                plan_id: None,
                job: job.name.clone(),
                kind: job.kind.as_str().to_string(),
                scheduled_for: tick,
                trigger: Trigger::Manual,
                dry_run,
                status: RunStatus::Running,
                error: None,
            })
            .await
            .unwrap()
            .expect("fresh tick");
        let ctx = neon_steward::jobs::RunContext {
            run_id,
            scheduled_for: tick,
            now,
            dry_run,
        };
        let r = neon_steward::jobs::run_job(&self.env, job, ctx).await;
        let actions = self.env.store.actions_for_run(run_id).await.unwrap();
        (r, actions)
    }

    /// A run that holds a lease, for a test that writes job state itself (as an operator's
    /// repair or a crashed run would have).
    pub async fn writer_run(&self) -> neon_steward::store::RunId {
        use neon_steward::store::{NewRun, RunStatus, Trigger};
        let tick = self.next_tick();
        self.env
            .store
            .claim_run(&NewRun {
                job: "test-writer".into(),
                kind: "snapshot_branches".into(),
                scheduled_for: tick,
                trigger: Trigger::Manual,
                dry_run: false,
                status: RunStatus::Running,
                error: None,
                plan_id: None,
            })
            .await
            .unwrap()
            .expect("fresh tick")
    }

    pub fn add_org(&self, name: &str) -> String {
        neon_sim::seed::insert_org(&mut self.sim.state().settled(), name)
    }

    /// A branch created `age` ago under `parent` (default: the project's default branch).
    pub fn branch_aged(
        &self,
        project: &str,
        name: &str,
        parent: Option<&str>,
        age: chrono::TimeDelta,
    ) -> String {
        let st = self.sim.state();
        let mut s = st.settled();
        let parent = match parent {
            Some(p) => p.to_string(),
            None => s
                .default_branch(project)
                .expect("project has a default branch")
                .id
                .clone(),
        };
        let at = s.now() - age;
        s.insert_branch(project, name, Some(&parent), at).id
    }

    /// An endpoint on `branch` that is in use (so nothing suspends itself).
    pub fn busy_endpoint(&self, branch: &str) -> String {
        let ep = self.sim.add_endpoint(branch);
        let st = self.sim.state();
        let mut s = st.settled();
        s.endpoints
            .get_mut(&ep)
            .expect("endpoint just added")
            .activity = neon_sim::state::Activity::Busy;
        s.settle();
        ep
    }

    /// The names of the project's branches, sorted.
    pub fn branch_names(&self, project: &str) -> Vec<String> {
        let s = self.sim.state();
        let s = s.settled();
        let mut v: Vec<String> = s
            .project_branches(project)
            .into_iter()
            .map(|b| b.name.clone())
            .collect();
        v.sort();
        v
    }

    /// How many DELETE calls the emulator carried out (or refused).
    pub fn deletes(&self) -> usize {
        self.sim
            .mutations()
            .iter()
            .filter(|m| m.method == "DELETE")
            .count()
    }
}
