"""Reading a client stream with timeouts: first message, between messages, the whole call.

grpcio's synchronous server hands a client-streaming handler a blocking request
iterator whose ``next()`` takes no timeout, and ``context.time_remaining()`` is
only the client's own deadline. So :class:`StreamReader` runs the iterator on a
helper thread (the pump) that hands each message over a small bounded queue
(a few messages of read-ahead: memory stays bounded and HTTP/2 flow control still
pushes back on the client), and the handler waits on that queue with a timeout.
When the client sends nothing in time the handler raises :class:`StreamTimeout`
(DEADLINE_EXCEEDED, with a detail naming the limit) and aborts the call in its own
thread; the call's end unblocks the pump, which then exits. (The alternative, a
watchdog calling ``context.cancel()``, frees the thread as well but the client
only sees a bare CANCELLED.)
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from opss.errors import OpssError


class StreamTimeout(OpssError):
    """The client sent nothing within a limit of the stream (DEADLINE_EXCEEDED)."""


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class StreamReader:
    """The messages of one client stream, each within ``first_s`` (the first) or ``idle_s``
    (the others) of being asked for, and none later than ``total_s`` after it was made.

    Iterating yields the messages; :meth:`next` returns None at the stream's end.
    A client error (cancel, reset) is re-raised as the iterator raised it
    (``grpc.RpcError``). :meth:`close` lets the pump go once the handler is done.
    """

    def __init__(self, requests, *, first_s: float, idle_s: float, total_s: float,
                 read_ahead: int = 4) -> None:
        self.first_s, self.idle_s, self.total_s = first_s, idle_s, total_s
        self.deadline = time.monotonic() + total_s  #: monotonic seconds
        self.messages = 0
        self.ended = False  # the client closed its side (or went away) after its last message
        self._requests = requests
        self._queue: queue.Queue = queue.Queue(maxsize=read_ahead)
        self._closed = threading.Event()
        self._pump: threading.Thread | None = None

    def next(self) -> Any:
        """The next message, or None once the client closed its side."""
        if self.ended:
            return None
        if self._pump is None:
            self._pump = threading.Thread(target=self._run, name="opss-reader", daemon=True)
            self._pump.start()
        limit = self.first_s if self.messages == 0 else self.idle_s
        left = self.deadline - time.monotonic()
        try:
            item = self._queue.get(timeout=max(0.0, min(limit, left)))
        except queue.Empty:
            raise self._timeout(limit, left) from None
        if item is _END:
            self.ended = True
            return None
        if isinstance(item, _Failure):
            self.ended = True
            raise item.error
        self.messages += 1
        return item

    def __iter__(self):
        while (msg := self.next()) is not None:
            yield msg

    def close(self) -> None:
        self._closed.set()

    def _timeout(self, limit: float, left: float) -> StreamTimeout:
        if left <= limit:
            return StreamTimeout(f"call still open after {self.total_s:g} s (the call deadline, "
                                 f"stream_timeout_s)")
        if self.messages == 0:
            return StreamTimeout(f"no message within {limit:g} s of opening the call "
                                 f"(first_message_timeout_s)")
        return StreamTimeout(f"no message for {limit:g} s after message {self.messages} "
                             f"(idle_timeout_s)")

    def _run(self) -> None:
        try:
            for msg in self._requests:
                if not self._put(msg):
                    return
            self._put(_END)
        except BaseException as e:  # the client went away: handed to the handler
            self._put(_Failure(e))

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
