"""Alert lifecycle: detector verdicts in, notifications out, deterministically.

:class:`AlertLifecycle` keeps, per dedup key (kind + subject), what it needs
to decide when to notify, and nothing else. It is pure (no clock, no I/O):
its only clock is the event time of the windows it is fed, so replaying the
same observations (after a crash, from a snapshot) yields the same alerts
with the same sequence numbers, and the outbox drops the repeats.

Rules, per key, for observations in event-time order (``window_end``
increasing; an observation not after the key's last one is ignored):

open
    when at least ``open_after_windows`` (M) of the last ``open_window`` (N)
    windows are anomalous and the current one is (M = N = 1: the first
    anomalous window opens). Sequence 1; ``opened_at`` = that window's end.
    A window with no observation (a gap in ``window_end``, measured in
    window lengths) counts as not anomalous here and breaks a streak, but
    does not count towards resolving.
dedup
    while firing, anomalous windows notify nothing, except:
re-notify
    an anomalous window at least ``renotify_interval`` (event time) after the
    last notification (0 disables), or whose severity is above the last
    notified one (escalation, immediately). Sequence + 1.
resolve
    after ``resolve_after_windows`` consecutive normal windows: one resolve,
    the last sequence of the incident, to every route the incident was sent to.
flapping
    a key that resolved less than ``flap_window`` ago (event time from the
    resolve to the new window's end) does not re-open on the usual M of N:
    it needs ``flap_open_windows`` *consecutive* anomalous windows, and an
    incident opened that way is marked ``flapping`` and resolves only after
    ``flap_resolve_windows`` normal windows. Anomalous windows that do not
    reach that are absorbed silently (counted in ``counters``).
no data
    the lifecycle's clock is the latest ``window_end`` it has seen (any key).
    A key with no observation for ``idle_timeout`` of that clock is forgotten;
    if it was firing it is first resolved with ``resolve_reason = no_data``
    (``detected_at`` = its last window end + ``idle_timeout``).

Memory holds only keys that are firing, have an anomalous window among their
last N, or resolved less than ``flap_window`` ago; a normal key with nothing
to remember is dropped at once. Past ``max_keys`` the least recently seen
non-firing keys are evicted (firing keys are kept, so their resolve is sent).

Outcomes depend on the order of observations of each key only, except the
no-data rule (which uses the shared clock): a key lagging others by more
than ``idle_timeout`` could be expired early. Keep ``idle_timeout`` well
above the watermark delay.
"""

from __future__ import annotations

import heapq
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from observatory.schemas.alerts import (
    SEVERITIES,
    Alert,
    Observation,
    RouteRule,
    select_routes,
    severity_rank,
    summarize,
)

__all__ = ["AlertLifecycle", "LifecyclePolicy"]


