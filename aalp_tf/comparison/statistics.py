"""Seed-to-seed statistics of a comparison: pure functions of lists of numbers.

With a handful of seeds per method, the spread between seeds is estimated from those few runs,
so intervals use Student's t with n - 1 degrees of freedom rather than the normal 1.96: under
the usual assumption that a method's accuracy varies across seeds like a normal variable, the
interval mean ± t_{0.975, n-1} · SD / √n covers the method's mean over seeds 95% of the time.
Methods trained with the same seed share the data order and the initial weights, so
`paired` compares them seed by seed: the difference removes what a seed does to every method
alike, and its interval is usually much narrower than the two separate ones suggest.
"""
import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
POWER = 0.8  # the usual design target: a real difference of that size is found 4 times in 5


@dataclasses.dataclass(frozen=True)
class Summary:
    """n values: their mean, sample standard deviation and a t-interval for the mean.

    Attributes:
      n: how many values.
      mean: their mean.
      sd: the standard deviation with n - 1 in the denominator (None when n < 2).
      low, high: the 95% t-interval for the mean (None when n < 2: one seed says nothing about
        the spread).
    """

    n: int
    mean: float
    sd: Optional[float]
    low: Optional[float]
    high: Optional[float]

    @property
    def excludes_zero(self) -> Optional[bool]:
        """Whether the interval lies wholly above or wholly below 0 (None: no interval)."""
        if self.low is None:
            return None
        return self.low > 0 or self.high < 0


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """t_{(1 + confidence) / 2, n - 1}: the two-sided critical value for n values."""
    return float(stats.t.ppf((1 + confidence) / 2, n - 1))


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, SD (n - 1) and the t-interval of `values` (at least one value)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = float(np.mean(values))
    if n < 2:
        return Summary(n=n, mean=mean, sd=None, low=None, high=None)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(values))
    return Summary(n=n, mean=mean, sd=float(np.std(values, ddof=1)), low=float(low),
                   high=float(high))


def paired_differences(values: Dict[int, float], baseline: Dict[int, float]) -> List[float]:
    """values[seed] - baseline[seed] for every seed both have, in seed order."""
    return [values[seed] - baseline[seed] for seed in sorted(set(values) & set(baseline))]


def paired(values: Dict[int, float], baseline: Dict[int, float],
           confidence: float = CONFIDENCE) -> Optional[Summary]:
    """The paired difference against the baseline (None when no seed is shared)."""
    diffs = paired_differences(values, baseline)
    return summarize(diffs, confidence) if diffs else None


def detectable_difference(sd: float, n: int, *, power: float = POWER,
                          confidence: float = CONFIDENCE) -> Optional[float]:
    """The smallest true mean difference that a paired two-sided t-test on n differences with
    standard deviation `sd` detects (its interval excludes 0) with probability `power`.

    Exact under normal differences: the t statistic then follows a noncentral t with n - 1
    degrees of freedom and noncentrality delta·√n / sd, and the power is the chance that |t|
    exceeds t_{(1 + confidence) / 2, n - 1}. None when n < 2 or sd is 0 (nothing to estimate).
    """
    if n < 2 or not sd:
        return None
    critical = t_quantile(n, confidence)

    def shortfall(delta):
        nc = delta * np.sqrt(n) / sd
        wrong_side = stats.nct.cdf(-critical, n - 1, nc)  # NaN where it underflows
        return stats.nct.sf(critical, n - 1, nc) + np.nan_to_num(wrong_side) - power

    # Power rises with delta; at a noncentrality of critical + 10 it is 1 to many digits.
    return float(optimize.brentq(shortfall, 0.0, (critical + 10.0) * sd / np.sqrt(n)))
