//! PostgreSQL implementation of [`super::Store`], for several replicas sharing one store.
//!
//! The SQL is the SQLite implementation's, statement for statement (both engines accept
//! `$n` parameters, `ON CONFLICT ... DO NOTHING/UPDATE` and `RETURNING`), over the schema in
//! `migrations/postgres/` with the same encodings: instants as BIGINT Unix milliseconds.
//! Claims are race-free through the unique `(job, scheduled_for)` constraint; writes use
//! PostgreSQL's default READ COMMITTED transactions, which is all a single-statement claim
//! needs.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{
    from_ms, opt_from_ms, to_ms, ActionCounts, ActionId, ActionOutcome, ActionRecord,
    ConsumptionSample, NewAction, NewRun, RunFilter, RunId, RunRecord, RunStatus, Store,
    StoreError, StoreResult, Trigger,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL run store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`) and applies the embedded migrations.
    pub async fn open(url: &str) -> StoreResult<PgStore> {
        // The URL may carry a password: name only the host and database in errors.
        let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Open {
            what: "the postgres URL".into(),
            source,
        })?;
        let what = format!(
            "postgres database {:?} on {}:{}",
            options.get_database().unwrap_or("(default)"),
            options.get_host(),
            options.get_port()
        );
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { what, source })?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Connects read-only (`default_transaction_read_only`), without migrating (see
    /// [`super::open_read_only`]).
    pub async fn open_read_only(url: &str) -> StoreResult<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|source| StoreError::Open {
                what: "the postgres URL".into(),
                source,
            })?
            .options([("default_transaction_read_only", "on")]);
        let what = format!(
            "postgres database {:?} on {}:{}",
            options.get_database().unwrap_or("(default)"),
            options.get_host(),
            options.get_port()
        );
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                what: what.clone(),
                source,
            })?;
        let (initialised,): (bool,) = sqlx::query_as("SELECT to_regclass('runs') IS NOT NULL")
            .fetch_one(&pool)
            .await?;
        if !initialised {
            return Err(StoreError::NotInitialised(format!(
                "{what} has no neon-steward tables: not initialised (the daemon creates them \
                 on its first start)"
            )));
        }
        Ok(PgStore { pool })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

const RUN_COLUMNS: &str = "id, job, kind, scheduled_for, triggered_by, started_at, finished_at, \
    status, dry_run, error, actions_succeeded, actions_failed, actions_skipped, actions_planned";

const ACTION_COLUMNS: &str = "id, run_id, job, resource_kind, resource_id, resource_name, \
    project_id, action, rule, reason, dry_run, outcome, detail, created_at, finished_at";

fn run_from_row(row: &PgRow) -> StoreResult<RunRecord> {
    let trigger: String = row.try_get("triggered_by")?;
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        job: row.try_get("job")?,
        kind: row.try_get("kind")?,
        scheduled_for: from_ms(row.try_get("scheduled_for")?, "runs.scheduled_for")?,
        trigger: Trigger::parse(&trigger)
            .ok_or_else(|| StoreError::Corrupt(format!("runs.triggered_by = {trigger:?}")))?,
        started_at: from_ms(row.try_get("started_at")?, "runs.started_at")?,
        finished_at: opt_from_ms(row.try_get("finished_at")?, "runs.finished_at")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("runs.status = {status:?}")))?,
        dry_run: row.try_get("dry_run")?,
        error: row.try_get("error")?,
        counts: ActionCounts {
            succeeded: row.try_get("actions_succeeded")?,
            failed: row.try_get("actions_failed")?,
            skipped: row.try_get("actions_skipped")?,
            planned: row.try_get("actions_planned")?,
        },
    })
}

fn action_from_row(row: &PgRow) -> StoreResult<ActionRecord> {
    let outcome: String = row.try_get("outcome")?;
    Ok(ActionRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        job: row.try_get("job")?,
        resource_kind: row.try_get("resource_kind")?,
        resource_id: row.try_get("resource_id")?,
        resource_name: row.try_get("resource_name")?,
        project_id: row.try_get("project_id")?,
        action: row.try_get("action")?,
        rule: row.try_get("rule")?,
        reason: row.try_get("reason")?,
        dry_run: row.try_get("dry_run")?,
        outcome: ActionOutcome::parse(&outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("actions.outcome = {outcome:?}")))?,
        detail: row.try_get("detail")?,
        created_at: from_ms(row.try_get("created_at")?, "actions.created_at")?,
        finished_at: opt_from_ms(row.try_get("finished_at")?, "actions.finished_at")?,
    })
}

/// Inserts one ledger row inside the caller's transaction.
async fn insert_action(
    tx: &mut Transaction<'static, Postgres>,
    action: &NewAction,
    now: i64,
) -> StoreResult<ActionId> {
    // Only a pending action is still open; a planned or skipped one is over when written.
    let finished_at = (action.outcome != ActionOutcome::Pending).then_some(now);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO actions (run_id, job, resource_kind, resource_id, resource_name, \
         project_id, action, rule, reason, dry_run, outcome, created_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
    )
    .bind(action.run_id)
    .bind(&action.job)
    .bind(&action.resource_kind)
    .bind(&action.resource_id)
    .bind(action.resource_name.as_deref())
    .bind(action.project_id.as_deref())
    .bind(&action.action)
    .bind(action.rule.as_deref())
    .bind(&action.reason)
    .bind(action.dry_run)
    .bind(action.outcome.as_str())
    .bind(now)
    .bind(finished_at)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
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
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (job, kind, scheduled_for, triggered_by, started_at, finished_at, \
             status, dry_run, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING id",
        )
        .bind(&run.job)
        .bind(&run.kind)
        .bind(to_ms(run.scheduled_for))
        .bind(run.trigger.as_str())
        .bind(now)
        .bind(finished_at)
        .bind(run.status.as_str())
        .bind(run.dry_run)
        .bind(run.error.as_deref())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
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
        .bind(status.as_str())
        .bind(to_ms(Utc::now()))
        .bind(error)
        .bind(counts.succeeded)
        .bind(counts.failed)
        .bind(counts.skipped)
        .bind(counts.planned)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
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
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn get_run(&self, id: RunId) -> StoreResult<Option<RunRecord>> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        // NULL parameters switch a condition off, so one statement serves every filter.
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1 IS NULL OR job = $1) \
             AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(filter.job.as_deref())
        .bind(filter.before)
        .bind(i64::from(filter.effective_limit()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn last_scheduled_run(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        // Catch-up runs are for a scheduled tick too (their `scheduled_for` is the missed
        // tick), so they count; manual runs do not.
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE job = $1 AND triggered_by <> 'manual' \
             ORDER BY scheduled_for DESC LIMIT 1"
        ))
        .bind(job)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn last_success(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE job = $1 AND status = 'succeeded' \
             ORDER BY finished_at DESC, id DESC LIMIT 1"
        ))
        .bind(job)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn begin_action(&self, action: &NewAction) -> StoreResult<ActionId> {
        let now = to_ms(Utc::now());
        let mut tx = self.write().await?;
        let id = insert_action(&mut tx, action, now).await?;
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
            ids.push(insert_action(&mut tx, action, now).await?);
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
        .bind(outcome.as_str())
        .bind(detail)
        .bind(to_ms(Utc::now()))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "action", id });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn actions_for_run(&self, run: RunId) -> StoreResult<Vec<ActionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE run_id = $1 ORDER BY id"
        ))
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(action_from_row).collect()
    }

    async fn get_state(&self, job: &str, key: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM job_state WHERE job = $1 AND key = $2")
                .bind(job)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_state(&self, job: &str, key: &str, value: &str) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO job_state (job, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job, key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
        )
        .bind(job)
        .bind(key)
        .bind(value)
        .bind(to_ms(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_consumption(&self, samples: &[ConsumptionSample]) -> StoreResult<u64> {
        if samples.is_empty() {
            return Ok(0);
        }
        let now = to_ms(Utc::now());
        let mut tx = self.write().await?;
        let mut written = 0;
        for s in samples {
            written += sqlx::query(
                "INSERT INTO consumption_samples (project_id, metric, granularity, \
                 timeframe_start, timeframe_end, value, collected_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (project_id, metric, granularity, timeframe_start) DO UPDATE SET \
                 timeframe_end = excluded.timeframe_end, value = excluded.value, \
                 collected_at = excluded.collected_at",
            )
            .bind(&s.project_id)
            .bind(&s.metric)
            .bind(&s.granularity)
            .bind(to_ms(s.timeframe_start))
            .bind(to_ms(s.timeframe_end))
            .bind(s.value)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn list_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ConsumptionSample>> {
        let rows = sqlx::query(
            "SELECT project_id, metric, granularity, timeframe_start, timeframe_end, value \
             FROM consumption_samples WHERE granularity = $1 AND timeframe_start >= $2 \
             ORDER BY timeframe_start, project_id, metric",
        )
        .bind(granularity)
        .bind(to_ms(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ConsumptionSample {
                    project_id: row.try_get("project_id")?,
                    metric: row.try_get("metric")?,
                    granularity: row.try_get("granularity")?,
                    timeframe_start: from_ms(
                        row.try_get("timeframe_start")?,
                        "consumption_samples.timeframe_start",
                    )?,
                    timeframe_end: from_ms(
                        row.try_get("timeframe_end")?,
                        "consumption_samples.timeframe_end",
                    )?,
                    value: row.try_get("value")?,
                })
            })
            .collect()
    }

    async fn latest_consumption_end(
        &self,
        granularity: &str,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let ms: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(timeframe_end) FROM consumption_samples WHERE granularity = $1",
        )
        .bind(granularity)
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
        Ok(done.rows_affected())
    }
}
