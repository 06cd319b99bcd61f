"""Configuration of an OPSS server: one frozen dataclass, passed explicitly."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from opss.wire import MAX_CHUNK_BYTES

#: Models loaded when none are named: the paper's examples plus two chain-like
#: torchvision nets, all cheap enough to hold together on a small GPU.
DEFAULT_MODELS = ("googlenet", "resnet18", "alexnet_parallel", "multistream", "randwire",
                  "mobilenet_v2")

#: Largest request message accepted: one 1 MiB chunk plus room for its header
#: (name, shape) or an `open` naming a few thousand vertices.
DEFAULT_MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES + 256 * 1024

DEVICES = ("auto", "cuda", "cpu")
GRANULARITIES = ("layer", "block")


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class ServerConfig:
    """Everything an OPSS server needs to start (units: seconds, bytes).

    - ``host``/``port``: where to listen; port 0 picks a free port.
    - ``device``: ``auto`` (CUDA when available, else CPU), ``cuda`` or ``cpu``.
    - ``models``: zoo names (or ``package.module:factory``) loaded at start.
    - ``weights``: ``{model: state-dict file}`` read with ``torch.load(weights_only=True)``
      from the local disk (never from the network).
    - ``input_shapes``: ``{model: shape}`` overriding the one input shape a model is
      served at; otherwise ``spec.test_input_shape`` when ``small`` else ``spec.input_shape``.
    - ``max_workers``: gRPC handler threads (Infer/Probe calls reading, queued or running,
      health checks, ListModels).
    - Admission (:mod:`opss.server.admission`): ``max_inflight`` Infer/Probe calls hold a
      slot at once, at most ``max_inflight_per_peer`` from one peer host (None: half of
      ``max_inflight``, at least 1); a call finding none waits in a FIFO queue of at most
      ``max_queued`` calls (None: the handler threads left over, ``max_workers -
      max_inflight - 1``, at least 1) for up to ``admission_wait_s``, then gets
      RESOURCE_EXHAUSTED with a retry hint. A call takes its slot when its first message
      arrives, never before. ``compute_slots``: server parts computing at the same time on
      the device (others wait, reported as queue time).
    - Dynamic batching (:mod:`opss.server.batching`): with ``max_batch`` > 1, calls of one
      model and one partition whose tensors have all arrived are computed together, up to
      ``max_batch`` at once, a batch waiting at most ``max_queue_delay_s`` for more calls
      (0: only the calls already queued). A model whose graph cannot be batched
      (:func:`opss.split.batch_refusal`) is served unbatched, said at load and in ListModels.
    - ``load_window_s``: the window of the recent load (queue wait, compute) reported per
      model in ListModels and every reply.
    - ``inject_delay_s``: extra seconds every Infer call's compute takes, inside its compute
      slot (tests and benchmarks of load-aware planning; 0 in production).
    - ``cache_size``: server parts kept (LRU) per server.
    - ``max_message_bytes``: largest request message; ``max_reply_bytes``: largest reply.
    - ``max_probe_bytes``: payload bytes one Probe call may send.
    - Stream timeouts (:mod:`opss.server.streams`): an Infer/Probe call whose first message
      does not come within ``first_message_timeout_s``, that then sends nothing for
      ``idle_timeout_s`` while the server waits for it, or that is still open after
      ``stream_timeout_s`` (the call deadline) ends with DEADLINE_EXCEEDED and frees what it held.
    - Connections: ``keepalive_s`` (server pings a connection quiet for this long) and
      ``keepalive_timeout_s`` (no answer: closed); ``connection_idle_s`` (a connection
      with no call for this long is closed), ``connection_age_s`` (any connection is
      closed after this long, in-flight calls get ``stream_timeout_s`` to finish);
      ``handshake_timeout_s`` (a connection must finish its TLS/HTTP/2 handshake in this
      time).
    - ``warmup_runs``: full server-part runs per model before reporting SERVING.
    - ``grace_s``: how long in-flight calls may finish on shutdown.
    - ``tls_cert``/``tls_key``: PEM files; both or neither. ``tls_client_ca``: PEM file of
      the CA that signs client certificates; with it every client must present one
      (mutual TLS; needs ``tls_cert``). ``token``: when set, every call except health
      checks needs metadata ``authorization: Bearer <token>``.
    - ``metrics_port``: serve Prometheus metrics (:mod:`opss.server.metrics`) on
      ``metrics_host:metrics_port`` over plain HTTP (None: no exporter; 0 picks a port);
      ``metrics_host`` None means ``host``.
    - ``profile_fn``: ``(layer graph, module, device) -> {vertex id: seconds}``, the
      per-vertex server time reported by ListModels (see :mod:`opss.server.profiling`);
      ``None`` leaves it empty.
    """

    host: str = "127.0.0.1"
    port: int = 0
    device: str = "auto"
    models: tuple[str, ...] = DEFAULT_MODELS
    weights: Mapping[str, str] = field(default_factory=dict)
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    small: bool = False
    seed: int = 0
    max_workers: int = 32
    max_inflight: int = 8
    max_inflight_per_peer: int | None = None
    max_queued: int | None = None
    admission_wait_s: float = 2.0
    compute_slots: int = 1
    max_batch: int = 1
    max_queue_delay_s: float = 0.0
    load_window_s: float = 10.0
    inject_delay_s: float = 0.0
    cache_size: int = 32
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_reply_bytes: int = 64 * 1024 * 1024
    max_probe_bytes: int = 64 * 1024 * 1024
    first_message_timeout_s: float = 5.0
    idle_timeout_s: float = 10.0
    stream_timeout_s: float = 300.0
    keepalive_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    connection_idle_s: float = 120.0
    connection_age_s: float = 3600.0
    handshake_timeout_s: float = 5.0
    warmup_runs: int = 2
    grace_s: float = 10.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None
    token: str | None = field(default=None, repr=False)
    profile_fn: Callable[[Any, Any, Any], Mapping[str, float]] | None = field(default=None,
                                                                             repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "weights", _frozen(self.weights))
        object.__setattr__(self, "input_shapes", _frozen(
            {k: tuple(int(d) for d in v) for k, v in dict(self.input_shapes).items()}))
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {list(DEVICES)}, got {self.device!r}")
        if not self.models:
            raise ValueError("models: expected at least one model name, got none")
        for name in ("max_workers", "max_inflight", "compute_slots", "max_batch", "cache_size",
                     "max_message_bytes", "max_reply_bytes", "max_probe_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.max_workers <= self.max_inflight:
            raise ValueError(f"max_workers: expected more than max_inflight={self.max_inflight} "
                             f"(threads must remain for health checks and ListModels), "
                             f"got {self.max_workers}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: expected 0..65535, got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls: expected both tls_cert and tls_key or neither, got one")
        if self.token is not None and not self.token:
            raise ValueError("token: expected a non-empty token or None, got an empty string")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca: expected tls_cert and tls_key too (mutual TLS needs "
                             "a server certificate), got none")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: expected 0..65535, got {self.metrics_port}")
        if self.grace_s < 0 or self.warmup_runs < 0:
            raise ValueError("grace_s and warmup_runs: expected >= 0")
        self._check_load_limits()

    def _check_load_limits(self) -> None:
        for name in ("first_message_timeout_s", "idle_timeout_s", "stream_timeout_s",
                     "keepalive_s", "keepalive_timeout_s", "connection_idle_s",
                     "connection_age_s", "handshake_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected seconds > 0, got {value}")
        if not (math.isfinite(self.admission_wait_s) and self.admission_wait_s >= 0):
            raise ValueError(f"admission_wait_s: expected seconds >= 0, got {self.admission_wait_s}")
        for name in ("max_queue_delay_s", "inject_delay_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected seconds >= 0, got {value}")
        if not (math.isfinite(self.load_window_s) and self.load_window_s > 0):
            raise ValueError(f"load_window_s: expected seconds > 0, got {self.load_window_s}")
        if self.max_inflight_per_peer is not None and self.max_inflight_per_peer < 1:
            raise ValueError(f"max_inflight_per_peer: expected >= 1 or None, got "
                             f"{self.max_inflight_per_peer}")
        if self.max_queued is not None and self.max_queued < 0:
            raise ValueError(f"max_queued: expected >= 0 or None, got {self.max_queued}")

    @property
    def per_peer_limit(self) -> int:
        """Slots one peer host may hold (``max_inflight_per_peer`` or its default)."""
        if self.max_inflight_per_peer is not None:
            return min(self.max_inflight_per_peer, self.max_inflight)
        return max(1, self.max_inflight // 2)

    @property
    def queue_limit(self) -> int:
        """Calls that may wait for a slot (``max_queued`` or its default)."""
        if self.max_queued is not None:
            return self.max_queued
        return max(1, self.max_workers - self.max_inflight - 1)
