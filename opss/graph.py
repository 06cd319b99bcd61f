"""Capture a PyTorch model as a layer DAG (``LayerGraph``).

``capture(model, example_input)`` traces a *copy* of the model with
``torch.fx.symbolic_trace`` (in ``eval()``), runs the traced graph once on the
example through :class:`_ShapeProp` (an ``fx.Interpreter`` that records every
node's real output: shape, dtype and ``bytes = numel * element_size``) and
groups the fx nodes into vertices:

* Parameters, buffers and every computation that does not depend on the input
  (``get_attr`` nodes, ``torch.sigmoid(self.weight)``, ...) are *constants*:
  they are not vertices; each part of a split evaluates them once.
* ``granularity="layer"``: every op is a vertex; with ``fuse=True`` an op
  followed by size-keeping cheap ops (normalization, activation, dropout,
  flatten/view, arithmetic with a constant), each the only consumer of the one
  before and reading nothing else (``conv -> bn -> relu``), is one vertex named
  after its last member, whose output is the vertex's output. The rule looks at
  op types only, so vertex ids do not depend on the input resolution. Fusion never crosses a block boundary, so
  expanding every block of the block graph gives exactly the layer graph.
* ``granularity="block"``: a named submodule (an Inception module, a residual
  block, an inverted residual, a RandWire node, ...) is one vertex whose id is
  its module path. Blocks are chosen generically: the outermost module on an
  fx node's module stack that is a block type of the model's
  :class:`~opss.models.ModelSpec` (``block_types``) or, without a spec, any
  called module that has children and is not a plain ``Sequential``,
  ``ModuleList`` or ``ModuleDict``. A candidate whose nodes are read from
  outside at more than one tensor is not a block (its nodes fall to the next
  inner candidate). Nodes outside every block are layer vertices.
  :meth:`LayerGraph.expand` replaces blocks by their layers (the paper: a block
  the cut enters is expanded into its layers).

The traced copy has every ``inplace`` flag cleared and in-place ops replaced by
their out-of-place forms, so a tensor handed across a cut is never mutated
afterwards (see ``opss.split``). The model passed in is never modified.
"""

from __future__ import annotations

import copy
import inspect
import operator
import os
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.fx as fx
from torch import nn

from opss.dag import Dag
from opss.errors import CaptureError, InvalidGraphError, PartitionError

__all__ = ["LayerGraph", "LayerNode", "capture", "clear_inplace"]

GRANULARITIES = ("layer", "block")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    operator.ifloordiv: operator.floordiv,
    operator.imod: operator.mod,
    operator.ipow: operator.pow,
    operator.iand: operator.and_,
    operator.ior: operator.or_,
    operator.ixor: operator.xor,
    operator.ilshift: operator.lshift,
    operator.irshift: operator.rshift,
    operator.imatmul: operator.matmul,
}


@dataclass(frozen=True)
class LayerNode:
    """One vertex: ``id`` (fx name of its output node, or a block's module path),
    ``op`` (fx op of the output node, or ``"block"``), ``module`` (owning module
    path, ``""`` for the top level), ``target`` (fx target or block class),
    ``shape``/``dtype``/``bytes`` of its output and ``members`` (the fx node
    names it runs, in execution order; the output node is the last one for a
    layer vertex). Non-tensor values (``x.size(0)``, the tuple of
    ``torch.chunk``) are no vertices: each vertex reading one lists it among
    its members and recomputes it, so such a cheap node may be a member of
    several vertices."""

    id: str
    op: str
    module: str
    target: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    members: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "op": self.op,
            "module": self.module,
            "target": self.target,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "bytes": self.bytes,
            "members": list(self.members),
        }


@dataclass(frozen=True)
class _FxInfo:
    """What capture learned about one fx node."""

    index: int
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    module: str  # innermost module path on the node's stack ("" = top level)
    stack: tuple[str, ...]  # module paths, outermost first
    const: bool  # does not depend on the input
    is_tensor: bool


