"""The simulator's labelled incidents are really in the traffic."""

from observatory.flows.traffic import NS, Incident, Simulator

START = 1_790_000_000 * NS


def _loop_tool_calls(calls_per_minute: float) -> int:
    loop = Incident(
        "runaway_loop", START + 45 * NS, START + 115 * NS, 30, "tenant-a", "chat-api",
        agent="coding-agent",
    )  # fmt: skip
    sim = Simulator(
        start_ns=START,
        end_ns=START + 300 * NS,
        calls_per_minute=calls_per_minute,
        incidents=[loop],
        seed=6,
        keep_truth=False,
    )
    return sum(
        1
        for span in sim.stream()
        if span.name.startswith("execute_tool")
        and str(dict(span.attributes or {}).get("gen_ai.conversation.id", "")).startswith("loop-")
    )


def test_a_runaway_loop_starts_even_when_background_traffic_is_too_sparse_to_tick_in_it():
    # 70 s at 30 calls a minute: 35 identical tool calls, with or without background traffic.
    assert _loop_tool_calls(0.001) == 35
    assert _loop_tool_calls(200) == 35
