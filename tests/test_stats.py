"""The one median and nearest-rank percentile of every latency report."""

import math

import pytest

import random

from opss.stats import bootstrap_ci, median, p90, percentile


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


def test_bootstrap_ci_covers_the_true_median_about_as_often_as_it_claims():
    # Exponential(1) samples: the true median is ln 2. A 90 % interval should
    # hold it in roughly 90 % of independent trials (percentile bootstrap of a
    # median from 25 samples is a little conservative or liberal; 80-99 % holds).
    rng = random.Random(1)
    trials, hits = 100, 0
    for t in range(trials):
        xs = [rng.expovariate(1.0) for _ in range(25)]
        lo, hi = bootstrap_ci(xs, confidence=0.9, resamples=300, seed=t)
        assert lo <= median(xs) <= hi
        hits += lo <= math.log(2) <= hi
    assert 80 <= hits <= 99


def test_bootstrap_ci_degenerate_cases():
    assert bootstrap_ci([2.0] * 5) == (2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([1.0, 5.0, 3.0], stat=max, resamples=50)[1] == 5.0
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], confidence=1.0)
def test_bootstrap_ci_of_the_median_covers_the_true_median() -> None:
    """Oracle: samples from N(10, 1), whose median is 10; a 95 % interval must contain it in
    about 95 % of independent experiments (>= 85 % of 100 here), and narrow as n grows."""
    import random

    from opss.stats import bootstrap_ci

    rng = random.Random(7)
    hits = 0
    for trial in range(100):
        lo, hi = bootstrap_ci([rng.gauss(10, 1) for _ in range(60)], resamples=300, seed=trial)
        hits += lo <= 10 <= hi
    assert hits >= 85, hits
    wide = bootstrap_ci([rng.gauss(10, 1) for _ in range(30)], resamples=500)
    narrow = bootstrap_ci([rng.gauss(10, 1) for _ in range(3000)], resamples=500)
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 3
    assert all(math.isnan(v) for v in bootstrap_ci([]))


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


def _exact_bootstrap(groups, stat):
    """Every equally likely paired resample of the rounds (n**n of them), brute force."""
    import itertools

    n = len(groups[0])
    return sorted(stat(*[[g[i] for i in idx] for g in groups]) for idx in itertools.product(range(n), repeat=n))


def test_paired_ratio_ci_matches_the_exact_bootstrap_distribution():
    from opss.stats import ratio_ci

    po = [1.00, 1.30, 0.90, 1.10, 1.25]
    x = [0.80, 1.00, 0.85, 0.70, 0.95]
    exact = _exact_bootstrap([po, x], lambda a, b: median(a) / median(b))  # 3125 resamples
    ratio, lo, hi = ratio_ci(po, x, resamples=20000, seed=3)
    assert ratio == median(po) / median(x)
    # the Monte Carlo endpoints sit between the exact distribution's 1.5 / 3.5 % and 96.5 / 98.5 % points
    q = lambda f: exact[int(f * len(exact))]  # noqa: E731
    assert q(0.015) <= lo <= q(0.035), (lo, q(0.015), q(0.035))
    assert q(0.965) <= hi <= q(0.985), (hi, q(0.965), q(0.985))


def test_pairing_removes_a_drift_that_hits_both_arms():
    from opss.stats import excludes_one, ratio_ci

    drift = [1.0, 1.4, 0.8, 1.6, 1.1, 0.7, 1.3, 0.9, 1.5, 1.2]
    po = [d * 1.10 for d in drift]  # x is 10 % faster than po in every round
    x = list(drift)
    paired = ratio_ci(po, x)
    apart = ratio_ci(po, x, paired=False)
    assert paired[1] == pytest.approx(1.10) and paired[2] == pytest.approx(1.10)  # every resample: the same ratio
    assert excludes_one(*paired[1:]) and not excludes_one(*apart[1:])


def test_ratio_ci_of_identical_runs_contains_one_and_groups_check_lengths():
    from opss.stats import bootstrap_groups_ci, excludes_one, ratio_ci

    runs = [0.31, 0.29, 0.35, 0.30, 0.33]
    r, lo, hi = ratio_ci(runs, list(reversed(runs)))
    assert r == 1.0 and lo <= 1.0 <= hi and not excludes_one(lo, hi)
    with pytest.raises(ValueError):
        bootstrap_groups_ci([[1.0, 2.0], [1.0]], lambda a, b: 1.0)
    assert all(math.isnan(v) for v in bootstrap_groups_ci([[1.0], []], lambda a, b: 1.0, paired=False))
    # unpaired: each group resampled alone; max/min over singletons is exact
    assert bootstrap_groups_ci([[2.0], [4.0]], lambda a, b: b[0] / a[0], paired=False) == (2.0, 2.0)