@dataclass(frozen=True, eq=False)
class LayerGraph:
    """A captured model as a DAG of vertices. Build it with :func:`capture`.

    ``model`` is the model's name (zoo name or the class name), ``nodes`` are in
    a topological order, ``edges`` are ``(u, v)`` vertex-id pairs.

    ``gm`` is the prepared fx ``GraphModule`` (in-place ops cleared) that
    ``opss.split`` executes; ``output_node`` maps a vertex id to the fx node
    name whose value is the vertex's output (what a cut sends)."""

    model: str
    granularity: str
    nodes: tuple[LayerNode, ...]
    edges: tuple[tuple[str, str], ...]
    input_id: str
    output_id: str
    gm: fx.GraphModule = field(repr=False)
    output_node: dict[str, str] = field(repr=False)
    capture_seconds: float = 0.0
    fuse: bool = True
    expanded: frozenset[str] = frozenset()
    _info: dict[str, _FxInfo] = field(default_factory=dict, repr=False)
    _block_of: dict[str, str | None] = field(default_factory=dict, repr=False)
    _modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    _index: dict[str, LayerNode] = field(default_factory=dict, repr=False)
    _dag: Dag | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n.id: n for n in self.nodes})
        object.__setattr__(self, "_dag", Dag([n.id for n in self.nodes], self.edges))

    def __repr__(self) -> str:
        return (
            f"LayerGraph(model={self.model!r}, granularity={self.granularity!r}, "
            f"vertices={len(self.nodes)}, edges={len(self.edges)}, "
            f"structure={self.structure()!r})"
        )

    # -- lookups ---------------------------------------------------------
    @property
    def ids(self) -> tuple[str, ...]:
        """Vertex ids in a topological order."""
        return self._dag.ids

    @property
    def dag(self) -> Dag:
        """The structure: ids, edges, closures and cuts (:class:`opss.dag.Dag`)."""
        return self._dag

    def node(self, vid: str) -> LayerNode:
        try:
            return self._index[vid]
        except KeyError:
            raise PartitionError(
                f"unknown vertex {vid!r} in graph of {self.model!r} ({self.granularity})"
            ) from None

    def __contains__(self, vid: object) -> bool:
        return vid in self._index

    def preds(self, vid: str) -> tuple[str, ...]:
        self.node(vid)
        return self._dag.preds(vid)

    def succs(self, vid: str) -> tuple[str, ...]:
        self.node(vid)
        return self._dag.succs(vid)

    # -- structure -------------------------------------------------------
    def structure(self, vertices: Iterable[str] | None = None) -> str:
        """``"chain"`` if the (induced sub)graph is a single path, ``"tree"`` if
        every vertex has at most one predecessor (an out-forest from the input),
        else ``"dag"``. ``vertices`` restricts to an induced subgraph, e.g. the
        client part of a partition."""
        dag = self._dag if vertices is None else self._dag.induced(vertices)
        if not dag.is_tree():
            return "dag"
        return "chain" if dag.is_chain() else "tree"

    def vertices_in_module(self, module: str) -> tuple[str, ...]:
        """Vertices with a member inside module path ``module`` (or equal to it)."""
        prefix = module + "."
        out = []
        for n in self.nodes:
            if n.id == module or n.module == module or n.module.startswith(prefix):
                out.append(n.id)
                continue
            for m in n.members:
                mod = self._info[m].module
                if mod == module or mod.startswith(prefix):
                    out.append(n.id)
                    break
        return tuple(out)

    def blocks(self) -> tuple[str, ...]:
        """Ids of the block vertices (empty for a layer graph)."""
        return tuple(n.id for n in self.nodes if n.op == "block")

    def expand(self, block_ids: Iterable[str]) -> LayerGraph:
        """A new graph with the given blocks replaced by their layer vertices.
        Expanding every block gives the layer graph."""
        block_ids = list(block_ids)
        known = set(self._block_of.values()) - {None}
        for b in block_ids:
            if b not in known:
                raise PartitionError(
                    f"cannot expand {b!r}: expected a block of {self.model!r}, "
                    f"got a name that is not one (blocks: {sorted(known)[:8]}...)"
                )
        return _group_into_vertices(
            self.model,
            self.granularity,
            self.gm,
            self._info,
            self._block_of,
            self.expanded | frozenset(block_ids),
            self.fuse,
            self.capture_seconds,
            self._modules,
        )

    def to_json(self) -> dict:
        """``{"model", "granularity", "nodes": [{"id","op","module","bytes",...}], "edges"}``."""
        return {
            "model": self.model,
            "granularity": self.granularity,
            "input": self.input_id,
            "output": self.output_id,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [[u, v] for u, v in self.edges],
        }


