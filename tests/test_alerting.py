"""AlertLifecycle: open, dedup, re-notify, resolve, flap suppression, no data,
determinism under replay and resume, bounded state."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observatory.operators.alerting import AlertLifecycle, LifecyclePolicy
from observatory.schemas.alerts import Alert, Observation, RouteRule

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
RULES = (RouteRule("slack"), RouteRule("pager", min_severity="critical"))


def obs(
    minute: int,
    anomalous: bool | int,
    *,
    model: str = "gpt-4o",
    severity: str = "warning",
    observed: float | None = None,
) -> Observation:
    start = T0 + minute * MIN
    return Observation(
        kind="cost_spike",
        subject=(("service", "chat"), ("model", model)),
        tenant="acme",
        detector="cost_robust_z",
        window_start=start,
        window_end=start + MIN,
        anomalous=bool(anomalous),
        score=9.0 if anomalous else 0.5,
        observed=observed if observed is not None else (12.0 if anomalous else 2.0),
        expected=2.0,
        severity=severity,  # type: ignore[arg-type]
        metric="cost_usd",
        exemplar_trace_ids=(f"trace{minute:04d}",),
        session_id="sess-1",
    )


def policy(**changes) -> LifecyclePolicy:
    base = dict(
        renotify_interval_s=0,
        resolve_after_windows=3,
        flap_window_s=0,
        idle_timeout_s=24 * 3600,
        route_rules=RULES,
    )
    base.update(changes)
    return LifecyclePolicy(**base)


def run(pattern: str | list[int], life: AlertLifecycle | None = None, start: int = 0, **kw):
    """Feed a pattern of anomalous (1) / normal (0) windows, one per minute."""
    if life is None:  # (not `or`: an empty lifecycle has len 0)
        life = AlertLifecycle(policy())
    bits = [int(c) for c in pattern] if isinstance(pattern, str) else pattern
    alerts = []
    for i, bit in enumerate(bits):
        alerts.extend(life.observe(obs(start + i, bit, **kw)))
    return life, alerts


def brief(alerts: list[Alert]) -> list[tuple]:
    return [(a.state, a.sequence, a.detected_at - T0) for a in alerts]


# --- open and dedup ------------------------------------------------------------------------------


def test_first_anomalous_window_opens_an_incident_with_full_context():
    _, alerts = run("01")
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.state, alert.sequence, alert.severity) == ("firing", 1, "warning")
    assert alert.dedup_key == "cost_spike:model=gpt-4o,service=chat,tenant=acme"
    assert alert.opened_at == alert.detected_at == alert.window_end == T0 + 2 * MIN
    assert alert.window_start == T0 + MIN
    assert (alert.observed, alert.expected, alert.score) == (12.0, 2.0, 9.0)
    assert alert.subject == (("service", "chat"), ("model", "gpt-4o")) and alert.tenant == "acme"
    assert alert.exemplar_trace_ids == ("trace0001",) and alert.session_id == "sess-1"
    assert alert.routes == ("slack",)  # warning: not paged
    assert dict(alert.details)["notification"] == "open"
    assert alert.summary.startswith(
        "cost_spike tenant=acme service=chat model=gpt-4o: cost_usd observed 12 vs expected 2"
    )


def test_a_persisting_anomaly_is_not_notified_twice():
    _, alerts = run("1111111111")
    assert brief(alerts) == [("firing", 1, MIN)]


def test_m_of_n_windows_before_opening():
    life = AlertLifecycle(policy(open_after_windows=2, open_window=3))
    _, alerts = run("1001", life)
    assert alerts == []  # never 2 anomalous among 3 consecutive windows
    _, alerts = run("101", life, start=10)
    assert brief(alerts) == [("firing", 1, 13 * MIN)]
    assert dict(alerts[0].details)["anomalous_windows"] == 2


def test_severity_selects_routes():
    _, alerts = run([1], severity="critical")
    assert alerts[0].routes == ("slack", "pager") and alerts[0].severity == "critical"


# --- re-notify -----------------------------------------------------------------------------------


def test_renotify_only_after_the_interval_in_event_time():
    life = AlertLifecycle(policy(renotify_interval_s=600))
    _, alerts = run("1" * 25, life)
    assert brief(alerts) == [("firing", 1, MIN), ("firing", 2, 11 * MIN), ("firing", 3, 21 * MIN)]
    assert [dict(a.details)["notification"] for a in alerts] == ["open", "renotify", "renotify"]
    assert {a.opened_at for a in alerts} == {T0 + MIN}


def test_no_renotify_on_normal_windows_while_resolving():
    life = AlertLifecycle(policy(renotify_interval_s=60, resolve_after_windows=5))
    _, alerts = run("1000", life)
    assert brief(alerts) == [("firing", 1, MIN)]


def test_escalation_notifies_at_once_and_adds_routes():
    life = AlertLifecycle(policy(renotify_interval_s=3600))
    alerts = life.observe(obs(0, 1, severity="warning"))
    alerts += life.observe(obs(1, 1, severity="warning"))
    alerts += life.observe(obs(2, 1, severity="critical"))
    alerts += life.observe(obs(3, 1, severity="critical"))
    assert brief(alerts) == [("firing", 1, MIN), ("firing", 2, 3 * MIN)]
    assert dict(alerts[1].details)["notification"] == "escalation"
    assert alerts[1].routes == ("slack", "pager")
    resolve = run("000", life, start=4)[1]
    assert resolve[0].routes == ("slack", "pager") and resolve[0].severity == "critical"


# --- resolve -------------------------------------------------------------------------------------


def test_resolves_after_n_consecutive_normal_windows_once():
    _, alerts = run("11001000" + "0" * 8)
    # 1 1 0 0 1 0 0 0: two normal windows are not enough; the third resolves.
    assert brief(alerts) == [("firing", 1, MIN), ("resolved", 2, 8 * MIN)]
    resolve = alerts[1]
    assert resolve.opened_at == alerts[0].opened_at
    assert resolve.routes == ("slack",)
    assert dict(resolve.details)["resolve_reason"] == "normal"
    assert dict(resolve.details)["anomalous_windows"] == 3
    assert resolve.summary.startswith(
        "Resolved: cost_spike tenant=acme service=chat model=gpt-4o: normal for 3 windows"
    )


def test_a_later_incident_is_a_new_one_with_sequence_one():
    _, alerts = run("1000" + "0" * 5 + "1000")
    assert brief(alerts) == [
        ("firing", 1, MIN),
        ("resolved", 2, 4 * MIN),
        ("firing", 1, 10 * MIN),
        ("resolved", 2, 13 * MIN),
    ]
    assert alerts[0].opened_at != alerts[2].opened_at


# --- flapping ------------------------------------------------------------------------------------


def test_flapping_key_needs_consecutive_anomalies_to_reopen_and_holds_longer():
    life = AlertLifecycle(policy(flap_window_s=1800, flap_open_windows=3, flap_resolve_windows=6))
    # open at 0, resolved at 3 (t=4min); then isolated anomalies inside the flap window
    _, alerts = run("1000" + "10" * 5 + "111" + "00000" + "0", life)
    assert brief(alerts) == [
        ("firing", 1, MIN),
        ("resolved", 2, 4 * MIN),
        ("firing", 1, 17 * MIN),  # the third consecutive anomalous window
        ("resolved", 2, 23 * MIN),  # after 6 normal windows, not 3
    ]
    assert dict(alerts[2].details)["flapping"] is True
    assert life.counters["flap_suppressed"] == 7  # 5 isolated + the first 2 of the 3


def test_after_the_flap_window_a_single_anomaly_opens_again():
    life = AlertLifecycle(policy(flap_window_s=600))
    _, alerts = run("1000" + "0" * 10 + "1", life)
    assert brief(alerts) == [("firing", 1, MIN), ("resolved", 2, 4 * MIN), ("firing", 1, 15 * MIN)]
    assert dict(alerts[2].details)["flapping"] is False


# --- input order, no data ------------------------------------------------------------------------


def test_duplicate_and_out_of_order_windows_are_ignored():
    life = AlertLifecycle(policy())
    assert len(life.observe(obs(5, 1))) == 1
    assert life.observe(obs(5, 1)) == [] and life.observe(obs(3, 1)) == []
    assert life.counters["ignored_out_of_order"] == 2


def test_a_silent_firing_key_is_resolved_for_no_data_when_the_clock_passes_its_timeout():
    life = AlertLifecycle(policy(idle_timeout_s=600))
    life.observe(obs(0, 1, model="a"))
    alerts = []
    for minute in range(1, 12):  # another key keeps the clock moving
        alerts += life.observe(obs(minute, 0, model="b"))
    assert len(alerts) == 1
    resolve = alerts[0]
    assert resolve.state == "resolved" and resolve.subject[1] == ("model", "a")
    assert resolve.detected_at == T0 + MIN + 10 * MIN
    assert dict(resolve.details)["resolve_reason"] == "no_data"
    assert "no data for 10 min" in resolve.summary
    assert "cost_spike:model=a,service=chat,tenant=acme" not in life


def test_advance_to_expires_without_an_observation():
    life = AlertLifecycle(policy(idle_timeout_s=600))
    life.observe(obs(0, 1))
    assert life.advance_to(T0 + 5 * MIN) == []
    (resolve,) = life.advance_to(T0 + 11 * MIN)
    assert resolve.state == "resolved" and len(life) == 0


# --- memory --------------------------------------------------------------------------------------


def test_normal_keys_take_no_memory_and_resolved_keys_are_evicted():
    life = AlertLifecycle(policy(flap_window_s=300))
    for i in range(1000):
        life.observe(obs(0, 0, model=f"m{i}"))
    assert len(life) == 0
    run("1000", life)
    assert len(life) == 1  # resolved, within the flap window
    run("00000", life, start=4)
    assert len(life) == 0  # the flap window has passed


def test_capacity_evicts_non_firing_keys_only():
    life = AlertLifecycle(policy(max_keys=10, open_after_windows=2, open_window=2))
    for i in range(5):  # 5 firing keys
        life.observe(obs(0, 1, model=f"f{i}"))
        life.observe(obs(1, 1, model=f"f{i}"))
    for i in range(50):  # 50 pending keys (one anomalous window each)
        life.observe(obs(2 + i, 1, model=f"p{i}"))
    assert len(life) <= 10
    assert sorted(life.firing_keys()) == sorted(
        f"cost_spike:model=f{i},service=chat,tenant=acme" for i in range(5)
    )
    assert life.counters["evicted_over_capacity"] >= 45


# --- determinism ---------------------------------------------------------------------------------


def random_stream(seed: int, n: int = 600) -> list[Observation]:
    rng = random.Random(seed)
    minute = {f"m{k}": 0 for k in range(6)}
    out = []
    for _ in range(n):
        model = rng.choice(list(minute))
        minute[model] += rng.choice((1, 1, 1, 2, 30))
        out.append(
            obs(
                minute[model],
                rng.random() < 0.3,
                model=model,
                severity=rng.choice(("warning", "warning", "critical")),
            )
        )
    return out


def lifecycle_for_replay() -> AlertLifecycle:
    return AlertLifecycle(
        policy(
            renotify_interval_s=300,
            flap_window_s=900,
            open_after_windows=2,
            open_window=3,
            idle_timeout_s=1200,
        )
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_input_same_alerts(seed):
    stream = random_stream(seed)
    first = lifecycle_for_replay().on_batch(stream)
    second = lifecycle_for_replay().on_batch(stream)
    assert first == second and len(first) > 10


@pytest.mark.parametrize("cut", [1, 137, 300, 599])
def test_resume_from_a_snapshot_mid_way_gives_identical_alerts(cut):
    stream = random_stream(7)
    expected = lifecycle_for_replay().on_batch(stream)
    life = lifecycle_for_replay()
    head = life.on_batch(stream[:cut])
    resumed = AlertLifecycle(life.policy, resume=life.snapshot())
    also = pickle.loads(pickle.dumps(life))  # the whole object pickles too
    assert head + resumed.on_batch(stream[cut:]) == expected
    assert head + also.on_batch(stream[cut:]) == expected


def test_replaying_after_a_crash_repeats_the_same_alerts():
    """A restart from an older snapshot re-feeds observations already seen: the alerts
    it emits again are equal to the first ones (so the outbox drops them)."""
    stream = random_stream(11)
    life = lifecycle_for_replay()
    life.on_batch(stream[:200])
    snapshot = life.snapshot()
    first_run = life.on_batch(stream[200:400])  # then the process dies
    replayed = AlertLifecycle(life.policy, resume=snapshot).on_batch(stream[200:400])
    assert replayed == first_run


# --- invariants, for any input -------------------------------------------------------------------


def observations(steps) -> list[Observation]:
    """Keys observed on a shared event-time clock (as closed windows arrive), each key's
    windows strictly after its previous ones."""
    clock, last, out = 0, {}, []
    for key, gap, anomalous, critical in steps:
        clock += gap
        if last.get(key) == clock:
            continue
        last[key] = clock
        severity = "critical" if critical else "info"
        out.append(obs(clock, anomalous, model=f"k{key}", severity=severity))
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 40), st.booleans(), st.booleans()),
        max_size=150,
    ),
    st.integers(1, 3),
    st.integers(0, 1),
)
def test_incident_invariants(steps, resolve_after, flap):
    life = AlertLifecycle(
        policy(
            resolve_after_windows=resolve_after,
            renotify_interval_s=600,
            flap_window_s=900 * flap,
            idle_timeout_s=1800,
            max_keys=3,
        )
    )
    stream = observations(steps)
    alerts = [alert for o in stream for alert in life.observe(o)]
    assert len(life) <= 4  # 3 + at most one firing key over capacity
    by_key: dict[str, list[Alert]] = {}
    for alert in alerts:
        by_key.setdefault(alert.dedup_key, []).append(alert)
    for seq in by_key.values():
        expected_sequence, opened = 0, None
        for alert in seq:
            if alert.sequence == 1:  # a new incident only once the previous one resolved
                assert alert.firing and expected_sequence == 0
                opened = alert.opened_at
            else:  # then +1 per notification, same incident
                assert alert.sequence == expected_sequence + 1 and alert.opened_at == opened
            expected_sequence = 0 if not alert.firing else alert.sequence
        times = [a.detected_at for a in seq]
        assert times == sorted(times)
    # and the same input gives the same output
    assert AlertLifecycle(life.policy).on_batch(stream) == alerts


def test_policy_validation():
    with pytest.raises(ValueError):
        LifecyclePolicy(open_after_windows=3, open_window=2)
    with pytest.raises(ValueError):
        LifecyclePolicy(resolve_after_windows=0)
    with pytest.raises(ValueError):
        LifecyclePolicy(idle_timeout_s=0)
