-- The tool dimension: execute_tool rows are kept per tool name ('' for every other
-- operation), so tool error rates can be queried and detected per (service, tool).
-- Existing rows get tool = ''; they were unique on the old key, so they are on the new one.

ALTER TABLE llm_stats ADD COLUMN IF NOT EXISTS tool text NOT NULL DEFAULT '';
ALTER TABLE llm_stats DROP CONSTRAINT IF EXISTS llm_stats_key;
ALTER TABLE llm_stats ADD CONSTRAINT llm_stats_key
    UNIQUE (bucket, window_seconds, tenant, service, provider, model, operation, tool);
CREATE INDEX IF NOT EXISTS llm_stats_tool_bucket ON llm_stats (tool, bucket DESC)
    WHERE tool <> '';

ALTER TABLE llm_stats_hourly ADD COLUMN IF NOT EXISTS tool text NOT NULL DEFAULT '';
ALTER TABLE llm_stats_hourly DROP CONSTRAINT IF EXISTS llm_stats_hourly_key;
ALTER TABLE llm_stats_hourly ADD CONSTRAINT llm_stats_hourly_key
    UNIQUE (bucket, window_seconds, tenant, service, provider, model, operation, tool);
CREATE INDEX IF NOT EXISTS llm_stats_hourly_tool_bucket ON llm_stats_hourly (tool, bucket DESC)
    WHERE tool <> '';

-- Tool calls and their error rate per hour, service and tool (from the hourly table).
CREATE OR REPLACE VIEW tool_errors_hourly AS
SELECT bucket AS hour, tenant, service, tool,
       sum(calls)  AS calls,
       sum(errors) AS errors,
       sum(errors)::double precision / nullif(sum(calls), 0) AS error_rate,
       max(latency_p95_ms) AS latency_p95_ms_worst_series
  FROM llm_stats_hourly
 WHERE operation = 'execute_tool'
 GROUP BY 1, 2, 3, 4;
