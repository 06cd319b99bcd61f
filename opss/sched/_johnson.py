"""Algorithm 1 of the paper: Johnson's rule for the two-stage flow shop.

The client's compute unit and its uplink are a two-machine flow shop: a job
(a path, or a vertex) first computes for ``f`` and then uploads for ``g``.
For independent jobs Johnson's rule [Johnson 1954] gives an optimal order.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any


def johnson_key(f: float, g: float) -> tuple[int, float]:
    """Sort key of Johnson's rule (Algorithm 1 lines 1-3; the comparison of Algorithm 4 line 5).

    Communication-heavy jobs (``f < g``, set S1) come first, by ascending
    ``f``; computation-heavy jobs (``f >= g``, set S2) follow, by descending
    ``g``. Smaller key = earlier. Ties are broken by the caller (see
    :func:`johnson_order`).
    """
    return (0, f) if f < g else (1, -g)


def johnson_order(jobs: Iterable[Sequence[Any]]) -> list[Hashable]:
    """Algorithm 1: order independent jobs ``(key, f, g)`` by Johnson's rule; returns the keys.

    Line 1 splits the jobs into S1 = {f < g} and S2 = {f >= g}; line 2 sorts S1
    by ascending ``f``; line 3 sorts S2 by descending ``g``; line 4 returns
    S1 || S2. Ties (equal keys) keep the jobs' input order (a stable sort),
    so the result is deterministic.

    The order is optimal for the makespan of Proposition 1 when the jobs
    have no precedence among them, from any initial state of the two
    machines (the makespan is ``max(t0 + sum g, F0 + max_k (sum_{i<=k} f + sum_{i>=k} g))``
    and only the second term depends on the order).
    """
    items = [(k, float(f), float(g)) for k, f, g in jobs]
    s1 = [it for it in items if it[1] < it[2]]
    s2 = [it for it in items if not it[1] < it[2]]
    s1.sort(key=lambda it: it[1])
    s2.sort(key=lambda it: -it[2])
    return [it[0] for it in s1 + s2]
