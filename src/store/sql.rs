//! The one implementation of [`Store`]: every statement, written once for every engine in
//! [`super::dialect`].
//!
//! Rows are read into plain row structs (`sqlx::FromRow`) holding the stored encodings and
//! converted to the domain records in one place each ([`RunRow::into_record`],
//! [`ActionRow::into_record`]), where a value the code did not write is reported as
//! corrupt rather than guessed at.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Executor, FromRow, IntoArguments, Pool, Transaction};

use super::dialect::Dialect;
use super::{
    from_ms, opt_from_ms, to_ms, ActionCounts, ActionId, ActionOutcome, ActionRecord,
    ConsumptionSample, NewAction, NewRun, RunFilter, RunId, RunRecord, RunStatus, StateRecord,
    Store, StoreError, StoreResult, Trigger,
};

/// The run store on one SQL engine. Cheap to clone (a pool handle).
#[derive(Debug)]
pub struct SqlStore<DB: Dialect> {
    pool: Pool<DB>,
}

impl<DB: Dialect> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
        }
    }
}

const RUN_COLUMNS: &str = "id, job, kind, scheduled_for, triggered_by, started_at, finished_at, \
    status, dry_run, error, actions_succeeded, actions_failed, actions_skipped, actions_planned";

const ACTION_COLUMNS: &str = "id, run_id, job, resource_kind, resource_id, resource_name, \
    project_id, action, rule, reason, dry_run, outcome, detail, created_at, finished_at";

/// A `runs` row as stored (public only because the driver bounds name the row types).
#[derive(Debug, FromRow)]
pub struct RunRow {
    id: i64,
    job: String,
    kind: String,
    scheduled_for: i64,
    triggered_by: String,
    started_at: i64,
    finished_at: Option<i64>,
    status: String,
    dry_run: bool,
    error: Option<String>,
    actions_succeeded: i64,
    actions_failed: i64,
    actions_skipped: i64,
    actions_planned: i64,
}

impl RunRow {
    fn into_record(self) -> StoreResult<RunRecord> {
        Ok(RunRecord {
            id: self.id,
            scheduled_for: from_ms(self.scheduled_for, "runs.scheduled_for")?,
            trigger: Trigger::parse(&self.triggered_by).ok_or_else(|| {
                StoreError::Corrupt(format!("runs.triggered_by = {:?}", self.triggered_by))
            })?,
            started_at: from_ms(self.started_at, "runs.started_at")?,
            finished_at: opt_from_ms(self.finished_at, "runs.finished_at")?,
            status: RunStatus::parse(&self.status)
                .ok_or_else(|| StoreError::Corrupt(format!("runs.status = {:?}", self.status)))?,
            job: self.job,
            kind: self.kind,
            dry_run: self.dry_run,
            error: self.error,
            counts: ActionCounts {
                succeeded: self.actions_succeeded,
                failed: self.actions_failed,
                skipped: self.actions_skipped,
                planned: self.actions_planned,
            },
        })
    }
}

/// An `actions` row as stored.
#[derive(Debug, FromRow)]
pub struct ActionRow {
    id: i64,
    run_id: i64,
    job: String,
    resource_kind: String,
    resource_id: String,
    resource_name: Option<String>,
    project_id: Option<String>,
    action: String,
    rule: Option<String>,
    reason: String,
    dry_run: bool,
    outcome: String,
    detail: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
}

impl ActionRow {
    fn into_record(self) -> StoreResult<ActionRecord> {
        Ok(ActionRecord {
            outcome: ActionOutcome::parse(&self.outcome).ok_or_else(|| {
                StoreError::Corrupt(format!("actions.outcome = {:?}", self.outcome))
            })?,
            created_at: from_ms(self.created_at, "actions.created_at")?,
            finished_at: opt_from_ms(self.finished_at, "actions.finished_at")?,
            id: self.id,
            run_id: self.run_id,
            job: self.job,
            resource_kind: self.resource_kind,
            resource_id: self.resource_id,
            resource_name: self.resource_name,
            project_id: self.project_id,
            action: self.action,
            rule: self.rule,
            reason: self.reason,
            dry_run: self.dry_run,
            detail: self.detail,
        })
    }
}

