"""The opss.v1.Opss servicer: Infer, Probe, ListModels.

This is the only place that turns library errors into gRPC status codes:

=============================================  ======================
``ModelNotFoundError``                         ``NOT_FOUND``
``FingerprintMismatchError``                   ``FAILED_PRECONDITION``
``PartitionError``, ``ShapeMismatchError``,    ``INVALID_ARGUMENT``
``WireError``, undecodable messages, an
identifier over 128 bytes or not printable
no slot within the admission wait              ``RESOURCE_EXHAUSTED`` + retry hint
(:class:`~opss.server.admission.Busy`), a      (trailing metadata
Probe beyond ``max_probe_bytes``               ``grpc-retry-pushback-ms``, load only)
no message within the first-message or idle    ``DEADLINE_EXCEEDED``
timeout, or past the call deadline
the client cancelled, or went away mid-stream  ``CANCELLED`` (logged; the client is gone)
a call before the models are loaded            ``UNAVAILABLE``
anything else (a bug)                          ``INTERNAL``
=============================================  ======================

An Infer/Probe call reads its first message (:class:`~opss.server.streams.StreamReader`,
with the stream timeouts), checks it, then takes a slot (:class:`~opss.server.admission.Admission`,
FIFO with a bounded wait and a cap per peer) and holds it until its status is sent.
Every call ends with a reply or an error status and exactly one log line; client strings
in it are escaped and bounded (:mod:`opss.server.limits`).

An Infer call's server part runs tensor by tensor as they arrive (:class:`_ComputeWorker`),
or, with dynamic batching on (``max_batch`` > 1) and a batchable model, once all its tensors
are in, together with other calls of the same partition (:class:`_BatchedCompute` over
:class:`~opss.server.batching.DynamicBatcher`). Every reply and ListModels carry the model's
recent load (:class:`~opss.server.metrics.LoadTracker`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import grpc
import torch
from google.protobuf.message import DecodeError

from opss.errors import (
    FingerprintMismatchError,
    ModelNotFoundError,
    OpssError,
    PartitionError,
    ShapeMismatchError,
    WireError,
)
from opss.v1 import opss_pb2
from opss.wire import WIRE_DTYPES, Reassembler, chunk_from_proto, dtype_from_proto, tensor_to_proto

from .admission import RETRY_PUSHBACK_KEY, Admission, Busy, ClientGone, Slot, peer_host
from .batching import BatchJob, DynamicBatcher
from .config import ServerConfig
from .limits import bound_detail, check_identifier, check_identifiers, escape
from .metrics import LoadTracker, RecentLoad, ServerMetrics
from .store import ModelStore, synchronize
from .streams import StreamReader, StreamTimeout

log = logging.getLogger("opss.server")

SERVICE = "opss.v1.Opss"
_GRANULARITY = {opss_pb2.GRANULARITY_UNSPECIFIED: "layer", opss_pb2.LAYER: "layer",
                opss_pb2.BLOCK: "block"}
_GRANULARITY_PB = {"layer": opss_pb2.LAYER, "block": opss_pb2.BLOCK}
_METHOD = {"infer": "Infer", "probe": "Probe", "list": "ListModels"}

#: How long a call whose stream ended early waits to learn whether its client went away
#: (the connection's close reaches the server a moment after the stream's end).
GONE_GRACE_S = 0.25


class Undecodable:
    """Stands in for a request message whose bytes are not a valid protobuf."""

    def __init__(self, kind: str, size: int, error: str) -> None:
        self.kind, self.size, self.error = kind, size, error

    def raise_(self):
        raise WireError(f"undecodable {self.kind} message of {self.size} bytes: "
                        f"{escape(self.error, 200)}")


def safe_deserializer(message_cls):
    """A request deserializer that never fails: bad bytes become an :class:`Undecodable`.

    gRPC answers a deserializer exception with INTERNAL; garbage from a client is
    its error, so the servicer turns it into INVALID_ARGUMENT instead.
    """

    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            return Undecodable(message_cls.__name__, len(data), str(e) or type(e).__name__)

    return parse


class _TooLarge(Exception):
    pass


class _NotReady(Exception):
    pass


def status_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an error raised while serving a call."""
    if isinstance(error, (Busy, _TooLarge)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, _NotReady):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, StreamTimeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, (ClientGone, grpc.RpcError)):
        return grpc.StatusCode.CANCELLED
    if isinstance(error, ModelNotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, FingerprintMismatchError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, (PartitionError, ShapeMismatchError, WireError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, OpssError) and isinstance(error, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


@dataclass
class _Arrival:
    name: str
    bytes: int = 0
    chunks: int = 0
    first_byte_s: float = 0.0
    last_byte_s: float = 0.0
    compute_start_s: float = 0.0
    compute_s: float = 0.0
    queue_s: float = 0.0
    vertices_run: int = 0
    codec: str = "raw"
    decoded_bytes: int = 0
    decode_s: float = 0.0


@dataclass
class _CallLog:
    kind: str
    peer: str
    request_id: str = "-"
    model: str = "-"
    bytes_in: int = 0
    status: str = "OK"
    detail: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Call:
    """One call as the servicer tracks it: its log record, whether its client is gone, the
    reader of its stream and the slot it holds."""

    rec: _CallLog
    gone: threading.Event
    reader: StreamReader | None = None
    slot: Slot | None = None
    retry_after_s: float | None = None


class InferenceServicer:
    """Serves Infer, Probe and ListModels from a :class:`ModelStore`.

    It registers its own handlers (:meth:`handlers`, with size-checking deserializers)
    instead of subclassing the generated ``opss_pb2_grpc.OpssServicer``.
    """

    def __init__(self, config: ServerConfig, store: ModelStore) -> None:
        self.config = config
        self.store = store
        self.device = store.device
        self.ready = threading.Event()
        self.admission = Admission(config.max_inflight, config.per_peer_limit, config.queue_limit)
        self._compute = threading.BoundedSemaphore(config.compute_slots)
        self._count_lock = threading.Lock()
        self._open = 0
        self.served = 0
        self.failed = 0
        self.metrics = ServerMetrics(inflight=lambda: self.admission.inflight,
                                     queued=lambda: self.admission.queued,
                                     open_streams=lambda: self.open_streams,
                                     ready=lambda: float(self.ready.is_set()))
        self.load = LoadTracker(config.load_window_s)
        self.batcher = None
        if config.max_batch > 1:
            self.batcher = DynamicBatcher(
                config.max_batch, config.max_queue_delay_s, self._compute, self.device,
                on_batch=lambda model, n: self.metrics.batch_size.labels(model).observe(n),
                extra_s=config.inject_delay_s)

    @property
    def inflight(self) -> int:
        """Infer/Probe calls holding a slot right now."""
        return self.admission.inflight

    @property
    def open_streams(self) -> int:
        """Infer/Probe calls open right now (reading their first message, queued or running)."""
        with self._count_lock:
            return self._open

    # --- gRPC plumbing ------------------------------------------------------------------------
    def handlers(self) -> grpc.GenericRpcHandler:
        pb = opss_pb2
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Infer": grpc.stream_unary_rpc_method_handler(
                self.Infer, request_deserializer=safe_deserializer(pb.InferRequest),
                response_serializer=pb.InferReply.SerializeToString),
            "Probe": grpc.stream_unary_rpc_method_handler(
                self.Probe, request_deserializer=safe_deserializer(pb.ProbeRequest),
                response_serializer=pb.ProbeReply.SerializeToString),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self.ListModels, request_deserializer=safe_deserializer(pb.ListModelsRequest),
                response_serializer=pb.ListModelsReply.SerializeToString),
        })

    def _serve(self, kind: str, body, request, context, streaming: bool):
        """Run one call: map its error to a status, free what it held, count it, log one line."""
        call = self._start(kind, request, context, streaming)
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            if not self.ready.is_set():
                raise _NotReady("server is loading its models: expected a ready server, "
                                "retry after the health service reports SERVING")
            return body(call.reader if streaming else request, context, call)
        except Exception as e:
            error = e
            self._classify(call, e)
        finally:
            self._finish(call, streaming, time.perf_counter() - t0)
        if isinstance(error, grpc.RpcError):
            raise error
        if call.retry_after_s is not None:
            context.set_trailing_metadata(((RETRY_PUSHBACK_KEY,
                                            str(max(1, round(call.retry_after_s * 1e3)))),))
        context.abort(grpc.StatusCode[call.rec.status], call.rec.detail)

    def _start(self, kind: str, request, context, streaming: bool) -> _Call:
        gone = threading.Event()
        if not context.add_callback(gone.set):
            gone.set()  # the call is already over
        call = _Call(_CallLog(kind=kind, peer=escape(context.peer())), gone)
        if streaming:
            cfg = self.config
            call.reader = StreamReader(request, first_s=cfg.first_message_timeout_s,
                                       idle_s=cfg.idle_timeout_s,
                                       total_s=cfg.stream_timeout_s)
            with self._count_lock:
                self._open += 1
        return call

    def _classify(self, call: _Call, e: Exception) -> None:
        """Set the call's status and detail for the error that ended it."""
        rec = call.rec
        code = status_of(e)
        ended_early = call.reader is not None and call.reader.ended
        if code not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL) and (
                call.gone.is_set() or (ended_early and call.gone.wait(GONE_GRACE_S))):
            # the client went away: its stream ended (or broke) because it is gone, not bad
            code, e = grpc.StatusCode.CANCELLED, ClientGone(
                f"client went away mid-stream after {rec.bytes_in} bytes ({e})")
        rec.status = code.name
        if isinstance(e, grpc.RpcError):
            rec.detail = (f"client went away mid-stream after {rec.bytes_in} bytes (cancelled, "
                          f"reset, or past its deadline)")
        elif code == grpc.StatusCode.INTERNAL:
            rec.detail = bound_detail(f"internal error: {type(e).__name__}: {e}")
            log.exception("%s %s failed", rec.kind, rec.request_id)
        else:
            rec.detail = bound_detail(str(e))
        if isinstance(e, Busy):
            call.retry_after_s = e.retry_after_s

    def _finish(self, call: _Call, streaming: bool, seconds: float) -> None:
        if call.slot is not None:
            self.admission.release(call.slot)
        if streaming:
            call.reader.close()
            with self._count_lock:
                self._open -= 1
        call.rec.timings.setdefault("total", seconds)
        self.metrics.finished(_METHOD[call.rec.kind], call.rec.status, seconds, call.rec.bytes_in)
        self._log(call.rec)

    def _admit(self, call: _Call, context) -> None:
        """Take a slot for ``call``, waiting in the admission queue within the call's deadlines."""
        wait = self.config.admission_wait_s
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, remaining - 0.05)
        wait = min(wait, call.reader.deadline - time.monotonic())
        t0 = time.perf_counter()
        call.slot = self.admission.acquire(peer_host(context.peer()), wait, call.gone)
        waited = time.perf_counter() - t0
        call.rec.timings["admission"] = waited
        self.metrics.queue_wait.labels(_METHOD[call.rec.kind]).observe(waited)

    def _log(self, rec: _CallLog) -> None:
        with self._count_lock:
            if rec.status == "OK":
                self.served += 1
            else:
                self.failed += 1
        times = " ".join(f"{k}={v:.4f}s" for k, v in rec.timings.items())
        level = logging.INFO if rec.status in ("OK", "RESOURCE_EXHAUSTED") else logging.WARNING
        log.log(level, "%s id=%s model=%s peer=%s bytes_in=%d status=%s %s%s", rec.kind,
                rec.request_id, rec.model, rec.peer, rec.bytes_in, rec.status, times,
                f" error={rec.detail}" if rec.detail else "")

    # --- RPCs ---------------------------------------------------------------------------------
    def Infer(self, request_iterator, context):
        return self._serve("infer", self._infer, request_iterator, context, streaming=True)

    def Probe(self, request_iterator, context):
        return self._serve("probe", self._probe, request_iterator, context, streaming=True)

    def ListModels(self, request, context):
        return self._serve("list", self._list_models, request, context, streaming=False)

    def _list_models(self, request, context, call: _Call):
        if isinstance(request, Undecodable):
            request.raise_()
        reply = opss_pb2.ListModelsReply(max_message_bytes=self.config.max_message_bytes,
                                         max_inflight=self.config.max_inflight)
        for name, m in self.store.models.items():
            info = reply.models.add(name=name, fingerprint=m.fingerprint, device=str(self.device),
                                    input_shape=m.input_shape, description=m.description,
                                    graph_hash=self.store.graph_hash(m, "layer"),
                                    input_dtype=opss_pb2.DType.Value(str(m.input_dtype).removeprefix(
                                        "torch.").upper()))
            if m.server_time_s:
                info.server_time_s.update(m.server_time_s)
                info.profile_granularity = opss_pb2.LAYER
            info.load.CopyFrom(self._load_of(name))
            info.max_batch = self.config.max_batch if m.batch_refusal is None else 1
            info.batch_refusal = m.batch_refusal or ""
        return reply

    def _load_of(self, model: str) -> opss_pb2.ServerLoad:
        r: RecentLoad = self.load.recent(model)
        return opss_pb2.ServerLoad(queue_s=r.queue_s, compute_s=r.compute_s, calls=r.calls,
                                   window_s=r.window_s, inflight=self.admission.inflight,
                                   queued=self.admission.queued)

    def _probe(self, reader: StreamReader, context, call: _Call):
        first = reader.next()
        if first is None:
            return opss_pb2.ProbeReply()
        if isinstance(first, Undecodable):
            first.raise_()
        call.rec.request_id = check_identifier("probe_id", first.probe_id) or "-"
        self._admit(call, context)
        t_first = t_last = time.perf_counter()
        first_unix = last_unix = time.time()
        total = count = 0
        msg = first
        while msg is not None:
            if isinstance(msg, Undecodable):
                msg.raise_()
            t_last, last_unix = time.perf_counter(), time.time()
            total += len(msg.payload)
            count += 1
            call.rec.bytes_in = total
            if total > self.config.max_probe_bytes:
                raise _TooLarge(f"probe too large: expected at most {self.config.max_probe_bytes} "
                                f"bytes (max_probe_bytes), got {total}")
            msg = reader.next()
        call.rec.timings["receive"] = t_last - t_first
        return opss_pb2.ProbeReply(probe_id=first.probe_id, bytes_received=total, messages=count,
                                   first_unix_s=first_unix, last_unix_s=last_unix,
                                   receive_s=t_last - t_first)

    def _infer(self, reader: StreamReader, context, call: _Call):
        rec = call.rec
        first = reader.next()
        t0 = time.perf_counter()
        open_unix = time.time()
        op, granularity, wire = self._validate_open(first, rec)
        self._admit(call, context)
        part, cut = self.store.server_part(op.model, granularity, tuple(op.client_set),
                                           tuple(op.cut))
        setup_s = time.perf_counter() - t0
        # the image forms of the input only when the client named the preprocessing it used
        image_inputs = (part.graph.input_id,) if op.preprocess else ()
        reassembler = Reassembler(part.inputs, wire, image_inputs=image_inputs)
        if (self.batcher is not None and part.vertices
                and self.store.get(op.model).batch_refusal is None):
            worker = _BatchedCompute(self.batcher, (op.model, granularity, part.vertices), part,
                                     op.model, t0, call, reader)
        else:
            worker = _ComputeWorker(part.session(), self.device, self._compute, t0,
                                    self.config.inject_delay_s)
        try:
            tensors, first_byte, last_byte = _receive(reader, reassembler, worker, t0, rec)
            reassembler.finish()
            worker.close()
        finally:
            worker.stop()
        output = worker.result()
        timings = _server_timings(tensors, open_unix=open_unix, first_byte=first_byte,
                                  last_byte=last_byte, reply=time.perf_counter() - t0,
                                  setup=setup_s, bytes_in=reassembler.bytes_received)
        timings.batch_size, timings.batch_wait_s = worker.batch_size, worker.batch_wait_s
        rec.timings.update(setup=setup_s, first_byte=timings.first_byte_s,
                           last_byte=timings.last_byte_s, queue=timings.queue_s,
                           compute=timings.compute_s, overlap=timings.overlap_s,
                           reply=timings.reply_s)
        self.metrics.compute.labels(op.model).observe(timings.compute_s)
        self.load.record(op.model, rec.timings.get("admission", 0.0) + timings.queue_s,
                         timings.compute_s)
        return opss_pb2.InferReply(request_id=rec.request_id, output=tensor_to_proto(output),
                                   timings=timings, device=str(self.device), cut=cut,
                                   load=self._load_of(op.model))

    def _validate_open(self, first, rec: _CallLog) -> tuple[opss_pb2.InferOpen, str, str]:
        """Check the call's first message, the ``open``: ``(open, granularity, wire dtype)``."""
        if first is None:
            raise WireError("empty Infer stream: expected an `open` message first, got nothing")
        if isinstance(first, Undecodable):
            first.raise_()
        if first.WhichOneof("kind") != "open":
            raise WireError(f"Infer stream: expected `open` as the first message, got "
                            f"{first.WhichOneof('kind') or 'an empty message'}")
        op = first.open
        _check_open_identifiers(op)
        rec.request_id = op.request_id or uuid.uuid4().hex[:12]
        rec.model = op.model
        loaded = self.store.get(op.model)
        if not op.fingerprint:
            raise WireError(f"model {op.model!r}: expected its fingerprint in `open`, got none "
                            "(ListModels lists it)")
        if op.fingerprint != loaded.fingerprint:
            raise FingerprintMismatchError(
                f"model {op.model!r}: weights differ: expected fingerprint {loaded.fingerprint}, "
                f"got {op.fingerprint}")
        if op.granularity not in _GRANULARITY:
            raise WireError(f"granularity: expected LAYER or BLOCK, got {op.granularity}")
        granularity = _GRANULARITY[op.granularity]
        wire = "float32" if op.wire_dtype == opss_pb2.DTYPE_UNSPECIFIED else dtype_from_proto(
            op.wire_dtype)
        if wire not in WIRE_DTYPES:
            raise WireError(f"wire dtype: expected one of {list(WIRE_DTYPES)}, got {wire}")
        if op.preprocess and op.preprocess != _preprocess_version():
            raise FingerprintMismatchError(
                f"image preprocessing differs: expected {_preprocess_version()!r}, got {op.preprocess!r} "
                "(run the same opss version on both sides)")
        if op.graph_hash and op.graph_hash != self.store.graph_hash(loaded, granularity):
            raise FingerprintMismatchError(
                f"model {op.model!r}: {granularity} graphs differ: expected graph hash "
                f"{self.store.graph_hash(loaded, granularity)}, got {op.graph_hash} (capture the "
                f"model with name={op.model!r} at input shape {list(loaded.input_shape)})")
        return op, granularity, wire


