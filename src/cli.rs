//! The command line. `main.rs` calls [`main`]; each subcommand is a small function here
//! over the library (config, store, scheduler, daemon).
//!
//! Exit codes: 0 success, 1 a run failed (or ended partial/interrupted), 2 bad
//! configuration or usage (clap's own usage errors are 2 as well).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError};
use crate::daemon::{self, DaemonOptions};
use crate::saved_plan;
use crate::scheduler::{run_now, Clock, SystemClock};
use crate::store::{RunFilter, RunRecord, RunStatus};
use crate::telemetry::{init_logging, LogFormat};

use crate::output::{complain, say};
pub use crate::output::{error_text, write_stdout, EXIT_CONFIG, EXIT_OK, EXIT_RUN_FAILED};

const CONFIG_HELP: &str =
    "Policy file. Without --config or NEON_STEWARD_CONFIG, the first existing of: \
./neon-steward.toml, $XDG_CONFIG_HOME/neon-steward/config.toml (default ~/.config), \
/etc/neon-steward/config.toml";

#[derive(Debug, Parser)]
#[command(
    name = "neon-steward",
    version,
    about = "Keeps Neon accounts tidy: scheduled snapshots, branch expiry, compute suspension and consumption metrics."
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 a run failed, 2 configuration or usage error.\n\
The Neon API key comes from NEON_API_KEY, api_key_file, or $CREDENTIALS_DIRECTORY/neon-api-key."
)]
pub struct Cli {
    #[arg(long, global = true, env = "NEON_STEWARD_CONFIG", value_name = "PATH", help = CONFIG_HELP)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// Log level (or a filter such as `info,neon_steward::neon=debug`); NEON_STEWARD_LOG and
    /// RUST_LOG win over it. Default: info (warn for `demo`, which prints its own progress).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// `plan --output`: the table and JSON of `once`, or Markdown for review (a saved plan).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanOutput {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: schedule the jobs, serve /metrics and the API, until SIGTERM.
    Run {
        /// At shutdown, how long running jobs may take before they are cancelled.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        grace_period: std::time::Duration,
    },
    /// Run a job (or every enabled job) now, once; the exit code reflects the outcome.
    Once {
        /// The job to run.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        job: Option<String>,
        /// Run every enabled job, one after another.
        #[arg(long)]
        all: bool,
    },
    /// Dry-run now and print what would be done (no change is made).
    Plan {
        /// Only this job (default: every enabled job).
        job: Option<String>,
        /// `markdown`: a summary to review in a pull request (a saved plan).
        #[arg(long, value_enum, default_value = "table")]
        output: PlanOutput,
        /// Also write the plan to this file (JSON), for `apply` after review.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// What a run at this time (RFC 3339, in the future) would do, from the account as
        /// it is now: the account is read (read-only) into an in-process emulator, the
        /// policy's scheduled runs until then are simulated, then each job is dry-run at
        /// that time. Needs the `demo` cargo feature (the emulator).
        #[arg(long, value_name = "TIME", conflicts_with = "out", value_parser = crate::forecast::parse_instant)]
        at: Option<chrono::DateTime<Utc>>,
    },
    /// Carry out a plan written by `plan --out`: exactly its actions, each checked again
    /// against Neon and the policy; refused if made from another policy or too long ago.
    Apply {
        /// The plan file.
        plan: PathBuf,
        /// Refuse a plan older than this.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        max_age: std::time::Duration,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Check the policy file and exit (2 with file:line:column on error).
    Validate,
    /// List the jobs with their schedules and next fire times.
    Jobs {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show recorded runs, newest first.
    History {
        #[arg(long)]
        job: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Keep a branch from every destructive action (notices say how): record, list or
    /// remove a keep in the store.
    Keep {
        /// `<project>/<branch>` (each an id or a name).
        #[arg(required_unless_present = "list")]
        target: Option<String>,
        /// Until this date (`YYYY-MM-DD`, UTC) or RFC 3339 time. Default: until removed.
        #[arg(long, conflicts_with_all = ["list", "remove"])]
        until: Option<String>,
        /// Why it is kept (shown in the ledger and `keep --list`).
        #[arg(long, conflicts_with_all = ["list", "remove"])]
        note: Option<String>,
        /// List the keeps.
        #[arg(long, conflicts_with = "remove")]
        list: bool,
        /// Remove the keep of `<project>/<branch>`.
        #[arg(long)]
        remove: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Read the account (read-only API calls, rate-limited) and write it as a neon-sim
    /// fixture for `simulate`: projects, branch trees, computes, snapshots; no secret.
    ExportFixture {
        /// The fixture file to write (JSON).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Replace project, branch, snapshot and organisation names with stable
        /// placeholders (project-1, branch-7, ...), for sharing.
        #[arg(long)]
        redact_names: bool,
    },
    /// Forecast what the policy will do over the coming days: runs its real jobs at every
    /// scheduled tick against a fixture in an in-process emulator with a virtual clock, and
    /// prints a timeline (needs the `demo` cargo feature).
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Simulate(crate::forecast::SimulateArgs),
    /// Run the daemon for 90 seconds against a local Neon emulator with a seeded organisation
    /// (config/demo.toml, a SQLite file, /metrics); no Neon account or API key needed.
    // Hidden in builds without the `demo` feature, where it only says how to get it.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo(crate::demo::DemoArgs),
}

/// Parses the command line and runs it; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

/// Runs a parsed command line; the exit code.
pub fn run(cli: Cli) -> u8 {
    if let Command::Completions { shell } = cli.command {
        // Into a buffer first: `generate` panics on a write error (a closed pipe).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "neon-steward", &mut script);
        say!("{}", String::from_utf8_lossy(&script).trim_end());
        return EXIT_OK;
    }
    // A forecast reports every run in its timeline; the simulated daemon's own warnings
    // (one per refused run) would only bury it.
    let default_level = if matches!(
        cli.command,
        Command::Simulate(_) | Command::Plan { at: Some(_), .. }
    ) {
        "error"
    } else if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    let level = cli.log_level.as_deref().unwrap_or(default_level);
    if let Err(e) = init_logging(cli.log_format, level) {
        complain!("neon-steward: {}", error_text(&e));
        return EXIT_CONFIG;
    }
    if let Command::Demo(args) = cli.command {
        return crate::demo::run(args, cli.config.as_deref());
    }
    let path = match config_path(cli.config.as_deref()) {
        Ok(p) => p,
        Err(msg) => {
            complain!("neon-steward: {msg}");
            return EXIT_CONFIG;
        }
    };
    if let Command::Simulate(args) = cli.command {
        return simulate(&path, args);
    }
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            complain!("neon-steward: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Command::Validate = cli.command {
        for w in cfg.warnings() {
            complain!("neon-steward: warning: {w}");
        }
        say!(
            "{}: ok ({} job{})",
            path.display(),
            cfg.jobs.len(),
            if cfg.jobs.len() == 1 { "" } else { "s" }
        );
        return EXIT_OK;
    }
    if let Command::Run { .. } = cli.command {
        for w in cfg.warnings() {
            tracing::warn!("{w}");
        }
    }
    if let Command::Jobs { output } = cli.command {
        return print_jobs(&cfg, output);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            complain!("neon-steward: cannot start the async runtime: {e}");
            return EXIT_RUN_FAILED;
        }
    };
    runtime.block_on(async move {
        let result = match cli.command {
            Command::Run { grace_period } => daemon::run(cfg, DaemonOptions { grace_period })
                .await
                .map(|()| EXIT_OK),
            Command::Once { job, all } => once(cfg, job, all, false, Output::Table).await,
            Command::Plan {
                job,
                output,
                out,
                at: None,
            } => match (output, out) {
                (PlanOutput::Table, None) => {
                    once(cfg, job.clone(), job.is_none(), true, Output::Table).await
                }
                (PlanOutput::Json, None) => {
                    once(cfg, job.clone(), job.is_none(), true, Output::Json).await
                }
                // A saved plan: written to `--out` and/or rendered for review.
                (output, out) => {
                    let format = match output {
                        PlanOutput::Table => saved_plan::commands::Format::Table,
                        PlanOutput::Json => saved_plan::commands::Format::Json,
                        PlanOutput::Markdown => saved_plan::commands::Format::Markdown,
                    };
                    saved_plan::commands::plan(cfg, job, out, format).await
                }
            },
            Command::Apply {
                plan,
                max_age,
                output,
            } => {
                let format = match output {
                    Output::Table => saved_plan::commands::Format::Table,
                    Output::Json => saved_plan::commands::Format::Json,
                };
                saved_plan::commands::apply(cfg, plan, max_age, format).await
            }
            Command::Plan {
                job,
                output,
                at: Some(at),
                ..
            } => match output {
                PlanOutput::Table => plan_at(&cfg, job, at, Output::Table).await,
                PlanOutput::Json => plan_at(&cfg, job, at, Output::Json).await,
                PlanOutput::Markdown => {
                    complain!(
                        "neon-steward: `plan --at` prints a table or JSON; `--output markdown` is for a plan of now (`plan --output markdown`)"
                    );
                    Ok(EXIT_CONFIG)
                }
            },
            Command::ExportFixture { out, redact_names } => {
                crate::forecast::export_fixture(&cfg, &out, redact_names).await
            }
            Command::History { job, limit, output } => history(cfg, job, limit, output).await,
            Command::Keep {
                target,
                until,
                note,
                list,
                remove,
                output,
            } => keep(cfg, target, until, note, list, remove, output).await,
            Command::Validate
            | Command::Jobs { .. }
            | Command::Completions { .. }
            | Command::Simulate(_)
            | Command::Demo(_) => {
                unreachable!("handled before the runtime starts")
            }
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                // Configuration problems found late (no API key, ...) are still exit 2.
                if let Some(ce) = e.downcast_ref::<ConfigError>() {
                    complain!("neon-steward: {ce}");
                    EXIT_CONFIG
                } else {
                    complain!("neon-steward: {}", error_text(&e));
                    EXIT_RUN_FAILED
                }
            }
        }
    })
}

/// `simulate`: its own runtime, its own error reporting (configuration errors are 2).
#[cfg(feature = "demo")]
fn simulate(path: &Path, args: crate::forecast::SimulateArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            complain!("neon-steward: cannot start the async runtime: {e}");
            return EXIT_RUN_FAILED;
        }
    };
    runtime.block_on(async move {
        match crate::forecast::run_simulate(path, args).await {
            Ok(code) => code,
            Err(e) => {
                if let Some(ce) = e.downcast_ref::<ConfigError>() {
                    complain!("neon-steward: simulate: {ce}");
                    EXIT_CONFIG
                } else {
                    complain!("neon-steward: simulate: {}", error_text(&e));
                    EXIT_RUN_FAILED
                }
            }
        }
    })
}

