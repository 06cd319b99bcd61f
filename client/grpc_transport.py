"""The runtime's transport over gRPC (``opss.v1.Opss``): Infer, Probe, ListModels.

Every gRPC failure becomes :class:`~opss.client.runtime.CallFailed` with a one-line
reason (unreachable, deadline, the server's status and details), which the
runtime turns into a local fallback; nothing here prints a traceback.

The request stream of an ``Infer`` call is fed through a small bounded queue
(two messages), so the sender's ``push`` returns when gRPC has taken the
previous message. gRPC (HTTP/2 flow-control windows, the kernel's TCP send
buffer) still takes hundreds of kB before they cross a slow link, so a push's
end is not an arrival: the reply passes the server's per-tensor arrival times
on (``Reply.server["arrivals"]``) and the runtime reconciles the upload
intervals with them.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from opss.client.runtime import UPLOAD_CHUNK_BYTES, CallFailed, CallHeader, Reply, UploadMessage

__all__ = ["GrpcTransport", "describe_rpc_error"]

_END = object()
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def describe_rpc_error(exc: Any, target: str, timeout: float | None = None) -> str:
    """One line for a grpc.RpcError: what failed and why."""
    import grpc

    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    details = " ".join(str(details).split())[:200]
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"server {target} unreachable ({details or 'unavailable'})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        limit = f" of {timeout:g}s" if timeout else ""
        return f"server {target} exceeded the deadline{limit}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"server {target} rejected our credentials ({details}); give the right --token-file"
    if code == grpc.StatusCode.CANCELLED:
        return f"call to {target} cancelled ({details or 'cancelled'})"
    name = code.name if code is not None else type(exc).__name__
    return f"server {target} answered {name}: {details}"


class GrpcTransport:
    """Talks to one ``opss-server`` at ``target`` (``HOST:PORT``)."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        granularity: str = "layer",
    ) -> None:
        import grpc

        self.target = target
        self.chunk_bytes = int(chunk_bytes)
        self.granularity = granularity
        self.metadata: tuple = (("authorization", f"Bearer {token}"),) if token else ()
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # reconnect quickly after a server restart (the retry path)
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        from opss.v1 import opss_pb2_grpc

        self.stub = opss_pb2_grpc.OpssStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    # ---- unary helpers ---------------------------------------------------------------
    def list_models(self, timeout: float = 5.0) -> Any:
        """The server's ListModelsReply; CallFailed when it cannot be reached."""
        import grpc

        from opss.v1 import opss_pb2

        try:
            return self.stub.ListModels(
                opss_pb2.ListModelsRequest(), timeout=timeout, metadata=self.metadata, wait_for_ready=False
            )
        except grpc.RpcError as exc:
            fatal = exc.code() == grpc.StatusCode.UNAUTHENTICATED
            raise CallFailed(describe_rpc_error(exc, self.target, timeout), fatal=fatal) from None

    def probe(self, sizes: Sequence[int], throttle: Any = None, timeout: float = 30.0) -> list[tuple[int, float]]:
        """Send one Probe call per size (one payload message each); return (bytes, seconds) samples.

        Each sample's time is the round trip of one call carrying ``size`` bytes:
        the per-message delay ``c`` plus ``size / b``. With a throttle the payload
        is paid for at the token bucket, as the sender pays for tensor chunks.
        """
        import grpc

        from opss.v1 import opss_pb2

        samples = []
        for i, size in enumerate(sizes):
            payload = bytes(int(size))

            def messages(payload=payload, i=i):
                # the payload is paid for in chunk-sized pieces, as tensors are
                for off in range(0, max(len(payload), 1), self.chunk_bytes):
                    piece = payload[off : off + self.chunk_bytes]
                    if throttle is not None:
                        throttle.consume(len(piece))
                    yield opss_pb2.ProbeRequest(probe_id=f"p{i}", payload=piece)

            start = time.perf_counter()
            try:
                self.stub.Probe(messages(), timeout=timeout, metadata=self.metadata)
            except grpc.RpcError as exc:
                raise CallFailed(describe_rpc_error(exc, self.target, timeout)) from None
            samples.append((int(size), time.perf_counter() - start))
        return samples

    # ---- Infer -----------------------------------------------------------------------
    def open(self, header: CallHeader, timeout: float | None) -> _GrpcCall:
        return _GrpcCall(self, header, timeout)


class _GrpcCall:
    def __init__(self, transport: GrpcTransport, header: CallHeader, timeout: float | None) -> None:
        from opss import wire

        self.t = transport
        self.header = header
        self.timeout = timeout
        self.wire_dtype = header.wire_dtype
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self._cancelled = threading.Event()
        open_msg = wire.infer_open(
            header.model, header.fingerprint, client_set=header.client_set, cut=header.cut,
            request_id=header.request_id, granularity=transport.granularity, wire_dtype=header.wire_dtype,
            graph_hash=header.graph_hash, preprocess=header.preprocess,
        )
        # the open message, then each chunk message as the sender pushes it (see push)
        requests = itertools.chain((open_msg,), iter(self.q.get, _END))
        self.future = transport.stub.Infer.future(requests, timeout=timeout, metadata=transport.metadata)

    def chunks(self, name: str, tensor: Any) -> Iterable[UploadMessage]:
        from opss import wire

        for c in self.header.chunk_messages(name, tensor, self.t.chunk_bytes):
            yield UploadMessage.of(c, wire.chunk_request(c))

    def _failed(self) -> str:
        import grpc

        try:
            self.future.result(timeout=0)
        except grpc.RpcError as exc:
            return describe_rpc_error(exc, self.t.target, self.timeout)
        except Exception as exc:
            return f"call to {self.t.target} failed: {type(exc).__name__}: {exc}"
        return f"server {self.t.target} answered before the upload finished"

    def push(self, chunk: UploadMessage) -> None:
        while True:
            if self.future.done():
                raise CallFailed(self._failed())
            try:
                self.q.put(chunk.message, timeout=0.05)
                return
            except queue.Full:
                continue

    def finish(self) -> Reply:
        import grpc

        from opss import wire

        while True:
            if self.future.done():
                break
            try:
                self.q.put(_END, timeout=0.05)
                break
            except queue.Full:
                continue
        try:
            reply = self.future.result()
        except grpc.RpcError as exc:
            raise CallFailed(describe_rpc_error(exc, self.t.target, self.timeout)) from None
        try:
            output = wire.tensor_from_proto(reply.output)
        except Exception as exc:
            raise CallFailed(f"server {self.t.target} sent an unreadable output: {exc}") from None
        tm = reply.timings
        server = {
            "compute": tm.compute_s,
            "queue": tm.queue_s,
            "overlap": tm.overlap_s,
            "setup": tm.setup_s,
            "first_byte": tm.first_byte_s,
            "last_byte": tm.last_byte_s,
            "reply_ready": tm.reply_s,
            "bytes_in": float(tm.bytes_in),
            "decode": tm.decode_s,
        }
        if tm.tensors:
            # seconds after the server received the open message (TensorArrival in the proto)
            server["arrivals"] = {
                a.name: {"first_byte": a.first_byte_s, "last_byte": a.last_byte_s, "bytes": float(a.bytes),
                         "codec": a.codec or "raw", "decoded_bytes": float(a.decoded_bytes or a.bytes),
                         "decode": a.decode_s}
                for a in tm.tensors
            }
        return Reply(output=output, server=server)

    def cancel(self) -> None:
        if not self._cancelled.is_set():
            self._cancelled.set()
            self.future.cancel()
            try:  # unblock the request generator if gRPC is still pulling
                self.q.put_nowait(_END)
            except queue.Full:
                pass
