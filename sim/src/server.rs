//! Starting, inspecting and stopping an emulator: [`SimConfig`] and [`Sim`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::mutations::Mutation;
use crate::routes::{router, AppState};
use crate::seed::{self, SeedParams};
use crate::state::{self, Activity, EndpointType, KeyScope, SharedState, State};

/// How the emulator keeps time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockMode {
    /// Follow the system clock (a background ticker applies autosuspend and expiry).
    Real,
    /// Start frozen at this instant; move it with `Sim::clock()` or the admin routes.
    Virtual { start: DateTime<Utc> },
}

/// Everything needed to start an emulator. `Default` gives an empty account (one user, one
/// personal key), a virtual clock at 2025-06-02T12:00:00Z, instant operations and port 0.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every generated id and of the seeded data.
    pub seed: u64,
    /// Organizations to generate (the primary user is a member of all).
    pub orgs: usize,
    /// Projects to generate (spread round-robin over the orgs; personal when `orgs` is 0).
    pub projects: usize,
    /// Personal API keys to accept (of the primary user). One is generated when empty.
    pub api_keys: Vec<String>,
    pub clock: ClockMode,
    /// How long each operation stays scheduling/running on the emulator's clock.
    pub operation_duration: Duration,
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// A fixture file (see [`crate::seed::Fixture`]) loaded after generation.
    pub fixture: Option<PathBuf>,
    /// Period of the background ticker in real-clock mode.
    pub tick_interval: Duration,
    /// Neon's rate limits, on by default (see [`crate::ratelimit`]).
    pub rate_limit: crate::ratelimit::RateLimitConfig,
    /// Add [`crate::seed::add_lifecycle_cases`] to the generated projects (off by default).
    pub lifecycle_cases: bool,
    /// Newest mutating requests the mutation log keeps (older ones are dropped and counted).
    pub mutation_log_limit: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            orgs: 0,
            projects: 0,
            api_keys: Vec::new(),
            clock: ClockMode::Virtual {
                start: Utc
                    .with_ymd_and_hms(2025, 6, 2, 12, 0, 0)
                    .single()
                    .expect("a valid fixed date"),
            },
            operation_duration: Duration::ZERO,
            port: 0,
            fixture: None,
            tick_interval: Duration::from_secs(1),
            rate_limit: crate::ratelimit::RateLimitConfig::default(),
            lifecycle_cases: false,
            mutation_log_limit: crate::mutations::DEFAULT_MUTATION_LOG_LIMIT,
        }
    }
}

impl SimConfig {
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn orgs(mut self, n: usize) -> Self {
        self.orgs = n;
        self
    }
    pub fn projects(mut self, n: usize) -> Self {
        self.projects = n;
        self
    }
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }
    pub fn real_clock(mut self) -> Self {
        self.clock = ClockMode::Real;
        self
    }
    pub fn virtual_clock(mut self, start: DateTime<Utc>) -> Self {
        self.clock = ClockMode::Virtual { start };
        self
    }
    pub fn operation_duration(mut self, d: Duration) -> Self {
        self.operation_duration = d;
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    pub fn fixture(mut self, path: impl Into<PathBuf>) -> Self {
        self.fixture = Some(path.into());
        self
    }
    /// Seed the cleanup cases of [`crate::seed::add_lifecycle_cases`] into every project.
    pub fn lifecycle_cases(mut self, on: bool) -> Self {
        self.lifecycle_cases = on;
        self
    }
    /// How many mutating requests the mutation log keeps (the newest; see [`crate::mutations`]).
    pub fn mutation_log_limit(mut self, n: usize) -> Self {
        self.mutation_log_limit = n;
        self
    }
    pub fn rate_limit(mut self, config: crate::ratelimit::RateLimitConfig) -> Self {
        self.rate_limit = config;
        self
    }

    /// Builds the initial model this configuration describes (no server).
    pub fn build_state(&self) -> anyhow::Result<State> {
        let clock = match &self.clock {
            ClockMode::Real => Clock::real(),
            ClockMode::Virtual { start } => Clock::virtual_at(*start),
        };
        let mut state = State::new(clock, self.seed, self.operation_duration);
        seed::generate(
            &mut state,
            &SeedParams {
                orgs: self.orgs,
                projects: self.projects,
                lifecycle_cases: self.lifecycle_cases,
            },
        );
        if let Some(path) = &self.fixture {
            seed::load_fixture_file(&mut state, path)?;
        }
        let user = state.primary_user_id.clone();
        if self.api_keys.is_empty() {
            state.add_api_key("sim-default", KeyScope::Personal { user_id: user }, None);
        } else {
            for (i, k) in self.api_keys.iter().enumerate() {
                state.add_api_key(
                    &format!("sim-key-{}", i + 1),
                    KeyScope::Personal {
                        user_id: user.clone(),
                    },
                    Some(k.clone()),
                );
            }
        }
        Ok(state)
    }
}

