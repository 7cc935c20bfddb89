//! One run, from claim to record: timeout, cancellation, panic capture, events.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Clock, Executor, LastRun, LeaseWatch, RunHandle, RunReport};
use crate::config::JobConfig;
use crate::store::{
    ActionCounts, Lease, LeaseTiming, NewRun, RunId, RunStatus, Store, StoreResult, Trigger,
};
use crate::telemetry::events::{JobRunFinished, JobRunStarted, LeaseLost};

pub(super) struct RunContext {
    pub store: Arc<dyn Store>,
    pub executor: Arc<dyn Executor>,
    pub clock: Arc<dyn Clock>,
    pub cancel_wait: Duration,
    /// How the run's lease is renewed, and how long renewals may fail before it stops.
    pub lease: LeaseTiming,
}

pub(super) struct Finished {
    pub run_id: RunId,
    pub job: String,
    pub last: LastRun,
    pub report: RunReport,
}

/// Runs a claimed run to its end and records it. Never panics: a panicking executor is a
/// failed run.
pub(super) async fn execute(
    ctx: RunContext,
    job: Arc<JobConfig>,
    run: RunHandle,
    reason: Arc<OnceLock<String>>,
) -> Finished {
    let kind = job.kind.as_str();
    let started = tokio::time::Instant::now();
    JobRunStarted {
        job: &job.name,
        kind,
        run_id: run.run_id,
        trigger: run.trigger,
        dry_run: run.dry_run,
    }
    .emit();
    let span = tracing::info_span!("run", job = %job.name, run_id = run.run_id, replica = %ctx.store.replica());
    let cancel = run.cancel.clone();
    let lease = run.lease.clone();
    let (run_id, scheduled_for, dry_run) = (run.run_id, run.scheduled_for, run.dry_run);

    // The executor runs in its own task so that a panic is contained and the task can be
    // aborted if it ignores cancellation.
    let exec = ctx.executor.clone();
    let job2 = job.clone();
    let mut inner = tokio::spawn(
        async move {
            std::panic::AssertUnwindSafe(exec.execute(job2, run))
                .catch_unwind()
                .await
        }
        .instrument(span.clone()),
    );
    // When this task is aborted (shutdown, after the grace period and the cancel wait), the
    // executor's task must stop too: a detached run would go on acting against Neon after
    // the run was recorded interrupted.
    let _abort_inner = AbortOnDrop(inner.abort_handle());
    // The heartbeat renews the run's lease while it runs, and stops the run (between
    // actions, through `cancel`) when the lease is lost or another replica asks it to stop.
    let heartbeat = tokio::spawn(heartbeat(
        ctx.store.clone(),
        job.name.clone(),
        (run_id, lease),
        ctx.lease,
        cancel.clone(),
        reason.clone(),
    ));
    let _abort_heartbeat = AbortOnDrop(heartbeat.abort_handle());

    let timeout = job.timeout;
    let timed_out = async move {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        r = &mut inner => Some(r),
        _ = timed_out => None,
    };
    let mut report = match outcome {
        Some(r) => from_join(r),
        None => {
            let t = humantime::format_duration(timeout.unwrap_or_default());
            let _ = reason.set(format!("timed out after {t}"));
            cancel.cancel();
            match tokio::time::timeout(ctx.cancel_wait, &mut inner).await {
                Ok(r) => from_join(r),
                Err(_) => {
                    inner.abort();
                    RunReport::failed(format!("timed out after {t}"))
                }
            }
        }
    };
    if let Some(why) = reason.get() {
        // Cancelled by us: the reason decides the status, whatever the executor made of it.
        report.status = if why.starts_with("timed out") {
            RunStatus::Failed
        } else {
            RunStatus::Interrupted
        };
        report.error = Some(match report.error.take() {
            Some(e) if !e.is_empty() && e != *why => format!("{why}: {e}"),
            _ => why.clone(),
        });
    } else if report.status == RunStatus::Running || report.status == RunStatus::Skipped {
        report = RunReport {
            status: RunStatus::Failed,
            error: Some(format!(
                "executor returned invalid status `{}`",
                report.status.as_str()
            )),
            ..report
        };
    }

    let finished_at = ctx.clock.now();
    // The notifications of the run's end are written with it, in one transaction.
    let notes = run_end_notes(&*ctx.store, &job, run_id, dry_run, &report, finished_at)
        .instrument(span.clone())
        .await;
    record_finish_notifying(
        &*ctx.store,
        run_id,
        report.status,
        report.counts,
        report.error.as_deref(),
        &notes,
    )
    .instrument(span.clone())
    .await;
    JobRunFinished {
        job: &job.name,
        kind,
        run_id,
        outcome: report.status,
        elapsed: started.elapsed(),
        counts: report.counts,
        error: report.error.as_deref(),
        finished_at,
    }
    .emit();
    Finished {
        run_id,
        job: job.name.clone(),
        last: LastRun {
            id: run_id,
            status: report.status,
            scheduled_for,
            finished_at: Some(finished_at),
        },
        report,
    }
}