def _windows_between(previous: Observation, current: Observation) -> int:
    """How many windows ``current`` is after ``previous`` (at least 1, at most 64).

    The longer of the two is the window length: an early observation covers
    only the part of its window seen so far.
    """
    length = max(
        current.window_end - current.window_start, previous.window_end - previous.window_start
    )
    if length <= timedelta(0):
        return 1
    return min(64, max(1, round((current.window_end - previous.window_end) / length)))


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """The knobs (``alerts:`` in the YAML, see ``sinks/alerts.py``)."""

    open_after_windows: int = 1
    open_window: int = 1
    renotify_interval_s: float = 4 * 3600.0
    resolve_after_windows: int = 3
    flap_window_s: float = 3600.0
    flap_open_windows: int = 3
    flap_resolve_windows: int = 6
    idle_timeout_s: float = 3600.0
    max_keys: int = 100_000
    route_rules: tuple[RouteRule, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.open_after_windows <= self.open_window <= 64:
            raise ValueError("need 1 <= open_after_windows <= open_window <= 64")
        for name in ("resolve_after_windows", "flap_open_windows", "flap_resolve_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.renotify_interval_s < 0 or self.flap_window_s < 0:
            raise ValueError("intervals cannot be negative")
        if self.idle_timeout_s <= 0:
            raise ValueError("idle_timeout_s must be positive")
        if self.max_keys < 1:
            raise ValueError("max_keys must be at least 1")

    @property
    def renotify_interval(self) -> timedelta:
        return timedelta(seconds=self.renotify_interval_s)

    @property
    def flap_window(self) -> timedelta:
        return timedelta(seconds=self.flap_window_s)

    @property
    def idle_timeout(self) -> timedelta:
        return timedelta(seconds=self.idle_timeout_s)


@dataclass(slots=True)
class _Key:
    """What is remembered about one dedup key."""

    last: Observation
    #: bit i set = the window i observations back was anomalous (bit 0: the latest).
    history: int = 0
    consecutive_anomalous: int = 0
    consecutive_normal: int = 0
    firing: bool = False
    sequence: int = 0
    opened_at: datetime | None = None
    last_notified_at: datetime | None = None
    notified_rank: int = -1
    max_rank: int = -1
    routes: tuple[str, ...] = ()
    flapping: bool = False
    anomalous_windows: int = 0
    resolved_at: datetime | None = None


@dataclass(slots=True)
class _State:
    keys: dict[str, _Key] = field(default_factory=dict)
    #: (deadline, dedup_key): min-heap of idle deadlines; stale entries are skipped.
    deadlines: list[tuple[datetime, str]] = field(default_factory=list)
    clock: datetime | None = None
    counters: dict[str, int] = field(default_factory=dict)


def _count(state: _State, name: str, n: int = 1) -> None:
    state.counters[name] = state.counters.get(name, 0) + n


class AlertLifecycle:
    """Per dedup key incident state: open, dedup, re-notify, resolve, flap suppression.

    Picklable; :meth:`snapshot` / ``resume=`` carry the state only, so a
    restart may change the policy.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    >>> def obs(minute, anomalous):
    ...     start = t0 + timedelta(minutes=minute)
    ...     return Observation(kind="cost_spike", subject={"model": "gpt-4o"}, tenant="acme",
    ...                        window_start=start, window_end=start + timedelta(minutes=1),
    ...                        anomalous=anomalous, score=9.0 if anomalous else 0.5,
    ...                        observed=12.0 if anomalous else 2.0, expected=2.0)
    >>> life = AlertLifecycle(LifecyclePolicy(resolve_after_windows=2))
    >>> alerts = [a for m, bad in enumerate([1, 1, 0, 0, 0]) for a in life.observe(obs(m, bad))]
    >>> [(a.state, a.sequence) for a in alerts]
    [('firing', 1), ('resolved', 2)]
    """

    def __init__(self, policy: LifecyclePolicy | None = None, *, resume: bytes | None = None):
        self.policy = policy or LifecyclePolicy()
        self._state: _State = pickle.loads(resume) if resume else _State()

    # --- state ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return pickle.dumps(self._state, protocol=pickle.HIGHEST_PROTOCOL)

    def __len__(self) -> int:
        return len(self._state.keys)

    def __contains__(self, key: str) -> bool:
        return key in self._state.keys

    @property
    def clock(self) -> datetime | None:
        """The latest window end seen: the lifecycle's only clock."""
        return self._state.clock

    @property
    def counters(self) -> dict[str, int]:
        """ignored_out_of_order, flap_suppressed, expired_idle, evicted_over_capacity, ..."""
        return dict(self._state.counters)

    def firing_keys(self) -> list[str]:
        return [k for k, s in self._state.keys.items() if s.firing]

    # --- input ---------------------------------------------------------------------------

    def on_batch(self, observations: Iterable[Observation]) -> list[Alert]:
        alerts: list[Alert] = []
        for observation in observations:
            alerts.extend(self.observe(observation))
        return alerts

    def advance_to(self, moment: datetime) -> list[Alert]:
        """Move the clock (e.g. to the watermark) without an observation; expires idle keys."""
        state = self._state
        if state.clock is None or moment > state.clock:
            state.clock = moment
        return self._expire()

    def observe(self, obs: Observation) -> list[Alert]:
        """Feed one observation; returns the alerts to deliver (usually none)."""
        state = self._state
        policy = self.policy
        alerts = self.advance_to(obs.window_end)
        key = obs.dedup_key
        st = state.keys.get(key)
        if st is not None and obs.window_end <= st.last.window_end:
            _count(state, "ignored_out_of_order")
            return alerts
        if st is None:
            self._make_room()
            st = state.keys[key] = _Key(last=obs)
        elapsed = _windows_between(st.last, obs) if st.last is not obs else 1
        st.last = obs
        st.history, st.consecutive_anomalous = self._streaks(st, elapsed, obs.anomalous)
        if obs.anomalous:
            st.consecutive_normal = 0
        else:
            st.consecutive_normal += 1

        if st.firing:
            alerts.extend(self._while_firing(st, obs))
        elif obs.anomalous:
            alerts.extend(self._maybe_open(st, obs))

        if self._forgettable(st, obs):
            del state.keys[key]
        else:
            heapq.heappush(state.deadlines, (obs.window_end + policy.idle_timeout, key))
            if len(state.deadlines) > 2 * len(state.keys) + 1024:
                self._compact()
        return alerts

    def observe_early(self, obs: Observation) -> list[Alert]:
        """An anomalous verdict on a window still open: it opens its alert now, or does nothing.

        The window's own observation still comes when it closes. So that one
        window never counts twice towards opening, an early observation is
        taken only when it opens the alert by itself (this window anomalous
        plus the history, under the usual rules); otherwise, and when the key
        is already firing, nothing changes.

        >>> from datetime import UTC
        >>> t0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
        >>> def obs(seconds, anomalous=True):
        ...     return Observation(kind="error_surge", subject={"model": "m"}, window_start=t0,
        ...                        window_end=t0 + timedelta(seconds=seconds),
        ...                        anomalous=anomalous, score=9.0, observed=0.5, expected=0.02)
        >>> life = AlertLifecycle(LifecyclePolicy(open_after_windows=1))
        >>> [a.detected_at.second for a in life.observe_early(obs(30))]
        [30]
        >>> life.observe(obs(60)), life.observe_early(obs(45))  # the same incident
        ([], [])
        >>> strict = AlertLifecycle(LifecyclePolicy(open_after_windows=2, open_window=3))
        >>> strict.observe_early(obs(30)), len(strict)  # one window is not enough
        ([], 0)
        """
        if not obs.anomalous:
            return []
        st = self._state.keys.get(obs.dedup_key)
        if st is not None and (st.firing or obs.window_end <= st.last.window_end):
            return []
        if st is None:
            history, streak = self._streaks(None, 1, True)
        else:
            history, streak = self._streaks(st, _windows_between(st.last, obs), True)
        if not self._opens(st, obs, history, streak)[0]:
            return []
        return self.observe(obs)

    # --- rules ---------------------------------------------------------------------------

    def _streaks(self, st: _Key | None, elapsed: int, anomalous: bool) -> tuple[int, int]:
        """(history, consecutive anomalous windows) after one more window ``elapsed`` later."""
        mask = (1 << self.policy.open_window) - 1
        if st is None:
            return int(anomalous) & mask, int(anomalous)
        history = ((st.history << elapsed) | int(anomalous)) & mask
        # Windows without a verdict are not anomalous, so a gap breaks a streak.
        streak = st.consecutive_anomalous if elapsed == 1 else 0
        return history, streak + 1 if anomalous else 0

    def _opens(
        self, st: _Key | None, obs: Observation, history: int, streak: int
    ) -> tuple[bool, bool]:
        """(whether an anomalous ``obs`` opens the alert, whether the key is flapping)."""
        policy = self.policy
        in_flap = (
            st is not None
            and st.resolved_at is not None
            and policy.flap_window_s > 0
            and obs.window_end - st.resolved_at < policy.flap_window
        )
        if in_flap:
            return streak >= policy.flap_open_windows, True
        return history.bit_count() >= policy.open_after_windows, False

    def _maybe_open(self, st: _Key, obs: Observation) -> list[Alert]:
        opens, in_flap = self._opens(st, obs, st.history, st.consecutive_anomalous)
        if not opens:
            if in_flap:
                _count(self._state, "flap_suppressed")
            return []
        rank = severity_rank(obs.severity)
        st.firing = True
        st.flapping = in_flap
        st.sequence = 1
        st.opened_at = obs.window_end
        st.last_notified_at = obs.window_end
        st.notified_rank = st.max_rank = rank
        st.anomalous_windows = max(st.history.bit_count(), st.consecutive_anomalous)
        st.routes = ()
        _count(self._state, "opened")
        return [self._notify(st, obs, "open")]

    def _while_firing(self, st: _Key, obs: Observation) -> list[Alert]:
        policy = self.policy
        if obs.anomalous:
            st.anomalous_windows += 1
            rank = severity_rank(obs.severity)
            st.max_rank = max(st.max_rank, rank)
            assert st.last_notified_at is not None
            due = (
                policy.renotify_interval_s > 0
                and obs.window_end - st.last_notified_at >= policy.renotify_interval
            )
            if rank > st.notified_rank:
                kind = "escalation"
            elif due:
                kind = "renotify"
            else:
                return []
            st.sequence += 1
            st.last_notified_at = obs.window_end
            st.notified_rank = rank
            _count(self._state, kind)
            return [self._notify(st, obs, kind)]
        needed = policy.flap_resolve_windows if st.flapping else policy.resolve_after_windows
        if st.consecutive_normal < needed:
            return []
        return [self._resolve(st, obs, obs.window_end, "normal", f"normal for {needed} windows")]

    def _resolve(self, st: _Key, obs: Observation, at: datetime, reason: str, note: str) -> Alert:
        st.sequence += 1
        alert = self._alert(
            st,
            obs,
            state="resolved",
            severity=SEVERITIES[max(st.max_rank, 0)],
            detected_at=at,
            routes=st.routes,
            extra=(("notification", "resolve"), ("resolve_reason", reason)),
            resolve_note=note,
        )
        st.firing = False
        st.flapping = False
        st.resolved_at = at
        st.history = 0
        st.consecutive_anomalous = st.consecutive_normal = 0
        st.routes = ()
        _count(self._state, "resolved")
        return alert

    def _notify(self, st: _Key, obs: Observation, kind: str) -> Alert:
        routes = select_routes(self.policy.route_rules, obs.kind, obs.tenant, obs.severity)
        st.routes = st.routes + tuple(r for r in routes if r not in st.routes)
        return self._alert(
            st,
            obs,
            state="firing",
            severity=obs.severity,
            detected_at=obs.window_end,
            routes=routes,
            extra=(("notification", kind),),
        )

    def _alert(
        self,
        st: _Key,
        obs: Observation,
        *,
        state: str,
        severity: str,
        detected_at: datetime,
        routes: tuple[str, ...],
        extra: tuple,
        resolve_note: str = "",
    ) -> Alert:
        assert st.opened_at is not None
        lifecycle = (
            *extra,
            ("anomalous_windows", st.anomalous_windows),
            ("flapping", st.flapping),
        )
        names = {name for name, _ in lifecycle}
        details = tuple(p for p in obs.details if p[0] not in names) + lifecycle
        return Alert(
            dedup_key=obs.dedup_key,
            sequence=st.sequence,
            state=state,  # type: ignore[arg-type]
            kind=obs.kind,
            detector=obs.detector,
            severity=severity,  # type: ignore[arg-type]
            tenant=obs.tenant,
            subject=obs.subject,
            summary=summarize(
                kind=obs.kind,
                tenant=obs.tenant,
                subject=obs.subject,
                observed=obs.observed,
                expected=obs.expected,
                score=obs.score,
                window_start=obs.window_start,
                window_end=obs.window_end,
                metric=obs.metric,
                resolved=state == "resolved",
                resolve_note=resolve_note,
            ),
            observed=obs.observed,
            expected=obs.expected,
            score=obs.score,
            window_start=obs.window_start,
            window_end=obs.window_end,
            detected_at=detected_at,
            opened_at=st.opened_at,
            metric=obs.metric,
            exemplar_trace_ids=obs.exemplar_trace_ids,
            session_id=obs.session_id,
            details=details,
            routes=routes,
        )

    # --- memory --------------------------------------------------------------------------

    def _forgettable(self, st: _Key, obs: Observation) -> bool:
        if st.firing or st.history or st.consecutive_anomalous:
            return False
        return st.resolved_at is None or obs.window_end - st.resolved_at >= self.policy.flap_window

    def _expire(self) -> list[Alert]:
        state = self._state
        if state.clock is None:
            return []
        idle = self.policy.idle_timeout
        alerts: list[Alert] = []
        heap = state.deadlines
        while heap and heap[0][0] <= state.clock:
            deadline, key = heapq.heappop(heap)
            st = state.keys.get(key)
            if st is None or st.last.window_end + idle != deadline:
                continue  # superseded by a later observation, or already gone
            if st.firing:
                minutes = self.policy.idle_timeout_s / 60
                note = f"no data for {minutes:g} min"
                alerts.append(self._resolve(st, st.last, deadline, "no_data", note))
            del state.keys[key]
            _count(state, "expired_idle")
        return alerts

    def _make_room(self) -> None:
        """Before adding a key at capacity, evict ~1% least recently seen non-firing keys."""
        state = self._state
        if len(state.keys) < self.policy.max_keys:
            return
        idle = sorted((st.last.window_end, key) for key, st in state.keys.items() if not st.firing)
        for _, key in idle[: max(1, self.policy.max_keys // 100)]:
            del state.keys[key]
            _count(state, "evicted_over_capacity")
        if len(state.keys) >= self.policy.max_keys:
            _count(state, "over_capacity_firing")

    def _compact(self) -> None:
        state = self._state
        idle = self.policy.idle_timeout
        state.deadlines = [(st.last.window_end + idle, k) for k, st in state.keys.items()]
        heapq.heapify(state.deadlines)
