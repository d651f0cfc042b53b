"""Runaway hard limits are flagged as soon as the watermark passes the crossing call."""

from observatory.detectors.config import DetectorsConfig
from observatory.detectors.runaway import RunawayLoop
from observatory.operators.alerting import LifecyclePolicy
from observatory.operators.detect import DetectFeed, DetectionStage
from observatory.operators.sessions import session_partials
from observatory.operators.windows import NS, ShardInput, WindowShard
from observatory.schemas.records import LlmCall

MIN = 60 * NS
T0 = 1_790_000_000 * NS - (1_790_000_000 * NS) % MIN  # a window boundary


def loop_call(t_ns: int) -> LlmCall:
    return LlmCall(
        end_ns=t_ns, tenant="acme", session_id="loop-1", agent="coder", service="api",
        operation="execute_tool", tool="search", tool_args_hash="same",
    )  # fmt: skip


def feed_loop(shard: WindowShard, calls: int, every_s: float, first_s: float):
    """One call per batch; returns [(watermark offset s, feed)] of the detection feeds."""
    feeds = []
    for i in range(calls):
        t = T0 + int((first_s + i * every_s) * NS)
        parts = session_partials([loop_call(t)])
        for row in shard.on_batch([ShardInput("p-0", t, False, [], None, list(parts.items()))]):
            if isinstance(row, DetectFeed):
                feeds.append(((shard.state.watermark_ns - T0) / NS, row))
    return feeds


def make_shard() -> WindowShard:
    return WindowShard(
        window_s=60, watermark_delay_s=0, allowed_lateness_s=60, partitions=["p-0"],
        detect=True, runaway=RunawayLoop(max_identical_run=25),
        clock=lambda: 1_000.0,
    )  # fmt: skip


def test_the_25th_identical_call_is_flagged_before_its_window_ends_and_only_once():
    # Calls every 2 s from 0 s: the 25th lands at 48 s, well inside the first window.
    feeds = feed_loop(make_shard(), 28, 2.0, 0.0)
    early = [(wm, ob) for wm, feed in feeds for ob in feed.early]
    assert len(early) == 1
    watermark_s, observation = early[0]
    assert watermark_s == 48.0 < 60.0
    assert observation.anomalous and observation.observed == 25.0
    assert observation.window_end.timestamp() * NS == T0 + MIN  # the open window


def test_below_the_hard_limit_nothing_is_flagged_early():
    feeds = feed_loop(make_shard(), 24, 2.0, 0.0)
    assert [ob for _, feed in feeds for ob in feed.early] == []


def test_the_detection_stage_alerts_at_once_and_the_window_check_adds_no_second_alert():
    shard = make_shard()
    feeds = [feed for _, feed in feed_loop(shard, 28, 2.0, 0.0)]
    # The watermark passes the first window: its boundary check reports the loop too.
    tail = session_partials([loop_call(T0 + 70 * NS)])
    feeds += [
        row
        for row in shard.on_batch(
            [ShardInput("p-0", T0 + 70 * NS, False, [], None, list(tail.items()))]
        )
        if isinstance(row, DetectFeed)
    ]
    stage = DetectionStage(
        window_s=60, shards=["shard"], detectors=DetectorsConfig(), policy=LifecyclePolicy()
    )
    opened_at = None
    alerts = []
    for i, feed in enumerate(feeds):
        feed.shard = "shard"
        new = stage.on_batch([feed])
        if new and opened_at is None:
            opened_at = i
        alerts += new
    assert [a.kind for a in alerts] == ["runaway_loop"]
    assert feeds[opened_at].early  # opened by the early observation, not the window check
    assert any(feed.observations for feed in feeds[opened_at + 1 :])  # which came later