/// Renews the lease of run `run_id` every `timing.heartbeat` until aborted. Stops the run when the
/// lease is lost (another replica took it over after this one was paused or cut off), when
/// renewals have failed for a whole lease (another replica may take it over any moment),
/// or when another replica asks it to stop (`concurrency = "replace"`).
async fn heartbeat(
    store: Arc<dyn Store>,
    job: String,
    (run_id, watch): (RunId, LeaseWatch),
    timing: LeaseTiming,
    cancel: CancellationToken,
    reason: Arc<OnceLock<String>>,
) {
    let mut renewed = tokio::time::Instant::now();
    let stop = |why: String| {
        LeaseLost {
            job: &job,
            run_id,
            why: &why,
        }
        .emit();
        let _ = reason.set(format!("interrupted: {why}"));
        cancel.cancel();
    };
    loop {
        tokio::time::sleep(timing.heartbeat).await;
        let asked = tokio::time::Instant::now();
        match store.renew_lease(run_id).await {
            Ok(Lease::Held {
                cancel_requested, ..
            }) => {
                renewed = tokio::time::Instant::now();
                watch.renewed(asked, timing);
                if cancel_requested {
                    tracing::info!(job = %job, run_id, "another replica started a newer run (concurrency = replace); stopping");
                    let _ = reason.set("replaced by a newer run (concurrency = replace)".into());
                    cancel.cancel();
                    return;
                }
            }
            Ok(Lease::Lost { why }) => {
                stop(format!("the run's lease was lost ({why})"));
                return;
            }
            Err(e) if renewed.elapsed() >= timing.lease => {
                stop(format!(
                    "the run's lease could not be renewed for {} ({e}); another replica may \
                     take it over",
                    humantime::format_duration(timing.lease)
                ));
                return;
            }
            Err(e) => {
                tracing::warn!(job = %job, run_id, error = %e, "cannot renew the run's lease; retrying at the next heartbeat");
            }
        }
    }
}

