-- The export reads the newest period of a granularity by `timeframe_start`: index it, so a
-- collection's export does not scan every stored sample of its granularity.
CREATE INDEX consumption_granularity_start ON consumption_samples (granularity, timeframe_start);
