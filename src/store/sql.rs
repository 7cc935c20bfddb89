//! The one implementation of [`Store`]: every statement, written once for every engine in
//! [`super::dialect`].
//!
//! Rows are read into plain row structs (`sqlx::FromRow`) holding the stored encodings and
//! converted to the domain records in one place each ([`RunRow::into_record`],
//! [`ActionRow::into_record`]), where a value the code did not write is reported as
//! corrupt rather than guessed at.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Executor, FromRow, IntoArguments, Pool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::dialect::Dialect;
use super::{
    from_ms, opt_from_ms, to_ms, ActionCounts, ActionId, ActionOutcome, ActionRecord,
    BranchConsumptionSample, Claim, ConsumptionSample, Delivery, Keep, Lease, NewAction,
    NewNotification, NewRun, NoticeKey, NoticeMark, NotificationFilter, NotificationRecord,
    NotificationStatus, PruneBefore, Pruned, RunFilter, RunId, RunRecord, RunStatus, StateRecord,
    Store, StoreError, StoreOptions, StoreResult, Trigger,
};

/// The run store on one SQL engine. Cheap to clone (a pool handle).
#[derive(Debug)]
pub struct SqlStore<DB: Dialect> {
    pool: Pool<DB>,
    /// This process's turn to write, on an engine that lets one writer in at a time
    /// (SQLite; see [`Dialect::ONE_WRITER`]).
    turn: Option<Arc<Mutex<()>>>,
    /// This replica, written as the owner of the runs it claims.
    owner: String,
    /// `store.lease` in milliseconds.
    lease_ms: i64,
}

impl<DB: Dialect> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            turn: self.turn.clone(),
            owner: self.owner.clone(),
            lease_ms: self.lease_ms,
        }
    }
}

/// A write transaction, holding this process's turn to write (see [`SqlStore::turn`])
/// until it is committed or dropped.
struct WriteTx<DB: Dialect> {
    tx: Transaction<'static, DB>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl<DB: Dialect> WriteTx<DB> {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<DB: Dialect> std::ops::Deref for WriteTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: Dialect> std::ops::DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// Opens (creating it) and locks `path`, waiting for another process's lock on it; the
/// lock (an OS file lock) lasts as long as the returned file, or the process.
pub(super) async fn lock_file(path: std::path::PathBuf) -> StoreResult<std::fs::File> {
    let shown = path.display().to_string();
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await;
    let error = match locked {
        Ok(Ok(file)) => return Ok(file),
        Ok(Err(e)) => e,
        Err(e) => std::io::Error::other(e),
    };
    Err(StoreError::Open {
        what: format!("{shown} (the lock that has processes migrate the store one at a time)"),
        source: sqlx::Error::Io(error),
    })
}

/// Rows one transaction of [`Store::prune`] deletes at most (a twentieth of it for runs,
/// which take their actions with them).
const PRUNE_BATCH: i64 = 2_000;

const RUN_COLUMNS: &str = "id, job, kind, scheduled_for, triggered_by, started_at, finished_at, \
    status, dry_run, error, actions_succeeded, actions_failed, actions_skipped, actions_planned, \
    owner, lease_expires_at, plan_id";

const ACTION_COLUMNS: &str = "id, run_id, job, resource_kind, resource_id, resource_name, \
    project_id, action, rule, reason, dry_run, outcome, detail, created_at, finished_at, \
    reconciled_at";

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
    owner: Option<String>,
    lease_expires_at: Option<i64>,
    plan_id: Option<String>,
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
            lease_expires_at: opt_from_ms(self.lease_expires_at, "runs.lease_expires_at")?,
            owner: self.owner,
            plan_id: self.plan_id,
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
    reconciled_at: Option<i64>,
}

