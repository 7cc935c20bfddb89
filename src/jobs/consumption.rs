//! `collect_consumption`: what range to ask Neon for, and what to export.
//!
//! Collection is incremental: it resumes at the end of the newest stored timeframe and asks
//! only for *complete* periods whose data Neon has had time to compute (it refreshes about
//! every 15 minutes), never further back than Neon keeps data (hourly 168 h, daily 60 days,
//! monthly 1 year). Stored samples are upserted, so re-collecting a period is harmless.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, TimeZone, Timelike, Utc};

use futures::{Stream, StreamExt};

use super::ledger::{Action, ActionSpec, Ledger, ResourceKind};
use super::plan::{JobEnv, RunContext, RunError};
use super::scope::selected_projects;
use crate::config::{ConsumptionSpec, JobConfig};
use crate::neon::{
    ApiError, BranchConsumptionPeriod, ConsumptionPeriod, ConsumptionQuery, Granularity, OrgId,
    ProjectId,
};
use crate::store::{BranchConsumptionSample, ConsumptionSample, Store, StoreResult};
use crate::telemetry::consumption::ConsumptionPoint;
use crate::telemetry::events::ConsumptionCollected;

fn cursor_key(period: Period) -> String {
    format!("consumption_cursor/{}", period.as_str())
}

/// The per-branch collection's own cursor: it advances independently of the projects'.
fn branch_cursor_key(period: Period) -> String {
    format!("consumption_branch_cursor/{}", period.as_str())
}

/// Collects consumption incrementally and exports the gauges.
///
/// The endpoint is the job's explicit `endpoint` (`v2`, which needs `org_id`, or `legacy`
/// for legacy plans), never guessed from `org_id`. The cursor (the
/// end of the last range collected in full) is kept in the job's state and advanced only
/// when every call of the run succeeded, so a failed chunk is collected again next time.
pub(crate) async fn run(
    env: &JobEnv,
    job: &JobConfig,
    spec: &ConsumptionSpec,
    ctx: &RunContext,
    ledger: &Ledger,
) -> Result<(), RunError> {
    let period: Period = spec.granularity;
    // The API's own query parameter type (the one place it is mapped).
    let granularity = match period {
        Period::Hourly => Granularity::Hourly,
        Period::Daily => Granularity::Daily,
        Period::Monthly => Granularity::Monthly,
    };
    let projects = selected_projects(&env.client, job).await?;
    // Neon answers 404 for the whole call when one of `project_ids` is outside `org_id`, and
    // a key usually sees more than one org's projects (and personal ones): ask only for the
    // org's projects.
    let ids: Vec<ProjectId> = projects
        .iter()
        .filter(|p| match &spec.org_id {
            Some(org) => p.org_id.as_ref().is_some_and(|o| o.as_str() == org),
            None => true,
        })
        .map(|p| p.id.clone())
        .collect();
    let stored = env.store.get_state(&job.name, &cursor_key(period)).await?;
    let cursor_version = stored.as_ref().map(|r| r.version);
    let cursor = match stored {
        Some(r) => DateTime::parse_from_rfc3339(&r.value)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        None => env.store.latest_consumption_end(period.as_str()).await?,
    };
    let range = collection_range(period, cursor, ctx.now);
    if let (Some((from, to)), false) = (range, ids.is_empty()) {
        let calls = chunks(&ids);
        let n = calls.len();
        let mut all_ok = true;
        let mut samples_total = 0usize;
        for (i, chunk) in calls.into_iter().enumerate() {
            let spec_ = ActionSpec {
                resource_kind: ResourceKind::Project,
                resource_id: format!("{} project(s), call {}/{}", chunk.len(), i + 1, n),
                resource_name: None,
                project_id: (chunk.len() == 1).then(|| chunk[0].to_string()),
                action: Action::CollectConsumption,
                rule: Some(period.as_str().to_string()),
                reason: format!(
                    "collect {} consumption {}..{}",
                    period.as_str(),
                    from.to_rfc3339(),
                    to.to_rfc3339()
                ),
            };
            if ctx.dry_run {
                ledger.planned(&spec_).await?;
                continue;
            }
            let pending = ledger.begin(&spec_).await?;
            let query = ConsumptionQuery {
                from,
                to,
                granularity,
                metrics: spec.metrics.clone(),
                org_id: spec.org_id.clone().map(OrgId::from),
                project_ids: chunk,
            };
            // Streamed: the periods are stored in batches as the pages arrive, so a call
            // holds at most one decoded page and one batch, whatever the look-back.
            let periods = if spec.endpoint == crate::config::ConsumptionEndpoint::V2 {
                env.client.consumption_v2_projects(query).left_stream()
            } else {
                env.client.consumption_legacy_projects(query).right_stream()
            };
            match store_streamed(env.store.as_ref(), periods, period, &spec.metrics).await {
                Ok(n) => {
                    samples_total += n;
                    let d = format!("{n} samples");
                    ledger.succeeded(pending, Some(&d)).await?;
                }
                Err(e) => {
                    all_ok = false;
                    ledger.failed(pending, &e).await?;
                }
            }
        }
        if !ctx.dry_run {
            if all_ok {
                let written = env
                    .store
                    .put_state(
                        ctx.run_id,
                        &job.name,
                        &cursor_key(period),
                        cursor_version,
                        &to.to_rfc3339(),
                    )
                    .await?;
                if written.is_none() {
                    // Another run of the job moved the cursor meanwhile: its range is
                    // stored too (samples are upserted), and its cursor stands.
                    tracing::info!(job = %job.name, "the consumption cursor was moved by another run; keeping its value");
                }
            }
            ConsumptionCollected {
                job: &job.name,
                granularity: period.as_str(),
                per_branch: false,
                projects: ids.len(),
                samples: samples_total,
                at: ctx.now,
            }
            .emit();
        }
    }
    if !spec.branch_metrics.is_empty() && !ids.is_empty() {
        collect_branches(env, job, spec, ctx, ledger, &ids).await?;
    }
    // Export what the store has, selected projects only (per-branch samples are stored, not
    // exported: a branch label would be unbounded).
    let selected: HashSet<&str> = ids.iter().map(|p| p.as_str()).collect();
    let stored = newest_selected(env.store.as_ref(), period, &selected, ctx.now).await?;
    let points = latest_points(&stored, &spec.prices);
    env.consumption.export(
        &job.name,
        period.as_str(),
        points,
        spec.max_projects_exported,
    );
    Ok(())
}

