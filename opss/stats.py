"""Summary statistics of measured latencies: the median and the nearest-rank percentile (pure Python).

One definition for every report (``opss-client``'s summary, ``opss demo``,
``opss experiment``, the benchmarks):

- :func:`percentile` is the *nearest-rank* percentile: of ``n`` samples sorted
  ascending, the ``k``-th smallest with ``k = ceil(q / 100 * n)`` (at least 1),
  i.e. the smallest sample that at least ``q`` % of the samples do not exceed.
  It is always one of the samples (no interpolation), and the rank is
  computed in exact rational arithmetic (``q`` as written, no floating-point
  rounding). This is the formula the three reports used before they shared
  it (``lat[min(n - 1, ceil(0.9 n) - 1)]``), so their figures are unchanged.
- :func:`median` is :func:`statistics.median` (the mean of the two middle
  samples when ``n`` is even).

Both return ``nan`` for no samples, so a table can show a missing cell.
:func:`bootstrap_ci` is the percentile bootstrap confidence interval of a
statistic (the median by default) from a seeded resampling, for benchmark
tables that quote a median with its uncertainty.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterable
from fractions import Fraction

__all__ = ["bootstrap_ci", "median", "p90", "percentile"]


def percentile(samples: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (``0 < q <= 100``) of ``samples``; ``nan`` if empty."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile: expected 0 < q <= 100, got {q!r}")
    xs = sorted(samples)
    if not xs:
        return float("nan")
    rank = math.ceil(Fraction(str(q)) * len(xs) / 100)  # q as written: 99.9 is 999/10
    return xs[max(rank, 1) - 1]


def p90(samples: Iterable[float]) -> float:
    """The nearest-rank 90th percentile (see :func:`percentile`)."""
    return percentile(samples, 90)


def median(samples: Iterable[float]) -> float:
    """The median (:func:`statistics.median`); ``nan`` if empty."""
    xs = list(samples)
    return statistics.median(xs) if xs else float("nan")


def bootstrap_ci(samples: Iterable[float], stat: Callable[[list[float]], float] = statistics.median, *,
                 level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap ``level`` confidence interval ``(low, high)`` of ``stat`` over
    ``samples``: ``stat`` of ``resamples`` seeded resamples with replacement, cut at the
    ``(1 - level) / 2`` tails (nearest rank). ``(nan, nan)`` for no samples; one sample gives
    ``(x, x)``."""
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ci: expected 0 < level < 1, got {level!r}")
    xs = list(samples)
    if not xs:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(xs)
    stats = sorted(stat([xs[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    tail = (1 - level) / 2
    lo = stats[max(0, math.ceil(tail * resamples) - 1)]
    hi = stats[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return lo, hi
