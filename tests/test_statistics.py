"""comparison/statistics.py: the seed-to-seed statistics, checked against values by hand."""
import math

import numpy as np
import pytest
from scipy import stats

from aalp_tf.comparison import report, statistics

T_2_DOF = 4.302653  # t_{0.975, 2}, the tables' value for n = 3


def test_mean_sd_and_t_interval_of_three_seeds():
    s = statistics.summarize([90.0, 92.0, 97.0])
    # mean 93; SD = sqrt((9 + 1 + 16) / 2) = sqrt(13); half width = t * SD / sqrt(3)
    half = T_2_DOF * math.sqrt(13) / math.sqrt(3)
    assert s.n == 3 and s.mean == pytest.approx(93.0)
    assert s.sd == pytest.approx(3.605551, abs=1e-6)
    assert statistics.t_quantile(3) == pytest.approx(T_2_DOF, abs=1e-6)
    assert (s.low, s.high) == (pytest.approx(93 - half, abs=1e-5), pytest.approx(93 + half, abs=1e-5))
    assert (s.low, s.high) == (pytest.approx(84.04331, abs=1e-5), pytest.approx(101.95669, abs=1e-5))


def test_one_seed_has_no_spread_and_no_interval():
    s = statistics.summarize([95.2])
    assert (s.n, s.mean, s.sd, s.low, s.high, s.excludes_zero) == (1, 95.2, None, None, None, None)
    with pytest.raises(ValueError):
        statistics.summarize([])


def test_paired_differences_use_shared_seeds_only():
    method = {0: 93.0, 1: 95.0, 2: 96.0}
    baseline = {0: 91.0, 1: 92.0, 2: 95.0, 3: 99.0}  # seed 3 has no partner
    assert statistics.paired_differences(method, baseline) == [2.0, 3.0, 1.0]
    s = statistics.paired(method, baseline)
    # mean 2, SD 1, half width t / sqrt(3) = 2.484138: [-0.484138, 4.484138] holds 0
    assert (s.n, s.mean, s.sd) == (3, pytest.approx(2.0), pytest.approx(1.0))
    assert (s.low, s.high) == (pytest.approx(-0.484138, abs=1e-6), pytest.approx(4.484138, abs=1e-6))
    assert s.excludes_zero is False
    assert statistics.paired({5: 1.0}, baseline) is None


@pytest.mark.parametrize("diffs,low,high,verdict", [
    ([2.0, 2.5, 3.0], 1.257931, 3.742069, "yes, above 0"),  # mean 2.5, SD 0.5, half 1.242069
    ([-2.0, -2.5, -3.0], -3.742069, -1.257931, "yes, below 0"),
    ([-1.0, 0.0, 1.0], -2.484138, 2.484138, "no"),
])
def test_excludes_zero_both_ways(diffs, low, high, verdict):
    s = statistics.paired({i: d for i, d in enumerate(diffs)}, {i: 0.0 for i in range(3)})
    assert (s.low, s.high) == (pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6))
    assert s.excludes_zero is (verdict != "no")
    assert report.verdict(s) == verdict


def test_detectable_difference_meets_its_power_by_simulation():
    """At the returned difference, paired t-tests on simulated normal differences exclude 0
    about 80% of the time; at half of it, far less often."""
    n, sd = 8, 0.9
    delta = statistics.detectable_difference(sd, n)
    rng = np.random.default_rng(0)
    critical = statistics.t_quantile(n)

    def rejection_rate(true_difference):
        d = rng.normal(true_difference, sd, size=(20000, n))
        t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
        return np.mean(np.abs(t) > critical)

    assert rejection_rate(delta) == pytest.approx(0.80, abs=0.015)
    assert rejection_rate(delta / 2) < 0.40


def test_detectable_difference_tends_to_the_normal_formula_and_needs_a_spread():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert statistics.detectable_difference(1.0, 2000) == pytest.approx(z / np.sqrt(2000),
                                                                         rel=2e-3)
    assert statistics.detectable_difference(1.0, 1) is None
    assert statistics.detectable_difference(0.0, 8) is None
