"""The A/B-test statistics against statsmodels and scipy, on hundreds of seeded cases each
(edge counts 0 and n, tiny and million-send arms), plus the verdicts built on them."""

from __future__ import annotations

import gc
import itertools
import math
import random
import time
import warnings
from collections.abc import Iterator

import pytest
from scipy import integrate, special, stats
from statsmodels.stats import multitest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)

from nurture.experiments.bayes import (
    EXACT_TERMS_LIMIT,
    probabilities_to_beat_control,
    probability_to_beat,
    thompson_allocation,
)
from nurture.experiments.decision import DecisionRule, decide, decide_arms
from nurture.experiments.power import (
    achieved_power,
    minimum_detectable_effect,
    plan,
    power_for_h,
    weeks_needed,
)
from nurture.experiments.sequential import boundary, confidence_sequence, mixture_rho2
from nurture.experiments.stats import (
    Arm,
    chi_square_sf,
    holm,
    newcombe_interval,
    sample_ratio_check,
    two_proportion_ztest,
)

TRIALS = (1, 2, 3, 7, 20, 83, 99, 500, 4_000, 100_000, 1_000_000)


def arm_pairs(count: int, seed: int, trials: tuple[int, ...] = TRIALS) -> Iterator[tuple[Arm, Arm]]:
    """Seeded (control, variant) pairs, with the edges 0, 1, n - 1 and n often."""
    rng = random.Random(seed)
    for _ in range(count):
        yield random_arm(rng, trials), random_arm(rng, trials)


def random_arm(rng: random.Random, trials: tuple[int, ...]) -> Arm:
    n = rng.choice([*trials, rng.randint(1, 10_000)])
    successes = rng.choice([0, 1, n - 1, n, rng.randint(0, n), round(n * rng.uniform(0, 0.1))])
    return Arm(min(max(successes, 0), n), n)


def rel_close(ours: float, oracle: float, rel: float) -> bool:
    return math.isclose(ours, oracle, rel_tol=rel, abs_tol=0.0)


# -- the z-test -------------------------------------------------------------------------------


def test_ztest_known_answer_5_of_83_against_12_of_99() -> None:
    result = two_proportion_ztest(Arm(5, 83), Arm(12, 99))

    assert result.z == -1.4078304151258787  # statsmodels' sign: control - variant
    assert result.p_value == pytest.approx(0.15918129181156992, rel=1e-14)
    assert result.difference == pytest.approx(12 / 99 - 5 / 83, rel=1e-15)


def test_ztest_matches_statsmodels_on_many_cases() -> None:
    checked = 0
    for control, variant in arm_pairs(800, seed=11):
        ours = two_proportion_ztest(control, variant)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # statsmodels' 0/0
            z, p = proportions_ztest(
                [control.successes, variant.successes], [control.trials, variant.trials]
            )
        if math.isnan(z):  # pooled rate 0 or 1: both arms identical
            assert (ours.z, ours.p_value) == (0.0, 1.0)
            continue
        checked += 1
        assert rel_close(ours.z, float(z), 1e-9), (control, variant, ours, z)
        assert rel_close(ours.p_value, float(p), 1e-9), (control, variant, ours, p)
        assert ours.difference == pytest.approx(variant.rate - control.rate, abs=1e-15)
    assert checked > 600


@pytest.mark.parametrize(
    ("control", "variant"),
    [(Arm(0, 0), Arm(3, 10)), (Arm(0, 50), Arm(0, 70)), (Arm(50, 50), Arm(9, 9))],
)
def test_ztest_without_evidence_is_z_0_p_1(control: Arm, variant: Arm) -> None:
    result = two_proportion_ztest(control, variant)

    assert (result.z, result.p_value) == (0.0, 1.0)


def test_ztest_all_against_nothing_is_finite_and_significant() -> None:
    result = two_proportion_ztest(Arm(0, 40), Arm(40, 40))

    assert math.isfinite(result.z) and result.z < 0
    assert result.p_value < 1e-15


