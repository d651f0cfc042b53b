"""``bench.quiet``: redrawn quiet days go through the real detection stage; its alerts count."""

import importlib.util
from pathlib import Path

import numpy as np

from observatory.detectors.config import DetectorsConfig
from observatory.operators.alerting import LifecyclePolicy
from observatory.operators.detect import DetectionStage

NS = 1_000_000_000
WINDOW = 60 * NS
HOP = WINDOW // 4
T0 = 1_795_478_400 * NS
KEY = ("tenant-a", "chat-api", "openai", "gpt-4o-mini", "chat", "")
TOOL = ("tenant-a", "chat-api", "", "", "execute_tool", "run_sql")

spec = importlib.util.spec_from_file_location(
    "bench_quiet", Path(__file__).resolve().parents[1] / "bench" / "quiet.py"
)
quiet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quiet)


def stage() -> DetectionStage:
    config = DetectorsConfig.model_validate(
        {"cost_spike": {"enabled": False}, "latency_anomaly": {"enabled": False}}
    )
    return DetectionStage(
        window_s=60,
        shards=["quiet"],
        detectors=config,
        policy=LifecyclePolicy(),
        checks_per_window=4,
    )


def day(minutes: int = 240) -> dict:
    """40 LLM calls and 10 tool calls a quarter minute."""
    return {T0 + i * HOP: {KEY: 40, TOOL: 10} for i in range(4 * minutes)}


def test_a_drawn_day_follows_the_null_model():
    model = quiet.NullModel(day())
    drawn = model.draw(np.random.default_rng(1))
    llm = [t for entries in drawn.values() for k, t in entries if k == KEY]
    tools = [t for entries in drawn.values() for k, t in entries if k == TOOL]
    assert len(llm) == len(tools) == 960 and all(t.calls == 40 for t in llm)
    assert 0.015 < sum(t.errors for t in llm) / (40 * 960) < 0.025
    assert 0.015 < sum(t.errors for t in tools) / (10 * 960) < 0.025
    mean_tokens = sum(t.input_tokens for t in llm) / (40 * 960)
    assert 800 * 1.08 < mean_tokens < 800 * 1.18  # median 800, log-normal sigma 0.5: x1.13
    assert all(t.input_tokens == 0 for t in tools)


def test_an_ordinary_day_is_quiet_and_a_surge_in_it_is_counted():
    model = quiet.NullModel(day())
    assert quiet.false_alerts(stage(), model.draw(np.random.default_rng(2))) == []
    surged = model.draw(np.random.default_rng(2))
    surge = T0 + 200 * WINDOW
    for hop in range(surge, surge + WINDOW, HOP):
        for key, tally in surged[hop]:
            if key == TOOL:
                tally.errors = tally.calls // 2
    alerts = quiet.false_alerts(stage(), surged)
    assert [(a.detector, dict(a.subject)) for a in alerts] == [
        ("tool_error_rate", {"service": "chat-api", "tool": "run_sql"})
    ]
    # Half-way through the window: a quarter in, 5 errors in 10 calls score
    # 5.05, under the 5.45 that an early look at an error rate must reach.
    assert alerts[0].detected_at.timestamp() * NS == surge + 2 * HOP


def test_poisson_upper_bound():
    assert round(quiet.poisson_upper(0, 100), 4) == 0.0300
    assert round(quiet.poisson_upper(5, 100), 3) == 0.105  # exact: 10.51 events
