r"""Divergences in torch: value and log-input gradient in one call, on the last dimension.

Every kernel takes ``la = log a``, ``lb = log b`` (same shape (..., V), float32 or float64,
``-inf`` for a zero probability, no NaN) and returns ``(value, g_a, g_b)`` where ``value``
has shape (...) and :math:`g_a = \partial D/\partial \log a`,
:math:`g_b = \partial D/\partial \log b` (shape (..., V), ``None`` when not asked for).
The gradients are returned *modulo a multiple of a (resp. b) along the vocabulary*: the
AMiD chain rule (:mod:`gpu._loss`) projects them onto the simplex's tangent space, which
removes exactly such components.

The kernels are registered by record name in :data:`GPU_DIVERGENCES`; each divergence's
definition is its record's (:data:`amid_ref.contract.SPECS`, the table of
``docs/mathematics.md``), and the comment above each kernel gives the value it computes and,
where short, its ``(g_a, g_b)``, with :math:`\delta = \log a - \log b`.

Zero conventions are those of :func:`amid_ref.divergence`: terms with ``a = 0`` contribute 0
and ``a > 0 = b`` gives ``+inf`` for KL-type divergences. Every formula is evaluated in a
form that neither cancels catastrophically nor overflows (comments at each kernel).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import torch

from amid_ref.contract import NORMALIZATION_TOL, SPECS
from gpu._autograd import _refuse_double_backward
from gpu._elementwise import (
    all_,
    any_,
    compiling,
    exp_of,
    expm1,
    expm1_,
    surely_above,
    surely_nonzero,
    told,
    where,
)
from gpu._elementwise import side as _side
from gpu._mixture import _check_log_pair
from gpu._validation import check_bool, compute_dtype, resolve_div_params

NEG_INF = float("-inf")
INF = float("inf")

Kernel = Callable[
    [torch.Tensor, torch.Tensor, dict[str, Any], bool, bool],
    tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None],
]


# --- elementary helpers ------------------------------------------------------------------


def _log_abs_expm1(x: torch.Tensor) -> torch.Tensor:
    """``log|e^x − 1|`` without overflow: ``max(x, 0) + log(−expm1(−|x|))`` (−inf at 0)."""
    return x.clamp(min=0.0) + torch.log(-expm1(-x.abs()))


#: The AB terms' second-order form holds where max(|λz|, |cz|) ≤ 1 (:func:`_ab_pivot_terms`).
_SECOND_ORDER_CUTOFF = 1.0
#: Terms of its series (:func:`pivot_series`) by dtype: the first left out is
#: below 6e-10 (float32) and 2e-22 (float64) of the sum on the whole range.
_PIVOT_TERMS = {torch.float32: 12, torch.float64: 22}
#: Beyond c·z > 40 the product e^(log s)·e^(cz) is formed as one exponential (no overflow);
#: there e^(cz) exceeds 1 + cz by e^40/41, so the subtraction loses nothing.
_BIG = 40.0


def _times_exp(x: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """``x·e^(log_s)``, exactly 0 where ``x = 0`` and formed as one exponential
    ``sign(x)·e^(log|x| + log_s)`` where ``e^(log_s)`` alone leaves the normal range of the
    dtype (``y^λ`` with λ < 0 and y tiny: D(q‖q) is 0, not ``inf·0``)."""
    safe = 80.0 if x.dtype != torch.float64 else 700.0
    direct = x * torch.exp(log_s.clamp(-safe, safe))
    inside, side = told(log_s, -safe, safe, True, lambda: log_s.abs() <= safe)
    if side:  # the one-exponential form is not picked
        out = direct
    else:
        far = torch.sign(x) * torch.exp(torch.log(x.abs()) + log_s)
        out = far if side is False else where(inside, direct, far)
    if surely_nonzero(x):  # (eager CPU: no x = 0, nothing to fill)
        return out
    return out.masked_fill_(x == 0.0, 0.0)


def _scaled_expm1_ratio(
    log_s: torch.Tensor, c: float, z: torch.Tensor, log_top: torch.Tensor | None = None
) -> torch.Tensor:
    """``e^(log_s)·expm1(c z)/c`` (``e^(log_s)·z`` at c = 0), overflow-free; ``log_top``,
    if given, is ``log_s + c·z`` formed more accurately by the caller (used where
    ``e^(cz)`` dominates). Twin of :func:`amid_ref._special.scaled_expm1_ratio`."""
    if c == 0.0:
        return _times_exp(z, log_s)
    cz = c * z
    big, side = told(cz, -INF, _BIG, False, lambda: cz > _BIG)
    if side is not False:
        s = torch.exp(log_s)
        top = log_s + cz if log_top is None else log_top
        direct = (torch.exp(top) - s) / c
        if side:
            return direct
    near = _times_exp(expm1(cz if side is False else where(big, 0.0, cz)) / c, log_s)
    return near if side is False else where(big, direct, near)


#: pivot_series's results by its arguments (a few per process: one per AB objective).
_PIVOT_SERIES: dict[tuple, tuple[float, tuple[float, ...]]] = {}


# Traced, its value is a constant of the graph (the cache is a plain dict: dynamo traces
# through a functools.lru_cache wrapper and refuses it).
@torch.compiler.assume_constant_result
def pivot_series(a_: float, b_: float, mirror: bool,
                 dtype: torch.dtype) -> tuple[float, tuple[float, ...]]:  # fmt: skip
    r"""``(m, (D_2, …))``: the scale and the coefficients of the AB terms' second-order
    form (:func:`_ab_pivot_terms`) in ``dtype``: m = max(|λ|, |c|) rounded to ``dtype`` as
    the kernel multiplies by it, the pivot c = a_ (``mirror``: b_), and
    :math:`D_j = h_{j-2}(\lambda, c)/(m^{j-2}\,j!)` for the :data:`_PIVOT_TERMS` of
    ``dtype``, each rounded once from its exact rational value (λ = a_ + b_ exactly,
    :math:`h_n(\lambda, c) = \sum_{i=0}^{n} \lambda^i c^{n-i}`).

    With F(k) = (e^(kz) − 1 − kz)/k and λ − c the other parameter (the denominator),

    .. math::

        \frac{F(\lambda) - F(c)}{\lambda - c}
        = \sum_{j \ge 2} \frac{\lambda^{j-1} - c^{j-1}}{\lambda - c}\,\frac{z^j}{j!}
        = z^2 \sum_{j \ge 2} D_j\,u^{j-2}, \qquad u = m z,

    one series whose difference is taken in exact arithmetic (the two series of F(λ) and
    F(c) formed apart and subtracted cancel by up to a factor 3, and λ − c = denominator
    holds only before λ is rounded). On |u| ≤ 1 every |D_j u^(j−2)| ≤ (j − 1)/j!, and the
    sum is the mean of g(v) = (e^v (v − 1) + 1)/v² over v between cz and λz, at least
    g(−1) = 1 − 2/e: it does not cancel by more than a factor 3.8, and the first term left
    out is below (n + 1)/(n + 2)!/0.26 of it."""
    key = (a_, b_, mirror, dtype)
    if key in _PIVOT_SERIES:
        return _PIVOT_SERIES[key]
    lam = Fraction(a_) + Fraction(b_)
    c = Fraction(b_ if mirror else a_)
    scale = float(torch.tensor(float(max(abs(lam), abs(c))), dtype=dtype))
    # (parameters below the dtype's smallest subnormal: the range |z|·tiny ≤ 1 for them)
    m = Fraction(scale or float(torch.finfo(dtype).tiny))
    out, h, c_power = [], Fraction(1), Fraction(1)
    for j in range(2, _PIVOT_TERMS[dtype] + 2):  # h = h_(j−2)
        out.append(float(h / (m ** (j - 2) * math.factorial(j))))
        c_power *= c
        h = lam * h + c_power
    _PIVOT_SERIES[key] = float(m), tuple(out)
    return _PIVOT_SERIES[key]


def _pivot_series(u: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    """Σ_j D_j u^(j−2) by Horner's rule (:func:`pivot_series`)."""
    acc = torch.full_like(u, coefficients[-1])
    # Horner: acc ← c + acc·u, one pass per term (addcmul; mul_ then add_ took two: 1.5x
    # slower on CPU at 256000 float32 entries). The eager path only: traced, the plain form.
    for c in reversed(coefficients[:-1]):
        if acc.device.type == "cpu" and not compiling():
            torch.addcmul(torch.tensor(c, dtype=acc.dtype), acc, u, out=acc)
        else:
            acc.mul_(u).add_(c)
    return acc


