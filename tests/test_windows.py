"""The event-time window shard: watermarks, lateness, recovery, order independence."""

import random

from observatory.operators.stats import StatsRow, preaggregate
from observatory.operators.windows import NS, CountersRow, LateData, ShardInput, WindowShard
from observatory.schemas.records import LlmCall

MIN = 60 * NS


class Clock:
    def __init__(self, now=1_000.0):
        self.now = now

    def __call__(self):
        return self.now


def shard(parts=("p-0", "p-1"), clock=None, resume=None, lateness=120, delay=0):
    return WindowShard(
        window_s=60,
        watermark_delay_s=delay,
        allowed_lateness_s=lateness,
        partitions=parts,
        idle_timeout_s=5,
        resume=resume,
        clock=clock or Clock(),
    )


def batch(part, calls, *, caught_up=False):
    parts = preaggregate(calls, MIN)
    max_ns = max((c.end_ns for c in calls), default=0)
    return ShardInput(part, max_ns, caught_up, list(parts.items()))


def call(t_s, model="m", tokens=1, ms=100.0):
    return LlmCall(
        end_ns=int(t_s * NS),
        model=model,
        input_tokens=tokens,
        duration_ms=ms,
        cost_usd=0.001 * tokens,
    )


def minute_rows(out):
    return {(r.bucket, r.model): r for r in out if isinstance(r, StatsRow) and not r.hourly}


def final_rows(outputs):
    """The last version of each row, as the database would keep it after upserts."""
    last = {}
    for r in outputs:
        if isinstance(r, StatsRow):
            last[(r.hourly, r.bucket, r.model)] = r
    return last


def test_watermark_waits_for_the_slowest_partition():
    s = shard()
    out = s.on_batch([batch("p-0", [call(10)]), batch("p-0", [call(130)])])
    assert minute_rows(out) == {}, "p-1 has not reported: nothing may close"
    out = s.on_batch([batch("p-1", [call(50)])])
    assert minute_rows(out) == {}, "p-1 is at 50s: minute 0 is still open"
    out = s.on_batch([batch("p-1", [call(61)])])
    rows = minute_rows(out)
    assert [r.calls for r in rows.values()] == [2]  # minute 0 holds the calls at 10s and 50s


def test_idle_partition_stops_holding_back_after_timeout():
    clock = Clock()
    s = shard(clock=clock)
    s.on_batch([batch("p-1", [call(5)]), batch("p-1", [], caught_up=True)])
    out = s.on_batch([batch("p-0", [call(10), call(200)])])
    assert minute_rows(out) == {}
    clock.now += 6  # p-1 caught up and quiet past the idle timeout
    out = s.on_notify()
    assert len(minute_rows(out)) >= 1


def test_empty_partition_never_holds_back():
    s = shard()
    s.on_batch([batch("p-1", [], caught_up=True)])
    out = s.on_batch([batch("p-0", [call(10), call(100)])])
    assert [r.calls for r in minute_rows(out).values()] == [1]


def test_late_data_inside_lateness_corrects_the_row_and_beyond_it_is_reported():
    s = shard(parts=("p-0",), lateness=120)
    s.on_batch([batch("p-0", [call(10), call(70)])])  # closes minute 0 with one call
    out = s.on_batch([batch("p-0", [call(20)])])  # late but within 120s of lateness
    rows = minute_rows(out)
    assert [r.calls for r in rows.values()] == [2]
    assert s.state.corrections == 1
    s.on_batch([batch("p-0", [call(400)])])  # watermark 400s: minute 0 evicted (60+120 <= 400)
    out = s.on_batch([batch("p-0", [call(30, tokens=5)])])
    late = [r for r in out if isinstance(r, LateData)]
    assert len(late) == 1 and late[0].calls == 1 and late[0].window_start.timestamp() == 0
    assert s.state.late_calls == 1


