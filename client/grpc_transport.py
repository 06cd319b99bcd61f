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

The target is any gRPC target (:func:`check_target`): ``HOST:PORT``, ``dns:///host:port``
(every address the name resolves to), ``ipv4:127.0.0.1:5001,127.0.0.1:5002``. The channel's
service config (:data:`SERVICE_CONFIG`) spreads calls over the resolved replicas with gRPC's
own ``round_robin`` policy, watches each replica's standard health service (client-side
health checking, ``grpc.health.v1.Health/Watch`` for the empty service name, which
opss-server reports SERVING once its models are loaded and NOT_SERVING as it shuts down),
so calls skip a replica that is loading, draining or gone, and retries a call that failed
UNAVAILABLE (a replica died under it) or that the server cancelled before answering (a
replica shutting down cancels the calls it had not yet handed to a handler:
grpc/grpc#41785) on another replica: gRPC replays the call's messages, buffered up to
:data:`RETRY_BUFFER_BYTES`. A call the client cancels itself is never retried (gRPC commits a
call the application cancels).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from opss.client.runtime import UPLOAD_CHUNK_BYTES, CallFailed, CallHeader, Reply, UploadMessage
from opss.errors import OpssError

__all__ = ["GrpcTransport", "RETRY_PUSHBACK_KEY", "SERVICE_CONFIG", "check_target", "describe_rpc_error",
           "is_loopback", "target_addresses"]

_END = object()
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

#: Trailing metadata of a RESOURCE_EXHAUSTED from a loaded server: milliseconds to wait
#: before trying again (gRFC A6 server pushback; opss-server sends it on refusals).
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"

#: Bytes of one call's messages gRPC keeps to replay it on another replica (a larger call is
#: committed to its replica once it has sent this much and is not retried).
RETRY_BUFFER_BYTES = 64 * 1024 * 1024

#: The channel's service config: round robin over the resolved addresses, client-side health
#: checking on the standard health service (empty service name: the whole server), and a retry
#: of UNAVAILABLE calls and of calls the server cancelled before its reply's headers (a
#: shutting-down gRPC server answers calls still queued in its core CANCELLED, not
#: UNAVAILABLE: grpc/grpc#41785). Infer is a pure function of its inputs, so a replay is safe.
SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{"service": "opss.v1.Opss"}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"]},
    }],
}

#: gRPC's UNAVAILABLE detail when every address of the target failed (round robin)
_ALL_FAILING = "connections to all backends failing"

_SCHEMES = ("dns", "ipv4", "ipv6", "unix", "unix-abstract")


def _host_port(text: str, whole: str) -> tuple[str, str]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OpssError(f"server: expected HOST:PORT, dns:///HOST:PORT or ipv4:ADDR:PORT,ADDR:PORT "
                        f"(e.g. 127.0.0.1:50051), got {whole!r}")
    return host.strip("[]"), port


def target_addresses(target: str) -> list[tuple[str, str]]:
    """The ``(host, port)`` pairs a gRPC target names (before DNS): one for ``HOST:PORT`` and
    ``dns:[//authority/]HOST:PORT``, each listed one for ``ipv4:``/``ipv6:`` lists;
    ``("localhost", "")`` for a ``unix:`` socket. OpssError (one line) for anything else."""
    scheme, sep, rest = target.partition(":")
    if sep and scheme in _SCHEMES and not (scheme == "dns" and rest.isdigit()):
        if scheme.startswith("unix"):
            if not rest:
                raise OpssError(f"server: expected a socket path after {scheme}:, got {target!r}")
            return [("localhost", "")]
        if scheme == "dns":
            if rest.startswith("//"):
                rest = rest[2:].partition("/")[2]
            return [_host_port(rest, target)]
        return [_host_port(a, target) for a in rest.split(",")]
    return [_host_port(target, target)]


def check_target(text: str) -> str:
    """``text`` when it is a gRPC target this client dials (:func:`target_addresses`)."""
    target_addresses(text)
    return text


def describe_rpc_error(exc: Any, target: str, timeout: float | None = None) -> str:
    """One line for a grpc.RpcError: what failed and why."""
    import grpc

    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    details = " ".join(str(details).split())[:200]
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"server {target} unreachable ({details or 'unavailable'})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        if details and details != "Deadline Exceeded":  # the server's own limit, named
            return f"server {target} ended the call: {details}"
        limit = f" of {timeout:g}s" if timeout else ""
        return f"server {target} exceeded the deadline{limit}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"server {target} rejected our credentials ({details}); give the right --token-file"
    if code == grpc.StatusCode.CANCELLED:
        return f"call to {target} cancelled ({details or 'cancelled'})"
    name = code.name if code is not None else type(exc).__name__
    return f"server {target} answered {name}: {details}"


