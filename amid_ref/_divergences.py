"""The float64 divergence kernels, registered against the contract's records
(:data:`amid_ref._specs.SPECS`) in :data:`KERNELS`: each record's value and log-input
gradient, evaluated on log-probabilities for accuracy. Names, parameters, defaults and their
checks come from the records.

Every kernel takes ``la = log a`` and ``lb = log b`` (float64, same shape, ``-inf`` for a
zero probability) and reduces over ``axis``. Gradient kernels return
``(∂D/∂la, ∂D/∂lb)`` *modulo adding a multiple of a (resp. b) along the reduced axis*: the
callers (:func:`amid_ref.amid_grad`) project onto the simplex's tangent space, which removes
exactly such components, so each kernel may use whichever extension of D off the simplex is
most accurate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from amid_ref._special import (
    call_generator,
    expm1mx_ratio,
    scaled_expm1_ratio,
    times_exp,
)
from amid_ref._specs import SPECS, DivergenceSpec, get_spec, resolve_params
from amid_ref._validation import (
    as_float_array,
    check_axis,
    check_log_probabilities,
    check_probabilities,
    check_same_shape,
)

__all__ = ["DIVERGENCES", "Divergence", "divergence", "get_divergence"]

Kernel = Callable[[np.ndarray, np.ndarray, int, Mapping[str, Any]], np.ndarray]
GradKernel = Callable[
    [np.ndarray, np.ndarray, int, Mapping[str, Any]], tuple[np.ndarray, np.ndarray]
]


@dataclass(frozen=True)
class Divergence:
    """A divergence of the contract (:data:`amid_ref._specs.SPECS`) with its float64 kernels."""

    spec: DivergenceSpec
    value: Kernel
    grad: GradKernel | None
    #: ``g_direct + w·g_other`` for the AMiD chain rule where q is one argument and r the
    #: other (``pair(la, lb, params, log_ratio, weights, direct)``, ``direct`` "a" or "b"
    #: naming q's argument, ``weights`` = (log w, log w̄, w − w̄)); None: the plain sum.
    pair: Callable | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def formula(self) -> str:
        return self.spec.formula

    @property
    def description(self) -> str:
        return self.spec.words

    @property
    def params(self) -> dict[str, Any]:
        """Parameter name -> default (``None`` where the parameter is required)."""
        return {p.name: (None if p.required else p.default) for p in self.spec.params}

    def resolve_params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The checked parameters (:func:`amid_ref._specs.resolve_params`)."""
        return resolve_params(self.spec, given)


def _exp(x):
    return np.exp(x)


def _delta(la, lb, log_ratio):
    """δ = log a − log b: the caller's directly formed log ratio where it gives one (the
    AMiD loss forms log(r/p), log(r/q) from the mixture without subtracting two large
    logs), else the difference (NaN where both are −inf; kernels mask zero entries)."""
    if log_ratio is None:
        with np.errstate(invalid="ignore"):
            return la - lb
    return np.asarray(log_ratio, dtype=np.float64)


def _sum(terms: np.ndarray, axis: int) -> np.ndarray:
    return np.sum(terms, axis=axis)


# --- KL ------------------------------------------------------------------------------------


def _kl_value(la, lb, axis, params, log_ratio=None):
    # Positivity is read off the log (an a that underflows to 0 is still > 0: with b = 0
    # its term is +inf, not 0).
    pos = ~np.isneginf(la)
    with np.errstate(invalid="ignore", under="ignore"):
        d = _delta(la, lb, log_ratio)
        terms = np.where(pos, np.where(np.isneginf(lb), np.inf, _exp(la) * d), 0.0)
    return _sum(terms, axis)


def _kl_grad(la, lb, axis, params, log_ratio=None):
    a = _exp(la)
    pos = a > 0
    with np.errstate(invalid="ignore"):
        ga = np.where(pos, a * _delta(la, lb, log_ratio), 0.0)  # a(δ + 1) ≡ aδ modulo a
    return ga, -a


# --- generalized Jensen-Shannon ------------------------------------------------------------


def _js_mixture(la, lb, beta):
    with np.errstate(divide="ignore"):
        return np.logaddexp(math.log(beta) + la, math.log1p(-beta) + lb)


def _js_log_ratios(la, lb, beta, log_ratio):
    """(log a − log m, log b − log m), m = βa + (1−β)b: from δ = log a − log b as
    −log1p((1−β)·expm1(−δ)) and −log1p(β·expm1(δ)) for |δ| ≤ 1 (no ulp of |log m|),
    as differences with log m beyond."""
    lm = _js_mixture(la, lb, beta)
    d = _delta(la, lb, log_ratio)
    near = np.abs(d) <= 1.0
    dn = np.where(near, d, 0.0)
    with np.errstate(invalid="ignore"):
        ra = np.where(near, -np.log1p((1.0 - beta) * np.expm1(-dn)), la - lm)
        rb = np.where(near, -np.log1p(beta * np.expm1(dn)), lb - lm)
    return lm, ra, rb


