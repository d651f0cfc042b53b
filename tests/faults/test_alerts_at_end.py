"""Alerts still queued when a `--stop-at-end` run ends are delivered by its last pass.

Found by the fault suite: the crash and leak-search scenarios sometimes ended with
exit code 1 and "Cannot send a request, as the client has been closed". The
dispatcher thread closes its HTTP clients when it stops (`run_forever`'s
`finally: close()`), and `flows/cli.py`'s `_Dispatcher.finish()` then makes its
last pass with them. It happens whenever a notification is still queued at the
end — raised by the last windows, or waiting for a retry — so this test queues
one just before the end.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
from harness import alert_routes

from observatory.flows.cli import _Dispatcher
from observatory.flows.receiver import AlertReceiver
from observatory.operators.alerting import AlertLifecycle, LifecyclePolicy
from observatory.schemas.alerts import Observation
from observatory.sinks.alerts import AlertDispatcher, AlertOutbox, AlertsConfig


def one_alert(routes: tuple[str, ...]):
    """The opening alert of one incident, from the real lifecycle."""
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    (alert,) = AlertLifecycle(LifecyclePolicy()).observe(
        Observation(
            kind="cost_spike",
            subject=(("service", "chat"), ("model", "gpt-4o")),
            tenant="acme",
            detector="cost_robust_z",
            window_start=start,
            window_end=start + timedelta(minutes=1),
            anomalous=True,
            score=9.0,
            observed=12.4,
            expected=2.1,
            severity="critical",
            metric="cost_usd",
        )
    )
    return replace(alert, routes=routes)


def test_what_is_queued_at_the_end_is_delivered_by_the_last_pass(database_url, tmp_path):
    receiver = AlertReceiver().start()
    try:
        routes = alert_routes(receiver.url, tmp_path)
        # A long poll: the thread's first pass finds nothing, and no second one comes.
        config = AlertsConfig.model_validate({**routes.config, "poll_interval_seconds": 60})
        running = _Dispatcher(AlertDispatcher.from_config(database_url, config, env=routes.env))
        time.sleep(0.5)
        with psycopg.connect(database_url, autocommit=True) as conn:
            queued = AlertOutbox(config).enqueue(conn, [one_alert(("slack", "pager", "hook"))])
        assert queued == 3
        running.finish()
    finally:
        receiver.stop()
    assert sorted(m.path.split("/")[1].split("?")[0] for m in receiver.messages) == [
        "pagerduty",
        "slack",
        "webhook",
    ]