/// A `consumption_samples` row as stored.
#[derive(Debug, FromRow)]
pub struct SampleRow {
    project_id: String,
    metric: String,
    granularity: String,
    timeframe_start: i64,
    timeframe_end: i64,
    value: f64,
}

impl SampleRow {
    fn into_sample(self) -> StoreResult<ConsumptionSample> {
        Ok(ConsumptionSample {
            timeframe_start: from_ms(self.timeframe_start, "consumption_samples.timeframe_start")?,
            timeframe_end: from_ms(self.timeframe_end, "consumption_samples.timeframe_end")?,
            project_id: self.project_id,
            metric: self.metric,
            granularity: self.granularity,
            value: self.value,
        })
    }
}

/// A `job_state` row as stored.
#[derive(Debug, FromRow)]
pub struct StateRow {
    value: String,
    version: i64,
}

/// Implements for every engine whose driver can run the statements: the bounds are spelled
/// once here (Rust does not carry a trait's where-clauses to its users, so they cannot live
/// on [`Dialect`]).
macro_rules! for_every_dialect {
    ($(#[$attr:meta])* [$($head:tt)*] { $($body:tt)* }) => {
        $(#[$attr])*
        $($head)*
        where
            for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
            for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
            DB::Connection: sqlx::migrate::Migrate,
            i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            f64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            bool: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            Option<i64>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            Option<String>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            (i64,): for<'r> FromRow<'r, DB::Row>,
            (Option<i64>,): for<'r> FromRow<'r, DB::Row>,
            RunRow: for<'r> FromRow<'r, DB::Row>,
            ActionRow: for<'r> FromRow<'r, DB::Row>,
            SampleRow: for<'r> FromRow<'r, DB::Row>,
            StateRow: for<'r> FromRow<'r, DB::Row>,
        {
            $($body)*
        }
    };
}

for_every_dialect! {
[impl<DB: Dialect> SqlStore<DB>] {
    /// Wraps an open pool and applies the embedded migrations.
    pub async fn new(pool: Pool<DB>) -> StoreResult<Self> {
        let store = SqlStore { pool };
        store.apply_migrations().await?;
        Ok(store)
    }

    /// Closes every connection (used by tests to simulate a process exit cleanly; a real
    /// crash skips this and is handled by [`Store::interrupt_running`]).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for engine-specific checks in tests.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    async fn apply_migrations(&self) -> StoreResult<()> {
        DB::migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn write(&self) -> StoreResult<Transaction<'static, DB>> {
        Ok(match DB::BEGIN_WRITE {
            Some(begin) => self.pool.begin_with(begin).await?,
            None => self.pool.begin().await?,
        })
    }

    /// Inserts one ledger row inside the caller's transaction.
    async fn insert_action(
        tx: &mut Transaction<'static, DB>,
        action: &NewAction,
        now: i64,
    ) -> StoreResult<ActionId> {
        // Only a pending action is still open; a planned or skipped one is over when written.
        let finished_at = (action.outcome != ActionOutcome::Pending).then_some(now);
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO actions (run_id, job, resource_kind, resource_id, resource_name, \
             project_id, action, rule, reason, dry_run, outcome, created_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        )
        .bind(action.run_id)
        .bind(action.job.clone())
        .bind(action.resource_kind.clone())
        .bind(action.resource_id.clone())
        .bind(action.resource_name.clone())
        .bind(action.project_id.clone())
        .bind(action.action.clone())
        .bind(action.rule.clone())
        .bind(action.reason.clone())
        .bind(action.dry_run)
        .bind(action.outcome.as_str().to_string())
        .bind(now)
        .bind(finished_at)
        .fetch_one(&mut **tx)
        .await?;
        Ok(id)
    }

    async fn runs_where(&self, condition: &str, bind: Vec<Bind>) -> StoreResult<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE {condition}");
        let mut q = sqlx::query_as::<DB, RunRow>(&sql);
        for b in bind {
            q = match b {
                Bind::Int(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
            };
        }
        q.fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(RunRow::into_record)
            .collect()
    }
}
}

/// A parameter of [`SqlStore::runs_where`].
enum Bind {
    Int(Option<i64>),
    Text(Option<String>),
}

for_every_dialect! {
#[async_trait]
[impl<DB: Dialect> Store for SqlStore<DB>] {
    async fn migrate(&self) -> StoreResult<()> {
        self.apply_migrations().await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_run(&self, run: &NewRun) -> StoreResult<Option<RunId>> {
        let now = to_ms(Utc::now());
        // A run recorded as already over (a skipped tick) is finished when it is written.
        let finished_at = (run.status != RunStatus::Running).then_some(now);
        let mut tx = self.write().await?;
        let id: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO runs (job, kind, scheduled_for, triggered_by, started_at, finished_at, \
             status, dry_run, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING id",
        )
        .bind(run.job.clone())
        .bind(run.kind.clone())
        .bind(to_ms(run.scheduled_for))
        .bind(run.trigger.as_str().to_string())
        .bind(now)
        .bind(finished_at)
        .bind(run.status.as_str().to_string())
        .bind(run.dry_run)
        .bind(run.error.clone())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id.map(|(id,)| id))
    }

    async fn finish_run(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE runs SET status = $1, finished_at = $2, error = $3, actions_succeeded = $4, \
             actions_failed = $5, actions_skipped = $6, actions_planned = $7 WHERE id = $8",
        )
        .bind(status.as_str().to_string())
        .bind(to_ms(Utc::now()))
        .bind(error.map(str::to_string))
        .bind(counts.succeeded)
        .bind(counts.failed)
        .bind(counts.skipped)
        .bind(counts.planned)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound { what: "run", id });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn interrupt_running(&self, reason: &str) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'interrupted', finished_at = $1, \
             error = COALESCE(error, $2) WHERE status = 'running'",
        )
        .bind(to_ms(Utc::now()))
        .bind(reason.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done))
    }

    async fn get_run(&self, id: RunId) -> StoreResult<Option<RunRecord>> {
        Ok(self
            .runs_where("id = $1", vec![Bind::Int(Some(id))])
            .await?
            .pop())
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        // NULL parameters switch a condition off, so one statement serves every filter.
        self.runs_where(
            "($1 IS NULL OR job = $1) AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            vec![
                Bind::Text(filter.job.clone()),
                Bind::Int(filter.before),
                Bind::Int(Some(i64::from(filter.effective_limit()))),
            ],
        )
        .await
    }

    async fn last_scheduled_run(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        // Catch-up runs are for a scheduled tick too (their `scheduled_for` is the missed
        // tick), so they count; manual runs do not.
        Ok(self
            .runs_where(
                "job = $1 AND triggered_by <> 'manual' ORDER BY scheduled_for DESC LIMIT 1",
                vec![Bind::Text(Some(job.to_string()))],
            )
            .await?
            .pop())
    }

    async fn last_success(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        Ok(self
            .runs_where(
                "job = $1 AND status = 'succeeded' ORDER BY finished_at DESC, id DESC LIMIT 1",
                vec![Bind::Text(Some(job.to_string()))],
            )
            .await?
            .pop())
    }

    async fn begin_action(&self, action: &NewAction) -> StoreResult<ActionId> {
        let now = to_ms(Utc::now());
        let mut tx = self.write().await?;
        let id = Self::insert_action(&mut tx, action, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn begin_actions(&self, actions: &[NewAction]) -> StoreResult<Vec<ActionId>> {
        if actions.is_empty() {
            return Ok(Vec::new());
        }
        let now = to_ms(Utc::now());
        // One transaction for the batch: one commit instead of one per row, and all or none.
        let mut tx = self.write().await?;
        let mut ids = Vec::with_capacity(actions.len());
        for action in actions {
            ids.push(Self::insert_action(&mut tx, action, now).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn finish_action(
        &self,
        id: ActionId,
        outcome: ActionOutcome,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE actions SET outcome = $1, detail = $2, finished_at = $3 WHERE id = $4",
        )
        .bind(outcome.as_str().to_string())
        .bind(detail.map(str::to_string))
        .bind(to_ms(Utc::now()))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound { what: "action", id });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn actions_for_run(&self, run: RunId) -> StoreResult<Vec<ActionRecord>> {
        sqlx::query_as::<DB, ActionRow>(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE run_id = $1 ORDER BY id"
        ))
        .bind(run)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(ActionRow::into_record)
        .collect()
    }

    async fn get_state(&self, job: &str, key: &str) -> StoreResult<Option<StateRecord>> {
        let row: Option<StateRow> =
            sqlx::query_as("SELECT value, version FROM job_state WHERE job = $1 AND key = $2")
                .bind(job.to_string())
                .bind(key.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| StateRecord {
            value: r.value,
            version: r.version,
        }))
    }

    async fn put_state(
        &self,
        job: &str,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> StoreResult<Option<i64>> {
        let now = to_ms(Utc::now());
        let mut tx = self.write().await?;
        let done = match expected {
            // Absent when read: only the first of concurrent creators inserts.
            None => {
                sqlx::query(
                    "INSERT INTO job_state (job, key, value, updated_at, version) \
                     VALUES ($1, $2, $3, $4, 1) ON CONFLICT (job, key) DO NOTHING",
                )
                .bind(job.to_string())
                .bind(key.to_string())
                .bind(value.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?
            }
            Some(version) => {
                sqlx::query(
                    "UPDATE job_state SET value = $1, updated_at = $2, version = version + 1 \
                     WHERE job = $3 AND key = $4 AND version = $5",
                )
                .bind(value.to_string())
                .bind(now)
                .bind(job.to_string())
                .bind(key.to_string())
                .bind(version)
                .execute(&mut *tx)
                .await?
            }
        };
        if DB::rows_affected(&done) == 0 {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(expected.map_or(1, |v| v + 1)))
    }

    async fn upsert_consumption(&self, samples: &[ConsumptionSample]) -> StoreResult<u64> {
        if samples.is_empty() {
            return Ok(0);
        }
        let now = to_ms(Utc::now());
        let mut tx = self.write().await?;
        let mut written = 0;
        for s in samples {
            let done = sqlx::query(
                "INSERT INTO consumption_samples (project_id, metric, granularity, \
                 timeframe_start, timeframe_end, value, collected_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (project_id, metric, granularity, timeframe_start) DO UPDATE SET \
                 timeframe_end = excluded.timeframe_end, value = excluded.value, \
                 collected_at = excluded.collected_at",
            )
            .bind(s.project_id.clone())
            .bind(s.metric.clone())
            .bind(s.granularity.clone())
            .bind(to_ms(s.timeframe_start))
            .bind(to_ms(s.timeframe_end))
            .bind(s.value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            written += DB::rows_affected(&done);
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn list_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ConsumptionSample>> {
        sqlx::query_as::<DB, SampleRow>(
            "SELECT project_id, metric, granularity, timeframe_start, timeframe_end, value \
             FROM consumption_samples WHERE granularity = $1 AND timeframe_start >= $2 \
             ORDER BY timeframe_start, project_id, metric",
        )
        .bind(granularity.to_string())
        .bind(to_ms(since))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(SampleRow::into_sample)
        .collect()
    }

    async fn latest_consumption_end(
        &self,
        granularity: &str,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let (ms,): (Option<i64>,) = sqlx::query_as(
            "SELECT MAX(timeframe_end) FROM consumption_samples WHERE granularity = $1",
        )
        .bind(granularity.to_string())
        .fetch_one(&self.pool)
        .await?;
        opt_from_ms(ms, "consumption_samples.timeframe_end")
    }

    async fn prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        // Running rows have no finished_at and are never pruned; actions go with their run
        // (ON DELETE CASCADE).
        let done =
            sqlx::query("DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1")
                .bind(to_ms(before))
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done))
    }
}
}
