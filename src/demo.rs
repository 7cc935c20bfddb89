//! `neon-steward demo`: the daemon, for real, against a Neon emulator in the same process.
//!
//! Why it exists: the first thing someone wants from a tool that deletes branches is to see
//! what it does without pointing it at their account. `demo` starts neon-sim on loopback
//! with a seeded organisation (dozens of projects, preview branches of every age, protected
//! and parent branches that must survive, busy, idle and forgotten computes, snapshots and
//! consumption history), then runs the ordinary daemon ([`daemon::run_until`]: the same
//! scheduler, executor, store, metrics and HTTP server as `run`) on `config/demo.toml`.
//!
//! Nothing in the policy is special-cased: the emulator's URL and key, the database file and
//! the listen address reach the config loader through the same overrides an operator uses
//! (`NEON_STEWARD_BASE_URL`, `NEON_API_KEY`, `NEON_STEWARD_STORE_URL`,
//! `NEON_STEWARD_LISTEN`), given to [`config::load_with_env`] instead of the process
//! environment.
//!
//! Progress is read back from the store (the audit ledger every run writes), so what the
//! demo prints is exactly what `history` and `/api/v1/runs` show afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError};
use crate::daemon::{self, DaemonOptions};
use crate::output::{say, EXIT_CONFIG, EXIT_OK, EXIT_RUN_FAILED};
use crate::store::{ActionOutcome, ActionRecord, RunFilter, RunRecord, RunStatus, Store};

/// The policy `demo` runs when `--config` is not given, relative to the current directory
/// (the repository root, where the README's commands are run).
pub const DEFAULT_CONFIG: &str = "config/demo.toml";

/// Options of `neon-steward demo`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Runs the daemon against neon-sim, a local Neon API emulator started in this \
process on 127.0.0.1, seeded with a realistic organisation: dozens of projects over two orgs, \
preview branches of many ages (some older than a week, some protected, some parents of young \
branches), busy, idle and forgotten computes, snapshots and consumption history. The policy is \
config/demo.toml (relative to the current directory; --config to use another): its schedules \
are compressed to seconds, one job is a dry run, and consumption is priced.\n\n\
The daemon is the real one (scheduler, store, metrics, HTTP). Its API URL and key, database \
file and listen address are pointed at the emulator, --db and --listen through the usual \
overrides, so nothing reaches a real Neon account. Each finished run is printed with its \
counts and a few of its actions. After --duration (or Ctrl-C) running jobs finish, and a \
summary of runs and actions is printed with the commands to look further.\n\n\
To show resilience, the emulator answers a few percent of two routes with 503 and 429, as \
Neon does on a bad day; the client retries them (--no-faults turns this off)."
)]
pub struct DemoArgs {
    /// How long to run before stopping and printing the summary (Ctrl-C stops earlier).
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Address for /metrics, /healthz and /api/v1 (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9187")]
    pub listen: SocketAddr,
    /// SQLite file for the run history and audit ledger (created if missing; earlier demos'
    /// history is kept, the summary covers this run only).
    #[arg(long, default_value = "./neon-steward-demo.db", value_name = "PATH")]
    pub db: PathBuf,
    /// Projects in the emulated account, spread over two organisations.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub projects: u16,
    /// Seed of the emulated account: the same seed gives the same account.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How long each Neon operation (snapshot, delete, suspend) takes in the emulator.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub operation_time: Duration,
    /// Do not inject the occasional 503 and 429 answers.
    #[arg(long)]
    pub no_faults: bool,
    /// Instead of running the daemon: write the seeded account as a neon-sim fixture (the
    /// same exporter as `export-fixture`, through the ordinary client) and exit, e.g. for
    /// `simulate --fixture PATH`.
    #[arg(long, value_name = "PATH")]
    pub export_fixture: Option<PathBuf>,
}

/// Runs the demo; the process exit code. `config` is the global `--config` (or
/// `NEON_STEWARD_CONFIG`), defaulting to [`DEFAULT_CONFIG`].
pub fn run(args: DemoArgs, config: Option<&Path>) -> u8 {
    let path = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if !path.is_file() {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "the current directory".into());
        eprintln!(
            "neon-steward: demo: the policy {} does not exist (looked from {cwd}). Run the demo \
             from the repository root, or pass --config PATH to a policy file.",
            path.display()
        );
        return EXIT_CONFIG;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("neon-steward: cannot start the async runtime: {e}");
            return EXIT_RUN_FAILED;
        }
    };
    runtime.block_on(async move {
        match demo(args, &path).await {
            Ok(()) => EXIT_OK,
            Err(e) => {
                if let Some(ce) = e.downcast_ref::<ConfigError>() {
                    eprintln!("neon-steward: demo: {ce}");
                    EXIT_CONFIG
                } else {
                    eprintln!("neon-steward: demo: {}", crate::output::error_text(&e));
                    EXIT_RUN_FAILED
                }
            }
        }
    })
}

