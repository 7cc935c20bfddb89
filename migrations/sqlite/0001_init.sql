-- neon-steward run store, SQLite flavour.
--
-- Time encoding (shared with every other backend): every instant is an INTEGER holding
-- milliseconds since the Unix epoch, UTC. Integers compare and index the same way in every
-- SQL engine (BIGINT in PostgreSQL), carry no time-zone ambiguity and survive a copy between
-- backends unchanged.
--
-- Booleans are INTEGER 0/1. Enums (status, trigger, outcome) are their snake_case names.

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job             TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    -- The tick this run is for; with `job` it is the claim: whoever inserts first runs it.
    scheduled_for   INTEGER NOT NULL,
    -- `trigger` is an SQL keyword, hence the longer name.
    triggered_by    TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    status          TEXT    NOT NULL,
    dry_run         INTEGER NOT NULL,
    error           TEXT,
    actions_succeeded INTEGER NOT NULL DEFAULT 0,
    actions_failed    INTEGER NOT NULL DEFAULT 0,
    actions_skipped   INTEGER NOT NULL DEFAULT 0,
    actions_planned   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job, scheduled_for)
);

CREATE INDEX runs_job_id ON runs (job, id);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_finished_at ON runs (finished_at);

-- The audit ledger: one row per action on a Neon resource, written before the action is
-- attempted and updated after.
CREATE TABLE actions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    job             TEXT    NOT NULL,
    resource_kind   TEXT    NOT NULL,
    resource_id     TEXT    NOT NULL,
    resource_name   TEXT,
    project_id      TEXT,
    action          TEXT    NOT NULL,
    rule            TEXT,
    reason          TEXT    NOT NULL,
    dry_run         INTEGER NOT NULL,
    outcome         TEXT    NOT NULL,
    detail          TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);

CREATE INDEX actions_run_id ON actions (run_id, id);

CREATE TABLE job_state (
    job         TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (job, key)
);

CREATE TABLE consumption_samples (
    project_id      TEXT    NOT NULL,
    metric          TEXT    NOT NULL,
    granularity     TEXT    NOT NULL,
    timeframe_start INTEGER NOT NULL,
    timeframe_end   INTEGER NOT NULL,
    value           REAL    NOT NULL,
    collected_at    INTEGER NOT NULL,
    PRIMARY KEY (project_id, metric, granularity, timeframe_start)
);

CREATE INDEX consumption_granularity_end ON consumption_samples (granularity, timeframe_end);
