"""Application-level upload shaping: a token bucket in the sender (no root, no ``tc``).

The sender calls :meth:`TokenBucket.consume` with the size of each chunk *before*
handing it to the transport. ``consume`` returns when the bucket has paid for
those bytes, so a chunk leaves at the moment a link of ``rate`` bytes/s would
have finished serialising it: over a long transfer the delivered rate is
``rate`` and a tensor of ``w`` bytes takes ``w / rate`` seconds, which is the
``w / b`` term of the link model ``g(w) = c + w / b``.

The bucket starts empty and holds at most ``burst`` bytes of credit earned
while idle. ``burst=0`` (the default) is pure pacing, the faithful model of a
narrow uplink: idle time does not let the next tensor go out faster. A
positive burst lets short bursts through at full speed, like ``tc tbf``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from opss.errors import LinkModelError

__all__ = ["TokenBucket"]

class TokenBucket:
    """A thread-safe token bucket paying for bytes at ``rate`` bytes per second.

    ``clock`` and ``sleep`` are injectable for tests; by default they are
    ``time.perf_counter`` and ``time.sleep``.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 0.0,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (rate > 0) or rate == float("inf"):
            raise LinkModelError(f"token bucket rate: expected a positive finite bytes/s, got {rate!r}")
        if not (burst >= 0):
            raise LinkModelError(f"token bucket burst: expected >= 0 bytes, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last = clock()
        self.bytes_paid = 0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:.0f} B/s ({self.rate * 8 / 1e6:.3f} Mbit/s), burst={self.burst:.0f} B)"

    def consume(self, nbytes: int) -> float:
        """Block until ``nbytes`` are paid for; return the seconds spent waiting.

        Concurrent callers are served in the order they reach the lock; each
        caller's debt is reserved at once, so the aggregate rate is ``rate``.
        """
        if nbytes < 0:
            raise ValueError(f"consume: expected nbytes >= 0, got {nbytes}")
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= nbytes
            self.bytes_paid += nbytes
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            deadline = now + wait
            # sleep in one go, then top up for sleep's coarse wake-ups
            self._sleep(wait)
            while True:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._sleep(left)
        return wait
