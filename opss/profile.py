"""Per-vertex latency tables ("profiles") of a model on one device.

A profile gives, for every vertex of the model's layer graph
(:func:`opss.graph.capture`, ``granularity="layer"``; the ids are the ones
the planner and :mod:`opss.split` use), the median compute time over
``repeats`` runs after ``warmup`` runs, its spread (p10/p90), and the output
bytes; plus per fx node medians so block-granularity vertices (a set of fx
nodes, ``LayerNode.members``) can be costed by summing their members.
Metadata: device description, torch version, threads, input shape,
granularity, the architecture hash and the weights fingerprint, method,
date, and the end-to-end forward median.

How vertices are timed. Two methods are implemented:

``interpreter`` (the default)
    a :class:`torch.fx.Interpreter` subclass runs the captured graph module
    and wraps each fx node's ``run_node`` in ``time.perf_counter()`` (with
    ``torch.cuda.synchronize()`` before and after on a GPU, so asynchronous
    kernels are charged to the node that launched them). A vertex's time in
    one run is the sum over its member nodes; medians are taken over runs.
``profiler``
    the same interpreter, but each node runs inside
    ``torch.profiler.record_function`` under ``torch.profiler.profile`` and
    the node's time is the recorded CPU time of that range. This is what the
    seed used.

Measured on this machine (``scripts/bench_profile.py``, resnet18 at
224x224, 1 thread, 3 alternating rounds on a quiet machine): the
interpreter's sum of vertex medians was +2.9 to +3.2 % above the eager
forward median, the profiler's +4.9 to +6.1 % (it adds its own bookkeeping to
every range), and a profiler run took 20-30 % more wall time and prints
kineto log lines to stderr on this build. Both are within the +-10 % target;
the interpreter is the default because it is slightly closer, cheaper, and
times exactly what the split runtime executes (``opss.split`` runs the same
fx nodes through an ``fx.Interpreter``). On models with many tiny ops the
per-node dispatch of ``fx.Interpreter`` is part of every vertex's time
(RandWire: 990 fx nodes, sum of medians +28 % over eager): the split runtime
pays it too. The numbers are in ``docs/results/bench_profile.md``.

Contention and the load scale. This machine's cores are shared; when the
process is descheduled, the preemption lands inside the timed interval of
whichever node is running. Per-node *medians* filter these spikes out, so on
a loaded machine their sum falls well below a whole forward pass (measured
here under a load average of 5 on 2 cores: mobilenet_v2 sum of medians 27 ms,
median per-run total 49 ms, eager forward 50 ms), while on a quiet machine
they agree within a few percent. Preemption hits a node in proportion to its
duration, so the table records ``load_scale = median per-run total / sum of
medians`` and :meth:`Profile.costs_for` (what the planner uses) returns
``median * load_scale``: the vertex shares of the robust medians, scaled to
what a whole run took on this machine while it was profiled. The raw
medians stay in the table (``calibrated=False``).

Files and lookup. ``profiles/<device-tag>/<model>.json`` under the
repository for zoo models (the committed tables), under the user's cache
(``~/.cache/opss/profiles``) for ``package.module:factory`` models, or under
any ``root``. The device tag is honest and stable:
``cpu-<cpu model>-<threads>t`` (the CPU model string from
``/proc/cpuinfo``) or ``cuda-<gpu name>``. :func:`load_or_build_profile`
returns the stored table when it matches the model (architecture hash and
input shape) and the environment (torch version, threads); when there is
none it builds one on the spot, with a progress bar, and says so on stderr.
When one exists but does not match, it says what differs and:

- rebuilds it if ``force=True`` (``--force``);
- otherwise, if only the environment differs (torch version, threads), uses
  it (the timings are still the best estimate at hand) after the warning;
- otherwise (the architecture or input shape changed: its vertex ids or
  sizes may no longer apply) raises :class:`ProfileError` asking for
  ``--force``. Nothing is rebuilt silently behind the user's back.

The architecture hash, not the weights fingerprint, identifies the model
for lookup: loading trained weights does not change latency and must not
invalidate a profile; both are stored.

Roles: the client profile defaults to this CPU with 1 thread (a weak client
has few cores and the runtime's send thread needs one); the server profile
defaults to the GPU when one is available, else this CPU with half its
cores: wherever a CPU "server" runs here (tests, ``opss demo``, the netns
testbed) it shares the machine with the client, and on this 2-core machine
2 threads under contention measured 3x *slower* than 1 (resnet18: 408 ms vs
130 ms). Pass ``--threads`` for a dedicated CPU server. On this machine the
client and server tables are therefore the same file
(``cpu-amd-epyc-1t``); ``client_slowdown`` models a weaker client.

Only the measuring functions import torch (inside the function); loading a
stored :class:`Profile` needs only the standard library.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from opss.errors import ProfileError

__all__ = [
    "METHODS",
    "Profile",
    "VertexStats",
    "capture_model",
    "cpu_description",
    "default_profiles_root",
    "device_settings",
    "device_tag",
    "graph_hash",
    "is_user_model",
    "load_or_build_profile",
    "load_profile",
    "measure_profile",
    "measure_steady_profile",
    "profile_path",
    "role_settings",
    "run_spread",
    "user_profiles_root",
]

METHODS = ("interpreter", "profiler")
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------
# device description and tags (no torch)


def cpu_description() -> str:
    """The CPU model string from ``/proc/cpuinfo`` (else ``platform``), without the core count."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    value = line.split(":", 1)[1].strip()
                    if value:
                        return value
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _sanitize(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text, flags=re.I)
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return re.sub(r"-+", "-", text)[:48] or "unknown"