/// `sqlite://` URL of a database path, as the config's own default spells relative paths.
fn sqlite_url(db: &Path) -> String {
    let shown = db.display().to_string();
    if db.is_absolute() || shown.starts_with("./") || shown.starts_with("../") {
        format!("sqlite://{shown}")
    } else {
        format!("sqlite://./{shown}")
    }
}

async fn demo(args: DemoArgs, path: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let sim = neon_sim::Sim::start(
        neon_sim::SimConfig::default()
            .seed(args.seed)
            .orgs(2)
            .projects(usize::from(args.projects))
            .lifecycle_cases(true)
            .real_clock()
            .operation_duration(args.operation_time),
    )
    .await
    .context("starting neon-sim")?;
    if let Some(out) = &args.export_fixture {
        return export_seeded(sim, out, args.seed).await;
    }
    let faults = if args.no_faults {
        None
    } else {
        Some(inject_faults(&sim)?)
    };

    let forge = start_forge(&sim).await?;

    let store_url = sqlite_url(&args.db);
    let overrides: HashMap<&str, String> = HashMap::from([
        ("NEON_STEWARD_GITHUB_API_URL", forge.api_url()),
        ("DEMO_FORGE_TOKEN", DEMO_FORGE_TOKEN.to_string()),
        ("NEON_STEWARD_BASE_URL", sim.base_url()),
        ("NEON_API_KEY", sim.api_key()),
        ("NEON_STEWARD_STORE_URL", store_url.clone()),
        ("NEON_STEWARD_LISTEN", args.listen.to_string()),
    ]);
    let cfg = config::load_with_env(path, &|k| {
        overrides.get(k).cloned().or_else(|| std::env::var(k).ok())
    })?;
    // The store URL `history` will find without help (the file's own, or the env's).
    let plain_store_url = config::load(path).map(|c| c.store.url).ok();

    let names = project_names(&sim);
    print_header(&sim, &cfg, path, &args, faults.as_deref());
    say!(
        "  forge      a fake GitHub at {} for acme/web (job expire-closed-prs): preview/pr-N-* \
         branches go once pull request N is merged or closed",
        forge.api_url()
    );

    // A second handle on the same database file, to follow the runs the daemon records.
    let store = crate::store::open(&cfg.store.url)
        .await
        .context("opening the demo database")?;
    store
        .migrate()
        .await
        .context("migrating the demo database")?;
    let baseline = store
        .list_runs(&RunFilter {
            job: None,
            limit: 1,
            before: None,
        })
        .await?
        .first()
        .map_or(0, |r| r.id);

    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let duration = args.duration;
    let timer_stop = stop.clone();
    let timer = tokio::spawn(async move {
        let Ok(addr) = ready_rx.await else {
            return None;
        };
        say!("  metrics    http://{addr}/metrics   (also /healthz, /readyz, /api/v1/jobs, /api/v1/runs)");
        say!(
            "\nrunning for {} (Ctrl-C to stop earlier); each finished run:\n",
            humantime::format_duration(duration)
        );
        tokio::select! {
            _ = tokio::time::sleep(duration) => {
                say!("\n{} elapsed: stopping (running jobs finish first)", humantime::format_duration(duration));
                timer_stop.cancel();
            }
            _ = timer_stop.cancelled() => {}
        }
        Some(addr)
    });
    let follow_stop = CancellationToken::new();
    let follower = tokio::spawn(follow(
        store.clone(),
        baseline,
        started,
        names.clone(),
        follow_stop.clone(),
    ));

    let opts = DaemonOptions {
        grace_period: Duration::from_secs(30),
    };
    let result = daemon::run_until(cfg.clone(), opts, stop.clone(), move |addr| {
        let _ = ready_tx.send(addr);
    })
    .await;
    stop.cancel();
    let bound = timer.await.ok().flatten().unwrap_or(cfg.http.listen);
    follow_stop.cancel();
    let mut printed = follower.await.unwrap_or_default();
    // Runs that finished between the follower's last look and the shutdown.
    print_new_runs(&*store, baseline, started, &names, &mut printed).await?;
    sim.shutdown().await;
    forge.shutdown().await;
    result?;

    summary(
        &*store,
        baseline,
        &cfg,
        path,
        &args,
        plain_store_url.as_deref(),
        bound,
    )
    .await?;
    Ok(())
}

