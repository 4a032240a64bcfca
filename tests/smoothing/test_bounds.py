"""Randomized smoothing's statistics against scipy (Cohen et al. 2019): the Clopper-Pearson
lower bound, PREDICT's binomial test and the certified radius."""

import math

import pytest

from fastrobust.errors import ConfigError
from fastrobust.smoothing.bounds import (
    binomial_p_value,
    certified_radius,
    clopper_pearson_lower,
    regularized_beta,
)

stats = pytest.importorskip("scipy.stats")

CASES = [
    (1, 1, 0.001),
    (7, 10, 0.05),
    (50, 100, 0.001),
    (99, 100, 0.001),
    (100, 100, 0.001),
    (9_000, 10_000, 1e-5),
    (99_990, 100_000, 0.001),
    (100_000, 100_000, 0.001),
    (51_000, 100_000, 0.01),
]


@pytest.mark.parametrize(("k", "n", "alpha"), CASES)
def test_clopper_pearson_lower_bound_is_scipys_beta_quantile(k, n, alpha):
    # Cohen et al.: proportion_confint(k, n, alpha=2*alpha, method="beta")[0] = beta.ppf(alpha, ...)
    ours = clopper_pearson_lower(k, n, alpha)
    assert ours == pytest.approx(stats.beta.ppf(alpha, k, n - k + 1), abs=1e-11)
    # the bound's definition: P(X >= k) = alpha at p = p_lower
    assert stats.binom.sf(k - 1, n, ours) == pytest.approx(alpha, rel=1e-6)


def test_clopper_pearson_with_no_success_is_zero_and_full_success_is_alpha_root():
    assert clopper_pearson_lower(0, 50, 0.01) == 0.0
    assert clopper_pearson_lower(50, 50, 0.01) == pytest.approx(0.01 ** (1 / 50), abs=1e-12)


@pytest.mark.parametrize(("a", "b", "x"), [(0.5, 0.5, 0.3), (3, 900, 0.001), (2000, 30, 0.98)])
def test_regularized_beta_is_scipys(a, b, x):
    assert regularized_beta(a, b, x) == pytest.approx(stats.beta.cdf(x, a, b), abs=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (5, 10), (10, 10), (530, 1000), (61, 100)])
def test_binomial_p_value_is_scipys_two_sided_binomtest(k, n):
    assert binomial_p_value(k, n) == pytest.approx(stats.binomtest(k, n).pvalue, rel=1e-9)


@pytest.mark.parametrize("p_lower", [0.5, 0.6, 0.9, 0.999, 0.9999309])
@pytest.mark.parametrize("sigma", [0.12, 0.25, 1.0])
def test_radius_is_sigma_times_normal_quantile(p_lower, sigma):
    assert certified_radius(p_lower, sigma) == pytest.approx(
        sigma * stats.norm.ppf(p_lower), abs=1e-12
    )


def test_abstain_below_one_half_and_bad_arguments_are_config_errors():
    assert certified_radius(0.4999999, 0.5) is None
    assert certified_radius(1.0, 0.5) == math.inf
    with pytest.raises(ConfigError):
        certified_radius(0.9, 0.0)
    with pytest.raises(ConfigError):
        clopper_pearson_lower(3, 10, 1.0)
    with pytest.raises(ConfigError):
        clopper_pearson_lower(11, 10, 0.01)
