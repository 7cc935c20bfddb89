//! Forecasts: what a policy will do to an account over the coming weeks.
//!
//! - `export-fixture` ([`fixture`]): the account, read through the API (GET calls only, the
//!   ordinary rate-limited client), written as a neon-sim fixture without any secret.
//! - `simulate` ([`simulate`], cargo feature `demo`): the fixture in neon-sim in this process
//!   on a virtual clock, the policy's real jobs run at every scheduled tick over the period,
//!   and the timeline of what they did ([`timeline`]).
//! - `plan --at TIME` (feature `demo` too): the account exported into an in-memory emulator,
//!   the ticks until `TIME` simulated, then a dry run of the jobs at `TIME`.

pub mod fixture;
#[cfg(feature = "demo")]
pub mod simulate;
pub mod timeline;

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::Config;
use crate::output::{say, EXIT_CONFIG, EXIT_OK};

/// `--output` of the forecast commands.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// A point in time on the command line: `YYYY-MM-DD` (a whole day, in the zone it is used
/// with) or RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

/// Parses a [`When`].
pub fn parse_when(s: &str) -> Result<When, String> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(When::Date(d));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| When::Instant(t.with_timezone(&Utc)))
        .map_err(|e| format!("expected YYYY-MM-DD or an RFC 3339 time, got {s:?}: {e}"))
}

/// Parses an RFC 3339 instant.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("expected an RFC 3339 time such as 2026-12-24T00:00:00Z, got {s:?}: {e}")
        })
}

impl When {
    /// The end of a period given this way: a date includes that whole day (the period ends
    /// at the next midnight in `tz`).
    pub fn end_in(self, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            When::Instant(t) => Some(t),
            When::Date(d) => {
                let next = d.succ_opt()?.and_hms_opt(0, 0, 0)?;
                tz.from_local_datetime(&next)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            }
        }
    }
}

/// Options of `neon-steward simulate`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Forecasts what the policy will do to an account: loads the fixture \
(from export-fixture, or written by hand in neon-sim's fixture format) into neon-sim, a Neon \
API emulator started in this process on a virtual clock, and runs the policy's real jobs at \
every tick their schedules give over the period, in order, compressed into seconds. Prints, \
per day, what each job did (creates, deletes, expiries, suspends, resumes) and a summary.\n\n\
Nothing reaches a real account: the policy's API URL and key are replaced by the emulator's \
and its store by a temporary SQLite file (the policy's own store is never opened; no API key \
of this process is read). collect_consumption jobs are not run (they only read).\n\n\
The future is modelled simply: computes keep the activity they had (a busy one stays busy, an \
idle one stays idle and autosuspends by its timeout), and nothing is created but by the policy \
and by --new-branches-per-day. Ticks are at their nominal times (no jitter).\n\n\
Only in builds with the `demo` cargo feature (the default), which brings the emulator in."
)]
pub struct SimulateArgs {
    /// The account to forecast: a neon-sim fixture (JSON), e.g. from `export-fixture`.
    #[arg(long, value_name = "PATH")]
    pub fixture: PathBuf,
    /// Length of the forecast, from its start.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366), conflicts_with = "until")]
    pub days: u32,
    /// End of the forecast instead of --days: a date (that whole day, in --timezone,
    /// included) or an RFC 3339 time (excluded).
    #[arg(long, value_name = "DATE", value_parser = parse_when)]
    pub until: Option<When>,
    /// Start of the forecast (RFC 3339). Default: the fixture's exported_at.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    pub start: Option<DateTime<Utc>>,
    /// Branches added per day (round robin over the projects, children of the default
    /// branch, no compute). Default 0: no branch appears but by the policy.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub new_branches_per_day: u32,
    /// Names of those branches: this prefix, then `<day>-<n>`.
    #[arg(long, default_value = "preview/forecast-", value_name = "PREFIX")]
    pub new_branch_prefix: String,
    /// Zone of the timeline's days (and of a --until date).
    #[arg(long, default_value = "UTC", value_name = "ZONE")]
    pub timezone: Tz,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `export-fixture`: reads the account with the policy's API settings and writes the
/// fixture to `out`.
pub async fn export_fixture(cfg: &Config, out: &Path, redact_names: bool) -> anyhow::Result<u8> {
    let client = crate::daemon::client(cfg)?;
    let (fx, notes) = fixture::export(&client, redact_names, Utc::now()).await?;
    let text = serde_json::to_string_pretty(&fx)?;
    write_file(out, &text)?;
    let branches: usize = fx.projects.iter().map(|p| p.branches.len()).sum();
    let endpoints: usize = fx
        .projects
        .iter()
        .flat_map(|p| &p.branches)
        .map(|b| b.endpoints.len())
        .sum();
    let snapshots: usize = fx.projects.iter().map(|p| p.snapshots.len()).sum();
    say!(
        "{}: {} projects, {branches} branches, {endpoints} computes, {snapshots} snapshots{} \
         (no secrets)",
        out.display(),
        fx.projects.len(),
        if redact_names { ", names redacted" } else { "" }
    );
    if notes.orphan_snapshots > 0 {
        say!(
            "  {} snapshot(s) of branches that no longer exist were left out",
            notes.orphan_snapshots
        );
    }
    if notes.reparented_branches > 0 {
        say!(
            "  {} branch(es) whose parent is not listed were attached to the default branch",
            notes.reparented_branches
        );
    }
    if notes.unread_backup_schedules > 0 {
        say!(
            "  {} root branch(es) whose backup schedule could not be read were exported without one",
            notes.unread_backup_schedules
        );
    }
    Ok(EXIT_OK)
}

fn write_file(out: &Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "fixture".into()),
        std::process::id()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Exit code for the forecast commands in builds without the emulator.
#[cfg(not(feature = "demo"))]
pub fn unavailable(what: &str) -> u8 {
    use std::io::Write as _;
    crate::output::complain!(
        "neon-steward: {what} needs the emulator, which this build leaves out (it was built \
         without the `demo` cargo feature, as production images are). Build with default \
         features (cargo install neon-steward, or cargo build --release) to use it."
    );
    EXIT_CONFIG
}

#[cfg(feature = "demo")]
pub use with_sim::{plan_at, run_simulate, simulate};

#[cfg(feature = "demo")]
mod with_sim {
    use super::*;
    use crate::output::complain;
    use anyhow::Context as _;
    use simulate::{Activity, Engine};
    use std::io::Write as _;
    use timeline::Forecast;