/// The per-branch collection (`per_branch = true`): `/consumption_history/v2/branches` for the
/// same projects, in calls of at most 100 projects, with its own cursor, stored apart from
/// the project samples. Like the projects' collection, the cursor moves only when every call
/// succeeded.
async fn collect_branches(
    env: &JobEnv,
    job: &JobConfig,
    spec: &ConsumptionSpec,
    ctx: &RunContext,
    ledger: &Ledger,
    ids: &[ProjectId],
) -> Result<(), RunError> {
    let period: Period = spec.granularity;
    let granularity = match period {
        Period::Hourly => Granularity::Hourly,
        Period::Daily => Granularity::Daily,
        Period::Monthly => Granularity::Monthly,
    };
    let key = branch_cursor_key(period);
    let stored = env.store.get_state(&job.name, &key).await?;
    let cursor_version = stored.as_ref().map(|r| r.version);
    let cursor = match stored {
        Some(r) => DateTime::parse_from_rfc3339(&r.value)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        None => {
            env.store
                .latest_branch_consumption_end(period.as_str())
                .await?
        }
    };
    let Some((from, to)) = collection_range(period, cursor, ctx.now) else {
        return Ok(());
    };
    let calls = chunks(ids);
    let n = calls.len();
    let mut all_ok = true;
    let mut samples_total = 0usize;
    for (i, chunk) in calls.into_iter().enumerate() {
        let spec_ = ActionSpec {
            resource_kind: ResourceKind::Project,
            resource_id: format!(
                "branches of {} project(s), call {}/{}",
                chunk.len(),
                i + 1,
                n
            ),
            resource_name: None,
            project_id: (chunk.len() == 1).then(|| chunk[0].to_string()),
            action: Action::CollectConsumption,
            rule: Some(period.as_str().to_string()),
            reason: format!(
                "collect {} per-branch consumption {}..{}",
                period.as_str(),
                from.to_rfc3339(),
                to.to_rfc3339()
            ),
        };
        if ctx.dry_run {
            ledger.planned(&spec_).await?;
            continue;
        }
        let pending = ledger.begin(&spec_).await?;
        let query = ConsumptionQuery {
            from,
            to,
            granularity,
            metrics: spec.branch_metrics.clone(),
            org_id: spec.org_id.clone().map(OrgId::from),
            project_ids: chunk,
        };
        let periods = env.client.consumption_v2_branches(query);
        let metrics = &spec.branch_metrics;
        match stream_into_store(env.store.as_ref(), periods, |out, b| {
            push_branch_samples(out, b, period, metrics)
        })
        .await
        {
            Ok(n) => {
                samples_total += n;
                let d = format!("{n} samples");
                ledger.succeeded(pending, Some(&d)).await?;
            }
            Err(e) => {
                all_ok = false;
                ledger.failed(pending, &e).await?;
            }
        }
    }
    if ctx.dry_run {
        return Ok(());
    }
    if all_ok {
        let written = env
            .store
            .put_state(
                ctx.run_id,
                &job.name,
                &key,
                cursor_version,
                &to.to_rfc3339(),
            )
            .await?;
        if written.is_none() {
            tracing::info!(job = %job.name, "the per-branch consumption cursor was moved by another run; keeping its value");
        }
    }
    ConsumptionCollected {
        job: &job.name,
        granularity: period.as_str(),
        per_branch: true,
        projects: ids.len(),
        samples: samples_total,
        at: ctx.now,
    }
    .emit();
    Ok(())
}