def _preprocess_version() -> str:
    from opss.preprocess import PREPROCESS_VERSION

    return PREPROCESS_VERSION


def _check_open_identifiers(op: opss_pb2.InferOpen) -> None:
    """Every string of an ``open`` bounded and printable (limits.MAX_ID_BYTES) before use."""
    for name in ("request_id", "model", "fingerprint", "graph_hash", "preprocess"):
        check_identifier(name, getattr(op, name))
    check_identifiers("client_set", op.client_set)
    check_identifiers("cut", op.cut)


def _receive(request_iterator, reassembler: Reassembler, worker: _ComputeWorker, t0: float,
             rec: _CallLog) -> tuple[list[_Arrival], float | None, float | None]:
    """Read the tensor chunks after ``open``, handing each completed tensor to ``worker``:
    ``(arrival of each tensor in arrival order, first byte, last byte)``, seconds after ``t0``."""
    arrivals: dict[str, _Arrival] = {}
    order: list[str] = []
    first_byte = last_byte = None
    for msg in request_iterator:
        now = time.perf_counter() - t0
        if isinstance(msg, Undecodable):
            msg.raise_()
        if msg.WhichOneof("kind") != "chunk":
            raise WireError(f"Infer stream: expected tensor chunks after `open`, got "
                            f"{msg.WhichOneof('kind') or 'an empty message'}")
        check_identifier("chunk name", msg.chunk.name)
        chunk = chunk_from_proto(msg.chunk)
        if reassembler.in_progress is None:  # first chunk of a new tensor
            a = _Arrival(chunk.name, first_byte_s=now)
        done = reassembler.add(chunk)  # validates before buffering
        if a.chunks == 0:
            arrivals[chunk.name] = a
            order.append(chunk.name)
        a.bytes += len(chunk.data)
        a.chunks += 1
        rec.bytes_in = reassembler.bytes_received
        first_byte = now if first_byte is None else first_byte
        last_byte = now
        if done is not None:
            a.last_byte_s = now
            a.codec, a.decoded_bytes = chunk.codec, chunk.decoded_bytes or chunk.total_bytes
            a.decode_s = reassembler.decode_seconds.get(chunk.name, 0.0)
            worker.submit(done[0], done[1], a)
        worker.check()
    return [arrivals[n] for n in order], first_byte, last_byte