def _js_value(la, lb, axis, params, log_ratio=None):
    beta = params["beta"]
    if beta in (0.0, 1.0):
        return np.zeros(np.delete(la.shape, axis))
    lm, ra, rb = _js_log_ratios(la, lb, beta, log_ratio)
    return beta * _kl_value(la, lm, axis, params, ra) + (1.0 - beta) * _kl_value(
        lb, lm, axis, params, rb
    )


def _js_grad(la, lb, axis, params, log_ratio=None):
    beta = params["beta"]
    if beta in (0.0, 1.0):
        return np.zeros_like(la), np.zeros_like(lb)
    _, ra, rb = _js_log_ratios(la, lb, beta, log_ratio)
    a, b = _exp(la), _exp(lb)
    with np.errstate(invalid="ignore"):
        ga = np.where(a > 0, beta * a * ra, 0.0)
        gb = np.where(b > 0, (1.0 - beta) * b * rb, 0.0)
    return ga, gb


# --- total variation, Hellinger, Pearson chi^2 ----------------------------------------------


def _tv_value(la, lb, axis, params, log_ratio=None):
    return 0.5 * _sum(np.abs(_tv_diff(la, lb, log_ratio)), axis)


def _tv_diff(la, lb, log_ratio):
    """a − b, as b·expm1(δ) for |δ| ≤ 1 (relative accuracy where a ≈ b)."""
    a, b = _exp(la), _exp(lb)
    d = _delta(la, lb, log_ratio)
    near = np.abs(d) <= 1.0
    return np.where(near, b * np.expm1(np.where(near, d, 0.0)), a - b)


def _tv_grad(la, lb, axis, params, log_ratio=None):
    a, b = _exp(la), _exp(lb)
    s = np.sign(_tv_diff(la, lb, log_ratio))
    return 0.5 * s * a, -0.5 * s * b


def _sqrt_diff(la, lb, log_ratio=None):
    """√a − √b without cancellation: sign(δ)·√max·(−expm1(−|δ|/2))."""
    hi = np.maximum(la, lb)
    d = _delta(la, lb, log_ratio)
    with np.errstate(invalid="ignore"):
        mag = np.exp(hi / 2.0) * -np.expm1(-np.abs(d) / 2.0)
    mag = np.where(np.isneginf(hi), 0.0, mag)
    return np.where(d >= 0, mag, -mag)


def _hellinger_value(la, lb, axis, params, log_ratio=None):
    return 0.5 * _sum(_sqrt_diff(la, lb, log_ratio) ** 2, axis)


def _hellinger_grad(la, lb, axis, params, log_ratio=None):
    d = _sqrt_diff(la, lb, log_ratio)
    return 0.5 * d * _exp(la / 2.0), -0.5 * d * _exp(lb / 2.0)


def _log_abs_expm1(x):
    """log|e^x − 1| for x ≠ 0 (−inf at 0), accurate and overflow-free."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pos = x + np.log(-np.expm1(-np.abs(x)))
        neg = np.log(-np.expm1(-np.abs(x)))
    return np.where(x > 0, pos, neg)


def _chi2_terms(la, lb, log_ratio=None):
    a_pos = ~np.isneginf(la)
    b_pos = ~np.isneginf(lb)
    with np.errstate(invalid="ignore", over="ignore"):
        d = _delta(la, lb, log_ratio)
        terms = np.exp(lb + 2.0 * _log_abs_expm1(d))
    terms = np.where(b_pos, terms, np.where(a_pos, np.inf, 0.0))
    return np.where(b_pos & ~a_pos, _exp(lb), terms)


def _chi2_value(la, lb, axis, params, log_ratio=None):
    return _sum(_chi2_terms(la, lb, log_ratio), axis)


def _chi2_pair(la, lb, params, log_ratio, weights, direct):
    """``g_direct + w·g_other`` for χ² = 2·AB(2, −1) (:func:`_ab_pair`): at w = ½ its two
    terms a²/b cancel analytically. Entries where a or b is 0 take χ²'s own gradients."""
    ga, gb = _chi2_grad(la, lb, -1, params, log_ratio)
    g_direct, g_other = (gb, ga) if direct == "b" else (ga, gb)
    both = ~np.isneginf(la) & ~np.isneginf(lb)
    with np.errstate(invalid="ignore"):
        plain = g_direct + np.exp(weights[0]) * g_other
        paired = 2.0 * _ab_pair(la, lb, _CHI2_AS_AB, log_ratio, weights, direct)
    return np.where(both, paired, plain)


_CHI2_AS_AB = {"alpha": 2.0, "beta": -1.0}


