"""The pipelined client runtime: a compute thread, a bounded send queue, a sender thread.

One inference (:func:`run_inference`):

* the **compute thread** runs the client part vertex by vertex in the planned
  order (``ClientPart.steps``) and records each vertex's compute interval;
  every cut tensor goes into the send queue the moment its vertex finishes
  (``overlap=True``), or only after the whole client part ran
  (``overlap=False``, the ``po`` baseline);
* the **sender thread** takes tensors off the queue in that order, encodes
  them, pays for each chunk at the token bucket (when the upload is shaped) and
  streams the chunks on the open ``Infer`` call, recording each tensor's
  upload interval; once the reply is in, each interval's end is moved to when
  its last byte reached the server (:func:`reconcile_uploads`), since on a
  real link the transport accepts the chunks long before they cross it;
* the calling thread waits for the reply. If the call cannot be opened, fails,
  or exceeds its deadline, the run finishes locally: the server part runs on
  the client from the cut tensors already computed, so the result is always
  delivered, and the timeline says why.

The transport is a small interface (:class:`Transport` / :class:`Call`), so the
runtime is tested without gRPC (:class:`InProcessTransport`) and runs over gRPC
(:class:`opss.client.grpc_transport.GrpcTransport`) unchanged.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from opss.client.throttle import TokenBucket
from opss.client.timeline import Interval, Timeline

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = [
    "Call",
    "CallFailed",
    "Execution",
    "InProcessTransport",
    "Reply",
    "RunResult",
    "Threads",
    "Transport",
    "UploadMessage",
    "reconcile_uploads",
    "run_inference",
]

#: Tensor payload bytes per ``TensorChunk`` message the client uploads: the proto's smallest
#: recommended size (64 KiB), so the sender pays the token bucket and interleaves tensors
#: in fine steps. (``opss.wire.DEFAULT_CHUNK_BYTES``, 256 KiB, is only the codec helpers'
#: default, for tests and benchmarks.)
UPLOAD_CHUNK_BYTES = 64 * 1024


class CallFailed(Exception):
    """The transport could not complete a call (unreachable, failed, deadline).

    Internal to the client runtime: :func:`run_inference` never lets it out, it
    turns it into a local fallback with ``reason`` as the one-line note.
    """

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        #: retrying cannot help (the server rejected our credentials): at startup this
        #: is a configuration error, during a run it still falls back locally
        self.fatal = fatal


class UploadMessage(NamedTuple):
    """One message of a tensor's upload: ``nbytes`` of payload (what the token bucket charges),
    ``message`` for the transport; ``encoded`` when a codec made the payload (of a tensor of
    ``decoded`` bytes)."""

    nbytes: int
    message: Any
    encoded: bool = False
    decoded: int = 0

    @classmethod
    def of(cls, chunk: Any, message: Any) -> UploadMessage:
        """The upload message of :class:`opss.wire.Chunk` ``chunk`` sent as ``message``."""
        encoded = chunk.codec not in ("raw", "")
        return cls(len(chunk.data), message, encoded, chunk.decoded_bytes if encoded else chunk.total_bytes)


@dataclass(frozen=True)
class Reply:
    """What the server sent back: the model output and its own timings (seconds).

    ``server`` maps timing names to seconds; a server that reports per-tensor
    arrivals adds ``"arrivals"``: ``{tensor name: {"first_byte": s, "last_byte": s,
    "bytes": n}}``, seconds after the server received the call's open message.
    """

    output: Any
    server: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallHeader:
    """What opens an ``Infer`` call."""

    request_id: str
    model: str
    fingerprint: str
    client_set: tuple[str, ...]
    cut: tuple[str, ...]
    wire_dtype: str
    graph_hash: str = ""
    #: codec of each cut tensor (missing: raw) and the image forms' source
    codecs: Mapping[str, str] = field(default_factory=dict)
    image: Any = field(default=None, repr=False, compare=False)

    @property
    def preprocess(self) -> str:
        """The preprocessing of the image forms, when the input travels as one."""
        return self.image.version if self.image is not None else ""

    def chunk_messages(self, name: str, tensor: Any, chunk_bytes: int) -> Iterator[Any]:
        """The :class:`opss.wire.Chunk` s of cut tensor ``name`` in its codec (encoded first)."""
        from opss import wire

        return wire.iter_chunks(name, tensor, self.wire_dtype, chunk_bytes, self.codecs.get(name, "raw"),
                                self.image)


class Call(Protocol):
    def chunks(self, name: str, tensor: Any) -> Iterable[UploadMessage]:
        """Encode ``tensor`` (wire dtype of the call) into messages, in order."""

    def push(self, chunk: UploadMessage) -> None:
        """Send one message on the open call; raise CallFailed if the call is dead."""

    def finish(self) -> Reply:
        """Close the request stream and wait for the reply; raise CallFailed on failure."""

    def cancel(self) -> None:
        """Abort the call (idempotent)."""


class Transport(Protocol):
    def open(self, header: CallHeader, timeout: float | None) -> Call:
        """Open an ``Infer`` call; raise CallFailed if the server cannot be reached."""


@dataclass(frozen=True)
class Execution:
    """How to run one strategy: the split, the client order and whether uploads overlap.

    ``split`` is an :class:`opss.split.Split` whose client part holds
    ``order``; ``local`` is true when nothing is uploaded (the cut is the model
    output, ``lo``); ``overlap`` false means compute everything, then upload
    (``po``). ``predicted`` holds the planner's terms (seconds) for display.
    """

    strategy: str
    split: Any
    order: tuple[str, ...]
    overlap: bool
    local: bool
    model_name: str = ""
    fingerprint: str = ""
    graph_hash: str = ""
    predicted: Mapping[str, float] = field(default_factory=dict)
    #: the planned codec of each uploaded tensor (missing: raw)
    codecs: Mapping[str, str] = field(default_factory=dict)

    @property
    def cut(self) -> tuple[str, ...]:
        return tuple(self.split.cut)


@dataclass(frozen=True)
class RunResult:
    """One inference: the model output, its timeline and whether it fell back."""

    output: Any
    timeline: Timeline

    @property
    def fell_back(self) -> bool:
        return self.timeline.where == "fallback"

    @property
    def latency(self) -> float:
        return self.timeline.total


_END = object()


class Threads:
    """The runtime's two long-lived threads: compute and send.

    Kept across inferences on purpose: torch gives every new thread its own
    OpenMP team on first use, which costs tens of milliseconds; a thread per
    inference would add that to every run. ``threads`` is the torch
    intra-op thread count set inside the compute thread.
    """

    def __init__(self, threads: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        def init() -> None:
            if threads:
                import torch

                torch.set_num_threads(threads)

        self.compute = ThreadPoolExecutor(1, thread_name_prefix="opss-compute", initializer=init)
        self.send = ThreadPoolExecutor(1, thread_name_prefix="opss-sender", initializer=init)

    def close(self) -> None:
        self.compute.shutdown(wait=True)
        self.send.shutdown(wait=True)

    def __enter__(self) -> Threads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Sender:
    """Streams queued cut tensors on the call, recording one upload interval per tensor."""

    def __init__(self, call: Call, q: queue.Queue, t0: float, throttle: TokenBucket | None,
                 slowdown: float = 1.0) -> None:
        self.call = call
        self.slowdown = slowdown  # an emulated slower client encodes slower too
        self.q = q
        self.t0 = t0
        self.throttle = throttle
        self.uploads: list[Interval] = []
        self.encodes: list[Interval] = []  # a tensor's encoding, before its first chunk (raw: none)
        self.error: str | None = None

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is _END:
                return
            if self.error is not None:
                continue  # drain: the call is dead, the runtime will fall back
            name, tensor = item
            start = time.perf_counter() - self.t0
            nbytes = 0
            try:
                for chunk in self.call.chunks(name, tensor):
                    if nbytes == 0 and chunk.encoded:  # the codec ran before the first chunk
                        if self.slowdown > 1.0:
                            time.sleep((self.slowdown - 1.0) * (time.perf_counter() - self.t0 - start))
                        enc_end = time.perf_counter() - self.t0
                        self.encodes.append(Interval("encode", name, start, enc_end, chunk.decoded))
                        start = enc_end
                    if self.throttle is not None:
                        self.throttle.consume(chunk.nbytes)
                    self.call.push(chunk)
                    nbytes += chunk.nbytes
            except CallFailed as exc:
                self.error = exc.reason
            except Exception as exc:  # a transport bug must not kill the inference
                self.error = f"upload of {name} failed: {type(exc).__name__}: {exc}"
            end = time.perf_counter() - self.t0
            self.uploads.append(Interval("upload", name, start, end, nbytes))


def reconcile_uploads(uploads: Iterable[Interval], arrivals: Mapping[str, Mapping[str, float]] | None,
                      t_open: float, latest: float = float("inf")) -> tuple[Interval, ...]:
    """Upload intervals whose ends are when the last byte reached the server.

    The sender's intervals end when the transport accepted the last chunk. On a
    real link (no token bucket pacing the sender) gRPC's HTTP/2 flow-control
    windows and the kernel's TCP send buffer take hundreds of kB at once, so
    that "end" comes long before the bytes crossed the link. The server reports
    each tensor's ``last_byte`` in seconds after it received the call's open
    message; ``t_open`` is when the client opened the call (timeline seconds).
    The new end is ``max(pushed end, t_open + last_byte)``, at most ``latest``
    (when the reply was in hand: no byte arrives after that), and the push end
    is kept in ``pushed_end``.

    Approximation: the server's clock starts when the open message reached
    its handler, one one-way delay (plus the handler's dispatch) after
    ``t_open``; that unknown, small offset is not added, so the ends are
    early by it (never late). For a tensor's time on the link
    (:meth:`~opss.client.timeline.Timeline.link_intervals`, what the link
    estimator is fed) this drops the propagation delay and leaves the
    serialisation time ``w / b``; gaps between tensors do not depend on it.
    Tensors the server did not report (``arrivals`` None or missing the name)
    keep the push end, as before.
    """
    out = []
    for iv in uploads:
        a = arrivals.get(iv.name) if arrivals else None
        if a is None or "last_byte" not in a:
            out.append(iv)
            continue
        arrived = min(t_open + float(a["last_byte"]), latest)
        out.append(Interval(iv.lane, iv.name, iv.start, max(iv.end, arrived), iv.nbytes, pushed_end=iv.end))
    return tuple(out)


def run_inference(
    ex: Execution,
    x: Any,
    transport: Transport | None,
    *,
    throttle: TokenBucket | None = None,
    timeout: float | None = 30.0,
    request_id: str = "",
    wire_dtype: str = "float32",
    skip_reason: str | None = None,
    slowdown: float = 1.0,
    pace: Mapping[str, float] | None = None,
    threads: Threads | None = None,
    image: Any = None,
) -> RunResult:
    """Run one inference of ``ex`` on input ``x``; never raises for transport faults.

    ``transport=None`` or ``skip_reason`` set (the server is in back-off) runs the
    cooperative strategy entirely on the client and records why. ``slowdown``
    > 1 emulates a slower client: after each vertex the compute thread sleeps
    ``(slowdown - 1)`` times the vertex's compute time (sleeping frees the CPU,
    as a slower core would leave the sender its own core). ``pace`` (vertex id ->
    seconds) emulates a client whose vertices take exactly those times: after
    the real computation the compute thread sleeps out the rest of the vertex's
    time (when the real computation took longer, it goes on at once). ``threads``
    are the long-lived compute and send threads (a temporary pair when None).
    ``image`` (:class:`opss.wire.ImageSource`) is where ``x`` came from, for
    plans that send the input in an image form (``ex.codecs``).
    """
    if threads is None:
        with Threads() as own:
            return run_inference(ex, x, transport, throttle=throttle, timeout=timeout, request_id=request_id,
                                 wire_dtype=wire_dtype, skip_reason=skip_reason, slowdown=slowdown, pace=pace,
                                 threads=own, image=image)
    t0 = time.perf_counter()
    call, note, t_open = _open_call(ex, transport, t0, timeout=timeout, request_id=request_id,
                                    wire_dtype=wire_dtype, skip_reason=skip_reason, image=image)
    # t=0 of the timeline is the start of computation (opening a call is not counted
    # separately: with gRPC it is non-blocking)
    q: queue.Queue = queue.Queue(maxsize=len(ex.cut) + 1)
    sender = _Sender(call, q, t0, throttle, slowdown) if call is not None else None
    sending = threads.send.submit(sender.run) if sender is not None else None
    computed, compute, compute_error = threads.compute.submit(
        _compute_client_part, ex, x, q if sender is not None else None, t0, slowdown, pace).result()
    if compute_error is not None:  # re-raised in the caller's thread
        if call is not None:
            call.cancel()
        raise compute_error
    end = _wait_or_fall_back(ex, call, sender, sending, computed, note, t0)
    total = time.perf_counter() - t0
    # the sender is done (or never ran) here: its list is complete
    uploads = (reconcile_uploads(sender.uploads, end.server.get("arrivals"), t_open, end.t_reply)
               if sender is not None else ())
    tl = Timeline(strategy=ex.strategy, compute=tuple(compute), upload=uploads, server=end.server,
                  sent_at=end.sent_at, reply_at=total, total=total, where=end.where, note=end.note,
                  encode=tuple(sender.encodes) if sender is not None else ())
    return RunResult(output=end.output, timeline=tl)


def _open_call(ex: Execution, transport: Transport | None, t0: float, *, timeout: float | None,
               request_id: str, wire_dtype: str, skip_reason: str | None,
               image: Any = None) -> tuple[Call | None, str, float]:
    """Open the ``Infer`` call of a cooperative run: ``(call or None, why there is none,
    when it was opened in timeline seconds)``; the opening time is the origin of the
    server's arrival times."""
    if ex.local:
        return None, "", 0.0
    if skip_reason is not None:
        return None, skip_reason, 0.0
    if transport is None:
        return None, "no server configured", 0.0
    header = CallHeader(
        request_id=request_id,
        model=ex.model_name,
        fingerprint=ex.fingerprint,
        client_set=tuple(ex.split.client_set),
        cut=ex.cut,
        wire_dtype=wire_dtype,
        graph_hash=ex.graph_hash,
        codecs=dict(ex.codecs),
        image=image,
    )
    t_open = time.perf_counter() - t0
    try:
        return transport.open(header, timeout), "", t_open
    except CallFailed as exc:
        return None, exc.reason, t_open


