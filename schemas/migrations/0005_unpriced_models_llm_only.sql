-- Tool and agent spans have no model and no cost: they are not "unpriced models".
CREATE OR REPLACE VIEW unpriced_models AS
SELECT provider, model,
       sum(unpriced_calls) AS unpriced_calls,
       min(bucket) AS first_seen,
       max(bucket) AS last_seen
  FROM llm_stats_hourly
 WHERE unpriced_calls > 0 AND model <> ''
 GROUP BY provider, model
 ORDER BY unpriced_calls DESC;