/// How often, and how patiently, the end of a run is written before giving up.
const FINISH_ATTEMPTS: u32 = 6;
const FINISH_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const FINISH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Records the end of a run, retrying a failing store with bounded backoff (about 11 s in
/// all): a run left `running` looks alive in the history until its lease expires and a
/// replica takes it over. Gives up loudly.
/// Returns whether the record was written.
pub(super) async fn record_finish(
    store: &dyn Store,
    run_id: RunId,
    status: RunStatus,
    counts: ActionCounts,
    error: Option<&str>,
) -> bool {
    record_finish_notifying(store, run_id, status, counts, error, &[]).await
}

/// The `[[notify]]` rows reporting how the run ended (none when the job has no sinks).
async fn run_end_notes(
    store: &dyn Store,
    job: &JobConfig,
    run_id: RunId,
    dry_run: bool,
    report: &RunReport,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<crate::store::NewNotification> {
    if job.notify.is_empty() {
        return Vec::new();
    }
    let end = crate::notify::RunEnd {
        run_id,
        status: report.status,
        succeeded: report.counts.succeeded,
        failed: report.counts.failed,
        error: report.error.as_deref(),
        dry_run,
    };
    let actions = if end.wants_digest(job) {
        match store.actions_for_run(run_id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(run_id, error = %e, "cannot read the run's actions for its digest; no digest is sent");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    crate::notify::run_end(job, &end, &actions, now)
}

/// [`record_finish`] with the notifications of the run's end, written in the same
/// transaction as the run's record.
pub(super) async fn record_finish_notifying(
    store: &dyn Store,
    run_id: RunId,
    status: RunStatus,
    counts: ActionCounts,
    error: Option<&str>,
    notes: &[crate::store::NewNotification],
) -> bool {
    let mut backoff = FINISH_FIRST_BACKOFF;
    for attempt in 1..=FINISH_ATTEMPTS {
        let written = match notes.is_empty() {
            true => store.finish_run(run_id, status, counts, error).await,
            false => {
                store
                    .finish_run_notifying(run_id, status, counts, error, notes)
                    .await
            }
        };
        match written {
            Ok(()) => return true,
            Err(e) if e.is_fenced() => {
                // Taken over meanwhile: the taker's record (interrupted, with its reason)
                // stands, and it reconciles what this run left pending. The taker may be
                // this replica itself, whose sweep for expired leases found this run's
                // lease run out while the store could not be reached.
                tracing::warn!(run_id, status = status.as_str(), error = %e, "the run was taken over after its lease expired; its record (with the taker's reason) stands");
                return false;
            }
            Err(e) if attempt < FINISH_ATTEMPTS => {
                tracing::warn!(run_id, attempt, error = %e, "cannot record the end of the run; retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(FINISH_MAX_BACKOFF);
            }
            Err(e) => {
                tracing::error!(
                    run_id,
                    status = status.as_str(),
                    attempts = FINISH_ATTEMPTS,
                    error = %e,
                    "GAVE UP recording the end of the run: it stays `running` in the store \
                     until its lease expires and a replica takes it over"
                );
            }
        }
    }
    false
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Caught = Result<RunReport, Box<dyn std::any::Any + Send>>;

fn from_join(r: Result<Caught, tokio::task::JoinError>) -> RunReport {
    match r {
        Ok(Ok(report)) => report,
        Ok(Err(panic)) => {
            RunReport::failed(format!("the run panicked: {}", panic_message(&*panic)))
        }
        Err(e) if e.is_panic() => RunReport::failed("the run panicked"),
        Err(_) => RunReport::failed("the run was aborted"),
    }
}

/// The message of a caught panic payload (`&str` or `String`), for logs and errors.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Runs `job` once, now, outside the scheduler loop (`once`, `plan`). `dry_run` forces a
/// dry run (`plan`); `cancel` stops it (Ctrl-C). Returns the run id and how it ended.
pub async fn run_now(
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    job: Arc<JobConfig>,
    force_dry_run: bool,
    cancel: CancellationToken,
    timing: LeaseTiming,
) -> StoreResult<Option<(RunId, RunReport)>> {
    run_now_as(
        store,
        executor,
        clock,
        job,
        force_dry_run,
        cancel,
        timing,
        None,
    )
    .await
}

/// [`run_now`], recorded as the `apply` of the saved plan `plan_id` when one is given
/// (trigger `apply`), else as a manual run.
#[allow(clippy::too_many_arguments)]
pub async fn run_now_as(
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    job: Arc<JobConfig>,
    force_dry_run: bool,
    cancel: CancellationToken,
    timing: LeaseTiming,
    plan_id: Option<String>,
) -> StoreResult<Option<(RunId, RunReport)>> {
    let trigger = if plan_id.is_some() {
        Trigger::Apply
    } else {
        Trigger::Manual
    };
    let now = clock.now();
    let dry_run = job.dry_run || force_dry_run;
    let asked = tokio::time::Instant::now();
    let claimed = store
        .claim_run(&NewRun {
            job: job.name.clone(),
            kind: job.kind.as_str().to_string(),
            scheduled_for: now,
            trigger,
            dry_run,
            status: RunStatus::Running,
            error: None,
            plan_id,
        })
        .await?;
    let Some(run_id) = claimed else {
        return Ok(None);
    };
    let reason = Arc::new(OnceLock::new());
    let token = CancellationToken::new();
    let handle = RunHandle {
        run_id,
        scheduled_for: now,
        trigger,
        dry_run,
        cancel: token.clone(),
        lease: LeaseWatch::claimed_at(asked, timing),
    };
    let ctx = RunContext {
        store,
        executor,
        clock,
        cancel_wait: Duration::from_secs(5),
        lease: timing,
    };
    let fut = execute(ctx, job, handle, reason.clone());
    tokio::pin!(fut);
    let finished = tokio::select! {
        f = &mut fut => f,
        _ = cancel.cancelled() => {
            let _ = reason.set("interrupted by the operator".into());
            token.cancel();
            fut.await
        }
    };
    Ok(Some((finished.run_id, finished.report)))
}
