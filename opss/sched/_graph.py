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

import heapq
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

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
    """

    __slots__ = ("_ids", "_index", "_f", "_g", "_edges", "_preds", "_succs", "_topo", "_hash")

    def __init__(self, nodes: Iterable[Any], edges: Iterable[Any] = ()) -> None:
        ids: list[str] = []
        index: dict[str, int] = {}
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
            if nid in index:
                raise InvalidGraphError(f"duplicate node id {nid!r}: expected unique ids")
            index[nid] = len(ids)
            ids.append(nid)
            f[nid] = _time(fv, "f", nid)
            g[nid] = _time(gv, "g", nid)

        preds: dict[str, list[str]] = {v: [] for v in ids}
        succs: dict[str, list[str]] = {v: [] for v in ids}
        seen: set[tuple[str, str]] = set()
        edge_list: list[tuple[str, str]] = []
        for item in edges:
            try:
                u, v = item
            except (TypeError, ValueError):
                raise InvalidGraphError(f"bad edge entry: expected (u, v), got {item!r}") from None
            for end in (u, v):
                if not isinstance(end, str) or end not in index:
                    raise InvalidGraphError(
                        f"edge ({u!r}, {v!r}) names unknown node {end!r}: expected one of the node ids"
                    )
            if (u, v) in seen:
                continue
            seen.add((u, v))
            edge_list.append((u, v))
            preds[v].append(u)
            succs[u].append(v)

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
        self._ids = tuple(ids)
        self._index = MappingProxyType(index)
        self._f = MappingProxyType(f)
        self._g = MappingProxyType(g)
        self._edges = tuple(edge_list)
        self._preds = {v: tuple(p) for v, p in preds.items()}
        self._succs = {v: tuple(s) for v, s in succs.items()}
        self._topo = self._toposort()
        self._hash: int | None = None

    # -- construction helpers -------------------------------------------------

    def _toposort(self) -> tuple[str, ...]:
        """Kahn's algorithm, smallest insertion index first (deterministic)."""
        indeg = {v: len(self._preds[v]) for v in self._ids}
        heap = [self._index[v] for v in self._ids if indeg[v] == 0]
        heapq.heapify(heap)
        out: list[str] = []
        while heap:
            v = self._ids[heapq.heappop(heap)]
            out.append(v)
            for w in self._succs[v]:
                indeg[w] -= 1
                if indeg[w] == 0:
                    heapq.heappush(heap, self._index[w])
        if len(out) != len(self._ids):
            raise InvalidGraphError(f"graph has a cycle: {self._find_cycle(indeg)}; expected a DAG")
        return tuple(out)

    def _find_cycle(self, indeg: Mapping[str, int]) -> str:
        # Every node left with indeg > 0 has a predecessor that is also left;
        # walking predecessors must revisit a node, which closes a cycle.
        start = next(v for v in self._ids if indeg[v] > 0)
        path: list[str] = []
        pos: dict[str, int] = {}
        v = start
        while v not in pos:
            pos[v] = len(path)
            path.append(v)
            v = next(p for p in self._preds[v] if indeg[p] > 0)
        cycle = path[pos[v]:][::-1]
        cycle.append(cycle[0])
        return " -> ".join(repr(x) for x in cycle)

    # -- accessors --------------------------------------------------------------

    @property
    def ids(self) -> tuple[str, ...]:
        """Node ids in insertion order."""
        return self._ids

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
        return self._edges

    @property
    def nodes(self) -> tuple[SchedNode, ...]:
        """The nodes as :class:`SchedNode` triples, in insertion order."""
        return tuple(SchedNode(v, self._f[v], self._g[v]) for v in self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, node: object) -> bool:
        return node in self._index

    def index(self, node: str) -> int:
        """Insertion index of ``node``."""
        try:
            return self._index[node]
        except KeyError:
            raise InvalidGraphError(f"unknown node {node!r}: expected one of the graph's ids") from None

    def preds(self, node: str) -> tuple[str, ...]:
        """Direct predecessors of ``node``, in edge order."""
        try:
            return self._preds[node]
        except KeyError:
            raise InvalidGraphError(f"unknown node {node!r}: expected one of the graph's ids") from None

    def succs(self, node: str) -> tuple[str, ...]:
        """Direct successors of ``node``, in edge order."""
        try:
            return self._succs[node]
        except KeyError:
            raise InvalidGraphError(f"unknown node {node!r}: expected one of the graph's ids") from None

    def topological_order(self) -> tuple[str, ...]:
        """A topological order (Kahn's algorithm, smallest insertion index first)."""
        return self._topo

    def sources(self) -> tuple[str, ...]:
        """Nodes without predecessors, in insertion order."""
        return tuple(v for v in self._ids if not self._preds[v])

    def sinks(self) -> tuple[str, ...]:
        """Nodes without successors, in insertion order."""
        return tuple(v for v in self._ids if not self._succs[v])

    def is_tree(self) -> bool:
        """True when every node has at most one predecessor (an out-forest)."""
        return all(len(p) <= 1 for p in self._preds.values())

    def is_chain(self) -> bool:
        """True when the nodes form one path (exactly one topological order)."""
        if not self._ids:
            return True
        if len(self.sources()) != 1:
            return False
        return all(len(p) <= 1 for p in self._preds.values()) and all(
            len(s) <= 1 for s in self._succs.values()
        )

    def total_f(self) -> float:
        return math.fsum(self._f.values())

    def total_g(self) -> float:
        return math.fsum(self._g.values())

    # -- JSON -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The ``opss schedule`` instance format."""
        return {
            "nodes": [{"id": v, "f": self._f[v], "g": self._g[v]} for v in self._ids],
            "edges": [[u, v] for u, v in self._edges],
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
            self._ids == other._ids
            and dict(self._f) == dict(other._f)
            and dict(self._g) == dict(other._g)
            and set(self._edges) == set(other._edges)
        )

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(
                (self._ids, tuple(self._f.values()), tuple(self._g.values()), frozenset(self._edges))
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
        shown = ", ".join(f"{v}(f={self._f[v]:g}, g={self._g[v]:g})" for v in self._ids[:6])
        more = f", ... {len(self._ids) - 6} more" if len(self._ids) > 6 else ""
        return f"SchedGraph([{shown}{more}], {len(self._edges)} edges)"
