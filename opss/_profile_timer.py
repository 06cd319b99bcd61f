"""The torch half of :func:`opss.profile.measure_profile`: one timed run of the
captured graph, node by node, and one of the eager model.

Kept apart so that importing :mod:`opss.profile` (loading a stored table)
needs only the standard library; ``measure_profile`` imports this module
when it measures.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.fx as fx

__all__ = ["VertexTimer", "time_forward", "time_graph"]


def _sync(device: torch.device) -> None:
    """Wait for the device's queued kernels (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class VertexTimer(fx.Interpreter):
    """Runs a graph module once and times every node but the placeholders and
    the output. ``method="interpreter"``: ``time.perf_counter()`` around the
    node (synchronized before and after on a GPU, so asynchronous kernels are
    charged to the node that launched them), the seconds in :attr:`times`;
    ``"profiler"``: the node runs inside a ``torch.profiler.record_function``
    range named ``opss::<node>`` for a surrounding profiler to time."""

    def __init__(self, module: fx.GraphModule, method: str, device: torch.device) -> None:
        super().__init__(module)
        self.method = method
        self.device = device
        self.times: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("placeholder", "output"):
            return super().run_node(n)
        if self.method == "profiler":
            with torch.profiler.record_function(f"opss::{n.name}"):
                return super().run_node(n)
        _sync(self.device)
        t0 = time.perf_counter()
        out = super().run_node(n)
        _sync(self.device)
        self.times[n.name] = time.perf_counter() - t0
        return out


def time_graph(gm: fx.GraphModule, x: torch.Tensor, method: str, device: torch.device) -> dict[str, float]:
    """One run of ``gm`` on ``x``: seconds per timed fx node, in run order (with
    ``"profiler"``: each ``opss::`` range's CPU time, plus its device time on a GPU)."""
    interp = VertexTimer(gm, method, device)
    if method == "interpreter":
        with torch.no_grad():
            interp.run(x)
        return interp.times
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof, torch.no_grad():
        interp.run(x)
    times: dict[str, float] = {}
    for ev in prof.events():
        if ev.name.startswith("opss::"):
            us = ev.cpu_time_total + (getattr(ev, "device_time_total", 0) if cuda else 0)
            times[ev.name[6:]] = times.get(ev.name[6:], 0.0) + us * 1e-6
    return times


def time_forward(net: torch.nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Seconds of one eager forward of ``net`` on ``x`` (synchronized on a GPU)."""
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        net(x)
        _sync(device)
        return time.perf_counter() - t0
