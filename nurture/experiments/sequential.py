"""The always-valid confidence sequence for variant - control: look after every batch of
sends and stop whenever it excludes 0, and the false-winner rate still stays below alpha.

Asymptotic confidence sequence of Waudby-Smith et al. (2023, eq. 9), the normal-mixture
boundary of Howard et al. (2021) on the standardized scale: GrowthBook's sequential-testing
formula, so numbers can be checked against theirs (except for arms at 0 % or 100 %, whose
variance is shrunk: see _binomial_var)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nurture.experiments.stats import Arm, check_alpha

# Total sends (both arms) at which the interval is tightest. GrowthBook's default; the
# guarantee holds for any value, a value near the planned total only narrows the interval.
DEFAULT_TUNING_N = 5_000


def mixture_rho2(alpha: float, tuning_n: float) -> float:
    """The mixture's tuning rho^2 that makes the boundary tightest near ``tuning_n`` sends."""
    check_alpha(alpha)
    if tuning_n <= 0:
        raise ValueError(f"tuning_n must be > 0, got {tuning_n!r}")
    # Howard et al.'s closed-form approximation of the optimum (via Lambert W).
    log_term = -2 * math.log(alpha)
    return (log_term + math.log(log_term + 1)) / tuning_n


def boundary(observations: int, rho2: float, alpha: float) -> float:
    """Half-width of the confidence sequence for unit variance after ``observations``."""
    scaled = observations * rho2 + 1
    return math.sqrt(2 * scaled / (observations**2 * rho2) * math.log(math.sqrt(scaled) / alpha))


@dataclass(frozen=True)
class ConfidenceSequence:
    """An interval for variant - control that holds at every peek at once, with the
    always-valid p-value (below alpha exactly when the interval excludes 0)."""

    difference: float
    low: float
    high: float
    p_value: float
    observations: int  # sends in both arms

    @property
    def significant(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def confidence_sequence(
    control: Arm, variant: Arm, alpha: float = 0.05, tuning_n: float = DEFAULT_TUNING_N
) -> ConfidenceSequence:
    """The always-valid (1 - alpha) interval for variant - control after these sends."""
    rho2 = mixture_rho2(alpha, tuning_n)
    n = control.trials + variant.trials
    if control.trials == 0 or variant.trials == 0:
        return ConfidenceSequence(0.0, -math.inf, math.inf, 1.0, n)
    difference = variant.rate - control.rate
    # Unpooled: the interval must cover the true difference, not only 0 (as GrowthBook).
    se2 = _binomial_var(control) + _binomial_var(variant)
    sigma = math.sqrt(se2 * n)  # per-observation standard deviation
    half = sigma * boundary(n, rho2, alpha)
    return ConfidenceSequence(
        difference, difference - half, difference + half, _p_value(difference, se2, n, rho2), n
    )


def _binomial_var(arm: Arm) -> float:
    rate = arm.rate
    if arm.successes in (0, arm.trials):
        # 0/n or n/n says the variance is 0, and the interval would shrink to a point: with
        # drip click rates of 1-2 % an early peek would then miss the truth ~20 % of the time.
        # Shrink toward 1/2 (Jeffreys' (x + 1/2) / (n + 1)) for such arms only.
        rate = (arm.successes + 0.5) / (arm.trials + 1)
    return rate * (1 - rate) / arm.trials


def _p_value(difference: float, se2: float, n: int, rho2: float) -> float:
    # 1 / (the mixture martingale), Waudby-Smith et al. eq. 155 as GrowthBook writes it.
    scaled = n * rho2 + 1
    log_e = rho2 * n * difference**2 / se2 / (2 * scaled) - 0.5 * math.log(scaled)
    return math.exp(-max(log_e, 0.0))
