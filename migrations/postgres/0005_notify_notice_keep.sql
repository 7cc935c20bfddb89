-- Notifications, notice periods and keeps (issue 13).
--
-- `outbox`: one row per notification per sink, written in the same transaction as the fact
-- it reports (a run's end, a notice). `id` is the Standard Webhooks `webhook-id`: the same
-- on every retry, so a receiver can drop duplicates. A replica claims due rows with a lease
-- (`owner`, `lease_expires_at`, store clock), as it claims runs; a row is `pending` until it
-- is `delivered`, or `failed` once `give_up_at` (store clock) has passed.
CREATE TABLE outbox (
    id              TEXT    PRIMARY KEY,
    sink            TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    job             TEXT,
    run_id          BIGINT ,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    give_up_at      BIGINT  NOT NULL,
    owner           TEXT,
    lease_expires_at BIGINT ,
    last_error      TEXT,
    finished_at     BIGINT 
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_created ON outbox (created_at);

-- A resource a job found due and announced: it may be acted on from `due_at` (the run's
-- clock), at a run that still finds it due. Dropped when acted on or no longer due.
CREATE TABLE notice_marks (
    job             TEXT    NOT NULL,
    project_id      TEXT    NOT NULL,
    resource_kind   TEXT    NOT NULL,
    resource_id     TEXT    NOT NULL,
    resource_name   TEXT,
    action          TEXT    NOT NULL,
    rule            TEXT,
    reason          TEXT    NOT NULL,
    marked_at       BIGINT  NOT NULL,
    due_at          BIGINT  NOT NULL,
    run_id          BIGINT ,
    PRIMARY KEY (job, project_id, resource_id, action)
);

-- `neon-steward keep <project>/<branch>`: an exclusion from every destructive action, until
-- `until_at` (absent: until removed). `project` and `branch` are as the operator gave them
-- (id or name).
CREATE TABLE keeps (
    project         TEXT    NOT NULL,
    branch          TEXT    NOT NULL,
    until_at        BIGINT ,
    note            TEXT,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (project, branch)
);