def _compute_client_part(ex: Execution, x: Any, q: queue.Queue | None, t0: float, slowdown: float,
                         pace: Mapping[str, float] | None) -> tuple[dict[str, Any], list[Interval],
                                                                    BaseException | None]:
    """The compute thread: run the client part in ``ex.order``, queue the cut tensors
    for upload on ``q`` (None: nothing is uploaded) as they are made (``ex.overlap``) or
    at the end. ``(cut tensors, compute intervals, the error that stopped it or None)``."""
    import torch

    computed: dict[str, Any] = {}
    compute: list[Interval] = []
    try:
        with torch.inference_mode():
            last = time.perf_counter() - t0
            ideal = last  # the emulated slower client's clock (slowdown > 1)
            for step in ex.split.client.steps(x, order=ex.order):
                now = time.perf_counter() - t0
                if pace is not None or slowdown > 1.0:
                    # sleep to where the emulated client would be; keeping the ideal clock (not
                    # the woken-up time) makes one sleep's overshoot shorten the next
                    ideal = max(ideal + pace[step.node], now) if pace is not None \
                        else ideal + slowdown * (now - last)
                    while (left := ideal - (time.perf_counter() - t0)) > 0:
                        time.sleep(left)
                    now = time.perf_counter() - t0
                compute.append(Interval("compute", step.node, last, now))
                last = now
                for name, tensor in step.cut_outputs.items():
                    computed[name] = tensor
                    if q is not None and ex.overlap:
                        q.put((name, tensor))
            if q is not None and not ex.overlap:
                for name in ex.cut:
                    q.put((name, computed[name]))
    except BaseException as exc:
        return computed, compute, exc
    finally:
        if q is not None:
            q.put(_END)
    return computed, compute, None


