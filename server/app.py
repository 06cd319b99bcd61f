"""Building and running an OPSS server in-process.

:func:`build_server` starts a ready server for a :class:`ServerConfig` and returns an
:class:`OpssServer` handle: the gRPC server, its port (port 0 → the chosen one), the
servicer, the model store, the health servicer and the metrics port (when exported).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .auth import TokenAuthInterceptor
from .config import ServerConfig
from .servicer import SERVICE, InferenceServicer
from .store import ModelStore, resolve_device

log = logging.getLogger("opss.server")


@dataclass
class OpssServer:
    """A started server: the gRPC server, its port, and the parts behind it."""

    server: grpc.Server
    port: int
    config: ServerConfig
    servicer: InferenceServicer
    store: ModelStore
    health: health.HealthServicer
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop accepting calls, let in-flight ones finish for ``grace`` s, then cancel them."""
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(self.config.grace_s if grace is None else grace)
        threading.Thread(target=lambda: (stopped.wait(), self.servicer.metrics.stop()),
                         name="opss-metrics-stop", daemon=True).start()
        return stopped


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _options(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC core options: message sizes, keepalive, connection idle/age, handshake time.

    A client may ping at most every 20 s without calls in flight (more often is a ping
    strike; two strikes close its connection); opss-client pings only during calls.
    """
    return [("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_reply_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", _ms(config.keepalive_s)),
            ("grpc.keepalive_timeout_ms", _ms(config.keepalive_timeout_s)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.max_connection_idle_ms", _ms(config.connection_idle_s)),
            ("grpc.max_connection_age_ms", _ms(config.connection_age_s)),
            ("grpc.max_connection_age_grace_ms", _ms(config.stream_timeout_s)),
            ("grpc.server_handshake_timeout_ms", _ms(config.handshake_timeout_s))]


def _credentials(config: ServerConfig) -> grpc.ServerCredentials:
    """TLS credentials; with ``tls_client_ca`` every client must present a certificate it signed."""
    pair = [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
    if config.tls_client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(pair, root_certificates=Path(config.tls_client_ca).read_bytes(),
                                       require_client_auth=True)


def _check_bindable(host: str, port: int, address: str) -> None:
    """Bind ``host:port`` once ourselves before gRPC does, so a port in use is our one line
    (gRPC's C core would log its own ``Failed to add port`` line on stderr first).

    SO_REUSEADDR like gRPC's own sockets, so a port left in TIME_WAIT is not taken for one in
    use; the probe socket is closed before gRPC binds (a race with another process is still
    caught by gRPC's answer below). Port 0 needs no check.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(f"cannot listen on {address}: port {port} is already in use "
                                  "(another process listens there; choose another --port)") from None
                raise OSError(f"cannot listen on {address}: {exc.strerror or exc}") from None


def build_server(config: ServerConfig) -> OpssServer:
    """Bind, start (health NOT_SERVING), load and warm up every model, then report SERVING.

    Raises the loading error (e.g. ModelNotFoundError) after stopping the server.
    """
    device = resolve_device(config.device)
    store = ModelStore(config, device)
    servicer = InferenceServicer(config, store)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    interceptors = [TokenAuthInterceptor(config.token)] if config.token else []
    server = grpc.server(ThreadPoolExecutor(max_workers=config.max_workers,
                                            thread_name_prefix="opss-grpc"),
                         handlers=[servicer.handlers()], interceptors=interceptors,
                         options=_options(config),
                         maximum_concurrent_rpcs=2 * config.max_workers)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{config.host}:{config.port}"
    _check_bindable(config.host, config.port, address)
    try:
        if config.tls_cert:
            port = server.add_secure_port(address, _credentials(config))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"cannot listen on {address}: {e}") from None
    if port == 0:
        raise OSError(f"cannot listen on {address}: port in use or address unavailable")
    server.start()
    try:
        metrics_port = _serve_metrics(config, servicer)
        t0 = time.perf_counter()
        store.load_all()
    except BaseException:
        server.stop(0)
        servicer.metrics.stop()
        raise
    servicer.ready.set()
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %d models on %s (%s) after %.1f s", len(store.models), device,
             ", ".join(store.models), time.perf_counter() - t0)
    return OpssServer(server, port, config, servicer, store, health_servicer, metrics_port)


def _serve_metrics(config: ServerConfig, servicer: InferenceServicer) -> int | None:
    """Start the Prometheus exporter when ``metrics_port`` is set; its port, or None."""
    if config.metrics_port is None:
        return None
    host = config.metrics_host or config.host
    try:
        port = servicer.metrics.serve(host, config.metrics_port)
    except OSError as e:
        raise OSError(f"cannot serve metrics on {host}:{config.metrics_port}: "
                      f"{e.strerror or e}") from None
    log.info("metrics on http://%s:%d/metrics", host, port)
    return port