def _ab_pivot_terms(log_s, lam, z, log_top_lam, pivot_grad, denom, series):
    r"""``e^(log_s)·[F(λ) − F(c)]/denom``, F(k) = (e^(kz) − 1 − kz)/k, the AB term around a
    pivot, denom = λ − c. Where max(|λz|, |cz|) ≤ 1 the second-order form: F(λ) − F(c)
    over λ − c as one series, e^(log_s)·z²·Σ D_j (mz)^(j−2) (``series``: m and the D_j,
    :func:`pivot_series`). Beyond, the −z parts of F cancel *analytically* and the
    first-order form G(k) = (e^(kz) − 1)/k is used: F(λ) − F(c) = G(λ) − G(c), free
    of cancellation there since |denom·z| ≥ ½; e^(log_s)·G(c) is minus the pivot's own
    gradient (``pivot_grad()``: −e^(log_s)·expm1(cz)/c as :func:`_ab` forms it, the same
    bits), so the far form is e^(log_s)·G(λ) + that gradient. Subtracting the two F's
    instead would cancel their −z parts after rounding: at z = −1e9 (a teacher token masked
    by −1e9) the term lost all its digits. The far form is that of
    :func:`amid_ref._divergences._ab_pivot_terms`; the reference sums the near form as
    F(λ) − F(c), two series."""
    m, coefficients = series
    u = z * m
    second = u.abs() <= _SECOND_ORDER_CUTOFF  # max(|λz|, |cz|) ≤ 1
    side = _side(second)  # all one form: the other is not formed (eager CPU)
    if side is not False:
        us, zs = (u, z) if side else (where(second, u, 0.0), where(second, z, 0.0))
        near = _times_exp(_pivot_series(us, coefficients).mul_(zs).mul_(zs), log_s)
        if side:
            return near
    zl = z if side is False else where(second, 0.0, z)
    far = _scaled_expm1_ratio(log_s, lam, zl, log_top_lam).add_(pivot_grad()).div_(denom)
    return far if side is False else where(second, near, far)


