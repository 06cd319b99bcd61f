"""Prometheus metrics of an OPSS server (``prometheus_client``, text exposition on HTTP).

Exported, each in its own registry per server (several servers may share a process):

==================================  =========  ==========================================
``opss_server_calls_total``         counter    finished calls, by ``method`` (Infer, Probe,
                                               ListModels) and ``status`` (gRPC code name)
``opss_server_call_seconds``        histogram  call latency (handler start to status), by method
``opss_server_queue_wait_seconds``  histogram  time an admitted Infer/Probe waited for a slot
``opss_server_received_bytes_total`` counter   tensor/probe payload bytes received, by method
``opss_server_compute_seconds``     histogram  server-part compute time per Infer, by ``model``
``opss_server_batch_size``          histogram  calls computed together per batch, by ``model``
                                               (dynamic batching only)
``opss_server_inflight_calls``      gauge      Infer/Probe calls holding a slot
``opss_server_queued_calls``        gauge      calls waiting in the admission queue
``opss_server_open_streams``        gauge      Infer/Probe calls open (reading, queued or running)
``opss_server_ready``               gauge      1 once every model is loaded and warmed up
==================================  =========  ==========================================
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: Latency buckets (seconds): loopback calls take milliseconds, a 3G upload seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)


class ServerMetrics:
    """The server's instruments; :meth:`serve` exposes them on HTTP ``/metrics``."""

    def __init__(self, inflight: Callable[[], float], queued: Callable[[], float],
                 open_streams: Callable[[], float], ready: Callable[[], float]) -> None:
        r = self.registry = CollectorRegistry()
        self.calls = Counter("opss_server_calls", "Finished calls by method and status",
                             ["method", "status"], registry=r)
        self.latency = Histogram("opss_server_call_seconds", "Call latency in seconds",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("opss_server_queue_wait_seconds",
                                    "Seconds an admitted call waited for a slot", ["method"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("opss_server_received_bytes", "Payload bytes received",
                                ["method"], registry=r)
        self.compute = Histogram("opss_server_compute_seconds",
                                 "Server-part compute seconds per Infer call", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("opss_server_batch_size", "Calls computed together per batch",
                                    ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        for name, doc, fn in (("opss_server_inflight_calls", "Calls holding a slot", inflight),
                              ("opss_server_queued_calls", "Calls waiting for a slot", queued),
                              ("opss_server_open_streams", "Infer/Probe calls open", open_streams),
                              ("opss_server_ready", "1 once the models are loaded", ready)):
            Gauge(name, doc, registry=r).set_function(fn)
        self._http = None

    def finished(self, method: str, status: str, seconds: float, bytes_in: int) -> None:
        self.calls.labels(method, status).inc()
        self.latency.labels(method).observe(seconds)
        if bytes_in:
            self.bytes_in.labels(method).inc(bytes_in)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP exporter on ``host:port`` (0 picks a port); return the port."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


@dataclass(frozen=True)
class RecentLoad:
    """A model's recent load: mean queue wait and compute (seconds) of the calls that finished
    in the last ``window_s`` seconds (0 and 0 when none did)."""

    queue_s: float
    compute_s: float
    calls: int
    window_s: float


class LoadTracker:
    """Queue wait and compute of each model's recent Infer calls, over a sliding window (the
    load that ListModels and every reply report, :class:`RecentLoad`)."""

    def __init__(self, window_s: float = 10.0, max_calls: int = 512,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self._max, self._clock = window_s, max_calls, clock
        self._calls: dict[str, deque[tuple[float, float, float]]] = {}
        self._lock = threading.Lock()

    def record(self, model: str, queue_s: float, compute_s: float) -> None:
        with self._lock:
            calls = self._calls.setdefault(model, deque(maxlen=self._max))
            calls.append((self._clock(), queue_s, compute_s))

    def recent(self, model: str) -> RecentLoad:
        with self._lock:
            calls = self._calls.get(model)
            since = self._clock() - self.window_s
            while calls and calls[0][0] < since:
                calls.popleft()
            rows = list(calls or ())
        if not rows:
            return RecentLoad(0.0, 0.0, 0, self.window_s)
        n = len(rows)
        return RecentLoad(sum(r[1] for r in rows) / n, sum(r[2] for r in rows) / n, n,
                          self.window_s)
