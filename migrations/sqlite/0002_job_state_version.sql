-- Job state records are versioned: a write names the version it read and succeeds only if
-- the record is still at that version (compare-and-set), so two writers (two runs of one job
-- on different replicas, or a run and an operator) cannot silently lose each other's update.
ALTER TABLE job_state ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
