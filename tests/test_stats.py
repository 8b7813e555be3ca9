"""The report's statistics: hand computations, and simulations of what they promise (coverage,
uniform p-values under the null). Fixed seeds; vectorised so the whole file runs in seconds."""

import math

import numpy as np
import pytest
from scipy import stats

from harness.report.correlation import CI_MIN_N, kendall, partial_tau, tau_b, within_method
from harness.report.multiplicity import can_mark, holm, no_mark_sentence, seeds_needed
from harness.report.power import mask_mdd, seed_mdd
from harness.report.stats import (
    MIN_IMAGES,
    cluster_bootstrap,
    cluster_se,
    mean_ci,
    paired,
    sign_flip_min_p,
    sign_flip_p,
    slope_ci,
    welch_ci,
)

# --------------------------------------------------------------------------- mean_ci


@pytest.mark.parametrize("n", [3, 5, 10])
def test_mean_ci_covers_at_its_stated_level_for_the_real_n(n):
    rng = np.random.default_rng(n)
    reps = 4000  # binomial SE of the coverage ≈ 0.0034: the band is ~6 SE wide each side
    samples = rng.normal(0.7, 0.05, size=(reps, n))
    covered = 0
    for x in samples:
        est = mean_ci(x)
        covered += est.low <= 0.7 <= est.high
    assert 0.93 <= covered / reps <= 0.97


def test_mean_ci_is_the_student_t_interval():
    # mean 0.3, s = √0.025 = 0.15811, t(0.975, 4) = 2.77645 → half-width 2.77645·s/√5 = 0.19633
    est = mean_ci([0.1, 0.4, 0.2, 0.5, 0.3])
    assert est.mean == pytest.approx(0.3) and est.n == 5
    assert (est.low, est.high) == pytest.approx((0.3 - 0.19633, 0.3 + 0.19633), abs=1e-5)


@pytest.mark.parametrize(("na", "nb", "sd_b"), [(3, 3, 0.05), (3, 5, 0.15), (5, 10, 0.02)])
def test_welch_ci_covers_a_known_difference_with_unequal_groups(na, nb, sd_b):
    rng = np.random.default_rng(na * 100 + nb)
    reps = 3000
    covered = 0
    for _ in range(reps):
        est = welch_ci(rng.normal(0.7, 0.05, na), rng.normal(0.6, sd_b, nb))
        covered += est.low <= 0.1 <= est.high
    assert 0.93 <= covered / reps <= 0.97


def test_welch_ci_by_hand():
    # a: mean 0.5, var 0.01 (n 3); b: mean 0.3, var 0.1/3 (n 4) → se² = 0.01/3 + 0.1/12
    # = 0.011667, df = se⁴ / ((0.01/3)²/2 + (0.1/12)²/3) = 4.7419
    est = welch_ci([0.4, 0.5, 0.6], [0.1, 0.2, 0.4, 0.5])
    se2 = 0.01 / 3 + 0.1 / 12
    df = se2 ** 2 / ((0.01 / 3) ** 2 / 2 + (0.1 / 12) ** 2 / 3)
    half = stats.t.ppf(0.975, df) * math.sqrt(se2)
    assert est.mean == pytest.approx(0.2)
    assert (est.low, est.high) == pytest.approx((0.2 - half, 0.2 + half))
    assert df == pytest.approx(4.7419, abs=1e-3)
    assert not welch_ci([0.1, 0.2], [0.3, 0.4, 0.5]).has_ci  # 2 runs: no interval



@pytest.mark.parametrize("seeds", [1, 3, 5])
def test_slope_ci_covers_a_known_slope_along_a_three_point_sweep(seeds):
    """Three sizes (log2 params 10, 11, 12) × `seeds` runs, true gain slope −0.01 per
    doubling, run noise SD 0.01: the t interval covers −0.01 95 % of the time."""
    rng = np.random.default_rng(seeds)
    x = np.repeat([10.0, 11.0, 12.0], seeds)
    reps, covered = 3000, 0
    for _ in range(reps):
        est = slope_ci(x, 0.05 - 0.01 * (x - 10) + rng.normal(0, 0.01, len(x)))
        covered += est.low <= -0.01 <= est.high
    assert 0.93 <= covered / reps <= 0.97


def test_slope_ci_matches_scipy_linregress():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [0.10, 0.07, 0.09, 0.02, 0.03]
    ref = stats.linregress(x, y)  # an independent implementation
    half = stats.t.ppf(0.975, 3) * ref.stderr
    est = slope_ci(x + [math.nan], y + [0.5])  # a point without x is dropped
    assert est.n == 5 and est.mean == pytest.approx(ref.slope)
    assert (est.low, est.high) == pytest.approx((ref.slope - half, ref.slope + half))
    assert not slope_ci([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]).has_ci  # one size: no slope
    assert math.isnan(slope_ci([1.0, 1.0], [0.1, 0.2]).mean)
    two = slope_ci([1.0, 2.0], [0.1, 0.3])
    assert two.mean == pytest.approx(0.2) and not two.has_ci

