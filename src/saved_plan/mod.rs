//! Saved plans: `plan --out plan.json` writes what a dry run planned, `apply plan.json`
//! carries out exactly that, re-checked (see `crate::jobs::saved` for how the engine does
//! it), and `plan --output markdown` renders a plan for review ([`markdown`]).
//!
//! # The file (`format_version` 1)
//!
//! One JSON object:
//!
//! - `format_version`: `1`. A reader refuses any other version with a clear error.
//! - `id`: the plan's id (a UUID), recorded as the `plan_id` of every run that applies it.
//! - `created_at`: when it was made (RFC 3339, UTC); `apply` refuses it after `--max-age`.
//! - `policy_hash`: `sha256:...` of the normalised policy (`crate::config::hash`); `apply`
//!   refuses a plan made from another policy.
//! - `policy`: the policy file's path as given (for people; not checked).
//! - `jobs`: per job, in policy order: `job`, `kind`, `run_id` (the dry run that made it),
//!   `status` and `error` of that run (a plan refused by `max_actions` says so here),
//!   `dry_run` (the job's own setting: applying it records `planned` and changes nothing),
//!   `actions` and `skips`.
//! - an action: `project_id`, `action`, `resource_kind`, `resource_id`, `resource_name`,
//!   `rule`, `reason`, `destructive`, and `facts`, the properties of the resource it was
//!   decided on (name -> text); a skip has the same minus `destructive` and `facts`.
//!
//! Unknown fields are refused, so a file from a newer build is not half-read.

pub mod commands;
pub mod markdown;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, JobConfig, JobSpec};
use crate::jobs::saved::{Allowed, Recording, SavedAction, SavedPlan, SavedSkip};
use crate::jobs::{run_job_saved, JobEnv, RunContext, RunControl};
use crate::scheduler::{run_now_as, Clock, Executor, RunHandle, RunReport};
use crate::store::{LeaseTiming, RunId, RunStatus, Store};

/// The version of the file format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// The largest plan file `apply` reads.
const MAX_PLAN_BYTES: u64 = 64 * 1024 * 1024;

/// A plan made by `plan --out`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    pub format_version: u64,
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub policy_hash: String,
    pub policy: String,
    pub jobs: Vec<PlannedJob>,
}

/// One job's part of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedJob {
    pub job: String,
    pub kind: String,
    pub run_id: RunId,
    pub status: RunStatus,
    pub error: Option<String>,
    pub dry_run: bool,
    pub actions: Vec<SavedAction>,
    pub skips: Vec<SavedSkip>,
}

/// Why a plan file is not applied.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("{path}: cannot be read: {error}")]
    Unreadable { path: String, error: String },
    #[error("{path}: not a plan file: {error}")]
    Malformed { path: String, error: String },
    #[error(
        "{path}: plan format_version {found} is not supported (this build reads version \
         {FORMAT_VERSION}); make the plan again with this build"
    )]
    Version { path: String, found: String },
    #[error(
        "plan {id} was made from another policy ({planned}; the policy now is {current}): \
         make a new plan from this policy and review it"
    )]
    ForeignPolicy {
        id: String,
        planned: String,
        current: String,
    },
    #[error(
        "plan {id} was made at {created_at}, {age} ago, longer ago than --max-age {max_age}: \
         make a new plan and review it"
    )]
    Stale {
        id: String,
        created_at: String,
        age: String,
        max_age: String,
    },
    #[error(
        "plan {id} was made at {created_at}, which is in the future by this machine's clock \
         (more than {skew} ahead): check the clocks"
    )]
    FromTheFuture {
        id: String,
        created_at: String,
        skew: String,
    },
    #[error("plan {id} names job `{job}`, which the policy does not have")]
    UnknownJob { id: String, job: String },
}

