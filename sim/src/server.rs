//! Starting, inspecting and stopping an emulator: [`Sim`] (configured by
//! [`crate::config::SimConfig`]).

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
pub use crate::config::{ClockMode, SimConfig};
use crate::mutations::Mutation;
use crate::routes::{router, AppState};
use crate::seed;
use crate::state::{self, Activity, EndpointType, KeyScope, SharedState};

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

    /// A branch's backup schedule (empty: none).
    pub fn backup_schedule(&self, branch_id: &str) -> Vec<state::BackupScheduleItem> {
        let s = self.app.state.settled();
        s.backup_schedules
            .get(branch_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Sets a branch's backup schedule as someone else would (no request, no rule
    /// checked); empty removes it. `false`: no such branch.
    pub fn set_backup_schedule(
        &self,
        branch_id: &str,
        schedule: Vec<state::BackupScheduleItem>,
    ) -> bool {
        let mut s = self.app.state.settled();
        if !s.branches.contains_key(branch_id) {
            return false;
        }
        if schedule.is_empty() {
            s.backup_schedules.remove(branch_id);
        } else {
            s.backup_schedules.insert(branch_id.to_string(), schedule);
        }
        true
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

    /// Sets an organization's billing plan (e.g. `free_v3`, `scale`): what its per-plan limits
    /// (manual snapshots) follow. `false` if there is no such organization.
    pub fn set_org_plan(&self, org_id: &str, plan: &str) -> bool {
        let mut s = self.app.state.settled();
        match s.orgs.get_mut(org_id) {
            Some(o) => {
                o.plan = plan.to_string();
                true
            }
            None => false,
        }
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

    /// Sets the schema (DDL lines) of a database of a branch, the model behind schema compare
    /// (the emulator runs no SQL). False when there is no such database.
    pub fn set_schema(&self, branch_id: &str, database: &str, ddl: &[&str]) -> bool {
        let mut s = self.app.state.settled();
        let Some(db) = s
            .databases
            .get_mut(branch_id)
            .and_then(|dbs| dbs.iter_mut().find(|d| d.name == database))
        else {
            return false;
        };
        db.schema = ddl.iter().map(|l| l.to_string()).collect();
        true
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
