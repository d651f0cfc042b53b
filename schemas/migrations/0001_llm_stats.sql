-- Window statistics of LLM calls, written by the pipeline with idempotent upserts.
-- `bucket` is the window start; `window_seconds` its length (llm_stats) or 3600 (hourly).

CREATE TABLE IF NOT EXISTS llm_stats (
    bucket               timestamptz      NOT NULL,
    window_seconds       integer          NOT NULL,
    tenant               text             NOT NULL DEFAULT '',
    service              text             NOT NULL DEFAULT '',
    provider             text             NOT NULL DEFAULT '',
    model                text             NOT NULL DEFAULT '',
    operation            text             NOT NULL DEFAULT '',
    calls                bigint           NOT NULL,
    errors               bigint           NOT NULL,
    input_tokens         bigint           NOT NULL,
    output_tokens        bigint           NOT NULL,
    cached_input_tokens  bigint           NOT NULL,
    reasoning_tokens     bigint           NOT NULL,
    cost_usd             double precision NOT NULL,
    unpriced_calls       bigint           NOT NULL,
    latency_p50_ms       double precision,
    latency_p95_ms       double precision,
    latency_p99_ms       double precision,
    latency_max_ms       double precision,
    ttft_p95_ms          double precision,
    exemplar_trace_ids   text[]           NOT NULL DEFAULT '{}',
    updated_at           timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT llm_stats_key UNIQUE (bucket, window_seconds, tenant, service, provider, model, operation)
);
SELECT create_hypertable('llm_stats', 'bucket', chunk_time_interval => interval '1 day',
                         if_not_exists => true);
CREATE INDEX IF NOT EXISTS llm_stats_tenant_bucket ON llm_stats (tenant, bucket DESC);
CREATE INDEX IF NOT EXISTS llm_stats_model_bucket ON llm_stats (model, bucket DESC);

CREATE TABLE IF NOT EXISTS llm_stats_hourly (LIKE llm_stats INCLUDING DEFAULTS);
ALTER TABLE llm_stats_hourly DROP CONSTRAINT IF EXISTS llm_stats_hourly_key;
ALTER TABLE llm_stats_hourly ADD CONSTRAINT llm_stats_hourly_key
    UNIQUE (bucket, window_seconds, tenant, service, provider, model, operation);
SELECT create_hypertable('llm_stats_hourly', 'bucket', chunk_time_interval => interval '7 days',
                         if_not_exists => true);
CREATE INDEX IF NOT EXISTS llm_stats_hourly_tenant_bucket ON llm_stats_hourly (tenant, bucket DESC);
CREATE INDEX IF NOT EXISTS llm_stats_hourly_model_bucket ON llm_stats_hourly (model, bucket DESC);

-- Counters of how input was accounted for (decoded, skipped, dead-lettered, late).
CREATE TABLE IF NOT EXISTS pipeline_counters (
    name        text        NOT NULL,
    worker      text        NOT NULL,
    value       bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, worker)
);
