//! The forecast engine (cargo feature `demo`, which brings neon-sim in): a fixture loaded into
//! neon-sim in this process on a virtual clock, and the policy's real jobs run at every tick
//! their schedules give over the period, in order, compressed.
//!
//! For each tick (every enabled job's fire times in `[from, until)`, computed by
//! [`crate::schedule`] in the job's zone, ordered by time then by the policy's job order):
//! the emulator's clock is set to the tick (it then applies what time does by itself:
//! autosuspend, branch and snapshot expiry), and the job runs through the scheduler's own
//! run path ([`crate::scheduler::run_now`]: claim, lease, timeout, the executor of `run`),
//! with "now" the emulator's clock ([`SimClock`], the run's `RunControl` clock). Each run
//! finishes before the next tick, so concurrency and missed-run policies never come into
//! play, and ticks are at their nominal times (no jitter).
//!
//! Isolation: the policy is loaded with the emulator's URL and key and a temporary SQLite
//! store given as its only environment ([`crate::config::load_with_env`] with nothing else:
//! neither `NEON_API_KEY` nor `NEON_STEWARD_*` nor a credentials directory of this process is
//! read), and the run refuses to start unless the loaded policy's API URL is the emulator's
//! and its store the temporary one. The policy's own store is never opened.
//!
//! `collect_consumption` jobs are not run: they only read, and change nothing a forecast
//! shows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::timeline::{BranchSnapshots, Event, JobRuns, Summary, NEON};
use crate::config::{self, Config, JobConfig, JobKind, JobSpec};
use crate::scheduler::{run_now, Clock, Executor, LeaseTiming, RunReport};
use crate::store::{ActionOutcome, ActionRecord, RunStatus, Store};

/// Who adds the branches of `--new-branches-per-day` in the timeline.
pub const MODEL: &str = "model";

/// Most ticks one forecast runs (a per-second schedule over a year would never end).
pub const MAX_TICKS: usize = 200_000;

/// The emulator's virtual clock as the daemon's clock.
pub struct SimClock(pub neon_sim::Clock);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// What the future holds beyond the policy (modelled simply).
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// Branches added per day, spread over the projects (by name, round robin), each a child
    /// of its project's default branch without a compute.
    pub new_branches_per_day: u32,
    /// Their names: this prefix, then `<day>-<n>`.
    pub new_branch_prefix: String,
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "neon-steward-forecast-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the temporary directory {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone)]
struct ObsEndpoint {
    branch_id: String,
    active: bool,
    started_at: Option<DateTime<Utc>>,
    last_active: Option<DateTime<Utc>>,
    autosuspend: Option<TimeDelta>,
    cu: f64,
}

#[derive(Debug, Clone)]
struct ObsSnapshot {
    name: String,
    project_id: String,
    branch_id: String,
    expires_at: Option<DateTime<Utc>>,
}

/// The emulator's account at one instant (what the engine compares between ticks).
#[derive(Debug, Clone, Default)]
struct Observed {
    /// Branch id to (project id, name, expires_at).
    branches: HashMap<String, (String, String, Option<DateTime<Utc>>)>,
    endpoints: HashMap<String, ObsEndpoint>,
    snapshots: HashMap<String, ObsSnapshot>,
}

fn observe(sim: &neon_sim::Sim) -> Observed {
    let state = sim.state();
    let s = state.settled();
    Observed {
        branches: s
            .branches
            .values()
            .map(|b| {
                (
                    b.id.clone(),
                    (b.project_id.clone(), b.name.clone(), b.expires_at),
                )
            })
            .collect(),
        endpoints: s
            .endpoints
            .values()
            .map(|e| {
                (
                    e.id.clone(),
                    ObsEndpoint {
                        branch_id: e.branch_id.clone(),
                        active: e.current_state == neon_sim::state::EndpointState::Active,
                        started_at: e.started_at,
                        last_active: e.last_active,
                        autosuspend: e.effective_suspend_timeout(),
                        cu: e.billed_cu(),
                    },
                )
            })
            .collect(),
        snapshots: s
            .snapshots
            .values()
            .map(|x| {
                (
                    x.id.clone(),
                    ObsSnapshot {
                        name: x.name.clone(),
                        project_id: x.project_id.clone(),
                        branch_id: x.source_branch_id.clone(),
                        expires_at: x.expires_at,
                    },
                )
            })
            .collect(),
    }
}