def _chi2_grad(la, lb, axis, params, log_ratio=None):
    # D = Σ a²/b − 2a + b: ∂/∂la = 2a·expm1(δ), ∂/∂lb = −b·expm1(2δ).
    b_pos = ~np.isneginf(lb)
    a_pos = ~np.isneginf(la)
    with np.errstate(invalid="ignore", over="ignore"):
        d = _delta(la, lb, log_ratio)
        ga = 2.0 * np.sign(d) * np.exp(la + _log_abs_expm1(d))
        gb = -np.sign(d) * np.exp(lb + _log_abs_expm1(2.0 * d))
    ga = np.where(a_pos & b_pos, ga, np.where(a_pos, np.inf, 0.0))
    gb = np.where(a_pos & b_pos, gb, np.where(b_pos, _exp(lb), 0.0))
    return ga, gb


# --- AB-divergence (Cichocki, Cruces & Amari 2011) and Amari's α-divergence ---------------


def _ab_pivot_terms(log_s, lam, c, z, log_top_lam, log_top_c, denom):
    """``e^(log_s)·[F(λ) − F(c)]/denom`` with F(k) = (e^(kz) − 1 − kz)/k, the AB term around
    a pivot. Where max(|λz|, |cz|) ≤ 1 the second-order form F is used (its difference
    never cancels by more than a factor 3 when |c| ≤ |denom|); beyond, the −z parts of F
    cancel exactly and the first-order form G(k) = (e^(kz) − 1)/k is used instead (there
    |denom·z| ≥ ½, so G(λ) − G(c) is free of cancellation too)."""
    second = np.maximum(np.abs(lam * z), np.abs(c * z)) <= 1.0
    zs = np.where(second, z, 0.0)
    zl = np.where(second, 0.0, z)
    # Both parts share the scale e^(log_s): the difference is formed first and scaled once,
    # so that a scale beyond float64 range (y^λ, λ < 0, y tiny) times a zero difference is 0.
    near = times_exp(expm1mx_ratio(lam, zs) - expm1mx_ratio(c, zs), log_s)
    far = scaled_expm1_ratio(log_s, lam, zl, log_top_lam) - scaled_expm1_ratio(
        log_s, c, zl, log_top_c
    )
    return np.where(second, near, far) / denom


def _ab_value(la, lb, axis, params, log_ratio=None):
    return _sum(_ab_terms(la, lb, params, log_ratio), axis)


def _ab_terms(la, lb, params, log_ratio=None):
    r"""The terms of Σ −1/(a_ b_)·(x^a_ y^b_ − a_/λ x^λ − b_/λ y^λ), λ = a_ + b_,
    continuous in (a_, b_).

    With δ = log x − log y each term equals ``y^λ·(F(λ) − F(a_))/b_`` with
    F(k) = (e^(kδ) − 1 − kδ)/k (used when |a_| ≤ |b_|) or, by the symmetry
    D^(a,b)(x‖y) = D^(b,a)(y‖x), ``x^λ·(F'(λ) − F'(b_))/a_`` with δ → −δ (see
    :func:`_ab_pivot_terms`), so every limit (a_ → 0, b_ → 0, λ → 0 and (0, 0)) is reached
    continuously with no special branch but (0, 0) itself.
    """
    a_, b_ = params["alpha"], params["beta"]
    lam = a_ + b_
    x0 = np.isneginf(la)
    y0 = np.isneginf(lb)
    both = ~x0 & ~y0
    with np.errstate(invalid="ignore", over="ignore"):
        lx, ly = np.where(both, la, 0.0), np.where(both, lb, 0.0)
        d = np.where(both, _delta(la, lb, log_ratio), 0.0)
        # log(x^λ), log(y^λ), log(x^a_ y^b_) formed directly (not as log y^λ + c·δ, which
        # carries an ulp of the larger log when that is huge).
        lx_l, ly_l, lxy = lam * lx, lam * ly, a_ * lx + b_ * ly
        if a_ == 0.0 and b_ == 0.0:
            terms = 0.5 * d * d
        elif abs(a_) <= abs(b_):
            terms = _ab_pivot_terms(ly_l, lam, a_, d, lx_l, lxy, b_)
        else:
            terms = _ab_pivot_terms(lx_l, lam, b_, -d, ly_l, lxy, a_)
    terms = np.where(np.isnan(terms), np.inf, terms)  # inf − inf: a term beyond float range
    # Zero entries (derived from the general formula; +inf where it diverges).
    with np.errstate(invalid="ignore", over="ignore"):
        only_y = x0 & ~y0
        only_x = y0 & ~x0
        # y^λ/(a_ λ) as one exponential: a_·λ may underflow (a_ = 1e-308).
        t_only_y = (
            np.exp(lam * lb - math.log(a_) - math.log(lam)) if (a_ > 0 and lam > 0) else np.inf
        )
        t_only_x = (
            np.exp(lam * la - math.log(b_) - math.log(lam)) if (b_ > 0 and lam > 0) else np.inf
        )
    terms = np.where(only_y, t_only_y, terms)
    terms = np.where(only_x, t_only_x, terms)
    return np.where(x0 & y0, 0.0, terms)