# ---------------------------------------------------------------------------
# in-place hazard
# ---------------------------------------------------------------------------
def clear_inplace(gm: fx.GraphModule) -> int:
    """Make every op of ``gm`` out-of-place: module ``inplace`` flags, ``inplace=``
    arguments, ``x.relu_()``-style methods, ``torch.relu_`` and ``operator.iadd``.
    Returns how many things it changed. Same values, no aliasing surprises."""
    changed = 0
    for mod in gm.modules():
        if getattr(mod, "inplace", None) is True:
            mod.inplace = False
            changed += 1
    for node in gm.graph.nodes:
        if node.op == "call_function":
            if node.target in _INPLACE_OPERATORS:
                node.target = _INPLACE_OPERATORS[node.target]
                changed += 1
                continue
            name = getattr(node.target, "__name__", "")
            if name.endswith("_") and not name.startswith("_"):
                for ns in (torch, torch.nn.functional):
                    if getattr(ns, name, None) is node.target and hasattr(ns, name[:-1]):
                        node.target = getattr(ns, name[:-1])
                        changed += 1
                        break
            changed += _clear_inplace_arg(node)
        elif node.op == "call_method":
            name = node.target
            if (
                name.endswith("_")
                and not name.startswith("_")
                and hasattr(torch.Tensor, name[:-1])
            ):
                node.target = name[:-1]
                changed += 1
            if node.kwargs.get("inplace") is True:
                node.kwargs = {**node.kwargs, "inplace": False}
                changed += 1
    gm.recompile()
    return changed


def _clear_inplace_arg(node: fx.Node) -> int:
    if node.kwargs.get("inplace") is True:
        node.kwargs = {**node.kwargs, "inplace": False}
        return 1
    try:
        params = list(inspect.signature(node.target).parameters)
    except (TypeError, ValueError):
        return 0
    if "inplace" in params:
        pos = params.index("inplace")
        if pos < len(node.args) and node.args[pos] is True:
            args = list(node.args)
            args[pos] = False
            node.args = tuple(args)
            return 1
    return 0


