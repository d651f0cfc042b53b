"""The tool dimension and the tool error-rate signal, without services.

The ``tool`` key of the window statistics, the ``tool_error_rate`` subjects of
the detection stage (and of ``observatory detect``'s replay), the simulator's
tool-error incidents and how the evaluation scores them.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pandas as pd
import pytest

from observatory.detectors.config import SIGNALS, DetectorsConfig
from observatory.flows.evaluate import alert_facts, score
from observatory.flows.groundtruth import calls_frame, window_stats
from observatory.flows.receiver import Received
from observatory.flows.replay import _window_points
from observatory.flows.traffic import (
    INCIDENT_KINDS,
    MINUTE_NS,
    NS,
    TOOL_BASE_ERROR_RATE,
    Incident,
    Simulator,
    plan_incidents,
)
from observatory.operators.alerting import LifecyclePolicy
from observatory.operators.detect import DetectFeed, DetectionStage, _subjects
from observatory.operators.stats import MAX_TOOL_KEY_CHARS, preaggregate, stats_key
from observatory.schemas.records import LlmCall

T0 = 1_764_000_000 * NS  # a minute boundary


def tool_call(tool: str, *, t: int = T0, error: bool = False, service: str = "agent-worker"):
    return LlmCall(
        end_ns=t,
        duration_ms=100.0,
        tenant="acme",
        service=service,
        operation="execute_tool",
        tool=tool,
        is_error=error,
        trace_id=f"{t:032x}",
    )


def chat_call(*, t: int = T0, error: bool = False, service: str = "agent-worker"):
    return LlmCall(
        end_ns=t,
        duration_ms=800.0,
        tenant="acme",
        service=service,
        provider="openai",
        model="gpt-4o",
        operation="chat",
        tool="ignored_on_llm_calls",
        input_tokens=100,
        cost_usd=0.01,
        is_error=error,
    )


# --- the stats key ---------------------------------------------------------------------


def test_tool_calls_are_keyed_per_tool_and_other_calls_have_no_tool():
    calls = [tool_call("search_web"), tool_call("run_sql"), tool_call("run_sql"), chat_call()]
    parts = preaggregate(calls, 60 * NS)
    assert sorted((key[4], key[5], acc.calls) for (key, _), acc in parts.items()) == [
        ("chat", "", 1),
        ("execute_tool", "run_sql", 2),
        ("execute_tool", "search_web", 1),
    ]


def test_long_tool_names_are_cut_so_the_key_stays_bounded():
    long_name = "tool_" + "é" * 500
    key = stats_key(tool_call(long_name))
    assert key[5] == long_name[:MAX_TOOL_KEY_CHARS]
    assert len(key[5]) == MAX_TOOL_KEY_CHARS == 128
    # Names that share the first 128 characters share a row.
    assert stats_key(tool_call(long_name + "x")) == key


def test_ground_truth_derives_the_same_tool_key():
    long_name = "t" * 300
    calls = [tool_call("run_sql"), tool_call(long_name), tool_call(long_name + "y"), chat_call()]
    expected = window_stats(calls_frame(calls))
    by_key = {(row.operation, row.tool): row.calls for row in expected.itertuples(index=False)}
    assert by_key == {
        ("chat", ""): 1,
        ("execute_tool", "run_sql"): 1,
        ("execute_tool", "t" * 128): 2,
    }
    ours = {(key[4], key[5]): acc.calls for (key, _), acc in preaggregate(calls, 60 * NS).items()}
    assert ours == by_key


# --- detection subjects ------------------------------------------------------------------


def entries(calls):
    return [(key, acc) for (key, _), acc in preaggregate(calls, 60 * NS).items()]


def test_tool_error_rate_subjects_are_service_and_tool():
    assert SIGNALS["tool_error_rate"] == ("error_surge", ("service", "tool"))
    calls = [
        tool_call("run_sql", error=True),
        tool_call("run_sql"),
        tool_call("run_sql", service="chat-api"),
        tool_call("search_web"),
        chat_call(error=True),
    ]
    subjects = _subjects(entries(calls))
    tools = {key: (agg.calls, agg.errors) for key, agg in subjects["tool_error_rate"].items()}
    assert tools == {
        ("agent-worker", "run_sql"): (2, 1),
        ("chat-api", "run_sql"): (1, 0),
        ("agent-worker", "search_web"): (1, 0),
    }
    # Tool calls stay out of the model signals, and LLM calls out of the tool signal.
    assert {k: (a.calls, a.errors) for k, a in subjects["error_rate"].items()} == {
        ("agent-worker", "gpt-4o"): (1, 1)
    }
    assert {k: a.calls for k, a in subjects["cost_key"].items()} == {
        ("acme", "agent-worker", "gpt-4o"): 1
    }


def test_the_replay_builds_the_same_tool_subjects_as_the_live_stage():
    calls = [tool_call("run_sql", error=i % 3 == 0) for i in range(9)]
    calls += [tool_call("search_web", service="chat-api") for _ in range(4)] + [chat_call()]
    bucket = datetime.fromtimestamp(T0 / NS, tz=UTC)
    rows = [
        (bucket, *key, acc.calls, acc.errors, acc.input_tokens, acc.cost_usd, None, None)
        for key, acc in entries(calls)
    ]
    replayed = _window_points(rows)["tool_error_rate"]
    live = _subjects(entries(calls))["tool_error_rate"]
    assert (
        replayed.keys() == live.keys() == {("agent-worker", "run_sql"), ("chat-api", "search_web")}
    )
    for key, agg in live.items():
        assert replayed[key].value == agg.errors / agg.calls
        assert replayed[key].weight == agg.calls


def run_stage(minutes: int, errors_at) -> list:
    """Feed ``minutes`` windows of 20 run_sql and 20 search_web calls; ``errors_at(m)``:
    how many run_sql calls fail in minute m (search_web fails once in 20, always)."""
    config = DetectorsConfig.model_validate({"error_surge": {"warmup_windows": 10}})
    stage = DetectionStage(window_s=60, shards=["s0"], detectors=config, policy=LifecyclePolicy())
    alerts = []
    for m in range(minutes):
        t = T0 + m * MINUTE_NS
        calls = [tool_call("run_sql", t=t + i, error=i < errors_at(m)) for i in range(20)]
        calls += [tool_call("search_web", t=t + i, error=i == 0) for i in range(20)]
        closed = [(t, entries(calls))]
        alerts += stage.on_batch([DetectFeed("s0", t + MINUTE_NS, closed)])
    return alerts


def test_a_failing_tool_raises_an_error_surge_naming_the_tool():
    alerts = run_stage(60, lambda m: 12 if 45 <= m < 50 else (1 if m % 7 == 0 else 0))
    firing = [a for a in alerts if a.state == "firing"]
    assert firing, "the tool's error surge was not detected"
    first = firing[0]
    assert first.kind == "error_surge" and first.detector == "tool_error_rate"
    assert first.dimensions == {"service": "agent-worker", "tool": "run_sql"}
    assert first.metric == "error_rate"
    assert first.observed == pytest.approx(12 / 20)
    assert first.expected is not None and first.expected < 0.05
    assert "tool=run_sql" in first.summary and "error_rate observed 0.6" in first.summary
    assert T0 + 45 * MINUTE_NS <= first.window_start.timestamp() * NS < T0 + 47 * MINUTE_NS
    # The steady tool never alerts.
    assert not [a for a in alerts if dict(a.subject).get("tool") == "search_web"]


def test_a_tool_at_its_usual_error_rate_never_alerts():
    assert run_stage(60, lambda m: 1 if m % 7 == 0 else 0) == []


# --- the simulator and the evaluation ----------------------------------------------------


def test_tool_error_incidents_are_planned_with_a_tool_subject():
    assert "tool_error_surge" in INCIDENT_KINDS
    incidents = plan_incidents(
        random.Random(3),
        start_ns=T0,
        end_ns=T0 + 10 * 60 * MINUTE_NS,
        kinds=INCIDENT_KINDS,
        per_kind=2,
        tenants=["tenant-a"],
    )
    tool_incidents = [i for i in incidents if i.kind == "tool_error_surge"]
    assert len(tool_incidents) == 2
    for incident in tool_incidents:
        assert set(incident.subject()) == {"service", "tool"}
        assert incident.as_dict()["tool"] == incident.tool


def simulate_tool_incident(seed: int = 5):
    incident = Incident(
        "tool_error_surge",
        T0 + 20 * MINUTE_NS,
        T0 + 30 * MINUTE_NS,
        0.4,
        service="agent-worker",
        tool="run_sql",
    )
    sim = Simulator(
        start_ns=T0, end_ns=T0 + 40 * MINUTE_NS, calls_per_minute=150, incidents=[incident],
        seed=seed,
    )  # fmt: skip
    sim.generate()
    return sim, incident


def test_the_simulated_tool_fails_during_its_incident_and_rarely_otherwise():
    sim, incident = simulate_tool_incident()
    frame = calls_frame(sim.truth)
    tools = frame[frame["operation"] == "execute_tool"]
    hit = (
        (tools["service"] == "agent-worker")
        & (tools["tool"] == "run_sql")
        & (tools["end_ns"] >= incident.start_ns + 2 * NS)
        & (tools["end_ns"] < incident.end_ns)
    )
    assert hit.sum() >= 50
    assert 0.25 < tools[hit]["is_error"].mean() < 0.55
    others = tools[
        ~hit
        & ((tools["end_ns"] < incident.start_ns) | (tools["end_ns"] > incident.end_ns + 60 * NS))
    ]
    assert len(others) > 500
    assert others["is_error"].mean() < 3 * TOOL_BASE_ERROR_RATE
    # LLM calls are untouched by a tool incident.
    llm = frame[frame["operation"] == "chat"]
    assert llm["is_error"].mean() < 0.05


def test_tool_failures_leave_the_rest_of_a_seeds_traffic_unchanged():
    end = T0 + 15 * MINUTE_NS
    plain = Simulator(start_ns=T0, end_ns=end, calls_per_minute=100, seed=9)
    plain.generate()
    incident = Incident("tool_error_surge", T0, end, 0.9, service="chat-api", tool="read_file")
    surged = Simulator(start_ns=T0, end_ns=end, calls_per_minute=100, seed=9, incidents=[incident])
    surged.generate()
    strip = [(c.end_ns, c.operation, c.model, c.tool, c.input_tokens) for c in plain.truth]
    assert strip == [(c.end_ns, c.operation, c.model, c.tool, c.input_tokens) for c in surged.truth]
    assert sum(c.is_error for c in surged.truth) > sum(c.is_error for c in plain.truth)


def trigger(kind: str, dims: dict, at_ns: int) -> Received:
    stamp = datetime.fromtimestamp(at_ns / NS, tz=UTC).isoformat()
    body = {"payload": {"class": kind, "timestamp": stamp, "custom_details": {"dimensions": dims}}}
    return Received(path="/pagerduty", body=body, at=0.0)


def test_evaluation_scores_tool_alerts_against_tool_incidents_only():
    tool = Incident("tool_error_surge", T0, T0 + 10 * MINUTE_NS, 0.4, service="s", tool="run_sql")
    model = Incident(
        "error_surge", T0, T0 + 10 * MINUTE_NS, 0.4, service="s", provider="openai", model="m"
    )
    at = T0 + 2 * MINUTE_NS
    tool_alert = trigger("error_surge", {"service": "s", "tool": "run_sql"}, at)
    model_alert = trigger("error_surge", {"service": "s", "model": "m"}, at)
    other_tool = trigger("error_surge", {"service": "s", "tool": "search_web"}, at)
    assert alert_facts(tool_alert)[0] == "tool_error_surge"
    assert alert_facts(model_alert)[0] == "error_surge"
    results = score([tool, model], [tool_alert, model_alert, other_tool], 60)
    assert (results["tool_error_surge"].detected, results["tool_error_surge"].alerts) == (1, 2)
    assert results["tool_error_surge"].true_alerts == 1
    assert (results["error_surge"].detected, results["error_surge"].alerts) == (1, 1)
    assert results["error_surge"].precision == 1.0
    # A model alert alone does not detect the tool incident.
    alone = score([tool], [model_alert], 60)["tool_error_surge"]
    assert (alone.detected, alone.alerts) == (0, 0)


def test_expected_rows_of_a_tool_incident_are_per_tool():
    sim, incident = simulate_tool_incident(seed=6)
    expected = window_stats(calls_frame(sim.truth))
    tools = expected[expected["operation"] == "execute_tool"]
    assert (tools["tool"] != "").all() and (
        expected[expected["operation"] != "execute_tool"]["tool"] == ""
    ).all()
    during = tools[
        (tools["tool"] == incident.tool)
        & (tools["service"] == incident.service)
        & (tools["bucket"] >= pd.Timestamp(incident.start_ns + MINUTE_NS, unit="ns", tz="UTC"))
        & (tools["bucket"] < pd.Timestamp(incident.end_ns, unit="ns", tz="UTC"))
    ]
    assert len(during) >= 8 and during["errors"].sum() / during["calls"].sum() > 0.25
