"""Agent sessions: order-independent runs, timeouts, bounded memory."""

import pickle
import random

from observatory.operators.sessions import NS, SessionTracker, session_partials
from observatory.schemas.records import LlmCall


def tool(t_s, name, args="", sid="s1", tenant="t"):
    return LlmCall(
        end_ns=int(t_s * NS),
        tenant=tenant,
        session_id=sid,
        operation="execute_tool",
        tool=name,
        tool_args_hash=args,
    )


def chat(t_s, sid="s1", cost=0.01, tokens=10, tenant="t"):
    return LlmCall(
        end_ns=int(t_s * NS),
        tenant=tenant,
        session_id=sid,
        operation="chat",
        input_tokens=tokens,
        output_tokens=tokens,
        cost_usd=cost,
        agent="bot",
        service="svc",
    )


def run(batches, *, watermark_step=1000):
    tracker = SessionTracker(inactivity_timeout_s=60)
    rows = []
    for calls in batches:
        rows += tracker.merge(session_partials(calls).items())
    rows += tracker.advance(10**6 * NS)
    return {(r.tenant, r.session_id): r for r in rows}


def test_longest_identical_run_is_counted_in_event_time_order():
    # search x3 (same args), then read, then search with other args
    calls = [
        tool(1, "search", "a"),
        tool(2, "search", "a"),
        tool(3, "search", "a"),
        tool(4, "read"),
        tool(5, "search", "b"),
        chat(6),
    ]
    for seed in range(10):
        shuffled = calls[:]
        random.Random(seed).shuffle(shuffled)
        batches = [shuffled[i : i + 2] for i in range(0, len(shuffled), 2)]
        row = run(batches)[("t", "s1")]
        assert row.longest_tool_run == 3 and row.longest_run_tool == "search"
        assert row.tool_calls == 5 and row.llm_calls == 1 and row.distinct_tools == 2
        assert row.status == "ended"


def test_sums_and_fallback_to_trace_id():
    calls = [
        chat(1, cost=0.5),
        chat(2, cost=0.25),
        LlmCall(
            end_ns=3 * NS,
            tenant="t",
            trace_id="abc",
            operation="chat",
            input_tokens=7,
            cost_usd=None,
        ),
    ]
    rows = run([calls])
    s1 = rows[("t", "s1")]
    assert (s1.llm_calls, s1.cost_usd, s1.input_tokens, s1.agent, s1.service) == (
        2,
        0.75,
        20,
        "bot",
        "svc",
    )
    by_trace = rows[("t", "trace:abc")]
    assert by_trace.unpriced_calls == 1 and by_trace.cost_usd == 0.0


def test_same_session_id_in_two_tenants_are_two_sessions():
    rows = run([[chat(1, tenant="a"), chat(2, tenant="b")]])
    assert set(rows) == {("a", "s1"), ("b", "s1")}


def test_sessions_end_after_inactivity_and_are_evicted():
    tracker = SessionTracker(inactivity_timeout_s=60)
    tracker.merge(session_partials([chat(10, sid="old"), chat(100, sid="new")]).items())
    rows = tracker.advance(int(90 * NS))
    # "new" starts after the watermark: it is not written until the watermark passes it.
    assert {r.session_id: r.status for r in rows} == {"old": "ended"}
    assert len(tracker) == 1 and tracker.ended == 1
    rows = tracker.advance(int(110 * NS))
    assert {r.session_id: r.status for r in rows} == {"new": "active"}
    assert tracker.advance(int(115 * NS)) == []  # nothing changed: nothing re-emitted


def test_started_at_is_fixed_at_first_emission():
    tracker = SessionTracker(inactivity_timeout_s=600)
    tracker.merge(session_partials([chat(50)]).items())
    first = tracker.advance(int(60 * NS))[0]
    tracker.merge(session_partials([chat(40)]).items())  # a late, earlier span
    second = tracker.advance(int(70 * NS))[0]
    assert second.started_at == first.started_at
    assert second.first_seen.timestamp() == 40


def test_memory_is_bounded_by_the_session_cap():
    tracker = SessionTracker(inactivity_timeout_s=10**6, max_sessions=100)
    evicted = []
    for i in range(1000):
        evicted += tracker.merge(session_partials([chat(i, sid=f"s{i}")]).items())
    assert len(tracker) == 100
    assert len(evicted) == 900 and all(r.status == "ended" for r in evicted)
    assert {r.session_id for r in evicted} == {f"s{i}" for i in range(900)}


def test_pending_tool_calls_are_bounded_per_session():
    tracker = SessionTracker(inactivity_timeout_s=10**6)
    calls = [tool(i, "loop", "same") for i in range(25_000)]
    tracker.merge(session_partials(calls).items())
    session = next(iter(tracker.sessions.values()))
    assert len(session.pending) <= 10_000
    rows = tracker.flush()
    assert rows[0].longest_tool_run == 25_000


def test_tracker_pickles():
    tracker = SessionTracker(inactivity_timeout_s=60)
    tracker.merge(session_partials([tool(1, "a"), chat(2)]).items())
    clone = pickle.loads(pickle.dumps(tracker))
    assert [r.tool_calls for r in clone.flush()] == [1]


def test_advance_ends_exactly_the_timed_out_sessions_and_writes_every_change():
    """The incremental tracker (touched set + expiry heap) against a brute-force walk."""
    rng = random.Random(5)
    timeout_s = 120
    tracker = SessionTracker(inactivity_timeout_s=timeout_s)
    last_seen: dict[str, int] = {}
    written_changes: dict[str, int] = {}
    watermark = 0
    for _ in range(300):
        calls = [
            (chat if rng.random() < 0.5 else lambda t, sid: tool(t, "grep", sid=sid))(
                (watermark + rng.randint(0, 200) * NS) / NS, sid=f"s{rng.randint(0, 60)}"
            )
            for _ in range(rng.randint(0, 20))
        ]
        tracker.merge(session_partials(calls).items())
        for call in calls:
            sid = call.session_id
            last_seen[sid] = max(last_seen.get(sid, 0), call.end_ns)
            written_changes[sid] = 0
        watermark += rng.randint(0, 90) * NS
        rows = tracker.advance(watermark)
        ended = {r.session_id for r in rows if r.status == "ended"}
        due = {s for s, last in last_seen.items() if last + timeout_s * NS <= watermark}
        assert ended == due
        for sid in due:
            del last_seen[sid]
        assert {s.session_id for s in tracker.sessions.values()} == set(last_seen)
        for row in rows:
            written_changes.pop(row.session_id, None)
        # Every live session with a call the watermark passed has been written.
        for sid in list(written_changes):
            if sid in last_seen and tracker.sessions[f"t\x1f{sid}"].first_ns <= watermark:
                raise AssertionError(f"{sid} changed but was not written")


def test_calls_last_minute_counts_interleaved_llm_and_tool_calls_in_the_minute():
    tracker = SessionTracker(inactivity_timeout_s=600)
    # An old tool call folded after a newer LLM call must still age out of the minute.
    calls = [chat(100), tool(30, "grep"), tool(95, "grep"), chat(150)]
    tracker.merge(session_partials(calls).items())
    [(_, snapshot)] = tracker.snapshots_at(120 * NS)
    assert snapshot.calls_last_minute == 2.0  # 95 and 100; 30 is older than a minute
    [(_, snapshot)] = tracker.snapshots_at(180 * NS)
    assert snapshot.calls_last_minute == 1.0  # 150 only