def _server_timings(tensors: list[_Arrival], *, open_unix: float, first_byte: float | None,
                    last_byte: float | None, reply: float, setup: float,
                    bytes_in: int) -> opss_pb2.ServerTimings:
    """The reply's timings: totals over the tensors and one entry per tensor."""
    last_byte = last_byte or 0.0
    compute = sum(a.compute_s for a in tensors)
    overlap = sum(max(0.0, min(a.compute_start_s + a.compute_s, last_byte) - a.compute_start_s)
                  for a in tensors)
    timings = opss_pb2.ServerTimings(
        open_unix_s=open_unix, first_byte_s=first_byte or 0.0, last_byte_s=last_byte,
        queue_s=sum(a.queue_s for a in tensors), compute_s=compute, overlap_s=overlap,
        reply_s=reply, setup_s=setup, bytes_in=bytes_in, decode_s=sum(a.decode_s for a in tensors))
    for a in tensors:
        timings.tensors.add(name=a.name, bytes=a.bytes, chunks=a.chunks,
                            first_byte_s=a.first_byte_s, last_byte_s=a.last_byte_s,
                            compute_start_s=a.compute_start_s, compute_s=a.compute_s,
                            queue_s=a.queue_s, vertices_run=a.vertices_run, codec=a.codec,
                            decoded_bytes=a.decoded_bytes, decode_s=a.decode_s)
    return timings


