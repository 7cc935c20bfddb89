//! `plan --out FILE` / `plan --output markdown` and `apply FILE`: the command-line side of
//! saved plans (kept here so that `cli.rs` only dispatches).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{markdown, PlanDocument, Runner};
use crate::config::{Config, ConfigError, JobConfig};
use crate::output::{complain, say, EXIT_CONFIG, EXIT_OK, EXIT_RUN_FAILED};
use crate::scheduler::{Clock, SystemClock};
use crate::store::RunStatus;

/// How `plan` (with a saved plan) and `apply` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

fn jobs_of(cfg: &Config, job: Option<&str>) -> Result<Vec<Arc<JobConfig>>, ConfigError> {
    match job {
        Some(name) => match cfg.job(name) {
            Some(j) => Ok(vec![j.clone()]),
            None => {
                let known: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
                Err(ConfigError::whole_file(
                    &cfg.source,
                    format!(
                        "no job named `{name}`; the policy has: {}",
                        known.join(", ")
                    ),
                ))
            }
        },
        None => Ok(cfg.jobs.iter().filter(|j| j.enabled).cloned().collect()),
    }
}

async fn runner(cfg: &Config) -> anyhow::Result<Runner> {
    let store = crate::daemon::open_store(cfg).await?;
    let env = crate::daemon::job_env(cfg, store)?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    Ok(Runner {
        env,
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        lease: cfg.store.lease_timing(),
        cancel,
    })
}

/// Writes `text` to `path` through a temporary file in the same directory, so a reader
/// never sees half a plan.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan.json".into());
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write the plan to {}: {e}", path.display())
    })
}

/// `plan [JOB] --out FILE` and/or `--output markdown`: a dry run of every (or one) job whose
/// plan, with the facts of each action, is written to `out` and printed as `format`.
pub async fn plan(
    cfg: Config,
    job: Option<String>,
    out: Option<PathBuf>,
    format: Format,
) -> anyhow::Result<u8> {
    let jobs = jobs_of(&cfg, job.as_deref())?;
    let runner = runner(&cfg).await?;
    let doc = runner.make(&cfg, &jobs).await?;
    if let Some(path) = &out {
        write_atomically(path, &doc.to_json())?;
    }
    match format {
        Format::Markdown => say!("{}", markdown::render(&doc).trim_end()),
        Format::Json => say!("{}", doc.to_json()),
        Format::Table => {
            say!("plan {} ({})", doc.id, doc.policy_hash);
            for j in &doc.jobs {
                say!(
                    "{} (run {}): {}  actions={} skipped={}",
                    j.job,
                    j.run_id,
                    j.status.as_str(),
                    j.actions.len(),
                    j.skips.len()
                );
                if let Some(e) = &j.error {
                    say!("  error: {e}");
                }
                for a in &j.actions {
                    say!(
                        "  {:<11} {:<18} {:<9} {:<28} {}",
                        if a.destructive { "destructive" } else { "" },
                        a.action,
                        a.resource_kind,
                        a.resource_name.as_deref().unwrap_or(&a.resource_id),
                        a.reason
                    );
                }
            }
        }
    }
    if let Some(path) = &out {
        complain!(
            "neon-steward: plan {} written to {}; apply it with `neon-steward apply {}`",
            doc.id,
            path.display(),
            path.display()
        );
    }
    let failed = doc.jobs.iter().any(|j| j.status != RunStatus::Succeeded);
    Ok(if failed { EXIT_RUN_FAILED } else { EXIT_OK })
}

/// `apply FILE [--max-age D]`: carries out a saved plan after checking that it was made from
/// this policy, recently enough, by a build that reads its format. A refused plan is exit 2.
pub async fn apply(
    cfg: Config,
    path: PathBuf,
    max_age: Duration,
    format: Format,
) -> anyhow::Result<u8> {
    let doc = match PlanDocument::read(&path)
        .and_then(|d| d.check(&cfg, Utc::now(), max_age).map(|()| d))
    {
        Ok(d) => d,
        Err(refusal) => {
            complain!("neon-steward: apply refused: {refusal}");
            return Ok(EXIT_CONFIG);
        }
    };
    let runner = runner(&cfg).await?;
    let applied = runner.apply(&cfg, &doc).await?;
    let mut code = EXIT_OK;
    let mut json = Vec::new();
    if format != Format::Json {
        say!(
            "applying plan {} ({} job{} with actions)",
            doc.id,
            applied.len(),
            if applied.len() == 1 { "" } else { "s" }
        );
    }
    for a in applied {
        let Some((run_id, report)) = a.run else {
            complain!(
                "neon-steward: {}: a run for this instant exists already; not started",
                a.job
            );
            code = EXIT_RUN_FAILED;
            continue;
        };
        if report.status != RunStatus::Succeeded {
            code = EXIT_RUN_FAILED;
        }
        let actions = runner.env.store.actions_for_run(run_id).await?;
        if format == Format::Json {
            json.push(serde_json::json!({
                "job": a.job, "run_id": run_id, "plan_id": doc.id, "status": report.status,
                "error": report.error, "counts": report.counts, "actions": actions,
            }));
            continue;
        }
        let c = report.counts;
        say!(
            "{} (run {run_id}): {}  succeeded={} failed={} skipped={} planned={}",
            a.job,
            report.status.as_str(),
            c.succeeded,
            c.failed,
            c.skipped,
            c.planned
        );
        if let Some(e) = &report.error {
            say!("  error: {e}");
        }
        for r in actions {
            say!(
                "  {:<10} {:<18} {:<9} {:<28} {}",
                r.outcome.as_str(),
                r.action,
                r.resource_kind,
                r.resource_name.as_deref().unwrap_or(&r.resource_id),
                r.reason
            );
        }
    }
    if format == Format::Json {
        say!("{}", serde_json::Value::Array(json));
    }
    Ok(code)
}