def _delta(la: torch.Tensor, lb: torch.Tensor, log_ratio: torch.Tensor | None) -> torch.Tensor:
    """δ = log a − log b: the caller's directly formed log ratio where it gives one (the
    AMiD loss forms log(r/p), log(r/q) from the mixture), else the difference."""
    return la - lb if log_ratio is None else log_ratio


# --- KL ----------------------------------------------------------------------------------


# kl: Σ aδ; (aδ, −a).
def _kl(la, lb, params, need_ga, need_gb, log_ratio=None):
    # Σ a(la − lb); a = 0 terms are 0 even where lb = −inf; a > 0 = b gives +inf.
    # A NaN term is 0·(±inf or NaN): 0 by convention where a = 0 (la = −inf), but +inf
    # where a > 0 has underflowed (la finite, e.g. r ∝ λ^(1/β)·p near α = 1) and b = 0.
    a = exp_of(la)
    d = _delta(la, lb, log_ratio)
    b_zero = None if surely_above(lb, NEG_INF) else torch.isneginf(lb)
    if b_zero is None or _side(b_zero) is False:  # no zero of b (eager CPU): no mask picks
        terms = (d * a).nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF)
    else:
        terms = where(b_zero, la - lb, d).mul_(a)
        terms = terms.nan_to_num_(nan=0.0, posinf=INF, neginf=NEG_INF)
        terms.masked_fill_(b_zero & ~torch.isneginf(la), INF)
    value = terms.sum(-1)
    ga = terms if need_ga else None  # a(δ + 1) ≡ aδ modulo a
    gb = a.neg_() if need_gb else None
    return value, ga, gb


# --- generalized Jensen-Shannon -----------------------------------------------------------


# js (β): β·KL(a‖m) + (1−β)·KL(b‖m), m = βa + (1−β)b;
# (βa(log a − log m), (1−β)b(log b − log m)).
def _js(la, lb, params, need_ga, need_gb, log_ratio=None):
    beta = params["beta"]
    if beta in (0.0, 1.0):  # m equals one argument: both KL terms vanish identically
        zero = torch.zeros(la.shape[:-1], dtype=la.dtype, device=la.device)
        return (
            zero,
            torch.zeros_like(la) if need_ga else None,
            torch.zeros_like(lb) if need_gb else None,
        )
    # log m = logaddexp(log β + la, log(1−β) + lb); each term is exact where its weight is 0.
    # Formed in place (chunk scratch is the fused loss's memory): at most four (N, V) live.
    lm = torch.logaddexp(la + math.log(beta), lb + math.log1p(-beta))
    ra, rb = la - lm, lm.neg_().add_(lb)
    del lm
    if log_ratio is not None:  # |δ| ≤ 1: log a − log m = −log1p((1−β)·expm1(−δ)), no ulp of |lm|
        near = log_ratio.abs() <= 1.0
        dn = where(near, log_ratio, 0.0)
        where(near, torch.log1p(expm1(-dn).mul_(1.0 - beta)).neg_(), ra, out=ra)
        where(near, expm1_(dn).mul_(beta).log1p_().neg_(), rb, out=rb)
        del near, dn
    a = exp_of(la)
    ta = ra.mul_(a).mul_(beta)
    if not surely_above(a, 0.0):  # (eager CPU: a reduction tells that no a is 0)
        ta.masked_fill_(a == 0, 0.0)
    del a
    b = exp_of(lb)
    tb = rb.mul_(b).mul_(1.0 - beta)
    if not surely_above(b, 0.0):
        tb.masked_fill_(b == 0, 0.0)
    del b
    value = ta.sum(-1) + tb.sum(-1)
    # ∂/∂la [β KL(a‖m) + (1−β) KL(b‖m)] = β a (la − lm), exactly (no modulo needed).
    return value, (ta if need_ga else None), (tb if need_gb else None)


# --- total variation, Hellinger, Pearson chi^2 ---------------------------------------------


# tv: ½Σ|a − b|; (½·sgn(a − b)·a, −½·sgn(a − b)·b).
def _tv(la, lb, params, need_ga, need_gb, log_ratio=None):
    a = exp_of(la)
    b = exp_of(lb)
    diff = a - b
    if log_ratio is not None:  # |δ| ≤ 1: a − b = b·expm1(δ), relative accuracy where a ≈ b
        near = log_ratio.abs() <= 1.0
        diff = where(near, expm1(where(near, log_ratio, 0.0)).mul_(b), diff)
    value = 0.5 * diff.abs().sum(-1)
    s = torch.sign(diff)
    ga = (0.5 * s).mul_(a) if need_ga else None
    gb = (-0.5 * s).mul_(b) if need_gb else None
    return value, ga, gb


def _sqrt_diff(la, lb, log_ratio=None):
    """√a − √b = sgn(δ)·e^(max/2)·(−expm1(−|δ|/2)) without cancellation (0 if both zero)."""
    hi = torch.maximum(la, lb)
    lo = torch.minimum(la, lb)
    gap = (lo - hi) if log_ratio is None else where(torch.isneginf(hi), 0.0, -log_ratio.abs())
    mag = torch.exp(hi / 2.0) * -expm1(gap / 2.0)
    mag = mag.masked_fill_(torch.isneginf(hi), 0.0)
    return where(la >= lb, mag, -mag)


# hellinger: ½Σ(√a − √b)²; ((√a − √b)√a/2, −(√a − √b)√b/2).
def _hellinger(la, lb, params, need_ga, need_gb, log_ratio=None):
    d = _sqrt_diff(la, lb, log_ratio)
    value = 0.5 * d.square().sum(-1)
    ga = (0.5 * d) * torch.exp(la / 2.0) if need_ga else None
    gb = (-0.5 * d) * torch.exp(lb / 2.0) if need_gb else None
    return value, ga, gb


