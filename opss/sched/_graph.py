"""The scheduling graph: node ids with compute time ``f`` and upload time ``g``, and edges.

A :class:`SchedGraph` is the client side ``G' = (S, (S x S) ∩ E)`` of the paper
(Section III-B): every vertex runs once on the client; ``f(v)`` is its compute
time and ``g(v)`` the upload time of its output (0 unless ``v`` is a
cut-point). Times are in seconds by convention, but any non-negative finite
unit works as long as it is the same for ``f`` and ``g``.

The graph is immutable and validated on construction. Duplicate edges are
*deduplicated* (an edge listed twice states the same precedence twice); a
self-loop is a cycle.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from opss.dag import Dag
from opss.errors import InvalidGraphError


class SchedNode(NamedTuple):
    """One vertex: ``id``, compute time ``f`` and upload time ``g``."""

    id: str
    f: float
    g: float


def _time(value: Any, what: str, node: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidGraphError(
            f"node {node!r}: {what} must be a number, expected a finite float >= 0, "
            f"got {type(value).__name__} {value!r}"
        )
    try:
        x = float(value)
    except OverflowError:  # an int beyond float range
        x = math.inf
    if not math.isfinite(x) or x < 0:
        raise InvalidGraphError(
            f"node {node!r}: {what} must be finite and non-negative, expected a float >= 0, got {x!r}"
        )
    return x


class SchedGraph:
    """An immutable DAG of client layers for scheduling.

    ``nodes`` is a sequence of ``(id, f, g)`` triples or :class:`SchedNode`;
    ``edges`` a sequence of ``(u, v)`` pairs meaning ``u`` must run before
    ``v``. Raises :class:`~opss.errors.InvalidGraphError` on a duplicate id, an
    edge naming an unknown node, a negative / non-finite / non-numeric time, or
    a cycle (the message names the nodes of one cycle). Duplicate edges are
    dropped; ``.edges`` keeps the first occurrence of each, in input order.
    The structure is an :class:`opss.dag.Dag` (:attr:`dag`); this class adds
    the times.
    """

    __slots__ = ("_dag", "_f", "_g", "_hash")

    def __init__(self, nodes: Iterable[Any], edges: Iterable[Any] = (), *, dag: Dag | None = None) -> None:
        ids: list[str] = []
        f: dict[str, float] = {}
        g: dict[str, float] = {}
        for item in nodes:
            try:
                nid, fv, gv = item
            except (TypeError, ValueError):
                raise InvalidGraphError(
                    f"bad node entry: expected (id, f, g), got {item!r}"
                ) from None
            if not isinstance(nid, str) or not nid:
                raise InvalidGraphError(f"bad node id: expected a non-empty string, got {nid!r}")
            if nid in f:
                raise InvalidGraphError(f"duplicate node id {nid!r}: expected unique ids")
            ids.append(nid)
            f[nid] = _time(fv, "f", nid)
            g[nid] = _time(gv, "g", nid)
        if dag is None:
            dag = Dag(ids, edges, noun="node")
        elif dag.ids != tuple(ids):
            raise InvalidGraphError("SchedGraph: the given dag's ids differ from the nodes'")
        # every makespan is at most the sum of all times: it must stay a finite float
        try:
            total = math.fsum(f.values()) + math.fsum(g.values())
        except OverflowError:
            total = math.inf
        if not math.isfinite(total):
            raise InvalidGraphError(
                "total time overflows: the sum of all f and g must be a finite float, "
                f"got f and g summing past {sys.float_info.max:.3g}"
            )
        self._dag = dag
        self._f = MappingProxyType(f)
        self._g = MappingProxyType(g)
        self._hash: int | None = None

    @classmethod
    def induced(cls, dag: Dag, vertices: Iterable[str], f: Mapping[str, float],
                g: Mapping[str, float]) -> SchedGraph:
        """The client graph of ``vertices`` of ``dag`` (topological order), ``g`` 0 where absent."""
        sub = dag.induced(vertices)
        return cls([(v, f[v], g.get(v, 0.0)) for v in sub.ids], dag=sub)

    # -- accessors --------------------------------------------------------------

    @property
    def dag(self) -> Dag:
        """The structure (ids, edges, orders, closures)."""
        return self._dag

    @property
    def ids(self) -> tuple[str, ...]:
        """Node ids in insertion order."""
        return self._dag.ids

    @property
    def f(self) -> Mapping[str, float]:
        """Compute time per node id (read-only mapping)."""
        return self._f

    @property
    def g(self) -> Mapping[str, float]:
        """Upload time per node id (read-only mapping)."""
        return self._g

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Distinct edges in input order."""
        return self._dag.edges

    @property
    def nodes(self) -> tuple[SchedNode, ...]:
        """The nodes as :class:`SchedNode` triples, in insertion order."""
        return tuple(SchedNode(v, self._f[v], self._g[v]) for v in self.ids)

    def __len__(self) -> int:
        return len(self._dag)

    def __contains__(self, node: object) -> bool:
        return node in self._dag

    def _lookup(self, method, node: str):
        try:
            return method(node)
        except (KeyError, TypeError):
            raise InvalidGraphError(f"unknown node {node!r}: expected one of the graph's ids") from None

    def index(self, node: str) -> int:
        """Insertion index of ``node``."""
        return self._lookup(self._dag.index, node)

    def preds(self, node: str) -> tuple[str, ...]:
        """Direct predecessors of ``node``, in edge order."""
        return self._lookup(self._dag.preds, node)

    def succs(self, node: str) -> tuple[str, ...]:
        """Direct successors of ``node``, in edge order."""
        return self._lookup(self._dag.succs, node)

    def topological_order(self) -> tuple[str, ...]:
        """A topological order (Kahn's algorithm, smallest insertion index first)."""
        return self._dag.topo

    def sources(self) -> tuple[str, ...]:
        """Nodes without predecessors, in insertion order."""
        return self._dag.sources()

    def sinks(self) -> tuple[str, ...]:
        """Nodes without successors, in insertion order."""
        return self._dag.sinks()

    def is_tree(self) -> bool:
        """True when every node has at most one predecessor (an out-forest)."""
        return self._dag.is_tree()

    def is_chain(self) -> bool:
        """True when the nodes form one path (exactly one topological order)."""
        return self._dag.is_chain()

    def total_f(self) -> float:
        return math.fsum(self._f.values())

    def total_g(self) -> float:
        return math.fsum(self._g.values())

    # -- JSON -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The ``opss schedule`` instance format."""
        return {
            "nodes": [{"id": v, "f": self._f[v], "g": self._g[v]} for v in self.ids],
            "edges": [[u, v] for u, v in self.edges],
        }

    @classmethod
    def from_json(cls, data: Any) -> SchedGraph:
        """Parse the ``opss schedule`` instance format; InvalidGraphError on any problem."""
        if not isinstance(data, dict):
            raise InvalidGraphError(f"instance must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"nodes", "edges"}
        if unknown:
            raise InvalidGraphError(
                f"unknown instance keys {sorted(unknown)}: expected only 'nodes' and 'edges'"
            )
        if "nodes" not in data:
            raise InvalidGraphError("instance has no 'nodes': expected a list of {id, f, g}")
        raw_nodes = data["nodes"]
        raw_edges = data.get("edges", [])
        if not isinstance(raw_nodes, list):
            raise InvalidGraphError(f"'nodes' must be a list, got {type(raw_nodes).__name__}")
        if not isinstance(raw_edges, list):
            raise InvalidGraphError(f"'edges' must be a list, got {type(raw_edges).__name__}")
        nodes = []
        for k, item in enumerate(raw_nodes):
            if not isinstance(item, dict) or not {"id", "f", "g"} <= set(item):
                raise InvalidGraphError(
                    f"nodes[{k}]: expected an object with 'id', 'f', 'g', got {item!r}"
                )
            extra = set(item) - {"id", "f", "g"}
            if extra:
                raise InvalidGraphError(
                    f"nodes[{k}]: unknown keys {sorted(extra)}, expected only 'id', 'f', 'g'"
                )
            nodes.append((item["id"], item["f"], item["g"]))
        edges = []
        for k, item in enumerate(raw_edges):
            if not isinstance(item, list) or len(item) != 2:
                raise InvalidGraphError(f"edges[{k}]: expected a pair [u, v], got {item!r}")
            edges.append((item[0], item[1]))
        return cls(nodes, edges)

    # -- value semantics --------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SchedGraph):
            return NotImplemented
        return (
            self._dag == other._dag
            and dict(self._f) == dict(other._f)
            and dict(self._g) == dict(other._g)
        )

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(
                (self._dag, tuple(self._f.values()), tuple(self._g.values()))
            )
        return self._hash

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SchedGraph.__slots__ and not hasattr(self, name):
            object.__setattr__(self, name, value)
            return
        if name == "_hash":
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"SchedGraph is immutable: cannot set {name!r}")

    def __repr__(self) -> str:
        ids = self.ids
        shown = ", ".join(f"{v}(f={self._f[v]:g}, g={self._g[v]:g})" for v in ids[:6])
        more = f", ... {len(ids) - 6} more" if len(ids) > 6 else ""
        return f"SchedGraph([{shown}{more}], {len(self.edges)} edges)"