def test_fewer_than_three_values_give_no_interval_and_say_why():
    two = mean_ci([0.6, 0.8, math.nan])
    assert two.mean == pytest.approx(0.7) and two.n == 2
    assert math.isnan(two.low) and math.isnan(two.high) and not two.has_ci
    assert "no interval below 3" in two.note
    assert two.text() == "0.700 (n=2, no CI)"


def test_a_constant_sample_has_a_point_interval():
    est = mean_ci([0.5, 0.5, 0.5])
    assert (est.mean, est.low, est.high, est.n) == (0.5, 0.5, 0.5, 3)


def test_small_samples_give_no_interval_instead_of_nan_warnings():
    one, none = mean_ci([0.7, math.nan]), mean_ci([])
    assert (one.mean, one.n) == (0.7, 1) and not one.has_ci
    assert one.text() == "0.700 (n=1, no CI)"
    assert none.n == 0 and none.text() == "–"
    assert mean_ci([1043.0]).text("sig3", ci=False) == "1043"
    assert mean_ci([0.08191]).text("sig3", ci=False) == "0.0819"


# --------------------------------------------------------------------------- sign-flip test


def test_sign_flip_p_by_hand():
    # d = (1, 2, 3, −0.5), observed sum 5.5; |Σ sᵢdᵢ| over the 16 sign patterns reaches 5.5
    # only for all-same-signs (6.5) and for flipping just the 0.5 (5.5), each with its mirror
    # image: 4 of 16 patterns, p = 0.25
    assert sign_flip_p([1.0, 2.0, 3.0, -0.5]) == pytest.approx(4 / 16)
    assert sign_flip_p([0.0, 0.0]) == 1.0 and math.isnan(sign_flip_p([]))
    # n = 2 can never go below 2/2² = 0.5
    assert sign_flip_p([0.3, 0.4]) == pytest.approx(0.5) == sign_flip_min_p(2)
    assert sign_flip_min_p(5) == pytest.approx(0.0625) and sign_flip_min_p(6) < 0.05


def test_sign_flip_p_is_uniform_under_the_null():
    # Symmetric differences around 0: every sign pattern is equally likely, so the exact p is
    # uniform on its support {2/2ⁿ, 4/2ⁿ, …, 1}. With n = 10 the steps are 2/1024 ≈ 0.002,
    # far below the KS test's resolution at 4000 datasets (≈ 1.36/√4000 ≈ 0.02), so the
    # discreteness does not show; P(p ≤ 0.05) is 50/1024 ≈ 0.049 exactly.
    rng = np.random.default_rng(1)
    data = rng.standard_t(5, size=(4000, 10))  # heavy tails: the test needs only symmetry
    ps = np.array([sign_flip_p(d) for d in data])
    assert stats.kstest(ps, "uniform").pvalue > 0.01
    assert abs(np.mean(ps <= 0.05) - 50 / 1024) < 0.012


def test_sign_flip_beyond_exact_enumeration_is_sampled_and_positive():
    d = np.linspace(0.1, 1.0, 25)  # all positive: p tiny but never 0
    p = sign_flip_p(d)
    assert 0 < p < 0.001


def test_paired_test_on_a_hand_built_example():
    # the differences a − b are 1..6 for seeds 1..6: all positive; only the observed signs and
    # their mirror image are as extreme, so the exact two-sided p is 2/2⁶
    b = {s: 0.5 for s in range(1, 7)}
    a = {s: 0.5 + s for s in range(1, 7)}
    test = paired(a, b)
    assert test.diff.mean == pytest.approx(3.5) and test.diff.n == 6
    assert test.diff.low > 0  # t interval: 3.5 ± 2.571·1.871/√6
    assert test.p == pytest.approx(2 / 64) and test.min_p == pytest.approx(2 / 64)


def test_paired_test_uses_only_common_seeds():
    test = paired({1: 0.6, 2: 0.7, 3: 0.8}, {1: 0.5, 2: 0.5, 4: 0.1})
    assert test.diff.n == 2 and test.diff.mean == pytest.approx(0.15)
    assert not test.diff.has_ci and test.p == pytest.approx(0.5)
    constant = paired({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0})
    assert constant.diff.mean == 0 and constant.p == 1.0


# --------------------------------------------------------------------------- multiplicity


def test_holm_by_hand():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone: 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])  # no test: not in the family
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert len(holm([])) == 0


def test_a_mark_is_possible_only_when_the_corrected_test_can_reach_it():
    assert not can_mark([sign_flip_min_p(2)] * 3)
    assert not can_mark([sign_flip_min_p(5)])  # 0.0625
    assert can_mark([sign_flip_min_p(6)])  # 0.03125
    assert not can_mark([sign_flip_min_p(6)] * 2)  # Holm: 2 · 0.03125
    assert seeds_needed(1) == 6 and seeds_needed(17) == 10  # 17 · 2/2¹⁰ ≈ 0.033
    sentence = no_mark_sentence([2, 2, 2], "cell")
    assert "2 paired seeds" in sentence and "2/2^2 = 0.5" in sentence
    assert "over the 3 cells" in sentence and "at least 7 seeds" in sentence


