"""A client session: profile, connect, probe, plan once; then run inferences, re-planning on drift.

:class:`ClientSession` is what ``opss-client`` and the demo drive. Startup:

1. resolve the model once (:func:`opss.models.resolve_model`: the zoo name or
   ``package.module:factory``, optional weights, its layer graph captured at
   the input shape), or take the :class:`~opss.models.ResolvedModel` handed
   in; load or build the client profile of that object (progress bar on
   stderr); nothing below looks the name up or captures again;
2. unless the strategy is ``lo`` (which never touches the network): ask the
   server for its models (``ListModels``), check that it serves this model
   with the same fingerprint and input shape, and take its per-vertex server
   times (when it sent none: a stored server profile on this machine, else
   this client's own times, said so);
3. the link: fixed (``--link 4g`` / ``5.85mbit``), or probed with ``Probe``
   calls of predefined sizes (shaped by the throttle when there is one) and
   fitted (:meth:`opss.link.LinkModel.fit`);
4. plan the strategy (:func:`opss.plan.plan_all`).

Each :meth:`ClientSession.run` executes the plan with the pipelined runtime
(:func:`opss.client.runtime.run_inference`), feeds the measured uploads (each
tensor's time on the link, ending when the server got its last byte:
:func:`link_samples`) to a :class:`opss.link.LinkEstimator` and, when the
bandwidth drifted beyond the threshold, re-plans before the next run and
says so. Load-aware: the server's recent queue wait (in ListModels and every
reply; the mean of the last :data:`WAIT_SAMPLES` replies, pooled over replicas)
is the expected wait folded into the server term of every offloading plan
(``server_wait``); when it moves by more than the drift threshold of the
plan's predicted total (and at least :data:`MIN_WAIT_CHANGE_S`) the session
re-plans (at most once per :data:`LOAD_REPLAN_INTERVAL_S`) and says so. While
a plan runs locally because of that wait, the session asks ListModels again
every :data:`LOAD_REFRESH_S` to see the load go. Server faults never raise:
the run finishes locally, and the server is tried again after an exponential
back-off.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from opss.client.runtime import CallFailed, Execution, RunResult, Threads, run_inference
from opss.client.throttle import TokenBucket
from opss.errors import (
    FingerprintMismatchError,
    LinkTooFastError,
    ModelNotFoundError,
    OpssError,
    ShapeMismatchError,
)
from opss.plan import STRATEGIES
from opss.stats import median

__all__ = ["Backoff", "ClientConfig", "ClientSession", "RunReport", "PROBE_SIZES", "compute_check", "link_samples",
           "tolerance_for"]

#: Probe payload sizes in bytes, smallest first; sizes whose expected time exceeds
#: the per-probe budget (from the samples so far) are skipped on slow links.
PROBE_SIZES: tuple[int, ...] = (4096, 16384, 65536, 262144, 1048576)

#: Downlink bandwidth assumed when only the upload is shaped (loopback-class, 10 GB/s).
UNSHAPED_BYTES_PER_S = 1e10


#: Tensors smaller than this are not fed to the link estimator (their times are mostly overhead).
MIN_SAMPLE_BYTES = 4096

#: The server's expected wait must move by at least this many seconds to re-plan.
MIN_WAIT_CHANGE_S = 0.005

#: While the plan runs locally because of the server's wait: ListModels every this many seconds.
LOAD_REFRESH_S = 2.0

#: At most one load re-plan per this many seconds (a noisy wait must not re-plan every run).
LOAD_REPLAN_INTERVAL_S = 1.0

#: The expected wait is the mean of the waits the last this many replies reported (pooled: under
#: round robin they come from different replicas).
WAIT_SAMPLES = 4


def link_samples(tl: Any, c: float = 0.0, min_bytes: int = MIN_SAMPLE_BYTES) -> list[tuple[int, float]]:
    """``(bytes, seconds)`` samples for :class:`opss.link.LinkEstimator` from one run's timeline.

    The link is serial: tensor ``i`` occupies it for ``end_i - max(start_i,
    end_{i-1})`` (:meth:`~opss.client.timeline.Timeline.link_intervals`), with
    ends at the server's arrival of the last byte. That occupancy is the
    serialisation time ``w / b`` of the link model ``g(w) = c + w / b``: the
    per-transfer latency ``c`` is paid once per call, not per back-to-back
    tensor, and the arrival times leave the propagation delay out. So each
    sample is ``occupancy + c`` with the estimator's current ``c``: its
    single-size refit ``b = sum(w) / sum(t - c)`` is then exactly bytes over
    occupancy. Tensors under ``min_bytes`` and zero-length intervals are skipped.
    """
    return [(iv.nbytes, iv.seconds + c) for iv in tl.link_intervals()
            if iv.nbytes >= min_bytes and iv.seconds > 0]


def tolerance_for(wire_dtype: str) -> tuple[float, float]:
    """(rtol, atol relative to the output's scale) for ``--verify`` with this wire dtype.

    float32 crosses the wire bit-exactly, so only the server's different kernels
    (another device, another thread count) make it differ: 1e-4. float16 rounds
    each cut tensor to 11 significant bits (relative error 2^-11 = 4.9e-4) and
    the error grows through the server's layers: 2e-2. bfloat16 keeps 8 bits
    (3.9e-3 per element): 8e-2.
    """
    return {"float32": (1e-4, 1e-4), "float16": (2e-2, 2e-2), "bfloat16": (8e-2, 8e-2)}[wire_dtype]


@dataclass(frozen=True)
class ClientConfig:
    """What one client session needs (units: seconds, bytes per second)."""

    model: str
    server: str | None = None
    strategy: str = "opss"
    also_plan: tuple[str, ...] = ()
    link: str = "auto"
    throttle: float | None = None
    wire_dtype: str = "float32"
    small: bool = False
    weights: str | None = None
    token: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_slowdown: float = 1.0
    timeout: float = 30.0
    drift_threshold: float = 0.25
    seed: int = 0
    threads: int = 1
    probe_budget_s: float = 0.4
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    progress: bool = True
    fresh_profile: bool = False
    pace: bool = False
    #: what may cross the link (opss.codec.parse_codecs), the lossy error budget, and the
    #: size of the image file when the input is a photo (enables its uint8 / file forms)
    #: and its preprocessing seconds measured on that file (opss.wirecosts.image_decode_seconds)
    codecs: str = "lossless"
    max_error: float | None = None
    image_bytes: int | None = None
    image_decode_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "also_plan", tuple(self.also_plan))
        for name in (self.strategy, *self.also_plan):
            if name not in STRATEGIES:
                raise OpssError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {name!r}")
        if self.wire_dtype not in ("float32", "float16", "bfloat16"):
            raise OpssError(f"wire dtype: expected float32, float16 or bfloat16, got {self.wire_dtype!r}")
        if not (math.isfinite(self.client_slowdown) and self.client_slowdown >= 1.0):
            raise OpssError(f"client slowdown: expected a finite factor >= 1, got {self.client_slowdown!r}")
        if not (self.timeout > 0):
            raise OpssError(f"deadline: expected > 0 seconds, got {self.timeout!r}")


class Backoff:
    """Back-off after server failures, with jitter.

    A refusal that carries the server's retry hint (``retry_after``, seconds: a loaded
    server says when a slot should be free) waits that long times a random factor in
    [0.5, 1.5), so clients refused together do not all come back at once and N clients
    sharing a server get about equal shares. Other failures back off exponentially:
    ``initial`` doubling per failure, capped at ``maximum``, times the same factor.
    ``seed`` fixes the jitter (tests); None draws it from the OS.
    """

    def __init__(self, initial: float = 1.0, maximum: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 seed: int | None = None):
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        self.rng = random.Random(seed)
        self.failures = 0
        self.until = 0.0
        self.reason = ""

    def failed(self, reason: str, retry_after: float | None = None) -> float:
        """Record a failure; return the seconds until the server is tried again."""
        base = retry_after if retry_after is not None else self.initial * 2 ** self.failures
        delay = min(self.maximum, base * self.rng.uniform(0.5, 1.5))
        self.failures += 1
        self.until = self.clock() + delay
        self.reason = reason
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.until = 0.0
        self.reason = ""

    def waiting(self) -> float:
        """Seconds left before the next try (0: try now)."""
        return max(0.0, self.until - self.clock())


#: floor of the profile spread tolerated before the run summary says the profile is off
MIN_COMPUTE_SPREAD = 0.10


def compute_check(reports: Sequence[Any], profile: Any, client: Iterable[str] = (), *, paced: bool = False
                  ) -> dict[str, Any] | None:
    """The client's measured compute beside its profile's prediction, over ``reports``.

    ``ratio`` is the median over runs of measured / predicted client compute (each run
    against its own plan's prediction); ``spread`` is the profile's own spread for the
    ``client`` vertices (those the runs computed), ``sum p90 / sum median - 1`` (at least
    :data:`MIN_COMPUTE_SPREAD`; the floor alone for a profile given as a plain mapping).
    ``off`` is true when the ratio leaves ``[1 / (1 + spread), 1 + spread]``, with a
    one-line ``message`` saying so and how to re-profile. None when no run computed on
    the client, or when the client was paced (each vertex then takes its profiled time by
    construction, so there is nothing to compare).
    """
    pairs = [(r.result.timeline.client_compute, r.predicted.client_compute) for r in reports
             if r.predicted.client_compute > 0]
    if paced or not pairs:
        return None
    ratio = median(m / p for m, p in pairs)
    spread = MIN_COMPUTE_SPREAD
    vertices = getattr(profile, "vertices", None)
    client = set(client)
    if vertices and client:
        med = math.fsum(vertices[v].median for v in client if v in vertices)
        p90 = math.fsum(vertices[v].p90 for v in client if v in vertices)
        if med > 0:
            spread = max(spread, p90 / med - 1.0)
    off = not (1.0 / (1.0 + spread) <= ratio <= 1.0 + spread)
    out = {"runs": len(pairs), "measured_s": median(m for m, _ in pairs), "predicted_s": median(p for _, p in pairs),
           "ratio": ratio, "spread": spread, "off": off, "message": ""}
    if off:
        how = "slower" if ratio > 1 else "faster"
        out["message"] = (f"client compute measured {out['measured_s'] * 1e3:.1f}ms against {out['predicted_s'] * 1e3:.1f}ms "
                          f"predicted ({(ratio - 1) * 100:+.0f}%, beyond the profile's own spread of "
                          f"+-{spread * 100:.0f}%): this machine runs {how} now than when it was profiled, so "
                          f"the predictions are off; re-profile with --fresh-profile (this session) or "
                          f"`opss profile --model MODEL --force` (the stored table)")
    return out


@dataclass(frozen=True)
class RunReport:
    """One run: the result, the plan's prediction beside it, and what the session did."""

    index: int
    result: RunResult
    strategy: str
    predicted: Any  # opss.latency.Prediction
    top5: list
    verify_error: float | None = None
    verify_ok: bool | None = None
    notes: tuple[str, ...] = ()
    #: ``max |coop - local| / max(1, max |local|)``: the error on the scale of the output
    verify_rel_error: float | None = None
    #: the relative tolerance that error was checked against (:func:`tolerance_for`)
    verify_tolerance: float | None = None

    @property
    def latency(self) -> float:
        return self.result.latency


def _reported_wait(info: Any) -> float | None:
    """The recent queue wait a ListModels entry reports (seconds), None when it has none."""
    load = getattr(info, "load", None)
    if load is None or (hasattr(info, "HasField") and not info.HasField("load")):
        return None
    return max(0.0, float(load.queue_s))


def _say(out: TextIO | None, msg: str) -> None:
    if out is not None:
        print(msg, file=out, flush=True)


class ClientSession:
    """Profile, connect, probe and plan at construction; :meth:`run` runs one inference.

    ``resolved`` is the config's model already resolved (:func:`opss.models.resolve_model`;
    default: resolved here, once, from ``config.model``, ``small``, ``seed`` and ``weights``).
    ``transport`` overrides the gRPC transport (tests use
    :class:`~opss.client.runtime.InProcessTransport`); ``client_profile`` /
    ``server_profile`` (``{vertex id: seconds}`` or Profile) skip the lookups;
    ``link_model`` (a LinkModel) is the link to plan with instead of ``config.link``'s fixed
    rate or probe (a side-by-side arm on another session's link). Messages go to ``out``
    (None: silent).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        resolved: Any = None,
        transport: Any = None,
        client_profile: Any = None,
        server_profile: Any = None,
        link_model: Any = None,
        out: TextIO | None = sys.stdout,
        err: TextIO | None = sys.stderr,
    ) -> None:
        from opss.latency import PlanGraph
        from opss.link import LinkEstimator

        self.config = cfg = config
        self.out = out
        self.err = err
        self.resolved = self._resolve(resolved)
        self.plan_graph = PlanGraph.from_layer_graph(self.graph)
        self.throttle = TokenBucket(cfg.throttle) if cfg.throttle else None
        self.backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s)
        self._splits: dict[frozenset, Any] = {}
        self._wire: dict[str, Any] | None = None
        self._counter = itertools.count(1)
        self._reference: tuple[Any, Any] | None = None
        self.threads = Threads(cfg.threads)

        self.client_profile = client_profile if client_profile is not None else self._client_profile()
        self.transport = transport
        self.server_info = None
        #: the server's expected queue wait the plans were made with (seconds)
        self.server_wait = 0.0
        self._waits: collections.deque[float] = collections.deque(maxlen=WAIT_SAMPLES)
        self._load_checked = time.monotonic()
        self._load_replanned = -math.inf
        self.server_profile = server_profile
        self.strategies = tuple(dict.fromkeys((cfg.strategy, *cfg.also_plan)))
        self.strategy = cfg.strategy
        self._reach_server()
        if self.server_profile is None:
            self.server_profile = self._fallback_server_profile()
        self.pace = self._pace()
        self.link = link_model if link_model is not None else self._link()
        self.estimator = LinkEstimator(self.link, threshold=cfg.drift_threshold, window=16, min_samples=3)
        self.plans: dict[str, Any] = {}
        self.executions: dict[str, Execution] = {}
        self._replan(self.link)

    # ---- the resolved model -------------------------------------------------------------
    @property
    def spec(self) -> Any:
        return self.resolved.spec

    @property
    def model(self) -> Any:
        """The full model (nn.Module, eval mode)."""
        return self.resolved.module

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.resolved.input_shape

    @property
    def fingerprint(self) -> str:
        return self.resolved.fingerprint

    @property
    def graph(self) -> Any:
        """The model's layer graph (:class:`opss.graph.LayerGraph`)."""
        return self.resolved.graph

    @property
    def graph_hash(self) -> str:
        return self.resolved.graph_hash

    # ---- startup ------------------------------------------------------------------------
    def _resolve(self, resolved: Any) -> Any:
        """Set torch's threads, then the config's model: ``resolved`` or resolved here."""
        import torch

        from opss.models import resolve_model

        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if resolved is None:
            return resolve_model(cfg.model, small=cfg.small, seed=cfg.seed, weights=cfg.weights)
        if resolved.name != cfg.model:
            raise OpssError(f"resolved model: expected the config's {cfg.model!r}, got {resolved.name!r}")
        return resolved

    def _client_profile(self) -> Any:
        from opss.profile import load_or_build_profile, measure_profile, measure_steady_profile

        cfg, rm = self.config, self.resolved
        if cfg.small:  # the small shape is for tests and quick demos: measured here, never stored
            return measure_profile(rm.name, device="cpu", threads=cfg.threads, repeats=5, warmup=1,
                                   input_shape=rm.input_shape, progress=cfg.progress, module=rm.module,
                                   graph=rm.graph)
        if cfg.fresh_profile:
            # for demos and benchmarks that pace an emulated client from it: measured here (again
            # while a busy machine makes it unsteady), never stored over the committed tables
            _say(self.err, f"opss-client: measuring a fresh profile of {cfg.model} at {list(self.input_shape)}")
            return measure_steady_profile(rm.name, device="cpu", threads=cfg.threads, repeats=10, warmup=2,
                                          input_shape=rm.input_shape, progress=cfg.progress, module=rm.module,
                                          graph=rm.graph, say=lambda m: _say(self.err, f"opss-client: {m}"))
        return load_or_build_profile(rm, role="client", threads=cfg.threads, progress=cfg.progress,
                                     stream=self.err)

    def _reach_server(self) -> None:
        """Open the transport (unless given) and check the server, when a strategy needs one."""
        if all(name == "lo" for name in self.strategies):
            return
        cfg = self.config
        if self.transport is None:
            if not cfg.server:
                raise OpssError(f"strategy {self.strategy!r} needs a server: expected --server HOST:PORT, got none")
            from opss.client.grpc_transport import GrpcTransport

            self.transport = GrpcTransport(cfg.server, token=cfg.token, tls_ca=cfg.tls_ca,
                                           tls_cert=cfg.tls_cert, tls_key=cfg.tls_key)
        self._connect()

    def _pace(self) -> dict[str, float] | None:
        """With ``pace`` and a slowdown: each client vertex's time, slowdown x its profiled time
        (trace-driven emulation, immune to this machine's load); else None (real compute x slowdown)."""
        cfg = self.config
        if not (cfg.pace and cfg.client_slowdown > 1.0):
            return None
        from opss.problem import costs_of

        return costs_of(self.client_profile, self.plan_graph, "client", cfg.client_slowdown)

    def _fallback_server_profile(self) -> Any:
        from opss.profile import load_or_build_profile

        if not self.config.small:
            try:
                prof = load_or_build_profile(self.resolved, role="server", build_missing=False, progress=False,
                                             stream=self.err)
                _say(self.out, f"server times: from the stored server profile {prof.device_tag}")
                return prof
            except OpssError:
                pass
        if any(name != "lo" for name in self.strategies):
            _say(self.out, "server times: the server sent none; assuming it is as fast as this client")
        return self.client_profile

    def _connect(self) -> None:
        cfg = self.config
        lister = getattr(self.transport, "list_models", None)
        if lister is None:
            return
        try:
            reply = lister(timeout=min(5.0, cfg.timeout))
        except CallFailed as exc:
            if exc.fatal:
                raise OpssError(exc.reason) from None
            delay = self.backoff.failed(exc.reason, self._retry_hint())
            _say(self.out, f"server: {exc.reason}; running locally, retrying in {delay:.1f}s")
            return
        info = next((m for m in reply.models if m.name == cfg.model), None)
        if info is None:
            served = ", ".join(m.name for m in reply.models) or "none"
            raise ModelNotFoundError(f"server {cfg.server} does not serve {cfg.model!r}: it serves {served}")
        if info.fingerprint and info.fingerprint != self.fingerprint:
            raise FingerprintMismatchError(
                f"server's {cfg.model} has weights fingerprint {info.fingerprint[:16]}, expected "
                f"{self.fingerprint[:16]} (ours): load the same weights on both sides (--weights)"
            )
        # the input shape first: another shape captures another graph, so its hash differs too
        if tuple(info.input_shape) and tuple(info.input_shape) != self.input_shape:
            hint = "this client runs --small, the server does not" if cfg.small else "the server may run --small"
            raise ShapeMismatchError(
                f"the input shapes differ: server serves {cfg.model} at input shape {list(info.input_shape)}, "
                f"expected {list(self.input_shape)} (ours; {hint}): start both with --small or both without"
            )
        theirs = getattr(info, "graph_hash", "")
        if theirs and theirs != self.graph_hash:
            raise FingerprintMismatchError(
                f"server's capture of {cfg.model} differs from ours: graph hash {theirs[:16]}, expected "
                f"{self.graph_hash[:16]}; run the same opss version on both sides"
            )
        self.server_info = info
        wait = _reported_wait(info)
        if wait is not None:
            self.server_wait = wait
        self.backoff.succeeded()
        _say(self.out, f"server: {cfg.server} serves {cfg.model} on {info.device or '?'} (fingerprint ok)")
        if self.server_profile is None and info.server_time_s:
            times = dict(info.server_time_s)
            missing = [v for v in self.plan_graph.ids if v not in times and v != self.plan_graph.input_id]
            if not missing:
                self.server_profile = times
                _say(self.out, f"server times: {len(times)} vertices from the server's profile")

    def _retry_hint(self) -> float | None:
        """The server's retry hint for the failure just seen (the transport keeps it), if any."""
        take = getattr(self.transport, "retry_after", None)
        return take() if take is not None else None

    def _link(self) -> Any:
        from opss.link import LinkModel, link_from_spec

        cfg = self.config
        spec = cfg.link
        if spec != "auto":
            link = link_from_spec(spec)
            _say(self.out, f"link: fixed {link!r}")
            return link
        if all(name == "lo" for name in self.strategies):
            return link_from_spec("wifi")  # never used: nothing is uploaded
        prober = getattr(self.transport, "probe", None)
        fallback = LinkModel(c=0.0, b=cfg.throttle) if cfg.throttle else link_from_spec("wifi")
        if prober is None or self.backoff.waiting() > 0:
            _say(self.out, f"link: cannot probe (server unreachable); assuming {fallback!r}")
            return fallback
        samples: list[tuple[int, float]] = []
        try:
            rough = None
            for size in PROBE_SIZES:
                if rough is not None and rough.g(size) > cfg.probe_budget_s:
                    break
                samples += prober([size, size], throttle=self.throttle, timeout=cfg.timeout)
                if len({w for w, _ in samples}) >= 2:
                    try:
                        rough = LinkModel.fit(samples)
                    except LinkTooFastError:
                        rough = None  # too fast to measure so far: the next, larger size is cheap
            link = LinkModel.fit(samples)
        except CallFailed as exc:
            delay = self.backoff.failed(exc.reason, self._retry_hint())
            _say(self.out, f"link: probe failed ({exc.reason}); assuming {fallback!r}; retrying in {delay:.1f}s")
            return fallback
        except LinkTooFastError as exc:
            why = ("the probe's throttle rate" if cfg.throttle else
                   "wifi, the fastest preset, as the closest to a link this fast")
            _say(self.out, f"link: {exc}; planning with {why}: {fallback!r} (--link RATE plans for another)")
            return fallback
        except OpssError as exc:
            _say(self.out, f"link: probe samples unusable ({exc}); assuming {fallback!r}")
            return fallback
        _say(self.out, f"link: probed {len(samples)} transfers of {sorted({w for w, _ in samples})} bytes -> {link!r}")
        return link

    def _plan(self, link: Any) -> Any:
        from opss.link import LinkModel
        from opss.plan import plan_all

        # the application throttle shapes the upload only: the reply comes back unshaped
        downlink = LinkModel(c=link.c, b=UNSHAPED_BYTES_PER_S) if self.config.throttle else None
        return plan_all(self.plan_graph, self.client_profile, self.server_profile, link, self.strategies,
                        client_slowdown=self.config.client_slowdown, downlink=downlink, wire=self.wire,
                        server_wait=self.server_wait)

    @property
    def wire(self) -> dict[str, Any]:
        """The planner's ``wire=`` options (codec table, codecs, error budget), built once."""
        if self._wire is None:
            from opss.wirecosts import wire_options

            cfg = self.config
            self._wire = wire_options(self.graph, cfg.codecs, max_error=cfg.max_error, image_bytes=cfg.image_bytes,
                                      image_decode_s=cfg.image_decode_s, progress=cfg.progress, stream=self.err,
                                      store=not (cfg.small or cfg.fresh_profile))
        return self._wire

    def _replan(self, link: Any) -> None:
        self.plans = self._plan(link)
        self.executions = {name: self._execution(p) for name, p in self.plans.items()}

    @property
    def plan(self) -> Any:
        """The plan of the current strategy."""
        return self.plans[self.strategy]

    @property
    def execution(self) -> Execution:
        return self.executions[self.strategy]

    def use(self, strategy: str) -> None:
        """Switch to another planned strategy (``also_plan``)."""
        if strategy not in self.plans:
            raise OpssError(f"strategy {strategy!r} was not planned: expected one of {', '.join(self.plans)}")
        self.strategy = strategy

    def split_for(self, client: Any) -> Any:
        from opss.split import split

        key = frozenset(client)
        sp = self._splits.get(key)
        if sp is None:
            sp = self._splits[key] = split(self.graph, key)
        return sp

    def _execution(self, plan: Any) -> Execution:
        sp = self.split_for(plan.client)
        local = not sp.server.vertices
        return Execution(
            strategy=plan.strategy,
            split=sp,
            order=tuple(plan.order),
            overlap=bool(plan.pipelined),
            local=local,
            model_name=self.config.model,
            fingerprint=self.fingerprint,
            graph_hash=self.graph_hash,
            predicted=plan.predicted.to_json(),
            codecs=plan.codecs,
        )

    # ---- running ------------------------------------------------------------------------
    def describe_plan(self, strategy: str | None = None) -> str:
        p = self.plans[strategy or self.strategy]
        pr = p.predicted
        ms = lambda s: f"{s * 1e3:.1f}ms"  # noqa: E731
        client = len(p.client)
        n = len(self.plan_graph)
        lines = [
            f"plan {p.strategy}: {client}/{n} vertices on the client, cut {list(p.cut)} "
            f"({p.cut_bytes / 1e3:.1f} kB{self._wire_note(p)}), "
            f"{p.execution}"
            f"{', order proven optimal' if p.optimal_order and len(p.client) > 1 else ''}",
            f"  predicted total {ms(pr.total)} = client {ms(pr.client_makespan)} (compute {ms(pr.client_compute)}, "
            f"upload {ms(pr.upload)}, hidden {ms(pr.hidden_upload)}) + server {ms(pr.server)}"
            f"{f' (waiting {ms(pr.server_wait)})' if pr.server_wait else ''} + reply {ms(pr.reply)}",
        ]
        if self.server_wait and not pr.server_wait:
            lines.append(f"  the server's expected wait of {ms(self.server_wait)} keeps this plan local")
        if client <= 24:
            lines.append(f"  order: {' '.join(p.order)}")
        else:
            lines.append(f"  order: {' '.join(p.order[:12])} ... {' '.join(p.order[-6:])}")
        return "\n".join(lines)

    @staticmethod
    def _wire_note(p: Any) -> str:
        """`` as 16.0 kB: x file`` when codecs change what crosses the link."""
        if not p.codecs:
            return ""
        return f" as {p.wire_bytes / 1e3:.1f} kB: " + ", ".join(f"{t} {c}" for t, c in p.codecs.items())

    def reference(self, x: Any) -> Any:
        """The local full-model output for ``x`` (the ``--verify`` oracle), cached per input."""
        import torch

        if self._reference is None or self._reference[0] is not x:
            with torch.inference_mode():
                self._reference = (x, self.model(x))
        return self._reference[1]

    def run(self, x: Any, *, verify: bool = False, image: Any = None) -> RunReport:
        """One inference of ``x`` with the current plan (never raises for server faults).

        ``image`` (:class:`opss.wire.ImageSource`) is the photo ``x`` was made from: plans
        that send the input as its file or uint8 crop need it (without it the input goes
        through the tensor codecs instead)."""
        from opss.labels import topk

        index = next(self._counter)
        notes: list[str] = self._refresh_load()
        ex = self.execution
        if image is None and any(c in ("uint8", "file") for c in ex.codecs.values()):
            ex = dataclasses.replace(ex, codecs={k: c for k, c in ex.codecs.items() if c not in ("uint8", "file")})
        predicted = self.plan.predicted
        skip = None
        if not ex.local:
            wait = self.backoff.waiting()
            if wait > 0:
                skip = f"server in back-off for {wait:.1f}s more after: {self.backoff.reason}"
            elif self.transport is None:
                skip = "no server"
        result = run_inference(
            ex, x, self.transport, throttle=self.throttle, timeout=self.config.timeout,
            request_id=f"{uuid.uuid4().hex[:8]}-{index}", wire_dtype=self.config.wire_dtype,
            skip_reason=skip, slowdown=self.config.client_slowdown, pace=self.pace, threads=self.threads,
            image=image,
        )
        tl = result.timeline
        if not ex.local and skip is None:
            if tl.where == "fallback":
                delay = self.backoff.failed(tl.note, self._retry_hint())
                notes.append(f"fell back to local: {tl.note}; retrying the server in {delay:.1f}s")
            else:
                if self.backoff.failures:
                    notes.append("server back: cooperative again")
                self.backoff.succeeded()
        elif skip is not None:
            notes.append(f"ran locally: {skip}")
        if tl.where == "cooperative":
            notes.extend(self._follow_link(tl))
            if "load_queue" in tl.server:
                self._waits.append(max(0.0, float(tl.server["load_queue"])))
                notes.extend(self._follow_load(sum(self._waits) / len(self._waits)))
        verr, vok, vrel, vtol = self._verify(x, result, ex) if verify else (None, None, None, None)
        return RunReport(index=index, result=result, strategy=ex.strategy, predicted=predicted,
                         top5=topk(result.output, 5), verify_error=verr, verify_ok=vok, notes=tuple(notes),
                         verify_rel_error=vrel, verify_tolerance=vtol)

    def _follow_link(self, tl: Any) -> list[str]:
        """Feed a cooperative run's transfers to the link estimator; re-plan on drift."""
        base = self.estimator.baseline
        self.estimator.extend(link_samples(tl, c=base.c if base is not None else 0.0))
        if not (self.config.link == "auto" and self.estimator.drifted):
            return []
        old, new = self.estimator.baseline, self.estimator.model
        self.link = new
        self.estimator.rebase()
        old_cut = self.plan.cut
        self._replan(new)
        same = "same cut" if self.plan.cut == old_cut else f"new cut {list(self.plan.cut)}"
        return [f"link drifted {old.mbps:.2f} -> {new.mbps:.2f} Mbps: re-planned ({same}, "
                f"predicted {self.plan.predicted.total * 1e3:.1f}ms)"]

    def _follow_load(self, wait: float, source: str = "") -> list[str]:
        """Re-plan when the server's expected wait moved beyond the threshold; the note says so."""
        wait = max(0.0, wait)
        change = abs(wait - self.server_wait)
        if change <= max(MIN_WAIT_CHANGE_S, self.config.drift_threshold * self.plan.predicted.total):
            return []
        if time.monotonic() - self._load_replanned < LOAD_REPLAN_INTERVAL_S:
            return []
        self._load_replanned = time.monotonic()
        old, old_cut = self.server_wait, self.plan.cut
        self.server_wait = wait
        self._replan(self.link)
        same = "same cut" if self.plan.cut == old_cut else f"new cut {list(self.plan.cut)}"
        return [f"server wait {old * 1e3:.1f} -> {wait * 1e3:.1f} ms{source}: re-planned ({same}, "
                f"predicted {self.plan.predicted.total * 1e3:.1f}ms)"]

    def _refresh_load(self) -> list[str]:
        """While the server's wait keeps the plan local: ListModels now and then to see it go."""
        lister = getattr(self.transport, "list_models", None)
        if (lister is None or not self.server_wait or not self.execution.local
                or self.strategy == "lo" or time.monotonic() - self._load_checked < LOAD_REFRESH_S
                or self.backoff.waiting() > 0):
            return []
        self._load_checked = time.monotonic()
        self._load_replanned = -math.inf
        try:
            reply = lister(timeout=min(5.0, self.config.timeout))
        except CallFailed:
            return []
        info = next((m for m in reply.models if m.name == self.config.model), None)
        wait = _reported_wait(info)
        if wait is None:
            return []
        self._waits.clear()  # the replies' waits are older than this
        self._waits.append(wait)
        return self._follow_load(wait, " (ListModels)")

    def _verify(self, x: Any, result: Any, ex: Execution) -> tuple[float, bool, float, float]:
        """``(max |coop - local|, ok, relative error, tolerance)`` against the local full model."""
        import torch

        from opss.codec import CODECS

        tl = result.timeline
        ref = self.reference(x)
        rtol, atol = tolerance_for(self.config.wire_dtype if tl.where == "cooperative" else "float32")
        lossy = [w for w in self.plan.wire if w.codec in ex.codecs.values() and not CODECS[w.codec].exact]
        if lossy and tl.where == "cooperative" and self.config.max_error:
            # each lossy tensor was admitted for a measured output error <= max_error
            rtol = atol = max(atol, 2 * self.config.max_error * len(lossy))
        scale = max(1.0, float(ref.abs().max()))
        diff = float((result.output.float() - ref.float()).abs().max())
        try:
            torch.testing.assert_close(result.output.float(), ref.float(), rtol=rtol, atol=atol * scale)
            ok = True
        except AssertionError:
            ok = False
        return diff, ok, diff / scale, atol

    def compute_check(self, reports: Sequence[RunReport]) -> dict[str, Any] | None:
        """Does this client compute as fast as its profile says? See :func:`compute_check`."""
        client = {v for r in reports for v in self.plans[r.strategy].client} if self.plans else ()
        return compute_check(reports, self.client_profile, client, paced=self.pace is not None)

    def close(self) -> None:
        self.threads.close()
        closer = getattr(self.transport, "close", None)
        if closer is not None:
            closer()
