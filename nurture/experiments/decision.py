"""Judge an A/B test: given each arm's sends and conversions and the experiment's rule, decide
whether a winner can be declared. Pure, like the sequence engine's decide(): counts in, a
frozen Verdict out; the caller stores it and stops the experiment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nurture.experiments.bayes import probability_to_beat
from nurture.experiments.sequential import DEFAULT_TUNING_N, confidence_sequence
from nurture.experiments.stats import (
    Arm,
    check_alpha,
    holm,
    newcombe_interval,
    two_proportion_ztest,
)

Method = Literal["sequential", "fixed_horizon", "bayesian"]
Winner = Literal["variant", "control"]
METHODS: tuple[Method, ...] = ("sequential", "fixed_horizon", "bayesian")
# Before every arm has this many sends the observed variance (sequential) and the posterior
# (bayesian) rest on a handful of conversions; no verdict until then.
DEFAULT_MIN_PER_ARM = 100
# "Variant wins" when its probability to beat control reaches this (bayesian method).
DEFAULT_THRESHOLD = 0.95


@dataclass(frozen=True)
class DecisionRule:
    """How an experiment is judged. For fixed_horizon, ``min_per_arm`` is the planned
    sample per arm (plan().per_arm) and the verdict is only valid read once, there."""

    method: Method = "sequential"
    alpha: float = 0.05
    min_per_arm: int = DEFAULT_MIN_PER_ARM
    tuning_n: float = DEFAULT_TUNING_N  # sequential: planned total sends, both arms
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        check_alpha(self.alpha)
        check_alpha(self.threshold, "threshold")
        if self.min_per_arm < 0:
            raise ValueError(f"min_per_arm must be >= 0, got {self.min_per_arm}")
        if not self.tuning_n > 0:
            raise ValueError(f"tuning_n must be > 0, got {self.tuning_n!r}")
        if self.method == "fixed_horizon" and self.min_per_arm < 1:
            raise ValueError("fixed_horizon needs min_per_arm: the planned sends per arm")


@dataclass(frozen=True)
class Verdict:
    """One variant against control. ``winner`` is None while nothing can be declared.
    ``low``/``high`` bound variant - control: the confidence sequence (sequential) or the
    Newcombe interval (fixed_horizon, bayesian)."""

    method: Method
    winner: Winner | None
    reason: str
    difference: float
    low: float
    high: float
    # The z-test's (Holm-adjusted) or the always-valid one (Bonferroni); None for bayesian.
    p_value: float | None = None
    probability: float | None = None  # bayesian: P(variant beats control)


def decide(control: Arm, variant: Arm, rule: DecisionRule) -> Verdict:
    """Whether ``variant`` has beaten (or lost to) ``control`` under ``rule``."""
    return decide_arms(control, [variant], rule)[0]


def decide_arms(control: Arm, variants: Sequence[Arm], rule: DecisionRule) -> tuple[Verdict, ...]:
    """A verdict for each variant against control (frequentist methods: multiplicity-corrected)."""
    if not variants:
        raise ValueError("an experiment needs at least one variant besides control")
    if rule.method == "sequential":
        return tuple(_sequential(control, v, rule, len(variants)) for v in variants)
    if rule.method == "bayesian":
        return tuple(_bayesian(control, v, rule) for v in variants)
    return _fixed_horizon(control, variants, rule)


def _collecting(control: Arm, variant: Arm, rule: DecisionRule) -> str:
    fewest = min(control.trials, variant.trials)
    if fewest >= rule.min_per_arm:
        return ""
    return f"collecting: {fewest:,} of {rule.min_per_arm:,} sends per arm"


def _sequential(control: Arm, variant: Arm, rule: DecisionRule, arms: int) -> Verdict:
    # Bonferroni over variants: all intervals hold at every peek with probability 1 - alpha.
    alpha = rule.alpha / arms
    cs = confidence_sequence(control, variant, alpha, rule.tuning_n)
    p = min(1.0, cs.p_value * arms)
    waiting = _collecting(control, variant, rule)
    winner = None if waiting or not cs.significant else _by_sign(cs.difference)
    level = f"the {1 - alpha:.1%} confidence sequence"
    reason = waiting or _reason(winner, f"{level} excludes 0", f"{level} still includes 0")
    return Verdict("sequential", winner, reason, cs.difference, cs.low, cs.high, p)


def _bayesian(control: Arm, variant: Arm, rule: DecisionRule) -> Verdict:
    probability = probability_to_beat(control, variant)
    interval = newcombe_interval(control, variant, rule.alpha)
    waiting = _collecting(control, variant, rule)
    winner: Winner | None = None
    if not waiting and probability >= rule.threshold:
        winner = "variant"
    elif not waiting and probability <= 1 - rule.threshold:
        winner = "control"
    evidence = f"P(variant beats control) = {probability:.3f}"
    reason = waiting or _reason(winner, evidence, evidence)
    diff = two_proportion_ztest(control, variant).difference
    return Verdict("bayesian", winner, reason, diff, interval.low, interval.high, None, probability)


def _fixed_horizon(
    control: Arm, variants: Sequence[Arm], rule: DecisionRule
) -> tuple[Verdict, ...]:
    tests = [two_proportion_ztest(control, v) for v in variants]
    # Holm over the variants: the family-wise error stays at alpha whatever their number.
    corrected = holm([t.p_value for t in tests], rule.alpha)
    columns = zip(variants, tests, corrected.adjusted, corrected.rejected, strict=True)
    return tuple(_fixed_verdict(control, v, t.difference, p, r, rule) for v, t, p, r in columns)


def _fixed_verdict(
    control: Arm, variant: Arm, diff: float, p: float, rejected: bool, rule: DecisionRule
) -> Verdict:
    interval = newcombe_interval(control, variant, rule.alpha)
    waiting = _collecting(control, variant, rule)
    winner = None if waiting or not rejected else _by_sign(diff)
    evidence = f"p = {p:.4g} at the planned sample"
    reason = waiting or _reason(winner, evidence, evidence)
    return Verdict("fixed_horizon", winner, reason, diff, interval.low, interval.high, p)


def _by_sign(difference: float) -> Winner | None:
    if difference == 0.0:
        return None
    return "variant" if difference > 0 else "control"


def _reason(winner: Winner | None, won: str, undecided: str) -> str:
    return f"{winner} wins: {won}" if winner else f"no winner yet: {undecided}"
