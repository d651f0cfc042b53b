-- Views for the everyday questions. Day- and hour-grained views read the hourly
-- table, so a 30-day dashboard scans ~720 rows per series instead of ~43,000.

CREATE OR REPLACE VIEW spend_by_tenant_model_daily AS
SELECT time_bucket(interval '1 day', bucket) AS day,
       tenant, provider, model,
       sum(calls)          AS calls,
       sum(errors)         AS errors,
       sum(input_tokens)   AS input_tokens,
       sum(output_tokens)  AS output_tokens,
       sum(cost_usd)       AS cost_usd,
       sum(unpriced_calls) AS unpriced_calls
  FROM llm_stats_hourly
 GROUP BY 1, 2, 3, 4;

-- Hourly p95 comes from the merged hourly sketch, not an average of minute p95s.
CREATE OR REPLACE VIEW latency_by_model_hourly AS
SELECT bucket AS hour, provider, model, operation,
       sum(calls) AS calls,
       max(latency_p95_ms) AS latency_p95_ms_worst_series,
       sum(latency_p95_ms * calls) / nullif(sum(calls), 0) AS latency_p95_ms_call_weighted,
       max(latency_max_ms) AS latency_max_ms
  FROM llm_stats_hourly
 WHERE model <> ''
 GROUP BY 1, 2, 3, 4;

CREATE OR REPLACE VIEW top_sessions_by_cost AS
SELECT tenant, session_id, agent, service, started_at, last_seen,
       llm_calls, tool_calls, longest_tool_run, cost_usd, errors, status, trace_id
  FROM agent_sessions
 ORDER BY cost_usd DESC;

CREATE OR REPLACE VIEW unpriced_models AS
SELECT provider, model,
       sum(unpriced_calls) AS unpriced_calls,
       min(bucket) AS first_seen,
       max(bucket) AS last_seen
  FROM llm_stats_hourly
 WHERE unpriced_calls > 0
 GROUP BY provider, model
 ORDER BY unpriced_calls DESC;