/// What a batch of samples is written with.
trait Stored: Sized + Send + Sync {
    fn upsert<'a>(
        store: &'a dyn Store,
        batch: &'a [Self],
    ) -> futures::future::BoxFuture<'a, StoreResult<u64>>;
}

impl Stored for ConsumptionSample {
    fn upsert<'a>(
        store: &'a dyn Store,
        batch: &'a [Self],
    ) -> futures::future::BoxFuture<'a, StoreResult<u64>> {
        store.upsert_consumption(batch)
    }
}

impl Stored for BranchConsumptionSample {
    fn upsert<'a>(
        store: &'a dyn Store,
        batch: &'a [Self],
    ) -> futures::future::BoxFuture<'a, StoreResult<u64>> {
        store.upsert_branch_consumption(batch)
    }
}

/// Samples written to the store per statement batch while a call streams in.
pub const STORE_BATCH: usize = 2_000;

/// Stores the periods of one call as they stream in, [`STORE_BATCH`] samples at a time.
/// Returns the samples stored, or the first error (what was stored before it stays: the
/// samples are upserted, and the cursor does not move, so the range is collected again).
async fn store_streamed(
    store: &dyn Store,
    periods: impl Stream<Item = Result<ConsumptionPeriod, ApiError>>,
    period: Period,
    metrics: &[String],
) -> Result<usize, String> {
    stream_into_store(store, periods, |out, p| {
        push_samples(out, p, period, metrics)
    })
    .await
}