impl ActionRow {
    fn into_record(self) -> StoreResult<ActionRecord> {
        Ok(ActionRecord {
            outcome: ActionOutcome::parse(&self.outcome).ok_or_else(|| {
                StoreError::Corrupt(format!("actions.outcome = {:?}", self.outcome))
            })?,
            created_at: from_ms(self.created_at, "actions.created_at")?,
            finished_at: opt_from_ms(self.finished_at, "actions.finished_at")?,
            reconciled_at: opt_from_ms(self.reconciled_at, "actions.reconciled_at")?,
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

/// A `branch_consumption_samples` row as stored.
#[derive(Debug, FromRow)]
pub struct BranchSampleRow {
    project_id: String,
    branch_id: String,
    metric: String,
    granularity: String,
    timeframe_start: i64,
    timeframe_end: i64,
    value: f64,
}

impl BranchSampleRow {
    fn into_sample(self) -> StoreResult<BranchConsumptionSample> {
        Ok(BranchConsumptionSample {
            timeframe_start: from_ms(
                self.timeframe_start,
                "branch_consumption_samples.timeframe_start",
            )?,
            timeframe_end: from_ms(
                self.timeframe_end,
                "branch_consumption_samples.timeframe_end",
            )?,
            project_id: self.project_id,
            branch_id: self.branch_id,
            metric: self.metric,
            granularity: self.granularity,
            value: self.value,
        })
    }
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

/// What a renewed lease returns.
#[derive(Debug, FromRow)]
pub struct LeaseRow {
    lease_expires_at: i64,
    cancel_requested: bool,
}

/// A `job_state` row as stored.
#[derive(Debug, FromRow)]
pub struct StateRow {
    value: String,
    version: i64,
}

const OUTBOX_COLUMNS: &str = "id, sink, event, job, run_id, payload, status, attempts, \
    created_at, next_attempt_at, give_up_at, owner, lease_expires_at, last_error, finished_at";

/// An `outbox` row as stored.
#[derive(Debug, FromRow)]
pub struct OutboxRow {
    id: String,
    sink: String,
    event: String,
    job: Option<String>,
    run_id: Option<i64>,
    payload: String,
    status: String,
    attempts: i64,
    created_at: i64,
    next_attempt_at: i64,
    give_up_at: i64,
    owner: Option<String>,
    lease_expires_at: Option<i64>,
    last_error: Option<String>,
    finished_at: Option<i64>,
}

impl OutboxRow {
    fn into_record(self) -> StoreResult<NotificationRecord> {
        Ok(NotificationRecord {
            status: NotificationStatus::parse(&self.status)
                .ok_or_else(|| StoreError::Corrupt(format!("outbox.status = {:?}", self.status)))?,
            created_at: from_ms(self.created_at, "outbox.created_at")?,
            next_attempt_at: from_ms(self.next_attempt_at, "outbox.next_attempt_at")?,
            give_up_at: from_ms(self.give_up_at, "outbox.give_up_at")?,
            lease_expires_at: opt_from_ms(self.lease_expires_at, "outbox.lease_expires_at")?,
            finished_at: opt_from_ms(self.finished_at, "outbox.finished_at")?,
            id: self.id,
            sink: self.sink,
            event: self.event,
            job: self.job,
            run_id: self.run_id,
            payload: self.payload,
            attempts: self.attempts,
            owner: self.owner,
            last_error: self.last_error,
        })
    }
}

const MARK_COLUMNS: &str = "job, project_id, resource_kind, resource_id, resource_name, action, \
    rule, reason, marked_at, due_at, run_id";

/// A `notice_marks` row as stored.
#[derive(Debug, FromRow)]
pub struct MarkRow {
    job: String,
    project_id: String,
    resource_kind: String,
    resource_id: String,
    resource_name: Option<String>,
    action: String,
    rule: Option<String>,
    reason: String,
    marked_at: i64,
    due_at: i64,
    run_id: Option<i64>,
}

impl MarkRow {
    fn into_mark(self) -> StoreResult<NoticeMark> {
        Ok(NoticeMark {
            marked_at: from_ms(self.marked_at, "notice_marks.marked_at")?,
            due_at: from_ms(self.due_at, "notice_marks.due_at")?,
            job: self.job,
            project_id: self.project_id,
            resource_kind: self.resource_kind,
            resource_id: self.resource_id,
            resource_name: self.resource_name,
            action: self.action,
            rule: self.rule,
            reason: self.reason,
            run_id: self.run_id,
        })
    }
}

/// A `keeps` row as stored.
#[derive(Debug, FromRow)]
pub struct KeepRow {
    project: String,
    branch: String,
    until_at: Option<i64>,
    note: Option<String>,
    created_at: i64,
}

impl KeepRow {
    fn into_keep(self) -> StoreResult<Keep> {
        Ok(Keep {
            until: opt_from_ms(self.until_at, "keeps.until_at")?,
            created_at: from_ms(self.created_at, "keeps.created_at")?,
            project: self.project,
            branch: self.branch,
            note: self.note,
        })
    }
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
            BranchSampleRow: for<'r> FromRow<'r, DB::Row>,
            StateRow: for<'r> FromRow<'r, DB::Row>,
            LeaseRow: for<'r> FromRow<'r, DB::Row>,
            OutboxRow: for<'r> FromRow<'r, DB::Row>,
            MarkRow: for<'r> FromRow<'r, DB::Row>,
            KeepRow: for<'r> FromRow<'r, DB::Row>,
            (String,): for<'r> FromRow<'r, DB::Row>,
        {
            $($body)*
        }
    };
}

for_every_dialect! {
[impl<DB: Dialect> SqlStore<DB>] {
    /// Wraps an open pool and applies the embedded migrations.
    pub async fn new(pool: Pool<DB>, opts: StoreOptions) -> StoreResult<Self> {
        let store = SqlStore {
            pool,
            turn: DB::ONE_WRITER.then(Arc::default),
            owner: opts.replica.to_string(),
            lease_ms: i64::try_from(opts.lease.as_millis()).unwrap_or(i64::MAX / 4),
        };
        store.apply_migrations().await?;
        Ok(store)
    }

    /// Wraps a pool on an existing store without migrating it (read-only commands; see
    /// [`super::open_read_only`]).
    pub fn existing(pool: Pool<DB>, opts: StoreOptions) -> Self {
        SqlStore {
            pool,
            turn: DB::ONE_WRITER.then(Arc::default),
            owner: opts.replica.to_string(),
            lease_ms: i64::try_from(opts.lease.as_millis()).unwrap_or(i64::MAX / 4),
        }
    }

    /// Closes every connection (used by tests to simulate a process exit cleanly; a real
    /// crash skips this and is handled by [`Store::take_over_expired`]).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for engine-specific checks in tests.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Runs the migrations. The caller holds the migration lock where the engine needs one
    /// ([`Dialect::migration_lock_file`]): [`super::open_with`] around the whole open,
    /// [`Store::migrate`] around this.
    async fn apply_migrations(&self) -> StoreResult<()> {
        DB::migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Waits for this process's turn to write, where the engine takes one writer at a time.
    ///
    /// SQLite lets one writer in at a time however many connections there are, and a
    /// writer that finds the file's lock taken polls it from its busy handler, sleeping 1,
    /// 2, 5, 10, 20 ... ms between tries: with four projects writing ledger rows at once,
    /// those sleeps were most of a sweep's time. Queued here instead, this process's
    /// writes take turns in order and start the moment the one before ends. Another
    /// process's writes (a second replica, a CLI command) are still waited for in the busy
    /// handler. No timeout: a turn ends when its write ends, and a write waits for the
    /// file's lock at most the busy timeout.
    async fn turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        }
    }

    async fn write(&self) -> StoreResult<WriteTx<DB>> {
        let turn = self.turn().await;
        let tx = match DB::BEGIN_WRITE {
            Some(begin) => self.pool.begin_with(begin).await?,
            None => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Inside a write transaction: that this replica holds `run` (running, its owner, and
    /// with `live_lease` a lease that has not expired by the store's clock).
    async fn fence(
        &self,
        tx: &mut WriteTx<DB>,
        run: RunId,
        live_lease: bool,
    ) -> StoreResult<()> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1{}",
            DB::LOCK_ROW
        );
        let row: Option<RunRow> = sqlx::query_as(&sql)
            .bind(run)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound { what: "run", id: run });
        };
        let (now,): (i64,) = sqlx::query_as(&format!("SELECT {}", DB::NOW_MS))
            .fetch_one(&mut **tx)
            .await?;
        let why = if row.owner.as_deref() != Some(self.owner.as_str()) {
            Some(format!(
                "it is held by {}",
                row.owner.as_deref().unwrap_or("no replica")
            ))
        } else if row.status != RunStatus::Running.as_str() {
            Some(format!(
                "it is `{}`{}",
                row.status,
                row.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))
        } else if live_lease && row.lease_expires_at.is_none_or(|t| t <= now) {
            Some(format!(
                "its lease expired {} ms ago",
                now - row.lease_expires_at.unwrap_or(now)
            ))
        } else {
            None
        };
        match why {
            Some(why) => Err(StoreError::Fenced { run_id: run, why }),
            None => Ok(()),
        }
    }

    /// Inserts a run inside the caller's transaction; `None` if its tick is taken.
    async fn insert_run(
        &self,
        tx: &mut WriteTx<DB>,
        run: &NewRun,
    ) -> StoreResult<Option<RunId>> {
        let now = to_ms(Utc::now());
        let running = run.status == RunStatus::Running;
        // A run recorded as already over (a skipped tick) is finished when it is written;
        // a running one is held for one lease from the store's clock.
        let finished_at = (!running).then_some(now);
        let lease = if running { Some(self.lease_ms) } else { None };
        let id: Option<(i64,)> = sqlx::query_as(&format!(
            "INSERT INTO runs (job, kind, scheduled_for, triggered_by, started_at, finished_at, \
             status, dry_run, error, owner, lease_expires_at, plan_id) VALUES ($1, $2, $3, $4, \
             $5, $6, $7, $8, $9, $10, CASE WHEN $11 IS NULL THEN NULL ELSE {} + $11 END, $12) \
             ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING id",
            DB::NOW_MS
        ))
        .bind(run.job.clone())
        .bind(run.kind.clone())
        .bind(to_ms(run.scheduled_for))
        .bind(run.trigger.as_str().to_string())
        .bind(now)
        .bind(finished_at)
        .bind(run.status.as_str().to_string())
        .bind(run.dry_run)
        .bind(run.error.clone())
        .bind(self.owner.clone())
        .bind(lease)
        .bind(run.plan_id.clone())
        .fetch_optional(&mut **tx)
        .await?;
        Ok(id.map(|(id,)| id))
    }

    /// Why a conditional update of run `id` changed nothing: it is not ours, or not there.
    async fn not_updated(&self, id: RunId, what: &'static str) -> StoreError {
        match self.runs_where("id = $1", vec![Bind::Int(Some(id))]).await {
            Ok(r) if r.is_empty() => StoreError::NotFound { what, id },
            // As the fence says it: a running run is another replica's; an ended one says
            // how it ended (a takeover's reason names the taker).
            Ok(r) => StoreError::Fenced {
                run_id: id,
                why: match (r[0].status, r[0].error.as_deref()) {
                    (RunStatus::Running, _) => format!(
                        "it is held by {}",
                        r[0].owner.as_deref().unwrap_or("no replica")
                    ),
                    (status, Some(e)) => format!("it is `{}`: {e}", status.as_str()),
                    (status, None) => format!("it is `{}`", status.as_str()),
                },
            },
            Err(e) => e,
        }
    }

    /// Inserts one ledger row inside the caller's transaction.
    async fn insert_action(
        tx: &mut WriteTx<DB>,
        action: &NewAction,
        now: i64,
    ) -> StoreResult<ActionId> {
        let q = sqlx::query_as(
            "INSERT INTO actions (run_id, job, resource_kind, resource_id, resource_name, \
             project_id, action, rule, reason, dry_run, outcome, created_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        );
        Self::bind_new_action(q, action, now)
        .fetch_one(&mut **tx)
        .await
        .map(|(id,): (i64,)| id)
        .map_err(Into::into)
    }

    /// `$1`..`$13` of an `actions` row: the action's columns, `created_at` = `now`, and
    /// `finished_at` = `now` unless the action is still open (only a pending action is; a
    /// planned or skipped one is over when written).
    fn bind_new_action<'q, O>(
        q: sqlx::query::QueryAs<'q, DB, O, DB::Arguments<'q>>,
        action: &NewAction,
        now: i64,
    ) -> sqlx::query::QueryAs<'q, DB, O, DB::Arguments<'q>> {
        let finished_at = (action.outcome != ActionOutcome::Pending).then_some(now);
        q.bind(action.run_id)
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
    }

    /// [`Self::insert_action`] as one statement that writes only while this replica holds
    /// `action.run_id` running with a live lease by the store's clock (the conditions of
    /// [`Self::fence`] with `live_lease`). `None`: nothing was written.
    async fn insert_action_if_held(
        &self,
        action: &NewAction,
        now: i64,
    ) -> StoreResult<Option<ActionId>> {
        let sql = format!(
            "INSERT INTO actions (run_id, job, resource_kind, resource_id, resource_name, \
             project_id, action, rule, reason, dry_run, outcome, created_at, finished_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM runs \
             WHERE runs.id = $1 AND runs.owner = $14 AND runs.status = $15 \
             AND runs.lease_expires_at > {}{} RETURNING id",
            DB::NOW_MS,
            DB::LOCK_ROW
        );
        let _turn = self.turn().await;
        let row: Option<(i64,)> = Self::bind_new_action(sqlx::query_as(&sql), action, now)
        .bind(self.owner.clone())
        .bind(RunStatus::Running.as_str().to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Writes outbox rows inside the caller's transaction (an id written before is left
    /// as it is: a retried write of the same fact writes it once).
    async fn insert_notifications(
        tx: &mut WriteTx<DB>,
        notes: &[NewNotification],
    ) -> StoreResult<()> {
        for n in notes {
            sqlx::query(&format!(
                "INSERT INTO outbox (id, sink, event, job, run_id, payload, status, attempts, \
                 created_at, next_attempt_at, give_up_at) VALUES ($1, $2, $3, $4, $5, $6, \
                 'pending', 0, {now}, {now}, {now} + $7) ON CONFLICT (id) DO NOTHING",
                now = DB::NOW_MS
            ))
            .bind(n.id.clone())
            .bind(n.sink.clone())
            .bind(n.event.clone())
            .bind(n.job.clone())
            .bind(n.run_id)
            .bind(n.payload.clone())
            .bind(n.give_up_after_ms.max(0))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
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

    /// Deletes the rows of `table` matching `condition`, at most `batch` per transaction,
    /// until none is left; returns how many. Each batch is its own write, so the writes
    /// waiting behind a prune (on SQLite, for their turn: lease renewals among them) wait
    /// for one batch, never for a backlog of months.
    async fn delete_in_batches(
        &self,
        table: &str,
        key: &str,
        condition: &str,
        bind: Vec<Bind>,
        batch: i64,
    ) -> StoreResult<u64> {
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN \
             (SELECT {key} FROM {table} WHERE {condition} LIMIT {batch})"
        );
        let mut total = 0;
        loop {
            let mut tx = self.write().await?;
            let mut q = sqlx::query::<DB>(&sql);
            for b in &bind {
                q = match b {
                    Bind::Int(v) => q.bind(*v),
                    Bind::Text(v) => q.bind(v.clone()),
                };
            }
            let done = DB::rows_affected(&q.execute(&mut *tx).await?);
            tx.commit().await?;
            total += done;
            if done < u64::try_from(batch).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
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
        let _lock = match DB::migration_lock_file(&self.pool) {
            Some(path) => Some(lock_file(path).await?),
            None => None,
        };
        self.apply_migrations().await
    }

    fn replica(&self) -> String {
        self.owner.clone()
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_run(&self, run: &NewRun) -> StoreResult<Option<RunId>> {
        let mut tx = self.write().await?;
        let id = self.insert_run(&mut tx, run).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn claim_exclusive(&self, run: &NewRun) -> StoreResult<Claim> {
        let mut tx = self.write().await?;
        if let Some(lock) = DB::LOCK_JOB {
            sqlx::query(lock)
                .bind(run.job.clone())
                .execute(&mut *tx)
                .await?;
        }
        let live: Option<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE job = $1 AND status = 'running' \
             AND lease_expires_at > {} ORDER BY id LIMIT 1",
            DB::NOW_MS
        ))
        .bind(run.job.clone())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = live {
            tx.commit().await?;
            return Ok(Claim::Busy(row.into_record()?));
        }
        let id = self.insert_run(&mut tx, run).await?;
        tx.commit().await?;
        Ok(id.map_or(Claim::TickTaken, Claim::Claimed))
    }

    async fn finish_run(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
    ) -> StoreResult<()> {
        self.finish_run_notifying(id, status, counts, error, &[]).await
    }

    async fn finish_run_notifying(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
        notes: &[NewNotification],
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE runs SET status = $1, finished_at = $2, error = $3, actions_succeeded = $4, \
             actions_failed = $5, actions_skipped = $6, actions_planned = $7, \
             lease_expires_at = NULL WHERE id = $8 AND owner = $9 AND status = 'running'",
        )
        .bind(status.as_str().to_string())
        .bind(to_ms(Utc::now()))
        .bind(error.map(str::to_string))
        .bind(counts.succeeded)
        .bind(counts.failed)
        .bind(counts.skipped)
        .bind(counts.planned)
        .bind(id)
        .bind(self.owner.clone())
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            drop(tx);
            return Err(self.not_updated(id, "run").await);
        }
        Self::insert_notifications(&mut tx, notes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_notifications(
        &self,
        limit: u32,
        lease_ms: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let mut tx = self.write().await?;
        let ids: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= {now} \
             AND (lease_expires_at IS NULL OR lease_expires_at <= {now}) \
             ORDER BY next_attempt_at, id LIMIT $1{skip}",
            now = DB::NOW_MS,
            skip = DB::SKIP_LOCKED
        ))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id,) in ids {
            let row: Option<OutboxRow> = sqlx::query_as(&format!(
                "UPDATE outbox SET owner = $1, lease_expires_at = {now} + $2, \
                 attempts = attempts + 1 WHERE id = $3 AND status = 'pending' \
                 AND (lease_expires_at IS NULL OR lease_expires_at <= {now}) \
                 RETURNING {OUTBOX_COLUMNS}",
                now = DB::NOW_MS
            ))
            .bind(self.owner.clone())
            .bind(lease_ms.max(1))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                out.push(row.into_record()?);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn settle_notification(
        &self,
        id: &str,
        delivery: &Delivery,
    ) -> StoreResult<Option<NotificationStatus>> {
        let mut tx = self.write().await?;
        let status: Option<(String,)> = match delivery {
            Delivery::Delivered => sqlx::query_as(&format!(
                "UPDATE outbox SET status = 'delivered', finished_at = {now}, owner = NULL, \
                 lease_expires_at = NULL, last_error = NULL WHERE id = $1 AND owner = $2 \
                 AND status = 'pending' RETURNING status",
                now = DB::NOW_MS
            ))
            .bind(id.to_string())
            .bind(self.owner.clone())
            .fetch_optional(&mut *tx)
            .await?,
            Delivery::Retry { after_ms, error } => sqlx::query_as(&format!(
                "UPDATE outbox SET status = CASE WHEN {now} + $1 > give_up_at THEN 'failed' \
                 ELSE 'pending' END, finished_at = CASE WHEN {now} + $1 > give_up_at THEN \
                 {now} ELSE NULL END, next_attempt_at = {now} + $1, owner = NULL, \
                 lease_expires_at = NULL, last_error = $2 WHERE id = $3 AND owner = $4 \
                 AND status = 'pending' RETURNING status",
                now = DB::NOW_MS
            ))
            .bind((*after_ms).max(0))
            .bind(error.clone())
            .bind(id.to_string())
            .bind(self.owner.clone())
            .fetch_optional(&mut *tx)
            .await?,
        };
        tx.commit().await?;
        status
            .map(|(s,)| {
                NotificationStatus::parse(&s)
                    .ok_or_else(|| StoreError::Corrupt(format!("outbox.status = {s:?}")))
            })
            .transpose()
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let limit = RunFilter {
            limit: filter.limit,
            ..RunFilter::default()
        }
        .effective_limit();
        sqlx::query_as::<DB, OutboxRow>(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE ($1 IS NULL OR status = $1) \
             AND ($2 IS NULL OR sink = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(filter.status.map(|s| s.as_str().to_string()))
        .bind(filter.sink.clone())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(OutboxRow::into_record)
        .collect()
    }

    async fn notice_marks(&self, job: &str) -> StoreResult<Vec<NoticeMark>> {
        sqlx::query_as::<DB, MarkRow>(&format!(
            "SELECT {MARK_COLUMNS} FROM notice_marks WHERE job = $1 \
             ORDER BY project_id, resource_id, action"
        ))
        .bind(job.to_string())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(MarkRow::into_mark)
        .collect()
    }

    async fn write_notices(
        &self,
        run: RunId,
        job: &str,
        marks: &[NoticeMark],
        dropped: &[NoticeKey],
        notes: &[NewNotification],
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        self.fence(&mut tx, run, true).await?;
        for m in marks {
            sqlx::query(
                "INSERT INTO notice_marks (job, project_id, resource_kind, resource_id, \
                 resource_name, action, rule, reason, marked_at, due_at, run_id) VALUES ($1, \
                 $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (job, project_id, resource_id, action) DO NOTHING",
            )
            .bind(job.to_string())
            .bind(m.project_id.clone())
            .bind(m.resource_kind.clone())
            .bind(m.resource_id.clone())
            .bind(m.resource_name.clone())
            .bind(m.action.clone())
            .bind(m.rule.clone())
            .bind(m.reason.clone())
            .bind(to_ms(m.marked_at))
            .bind(to_ms(m.due_at))
            .bind(m.run_id)
            .execute(&mut *tx)
            .await?;
        }
        for k in dropped {
            sqlx::query(
                "DELETE FROM notice_marks WHERE job = $1 AND project_id = $2 \
                 AND resource_id = $3 AND action = $4",
            )
            .bind(job.to_string())
            .bind(k.project_id.clone())
            .bind(k.resource_id.clone())
            .bind(k.action.clone())
            .execute(&mut *tx)
            .await?;
        }
        Self::insert_notifications(&mut tx, notes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_keep(&self, keep: &Keep) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO keeps (project, branch, until_at, note, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project, branch) DO UPDATE SET \
             until_at = excluded.until_at, note = excluded.note, \
             created_at = excluded.created_at",
        )
        .bind(keep.project.clone())
        .bind(keep.branch.clone())
        .bind(keep.until.map(to_ms))
        .bind(keep.note.clone())
        .bind(to_ms(keep.created_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_keep(&self, project: &str, branch: &str) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM keeps WHERE project = $1 AND branch = $2")
            .bind(project.to_string())
            .bind(branch.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn list_keeps(&self) -> StoreResult<Vec<Keep>> {
        sqlx::query_as::<DB, KeepRow>(
            "SELECT project, branch, until_at, note, created_at FROM keeps \
             ORDER BY project, branch",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(KeepRow::into_keep)
        .collect()
    }

    async fn renew_lease(&self, run: RunId) -> StoreResult<Lease> {
        let mut tx = self.write().await?;
        let row: Option<LeaseRow> = sqlx::query_as(&format!(
            "UPDATE runs SET lease_expires_at = {} + $1 WHERE id = $2 AND owner = $3 \
             AND status = 'running' RETURNING lease_expires_at, cancel_requested",
            DB::NOW_MS
        ))
        .bind(self.lease_ms)
        .bind(run)
        .bind(self.owner.clone())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match row {
            Some(r) => Ok(Lease::Held {
                expires_at: from_ms(r.lease_expires_at, "runs.lease_expires_at")?,
                cancel_requested: r.cancel_requested,
            }),
            None => Ok(Lease::Lost {
                why: match self.not_updated(run, "run").await {
                    StoreError::Fenced { why, .. } => why,
                    e => e.to_string(),
                },
            }),
        }
    }

    async fn take_over_expired(&self) -> StoreResult<Vec<RunRecord>> {
        let mut tx = self.write().await?;
        // Runs written before leases existed have none: their owner is gone with the old
        // version, so they count as expired.
        let rows: Vec<RunRow> = sqlx::query_as(&format!(
            "UPDATE runs SET status = 'interrupted', finished_at = {now}, lease_expires_at = NULL, \
             error = COALESCE(error || '; ', '') || 'interrupted: the lease of ' || \
             COALESCE(owner, 'a replica of an earlier version') || ' expired (the replica \
             died, hung or lost the store); taken over by ' || $1 \
             WHERE status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= {now}) \
             RETURNING {RUN_COLUMNS}",
            now = DB::NOW_MS
        ))
        .bind(self.owner.clone())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(RunRow::into_record).collect()
    }

    async fn request_cancel(&self, job: &str, except: RunId) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE runs SET cancel_requested = $1 WHERE job = $2 AND status = 'running' \
             AND id <> $3",
        )
        .bind(true)
        .bind(job.to_string())
        .bind(except)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done))
    }

    async fn unresolved_actions(&self, limit: u32) -> StoreResult<Vec<ActionRecord>> {
        sqlx::query_as::<DB, ActionRow>(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE outcome = 'pending' AND run_id IN \
             (SELECT id FROM runs WHERE status <> 'running') ORDER BY id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(ActionRow::into_record)
        .collect()
    }

    async fn reconcile_action(
        &self,
        id: ActionId,
        outcome: ActionOutcome,
        detail: &str,
    ) -> StoreResult<()> {
        let now = to_ms(Utc::now());
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE actions SET outcome = $1, detail = $2, finished_at = $3, reconciled_at = $3 \
             WHERE id = $4 AND outcome = 'pending'",
        )
        .bind(outcome.as_str().to_string())
        .bind(detail.to_string())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
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
        // tick), so they count; manual and apply runs do not.
        Ok(self
            .runs_where(
                "job = $1 AND triggered_by NOT IN ('manual', 'apply') \
                 ORDER BY scheduled_for DESC LIMIT 1",
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
        // The common case in one statement: the fence's conditions are the insert's
        // `WHERE`, so the row is written only while this replica holds the run with a live
        // lease, atomically (one statement is one transaction; on PostgreSQL the run row is
        // locked as the fence locks it). One round trip to the engine instead of five: a
        // sweep writes two ledger rows per action, and the round trips were most of its
        // cost. When nothing was written the transaction below finds out why.
        if let Some(id) = self.insert_action_if_held(action, now).await? {
            return Ok(id);
        }
        let mut tx = self.write().await?;
        self.fence(&mut tx, action.run_id, true).await?;
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
        let mut fenced: Vec<RunId> = actions.iter().map(|a| a.run_id).collect();
        fenced.dedup();
        for run in fenced {
            self.fence(&mut tx, run, true).await?;
        }
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
        // As in `begin_action`: the fence (owner and status; no lease check, see below) as
        // the update's condition, one statement; the transaction below only when it wrote
        // nothing, to say why (or to write it, should the run have become ours meanwhile).
        let turn = self.turn().await;
        let done = sqlx::query(&format!(
            "UPDATE actions SET outcome = $1, detail = $2, finished_at = $3 WHERE id = $4 \
             AND EXISTS (SELECT 1 FROM runs WHERE runs.id = actions.run_id AND runs.owner = $5 \
             AND runs.status = $6{})",
            DB::LOCK_ROW
        ))
        .bind(outcome.as_str().to_string())
        .bind(detail.map(str::to_string))
        .bind(to_ms(Utc::now()))
        .bind(id)
        .bind(self.owner.clone())
        .bind(RunStatus::Running.as_str().to_string())
        .execute(&self.pool)
        .await?;
        drop(turn);
        if DB::rows_affected(&done) == 1 {
            return Ok(());
        }
        let mut tx = self.write().await?;
        let run: Option<(i64,)> = sqlx::query_as("SELECT run_id FROM actions WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((run,)) = run else {
            return Err(StoreError::NotFound { what: "action", id });
        };
        // The call was made: its outcome is recorded while the run is ours, even past the
        // lease, as long as nobody has taken the run over (who then reconciles it).
        self.fence(&mut tx, run, false).await?;
        sqlx::query("UPDATE actions SET outcome = $1, detail = $2, finished_at = $3 WHERE id = $4")
            .bind(outcome.as_str().to_string())
            .bind(detail.map(str::to_string))
            .bind(to_ms(Utc::now()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
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
        run: RunId,
        job: &str,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> StoreResult<Option<i64>> {
        let now = to_ms(Utc::now());
        let mut tx = self.write().await?;
        self.fence(&mut tx, run, true).await?;
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

    async fn upsert_branch_consumption(
        &self,
        samples: &[BranchConsumptionSample],
    ) -> StoreResult<u64> {
        if samples.is_empty() {
            return Ok(0);
        }
        let now = to_ms(Utc::now());
        let mut tx = self.write().await?;
        let mut written = 0;
        for s in samples {
            let done = sqlx::query(
                "INSERT INTO branch_consumption_samples (project_id, branch_id, metric, \
                 granularity, timeframe_start, timeframe_end, value, collected_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (project_id, branch_id, metric, granularity, timeframe_start) \
                 DO UPDATE SET timeframe_end = excluded.timeframe_end, value = excluded.value, \
                 collected_at = excluded.collected_at",
            )
            .bind(s.project_id.clone())
            .bind(s.branch_id.clone())
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

    async fn list_branch_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<BranchConsumptionSample>> {
        sqlx::query_as::<DB, BranchSampleRow>(
            "SELECT project_id, branch_id, metric, granularity, timeframe_start, timeframe_end, \
             value FROM branch_consumption_samples WHERE granularity = $1 \
             AND timeframe_start >= $2 ORDER BY timeframe_start, project_id, branch_id, metric",
        )
        .bind(granularity.to_string())
        .bind(to_ms(since))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(BranchSampleRow::into_sample)
        .collect()
    }

    async fn latest_branch_consumption_end(
        &self,
        granularity: &str,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let (ms,): (Option<i64>,) = sqlx::query_as(
            "SELECT MAX(timeframe_end) FROM branch_consumption_samples WHERE granularity = $1",
        )
        .bind(granularity.to_string())
        .fetch_one(&self.pool)
        .await?;
        opt_from_ms(ms, "branch_consumption_samples.timeframe_end")
    }

    async fn prune(&self, before: &PruneBefore) -> StoreResult<Pruned> {
        let (history, consumption) = (to_ms(before.history), to_ms(before.consumption));
        // Running runs have no finished_at and are never pruned. A run's actions go with it
        // (ON DELETE CASCADE), so its batches are smaller.
        let runs = self
            .delete_in_batches(
                "runs",
                "id",
                "finished_at IS NOT NULL AND finished_at < $1",
                vec![Bind::Int(Some(history))],
                PRUNE_BATCH / 20,
            )
            .await?;
        // A finished row was created before it finished: `created_at` narrows the scan to
        // its index.
        let notifications = self
            .delete_in_batches(
                "outbox",
                "id",
                "created_at < $1 AND status <> 'pending' AND finished_at IS NOT NULL \
                 AND finished_at < $1",
                vec![Bind::Int(Some(history))],
                PRUNE_BATCH,
            )
            .await?;
        let mut samples = 0;
        for table in ["consumption_samples", "branch_consumption_samples"] {
            // Per granularity (those `collect_consumption` stores), so that each batch is
            // a range of the (granularity, end) index.
            for granularity in ["hourly", "daily", "monthly"] {
                samples += self
                    .delete_in_batches(
                        table,
                        DB::ROW_ID,
                        "granularity = $2 AND timeframe_end < $1",
                        vec![
                            Bind::Int(Some(consumption)),
                            Bind::Text(Some(granularity.to_string())),
                        ],
                        PRUNE_BATCH,
                    )
                    .await?;
            }
        }
        Ok(Pruned {
            runs,
            notifications,
            samples,
        })
    }
}
}