def test_results_do_not_depend_on_how_partitions_interleave():
    rng = random.Random(3)
    streams = {
        p: [
            [
                call(t + rng.uniform(0, 5), model=rng.choice("abc"), tokens=rng.randint(1, 9))
                for t in range(start, start + 30, 3)
            ]
            for start in range(0, 600, 30)
        ]
        for p in ("p-0", "p-1")
    }
    results = []
    for seed in range(6):
        order_rng = random.Random(seed)
        cursors = {p: 0 for p in streams}
        s = shard(lateness=3600, delay=5)
        out = []
        while any(cursors[p] < len(streams[p]) for p in streams):
            p = order_rng.choice([p for p in streams if cursors[p] < len(streams[p])])
            out += s.on_batch([batch(p, streams[p][cursors[p]])])
            cursors[p] += 1
        out += s.on_eof()
        results.append(
            {
                k: (r.calls, r.input_tokens, round(r.cost_usd, 9), r.latency_p95_ms)
                for k, r in final_rows(out).items()
            }
        )
    assert all(r == results[0] for r in results[1:])
    assert sum(v[0] for (hourly, _, _), v in results[0].items() if not hourly) == 2 * 20 * 10


def test_snapshot_and_resume_give_the_same_rows_as_an_uninterrupted_run():
    calls = [[call(t + i, model="ab"[i % 2]) for i in range(10)] for t in range(0, 900, 15)]
    whole = shard(parts=("p-0",), lateness=60, delay=5)
    out_whole = []
    for c in calls:
        out_whole += whole.on_batch([batch("p-0", c)])
    out_whole += whole.on_eof()

    first = shard(parts=("p-0",), lateness=60, delay=5)
    out = []
    for c in calls[:20]:
        out += first.on_batch([batch("p-0", c)])
    resumed = shard(parts=("p-0",), lateness=60, delay=5, resume=first.snapshot())
    for c in calls[20:]:
        out += resumed.on_batch([batch("p-0", c)])
    out += resumed.on_eof()
    assert final_rows(out) == final_rows(out_whole)


def test_eof_writes_open_windows_without_moving_the_watermark():
    s = shard(parts=("p-0",))
    s.on_batch([batch("p-0", [call(10), call(70)])])
    before = s.state.watermark_ns
    out = s.on_eof()
    assert {r.calls for r in minute_rows(out).values()} == {1}
    assert s.state.watermark_ns == before
    assert any(isinstance(r, CountersRow) for r in out)


def test_hourly_rows_sum_the_minutes_and_merge_sketches():
    s = shard(parts=("p-0",), lateness=0)
    calls = [call(t, ms=float(t % 997 + 1)) for t in range(0, 7200, 7)]
    out = s.on_batch([batch("p-0", calls)]) + s.on_eof()
    rows = final_rows(out)
    minutes = [r for (hourly, _, _), r in rows.items() if not hourly]
    hours = [r for (hourly, _, _), r in rows.items() if hourly]
    assert len(hours) == 2
    for hour in hours:
        inside = [m for m in minutes if m.bucket.hour == hour.bucket.hour]
        assert hour.calls == sum(m.calls for m in inside)
        assert hour.latency_max_ms == max(m.latency_max_ms for m in inside)


def test_a_finished_partition_holds_nothing_back_and_the_last_watermark_ignores_the_clock():
    for elapsed in (0.0, 3600.0):  # a fast and a slow run of the same replay
        clock = Clock()
        s = shard(clock=clock)
        s.on_batch([batch("p-0", [call(10)]), batch("p-1", [call(500)])])
        assert s.state.watermark_ns == 10 * NS  # p-0 holds it back
        done = batch("p-0", [], caught_up=True)
        done.finished = True
        s.on_batch([done])
        assert s.state.watermark_ns == 500 * NS  # at once, not after the idle timeout
        clock.now += elapsed
        last = batch("p-1", [], caught_up=True)
        last.finished = True
        s.on_batch([last])
        s.on_notify()
        assert s.state.watermark_ns == 500 * NS  # from the data, whatever the run's pace