/// [`store_streamed`] for any kind of period and sample: `push` turns an item into samples.
async fn stream_into_store<T, S: Stored>(
    store: &dyn Store,
    periods: impl Stream<Item = Result<T, ApiError>>,
    mut push: impl FnMut(&mut Vec<S>, &T),
) -> Result<usize, String> {
    let mut periods = std::pin::pin!(periods);
    let mut batch = Vec::with_capacity(STORE_BATCH);
    let mut stored = 0;
    loop {
        let next = periods.next().await;
        let done = match next {
            Some(Ok(p)) => {
                push(&mut batch, &p);
                false
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => true,
        };
        if batch.len() >= STORE_BATCH || (done && !batch.is_empty()) {
            S::upsert(store, &batch).await.map_err(|e| e.to_string())?;
            stored += batch.len();
            batch.clear();
        }
        if done {
            return Ok(stored);
        }
    }
}

/// The selected projects' samples of the newest period any of them has, read without
/// loading the whole look-back: the store is asked for the newest stored period of the
/// granularity first, and only when none of the selected projects has a sample there is
/// the window widened (doubling, down to Neon's retention). Exporting needs no more: only
/// the newest period among the points is exported (see `ConsumptionExporter`).
async fn newest_selected(
    store: &dyn Store,
    period: Period,
    selected: &HashSet<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<ConsumptionSample>, crate::store::StoreError> {
    let earliest = now - period.retention();
    let Some(end) = store.latest_consumption_end(period.as_str()).await? else {
        return Ok(Vec::new());
    };
    let mut since = period
        .floor(end - chrono::Duration::milliseconds(1))
        .max(earliest);
    let mut width = match period {
        Period::Hourly => chrono::Duration::hours(1),
        Period::Daily => chrono::Duration::days(1),
        Period::Monthly => chrono::Duration::days(31),
    };
    loop {
        let mut samples = store.list_consumption(period.as_str(), since).await?;
        samples.retain(|s| selected.contains(s.project_id.as_str()));
        if !samples.is_empty() || since <= earliest {
            return Ok(samples);
        }
        since = (since - width).max(earliest);
        width = width * 2;
    }
}

/// Appends the configured metrics of a period as samples. The legacy endpoint always
/// returns its required fields (`active_time_seconds`, ...) whatever was asked; only what
/// the policy names is stored and exported.
fn push_samples(
    out: &mut Vec<ConsumptionSample>,
    p: &ConsumptionPeriod,
    period: Period,
    metrics: &[String],
) {
    out.extend(
        p.metrics
            .iter()
            .filter(|(metric, _)| metrics.contains(metric))
            .map(|(metric, value)| ConsumptionSample {
                project_id: p.project_id.to_string(),
                metric: metric.clone(),
                granularity: period.as_str().to_string(),
                timeframe_start: p.timeframe_start,
                timeframe_end: p.timeframe_end,
                value: *value,
            }),
    );
}

/// Appends the configured metrics of a branch's period as per-branch samples.
fn push_branch_samples(
    out: &mut Vec<BranchConsumptionSample>,
    b: &BranchConsumptionPeriod,
    period: Period,
    metrics: &[String],
) {
    let p = &b.period;
    out.extend(
        p.metrics
            .iter()
            .filter(|(metric, _)| metrics.contains(metric))
            .map(|(metric, value)| BranchConsumptionSample {
                project_id: p.project_id.to_string(),
                branch_id: b.branch_id.to_string(),
                metric: metric.clone(),
                granularity: period.as_str().to_string(),
                timeframe_start: p.timeframe_start,
                timeframe_end: p.timeframe_end,
                value: *value,
            }),
    );
}

/// Neon's data freshness: a period is collected once it ended at least this long ago.
pub const FRESHNESS: Duration = Duration::from_secs(15 * 60);
/// Neon's limit of `project_ids` per consumption call.
pub const MAX_PROJECT_IDS: usize = 100;

/// A consumption period: the policy's granularity, with the calendar arithmetic of Neon's
/// consumption history (one enum for the concept, shared with the policy).
pub use crate::config::Granularity as Period;

impl Period {
    /// Start of the period containing `t` (UTC, as Neon rounds).
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let (y, m, d, h) = (t.year(), t.month(), t.day(), t.hour());
        let r = match self {
            Period::Hourly => Utc.with_ymd_and_hms(y, m, d, h, 0, 0),
            Period::Daily => Utc.with_ymd_and_hms(y, m, d, 0, 0, 0),
            Period::Monthly => Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0),
        };
        r.single().expect("UTC has no gaps or folds")
    }

    /// Start of the first period that starts at or after `t`.
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let f = self.floor(t);
        if f == t {
            f
        } else {
            self.next(f)
        }
    }

    fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Period::Hourly => start + chrono::Duration::hours(1),
            Period::Daily => start + chrono::Duration::days(1),
            Period::Monthly => start
                .checked_add_months(Months::new(1))
                .expect("months after a valid UTC date exist"),
        }
    }

    /// How far back Neon keeps data of this granularity.
    pub fn retention(self) -> chrono::Duration {
        match self {
            Period::Hourly => chrono::Duration::hours(168),
            Period::Daily => chrono::Duration::days(60),
            Period::Monthly => chrono::Duration::days(365),
        }
    }
}

/// The `[from, to)` range to collect now, or `None` when nothing new is complete yet.
///
/// `resume_at` is the end of the newest stored timeframe (from the store).
pub fn collection_range(
    period: Period,
    resume_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let fresh_until = now - chrono::Duration::from_std(FRESHNESS).expect("15 minutes fits");
    let to = period.floor(fresh_until);
    let earliest = period.ceil(now - period.retention());
    let from = match resume_at {
        Some(r) => period.floor(r).max(earliest),
        None => earliest,
    };
    (from < to).then_some((from, to))
}

