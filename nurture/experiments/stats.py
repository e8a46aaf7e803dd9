"""Frequentist statistics for A/B tests of drip content: the two-proportion z-test, the
Newcombe interval of the difference, the sample-ratio-mismatch check and Holm's correction.
Pure and standard library only; docs/experiments.md states every formula and convention."""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import SupportsIndex

# SRM is a data-quality alarm, not a discovery: a strict threshold keeps false alarms rare
# when every experiment is checked at every peek (a common convention for SRM alarms).
SRM_THRESHOLD = 0.001
# log(largest double): where Cephes' erfc gives up and returns 0.
_MAX_LOG = math.log(sys.float_info.max)
# Continued-fraction guards (Numerical Recipes' FPMIN and EPS), at double precision.
_TINY = sys.float_info.min / sys.float_info.epsilon
_EPS = sys.float_info.epsilon
# Both expansions need O(sqrt(a)) terms; this bound is never reached for realistic arm counts.
_MAX_TERMS = 100_000


@dataclass(frozen=True)
class Arm:
    """One arm's outcome: how many of its sends converted (clicked, replied, booked)."""

    successes: int
    trials: int

    def __post_init__(self) -> None:
        successes = _whole("successes", self.successes)
        trials = _whole("trials", self.trials)
        if successes > trials:
            raise ValueError(f"successes ({successes}) cannot exceed trials ({trials})")
        # operator.index accepts numpy integers too; store plain ints.
        object.__setattr__(self, "successes", successes)
        object.__setattr__(self, "trials", trials)

    @property
    def failures(self) -> int:
        return self.trials - self.successes

    @property
    def rate(self) -> float:
        """The observed conversion rate (0.0 for an arm with no sends yet)."""
        return self.successes / self.trials if self.trials else 0.0


