//! `cargo bench --bench steward [-- --quick]`: figures and ratios for neon-steward.
//!
//! A small hand-written harness (no criterion): every figure is the median of a few samples,
//! printed as a table and written to `target/bench/steward.json` so two commits can be
//! compared. Everything talks over loopback to an in-process neon-sim. The machines this runs
//! on are small and shared, so the *ratios* are the figures to trust; absolute times move
//! with the neighbours. See `docs/BENCHMARKS.md` for what each figure means.
//!
//! Sections:
//! 1. client: listing N branches through `NeonClient::list_branches` vs raw reqwest GETs of
//!    the same pages; what the same request count costs under Neon's 700 requests/minute.
//! 2. plan: `expire_branches` dry runs over accounts of growing size; requests per project.
//! 3. store: `claim_run`, `begin_action` + `finish_action` on SQLite (and PostgreSQL if a
//!    server answers).
//! 4. memory: peak RSS of planning the largest account, measured in a child process so that
//!    nothing else has grown the heap before.
//! 5. sim: neon-sim's requests/s for a branch-list page at concurrency 1 vs 8.
//! 6. telemetry: `/metrics` rendering time at 5,000 series; peak RSS of the first
//!    consumption collection of a large account (hourly, full look-back), measured in a
//!    child process that talks to the emulator running in this one.
//! 7. calls (run after plan): requests per real sweep against the minimum for the account
//!    and policy, per job kind; a 200-delete sweep against a plain sequential script (the
//!    sweep alone: the filter word `sweep`).
//! 8. limiter: the most requests the client's rate limiter lets through in any 60 s window
//!    at Neon's budget, on paused (virtual) time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State as AxState};
use axum::middleware::{self, Next};
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use neon_sim::ratelimit::RateLimitConfig;
use neon_sim::state::{EndpointType, State as SimState};
use neon_sim::{AppState, SharedState, SimConfig};
use neon_steward::config::{self, JobConfig};
use neon_steward::jobs::{run_job, JobEnv, RunContext};
use neon_steward::neon::{ClientConfig, NeonClient, ProjectId, DEFAULT_PAGE_SIZE};
use neon_steward::secret::Secret;
use neon_steward::store::{self, ActionOutcome, NewAction, NewRun, RunStatus, Store, Trigger};
use neon_steward::telemetry::consumption::ConsumptionExporter;
use neon_steward::telemetry::metrics::{metrics, render};
use serde::Deserialize;

/// Neon's documented limits, as the client enforces them by default (`ClientConfig::new`).
const NEON_PER_MINUTE: f64 = 700.0;
const NEON_BURST: f64 = 40.0;

/// The settings of one run of the whole bench.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    /// Samples per figure (the median is reported).
    samples: usize,
    /// Branches in the project listed by section 1.
    list_branches: usize,
    /// Account sizes (projects) of section 2; each project has `branches_per_project`.
    plan_sizes: Vec<usize>,
    branches_per_project: usize,
    store_actions: usize,
    store_runs: usize,
    pg_actions: usize,
    sim_requests: usize,
    /// Series in `/metrics` when its rendering is timed, and the renders timed.
    render_series: usize,
    renders: usize,
    /// Projects of the consumption memory probe.
    consumption_projects: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                samples: 1,
                list_branches: 500,
                plan_sizes: vec![10, 40],
                branches_per_project: 20,
                store_actions: 500,
                store_runs: 100,
                pg_actions: 200,
                sim_requests: 200,
                render_series: 5_000,
                renders: 20,
                consumption_projects: 100,
            }
        } else {
            Plan {
                quick,
                samples: 3,
                list_branches: 2_000,
                plan_sizes: vec![10, 50, 200],
                branches_per_project: 20,
                store_actions: 5_000,
                store_runs: 500,
                pg_actions: 2_000,
                sim_requests: 1_500,
                render_series: 5_000,
                renders: 50,
                consumption_projects: 1_111,
            }
        }
    }
}

// ---------------------------------------------------------------------------------- report

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    section: &'static str,
    name: String,
    value: f64,
    unit: &'static str,
    /// What the figure should be (`<= 5 ms`), printed beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    goal: Option<&'static str>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn add(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) {
        self.push(Row {
            section,
            name: name.into(),
            value,
            unit,
            goal: None,
        });
    }

    /// A figure with its goal (`"<= 5 ms"`), printed beside it.
    fn add_goal(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        goal: &'static str,
    ) {
        self.push(Row {
            section,
            name: name.into(),
            value,
            unit,
            goal: Some(goal),
        });
    }

    fn push(&mut self, row: Row) {
        // Print as we go: a slow section still shows what the earlier ones measured.
        let goal = row
            .goal
            .map(|g| format!("  (goal {g})"))
            .unwrap_or_default();
        println!(
            "{:<8} {:<58} {:>14} {}{goal}",
            row.section,
            row.name,
            fmt_value(row.value),
            row.unit
        );
        self.rows.push(row);
    }

    fn note(&mut self, section: &'static str, text: impl Into<String>) {
        let text = text.into();
        println!("{section:<8} note: {text}");
        self.notes.push(format!("{section}: {text}"));
    }

    fn write_json(&self, plan: &Plan, path: &Path) -> Result<()> {
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let doc = serde_json::json!({
            "bench": "steward",
            "date": Utc::now().to_rfc3339(),
            "commit": commit,
            "quick": plan.quick,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "results": self.rows,
            "notes": self.notes,
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

fn fmt_value(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.2e}")
    } else if v.abs() < 100.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.0}")
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Seconds `requests` requests take when sent as fast as Neon allows: the client's bucket
/// lets a burst of 40 through, then 700 per minute.
fn secs_at_neon_limit(requests: f64) -> f64 {
    (requests - NEON_BURST).max(0.0) * 60.0 / NEON_PER_MINUTE
}

// ---------------------------------------------------------------- emulator with a counter

/// Requests the emulator received, by `METHOD /path/template` (ids replaced by `{id}`), and
/// how many did not answer 2xx (a benchmark that hits 429s or errors measures the wrong thing).
#[derive(Clone, Default)]
struct Counter(Arc<Mutex<CounterInner>>);

#[derive(Default)]
struct CounterInner {
    by_route: BTreeMap<String, u64>,
    not_ok: u64,
    /// Time spent inside the emulator (handler, model, JSON), summed over requests.
    busy: Duration,
}

impl Counter {
    fn lock(&self) -> std::sync::MutexGuard<'_, CounterInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn total(&self) -> u64 {
        self.lock().by_route.values().sum()
    }
    fn not_ok(&self) -> u64 {
        self.lock().not_ok
    }
    fn busy(&self) -> Duration {
        self.lock().busy
    }
    fn by_route(&self) -> BTreeMap<String, u64> {
        self.lock().by_route.clone()
    }
    fn reset(&self) {
        *self.lock() = CounterInner::default();
    }
}

async fn count_layer(AxState(c): AxState<Counter>, req: Request, next: Next) -> Response {
    let key = req
        .uri()
        .path()
        .strip_prefix("/api/v2")
        .map(|p| format!("{} {}", req.method(), route_template(p)));
    let t = Instant::now();
    let resp = next.run(req).await;
    let spent = t.elapsed();
    if let Some(key) = key {
        let mut c = c.lock();
        c.busy += spent;
        *c.by_route.entry(key).or_default() += 1;
        if !resp.status().is_success() {
            c.not_ok += 1;
        }
    }
    resp
}

/// `/projects/p-1/branches/br-2` -> `/projects/{id}/branches/{id}`.
fn route_template(path: &str) -> String {
    const COLLECTIONS: &[&str] = &[
        "projects",
        "branches",
        "endpoints",
        "operations",
        "snapshots",
        "databases",
        "roles",
        "organizations",
    ];
    let mut out = String::new();
    let mut after_collection = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if after_collection && seg != "count" {
            out.push_str("{id}");
            after_collection = false;
        } else {
            out.push_str(seg);
            after_collection = COLLECTIONS.contains(&seg);
        }
    }
    out
}

/// neon-sim on 127.0.0.1:0, its router wrapped in the request counter.
struct BenchSim {
    base: String,
    key: String,
    counter: Counter,
    app: AppState,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for BenchSim {
    fn drop(&mut self) {
        self.app.faults.shutdown();
        self.server.abort();
    }
}

async fn start_sim(rate: RateLimitConfig, seed: impl FnOnce(&mut SimState)) -> Result<BenchSim> {
    start_sim_with(SimConfig::default().rate_limit(rate), seed).await
}

async fn start_sim_with(config: SimConfig, seed: impl FnOnce(&mut SimState)) -> Result<BenchSim> {
    let mut state = config.build_state()?;
    seed(&mut state);
    let key = state
        .api_keys
        .iter()
        .find(|k| !k.revoked)
        .map(|k| k.secret.clone())
        .context("the emulator's state has no API key")?;
    let app = AppState::new(SharedState::new(state), Arc::new(config));
    let counter = Counter::default();
    let service = neon_sim::router(app.clone())
        .layer(middleware::from_fn_with_state(counter.clone(), count_layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, service).await {
            eprintln!("neon-sim stopped: {e}");
        }
    });
    Ok(BenchSim {
        base: format!("http://{addr}/api/v2"),
        key,
        counter,
        app,
        server,
    })
}