class _Ending(NamedTuple):
    """How a run ended: the output, where it was computed, the note on why it fell
    back, the server's timings, when the upload ended and when the reply came."""

    output: Any
    where: str
    note: str
    server: dict
    sent_at: float
    t_reply: float


def _wait_or_fall_back(ex: Execution, call: Call | None, sender: _Sender | None, sending: Future | None,
                       computed: Mapping[str, Any], note: str, t0: float) -> _Ending:
    """Wait for the upload and the reply; without one (no call, the upload or the call
    failed) finish locally: the server part runs on the client from the cut tensors
    it already has, so the result is always delivered."""
    import torch

    reply: Reply | None = None
    sent_at = t_reply = 0.0
    if call is not None:
        sending.result()
        sent_at = time.perf_counter() - t0
        if sender.error is not None:
            note = sender.error
            call.cancel()
        else:
            try:
                reply = call.finish()
                t_reply = time.perf_counter() - t0
            except CallFailed as exc:
                note = exc.reason
    # local only: the cut is the model output
    output = computed[ex.cut[0]] if ex.local else (reply.output if reply is not None else None)
    server = dict(reply.server) if reply is not None else {}
    if output is not None:
        return _Ending(output, "local" if ex.local else "cooperative", note, server, sent_at, t_reply)
    with torch.inference_mode():
        output = ex.split.server.run({name: computed[name] for name in ex.cut})
    return _Ending(output, "fallback", note, server, sent_at, t_reply)