# ---------------------------------------------------------------------------
# capture
# ---------------------------------------------------------------------------
class _ShapeProp(fx.Interpreter):
    """Runs the graph once and records each node's real output and whether it
    depends on the input (ShapeProp-style: ``run_node`` is the hook)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.values: dict[str, tuple[tuple[int, ...], str, int, bool]] = {}
        self.const: dict[str, bool] = {}
        self.current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        result = super().run_node(n)
        self.values[n.name] = _describe(result)
        if n.op == "placeholder":
            self.const[n.name] = False
        elif n.op == "get_attr":
            self.const[n.name] = True
        else:
            self.const[n.name] = all(self.const[a.name] for a in n.all_input_nodes)
        return result


def _describe(value: Any) -> tuple[tuple[int, ...], str, int, bool]:
    if isinstance(value, torch.Tensor):
        return (
            tuple(value.shape),
            str(value.dtype).removeprefix("torch."),
            value.numel() * value.element_size(),
            True,
        )
    leaves = [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]
    return ((), type(value).__name__, sum(t.numel() * t.element_size() for t in leaves), False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _failing_construct(exc: BaseException) -> str:
    """The last traceback frame outside torch: where the model did something fx
    cannot trace."""
    torch_dir = os.path.dirname(torch.__file__)
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(torch_dir)
    ]
    frames = [f for f in frames if not f.filename.endswith(os.path.join("opss", "graph.py"))]
    if not frames:
        return "unknown construct"
    f = frames[-1]
    line = (f.line or "").strip()
    return f"`{line}` at {os.path.basename(f.filename)}:{f.lineno} (in {f.name})"


def capture(
    model: nn.Module,
    example_input: torch.Tensor,
    granularity: str = "layer",
    name: str | None = None,
    *,
    fuse: bool = True,
    block_types: Sequence[type] | None = None,
    clear_inplace_ops: bool = True,
) -> LayerGraph:
    """Trace ``model`` (a copy, in eval mode) and return its :class:`LayerGraph`.

    ``name`` labels the graph and errors; when it names a zoo model and
    ``block_types`` is None, the spec's ``block_types`` choose the blocks.
    ``clear_inplace_ops=False`` keeps in-place ops (only to demonstrate the
    hazard in tests; splits of such a graph may corrupt tensors).
    Raises :class:`CaptureError` naming the model and the construct fx fails on.
    """
    if granularity not in GRANULARITIES:
        raise CaptureError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
    label = name or type(model).__name__
    if block_types is None and name is not None:
        block_types = _spec_block_types(name)
    start = time.perf_counter()
    work = copy.deepcopy(model).eval()
    gm = _trace(work, label, clear_inplace_ops)
    prop = _run_example(gm, label, example_input)
    info = _fx_infos(gm, prop)
    modules = dict(work.named_modules())
    block_of = _choose_blocks(gm, info, modules, block_types)
    if granularity == "layer":
        expanded = frozenset(b for b in block_of.values() if b is not None)
    else:
        expanded = frozenset()
    seconds = time.perf_counter() - start
    graph = _group_into_vertices(label, granularity, gm, info, block_of, expanded, fuse, seconds, modules)
    object.__setattr__(graph, "capture_seconds", time.perf_counter() - start)
    return graph


def _trace(work: nn.Module, label: str, clear_inplace_ops: bool) -> fx.GraphModule:
    """``work`` traced with fx, in eval mode, in-place ops cleared; it must take one input."""
    try:
        gm = fx.symbolic_trace(work)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
        raise CaptureError(
            f"cannot trace model {label!r} with torch.fx: {_first_line(exc)}; "
            f"failing construct: {_failing_construct(exc)}"
        ) from exc
    gm.eval()
    if clear_inplace_ops:
        clear_inplace(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise CaptureError(
            f"model {label!r}: expected exactly one tensor input, got {len(placeholders)} "
            f"({[n.name for n in placeholders]})"
        )
    return gm


def _run_example(gm: fx.GraphModule, label: str, example_input: torch.Tensor) -> _ShapeProp:
    """Run ``gm`` once on the example, recording every node; the output must be one tensor."""
    prop = _ShapeProp(gm)
    try:
        with torch.no_grad():
            out = prop.run(example_input)
    except Exception as exc:
        where = prop.current
        raise CaptureError(
            f"model {label!r} failed on an example of shape {tuple(example_input.shape)}: "
            f"{_first_line(exc)}; failing construct: "
            + (f"fx node {where.name!r} ({where.op} {_target_name(where)})" if where else "none")
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise CaptureError(
            f"model {label!r}: expected a single tensor output, got {type(out).__name__}"
        )
    return prop


def _fx_infos(gm: fx.GraphModule, prop: _ShapeProp) -> dict[str, _FxInfo]:
    """What the run learned about each fx node (all but the output node)."""
    info: dict[str, _FxInfo] = {}
    for i, n in enumerate(gm.graph.nodes):
        if n.op == "output":
            continue
        stack_meta = n.meta.get("nn_module_stack") or {}
        stack = tuple(v[0] if isinstance(v, tuple) else k for k, v in stack_meta.items())
        module = n.target if n.op == "call_module" else (stack[-1] if stack else "")
        shape, dtype, nbytes, is_tensor = prop.values[n.name]
        info[n.name] = _FxInfo(
            index=i,
            shape=shape,
            dtype=dtype,
            bytes=nbytes,
            module=module,
            stack=stack,
            const=prop.const[n.name],
            is_tensor=is_tensor,
        )
    return info


def _spec_block_types(name: str) -> Sequence[type] | None:
    from opss import models

    if name in models.names():
        return models.get_spec(name).block_types
    return None


def _is_default_block(mod: nn.Module) -> bool:
    return type(mod) not in _CONTAINERS and any(True for _ in mod.children())


def _choose_blocks(
    gm: fx.GraphModule,
    info: dict[str, _FxInfo],
    modules: dict[str, nn.Module],
    block_types: Sequence[type] | None,
) -> dict[str, str | None]:
    """Assign each non-constant fx node to its block (module path) or None.
    ``modules`` are the traced model's own modules (the GraphModule's
    intermediate containers are plain ``nn.Module``s)."""

    def qualifies(path: str) -> bool:
        mod = modules.get(path)
        if mod is None or path == "":
            return False
        if block_types is not None:
            return isinstance(mod, tuple(block_types))
        return _is_default_block(mod)

    candidates = {
        name: [p for p in fi.stack if qualifies(p)]
        for name, fi in info.items()
        if not fi.const
    }
    level = {name: 0 for name in candidates}
    nodes = {n.name: n for n in gm.graph.nodes}
    while True:
        block_of = {
            name: (c[level[name]] if level[name] < len(c) else None)
            for name, c in candidates.items()
        }
        bad = set()
        members: dict[str, list[str]] = {}
        for name, b in block_of.items():
            if b is not None:
                members.setdefault(b, []).append(name)
        for b, mem in members.items():
            exports = set()
            for m in mem:
                for user in nodes[m].users:
                    if user.op == "output" or block_of.get(user.name) != b:
                        exports.add(m)
            if len(exports) > 1 or any(not info[m].is_tensor for m in exports):
                bad.add(b)
        if not bad:
            return block_of
        for name, b in block_of.items():
            if b in bad:
                level[name] += 1


def _group_into_vertices(
    label: str,
    granularity: str,
    gm: fx.GraphModule,
    info: dict[str, _FxInfo],
    block_of: dict[str, str | None],
    expanded: frozenset[str],
    fuse: bool,
    seconds: float,
    modules: dict[str, nn.Module],
) -> LayerGraph:
    """Group the input-dependent fx nodes of ``gm`` into vertices and build the graph.

    Seams, in order: membership (blocks not in ``expanded`` are vertices, the
    rest are layer nodes), non-tensor values inlined into their readers,
    fusion of cheap followers onto the op before them (``fuse``), each
    vertex's output fx node, the edges, a topological order."""
    nodes = [n for n in gm.graph.nodes if n.op != "output" and not info[n.name].const]
    byname = {n.name: n for n in gm.graph.nodes}
    output_fx = next(n for n in gm.graph.nodes if n.op == "output")
    out_arg = output_fx.args[0]
    if not isinstance(out_arg, fx.Node) or info[out_arg.name].const:
        raise CaptureError(f"model {label!r}: the output does not depend on the input")

    vertex_of, block_members = _block_membership(nodes, block_of, expanded)
    reads = _inline_non_tensors(nodes, info, vertex_of, output_fx)
    layer_nodes = [n for n in nodes if n.name not in vertex_of and n.name not in reads.inline]
    fused_into = _fusion(layer_nodes, reads, byname, vertex_of, block_of, modules) if fuse else {}
    layer_members = _layer_membership(layer_nodes, fused_into)
    vertex_of.update((m, vid) for vid, mem in layer_members.items() for m in mem)
    output_node = _vertex_outputs(layer_members, block_members, vertex_of, byname)
    own = {**layer_members, **block_members}
    edge_set = _edges(label, own, reads, vertex_of, output_node)
    order = _vertex_order(label, {vid: info[mem[0]].index for vid, mem in own.items()}, edge_set)
    pos = {v: i for i, v in enumerate(order)}
    edges = tuple(sorted(edge_set, key=lambda e: (pos[e[1]], pos[e[0]])))
    members_of = _members_with_inlined(own, reads, info)
    vertices = tuple(
        _vertex(vid, members_of[vid], info[output_node[vid]], byname, modules, vid in block_members)
        for vid in order
    )
    return LayerGraph(
        model=label,
        granularity=granularity,
        nodes=vertices,
        edges=edges,
        input_id=next(n.name for n in nodes if n.op == "placeholder"),
        output_id=vertex_of[out_arg.name],
        gm=gm,
        output_node=output_node,
        capture_seconds=seconds,
        fuse=fuse,
        expanded=expanded,
        _info=info,
        _block_of=block_of,
        _modules=modules,
    )


