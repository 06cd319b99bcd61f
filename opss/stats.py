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
statistic (default the median), seeded, for benchmark tables that quote a
median with its uncertainty. :func:`paired_ratio` is how every report
compares two interleaved arms: the median of the per-round ratios (the two
ran back to back, so a slow drift of the machine cancels) with its bootstrap
interval; :func:`ratio_text` writes it, marking "n.s." when the interval
contains 1.0 (the difference is not shown to be real).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

__all__ = ["bootstrap_ci", "median", "p90", "paired_ratio", "percentile", "ratio_text"]


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


def bootstrap_ci(
    samples: Iterable[float],
    stat: Callable[[Sequence[float]], float] = median,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap ``confidence`` interval of ``stat(samples)``.

    ``resamples`` resamples with replacement (``random.Random(seed)``), the
    statistic of each, and their nearest-rank ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles. ``(nan, nan)`` for no samples."""
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ci: expected 0 < confidence < 1, got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"bootstrap_ci: expected at least 1 resample, got {resamples!r}")
    xs = list(samples)
    if not xs:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(xs)
    stats = [stat([xs[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples)]
    tail = (1 - confidence) / 2 * 100
    return percentile(stats, tail), percentile(stats, 100 - tail)


def paired_ratio(num: Sequence[float], den: Sequence[float], *, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """``(median, low, high)`` of the per-round ratios ``num[i] / den[i]`` and its bootstrap
    interval; rounds are paired by index (both arms ran in round ``i``)."""
    if len(num) != len(den):
        raise ValueError(f"paired_ratio: expected as many rounds on both sides, got {len(num)} and {len(den)}")
    r = [a / b for a, b in zip(num, den)]
    lo, hi = bootstrap_ci(r, confidence=confidence, seed=seed)
    return median(r), lo, hi


def ratio_text(m: float, lo: float, hi: float, digits: int = 2) -> str:
    """``"1.23 [1.10, 1.31]"``, with `` n.s.`` when the interval contains 1.0."""
    ns = " n.s." if lo <= 1.0 <= hi else ""
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]{ns}"