/// A compute a job suspended, until it runs again.
#[derive(Debug, Clone)]
struct Suspension {
    since: DateTime<Utc>,
    /// When its own autosuspend would have suspended it anyway (`None`: never).
    would_have: Option<DateTime<Utc>>,
    cu: f64,
}

/// A forecast in progress: the emulator, the daemon's pieces pointed at it, and what has
/// happened so far.
pub struct Engine {
    sim: neon_sim::Sim,
    cfg: Config,
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    timing: LeaseTiming,
    _tmp: TempDir,
    from: DateTime<Utc>,
    obs: Observed,
    initial_snapshots: HashSet<String>,
    project_names: HashMap<String, String>,
    /// Every branch seen, id to name (deleted ones too).
    branch_names: HashMap<String, String>,
    events: Vec<Event>,
    runs: BTreeMap<usize, JobRuns>,
    open: HashMap<String, Suspension>,
    hours: f64,
    cu_hours: f64,
    added: usize,
    days_added: i64,
}

impl Engine {
    /// Starts the emulator at `from` with `fixture`, and loads `policy` pointed at it.
    pub async fn start(
        policy: &Path,
        fixture: &neon_sim::seed::Fixture,
        from: DateTime<Utc>,
    ) -> anyhow::Result<Engine> {
        let sim = neon_sim::Sim::start(
            neon_sim::SimConfig::default()
                .virtual_clock(from)
                // Time is compressed: Neon's per-minute limits mean nothing here, and the
                // client's own limiter is lifted below for the same reason.
                .rate_limit(neon_sim::ratelimit::RateLimitConfig {
                    enabled: false,
                    ..Default::default()
                }),
        )
        .await
        .context("starting neon-sim")?;
        {
            let state = sim.state();
            let mut s = state.lock();
            neon_sim::seed::apply_fixture(&mut s, fixture).context("loading the fixture")?;
        }
        let tmp = TempDir::new()?;
        let store_url = format!("sqlite://{}", tmp.0.join("forecast.db").display());
        let overrides: HashMap<&str, String> = HashMap::from([
            ("NEON_STEWARD_BASE_URL", sim.base_url()),
            ("NEON_API_KEY", sim.api_key()),
            ("NEON_STEWARD_STORE_URL", store_url.clone()),
            ("NEON_STEWARD_LISTEN", "127.0.0.1:0".to_string()),
        ]);
        let mut cfg = config::load_with_env(policy, &|k| overrides.get(k).cloned())?;
        if cfg.api.base_url != sim.base_url() || cfg.store.url != store_url {
            anyhow::bail!(
                "refusing to forecast: the policy did not take the emulator's URL and the \
                 temporary store (api.base_url {}, store {})",
                cfg.api.base_url,
                crate::store::redact_url(&cfg.store.url)
            );
        }
        cfg.api.rate_limit_per_minute = 6_000_000;
        cfg.api.burst = 100_000;
        let store = crate::daemon::open_store(&cfg).await?;
        let clock: Arc<dyn Clock> = Arc::new(SimClock(sim.clock()));
        let executor = crate::daemon::executor(&cfg, store.clone(), clock.clone())?;
        let timing = cfg.store.lease_timing();
        let obs = observe(&sim);
        let project_names = {
            let state = sim.state();
            let s = state.lock();
            s.projects
                .values()
                .map(|p| (p.id.clone(), p.name.clone()))
                .collect()
        };
        let branch_names = obs
            .branches
            .iter()
            .map(|(id, (_, n, _))| (id.clone(), n.clone()))
            .collect();
        let runs = cfg
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| simulated(j))
            .map(|(i, j)| {
                (
                    i,
                    JobRuns {
                        job: j.name.clone(),
                        kind: j.kind.as_str().to_string(),
                        runs: 0,
                        not_succeeded: 0,
                        dry_run: j.dry_run,
                    },
                )
            })
            .collect();
        Ok(Engine {
            initial_snapshots: obs.snapshots.keys().cloned().collect(),
            sim,
            cfg,
            store,
            executor,
            clock,
            timing,
            _tmp: tmp,
            from,
            obs,
            project_names,
            branch_names,
            events: Vec::new(),
            runs,
            open: HashMap::new(),
            hours: 0.0,
            cu_hours: 0.0,
            added: 0,
            days_added: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every tick of every simulated job in `[self.from, until)`, in order.
    pub fn ticks(&self, until: DateTime<Utc>) -> anyhow::Result<Vec<(DateTime<Utc>, usize)>> {
        ticks(&self.cfg.jobs, self.from, until)
    }

    /// Runs every tick up to `until` (exclusive), then moves the clock to `until`.
    pub async fn run_until(
        &mut self,
        until: DateTime<Utc>,
        activity: &Activity,
    ) -> anyhow::Result<()> {
        for (t, i) in self.ticks(until)? {
            self.advance(t, activity);
            let job = self.cfg.jobs[i].clone();
            let (report, actions) = self.run_job(&job, t, false).await?;
            if let Some(r) = self.runs.get_mut(&i) {
                r.runs += 1;
                if report.status != RunStatus::Succeeded {
                    r.not_succeeded += 1;
                }
            }
            if report.status != RunStatus::Succeeded {
                // A run that ended without doing its plan (a limit refused it, ...) says so
                // in the timeline, with its error.
                self.events.push(Event {
                    at: t,
                    job: job.name.clone(),
                    action: "run".into(),
                    outcome: report.status.as_str().to_string(),
                    resource_kind: "run".into(),
                    resource: "-".into(),
                    project: None,
                    reason: report
                        .error
                        .clone()
                        .unwrap_or_else(|| "the run did not succeed".into()),
                });
            }
            let before = self.obs.clone();
            for a in &actions {
                self.record_action(a, t, &before);
            }
            let after = observe(&self.sim);
            self.close_suspensions(&after, t);
            self.remember_names(&after);
            self.obs = after;
        }
        self.advance(until, activity);
        Ok(())
    }

    /// Moves the clock to `t`: adds the modelled branches of the days begun, and records
    /// what Neon did by itself meanwhile (expiries).
    fn advance(&mut self, t: DateTime<Utc>, activity: &Activity) {
        self.sim.clock().set(t);
        if activity.new_branches_per_day > 0 {
            let day = (t - self.from).num_days();
            while self.days_added < day {
                self.days_added += 1;
                let at = self.from + TimeDelta::days(self.days_added);
                self.add_branches(at, self.days_added, activity);
            }
        }
        let now = observe(&self.sim);
        for (id, (project, name, expires_at)) in &self.obs.branches {
            if !now.branches.contains_key(id) {
                self.events.push(Event {
                    at: expires_at.unwrap_or(t),
                    job: NEON.into(),
                    action: "branch_expired".into(),
                    outcome: "succeeded".into(),
                    resource_kind: "branch".into(),
                    resource: name.clone(),
                    project: self.project_names.get(project).cloned(),
                    reason: "its expires_at came".into(),
                });
            }
        }
        for (id, s) in &self.obs.snapshots {
            if !now.snapshots.contains_key(id) {
                self.events.push(Event {
                    at: s.expires_at.unwrap_or(t),
                    job: NEON.into(),
                    action: "snapshot_expired".into(),
                    outcome: "succeeded".into(),
                    resource_kind: "snapshot".into(),
                    resource: s.name.clone(),
                    project: self.project_names.get(&s.project_id).cloned(),
                    reason: "its expiry came".into(),
                });
            }
        }
        // Events of a gap are ordered by when they happened.
        self.close_suspensions(&now, t);
        self.remember_names(&now);
        self.obs = now;
    }

    fn add_branches(&mut self, at: DateTime<Utc>, day: i64, activity: &Activity) {
        let state = self.sim.state();
        let mut s = state.lock();
        let mut projects: Vec<(String, String)> = s
            .projects
            .values()
            .map(|p| (p.name.clone(), p.id.clone()))
            .collect();
        projects.sort();
        if projects.is_empty() {
            return;
        }
        for n in 0..activity.new_branches_per_day as usize {
            let (pname, pid) = &projects[n % projects.len()];
            let Some(parent) = s
                .branches
                .values()
                .find(|b| b.project_id == *pid && b.default)
                .map(|b| b.id.clone())
            else {
                continue;
            };
            let name = format!("{}{day}-{}", activity.new_branch_prefix, n + 1);
            s.insert_branch(pid, &name, Some(&parent), at);
            self.added += 1;
            self.events.push(Event {
                at,
                job: MODEL.into(),
                action: "create_branch".into(),
                outcome: "succeeded".into(),
                resource_kind: "branch".into(),
                resource: name,
                project: Some(pname.clone()),
                reason: "--new-branches-per-day".into(),
            });
        }
    }

    /// Runs `job` at `t` through the scheduler's run path; its report and ledger rows.
    pub async fn run_job(
        &mut self,
        job: &Arc<JobConfig>,
        t: DateTime<Utc>,
        dry_run: bool,
    ) -> anyhow::Result<(RunReport, Vec<ActionRecord>)> {
        self.sim.clock().set(t);
        let Some((run_id, report)) = run_now(
            self.store.clone(),
            self.executor.clone(),
            self.clock.clone(),
            job.clone(),
            dry_run,
            CancellationToken::new(),
            self.timing,
        )
        .await?
        else {
            anyhow::bail!("{}: the tick {t} was claimed twice", job.name);
        };
        let actions = self.store.actions_for_run(run_id).await?;
        Ok((report, actions))
    }

    fn record_action(&mut self, a: &ActionRecord, t: DateTime<Utc>, before: &Observed) {
        let outcome = match a.outcome {
            ActionOutcome::Succeeded => "succeeded",
            ActionOutcome::Failed | ActionOutcome::Unknown | ActionOutcome::Pending => "failed",
            ActionOutcome::Planned => "planned",
            ActionOutcome::Skipped => return,
        };
        let resource = match (a.resource_kind.as_str(), &a.resource_name) {
            ("endpoint", _) => match before.endpoints.get(&a.resource_id) {
                Some(e) => format!(
                    "{} (branch {})",
                    a.resource_id,
                    self.branch_names
                        .get(&e.branch_id)
                        .map_or("?", |s| s.as_str())
                ),
                None => a.resource_id.clone(),
            },
            (_, Some(n)) => n.clone(),
            (_, None) => a.resource_id.clone(),
        };
        if a.action == "suspend_endpoint" && a.outcome == ActionOutcome::Succeeded {
            if let Some(e) = before.endpoints.get(&a.resource_id) {
                let would_have = e
                    .autosuspend
                    .map(|d| e.last_active.or(e.started_at).unwrap_or(t) + d);
                self.open.insert(
                    a.resource_id.clone(),
                    Suspension {
                        since: t,
                        would_have,
                        cu: e.cu,
                    },
                );
            }
        }
        self.events.push(Event {
            at: t,
            job: a.job.clone(),
            action: a.action.clone(),
            outcome: outcome.into(),
            resource_kind: a.resource_kind.clone(),
            resource,
            project: a.project_id.as_ref().map(|p| {
                self.project_names
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| p.clone())
            }),
            reason: a.reason.clone(),
        });
    }

    /// Ends the suspensions of computes that run again (or are gone) in `now`.
    fn close_suspensions(&mut self, now: &Observed, t: DateTime<Utc>) {
        let ended: Vec<(String, DateTime<Utc>)> = self
            .open
            .iter()
            .filter_map(|(id, s)| match now.endpoints.get(id) {
                None => Some((id.clone(), t)),
                Some(e) if e.active => Some((id.clone(), e.started_at.unwrap_or(t).max(s.since))),
                Some(_) => None,
            })
            .collect();
        for (id, end) in ended {
            if let Some(s) = self.open.remove(&id) {
                self.count_suspension(&s, end);
            }
        }
    }

    fn count_suspension(&mut self, s: &Suspension, end: DateTime<Utc>) {
        let end = s.would_have.map_or(end, |w| end.min(w));
        let secs = (end - s.since).num_seconds().max(0) as f64;
        self.hours += secs / 3600.0;
        self.cu_hours += secs / 3600.0 * s.cu;
    }

    fn remember_names(&mut self, o: &Observed) {
        for (id, (_, n, _)) in &o.branches {
            self.branch_names
                .entry(id.clone())
                .or_insert_with(|| n.clone());
        }
    }

    /// Ends the forecast at `until`: the events in order and the summary.
    pub async fn finish(mut self, until: DateTime<Utc>) -> (Vec<Event>, Summary) {
        let open: Vec<Suspension> = self.open.drain().map(|(_, s)| s).collect();
        for s in &open {
            self.count_suspension(s, until);
        }
        let mut events = std::mem::take(&mut self.events);
        events.sort_by_key(|e| e.at);
        let mut summary = Summary {
            runs: self.runs.values().cloned().collect(),
            ..Summary::default()
        };
        summary.count(&events);
        let mut per_branch: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for (id, s) in &self.obs.snapshots {
            let key = (
                self.project_names
                    .get(&s.project_id)
                    .cloned()
                    .unwrap_or_else(|| s.project_id.clone()),
                self.branch_names
                    .get(&s.branch_id)
                    .cloned()
                    .unwrap_or_else(|| s.branch_id.clone()),
            );
            let e = per_branch.entry(key).or_default();
            e.0 += 1;
            if !self.initial_snapshots.contains(id) {
                e.1 += 1;
            }
        }
        summary.snapshots_at_end = per_branch
            .into_iter()
            .map(|((project, branch), (n, made))| BranchSnapshots {
                project,
                branch,
                snapshots: n,
                made_by_policy: made,
            })
            .collect();
        summary.compute_hours_suspended = self.hours;
        summary.compute_unit_hours_suspended = self.cu_hours;
        summary.price_per_compute_unit_second = compute_price(&self.cfg);
        summary.estimated_cost_saved = summary
            .price_per_compute_unit_second
            .map(|p| p * self.cu_hours * 3600.0);
        summary.branches_added = self.added;
        self.sim.shutdown().await;
        (events, summary)
    }
}

/// Whether a job takes part in a forecast: enabled, and not `collect_consumption`.
pub fn simulated(j: &JobConfig) -> bool {
    j.enabled && j.kind != JobKind::CollectConsumption
}

/// Every fire time of every simulated job in `[from, until)` (ordered by time, then by the
/// policy's order), from the schedule code the scheduler uses.
pub fn ticks(
    jobs: &[Arc<JobConfig>],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<Vec<(DateTime<Utc>, usize)>> {
    let mut out = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        if !simulated(j) {
            continue;
        }
        let mut t = from - TimeDelta::milliseconds(1);
        while let Some(n) = j.schedule.next_after(t, j.timezone) {
            if n >= until {
                break;
            }
            out.push((n, i));
            if out.len() > MAX_TICKS {
                anyhow::bail!(
                    "more than {MAX_TICKS} runs to simulate (job {} alone fires every {}); \
                     shorten the period with --days or --until",
                    j.name,
                    j.schedule
                );
            }
            t = n;
        }
    }
    out.sort();
    Ok(out)
}

/// The `compute_unit_seconds` price of the policy's first `collect_consumption` job that has
/// one.
pub fn compute_price(cfg: &Config) -> Option<f64> {
    cfg.jobs.iter().find_map(|j| match &j.spec {
        JobSpec::CollectConsumption(c) => c.prices.get("compute_unit_seconds").copied(),
        _ => None,
    })
}