/// The fake forge's token (`token_env = "DEMO_FORGE_TOKEN"` in `config/demo.toml`).
const DEMO_FORGE_TOKEN: &str = "demo-forge-token";

/// A fake GitHub (neon-sim's forge) for `acme/web`, whose pull requests are those the
/// seeded `preview/pr-{number}-*` branches name: a quarter merged, a quarter closed, a
/// quarter open and a quarter absent (kept by the `pull_request` job, with the reason).
async fn start_forge(sim: &neon_sim::Sim) -> anyhow::Result<neon_sim::forge::FakeForge> {
    use neon_sim::forge::{FakeForge, FakeState, ForgeFlavor};
    let forge = FakeForge::start(ForgeFlavor::Github, "acme/web", DEMO_FORGE_TOKEN)
        .await
        .context("starting the fake forge")?;
    let numbers: Vec<u64> = {
        let s = sim.state();
        let s = s.settled();
        s.branches
            .values()
            .filter_map(|b| {
                let rest = b.name.strip_prefix("preview/pr-")?;
                rest.split('-').next()?.parse().ok()
            })
            .collect()
    };
    let now = chrono::Utc::now();
    for n in numbers {
        let at = now - TimeDelta::hours(i64::try_from(n % 48).unwrap_or(0) + 1);
        let state = match n % 4 {
            0 => FakeState::Merged,
            1 => FakeState::Closed,
            2 => FakeState::Open,
            _ => continue,
        };
        forge.add(n, state, &format!("feature-{n}"), at);
    }
    // Small pages, so the listing shows its pagination.
    forge.max_page(20);
    Ok(forge)
}

/// `demo --export-fixture`: the seeded account, exported as `export-fixture` would.
async fn export_seeded(sim: neon_sim::Sim, out: &Path, seed: u64) -> anyhow::Result<()> {
    let client = crate::neon::NeonClient::new(crate::neon::ClientConfig::new(
        sim.base_url(),
        crate::secret::Secret::new(sim.api_key()),
    ))?;
    let (fixture, _) = crate::forecast::fixture::export(&client, false, sim.clock().now()).await?;
    std::fs::write(out, serde_json::to_string_pretty(&fixture)?)
        .with_context(|| format!("writing {}", out.display()))?;
    say!(
        "{}: the demo's account (seed {}), {} projects, as a neon-sim fixture",
        out.display(),
        seed,
        fixture.projects.len()
    );
    sim.shutdown().await;
    Ok(())
}

/// A few honest failures, as Neon produces them on a bad day, so the retries, 429 and error
/// panels of the dashboard have something to show. Returns the sentence the header prints.
fn inject_faults(sim: &neon_sim::Sim) -> anyhow::Result<String> {
    use neon_sim::faults::{Fault, FaultRule};
    let rules = [
        FaultRule::on(
            "GET",
            "/projects/{project_id}/branches",
            Fault::Status {
                status: 503,
                retry_after_secs: None,
            },
        )
        .with_probability(0.04),
        FaultRule::on(
            "GET",
            "/projects/{project_id}/endpoints",
            Fault::Status {
                status: 429,
                retry_after_secs: Some(1),
            },
        )
        .with_probability(0.04),
    ];
    for r in rules {
        sim.faults()
            .inject(r)
            .map_err(|e| anyhow::anyhow!("injecting a fault: {e}"))?;
    }
    Ok(
        "4% of branch listings answer 503, 4% of endpoint listings answer 429 \
        (Retry-After: 1); the client retries them (--no-faults: off)"
            .into(),
    )
}

