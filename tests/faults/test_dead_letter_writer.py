"""The dead-letter writer against the suite's real broker: nothing dropped quietly,
nothing too large for the topic, nothing doubled."""

from __future__ import annotations

from harness import headers_of, read_topic

from observatory.flows.kafka_io import DeadLetterWriter, client_config

#: A stock broker's limit per record (our infra raises the broker's to 16 MiB).
STOCK_LIMIT = 1_048_588


def source_headers(offset: int) -> list[tuple[str, bytes]]:
    return [
        ("observatory.reason", b"oversized_attribute"),
        ("observatory.source.topic", b"otlp_spans"),
        ("observatory.source.partition", b"0"),
        ("observatory.source.offset", str(offset).encode()),
    ]


def test_small_dead_letters_are_written_whole_and_once(services, new_topic):
    topic = new_topic(1)
    writer = DeadLetterWriter(client_config(services.bootstrap))
    letters = [(topic, f"bad record {i}".encode(), source_headers(i)) for i in range(500)]
    writer.write(letters)
    writer.close()
    got = read_topic(services.bootstrap, topic)
    assert [m.value() for m in got] == [value for _, value, _ in letters]
    assert all(headers_of(m)["observatory.reason"] == b"oversized_attribute" for m in got)


def test_a_dead_letter_too_large_for_the_topic_is_cut_and_says_so(services, new_topic):
    topic = new_topic(1, config={"max.message.bytes": str(STOCK_LIMIT)})
    small_topic = new_topic(1, config={"max.message.bytes": "200000"})
    huge = bytes(range(256)) * (12 * 4096)  # 12 MiB
    writer = DeadLetterWriter(client_config(services.bootstrap))
    writer.write([(topic, huge, source_headers(7)), (small_topic, huge, source_headers(8))])
    writer.close()
    for name, limit, offset in ((topic, STOCK_LIMIT, 7), (small_topic, 200_000, 8)):
        (message,) = read_topic(services.bootstrap, name)
        headers = headers_of(message)
        assert headers["observatory.truncated"] == str(len(huge)).encode()
        assert headers["observatory.source.offset"] == str(offset).encode()
        assert 0 < len(message.value()) < limit
        assert huge.startswith(message.value())