class InProcessTransport:
    """A transport that hands the tensors to a local server part, for tests and dry runs.

    Tensors are cast to the wire dtype and copied, as they would be on the wire;
    ``chunk_bytes`` sets the chunking so throttling behaves as with gRPC.
    ``fail_after`` (number of chunks) simulates a server dying mid-upload.
    """

    def __init__(self, server_part_for: Any, *, chunk_bytes: int = UPLOAD_CHUNK_BYTES,
                 fail_after: int | None = None) -> None:
        self._server_part_for = server_part_for  # callable(client_set) -> ServerPart
        self._parts: dict[frozenset, Any] = {}
        self.chunk_bytes = chunk_bytes
        self.fail_after = fail_after
        self.calls = 0

    @classmethod
    def for_model(cls, name: str, *, small: bool = False, seed: int = 0, **kw: Any) -> InProcessTransport:
        """A transport serving zoo model ``name`` from its own copy (its own capture)."""
        from opss import models
        from opss.graph import capture
        from opss.split import split

        model = models.get_model(name, seed=seed)
        graph = capture(model, models.example_input(name, small=small, seed=seed), "layer", name=name)
        return cls(lambda client_set: split(graph, client_set).server, **kw)

    def open(self, header: CallHeader, timeout: float | None) -> Call:
        self.calls += 1
        return _InProcessCall(self, header)