# chi2: Σ(a − b)²/b; (2a·expm1(δ), −b·expm1(2δ)).
def _chi2(la, lb, params, need_ga, need_gb, log_ratio=None, *, want_sum=False):
    # Σ (a − b)²/b = Σ b·expm1(δ)², formed as exp(lb + 2 log|expm1(δ)|): no overflow, no
    # cancellation. b = 0 < a gives +inf, a = 0 < b gives b, both 0 give 0.
    a_pos = la != NEG_INF
    b_pos = lb != NEG_INF
    both = a_pos & b_pos
    d = where(both, _delta(la, lb, log_ratio), 0.0)
    lb0 = where(both, lb, 0.0)
    terms = torch.exp(lb0 + 2.0 * _log_abs_expm1(d))
    terms = where(both, terms, where(a_pos, INF, exp_of(lb)))
    value = terms.sum(-1)
    ga = gb = None
    if need_ga:  # ∂/∂la (a²/b − 2a + b) = 2a·expm1(δ)
        la0 = where(both, la, 0.0)
        ga = 2.0 * torch.sign(d) * torch.exp(la0 + _log_abs_expm1(d))
        ga = where(both, ga, where(a_pos, INF, 0.0))
    if need_gb:  # ∂/∂lb (a²/b − 2a + b) = −b·expm1(2δ)
        gb = -torch.sign(d) * torch.exp(lb0 + _log_abs_expm1(2.0 * d))
        gb = where(both, gb, where(b_pos, exp_of(lb), 0.0))
    if want_sum:  # ∂/∂la + ∂/∂lb = the term itself (degree-1 homogeneous), where both > 0
        return value, ga, gb, where(both, terms, ga + gb)
    return value, ga, gb


# --- AB-divergence and Amari's α-divergence --------------------------------------------------


# ab (a_, b_), λ = a_ + b_: −(1/(a_ b_))·Σ(a^a_ b^b_ − ...);
# (a^λ(1 − e^(−b_ δ))/b_, −b^λ·expm1(a_ δ)/a_).
def _ab(la, lb, params, need_ga, need_gb, log_ratio=None, *, want_sum=False):
    r"""AB-divergence, continuous in (a_, b_) with no branch but (0, 0).

    With δ = log x − log y, λ = a_ + b_ and F(c) = (e^(cδ) − 1 − cδ)/c, each term equals
    ``y^λ (F(λ) − F(a_))/b_`` (:func:`_ab_pivot_terms`), used for |a_| ≤ |b_|: the
    difference is divided by the larger step (near δ = 0 it is one series whose
    coefficients are formed exactly, :func:`pivot_series`). Otherwise the mirror identity
    D^(a_,b_)(x‖y) = D^(b_,a_)(y‖x) gives ``x^λ (F̃(λ) − F̃(b_))/a_`` with δ → −δ. The
    powers y^λ are folded into the exponentials before anything can overflow;
    ``log(x^a_ y^b_)`` is formed directly.
    Twin of :func:`amid_ref._divergences._ab_value` / ``_ab_grad``.
    """
    a_, b_ = params["alpha"], params["beta"]
    lam = a_ + b_
    x0 = torch.isneginf(la)
    y0 = torch.isneginf(lb)
    both = ~x0 & ~y0
    d = where(both, _delta(la, lb, log_ratio), 0.0)
    lx = where(both, la, 0.0)
    ly = where(both, lb, 0.0)
    lxy = lx * a_ + ly * b_  # log(x^a_ y^b_), not λ log y + a_ δ (an ulp of the larger log)
    # ∂/∂log x = x^λ (1 − e^(−b_ δ))/b_ and ∂/∂log y = −y^λ expm1(a_ δ)/a_ where both > 0;
    # the pivot's own (b_'s for |a_| ≤ |b_|) is the far form's second part too: formed once.
    raw: dict[str, torch.Tensor] = {}

    def grad_a():
        if "a" not in raw:
            raw["a"] = _scaled_expm1_ratio(lam * lx, -b_, d, lxy)
        return raw["a"]

    def grad_b():
        if "b" not in raw:
            raw["b"] = -_scaled_expm1_ratio(lam * ly, a_, d, lxy)
        return raw["b"]

    if a_ == 0.0 and b_ == 0.0:
        terms = 0.5 * d * d  # ½ Σ (log x − log y)²
    else:
        mirror = abs(a_) > abs(b_)
        series = pivot_series(a_, b_, mirror, d.dtype)
        if not mirror:
            terms = _ab_pivot_terms(lam * ly, lam, d, lam * lx, grad_b, b_, series)
        else:
            terms = _ab_pivot_terms(lam * lx, lam, -d, lam * ly, grad_a, a_, series)
    # inf − inf: a term beyond the floating range is +inf (not nan_to_num, which would
    # also clamp a +inf term to the dtype's largest number).
    terms = where(terms.isnan(), INF, terms)
    # Zero entries, from the general formula (+inf where it diverges); y^λ/(a_ λ) as one
    # exponential (a_·λ may underflow).
    t_only_y = (
        torch.exp(lam * lb - (math.log(a_) + math.log(lam)))
        if (a_ > 0 and lam > 0)
        else torch.full_like(lb, INF)
    )
    t_only_x = (
        torch.exp(lam * la - (math.log(b_) + math.log(lam)))
        if (b_ > 0 and lam > 0)
        else torch.full_like(la, INF)
    )
    terms = where(x0 & ~y0, t_only_y, terms)
    terms = where(y0 & ~x0, t_only_x, terms)
    terms = terms.masked_fill_(x0 & y0, 0.0)
    value = terms.sum(-1)
    ga = gb = None
    if need_ga:
        ga = grad_a()
        only_x = torch.exp(lam * la) / b_ if b_ != 0 else torch.full_like(la, INF)
        ga = where(both, ga, where(y0 & ~x0, only_x, 0.0))
    if need_gb:
        gb = grad_b()
        only_y = torch.exp(lam * lb) / a_ if a_ != 0 else torch.full_like(lb, INF)
        gb = where(both, gb, where(x0 & ~y0, only_y, 0.0))
    if want_sum:  # ∂/∂log x + ∂/∂log y = λ·term (homogeneous of degree λ), where both > 0
        return value, ga, gb, where(both, terms * lam, ga + gb)
    return value, ga, gb


