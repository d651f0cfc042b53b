"""Event-time tumbling windows over pre-aggregated partials, one shard at a time.

Why not Bytewax's ``fold_window``: its watermark is per key and advances with
system time, so results depend on arrival timing and on the worker count.
Here a shard holds many keys and tracks the event-time progress of every
source partition (Flink-style watermarks): the watermark is the slowest busy
partition's latest event time minus a delay, so a replay at any speed and any
parallelism closes the same windows with the same contents.

Lifecycle of a window ``[start, end)``:

* items arrive (``on_batch``) and merge into its accumulator;
* when the watermark passes ``end`` the row is emitted;
* until the watermark passes ``end + allowed_lateness`` late items merge in
  and the full row is emitted again (an idempotent overwrite downstream);
* after that the window is evicted; anything still arriving for it is
  reported as :class:`LateData` (dead-lettered and counted, never dropped).

Hourly rows are folded from the same partials (merged sketches, exact sums).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from observatory.detectors.runaway import RunawayLoop
from observatory.operators.detect import DetectFeed, runaway_observation
from observatory.operators.sessions import SessionPartial, SessionRow, SessionTracker
from observatory.operators.stats import PartialTally, StatsAcc, StatsKey, StatsRow, WindowKey
from observatory.schemas.records import DecodeCounters

NS = 1_000_000_000
HOUR_NS = 3600 * NS


@dataclass(slots=True)
class ShardInput:
    """What one source batch sends to one shard: partials plus progress."""

    partition: str  #: source partition id, e.g. ``otlp_spans-3``
    max_event_ns: int  #: latest event time seen in that partition so far (0: none)
    caught_up: bool  #: the source partition had nothing more to read
    stats: list[tuple[WindowKey, StatsAcc]] = field(default_factory=list)
    counters: DecodeCounters | None = None  #: sent to one shard only, so counted once
    sessions: list[tuple[str, SessionPartial]] = field(default_factory=list)
    finished: bool = False  #: the source partition ended (``--stop-at-end``)


@dataclass(slots=True, frozen=True)
class CountersRow:
    """Running totals of how input was accounted for, kept by one shard."""

    shard: str
    values: tuple[tuple[str, int], ...]


@dataclass(slots=True, frozen=True)
class LateData:
    """Calls that arrived after their window was evicted."""

    key: StatsKey
    window_start: datetime
    window_seconds: int
    calls: int
    cost_usd: float
    watermark: datetime


@dataclass(slots=True)
class _Partition:
    max_event_ns: int = 0
    caught_up: bool = False
    last_data_s: float = 0.0  # system time of its last data (not persisted meaningfully)
    finished: bool = False  # ended (--stop-at-end): it holds nothing back


@dataclass(slots=True)
class _State:
    partitions: dict[str, _Partition] = field(default_factory=dict)
    minutes: dict[int, dict[StatsKey, StatsAcc]] = field(default_factory=dict)
    minutes_emitted: set[int] = field(default_factory=set)
    hours: dict[int, dict[StatsKey, StatsAcc]] = field(default_factory=dict)
    hours_emitted: set[int] = field(default_factory=set)
    watermark_ns: int = 0
    counters: DecodeCounters = field(default_factory=DecodeCounters)
    late_calls: int = 0
    corrections: int = 0
    counters_dirty: bool = False
    sessions: SessionTracker = field(default_factory=SessionTracker)
    sessions_at_window: int = -1  # the window index at which sessions were last emitted
    runaway: RunawayLoop | None = None
    #: sessions with an anomalous runaway verdict, so that their return to normal is sent
    runaway_alerted: set[str] = field(default_factory=set)
    last_boundary_ns: int = 0
    #: hop start -> what arrived for it while its window was open (early checks only)
    hops: dict[int, dict[StatsKey, PartialTally]] = field(default_factory=dict)


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NS, tz=UTC)


class WindowShard:
    """The windows of one shard of keys.

    >>> from observatory.schemas.records import LlmCall
    >>> from observatory.operators.stats import preaggregate
    >>> shard = WindowShard(window_s=60, watermark_delay_s=0, allowed_lateness_s=60,
    ...                     partitions=["t-0"])
    >>> parts = preaggregate([LlmCall(end_ns=10 * NS, model="m")], 60 * NS)
    >>> shard.on_batch([ShardInput("t-0", 10 * NS, False, list(parts.items()))])
    []
    >>> parts = preaggregate([LlmCall(end_ns=70 * NS, model="m")], 60 * NS)
    >>> rows = shard.on_batch([ShardInput("t-0", 70 * NS, False, list(parts.items()))])
    >>> [(r.window_seconds, r.bucket.second, r.calls) for r in rows]
    [(60, 0, 1), (3600, 0, 2)]
    """

    def __init__(
        self,
        *,
        window_s: int,
        watermark_delay_s: float,
        allowed_lateness_s: float,
        partitions: Iterable[str],
        idle_timeout_s: float = 5.0,
        hourly: bool = True,
        session_timeout_s: float = 1800.0,
        max_sessions: int = 500_000,
        session_update_s: float = 0.0,
        detect: bool = False,
        runaway: RunawayLoop | None = None,
        runaway_severity: str = "error",
        checks_per_window: int = 1,
        name: str = "shard",
        resume: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.window_s = window_s
        self.window_ns = window_s * NS
        if self.window_ns % checks_per_window:
            raise ValueError("checks_per_window must divide the window into whole nanoseconds")
        #: Partials arrive binned by hop (1/checks_per_window of a window) when
        #: detection checks windows early; each hop's counts go to the detection
        #: stage once the watermark passes it.
        self.hop_ns = self.window_ns // checks_per_window
        self.delay_ns = int(watermark_delay_s * NS)
        self.lateness_ns = int(allowed_lateness_s * NS)
        self.idle_timeout_s = idle_timeout_s
        self.hourly = hourly
        self.name = name
        self.expected = frozenset(partitions)
        self._clock = clock
        self._counters_at = 0.0
        self.state: _State = (
            pickle.loads(resume)
            if resume
            else _State(
                sessions=SessionTracker(
                    inactivity_timeout_s=session_timeout_s,
                    max_sessions=max_sessions,
                    update_interval_s=session_update_s,
                ),
                runaway=runaway,
            )
        )
        self.detect = detect
        self.early_checks = detect and checks_per_window > 1
        self._hop_index = -1
        if not hasattr(self.state, "hops"):  # a store written before early checks
            self.state.hops = {}
        self.runaway_severity = runaway_severity
        now = clock()
        for part in self.state.partitions.values():
            # System time does not survive a restart: treat every partition as fresh.
            part.last_data_s = now

    # --- watermark --------------------------------------------------------------

    def _observe(self, item: ShardInput, now: float) -> None:
        part = self.state.partitions.get(item.partition)
        if part is None:
            part = self.state.partitions[item.partition] = _Partition(last_data_s=now)
        if item.max_event_ns > part.max_event_ns:
            part.max_event_ns = item.max_event_ns
            part.last_data_s = now
        part.caught_up = item.caught_up
        if item.finished:
            part.finished = True

    def _compute_watermark(self, now: float) -> int:
        parts = self.state.partitions
        if any(p not in parts for p in self.expected):
            return self.state.watermark_ns  # wait until every partition has reported
        busy = [
            p.max_event_ns
            for p in parts.values()
            if not (
                p.finished
                or (
                    p.caught_up
                    # An empty partition holds nothing back; one that had data, for a while.
                    and (p.max_event_ns == 0 or now - p.last_data_s >= self.idle_timeout_s)
                )
            )
        ]
        if busy:
            candidate = min(busy) - self.delay_ns
        elif all(p.finished for p in parts.values()):
            # A replay read everything: the last watermark follows from the data
            # alone, never from how long the run took, so every run evaluates the
            # same windows.
            latest = max((p.max_event_ns for p in parts.values()), default=0)
            candidate = latest - self.delay_ns if latest else 0
        else:
            # Everything is idle: let system time push the last windows out.
            latest = max((p.max_event_ns for p in parts.values()), default=0)
            if latest == 0:
                return self.state.watermark_ns
            quiet_s = now - max(p.last_data_s for p in parts.values())
            candidate = latest - self.delay_ns + int(quiet_s * NS)
        return max(candidate, self.state.watermark_ns)

    # --- the operator's callbacks ----------------------------------------------------

    def on_batch(self, items: list[ShardInput]) -> list[StatsRow | LateData | CountersRow]:
        now = self._clock()
        out: list[StatsRow | LateData] = []
        for item in items:
            self._observe(item, now)
            if item.counters is not None:
                self.state.counters.add(item.counters)
                self.state.counters_dirty = True
            for window_key, acc in item.stats:
                self._merge(window_key, acc, out)
            if item.sessions:
                out.extend(self.state.sessions.merge(item.sessions))
        self._advance(self._compute_watermark(now), out)
        self._emit_counters(out)
        return out

    def on_notify(self) -> list[StatsRow | LateData]:
        out: list[StatsRow | LateData] = []
        self._advance(self._compute_watermark(self._clock()), out)
        return out

    def on_eof(self) -> list[StatsRow | LateData | SessionRow | CountersRow]:
        """The input is exhausted (``--stop-at-end``): write every open window and session.

        Nothing is evicted and the watermark does not move, so a later run that
        resumes from the recovery store carries on from exactly this state.
        """
        state = self.state
        out: list = []
        for start, window in sorted(state.minutes.items()):
            state.minutes_emitted.add(start)
            for key, acc in window.items():
                out.append(StatsRow.from_acc(key, start, self.window_s, acc))
        for hour_start, hour in sorted(state.hours.items()):
            for key, acc in hour.items():
                out.append(StatsRow.from_acc(key, hour_start, 3600, acc, hourly=True))
        out.extend(state.sessions.flush())
        self._emit_counters(out, force=True)
        return out

    def notify_at(self) -> datetime | None:
        if self.state.minutes or self.state.hours or len(self.state.sessions):
            return datetime.fromtimestamp(self._clock() + 1.0, tz=UTC)
        return None

    def snapshot(self) -> bytes:
        # Pickled bytes are an immutable copy, as Bytewax requires.
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)

    def is_empty(self) -> bool:
        return not (self.state.minutes or self.state.hours or len(self.state.sessions))

    # --- internals --------------------------------------------------------------------

    def _session_boundaries(self, watermark: int) -> list:
        """Runaway-loop verdicts on live sessions, as of each window boundary passed."""
        state = self.state
        last = watermark - watermark % self.window_ns
        first = state.last_boundary_ns + self.window_ns if state.last_boundary_ns else last
        # Every boundary counts (a replay moves the watermark many windows at once);
        # only an absurd jump (days of idle system time) is cut short.
        first = max(first, last - 10_000 * self.window_ns)
        observations = []
        for boundary in range(first, last + 1, self.window_ns):
            observations.extend(self._runaway_at(boundary))
        state.last_boundary_ns = max(state.last_boundary_ns, last)
        return observations

    def _runaway_at(self, boundary: int) -> list:
        state = self.state
        if state.runaway is None:
            return []
        out = []
        for session, snapshot in state.sessions.snapshots_at(boundary):
            verdict = state.runaway.update(snapshot)
            key = f"{session.tenant}\x1f{session.session_id}"
            if verdict.anomalous:
                state.runaway_alerted.add(key)
            elif key not in state.runaway_alerted:
                continue  # a normal session: nothing to say
            else:
                state.runaway_alerted.discard(key)
            out.append(
                runaway_observation(
                    verdict, snapshot, window_s=self.window_s, severity=self.runaway_severity
                )
            )
        return out

    def _runaway_now(self, watermark: int) -> list:
        """Hard runaway limits, checked whenever the watermark moves, not only at window ends.

        A loop past a written-down limit is flagged one watermark delay after
        the call that crossed it; the observation carries the open window, the
        one the next boundary check would also report it in.
        """
        state = self.state
        runaway = state.runaway
        if runaway is None or watermark <= 0:
            return []
        stamp = watermark - watermark % self.window_ns + self.window_ns
        out = []
        for key, snapshot in state.sessions.at_hard_limits(watermark, stamp, runaway.hard_limits):
            if key in state.runaway_alerted:
                continue  # already said; the window checks carry it on
            verdict = runaway.hard_limit(snapshot)
            if verdict is None:
                continue
            state.runaway_alerted.add(key)
            out.append(
                runaway_observation(
                    verdict, snapshot, window_s=self.window_s, severity=self.runaway_severity
                )
            )
        return out

    def _emit_counters(self, out: list, force: bool = False) -> None:
        state = self.state
        now = self._clock()
        # At most once a second: these are progress figures, not per-batch data.
        if not force and (not state.counters_dirty or now - self._counters_at < 1.0):
            return
        self._counters_at = now
        state.counters_dirty = False
        c = state.counters
        values = (
            ("records", c.records),
            ("spans", c.spans),
            ("spans_normalized", c.normalized),
            ("spans_skipped_non_genai", c.skipped_non_genai),
            ("spans_dead_lettered", c.dead_lettered_spans),
            ("records_dead_lettered", c.dead_lettered_records),
            ("late_calls_dead_lettered", state.late_calls),
            ("late_corrections", state.corrections),
            ("sessions_live", len(state.sessions)),
            ("sessions_ended", state.sessions.ended),
        )
        out.append(CountersRow(self.name, values))

    def _merge(self, window_key: WindowKey, acc: StatsAcc, out: list) -> None:
        key, bin_start = window_key
        state = self.state
        # Partials may be binned finer than windows (hops, for early checks).
        start = bin_start - bin_start % self.window_ns
        end = start + self.window_ns
        watermark = state.watermark_ns
        if self.early_checks and end > watermark:
            self._tally(key, bin_start, end, acc)
        if end + self.lateness_ns <= watermark and start not in state.minutes:
            state.late_calls += acc.calls
            state.counters_dirty = True
            out.append(
                LateData(key, _utc(start), self.window_s, acc.calls, acc.cost_usd, _utc(watermark))
            )
            return
        window = state.minutes.setdefault(start, {})
        current = window.get(key)
        if current is None:
            window[key] = acc
        else:
            current.merge(acc)
        hour_start = start - start % HOUR_NS
        if self.hourly:
            hour = state.hours.setdefault(hour_start, {})
            hourly = hour.get(key)
            if hourly is None:
                hour[key] = acc.copy()
            else:
                hourly.merge(acc)
        if start in state.minutes_emitted:
            # A correction inside the allowed lateness: re-emit the whole row.
            state.corrections += 1
            state.counters_dirty = True
            out.append(StatsRow.from_acc(key, start, self.window_s, window[key]))
            if self.hourly:
                out.append(
                    StatsRow.from_acc(
                        key, hour_start, 3600, state.hours[hour_start][key], hourly=True
                    )
                )

    def _tally(self, key: StatsKey, bin_start: int, window_end: int, acc: StatsAcc) -> None:
        """Count a partial of an open window in the earliest hop the watermark has not passed.

        The detection stage sums a window's hops as they pass, so a partial
        that comes after its own hop has passed still counts from the next
        check on. The last hop of a window is not tallied: the closed
        window's own check covers it.
        """
        watermark = self.state.watermark_ns
        hop = max(bin_start, watermark - watermark % self.hop_ns)
        if hop + self.hop_ns >= window_end:
            return
        tallies = self.state.hops.setdefault(hop, {})
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = PartialTally()
        tally.add(acc)

    def _passed_hops(self, watermark: int) -> list[tuple[int, list[tuple[StatsKey, PartialTally]]]]:
        hops = self.state.hops
        passed = sorted(start for start in hops if start + self.hop_ns <= watermark)
        return [(start, list(hops.pop(start).items())) for start in passed]

    def _advance(self, watermark: int, out: list) -> None:
        state = self.state
        state.watermark_ns = max(state.watermark_ns, watermark)
        watermark = state.watermark_ns
        # Sessions are written when the watermark enters a new window, not per batch.
        window_index = watermark // self.window_ns
        crossed = window_index != state.sessions_at_window
        observations = self._session_boundaries(watermark) if crossed and self.detect else []
        if crossed:
            state.sessions_at_window = window_index
            out.extend(state.sessions.advance(watermark))
        closed: list = []
        for start in sorted(state.minutes):
            end = start + self.window_ns
            if end > watermark:
                break
            if start not in state.minutes_emitted:
                state.minutes_emitted.add(start)
                if self.detect:
                    # Copies: late corrections must not change what was evaluated.
                    closed.append(
                        (start, [(key, acc.copy()) for key, acc in state.minutes[start].items()])
                    )
                hour_start = start - start % HOUR_NS
                for key, acc in state.minutes[start].items():
                    out.append(StatsRow.from_acc(key, start, self.window_s, acc))
                    if self.hourly:
                        # The hour so far; the final value follows when the hour closes.
                        hourly = state.hours[hour_start][key]
                        out.append(StatsRow.from_acc(key, hour_start, 3600, hourly, hourly=True))
            if end + self.lateness_ns <= watermark:
                del state.minutes[start]
                state.minutes_emitted.discard(start)
        early = self._runaway_now(watermark) if self.detect else []
        hops: list = []
        if self.early_checks:
            # Every shard reports each hop it passes, data or not: the stage checks
            # a hop once all shards are past it.
            hop_index = watermark // self.hop_ns
            crossed = crossed or hop_index != self._hop_index
            self._hop_index = hop_index
            hops = self._passed_hops(watermark)
        if self.detect and (crossed or closed or early or hops):
            out.append(DetectFeed("", watermark, closed, observations, early, hops))
        for hour_start in sorted(state.hours):
            end = hour_start + HOUR_NS
            if end > watermark:
                break
            if hour_start not in state.hours_emitted:
                state.hours_emitted.add(hour_start)
                for key, acc in state.hours[hour_start].items():
                    out.append(StatsRow.from_acc(key, hour_start, 3600, acc, hourly=True))
            # An hour is evicted only after its last minute window is.
            last_minute = end - self.window_ns
            if end + self.lateness_ns <= watermark and last_minute not in state.minutes:
                del state.hours[hour_start]
                state.hours_emitted.discard(hour_start)
