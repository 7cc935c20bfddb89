//! SQLite implementation of [`super::Store`], the embedded default.
//!
//! Connections run in WAL mode with `synchronous = NORMAL` (durable across process crashes,
//! at most the last transactions lost on power failure, which the run history tolerates), a
//! busy timeout so a second writer waits instead of failing, and foreign keys on (actions
//! are deleted with their run). Every write is its own `BEGIN IMMEDIATE` transaction: it
//! takes the write lock up front, so two writers never both read and then collide at
//! upgrade time with `SQLITE_BUSY` mid-transaction (the deferred default can).
//!
//! Instants are stored as INTEGER milliseconds since the Unix epoch (see the migration).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{
    from_ms, opt_from_ms, to_ms, ActionCounts, ActionId, ActionOutcome, ActionRecord,
    ConsumptionSample, NewAction, NewRun, RunFilter, RunId, RunRecord, RunStatus, Store,
    StoreError, StoreResult, Trigger,
};

/// How long a connection waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite run store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite:path`, `sqlite://path`,
    /// `sqlite::memory:`) and applies the embedded migrations.
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        // The URL itself is not secret for SQLite, but name only the part that is a path.
        let what = url.split('?').next().unwrap_or(url).to_string();
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Open {
                what: what.clone(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            // One writer at a time anyway; a few connections let reads (HTTP) proceed
            // during a write under WAL. An in-memory database lives as long as its
            // connections, so keep exactly one that never expires.
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { what, source })?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Opens an existing database read-only, without migrating (see
    /// [`super::open_read_only`]).
    pub async fn open_read_only(url: &str) -> StoreResult<SqliteStore> {
        let what = url.split('?').next().unwrap_or(url).to_string();
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Open {
                what: what.clone(),
                source,
            })?
            .create_if_missing(false)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory || !options.get_filename().exists() {
            return Err(StoreError::NotInitialised(format!(
                "no store at {what}: nothing has been recorded yet (the daemon creates it on \
                 its first start)"
            )));
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                what: what.clone(),
                source,
            })?;
        let (tables,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'runs'",
        )
        .fetch_one(&pool)
        .await?;
        if tables == 0 {
            return Err(StoreError::NotInitialised(format!(
                "{what} is not a neon-steward store (it has no runs table): not initialised"
            )));
        }
        Ok(SqliteStore { pool })
    }

    /// Closes every connection (used by tests to simulate a process exit cleanly; a real
    /// crash skips this and is handled by [`Store::interrupt_running`]).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

const RUN_COLUMNS: &str = "id, job, kind, scheduled_for, triggered_by, started_at, finished_at, \
    status, dry_run, error, actions_succeeded, actions_failed, actions_skipped, actions_planned";

const ACTION_COLUMNS: &str = "id, run_id, job, resource_kind, resource_id, resource_name, \
    project_id, action, rule, reason, dry_run, outcome, detail, created_at, finished_at";

fn run_from_row(row: &SqliteRow) -> StoreResult<RunRecord> {
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

fn action_from_row(row: &SqliteRow) -> StoreResult<ActionRecord> {
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
    tx: &mut Transaction<'static, Sqlite>,
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
impl Store for SqliteStore {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_use_wal_normal_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqliteStore::open(&url).await.expect("opens");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
    }
}
