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
