-- A run started by `apply plan.json` (`triggered_by = 'apply'`) names the saved plan it
-- carried out; NULL for every other run.
ALTER TABLE runs ADD COLUMN plan_id TEXT;