@pytest.mark.parametrize(
    ("successes", "trials", "message"),
    [
        (12, 10, "cannot exceed trials"),
        (-1, 10, "successes must be >= 0"),
        (1, -3, "trials must be >= 0"),
        (1.5, 3, "whole number"),
    ],
)
def test_invalid_counts_are_refused_with_a_clear_message(
    successes: int, trials: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Arm(successes, trials)


# -- the Newcombe interval --------------------------------------------------------------------


def test_newcombe_matches_statsmodels_on_many_cases() -> None:
    for alpha in (0.05, 0.01, 0.2):
        for control, variant in arm_pairs(300, seed=int(alpha * 1000)):
            ours = newcombe_interval(control, variant, alpha)
            # statsmodels' diff is count1/nobs1 - count2/nobs2: the variant goes first.
            low, high = confint_proportions_2indep(
                variant.successes,
                variant.trials,
                control.successes,
                control.trials,
                method="newcomb",
                compare="diff",
                alpha=alpha,
            )
            assert ours.low == pytest.approx(low, abs=1e-9), (control, variant, alpha)
            assert ours.high == pytest.approx(high, abs=1e-9), (control, variant, alpha)


def test_newcombe_with_an_empty_arm_allows_any_difference() -> None:
    interval = newcombe_interval(Arm(0, 0), Arm(4, 30))

    assert (interval.low, interval.high) == (-1.0, 1.0)
    assert not interval.excludes(0.0)


# -- probability to beat control --------------------------------------------------------------


def integrated(control: Arm, variant: Arm) -> float:
    """P(variant > control) = integral of f_variant(x) F_control(x) dx, by scipy."""
    av, bv = 1 + variant.successes, 1 + variant.failures
    ac, bc = 1 + control.successes, 1 + control.failures
    log_norm = special.betaln(av, bv)

    def integrand(x: float) -> float:
        log_pdf = special.xlogy(av - 1, x) + special.xlog1py(bv - 1, -x) - log_norm
        return math.exp(log_pdf) * float(special.betainc(ac, bc, x))

    # Where both posteriors live, so quad cannot step over a narrow peak or step.
    quantiles = (1e-13, 0.5, 1 - 1e-13)
    edges = sorted(
        {float(special.betaincinv(a, b, q)) for a, b in ((av, bv), (ac, bc)) for q in quantiles}
    )
    pieces = [0.0, *edges, 1.0]
    with warnings.catch_warnings():
        # quad doubts itself on the tails of million-send posteriors; the pieces agree anyway.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return math.fsum(
            integrate.quad(integrand, a, b, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
            for a, b in itertools.pairwise(pieces)
            if b > a
        )


def test_probability_to_beat_matches_numerical_integration() -> None:
    cases = [
        (c, v)
        for c, v in arm_pairs(400, seed=3)
        if min(c.successes, c.failures, v.successes, v.failures) < EXACT_TERMS_LIMIT
    ]
    assert len(cases) > 350
    cases += [(Arm(0, 0), Arm(0, 0)), (Arm(0, 0), Arm(3, 5)), (Arm(5, 83), Arm(12, 99))]
    for control, variant in cases:
        assert probability_to_beat(control, variant) == pytest.approx(
            integrated(control, variant), abs=1e-6
        ), (control, variant)


def test_probability_to_beat_is_exact_for_symmetric_cases() -> None:
    assert probability_to_beat(Arm(0, 0), Arm(0, 0)) == pytest.approx(0.5, abs=1e-15)
    assert probability_to_beat(Arm(7, 90), Arm(7, 90)) == pytest.approx(0.5, abs=1e-12)
    for control, variant in arm_pairs(200, seed=5):
        both = probability_to_beat(control, variant) + probability_to_beat(variant, control)
        # log-gamma of a million is ~1.3e7, so its last bit is worth ~2e-9.
        assert both == pytest.approx(1.0, abs=1e-8), (control, variant)


def test_probability_to_beat_for_huge_counts_is_fast_and_accurate() -> None:
    rng = random.Random(17)
    cases = []
    for _ in range(60):
        n = rng.choice([40_000, 200_000, 1_000_000])
        base = rng.randint(EXACT_TERMS_LIMIT + 1, n // 3)
        shifted = base + rng.randint(-3 * int(math.sqrt(base)), 3 * int(math.sqrt(base)))
        cases.append(
            (Arm(base, n), Arm(max(shifted, EXACT_TERMS_LIMIT + 1), n + rng.randint(0, 999)))
        )
    started = time.perf_counter()
    ours = [probability_to_beat(c, v) for c, v in cases]
    assert time.perf_counter() - started < 0.5
    for (control, variant), probability in zip(cases, ours, strict=True):
        assert probability == pytest.approx(integrated(control, variant), abs=1e-4)


def test_probability_to_beat_control_for_each_arm() -> None:
    control = Arm(20, 500)
    variants = [Arm(20, 500), Arm(35, 500), Arm(8, 500)]

    probabilities = probabilities_to_beat_control(control, variants)

    assert probabilities == tuple(probability_to_beat(control, v) for v in variants)
    assert probabilities[0] == pytest.approx(0.5, abs=1e-9)
    assert probabilities[1] > 0.95 > 0.05 > probabilities[2]


# -- Thompson sampling ------------------------------------------------------------------------


def test_thompson_allocation_is_deterministic_for_a_seed() -> None:
    arms = [Arm(10, 300), Arm(16, 300), Arm(12, 300)]

    first = thompson_allocation(arms, random.Random(42))
    again = thompson_allocation(arms, random.Random(42))

    assert first == again
    assert sum(first.weights) == pytest.approx(1.0, abs=1e-12)
    assert max(first.weights) == first.weights[1]


def test_thompson_allocation_keeps_a_floor_for_every_arm() -> None:
    arms = [Arm(5, 1_000), Arm(200, 1_000), Arm(6, 1_000), Arm(4, 1_000)]

    allocation = thompson_allocation(arms, random.Random(1), floor=0.05)

    assert allocation.win_share[1] == 1.0
    assert allocation.weights == pytest.approx((0.05, 0.85, 0.05, 0.05), abs=1e-12)


def test_thompson_allocation_follows_the_posterior_share() -> None:
    arms = [Arm(40, 1_000), Arm(50, 1_000)]

    allocation = thompson_allocation(arms, random.Random(7), draws=20_000, floor=0.0)

    assert allocation.weights[1] == pytest.approx(probability_to_beat(*arms), abs=0.01)


@pytest.mark.parametrize("floor", [-0.1, 0.6])
def test_thompson_allocation_refuses_an_impossible_floor(floor: float) -> None:
    with pytest.raises(ValueError, match="floor"):
        thompson_allocation([Arm(1, 10), Arm(2, 10)], random.Random(0), floor=floor)


# -- sample-ratio mismatch --------------------------------------------------------------------


def test_srm_600_against_400_on_a_50_50_split() -> None:
    result = sample_ratio_check([600, 400], [50, 50])

    assert result.chi2 == 40.0
    assert result.p_value == pytest.approx(2.539628589470e-10, rel=1e-9)
    assert result.mismatch
    assert result.expected == (500.0, 500.0)


def test_srm_matches_scipy_chisquare_on_many_splits() -> None:
    rng = random.Random(23)
    checked = 0
    for _ in range(600):
        k = rng.choice([2, 2, 3, 4, 5, 8])
        weights = [rng.choice([1, 2, 3, 0.5, rng.uniform(0.01, 5)]) for _ in range(k)]
        total = rng.choice([10, 120, 1_000, 100_000, 1_000_000])
        shares = [w / sum(weights) for w in weights]
        observed = [max(0, round(total * s * rng.uniform(0.9, 1.1))) for s in shares]
        observed[0] += rng.choice([0, 1, 30, total // 50])
        ours = sample_ratio_check(observed, weights)
        oracle = stats.chisquare(observed, [sum(observed) * s for s in shares])
        assert ours.df == k - 1
        assert rel_close(ours.chi2, float(oracle.statistic), 1e-9) or ours.chi2 < 1e-12
        if oracle.pvalue > 1e-300:
            checked += 1
            assert rel_close(ours.p_value, float(oracle.pvalue), 1e-9), (observed, weights)
        assert ours.mismatch == (ours.p_value < 0.001)
    assert checked > 500


def test_chi_square_survival_matches_scipy() -> None:
    rng = random.Random(29)
    for _ in range(2_000):
        df = rng.choice([1, 2, 3, 4, 5, 7, 10, 30, 100])
        x = rng.choice([rng.uniform(0, 3 * df), rng.uniform(0, 0.01), rng.uniform(0, 1_300), df])
        oracle = float(stats.chi2.sf(x, df))
        if oracle > 1e-300:
            assert rel_close(chi_square_sf(x, df), oracle, 1e-9), (x, df)
    assert chi_square_sf(0.0, 3) == 1.0


def test_srm_edge_cases() -> None:
    assert sample_ratio_check([0, 0, 0], [1, 1, 1]).p_value == 1.0
    unused_arm = sample_ratio_check([480, 520, 0], [1, 1, 0])
    assert unused_arm.df == 1 and not unused_arm.mismatch
    leak = sample_ratio_check([480, 520, 3], [1, 1, 0])
    assert leak.mismatch and leak.p_value == 0.0
    assert not sample_ratio_check([520, 480], [1, 1], threshold=0.001).mismatch
    assert sample_ratio_check([520, 480], [1, 1], threshold=0.25).mismatch


@pytest.mark.parametrize(
    ("observed", "weights", "message"),
    [
        ([10, 10], [1, 1, 1], "3 weights"),
        ([10], [1], "at least two arms"),
        ([10, 10], [1, -1], "weights must be finite"),
        ([10, 10], [0, 0], "at least one weight"),
        ([10, -1], [1, 1], "must be >= 0"),
    ],
)
def test_srm_refuses_bad_input(observed: list[int], weights: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_ratio_check(observed, weights)


# -- planning ---------------------------------------------------------------------------------


def statsmodels_per_arm(baseline: float, mde: float, alpha: float, power: float) -> int:
    h = proportion_effectsize(baseline + mde, baseline)
    n = NormalIndPower().solve_power(h, alpha=alpha, power=power, ratio=1, alternative="two-sided")
    return math.ceil(n)


def test_plan_for_3_percent_plus_1_point() -> None:
    result = plan(0.03, 0.01)

    assert result.per_arm == statsmodels_per_arm(0.03, 0.01, 0.05, 0.8) == 5276
    assert result.effect_size == pytest.approx(proportion_effectsize(0.04, 0.03), rel=1e-12)


def test_plan_matches_statsmodels_on_many_combinations() -> None:
    rng = random.Random(31)
    checked = 0
    for _ in range(500):
        baseline = rng.choice([0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.3, rng.uniform(0.002, 0.6)])
        mde = rng.choice([0.002, 0.005, 0.01, 0.02, 0.05, 0.1, -0.005, rng.uniform(0.001, 0.2)])
        alpha = rng.choice([0.01, 0.05, 0.1])
        power = rng.choice([0.5, 0.8, 0.9, 0.95])
        if not 0 < baseline + mde < 1:
            continue
        checked += 1
        assert plan(baseline, mde, alpha, power).per_arm == statsmodels_per_arm(
            baseline, mde, alpha, power
        ), (baseline, mde, alpha, power)
    assert checked > 450


def test_power_equation_matches_statsmodels_with_the_opposite_tail() -> None:
    rng = random.Random(37)
    for _ in range(300):
        h = rng.uniform(-0.5, 0.5)
        n = rng.choice([2, 10, 100, 1_000, rng.uniform(2, 50_000)])
        alpha = rng.choice([0.01, 0.05, 0.1, 0.3])
        oracle = NormalIndPower().power(h, n, alpha, ratio=1, alternative="two-sided")
        assert rel_close(power_for_h(h, n, alpha), float(oracle), 1e-9), (h, n, alpha)


def test_plan_is_the_smallest_sample_with_enough_power() -> None:
    for baseline, mde in [(0.04, 0.02), (0.2, 0.05), (0.01, 0.005), (0.5, -0.1)]:
        result = plan(baseline, mde, power=0.9)
        assert achieved_power(baseline, mde, result.per_arm) >= 0.9
        assert achieved_power(baseline, mde, result.per_arm - 1) < 0.9


def test_minimum_detectable_effect_matches_statsmodels_and_inverts_plan() -> None:
    for baseline in (0.01, 0.04, 0.2, 0.5):
        for per_arm in (50, 500, 1_846, 20_000, 1_000_000):
            for alpha, power in ((0.05, 0.8), (0.01, 0.9)):
                mde = minimum_detectable_effect(baseline, per_arm, alpha, power)
                h = NormalIndPower().solve_power(
                    None, per_arm, alpha, power, ratio=1, alternative="two-sided"
                )
                expected = math.sin(math.asin(math.sqrt(baseline)) + h / 2) ** 2 - baseline
                assert mde is not None
                assert mde == pytest.approx(expected, abs=1e-5)
                exact = plan(baseline, mde, alpha, power).exact_per_arm
                assert exact == pytest.approx(per_arm, rel=1e-6)


def test_minimum_detectable_effect_beyond_100_percent_is_none() -> None:
    assert minimum_detectable_effect(0.9, 5) is None


def test_weeks_needed_for_a_drip_at_120_sends_a_week_per_arm() -> None:
    result = plan(0.04, 0.02)  # +2 points on a 4 % click rate

    assert result.per_arm == 1_846
    assert weeks_needed(result.per_arm, 120) == 16
    assert weeks_needed(240, 120) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": 1.2, "mde": 0.01}, "baseline"),
        ({"baseline": 0.95, "mde": 0.1}, "baseline \\+ mde"),
        ({"baseline": 0.1, "mde": 0.0}, "mde must not be 0"),
        ({"baseline": 0.1, "mde": 0.01, "alpha": 0.0}, "alpha"),
        ({"baseline": 0.1, "mde": 0.01, "alpha": 0.5, "power": 0.4}, "must exceed alpha"),
    ],
)
def test_plan_refuses_impossible_inputs(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(**kwargs)


# -- Holm -------------------------------------------------------------------------------------


def test_holm_matches_multipletests(monkeypatch: pytest.MonkeyPatch) -> None:
    # multipletests runs gc.collect() on every call (~50 ms): skip that, not the cases.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    rng = random.Random(41)
    for _ in range(1_000):
        m = rng.randint(1, 9)
        pool = [0.0, 1.0, 0.01, 0.05, 0.0125]
        p = [rng.choice([rng.random(), rng.random() * 0.06, rng.choice(pool)]) for _ in range(m)]
        alpha = rng.choice([0.05, 0.1, 0.01])
        rejected, adjusted, _, _ = multitest.multipletests(p, alpha=alpha, method="holm")
        ours = holm(p, alpha)
        assert ours.rejected == tuple(bool(r) for r in rejected), p
        assert ours.adjusted == pytest.approx(list(adjusted), abs=1e-15), p


def test_holm_is_monotone_and_capped() -> None:
    p = [0.04, 0.01, 0.03, 0.5]

    result = holm(p)

    assert result.adjusted == pytest.approx((0.09, 0.04, 0.09, 0.5))
    assert result.rejected == (False, True, False, False)
    assert holm([0.6, 0.7]).adjusted == (1.0, 1.0)
    assert holm([]).adjusted == ()


# -- the confidence sequence -----------------------------------------------------------------


def growthbook_interval(
    control: Arm, variant: Arm, alpha: float, tuning_n: float
) -> tuple[float, float]:
    """Waudby-Smith et al. eq. 9 as GrowthBook writes it (gbstats' sequential test)."""
    n = control.trials + variant.trials
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning_n)
    se2 = sum(a.rate * (1 - a.rate) / a.trials for a in (control, variant))
    s2 = se2 * n
    width = math.sqrt(s2) * math.sqrt(
        2 * (n * rho**2 + 1) * math.log(math.sqrt(n * rho**2 + 1) / alpha) / (n * rho) ** 2
    )
    difference = variant.rate - control.rate
    return difference - width, difference + width


def test_confidence_sequence_is_growthbooks_formula() -> None:
    checked = 0
    for control, variant in arm_pairs(1_500, seed=43):
        if min(control.successes, control.failures, variant.successes, variant.failures) == 0:
            continue  # arms at 0 % or 100 % get a shrunk variance (next test)
        checked += 1
        for alpha, tuning_n in ((0.05, 5_000), (0.01, 2 * 1_846)):
            ours = confidence_sequence(control, variant, alpha, tuning_n)
            low, high = growthbook_interval(control, variant, alpha, tuning_n)
            assert ours.low == pytest.approx(low, rel=1e-12, abs=1e-15)
            assert ours.high == pytest.approx(high, rel=1e-12, abs=1e-15)
            # The always-valid p-value and the interval tell the same story.
            if abs(ours.p_value - alpha) > 1e-9:
                assert ours.significant == (ours.p_value < alpha), (control, variant)
    assert checked > 400


def test_confidence_sequence_never_collapses_on_an_arm_at_0_percent() -> None:
    nothing_yet = confidence_sequence(Arm(0, 50), Arm(0, 50))
    all_against_none = confidence_sequence(Arm(0, 1), Arm(1, 1))

    assert nothing_yet.low < -0.01 and nothing_yet.high > 0.01
    assert not all_against_none.significant
    assert confidence_sequence(Arm(0, 0), Arm(3, 9)).low == -math.inf


def test_confidence_sequence_is_tightest_near_its_tuning_sample() -> None:
    for alpha in (0.05, 0.01, 0.1):
        rho2 = mixture_rho2(alpha, 4_000)
        grid = [rho2 * 1.05**k for k in range(-60, 61)]
        best = min(boundary(4_000, r, alpha) for r in grid)
        assert boundary(4_000, rho2, alpha) <= best * 1.001
        # Howard et al.'s approximation of the exact optimum (Lambert W).
        exact = (-special.lambertw(-(alpha**2) / math.e, -1).real - 1) / 4_000
        assert rho2 == pytest.approx(exact, rel=0.05)


# -- verdicts ---------------------------------------------------------------------------------


def test_fixed_horizon_waits_for_the_planned_sample() -> None:
    rule = DecisionRule(method="fixed_horizon", min_per_arm=1_846)

    early = decide(Arm(20, 900), Arm(60, 900), rule)
    done = decide(Arm(74, 1_846), Arm(118, 1_846), rule)

    assert early.winner is None and early.reason.startswith("collecting: 900 of 1,846")
    assert done.winner == "variant"
    assert done.p_value == two_proportion_ztest(Arm(74, 1_846), Arm(118, 1_846)).p_value


def test_fixed_horizon_corrects_several_variants_with_holm() -> None:
    control = Arm(50, 1_000)
    variants = [Arm(80, 1_000), Arm(72, 1_000), Arm(55, 1_000)]
    raw = [two_proportion_ztest(control, v).p_value for v in variants]

    verdicts = decide_arms(control, variants, DecisionRule("fixed_horizon", min_per_arm=1_000))

    assert raw[1] < 0.05  # alone it would win; as one of three chances it does not
    assert [v.p_value for v in verdicts] == list(holm(raw).adjusted)
    assert [v.winner for v in verdicts] == ["variant", None, None]
    loser = decide(control, Arm(28, 1_000), DecisionRule("fixed_horizon", min_per_arm=1_000))
    assert loser.winner == "control"


def test_bayesian_declares_at_the_threshold() -> None:
    rule = DecisionRule(method="bayesian", threshold=0.95)

    win = decide(Arm(20, 500), Arm(38, 500), rule)
    lose = decide(Arm(38, 500), Arm(20, 500), rule)
    open_ = decide(Arm(20, 500), Arm(24, 500), rule)

    assert (win.winner, lose.winner, open_.winner) == ("variant", "control", None)
    assert win.probability == probability_to_beat(Arm(20, 500), Arm(38, 500))
    assert win.p_value is None


def test_sequential_is_the_default_and_uses_the_confidence_sequence() -> None:
    verdict = decide(Arm(40, 1_000), Arm(90, 1_000), DecisionRule())

    assert verdict.method == "sequential"
    assert verdict.winner == "variant"
    assert verdict.low > 0 and verdict.p_value is not None and verdict.p_value < 0.05
    assert decide(Arm(40, 1_000), Arm(45, 1_000), DecisionRule()).winner is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "fixed_horizon", "min_per_arm": 0}, "planned sends per arm"),
        ({"method": "frequentist"}, "unknown method"),
        ({"alpha": 1.5}, "alpha"),
        ({"threshold": 1.0}, "threshold"),
        ({"tuning_n": 0}, "tuning_n"),
    ],
)
def test_decision_rule_refuses_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecisionRule(**kwargs)  # type: ignore[arg-type]