/// A sim whose limits never bite (Neon's x1000): we measure our code, not the bucket.
fn unthrottled() -> RateLimitConfig {
    RateLimitConfig::scaled(1_000)
}

fn client(sim: &BenchSim, page_size: u32) -> Result<NeonClient> {
    let mut cc = ClientConfig::new(sim.base.clone(), Secret::new(sim.key.clone()));
    // The client's own bucket would space requests at Neon's pace; the bench measures CPU
    // and converts request counts to Neon time separately (`secs_at_neon_limit`).
    cc.rate_limit_per_minute = 100_000_000;
    cc.burst = 1_000_000;
    cc.page_size = page_size;
    cc.poll_initial = Duration::from_millis(1);
    cc.poll_max = Duration::from_millis(5);
    Ok(NeonClient::new(cc)?)
}

/// `projects` projects, each with `main` (with a compute) and `branches - 1` preview
/// branches aged 0-29 days; every fifth is a child of the previous preview branch (so the
/// tree rules have parents to keep) and every fourth has a compute.
fn seed_account(state: &mut SimState, projects: usize, branches: usize) {
    let now = state.now();
    let days = |d: i64| now - TimeDelta::days(d);
    for p in 0..projects {
        let (project, main) = state.insert_project(&format!("bench-{p:04}"), None, days(90));
        state.insert_endpoint(&main.id, EndpointType::ReadWrite, days(90));
        let mut prev: Option<String> = None;
        for i in 1..branches {
            let created = days(((i * 37 + p) % 30) as i64);
            let parent = if i % 5 == 0 { prev.clone() } else { None };
            let parent = parent.unwrap_or_else(|| main.id.clone());
            let b = state.insert_branch(
                &project.id,
                &format!("preview/pr-{i}"),
                Some(&parent),
                created,
            );
            if i % 4 == 0 {
                state.insert_endpoint(&b.id, EndpointType::ReadWrite, created);
            }
            prev = Some(b.id);
        }
    }
}

// ----------------------------------------------------------------------------- 1. client

/// The least a raw client must read from a page: the item count and the cursor.
#[derive(Deserialize)]
struct RawPage {
    branches: Vec<serde::de::IgnoredAny>,
    pagination: Option<RawPagination>,
}

#[derive(Deserialize)]
struct RawPagination {
    next: Option<String>,
}

async fn raw_list(
    http: &reqwest::Client,
    sim: &BenchSim,
    project: &str,
    limit: usize,
) -> Result<usize> {
    let url = format!("{}/projects/{project}/branches", sim.base);
    let mut cursor: Option<String> = None;
    let mut n = 0;
    loop {
        let mut q: Vec<(&str, String)> = vec![
            ("limit", limit.to_string()),
            ("sort_by", "created_at".into()),
            ("sort_order", "asc".into()),
        ];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let resp = http
            .get(&url)
            .bearer_auth(&sim.key)
            .query(&q)
            .send()
            .await?
            .error_for_status()?;
        let page: RawPage = serde_json::from_slice(&resp.bytes().await?)?;
        n += page.branches.len();
        match page.pagination.and_then(|p| p.next) {
            Some(c) if page.branches.len() >= limit => cursor = Some(c),
            _ => return Ok(n),
        }
    }
}

async fn bench_client(plan: &Plan, r: &mut Report) -> Result<()> {
    let n = plan.list_branches;
    let sim = start_sim(unthrottled(), |s| seed_account(s, 1, n)).await?;
    let project = sim
        .app
        .state
        .lock()
        .projects
        .keys()
        .next()
        .cloned()
        .context("one project")?;
    let pid = ProjectId::from(project.as_str());
    let http = reqwest::Client::new();

    let (mut raw_t, mut cli_t, mut big_t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut raw_sim, mut cli_sim) = (Vec::new(), Vec::new());
    let mut requests = (0, 0, 0);
    let c100 = client(&sim, 100)?;
    let c_big = client(&sim, 10_000)?;
    // One warm-up of each (connection set-up, first-use allocations).
    raw_list(&http, &sim, &project, 100).await?;
    let _: Vec<_> = c100.list_branches(&pid).try_collect().await?;
    for _ in 0..plan.samples.max(3) {
        sim.counter.reset();
        let t = Instant::now();
        let got = raw_list(&http, &sim, &project, 100).await?;
        raw_t.push(t.elapsed());
        raw_sim.push(sim.counter.busy());
        requests.0 = sim.counter.total();
        if got != n {
            bail!("raw listing saw {got} branches, expected {n}");
        }

        sim.counter.reset();
        let t = Instant::now();
        let got: Vec<_> = c100.list_branches(&pid).try_collect().await?;
        cli_t.push(t.elapsed());
        cli_sim.push(sim.counter.busy());
        requests.1 = sim.counter.total();
        if got.len() != n {
            bail!("client listing saw {} branches, expected {n}", got.len());
        }

        sim.counter.reset();
        let t = Instant::now();
        let got: Vec<_> = c_big.list_branches(&pid).try_collect().await?;
        big_t.push(t.elapsed());
        requests.2 = sim.counter.total();
        if got.len() != n {
            bail!(
                "client listing (big pages) saw {} branches, expected {n}",
                got.len()
            );
        }
    }
    if sim.counter.not_ok() > 0 {
        bail!("{} requests did not answer 2xx", sim.counter.not_ok());
    }
    let (raw, cli, big) = (median(raw_t), median(cli_t), median(big_t));
    let s = "client";
    r.add(
        s,
        format!("list {n} branches, raw reqwest (page 100)"),
        raw.as_secs_f64() * 1e3,
        "ms",
    );
    r.add(
        s,
        format!("list {n} branches, NeonClient (page 100)"),
        cli.as_secs_f64() * 1e3,
        "ms",
    );
    r.add(
        s,
        "client overhead ratio (client / raw)",
        cli.as_secs_f64() / raw.as_secs_f64(),
        "x",
    );
    // Both include the same emulator work; without it the ratio is the client's own cost.
    let (raw_sim, cli_sim) = (median(raw_sim), median(cli_sim));
    r.add(
        s,
        "of which inside neon-sim (client listing)",
        cli_sim.as_secs_f64() * 1e3,
        "ms",
    );
    let own = |total: Duration, sim: Duration| total.saturating_sub(sim).as_secs_f64().max(1e-9);
    r.add(
        s,
        "client-side ratio ((client - sim) / (raw - sim))",
        own(cli, cli_sim) / own(raw, raw_sim),
        "x",
    );
    r.add(
        s,
        "client branches/s (page 100)",
        n as f64 / cli.as_secs_f64(),
        "branches/s",
    );
    r.add(
        s,
        "client requests per listing (page 100)",
        requests.1 as f64,
        "requests",
    );
    r.add(
        s,
        "raw requests per listing (page 100)",
        requests.0 as f64,
        "requests",
    );
    r.add(
        s,
        format!("list {n} branches, NeonClient (page_size 10000)"),
        big.as_secs_f64() * 1e3,
        "ms",
    );
    r.add(
        s,
        "requests per listing (page_size 10000)",
        requests.2 as f64,
        "requests",
    );
    r.add(
        s,
        "page 100 / page 10000 time ratio",
        cli.as_secs_f64() / big.as_secs_f64(),
        "x",
    );
    // The same requests paced by Neon: with the client's bucket empty (the middle of a long
    // run) every request costs 60/700 s. The ratio is how much longer the real API makes the
    // listing than our own work does.
    let neon = requests.1 as f64 * 60.0 / NEON_PER_MINUTE;
    r.add(s, "this listing at Neon's 700/min, bucket empty", neon, "s");
    r.add(
        s,
        "Neon-paced / unthrottled time ratio",
        neon / cli.as_secs_f64(),
        "x",
    );
    Ok(())
}

// ------------------------------------------------------------------------------- 2. plan

const EXPIRE_POLICY: &str = r#"
[api]
concurrency = 4

[[jobs]]
name = "expire-previews"
kind = "expire_branches"
every = "15m"
ttl = "7d"
mode = "delete"
[jobs.branches]
names = ["preview/*"]
"#;

