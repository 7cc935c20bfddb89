-- neon-steward run store, PostgreSQL flavour. Same tables, columns and encodings as
-- migrations/sqlite/0001_init.sql: instants are BIGINT milliseconds since the Unix epoch
-- (UTC), enums are their snake_case names. Only the types differ (BIGSERIAL, BOOLEAN,
-- DOUBLE PRECISION).

CREATE TABLE runs (
    id              BIGSERIAL PRIMARY KEY,
    job             TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    scheduled_for   BIGINT  NOT NULL,
    triggered_by    TEXT    NOT NULL,
    started_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    status          TEXT    NOT NULL,
    dry_run         BOOLEAN NOT NULL,
    error           TEXT,
    actions_succeeded BIGINT NOT NULL DEFAULT 0,
    actions_failed    BIGINT NOT NULL DEFAULT 0,
    actions_skipped   BIGINT NOT NULL DEFAULT 0,
    actions_planned   BIGINT NOT NULL DEFAULT 0,
    UNIQUE (job, scheduled_for)
);

CREATE INDEX runs_job_id ON runs (job, id);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_finished_at ON runs (finished_at);

CREATE TABLE actions (
    id              BIGSERIAL PRIMARY KEY,
    run_id          BIGINT  NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    job             TEXT    NOT NULL,
    resource_kind   TEXT    NOT NULL,
    resource_id     TEXT    NOT NULL,
    resource_name   TEXT,
    project_id      TEXT,
    action          TEXT    NOT NULL,
    rule            TEXT,
    reason          TEXT    NOT NULL,
    dry_run         BOOLEAN NOT NULL,
    outcome         TEXT    NOT NULL,
    detail          TEXT,
    created_at      BIGINT  NOT NULL,
    finished_at     BIGINT
);

CREATE INDEX actions_run_id ON actions (run_id, id);

CREATE TABLE job_state (
    job         TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (job, key)
);

CREATE TABLE consumption_samples (
    project_id      TEXT    NOT NULL,
    metric          TEXT    NOT NULL,
    granularity     TEXT    NOT NULL,
    timeframe_start BIGINT  NOT NULL,
    timeframe_end   BIGINT  NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    collected_at    BIGINT  NOT NULL,
    PRIMARY KEY (project_id, metric, granularity, timeframe_start)
);

CREATE INDEX consumption_granularity_end ON consumption_samples (granularity, timeframe_end);