def is_loopback(target: str) -> bool:
    """Whether every address of ``target`` names this machine by a loopback address
    (``localhost``, ``127.0.0.0/8``, ``::1``, a unix socket); a host name other than
    ``localhost`` counts as remote."""
    try:
        hosts = [h for h, _ in target_addresses(target)]
    except OpssError:
        return False
    return all(_loopback_host(h) for h in hosts)


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_pem(flag: str, path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OpssError(f"{flag} {path}: cannot read it ({exc.strerror})") from None


class GrpcTransport:
    """Talks to the ``opss-server`` replicas of ``target`` (any gRPC target, see the module
    docstring; calls go round robin over the healthy ones).

    ``tls_ca`` (PEM file: the CA that signed the server's certificate) makes the channel
    TLS; ``tls_cert``/``tls_key`` add this client's certificate (mutual TLS). A bearer
    ``token`` goes over plaintext only to a loopback address: elsewhere it would
    cross the network in clear, so the constructor refuses (OpssError, one line).
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        granularity: str = "layer",
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        import grpc

        if (tls_cert is None) != (tls_key is None):
            raise OpssError("--tls-cert/--tls-key: expected both (this client's certificate and its key) "
                            "or neither, got one")
        if tls_cert is not None and tls_ca is None:
            raise OpssError("--tls-cert: expected --tls-ca too (the CA that signed the server's certificate)")
        if token and tls_ca is None and not is_loopback(target):
            raise OpssError(f"--token-file: refusing to send the bearer token in clear text to {target} "
                            "(not a loopback address): give --tls-ca FILE to talk TLS")
        target_addresses(target)  # one line for a target gRPC would not dial
        self.target = target
        self.chunk_bytes = int(chunk_bytes)
        self.granularity = granularity
        self.metadata: tuple = (("authorization", f"Bearer {token}"),) if token else ()
        self.tls = tls_ca is not None
        self._pems = (_read_pem("--tls-ca", tls_ca), _read_pem("--tls-key", tls_key),
                      _read_pem("--tls-cert", tls_cert))
        self._client_cert = (tls_cert, tls_key) if tls_cert is not None else None
        self._retry_after: float | None = None
        self._diagnosis: tuple[float, str] | None = None  # (when, what was wrong or "")
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # reconnect quickly after a server restart (the retry path)
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # notice a dead link during a long call; never ping an idle connection (the
            # server allows one ping per 20 s without calls)
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 0),
            # spread over the replicas, skip unhealthy ones, replay a call a dead one dropped
            ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
            ("grpc.enable_retries", 1),
            ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
        ]
        if self.tls:
            creds = grpc.ssl_channel_credentials(*self._pems)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        from opss.v1 import opss_pb2_grpc

        self.stub = opss_pb2_grpc.OpssStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def retry_after(self) -> float | None:
        """The server's retry hint (seconds) from the last refused call, once; None if none came."""
        hint, self._retry_after = self._retry_after, None
        return hint

    def failure(self, exc: Any, timeout: float | None = None) -> CallFailed:
        """The CallFailed for a grpc.RpcError: its one line, the server's retry hint kept for
        :meth:`retry_after`; a TLS/plaintext mismatch or an untrusted certificate is named as such
        (and fatal: retrying cannot help)."""
        import grpc

        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._retry_after = _pushback_s(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            tls = self._tls_problem(str(exc.details() or ""))
            if tls is not None:
                return CallFailed(tls, fatal=True)
        return CallFailed(describe_rpc_error(exc, self.target, timeout),
                          fatal=code == grpc.StatusCode.UNAUTHENTICATED)

    def _tls_problem(self, details: str) -> str | None:
        """What is wrong with TLS between us and the server, or None when TLS is not the problem
        (a found problem is kept; "no problem" is re-checked after 5 s, the server may change)."""
        addresses = target_addresses(self.target)
        if len(addresses) != 1 or not addresses[0][1]:
            return None  # several replicas (or a unix socket): no single handshake to try
        now = time.monotonic()
        if self._diagnosis is None or (not self._diagnosis[1] and now - self._diagnosis[0] > 5.0):
            found = _diagnose_tls("%s:%s" % addresses[0], details, self._pems[0] if self.tls else None,
                                  self._client_cert)
            self._diagnosis = (now, found or "")
        return self._diagnosis[1] or None


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
            raise self.failure(exc, timeout) from None

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
                raise self.failure(exc, timeout) from None
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
            return self.t.failure(exc, self.timeout).reason
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
            raise self.t.failure(exc, self.timeout) from None
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
            "batch_size": float(tm.batch_size or 1),
        }
        if reply.HasField("load"):  # the replica's recent load on this model (this call included)
            server["load_queue"] = reply.load.queue_s
            server["load_compute"] = reply.load.compute_s
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


def _pushback_s(exc: Any) -> float | None:
    """The server's retry hint in a refused call's trailing metadata, seconds (None: none sent)."""
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:
        return None
    for key, value in trailers:
        if key == RETRY_PUSHBACK_KEY:
            try:
                ms = int(value)
            except (TypeError, ValueError):
                return None
            return ms / 1e3 if 0 <= ms <= 3_600_000 else None
    return None


def _diagnose_tls(target: str, details: str, ca: bytes | None,
                  client_cert: tuple[str, str] | None) -> str | None:
    """Name a TLS problem behind an UNAVAILABLE call (``ca`` None: a plaintext channel),
    from gRPC's details and, where they are ambiguous ("Socket closed"), a TLS handshake of
    our own with the server; None when TLS is not the problem."""
    # round robin over several addresses of one name (localhost: ::1 and 127.0.0.1) reports the
    # last address's error, which may be a refused one: then our own handshake tells
    every_failed = _ALL_FAILING in details
    if ca is None:
        if ("Socket closed" in details and _handshake(target, None, None) != "plaintext") or (
                every_failed and _handshake(target, None, None) not in ("plaintext", "unreachable")):
            return (f"server {target} speaks TLS but this client connects in plaintext: give --tls-ca FILE "
                    "(the CA that signed its certificate)")
        return None
    if "WRONG_VERSION_NUMBER" in details:
        return (f"server {target} does not speak TLS (it answers in plaintext): drop --tls-ca, or start it "
                "with --tls-cert/--tls-key")
    if "CERTIFICATE_VERIFY_FAILED" in details:
        why = details.partition("CERTIFICATE_VERIFY_FAILED:")[2].split(":")[0].strip() or "unverified"
        return f"server {target}'s TLS certificate is not signed by the --tls-ca given ({why})"
    if "Peer name" in details or "peer certificate" in details:
        return (f"server {target}'s TLS certificate does not name host {target.rpartition(':')[0]} "
                "(its subjectAltName must list the address this client dials)")
    if "Socket closed" in details or every_failed:
        verdict = _handshake(target, ca, client_cert)
        if every_failed and verdict == "plaintext":
            return (f"server {target} does not speak TLS (it answers in plaintext): drop --tls-ca, or start it "
                    "with --tls-cert/--tls-key")
        if every_failed and verdict.startswith("CERTIFICATE_VERIFY_FAILED"):
            why = verdict.partition(": ")[2] or "unverified"
            if "hostname" in why.lower() or "ip address" in why.lower():
                return (f"server {target}'s TLS certificate does not name host {target.rpartition(':')[0]} "
                        "(its subjectAltName must list the address this client dials)")
            return f"server {target}'s TLS certificate is not signed by the --tls-ca given ({why})"
        if verdict not in ("ok", "plaintext", "unreachable"):
            given = "rejected this client's certificate" if client_cert else "requires a client certificate"
            return f"server {target} {given} (mutual TLS: {verdict}); give --tls-cert/--tls-key it trusts"
    return None


def _handshake(target: str, ca: bytes | None, client_cert: tuple[str, str] | None,
               timeout: float = 2.0) -> str:
    """A TLS handshake with the server, then one read: "ok" (it answered over TLS),
    "plaintext" (no TLS there), "unreachable", or the TLS alert it sent. Without ``ca``
    the server's certificate is not checked (this only asks whether it speaks TLS)."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    ctx = ssl.create_default_context(cadata=ca.decode("ascii", "replace")) if ca else ssl.create_default_context()
    if ca is None:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if client_cert is not None:
        ctx.load_cert_chain(client_cert[0], client_cert[1])
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                return "ok" if tls.recv(1) else "closed after the handshake"
    except ssl.SSLCertVerificationError as exc:
        return f"CERTIFICATE_VERIFY_FAILED: {exc.verify_message}"
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        return "plaintext" if reason in ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING") else reason
    except (ConnectionResetError, BrokenPipeError):
        return "plaintext"
    except OSError:
        return "unreachable"

