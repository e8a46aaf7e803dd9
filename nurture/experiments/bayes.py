"""Bayesian views of an A/B test: the probability that a variant beats control, and the
Thompson-sampling allocation for ``allocation: bandit``. Beta(1, 1) priors throughout."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from nurture.experiments.stats import Arm

# Beta(1, 1): uniform, so the posterior is Beta(1 + successes, 1 + failures).
PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0
# The exact sum has one term per unit of its smallest posterior parameter; past this many
# terms (a few milliseconds) the posteriors are so close to normal that the skew-corrected
# normal approximation is within about 1e-5 of the exact value.
EXACT_TERMS_LIMIT = 10_000
# Monte-Carlo draws for Thompson sampling: shares within about +-0.005 of their limit.
THOMPSON_DRAWS = 10_000
# Every arm keeps this share of sends so that no arm starves and each keeps being measured.
THOMPSON_FLOOR = 0.05


def _posterior(arm: Arm) -> tuple[float, float]:
    return PRIOR_ALPHA + arm.successes, PRIOR_BETA + arm.failures


def probability_to_beat(control: Arm, variant: Arm) -> float:
    """P(variant's true rate > control's) under Beta(1, 1) priors."""
    ac, bc = _posterior(control)
    av, bv = _posterior(variant)
    smallest = min(ac, bc, av, bv)
    if smallest > EXACT_TERMS_LIMIT:
        return _normal_approximation(ac, bc, av, bv)
    # P(Y > X) = 1 - P(X > Y), and p -> 1 - p swaps each Beta's parameters: four ways to
    # write the same probability; sum over whichever parameter is smallest.
    if smallest == av:
        p = _miller(ac, bc, av, bv)
    elif smallest == ac:
        p = 1.0 - _miller(av, bv, ac, bc)
    elif smallest == bc:
        p = _miller(bv, av, bc, ac)
    else:
        p = 1.0 - _miller(bc, ac, bv, av)
    return min(max(p, 0.0), 1.0)


def probabilities_to_beat_control(control: Arm, variants: Sequence[Arm]) -> tuple[float, ...]:
    """Each variant's probability to beat control, in the order given."""
    return tuple(probability_to_beat(control, variant) for variant in variants)


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _miller(ax: float, bx: float, ay: float, by: float) -> float:
    # Evan Miller's closed form of P(Y > X), X ~ Beta(ax, bx), Y ~ Beta(ay, by), integer ay:
    #   sum_{i=0}^{ay-1} B(ax+i, bx+by) / ((by+i) B(1+i, by) B(ax, bx))
    # Consecutive terms differ by (ax+i)(by+i) / ((ax+bx+by+i)(1+i)), so only the first needs
    # log-gamma; walking in logs keeps terms that start below the smallest double.
    log_term = _lbeta(ax, bx + by) - _lbeta(ax, bx)
    total = 0.0
    for i in range(int(ay)):
        total += math.exp(log_term)
        log_term += math.log((ax + i) * (by + i) / ((ax + bx + by + i) * (1 + i)))
    return total


def _normal_approximation(ac: float, bc: float, av: float, bv: float) -> float:
    mean_c, var_c, k3_c = _beta_moments(ac, bc)
    mean_v, var_v, k3_v = _beta_moments(av, bv)
    sd = math.sqrt(var_c + var_v)
    z = (mean_c - mean_v) / sd  # where 0 falls on the standardized difference variant - control
    skew = (k3_v - k3_c) / sd**3
    # One Edgeworth term: without it the posteriors' skew costs up to ~1e-3 at the limit.
    density = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    p = 0.5 * math.erfc(z / math.sqrt(2)) + density * skew / 6 * (z * z - 1)
    return min(max(p, 0.0), 1.0)


def _beta_moments(a: float, b: float) -> tuple[float, float, float]:
    # Mean, variance and third central moment of Beta(a, b).
    total = a + b
    mean = a / total
    var = a * b / (total**2 * (total + 1))
    third = 2 * a * b * (b - a) / (total**3 * (total + 1) * (total + 2))
    return mean, var, third


@dataclass(frozen=True)
class Allocation:
    """Thompson-sampling traffic weights (sum to 1) and each arm's raw share of wins."""

    weights: tuple[float, ...]
    win_share: tuple[float, ...]


def thompson_allocation(
    arms: Sequence[Arm],
    rng: random.Random,
    draws: int = THOMPSON_DRAWS,
    floor: float = THOMPSON_FLOOR,
) -> Allocation:
    """Traffic weights for the next period, deterministic for a seeded ``rng``."""
    # Each arm's share of the posterior draws it wins, mixed with a floor so none starves.
    if len(arms) < 2:
        raise ValueError("a bandit needs at least two arms")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not 0.0 <= floor <= 1.0 / len(arms):
        raise ValueError(f"floor must be between 0 and 1/{len(arms)}, got {floor!r}")
    posteriors = [_posterior(arm) for arm in arms]
    wins = [0] * len(arms)
    for _ in range(draws):
        samples = [rng.betavariate(a, b) for a, b in posteriors]
        wins[samples.index(max(samples))] += 1
    share = tuple(w / draws for w in wins)
    explore = floor * len(arms)
    weights = tuple(floor + (1.0 - explore) * s for s in share)
    return Allocation(weights, share)