class _ComputeWorker:
    """Runs one request's server session on its own thread, tensor by tensor as they arrive.

    The gRPC thread keeps draining the network while this thread computes, so the
    server's compute overlaps the rest of the upload. At most ``compute_slots``
    sessions compute on the device at once; the wait is the tensor's queue time.
    """

    _STOP = object()
    batch_size = 1
    batch_wait_s = 0.0

    def __init__(self, session, device: torch.device, compute: threading.Semaphore,
                 t0: float, extra_s: float = 0.0) -> None:
        self._extra_s = extra_s  # injected compute delay, once per call (tests)
        self._session = session
        self._device = device
        self._compute = compute
        self._t0 = t0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opss-compute", daemon=True)
        self._thread.start()

    def submit(self, name: str, tensor: torch.Tensor, arrival: _Arrival) -> None:
        self._queue.put((name, tensor, arrival))

    def check(self) -> None:
        """Re-raise a compute failure in the receiving thread."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """No more tensors: wait until every queued one is computed."""
        self._queue.put(self._STOP)
        self._thread.join()
        self.check()

    def stop(self) -> None:
        """Abandon the request (error or cancel): drop queued tensors, end the thread."""
        if self._thread.is_alive():
            self._cancel.set()
            self._queue.put(self._STOP)
            self._thread.join()

    def result(self) -> torch.Tensor:
        if not self._session.done:
            raise WireError("every expected tensor arrived but the server part is not done")
        out = self._session.result()
        return out.detach().to("cpu")

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP or self._cancel.is_set():
                return
            if self._error is not None:
                continue
            name, tensor, a = item
            try:
                t_wait = time.perf_counter()
                with self._compute:
                    start = time.perf_counter()
                    a.queue_s = start - t_wait
                    a.compute_start_s = start - self._t0
                    with torch.no_grad():
                        ran = self._session.feed(name, tensor.to(self._device))
                    synchronize(self._device)
                    if self._extra_s:
                        time.sleep(self._extra_s)
                        self._extra_s = 0.0
                    a.compute_s = time.perf_counter() - start
                a.vertices_run = len(ran)
            except BaseException as e:  # surfaced to the gRPC thread by check()/close()
                self._error = e


class _BatchedCompute:
    """One request's server part computed in a dynamic batch, with :class:`_ComputeWorker`'s
    interface: the tensors are kept as they arrive; :meth:`close` (all arrived) queues them
    in the partition's lane and waits for the batch, within the call's deadline and while
    its client is there."""

    def __init__(self, batcher: DynamicBatcher, key, part, model: str, t0: float, call: _Call,
                 reader: StreamReader) -> None:
        self._batcher, self._key, self._part, self._model = batcher, key, part, model
        self._t0, self._call, self._reader = t0, call, reader
        self._inputs: dict[str, torch.Tensor] = {}
        self._last: _Arrival | None = None
        self._job: BatchJob | None = None
        self.batch_size, self.batch_wait_s = 0, 0.0

    def submit(self, name: str, tensor: torch.Tensor, arrival: _Arrival) -> None:
        self._inputs[name] = tensor
        self._last = arrival

    def check(self) -> None:
        pass

    def close(self) -> None:
        job = self._job = self._batcher.submit(self._key, self._part, self._inputs, self._model)
        while not job.done.wait(0.05):
            if self._call.gone.is_set():
                raise ClientGone("client went away while its call waited for its batch")
            if time.monotonic() > self._reader.deadline:
                raise StreamTimeout(f"call still open after {self._reader.total_s:g} s (the call "
                                    f"deadline, stream_timeout_s), waiting for its batch")
        if job.error is not None:
            raise job.error
        if job.output is None:
            raise ClientGone("call cancelled while waiting for its batch")
        a = self._last
        if a is not None:
            a.queue_s = job.started - job.queued
            a.compute_start_s = job.started - self._t0
            a.compute_s = job.compute_s
            a.vertices_run = len(self._part.vertices)
        self.batch_size, self.batch_wait_s = job.batch_size, job.formed_s

    def stop(self) -> None:
        if self._job is not None and not self._job.done.is_set():
            self._batcher.cancel(self._job)

    def result(self) -> torch.Tensor:
        if self._job is None or self._job.output is None:
            raise WireError("every expected tensor arrived but the server part is not done")
        return self._job.output
