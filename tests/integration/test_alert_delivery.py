"""Alert delivery end to end: outbox in the real TimescaleDB, a real local HTTP server
(scripted per request) standing in for Slack, PagerDuty and an Alertmanager webhook.

Backoffs are shortened through the configuration, so the whole module runs in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from observatory.operators.alerting import AlertLifecycle, LifecyclePolicy
from observatory.schemas.alerts import Alert, Observation
from observatory.sinks.alerts import (
    AlertConfigError,
    AlertDispatcher,
    AlertOutbox,
    AlertsConfig,
    build_channels,
)

#: Tables this module owns; it empties them itself (conftest's `db` does the others).
ALERT_TABLES = ("anomalies", "alert_outbox", "alert_deliveries")

SLACK_TOKEN = "xSLACKx0secret0token0x"
PD_KEY = "pdROUTINGkey0123456789abcdef0123"
HOOK_TOKEN = "hookTOKEN0s3cr3t"
SECRETS = (SLACK_TOKEN, PD_KEY, HOOK_TOKEN)
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


# --- a scripted HTTP server ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    #: Seconds to wait before answering (a hang, when above the client's timeout).
    delay: float = 0.0
    #: Answer with the request's path and body (a careless error page quoting the secret).
    echo: bool = False


@dataclass
class Received:
    at: float
    path: str
    body: dict


class ScriptedServer:
    """ThreadingHTTPServer on 127.0.0.1; answers POSTs with the scripted replies in
    order, then 200 "ok"."""

    def __init__(self, port: int = 0):
        self.replies: deque[Reply] = deque()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.received.append(Received(time.monotonic(), self.path, json.loads(raw)))
                    reply = server.replies.popleft() if server.replies else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body
                if reply.echo:
                    body = f"error for {self.path}: {raw.decode()}".encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def conn(db):
    db.execute("TRUNCATE " + ", ".join(ALERT_TABLES))
    return db


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.close()


@pytest.fixture
def dispatchers():
    made: list[AlertDispatcher] = []
    yield made
    for d in made:
        d.close()


def make_config(port: int, secrets_file, **route_options) -> AlertsConfig:
    """Three routes on one local server; short timeouts and backoffs."""
    base = f"http://127.0.0.1:{port}"
    secrets_file.write_text(json.dumps({"hook_url": f"{base}/alertmanager?token={HOOK_TOKEN}"}))
    common = {"timeout_seconds": 0.5, "max_attempts": 5, "max_per_hour": 0, **route_options}
    return AlertsConfig.model_validate(
        {
            "routes": {
                "slack": {"type": "slack", "url_env": "TEST_SLACK_URL", **common},
                "pager": {
                    "type": "pagerduty",
                    "routing_key_env": "TEST_PD_KEY",
                    "url": f"{base}/v2/enqueue",
                    **common,
                },
                "hook": {
                    "type": "webhook",
                    "secrets_file": str(secrets_file),
                    "secret_key": "hook_url",
                    **common,
                },
            },
            "trace_url_template": "https://jaeger.example/trace/{trace_id}",
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.2,
            "poll_interval_seconds": 0.05,
        }
    )


def secret_env(port: int) -> dict[str, str]:
    return {
        "TEST_SLACK_URL": f"http://127.0.0.1:{port}/services/T0000/B0000/{SLACK_TOKEN}",
        "TEST_PD_KEY": PD_KEY,
    }


@dataclass
class Setup:
    config: AlertsConfig
    env: dict[str, str]
    database_url: str
    made: list[AlertDispatcher]

    @property
    def outbox(self) -> AlertOutbox:
        return AlertOutbox(self.config)

    def dispatcher(self, **options) -> AlertDispatcher:
        d = AlertDispatcher.from_config(self.database_url, self.config, env=self.env, **options)
        self.made.append(d)
        return d


@pytest.fixture
def setup(server, tmp_path, database_url, dispatchers) -> Callable[..., Setup]:
    def make(port: int | None = None, **route_options) -> Setup:
        port = port or server.port
        config = make_config(port, tmp_path / "secrets.json", **route_options)
        return Setup(config, secret_env(port), database_url, dispatchers)

    return make


def incident(model: str = "gpt-4o", *, routes=("slack",), resolve: bool = True) -> list[Alert]:
    """The alerts of one incident (open, and resolve), from the real lifecycle."""
    life = AlertLifecycle(LifecyclePolicy(resolve_after_windows=2, renotify_interval_s=0))
    alerts: list[Alert] = []
    for minute, bad in enumerate([1, 0, 0] if resolve else [1]):
        start = T0 + timedelta(minutes=minute)
        alerts += life.observe(
            Observation(
                kind="cost_spike",
                subject=(("service", "chat"), ("model", model)),
                tenant="acme",
                detector="cost_robust_z",
                window_start=start,
                window_end=start + timedelta(minutes=1),
                anomalous=bool(bad),
                score=9.0 if bad else 0.3,
                observed=12.4 if bad else 2.0,
                expected=2.1,
                severity="critical",
                metric="cost_usd",
                exemplar_trace_ids=("4bf92f3577b34da6a3ce929d0e0e4736",),
                session_id="sess-1",
            )
        )
    return [replace(a, routes=routes) for a in alerts]


def outbox_rows(conn) -> list[tuple]:
    return conn.execute(
        "SELECT route, sequence, state, status, attempts, last_error FROM alert_outbox"
        " ORDER BY dedup_key, opened_at, sequence, route"
    ).fetchall()


def delivery_rows(conn) -> list[tuple]:
    return conn.execute(
        "SELECT route, sequence, attempt, status, http_status, error FROM alert_deliveries"
        " ORDER BY id"
    ).fetchall()


def pending(conn) -> int:
    return conn.execute("SELECT count(*) FROM alert_outbox WHERE status = 'pending'").fetchone()[0]


def drain(dispatcher: AlertDispatcher, conn, timeout: float = 15.0) -> None:
    """Run the dispatcher until nothing is pending."""
    deadline = time.monotonic() + timeout
    while pending(conn):
        assert time.monotonic() < deadline, f"still pending: {outbox_rows(conn)}"
        dispatcher.run_once()
        time.sleep(0.01)


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- retries -------------------------------------------------------------------------------------


def test_500_then_200_is_delivered_once_with_both_attempts_recorded(conn, server, setup):
    s = setup()
    server.script(Reply(500, body=b"rollup_error"))
    assert s.outbox.enqueue(conn, incident(resolve=False)) == 1
    d = s.dispatcher()
    drain(d, conn)
    assert len(server.received) == 2
    assert server.received[0].body == server.received[1].body
    assert server.received[0].path == f"/services/T0000/B0000/{SLACK_TOKEN}"
    assert server.received[0].body["text"].startswith("[FIRING] cost_spike tenant=acme")
    assert outbox_rows(conn) == [("slack", 1, "firing", "delivered", 2, None)]
    assert delivery_rows(conn) == [
        ("slack", 1, 1, "retry", 500, "HTTP 500: rollup_error"),
        ("slack", 1, 2, "delivered", 200, None),
    ]
    assert d.run_once().processed == 0 and len(server.received) == 2  # never sent twice


def test_429_retry_after_is_waited_for(conn, server, setup):
    s = setup()
    server.script(Reply(429, headers={"Retry-After": "1"}, body=b"rate_limited"))
    s.outbox.enqueue(conn, incident(resolve=False))
    drain(s.dispatcher(), conn)
    first, second = server.received
    assert second.at - first.at >= 1.0
    assert [r[3:5] for r in delivery_rows(conn)] == [("retry", 429), ("delivered", 200)]


def test_a_request_hanging_past_the_timeout_is_retried(conn, server, setup):
    s = setup(timeout_seconds=0.3)
    server.script(Reply(200, delay=1.0))
    s.outbox.enqueue(conn, incident(resolve=False))
    drain(s.dispatcher(), conn)
    assert len(server.received) == 2
    (_, _, _, status, http_status, error), delivered = delivery_rows(conn)
    assert (status, http_status) == ("retry", None)
    assert error == "ReadTimeout: no response within 0.3s"
    assert delivered[3] == "delivered"


def test_server_down_for_a_while_then_up(conn, tmp_path, setup):
    port = free_port()
    s = setup(port=port, max_attempts=50)
    s.outbox.enqueue(conn, incident(resolve=False))
    stop = threading.Event()
    thread = s.dispatcher().start(stop)
    try:
        wait_for(lambda: len(delivery_rows(conn)) >= 3)  # refused, refused, refused...
        assert pending(conn) == 1
        srv = ScriptedServer(port)
        try:
            wait_for(lambda: pending(conn) == 0)
            assert len(srv.received) == 1
        finally:
            srv.close()
    finally:
        stop.set()
        thread.join(5)
    rows = delivery_rows(conn)
    assert all(r[3] == "retry" and r[5].startswith("ConnectError") for r in rows[:-1])
    assert rows[-1][3] == "delivered" and outbox_rows(conn)[0][3] == "delivered"


def test_400_fails_at_once_and_its_resolve_is_suppressed(conn, server, setup):
    s = setup()
    server.script(Reply(400, body=b"invalid_payload"))
    s.outbox.enqueue(conn, incident())
    drain(s.dispatcher(), conn)
    assert len(server.received) == 1
    assert outbox_rows(conn) == [
        ("slack", 1, "firing", "failed", 1, "HTTP 400: invalid_payload"),
        (
            "slack",
            2,
            "resolved",
            "suppressed",
            0,
            "no firing notification of this incident was delivered here",
        ),
    ]
    assert [r[2:5] for r in delivery_rows(conn)] == [(1, "failed", 400), (0, "suppressed", None)]


def test_gives_up_after_max_attempts(conn, server, setup):
    s = setup(max_attempts=3)
    server.script(*[Reply(502, body=b"bad gateway")] * 5)
    s.outbox.enqueue(conn, incident(resolve=False))
    drain(s.dispatcher(), conn)
    assert len(server.received) == 3
    assert outbox_rows(conn) == [
        ("slack", 1, "firing", "failed", 3, "gave up after 3 attempts: HTTP 502: bad gateway")
    ]
    assert [r[3] for r in delivery_rows(conn)] == ["retry", "retry", "failed"]


# --- exactly once --------------------------------------------------------------------------------


def test_crash_between_claim_and_send_then_another_dispatcher_delivers_once(conn, server, setup):
    s = setup()
    s.outbox.enqueue(conn, incident(resolve=False))

    def crash(row):
        raise RuntimeError("dispatcher died after claiming")

    with pytest.raises(RuntimeError):
        s.dispatcher(before_send=crash).run_once()
    assert server.received == [] and delivery_rows(conn) == []
    assert outbox_rows(conn) == [("slack", 1, "firing", "pending", 0, None)]
    d = s.dispatcher()
    drain(d, conn)
    d.run_once()
    assert len(server.received) == 1
    assert [r[3] for r in delivery_rows(conn)] == ["delivered"]


CHILD = """
import json, os, sys
from observatory.sinks.alerts import AlertDispatcher, AlertsConfig
args = json.loads(sys.argv[1])
config = AlertsConfig.model_validate(args["config"])
dispatcher = AlertDispatcher.from_config(
    args["database_url"], config, before_send=lambda row: os._exit(17)
)
dispatcher.run_once()
"""


def test_a_killed_dispatcher_process_loses_nothing(conn, server, setup):
    s = setup()
    s.outbox.enqueue(conn, incident(resolve=False))
    args = {"config": s.config.model_dump(mode="json"), "database_url": s.database_url}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        env={**os.environ, **s.env},
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == 17, child.stderr.decode()
    assert server.received == []
    assert outbox_rows(conn) == [("slack", 1, "firing", "pending", 0, None)]
    drain(s.dispatcher(), conn)  # the dead process's lock went with its connection
    assert len(server.received) == 1


def test_a_replayed_enqueue_is_delivered_once_and_in_order(conn, server, setup):
    s = setup()
    alerts = incident(routes=("slack", "hook"))
    assert s.outbox.enqueue(conn, alerts) == 4
    assert s.outbox.enqueue(conn, alerts) == 0  # the flow replayed after a crash
    d = s.dispatcher()
    drain(d, conn)
    assert s.outbox.enqueue(conn, alerts) == 0  # replayed again, after delivery
    d.run_once()
    assert len(server.received) == 4
    hook = [r.body for r in server.received if r.path.startswith("/alertmanager")]
    assert [h["status"] for h in hook] == ["firing", "resolved"]
    assert hook[0]["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert hook[1]["alerts"][0]["endsAt"] == "2026-03-01T10:03:00Z"
    assert {r[3] for r in outbox_rows(conn)} == {"delivered"}
    assert len(delivery_rows(conn)) == 4


def test_resolve_waits_for_its_open_while_the_open_is_retried(conn, server, setup):
    s = setup()
    server.script(Reply(500))
    s.outbox.enqueue(conn, incident(routes=("pager",)))
    drain(s.dispatcher(), conn)
    bodies = [r.body for r in server.received]
    assert [b["event_action"] for b in bodies] == ["trigger", "trigger", "resolve"]
    assert all(b["routing_key"] == PD_KEY for b in bodies)  # sent to PagerDuty, of course...
    assert bodies[2] == {
        "routing_key": PD_KEY,
        "event_action": "resolve",
        "dedup_key": "cost_spike:model=gpt-4o,service=chat,tenant=acme",
    }
    stored = conn.execute("SELECT payload::text FROM alert_outbox").fetchall()
    assert all(PD_KEY not in text for (text,) in stored)  # ...but never stored


def test_concurrent_dispatchers_send_each_notification_once(conn, server, setup):
    s = setup()
    server.script(*[Reply(200, delay=0.03)] * 30)
    for i in range(24):
        s.outbox.enqueue(conn, incident(f"model-{i}", resolve=False))
    workers = [s.dispatcher() for _ in range(3)]

    def work(d: AlertDispatcher) -> None:
        while d.run_once().processed:
            pass

    threads = [threading.Thread(target=work, args=(d,)) for d in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert pending(conn) == 0
    texts = [r.body["text"] for r in server.received]
    assert len(texts) == len(set(texts)) == 24


# --- caps and route options ----------------------------------------------------------------------


def test_hourly_cap_suppresses_and_records_but_never_holds_back_a_resolve(conn, server, setup):
    s = setup(max_per_hour=2)
    incidents = {m: incident(m) for m in ("a", "b", "c")}
    s.outbox.enqueue(conn, [alerts[0] for alerts in incidents.values()])  # three opens
    d = s.dispatcher()
    drain(d, conn)
    assert len(server.received) == 2
    rows = conn.execute(
        "SELECT dedup_key, status, last_error FROM alert_outbox ORDER BY dedup_key"
    ).fetchall()
    assert sorted(r[1] for r in rows) == ["delivered", "delivered", "suppressed"]
    (suppressed,) = [r for r in rows if r[1] == "suppressed"]
    assert suppressed[2] == "hourly cap of 2 notifications reached"
    assert ("slack", 1, 0, "suppressed", None, suppressed[2]) in delivery_rows(conn)
    # The resolves: the delivered incidents' go out although the cap is reached;
    # the suppressed one's is suppressed (there is nothing to resolve at the receiver).
    s.outbox.enqueue(conn, [alerts[1] for alerts in incidents.values()])
    drain(d, conn)
    assert len(server.received) == 4
    statuses = conn.execute(
        "SELECT dedup_key, status FROM alert_outbox WHERE sequence = 2 ORDER BY dedup_key"
    ).fetchall()
    assert dict(statuses)[suppressed[0]] == "suppressed"
    assert sorted(dict(statuses).values()) == ["delivered", "delivered", "suppressed"]


def test_stale_opens_expire_but_a_known_incident_is_always_resolved(conn, server, setup):
    s = setup(max_age_seconds=0.5)
    (open_a, resolve_a), (open_b, _) = incident("a"), incident("b")
    s.outbox.enqueue(conn, [open_a])
    d = s.dispatcher()
    drain(d, conn)
    s.outbox.enqueue(conn, [resolve_a, open_b])
    time.sleep(0.7)  # the dispatcher was down for longer than max_age
    drain(d, conn)
    assert [r.body["text"][:12] for r in server.received] == ["[FIRING] cos", "[RESOLVED] R"]
    rows = conn.execute(
        "SELECT dedup_key, sequence, status, last_error FROM alert_outbox ORDER BY 1, 2"
    ).fetchall()
    assert rows[2] == (
        open_b.dedup_key,
        1,
        "failed",
        "expired: not delivered within max_age_seconds=0.5",
    )
    assert [r[2] for r in rows[:2]] == ["delivered", "delivered"]


def test_send_resolved_false_suppresses_resolves(conn, server, setup):
    s = setup(send_resolved=False)
    s.outbox.enqueue(conn, incident())
    drain(s.dispatcher(), conn)
    assert len(server.received) == 1
    assert outbox_rows(conn)[1][3:] == ("suppressed", 0, "send_resolved is off for this route")


def test_anomalies_rows_follow_the_incident_and_never_go_back(conn, setup):
    s = setup()
    opened, resolved = incident()
    s.outbox.enqueue(conn, [opened])
    s.outbox.enqueue(conn, [resolved])
    s.outbox.enqueue(conn, [opened])  # an older notification replayed late
    rows = conn.execute(
        "SELECT detected_at, dedup_key, status, sequence, severity, subject, observed,"
        " expected, score, resolved_at, details->>'resolve_reason', exemplar_trace_ids"
        " FROM anomalies"
    ).fetchall()
    assert rows == [
        (
            opened.opened_at,
            opened.dedup_key,
            "resolved",
            2,
            "critical",
            {"service": "chat", "model": "gpt-4o"},
            2.0,
            2.1,
            0.3,
            resolved.detected_at,
            "normal",
            ["4bf92f3577b34da6a3ce929d0e0e4736"],
        )
    ]


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_never_reach_the_database_logs_or_errors(conn, server, setup, caplog):
    caplog.set_level(logging.DEBUG)
    s = setup()
    # Error pages quoting the request (URL path and body: the Slack token, the routing key).
    server.script(Reply(500, echo=True), Reply(500, echo=True), Reply(400, echo=True))
    s.outbox.enqueue(conn, incident(routes=("slack", "pager", "hook")))
    d = s.dispatcher()
    texts: list[str] = [repr(d), repr(d.channels)]

    def boom(row):
        raise RuntimeError(f"unexpected failure posting to {s.env['TEST_SLACK_URL']}")

    stop = threading.Event()
    crashing = s.dispatcher(before_send=boom)
    thread = crashing.start(stop)  # run_forever logs the error (scrubbed) and goes on
    time.sleep(0.3)
    stop.set()
    thread.join(5)
    drain(d, conn)
    for table in ALERT_TABLES:
        query = f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t"
        texts.append(conn.execute(query).fetchone()[0])
    assert len(server.received) >= 6  # every route got its requests, with the secrets
    assert any(r.body.get("routing_key") == PD_KEY for r in server.received)
    errors = [r[5] for r in delivery_rows(conn) if r[5]]
    assert errors and any("error for" in e for e in errors)  # the echoes were recorded...
    try:
        build_channels(s.config, env={})
    except AlertConfigError as exc:
        texts.append(str(exc))
    texts.append(caplog.text)
    assert "RuntimeError: unexpected failure posting to ***" in caplog.text
    for text in texts:
        for secret in SECRETS:
            assert secret not in text  # ...scrubbed
