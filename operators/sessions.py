"""Agent sessions: per conversation (else per trace), tracked live in event time.

Like the windows, sessions are pre-aggregated per batch where the records
are read (:func:`session_partials`) and merged in the shard that owns the
session. Tool calls are folded in event-time order once the watermark has
passed them, so "the longest run of identical consecutive tool calls" does
not depend on which partition or worker a span came through. A session ends
when the watermark passes its last span by the inactivity timeout; it is then
emitted one last time and evicted, so memory is bounded by the number of
*live* sessions (and a hard cap, which evicts the least recently seen).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter

from observatory.detectors.runaway import SessionSnapshot
from observatory.schemas.records import LlmCall

NS = 1_000_000_000
MINUTE_NS = 60 * NS
_LLM_OPERATIONS = frozenset(("chat", "text_completion", "embeddings"))
#: Distinct tool names remembered per session (the count stops growing there).
MAX_DISTINCT_TOOLS = 256
#: Tool calls waiting for the watermark, per session, before the oldest are folded early.
MAX_PENDING_TOOL_CALLS = 10_000


def session_key(call: LlmCall) -> str:
    """Sessions are per tenant; a span without a session id is its trace's session."""
    sid = call.session_id or (f"trace:{call.trace_id}" if call.trace_id else "")
    return f"{call.tenant}\x1f{sid}" if sid else ""


@dataclass(slots=True)
class SessionPartial:
    """What one batch saw of one session."""

    tenant: str
    session_id: str
    service: str = ""
    agent: str = ""
    first_ns: int = 0
    last_ns: int = 0
    llm_calls: int = 0
    tool_calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0
    #: (end_ns, tool, args_hash) of each tool call, in no particular order
    tool_events: list[tuple[int, str, str]] = field(default_factory=list)
    trace_id: str = ""
    #: (end_ns, cost or None) of each LLM call, in no particular order
    llm_events: list[tuple[int, float | None]] = field(default_factory=list)

    def add(self, call: LlmCall) -> None:
        if not self.service:
            self.service = call.service
        if not self.agent:
            self.agent = call.agent
        if not self.trace_id:
            self.trace_id = call.trace_id
        if not self.first_ns or call.end_ns < self.first_ns:
            self.first_ns = call.end_ns
        if call.end_ns > self.last_ns:
            self.last_ns = call.end_ns
        if call.is_error:
            self.errors += 1
        if call.operation == "execute_tool":
            self.tool_calls += 1
            self.tool_events.append((call.end_ns, call.tool, call.tool_args_hash))
            return
        if call.operation in _LLM_OPERATIONS:
            self.llm_calls += 1
            self.llm_events.append((call.end_ns, call.cost_usd))
            self.input_tokens += call.input_tokens
            self.output_tokens += call.output_tokens
            if call.cost_usd is None:
                self.unpriced_calls += 1
            else:
                self.cost_usd += call.cost_usd


def session_partials(calls: Iterable[LlmCall]) -> dict[str, SessionPartial]:
    """Group calls by session key in one pass.

    >>> calls = [LlmCall(end_ns=1, session_id="s", operation="chat", input_tokens=5),
    ...          LlmCall(end_ns=2, session_id="s", operation="execute_tool", tool="grep")]
    >>> part = session_partials(calls)["default\\x1fs"]
    >>> part.llm_calls, part.tool_calls, part.input_tokens, part.tool_events, part.llm_events
    (1, 1, 5, [(2, 'grep', '')], [(1, None)])
    """
    parts: dict[str, SessionPartial] = {}
    for call in calls:
        key = session_key(call)
        if not key:
            continue
        part = parts.get(key)
        if part is None:
            sid = key.split("\x1f", 1)[1]
            part = parts[key] = SessionPartial(call.tenant, sid)
        part.add(call)
    return parts


@dataclass(slots=True)
class SessionRow:
    """One row of ``agent_sessions``.

    Not frozen: hundreds of thousands are built per minute under load, and a
    frozen dataclass's ``__init__`` costs several times as much.
    """

    tenant: str
    session_id: str
    started_at: datetime  #: first_seen when first written; stable, part of the row key
    service: str
    agent: str
    first_seen: datetime
    last_seen: datetime
    llm_calls: int
    tool_calls: int
    distinct_tools: int
    longest_tool_run: int
    longest_run_tool: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced_calls: int
    errors: int
    status: str  #: "active" or "ended"
    trace_id: str


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / NS, tz=UTC)


def _end_ns(event: tuple) -> int:
    return event[0]