    /// The model's assumptions, said above every timeline.
    fn notes(cfg: &Config, activity: &Activity) -> Vec<String> {
        let mut n = vec![
            "computes keep the activity they had (busy stays busy; idle stays idle and \
             autosuspends by its timeout)"
                .to_string(),
            if activity.new_branches_per_day > 0 {
                format!(
                    "{} new branch(es) a day ({}<day>-<n>), none otherwise; nothing else is \
                     created but by the policy",
                    activity.new_branches_per_day, activity.new_branch_prefix
                )
            } else {
                "no new branches or computes unless the policy makes them \
                 (--new-branches-per-day N to add some)"
                    .to_string()
            },
            "ticks at their nominal times (no jitter); ids are the emulator's, so selectors by \
             id (ids, exclude_ids, exclusions by endpoint or project) do not match the fixture"
                .to_string(),
        ];
        let skipped: Vec<&str> = cfg
            .jobs
            .iter()
            .filter(|j| !simulate::simulated(j))
            .map(|j| j.name.as_str())
            .collect();
        if !skipped.is_empty() {
            n.push(format!(
                "not run: {} (disabled, or collect_consumption, which only reads)",
                skipped.join(", ")
            ));
        }
        n
    }

    /// Runs a forecast of `policy` over `fixture` (library entry point; the command prints
    /// it).
    pub async fn simulate(
        policy: &Path,
        fixture_path: &Path,
        fixture: &neon_sim::seed::Fixture,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        activity: &Activity,
        timezone: Tz,
    ) -> anyhow::Result<Forecast> {
        if until <= from {
            anyhow::bail!("the forecast ends ({until}) before it starts ({from})");
        }
        let mut engine = Engine::start(policy, fixture, from).await?;
        let notes = notes(engine.config(), activity);
        engine.run_until(until, activity).await?;
        let (events, summary) = engine.finish(until).await;
        Ok(Forecast {
            from,
            until,
            policy: policy.display().to_string(),
            fixture: fixture_path.display().to_string(),
            timezone: timezone.name().to_string(),
            notes,
            events,
            summary,
        })
    }

    /// Reads a fixture file in neon-sim's format.
    pub fn read_fixture(path: &Path) -> anyhow::Result<neon_sim::seed::Fixture> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the fixture {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("the fixture {} is not a neon-sim fixture", path.display()))
    }

