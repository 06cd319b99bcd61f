"""Configuration of an OPSS server: one frozen dataclass, passed explicitly."""

from __future__ import annotations

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
    - ``max_workers``: gRPC handler threads; ``max_inflight``: concurrent Infer/Probe
      calls (one more gets RESOURCE_EXHAUSTED at once); ``compute_slots``: server
      parts computing at the same time on the device (others wait, reported as queue time).
    - ``cache_size``: server parts kept (LRU) per server.
    - ``max_message_bytes``: largest request message; ``max_reply_bytes``: largest reply.
    - ``max_probe_bytes``: payload bytes one Probe call may send.
    - ``stream_timeout_s``: an Infer/Probe call still open after this long is cancelled,
      so a stalled client cannot hold an in-flight slot forever.
    - ``warmup_runs``: full server-part runs per model before reporting SERVING.
    - ``grace_s``: how long in-flight calls may finish on shutdown.
    - ``tls_cert``/``tls_key``: PEM files; both or neither. ``token``: when set, every
      call except health checks needs metadata ``authorization: Bearer <token>``.
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
    max_workers: int = 16
    max_inflight: int = 8
    compute_slots: int = 1
    cache_size: int = 32
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_reply_bytes: int = 64 * 1024 * 1024
    max_probe_bytes: int = 64 * 1024 * 1024
    stream_timeout_s: float = 300.0
    warmup_runs: int = 2
    grace_s: float = 10.0
    tls_cert: str | None = None
    tls_key: str | None = None
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
        for name in ("max_workers", "max_inflight", "compute_slots", "cache_size",
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
        if self.stream_timeout_s <= 0 or self.grace_s < 0 or self.warmup_runs < 0:
            raise ValueError("stream_timeout_s must be > 0, grace_s and warmup_runs >= 0")