def device_tag(device: str = "cpu", threads: int | None = None, gpu_name: str | None = None) -> str:
    """``cpu-<cpu model>-<threads>t`` or ``cuda-<gpu name>``."""
    if device.startswith("cuda"):
        if not gpu_name:
            raise ProfileError("device_tag: expected the GPU name for a cuda device, got none")
        return f"cuda-{_sanitize(gpu_name)}"
    if device != "cpu":
        raise ProfileError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    if threads is None or threads < 1:
        raise ProfileError(f"device_tag: expected threads >= 1 for a cpu device, got {threads!r}")
    return f"cpu-{_sanitize(cpu_description())}-{threads}t"


def user_profiles_root() -> Path:
    """The user's profile cache: ``$XDG_CACHE_HOME/opss/profiles`` (default ``~/.cache/opss/profiles``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "opss" / "profiles"


def is_user_model(model: str) -> bool:
    """A ``package.module:factory`` name (not a zoo name): its tables never go into the checkout."""
    return ":" in model


def default_profiles_root(model: str | None = None) -> Path:
    """Where the tables of ``model`` live: a zoo model's in ``profiles/`` of the source checkout
    this package runs from (the committed tables); a user model's
    (``package.module:factory``) in the user's cache (:func:`user_profiles_root`), so
    measuring one never leaves untracked files in the repository.

    An installed, non-editable copy has no such folder beside it; it keeps every table in
    the user's cache rather than writing into site-packages.
    """
    repo = Path(__file__).resolve().parent.parent / "profiles"
    if repo.is_dir() and not (model is not None and is_user_model(model)):
        return repo
    return user_profiles_root()


def profile_path(model: str, tag: str, root: str | os.PathLike | None = None,
                 input_shape: Sequence[int] | None = None, default_shape: Sequence[int] | None = None) -> Path:
    """``<root>/<tag>/<model>.json``; without ``root``, under :func:`default_profiles_root` of the model.

    A zoo model profiled at another ``input_shape`` than its own (e.g. its small test shape)
    gets ``<model>.<shape>.json``, so it never takes the place of the real one; without ``root``
    it goes to the user's cache (:func:`user_profiles_root`), not the checkout, whose tables are
    the zoo's own shapes."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    if input_shape is not None:
        own = tuple(default_shape) if default_shape is not None else _zoo_shape(model)
    other_shape = input_shape is not None and own not in (None, tuple(input_shape))
    if other_shape:
        safe += "." + "x".join(str(int(d)) for d in input_shape)
    if root is None:
        root = user_profiles_root() if other_shape else default_profiles_root(model)
    return Path(root) / tag / f"{safe}.json"


