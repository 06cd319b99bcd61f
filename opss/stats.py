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
median with its uncertainty. :func:`bootstrap_groups_ci` is the same over
several groups of runs at once (e.g. a ratio of two strategies' medians);
``paired`` resamples *rounds* — the i-th run of every group together — which
is the right resampling for interleaved runs (round-robin arms), because a
slow drift of the machine during a round hits every arm of that round alike.
:func:`ratio_ci` is the ratio of medians with its interval, and
:func:`excludes_one` says whether a ratio's interval decides anything.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

__all__ = ["best_ratio_ci", "bootstrap_ci", "bootstrap_groups_ci", "excludes_one", "median", "p90", "percentile",
           "ratio_ci", "ratio_text"]


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
    _check("bootstrap_ci", confidence, resamples)
    xs = list(samples)
    if not xs:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(xs)
    stats = [stat([xs[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples)]
    return _tails(stats, confidence)


def _check(name: str, confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"{name}: expected 0 < confidence < 1, got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"{name}: expected at least 1 resample, got {resamples!r}")


def _tails(stats: list[float], confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    return percentile(stats, tail), percentile(stats, 100 - tail)


def bootstrap_groups_ci(
    groups: Sequence[Sequence[float]],
    stat: Callable[..., float],
    *,
    paired: bool = True,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of ``stat(*groups)`` over several groups of runs.

    ``paired``: the groups are runs of interleaved arms, ``groups[g][i]`` from
    round ``i``; a resample draws rounds with replacement and takes every
    group's run of each drawn round (all groups must have the same length).
    Otherwise every group is resampled on its own. ``(nan, nan)`` when a group
    is empty."""
    _check("bootstrap_groups_ci", confidence, resamples)
    gs = [list(g) for g in groups]
    if not gs or any(not g for g in gs):
        return float("nan"), float("nan")
    if paired and len({len(g) for g in gs}) != 1:
        raise ValueError(f"bootstrap_groups_ci: paired groups need equal lengths, got {[len(g) for g in gs]}")
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        if paired:
            n = len(gs[0])
            idx = [rng.randrange(n) for _ in range(n)]
            stats.append(stat(*[[g[i] for i in idx] for g in gs]))
        else:
            stats.append(stat(*[[g[rng.randrange(len(g))] for _ in g] for g in gs]))
    return _tails(stats, confidence)


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], **kw) -> tuple[float, float, float]:
    """``median(numerator) / median(denominator)`` and its bootstrap interval: ``(ratio, low, high)``.

    Paired (rounds resampled together) when both have as many runs, else each
    resampled on its own; ``kw`` goes to :func:`bootstrap_groups_ci`."""
    paired = kw.pop("paired", len(numerator) == len(denominator))
    lo, hi = bootstrap_groups_ci([numerator, denominator], _median_ratio, paired=paired, **kw)
    return _median_ratio(numerator, denominator), lo, hi


def _median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    return median(a) / median(b)


def excludes_one(low: float, high: float) -> bool:
    """Whether a ratio's interval ``[low, high]`` lies wholly above or below 1.0 (a real difference)."""
    return low > 1.0 or high < 1.0


def best_ratio_ci(baselines: Sequence[Sequence[float]], arm: Sequence[float], **kw) -> tuple[float, float, float]:
    """``min(median of each baseline) / median(arm)`` (how much faster ``arm`` is than the best
    baseline) and its bootstrap interval, the minimum taken inside every resample;
    paired when every group has as many runs. ``kw`` goes to :func:`bootstrap_groups_ci`."""
    groups = [*baselines, arm]
    paired = kw.pop("paired", len({len(g) for g in groups}) == 1)

    def stat(*xs: Sequence[float]) -> float:
        return min(median(x) for x in xs[:-1]) / median(xs[-1])

    lo, hi = bootstrap_groups_ci(groups, stat, paired=paired, **kw)
    return stat(*groups), lo, hi


def ratio_text(ratio: float, lo: float, hi: float) -> str:
    """``"1.37x [1.25, 1.43]"``, or ``"... n.s."`` when the interval contains 1.0; an interval
    that excludes 1.0 gets the digits it needs never to read ``[0.95, 1.00]``."""
    real = excludes_one(lo, hi)
    digits = 2
    while real and digits < 6 and 1.0 in (round(lo, digits), round(hi, digits)):
        digits += 1
    return f"{ratio:.2f}x [{lo:.{digits}f}, {hi:.{digits}f}]{'' if real else ' n.s.'}"
