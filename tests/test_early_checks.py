"""Early checks: detectors look at a window as each part of it completes, not only at its end."""

import pickle

from observatory.detectors.config import DetectorsConfig
from observatory.operators.alerting import LifecyclePolicy
from observatory.operators.detect import DetectFeed, DetectionStage
from observatory.operators.stats import PartialTally, preaggregate
from observatory.operators.windows import NS, ShardInput, WindowShard
from observatory.schemas.records import LlmCall

MIN = 60 * NS
HOP = 15 * NS
T0 = 1_800_000_000 * NS - (1_800_000_000 * NS) % MIN
SHARDS = ("shard-a", "shard-b")
CONFIG = DetectorsConfig.model_validate(
    {"error_surge": {"warmup_windows": 10}, "cost_spike": {"enabled": False}}
)


def calls_in(start_ns: int, seconds: int, *, errors: int = 0) -> list[LlmCall]:
    """Two calls a second of one (service, model); the first ``errors`` of them fail."""
    return [
        LlmCall(
            end_ns=start_ns + i * NS // 2,
            service="chat",
            operation="chat",
            provider="openai",
            model="gpt-4o",
            duration_ms=500.0,
            input_tokens=100,
            cost_usd=0.001,
            is_error=i < errors,
            trace_id=f"{i:032x}",
        )
        for i in range(2 * seconds)
    ]


def shards(checks: int) -> dict[str, WindowShard]:
    return {
        name: WindowShard(
            window_s=60,
            watermark_delay_s=0,
            allowed_lateness_s=60,
            partitions=["p-0"],
            detect=True,
            checks_per_window=checks,
            name=name,
        )
        for name in SHARDS
    }


def run(checks: int, *, surge_minute: int = 40, minutes: int = 42):
    """5 s batches through two shards (all calls in shard-a) into one detection stage.

    Returns (alerts with the batch index they came out at, the stage)."""
    window_shards = shards(checks)
    stage = DetectionStage(
        window_s=60,
        shards=SHARDS,
        detectors=CONFIG,
        policy=LifecyclePolicy(),
        checks_per_window=checks,
    )
    bin_ns = MIN // checks
    out = []
    for step in range(minutes * 12):
        start = T0 + step * 5 * NS
        minute = step // 12
        if minute == surge_minute:
            batch = calls_in(start, 5, errors=10)  # every call fails
        else:
            batch = calls_in(start, 5, errors=1 if step % 12 == 0 else 0)
        newest = batch[-1].end_ns
        feeds = []
        for name, shard in window_shards.items():
            stats = list(preaggregate(batch, bin_ns).items()) if name == "shard-a" else []
            for row in shard.on_batch([ShardInput("p-0", newest, False, stats)]):
                if isinstance(row, DetectFeed):
                    row.shard = name
                    feeds.append(row)
        out += [(step, alert) for alert in stage.on_batch(feeds)]
    return out, stage


def test_a_clear_surge_alerts_before_its_window_closes():
    early, early_stage = run(4)
    late, _ = run(1)
    assert [a.kind for _, a in early] == ["error_surge"]
    assert [a.kind for _, a in late] == ["error_surge"]
    (step_early, first), (step_late, last) = early[0], late[0]
    assert first.dedup_key == last.dedup_key
    surge = T0 + 40 * MIN
    # Closed windows only: at the surge window's end. Early: at a hop inside it,
    # the batch that carried the watermark past that hop.
    assert last.detected_at.timestamp() * NS == surge + MIN
    assert surge < first.detected_at.timestamp() * NS < surge + MIN
    assert (first.detected_at.timestamp() * NS - surge) % HOP == 0
    assert step_early < step_late
    assert first.exemplar_trace_ids  # the early alert links to traces too
    details = dict(first.details)
    assert details["window_seconds"] == 60.0
    assert 0 < details["window_seconds_seen"] < 60
    assert early_stage.state.early_verdicts >= 1


