"""Kafka input and dead-letter output for the flows.

The source is Bytewax's partitioned-source contract (one Bytewax partition
per Kafka partition, resume state = next offset, kept in the recovery
snapshots) with three differences from ``bytewax.connectors.kafka``:

* it emits one :class:`RecordBatch` per poll instead of one item per message,
  so the decode step can pre-aggregate a whole batch in one call;
* with ``stop_at_end`` it reads up to the end offsets present when it starts
  and then ends (the backfill/replay mode), rather than until the first EOF;
* it reports when a partition has caught up, which drives idle-partition
  handling of the event-time watermark.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from observatory.schemas.records import DeadLetter, KafkaRecord, RecordBatch

log = logging.getLogger("observatory.kafka")

_IDLE_POLL = timedelta(milliseconds=50)


class KafkaUnavailable(Exception):
    """The broker did not answer, or a topic is missing."""


def client_config(bootstrap: str, extra: dict[str, str | int | bool] | None = None) -> dict:
    config: dict = {"bootstrap.servers": bootstrap}
    config.update({k: v for k, v in (extra or {}).items()})
    return config


def check_topics(config: dict, topics: Iterable[str], timeout_s: float) -> dict[str, int]:
    """Partition count of each topic; raises :class:`KafkaUnavailable` with one clear line."""
    # librdkafka's own connection errors go to our debug log: the one line we
    # raise says what is wrong.
    try:
        admin = AdminClient(
            {**config, "socket.connection.setup.timeout.ms": int(timeout_s * 1000)},
            logger=logging.getLogger("observatory.kafka.client"),
        )
    except KafkaException as exc:
        # A setting librdkafka refuses (a missing CA file, an unknown property): the
        # user can fix it, so one line, not a traceback. librdkafka names the
        # property, never its value.
        raise KafkaUnavailable(
            f"invalid Kafka client settings (kafka.client): "
            f"{exc.args[0].str() if exc.args else exc}"
        ) from None
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {config['bootstrap.servers']} within {timeout_s:.0f}s "
            f"({exc.args[0].str() if exc.args else exc})"
        ) from None
    counts = {}
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise KafkaUnavailable(
                f"Kafka topic {topic!r} does not exist on {config['bootstrap.servers']} "
                "(create it, or run `observatory infra up`)"
            )
        counts[topic] = len(found.partitions)
    return counts


class _BatchPartition(StatefulSourcePartition[RecordBatch, int]):
    def __init__(
        self,
        config: dict,
        topic: str,
        partition: int,
        resume_offset: int | None,
        batch_size: int,
        stop_at_end: bool,
    ):
        self._topic = topic
        self._partition = partition
        self._part_id = f"{topic}-{partition}"
        self._batch_size = batch_size
        self._consumer = Consumer(config)
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=30
        )
        self._offset = resume_offset if resume_offset is not None else low
        self._end = high if stop_at_end else None
        self._consumer.assign(
            [
                TopicPartition(
                    topic, partition, self._offset if self._offset >= 0 else OFFSET_BEGINNING
                )
            ]
        )
        self._reported = False
        self._final_reported = False
        self._was_caught_up = False
        self._awake: datetime | None = None
        self._end_offset_failing = False

    def next_batch(self) -> list[RecordBatch]:
        if self._end is not None and self._offset >= self._end:
            if self._final_reported:
                raise StopIteration()
            # Say "caught up" once before ending, so that the watermark does not
            # wait for a partition that has nothing more to give.
            self._final_reported = True
            return [RecordBatch(self._part_id, [], caught_up=True, finished=True)]
        messages = self._consumer.consume(self._batch_size, 0)
        records: list[KafkaRecord] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("Kafka %s: %s", self._part_id, error.str())
                continue
            offset = message.offset()
            if self._end is not None and offset >= self._end:
                break
            records.append(
                KafkaRecord(
                    self._topic,
                    self._partition,
                    offset,
                    message.key(),
                    message.value(),
                    message.headers() or [],
                    message.timestamp()[1],
                )
            )
            self._offset = offset + 1
        # "Caught up" must mean at the end of the log, not "this poll was empty":
        # a fetch still in flight also returns nothing, and a backlogged partition
        # wrongly reported idle would let the watermark run ahead of its data.
        caught_up = not records and self._at_end()
        # Sleep a little when there was nothing, instead of spinning.
        self._awake = datetime.now(UTC) + _IDLE_POLL if not records else None
        if records or not self._reported or caught_up != self._was_caught_up:
            self._reported = True
            self._was_caught_up = caught_up
            return [RecordBatch(self._part_id, records, caught_up)]
        return []

    def _at_end(self) -> bool:
        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._partition), timeout=5
            )
        except KafkaException as exc:
            # Asked on every idle poll (20 times a second per partition): while the
            # broker is away, say so once, not 20 times a second.
            if not self._end_offset_failing:
                log.warning(
                    "Kafka %s: cannot read the end offset (%s); retrying quietly",
                    self._part_id,
                    exc.args[0].str() if exc.args else exc,
                )
                self._end_offset_failing = True
            return False
        if self._end_offset_failing:
            log.info("Kafka %s: the end offset is readable again", self._part_id)
            self._end_offset_failing = False
        return self._offset >= high

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class KafkaBatchSource(FixedPartitionedSource[RecordBatch, int]):
    """Read topics as batches of records, one Bytewax partition per Kafka partition."""

    def __init__(
        self,
        config: dict,
        topics: list[str],
        *,
        batch_size: int = 2000,
        stop_at_end: bool = False,
    ):
        self._config = config
        self._topics = topics
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end

    def list_parts(self) -> list[str]:
        counts = check_topics(self._config, self._topics, timeout_s=30)
        return [f"{topic}-{i}" for topic, n in counts.items() for i in range(n)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _BatchPartition:
        topic, _, index = for_part.rpartition("-")
        config = {
            **self._config,
            "group.id": "observatory-unused",  # offsets live in the recovery store
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
        }
        return _BatchPartition(
            config, topic, int(index), resume_state, self._batch_size, self._stop_at_end
        )


def dead_letter_headers(dead: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers plus ours, which name the reason and the source."""
    ours = [
        ("observatory.reason", dead.reason.encode()),
        ("observatory.detail", dead.detail.encode("utf-8", "replace")),
        ("observatory.source.topic", dead.source.topic.encode()),
        ("observatory.source.partition", str(dead.source.partition).encode()),
        ("observatory.source.offset", str(dead.source.offset).encode()),
    ]
    return [*((k, v) for k, v in dead.headers if not k.startswith("observatory.")), *ours]