#[cfg(not(feature = "demo"))]
fn simulate(_path: &Path, _args: crate::forecast::SimulateArgs) -> u8 {
    crate::forecast::unavailable("simulate")
}

#[cfg(feature = "demo")]
async fn plan_at(
    cfg: &Config,
    job: Option<String>,
    at: chrono::DateTime<Utc>,
    output: Output,
) -> anyhow::Result<u8> {
    let output = match output {
        Output::Table => crate::forecast::Output::Table,
        Output::Json => crate::forecast::Output::Json,
    };
    crate::forecast::plan_at(cfg, job, at, output).await
}

#[cfg(not(feature = "demo"))]
async fn plan_at(
    _cfg: &Config,
    _job: Option<String>,
    _at: chrono::DateTime<Utc>,
    _output: Output,
) -> anyhow::Result<u8> {
    Ok(crate::forecast::unavailable("plan --at"))
}

/// The policy file: `--config`/`NEON_STEWARD_CONFIG`, else the first existing file of the
/// search list.
pub fn config_path(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let candidates = search_list(
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    );
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!(
                "no policy file: pass --config or set NEON_STEWARD_CONFIG; looked in {}",
                list.join(", ")
            )
        })
}

fn search_list(xdg: Option<PathBuf>, home: Option<PathBuf>) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("./neon-steward.toml")];
    if let Some(base) = xdg
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".config")))
    {
        v.push(base.join("neon-steward/config.toml"));
    }
    v.push(PathBuf::from("/etc/neon-steward/config.toml"));
    v
}