/// A running emulator bound to 127.0.0.1.
pub struct Sim {
    addr: SocketAddr,
    app: AppState,
    api_key: String,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    ticker: Option<JoinHandle<()>>,
}

impl Sim {
    /// Builds the account, binds `127.0.0.1:<port>` and serves until [`Sim::shutdown`].
    pub async fn start(config: SimConfig) -> anyhow::Result<Sim> {
        let state = config.build_state()?;
        let api_key = state
            .api_keys
            .iter()
            .find(|k| matches!(k.scope, KeyScope::Personal { .. }) && !k.revoked)
            .map(|k| k.secret.clone())
            .ok_or_else(|| anyhow::anyhow!("no personal API key configured"))?;
        let real = matches!(config.clock, ClockMode::Real);
        let tick = config.tick_interval;
        let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let app = AppState::new(SharedState::new(state), Arc::new(config));
        let (shutdown, mut rx) = watch::channel(false);
        let service = router(app.clone());
        let mut server_rx = rx.clone();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, service)
                .with_graceful_shutdown(async move {
                    let _ = server_rx.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "neon-sim server stopped with an error");
            }
        });
        let ticker = real.then(|| {
            let shared = app.state.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(tick);
                loop {
                    tokio::select! {
                        _ = interval.tick() => { drop(shared.settled()); }
                        _ = rx.wait_for(|stop| *stop) => break,
                    }
                }
            })
        });
        Ok(Sim {
            addr,
            app,
            api_key,
            shutdown,
            server,
            ticker,
        })
    }

    /// The socket the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/v2`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v2", self.addr)
    }

    /// `http://127.0.0.1:PORT` (for the `/_sim` admin routes).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A usable personal API key.
    pub fn api_key(&self) -> String {
        self.api_key.clone()
    }

    pub fn clock(&self) -> Clock {
        self.app.state.lock().clock.clone()
    }

    pub fn mutations(&self) -> Vec<Mutation> {
        self.app.mutations.snapshot()
    }

    /// Mutations evicted from the log (it keeps the newest `mutation_log_limit`).
    pub fn mutations_dropped(&self) -> u64 {
        self.app.mutations.dropped()
    }

    pub fn clear_mutations(&self) {
        self.app.mutations.clear();
    }

    pub fn state(&self) -> SharedState {
        self.app.state.clone()
    }

    /// Fault injection control (also `POST /_sim/faults`).
    pub fn faults(&self) -> crate::faults::FaultHandle {
        self.app.faults.clone()
    }

    /// The rate limits in force; change them with `set_config`.
    pub fn rate_limiter(&self) -> crate::ratelimit::RateLimiter {
        self.app.rate_limiter.clone()
    }

    /// Stops serving and waits for the server task (in-flight requests finish first).
    pub async fn shutdown(self) {
        // End hung requests first, or graceful shutdown would wait for them.
        self.app.faults.shutdown();
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        if let Some(t) = self.ticker {
            let _ = t.await;
        }
    }

    // ----- inspectors and setup helpers (all settle the model first) --------------------------

    pub fn projects(&self) -> Vec<state::Project> {
        self.app
            .state
            .settled()
            .projects
            .values()
            .cloned()
            .collect()
    }

    pub fn branches(&self, project_id: &str) -> Vec<state::Branch> {
        let s = self.app.state.settled();
        s.project_branches(project_id)
            .into_iter()
            .cloned()
            .collect()
    }

    pub fn branch(&self, branch_id: &str) -> Option<state::Branch> {
        self.app.state.settled().branches.get(branch_id).cloned()
    }

    pub fn endpoints(&self, project_id: &str) -> Vec<state::Endpoint> {
        let s = self.app.state.settled();
        s.project_endpoints(project_id)
            .into_iter()
            .cloned()
            .collect()
    }

    pub fn endpoint(&self, endpoint_id: &str) -> Option<state::Endpoint> {
        self.app.state.settled().endpoints.get(endpoint_id).cloned()
    }

    pub fn snapshots(&self, project_id: &str) -> Vec<state::Snapshot> {
        let s = self.app.state.settled();
        s.snapshots
            .values()
            .filter(|x| x.project_id == project_id)
            .cloned()
            .collect()
    }

    pub fn operations(&self, project_id: &str) -> Vec<state::Operation> {
        let s = self.app.state.settled();
        s.operations
            .iter()
            .filter(|o| o.project_id == project_id)
            .cloned()
            .collect()
    }

    /// Adds an organization the primary user belongs to; returns its id.
    pub fn add_org(&self, name: &str) -> String {
        let mut s = self.app.state.settled();
        seed::insert_org(&mut s, name)
    }

    /// Adds a project (with its default `main` branch, no compute) created now.
    pub fn add_project(&self, name: &str, org_id: Option<&str>) -> (state::Project, state::Branch) {
        let mut s = self.app.state.settled();
        let now = s.now();
        s.insert_project(name, org_id, now)
    }

    /// Adds a personal project of another user (created for it) shared with the primary user:
    /// it is listed by `GET /projects/shared`, not by `GET /projects`.
    pub fn add_shared_project(&self, name: &str) -> (state::Project, state::Branch) {
        let mut s = self.app.state.settled();
        let now = s.now();
        let owner = s.insert_user(&format!("owner-of-{name}"));
        let primary = s.primary_user_id.clone();
        let (project, branch) = s.insert_project(name, None, now);
        let p = s
            .projects
            .get_mut(&project.id)
            .expect("the project was just inserted");
        p.owner_id = owner;
        p.shared_with.push(primary);
        (p.clone(), branch)
    }

    /// Adds a branch; `parent` defaults to the project's default branch.
    pub fn add_branch(
        &self,
        project_id: &str,
        name: &str,
        parent: Option<&str>,
        created_at: DateTime<Utc>,
    ) -> anyhow::Result<state::Branch> {
        let mut s = self.app.state.settled();
        if !s.projects.contains_key(project_id) {
            anyhow::bail!("no project {project_id}");
        }
        let parent = match parent {
            Some(p) => Some(p.to_string()),
            None => s.default_branch(project_id).map(|b| b.id.clone()),
        };
        if let Some(p) = &parent {
            if s.branches.get(p).is_none_or(|b| b.project_id != project_id) {
                anyhow::bail!("no branch {p} in project {project_id}");
            }
        }
        Ok(s.insert_branch(project_id, name, parent.as_deref(), created_at))
    }

    /// Edits a branch in place (e.g. to set `protected` or `expires_at` without validation).
    pub fn update_branch(&self, branch_id: &str, f: impl FnOnce(&mut state::Branch)) -> bool {
        let mut s = self.app.state.settled();
        s.branches.get_mut(branch_id).map(f).is_some()
    }

    /// Adds an idle compute to a branch.
    pub fn add_endpoint(
        &self,
        branch_id: &str,
        kind: EndpointType,
    ) -> anyhow::Result<state::Endpoint> {
        let mut s = self.app.state.settled();
        let now = s.now();
        s.insert_endpoint(branch_id, kind, now)
            .ok_or_else(|| anyhow::anyhow!("no branch {branch_id}"))
    }

    /// Sets a compute's simulated workload (busy computes start now; idle ones autosuspend).
    pub fn set_endpoint_activity(&self, endpoint_id: &str, activity: Activity) -> bool {
        let mut s = self.app.state.settled();
        let Some(ep) = s.endpoints.get_mut(endpoint_id) else {
            return false;
        };
        ep.activity = activity;
        s.settle();
        true
    }

    /// Adds an API key with the given scope; returns its secret.
    pub fn add_api_key(&self, name: &str, scope: KeyScope) -> String {
        let mut s = self.app.state.settled();
        s.add_api_key(name, scope, None).secret
    }

    /// Makes the next `n` operations end `failed`.
    pub fn fail_next_operations(&self, n: u32) {
        self.app.state.lock().fail_next_operations = n;
    }
}