fn project_names(sim: &neon_sim::Sim) -> Arc<HashMap<String, String>> {
    Arc::new(sim.projects().into_iter().map(|p| (p.id, p.name)).collect())
}

fn print_header(
    sim: &neon_sim::Sim,
    cfg: &Config,
    path: &Path,
    args: &DemoArgs,
    faults: Option<&str>,
) {
    let s = sim.state();
    let s = s.settled();
    let now = s.now();
    let week = TimeDelta::days(7);
    let previews: Vec<_> = s
        .branches
        .values()
        .filter(|b| b.name.starts_with("preview/") || b.name.starts_with("pr-"))
        .collect();
    let old = previews
        .iter()
        .filter(|b| now - b.created_at > week)
        .count();
    let protected = previews.iter().filter(|b| b.protected).count();
    let parents = previews
        .iter()
        .filter(|b| {
            s.branches
                .values()
                .any(|c| c.parent_id.as_deref() == Some(b.id.as_str()))
        })
        .count();
    let active = s
        .endpoints
        .values()
        .filter(|e| e.current_state == neon_sim::state::EndpointState::Active)
        .count();
    let forgotten = s
        .endpoints
        .values()
        .filter(|e| {
            e.current_state == neon_sim::state::EndpointState::Active
                && e.activity == neon_sim::state::Activity::Idle
        })
        .count();
    say!("neon-steward demo: the daemon against neon-sim, a local Neon API emulator (no real account is touched)\n");
    say!(
        "  account    {} projects in {} orgs (seed {}): {} branches, {} of them preview/* or pr-* \
         ({old} older than 7 days, {protected} protected, {parents} parents of other branches)",
        s.projects.len(),
        s.orgs.len(),
        args.seed,
        s.branches.len(),
        previews.len(),
    );
    say!(
        "             {} computes ({active} running, {forgotten} of them idle with autosuspend off), \
         {} snapshots, consumption history from the computes' past activity",
        s.endpoints.len(),
        s.snapshots.len()
    );
    say!(
        "  emulator   {} (operations take {}, Neon's rate limits on)",
        sim.base_url(),
        humantime::format_duration(args.operation_time)
    );
    if let Some(f) = faults {
        say!("  faults     {f}");
    }
    say!("  policy     {}", path.display());
    for j in &cfg.jobs {
        say!(
            "             {:<24} {:<20} {:<12}{}",
            j.name,
            j.kind.as_str(),
            j.schedule.to_string(),
            if j.dry_run { " dry run" } else { "" }
        );
    }
    say!("  database   {}", crate::store::redact_url(&cfg.store.url));
}