# amari (γ): AB(s, 1 − s) with s = (1 − γ)/2.
def _amari(la, lb, params, need_ga, need_gb, log_ratio=None, *, want_sum=False):
    # (1 ∓ γ)/2 separately: near γ = −1, 1 − s would carry the rounding of s (relative
    # 1e-7 of b_ at γ = −1 + 1e-9, where 1 + γ is exact).
    gamma = params["alpha"]
    ab = {"alpha": (1.0 - gamma) / 2.0, "beta": (1.0 + gamma) / 2.0}
    return _ab(la, lb, ab, need_ga, need_gb, log_ratio, want_sum=want_sum)


# --- Rényi -------------------------------------------------------------------------------

#: Rows with |c·M| up to this use the series form log1p(c·M)/c (1 + c·M does not cancel).
_RENYI_SERIES_CM = 0.5


# renyi (ρ): log(Σ a^ρ b^(1−ρ))/(ρ − 1).
def _renyi(la, lb, params, need_ga, need_gb, log_ratio=None, *, reduce=None):
    r"""Rényi divergence of order ρ on normalized inputs, c = ρ − 1.

    Series form, on the rows where no e^ω overflows (ω = log a + cδ) and
    :math:`|cM| \le \tfrac12` (so that 1 + cM does not cancel), for every ρ: with
    :math:`a_e = a\,\mathrm{expm1}(c\delta)/c` (formed as ``(exp(ω) − a)/c`` once cδ > 1)
    and :math:`M = \sum a_e`, :math:`D = \mathrm{log1p}(cM)/c`,
    :math:`g_a = \rho(a_e - a M)/(1+cM)`, :math:`g_b = -(a + c\,a_e)/(1+cM)`: exact to a
    few ulps of itself, and exactly 0 at δ = 0 (where log-sum-exp leaves ±1e-16). Other
    rows: :math:`D = \mathrm{logsumexp}(\omega)/c` with the tilted distribution
    :math:`\pi = \mathrm{softmax}(\omega)`: :math:`g_a = (\rho/c)\pi`, :math:`g_b = -\pi`.
    Twin of :func:`amid_ref._divergences._renyi_value` / ``_renyi_grad``; ``log_ratio``,
    when given, is the log ratio of the normalized inputs (the loss's, used as it is).

    ``reduce`` (optional, a :class:`RowReduce`) replaces the row reductions over the last
    dimension (max and log-sum-exp of ω, the sum M) when the inputs are one slice of
    the vocabulary (:mod:`gpu._vocab_parallel`); ``None`` reduces locally.
    """
    rho = params["order"]
    if rho == 1.0:
        return _kl(la, lb, params, need_ga, need_gb, log_ratio)
    c = rho - 1.0
    a = exp_of(la)
    # Positivity from the log: a may underflow while a^ρ b^(1−ρ) does not.
    a_pos = la != NEG_INF
    d = where(a_pos, _delta(la, lb, log_ratio), 0.0)  # +inf where b = 0 < a
    omega = where(a_pos, la + c * d, NEG_INF)  # log(a^ρ b^(1−ρ))
    lse = torch.logsumexp(omega, dim=-1) if reduce is None else reduce.logsumexp(omega)
    overflow_log = 80.0 if la.dtype != torch.float64 else 700.0
    cd = where(a_pos, c * d, 0.0)
    small = cd.abs() <= 1.0
    a_e = where(small, a * (expm1(where(small, cd, 0.0)) / c), (torch.exp(omega) - a) / c)
    a_e = a_e.masked_fill_(~a_pos, 0.0)
    m = a_e.sum(-1, keepdim=True) if reduce is None else reduce.sum(a_e).unsqueeze(-1)
    top = omega.amax(-1, keepdim=True) if reduce is None else reduce.max(omega).unsqueeze(-1)
    series = (top <= overflow_log) & ((c * m).abs() <= _RENYI_SERIES_CM)
    m = where(series, m, 0.0)
    denom = 1.0 + c * m
    value = where(series[..., 0], torch.log1p(c * m[..., 0]) / c, lse / c)
    ga = gb = None
    if need_ga or need_gb:
        pi = torch.exp(omega - lse.unsqueeze(-1)).nan_to_num_(nan=0.0)
        if need_ga:
            ga = where(series, rho * (a_e - a * m) / denom, (rho / c) * pi)
        if need_gb:
            gb = where(series, -(a + c * a_e) / denom, -pi)
    return value, ga, gb