    /// `neon-steward simulate`.
    pub async fn run_simulate(policy: &Path, args: SimulateArgs) -> anyhow::Result<u8> {
        let fixture = read_fixture(&args.fixture)?;
        let Some(from) = args.start.or(fixture.exported_at) else {
            complain!(
                "neon-steward: simulate: the fixture {} says not when it was taken \
                 (exported_at); pass --start TIME",
                args.fixture.display()
            );
            return Ok(EXIT_CONFIG);
        };
        let until = match args.until {
            Some(w) => w.end_in(args.timezone),
            None => Some(from + chrono::TimeDelta::days(i64::from(args.days))),
        };
        let Some(until) = until else {
            complain!("neon-steward: simulate: --until is out of range");
            return Ok(EXIT_CONFIG);
        };
        let activity = Activity {
            new_branches_per_day: args.new_branches_per_day,
            new_branch_prefix: args.new_branch_prefix.clone(),
        };
        let f = simulate(
            policy,
            &args.fixture,
            &fixture,
            from,
            until,
            &activity,
            args.timezone,
        )
        .await?;
        match args.output {
            Output::Json => say!("{}", serde_json::to_string_pretty(&f)?),
            Output::Table => say!("{}", timeline::render_text(&f, args.timezone).trim_end()),
        }
        Ok(EXIT_OK)
    }

    /// `plan --at TIME`: the account as it is now (read-only export through the policy's
    /// client) in an in-memory emulator, the policy's ticks from now until `at` simulated,
    /// then each job (or `job`) dry-run at `at`.
    pub async fn plan_at(
        cfg: &Config,
        job: Option<String>,
        at: DateTime<Utc>,
        output: Output,
    ) -> anyhow::Result<u8> {
        let now = Utc::now();
        if at <= now {
            complain!("neon-steward: plan --at {at}: the time is not in the future");
            return Ok(EXIT_CONFIG);
        }
        let jobs: Vec<_> = match &job {
            Some(name) => match cfg.job(name) {
                Some(j) if simulate::simulated(j) => vec![j.clone()],
                Some(_) => {
                    complain!(
                        "neon-steward: plan --at: job `{name}` is disabled or collects \
                         consumption; nothing to forecast"
                    );
                    return Ok(EXIT_CONFIG);
                }
                None => {
                    complain!("neon-steward: plan --at: no job named `{name}`");
                    return Ok(EXIT_CONFIG);
                }
            },
            None => cfg
                .jobs
                .iter()
                .filter(|j| simulate::simulated(j))
                .cloned()
                .collect(),
        };
        let client = crate::daemon::client(cfg)?;
        let (fx, _) = fixture::export(&client, false, now).await?;
        let fx: neon_sim::seed::Fixture = serde_json::from_value(serde_json::to_value(&fx)?)
            .context("the exported account as a fixture")?;
        let mut engine = Engine::start(&cfg.source, &fx, now).await?;
        let activity = Activity::default();
        engine.run_until(at, &activity).await?;
        let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
        let mut rows = Vec::new();
        for j in &jobs {
            let (report, actions) = engine.run_job(j, at, true).await?;
            rows.push((j.name.clone(), report, actions));
        }
        let (before, summary) = engine.finish(at).await;
        let before: Vec<_> = before.iter().filter(|e| e.outcome == "succeeded").collect();
        match output {
            Output::Json => {
                let v = serde_json::json!({
                    "at": at,
                    "from": now,
                    "simulated_before": { "events": before, "summary": summary },
                    "runs": rows.iter().map(|(job, r, actions)| serde_json::json!({
                        "job": job, "status": r.status, "error": r.error,
                        "counts": r.counts, "actions": actions,
                    })).collect::<Vec<_>>(),
                });
                say!("{}", serde_json::to_string_pretty(&v)?);
            }
            Output::Table => {
                say!(
                    "plan at {} for {}, from the account as it is now ({}), with the {} \
                     action(s) the policy's scheduled runs would take before then simulated \
                     in an emulator (nothing was changed)",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    names.join(", "),
                    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    before.len()
                );
                for (job, r, actions) in rows {
                    let c = r.counts;
                    say!(
                        "{job}: {} [dry run]  planned={} skipped={} failed={}",
                        r.status.as_str(),
                        c.planned,
                        c.skipped,
                        c.failed
                    );
                    if let Some(e) = &r.error {
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
                }
            }
        }
        Ok(EXIT_OK)
    }
}
