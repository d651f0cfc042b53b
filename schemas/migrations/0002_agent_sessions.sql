-- Agent sessions (per conversation id, else per trace), upserted while live and when ended.
-- `started_at` is the session's first span as first written; it never changes, so it
-- can be part of the row key of a hypertable. `first_seen` may move earlier with late data.

CREATE TABLE IF NOT EXISTS agent_sessions (
    tenant            text             NOT NULL,
    session_id        text             NOT NULL,
    started_at        timestamptz      NOT NULL,
    service           text             NOT NULL DEFAULT '',
    agent             text             NOT NULL DEFAULT '',
    first_seen        timestamptz      NOT NULL,
    last_seen         timestamptz      NOT NULL,
    llm_calls         bigint           NOT NULL,
    tool_calls        bigint           NOT NULL,
    distinct_tools    integer          NOT NULL,
    longest_tool_run  integer          NOT NULL,
    longest_run_tool  text             NOT NULL DEFAULT '',
    input_tokens      bigint           NOT NULL,
    output_tokens     bigint           NOT NULL,
    cost_usd          double precision NOT NULL,
    unpriced_calls    bigint           NOT NULL,
    errors            bigint           NOT NULL,
    status            text             NOT NULL CHECK (status IN ('active', 'ended')),
    trace_id          text             NOT NULL DEFAULT '',
    updated_at        timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT agent_sessions_key UNIQUE (tenant, session_id, started_at)
);
SELECT create_hypertable('agent_sessions', 'started_at', chunk_time_interval => interval '1 day',
                         if_not_exists => true);
CREATE INDEX IF NOT EXISTS agent_sessions_tenant_started ON agent_sessions (tenant, started_at DESC);
CREATE INDEX IF NOT EXISTS agent_sessions_agent_started ON agent_sessions (agent, started_at DESC);
CREATE INDEX IF NOT EXISTS agent_sessions_cost ON agent_sessions (cost_usd DESC, started_at DESC);