/// Prints every run that finishes, until `stop`; returns the ids it printed.
async fn follow(
    store: Arc<dyn Store>,
    baseline: i64,
    started: Instant,
    names: Arc<HashMap<String, String>>,
    stop: CancellationToken,
) -> HashSet<i64> {
    let mut printed = HashSet::new();
    loop {
        if let Err(e) = print_new_runs(&*store, baseline, started, &names, &mut printed).await {
            tracing::warn!(error = %e, "demo: cannot read the runs back from the store");
        }
        tokio::select! {
            _ = stop.cancelled() => return printed,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

async fn runs_since(store: &dyn Store, baseline: i64) -> anyhow::Result<Vec<RunRecord>> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_runs(&RunFilter {
                job: None,
                limit: crate::store::MAX_RUN_LIMIT,
                before,
            })
            .await?;
        let done = page.len() < crate::store::MAX_RUN_LIMIT as usize;
        let mut reached = false;
        for r in page {
            if r.id <= baseline {
                reached = true;
                break;
            }
            before = Some(r.id);
            out.push(r);
        }
        if done || reached {
            break;
        }
    }
    out.reverse();
    Ok(out)
}

async fn print_new_runs(
    store: &dyn Store,
    baseline: i64,
    started: Instant,
    names: &HashMap<String, String>,
    printed: &mut HashSet<i64>,
) -> anyhow::Result<()> {
    for r in runs_since(store, baseline).await? {
        if printed.contains(&r.id) {
            continue;
        }
        if r.finished_at.is_none() {
            // Started: say so once (negative ids mark "start printed").
            if printed.insert(-r.id) {
                say!(
                    "[{:>6.1}s] {:<22} run {:<4} started{}",
                    started.elapsed().as_secs_f64(),
                    r.job,
                    r.id,
                    if r.dry_run { " [dry run]" } else { "" }
                );
            }
            continue;
        }
        printed.insert(r.id);
        let actions = store.actions_for_run(r.id).await?;
        print_run(&r, &actions, started, names);
    }
    Ok(())
}

fn print_run(
    r: &RunRecord,
    actions: &[ActionRecord],
    started: Instant,
    names: &HashMap<String, String>,
) {
    let took = r
        .finished_at
        .map(|f| (f - r.started_at).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or_default();
    let mut by: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for a in actions {
        *by.entry((a.action.as_str(), a.outcome.as_str()))
            .or_default() += 1;
    }
    let counts: Vec<String> = by
        .iter()
        .map(|((action, outcome), n)| format!("{n} {action} {outcome}"))
        .collect();
    say!(
        "[{:>6.1}s] {:<22} run {:<4} {:<11} {:>5.1}s{}  {}",
        started.elapsed().as_secs_f64(),
        r.job,
        r.id,
        r.status.as_str(),
        took,
        if r.dry_run { " [dry run]" } else { "" },
        run_outcome(r, &counts)
    );
    if let (Some(e), false) = (&r.error, r.status == RunStatus::Skipped) {
        say!("           ! {e}");
    }
    // A few examples: what was done (or planned), then one thing left alone and why.
    for a in actions
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                ActionOutcome::Succeeded | ActionOutcome::Planned | ActionOutcome::Failed
            )
        })
        .take(3)
    {
        print_action(a, names);
    }
    if let Some(a) = actions.iter().find(|a| a.outcome == ActionOutcome::Skipped) {
        print_action(a, names);
    }
}

/// What a finished run's line says after its status: a skipped tick says why it was not run
/// (as `history` does), not that nothing needed doing.
fn run_outcome(r: &RunRecord, counts: &[String]) -> String {
    if r.status == RunStatus::Skipped {
        return format!(
            "not run: {}",
            r.error.as_deref().unwrap_or("the tick was skipped")
        );
    }
    if counts.is_empty() {
        "no action needed".to_string()
    } else {
        counts.join(", ")
    }
}

fn print_action(a: &ActionRecord, names: &HashMap<String, String>) {
    // Account-wide actions (consumption collection) have no project to name.
    let place = a
        .project_id
        .as_ref()
        .map(|p| format!(" in {}", names.get(p).map_or(p.as_str(), |n| n.as_str())))
        .unwrap_or_default();
    let what = a.resource_name.as_deref().unwrap_or(&a.resource_id);
    say!(
        "           - {:<9} {} {}{}: {}",
        a.outcome.as_str(),
        a.action,
        what,
        place,
        a.reason
    );
}