/// How far in the future a plan's `created_at` may be (clocks of two machines).
const CLOCK_SKEW: Duration = Duration::from_secs(300);

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl PlanDocument {
    /// Reads and parses a plan file, checking its version first.
    pub fn read(path: &Path) -> Result<PlanDocument, Refusal> {
        let shown = path.display().to_string();
        let unreadable = |e: std::io::Error| Refusal::Unreadable {
            path: shown.clone(),
            error: e.to_string(),
        };
        let len = std::fs::metadata(path).map_err(unreadable)?.len();
        if len > MAX_PLAN_BYTES {
            return Err(Refusal::Malformed {
                path: shown,
                error: format!("larger than {} MiB", MAX_PLAN_BYTES / (1024 * 1024)),
            });
        }
        let bytes = std::fs::read(path).map_err(unreadable)?;
        Self::parse(&shown, &bytes)
    }

    /// Parses a plan (`path` names it in errors).
    pub fn parse(path: &str, bytes: &[u8]) -> Result<PlanDocument, Refusal> {
        let malformed = |e: serde_json::Error| Refusal::Malformed {
            path: path.to_string(),
            error: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
        match value.get("format_version") {
            Some(v) if v.as_u64() == Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(Refusal::Version {
                    path: path.to_string(),
                    found: v.to_string(),
                })
            }
            None => {
                return Err(Refusal::Malformed {
                    path: path.to_string(),
                    error: "no `format_version`".into(),
                })
            }
        }
        serde_json::from_value(value).map_err(malformed)
    }

    /// Whether this plan may be applied under `cfg` at `now`.
    pub fn check(
        &self,
        cfg: &Config,
        now: DateTime<Utc>,
        max_age: Duration,
    ) -> Result<(), Refusal> {
        if self.policy_hash != cfg.policy_hash {
            return Err(Refusal::ForeignPolicy {
                id: self.id.clone(),
                planned: self.policy_hash.clone(),
                current: cfg.policy_hash.clone(),
            });
        }
        let created_at = self.created_at.to_rfc3339();
        match (now - self.created_at).to_std() {
            Ok(age) if age > max_age => {
                return Err(Refusal::Stale {
                    id: self.id.clone(),
                    created_at,
                    age: human(age),
                    max_age: human(max_age),
                })
            }
            Ok(_) => {}
            Err(_) => {
                // Negative: made "after" now.
                let ahead = (self.created_at - now).to_std().unwrap_or_default();
                if ahead > CLOCK_SKEW {
                    return Err(Refusal::FromTheFuture {
                        id: self.id.clone(),
                        created_at,
                        skew: human(CLOCK_SKEW),
                    });
                }
            }
        }
        if let Some(j) = self.jobs.iter().find(|j| cfg.job(&j.job).is_none()) {
            return Err(Refusal::UnknownJob {
                id: self.id.clone(),
                job: j.job.clone(),
            });
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan document always serialises")
    }
}

/// Whether a job has a plan of actions (`collect_consumption` only reads: it is left out).
pub fn plans_actions(job: &JobConfig) -> bool {
    !matches!(job.spec, JobSpec::CollectConsumption(_))
}

/// What the saved-plan commands run jobs with.
#[derive(Clone)]
pub struct Runner {
    pub env: JobEnv,
    pub clock: Arc<dyn Clock>,
    pub lease: LeaseTiming,
    pub cancel: CancellationToken,
}

/// Runs one job through the engine with a saved plan: the `Executor` that `run_now_as`
/// drives (claim, lease, heartbeat and finish as for any run).
struct SavedExecutor {
    env: JobEnv,
    clock: Arc<dyn Clock>,
    mode: Mode,
}

enum Mode {
    Record(Arc<Mutex<Recording>>),
    Apply(Allowed),
}

#[async_trait]
impl Executor for SavedExecutor {
    async fn execute(&self, job: Arc<JobConfig>, run: RunHandle) -> RunReport {
        let ctx = RunContext {
            run_id: run.run_id,
            scheduled_for: run.scheduled_for,
            now: self.clock.now(),
            dry_run: run.dry_run,
        };
        let control = RunControl {
            cancel: run.cancel.clone(),
            clock: Some(self.clock.clone()),
            lease: run.lease.clone(),
        };
        let saved = match &self.mode {
            Mode::Record(r) => SavedPlan::Record(r),
            Mode::Apply(a) => SavedPlan::Apply(a),
        };
        let r = run_job_saved(&self.env, &job, ctx, &control, saved).await;
        RunReport {
            status: r.status,
            counts: r.counts,
            error: r.error,
        }
    }
}

impl Runner {
    fn store(&self) -> Arc<dyn Store> {
        self.env.store.clone()
    }

    /// Makes a plan of `jobs` (dry runs, recorded as manual runs like `plan`'s).
    pub async fn make(
        &self,
        cfg: &Config,
        jobs: &[Arc<JobConfig>],
    ) -> anyhow::Result<PlanDocument> {
        let created_at = self.clock.now();
        let mut out = Vec::new();
        for job in jobs.iter().filter(|j| plans_actions(j)) {
            let recording = Arc::new(Mutex::new(Recording::default()));
            let exec = Arc::new(SavedExecutor {
                env: self.env.clone(),
                clock: self.clock.clone(),
                mode: Mode::Record(recording.clone()),
            });
            let Some((run_id, report)) = run_now_as(
                self.store(),
                exec,
                self.clock.clone(),
                job.clone(),
                true,
                self.cancel.clone(),
                self.lease,
                None,
            )
            .await?
            else {
                anyhow::bail!(
                    "{}: a run for this instant exists already; plan again",
                    job.name
                );
            };
            let r = std::mem::take(
                &mut *recording
                    .lock()
                    .expect("the recording lock is never poisoned: no panics while held"),
            );
            out.push(PlannedJob {
                job: job.name.clone(),
                kind: job.kind.as_str().to_string(),
                run_id,
                status: report.status,
                error: report.error,
                dry_run: job.dry_run,
                actions: r.actions,
                skips: r.skips,
            });
        }
        Ok(PlanDocument {
            format_version: FORMAT_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            created_at,
            policy_hash: cfg.policy_hash.clone(),
            policy: cfg.source.display().to_string(),
            jobs: out,
        })
    }

    /// Applies a checked plan ([`PlanDocument::check`]): one run per job with actions,
    /// trigger `apply`, restricted to the plan's actions. Jobs without actions are not run.
    pub async fn apply(&self, cfg: &Config, plan: &PlanDocument) -> anyhow::Result<Vec<Applied>> {
        let mut out = Vec::new();
        for planned in plan.jobs.iter().filter(|j| !j.actions.is_empty()) {
            let Some(job) = cfg.job(&planned.job) else {
                // `check` refuses this; kept as an error rather than a panic.
                anyhow::bail!(
                    "plan {} names job `{}`, which the policy does not have",
                    plan.id,
                    planned.job
                );
            };
            let exec = Arc::new(SavedExecutor {
                env: self.env.clone(),
                clock: self.clock.clone(),
                mode: Mode::Apply(Allowed {
                    plan_id: plan.id.clone(),
                    actions: planned.actions.clone(),
                }),
            });
            let started = run_now_as(
                self.store(),
                exec,
                self.clock.clone(),
                job.clone(),
                false,
                self.cancel.clone(),
                self.lease,
                Some(plan.id.clone()),
            )
            .await?;
            out.push(Applied {
                job: planned.job.clone(),
                run: started,
            });
        }
        Ok(out)
    }
}

/// One job's run of `apply`.
#[derive(Debug)]
pub struct Applied {
    pub job: String,
    /// `None`: a run of the job for this instant existed already; not started.
    pub run: Option<(RunId, RunReport)>,
}

/// Per job: how many actions of each kind a plan has (for summaries).
pub fn action_counts(job: &PlannedJob) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for a in &job.actions {
        *m.entry(a.action.as_str()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests;
