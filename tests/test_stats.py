"""The one median and nearest-rank percentile of every latency report."""

import math

import pytest

from opss.stats import median, p90, percentile


@pytest.mark.parametrize("n", range(1, 41))
def test_p90_is_the_nearest_rank(n):
    xs = [float(v) for v in reversed(range(n))]  # unsorted on purpose
    k = math.ceil(9 * n / 10)  # the smallest sample that at least 90 % do not exceed
    assert p90(xs) == sorted(xs)[k - 1]
    assert sum(x <= p90(xs) for x in xs) >= 0.9 * n
    assert sum(x < p90(xs) for x in xs) < 0.9 * n


def test_percentile_bounds_median_and_empty():
    xs = [0.3, 0.1, 0.2, 0.4]
    assert percentile(xs, 100) == 0.4 and percentile(xs, 1) == 0.1 and percentile(xs, 50) == 0.2
    assert median(xs) == pytest.approx(0.25)
    assert math.isnan(median([])) and math.isnan(p90([]))
    with pytest.raises(ValueError):
        percentile(xs, 0)


def test_bootstrap_ci_brackets_the_median_and_narrows_with_more_samples():
    import random
    import statistics

    from opss.stats import bootstrap_ci

    rng = random.Random(3)
    few = [rng.gauss(10, 1) for _ in range(11)]
    many = few + [rng.gauss(10, 1) for _ in range(390)]
    lo, hi = bootstrap_ci(few)
    assert lo <= statistics.median(few) <= hi and lo < hi
    lo2, hi2 = bootstrap_ci(many)
    assert lo2 <= statistics.median(many) <= hi2
    assert hi2 - lo2 < hi - lo  # 40x the samples: a narrower interval
    # the true median (10) lies inside the 95 % interval of 400 samples
    assert lo2 < 10 < hi2
    # every resampled median is one of the samples (odd n), so the bounds are samples too
    assert lo in few and hi in few
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    assert all(x != x for x in bootstrap_ci([]))
    assert bootstrap_ci(few, seed=5) == bootstrap_ci(list(few), seed=5)  # seeded: reproducible