def test_early_checks_learn_nothing():
    """The detectors end in the same state with and without early looks."""
    _, early_stage = run(4, surge_minute=10**6, minutes=30)
    _, late_stage = run(1, surge_minute=10**6, minutes=30)
    assert pickle.dumps(early_stage.detectors) == pickle.dumps(late_stage.detectors)
    assert early_stage.state.partials.keys() <= {T0 + 29 * MIN}  # only the open window
    # Its first three quarters (the last is the window's own check), merged hop by hop.
    merged = early_stage.state.partials[T0 + 29 * MIN]["error_rate"][("chat", "gpt-4o")]
    assert merged.calls == 3 * 15 * 2


def test_a_hop_is_checked_only_once_every_shard_passed_it():
    stage = DetectionStage(
        window_s=60, shards=SHARDS, detectors=CONFIG, policy=LifecyclePolicy(), checks_per_window=4
    )
    tally_feed = DetectFeed("shard-a", T0 + HOP, hops=[(T0, [])])
    stage.on_batch([tally_feed])
    assert T0 in stage.state.pending_hops  # shard-b has not reported
    stage.on_batch([DetectFeed("shard-b", T0 + HOP)])
    assert not stage.state.pending_hops


def test_the_shard_tallies_hops_of_open_windows_but_not_their_last_hop():
    shard = shards(4)["shard-a"]
    first = calls_in(T0, 20)  # 0-20 s: hops 0 and 1
    feeds = [
        row
        for row in shard.on_batch(
            [ShardInput("p-0", first[-1].end_ns, False, list(preaggregate(first, HOP).items()))]
        )
        if isinstance(row, DetectFeed)
    ]
    [(hop, entries)] = [h for feed in feeds for h in feed.hops]
    assert hop == T0 and sum(t.calls for _, t in entries) == 30
    # A straggler for hop 0 (already passed) counts in the open hop 1 instead.
    straggler = calls_in(T0, 1)
    later = calls_in(T0 + 35 * NS, 20)  # 35-55 s: hop 2, then the last hop
    rows = shard.on_batch(
        [
            ShardInput("p-0", T0 + 20 * NS, False, list(preaggregate(straggler, HOP).items())),
            ShardInput("p-0", T0 + 70 * NS, False, list(preaggregate(later, HOP).items())),
        ]
    )
    hops = dict(h for row in rows if isinstance(row, DetectFeed) for h in row.hops)
    assert sorted(hops) == [T0 + HOP, T0 + 2 * HOP]  # the last hop is the window's own check
    assert sum(t.calls for _, t in hops[T0 + HOP]) == 10 + 2
    assert sum(t.calls for _, t in hops[T0 + 2 * HOP]) == 20
    assert not shard.state.hops


def test_rates_pay_a_margin_for_looking_early_and_spend_does_not():
    """Three early looks at a filling window: a rate must clear a higher bar.

    Spend only grows as a window fills (an early crossing is one the closed
    window makes too); a rate goes up and down, so each look is another chance
    for an ordinary minute to cross.
    """
    config = DetectorsConfig.model_validate({"error_surge": {"warmup_windows": 10}})
    stage = DetectionStage(
        window_s=60, shards=SHARDS, detectors=config, policy=LifecyclePolicy(), checks_per_window=4
    )
    looks: dict[str, set[int]] = {}
    peek = stage.detectors.peek

    def recording(signal, key, x, **kwargs):
        looks.setdefault(signal, set()).add(kwargs.get("looks", 1))
        return peek(signal, key, x, **kwargs)

    stage.detectors.peek = recording
    tallies = []
    for (key, _), acc in preaggregate(calls_in(T0, 15, errors=3), HOP).items():
        tally = PartialTally()
        tally.add(acc)
        tallies.append((key, tally))
    for name in SHARDS:
        stage.on_batch(
            [DetectFeed(name, T0 + HOP, hops=[(T0, tallies if name == "shard-a" else [])])]
        )
    assert looks == {"cost_key": {1}, "cost_tenant": {1}, "error_rate": {3}, "tokens_per_call": {3}}