class Session:
    """Live state of one session."""

    __slots__ = (
        "agent",
        "cost_usd",
        "dirty",
        "emitted_ns",
        "errors",
        "first_ns",
        "folded_cost",
        "folded_llm",
        "folded_tools",
        "input_tokens",
        "last_ns",
        "last_tool",
        "llm_calls",
        "longest_run",
        "longest_run_tool",
        "output_tokens",
        "pending",
        "pending_llm",
        "recent",
        "run_length",
        "service",
        "session_id",
        "started_ns",
        "tenant",
        "tool_calls",
        "tools",
        "trace_id",
        "unpriced_calls",
    )

    def __init__(self, tenant: str, session_id: str):
        self.tenant = tenant
        self.session_id = session_id
        self.service = ""
        self.agent = ""
        self.trace_id = ""
        self.first_ns = 0
        self.last_ns = 0
        self.started_ns = 0  # set at first emission, then fixed
        self.llm_calls = 0
        self.tool_calls = 0
        self.errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.unpriced_calls = 0
        self.tools: set[str] = set()
        self.pending: list[tuple[int, str, str]] = []
        self.pending_llm: list[tuple[int, float | None]] = []
        # As of the last fold point, in event-time order: calls and cost so far,
        # and the end times of the calls of the last minute (loop velocity).
        self.folded_llm = 0
        self.folded_tools = 0
        self.folded_cost = 0.0
        self.recent: list[int] = []  # sorted
        self.last_tool: tuple[str, str] | None = None
        self.run_length = 0
        self.longest_run = 0
        self.longest_run_tool = ""
        self.dirty = False
        self.emitted_ns = 0  # the watermark when its row was last written

    def __reduce__(self):
        # Snapshots pickle every live session each interval: one C-level attrgetter
        # call and a module function keep that to a few microseconds per session.
        return _restore_session, _SESSION_STATE(self)

    def merge(self, part: SessionPartial) -> None:
        self.service = self.service or part.service
        self.agent = self.agent or part.agent
        self.trace_id = self.trace_id or part.trace_id
        if not self.first_ns or (part.first_ns and part.first_ns < self.first_ns):
            self.first_ns = part.first_ns
        self.last_ns = max(self.last_ns, part.last_ns)
        self.llm_calls += part.llm_calls
        self.tool_calls += part.tool_calls
        self.errors += part.errors
        self.input_tokens += part.input_tokens
        self.output_tokens += part.output_tokens
        self.cost_usd += part.cost_usd
        self.unpriced_calls += part.unpriced_calls
        for event in part.tool_events:
            if len(self.tools) < MAX_DISTINCT_TOOLS:
                self.tools.add(event[1])
        self.pending.extend(part.tool_events)
        self.pending_llm.extend(part.llm_events)
        excess = len(self.pending) + len(self.pending_llm) - MAX_PENDING_TOOL_CALLS
        if excess > 0:
            # A pathological backlog: fold the oldest early to bound memory.
            times = sorted([e[0] for e in self.pending] + [e[0] for e in self.pending_llm])
            self.fold_until(times[excess] - 1)
        self.dirty = True

    def fold_until(self, watermark_ns: int) -> None:
        """Fold calls at or before the watermark into the running statistics, in time order."""
        recent_before = len(self.recent)
        if self.pending_llm:
            self.pending_llm.sort(key=_end_ns)
            done = 0
            for end_ns, cost in self.pending_llm:
                if end_ns > watermark_ns:
                    break
                done += 1
                self.folded_llm += 1
                self.folded_cost += cost or 0.0
                self.recent.append(end_ns)
            del self.pending_llm[:done]
        if self.pending:
            self.pending.sort()
            done = 0
            for end_ns, tool, args in self.pending:
                if end_ns > watermark_ns:
                    break
                done += 1
                self.folded_tools += 1
                self.recent.append(end_ns)
                current = (tool, args)
                if current == self.last_tool:
                    self.run_length += 1
                else:
                    self.last_tool = current
                    self.run_length = 1
                if self.run_length > self.longest_run:
                    self.longest_run = self.run_length
                    self.longest_run_tool = tool
            if done:
                del self.pending[:done]
                self.dirty = True
        if len(self.recent) != recent_before:
            self.recent.sort()  # LLM and tool calls interleave in time

    def snapshot_as_of(self, watermark_ns: int, stamp_ns: int) -> SessionSnapshot:
        """The session with every call up to the watermark folded, stamped ``stamp_ns``.

        For the hard limits between window boundaries: nothing past the
        watermark is looked at, so the figures never depend on arrival order.
        """
        self.fold_until(watermark_ns)
        return self._snapshot(stamp_ns, self.calls_in_minute(watermark_ns))

    def snapshot_at(self, boundary_ns: int) -> SessionSnapshot | None:
        """The session as of ``boundary_ns``, or None when it was quiet in the last minute.

        Only calls up to the boundary count, in event-time order, so the snapshot
        is the same however the input was batched or replayed.
        """
        self.fold_until(boundary_ns)
        recent = self.recent
        del recent[: bisect_right(recent, boundary_ns - MINUTE_NS)]
        if not recent:
            return None
        return self._snapshot(boundary_ns, self.calls_in_minute(boundary_ns))

    def calls_in_minute(self, as_of_ns: int) -> int:
        """Folded calls in the minute up to ``as_of_ns`` (loop velocity)."""
        recent = self.recent
        return bisect_right(recent, as_of_ns) - bisect_right(recent, as_of_ns - MINUTE_NS)

    def _snapshot(self, stamp_ns: int, calls_last_minute: int) -> SessionSnapshot:
        return SessionSnapshot(
            agent=self.agent,
            t=stamp_ns / NS,
            steps=self.folded_llm + self.folded_tools,
            tool_calls=self.folded_tools,
            llm_calls=self.folded_llm,
            current_identical_run=self.run_length,
            calls_last_minute=float(calls_last_minute),
            cost_usd=self.folded_cost,
            tenant=self.tenant,
            service=self.service,
            session_id=self.session_id,
        )

    def row(self, status: str) -> SessionRow:
        if not self.started_ns:
            self.started_ns = self.first_ns
        return SessionRow(
            tenant=self.tenant,
            session_id=self.session_id,
            started_at=_utc(self.started_ns),
            service=self.service,
            agent=self.agent,
            first_seen=_utc(self.first_ns),
            last_seen=_utc(self.last_ns),
            llm_calls=self.llm_calls,
            tool_calls=self.tool_calls,
            distinct_tools=len(self.tools),
            longest_tool_run=self.longest_run,
            longest_run_tool=self.longest_run_tool,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            unpriced_calls=self.unpriced_calls,
            errors=self.errors,
            status=status,
            trace_id=self.trace_id,
        )


