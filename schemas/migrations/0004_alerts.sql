-- Alerting: anomaly incidents, the durable notification outbox, and every delivery attempt.
-- An incident is (dedup_key, opened_at): a stable key per kind + subject, and the event time
-- it opened. Its notifications are numbered by `sequence` (open = 1, re-notifications, resolve).

-- One row per incident, upserted by each of its notifications (never moved backwards:
-- a replayed or older notification does not overwrite a newer one).
CREATE TABLE IF NOT EXISTS anomalies (
    detected_at         timestamptz      NOT NULL,  -- event time the incident opened
    dedup_key           text             NOT NULL,
    kind                text             NOT NULL,
    detector            text             NOT NULL DEFAULT '',
    tenant              text             NOT NULL DEFAULT '',
    subject             jsonb            NOT NULL DEFAULT '{}',
    severity            text             NOT NULL
                        CHECK (severity IN ('critical', 'error', 'warning', 'info')),
    status              text             NOT NULL CHECK (status IN ('firing', 'resolved')),
    sequence            integer          NOT NULL,  -- latest notification of the incident
    window_start        timestamptz      NOT NULL,  -- window of the latest notification
    window_end          timestamptz      NOT NULL,
    metric              text             NOT NULL DEFAULT '',
    observed            double precision,
    expected            double precision,
    score               double precision,
    summary             text             NOT NULL DEFAULT '',
    exemplar_trace_ids  text[]           NOT NULL DEFAULT '{}',
    session_id          text             NOT NULL DEFAULT '',
    details             jsonb            NOT NULL DEFAULT '{}',
    last_event_at       timestamptz      NOT NULL,  -- event time of the latest notification
    resolved_at         timestamptz,               -- event time of the resolve
    updated_at          timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT anomalies_key UNIQUE (dedup_key, detected_at)
);
SELECT create_hypertable('anomalies', 'detected_at', chunk_time_interval => interval '7 days',
                         if_not_exists => true);
CREATE INDEX IF NOT EXISTS anomalies_tenant_detected ON anomalies (tenant, detected_at DESC);
CREATE INDEX IF NOT EXISTS anomalies_kind_detected ON anomalies (kind, detected_at DESC);
CREATE INDEX IF NOT EXISTS anomalies_firing ON anomalies (detected_at DESC) WHERE status = 'firing';

-- One row per notification and route. The primary key makes a replayed enqueue a no-op.
-- `payload` is the request body without secrets (routing keys and webhook URLs are
-- added at send time from the environment or a secrets file).
CREATE TABLE IF NOT EXISTS alert_outbox (
    dedup_key        text        NOT NULL,
    opened_at        timestamptz NOT NULL,  -- the incident (= anomalies.detected_at)
    sequence         integer     NOT NULL,
    route            text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('firing', 'resolved')),
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed', 'suppressed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_error       text,
    PRIMARY KEY (dedup_key, opened_at, sequence, route)
);
-- The dispatcher's "due pending rows" scan, and its "is an earlier one still pending" check.
CREATE INDEX IF NOT EXISTS alert_outbox_due ON alert_outbox (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS alert_outbox_pending_order
    ON alert_outbox (dedup_key, route, opened_at, sequence) WHERE status = 'pending';

-- Every delivery attempt (and every suppression / give-up decision), never updated.
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedup_key    text             NOT NULL,
    opened_at    timestamptz      NOT NULL,
    sequence     integer          NOT NULL,
    route        text             NOT NULL,
    attempt      integer          NOT NULL,  -- 1, 2, ...; a suppression records the attempts so far
    status       text             NOT NULL
                 CHECK (status IN ('delivered', 'retry', 'failed', 'suppressed')),
    http_status  integer,
    error        text,
    duration_ms  double precision,
    sent_at      timestamptz      NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS alert_deliveries_notification
    ON alert_deliveries (dedup_key, opened_at, sequence, route);
-- The per-route hourly cap counts recent deliveries.
CREATE INDEX IF NOT EXISTS alert_deliveries_route_sent ON alert_deliveries (route, sent_at)
    WHERE status = 'delivered';
