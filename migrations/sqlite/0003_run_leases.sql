-- Runs are held by a lease: the replica that claimed the run (`owner`: host, pid and a
-- random suffix) renews `lease_expires_at` (store clock, Unix milliseconds) while it runs.
-- Every write the run makes afterwards is conditional on it still holding the run, and any
-- replica takes over a run whose lease has expired. `cancel_requested` is how a replica
-- asks another one's run to stop (`concurrency = "replace"` across replicas).
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_live ON runs (status, lease_expires_at);
CREATE INDEX runs_job_status ON runs (job, status);

-- A pending action resolved after the fact (against Neon, after a crash or a takeover) says
-- so: when, and that it was reconciled rather than observed.
ALTER TABLE actions ADD COLUMN reconciled_at INTEGER;
CREATE INDEX actions_outcome ON actions (outcome);
