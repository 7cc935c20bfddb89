//! What differs between the SQL engines the store runs on, in one place: how a pool is
//! opened (SQLite's pragmas, PostgreSQL's connection options), which migrations apply, how
//! a write transaction begins, and how the driver reports affected rows. Everything else,
//! every statement included, is [`super::sql::SqlStore`]'s and shared.
//!
//! Both engines accept `$n` parameters, `ON CONFLICT ... DO NOTHING/UPDATE` and
//! `RETURNING`, and both schemas use the same encodings (instants as 64-bit Unix
//! milliseconds, enums as their snake_case names), so the statements are written once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Postgres, Sqlite};

use super::{StoreError, StoreResult};

/// An SQL engine the store runs on.
pub trait Dialect: sqlx::Database {
    /// Shown in errors and logs.
    const NAME: &'static str;
    /// The statement that opens a write transaction; `None` is the driver's `BEGIN`.
    const BEGIN_WRITE: Option<&'static str>;
    /// The column that names a row of any table, for deleting in batches a table without
    /// a one-column key.
    const ROW_ID: &'static str;
    /// Whether the engine lets one writer in at a time (the whole database is the lock),
    /// so that a process's writes are better queued in the process than at the engine.
    const ONE_WRITER: bool;
    /// The store's clock as an SQL expression of Unix milliseconds. Leases are compared
    /// with it, never with a replica's own clock, so clock skew between replicas cannot
    /// make a live lease look expired.
    const NOW_MS: &'static str;
    /// Appended to the `SELECT` of a run row that a write depends on, so that a takeover
    /// cannot commit between the check and the write (SQLite's write transactions are
    /// serialised already).
    const LOCK_ROW: &'static str;
    /// A statement serialising the claims of one job (`$1` = the job) within the
    /// transaction, so that two replicas cannot both find no live run and both claim.
    /// Transaction-scoped, so it works through PgBouncer's transaction pooling.
    const LOCK_JOB: Option<&'static str>;
    /// Appended to the `SELECT` choosing outbox rows to claim, so that two replicas
    /// claiming at once never take the same row (SQLite's write transactions are
    /// serialised already).
    const SKIP_LOCKED: &'static str;
    /// The migrations of this engine's schema.
    fn migrator() -> &'static Migrator;
    /// A file to hold locked while migrating, where the engine does not serialise
    /// migrations across processes itself (`None`: it does, or no other process can reach
    /// the database).
    fn migration_lock_file(pool: &Pool<Self>) -> Option<std::path::PathBuf>;
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLite: connections run in WAL mode with `synchronous = NORMAL` (durable across process
/// crashes, at most the last transactions lost on power failure, which the run history
/// tolerates), a busy timeout so a second writer waits instead of failing, and foreign keys
/// on (actions are deleted with their run). Every write of several statements is its own
/// `BEGIN IMMEDIATE` transaction: it takes the write lock up front, so two writers never both
/// read and then collide at upgrade time with `SQLITE_BUSY` mid-transaction (the deferred
/// default can). A write of one statement (the ledger's common case, see `SqlStore::begin_action`)
/// needs none: SQLite takes the write lock when such a statement starts. Writers of one
/// process take turns before reaching SQLite (`ONE_WRITER`, see `SqlStore::turn`).
impl Dialect for Sqlite {
    const NAME: &'static str = "sqlite";
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const ONE_WRITER: bool = true;
    const ROW_ID: &'static str = "rowid";
    const NOW_MS: &'static str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";
    const LOCK_ROW: &'static str = "";
    const LOCK_JOB: Option<&'static str> = None;
    const SKIP_LOCKED: &'static str = "";
    fn migrator() -> &'static Migrator {
        &SQLITE_MIGRATOR
    }
    /// `<database>-migrate.lock` beside a database file. sqlx's SQLite migrator takes no lock,
    /// so two replicas starting at once on a fresh file both applied the same migration
    /// (the second failing with "table runs already exists"). An in-memory database (a
    /// `file:` name) is this process's alone.
    fn migration_lock_file(pool: &Pool<Self>) -> Option<std::path::PathBuf> {
        sqlite_lock_file(&pool.connect_options())
    }
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// PostgreSQL, for several replicas sharing one store: claims are race-free through the
/// unique `(job, scheduled_for)` constraint, and the default READ COMMITTED transactions
/// are all single-statement claims and compare-and-set writes need.
impl Dialect for Postgres {
    const NAME: &'static str = "postgres";
    const BEGIN_WRITE: Option<&'static str> = None;
    const ONE_WRITER: bool = false;
    const ROW_ID: &'static str = "ctid";
    const NOW_MS: &'static str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
    const LOCK_ROW: &'static str = " FOR UPDATE";
    const LOCK_JOB: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    fn migrator() -> &'static Migrator {
        &POSTGRES_MIGRATOR
    }
    /// sqlx's PostgreSQL migrator holds an advisory lock while it migrates.
    fn migration_lock_file(_: &Pool<Self>) -> Option<std::path::PathBuf> {
        None
    }
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// How long an SQLite connection waits for another writer's lock before giving up.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Opens (creating if missing) the SQLite database at `url` (`sqlite:path`,
/// `sqlite://path`, `sqlite::memory:`).
pub async fn open_sqlite(url: &str) -> StoreResult<Pool<Sqlite>> {
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
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let in_memory = is_in_memory(url);
    SqlitePoolOptions::new()
        // One writer at a time anyway; a few connections let reads (HTTP) proceed during a
        // write under WAL. An in-memory database lives as long as its connections, so keep
        // exactly one that never expires.
        .max_connections(if in_memory { 1 } else { 4 })
        .min_connections(if in_memory { 1 } else { 0 })
        .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
        .max_lifetime((!in_memory).then_some(Duration::from_secs(3600)))
        .after_release(|conn, _| Box::pin(keep_after_release(conn)))
        // No ping per acquire: the connection is a thread of this process on a local file,
        // and the ping was one more round trip to it per statement.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open { what, source })
}

/// The lock file of the SQLite database at `url` (see [`Dialect::migration_lock_file`]):
/// held from before its first connection (which switches a fresh file to WAL, a change two
/// processes at once collide on with "database is locked") until it is migrated.
pub fn sqlite_lock_path(url: &str) -> Option<std::path::PathBuf> {
    sqlite_lock_file(&SqliteConnectOptions::from_str(url).ok()?)
}

fn sqlite_lock_file(options: &SqliteConnectOptions) -> Option<std::path::PathBuf> {
    let db = options.get_filename();
    if db.to_string_lossy().starts_with("file:") || db.as_os_str() == ":memory:" {
        return None;
    }
    let mut name = db.as_os_str().to_owned();
    name.push("-migrate.lock");
    Some(name.into())
}

/// Whether a released SQLite connection may go back to the pool: only if it is out of any
/// transaction. When a write fails with `SQLITE_FULL` (disk full) or `SQLITE_IOERR`, SQLite
/// may roll the transaction back by itself; sqlx's rollback of the dropped transaction then
/// fails ("no transaction is active") and the connection keeps counting a transaction that
/// does not exist, so every later `BEGIN IMMEDIATE` on it is refused ("begin_with at
/// non-zero transaction depth") and the store never recovers, even once space is freed.
/// Such a connection is closed instead (a new one is opened on demand). The ping first runs
/// the rollback a dropped transaction queued, so a connection that rolled back cleanly is
/// kept. A connection out of any transaction (the common case) is kept without the ping,
/// which would be one more round trip to its worker thread per statement.
async fn keep_after_release(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    Ok(!conn.is_in_transaction())
}

/// Opens an existing SQLite store read-only: no file is created, nothing is migrated, and a
/// file without neon-steward's tables is [`StoreError::NotInitialised`].
pub async fn open_sqlite_read_only(url: &str) -> StoreResult<Pool<Sqlite>> {
    let what = url.split('?').next().unwrap_or(url).to_string();
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| StoreError::Open {
            what: what.clone(),
            source,
        })?
        .create_if_missing(false)
        .read_only(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    if is_in_memory(url) || !options.get_filename().exists() {
        return Err(StoreError::NotInitialised(format!(
            "no store at {what}: nothing has been recorded yet (the daemon creates it on its \
             first start)"
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
    let (tables,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'runs'")
            .fetch_one(&pool)
            .await?;
    if tables == 0 {
        return Err(StoreError::NotInitialised(format!(
            "{what} is not a neon-steward store (it has no runs table): not initialised"
        )));
    }
    Ok(pool)
}

/// Connects read-only (`default_transaction_read_only`) to an existing PostgreSQL store,
/// without migrating; a database without neon-steward's tables is
/// [`StoreError::NotInitialised`].
pub async fn open_postgres_read_only(url: &str) -> StoreResult<Pool<Postgres>> {
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
            "{what} has no neon-steward tables: not initialised (the daemon creates them on \
             its first start)"
        )));
    }
    Ok(pool)
}

/// Connects to the PostgreSQL database at `url` (`postgres://user@host/db`).
pub async fn open_postgres(url: &str) -> StoreResult<Pool<Postgres>> {
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
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|source| {
            // Name the settings to check when the handshake failed: the server's certificate
            // did not verify against `sslrootcert` (or the system's roots), or the server
            // has no TLS. rustls's refusals reach sqlx as I/O errors naming the certificate.
            let tls =
                matches!(source, sqlx::Error::Tls(_)) || source.to_string().contains("certificate");
            let what = match tls {
                true => format!(
                    "{what} (TLS failed: check sslmode and that sslrootcert is the CA that \
                     signed the server's certificate)"
                ),
                false => what,
            };
            StoreError::Open { what, source }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection as _;

    /// A write that fails with `SQLITE_FULL` (a page limit on the connection stands in for
    /// a full disk) leaves sqlx counting a transaction SQLite has already rolled back; such
    /// a connection must leave the pool instead of refusing every later write.
    #[tokio::test]
    async fn a_connection_left_in_a_phantom_transaction_by_a_full_disk_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/full.db", dir.path().display());
        let pool = open_sqlite(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .execute(&mut *conn)
            .await
            .unwrap();
        {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let e = sqlx::query("INSERT INTO t VALUES (zeroblob(1000000))")
                .execute(&mut *tx)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("full"), "{e}");
            // Dropped uncommitted, as a store method returning the error does.
        }
        // The fault itself: the connection cannot begin a write any more.
        let refused = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(refused, sqlx::Error::InvalidSavePointStatement),
            "{refused}"
        );
        // Released, it is closed rather than kept (bounded wait: the release runs in the
        // background).
        let size = pool.size();
        drop(conn);
        let started = std::time::Instant::now();
        while pool.size() >= size {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the poisoned connection went back to the pool"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("INSERT INTO t VALUES (x'00')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}