fn print_jobs(cfg: &Config, output: Output) -> u8 {
    let now = Utc::now();
    let rows: Vec<serde_json::Value> = cfg
        .jobs
        .iter()
        .map(|j| {
            let next = if j.enabled { j.schedule.next_after(now, j.timezone) } else { None };
            serde_json::json!({
                "name": j.name,
                "kind": j.kind.as_str(),
                "schedule": j.schedule.to_string(),
                "timezone": j.timezone.name(),
                "enabled": j.enabled,
                "dry_run": j.dry_run,
                "next_run": next.map(|n| n.to_rfc3339()),
                "next_run_local": next.map(|n| n.with_timezone(&j.timezone).format("%Y-%m-%d %H:%M:%S %Z").to_string()),
            })
        })
        .collect();
    match output {
        Output::Json => say!("{}", serde_json::Value::Array(rows)),
        Output::Table => {
            say!(
                "{:<24} {:<20} {:<16} {:<8} NEXT RUN",
                "NAME",
                "KIND",
                "SCHEDULE",
                "ENABLED"
            );
            for (r, j) in rows.iter().zip(&cfg.jobs) {
                say!(
                    "{:<24} {:<20} {:<16} {:<8} {}",
                    j.name,
                    j.kind.as_str(),
                    j.schedule.to_string(),
                    j.enabled,
                    r["next_run_local"].as_str().unwrap_or("-")
                );
            }
        }
    }
    EXIT_OK
}