def _block_membership(
    nodes: list[fx.Node], block_of: dict[str, str | None], expanded: frozenset[str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``(vertex of each fx node in a block vertex, members of each block vertex)``:
    the nodes of every block not in ``expanded``, in fx order."""
    vertex_of: dict[str, str] = {}
    block_members: dict[str, list[str]] = {}
    for n in nodes:
        b = block_of.get(n.name)
        if b is not None and b not in expanded:
            vertex_of[n.name] = b
            block_members.setdefault(b, []).append(n.name)
    return vertex_of, block_members


class _Reads(NamedTuple):
    """Who reads what once the non-tensor values outside blocks are inlined."""

    inline: set[str]  # the inlined (non-tensor) fx nodes
    inputs: dict[str, tuple[str, ...]]  # tensor nodes each node reads, through inlined ones
    deps: dict[str, tuple[str, ...]]  # inlined nodes each node needs, transitively
    users: dict[str, set[str]]  # the non-inlined readers (or the output node) of each node


def _inline_non_tensors(
    nodes: list[fx.Node], info: dict[str, _FxInfo], vertex_of: dict[str, str], output_fx: fx.Node
) -> _Reads:
    """Non-tensor values outside blocks (x.size(0), the tuple of torch.chunk) are
    not vertices: every vertex that reads one recomputes it from its tensor
    inputs (cheap metadata/view ops), so every cut carries exactly one tensor."""
    inline = {
        n.name
        for n in nodes
        if n.name not in vertex_of and n.op != "placeholder" and not info[n.name].is_tensor
    }
    eff_in: dict[str, tuple[str, ...]] = {}
    deps: dict[str, tuple[str, ...]] = {}
    for n in nodes:  # fx order: inputs first
        ins: dict[str, None] = {}
        need: dict[str, None] = {}
        for a in n.all_input_nodes:
            if info[a.name].const:
                continue
            if a.name in inline:
                ins.update(dict.fromkeys(eff_in[a.name]))
                need.update(dict.fromkeys(deps[a.name]))
                need[a.name] = None
            else:
                ins[a.name] = None
        eff_in[n.name] = tuple(ins)
        deps[n.name] = tuple(need)
    eff_users: dict[str, set[str]] = {n.name: set() for n in nodes}
    for n in [*nodes, output_fx]:
        if n.name in inline:
            continue
        readers = eff_in[n.name] if n is not output_fx else (output_fx.args[0].name,)
        for a in readers:
            eff_users[a].add(n.name)
    return _Reads(inline, eff_in, deps, eff_users)


def _fusion(
    layer_nodes: list[fx.Node],
    reads: _Reads,
    byname: dict[str, fx.Node],
    in_block: dict[str, str],
    block_of: dict[str, str | None],
    modules: dict[str, nn.Module],
) -> dict[str, str]:
    """``{n: v}`` where layer node ``v`` folds onto ``n``: ``v`` is ``n``'s only
    reader, reads nothing else, lies in the same block (fusion never crosses a
    block boundary) and is a cheap size-keeping op (:func:`_is_follower`)."""
    fused_into: dict[str, str] = {}
    for n in layer_nodes:
        if n.op == "placeholder":
            continue
        users = reads.users[n.name]
        if len(users) != 1:
            continue
        v = byname[next(iter(users))]
        if v.op in ("output", "placeholder") or v.name in in_block:
            continue
        if block_of.get(v.name) != block_of.get(n.name):
            continue
        if reads.inputs[v.name] != (n.name,) or not _is_follower(v, modules):
            continue
        fused_into[n.name] = v.name
    return fused_into


def _layer_membership(layer_nodes: list[fx.Node], fused_into: dict[str, str]) -> dict[str, list[str]]:
    """Members of each layer vertex: a chain of fused nodes is one vertex named
    after its last member."""
    head: dict[str, str] = {}  # fx name -> vertex id (last member of its chain)
    for n in reversed(layer_nodes):
        nxt = fused_into.get(n.name)
        head[n.name] = head[nxt] if nxt is not None else n.name
    layer_members: dict[str, list[str]] = {}
    for n in layer_nodes:
        layer_members.setdefault(head[n.name], []).append(n.name)
    return layer_members


def _vertex_outputs(
    layer_members: dict[str, list[str]],
    block_members: dict[str, list[str]],
    vertex_of: dict[str, str],
    byname: dict[str, fx.Node],
) -> dict[str, str]:
    """The fx node whose value is each vertex's output: a layer vertex's id (its
    last member); a block's first member read from outside it (its last member
    when none is)."""
    output_node: dict[str, str] = {vid: vid for vid in layer_members}
    for b, mem in block_members.items():
        exports = [
            m
            for m in mem
            if any(u.op == "output" or vertex_of.get(u.name) != b for u in byname[m].users)
        ]
        output_node[b] = exports[0] if exports else mem[-1]
    return output_node


def _edges(
    label: str,
    own: dict[str, list[str]],
    reads: _Reads,
    vertex_of: dict[str, str],
    output_node: dict[str, str],
) -> dict[tuple[str, str], None]:
    """The edges ``(u, v)`` (v reads u's output), in discovery order; reading
    anything but another vertex's output is a :class:`CaptureError`."""
    edge_set: dict[tuple[str, str], None] = {}
    for vid, mem in own.items():
        for m in mem:
            for a in reads.inputs[m]:
                u = vertex_of[a]
                if u == vid:
                    continue
                if output_node[u] != a:
                    raise CaptureError(
                        f"model {label!r}: vertex {vid!r} reads {a!r} inside vertex "
                        f"{u!r}; expected only its output {output_node[u]!r}"
                    )
                edge_set[(u, vid)] = None
    return edge_set


def _vertex_order(label: str, first: dict[str, int], edges: Iterable[tuple[str, str]]) -> list[str]:
    """The vertices (the keys of ``first``) in a topological order: the DAG core's
    Kahn's algorithm, ties broken by ``first`` (each vertex's first fx position)."""
    try:
        return list(Dag(sorted(first, key=first.__getitem__), edges).topo)
    except InvalidGraphError as exc:
        raise CaptureError(f"model {label!r}: grouping into blocks made a {exc}") from None


def _members_with_inlined(
    own: dict[str, list[str]], reads: _Reads, info: dict[str, _FxInfo]
) -> dict[str, list[str]]:
    """Each vertex's members plus the inlined nodes they need, in fx order."""
    members_of: dict[str, list[str]] = {}
    for vid, mem in own.items():
        extra: dict[str, None] = {}
        for m in mem:
            extra.update(dict.fromkeys(d for d in reads.deps[m] if d not in mem))
        members_of[vid] = sorted([*mem, *extra], key=lambda m: info[m].index)
    return members_of


def _vertex(
    vid: str,
    members: list[str],
    out: _FxInfo,
    byname: dict[str, fx.Node],
    modules: dict[str, nn.Module],
    is_block: bool,
) -> LayerNode:
    """The :class:`LayerNode` of vertex ``vid``; ``out`` describes its output fx node."""
    if is_block:
        mod = modules[vid]
        op, module, target = "block", vid, f"{type(mod).__module__}.{type(mod).__qualname__}"
    else:
        fxn = byname[vid]
        op, module, target = fxn.op, out.module, _target_name(fxn)
    return LayerNode(
        id=vid,
        op=op,
        module=module,
        target=target,
        shape=out.shape,
        dtype=out.dtype,
        bytes=out.bytes,
        members=tuple(members),
    )


_F = torch.nn.functional
# Ops that keep their input's size and cost little next to a conv/linear: they
# are fused onto their only input. Chosen by type, never by measured size, so
# vertex ids do not depend on the input resolution.
_FOLLOWER_MODULES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.Flatten,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
)
_FOLLOWER_FUNCTIONS = {
    _F.relu, _F.relu6, _F.leaky_relu, _F.elu, _F.selu, _F.celu, _F.gelu, _F.silu, _F.mish,
    _F.hardswish, _F.hardsigmoid, _F.hardtanh, _F.sigmoid, _F.tanh, _F.softplus,
    _F.dropout, _F.batch_norm, _F.layer_norm, _F.group_norm, _F.local_response_norm,
    torch.relu, torch.sigmoid, torch.tanh, torch.flatten, torch.clamp, torch.neg,
    torch.add, torch.sub, torch.mul, torch.div,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
}
_FOLLOWER_METHODS = {
    "relu", "sigmoid", "tanh", "clamp", "neg", "flatten", "view", "reshape", "contiguous",
    "add", "sub", "mul", "div",
}


def _is_follower(v: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """May ``v`` be fused onto its only input? Yes for size-keeping, cheap ops
    (normalization, activations, dropout, flatten/view, arithmetic with a
    constant): a cut between them would send as many bytes as a cut after ``v``
    and only move a cheap op. Pooling, convs and linears start a new vertex."""
    if v.op == "call_module":
        return isinstance(modules.get(v.target), _FOLLOWER_MODULES)
    if v.op == "call_function":
        return v.target in _FOLLOWER_FUNCTIONS
    if v.op == "call_method":
        return v.target in _FOLLOWER_METHODS
    return False


def _target_name(n: fx.Node) -> str:
    t = n.target
    if isinstance(t, str):
        return t
    mod = getattr(t, "__module__", None) or ""
    qual = getattr(t, "__qualname__", None) or getattr(t, "__name__", repr(t))
    return f"{mod}.{qual}" if mod else qual
