"""The statistics of randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019), in plain math.

* :func:`clopper_pearson_lower`: the one-sided ``1 - alpha`` Clopper-Pearson lower confidence
  bound on a binomial proportion, the ``alpha`` quantile of ``Beta(k, n - k + 1)`` (0 for k = 0);
  Cohen et al.'s ``LowerConfBound`` (a two-sided interval at level ``2 alpha``, lower end).
* :func:`binomial_p_value`: the two-sided binomial test of ``k`` successes in ``n`` against
  p = 1/2 (Cohen et al.'s PREDICT abstains when it is above alpha).
* :func:`certified_radius`: ``sigma * Phi^-1(p_lower)`` (Cohen et al. 2019, Theorem 1 with
  ``p_B = 1 - p_A``), None (abstain) when ``p_lower < 1/2``.

The regularized incomplete beta function is evaluated with its continued fraction (modified
Lentz's method) and inverted by bisection, so the package needs no scipy; the tests compare
with ``scipy.stats.beta`` and ``scipy.stats.binomtest``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from fastrobust.errors import ConfigError

_TINY = 1e-300
_EPS = 1e-15


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (converges fast for ``x < (a+1)/(a+b+2)``)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the CDF of ``Beta(a, b)`` at ``x`` (a, b > 0)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of ``Beta(a, b)``: ``x`` with ``I_x(a, b) = q``, by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if regularized_beta(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def _check_counts(k: int, n: int) -> None:
    if n < 1 or not 0 <= k <= n:
        raise ConfigError(f"need 0 <= k <= n and n >= 1, got k {k}, n {n}")


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` lower confidence bound on ``p`` after ``k`` successes in ``n``."""
    _check_counts(k, n)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}", field="alpha")
    return 0.0 if k == 0 else beta_quantile(alpha, k, n - k + 1)


def binomial_tail(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, i.e. ``I_p(k, n - k + 1)``."""
    _check_counts(k, n)
    return 1.0 if k == 0 else regularized_beta(k, n - k + 1, p)


def binomial_p_value(k: int, n: int) -> float:
    """Two-sided p-value of ``k`` successes in ``n`` trials against ``p = 1/2`` (the test of
    Cohen et al.'s PREDICT; ``scipy.stats.binomtest(k, n).pvalue``)."""
    _check_counts(k, n)
    if 2 * k == n:
        return 1.0
    far = max(k, n - k)  # symmetric under p = 1/2: both tails are equally far
    return min(1.0, 2.0 * binomial_tail(far, n, 0.5))


def certified_radius(p_lower: float, sigma: float) -> float | None:
    """``sigma * Phi^-1(p_lower)``: the L2 radius within which the smoothed prediction cannot
    change (Cohen et al. 2019, Theorem 1); None (abstain) when ``p_lower < 1/2``."""
    if sigma <= 0:
        raise ConfigError(f"sigma must be > 0, got {sigma}", field="sigma")
    if p_lower < 0.5:
        return None
    if p_lower >= 1.0:
        return math.inf
    return sigma * NormalDist().inv_cdf(p_lower)
