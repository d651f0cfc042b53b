"""What every sink shares: batching, retries with backoff, and backpressure.

A sink writes a batch synchronously inside the Bytewax worker. While a write
is failing the worker retries the *same* batch and reads nothing new, so the
pressure goes back to Kafka (which buffers durably) instead of into memory:
at most one batch per worker is held. Writes must be idempotent, because a
retried batch, and a batch replayed after a restart, is written again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("observatory.sinks")

T = TypeVar("T")


class GiveUp(Exception):
    """Retrying stopped: the deadline passed or the error is permanent."""


@dataclass(slots=True, frozen=True)
class Backoff:
    """Exponential backoff with full jitter.

    >>> b = Backoff(initial_s=0.5, max_s=8.0)
    >>> [b.ceiling(n) for n in range(6)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    """

    initial_s: float = 0.5
    #: The longest wait between attempts, so also how long a write may lag behind a
    #: database that is back. One connection attempt per worker every few seconds
    #: costs nothing; 30 s made a 30 s outage cost up to a minute.
    max_s: float = 5.0
    #: Stop after this many seconds of failures; 0 retries forever.
    deadline_s: float = 0.0

    def ceiling(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2**attempt)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: anywhere up to the ceiling, so retrying clients spread out."""
        return rng.uniform(0.0, self.ceiling(attempt))


def retry(
    action: Callable[[], T],
    *,
    what: str,
    retryable: tuple[type[BaseException], ...],
    backoff: Backoff,
    permanent: tuple[type[BaseException], ...] = (),
    on_retry: Callable[[BaseException], None] = lambda exc: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """Run ``action`` until it succeeds, retrying ``retryable`` errors.

    ``permanent`` errors are raised at once even when they are also
    ``retryable`` (e.g. a database's "row too big" among its operational errors).
    """
    rng = rng or random.Random()
    started = clock()
    attempt = 0
    while True:
        try:
            return action()
        except retryable as exc:
            if isinstance(exc, permanent):
                raise
            waited = clock() - started
            if backoff.deadline_s and waited >= backoff.deadline_s:
                raise GiveUp(f"{what}: gave up after {waited:.0f}s: {exc}") from exc
            delay = backoff.delay(attempt, rng)
            log.warning("%s failed (%s); retrying in %.1fs", what, _one_line(exc), delay)
            on_retry(exc)
            sleep(delay)
            attempt += 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
