//! `neon-sim`: run the Neon API emulator from the command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "neon-sim",
    version,
    about = "A local emulator of Neon's management API (v2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the emulated API on 127.0.0.1 under /api/v2 until Ctrl-C.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TCP port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Seed of all generated data and ids (same seed, same account).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of projects to generate.
    #[arg(long, default_value_t = 3)]
    projects: usize,
    /// Number of organizations to generate (projects are spread over them).
    #[arg(long, default_value_t = 0)]
    orgs: usize,
    /// A personal API key to accept (repeatable). One is generated when none is given.
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// A JSON fixture to load after generation (format: see the neon_sim::seed docs).
    #[arg(long, value_name = "FILE")]
    fixture: Option<PathBuf>,
    /// Use a virtual clock (moves only via POST /_sim/clock/advance) instead of the system clock.
    #[arg(long)]
    virtual_clock: bool,
    /// How long each operation stays scheduling/running, e.g. 2s, 500ms, 0s.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    operation_duration: Duration,
    /// Turn Neon's rate limits off (by default 700/min per key, 40/s per route, 30/min on
    /// consumption, answered with 429).
    #[arg(long)]
    no_rate_limit: bool,
    /// Multiply Neon's rate limits by this factor (benchmarks).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_scale: u32,
    /// Add a Retry-After header to 429 answers (Neon documents none).
    #[arg(long)]
    retry_after: bool,
    /// Newest mutating requests kept in the log at GET /_sim/mutations; older ones are
    /// dropped (and counted in its `dropped` field) so a long-running server stays bounded.
    #[arg(long, default_value_t = neon_sim::mutations::DEFAULT_MUTATION_LOG_LIMIT)]
    mutation_log_limit: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 2s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Command::Serve(args) = Cli::parse().command;
    let mut config = neon_sim::SimConfig::default()
        .seed(args.seed)
        .projects(args.projects)
        .orgs(args.orgs)
        .port(args.port)
        .operation_duration(args.operation_duration);
    config.api_keys = args.api_keys;
    config.rate_limit = neon_sim::ratelimit::RateLimitConfig {
        enabled: !args.no_rate_limit,
        retry_after: args.retry_after,
        ..neon_sim::ratelimit::RateLimitConfig::scaled(args.rate_limit_scale)
    };
    config.fixture = args.fixture;
    config.mutation_log_limit = args.mutation_log_limit;
    if !args.virtual_clock {
        config = config.real_clock();
    }
    let sim = neon_sim::Sim::start(config).await?;
    println!("neon-sim listening: {}", sim.base_url());
    println!("api key: {}", sim.api_key());
    println!("admin:   {}/_sim/clock", sim.root_url());
    println!("faults:  {}/_sim/faults", sim.root_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