_SESSION_STATE = attrgetter(*Session.__slots__)


def _restore_session(*state) -> Session:
    session = Session.__new__(Session)
    for name, value in zip(Session.__slots__, state, strict=True):
        setattr(session, name, value)
    return session


class SessionTracker:
    """The live sessions of one shard.

    Work at a window boundary follows the traffic, not the number of open
    sessions: only sessions that received calls since they were last written
    (``touched``) are folded and considered for a row, and idle sessions are
    found through a heap ordered by when they would time out.

    >>> tracker = SessionTracker(inactivity_timeout_s=60)
    >>> parts = session_partials([LlmCall(end_ns=10 * NS, session_id="s", operation="chat")])
    >>> tracker.merge(parts.items())
    []
    >>> [row.status for row in tracker.advance(20 * NS)]
    ['active']
    >>> [row.status for row in tracker.advance(100 * NS)], len(tracker)
    (['ended'], 0)
    """

    def __init__(
        self,
        *,
        inactivity_timeout_s: float = 1800.0,
        max_sessions: int = 500_000,
        update_interval_s: float = 0.0,
    ):
        self.timeout_ns = int(inactivity_timeout_s * NS)
        #: A live session's row is rewritten at most this often (its end always is).
        self.update_interval_ns = int(update_interval_s * NS)
        self.max_sessions = max_sessions
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        #: keys of sessions with calls not yet past a snapshot boundary
        self.active: set[str] = set()
        #: keys of sessions with calls not yet folded or not yet written
        self.touched: set[str] = set()
        #: (last_ns + timeout as last seen, key): a lazy heap, one entry per session
        self.expiry: list[tuple[int, str]] = []
        #: keys of sessions with calls not yet checked against the hard limits
        self.fresh: set[str] = set()
        self.ended = 0
        self.evicted_early = 0

    def __len__(self) -> int:
        return len(self.sessions)

    def merge(self, parts: Iterable[tuple[str, SessionPartial]]) -> list[SessionRow]:
        """Merge partials; returns rows of sessions evicted early by the cap."""
        sessions = self.sessions
        out: list[SessionRow] = []
        for key, part in parts:
            session = sessions.get(key)
            if session is None:
                session = sessions[key] = Session(part.tenant, part.session_id)
                session.merge(part)
                heapq.heappush(self.expiry, (session.last_ns + self.timeout_ns, key))
            else:
                sessions.move_to_end(key)
                session.merge(part)
            self.active.add(key)
            self.touched.add(key)
            self.fresh.add(key)
        while len(sessions) > self.max_sessions:
            key, oldest = sessions.popitem(last=False)
            self._forget(key)
            oldest.fold_until(2**62)
            self.evicted_early += 1
            out.append(oldest.row("ended"))
        return out

    def _forget(self, key: str) -> None:
        # Its heap entry stays and is skipped when it comes up.
        self.active.discard(key)
        self.touched.discard(key)
        self.fresh.discard(key)

    def advance(self, watermark_ns: int) -> list[SessionRow]:
        """Fold what the watermark passed, end idle sessions, and emit changed ones."""
        out: list[SessionRow] = []
        self._end_idle(watermark_ns, out)
        sessions = self.sessions
        settled: list[str] = []
        for key in self.touched:
            session = sessions[key]
            session.fold_until(watermark_ns)
            if (
                session.dirty
                and (session.started_ns or session.first_ns <= watermark_ns)
                and watermark_ns - max(session.emitted_ns, session.first_ns)
                >= self.update_interval_ns
            ):
                # A session is first written only once the watermark has passed its
                # first span: every earlier span has arrived by then, so `started_at`
                # (part of the row key) is the same however the input was replayed.
                session.dirty = False
                session.emitted_ns = watermark_ns
                out.append(session.row("active"))
            if not (session.dirty or session.pending or session.pending_llm):
                settled.append(key)
        self.touched.difference_update(settled)
        return out

    def _end_idle(self, watermark_ns: int, out: list[SessionRow]) -> None:
        expiry = self.expiry
        sessions = self.sessions
        while expiry and expiry[0][0] <= watermark_ns:
            _, key = heapq.heappop(expiry)
            session = sessions.get(key)
            if session is None:
                continue  # evicted early by the cap, or ended and gone
            due = session.last_ns + self.timeout_ns
            if due > watermark_ns:
                heapq.heappush(expiry, (due, key))  # it saw calls since: look again then
                continue
            session.fold_until(2**62)
            out.append(session.row("ended"))
            del sessions[key]
            self._forget(key)
            self.ended += 1

    def at_hard_limits(
        self, watermark_ns: int, stamp_ns: int, limits: dict[str, float | None]
    ) -> list[tuple[str, SessionSnapshot]]:
        """Sessions with calls not yet looked at that reach a hard limit as of the watermark.

        ``limits`` maps :class:`SessionSnapshot` features to hard limits (None:
        none). A session stays to be looked at while it holds calls past the
        watermark, so a limit reached by calls that arrived early is seen once
        the watermark passes them. Figures only count calls up to the
        watermark, so they never depend on arrival order.
        """
        max_run = limits.get("current_identical_run") or math.inf
        max_steps = limits.get("steps") or math.inf
        max_cost = limits.get("cost_usd") or math.inf
        max_rate = limits.get("calls_last_minute") or math.inf
        out = []
        done = []
        sessions = self.sessions
        for key in self.fresh:
            session = sessions[key]
            session.fold_until(watermark_ns)
            if (
                session.run_length >= max_run
                or session.folded_llm + session.folded_tools >= max_steps
                or session.folded_cost >= max_cost
                or (max_rate != math.inf and session.calls_in_minute(watermark_ns) >= max_rate)
            ):
                out.append((key, session.snapshot_as_of(watermark_ns, stamp_ns)))
            if not (session.pending or session.pending_llm):
                done.append(key)
        self.fresh.difference_update(done)
        # Sorted for a deterministic order; only the (few) sessions at a limit.
        out.sort(key=lambda item: item[0])
        return out

    def snapshots_at(self, boundary_ns: int) -> list[tuple[Session, SessionSnapshot]]:
        """Snapshots of the sessions active in the minute before ``boundary_ns``.

        Only sessions that received calls lately are looked at (``active``), so
        the cost follows the live traffic, not the number of open sessions.
        """
        out = []
        quiet = []
        sessions = self.sessions
        for key in sorted(self.active):
            session = sessions.get(key)
            snapshot = session.snapshot_at(boundary_ns) if session is not None else None
            if snapshot is None:
                if session is None or not (session.pending or session.pending_llm):
                    quiet.append(key)
                continue
            out.append((session, snapshot))
        self.active.difference_update(quiet)
        return out

    def flush(self) -> list[SessionRow]:
        """Emit every session as it stands (end of input); live ones stay 'active'."""
        out = []
        for session in self.sessions.values():
            session.fold_until(2**62)
            session.dirty = False
            out.append(session.row("active"))
        self.touched.clear()
        return out
