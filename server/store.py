"""Models held by a server: loaded once, captured, warmed up; server parts cached (LRU)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from opss.errors import ModelNotFoundError, PartitionError

from .config import GRANULARITIES, ServerConfig

log = logging.getLogger("opss.server")


def resolve_device(device: str) -> torch.device:
    """``auto`` → the first CUDA device when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected a CUDA device for --device cuda, got none available")
    return torch.device("cuda:0" if device == "cuda" else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so wall-clock compute times are real)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class PartKey:
    model: str
    granularity: str
    client_set: frozenset[str]


@dataclass
class LoadedModel:
    """One model as the server holds it (on its device, eval mode, never mutated)."""

    name: str
    model: torch.nn.Module
    fingerprint: str
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    example: torch.Tensor
    description: str
    graphs: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    server_time_s: dict[str, float] = field(default_factory=dict)
    #: why calls of this model are not batched (None: they are, when batching is on)
    batch_refusal: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelStore:
    """Loads the configured models and hands out (cached) server parts for a partition."""

    def __init__(self, config: ServerConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self._models: dict[str, LoadedModel] = {}
        self._parts: OrderedDict[PartKey, tuple[Any, tuple[str, ...]]] = OrderedDict()
        self._parts_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # --- loading ----------------------------------------------------------------------------
    def load_all(self) -> None:
        for name in self.config.models:
            t0 = time.perf_counter()
            loaded = self._load(name)
            self._models[name] = loaded
            self._warm_up(loaded)
            log.info("loaded %s on %s: input %s, fingerprint %s, %.2f s", name, self.device,
                     list(loaded.input_shape), loaded.fingerprint[:12], time.perf_counter() - t0)

    def _load(self, name: str) -> LoadedModel:
        from opss import models

        spec = models.get_spec(name)
        # a weights file is read by the zoo with torch.load(weights_only=True), from local disk
        model = models.build_model(spec, seed=self.config.seed, weights=self.config.weights.get(name))
        # The client computes its fingerprint on the CPU copy: do the same, before moving.
        fp = models.fingerprint(model)
        shape = spec.shape(self.config.small, self.config.input_shapes.get(name) or None)
        gen = torch.Generator().manual_seed(self.config.seed)
        example = torch.randn(tuple(shape), generator=gen)
        model = model.to(self.device)
        return LoadedModel(name=name, model=model, fingerprint=fp, input_shape=tuple(shape),
                           input_dtype=example.dtype, example=example.to(self.device),
                           description=getattr(spec, "description", ""))

    def _warm_up(self, loaded: LoadedModel) -> None:
        graph = self.graph(loaded, "layer")
        self.graph_hash(loaded, "layer")
        part, _ = self.server_part(loaded.name, "layer", client_set=(graph.input_id,))
        if self.config.max_batch > 1:
            from opss.split import batch_refusal

            why = batch_refusal(graph, batch=min(2, self.config.max_batch), seed=self.config.seed)
            loaded.batch_refusal = None if why is None else f"{loaded.name} is not batched: {why}"
            if why is not None:
                log.warning("%s: serving its calls one at a time", loaded.batch_refusal)
        for _ in range(self.config.warmup_runs):
            with torch.no_grad():
                part.run({graph.input_id: loaded.example})
            synchronize(self.device)
        if self.config.profile_fn is not None:
            try:
                times = self.config.profile_fn(graph, loaded.model, self.device)
                loaded.server_time_s = {str(k): float(v) for k, v in dict(times).items()}
            except Exception as e:  # a failed profile must not stop serving
                log.warning("profiling %s failed, ListModels reports no server times: %s",
                            loaded.name, e)

    # --- lookups ----------------------------------------------------------------------------
    @property
    def models(self) -> Mapping[str, LoadedModel]:
        return dict(self._models)

    def get(self, name: str) -> LoadedModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFoundError(f"unknown model {name!r}: expected one of "
                                     f"{sorted(self._models)}") from None

    def graph(self, loaded: LoadedModel, granularity: str):
        """The model's graph at a granularity, captured at its input shape on first use."""
        if granularity not in GRANULARITIES:
            raise PartitionError(f"granularity: expected one of {list(GRANULARITIES)}, "
                                 f"got {granularity!r}")
        with loaded.lock:
            if granularity not in loaded.graphs:
                from opss.graph import capture

                with torch.no_grad():
                    loaded.graphs[granularity] = capture(loaded.model, loaded.example,
                                                         granularity=granularity, name=loaded.name)
            return loaded.graphs[granularity]

    def server_part(self, model: str, granularity: str, client_set: Sequence[str] = (),
                    cut: Sequence[str] = ()) -> tuple[Any, tuple[str, ...]]:
        """``(ServerPart, cut)`` for a partition given as a client set, or else as a cut list."""
        loaded = self.get(model)
        graph = self.graph(loaded, granularity)
        if client_set:
            members = frozenset(client_set)
        elif cut:
            members = _ancestors_closure(graph, cut)
        else:
            raise PartitionError("partition: expected a client set or a cut list, got neither "
                                 f"(cloud-only is client_set=[{graph.input_id!r}])")
        key = PartKey(model, granularity, members)
        with self._parts_lock:
            hit = self._parts.get(key)
            if hit is not None:
                self._parts.move_to_end(key)
                self.hits += 1
        if hit is None:
            from opss.split import split

            s = split(graph, set(members))
            hit = (s.server, tuple(s.cut))
            with self._parts_lock:
                self.misses += 1
                self._parts[key] = hit
                self._parts.move_to_end(key)
                while len(self._parts) > self.config.cache_size:
                    self._parts.popitem(last=False)
        if cut and set(hit[1]) != set(cut):
            if client_set:
                raise PartitionError(f"cut mismatch: the client sent cut {sorted(set(cut))}, "
                                     f"expected {sorted(hit[1])} (the cut of its client set)")
            raise PartitionError(f"cut {sorted(set(cut))} is not the cut of any client set: the "
                                 f"cut vertices and their ancestors have cut {sorted(hit[1])}")
        return hit

    def graph_hash(self, loaded: LoadedModel, granularity: str) -> str:
        """``opss.profile.graph_hash`` of the model's graph at a granularity (cached)."""
        key = f"hash:{granularity}"
        with loaded.lock:
            cached = loaded.hashes.get(key)
        if cached is None:
            from opss.profile import graph_hash

            cached = graph_hash(self.graph(loaded, granularity))
            with loaded.lock:
                loaded.hashes[key] = cached
        return cached


def _ancestors_closure(graph, cut: Sequence[str]) -> frozenset[str]:
    unknown = [c for c in cut if c not in graph]
    if unknown:
        raise PartitionError(f"unknown cut vertex {unknown[0]!r}: expected a vertex id of the graph")
    return graph.dag.closure(cut)
