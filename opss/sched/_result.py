"""The result type every scheduling method returns."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opss.sched._bounds import lower_bound
from opss.sched._graph import SchedGraph
from opss.sched._makespan import makespan

METHODS = ("exact", "tree", "pathwise", "topo", "beam", "auto")

# Relative tolerance when comparing a makespan with the lower bound: both are
# sums of the same floats in different orders.
_REL_TOL = 1e-9


def meets_bound(value: float, bound: float) -> bool:
    """True when ``value`` equals ``bound`` up to float rounding (so it is optimal)."""
    return value <= bound + _REL_TOL * max(1.0, abs(bound))


@dataclass(frozen=True)
class ScheduleResult:
    """A client order and what is known about it.

    ``makespan`` is always recomputed with :func:`opss.sched.makespan`
    (Proposition 1). ``optimal`` is True only when proven: the exact solver
    finished, or the makespan meets ``lower_bound``. ``seconds`` is the wall
    time of the whole call (order, makespan and lower bound).
    """

    method: str
    order: tuple[str, ...]
    makespan: float
    optimal: bool
    lower_bound: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "order": list(self.order),
            "makespan": self.makespan,
            "optimal": self.optimal,
            "lower_bound": self.lower_bound,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleResult:
        return cls(
            method=str(data["method"]),
            order=tuple(data["order"]),
            makespan=float(data["makespan"]),
            optimal=bool(data["optimal"]),
            lower_bound=float(data["lower_bound"]),
            seconds=float(data["seconds"]),
        )

    def __repr__(self) -> str:
        shown = " ".join(self.order[:12]) + (" ..." if len(self.order) > 12 else "")
        return (
            f"ScheduleResult({self.method}: makespan={self.makespan:.6g}"
            f"{' (optimal)' if self.optimal else ''}, lower_bound={self.lower_bound:.6g}, "
            f"order=[{shown}], {self.seconds * 1e3:.3g} ms)"
        )


def finish(
    graph: SchedGraph,
    method: str,
    order: tuple[str, ...] | list[str],
    started: float,
    proven: bool = False,
    bound: float | None = None,
) -> ScheduleResult:
    """Build a result: recompute the makespan, attach the lower bound, decide ``optimal``."""
    value = makespan(graph, order)
    lb = lower_bound(graph) if bound is None else bound
    optimal = bool(proven or meets_bound(value, lb))
    if optimal:
        # Same sums in another order: clip float noise so lower_bound <= makespan.
        lb = min(lb, value)
    return ScheduleResult(
        method=method,
        order=tuple(order),
        makespan=value,
        optimal=optimal,
        lower_bound=lb,
        seconds=time.perf_counter() - started,
    )