def _ab_grad_sum(la, lb, params, log_ratio=None):
    """``∂D/∂la + ∂D/∂lb`` = (a_ + b_)·term where both x, y > 0 (each term is homogeneous of
    degree a_ + b_ in (x, y)): exactly 0 for a_ + b_ = 0, where the two gradients can be
    1e7 each (a ratio x/y of e^30) and their sum would keep only their rounding."""
    both = ~np.isneginf(la) & ~np.isneginf(lb)
    ga, gb = _ab_grad(la, lb, -1, params, log_ratio)
    lam = params["alpha"] + params["beta"]
    with np.errstate(invalid="ignore"):
        return np.where(both, lam * _ab_terms(la, lb, params, log_ratio), ga + gb)


def _weighted_coefficient(c0: float, c1: float, weights, w) -> np.ndarray:
    """``c0 + c1·w`` for w near the anchor 0, ½ or 1 nearest to it, from the exact w̄ and
    w − w̄: ``(c0 + c1) − c1·w̄`` above ¾, ``(c0 + c1/2) + c1·(w − w̄)/2`` between ¼ and ¾.
    Where the coefficient's zero −c0/c1 is an anchor (a_ + b_ = 0, a_ = −2 b_: χ²), it
    is then exact to a few ulps of itself."""
    w_bar, w_diff = np.exp(weights[1]), weights[2]
    return np.where(
        w < 0.25,
        c0 + c1 * w,
        np.where(w > 0.75, (c0 + c1) - c1 * w_bar, (c0 + c1 / 2.0) + c1 * w_diff / 2.0),
    )


def _ab_pair(la, lb, params, log_ratio, weights, direct):
    r"""``g_direct + w·g_other`` (the AMiD chain rule's combination where q is one argument
    and r, weighted by w = ∂ log r/∂ log q, the other), without cancelling terms that are
    powers of x/y far larger than it.

    Where :math:`|a_*\delta|, |b_*\delta| \ge 1` the two gradients are written with the
    three powers :math:`X = x^\lambda`, :math:`P = x^{a_*}y^{b_*}`, :math:`Y = y^\lambda`:

    .. math::

        g_y + w g_x = \frac{w}{b_*}X - \frac{w a_* + b_*}{a_* b_*}P + \frac{Y}{a_*},\qquad
        g_x + w g_y = \frac{X}{b_*} - \frac{a_* + w b_*}{a_* b_*}P + \frac{w}{a_*}Y,

    the coefficient of P formed around its nearest anchor (:func:`_weighted_coefficient`):
    with χ² (2, −1) at w = ½ or (½, −½) at w = 1 the two large P terms cancel analytically.
    Elsewhere (|δ| small, or a_ b_ = 0): ``G − w̄·g_other`` with G = g_x + g_y in closed
    form (:func:`_ab_grad_sum`) where w > ½, the plain sum below.
    """
    a_, b_ = params["alpha"], params["beta"]
    lam = a_ + b_
    w = np.exp(weights[0])
    ga, gb = _ab_grad(la, lb, -1, params, log_ratio)
    g_direct, g_other = (gb, ga) if direct == "b" else (ga, gb)
    with np.errstate(invalid="ignore", over="ignore"):
        plain = g_direct + w * g_other
        sum_form = _ab_grad_sum(la, lb, params, log_ratio) - np.exp(weights[1]) * g_other
    near = np.where(w > 0.5, sum_form, plain)
    if a_ == 0.0 or b_ == 0.0:
        return near
    both = ~np.isneginf(la) & ~np.isneginf(lb)
    with np.errstate(invalid="ignore", over="ignore"):
        lx, ly = np.where(both, la, 0.0), np.where(both, lb, 0.0)
        d = np.where(both, _delta(la, lb, log_ratio), 0.0)
        far = both & (np.abs(a_ * d) >= 1.0) & (np.abs(b_ * d) >= 1.0)
        x_l, p_l, y_l = np.exp(lam * lx), np.exp(a_ * lx + b_ * ly), np.exp(lam * ly)
        if direct == "b":  # D(r‖q): y = q
            k = _weighted_coefficient(b_, a_, weights, w)
            three = (w / b_) * x_l - (k / (a_ * b_)) * p_l + y_l / a_
        else:  # D(q‖r): x = q
            k = _weighted_coefficient(a_, b_, weights, w)
            three = x_l / b_ - (k / (a_ * b_)) * p_l + (w / a_) * y_l
    return np.where(far & np.isfinite(three), three, near)


