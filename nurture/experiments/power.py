"""Planning an A/B test: sends per arm to detect an effect, the effect a sample can detect,
and the weeks that takes. Cohen's h (arcsine) convention, as statsmodels' NormalIndPower
with proportion_effectsize; docs/experiments.md explains the choice."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

from nurture.experiments.stats import check_alpha, z_quantile

DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
# Bisection halves the bracket each step: 200 steps reach the last bit of any double.
_BISECTIONS = 200


def effect_size(baseline: float, target: float) -> float:
    """Cohen's h of ``target`` over ``baseline``, as proportion_effectsize(target, baseline)."""
    return 2 * math.asin(math.sqrt(target)) - 2 * math.asin(math.sqrt(baseline))


def power_for_h(h: float, per_arm: float, alpha: float = DEFAULT_ALPHA) -> float:
    """Power of the two-sided test for effect ``h`` with ``per_arm`` sends in each arm."""
    crit = z_quantile(check_alpha(alpha) / 2)
    # Two equal arms: the effective sample is n1 n2 / (n1 + n2) = n / 2.
    shift = abs(h) * math.sqrt(per_arm / 2)
    normal = NormalDist()
    # The second term is the tiny chance of significance in the wrong direction; statsmodels
    # counts it as power, and so do we.
    return normal.cdf(shift - crit) + normal.cdf(-crit - shift)


def achieved_power(
    baseline: float, mde: float, per_arm: float, alpha: float = DEFAULT_ALPHA
) -> float:
    """Power to detect ``baseline`` -> ``baseline + mde`` with ``per_arm`` sends per arm."""
    _check_rates(baseline, mde)
    return power_for_h(effect_size(baseline, baseline + mde), per_arm, alpha)


@dataclass(frozen=True)
class Plan:
    """How many sends each arm needs to detect ``mde`` (absolute, e.g. 0.01 = one point)."""

    baseline: float
    mde: float
    alpha: float
    power: float
    effect_size: float  # Cohen's h
    per_arm: int  # rounded up
    exact_per_arm: float  # the root of the power equation, before rounding


def plan(
    baseline: float, mde: float, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER
) -> Plan:
    """Sends per arm for a two-sided test at ``alpha`` to detect ``mde`` with ``power``."""
    _check_rates(baseline, mde)
    _check_power(alpha, power)
    if mde == 0:
        raise ValueError("mde must not be 0: no sample size detects no difference")
    h = effect_size(baseline, baseline + mde)
    # Without the wrong-direction term the root has a closed form; it brackets the true root
    # from above, since that term only adds power.
    high = 2 * ((z_quantile(alpha / 2) + z_quantile(1 - power)) / h) ** 2
    exact = _bisect(lambda n: power_for_h(h, n, alpha) >= power, 0.0, high)
    return Plan(baseline, mde, alpha, power, h, max(1, math.ceil(exact)), exact)


def minimum_detectable_effect(
    baseline: float, per_arm: int, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER
) -> float | None:
    """The smallest rise over ``baseline`` that ``per_arm`` sends per arm detect, or None."""
    # Absolute, like mde in plan(); None when even a 100 % rate would go undetected.
    _check_rates(baseline, 0.0)
    _check_power(alpha, power)
    if per_arm < 1:
        raise ValueError(f"per_arm must be >= 1, got {per_arm}")
    high = (z_quantile(alpha / 2) + z_quantile(1 - power)) / math.sqrt(per_arm / 2)
    h = _bisect(lambda x: power_for_h(x, per_arm, alpha) >= power, 0.0, high)
    angle = math.asin(math.sqrt(baseline)) + h / 2
    if angle > math.pi / 2:
        return None
    return math.sin(angle) ** 2 - baseline


def weeks_needed(per_arm: int, sends_per_week_per_arm: float) -> int:
    """Whole weeks until every arm has ``per_arm`` sends at the given weekly volume."""
    if sends_per_week_per_arm <= 0:
        raise ValueError(f"sends per week must be > 0, got {sends_per_week_per_arm!r}")
    return math.ceil(per_arm / sends_per_week_per_arm)


def _bisect(enough: Callable[[float], bool], low: float, high: float) -> float:
    # The smallest x in [low, high] with enough(x), for a monotone predicate true at high.
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def _check_rates(baseline: float, mde: float) -> None:
    if not 0.0 <= baseline <= 1.0:
        raise ValueError(f"baseline must be a rate between 0 and 1, got {baseline!r}")
    if not 0.0 <= baseline + mde <= 1.0:
        raise ValueError(f"baseline + mde must stay between 0 and 1, got {baseline + mde!r}")


def _check_power(alpha: float, power: float) -> None:
    check_alpha(alpha)
    check_alpha(power, "power")
    if power <= alpha:
        raise ValueError(f"power ({power}) must exceed alpha ({alpha})")
