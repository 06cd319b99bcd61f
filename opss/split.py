"""Exact client/server splits of a captured model.

A partition is the client set ``S`` of vertices of a :class:`~opss.graph.LayerGraph`,
closed under predecessors and containing the input vertex. Its cut-points are
the client vertices whose output a server vertex needs, plus the output vertex
when it is on the client. ``split(graph, S)`` returns a :class:`ClientPart`
that runs the client vertices one at a time in any valid order and hands each
cut tensor out as soon as it exists, and a :class:`ServerPart` that takes the
cut tensors (all at once, or one by one through a :class:`ServerSession` that
runs every server vertex as soon as its inputs have arrived) and returns the
model output. Local-only (``S`` = every vertex, cut = ``(output_id,)``) and
cloud-only (``S = {input_id}``, cut = ``(input_id,)``) are ordinary cases.

The oracle, tested for every zoo model::

    split.server.run(split.client.run(x)) == model(x)   # torch.testing.assert_close

Both parts execute the captured fx ``GraphModule``'s nodes with an
``fx.Interpreter`` whose environment maps each fx node to its value; a vertex
runs all its members. Constants (parameters, buffers and input-independent
computations) are evaluated once per part. Every other value is dropped from the
environment as soon as no member still to run in the part reads it (a reference
count per vertex output, decremented as its readers run; a value local to a
vertex, such as an ``x.size(0)`` the vertex recomputes, goes after its last
reader in that vertex), so a part holds about as many intermediates as the eager
model does. Kept to the end: the cut tensors the client hands out and the
server's model output. The captured graph has every
in-place op made out-of-place (:func:`opss.graph.clear_inplace`), so a tensor
the client hands out is never mutated later by the client and the server never
mutates a tensor it was given. Both parts run under ``torch.no_grad()`` and keep
the model's ``eval()`` semantics.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from opss.errors import PartitionError, ShapeMismatchError
from opss.graph import LayerGraph
from opss.latency import cut_of

__all__ = [
    "ClientPart",
    "ServerPart",
    "ServerSession",
    "Split",
    "Step",
    "batch_refusal",
    "closure_check",
    "cut_points",
    "resolve_client_set",
    "split",
]


# ---------------------------------------------------------------------------
# partitions
# ---------------------------------------------------------------------------
def resolve_client_set(graph: LayerGraph, client_set: Iterable[str]) -> frozenset[str]:
    """Vertex ids from names that are vertex ids or module paths (a module name
    selects every vertex with a member inside that module; in a block graph a
    module inside an unexpanded block selects the whole block: expand the
    block first to cut inside it)."""
    out: set[str] = set()
    for name in client_set:
        if name in graph:
            out.add(name)
            continue
        inside = graph.vertices_in_module(name)
        if not inside:
            raise PartitionError(
                f"client set names {name!r}: expected a vertex id or a module path of "
                f"{graph.model!r} ({graph.granularity} graph), got neither"
            )
        out.update(inside)
    return frozenset(out)


def closure_check(graph: LayerGraph, client_set: Iterable[str]) -> None:
    """Raise :class:`PartitionError` unless ``client_set`` (vertex ids) contains
    the input vertex and every predecessor of each of its vertices."""
    s = set(client_set)
    for v in s:
        graph.node(v)
    if graph.input_id not in s:
        raise PartitionError(
            f"client set of {graph.model!r} must contain the input vertex {graph.input_id!r}"
        )
    bad = graph.dag.open_edge(s)  # topological: the first offender is the earliest
    if bad is not None:
        v, u = bad
        raise PartitionError(
            f"client set of {graph.model!r} is not closed under predecessors: "
            f"client vertex {v!r} needs {u!r}, expected it in the client set"
        )


def cut_points(graph: LayerGraph, client_set: Iterable[str]) -> tuple[str, ...]:
    """Client vertices whose output a server vertex needs, plus the output
    vertex when it is on the client; in the graph's topological order. A
    residual block's frontier includes the skip tensor's producer."""
    s = resolve_client_set(graph, client_set)
    closure_check(graph, s)
    return cut_of(graph, s)[0]


# ---------------------------------------------------------------------------
# execution
# ---------------------------------------------------------------------------
class _Runner(fx.Interpreter):
    """Runs chosen fx nodes of a GraphModule against an explicit environment."""

    def __init__(self, gm: fx.GraphModule, consts: dict[fx.Node, Any]) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.env = dict(consts)

    def run_members(self, nodes: Sequence[fx.Node], x: torch.Tensor | None = None) -> Any:
        value = None
        for n in nodes:
            if n.op == "placeholder":
                value = x
            else:
                value = self.run_node(n)
            self.env[n] = value
        return value


# One member of a vertex in a release plan: the fx node, the vertex outputs it
# reads (reference-counted across the part) and the values local to its vertex
# whose last reader it is (dropped right after it runs).
_Member = tuple[fx.Node, tuple[fx.Node, ...], tuple[fx.Node, ...]]


@dataclass(frozen=True)
class _ReleasePlan:
    """When each value of a part may leave the environment.

    ``members[v]``: vertex ``v``'s members as :data:`_Member` entries.
    ``readers[a]``: how many member nodes of the part read vertex output ``a``
    (a value read by nobody in the part and not kept is dropped where it is made).
    ``keep``: never dropped (cut tensors handed out, the model output)."""

    members: dict[str, tuple[_Member, ...]]
    readers: dict[fx.Node, int]
    keep: frozenset[fx.Node]


def _release_plan(
    graph: LayerGraph,
    vertices: Sequence[str],
    nodes: Mapping[str, fx.Node],
    consts: Mapping[fx.Node, Any],
    keep: Iterable[fx.Node],
) -> _ReleasePlan:
    """The release plan of the part running ``vertices`` (in any valid order).

    Vertex outputs are the only values that cross vertices (capture checks it),
    each made by one vertex; they get a reference count of their readers in the
    part. Any other member value (a vertex-internal tensor, or an inlined
    non-tensor node like ``x.size(0)`` that several vertices each recompute) is
    read only inside the vertex that made it, after it, and goes after its last
    reader there. Constants are never dropped."""
    keep = frozenset(keep)
    outputs = {nodes[graph.output_node[v]] for v in graph.ids}
    mems = {v: [nodes[m] for m in graph.node(v).members] for v in vertices}
    readers: dict[fx.Node, int] = {}
    counted: dict[str, list[tuple[fx.Node, ...]]] = {}
    last: dict[str, dict[fx.Node, int]] = {}
    for v in vertices:
        own = set(mems[v])
        counted[v], last[v] = [], {}
        for i, n in enumerate(mems[v]):
            reads = []
            for a in n.all_input_nodes:
                if a in consts:
                    continue
                if a in outputs or a not in own:
                    reads.append(a)
                    readers[a] = readers.get(a, 0) + 1
                else:
                    last[v][a] = i
            counted[v].append(tuple(reads))
    plan: dict[str, tuple[_Member, ...]] = {}
    for v in vertices:
        frees: list[list[fx.Node]] = [[] for _ in mems[v]]
        for i, n in enumerate(mems[v]):
            if n in outputs:
                if readers.get(n, 0) == 0 and n not in keep:
                    frees[i].append(n)  # read by nobody in this part
            else:
                frees[last[v].get(n, i)].append(n)
        plan[v] = tuple(
            (n, counted[v][i], tuple(frees[i])) for i, n in enumerate(mems[v])
        )
    return _ReleasePlan(plan, readers, keep)


class _GcRunner(_Runner):
    """A :class:`_Runner` that follows a :class:`_ReleasePlan`: each value leaves
    the environment once no member still to run in the part reads it."""

    def __init__(self, gm: fx.GraphModule, consts: dict[fx.Node, Any], plan: _ReleasePlan) -> None:
        super().__init__(gm, consts)
        self.plan = plan
        self.readers = dict(plan.readers)  # per run: decremented as readers run

    def run_vertex(self, v: str, x: torch.Tensor | None = None) -> None:
        env, readers, keep = self.env, self.readers, self.plan.keep
        for n, reads, frees in self.plan.members[v]:
            env[n] = x if n.op == "placeholder" else self.run_node(n)
            for a in reads:
                left = readers[a] - 1
                readers[a] = left
                if left == 0 and a not in keep:
                    del env[a]
            for a in frees:
                del env[a]


def _constants(gm: fx.GraphModule, graph: LayerGraph) -> dict[fx.Node, Any]:
    """Values of the input-independent fx nodes (get_attr, f(parameters), ...)."""
    info = graph._info
    runner = _Runner(gm, {})
    const_nodes = [n for n in gm.graph.nodes if n.op != "output" and info[n.name].const]
    with torch.no_grad():
        runner.run_members(const_nodes)
    return {n: runner.env[n] for n in const_nodes}


@dataclass(frozen=True)
class Step:
    """What the client did: ran vertex ``node``; ``cut_outputs`` are the cut
    tensors it produced (``{node: tensor}`` when ``node`` is a cut-point)."""

    node: str
    cut_outputs: dict[str, torch.Tensor]

    def __repr__(self) -> str:
        cuts = ", ".join(f"{k}: {tuple(t.shape)}" for k, t in self.cut_outputs.items())
        return f"Step(node={self.node!r}, cut_outputs={{{cuts}}})"


class ClientPart:
    """The client's share: vertices ``vertices`` (topological order), cut ``cut``."""

    def __init__(self, graph: LayerGraph, vertices: tuple[str, ...], cut: tuple[str, ...]) -> None:
        self.graph = graph
        self.vertices = vertices
        self.cut = cut
        self._cut = frozenset(cut)
        keep = set(vertices)
        self.order_graph = graph.dag.induced(keep)  # what a client order must respect
        nodes = {n.name: n for n in graph.gm.graph.nodes}
        self._out = {v: nodes[graph.output_node[v]] for v in vertices}
        self._consts = _constants(graph.gm, graph)
        # reference counts make the plan hold for every valid order
        self._plan = _release_plan(
            graph, vertices, nodes, self._consts, keep=[self._out[c] for c in cut]
        )

    def __repr__(self) -> str:
        return f"ClientPart(model={self.graph.model!r}, vertices={len(self.vertices)}, cut={self.cut})"

    def validate(self, order: Sequence[str] | None) -> tuple[str, ...]:
        """The order to run: default the topological order; ``order`` may omit
        the input vertex (it runs first). Raises InfeasibleOrderError."""
        from opss.sched import validate_order

        if order is None:
            return self.vertices
        seq = tuple(order)
        if self.graph.input_id not in seq:
            seq = (self.graph.input_id, *seq)
        return validate_order(self.order_graph, seq)

    def steps(self, x: torch.Tensor, order: Sequence[str] | None = None) -> Iterator[Step]:
        """Run the client vertices in ``order``, yielding a :class:`Step` after
        each; cut tensors are handed out as soon as they are produced."""
        seq = self.validate(order)
        runner = _GcRunner(self.graph.gm, self._consts, self._plan)
        for v in seq:
            # grad mode is the caller's between steps; set it only when it is on
            # (entering no_grad costs ~1.5 us a vertex, 534 vertices in randwire)
            if torch.is_grad_enabled():
                with torch.no_grad():
                    runner.run_vertex(v, x)
            else:
                runner.run_vertex(v, x)
            yield Step(v, {v: runner.env[self._out[v]]} if v in self._cut else {})

    def run(self, x: torch.Tensor, order: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """All cut tensors, keyed by cut id in cut order."""
        got: dict[str, torch.Tensor] = {}
        for step in self.steps(x, order):
            got.update(step.cut_outputs)
        return {c: got[c] for c in self.cut}


class ServerPart:
    """The server's share: vertices ``vertices`` (topological order), fed by ``cut``."""

    def __init__(self, graph: LayerGraph, vertices: tuple[str, ...], cut: tuple[str, ...]) -> None:
        self.graph = graph
        self.vertices = vertices
        self.cut = cut
        nodes = {n.name: n for n in graph.gm.graph.nodes}
        self._out = {v: nodes[graph.output_node[v]] for v in (*cut, *vertices)}
        keep = set(vertices)
        self._preds = {v: tuple(graph.preds(v)) for v in vertices}
        self._succs = {
            v: tuple(w for w in graph.succs(v) if w in keep) for v in (*cut, *vertices)
        }
        self._pos = {v: i for i, v in enumerate(graph.ids)}
        self._consts = _constants(graph.gm, graph)
        # fed cut tensors are dropped after their last reader too (the caller keeps its own)
        self._plan = _release_plan(
            graph, vertices, nodes, self._consts, keep=[nodes[graph.output_node[graph.output_id]]]
        )
        tensors = [*graph.gm.parameters(), *graph.gm.buffers()]
        self.device = tensors[0].device if tensors else torch.device("cpu")

    def __repr__(self) -> str:
        return f"ServerPart(model={self.graph.model!r}, vertices={len(self.vertices)}, cut={self.cut})"

    # ``device``: where the captured GraphModule's weights live (capture a model
    # on the GPU to serve there); fed tensors on another device are copied to it.

    @property
    def inputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """What the server expects: ``{cut id: (shape, dtype)}``, dtype like ``"float32"``."""
        return {c: (self.graph.node(c).shape, self.graph.node(c).dtype) for c in self.cut}

    def session(self, batch: int = 1) -> ServerSession:
        """An incremental run; ``batch`` requests stacked on dim 0 (see :meth:`run_batch`)."""
        return ServerSession(self, batch)

    def run_batch(self, requests: Sequence[Mapping[str, torch.Tensor]]) -> list[torch.Tensor]:
        """The model output of each request, computed once on the requests stacked on the batch
        dimension (dim 0) and split back: ``[run(r) for r in requests]`` up to the rounding of
        batch-size dependent kernels. Valid only for graphs :func:`batch_refusal` accepts (every
        cut tensor and the output have batch 1 on dim 0, and no layer mixes samples)."""
        if not requests:
            return []
        if len(requests) == 1:
            return [self.run(requests[0])]
        sess = self.session(batch=len(requests))
        for c in self.cut:
            missing = [i for i, r in enumerate(requests) if c not in r]
            if missing:
                raise PartitionError(
                    f"server part of {self.graph.model!r}: request {missing[0]} of the batch lacks "
                    f"cut tensor {c!r}, expected {list(self.cut)}"
                )
            for r in requests:
                self._check_input(c, r[c])
            sess.feed(c, torch.cat([r[c].to(self.device) for r in requests], dim=0))
        return list(sess.result().split(1, dim=0))

    def _check_input(self, name: str, tensor: torch.Tensor, batch: int = 1) -> None:
        spec = self.inputs.get(name)
        if spec is None:
            raise PartitionError(
                f"server part of {self.graph.model!r}: unknown cut tensor {name!r}, "
                f"expected one of {list(self.cut)}"
            )
        shape, dtype = spec
        if batch != 1:
            shape = (shape[0] * batch, *shape[1:])
        got_dtype = str(tensor.dtype).removeprefix("torch.")
        if tuple(tensor.shape) != tuple(shape) or got_dtype != dtype:
            raise ShapeMismatchError(
                f"cut tensor {name!r}: expected shape {tuple(shape)} {dtype}, "
                f"got {tuple(tensor.shape)} {got_dtype}"
            )

    def run(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The model output from every cut tensor."""
        missing = [c for c in self.cut if c not in tensors]
        if missing:
            raise PartitionError(
                f"server part of {self.graph.model!r}: missing cut tensor(s) {missing}, "
                f"expected {list(self.cut)}"
            )
        extra = [k for k in tensors if k not in self._out or k not in self.cut]
        if extra:
            raise PartitionError(
                f"server part of {self.graph.model!r}: unexpected tensor(s) {extra}, "
                f"expected only {list(self.cut)}"
            )
        sess = self.session()
        for c in self.cut:
            sess.feed(c, tensors[c])
        return sess.result()


class ServerSession:
    """Incremental server execution: ``feed`` cut tensors in arrival order;
    each feed runs every server vertex whose inputs have all arrived. With ``batch`` > 1 each
    cut tensor holds that many requests stacked on dim 0 (:meth:`ServerPart.run_batch`)."""

    def __init__(self, part: ServerPart, batch: int = 1) -> None:
        self.part = part
        self.batch = batch
        self._runner = _GcRunner(part.graph.gm, part._consts, part._plan)
        self._have: set[str] = set()
        self._waiting = {v: len(ps) for v, ps in part._preds.items()}
        self._ready = [(part._pos[v], v) for v, n in self._waiting.items() if n == 0]
        heapq.heapify(self._ready)
        self.ran: list[str] = []

    @property
    def done(self) -> bool:
        return self.part.graph.output_id in self._have

    def feed(self, name: str, tensor: torch.Tensor) -> list[str]:
        """Accept cut tensor ``name``; returns the vertex ids this call ran."""
        part = self.part
        part._check_input(name, tensor, self.batch)
        if name in self._have:
            raise PartitionError(f"server part of {part.graph.model!r}: cut {name!r} fed twice")
        if tensor.device != part.device:  # a copy: the caller's tensor stays as it was
            tensor = tensor.to(part.device)
        self._runner.env[part._out[name]] = tensor
        return self._arrived(name)

    def _arrived(self, name: str) -> list[str]:
        part = self.part
        self._have.add(name)
        for w in part._succs[name]:
            self._waiting[w] -= 1
            if self._waiting[w] == 0:
                heapq.heappush(self._ready, (part._pos[w], w))
        ran: list[str] = []
        with torch.no_grad():
            while self._ready:
                _, v = heapq.heappop(self._ready)
                self._runner.run_vertex(v)
                ran.append(v)
                self._have.add(v)
                for w in part._succs[v]:
                    self._waiting[w] -= 1
                    if self._waiting[w] == 0:
                        heapq.heappush(self._ready, (part._pos[w], w))
        self.ran.extend(ran)
        return ran

    def result(self) -> torch.Tensor:
        """The model output; raises PartitionError if cut tensors are missing."""
        if not self.done:
            missing = [c for c in self.part.cut if c not in self._have]
            raise PartitionError(
                f"server result of {self.part.graph.model!r} not ready: "
                f"waiting for cut tensor(s) {missing}"
            )
        return self._runner.env[self.part._out[self.part.graph.output_id]]


class _VertexOutputs(fx.Interpreter):
    """Runs a whole GraphModule, recording the shape of every vertex output."""

    def __init__(self, graph: LayerGraph) -> None:
        super().__init__(graph.gm)
        self.vertex_of = {n: v for v, n in graph.output_node.items()}
        self.shapes: dict[str, tuple[int, ...] | None] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        v = self.vertex_of.get(n.name)
        if v is not None:
            self.shapes[v] = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        return value


def batch_refusal(graph: LayerGraph, batch: int = 2, seed: int = 0, rtol: float = 1e-4,
                  atol: float = 1e-5) -> str | None:
    """Why requests to ``graph`` cannot be stacked on the batch dimension, or None when they can.

    The check, on ``batch`` random inputs at the graph's input shape: every vertex output is a
    tensor with batch 1 on dim 0 in the capture and ``batch`` there in the stacked run (a
    ``view``/``reshape`` with literal sizes breaks this, or fails outright), and each sample of the
    stacked output equals the output of that sample run alone (within ``rtol``/``atol`` of the
    output's scale; nothing mixes samples, as a batch norm in training mode would). Any split of
    an accepted graph can then run :meth:`ServerPart.run_batch`, since every cut tensor is a
    vertex output."""
    inp = graph.node(graph.input_id)
    if not inp.shape or inp.shape[0] != 1:
        return f"its input shape {list(inp.shape)} has no batch dimension of 1 first"
    for v in graph.ids:
        node = graph.node(v)
        if not node.shape or node.shape[0] != 1:
            return (f"vertex {v!r} has output shape {list(node.shape)}: expected batch 1 first "
                    f"(a tensor)")
    gen = torch.Generator().manual_seed(seed)
    device = next(iter([*graph.gm.parameters(), *graph.gm.buffers()]), torch.empty(0)).device
    x = torch.randn((batch, *inp.shape[1:]), generator=gen).to(device=device,
                                                               dtype=getattr(torch, inp.dtype))
    prop = _VertexOutputs(graph)
    try:
        with torch.no_grad():
            stacked = prop.run(x)
            alone = torch.cat([graph.gm(x[i : i + 1]) for i in range(batch)], dim=0)
    except Exception as exc:
        return f"it fails on a batch of {batch}: {type(exc).__name__}: {str(exc)[:160]}"
    for v in graph.ids:
        want = (batch, *graph.node(v).shape[1:])
        if prop.shapes.get(v) != want:
            got = prop.shapes.get(v)
            return (f"vertex {v!r} gives shape {list(got) if got else got} on a batch of {batch}, "
                    f"expected {list(want)} (a literal batch size, or a reduction over the batch)")
    scale = max(1.0, float(alone.abs().max()))
    err = float((stacked.float() - alone.float()).abs().max())
    if err > atol * scale + rtol * float(alone.abs().max()):
        return (f"its output on a batch of {batch} differs from each sample run alone by {err:.3g} "
                f"(a layer mixes samples)")
    return None


@dataclass(frozen=True, eq=False)
class Split:
    """A partition of a captured model into a client part and a server part."""

    graph: LayerGraph
    client_set: frozenset[str]
    cut: tuple[str, ...]
    client: ClientPart
    server: ServerPart

    def __repr__(self) -> str:
        return (
            f"Split(model={self.graph.model!r}, client={len(self.client_set)} vertices, "
            f"server={len(self.server.vertices)} vertices, cut={self.cut})"
        )

    @property
    def upload_bytes(self) -> int:
        """Bytes of the cut tensors that cross the uplink (0 for local-only)."""
        if self.cut == (self.graph.output_id,) and not self.server.vertices:
            return 0
        return sum(self.graph.node(c).bytes for c in self.cut)


def split(graph: LayerGraph, client_set: Iterable[str]) -> Split:
    """Split ``graph`` (with its fx GraphModule) at client set ``client_set``
    (vertex ids and/or module names). Raises PartitionError on an unknown name,
    a set without the input, or a set not closed under predecessors."""
    s = resolve_client_set(graph, client_set)
    cut = cut_points(graph, s)
    client_vertices = tuple(v for v in graph.ids if v in s)
    server_vertices = tuple(v for v in graph.ids if v not in s)
    return Split(
        graph=graph,
        client_set=s,
        cut=cut,
        client=ClientPart(graph, client_vertices, cut),
        server=ServerPart(graph, server_vertices, cut),
    )