# --------------------------------------------------------------------------- per-mask level


def _masks(rng, images: int, delta: float):
    """Per-mask IoU differences: 1–4 masks per image, an image effect shared by its masks
    (so masks are not independent) plus mask noise; true mean difference `delta`."""
    counts = rng.integers(1, 5, size=images)
    image = np.repeat(np.arange(images), counts)
    effect = rng.normal(0, 0.08, size=images)[image]
    return delta + effect + rng.normal(0, 0.05, size=len(image)), image


def test_cluster_bootstrap_covers_a_known_difference():
    rng = np.random.default_rng(2)
    reps, covered = 300, 0
    for _ in range(reps):
        d, image = _masks(rng, 40, 0.05)
        test = cluster_bootstrap(d, image, n_resamples=999, seed=int(rng.integers(1 << 30)))
        covered += test.diff.low <= 0.05 <= test.diff.high
    # percentile bootstrap over 40 clusters: a little under nominal; loose bounds
    assert 0.88 <= covered / reps <= 0.99


def test_cluster_bootstrap_resamples_images_not_masks():
    rng = np.random.default_rng(3)
    d, image = _masks(rng, 30, 0.0)
    test = cluster_bootstrap(d, image)
    assert test.masks == len(d) and test.images == 30
    naive = d.std(ddof=1) / math.sqrt(len(d))
    assert test.se > naive  # correlated masks: less information than len(d) masks
    width = test.diff.high - test.diff.low
    assert width == pytest.approx(2 * 1.96 * test.se, rel=0.25)
    assert 0 <= test.p <= 1
    # one image per mask: the cluster SE is the usual SE of a mean
    x = rng.normal(size=50)
    assert cluster_se(x, np.arange(50)) == pytest.approx(x.std(ddof=1) / math.sqrt(50))


def test_too_few_images_give_the_mean_without_an_interval():
    test = cluster_bootstrap([0.1, 0.2, 0.3, 0.2], [0, 0, 1, 1])
    assert test.diff.mean == pytest.approx(0.2) and not test.diff.has_ci
    assert f"below {MIN_IMAGES}" in test.diff.note and math.isnan(test.p)


# --------------------------------------------------------------------------- power


def test_minimum_detectable_difference():
    # a paired t test with n = 10 has 80 % power at δ/σ ≈ 0.99 (G*Power: d = 1 → 0.803)
    assert seed_mdd(1.0, 10) == pytest.approx(0.994, abs=0.01)
    assert seed_mdd(0.02, 10) == pytest.approx(0.02 * 0.994, abs=2e-4)
    assert seed_mdd(1.0, 5) == math.inf  # 2/2⁵ > 0.05: no difference is detectable
    assert math.isnan(seed_mdd(1.0, 1))
    # many images: (z₀.₉₇₅ + z₀.₈)·SE = 2.80·SE
    assert mask_mdd(0.01, 1000) == pytest.approx(0.0280, abs=3e-4)
    assert mask_mdd(0.0, 40) == 0.0


# --------------------------------------------------------------------------- rank correlation


def test_kendall_tau_on_a_known_ranking():
    # one swapped pair out of C(5, 2) = 10: τ = (9 − 1) / 10; exact p = 2 · 5 / 5!
    c = kendall([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])
    assert c.tau == pytest.approx(0.8) and c.p == pytest.approx(10 / 120) and c.n == 5
    reverse = kendall([1, 2, 3], [3, 2, math.nan])  # the NaN pair is dropped: n = 2 < 3
    assert math.isnan(reverse.tau) and reverse.n == 2


def test_vectorised_tau_b_matches_scipy_with_ties():
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 4, size=(2, 12)).astype(float)
    assert tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)


def test_partial_tau_by_hand():
    # τxy = 0.5, τxz = τyz = 0.5: (0.5 − 0.25) / √(0.75 · 0.75) = 1/3
    assert float(partial_tau(np.float64(0.5), np.float64(0.5), np.float64(0.5))) == \
        pytest.approx(1 / 3)


def test_partial_tau_removes_what_both_share_with_the_control():
    # x and y both rise with z, and beyond z they are opposite: τxy > 0 only through z
    z = np.arange(10.0)
    wiggle = np.where(np.arange(10) % 2, 0.6, -0.6)
    c = within_method(z + wiggle, z - wiggle, z)
    assert c.tau > 0.3 and c.partial < 0


def test_within_method_interval_only_from_enough_runs():
    rng = np.random.default_rng(5)
    x = rng.normal(size=12)
    y = x + rng.normal(scale=0.5, size=12)
    c = within_method(x, y, rng.normal(size=12))
    assert c.low <= c.tau <= c.high and c.tau > 0.3
    few = within_method(x[:CI_MIN_N - 1], y[:CI_MIN_N - 1], x[:CI_MIN_N - 1])
    assert math.isfinite(few.tau) and math.isnan(few.low)
    z = rng.normal(size=12)
    assert within_method(x, y, z) == within_method(x, y, z)  # fixed seed