def _whole(name: str, value: SupportsIndex) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """``alpha`` as a float, or ValueError when it is not strictly between 0 and 1."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {alpha!r}")
    return float(alpha)


def z_quantile(upper_tail: float) -> float:
    """The standard normal quantile with ``upper_tail`` probability above it."""
    # inv_cdf of the small tail, negated: 1 - tail would round before the quantile is taken.
    return -NormalDist().inv_cdf(upper_tail)


def two_sided_p(z: float) -> float:
    """Two-sided normal p-value of ``z``; erfc keeps tiny p-values exact (no 1 - cdf)."""
    x = abs(z) / math.sqrt(2.0)
    # Below ~1e-310 scipy (Cephes' erfc) returns exactly 0; so do we, to agree with it.
    return 0.0 if x * x > _MAX_LOG else math.erfc(x)


@dataclass(frozen=True)
class ZTest:
    """A pooled two-proportion z-test. ``difference`` is variant - control; ``z`` keeps the
    statsmodels sign for the order [control, variant], so a better variant has z < 0."""

    difference: float
    z: float
    p_value: float
    standard_error: float


def two_proportion_ztest(control: Arm, variant: Arm) -> ZTest:
    """Two-sided z-test with the pooled standard error (statsmodels' proportions_ztest)."""
    if control.trials == 0 or variant.trials == 0:
        return ZTest(0.0, 0.0, 1.0, 0.0)  # an arm without sends carries no evidence
    # Same operations, in the same order, as statsmodels, so results agree to the last bits.
    pooled = (control.successes + variant.successes) / (control.trials + variant.trials)
    var = pooled * (1 - pooled) * (1.0 / control.trials + 1.0 / variant.trials)
    se = math.sqrt(var)
    difference = variant.rate - control.rate
    if se == 0.0:
        # Pooled rate 0 or 1: both arms are identical (0/n or n/n); statsmodels says nan.
        return ZTest(difference, 0.0, 1.0, 0.0)
    z = (control.rate - variant.rate) / se
    return ZTest(difference, z, two_sided_p(z), se)


@dataclass(frozen=True)
class Interval:
    """A closed interval [low, high], e.g. for the difference variant - control."""

    low: float
    high: float

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` (by default: no difference) lies outside the interval."""
        return value < self.low or value > self.high


def wilson_interval(arm: Arm, alpha: float = 0.05) -> Interval:
    """Wilson score interval of one arm's rate (statsmodels' proportion_confint 'wilson')."""
    check_alpha(alpha)
    if arm.trials == 0:
        return Interval(0.0, 1.0)
    n, q = arm.trials, arm.rate
    crit = z_quantile(alpha / 2)
    crit2 = crit**2
    denom = 1 + crit2 / n
    center = (q + crit2 / (2 * n)) / denom
    dist = crit * math.sqrt(q * (1.0 - q) / n + crit2 / (4.0 * n**2)) / denom
    # Clipped like statsmodels: rounding can push a bound a hair outside [0, 1].
    return Interval(min(max(center - dist, 0.0), 1.0), min(max(center + dist, 0.0), 1.0))


def newcombe_interval(control: Arm, variant: Arm, alpha: float = 0.05) -> Interval:
    """Newcombe's hybrid score interval (method 10) for the difference variant - control."""
    if control.trials == 0 or variant.trials == 0:
        return Interval(-1.0, 1.0)  # nothing known about one rate: any difference is possible
    v, c = wilson_interval(variant, alpha), wilson_interval(control, alpha)
    pv, pc = variant.rate, control.rate
    diff = pv - pc
    low = diff - math.sqrt((pv - v.low) ** 2 + (c.high - pc) ** 2)
    high = diff + math.sqrt((pc - c.low) ** 2 + (v.high - pv) ** 2)
    return Interval(low, high)


@dataclass(frozen=True)
class SampleRatio:
    """Pearson's chi-square goodness of fit of the assignment counts to the weights."""

    chi2: float
    df: int
    p_value: float
    mismatch: bool
    expected: tuple[float, ...]


def sample_ratio_check(
    observed: Sequence[int], weights: Sequence[float], threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Whether the sends per arm are too far from the configured split to be chance."""
    counts, shares = _srm_inputs(observed, weights, check_alpha(threshold, "threshold"))
    total = sum(counts)
    expected = tuple(total * share for share in shares)
    if total == 0:
        return SampleRatio(0.0, len(counts) - 1, 1.0, False, expected)
    # An arm with weight 0 must get nothing: any send to it is an infinite discrepancy.
    if any(o > 0 and e == 0.0 for o, e in zip(counts, expected, strict=True)):
        return SampleRatio(math.inf, len(counts) - 1, 0.0, True, expected)
    live = [(o, e) for o, e in zip(counts, expected, strict=True) if e > 0.0]
    chi2 = sum((o - e) ** 2 / e for o, e in live)
    df = len(live) - 1
    p = chi_square_sf(chi2, df) if df >= 1 else 1.0
    return SampleRatio(chi2, df, p, p < threshold, expected)


def _srm_inputs(
    observed: Sequence[int], weights: Sequence[float], threshold: float
) -> tuple[list[int], list[float]]:
    if len(observed) != len(weights):
        raise ValueError(f"{len(observed)} observed counts but {len(weights)} weights")
    if len(observed) < 2:
        raise ValueError("a sample-ratio check needs at least two arms")
    counts = [_whole("observed count", o) for o in observed]
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {list(weights)!r}")
    weight_sum = math.fsum(weights)
    if weight_sum <= 0:
        raise ValueError("at least one weight must be positive")
    return counts, [w / weight_sum for w in weights]


def chi_square_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X chi-square with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if math.isnan(statistic):
        raise ValueError("the statistic is nan")
    return upper_gamma_q(df / 2.0, statistic / 2.0)


def upper_gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (Numerical Recipes' gammq)."""
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    # The series converges fast below a + 1, the continued fraction above (NR 6.2).
    if x < a + 1.0:
        return 1.0 - _lower_series(a, x)
    return _upper_fraction(a, x)


def _log_prefactor(a: float, x: float) -> float:
    return -x + a * math.log(x) - math.lgamma(a)


def _lower_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    ap = a
    for _ in range(_MAX_TERMS):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(_log_prefactor(a, x))


def _upper_fraction(a: float, x: float) -> float:
    # Modified Lentz evaluation of the continued fraction for Q(a, x).
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(_log_prefactor(a, x)) * h


@dataclass(frozen=True)
class Holm:
    """Holm step-down adjusted p-values (input order) and which hypotheses are rejected."""

    adjusted: tuple[float, ...]
    rejected: tuple[bool, ...]


def holm(p_values: Sequence[float], alpha: float = 0.05) -> Holm:
    """Holm's step-down correction (statsmodels' multipletests(method='holm'))."""
    check_alpha(alpha)
    if any(not 0.0 <= p <= 1.0 for p in p_values):
        raise ValueError(f"p-values must be between 0 and 1, got {list(p_values)!r}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    rejected = [False] * m
    running_max, still_rejecting = 0.0, True
    for rank, index in enumerate(order):
        p = p_values[index]
        # Step down: once one hypothesis stands, every larger p-value stands too.
        still_rejecting = still_rejecting and p <= alpha / (m - rank)
        running_max = max(running_max, p * (m - rank))  # monotone in the sorted order
        adjusted[index] = min(running_max, 1.0)
        rejected[index] = still_rejecting
    return Holm(tuple(adjusted), tuple(rejected))