def _ab_grad(la, lb, axis, params, log_ratio=None):
    # ∂/∂log x = x^λ·(1 − e^(−b_ δ))/b_ ; ∂/∂log y = −y^λ·(e^(a_ δ) − 1)/a_.
    a_, b_ = params["alpha"], params["beta"]
    lam = a_ + b_
    x0 = np.isneginf(la)
    y0 = np.isneginf(lb)
    both = ~x0 & ~y0
    with np.errstate(invalid="ignore", over="ignore"):
        lx, ly = np.where(both, la, 0.0), np.where(both, lb, 0.0)
        d = np.where(both, _delta(la, lb, log_ratio), 0.0)
        lxy = a_ * lx + b_ * ly  # log(x^a_ y^b_), formed directly
        gx = scaled_expm1_ratio(lam * lx, -b_, d, lxy)
        gy = -scaled_expm1_ratio(lam * ly, a_, d, lxy)
        gy_only_y = np.exp(lam * lb) / a_ if a_ != 0 else np.inf
        gx_only_x = np.exp(lam * la) / b_ if b_ != 0 else np.inf
    gx = np.where(both, gx, np.where(y0 & ~x0, gx_only_x, 0.0))
    gy = np.where(both, gy, np.where(x0 & ~y0, gy_only_y, 0.0))
    return gx, gy


def _amari_as_ab(params):
    # (1 ∓ γ)/2 separately: near γ = ±1 one of them is small and 1 − s would carry the
    # rounding error of s (relative 1e-7 at γ = −1 + 1e-9), while 1 ± γ is exact there.
    gamma = params["alpha"]
    return {"alpha": (1.0 - gamma) / 2.0, "beta": (1.0 + gamma) / 2.0}


def _amari_value(la, lb, axis, params, log_ratio=None):
    return _ab_value(la, lb, axis, _amari_as_ab(params), log_ratio)


def _amari_grad(la, lb, axis, params, log_ratio=None):
    return _ab_grad(la, lb, axis, _amari_as_ab(params), log_ratio)


def _amari_pair(la, lb, params, log_ratio, weights, direct):
    return _ab_pair(la, lb, _amari_as_ab(params), log_ratio, weights, direct)


# --- Rényi -----------------------------------------------------------------------------------


def _normalize_log(l, axis):
    with np.errstate(divide="ignore"):
        return l - logsumexp(l, axis=axis, keepdims=True)