const SNAPSHOT_POLICY: &str = r#"
[api]
concurrency = 4

[[jobs]]
name = "nightly"
kind = "snapshot_branches"
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
name_template = "{job}-{branch}-{date}-{time}"
[jobs.branches]
default = true
[jobs.retention]
keep_last = 2
"#;

const SUSPEND_POLICY: &str = r#"
[api]
concurrency = 4

[[jobs]]
name = "suspend-nights"
kind = "suspend_computes"
every = "10m"
idle_for = "1h"
"#;

fn job(policy: &str) -> Result<Arc<JobConfig>> {
    let cfg = config::parse_with_env(Path::new("bench.toml"), policy, &|k| {
        (k == "NEON_API_KEY").then(|| "bench-key-not-used".to_string())
    })
    .map_err(|e| anyhow::anyhow!("bench policy: {e}"))?;
    cfg.jobs
        .first()
        .cloned()
        .context("the bench policy has a job")
}

struct PlanRun {
    elapsed: Duration,
    planned: i64,
    skipped: i64,
}

async fn dry_run(env: &JobEnv, job: &JobConfig, now: DateTime<Utc>, tick: u32) -> Result<PlanRun> {
    let scheduled_for = now + TimeDelta::minutes(i64::from(tick));
    let run_id = env
        .store
        .claim_run(&NewRun {
            job: job.name.clone(),
            kind: job.kind.as_str().to_string(),
            scheduled_for,
            trigger: Trigger::Manual,
            dry_run: true,
            status: RunStatus::Running,
            error: None,
            plan_id: None,
        })
        .await?
        .context("a fresh tick is always claimable")?;
    let t = Instant::now();
    let res = run_job(
        env,
        job,
        RunContext {
            run_id,
            scheduled_for,
            now,
            dry_run: true,
        },
    )
    .await;
    let elapsed = t.elapsed();
    if res.status != RunStatus::Succeeded {
        bail!(
            "dry run of {} ended {:?}: {:?}",
            job.name,
            res.status,
            res.error
        );
    }
    Ok(PlanRun {
        elapsed,
        planned: res.counts.planned,
        skipped: res.counts.skipped,
    })
}

async fn job_env(sim: &BenchSim, dir: &Path) -> Result<JobEnv> {
    let url = format!("sqlite://{}", dir.join("plan.db").display());
    Ok(JobEnv {
        // The client's default page sizes (each endpoint's maximum), as the daemon runs.
        client: client(sim, DEFAULT_PAGE_SIZE)?,
        store: store::open(&url).await?,
        concurrency: 4,
        operation_deadline: Duration::from_secs(30),
        consumption: Arc::new(ConsumptionExporter::detached()),
    })
}