# --- Jeffreys (symmetric KL) and skew KL ----------------------------------------------------


# jeffreys: Σ(a − b)δ.
def _jeffreys(la, lb, params, need_ga, need_gb, log_ratio=None):
    # Σ (a − b)·δ with |a − b| = e^max·(−expm1(−|δ|)): every term is ≥ 0 and free of
    # cancellation; a zero of exactly one argument gives +inf.
    a0 = torch.isneginf(la)
    b0 = torch.isneginf(lb)
    both = ~a0 & ~b0
    d = where(both, _delta(la, lb, log_ratio), 0.0)
    hi = where(both, torch.maximum(la, lb), 0.0)
    abs_diff = torch.exp(hi) * -expm1(-d.abs())
    terms = (abs_diff * d.abs()).masked_fill_(a0 != b0, INF)
    value = terms.sum(-1)
    diff = torch.sign(d) * abs_diff  # a − b (0 where either is zero: masked below)
    ga = gb = None
    if need_ga:  # ∂/∂la = aδ + (a − b)
        ga = where(both, exp_of(la) * d + diff, 0.0)
    if need_gb:  # ∂/∂lb = −bδ − (a − b)
        gb = where(both, -exp_of(lb) * d - diff, 0.0)
    return value, ga, gb


# skew_kl (s): KL(a‖m), m = s·a + (1 − s)·b.
def _skew_kl(la, lb, params, need_ga, need_gb, log_ratio=None):
    # KL(a‖m), m = s·a + (1 − s)·b: log(a/m) = −log1p((1 − s)·expm1(−δ)) for |δ| ≤ 1 (exactly
    # 0 at δ = 0, no ulp of |log m|), la − log m beyond; ≤ −log s for s > 0. Twin of
    # amid_ref._divergences._skew_log_ratio.
    skew = params["skew"]
    if skew == 0.0:
        return _kl(la, lb, params, need_ga, need_gb, log_ratio)
    lm = torch.logaddexp(la + math.log(skew), lb + math.log1p(-skew))
    pos = la != NEG_INF
    d = _delta(la, lb, log_ratio)
    near = d.abs() <= 1.0
    dn = where(near, d, 0.0)
    dm = where(near, torch.log1p(expm1(-dn).mul_(1.0 - skew)).neg_(), la - lm)
    dm = dm.masked_fill_(~pos, 0.0)
    del lm, near, dn
    a = exp_of(la)
    value = (a * dm).sum(-1)
    ratio = torch.exp(dm).masked_fill_(~pos, 0.0)  # a/m ≤ 1/s
    ga = a * (dm - skew * ratio) if need_ga else None  # ≡ ∂/∂la modulo a
    gb = -(1.0 - skew) * exp_of(lb) * ratio if need_gb else None
    return value, ga, gb


# --- vocabulary slices ----------------------------------------------------------------------


#: Divergences whose row value is a sum of elementwise terms and whose log-input gradients
#: are elementwise: called on a slice of the vocabulary, their kernel returns that slice's
#: partial sum and the exact gradient entries of the slice. Rényi (ρ ≠ 1) is not such a sum:
#: it takes a :class:`RowReduce` for its log-sum-exp and its series sum.
def is_sum_of_terms(name: str, params: dict[str, Any]) -> bool:
    """Whether ``name`` with ``params`` is in :data:`SUM_OF_TERMS` (Rényi of order 1 is KL)."""
    return name in SUM_OF_TERMS or (name == "renyi" and params["order"] == 1.0)