def _normalized_ratio(la, lb, axis, log_ratio):
    """δ of the normalized inputs: the given log ratio as it is (the AMiD loss forms it
    between normalized distributions, r and p or q, exactly 0 where they are equal; a shift
    by the two normalizers would only add their rounding, ±1e-16), else the difference of
    the normalized logs (+inf where b = 0 < a)."""
    if log_ratio is not None:
        return np.asarray(log_ratio, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return _normalize_log(la, axis) - _normalize_log(lb, axis)


_OVERFLOW_LOG = 700.0
#: Rows with |c·M| up to this use the series form log1p(c·M)/c (1 + c·M does not cancel).
_RENYI_SERIES_CM = 0.5


def _renyi_parts(la, lb, axis, rho, log_ratio=None):
    r"""Shared pieces of the Rényi value and gradient on normalized inputs, c = ρ − 1.

    Returns ``(c, a, omega, series, a_e, m)`` with ω = log(a^ρ b^(1−ρ)),
    :math:`a_e = a\,\mathrm{expm1}(c\delta)/c` (formed as ``(e^ω − a)/c`` once cδ > 1),
    :math:`m = \sum a_e` and ``series`` the rows (keepdims) where the series form
    ``log1p(c·m)/c`` is used: where no e^ω overflows and :math:`|c m| \le \tfrac12` (so that
    1 + cm does not cancel), for every ρ. There it is exact to a few ulps of itself (exactly
    0 at δ = 0); elsewhere ``logsumexp(ω)/c`` is (its terms are positive).
    """
    la = _normalize_log(la, axis)
    c = rho - 1.0
    a = _exp(la)
    a_pos = ~np.isneginf(la)  # not a > 0: a may underflow while a^ρ b^(1−ρ) does not
    d = _normalized_ratio(la, lb, axis, log_ratio)
    with np.errstate(invalid="ignore", over="ignore"):
        omega = np.where(a_pos, la + c * d, -np.inf)
        cd = np.where(a_pos, c * d, 0.0)
        small = np.abs(cd) <= 1.0
        a_e = np.where(small, a * (np.expm1(np.where(small, cd, 0.0)) / c), (np.exp(omega) - a) / c)
        a_e = np.where(a_pos, a_e, 0.0)
        m = np.sum(a_e, axis=axis, keepdims=True)
        top = np.max(omega, axis=axis, keepdims=True)
    series = (top <= _OVERFLOW_LOG) & (np.abs(c * m) <= _RENYI_SERIES_CM)
    return c, a, omega, series, a_e, m


def _renyi_value(la, lb, axis, params, log_ratio=None):
    rho = params["order"]
    if rho == 1.0:
        return _kl_value(
            _normalize_log(la, axis),
            _normalize_log(lb, axis),
            axis,
            params,
            _normalized_ratio(la, lb, axis, log_ratio),
        )
    c, _, omega, series, _, m = _renyi_parts(la, lb, axis, rho, log_ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        near = np.log1p(c * np.where(series, m, 0.0)) / c
        far = logsumexp(omega, axis=axis, keepdims=True) / c
    return np.squeeze(np.where(series, near, far), axis=axis)


def _renyi_grad(la, lb, axis, params, log_ratio=None):
    rho = params["order"]
    if rho == 1.0:
        return _kl_grad(
            _normalize_log(la, axis),
            _normalize_log(lb, axis),
            axis,
            params,
            _normalized_ratio(la, lb, axis, log_ratio),
        )
    c, a, omega, series, a_e, m = _renyi_parts(la, lb, axis, rho, log_ratio)
    with np.errstate(invalid="ignore", over="ignore"):
        denom = 1.0 + c * np.where(series, m, 0.0)
        # (ρ/c)(π − a) and −π, π the tilted distribution, in the series' exact form
        ga_near = rho * (a_e - a * m) / denom
        gb_near = -(a + c * a_e) / denom
        pi = np.exp(omega - logsumexp(omega, axis=axis, keepdims=True))
    return np.where(series, ga_near, (rho / c) * pi), np.where(series, gb_near, -pi)


# --- generic f-divergence -----------------------------------------------------------------


def _f_ratio(la, lb, b_pos, log_ratio=None):
    """u = a/b where b > 0 (1 elsewhere); a ratio beyond float64 range is an error, since a
    black-box generator cannot be evaluated there."""
    with np.errstate(invalid="ignore"):
        log_u = np.where(b_pos, _delta(la, np.where(b_pos, lb, 0.0), log_ratio), 0.0)
    if (log_u > 709.0).any():
        raise ValueError(
            "divergence 'f': a ratio a/b exceeds the float64 range (log ratio > 709), where a "
            "user generator cannot be evaluated; use a named divergence (e.g. 'kl', 'ab'), "
            "which work in the log domain"
        )
    return np.exp(log_u)


def _f_value(la, lb, axis, params, log_ratio=None):
    f = params["f"]
    a, b = _exp(la), _exp(lb)
    b_pos = ~np.isneginf(lb)
    u = _f_ratio(la, lb, b_pos, log_ratio)
    fu = call_generator(f, u, "f")
    if (np.isneginf(fu) & b_pos).any():
        raise ValueError(
            "the f-divergence generator f returned -inf on the input's ratios a/b; a convex "
            "f with f(1) = 0 is > -inf everywhere"
        )
    if (np.isposinf(fu) & b_pos & (u >= 1.0)).any():
        # A convex f is finite on (0, ∞): +inf at a finite ratio u ≥ 1 is an overflow of
        # f(u), not the value of the term b·f(u) (which may be finite).
        raise ValueError(
            "the f-divergence generator f overflowed (returned +inf) at a finite ratio a/b "
            "≥ 1, where the term b·f(a/b) may be finite; use a named divergence (e.g. 'kl', "
            "'ab'), which work in the log domain"
        )
    slope = params["f_inf_slope"]
    with np.errstate(invalid="ignore"):
        tail = np.where(~np.isneginf(la), np.inf if slope == np.inf else a * slope, 0.0)
    terms = np.where(b_pos, b * fu, tail)
    if np.isnan(terms).any():
        raise ValueError("the f-divergence generator f returned NaN on the input's ratios a/b")
    return _sum(terms, axis)


def _f_grad(la, lb, axis, params, log_ratio=None):
    f, fp = params["f"], params["f_prime"]
    if fp is None:
        raise ValueError("the gradient of divergence 'f' needs the parameter f_prime (f')")
    a, b = _exp(la), _exp(lb)
    b_pos = ~np.isneginf(lb)
    u = _f_ratio(la, lb, b_pos, log_ratio)
    fu = call_generator(f, u, "f")
    fpu = call_generator(fp, u, "f_prime")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # a·f'(a/b) → 0 as a → 0 for every generator with an integrable f' (u·f'(u) → 0
        # for f convex and finite at 0): a zero a (exact, or underflowed with u = 0) gives
        # 0, never 0·f'(0) = 0·(−inf).
        a_fpu = np.where(a > 0, a * fpu, 0.0)
        # b = 0 < a: the term is a·f_inf_slope (the loss's tail), so ∂/∂log a = a·slope and
        # ∂/∂log b = 0 (b is exactly 0 there).
        tail = np.where(~np.isneginf(la), a * params["f_inf_slope"], 0.0)
        ga = np.where(b_pos, a_fpu, tail)
        gb = np.where(b_pos, b * fu - a_fpu, 0.0)
    return ga, gb


# --- Jeffreys (symmetric KL) and skew KL ---------------------------------------------------


def _abs_diff(la, lb):
    """|a − b| = e^max·(−expm1(−|δ|)) without cancellation (0 where both are 0)."""
    hi = np.maximum(la, lb)
    with np.errstate(invalid="ignore"):
        mag = np.exp(hi) * -np.expm1(np.minimum(la, lb) - hi)
    return np.where(np.isneginf(hi), 0.0, mag)


def _jeffreys_value(la, lb, axis, params, log_ratio=None):
    # Σ (a − b)·δ: every term is |a − b|·|δ| ≥ 0, so the sum never cancels; a zero of
    # exactly one argument gives +inf.
    a0, b0 = np.isneginf(la), np.isneginf(lb)
    with np.errstate(invalid="ignore"):
        terms = _abs_diff(la, lb) * np.abs(np.where(a0 | b0, 0.0, _delta(la, lb, log_ratio)))
    terms = np.where(a0 != b0, np.inf, terms)
    return _sum(terms, axis)


def _jeffreys_grad(la, lb, axis, params, log_ratio=None):
    # ∂/∂la = aδ + (a − b), ∂/∂lb = −bδ − (a − b), with a − b formed without cancellation.
    a, b = _exp(la), _exp(lb)
    both = ~np.isneginf(la) & ~np.isneginf(lb)
    with np.errstate(invalid="ignore"):
        d = np.where(both, _delta(la, lb, log_ratio), 0.0)
    diff = np.sign(d) * _abs_diff(la, lb)
    return np.where(both, a * d + diff, 0.0), np.where(both, -b * d - diff, 0.0)


def _skew_log_ratio(la, lb, skew, log_ratio):
    """log(a/m), m = s·a + (1 − s)·b, 0 < s < 1: ``−log1p((1 − s)·expm1(−δ))`` for |δ| ≤ 1
    (exactly 0 at δ = 0, no ulp of |log m|), ``la − log m`` beyond; 0 where a = 0 (the
    term's factor a is 0 there)."""
    pos = ~np.isneginf(la)
    with np.errstate(divide="ignore", invalid="ignore"):
        lm = np.logaddexp(math.log(skew) + la, math.log1p(-skew) + lb)
        d = _delta(la, lb, log_ratio)
        near = np.abs(d) <= 1.0
        dn = np.where(near, d, 0.0)
        ratio = np.where(near, -np.log1p((1.0 - skew) * np.expm1(-dn)), la - lm)
    return np.where(pos, ratio, 0.0)


def _skew_kl_value(la, lb, axis, params, log_ratio=None):
    # KL(a‖m) = Σ a·log(a/m); log(a/m) ≤ −log s is finite for s > 0.
    skew = params["skew"]
    if skew == 0.0:
        return _kl_value(la, lb, axis, params, log_ratio)
    with np.errstate(invalid="ignore"):
        terms = np.where(~np.isneginf(la), _exp(la) * _skew_log_ratio(la, lb, skew, log_ratio), 0)
    return _sum(terms, axis)


def _skew_kl_grad(la, lb, axis, params, log_ratio=None):
    # D = Σ a(la − lm), lm = log(s a + (1−s) b): ∂/∂la ≡ a(la − lm) − s·a·(a/m) (mod a),
    # ∂/∂lb = −(1 − s)·b·(a/m).
    skew = params["skew"]
    if skew == 0.0:
        return _kl_grad(la, lb, axis, params, log_ratio)
    a, b = _exp(la), _exp(lb)
    pos = ~np.isneginf(la)
    dm = _skew_log_ratio(la, lb, skew, log_ratio)
    with np.errstate(invalid="ignore", over="ignore"):
        ratio = np.where(pos, np.exp(dm), 0.0)  # a/m ≤ 1/s
        ga = np.where(pos, a * (dm - skew * ratio), 0.0)
    return ga, -(1.0 - skew) * b * ratio


# --- the kernel table -----------------------------------------------------------------------

#: Divergence name -> (value kernel, log-input gradient kernel), registered against the
#: contract's records (:data:`amid_ref._specs.SPECS`); tests/test_registry.py checks that every
#: record has an entry.
KERNELS: dict[str, tuple[Kernel, GradKernel]] = {
    "kl": (_kl_value, _kl_grad),
    "js": (_js_value, _js_grad),
    "tv": (_tv_value, _tv_grad),
    "hellinger": (_hellinger_value, _hellinger_grad),
    "chi2": (_chi2_value, _chi2_grad),
    "amari": (_amari_value, _amari_grad),
    "renyi": (_renyi_value, _renyi_grad),
    "ab": (_ab_value, _ab_grad),
    "f": (_f_value, _f_grad),
    "jeffreys": (_jeffreys_value, _jeffreys_grad),
    "skew_kl": (_skew_kl_value, _skew_kl_grad),
}

#: ``g_direct + w·g_other`` in closed form, for the divergences whose two log-input gradients
#: are powers of a/b and can be far larger than their weighted sum: the AMiD chain rule
#: forms it for D(r‖q) and D(q‖r) (:func:`amid_ref.amid_grad`).
PAIR_KERNELS: dict[str, Callable] = {
    "chi2": _chi2_pair,
    "amari": _amari_pair,
    "ab": _ab_pair,
}

_REGISTRY: dict[str, Divergence] = {
    name: Divergence(spec, *KERNELS[name], PAIR_KERNELS.get(name))
    for name, spec in SPECS.items()
    if name in KERNELS
}

#: Names of the registered divergences (the contract's, in its order).
DIVERGENCES: tuple[str, ...] = tuple(_REGISTRY)


def get_divergence(name: str) -> Divergence:
    """The registry record of a divergence; unknown names raise ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"divergence name must be a string, got {name!r}")
    return _REGISTRY[get_spec(name, "amid_ref").name]


def divergence(a, b, name: str, axis: int = -1, log_input: bool = False, **params):
    r"""Divergence :math:`D(a\,\|\,b)` between distributions, reduced over ``axis``, in nats.

    .. math::

        \mathrm{KL}(a\|b) = \sum_x a\log\frac{a}{b},\quad
        D_\gamma^{\mathrm{Amari}} = \frac{4}{1-\gamma^2}\sum_x\Big[\tfrac{1-\gamma}{2}a
            + \tfrac{1+\gamma}{2}b - a^{\frac{1-\gamma}{2}}b^{\frac{1+\gamma}{2}}\Big],\quad
        D_\rho^{\mathrm{R}} = \frac{1}{\rho-1}\log\sum_x a^\rho b^{1-\rho},

    and every other record of the contract: :data:`amid_ref.DIVERGENCES` names them, and the
    divergence table of the mathematics page (generated from :data:`amid_ref._specs.SPECS`)
    gives each definition, its parameters with defaults and domains, and where it is
    ``+inf``. For example ``"js"`` takes ``beta`` (default ½), ``"ab"`` takes ``alpha`` and
    ``beta``; ``"f"`` takes a user generator ``f``.

    Parameters
    ----------
    a, b : array_like of float, shape (..., V, ...)
        Probabilities (normalized along ``axis`` within 1e-6), or log-probabilities if
        ``log_input`` (``-inf`` for zeros). Same shape.
    name : str
        A registered divergence name.
    axis : int
        The axis reduced over.
    log_input : bool
        Whether ``a`` and ``b`` are log-probabilities (preferred: no underflow).
    **params
        The divergence's parameters; unknown ones raise ``ValueError``.

    Returns
    -------
    ndarray or float
        The divergence, shape of the inputs without ``axis``.

    Notes
    -----
    Zero conventions: terms with ``a(x) = 0`` contribute 0; ``a(x) > 0 = b(x)`` gives
    ``+inf`` for KL-type divergences (chi2, Rényi with ρ ≥ 1, Amari/AB where the formula
    diverges). Every family is continuous in its parameters, evaluated by series near
    their limits: Amari γ → −1 is KL(a‖b) and γ → +1 is KL(b‖a)
    [claim: divergence.amari.limit_minus1] [claim: divergence.amari.limit_plus1]; Rényi
    ρ → 1 is KL [claim: divergence.renyi.limit_1]; AB (1, 0) is KL(a‖b) and (0, 1) is
    KL(b‖a) [claim: divergence.ab.kl_forward] [claim: divergence.ab.kl_reverse] with the
    1/a², 1/b² limit forms at a_ = 0, b_ = 0, a_ + b_ = 0 [claim: divergence.ab.limit_a0]
    [claim: divergence.ab.limit_b0] [claim: divergence.ab.limit_sum0]. Each is zero iff
    a = b [claim: divergence.zero_iff_equal]. The Amari and AB divergences are evaluated in
    their positive-measure form (with the linear terms), Rényi on the normalized inputs.

    References
    ----------
    The divergences enter the AMiD loss of Theorem 3.4 (zero iff the student equals the
    teacher, for every divergence of this registry) and the gradient of Proposition 3.5.

    See Also
    --------
    amid_ref.precise.divergence : the mpmath oracle (independent transcription).
    gpu.divergence : the torch twin, same names, parameters and checks.

    Examples
    --------
    >>> from amid_ref import divergence
    >>> round(float(divergence([0.5, 0.5], [0.9, 0.1], "kl")), 12)
    0.510825623766
    >>> round(float(divergence([0.5, 0.5], [0.9, 0.1], "jeffreys")), 12)
    0.878889830934
    """
    rec = get_divergence(name)
    if not isinstance(log_input, bool):
        raise TypeError(f"log_input must be a bool, got {log_input!r}")
    resolved = rec.resolve_params(params)
    names = ("log_a", "log_b") if log_input else ("a", "b")
    x = as_float_array(a, names[0], allow_neg_inf=log_input)
    y = as_float_array(b, names[1], allow_neg_inf=log_input)
    check_same_shape(x, y, names[0], names[1])
    ax = check_axis(x, axis, names[0])
    if log_input:
        check_log_probabilities(x, names[0], ax)
        check_log_probabilities(y, names[1], ax)
        la, lb = x, y
    else:
        check_probabilities(x, names[0], ax)
        check_probabilities(y, names[1], ax)
        with np.errstate(divide="ignore"):
            la, lb = np.log(x), np.log(y)
    out = np.asarray(rec.value(la, lb, ax, resolved), dtype=np.float64)
    if np.isnan(out).any():  # pragma: no cover - a kernel bug, never silent
        raise FloatingPointError(f"divergence {name!r} produced NaN; please report this input")
    return out[()] if out.ndim == 0 else out
