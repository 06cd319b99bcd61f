"""Admission of Infer/Probe calls: a few slots, a FIFO queue with a bounded wait, a cap per peer.

A call asks for a slot once its first message has arrived (an idle stream never holds
one). With a slot free, and the caller's peer under its cap, it goes on at once;
otherwise it waits in a FIFO queue. Each freed slot goes to the oldest waiter whose
peer is under its cap, so a peer at its cap never blocks the others behind it, and N
clients sharing a server are served in arrival order. A waiter still queued at its
deadline (or finding the queue full) is refused with :class:`Busy`, which carries a
retry hint: the expected time until a slot frees for a newcomer, from the measured
time calls hold their slots. The servicer sends it as the trailing metadata
:data:`RETRY_PUSHBACK_KEY` (gRFC A6's server pushback, integer milliseconds).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from opss.errors import OpssError

#: Trailing metadata of a RESOURCE_EXHAUSTED caused by load: milliseconds the client
#: should wait before it tries again (gRFC A6 server pushback; ``opss-client`` honours it
#: with jitter).
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"

#: Bounds of the retry hint, seconds.
MIN_RETRY_S, MAX_RETRY_S = 0.05, 30.0


class Busy(OpssError):
    """No slot within the admission wait (RESOURCE_EXHAUSTED); ``retry_after_s`` is the hint."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ClientGone(OpssError):
    """The client cancelled (or its deadline passed) while its call waited for a slot."""


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string: ``ipv4:10.0.0.7:5123`` → ``10.0.0.7``,
    ``ipv6:[::1]:5123`` (or ``ipv6:%5B::1%5D:5123``) → ``::1``; anything else (``unix:…``)
    is kept whole."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:].partition("]")[0]
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


@dataclass(eq=False)
class Slot:
    """A held slot: whose it is and since when (monotonic seconds)."""

    peer: str
    since: float


@dataclass(eq=False)
class _Waiter:
    peer: str
    granted: threading.Event = field(default_factory=threading.Event)
    slot: Slot | None = None


class Admission:
    """``slots`` calls at once, at most ``per_peer`` of them from one peer host; up to
    ``queue_limit`` more wait in FIFO order (see the module docstring)."""

    def __init__(self, slots: int, per_peer: int, queue_limit: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if min(slots, per_peer) < 1 or queue_limit < 0:
            raise ValueError(f"admission: expected slots, per_peer >= 1 and queue_limit >= 0, "
                             f"got {slots}, {per_peer}, {queue_limit}")
        self.slots, self.per_peer, self.queue_limit = slots, per_peer, queue_limit
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._by_peer: dict[str, int] = {}
        self._held = 0
        self._hold_s = 0.1  # running mean of how long a call holds its slot (EWMA)

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._held

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def acquire(self, peer: str, wait_s: float, gone: threading.Event | None = None) -> Slot:
        """A slot for ``peer``, waiting up to ``wait_s`` in the queue; Busy when none came,
        ClientGone when ``gone`` was set while waiting."""
        with self._lock:
            if not self._queue and self._eligible(peer):
                return self._take(peer)
            if len(self._queue) >= self.queue_limit or wait_s <= 0:
                raise self._busy(peer, 0.0, full=len(self._queue) >= self.queue_limit)
            waiter = _Waiter(peer)
            self._queue.append(waiter)
            self._grant()
        t0 = self._clock()
        end = t0 + wait_s
        while not waiter.granted.wait(min(0.05, max(0.0, end - self._clock()))):
            if (gone is not None and gone.is_set()) or self._clock() >= end:
                break
        with self._lock:
            if waiter.slot is not None:
                return waiter.slot
            self._queue.remove(waiter)
            if gone is not None and gone.is_set():
                raise ClientGone("client went away while waiting for a slot")
            raise self._busy(peer, self._clock() - t0, full=False)

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._held -= 1
            left = self._by_peer[slot.peer] - 1
            if left:
                self._by_peer[slot.peer] = left
            else:
                del self._by_peer[slot.peer]
            self._hold_s += 0.2 * (max(0.0, self._clock() - slot.since) - self._hold_s)
            self._grant()

    def retry_hint_s(self) -> float:
        """Seconds until a slot is expected to free for a newcomer: the mean hold time times
        the calls ahead of it per slot, within [MIN_RETRY_S, MAX_RETRY_S]."""
        with self._lock:
            return self._hint()

    # --- under the lock ---------------------------------------------------------------------
    def _hint(self) -> float:
        ahead = len(self._queue) + 1
        return min(MAX_RETRY_S, max(MIN_RETRY_S, self._hold_s * ahead / self.slots))

    def _eligible(self, peer: str) -> bool:
        return self._held < self.slots and self._by_peer.get(peer, 0) < self.per_peer

    def _take(self, peer: str) -> Slot:
        self._held += 1
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return Slot(peer, self._clock())

    def _grant(self) -> None:
        """Hand free slots to the oldest waiters whose peers are under their cap."""
        for waiter in list(self._queue):
            if self._held >= self.slots:
                return
            if self._eligible(waiter.peer):
                self._queue.remove(waiter)
                waiter.slot = self._take(waiter.peer)
                waiter.granted.set()

    def _busy(self, peer: str, waited: float, full: bool) -> Busy:
        hint = self._hint()
        if self._by_peer.get(peer, 0) >= self.per_peer:
            why = (f"this peer already holds {self.per_peer} slots (max_inflight_per_peer) of "
                   f"{self.slots} (max_inflight)")
        else:
            why = f"all {self.slots} slots taken (max_inflight)"
        queue = (f"the admission queue is full ({self.queue_limit} waiting, max_queued)" if full
                 else f"no slot freed within {waited:.2f} s in the admission queue (admission_wait_s)")
        return Busy(f"server busy: {why} and {queue}; retry in {hint:.2f} s", hint)