/// Splits project ids into calls of at most [`MAX_PROJECT_IDS`].
pub fn chunks<T: Clone>(ids: &[T]) -> Vec<Vec<T>> {
    ids.chunks(MAX_PROJECT_IDS).map(|c| c.to_vec()).collect()
}

/// The points to export: for each project and metric the latest collected period, with
/// the estimated cost from the price table.
pub fn latest_points(
    samples: &[ConsumptionSample],
    prices: &BTreeMap<String, f64>,
) -> Vec<ConsumptionPoint> {
    let mut latest: HashMap<(&str, &str), &ConsumptionSample> = HashMap::new();
    for s in samples {
        let e = latest
            .entry((s.project_id.as_str(), s.metric.as_str()))
            .or_insert(s);
        if s.timeframe_start > e.timeframe_start {
            *e = s;
        }
    }
    let mut out: Vec<ConsumptionPoint> = latest
        .into_values()
        .map(|s| ConsumptionPoint {
            project_id: s.project_id.clone(),
            metric: s.metric.clone(),
            granularity: s.granularity.clone(),
            period_start: s.timeframe_start,
            value: s.value,
            cost: prices.get(&s.metric).map(|p| p * s.value),
        })
        .collect();
    out.sort_by(|a, b| (&a.project_id, &a.metric).cmp(&(&b.project_id, &b.metric)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn hourly_range_stops_at_fresh_complete_hours() {
        // 10:10: the 09:00-10:00 hour ended only 10 minutes ago, not fresh yet.
        let now = t("2026-03-10T10:10:00Z");
        let (from, to) =
            collection_range(Period::Hourly, Some(t("2026-03-10T07:00:00Z")), now).unwrap();
        assert_eq!(from, t("2026-03-10T07:00:00Z"));
        assert_eq!(to, t("2026-03-10T09:00:00Z"));
        // 10:20: now it is.
        let (_, to) =
            collection_range(Period::Hourly, Some(from), t("2026-03-10T10:20:00Z")).unwrap();
        assert_eq!(to, t("2026-03-10T10:00:00Z"));
        // Nothing new.
        assert_eq!(
            collection_range(Period::Hourly, Some(t("2026-03-10T09:00:00Z")), now),
            None
        );
    }

    #[test]
    fn first_run_and_old_cursors_respect_retention() {
        let now = t("2026-03-10T10:30:00Z");
        let (from, to) = collection_range(Period::Hourly, None, now).unwrap();
        assert_eq!(from, t("2026-03-03T11:00:00Z"), "168h back, rounded up");
        assert_eq!(to, t("2026-03-10T10:00:00Z"));
        let (from, _) =
            collection_range(Period::Daily, Some(t("2025-01-01T00:00:00Z")), now).unwrap();
        assert_eq!(from, t("2026-01-10T00:00:00Z"), "60 days back");
        let (from, to) =
            collection_range(Period::Monthly, Some(t("2026-01-01T00:00:00Z")), now).unwrap();
        assert_eq!(
            (from, to),
            (t("2026-01-01T00:00:00Z"), t("2026-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn chunking_keeps_calls_within_neon_limit() {
        let ids: Vec<u32> = (0..250).collect();
        let c = chunks(&ids);
        assert_eq!(
            c.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        assert!(chunks::<u32>(&[]).is_empty());
    }

    #[test]
    fn latest_points_with_prices() {
        let s = |p: &str, m: &str, start: &str, v: f64| ConsumptionSample {
            project_id: p.into(),
            metric: m.into(),
            granularity: "hourly".into(),
            timeframe_start: t(start),
            timeframe_end: t(start) + chrono::Duration::hours(1),
            value: v,
        };
        let samples = vec![
            s("p1", "compute_unit_seconds", "2026-03-10T08:00:00Z", 10.0),
            s("p1", "compute_unit_seconds", "2026-03-10T09:00:00Z", 20.0),
            s(
                "p1",
                "public_network_transfer_bytes",
                "2026-03-10T09:00:00Z",
                5.0,
            ),
            s("p2", "compute_unit_seconds", "2026-03-10T07:00:00Z", 1.0),
        ];
        let prices = BTreeMap::from([("compute_unit_seconds".to_string(), 0.5)]);
        let p = latest_points(&samples, &prices);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].project_id.as_str(), p[0].value, p[0].cost),
            ("p1", 20.0, Some(10.0))
        );
        assert_eq!(p[1].metric, "public_network_transfer_bytes");
        assert_eq!(p[1].cost, None);
        assert_eq!((p[2].project_id.as_str(), p[2].value), ("p2", 1.0));
    }

    fn sample(p: &str, start: &str, v: f64) -> ConsumptionSample {
        ConsumptionSample {
            project_id: p.into(),
            metric: "compute_time_seconds".into(),
            granularity: "hourly".into(),
            timeframe_start: t(start),
            timeframe_end: t(start) + chrono::Duration::hours(1),
            value: v,
        }
    }

    #[tokio::test]
    async fn the_export_reads_the_newest_period_of_the_selected_projects() {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        store
            .upsert_consumption(&[
                sample("p-lag", "2026-03-10T06:00:00Z", 1.0),
                sample("p-lag", "2026-03-10T08:00:00Z", 2.0),
                sample("p-new", "2026-03-10T09:00:00Z", 3.0),
                sample("p-new", "2026-03-10T10:00:00Z", 4.0),
                sample("p-old", "2026-03-01T10:00:00Z", 5.0),
            ])
            .await
            .unwrap();
        let now = t("2026-03-10T12:00:00Z");
        let read = |ids: &'static [&'static str]| {
            let store = store.clone();
            async move {
                let selected: HashSet<&str> = ids.iter().copied().collect();
                let mut got: Vec<(String, DateTime<Utc>)> =
                    newest_selected(store.as_ref(), Period::Hourly, &selected, now)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|s| (s.project_id, s.timeframe_start))
                        .collect();
                got.sort();
                got
            }
        };
        // The newest stored period has a selected project: that period only.
        assert_eq!(
            read(&["p-new", "p-lag"]).await,
            vec![("p-new".to_string(), t("2026-03-10T10:00:00Z"))]
        );
        // None of the selected projects has the newest period: the window widens until
        // their newest (08:00) is in it; older samples may come along, never others'.
        let lag = read(&["p-lag"]).await;
        assert!(lag.iter().all(|(p, _)| p == "p-lag"), "{lag:?}");
        assert_eq!(
            lag.iter().map(|(_, s)| *s).max(),
            Some(t("2026-03-10T08:00:00Z"))
        );
        // Older than Neon's retention (168 h): nothing, as before.
        assert!(read(&["p-old"]).await.is_empty());
        assert!(read(&["p-none"]).await.is_empty());
    }

    fn period_of(p: &str, start: DateTime<Utc>) -> ConsumptionPeriod {
        ConsumptionPeriod {
            project_id: p.into(),
            granularity: Granularity::Hourly,
            timeframe_start: start,
            timeframe_end: start + chrono::Duration::hours(1),
            metrics: vec![
                ("compute_time_seconds".into(), 1.0),
                ("written_data_bytes".into(), 2.0),
            ],
        }
    }

    #[tokio::test]
    async fn streamed_periods_are_stored_in_batches_and_errors_stop_the_call() {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        let start = t("2026-03-01T00:00:00Z");
        // More than one batch, and a last one that is not full.
        let n = STORE_BATCH + STORE_BATCH / 2;
        let periods = (0..n).map(move |i| {
            Ok(period_of(
                &format!("p-{}", i % 7),
                start + chrono::Duration::hours(i as i64),
            ))
        });
        let metrics = vec!["compute_time_seconds".to_string()];
        let stored = store_streamed(
            store.as_ref(),
            futures::stream::iter(periods),
            Period::Hourly,
            &metrics,
        )
        .await
        .unwrap();
        assert_eq!(
            stored, n,
            "one sample per period: only the configured metric"
        );
        assert_eq!(
            store.list_consumption("hourly", start).await.unwrap().len(),
            n
        );

        let failing = futures::stream::iter(vec![
            Ok(period_of("p-x", start)),
            Err(ApiError::InvalidRequest("page 2 failed".into())),
            Ok(period_of("p-y", start)),
        ]);
        let err = store_streamed(store.as_ref(), failing, Period::Hourly, &metrics)
            .await
            .unwrap_err();
        assert!(err.contains("page 2 failed"), "{err}");
    }
}
