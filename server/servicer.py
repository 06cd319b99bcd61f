"""The opss.v1.Opss servicer: Infer, Probe, ListModels.

This is the only place that turns library errors into gRPC status codes:

=============================================  ======================
``ModelNotFoundError``                         ``NOT_FOUND``
``FingerprintMismatchError``                   ``FAILED_PRECONDITION``
``PartitionError``, ``ShapeMismatchError``,    ``INVALID_ARGUMENT``
``WireError``, undecodable messages
more calls than ``max_inflight``, a Probe      ``RESOURCE_EXHAUSTED``
beyond ``max_probe_bytes``
a call before the models are loaded            ``UNAVAILABLE``
anything else (a bug)                          ``INTERNAL``
=============================================  ======================

Every call ends with a reply or an error status and exactly one log line.
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

from .config import ServerConfig
from .store import ModelStore, synchronize

log = logging.getLogger("opss.server")

SERVICE = "opss.v1.Opss"
_GRANULARITY = {opss_pb2.GRANULARITY_UNSPECIFIED: "layer", opss_pb2.LAYER: "layer",
                opss_pb2.BLOCK: "block"}
_GRANULARITY_PB = {"layer": opss_pb2.LAYER, "block": opss_pb2.BLOCK}


class Undecodable:
    """Stands in for a request message whose bytes are not a valid protobuf."""

    def __init__(self, kind: str, size: int, error: str) -> None:
        self.kind, self.size, self.error = kind, size, error

    def raise_(self):
        raise WireError(f"undecodable {self.kind} message of {self.size} bytes: {self.error}")


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


class _Busy(Exception):
    pass


class _NotReady(Exception):
    pass


def status_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an error raised while serving a call."""
    if isinstance(error, _Busy):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, _NotReady):
        return grpc.StatusCode.UNAVAILABLE
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
        self._slots = threading.BoundedSemaphore(config.max_inflight)
        self._compute = threading.BoundedSemaphore(config.compute_slots)
        self._inflight = 0
        self._count_lock = threading.Lock()
        self.served = 0
        self.failed = 0

    @property
    def inflight(self) -> int:
        """Infer/Probe calls holding a slot right now."""
        with self._count_lock:
            return self._inflight

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

    def _serve(self, kind: str, body, request_iterator, context, slot: bool):
        """Run one call: take a slot, arm the stall watchdog, map errors, log one line."""
        rec = _CallLog(kind=kind, peer=context.peer())
        t0 = time.perf_counter()
        taken = False
        watchdog = None
        error: BaseException | None = None
        try:
            if not self.ready.is_set():
                raise _NotReady("server is loading its models: expected a ready server, "
                                "retry after the health service reports SERVING")
            if slot:
                taken = self._slots.acquire(blocking=False)
                if not taken:
                    raise _Busy(f"server busy: expected at most {self.config.max_inflight} calls "
                                f"in flight (max_inflight), got one more; retry later")
                with self._count_lock:
                    self._inflight += 1
                watchdog = threading.Timer(self.config.stream_timeout_s, self._stall,
                                           args=(context, rec))
                watchdog.daemon = True
                watchdog.start()
            return body(request_iterator, context, rec)
        except grpc.RpcError as e:
            # the client went away or its deadline passed while we were reading
            rec.status = "CANCELLED"
            rec.detail = "client cancelled or deadline exceeded mid-stream"
            error = e
        except Exception as e:
            code = status_of(e)
            rec.status = code.name
            rec.detail = str(e) if code != grpc.StatusCode.INTERNAL else (
                f"internal error: {type(e).__name__}: {e}")
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s %s failed", kind, rec.request_id)
            error = e
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if taken:
                with self._count_lock:
                    self._inflight -= 1
                self._slots.release()
            rec.timings.setdefault("total", time.perf_counter() - t0)
            self._log(rec)
        if isinstance(error, grpc.RpcError):
            raise error
        context.abort(status_of(error), rec.detail)

    def _stall(self, context, rec: _CallLog) -> None:
        log.warning("%s %s still open after %.0f s (stream_timeout_s): cancelling", rec.kind,
                    rec.request_id, self.config.stream_timeout_s)
        context.cancel()

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
                f" error={rec.detail!r}" if rec.detail else "")

    # --- RPCs ---------------------------------------------------------------------------------
    def Infer(self, request_iterator, context):
        return self._serve("infer", self._infer, request_iterator, context, slot=True)

    def Probe(self, request_iterator, context):
        return self._serve("probe", self._probe, request_iterator, context, slot=True)

    def ListModels(self, request, context):
        return self._serve("list", self._list_models, request, context, slot=False)

    def _list_models(self, request, context, rec: _CallLog):
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
        return reply

    def _probe(self, request_iterator, context, rec: _CallLog):
        t_first = t_last = None
        first_unix = last_unix = 0.0
        total = count = 0
        probe_id = ""
        for msg in request_iterator:
            if isinstance(msg, Undecodable):
                msg.raise_()
            now, unix = time.perf_counter(), time.time()
            if t_first is None:
                t_first, first_unix, probe_id = now, unix, msg.probe_id
                rec.request_id = probe_id or "-"
            t_last, last_unix = now, unix
            total += len(msg.payload)
            count += 1
            rec.bytes_in = total
            if total > self.config.max_probe_bytes:
                raise _Busy(f"probe too large: expected at most {self.config.max_probe_bytes} "
                            f"bytes (max_probe_bytes), got {total}")
        receive = 0.0 if t_first is None else t_last - t_first
        rec.timings["receive"] = receive
        return opss_pb2.ProbeReply(probe_id=probe_id, bytes_received=total, messages=count,
                                   first_unix_s=first_unix, last_unix_s=last_unix, receive_s=receive)

    def _infer(self, request_iterator, context, rec: _CallLog):
        first = next(request_iterator, None)
        t0 = time.perf_counter()
        open_unix = time.time()
        op, granularity, wire = self._validate_open(first, rec)
        part, cut = self.store.server_part(op.model, granularity, tuple(op.client_set),
                                           tuple(op.cut))
        setup_s = time.perf_counter() - t0
        # the image forms of the input only when the client named the preprocessing it used
        image_inputs = (part.graph.input_id,) if op.preprocess else ()
        reassembler = Reassembler(part.inputs, wire, image_inputs=image_inputs)
        worker = _ComputeWorker(part.session(), self.device, self._compute, t0)
        try:
            tensors, first_byte, last_byte = _receive(request_iterator, reassembler, worker, t0, rec)
            reassembler.finish()
            worker.close()
        finally:
            worker.stop()
        output = worker.result()
        timings = _server_timings(tensors, open_unix=open_unix, first_byte=first_byte,
                                  last_byte=last_byte, reply=time.perf_counter() - t0,
                                  setup=setup_s, bytes_in=reassembler.bytes_received)
        rec.timings.update(setup=setup_s, first_byte=timings.first_byte_s,
                           last_byte=timings.last_byte_s, queue=timings.queue_s,
                           compute=timings.compute_s, overlap=timings.overlap_s,
                           reply=timings.reply_s)
        return opss_pb2.InferReply(request_id=rec.request_id, output=tensor_to_proto(output),
                                   timings=timings, device=str(self.device), cut=cut)

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

    def __init__(self, session, device: torch.device, compute: threading.Semaphore,
                 t0: float) -> None:
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
                    a.compute_s = time.perf_counter() - start
                a.vertices_run = len(ran)
            except BaseException as e:  # surfaced to the gRPC thread by check()/close()
                self._error = e
