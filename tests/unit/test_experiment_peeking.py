"""The reason the sequential method is the default: marketers look at a running test every
few days. Simulated experiments, checked after every batch of sends, show that the
confidence sequence keeps false winners below alpha while a repeated z-test does not."""

from __future__ import annotations

import math

import numpy as np

from nurture.experiments.decision import DecisionRule, decide
from nurture.experiments.sequential import confidence_sequence
from nurture.experiments.stats import Arm, two_proportion_ztest

ALPHA = 0.05
EXPERIMENTS = 2_000
BATCHES = 40  # peeks
BATCH = 50  # sends per arm between peeks: a few days of a drip at ~120 sends a week per arm
TUNING_N = 2 * BATCH * BATCHES  # planned total sends, both arms
# Three standard errors of a rate estimated from EXPERIMENTS runs: a false alarm this test
# raises less than once in 700 runs of a correct implementation.
SLACK = 3 * math.sqrt(ALPHA * (1 - ALPHA) / EXPERIMENTS)


def cumulative_conversions(rates: tuple[float, float], seed: int, experiments: int) -> np.ndarray:
    """Conversions so far in (control, variant), shape (experiments, BATCHES, 2)."""
    rng = np.random.default_rng(seed)
    return rng.binomial(BATCH, rates, size=(experiments, BATCHES, 2)).cumsum(axis=1)


def peeks(conversions: np.ndarray) -> list[tuple[Arm, Arm]]:
    """One experiment's (control, variant) at each peek."""
    return [
        (Arm(int(c), BATCH * (k + 1)), Arm(int(v), BATCH * (k + 1)))
        for k, (c, v) in enumerate(conversions.tolist())
    ]


def test_peeking_keeps_sequential_false_winners_below_alpha_but_not_repeated_z_tests() -> None:
    sequential_wins = naive_wins = 0
    for experiment in cumulative_conversions((0.05, 0.05), seed=20240611, experiments=EXPERIMENTS):
        looks = peeks(experiment)
        sequential_wins += any(
            confidence_sequence(c, v, ALPHA, TUNING_N).significant for c, v in looks
        )
        naive_wins += any(two_proportion_ztest(c, v).p_value < ALPHA for c, v in looks)

    assert sequential_wins / EXPERIMENTS <= ALPHA + SLACK
    assert naive_wins / EXPERIMENTS > 0.1  # stopping at the first p < 0.05: ~0.29 here


def test_default_verdicts_survive_peeking_at_a_low_click_rate() -> None:
    rule = DecisionRule(tuning_n=TUNING_N)
    false_winners = 0
    for experiment in cumulative_conversions((0.02, 0.02), seed=7, experiments=EXPERIMENTS):
        false_winners += any(decide(c, v, rule).winner for c, v in peeks(experiment))

    assert false_winners / EXPERIMENTS <= ALPHA + SLACK


def test_the_confidence_sequence_covers_a_real_difference_at_every_peek() -> None:
    for rates in ((0.05, 0.07), (0.01, 0.02)):
        truth = rates[1] - rates[0]
        misses = 0
        for experiment in cumulative_conversions(rates, seed=99, experiments=1_000):
            intervals = (confidence_sequence(c, v, ALPHA, TUNING_N) for c, v in peeks(experiment))
            misses += any(not cs.low <= truth <= cs.high for cs in intervals)

        assert misses / 1_000 <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 1_000), rates


def test_the_sequential_method_still_finds_a_real_lift() -> None:
    found = 0
    for experiment in cumulative_conversions((0.05, 0.10), seed=3, experiments=500):
        verdicts = [decide(c, v, DecisionRule(tuning_n=TUNING_N)) for c, v in peeks(experiment)]
        winners = {verdict.winner for verdict in verdicts} - {None}
        assert winners <= {"variant"}
        found += bool(winners)

    assert found / 500 > 0.9