def produce(producer, topic: str, value: bytes, headers: list[tuple[str, bytes]], **kwargs) -> None:
    """Produce one record, waiting (not failing) while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, headers=headers, **kwargs)
            break
        except BufferError:
            producer.poll(0.1)  # the local queue is full: let it drain
    producer.poll(0)


# --- dead letters -----------------------------------------------------------------------

#: Room left for headers and record overhead under the producer's message limit.
_HEADROOM_BYTES = 64 * 1024
#: librdkafka's default message.max.bytes, and the default limit of a Kafka broker.
_DEFAULT_MAX_MESSAGE_BYTES = 1_000_000


class DeadLetterWriter:
    """Produce dead letters and wait until Kafka has every one of them.

    Unlike a plain producer it loses nothing quietly: a write returns only when
    each record is acknowledged (librdkafka retries while the broker is away, for
    ``message.timeout.ms``, unlimited by default: the worker waits and reads
    nothing new, as with the database), and a failure raises, so the batch is
    written again after a restart. Idempotence keeps those retries from doubling
    records. A value too large for the producer's or the topic's size limit (a
    bad record can be tens of MB) is cut, and the record says so in
    ``observatory.truncated`` (the original size); the source topic, partition
    and offset headers still point at the whole original.
    """

    def __init__(self, config: dict):
        self._max_bytes = int(config.get("message.max.bytes", _DEFAULT_MAX_MESSAGE_BYTES))
        self._producer = Producer(
            {
                "enable.idempotence": True,
                "message.timeout.ms": 0,  # retry until delivered: never drop quietly
                "linger.ms": 20,
                **config,
            }
        )

    def write(self, messages: Iterable[tuple[str, bytes | None, list[tuple[str, bytes]]]]) -> None:
        pending = [
            fit(topic, value, headers, self._max_bytes) for topic, value, headers in messages
        ]
        while pending:
            failed = self._send(pending)
            too_large = [m for m, code in failed if code == KafkaError.MSG_SIZE_TOO_LARGE]
            if len(too_large) < len(failed):
                code = next(code for _, code in failed if code != KafkaError.MSG_SIZE_TOO_LARGE)
                raise KafkaException(KafkaError(code))
            # The topic allows less than the producer: cut harder and send again.
            pending = [fit(t, v, h, _HEADROOM_BYTES + len(v or b"") // 4) for t, v, h in too_large]

    def _send(self, messages: list) -> list[tuple[tuple, int]]:
        """Produce and flush; returns (message, error code) of those not delivered."""
        failed: list[tuple[tuple, int]] = []
        for message in messages:
            topic, value, headers = message

            def on_delivery(err, _msg, message=message):
                if err is not None:
                    failed.append((message, err.code()))

            produce(self._producer, topic, value, headers, on_delivery=on_delivery)
        self._producer.flush()
        return failed

    def close(self) -> None:
        self._producer.flush()


def fit(
    topic: str, value: bytes | None, headers: list[tuple[str, bytes]], max_bytes: int
) -> tuple[str, bytes | None, list[tuple[str, bytes]]]:
    """The message, its value cut to what ``max_bytes`` leaves after headers.

    >>> fit("dlq", b"x" * 10, [], 1_000_000)[1] == b"x" * 10
    True
    >>> _, value, headers = fit("dlq", b"x" * 200_000, [("a", b"b")], 100_000)
    >>> len(value), headers[-1]
    (34462, ('observatory.truncated', b'200000'))
    """
    header_bytes = sum(len(k) + len(v) for k, v in headers)
    room = max(max_bytes - _HEADROOM_BYTES - header_bytes, 0)
    if value is None or len(value) <= room:
        return topic, value, headers
    if any(k == "observatory.truncated" for k, _ in headers):  # cut again: keep the first size
        return topic, value[:room], headers
    return topic, value[:room], [*headers, ("observatory.truncated", str(len(value)).encode())]


class _DeadLetterPartition(StatelessSinkPartition):
    def __init__(self, writer: DeadLetterWriter):
        self._writer = writer

    def write_batch(self, items: list) -> None:
        self._writer.write((m.topic, m.value, list(m.headers)) for m in items)

    def close(self) -> None:
        self._writer.close()


class DeadLetterSink(DynamicSink):
    """Bytewax sink of ``KafkaSinkMessage`` dead letters (each names its topic),
    written by a :class:`DeadLetterWriter` per worker."""

    def __init__(self, config: dict):
        self._config = config

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(DeadLetterWriter(self._config))