class RowReduce:
    """Row reductions over the last dimension, returning shape (...); local by default.

    :mod:`gpu._vocab_parallel` subclasses it to all-reduce over the shards of a row.
    """

    def max(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(-1)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(-1)

    def logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(x, dim=-1)


# --- registry ----------------------------------------------------------------------------

#: The kernels of the gpu package, registered against the contract's records
#: (:data:`amid_ref._specs.SPECS`; ``"f"`` is not offered, with the record's reason).
GPU_DIVERGENCES: dict[str, Kernel] = {
    "kl": _kl,
    "js": _js,
    "tv": _tv,
    "hellinger": _hellinger,
    "chi2": _chi2,
    "amari": _amari,
    "renyi": _renyi,
    "ab": _ab,
    "jeffreys": _jeffreys,
    "skew_kl": _skew_kl,
}


def _weighted_coefficient(c0: float, c1: float, w, w_bar, w_diff) -> torch.Tensor:
    """``c0 + c1·w`` around the anchor 0, ½ or 1 nearest to w (twin of
    :func:`amid_ref._divergences._weighted_coefficient`)."""
    out = w_diff * (c1 / 2.0)
    out.add_(c0 + c1 / 2.0)
    where(w > 0.75, w_bar * -c1 + (c0 + c1), out, out=out)
    return where(w < 0.25, w * c1 + c0, out, out=out)


def _ab_pair(la, lb, params, log_ratio, weights, direct, ga, gb, g_sum, scale=1.0):
    r"""``scale·(g_direct + w·g_other)`` for D(r‖q) (``direct="b"``) or D(q‖r) (``"a"``),
    from the kernel's gradients and their closed-form sum ``g_sum`` (all ``scale`` times
    the AB parameters' own: χ² is 2·AB(2, −1)); twin of
    :func:`amid_ref._divergences._ab_pair` (the three powers X, P, Y where
    |a_ δ|, |b_ δ| ≥ 1; ``G − w̄·g_other`` where w > ½; the plain sum below). Formed with
    few (n, V) temporaries: chunk scratch is the fused loss's memory."""
    a_, b_ = params["alpha"], params["beta"]
    lam = a_ + b_
    w, w_bar, w_diff = weights
    g_direct, g_other = (gb, ga) if direct == "b" else (ga, gb)
    out = torch.sub(g_sum, w_bar * g_other)
    where(w > 0.5, out, torch.addcmul(g_direct, w, g_other), out=out)
    if a_ == 0.0 or b_ == 0.0:
        return out
    both = (la != NEG_INF) & (lb != NEG_INF)
    d = where(both, _delta(la, lb, log_ratio), 0.0)
    far = both & ((a_ * d).abs() >= 1.0) & ((b_ * d).abs() >= 1.0)
    del d
    if not any_(far):
        return out
    lx = where(both, la, 0.0)
    ly = where(both, lb, 0.0)
    del both
    if direct == "b":  # D(r‖q), y = q: (w/b_)·X − k/(a_ b_)·P + Y/a_, k = w a_ + b_
        three = torch.exp(lx * lam).mul_(w).div_(b_)
        k = _weighted_coefficient(b_, a_, w, w_bar, w_diff)
        three.add_(torch.exp(ly * lam).div_(a_))
    else:  # D(q‖r), x = q: X/b_ − k/(a_ b_)·P + (w/a_)·Y, k = a_ + w b_
        three = torch.exp(lx * lam).div_(b_)
        k = _weighted_coefficient(a_, b_, w, w_bar, w_diff)
        three.add_(torch.exp(ly * lam).mul_(w).div_(a_))
    three.sub_(k.mul_(torch.exp(lx.mul_(a_).add_(ly.mul_(b_)))).div_(a_ * b_))
    del k, lx, ly
    if scale != 1.0:
        three.mul_(scale)
    keep = far & torch.isfinite(three)
    return where(keep, three, out, out=out)


def _amari_pair(la, lb, params, log_ratio, weights, direct, ga, gb, g_sum):
    gamma = params["alpha"]
    ab = {"alpha": (1.0 - gamma) / 2.0, "beta": (1.0 + gamma) / 2.0}
    return _ab_pair(la, lb, ab, log_ratio, weights, direct, ga, gb, g_sum)


_CHI2_AS_AB = {"alpha": 2.0, "beta": -1.0}


def _chi2_pair(la, lb, params, log_ratio, weights, direct, ga, gb, g_sum):
    # χ² = 2·AB(2, −1) where both are positive (twin of amid_ref._divergences._chi2_pair);
    # its own gradients elsewhere (a zero of one argument)
    out = _ab_pair(la, lb, _CHI2_AS_AB, log_ratio, weights, direct, ga, gb, g_sum, 2.0)
    both = (la != NEG_INF) & (lb != NEG_INF)
    if all_(both):
        return out
    g_direct, g_other = (gb, ga) if direct == "b" else (ga, gb)
    return where(both, out, torch.addcmul(g_direct, weights[0], g_other), out=out)


#: ``g_direct + w·g_other`` in closed form (``pair(la, lb, params, log_ratio, (w, w̄, w − w̄),
#: direct, g_a, g_b, g_a + g_b)``), for the divergences whose two log-input gradients are
#: powers of a/b; their kernels give ``g_a + g_b`` in closed form with ``want_sum=True``
#: (a fourth output). Twins of :data:`amid_ref._divergences.PAIR_KERNELS`.
GPU_PAIR: dict[str, Callable] = {
    "chi2": _chi2_pair,
    "amari": _amari_pair,
    "ab": _ab_pair,
}
GRAD_SUM = frozenset(GPU_PAIR)

#: Divergences whose row value is a sum of elementwise terms and whose log-input gradients
#: are elementwise: called on a slice of the vocabulary, their kernel returns that slice's
#: partial sum and the exact gradient entries of the slice. Rényi (ρ ≠ 1) is not such a sum:
#: it takes a :class:`RowReduce` for its log-sum-exp and its series sum.
SUM_OF_TERMS = frozenset(GPU_DIVERGENCES) - {"renyi"}


def divergence(
    a: torch.Tensor,
    b: torch.Tensor,
    name: str,
    dim: int = -1,
    log_input: bool = False,
    **params: Any,
) -> torch.Tensor:
    r"""Divergence :math:`D(a\,\|\,b)` between distributions, reduced over ``dim``, in nats.

    .. math::

        \mathrm{KL}(a\|b) = \sum_x a\log\frac{a}{b},\qquad
        D^{\mathrm{AB}}_{a_*,b_*} = -\frac{1}{a_* b_*}\sum_x\Big(a^{a_*}b^{b_*}
            - \tfrac{a_*}{a_*+b_*}a^{a_*+b_*} - \tfrac{b_*}{a_*+b_*}b^{a_*+b_*}\Big),

    and every other record of the contract that the package offers (:data:`gpu.DIVERGENCES`;
    the divergence table of the mathematics page gives each definition and its parameters).
    Torch twin of :func:`amid_ref.divergence`, with the same parameter names, defaults and
    checks (:mod:`amid_ref._specs`).

    Parameters
    ----------
    a, b : torch.Tensor, shape (..., V, ...)
        Probabilities, or log-probabilities if ``log_input`` (``-inf`` for zeros); same
        shape, any floating dtype.
    name : str
        One of :data:`gpu.DIVERGENCES`.
    dim : int
        The dimension reduced over.
    log_input : bool
        Whether ``a`` and ``b`` are log-probabilities (preferred: no underflow).
    **params
        The divergence's parameters; unknown ones raise ``ValueError``.

    Returns
    -------
    torch.Tensor
        Shape of the inputs without ``dim``, float32 (float64 for float64 inputs); ``+inf``
        where the divergence is infinite (e.g. KL with ``a > 0 = b``). Differentiable
        once (closed-form backward; ``create_graph=True`` raises): the gradient is the
        one tangent to the simplex, that of :math:`D(a/\sum a\,\|\,b/\sum b)`, which
        composed with ``softmax``/``log_softmax`` equals autograd of the textbook
        formula; at zero probabilities (``-inf`` log inputs) it is 0.

    Notes
    -----
    Zero conventions: terms with ``a(x) = 0`` contribute 0; ``a(x) > 0 = b(x)`` gives
    ``+inf`` for KL-type divergences. Amari γ → −1 is KL(a‖b), γ → +1 is KL(b‖a); AB (1, 0)
    is KL(a‖b) and (0, 1) is KL(b‖a), continuous through its limits a_ = 0, b_ = 0,
    a_ + b_ = 0. Rényi is evaluated on the renormalized inputs.

    References
    ----------
    The divergences enter the AMiD loss of Theorem 3.4 and the gradient of Proposition 3.5
    (:func:`gpu.amid_loss`).

    See Also
    --------
    amid_ref.divergence : the float64 reference these values are held to.
    amid_ref.precise.divergence : the mpmath oracle.

    Examples
    --------
    >>> import torch, gpu
    >>> a, b = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    >>> round(float(gpu.divergence(a, b, "kl")), 6)
    0.510826
    """
    resolved = resolve_div_params(name, params)
    check_bool(log_input, "log_input")
    names = ("log_a", "log_b") if log_input else ("a", "b")
    _check_log_pair(a, b, dim, *names)
    cdt = compute_dtype(a.dtype, b.dtype)
    x = a.to(cdt).movedim(dim, -1)
    y = b.to(cdt).movedim(dim, -1)
    if not log_input:
        for t, n in ((x, names[0]), (y, names[1])):
            if bool((t < 0).any()):
                raise ValueError(f"{n} has negative probabilities")
        x, y = _LogOfProbabilities.apply(x), _LogOfProbabilities.apply(y)
    for v, n in ((x, names[0]), (y, names[1])):  # the reference's normalization rule
        lse = torch.logsumexp(v.detach(), dim=-1)
        if not bool((lse.abs() <= NORMALIZATION_TOL).all()):
            worst = float((lse.abs()).nan_to_num(nan=INF).max())
            raise ValueError(
                f"{n} is not normalized along dim {dim}: |log Σ| up to {worst:.3g} > "
                f"tolerance {NORMALIZATION_TOL}"
            )
    if SPECS[name].on_normalized:
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
        y = y - torch.logsumexp(y, dim=-1, keepdim=True)
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return _DivergenceFunction.apply(x, y, name, resolved)
    with torch.no_grad():
        value, _, _ = GPU_DIVERGENCES[name](x, y, resolved, False, False)
    return value


def _tangent(g: torch.Tensor, la: torch.Tensor) -> torch.Tensor:
    r"""``g − a Σg/Σa``: the component of a log-domain gradient tangent to the simplex.

    The kernels return :math:`\partial D/\partial\log a` up to a multiple of ``a``; this
    projection removes exactly that freedom, giving the gradient of
    :math:`D(a/\textstyle\sum a\,\|\,\cdot)`. Composed with ``log_softmax`` (or ``softmax``)
    it equals the autograd gradient of the textbook formula.
    """
    w = torch.softmax(la, dim=-1).nan_to_num_(nan=0.0)
    return g - w * g.sum(-1, keepdim=True)


class _DivergenceFunction(torch.autograd.Function):
    """Value and closed-form log-domain gradients of a divergence kernel."""

    @staticmethod
    def forward(ctx, la, lb, name, params):
        need_a, need_b = ctx.needs_input_grad[:2]
        value, ga, gb = GPU_DIVERGENCES[name](la, lb, params, need_a, need_b)
        ctx.save_for_backward(
            la, lb, _tangent(ga, la) if need_a else None, _tangent(gb, lb) if need_b else None
        )
        return value

    @staticmethod
    def backward(ctx, grad_value):
        return _refuse_double_backward(_divergence_backward)(ctx, grad_value)


def _divergence_backward(ctx, grad_value):
    _, _, ga, gb = ctx.saved_tensors
    up = grad_value.unsqueeze(-1)
    return (
        None if ga is None else ga * up,
        None if gb is None else gb * up,
        None,
        None,
    )


class _LogOfProbabilities(torch.autograd.Function):
    """``log a`` whose gradient is 0 at ``a = 0`` (outside the support), not 0/0 = NaN."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return torch.log(a)

    @staticmethod
    def backward(ctx, grad):
        return _refuse_double_backward(_log_backward)(ctx, grad)


def _log_backward(ctx, grad):
    (a,) = ctx.saved_tensors
    return where(a > 0, grad / a, 0.0)
