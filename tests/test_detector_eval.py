"""The detectors with their default configuration on a labelled synthetic workload.

A smaller run of ``python -m observatory.detectors.evaluate``: one workload
with incidents of every kind, one incident-free, both with the daily cycle,
noise and heavy tails.
"""

import pytest

from observatory.detectors.evaluate import REPORT_KINDS, evaluate


@pytest.fixture(scope="module")
def report():
    return evaluate(seeds=(0,), quiet_seeds=(100,), days=1.5, quiet_days=1.0, incidents_per_kind=16)


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_precision_and_recall_per_kind(report, kind):
    score = report.scores[kind]
    assert score.incidents >= 8, report.table()
    assert score.recall >= 0.9, report.table()
    assert score.precision >= 0.9, report.table()
    assert max(score.delays) <= 2


def test_no_alert_on_the_incident_free_day(report):
    assert {kind: s.quiet_alerts for kind, s in report.scores.items()} == dict.fromkeys(
        REPORT_KINDS, 0
    ), report.table()


# -- the end-to-end evaluation's scoring (flows/evaluate.py), without services ---------


def _trigger(kind, dims, window_end_s, received_s, *, opened_s=None, sequence=1):
    from datetime import UTC, datetime

    from observatory.flows.receiver import Received

    def stamp(s):
        return datetime.fromtimestamp(s, tz=UTC).isoformat().replace("+00:00", "Z")

    details = {"dimensions": dims, "opened_at": stamp(opened_s or window_end_s)}
    details["notification"] = sequence
    payload = {"class": kind, "timestamp": stamp(window_end_s), "custom_details": details}
    body = {"event_action": "trigger", "dedup_key": f"{kind}:{dims}", "payload": payload}
    return Received("/pagerduty", body, received_s)


def test_delay_to_webhook_adds_the_watermark_and_the_measured_dispatch():
    from observatory.flows.evaluate import notification_key, score
    from observatory.flows.traffic import NS, Incident

    t0 = 1_800_000_000
    incident = Incident("latency_degradation", t0 * NS, (t0 + 600) * NS, 4.0, provider="p",
                        model="m")  # fmt: skip
    # Decided at the end of the 2nd window; written to the outbox at wall time 1000.0,
    # received at 1000.4.
    trigger = _trigger("latency_anomaly", {"provider": "p", "model": "m"}, t0 + 120, 1000.4)
    created = {notification_key(trigger): 1000.0}
    result = score([incident], [trigger], 60, watermark_s=10.0, created_at=created)
    r = result["latency_degradation"]
    assert (r.detected, r.precision) == (1, 1.0)
    assert r.decision_windows == [2.0]
    assert abs(r.webhook_windows[0] - (120 + 10 + 0.4) / 60) < 1e-9
    assert r.delay_p95() == r.webhook_windows[0]


def test_a_cost_alert_on_a_token_blowup_is_explained_not_false():
    from observatory.flows.evaluate import score
    from observatory.flows.traffic import NS, Incident

    t0 = 1_800_000_000
    blowup = Incident("token_blowup", t0 * NS, (t0 + 600) * NS, 6.0, "acme", "api", "openai", "m")
    cost = _trigger("cost_spike", {"tenant": "acme", "service": "api", "model": "m"}, t0 + 180, 0.0)
    elsewhere = _trigger("cost_spike", {"tenant": "other"}, t0 + 180, 0.0)
    result = score([blowup], [cost, elsewhere], 60)["cost_spike"]
    assert (result.alerts, result.true_alerts, result.incidents) == (2, 1, 0)
    # The report names the one no incident explains.
    from observatory.flows.evaluate import false_alerts

    assert false_alerts([blowup], [cost, elsewhere], 60) == [
        ("cost_spike", {"tenant": "other"}, float(t0 + 180))
    ]