/// `once` and `plan`: run jobs now through the same path as the daemon.
async fn once(
    cfg: Config,
    job: Option<String>,
    all: bool,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<u8> {
    let jobs: Vec<_> = match (&job, all) {
        (Some(name), _) => match cfg.job(name) {
            Some(j) => vec![j.clone()],
            None => {
                let known: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
                return Err(ConfigError::whole_file(
                    &cfg.source,
                    format!(
                        "no job named `{name}`; the policy has: {}",
                        known.join(", ")
                    ),
                )
                .into());
            }
        },
        (None, _) => cfg.jobs.iter().filter(|j| j.enabled).cloned().collect(),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = daemon::open_store(&cfg).await?;
    let executor = daemon::executor(&cfg, store.clone(), clock.clone())?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    let mut code = EXIT_OK;
    let mut json = Vec::new();
    for j in jobs {
        let Some((run_id, report)) = run_now(
            store.clone(),
            executor.clone(),
            clock.clone(),
            j.clone(),
            dry_run,
            cancel.clone(),
            cfg.store.lease_timing(),
        )
        .await?
        else {
            complain!(
                "neon-steward: {}: a run for this instant exists already; not started",
                j.name
            );
            code = EXIT_RUN_FAILED;
            continue;
        };
        if report.status != RunStatus::Succeeded {
            code = EXIT_RUN_FAILED;
        }
        let actions = store.actions_for_run(run_id).await?;
        match output {
            Output::Json => json.push(serde_json::json!({
                "job": j.name, "run_id": run_id, "status": report.status, "error": report.error,
                "counts": report.counts, "actions": actions,
            })),
            Output::Table => {
                let c = report.counts;
                say!(
                    "{} (run {run_id}): {}{}  succeeded={} failed={} skipped={} planned={}",
                    j.name,
                    report.status.as_str(),
                    if dry_run || j.dry_run {
                        " [dry run]"
                    } else {
                        ""
                    },
                    c.succeeded,
                    c.failed,
                    c.skipped,
                    c.planned
                );
                if let Some(e) = &report.error {
                    say!("  error: {e}");
                }
                for a in actions {
                    say!(
                        "  {:<10} {:<18} {:<9} {:<28} {}",
                        a.outcome.as_str(),
                        a.action,
                        a.resource_kind,
                        a.resource_name.as_deref().unwrap_or(&a.resource_id),
                        a.reason
                    );
                }
                // What is under notice, with the time it falls due (`notice`).
                if j.notice.is_some() {
                    for m in store.notice_marks(&j.name).await? {
                        say!(
                            "  {:<10} {:<18} {:<9} {:<28} falls due at {} (marked {})",
                            "notice",
                            m.action,
                            m.resource_kind,
                            m.resource_name.as_deref().unwrap_or(&m.resource_id),
                            m.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            m.marked_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        );
                    }
                }
            }
        }
    }
    if output == Output::Json {
        say!("{}", serde_json::Value::Array(json));
    }
    Ok(code)
}

async fn keep(
    cfg: Config,
    target: Option<String>,
    until: Option<String>,
    note: Option<String>,
    list: bool,
    remove: bool,
    output: Output,
) -> anyhow::Result<u8> {
    let usage = |msg: String| anyhow::Error::new(ConfigError::whole_file(Path::new("keep"), msg));
    if list {
        let store = crate::store::open_read_only(&cfg.store.url).await?;
        let keeps = store.list_keeps().await?;
        match output {
            Output::Json => say!("{}", serde_json::to_string(&keeps)?),
            Output::Table => {
                say!("{:<40} {:<25} NOTE", "PROJECT/BRANCH", "UNTIL");
                let now = Utc::now();
                for k in keeps {
                    let until = match k.until {
                        None => "until removed".to_string(),
                        Some(u) if u <= now => format!(
                            "ended {}",
                            u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ),
                        Some(u) => u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    };
                    say!(
                        "{:<40} {:<25} {}",
                        format!("{}/{}", k.project, k.branch),
                        until,
                        k.note.unwrap_or_default()
                    );
                }
            }
        }
        return Ok(EXIT_OK);
    }
    // Bad input is refused before the store is opened (or created).
    let target = target.unwrap_or_default();
    if remove {
        let (project, branch) = crate::keep::parse_target(&target).map_err(usage)?;
        let store = crate::store::open(&cfg.store.url).await?;
        return Ok(if store.remove_keep(&project, &branch).await? {
            say!("removed the keep of {project}/{branch}");
            EXIT_OK
        } else {
            complain!("neon-steward: no keep of {project}/{branch}");
            EXIT_RUN_FAILED
        });
    }
    let k = crate::keep::parse(&target, until.as_deref(), note.as_deref(), Utc::now())
        .map_err(usage)?;
    let store = crate::store::open(&cfg.store.url).await?;
    store.put_keep(&k).await?;
    say!(
        "kept {}/{} {}: no job acts on it destructively{}",
        k.project,
        k.branch,
        k.until.map_or("until removed".to_string(), |u| format!(
            "until {}",
            u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        if cfg.jobs.iter().any(|j| j.notice.is_some()) {
            "; a notice on it is dropped"
        } else {
            ""
        }
    );
    Ok(EXIT_OK)
}

async fn history(
    cfg: Config,
    job: Option<String>,
    limit: u32,
    output: Output,
) -> anyhow::Result<u8> {
    // Read-only: never migrate (or create) the database it is pointed at.
    let store = crate::store::open_read_only(&cfg.store.url).await?;
    let runs: Vec<RunRecord> = store
        .list_runs(&RunFilter {
            job,
            limit,
            before: None,
        })
        .await?;
    match output {
        Output::Json => say!("{}", serde_json::to_string(&runs)?),
        Output::Table => {
            say!(
                "{:>6} {:<24} {:<12} {:<25} {:<9} {:<7} {:<32} ERROR",
                "ID",
                "JOB",
                "STATUS",
                "SCHEDULED FOR",
                "TRIGGER",
                "DRY",
                "REPLICA"
            );
            for r in runs {
                say!(
                    "{:>6} {:<24} {:<12} {:<25} {:<9} {:<7} {:<32} {}",
                    r.id,
                    r.job,
                    r.status.as_str(),
                    r.scheduled_for
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.trigger.as_str(),
                    r.dry_run,
                    r.owner.as_deref().unwrap_or("-"),
                    r.error.unwrap_or_default()
                );
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn search_list_order() {
        let l = search_list(Some("/x".into()), Some("/home/u".into()));
        assert_eq!(
            l,
            [
                PathBuf::from("./neon-steward.toml"),
                "/x/neon-steward/config.toml".into(),
                "/etc/neon-steward/config.toml".into()
            ]
        );
        let l = search_list(None, Some("/home/u".into()));
        assert_eq!(
            l[1],
            PathBuf::from("/home/u/.config/neon-steward/config.toml")
        );
    }

    #[tokio::test]
    async fn error_text_says_each_cause_once() {
        // A bad sslmode fails before any connection, with the same text at three levels.
        let e = crate::store::open("postgres://u@127.0.0.1/db?sslmode=bogus")
            .await
            .err()
            .expect("a bad sslmode is refused");
        let e = anyhow::Error::from(e).context("opening the store");
        let naive = format!("{e:#}");
        let text = error_text(&e);
        assert!(
            naive.matches("bogus").count() > 1,
            "the chain repeats: {naive}"
        );
        assert_eq!(text.matches("bogus").count(), 1, "{text}");
        assert!(text.starts_with("opening the store: store: "), "{text}");
    }

    #[test]
    fn once_needs_a_job_or_all() {
        assert!(Cli::try_parse_from(["neon-steward", "once"]).is_err());
        assert!(Cli::try_parse_from(["neon-steward", "once", "a", "--all"]).is_err());
        assert!(Cli::try_parse_from(["neon-steward", "once", "--all"]).is_ok());
    }

    #[test]
    fn apply_refuses_plans_older_than_an_hour_unless_told() {
        let max_age = |args: &[&str]| match Cli::try_parse_from(
            ["neon-steward", "apply", "plan.json"].iter().chain(args),
        )
        .map(|c| c.command)
        {
            Ok(Command::Apply { max_age, .. }) => Ok(max_age),
            Ok(_) => panic!("not apply"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(max_age(&[]), Ok(std::time::Duration::from_secs(3600)));
        assert_eq!(
            max_age(&["--max-age", "10m"]),
            Ok(std::time::Duration::from_secs(600))
        );
        assert!(max_age(&["--max-age", "soon"])
            .unwrap_err()
            .contains("--max-age"));
    }
}
