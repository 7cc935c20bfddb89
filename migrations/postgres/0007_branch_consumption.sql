-- Per-branch consumption (`/consumption_history/v2/branches`), collected by a
-- `collect_consumption` job with `per_branch = true`. A table of its own: a project's
-- samples are its whole consumption, so branch samples kept beside them would be counted twice
-- by anything that sums a project's rows.
CREATE TABLE branch_consumption_samples (
    project_id      TEXT    NOT NULL,
    branch_id       TEXT    NOT NULL,
    metric          TEXT    NOT NULL,
    granularity     TEXT    NOT NULL,
    timeframe_start BIGINT  NOT NULL,
    timeframe_end   BIGINT  NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    collected_at    BIGINT  NOT NULL,
    PRIMARY KEY (project_id, branch_id, metric, granularity, timeframe_start)
);

CREATE INDEX branch_consumption_granularity_start ON branch_consumption_samples (granularity, timeframe_start);
CREATE INDEX branch_consumption_granularity_end ON branch_consumption_samples (granularity, timeframe_end);