def _zoo_shape(model: str) -> tuple[int, ...] | None:
    """The input shape a zoo model is registered with; None for any other model."""
    from opss import models

    try:
        return tuple(models.get_spec(model).input_shape)
    except Exception:  # not a zoo name: a user model, one file per model as before
        return None


# ---------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class VertexStats:
    """One vertex: median and p10/p90 of its compute time (seconds), output bytes, fx members."""

    median: float
    p10: float
    p90: float
    bytes: int
    members: tuple[str, ...] = ()
    mean: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "p10": self.p10, "p90": self.p90, "mean": self.mean, "bytes": self.bytes,
                "members": list(self.members)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VertexStats:
        mean = d.get("mean")
        return cls(float(d["median"]), float(d["p10"]), float(d["p90"]), int(d["bytes"]),
                   tuple(d.get("members", ())), None if mean is None else float(mean))


@dataclass(frozen=True)
class Profile:
    """A per-vertex latency table of one model on one device (see the module docstring)."""

    model: str
    device_tag: str
    meta: Mapping[str, Any]
    vertices: Mapping[str, VertexStats]
    fx_medians: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        object.__setattr__(self, "vertices", MappingProxyType(dict(self.vertices)))
        object.__setattr__(self, "fx_medians", MappingProxyType(dict(self.fx_medians)))

    def __repr__(self) -> str:
        return (f"Profile(model={self.model!r}, device_tag={self.device_tag!r}, {len(self.vertices)} vertices, "
                f"sum of medians={self.total() * 1e3:.2f}ms, threads={self.meta.get('threads')}, "
                f"input_shape={self.meta.get('input_shape')})")

    @property
    def medians(self) -> dict[str, float]:
        """Raw per-vertex medians (seconds), without the load scale."""
        return {v: st.median for v, st in self.vertices.items()}

    @property
    def load_scale(self) -> float:
        """``run_total_median / sum of medians`` at profiling time (1.0 when unknown)."""
        x = self.meta.get("load_scale")
        return float(x) if isinstance(x, (int, float)) and math.isfinite(x) and x > 0 else 1.0

    @property
    def fx_load_scale(self) -> float:
        """The same scale for the per-fx-node medians (block costs)."""
        x = self.meta.get("fx_load_scale")
        return float(x) if isinstance(x, (int, float)) and math.isfinite(x) and x > 0 else 1.0

    def total(self, calibrated: bool = True) -> float:
        """Sum of the vertex medians (seconds), times the load scale when ``calibrated``."""
        raw = math.fsum(st.median for st in self.vertices.values())
        return raw * (self.load_scale if calibrated else 1.0)

    def costs_for(self, graph: Any, calibrated: bool = True) -> dict[str, float]:
        """Seconds per vertex of ``graph`` (a PlanGraph or LayerGraph).

        A vertex stored in the table with the same members takes its median;
        any other vertex (a block, a differently fused layer) is the sum of its
        members' fx medians. ``calibrated`` multiplies by :attr:`load_scale`
        (see the module docstring). Raises :class:`ProfileError` naming a
        vertex that cannot be costed.
        """
        members = _members_of(graph)
        scale = self.load_scale if calibrated else 1.0
        fx_scale = self.fx_load_scale if calibrated else 1.0
        out: dict[str, float] = {}
        for v, mem in members.items():
            st = self.vertices.get(v)
            if st is not None and (not mem or tuple(mem) == st.members or not st.members):
                out[v] = st.median * scale
                continue
            if mem and all(m in self.fx_medians for m in mem):
                out[v] = math.fsum(self.fx_medians[m] for m in mem) * fx_scale
                continue
            raise ProfileError(
                f"profile of {self.model!r} ({self.device_tag}) has no time for vertex {v!r}: "
                f"expected it or its fx members in the table; rebuild with `opss profile --model {self.model} --force`"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "device_tag": self.device_tag,
            "meta": dict(self.meta),
            "vertices": {v: st.to_json() for v, st in self.vertices.items()},
            "fx_medians": dict(self.fx_medians),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        try:
            if data.get("format") != FORMAT_VERSION:
                raise ProfileError(f"profile format: expected {FORMAT_VERSION}, got {data.get('format')!r}")
            return cls(
                model=str(data["model"]),
                device_tag=str(data["device_tag"]),
                meta=dict(data["meta"]),
                vertices={v: VertexStats.from_json(d) for v, d in data["vertices"].items()},
                fx_medians={k: float(x) for k, x in data.get("fx_medians", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"profile JSON: expected the keys of Profile.to_json, got error {exc!r}") from None

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        return p


def _members_of(graph: Any) -> dict[str, tuple[str, ...]]:
    if hasattr(graph, "members") and isinstance(graph.members, Mapping):
        return {v: tuple(graph.members.get(v, ())) for v in graph.ids}
    return {n.id: tuple(getattr(n, "members", ())) for n in graph.nodes}


def load_profile(path: str | os.PathLike) -> Profile:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"profile {str(p)!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ProfileError(f"profile {str(p)!r} is unreadable: {exc}") from None
    return Profile.from_json(data)


# ---------------------------------------------------------------------------
# measuring (torch inside)


def graph_hash(graph: Any) -> str:
    """sha256 over the layer graph's vertex ids, ops, targets, shapes, dtypes and edges."""
    h = hashlib.sha256()
    for n in graph.nodes:
        h.update(f"{n.id}|{n.op}|{n.target}|{tuple(n.shape)}|{n.dtype}|{','.join(n.members)}\n".encode())
    for u, v in graph.edges:
        h.update(f"{u}>{v}\n".encode())
    return h.hexdigest()


def capture_model(model: Any, granularity: str = "layer", input_shape: tuple[int, ...] | None = None,
                  module: Any = None) -> Any:
    """The graph of ``model`` at ``granularity``.

    ``model`` is an :class:`opss.models.ResolvedModel` (its own layer graph, no
    capture; another granularity captures its module) or a zoo name, captured
    here at its input shape (or ``input_shape``), built unless ``module`` is given.
    """
    from opss.models import ResolvedModel, capture_at, check_resolved

    if isinstance(model, ResolvedModel):
        check_resolved(model, input_shape=input_shape, module=module)
        return model.capture(granularity)
    from opss import models

    spec = models.get_spec(model)
    net = module if module is not None else models.build_model(spec)
    return capture_at(spec, net, spec.shape(given=input_shape), granularity)


def role_settings(role: str) -> tuple[str, int]:
    """``(device, threads)`` for a role: client = this CPU, 1 thread; server = cuda if
    available, else this CPU with half its cores (at least 1)."""
    if role == "client":
        return "cpu", 1
    if role == "server":
        import torch

        if torch.cuda.is_available():
            return "cuda", 1
        return "cpu", max(1, (os.cpu_count() or 1) // 2)
    raise ProfileError(f"role: expected 'client' or 'server', got {role!r}")


def device_settings(role: str | None = "client", device: str | None = None,
                    threads: int | None = None) -> tuple[str, int, str]:
    """``(device, threads, device tag)``: the role's defaults (:func:`role_settings`; no role:
    this CPU, 1 thread) with ``device``/``threads`` overriding them (another device than the
    role's runs 1 thread unless told). Raises :class:`ProfileError` for a CUDA device that is absent."""
    r_dev, r_threads = role_settings(role) if role is not None else ("cpu", 1)
    device = device or r_dev
    threads = threads or (r_threads if device == r_dev else 1)
    return device, threads, _tag_for(device, threads)


def _tag_for(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ProfileError(f"device {device!r}: expected a CUDA device, got none on this machine")
        return device_tag("cuda", gpu_name=torch.cuda.get_device_name(torch.device(device)))
    return device_tag("cpu", threads)


def _percentile(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    if len(ys) == 1:
        return ys[0]
    pos = q * (len(ys) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (pos - lo)


def measure_profile(
    model: str,
    *,
    device: str = "cpu",
    threads: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    method: str = "interpreter",
    input_shape: tuple[int, ...] | None = None,
    progress: bool = True,
    module: Any = None,
    graph: Any = None,
) -> Profile:
    """Time every vertex of ``model``'s layer graph on ``device`` (see the module docstring)."""
    import torch
    from tqdm import tqdm

    from opss import models

    _check_measure_args(device, repeats, warmup, method)
    spec = models.get_spec(model)
    shape = tuple(input_shape) if input_shape is not None else tuple(spec.input_shape)
    net = module if module is not None else models.get_model(model)
    lg = graph if graph is not None else capture_model(model, "layer", shape, module=net)
    dev = torch.device(device)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gm = lg.gm.to(dev)
        net_dev = net.to(dev)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
        bar = tqdm(total=warmup + repeats, desc=f"profiling {model} on {device} ({threads}t)", unit="run",
                   file=sys.stderr, disable=not progress, leave=False)
        try:
            _warm_up(gm, net_dev, x, method, dev, warmup, bar)
            runs = _timing_loop(gm, net_dev, x, method, dev, repeats, bar)
        finally:
            bar.close()
        return _profile_from_runs(model, lg, net, runs, device=device, threads=threads, shape=shape,
                                  method=method, repeats=repeats, warmup=warmup)
    finally:
        torch.set_num_threads(old_threads)


#: A fresh profile is steady when its eager forward's p90/p10 is at most this (a quiet 2-core
#: box measures 1.02-1.08; under a load average of 2-3 it reaches 1.3-2).
STEADY_SPREAD = 1.15


def run_spread(prof: Profile) -> float:
    """The p90/p10 ratio of the profile's end-to-end forward times (1.0 when unknown)."""
    lo, hi = prof.meta.get("end_to_end_p10"), prof.meta.get("end_to_end_p90")
    return float(hi) / float(lo) if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > 0 \
        else 1.0


def measure_steady_profile(model: str, *, passes: int = 3, max_spread: float = STEADY_SPREAD,
                           say: Any = None, **kw: Any) -> Profile:
    """:func:`measure_profile`, repeated (up to ``passes`` times) until a pass is steady.

    A busy machine only ever adds time, so among the passes the one with the least
    calibrated total wins; a pass whose forward times spread by at most
    ``max_spread`` (p90/p10) ends the search. The table's metadata records
    ``passes``, ``spread`` (the kept pass's) and ``steady``; ``say`` (a callable)
    hears a line per re-measured pass. Used where a profile is taken on the spot
    and then trusted (``opss demo`` paces its emulated client from it).
    """
    if passes < 1:
        raise ProfileError(f"passes: expected >= 1, got {passes}")
    best: Profile | None = None
    done = 0
    for done in range(1, passes + 1):
        prof = measure_profile(model, **kw)
        if best is None or prof.total() < best.total():
            best = prof
        if run_spread(prof) <= max_spread:
            break
        if say is not None and done < passes:
            say(f"profile of {model}: forward times spread {run_spread(prof):.2f}x (p90/p10, steady is <= "
                f"{max_spread:.2f}x; load average {os.getloadavg()[0]:.1f}): measuring again")
    assert best is not None
    meta = {**best.meta, "passes": done, "spread": run_spread(best), "steady": run_spread(best) <= max_spread}
    return Profile(model=best.model, device_tag=best.device_tag, meta=meta, vertices=best.vertices,
                   fx_medians=best.fx_medians)


def _check_measure_args(device: str, repeats: int, warmup: int, method: str) -> None:
    import torch

    if method not in METHODS:
        raise ProfileError(f"method: expected one of {METHODS}, got {method!r}")
    if repeats < 1 or warmup < 0:
        raise ProfileError(f"repeats/warmup: expected repeats >= 1 and warmup >= 0, got {repeats}/{warmup}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProfileError("device 'cuda': expected a CUDA device, got none on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ProfileError(f"device: expected 'cpu' or 'cuda', got {device!r}")


# Every run times the graph node by node and then the eager model once, interleaved, so
# both see the same machine load (the end-to-end reference of bench_profile).
def _warm_up(gm: Any, net: Any, x: Any, method: str, dev: Any, warmup: int, bar: Any) -> None:
    """``warmup`` runs whose times are dropped."""
    from opss._profile_timer import time_forward, time_graph

    for _ in range(warmup):
        time_graph(gm, x, method, dev)
        time_forward(net, x, dev)
        bar.update(1)


def _timing_loop(gm: Any, net: Any, x: Any, method: str, dev: Any, repeats: int,
                 bar: Any) -> list[tuple[dict[str, float], float]]:
    """``repeats`` timed runs: ``(seconds per fx node, eager forward seconds)`` each."""
    from opss._profile_timer import time_forward, time_graph

    runs = []
    for _ in range(repeats):
        times = time_graph(gm, x, method, dev)
        forward = time_forward(net, x, dev)
        bar.update(1)
        runs.append((times, forward))
    return runs


@dataclass
class _Samples:
    """The timed runs, sorted: per vertex (its members' sum), per fx member, the time of
    nodes outside every vertex (constants) and the eager forward, one entry per run."""

    vertex: dict[str, list[float]]
    fx: dict[str, list[float]]
    unattributed: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, lg: Any, runs: list[tuple[dict[str, float], float]]) -> _Samples:
        vertex_of = {m: n.id for n in lg.nodes for m in n.members}
        out = cls({n.id: [] for n in lg.nodes}, {m: [] for m in vertex_of})
        for times, forward in runs:
            out.e2e.append(forward)
            per_vertex = dict.fromkeys(out.vertex, 0.0)
            extra = 0.0
            for name, t in times.items():
                v = vertex_of.get(name)
                if v is None:
                    extra += t
                else:
                    per_vertex[v] += t
                    out.fx[name].append(t)
            for v, t in per_vertex.items():
                out.vertex[v].append(t)
            out.unattributed.append(extra)
        return out


def _calibration(samples: _Samples, vertices: Mapping[str, VertexStats], fx_medians: Mapping[str, float],
                 repeats: int) -> dict[str, float]:
    """The load scales (see the module docstring) and the end-to-end reference, in the
    order the table's metadata lists them; placeholders are not timed: they cost nothing."""
    run_total = statistics.median(
        math.fsum(samples.vertex[v][i] for v in samples.vertex) for i in range(repeats))
    sum_medians = math.fsum(st.median for st in vertices.values())
    sum_fx = math.fsum(fx_medians.values())
    e2e = samples.e2e
    return {
        "end_to_end_median": statistics.median(e2e),
        "run_total_median": run_total,
        "sum_of_medians": sum_medians,
        "load_scale": run_total / sum_medians if sum_medians > 0 else 1.0,
        "fx_load_scale": run_total / sum_fx if sum_fx > 0 else 1.0,
        "end_to_end_p10": _percentile(e2e, 0.1),
        "end_to_end_p90": _percentile(e2e, 0.9),
        "unattributed_median": statistics.median(samples.unattributed) if samples.unattributed else 0.0,
    }


def _profile_from_runs(model: str, lg: Any, net: Any, runs: list[tuple[dict[str, float], float]], *,
                       device: str, threads: int, shape: tuple[int, ...], method: str, repeats: int,
                       warmup: int) -> Profile:
    """The table: per-vertex statistics, per-fx-node medians and the metadata."""
    import torch

    from opss import models

    samples = _Samples.of(lg, runs)
    vertices = {
        n.id: VertexStats(
            median=statistics.median(samples.vertex[n.id]),
            p10=_percentile(samples.vertex[n.id], 0.1),
            p90=_percentile(samples.vertex[n.id], 0.9),
            bytes=int(n.bytes),
            members=tuple(n.members),
            mean=statistics.fmean(samples.vertex[n.id]),
        )
        for n in lg.nodes
    }
    fx_medians = {m: statistics.median(ts) if ts else 0.0 for m, ts in samples.fx.items()}
    meta = {
        "device": device,
        "device_description": (torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda")
                               else f"{cpu_description()} ({os.cpu_count()} cores)"),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": threads,
        "input_shape": list(shape),
        "granularity": "layer",
        "arch_hash": graph_hash(lg),
        "fingerprint": models.fingerprint(net),
        "method": method,
        "repeats": repeats,
        "warmup": warmup,
        **_calibration(samples, vertices, fx_medians, repeats),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }
    tag = _tag_for(device, threads)
    return Profile(model=model, device_tag=tag, meta=meta, vertices=vertices, fx_medians=fx_medians)


def _mismatches(prof: Profile, *, arch: str, shape: tuple[int, ...], torch_version: str,
                threads: int) -> tuple[list[str], list[str]]:
    """(structural, environmental) differences between a stored profile and what is wanted."""
    structural, env = [], []
    if prof.meta.get("arch_hash") != arch:
        structural.append("the model architecture changed (arch_hash differs)")
    if tuple(prof.meta.get("input_shape", ())) != tuple(shape):
        structural.append(f"input shape: expected {list(shape)}, got {prof.meta.get('input_shape')}")
    if prof.meta.get("torch") != torch_version:
        env.append(f"torch: expected {torch_version}, got {prof.meta.get('torch')}")
    if prof.meta.get("threads") != threads:
        env.append(f"threads: expected {threads}, got {prof.meta.get('threads')}")
    return structural, env


def load_or_build_profile(
    model: Any,
    *,
    role: str | None = "client",
    device: str | None = None,
    threads: int | None = None,
    root: str | os.PathLike | None = None,
    input_shape: tuple[int, ...] | None = None,
    build_missing: bool = True,
    force: bool = False,
    repeats: int = 20,
    warmup: int = 3,
    progress: bool = True,
    graph: Any = None,
    module: Any = None,
    stream: TextIO | None = None,
) -> Profile:
    """The stored profile of ``model`` for this device, built when missing (module docstring).

    ``model`` is an :class:`opss.models.ResolvedModel` (its shape, layer graph
    and module are used as they are) or a zoo name, looked up here only as far as
    needed: ``input_shape``, ``graph`` (its layer graph) and ``module`` stand in
    for what the caller already holds, and a stored table captures the model only
    when no graph is given. ``role`` ("client"/"server") picks the default device
    and threads; explicit ``device``/``threads`` override it
    (:func:`device_settings`). Messages go to ``stream`` (stderr by default).
    """
    out = stream if stream is not None else sys.stderr
    name, shape, graph, module = _profile_subject(model, input_shape, graph, module)
    device, threads, tag = device_settings(role, device, threads)
    spec = getattr(model, "spec", None)  # a ResolvedModel knows its own shape: no zoo lookup
    path = profile_path(name, tag, root, shape, getattr(spec, "input_shape", None))
    if path.exists() and not force:
        prof = load_profile(path)
        arch = getattr(model, "graph_hash", None) or graph_hash(  # a ResolvedModel carries its hash
            graph if graph is not None else capture_model(name, "layer", shape, module=module))
        return _checked_stored(prof, path, name, arch=arch, shape=shape, threads=threads, out=out)
    if path.exists():
        print(f"opss: rebuilding profile {path} (--force)", file=out)
    elif not build_missing:
        raise ProfileError(f"no profile for {name!r} on {tag}: expected {str(path)!r}; "
                           f"run `opss profile --model {name}`")
    else:
        print(f"opss: no profile for {name!r} on {tag}; measuring it now ({warmup} warm-up + {repeats} runs)",
              file=out)
    prof = measure_profile(name, device=device, threads=threads, repeats=repeats, warmup=warmup,
                           input_shape=shape, progress=progress, module=module, graph=graph)
    prof.save(path)
    print(f"opss: wrote {path}", file=out)
    return prof


def _profile_subject(model: Any, input_shape: tuple[int, ...] | None, graph: Any,
                     module: Any) -> tuple[str, tuple[int, ...], Any, Any]:
    """``(name, input shape, layer graph or None, module or None)`` of a ResolvedModel or a name."""
    from opss.models import ResolvedModel, check_resolved

    if isinstance(model, ResolvedModel):
        if input_shape is not None or graph is not None or module is not None:
            check_resolved(model, input_shape=input_shape, module=module, graph=graph)
        return model.name, model.input_shape, model.graph, model.module
    from opss import models

    return model, models.get_spec(model).shape(given=input_shape), graph, module


def _checked_stored(prof: Profile, path: Path, name: str, *, arch: str, shape: tuple[int, ...], threads: int,
                    out: TextIO) -> Profile:
    """A stored profile when it fits the model (warning when only the environment differs)."""
    import torch

    structural, env = _mismatches(prof, arch=arch, shape=shape, torch_version=torch.__version__, threads=threads)
    if structural:
        raise ProfileError(
            f"profile {str(path)!r} does not match {name!r}: {'; '.join(structural)}; "
            f"rebuild it with `opss profile --model {name} --force`"
        )
    if env:
        print(f"opss: warning: profile {path} was made with a different environment ({'; '.join(env)}); "
              f"using it anyway (rebuild with `opss profile --model {name} --force`)", file=out)
    return prof