async fn summary(
    store: &dyn Store,
    baseline: i64,
    cfg: &Config,
    path: &Path,
    args: &DemoArgs,
    plain_store_url: Option<&str>,
    bound: SocketAddr,
) -> anyhow::Result<()> {
    let runs = runs_since(store, baseline).await?;
    say!("\nsummary: {} runs", runs.len());
    say!(
        "  {:<24} {:<20} {:>5} {:>9} {:>6} {:>7} {:>8} {:>11}",
        "JOB",
        "KIND",
        "RUNS",
        "SUCCEEDED",
        "FAILED",
        "PARTIAL",
        "SKIPPED",
        "INTERRUPTED"
    );
    let mut actions: BTreeMap<(String, String, String, bool), usize> = BTreeMap::new();
    for j in &cfg.jobs {
        let mine: Vec<&RunRecord> = runs.iter().filter(|r| r.job == j.name).collect();
        let n = |s: RunStatus| mine.iter().filter(|r| r.status == s).count();
        say!(
            "  {:<24} {:<20} {:>5} {:>9} {:>6} {:>7} {:>8} {:>11}",
            j.name,
            j.kind.as_str(),
            mine.len(),
            n(RunStatus::Succeeded),
            n(RunStatus::Failed),
            n(RunStatus::Partial),
            n(RunStatus::Skipped),
            n(RunStatus::Interrupted),
        );
        for r in mine {
            for a in store.actions_for_run(r.id).await? {
                *actions
                    .entry((
                        a.job.clone(),
                        a.action.clone(),
                        a.outcome.as_str().to_string(),
                        a.dry_run,
                    ))
                    .or_default() += 1;
            }
        }
    }
    say!("\nactions (the audit ledger):");
    say!(
        "  {:<24} {:<20} {:<10} {:<8} {:>6}",
        "JOB",
        "ACTION",
        "OUTCOME",
        "DRY RUN",
        "COUNT"
    );
    for ((job, action, outcome, dry), n) in &actions {
        say!("  {job:<24} {action:<20} {outcome:<10} {dry:<8} {n:>6}");
    }
    let m = crate::telemetry::metrics::metrics();
    say!(
        "\nNeon API: {} requests, {} retried, {} answered 429 (see neon_steward_api_* in /metrics)",
        counter_total(&m.api_requests_total),
        counter_total(&m.api_retries_total),
        counter_total(&m.api_rate_limited_total),
    );

    let exe = shown_exe();
    let config_arg = path.display();
    let env = if plain_store_url == Some(cfg.store.url.as_str()) {
        String::new()
    } else {
        format!(
            "NEON_STEWARD_STORE_URL={} ",
            crate::store::redact_url(&cfg.store.url)
        )
    };
    say!("\nwhere to look next:");
    say!("  history    {env}{exe} --config {config_arg} history");
    say!(
        "             {env}{exe} --config {config_arg} history --job expire-previews --output json"
    );
    say!(
        "  database   {} (SQLite; e.g. sqlite3 {} 'select job, action, outcome, count(*) from actions group by 1, 2, 3')",
        args.db.display(),
        args.db.display()
    );
    say!(
        "  metrics    were served at http://{}/metrics while the demo ran; run it again with a \
         longer --duration and point Prometheus at it (deploy/test-prometheus.sh does)",
        bound
    );
    say!("  dashboard  deploy/grafana/neon-steward.json, alerts deploy/prometheus/alerts.yaml");
    Ok(())
}

/// How to call this binary again from the current directory: a path relative to it when
/// that is short (e.g. `target/release/neon-steward`), else `neon-steward`.
fn shown_exe() -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    match (exe, cwd) {
        (Some(exe), Some(cwd)) => match exe.strip_prefix(&cwd) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => "neon-steward".into(),
        },
        _ => "neon-steward".into(),
    }
}

fn counter_total(c: &prometheus::IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    c.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_tick_says_why() {
        let now = chrono::Utc::now();
        let mut r = RunRecord {
            id: 7,
            job: "snap".into(),
            kind: "snapshot_branches".into(),
            scheduled_for: now,
            trigger: crate::store::Trigger::Schedule,
            started_at: now,
            finished_at: Some(now),
            status: RunStatus::Skipped,
            dry_run: false,
            error: Some("skipped: the previous run (run 6) was still running".into()),
            counts: Default::default(),
            owner: None,
            lease_expires_at: None,
            plan_id: None,
        };
        assert_eq!(
            run_outcome(&r, &[]),
            "not run: skipped: the previous run (run 6) was still running"
        );
        r.status = RunStatus::Succeeded;
        r.error = None;
        assert_eq!(run_outcome(&r, &[]), "no action needed");
        assert_eq!(
            run_outcome(&r, &["2 create_snapshot succeeded".into()]),
            "2 create_snapshot succeeded"
        );
    }
}