async fn bench_plan(plan: &Plan, r: &mut Report) -> Result<()> {
    let s = "plan";
    let expire = job(EXPIRE_POLICY)?;
    let bpp = plan.branches_per_project;
    let mut per_branch: Vec<(usize, f64, f64)> = Vec::new();
    for (i, &projects) in plan.plan_sizes.iter().enumerate() {
        let sim = start_sim(unthrottled(), |st| seed_account(st, projects, bpp)).await?;
        let dir = tempfile::tempdir()?;
        let env = job_env(&sim, dir.path()).await?;
        let now = sim.app.state.lock().now();
        dry_run(&env, &expire, now, 0).await?; // warm-up
        let mut times = Vec::new();
        let mut last = None;
        let mut requests = 0;
        let mut sim_busy = Vec::new();
        for k in 0..plan.samples {
            sim.counter.reset();
            let run = dry_run(&env, &expire, now, 1 + k as u32).await?;
            requests = sim.counter.total();
            sim_busy.push(sim.counter.busy());
            times.push(run.elapsed);
            last = Some(run);
        }
        if sim.counter.not_ok() > 0 {
            bail!("{} requests did not answer 2xx", sim.counter.not_ok());
        }
        let run = last.context("at least one sample")?;
        let t = median(times).as_secs_f64();
        let branches = projects * bpp;
        let label = format!("{projects}x{bpp}");
        r.add(
            s,
            format!("expire dry run {label}: time per run"),
            t * 1e3,
            "ms",
        );
        r.add(
            s,
            format!("expire dry run {label}: time per branch"),
            t * 1e6 / branches as f64,
            "us",
        );
        let busy = median(sim_busy).as_secs_f64();
        r.add(
            s,
            format!("expire dry run {label}: of which inside neon-sim"),
            busy * 1e3,
            "ms",
        );
        r.add(
            s,
            format!("expire dry run {label}: steward time per branch (run - sim)"),
            (t - busy).max(0.0) * 1e6 / branches as f64,
            "us",
        );
        r.add(
            s,
            format!("expire dry run {label}: actions planned"),
            run.planned as f64,
            "actions",
        );
        r.add(
            s,
            format!("expire dry run {label}: skips recorded"),
            run.skipped as f64,
            "actions",
        );
        r.add(
            s,
            format!("expire dry run {label}: API requests"),
            requests as f64,
            "requests",
        );
        r.add(
            s,
            format!("expire dry run {label}: requests per project"),
            requests as f64 / projects as f64,
            "req/project",
        );
        let neon = secs_at_neon_limit(requests as f64);
        r.add(
            s,
            format!("expire dry run {label}: time at Neon's 700/min"),
            neon,
            "s",
        );
        r.add(
            s,
            format!("expire dry run {label}: Neon time / measured"),
            neon / t,
            "x",
        );
        if i + 1 == plan.plan_sizes.len() {
            r.note(
                s,
                format!(
                    "requests by route ({label}): {}",
                    sim.counter
                        .by_route()
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        per_branch.push((branches, t, (t - busy).max(1e-9)));

        // The same account with nothing due: listing and deciding, no ledger writes.
        if i + 1 == plan.plan_sizes.len() {
            let idle = job(&EXPIRE_POLICY.replace("ttl = \"7d\"", "ttl = \"3650d\""))?;
            let mut times = Vec::new();
            for k in 0..plan.samples {
                let run = dry_run(&env, &idle, now, 50 + k as u32).await?;
                if run.planned != 0 {
                    bail!("the nothing-due policy planned {} actions", run.planned);
                }
                times.push(run.elapsed);
            }
            let t0 = median(times).as_secs_f64();
            r.add(
                s,
                format!("expire dry run {label}, nothing due: time per run"),
                t0 * 1e3,
                "ms",
            );
            r.add(
                s,
                format!("expire dry run {label}: ledger share of the run (1 - nothing-due/run)"),
                (1.0 - t0 / t).max(0.0),
                "fraction",
            );
        }

        // The other planned jobs on the middle size: their request pattern per project.
        if i == plan.plan_sizes.len() / 2 {
            for (name, policy) in [("snapshot", SNAPSHOT_POLICY), ("suspend", SUSPEND_POLICY)] {
                let j = job(policy)?;
                sim.counter.reset();
                dry_run(&env, &j, now, 100).await?;
                let req = sim.counter.total();
                r.add(
                    s,
                    format!("{name} dry run {label}: requests per project"),
                    req as f64 / projects as f64,
                    "req/project",
                );
            }
        }
    }
    if let (Some(first), Some(last)) = (per_branch.first(), per_branch.last()) {
        if last.0 > first.0 {
            r.add(
                s,
                format!(
                    "scaling: time ratio {}b / {}b (size ratio {:.0})",
                    last.0,
                    first.0,
                    last.0 as f64 / first.0 as f64
                ),
                last.1 / first.1,
                "x",
            );
            r.add(
                s,
                "scaling: per-branch time ratio largest / smallest (1 = linear)",
                (last.1 / last.0 as f64) / (first.1 / first.0 as f64),
                "x",
            );
            r.add(
                s,
                "scaling: same, steward time only (run - sim)",
                (last.2 / last.0 as f64) / (first.2 / first.0 as f64),
                "x",
            );
        }
    }
    Ok(())
}

/// Requests a real (not dry) expire run makes per deleted branch: the mutation plus the
/// operation polls. Small account, the sim finishes operations on the next request.
async fn bench_act(r: &mut Report) -> Result<()> {
    let s = "plan";
    let projects = 5;
    // Real clock and operations that take 20 ms, so the client has running operations to
    // wait for, as with Neon (where they take seconds).
    let config = SimConfig::default()
        .rate_limit(unthrottled())
        .real_clock()
        .operation_duration(Duration::from_millis(20));
    let sim = start_sim_with(config, |st| seed_account(st, projects, 20)).await?;
    let dir = tempfile::tempdir()?;
    let env = job_env(&sim, dir.path()).await?;
    let now = sim.app.state.lock().now();
    let expire = job(EXPIRE_POLICY)?;
    // The planning requests, counted on a dry run of the same account.
    sim.counter.reset();
    dry_run(&env, &expire, now, 1).await?;
    let planning = sim.counter.total() as f64;
    let run_id = env
        .store
        .claim_run(&NewRun {
            job: expire.name.clone(),
            kind: expire.kind.as_str().to_string(),
            scheduled_for: now,
            trigger: Trigger::Manual,
            dry_run: false,
            status: RunStatus::Running,
            error: None,
            plan_id: None,
        })
        .await?
        .context("fresh tick")?;
    sim.counter.reset();
    let t = Instant::now();
    let res = run_job(
        &env,
        &expire,
        RunContext {
            run_id,
            scheduled_for: now,
            now,
            dry_run: false,
        },
    )
    .await;
    let elapsed = t.elapsed();
    if res.status != RunStatus::Succeeded {
        bail!("real expire run ended {:?}: {:?}", res.status, res.error);
    }
    let deleted = res.counts.succeeded.max(1) as f64;
    let by_route = sim.counter.by_route();
    let total = sim.counter.total() as f64;
    r.add(
        s,
        format!("real expire run {projects}x20: branches deleted"),
        deleted,
        "branches",
    );
    r.add(
        s,
        format!("real expire run {projects}x20: time"),
        elapsed.as_secs_f64() * 1e3,
        "ms",
    );
    r.add(
        s,
        "real expire run: requests per deleted branch (after planning)",
        (total - planning) / deleted,
        "req/branch",
    );
    r.note(
        s,
        format!(
            "real expire run requests by route: {}",
            by_route
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(())
}

/// The suspend job lists each project's operations to find running ones: its request count
/// per project as the project's operation history grows (every compute start and suspend is
/// an operation, so busy projects collect thousands).
async fn bench_suspend_history(r: &mut Report) -> Result<()> {
    let s = "plan";
    let projects = 10;
    let suspend = job(SUSPEND_POLICY)?;
    for history in [0usize, 300, 1_000] {
        let sim = start_sim(unthrottled(), |st| {
            seed_account(st, projects, 20);
            let eps: Vec<(String, String, String)> = st
                .endpoints
                .values()
                .map(|e| (e.project_id.clone(), e.branch_id.clone(), e.id.clone()))
                .collect();
            let mut per_project: BTreeMap<String, usize> = BTreeMap::new();
            for (p, b, e) in eps {
                let n = per_project.entry(p.clone()).or_default();
                while *n < history {
                    let action = if n.is_multiple_of(2) {
                        "start_compute"
                    } else {
                        "suspend_compute"
                    };
                    st.push_operation(&p, Some(&b), Some(&e), action);
                    *n += 1;
                }
            }
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let env = job_env(&sim, dir.path()).await?;
        let now = sim.app.state.lock().now();
        sim.counter.reset();
        dry_run(&env, &suspend, now, 0).await?;
        let req = sim.counter.total() as f64;
        r.add(
            s,
            format!("suspend dry run {projects}x20, {history} past ops/project: req/project"),
            req / projects as f64,
            "req/project",
        );
    }
    Ok(())
}

// ------------------------------------------------------------- 2b. calls: the minimum

/// A run (dry or real) of `job` at tick `now + tick minutes`: its result and its ledger.
async fn run_once(
    env: &JobEnv,
    job: &JobConfig,
    now: DateTime<Utc>,
    tick: u32,
    dry_run: bool,
) -> Result<(
    neon_steward::jobs::RunResult,
    Vec<store::ActionRecord>,
    Duration,
)> {
    let scheduled_for = now + TimeDelta::minutes(i64::from(tick));
    let run_id = env
        .store
        .claim_run(&NewRun {
            plan_id: None,
            job: job.name.clone(),
            kind: job.kind.as_str().to_string(),
            scheduled_for,
            trigger: Trigger::Manual,
            dry_run,
            status: RunStatus::Running,
            error: None,
        })
        .await?
        .context("a fresh tick is always claimable")?;
    let t = Instant::now();
    let res = run_job(
        env,
        job,
        RunContext {
            run_id,
            scheduled_for,
            now,
            dry_run,
        },
    )
    .await;
    let elapsed = t.elapsed();
    if res.status != RunStatus::Succeeded {
        bail!(
            "run of {} ended {:?}: {:?}",
            job.name,
            res.status,
            res.error
        );
    }
    let actions = env.store.actions_for_run(run_id).await?;
    Ok((res, actions, elapsed))
}

/// Projects pages a sweep of `projects` projects needs at Neon's maximum of 400 per page: a
/// full page is followed by one more (it cannot be known to be the last), a short one ends.
fn project_pages(projects: usize) -> u64 {
    (projects / 400 + 1) as u64
}

/// Actions a run carried out, by project (succeeded or failed: each is one call).
fn actions_by_project(actions: &[store::ActionRecord]) -> BTreeMap<String, u64> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for a in actions {
        if matches!(a.outcome, ActionOutcome::Succeeded | ActionOutcome::Failed)
            && a.resource_kind != "project"
        {
            *by.entry(a.project_id.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    by
}

/// What the minimum of one sweep is made of (printed beside the ratio).
struct Minimum {
    pages: u64,
    listings: u64,
    /// Safety and record reads the policy needs per project that acts (expire's fresh
    /// listing before its deletes, and its one read of `recoverable_until`).
    per_acting_project: u64,
    actions: u64,
    confirmations: u64,
    /// Consumption pages: one per call of at most 100 projects (each holds every project it
    /// asked for, so no further page is needed).
    consumption: u64,
}

impl Minimum {
    fn total(&self) -> u64 {
        self.pages
            + self.listings
            + self.per_acting_project
            + self.actions
            + self.confirmations
            + self.consumption
    }
    fn strict(&self) -> u64 {
        self.total() - self.per_acting_project
    }
    fn describe(&self) -> String {
        let consumption = if self.consumption > 0 {
            format!(" + {} consumption pages", self.consumption)
        } else {
            String::new()
        };
        format!(
            "{} project page(s) + {} listings + {} per-project re-check/record reads + {} \
             actions + {} operation confirmations{consumption} = {}",
            self.pages,
            self.listings,
            self.per_acting_project,
            self.actions,
            self.confirmations,
            self.total()
        )
    }
}

const EXPIRE_IDLE_POLICY: &str = r#"
[api]
concurrency = 4

[[jobs]]
name = "expire-idle"
kind = "expire_branches"
every = "15m"
ttl = "7d"
idle_ttl = "3d"
mode = "delete"
[jobs.branches]
names = ["preview/*"]
"#;

const SUSPEND_WINDOW_POLICY: &str = r#"
[api]
concurrency = 4

[[jobs]]
name = "suspend-mondays"
kind = "suspend_computes"
every = "10m"
windows = ["Mon"]
window_timezone = "UTC"
"#;

/// Requests per real sweep against the minimum for the account and policy, per job kind.
/// The emulator runs on its virtual clock with operations that finish at once, so no
/// operation needs confirming before the next mutation (0 confirmations in the minimum),
/// and its delete answers carry no recovery window (so expire reads it once per project).
async fn bench_calls(plan: &Plan, r: &mut Report) -> Result<()> {
    let s = "calls";
    let goal = "<= 1.05";
    // Expire: many deletes per project, and one delete per project (where any fixed cost
    // per project shows most), ttl only and with idle_ttl.
    let many = if plan.quick { 10 } else { 40 };
    let single = if plan.quick { 50 } else { 400 };
    let shapes: [(&str, &str, usize, usize, bool); 3] = [
        ("expire ttl", EXPIRE_POLICY, many, 20, false),
        ("expire ttl", EXPIRE_POLICY, single, 2, false),
        ("expire ttl+idle_ttl", EXPIRE_IDLE_POLICY, many, 20, true),
    ];
    for (name, policy, projects, bpp, idle) in shapes {
        let sim = start_sim(unthrottled(), |st| seed_account(st, projects, bpp)).await?;
        let dir = tempfile::tempdir()?;
        let env = job_env(&sim, dir.path()).await?;
        let now = sim.app.state.lock().now();
        // Two branches per project: main and one preview branch; make it old enough.
        if bpp == 2 {
            let mut st = sim.app.state.lock();
            for b in st.branches.values_mut() {
                if b.name.starts_with("preview/") {
                    b.created_at = now - TimeDelta::days(20);
                }
            }
        }
        let j = job(policy)?;
        sim.counter.reset();
        let (res, actions, _) = run_once(&env, &j, now, 0, false).await?;
        if sim.counter.not_ok() > 0 {
            bail!("{} requests did not answer 2xx", sim.counter.not_ok());
        }
        let by_project = actions_by_project(&actions);
        let acting = by_project.len() as u64;
        let min = Minimum {
            pages: project_pages(projects),
            // branches, and endpoints only when idle_ttl needs last activity
            listings: projects as u64 * if idle { 2 } else { 1 },
            // the fresh listing before the project's deletes, and one recoverable_until read
            per_acting_project: acting * 2,
            actions: by_project.values().sum(),
            confirmations: 0,
            consumption: 0,
        };
        let label = format!("{name} {projects}x{bpp} ({} deletes)", res.counts.succeeded);
        report_minimum(r, s, &label, &sim, &min, goal);
    }

    // Snapshot with retention: the third daily run creates one snapshot per project and
    // retention deletes the oldest of this job's (keep_last = 2).
    {
        let projects = if plan.quick { 10 } else { 40 };
        let sim = start_sim(unthrottled(), |st| seed_account(st, projects, 3)).await?;
        let dir = tempfile::tempdir()?;
        let env = job_env(&sim, dir.path()).await?;
        let j = job(SNAPSHOT_POLICY)?;
        for day in 0..3 {
            if day > 0 {
                sim.app
                    .state
                    .lock()
                    .clock
                    .advance(Duration::from_secs(86_400));
            }
            let now = sim.app.state.lock().now();
            sim.counter.reset();
            let (res, actions, _) = run_once(&env, &j, now, 0, false).await?;
            if day < 2 {
                continue;
            }
            if sim.counter.not_ok() > 0 {
                bail!("{} requests did not answer 2xx", sim.counter.not_ok());
            }
            let by_project = actions_by_project(&actions);
            let min = Minimum {
                pages: project_pages(projects),
                // branches and snapshots
                listings: projects as u64 * 2,
                per_acting_project: 0,
                actions: by_project.values().sum(),
                confirmations: 0,
                consumption: 0,
            };
            let label = format!(
                "snapshot keep_last=2 {projects}x3, 3rd day ({} actions)",
                res.counts.succeeded
            );
            report_minimum(r, s, &label, &sim, &min, goal);
        }
    }

    // Suspend in a window: every active compute is suspended.
    {
        let projects = if plan.quick { 10 } else { 40 };
        let sim = start_sim(unthrottled(), |st| {
            seed_account(st, projects, 5);
            for e in st.endpoints.values_mut() {
                e.activity = neon_sim::state::Activity::Busy;
            }
            st.settle();
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let env = job_env(&sim, dir.path()).await?;
        let now = sim.app.state.lock().now();
        let j = job(SUSPEND_WINDOW_POLICY)?;
        sim.counter.reset();
        let (res, actions, _) = run_once(&env, &j, now, 0, false).await?;
        if sim.counter.not_ok() > 0 {
            bail!("{} requests did not answer 2xx", sim.counter.not_ok());
        }
        let by_project = actions_by_project(&actions);
        let min = Minimum {
            pages: project_pages(projects),
            // endpoints
            listings: projects as u64,
            per_acting_project: 0,
            actions: by_project.values().sum(),
            confirmations: 0,
            consumption: 0,
        };
        let label = format!(
            "suspend window {projects}x5 ({} suspends)",
            res.counts.succeeded
        );
        report_minimum(r, s, &label, &sim, &min, goal);
    }

    // Consumption: a first collection (hourly, Neon's whole 168 h look-back, legacy
    // endpoint) of every project: the projects pages, then one call per 100 projects.
    {
        let projects = if plan.quick { 250 } else { 450 };
        let sim = start_sim(unthrottled(), |st| seed_account(st, projects, 1)).await?;
        let dir = tempfile::tempdir()?;
        let env = job_env(&sim, dir.path()).await?;
        let now = sim.app.state.lock().now();
        let j = job(CONSUMPTION_POLICY)?;
        sim.counter.reset();
        let (res, _, _) = run_once(&env, &j, now, 0, false).await?;
        if sim.counter.not_ok() > 0 {
            bail!("{} requests did not answer 2xx", sim.counter.not_ok());
        }
        let calls = projects.div_ceil(neon_steward::jobs::consumption::MAX_PROJECT_IDS) as u64;
        if res.counts.succeeded != calls as i64 {
            bail!(
                "the collection made {} calls, {calls} expected",
                res.counts.succeeded
            );
        }
        let min = Minimum {
            pages: project_pages(projects),
            listings: 0,
            per_acting_project: 0,
            actions: 0,
            confirmations: 0,
            consumption: calls,
        };
        let label = format!("consumption, first hourly collection of {projects} projects");
        report_minimum(r, s, &label, &sim, &min, goal);
    }
    Ok(())
}

fn report_minimum(
    r: &mut Report,
    s: &'static str,
    label: &str,
    sim: &BenchSim,
    min: &Minimum,
    goal: &'static str,
) {
    let requests = sim.counter.total();
    r.add(s, format!("{label}: requests"), requests as f64, "requests");
    r.add(
        s,
        format!("{label}: minimum"),
        min.total() as f64,
        "requests",
    );
    r.add_goal(
        s,
        format!("{label}: requests / minimum"),
        requests as f64 / min.total().max(1) as f64,
        "x",
        goal,
    );
    if min.per_acting_project > 0 {
        r.add(
            s,
            format!("{label}: requests / (minimum without re-check and record reads)"),
            requests as f64 / min.strict().max(1) as f64,
            "x",
        );
    }
    r.note(
        s,
        format!(
            "{label}: minimum = {}; sent: {}",
            min.describe(),
            sim.counter
                .by_route()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
}

/// A 200-delete sweep with no rate limit, at the default concurrency and poll settings,
/// against a plain sequential script on an identical emulator: list the projects, then per
/// project list its branches and delete the same branches one after the other (plain
/// reqwest, no polling; a 423 is retried after 1 ms). With instant operations (`op` zero:
/// the delete's answer reports them finished, nothing to confirm) the goal applies; with
/// operations of 1 ms each delete's operations are polled once before the project's next
/// delete (Neon's rule), which the script does not do.
async fn bench_delete_sweep(r: &mut Report, op: Duration) -> Result<()> {
    let s = "calls";
    let projects = 14; // x 20 branches: about 200 due under the 7-day ttl
    let config = || {
        SimConfig::default()
            .rate_limit(unthrottled())
            .real_clock()
            .operation_duration(op)
    };
    // The daemon's defaults: `[api]` as an empty section gives them, the client as
    // `ClientConfig::new` builds it; only the client's own bucket is lifted.
    let defaults = config::parse_with_env(
        Path::new("bench.toml"),
        EXPIRE_POLICY.replace("concurrency = 4", "").as_str(),
        &|k| (k == "NEON_API_KEY").then(|| "bench-key-not-used".to_string()),
    )
    .map_err(|e| anyhow::anyhow!("bench policy: {e}"))?;
    let expire = defaults.jobs.first().cloned().context("a job")?;
    let env_for = |sim: &BenchSim, dir: &Path| {
        let mut cc = ClientConfig::new(sim.base.clone(), Secret::new(sim.key.clone()));
        cc.rate_limit_per_minute = 100_000_000;
        cc.burst = 1_000_000;
        let url = format!("sqlite://{}", dir.join("sweep.db").display());
        let concurrency = defaults.api.concurrency;
        async move {
            Ok::<_, anyhow::Error>(JobEnv {
                client: NeonClient::new(cc)?,
                store: store::open(&url).await?,
                concurrency,
                operation_deadline: Duration::from_secs(600),
                consumption: Arc::new(ConsumptionExporter::detached()),
            })
        }
    };
    // Each sample is a fraction of a second, and one alone moves by half with the machine:
    // the median of several in either mode.
    let samples = 7;
    let mut steward_times = Vec::new();
    let mut script_times = Vec::new();
    let mut deletes = 0;
    let (mut steward_busy, mut script_busy) = (Vec::new(), Vec::new());
    let mut steward_requests = BTreeMap::new();
    for k in 0..samples {
        // The steward.
        let sim = start_sim_with(config(), |st| seed_account(st, projects, 20)).await?;
        let dir = tempfile::tempdir()?;
        let env = env_for(&sim, dir.path()).await?;
        let now = sim.app.state.lock().now();
        let (res, _, elapsed) = run_once(&env, &expire, now, k as u32, false).await?;
        if sim.counter.not_ok() > 0 {
            bail!(
                "{} steward requests did not answer 2xx",
                sim.counter.not_ok()
            );
        }
        deletes = res.counts.succeeded;
        steward_times.push(elapsed);
        steward_busy.push(sim.counter.busy());
        steward_requests = sim.counter.by_route();

        // The script, on an identical account; what to delete comes from a dry run there
        // (not timed), in the plan's order (children first).
        let sim = start_sim_with(config(), |st| seed_account(st, projects, 20)).await?;
        let dir = tempfile::tempdir()?;
        let env = env_for(&sim, dir.path()).await?;
        let now = sim.app.state.lock().now();
        let (_, planned, _) = run_once(&env, &expire, now, 0, true).await?;
        let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in planned
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Planned)
        {
            order
                .entry(a.project_id.clone().unwrap_or_default())
                .or_default()
                .push(a.resource_id.clone());
        }
        let http = reqwest::Client::new();
        sim.counter.reset();
        let t = Instant::now();
        let n = script_sweep(&http, &sim, &order).await?;
        script_times.push(t.elapsed());
        script_busy.push(sim.counter.busy());
        if n as i64 != deletes {
            bail!("the script deleted {n} branches, the steward {deletes}");
        }
    }
    let (st, sc) = (
        median(steward_times).as_secs_f64(),
        median(script_times).as_secs_f64(),
    );
    let label = format!("{deletes}-delete sweep, {} ms operations", op.as_millis());
    r.add(s, format!("{label}: steward"), st * 1e3, "ms");
    r.add(
        s,
        format!("{label}: plain sequential script"),
        sc * 1e3,
        "ms",
    );
    r.add(
        s,
        format!("{label}: of which inside neon-sim, steward / script"),
        median(steward_busy).as_secs_f64() * 1e3,
        "ms",
    );
    r.add(
        s,
        format!("{label}: script inside neon-sim"),
        median(script_busy).as_secs_f64() * 1e3,
        "ms",
    );
    r.note(
        s,
        format!(
            "{label}: steward requests by route: {}",
            steward_requests
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    if op.is_zero() {
        r.add_goal(
            s,
            format!("{label}: steward / script"),
            st / sc,
            "x",
            "<= 1.5",
        );
    } else {
        r.add(s, format!("{label}: steward / script"), st / sc, "x");
    }
    Ok(())
}

/// The script of [`bench_delete_sweep`]: returns the branches deleted.
async fn script_sweep(
    http: &reqwest::Client,
    sim: &BenchSim,
    order: &BTreeMap<String, Vec<String>>,
) -> Result<usize> {
    #[derive(Deserialize)]
    struct Projects {
        projects: Vec<IdOnly>,
    }
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    let page: Projects = http
        .get(format!("{}/projects", sim.base))
        .bearer_auth(&sim.key)
        .query(&[("limit", "400")])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut deleted = 0;
    for p in &page.projects {
        http.get(format!("{}/projects/{}/branches", sim.base, p.id))
            .bearer_auth(&sim.key)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        for b in order.get(&p.id).into_iter().flatten() {
            loop {
                let resp = http
                    .delete(format!("{}/projects/{}/branches/{b}", sim.base, p.id))
                    .bearer_auth(&sim.key)
                    .send()
                    .await?;
                if resp.status().as_u16() == 423 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                resp.error_for_status()?.bytes().await?;
                deleted += 1;
                break;
            }
        }
    }
    Ok(deleted)
}

// ------------------------------------------------------------------------------ 3. store

fn action(run_id: i64, i: usize) -> NewAction {
    NewAction {
        run_id,
        job: "bench-store".into(),
        resource_kind: "branch".into(),
        resource_id: format!("br-bench-{i:06}"),
        resource_name: Some(format!("preview/pr-{i}")),
        project_id: Some("bench-project-0001".into()),
        action: "delete_branch".into(),
        rule: Some("ttl".into()),
        reason: "age 9d > ttl 7d".into(),
        dry_run: false,
        outcome: ActionOutcome::Pending,
    }
}

fn new_run(i: usize) -> NewRun {
    NewRun {
        job: "bench-store".into(),
        kind: "expire_branches".into(),
        scheduled_for: DateTime::<Utc>::UNIX_EPOCH + TimeDelta::minutes(i as i64),
        trigger: Trigger::Schedule,
        dry_run: false,
        status: RunStatus::Running,
        error: None,
        plan_id: None,
    }
}

async fn store_figures(
    r: &mut Report,
    backend: &'static str,
    st: Arc<dyn Store>,
    runs: usize,
    actions: usize,
) -> Result<()> {
    let s = "store";
    let t = Instant::now();
    let mut last_run = 0;
    for i in 0..runs {
        last_run = st.claim_run(&new_run(i)).await?.context("fresh tick")?;
    }
    let claim = t.elapsed();
    if st.claim_run(&new_run(0)).await?.is_some() {
        bail!("{backend}: a tick was claimed twice");
    }
    r.add(
        s,
        format!("{backend}: claim_run ({runs} runs)"),
        runs as f64 / claim.as_secs_f64(),
        "runs/s",
    );

    let t = Instant::now();
    for i in 0..actions {
        let id = st.begin_action(&action(last_run, i)).await?;
        st.finish_action(id, ActionOutcome::Succeeded, Some("recoverable_until=..."))
            .await?;
    }
    let seq = t.elapsed();
    r.add(
        s,
        format!("{backend}: begin+finish_action, 1 writer ({actions})"),
        actions as f64 / seq.as_secs_f64(),
        "actions/s",
    );
    r.add(
        s,
        format!("{backend}: time per action (2 writes)"),
        seq.as_secs_f64() * 1e6 / actions as f64,
        "us",
    );

    // Four writers, as four projects acting at once (`api.concurrency = 4`).
    let writers = 4;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let st = st.clone();
        let n = actions / writers;
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let id = st
                    .begin_action(&action(last_run, actions + w * n + i))
                    .await?;
                st.finish_action(id, ActionOutcome::Succeeded, None).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let par = t.elapsed();
    let done = (actions / writers) * writers;
    r.add(
        s,
        format!("{backend}: begin+finish_action, 4 writers ({done})"),
        done as f64 / par.as_secs_f64(),
        "actions/s",
    );
    r.add(
        s,
        format!("{backend}: 4 writers / 1 writer throughput"),
        seq.as_secs_f64() / actions as f64 / (par.as_secs_f64() / done as f64),
        "x",
    );
    let rows = st.actions_for_run(last_run).await?.len();
    if rows != actions + done {
        bail!(
            "{backend}: {rows} actions stored, expected {}",
            actions + done
        );
    }

    // Rows that are final when written (a dry run's planned actions, skips): one
    // `begin_action` (one transaction) each, against one `begin_actions` batch.
    let planned = |i: usize| NewAction {
        outcome: ActionOutcome::Planned,
        dry_run: true,
        ..action(last_run, i)
    };
    let base = 2 * actions + done;
    let t = Instant::now();
    for i in 0..actions {
        st.begin_action(&planned(base + i)).await?;
    }
    let one_by_one = t.elapsed();
    let batch: Vec<NewAction> = (0..actions).map(|i| planned(base + actions + i)).collect();
    let t = Instant::now();
    let ids = st.begin_actions(&batch).await?;
    let batched = t.elapsed();
    if ids.len() != actions {
        bail!("{backend}: begin_actions returned {} ids", ids.len());
    }
    r.add(
        s,
        format!("{backend}: planned rows, begin_action one by one ({actions})"),
        actions as f64 / one_by_one.as_secs_f64(),
        "actions/s",
    );
    r.add(
        s,
        format!("{backend}: planned rows, one begin_actions batch ({actions})"),
        actions as f64 / batched.as_secs_f64(),
        "actions/s",
    );
    r.add(
        s,
        format!("{backend}: batch / one by one throughput"),
        one_by_one.as_secs_f64() / batched.as_secs_f64(),
        "x",
    );
    Ok(())
}

async fn bench_store(plan: &Plan, r: &mut Report) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let st = store::open(&url).await?;
    store_figures(r, "sqlite", st, plan.store_runs, plan.store_actions).await?;

    let admin = std::env::var("NEON_STEWARD_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match pg_database(&admin).await {
        Ok((url, name)) => {
            let result = async {
                let st = store::open(&url).await?;
                store_figures(
                    r,
                    "postgres",
                    st,
                    plan.store_runs.min(plan.pg_actions),
                    plan.pg_actions,
                )
                .await
            }
            .await;
            drop_pg_database(&admin, &name).await;
            result?;
        }
        Err(e) => {
            r.note("store", format!("postgres: skipped: no server ({e})"));
        }
    }
    Ok(())
}

/// A fresh database on the server (never the shared one), dropped after the bench.
async fn pg_database(admin_url: &str) -> Result<(String, String)> {
    use sqlx::Connection;
    let mut admin = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::PgConnection::connect(admin_url),
    )
    .await
    .context("connect timed out")??;
    let name = format!("steward_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let base = admin_url
        .rsplit_once('/')
        .context("the postgres URL names a database")?
        .0;
    Ok((format!("{base}/{name}"), name))
}

async fn drop_pg_database(admin_url: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
        if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
        {
            eprintln!("could not drop bench database {name}: {e}");
        }
    }
}

// ----------------------------------------------------------------------------- 4. memory

fn proc_status_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The child process: seed the largest account, then plan it once. Prints one JSON line.
async fn memory_probe(projects: usize, bpp: usize) -> Result<()> {
    let sim = start_sim(unthrottled(), |st| seed_account(st, projects, bpp)).await?;
    let dir = tempfile::tempdir()?;
    let env = job_env(&sim, dir.path()).await?;
    let now = sim.app.state.lock().now();
    let expire = job(EXPIRE_POLICY)?;
    // Resetting the high-water mark (Linux >= 4.0) makes "before" the current RSS.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = proc_status_kb("VmHWM:").context("no VmHWM in /proc/self/status")?;
    let rss_before = proc_status_kb("VmRSS:").unwrap_or(0);
    let run = dry_run(&env, &expire, now, 0).await?;
    let after = proc_status_kb("VmHWM:").context("no VmHWM")?;
    println!(
        "{}",
        serde_json::json!({
            "hwm_before_kb": before, "rss_before_kb": rss_before, "hwm_after_kb": after,
            "reset": reset, "branches": projects * bpp, "planned": run.planned,
        })
    );
    Ok(())
}

#[derive(Deserialize)]
struct Probe {
    hwm_before_kb: u64,
    rss_before_kb: u64,
    hwm_after_kb: u64,
    reset: bool,
    branches: u64,
}

fn bench_memory(plan: &Plan, r: &mut Report) -> Result<()> {
    let s = "memory";
    let projects = *plan.plan_sizes.last().context("a plan size")?;
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args([
            "--memory-probe",
            &projects.to_string(),
            &plan.branches_per_project.to_string(),
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "memory probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("probe printed no JSON")?;
    let p: Probe = serde_json::from_str(line)?;
    let label = format!("{projects}x{}", plan.branches_per_project);
    r.add(
        s,
        format!("RSS before planning {label} (sim seeded)"),
        p.rss_before_kb as f64 / 1024.0,
        "MiB",
    );
    r.add(
        s,
        format!("VmHWM before planning {label}"),
        p.hwm_before_kb as f64 / 1024.0,
        "MiB",
    );
    r.add(
        s,
        format!("VmHWM after planning {label}"),
        p.hwm_after_kb as f64 / 1024.0,
        "MiB",
    );
    let delta = p.hwm_after_kb.saturating_sub(p.hwm_before_kb) as f64 * 1024.0;
    r.add(
        s,
        "peak growth while planning",
        delta / (1024.0 * 1024.0),
        "MiB",
    );
    r.add(
        s,
        "peak growth per branch (client+jobs+sim pages)",
        delta / p.branches as f64,
        "bytes/branch",
    );
    if !p.reset {
        r.note(
            s,
            "could not reset VmHWM (/proc/self/clear_refs); 'before' is the peak so far",
        );
    }
    Ok(())
}

// -------------------------------------------------------------------------------- 5. sim

async fn sim_rate(sim: &BenchSim, url: &str, total: usize, conc: usize) -> Result<f64> {
    let http = reqwest::Client::new();
    // Warm the connections.
    for _ in 0..conc {
        http.get(url)
            .bearer_auth(&sim.key)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, url, key) = (http.clone(), url.to_string(), sim.key.clone());
        let n = total / conc;
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                http.get(&url)
                    .bearer_auth(&key)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(((total / conc) * conc) as f64 / t.elapsed().as_secs_f64())
}

async fn bench_sim(plan: &Plan, r: &mut Report) -> Result<()> {
    let s = "sim";
    let sim = start_sim(RateLimitConfig::disabled(), |st| seed_account(st, 1, 100)).await?;
    let project = sim
        .app
        .state
        .lock()
        .projects
        .keys()
        .next()
        .cloned()
        .context("one project")?;
    let url = format!("{}/projects/{project}/branches?limit=100", sim.base);
    let c1 = sim_rate(&sim, &url, plan.sim_requests, 1).await?;
    let c8 = sim_rate(&sim, &url, plan.sim_requests, 8).await?;
    r.add(s, "GET branches (100/page), concurrency 1", c1, "req/s");
    r.add(s, "GET branches (100/page), concurrency 8", c8, "req/s");
    r.add(s, "concurrency 8 / concurrency 1", c8 / c1, "x");
    if sim.counter.not_ok() > 0 {
        bail!("{} sim requests did not answer 2xx", sim.counter.not_ok());
    }

    // One consumption call of 100 projects (legacy endpoint, hourly, Neon's whole 168 h
    // look-back): what every consumption test and the demo wait for.
    let sim = start_sim(RateLimitConfig::disabled(), |st| seed_account(st, 100, 1)).await?;
    let now = sim.app.state.lock().now();
    let ids: Vec<String> = sim.app.state.lock().projects.keys().cloned().collect();
    let mut q: Vec<(&str, String)> = vec![
        ("from", (now - TimeDelta::hours(168)).to_rfc3339()),
        ("to", now.to_rfc3339()),
        ("granularity", "hourly".into()),
        ("limit", "100".into()),
    ];
    for id in &ids {
        q.push(("project_ids", id.clone()));
    }
    let http = reqwest::Client::new();
    let url = format!("{}/consumption_history/projects", sim.base);
    let mut times = Vec::new();
    for _ in 0..plan.samples.max(3) {
        let t = Instant::now();
        let body = http
            .get(&url)
            .bearer_auth(&sim.key)
            .query(&q)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        times.push(t.elapsed());
        if body.is_empty() {
            bail!("an empty consumption answer");
        }
    }
    r.add_goal(
        s,
        "consumption call, 100 projects hourly over 168 h",
        median(times).as_secs_f64(),
        "s",
        "< 0.5 s",
    );
    Ok(())
}

// -------------------------------------------------------------------------- 6. telemetry

/// `/metrics` as the HTTP handler serves it (`metrics::render`), with the process's registry
/// filled up to `render_series` series: consumption gauges (projects x 5 metrics, the
/// family that grows with the account) on top of what earlier sections left.
fn bench_metrics_render(plan: &Plan, r: &mut Report) -> Result<()> {
    let s = "telemetry";
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let have = series(&render());
    let m = metrics();
    let metric_names = [
        "compute_time_seconds",
        "active_time_seconds",
        "written_data_bytes",
        "synthetic_storage_size_bytes",
        "data_transfer_bytes",
    ];
    let mut added = 0;
    'fill: for p in 0.. {
        for metric in metric_names {
            if have + added >= plan.render_series {
                break 'fill;
            }
            let project = format!("bench-project-{p:05}");
            m.consumption
                .with_label_values(&[&project, metric, "bench"])
                .set(p as f64 * 1.5);
            added += 1;
        }
    }
    let text = render();
    let n = series(&text);
    let mut times = Vec::with_capacity(plan.renders);
    for _ in 0..plan.renders {
        let t = Instant::now();
        let text = render();
        times.push(t.elapsed());
        std::hint::black_box(text);
    }
    let ms = median(times).as_secs_f64() * 1000.0;
    // Where the time goes: the registry's `gather()` (a sorted protobuf copy of every
    // series) against the text encoding of what it gathered.
    let mut gathers = Vec::with_capacity(plan.renders);
    for _ in 0..plan.renders {
        let t = Instant::now();
        std::hint::black_box(m.registry.gather());
        gathers.push(t.elapsed());
    }
    let gather_ms = median(gathers).as_secs_f64() * 1000.0;
    r.add(s, "series in /metrics", n as f64, "series");
    r.add(s, "/metrics size", text.len() as f64 / 1024.0, "KiB");
    r.add_goal(
        s,
        format!("/metrics render, median of {}", plan.renders),
        ms,
        "ms",
        "<= 5 ms at 5,000 series",
    );
    r.add(s, "of which registry gather()", gather_ms, "ms");
    r.add(
        s,
        "/metrics render per 1,000 series",
        ms * 1000.0 / n as f64,
        "ms",
    );
    // Leave no bench series behind for later sections.
    for p in 0..=added / metric_names.len() {
        for metric in metric_names {
            let project = format!("bench-project-{p:05}");
            let _ = m
                .consumption
                .remove_label_values(&[&project, metric, "bench"]);
        }
    }
    Ok(())
}

const CONSUMPTION_POLICY: &str = r#"
[[jobs]]
name = "usage"
kind = "collect_consumption"
every = "1h"
granularity = "hourly"
endpoint = "legacy"
metrics = ["active_time_seconds", "compute_time_seconds", "written_data_bytes", "synthetic_storage_size_bytes"]
[jobs.prices]
compute_time_seconds = 0.0001
"#;

#[derive(Deserialize)]
struct ConsumptionProbe {
    rss_before_kb: u64,
    hwm_before_kb: u64,
    hwm_after_kb: u64,
    rss_after_kb: u64,
    reset: bool,
    samples: u64,
    elapsed_s: f64,
}

/// The child process: one real `collect_consumption` run (first collection: hourly, Neon's
/// whole 168 h look-back) against the parent's emulator, into a fresh SQLite store. Prints
/// one JSON line. Nothing but the client, the job and the store runs here.
async fn consumption_probe(base: String, key: String, now: String) -> Result<()> {
    let now = DateTime::parse_from_rfc3339(&now)?.with_timezone(&Utc);
    let mut cc = ClientConfig::new(base, Secret::new(key));
    cc.rate_limit_per_minute = 100_000_000;
    cc.burst = 1_000_000;
    cc.consumption_rate_limit_per_minute = 100_000_000;
    cc.consumption_burst = 1_000_000;
    cc.timeout = Duration::from_secs(600);
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    let env = JobEnv {
        client: NeonClient::new(cc)?,
        store: store::open(&url).await?,
        concurrency: 4,
        operation_deadline: Duration::from_secs(30),
        consumption: Arc::new(ConsumptionExporter::detached()),
    };
    let job = job(CONSUMPTION_POLICY)?;
    let run_id = env
        .store
        .claim_run(&NewRun {
            job: job.name.clone(),
            kind: job.kind.as_str().to_string(),
            scheduled_for: now,
            trigger: Trigger::Manual,
            dry_run: false,
            status: RunStatus::Running,
            error: None,
            plan_id: None,
        })
        .await?
        .context("a fresh tick is always claimable")?;
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let hwm_before = proc_status_kb("VmHWM:").context("no VmHWM in /proc/self/status")?;
    let rss_before = proc_status_kb("VmRSS:").unwrap_or(0);
    let t = Instant::now();
    let res = run_job(
        &env,
        &job,
        RunContext {
            run_id,
            scheduled_for: now,
            now,
            dry_run: false,
        },
    )
    .await;
    let elapsed = t.elapsed();
    let hwm_after = proc_status_kb("VmHWM:").context("no VmHWM")?;
    let rss_after = proc_status_kb("VmRSS:").unwrap_or(0);
    if res.status != RunStatus::Succeeded {
        bail!("consumption run ended {:?}: {:?}", res.status, res.error);
    }
    // Counted after the measurement: reading every sample back costs memory of its own.
    let samples = env
        .store
        .list_consumption("hourly", now - TimeDelta::days(8))
        .await?
        .len();
    println!(
        "{}",
        serde_json::json!({
            "rss_before_kb": rss_before, "hwm_before_kb": hwm_before,
            "hwm_after_kb": hwm_after, "rss_after_kb": rss_after, "reset": reset,
            "samples": samples, "elapsed_s": elapsed.as_secs_f64(),
        })
    );
    Ok(())
}

/// Peak RSS of the first consumption collection of `consumption_projects` projects, in a
/// child process (so neither the emulator, which runs here, nor earlier sections count).
async fn bench_consumption_memory(plan: &Plan, r: &mut Report) -> Result<()> {
    let s = "telemetry";
    let projects = plan.consumption_projects;
    let sim = start_sim(unthrottled(), |st| seed_account(st, projects, 1)).await?;
    let now = sim.app.state.lock().now();
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .args([
            "--consumption-probe",
            &sim.base,
            &sim.key,
            &now.to_rfc3339(),
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "consumption probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if sim.counter.not_ok() > 0 {
        bail!("{} sim requests did not answer 2xx", sim.counter.not_ok());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("probe printed no JSON")?;
    let p: ConsumptionProbe = serde_json::from_str(line)?;
    let mib = |kb: u64| kb as f64 / 1024.0;
    let label = format!("first collection, {projects} projects hourly");
    r.add(
        s,
        format!("{label}: samples stored"),
        p.samples as f64,
        "samples",
    );
    r.add(s, format!("{label}: time"), p.elapsed_s, "s");
    r.add(
        s,
        format!("{label}: RSS before"),
        mib(p.rss_before_kb),
        "MiB",
    );
    r.add_goal(
        s,
        format!("{label}: peak RSS"),
        mib(p.hwm_after_kb),
        "MiB",
        "<= 64 MiB at 1,111 projects",
    );
    r.add(
        s,
        format!("{label}: peak growth"),
        mib(p.hwm_after_kb.saturating_sub(p.hwm_before_kb)),
        "MiB",
    );
    r.add(s, format!("{label}: RSS after"), mib(p.rss_after_kb), "MiB");
    if !p.reset {
        r.note(
            s,
            "could not reset VmHWM (/proc/self/clear_refs); 'before' is the peak so far",
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------- main

/// The client's rate limiter at Neon's budget (700 a minute, bursts of 40), asked as fast as
/// it lets requests through for five minutes of paused (virtual) time: the most requests any
/// 60 s window starting at a send holds, against the budget a server counting a strict
/// one-minute window enforces. Deterministic: the tokio clock only moves when every task
/// waits.
fn bench_limiter(r: &mut Report) -> Result<()> {
    use neon_steward::neon::ratelimit::RateLimiter;
    let s = "limiter";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let sent = rt.block_on(async {
        let rl = RateLimiter::new(700, 40);
        let start = tokio::time::Instant::now();
        let mut sent = Vec::new();
        while start.elapsed() < Duration::from_secs(300) {
            rl.acquire().await;
            sent.push(start.elapsed());
        }
        sent
    });
    let most = (0..sent.len())
        .map(|i| {
            sent[i..]
                .iter()
                .take_while(|t| **t < sent[i] + Duration::from_secs(60))
                .count()
        })
        .max()
        .unwrap_or(0);
    r.add_goal(
        s,
        "most requests in any 60 s window, budget 700/min burst 40",
        most as f64,
        "requests",
        "<= 700",
    );
    r.add(
        s,
        "requests in 5 min of sending flat out (budget 3,500)",
        sent.len() as f64,
        "requests",
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `BENCH_LOG=sqlx=debug` (a tracing filter) logs to stderr, e.g. every statement with
    // its time inside the engine.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(i) = args.iter().position(|a| a == "--memory-probe") {
        let n = |k: usize| -> Result<usize> {
            args.get(i + k)
                .context("--memory-probe PROJECTS BRANCHES")?
                .parse()
                .context("a number")
        };
        let (projects, bpp) = (n(1)?, n(2)?);
        return rt.block_on(memory_probe(projects, bpp));
    }
    if let Some(i) = args.iter().position(|a| a == "--consumption-probe") {
        let arg = |k: usize| -> Result<&String> {
            args.get(i + k)
                .context("--consumption-probe BASE_URL KEY NOW")
        };
        let (base, key, now) = (arg(1)?.clone(), arg(2)?.clone(), arg(3)?.clone());
        return rt.block_on(consumption_probe(base, key, now));
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; a filter word selects sections.
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let want = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o));
    let plan = Plan::new(quick);
    let started = Instant::now();
    println!(
        "neon-steward bench ({} mode, {} cpus); medians of {} sample(s)\n",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        plan.samples
    );
    println!("{:<8} {:<58} {:>14} unit", "section", "figure", "value");
    println!("{}", "-".repeat(90));
    let mut report = Report::default();
    if want("limiter") {
        bench_limiter(&mut report)?;
    }
    // Memory first and in a fresh process, so no earlier section has grown the heap.
    if want("memory") {
        bench_memory(&plan, &mut report)?;
    }
    rt.block_on(async {
        if want("client") {
            bench_client(&plan, &mut report).await?;
        }
        if want("plan") {
            bench_plan(&plan, &mut report).await?;
            bench_act(&mut report).await?;
            bench_suspend_history(&mut report).await?;
        }
        if want("calls") {
            bench_calls(&plan, &mut report).await?;
        }
        // `sweep` alone runs only these two (for profiling them).
        if want("calls") || want("sweep") {
            bench_delete_sweep(&mut report, Duration::ZERO).await?;
            bench_delete_sweep(&mut report, Duration::from_millis(1)).await?;
        }
        if want("store") {
            bench_store(&plan, &mut report).await?;
        }
        if want("sim") {
            bench_sim(&plan, &mut report).await?;
        }
        if want("telemetry") {
            bench_metrics_render(&plan, &mut report)?;
            bench_consumption_memory(&plan, &mut report).await?;
        }
        anyhow::Ok(())
    })?;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/steward.json");
    report.write_json(&plan, &path)?;
    println!(
        "\ntotal {:.1} s; results written to {}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}