class _InProcessCall:
    def __init__(self, transport: InProcessTransport, header: CallHeader) -> None:
        from opss import wire

        self.t = transport
        self.header = header
        key = frozenset(header.client_set)
        server = transport._parts.get(key)
        if server is None:
            server = transport._parts[key] = transport._server_part_for(header.client_set)
        self.session = server.session()
        self.reassembler = wire.Reassembler(server.inputs, header.wire_dtype,
                                            image_inputs=(server.graph.input_id,))
        self.pushed = 0
        self.server_compute = 0.0

    def chunks(self, name: str, tensor: Any) -> Iterable[UploadMessage]:
        for c in self.header.chunk_messages(name, tensor, self.t.chunk_bytes):
            yield UploadMessage.of(c, c)

    def push(self, chunk: UploadMessage) -> None:
        import torch

        if self.t.fail_after is not None and self.pushed >= self.t.fail_after:
            raise CallFailed("server closed the call mid-upload")
        self.pushed += 1
        done = self.reassembler.add(chunk.message)
        if done is not None:
            start = time.perf_counter()
            with torch.inference_mode():
                self.session.feed(*done)
            self.server_compute += time.perf_counter() - start

    def finish(self) -> Reply:
        import torch

        self.reassembler.finish()
        with torch.inference_mode():
            out = self.session.result()
        return Reply(output=out, server={"compute": self.server_compute})

    def cancel(self) -> None:
        self.session = None
