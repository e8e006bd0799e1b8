# ruff: noqa: E501, RUF059  -- kernel signatures list every runtime scalar and constexpr; passes unpack the shared tile helpers whole
r"""The Triton backend of the AMiD engine: one chunk of rows streamed over V in tiles.

:func:`triton_chunk` has the contract of :func:`gpu._torch_kernel.chunk` (loss per row in
float32, the gradient written in the student's dtype or returned in float32, the row flags
of :mod:`gpu._flags`) and follows its numerics form for form: every elementwise helper
below names the torch function it mirrors, and that function's comment says why the form
is there. The exceptions cost a GPU fewer instructions and the torch kernel more tensor
passes, each with its own bound and test: the mixture's near branch as a Taylor series
(:func:`_cgf`); expm1(x)/x as its series (:func:`_expm1_ratio`) in the AB family's
e^(log s)·expm1(cz)/c (:func:`_scaled_expm1_pair`) and pass b's log-ratio sums; log1p on
[0, 1] as a polynomial (:func:`_log1p_unit`) in the mixture's correction and logaddexp.
Each program owns ``BLOCK_R`` rows and walks the vocabulary in ``BLOCK_V`` tiles, holding
a (BLOCK_R, BLOCK_V) tile in float32 registers; nothing of size (rows, V) is ever written
but the gradient, G between passes c2 and d, and, with a gradient in the
mixture's |β| > 0 regimes, log m and its ratio between passes b and c2 and, for the AB
family and χ² with q an argument, their closed-form pair and g_r between c and c2 (below).

Passes. Each pass is one ``@triton.jit`` kernel; between passes only per-row statistics
travel, as (rows,) float32/int32 tensors, so that a caller holding one slice of the
vocabulary all-reduces them between the passes (:func:`shard_chunk`, the kernel of
:func:`gpu.vocab_parallel_amid_loss`: passes a and b then leave their online maxima and
the sums relative to them, combined across the slices as a pass combines its tiles).
Every pass re-reads the two logit rows and recomputes the elementwise
quantities it needs from them and the statistics, except where forming them again costs
more instructions than storing them costs bytes (the kernel is bound by instruction issue,
``python -m gpu.kernel_cost``): pass d reads the student direction G that pass c2 stored,
with a gradient in the |β| > 0 regimes passes c and c2 read log m and its ratio to
the reference that pass b stored, and there, for the AB family and χ² with q an argument
and the assistant live, pass c2 reads g_q + w·g_r and g_r that pass c stored.

====  =====================  =============================================  ============
pass  kernel                 per-row output                                 reads / el.
====  =====================  =============================================  ============
a     ``_normalizer_pass``   max and first arg-max of s, t, and ``log1p``   2 logits
                             of the others' sum of (x−max)/T (online
                             maximum; log-normalizer with the top entry
                             exact); bad-row and temperature flags
b     ``_mixture_pass``      max and arg-max of log m (online), log Z =     2 logits
                             shift + log1p(others), the sums of log(r/ŝ)
                             (:func:`gpu._torch_kernel._log_ratio_to_mixture`);
                             empty-support flag; with a gradient and        + log m,
                             |β| > 0, log m and its ratio stored            ratio written
c0    ``_renyi_pass``        Rényi only: max ω, Σ e^(ω − max ω) (online     2 logits
                             log-sum-exp) and M = Σ a_e of
                             :func:`gpu._divergences._renyi`
c     ``_divergence_pass``   the loss; Σ and top entry of g_r (for          2 logits
                             P_r), the two row sums of the normalizer term  (+ log m,
                             K, the silent entries' Σ g_r; loss flags; AB   ratio;
                             family, χ²: g_q + w·g_r and g_r stored         + 2 written)
c2    ``_gradient_sum_pass`` Σ and top entry of G = g_q + w·P_r(g_r) −      2 logits +
                             g_silent·K; G itself, float32, into a scratch  G written
                             (or the float32 gradient); AB family, χ²:      (+ log m,
                             from the stored pair and g_r                   ratio; or
                                                                            log m, pair,
                                                                            g_r)
d     ``_gradient_pass``     the gradient P_q(G), scaled, cast, written     s + G +
                             (and the rounding residual into ``out_lo``);   1–2 writes
                             grad flags
====  =====================  =============================================  ============

Bytes per element with a gradient, in bfloat16: passes a, b and c read the two logits
(12 B), c2 reads them and writes G (8 B), d reads the student's logits and G and writes
the gradient (8 B): 28 B; in the |β| > 0 regimes b also writes log m and the ratio, c
reads them and c2 reads log m (and the ratio where the divergence needs it): 48–52 B;
the AB family and χ² with q an argument add c's two writes and c2's reads of them in
place of the ratio: 64 B. A
loss alone stops after c and stores nothing: 12 B. Rényi adds pass c0 (4 B). Storing G
spares pass d the mixture, the divergence and P_r, most of its instructions; storing the
mixture spares c and c2 its pivot, correction, near series and ratios; storing the AB
family's pair spares c2 the divergence (AB: 22.9 → 2.5 issue slots per element in c2,
15.6 → 23.1 in c, which forms the pair now). The passes that need no gradient are
skipped when ``want_grad`` is False; c2 and d are skipped when the student gets no
gradient through q directly and r alike.

Specialization. The divergence, the argument order, the mixture regime (λ = 0, λ = 1,
α = −∞, α = +∞, α = 1 geometric, |β| ≥ ½ one-kernel form, |β| < ½ pivoted form with
its α → 1 series), λ ≤ ½, the sign of β, ``want_grad`` and the detached assistant are
``tl.constexpr``: each compiled variant holds only its own branch. α, λ, the divergence
parameters and 1/T enter as runtime float32 scalars formed in double precision (the
torch kernel's Python constants).

Elementary functions. Compiled on CUDA, ``exp``/``log``/``log1p``/``expm1`` are
libdevice's (a few ulps over the whole range; ``tl.exp`` is the approximate ``ex2``).
Under the interpreter (``TRITON_INTERPRET=1``: numpy) ``log1p`` and ``expm1`` are formed
from ``log``/``exp`` by Goldberg's and Kahan's identities (``log(u)·x/(u−1)``, u = 1 + x;
``(u−1)·x/log u``, u = eˣ), exact to a few ulps.

Divergences. Every divergence of :data:`gpu.DIVERGENCES` (:data:`TRITON_DIVERGENCES`) runs
in Triton for every order, α, λ, temperature and ``detach_assistant``. Their parameters
enter as runtime float32 scalars (``prm``: JS's β, the skew) or as one small float32
tensor (``dprm``: AB's a_, b_, a_ + b_, the logs of its zero-entry terms, the pair's
coefficient and its second-order series, gpu._divergences.pivot_series; Rényi's ρ, ρ − 1,
ρ/(ρ − 1)), all formed in double precision on the host.
AB and Amari (AB((1 − γ)/2, (1 + γ)/2)) take the pivot of :func:`gpu._divergences._ab`
(a DIV id per pivot); with q an argument and the assistant live, g_q + w·g_r is formed in
closed form (:func:`gpu._divergences._ab_pair`, χ² as 2·AB(2, −1)) from the mixture's w̄
and w − w̄. Rényi's loss is not a sum of terms: pass c0 gathers its row sums, and pass c
and the gradient read them.

What runs where: float64 inputs (float64 is the torch kernel's, exact to its ulps) and a
temperature whose 1/T is beyond float32's normal range are computed by
:func:`gpu._torch_kernel.chunk`, deliberately and with the same contract
(:func:`runs_in_triton` says which).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os

import numpy as np
import torch
import triton
import triton.language as tl

from gpu._divergences import (
    _BIG,
    _PIVOT_TERMS,
    _RENYI_SERIES_CM,
    _SECOND_ORDER_CUTOFF,
    GPU_DIVERGENCES,
    _ab,
    _amari,
    _chi2,
    _hellinger,
    _jeffreys,
    _js,
    _kl,
    _renyi,
    _skew_kl,
    _tv,
    pivot_series,
)
from gpu._flags import (
    _BAD_STUDENT,
    _BAD_TEACHER,
    _EMPTY_SUPPORT,
    _FLAG_DTYPE,
    _INF_LOSS,
    _NAN_LOSS,
    _TEMPERATURE_STUDENT,
    _TEMPERATURE_TEACHER,
)
from gpu._mixture import _BETA_CLAMP, _FAST_BETA
from gpu._torch_kernel import chunk as torch_chunk
from gpu._torch_kernel import small_lambda_pair

__all__ = ["TRITON_DIVERGENCES", "gradient_tile", "runs_in_triton", "shard_chunk", "triton_chunk"]

try:  # compiled on CUDA: libdevice's accurate elementary functions
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - older triton
    libdevice = None

# DIV ids (constexpr): the AB family (AB, Amari as AB(s, 1 − s)) by its pivot, as
# gpu._divergences._ab chooses it: |a_| ≤ |b_|, the mirrored form, and a_ = b_ = 0
_KL, _JS, _TV, _HELLINGER, _JEFFREYS, _SKEW_KL, _AB, _AB_MIRROR, _AB_ZERO, _CHI2, _RENYI = range(11)
#: The DIV ids whose g_q + w·g_r is formed in closed form (gpu._divergences.GPU_PAIR).
_PAIR_FIRST, _PAIR_LAST = _AB, _CHI2
# The jitted code spells these ids and the torch kernel's cut-offs as literals (triton
# reads no global that is not a constexpr): they must stay these numbers.
assert (_AB, _AB_ZERO, _CHI2, _PAIR_LAST, _RENYI) == (6, 8, 9, 9, 10)
assert (_SECOND_ORDER_CUTOFF, _BIG, _RENYI_SERIES_CM) == (1.0, 40.0, 0.5)
assert _PIVOT_TERMS[torch.float32] == 12  # spelled in _pivot_series

#: The torch kernels (gpu._divergences) that :func:`_divergence` ports, by its DIV id (the
#: AB family's id is the pivot's, chosen per spec by :func:`_divergence_constants`).
_PORTED = {_kl: _KL, _js: _JS, _tv: _TV, _hellinger: _HELLINGER, _jeffreys: _JEFFREYS,
           _skew_kl: _SKEW_KL, _ab: _AB, _amari: _AB, _chi2: _CHI2, _renyi: _RENYI}  # fmt: skip
#: Slots of the divergence's constants (a float32 tensor, ``dprm_ptr``): AB's a_, b_ (χ²'s
#: pair: AB(2, −1)),
#: λ = a_ + b_, log(a_ λ) and log(b_ λ) (NaN where the zero-entry term is +inf), and the
#: pair's coefficient c0 + c1/2 (gpu._divergences._weighted_coefficient); Rényi's ρ, c = ρ − 1
#: and ρ/c; each formed in double precision. AB also: the scale m and the coefficients
#: D_2 … D_13 of its terms' second-order form (gpu._divergences.pivot_series), from slot 8.
#: JS and skew KL (parameter π): the series coefficients (_cgf) of log1p((1 − π)·expm1(x))
#: and of log1p(π·expm1(x)).
_P_A, _P_B, _P_LAM, _P_KY, _P_KX, _P_HALF, _P_M = range(7)
_P_SERIES = 8
_P_CGF_1M, _P_CGF = 8, 23
_N_DPRM = 38

#: Whether pass c stores the AB family's and χ²'s closed-form pair and g_r for pass c2
#: (STORE_PAIR; a switch for the tests, which compare the two paths bit for bit).
_STORE_PAIR = True

#: The divergences whose every spec (order, α, λ, T, detach) runs in Triton.
TRITON_DIVERGENCES = frozenset(n for n, k in GPU_DIVERGENCES.items() if k in _PORTED)

# mixture regimes (constexpr MIX)
_MIX_Q, _MIX_P, _MIX_MAX, _MIX_MIN, _MIX_GEO, _MIX_FAST, _MIX_PIVOT = range(7)

#: Terms of the Taylor series of K(x) = log1p(c·expm1(x)) that _near_correction sums
#: (spelled there as its literals 14 and 13, the last index and the first of the loop).
_K_TERMS = 15
assert (_P_CGF_1M, _P_CGF, _N_DPRM) == (8, 8 + _K_TERMS, 8 + 2 * _K_TERMS)  # spelled in _divergence
assert (_P_M, _P_SERIES, _P_SERIES + _PIVOT_TERMS[torch.float32]) == (6, 8, 20)  # in _ab_*


def _cgf_coefficients(c: float, terms: int = _K_TERMS) -> list[float]:
    r"""Taylor coefficients :math:`a_1, …, a_n` of :math:`K(x) = \log(1 + c\,(e^x - 1))` at
    0 (:math:`a_k = \kappa_k/k!`, κ the cumulants of a Bernoulli(c) variable), in double
    precision: :math:`K' = c\,e^x/(1 - c + c\,e^x)` by series division, then integrated.
    For :func:`_cgf` (c ∈ [0, 1]: the mixture's λ or 1 − λ, JS's β and 1 − β, skew KL's 1 − s)."""
    e = [1.0 / math.factorial(k) for k in range(terms)]
    num = [c * x for x in e]
    den = [1.0] + [c * x for x in e[1:]]  # 1 − c + c·e^x: its constant term is 1
    d = []
    for k in range(terms):
        d.append(num[k] - sum(d[j] * den[k - j] for j in range(k)))
    return [d[k] / (k + 1) for k in range(terms)]


_F32_MAX = float(torch.finfo(torch.float32).max)
#: float32's least normal number: a 1/T below it (T ≥ 8.5e37) would reach the kernel as a
#: subnormal or 0 (the logits then all 0 or NaN), so such a chunk goes to the torch kernel.
_F32_TINY = float(torch.finfo(torch.float32).tiny)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


#: Device functions: ``triton.jit`` compiled; under the interpreter plain Python (called
#: while their kernel runs, with its ``tl``), which spares the interpreter re-patching the
#: language at every nested call (measured: half of an interpreted launch).
_device = triton.jit if not _interpreted() else (lambda fn: fn)


def runs_in_triton(spec, dtype: torch.dtype) -> bool:
    """Whether :func:`triton_chunk` computes ``spec`` on inputs of ``dtype`` in Triton
    (``False``: it hands the chunk to :func:`gpu._torch_kernel.chunk`; module docstring)."""
    return (
        spec.objective.divergence in TRITON_DIVERGENCES
        and spec.cdtype == torch.float32
        and dtype in (torch.float32, torch.bfloat16, torch.float16)
        and _F32_TINY <= 1.0 / spec.objective.temperature <= _F32_MAX
    )


# --- elementary functions ------------------------------------------------------------------


@_device
def _exp(x, ACCURATE: tl.constexpr):
    if ACCURATE:
        return libdevice.exp(x)
    else:
        return tl.exp(x)


@_device
def _log(x, ACCURATE: tl.constexpr):
    if ACCURATE:
        return libdevice.log(x)
    else:
        return tl.log(x)


@_device
def _log1p(x, ACCURATE: tl.constexpr):
    if ACCURATE:
        return libdevice.log1p(x)
    else:
        u = 1.0 + x
        d = u - 1.0
        big = tl.where(d == 0.0, 1.0, d)
        out = tl.log(u) * (x / big)
        out = tl.where(d == 0.0, x, out)
        return tl.where(u == float("inf"), u, out)


@_device
def _expm1(x, ACCURATE: tl.constexpr):
    if ACCURATE:
        return libdevice.expm1(x)
    else:
        u = tl.exp(x)
        lu = tl.log(u)
        safe = tl.where((lu == 0.0) | (u == float("inf")), 1.0, lu)
        out = (u - 1.0) * (x / safe)
        out = tl.where(u == 1.0, x, out)
        out = tl.where(u - 1.0 == -1.0, -1.0, out)
        return tl.where(u == float("inf"), u, out)


@_device
def _log1p_unit(e):
    """log1p(e) for 0 ≤ e ≤ 1 (e^(−|t|), the mixture's and logaddexp's operand) as e·P(e),
    P the degree-9 polynomial interpolating log1p(e)/e at the ten Chebyshev nodes of
    [0, 1], by Horner's rule with each step an fma: log1p's singularity at −1 lies 3
    half-widths from the interval's centre, so the interpolant's error falls as
    (3 + √8)^−n, 5.3e-9 of the value at degree 9 (mpmath); 0 at e = 0, NaN for NaN. The
    kernel's own form: nine fmas and a multiply for libdevice's ``log1p``."""
    p = tl.fma(e, -0.0031760570052707057, 0.01954252720111135)
    p = tl.fma(p, e, -0.05637361271614654)
    p = tl.fma(p, e, 0.10543623783675796)
    p = tl.fma(p, e, -0.1526966706726033)
    p = tl.fma(p, e, 0.19663274254649707)
    p = tl.fma(p, e, -0.24951616262342952)
    p = tl.fma(p, e, 0.33329710498859844)
    p = tl.fma(p, e, -0.49999892648060507)
    p = tl.fma(p, e, 0.9999999946562914)
    return p * e


@_device
def _logaddexp(x, y, ACC: tl.constexpr):
    """torch.logaddexp: max + log1p(e^(−|x−y|)) (_log1p_unit); equal infinities give
    themselves."""
    hi = tl.maximum(x, y)
    lo = tl.minimum(x, y)
    same_inf = (hi == lo) & ((hi == float("inf")) | (hi == float("-inf")))
    gap = tl.where(same_inf, 0.0, lo - hi)
    out = hi + _log1p_unit(_exp(gap, ACC))
    return tl.where(same_inf, hi, out)


@_device
def _sign(x):
    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, 0.0))


@_device
def _nan_to_zero(x):
    return tl.where(x != x, 0.0, x)


# --- per element: log-probabilities, the mixture, the divergences ----------------------------


@_device
def _load(ptr, rows, cols, stride, mask):
    # row offsets in int64: rows × stride passes 2^31 at N·V ≥ 2^31 (16384 rows at V = 151936)
    x = tl.load(ptr + rows[:, None].to(tl.int64) * stride + cols[None, :], mask=mask,
                other=float("-inf"))  # fmt: skip
    return x.to(tl.float32)


@_device
def _scaled(x, top, inv_t):
    """(x − max)/T, the max first (gpu._torch_kernel.chunk)."""
    return (x - top[:, None]) * inv_t


@_device
def _cgf(x, kc_ptr):
    """K(x) = log1p(c·expm1(x)) on |x| ≤ 1, summed as its Taylor series to x^15 (its
    coefficients at ``kc_ptr``, :func:`_cgf_coefficients`) by Horner's rule.

    K is the cumulant generating function of a Bernoulli(c) variable; its singularities lie
    at log((1 − c)/c) ± iπ, at least π from 0, so on |x| ≤ 1 the truncation error is below
    4e-9 of K for every c in (0, 1), and the sum (K ≈ cx near 0) rounds to a few ulps of
    K, as log1p(c·expm1(x)) does (tested against mpmath). Fourteen fused multiply-adds and a
    product in place of an expm1 and a log1p (about 54 instructions on sm_90), in branches
    that are formed for every entry (python -m gpu.kernel_cost). The torch kernel keeps the
    two functions: there each is one tensor pass, where the series would take thirty."""
    k = tl.zeros_like(x) + tl.load(kc_ptr + 14)  # _K_TERMS − 1
    for i in tl.static_range(13, -1, -1):
        k = tl.fma(k, x, tl.load(kc_ptr + i))  # fused: see _LAUNCH_OPTIONS
    return k * x


@_device
def _near_correction(bd, kc_ptr, inv_beta, LAM_LOW: tl.constexpr):
    """gpu._mixture._near_correction: K(x)/β (:func:`_cgf`), c = λ and x = βd (λ ≤ ½) or
    c = 1 − λ and x = −βd, used where |x| ≤ 1."""
    if LAM_LOW:
        return _cgf(bd, kc_ptr) * inv_beta
    else:
        return _cgf(-bd, kc_ptr) * inv_beta


@_device
def _ratios(la, lb, lm, corr, near, small, a_dom, c_a, c_b, LAM_LOW: tl.constexpr):
    """gpu._mixture._ratios: [log m − log a, log m − log b] from the pivot's corrections
    (c_a = log λ/β, c_b = log(1−λ)/β)."""
    d = la - lb
    rb = corr + c_b
    ra = rb - d
    corr_a = corr + c_a
    ra = tl.where(a_dom, corr_a, ra)
    rb = tl.where(a_dom, corr_a + d, rb)
    if LAM_LOW:
        rb = tl.where(small, near, rb)
        ra = tl.where(small, near - d, ra)
    else:
        ra = tl.where(small, near, ra)
        rb = tl.where(small, near + d, rb)
    plain = (lm == float("-inf")) | ((la == float("-inf")) & (lb == float("-inf")))
    ra = tl.where(plain, lm - la, ra)
    rb = tl.where(plain, lm - lb, rb)
    return ra, rb


@_device
def _mixture(lp, lq, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr,
             MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
             ACC: tl.constexpr):  # fmt: skip
    """gpu._mixture.log_alpha_mean_and_weight: (log m, log m − log p, log m − log q, w) and
    ``maybe_silent``, true wherever w = 0 (and perhaps at a few entries more: pass b's
    _ANY_SILENT needs no entry missed, and at |β| > 0 it is read off t without w's
    division)."""
    NEG = float("-inf")
    if MIX == 0:  # λ = 0
        lm = lq
        ra = lq - lp
        rb = tl.zeros_like(lq)
        w = tl.where(lq != NEG, 1.0, 0.0)
    elif MIX == 1:  # λ = 1
        lm = lp
        ra = tl.zeros_like(lp)
        rb = lp - lq
        w = tl.zeros_like(lp)
    elif MIX == 2 or MIX == 3:  # α = −inf (max), +inf (min)
        if MIX == 2:
            lm = tl.maximum(lp, lq)
            pick_b = lq > lp
        else:
            lm = tl.minimum(lp, lq)
            pick_b = lq < lp
        w = tl.where(pick_b, 1.0, tl.where(lq == lp, 0.5, 0.0))
        w = tl.where(lm == NEG, 0.0, w)
        ra = lm - lp
        rb = lm - lq
        maybe_silent = w == 0.0
    elif MIX == 4:  # α = 1: the geometric mean, pivoted on the heavier argument
        if LAM_LOW:
            rb = lam * (lp - lq)
            ra = rb - (lp - lq)
            lm = lq + rb
        else:
            ra = one_m_lam * (lq - lp)
            rb = ra + (lp - lq)
            lm = lp + ra
        zero = (lp == NEG) | (lq == NEG)
        lm = tl.where(zero, NEG, lm)
        ra = tl.where(zero, lm - lp, ra)
        rb = tl.where(zero, lm - lq, rb)
        w = tl.where(lm == NEG, 0.0, one_m_lam)
        maybe_silent = w == 0.0
    else:
        bd = (lp - lq) * beta
        t = bd + t_off
        small = tl.abs(bd) <= 1.0
        near_r = _near_correction(bd, kc_ptr, inv_beta, LAM_LOW)
        e_t = _exp(-tl.abs(t), ACC)
        corr = _log1p_unit(e_t) * inv_beta
        # the pivot on the dominant weighted term plus the ratios' correction (at |β| ≥ ½ the
        # logaddexp form written out, its exp and log1p shared with the ratios)
        if BETA_NEG:
            lm = tl.minimum(lp + c_a, lq + c_b)
        else:
            lm = tl.maximum(lp + c_a, lq + c_b)
        lm = lm + corr
        if MIX == 6:  # |β| < ½: log1p/expm1 near the argument with the larger weight
            if LAM_LOW:
                near = near_r + lq
            else:
                near = near_r + lp
            lm = tl.where(small, near, lm)
        ra, rb = _ratios(lp, lq, lm, corr, near_r, small, t >= 0.0, c_a, c_b, LAM_LOW)
        lm = tl.where(lm != lm, NEG, lm)
        w, maybe_silent = _logistic_weight(t, e_t, lm, BETA_NEG)
    if MIX <= 1:
        maybe_silent = w == 0.0
    return lm, ra, rb, w, maybe_silent


@_device
def _logistic_weight(t, e_t, lm, BETA_NEG: tl.constexpr):
    """w = σ(−t) = 1/(1 + eᵗ) (gpu._mixture's form) from e_t = e^(−|t|): e/(1 + e) for t ≥ 0,
    1/(1 + e) below, the same value to a few ulps with one exp fewer per element; 0 where m
    = 0 (β < 0) or both arguments are zero. And ``maybe_silent``: w = 0 needs e_t = 0 (or
    below the smallest normal, where the quotient might flush) with t ≥ 0, t NaN (both
    arguments zero), or m = 0."""
    NEG = float("-inf")
    w = tl.where(t >= 0.0, e_t, 1.0) / (1.0 + e_t)
    if BETA_NEG:
        w = tl.where(lm == NEG, 0.0, w)
    else:
        w = _nan_to_zero(w)
    maybe_silent = (t != t) | (lm == NEG) | ((t >= 0.0) & (e_t < 1.1754943508222875e-38))
    return w, maybe_silent


@_device
def _divergence(la, lb, lr, prm, prm_log, prm_log1m, dprm_ptr, mask, DIV: tl.constexpr,
                ACC: tl.constexpr):  # fmt: skip
    """(term, ∂/∂log a, ∂/∂log b, their sum) per element, lr = log(a/b) formed from the
    mixture: twins of gpu._divergences._kl, _js, _tv, _hellinger, _jeffreys, _skew_kl, _ab
    (and _amari through it); the sum is the closed form of the AB family
    (``want_sum=True``), ga + gb for the others. ``mask``: the tile's entries in the row
    (the lanes beyond V read as −inf: they take no branch of their own)."""
    NEG = float("-inf")
    if DIV >= 6 and DIV <= 8:  # _AB, _AB_MIRROR, _AB_ZERO
        terms, ga, gb, g_sum, _, _, _ = _ab_elements(la, lb, lr, dprm_ptr, mask, DIV, ACC)
        return terms, ga, gb, g_sum
    if DIV == 9:  # _CHI2
        return _chi2_elements(la, lb, lr, ACC)
    if DIV == 0:  # KL
        a = _exp(la, ACC)
        # a > 0 = b is +inf even where a underflows (la finite): not 0·inf = NaN → 0
        terms = _nan_to_zero(tl.where(lb == NEG, la - lb, lr) * a)
        terms = tl.where((lb == NEG) & (la != NEG), float("inf"), terms)
        ga = terms
        gb = -a
    elif DIV == 1:  # JS(β = prm); β ∈ {0, 1} gives zeros (prm_log = nan flags it)
        lm = _logaddexp(la + prm_log, lb + prm_log1m, ACC)
        ra = la - lm
        rb = lb - lm
        near = tl.abs(lr) <= 1.0
        dn = tl.where(near, lr, 0.0)
        # −log1p((1 − β)·expm1(−δ)) and −log1p(β·expm1(δ)) as their series (_cgf)
        ra = tl.where(near, -_cgf(-dn, dprm_ptr + 8), ra)  # _P_CGF_1M
        rb = tl.where(near, -_cgf(dn, dprm_ptr + 23), rb)  # _P_CGF
        a = _exp(la, ACC)
        b = _exp(lb, ACC)
        ga = tl.where(a == 0.0, 0.0, ra * a * prm)
        gb = tl.where(b == 0.0, 0.0, rb * b * (1.0 - prm))
        terms = ga + gb
    elif DIV == 2:  # TV
        a = _exp(la, ACC)
        b = _exp(lb, ACC)
        near = tl.abs(lr) <= 1.0
        diff = tl.where(near, _expm1(tl.where(near, lr, 0.0), ACC) * b, a - b)
        terms = 0.5 * tl.abs(diff)
        sg = _sign(diff)
        ga = (0.5 * sg) * a
        gb = (-0.5 * sg) * b
    elif DIV == 3:  # Hellinger
        hi = tl.maximum(la, lb)
        gap = tl.where(hi == NEG, 0.0, -tl.abs(lr))
        mag = _exp(hi / 2.0, ACC) * -_expm1(gap / 2.0, ACC)
        mag = tl.where(hi == NEG, 0.0, mag)
        d = tl.where(la >= lb, mag, -mag)
        terms = 0.5 * (d * d)
        ga = (0.5 * d) * _exp(la / 2.0, ACC)
        gb = (-0.5 * d) * _exp(lb / 2.0, ACC)
    elif DIV == 4:  # Jeffreys
        a0 = la == NEG
        b0 = lb == NEG
        both = (la != NEG) & (lb != NEG)
        d = tl.where(both, lr, 0.0)
        hi = tl.where(both, tl.maximum(la, lb), 0.0)
        abs_diff = _exp(hi, ACC) * -_expm1(-tl.abs(d), ACC)
        terms = tl.where(a0 != b0, float("inf"), abs_diff * tl.abs(d))
        diff = _sign(d) * abs_diff
        ga = tl.where(both, _exp(la, ACC) * d + diff, 0.0)
        gb = tl.where(both, -_exp(lb, ACC) * d - diff, 0.0)
    else:  # DIV == _SKEW_KL: KL(a‖s·a + (1 − s)·b), s = prm > 0 (s = 0 runs as KL)
        lm = _logaddexp(la + prm_log, lb + prm_log1m, ACC)
        pos = la != NEG
        near = tl.abs(lr) <= 1.0
        dn = tl.where(near, lr, 0.0)
        dm = tl.where(near, -_cgf(-dn, dprm_ptr + 8), la - lm)  # _P_CGF_1M: (1 − s)·expm1
        dm = tl.where(pos, dm, 0.0)
        a = _exp(la, ACC)
        terms = a * dm
        ratio = tl.where(pos, _exp(dm, ACC), 0.0)
        ga = a * (dm - prm * ratio)
        gb = -(1.0 - prm) * _exp(lb, ACC) * ratio
    return terms, ga, gb, ga + gb


# --- the AB family (gpu._divergences._ab, _ab_pair) -------------------------------------------


@_device
def _anywhere(mask):
    """Whether ``mask`` holds anywhere in the tile: a uniform branch skips a form no entry of
    the tile takes (the torch kernel's ``side()`` on its chunk)."""
    return tl.max(tl.max(mask.to(tl.int32), 1), 0) != 0


@_device
def _times_exp(x, log_s, ACC: tl.constexpr):
    """gpu._divergences._times_exp: x·e^(log_s), 0 where x = 0, one exponential beyond
    the float32 range (formed only in a tile that has such an entry, or a NaN)."""
    inside = tl.abs(log_s) <= 80.0
    out = x * _exp(tl.minimum(tl.maximum(log_s, -80.0), 80.0), ACC)
    if _anywhere(~inside):
        far = _sign(x) * _exp(_log(tl.abs(x), ACC) + log_s, ACC)
        out = tl.where(inside, out, far)
    return tl.where(x == 0.0, 0.0, out)


@_device
def _scaled_expm1_ratio(log_s, c, z, log_top, ACC: tl.constexpr):
    """gpu._divergences._scaled_expm1_ratio: e^(log_s)·expm1(cz)/c (e^(log_s)·z at c = 0).
    The constant c picks its form once; the direct form e^(log_top) − e^(log_s) only in a
    tile where some cz > 40."""
    if c == 0.0:
        out = _times_exp(z, log_s, ACC)
    else:
        cz = c * z
        big = cz > 40.0  # _BIG
        out = _times_exp(_expm1(tl.where(big, 0.0, cz), ACC) / c, log_s, ACC)
        if _anywhere(big):
            out = tl.where(big, (_exp(log_top, ACC) - _exp(log_s, ACC)) / c, out)
    return out


@_device
def _expm1_ratio(x):
    """expm1(x)/x = Σ_{n≥0} xⁿ/(n+1)! for |x| ≤ 1, to x¹⁰, by Horner's rule with each
    step an fma (the first term left out, x¹¹/12!, is below 4e-9 of the sum; the value is
    1 at x = 0). The kernel's own form: the torch kernel divides ``expm1`` by x."""
    e = tl.fma(x, 2.505210838544172e-08, 2.755731922398589e-07)  # 1/11!, 1/10!
    e = tl.fma(e, x, 2.7557319223985893e-06)
    e = tl.fma(e, x, 2.48015873015873e-05)
    e = tl.fma(e, x, 0.0001984126984126984)
    e = tl.fma(e, x, 0.001388888888888889)
    e = tl.fma(e, x, 0.008333333333333333)
    e = tl.fma(e, x, 0.041666666666666664)
    e = tl.fma(e, x, 0.16666666666666666)
    e = tl.fma(e, x, 0.5)
    return tl.fma(e, x, 1.0)


@_device
def _scaled_expm1_pair(ex_s, ex_top, c, z):
    """e^(log_s)·expm1(cz)/c from ``ex_s`` = e^(log_s) and ``ex_top`` = e^(log_top), log_top
    = log_s + cz (both formed by the caller; entries beyond ±80 take the general form,
    _ab_elements' ``far_range``): e^(log_s)·z·expm1(cz)/(cz)
    where |cz| ≤ 1 (_expm1_ratio; e^(log_s)·z at c = 0), (e^(log_top) − e^(log_s))/c beyond,
    where |e^(cz) − 1| ≥ 1 − 1/e and the difference scales its operands' rounding by at
    most (e + 1)/(e − 1) < 2.2. The same value as _scaled_expm1_ratio to a few ulps, with
    no ``expm1`` and no division per entry, its exponentials shared by the AB terms."""
    cz = c * z
    near = tl.abs(cz) <= 1.0
    series = ex_s * (z * _expm1_ratio(tl.where(near, cz, 0.0)))
    direct = (ex_top - ex_s) * (1.0 / tl.where(c == 0.0, 1.0, c))
    return tl.where(near, series, direct)


@_device
def _pivot_series(u, sp):
    """gpu._divergences._pivot_series: Σ_j D_j u^(j−2), its 12 float32 coefficients at
    ``sp`` (gpu._divergences.pivot_series), by Horner's rule."""
    acc = tl.zeros_like(u) + tl.load(sp + 11)
    for i in tl.static_range(10, -1, -1):
        acc = tl.fma(acc, u, tl.load(sp + i))  # fused: see _LAUNCH_OPTIONS
    return acc


@_device
def _second_order(z, m, sp):
    """The AB pivot's second-order form without its e^(log_s): where |zm| ≤ 1
    (_SECOND_ORDER_CUTOFF: max(|λz|, |cz|) ≤ 1), Σ_j D_j (zm)^(j−2)·z² (_pivot_series);
    returns that mask and the form (0 elsewhere)."""
    u = z * m
    second = tl.abs(u) <= 1.0
    zs = tl.where(second, z, 0.0)
    return second, _pivot_series(tl.where(second, u, 0.0), sp) * zs * zs


@_device
def _ab_pivot_terms(log_s, lam, z, log_top_lam, pivot_grad, denom, m, sp, ACC: tl.constexpr):
    """gpu._divergences._ab_pivot_terms: e^(log_s)·[F(λ) − F(c)]/denom, the second-order
    form as one series (``m``, the coefficients at ``sp``), the first-order one as
    e^(log_s)·expm1(λz)/λ plus the pivot's own gradient, over denom. The two forms share
    one _times_exp (elementwise: each entry's bits are those of its own form's)."""
    second, near = _second_order(z, m, sp)
    zl = tl.where(second, 0.0, z)
    # _scaled_expm1_ratio(log_s, λ, zl, log_top_lam) (e^(log_s)·zl at λ = 0: there lz = 0,
    # no branch), its e^(log_s) shared with the near form
    lz = lam * zl
    big = lz > 40.0  # _BIG
    first = _expm1(tl.where(big, 0.0, lz), ACC) / tl.where(lam == 0.0, 1.0, lam)
    t = _times_exp(tl.where(second, near, tl.where(lam == 0.0, zl, first)), log_s, ACC)
    if _anywhere(big):
        t = tl.where(big, (_exp(log_top_lam, ACC) - _exp(log_s, ACC)) / lam, t)
    return tl.where(second, t, (t + pivot_grad) / denom)


@_device
def _ab_pivot_terms_pair(ex_s, ex_top_lam, lam, z, pivot_grad, denom, m, sp):
    """_ab_pivot_terms from e^(log_s) and e^(log_top_lam) (both within ±80): the
    second-order form as there (the same bits), the first-order one by _scaled_expm1_pair."""
    second, near = _second_order(z, m, sp)
    near = ex_s * near
    first = _scaled_expm1_pair(ex_s, ex_top_lam, lam, tl.where(second, 0.0, z))
    return tl.where(second, near, (first + pivot_grad) * (1.0 / denom))


@_device
def _ab_elements(la, lb, lr, dprm_ptr, mask, DIV: tl.constexpr, ACC: tl.constexpr):
    """gpu._divergences._ab with ``want_sum=True``: (term, g_a, g_b, g_a + g_b in closed
    form); the pivot (DIV) as _ab chooses it. The zero entries' forms are taken only in a
    tile with a zero of a or b among its ``mask``'s entries (the lanes beyond V, −inf on
    both sides, keep the finite values of the general form, which no caller reads)."""
    NEG = float("-inf")
    INF = float("inf")
    a_ = tl.load(dprm_ptr + 0)
    b_ = tl.load(dprm_ptr + 1)
    lam = tl.load(dprm_ptr + 2)
    k_y = tl.load(dprm_ptr + 3)
    k_x = tl.load(dprm_ptr + 4)
    x0 = la == NEG
    y0 = lb == NEG
    both = (la != NEG) & (lb != NEG)
    d = tl.where(both, lr, 0.0)
    lx = tl.where(both, la, 0.0)
    ly = tl.where(both, lb, 0.0)
    lxy = lx * a_ + ly * b_
    llx = lam * lx
    lly = lam * ly
    # x^λ, y^λ and x^a_·y^b_: each term and gradient is formed from them (and _ab_pair's
    # far form), the exponentials shared
    ex_x = _exp(llx, ACC)
    ex_y = _exp(lly, ACC)
    ex_xy = _exp(lxy, ACC)
    ga = _scaled_expm1_pair(ex_x, ex_xy, -b_, d)
    gb = -_scaled_expm1_pair(ex_y, ex_xy, a_, d)
    m = tl.load(dprm_ptr + 6)  # _P_M
    if DIV == 8:  # a_ = b_ = 0
        terms = 0.5 * d * d
    elif DIV == 6:  # |a_| ≤ |b_|: the pivot a_, its own gradient gb
        terms = _ab_pivot_terms_pair(ex_y, ex_x, lam, d, gb, b_, m, dprm_ptr + 8)
    else:
        terms = _ab_pivot_terms_pair(ex_x, ex_y, lam, -d, ga, a_, m, dprm_ptr + 8)
    # beyond ±80 a power may leave float32's normal range where the product does not:
    # those entries take the general forms (one exponential of the sum; a tile with one)
    far_range = (tl.abs(llx) > 80.0) | (tl.abs(lly) > 80.0) | (tl.abs(lxy) > 80.0)
    if _anywhere(mask & far_range):
        ga = tl.where(far_range, _scaled_expm1_ratio(llx, -b_, d, lxy, ACC), ga)
        gb = tl.where(far_range, -_scaled_expm1_ratio(lly, a_, d, lxy, ACC), gb)
        if DIV == 6:
            terms = tl.where(far_range, _ab_pivot_terms(lly, lam, d, llx, gb, b_, m, dprm_ptr + 8,
                                                        ACC), terms)  # fmt: skip
        elif DIV == 7:
            terms = tl.where(far_range, _ab_pivot_terms(llx, lam, -d, lly, ga, a_, m,
                                                        dprm_ptr + 8, ACC), terms)  # fmt: skip
    terms = tl.where(terms != terms, INF, terms)
    if _anywhere(mask & ~both):  # zero entries (formed only in a tile that has one)
        # their terms: y^λ/(a_ λ), x^λ/(b_ λ) as one exponential; +inf where they diverge
        t_only_y = tl.where(k_y == k_y, _exp(lam * lb - k_y, ACC), INF)
        t_only_x = tl.where(k_x == k_x, _exp(lam * la - k_x, ACC), INF)
        terms = tl.where(x0 & ~y0, t_only_y, terms)
        terms = tl.where(y0 & ~x0, t_only_x, terms)
        terms = tl.where(x0 & y0, 0.0, terms)
        b_safe = tl.where(b_ == 0.0, 1.0, b_)
        only_x = tl.where(b_ == 0.0, INF, _exp(lam * la, ACC) / b_safe)
        ga = tl.where(both, ga, tl.where(y0 & ~x0, only_x, 0.0))
        a_safe = tl.where(a_ == 0.0, 1.0, a_)
        only_y = tl.where(a_ == 0.0, INF, _exp(lam * lb, ACC) / a_safe)
        gb = tl.where(both, gb, tl.where(x0 & ~y0, only_y, 0.0))
    return terms, ga, gb, tl.where(both, terms * lam, ga + gb), ex_x, ex_y, ex_xy


@_device
def _ab_powers(la, lb, dprm_ptr, ACC: tl.constexpr):
    """x^λ, y^λ and x^a_·y^b_ where both are positive (1 elsewhere): _ab_elements' powers,
    for _ab_pair's far form where the divergence is not AB's own (χ²)."""
    NEG = float("-inf")
    a_ = tl.load(dprm_ptr + 0)
    b_ = tl.load(dprm_ptr + 1)
    lam = tl.load(dprm_ptr + 2)
    both = (la != NEG) & (lb != NEG)
    lx = tl.where(both, la, 0.0)
    ly = tl.where(both, lb, 0.0)
    return _exp(lam * lx, ACC), _exp(lam * ly, ACC), _exp(lx * a_ + ly * b_, ACC)


@_device
def _log_abs_expm1(x, ACC: tl.constexpr):
    """gpu._divergences._log_abs_expm1: log|e^x − 1| = max(x, 0) + log(−expm1(−|x|))."""
    return tl.maximum(x, 0.0) + _log(-_expm1(-tl.abs(x), ACC), ACC)


@_device
def _chi2_elements(la, lb, lr, ACC: tl.constexpr):
    """gpu._divergences._chi2 with ``want_sum=True``: b·expm1(δ)² as one exponential,
    (2a·expm1(δ), −b·expm1(2δ)) and their sum, the term itself where both are positive."""
    NEG = float("-inf")
    INF = float("inf")
    a_pos = la != NEG
    b_pos = lb != NEG
    both = a_pos & b_pos
    d = tl.where(both, lr, 0.0)
    lb0 = tl.where(both, lb, 0.0)
    la0 = tl.where(both, la, 0.0)
    lae = _log_abs_expm1(d, ACC)
    terms = _exp(lb0 + 2.0 * lae, ACC)
    terms = tl.where(both, terms, tl.where(a_pos, INF, _exp(lb, ACC)))
    ga = 2.0 * _sign(d) * _exp(la0 + lae, ACC)
    ga = tl.where(both, ga, tl.where(a_pos, INF, 0.0))
    gb = -_sign(d) * _exp(lb0 + _log_abs_expm1(2.0 * d, ACC), ACC)
    gb = tl.where(both, gb, tl.where(b_pos, _exp(lb, ACC), 0.0))
    return terms, ga, gb, tl.where(both, terms, ga + gb)


@_device
def _weight_parts(lp, lq, lm, w, beta, lam, one_m_lam, t_off, MIX: tl.constexpr,
                  BETA_NEG: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """w̄ = 1 − w and w − w̄, each exact to a few ulps of itself (the ``weight_bar`` of
    gpu._mixture.log_alpha_mean_and_weight: σ(t) itself, −tanh(t/2) by expm1)."""
    NEG = float("-inf")
    if MIX == 0:  # λ = 0
        w_bar = tl.zeros_like(w)
        w_diff = w
    elif MIX == 1:  # λ = 1
        w_bar = tl.where(lp != NEG, 1.0, 0.0)
        w_diff = -w_bar
    elif MIX == 2 or MIX == 3:  # 1 − w is exact for w ∈ {0, ½, 1}
        w_bar = tl.where(lm == NEG, 0.0, 1.0 - w)
        w_diff = w - w_bar
    elif MIX == 4:
        zero = lm == NEG
        w_bar = tl.where(zero, 0.0, lam)
        w_diff = tl.where(zero, 0.0, one_m_lam - lam)
    else:
        t = (lp - lq) * beta + t_off
        # from e^(−|t|) as w itself (_logistic_weight): σ(t) = 1/(1 + e) for t ≥ 0, e/(1 + e)
        # below; tanh(|t|/2) = −expm1(−|t|)/(1 + e) by the series of expm1(x)/x where
        # |t| ≤ 1 (_weighted_coefficient reads it only where |t| < log 3), 1 − e beyond
        e = _exp(-tl.abs(t), ACC)
        inv = 1.0 / (1.0 + e)
        w_bar = tl.where(t >= 0.0, 1.0, e) * inv
        near = tl.abs(t) <= 1.0
        tn = tl.where(near, tl.abs(t), 0.0)
        w_diff = -_sign(t) * (tl.where(near, tn * _expm1_ratio(-tn), 1.0 - e) * inv)
        if BETA_NEG:
            w_bar = tl.where(lm == NEG, 0.0, w_bar)
            w_diff = tl.where(lm == NEG, 0.0, w_diff)
        else:
            w_bar = _nan_to_zero(w_bar)
            w_diff = _nan_to_zero(w_diff)
    return w_bar, w_diff


@_device
def _weighted_coefficient(c0, c1, lam, half, w, w_bar, w_diff):
    """gpu._divergences._weighted_coefficient: c0 + c1·w around the anchor 0, ½ or 1
    nearest to w (c0 + c1 = λ and c0 + c1/2 = ``half`` formed on the host)."""
    out = w_diff * (c1 / 2.0) + half
    out = tl.where(w > 0.75, w_bar * -c1 + lam, out)
    return tl.where(w < 0.25, w * c1 + c0, out)


@_device
def _ab_pair(la, lb, lr, w, w_bar, w_diff, ga, gb, g_sum, ex_x, ex_y, ex_xy, dprm_ptr,
             FIRST_R: tl.constexpr, SCALE: tl.constexpr):  # fmt: skip
    """gpu._divergences._ab_pair: SCALE·(g_direct + w·g_other) for D(r‖q) (FIRST_R) or
    D(q‖r), from the gradients and their closed-form sum (all SCALE times AB's own) and,
    for the far form, x^λ, y^λ and x^a_·y^b_ (``ex_*``, as _ab_elements forms them)."""
    NEG = float("-inf")
    a_ = tl.load(dprm_ptr + 0)
    b_ = tl.load(dprm_ptr + 1)
    lam = tl.load(dprm_ptr + 2)
    half = tl.load(dprm_ptr + 5)
    if FIRST_R:
        g_direct = gb
        g_other = ga
    else:
        g_direct = ga
        g_other = gb
    out = tl.where(w > 0.5, g_sum - w_bar * g_other, g_direct + w * g_other)
    both = (la != NEG) & (lb != NEG)
    d = tl.where(both, lr, 0.0)
    far = both & (tl.abs(a_ * d) >= 1.0) & (tl.abs(b_ * d) >= 1.0)
    # the constants' reciprocals (scalars) in place of a division per entry
    inv_a = 1.0 / tl.where(a_ == 0.0, 1.0, a_)
    inv_b = 1.0 / tl.where(b_ == 0.0, 1.0, b_)
    if FIRST_R:  # (w/b_)·X − k/(a_ b_)·P + Y/a_, k = w a_ + b_
        three = ex_x * w * inv_b + ex_y * inv_a
        k = _weighted_coefficient(b_, a_, lam, half, w, w_bar, w_diff)
    else:  # X/b_ − k/(a_ b_)·P + (w/a_)·Y, k = a_ + w b_
        three = ex_x * inv_b + ex_y * w * inv_a
        k = _weighted_coefficient(a_, b_, lam, half, w, w_bar, w_diff)
    three = three - k * ex_xy * (inv_a * inv_b)
    three = three * SCALE
    keep = far & (tl.abs(three) < float("inf"))
    return tl.where(keep, three, out)


@_device
def _log_probs(s_ptr, t_ptr, rows, cols, stride, mask, top_s, top_t, corr_s, corr_t, inv_t):
    s = _scaled(_load(s_ptr, rows, cols, stride, mask), top_s, inv_t)
    t = _scaled(_load(t_ptr, rows, cols, stride, mask), top_t, inv_t)
    return s - corr_s[:, None], t - corr_t[:, None]


@_device
def _tile_log_probs(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows, inv_t):
    """log p and log q of one tile from the row statistics of pass a."""
    rmask = rows < n_rows
    top_s = tl.load(stats_ptr + 0 * n_rows + rows, mask=rmask, other=0.0)
    top_t = tl.load(stats_ptr + 1 * n_rows + rows, mask=rmask, other=0.0)
    corr_s = tl.load(stats_ptr + 2 * n_rows + rows, mask=rmask, other=0.0)
    corr_t = tl.load(stats_ptr + 3 * n_rows + rows, mask=rmask, other=0.0)
    lq, lp = _log_probs(s_ptr, t_ptr, rows, cols, stride, mask, top_s, top_t, corr_s, corr_t,
                        inv_t)  # fmt: skip
    return lp, lq


@_device
def _tile(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows,
          inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr,
          MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
          ACC: tl.constexpr):  # fmt: skip
    """log p, log q and the mixture of one tile (the row statistics of pass a)."""
    lp, lq = _tile_log_probs(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows, inv_t)
    lm, ra, rb, w, maybe_silent = _mixture(lp, lq, beta, inv_beta, lam, one_m_lam, t_off, c_a,
                                           c_b, log_lam, log_1m_lam, kc_ptr, MIX, LAM_LOW, BETA_NEG,
                                           ACC)  # fmt: skip
    return lp, lq, lm, ra, rb, w, maybe_silent


# Row statistics (float32 rows of `stats`, int32 rows of `idx`), by row of the table:
_TOP_S, _TOP_T, _CORR_S, _CORR_T, _SHIFT_M, _CORR_M, _LOG_ZR = range(7)
_R_OTHERS, _R_TOP, _G_SILENT, _H_OTHERS, _H_TOP, _Q_OTHERS, _Q_TOP = range(7, 14)
# Rényi's row partial sums (pass c0): max ω, Σ e^(ω − max ω), M = Σ a_e
_OMEGA_TOP, _OMEGA_SUM, _RENYI_M = range(14, 17)
# 1.0 where the row has an entry with w = 0 (pass b, when the assistant is live), else 0.0
_ANY_SILENT = 17
_N_STATS = 18
_K_S, _K_T, _K_M = range(3)


@triton.jit
def _normalizer_pass(s_ptr, t_ptr, stride, n_rows, V, stats_ptr, idx_ptr, flags_ptr, inv_t,
                     ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
                     SHARD: tl.constexpr = False, STAGES: tl.constexpr = 1):  # fmt: skip
    """Pass a: for s and t, the row max and its first arg-max, and log1p(S_o) of (x − max)/T,
    S_o the sum of every entry but that first maximum (gpu._torch_kernel.LocalReduce.others),
    in one pass with an online maximum: when a tile raises a row's maximum from M to M', the
    sum so far and the old maximum's own 1 are carried over by e^((M − M')/T) (the old
    maximum's term exactly as a second pass would form it). _BAD_* where a row has NaN, +inf
    or only −inf (the torch kernel's non-finite row maximum), read off the sum and the
    maximum instead of tested entry by entry: a NaN entry makes the sum NaN (every other
    term is e^y with y ≤ 0 or −inf), a +inf entry the maximum +inf. The temperature flags where a finite entry became
    −inf after the shift and the scaling: (x − max)/T is monotone in x, so the row's
    smallest finite entry tells.

    With SHARD (one slice of the vocabulary: :func:`shard_chunk`), the partials instead: the
    maxima and their first local arg-maxima, S_o itself (relative to the local maximum) and
    the smallest finite entries (rows 12 and 13, which pass c2 overwrites), no flags; the
    caller combines the slices and forms the rest (:func:`_combine_normalizers`)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    NEG = float("-inf")
    INF = float("inf")
    m_s = tl.full([BLOCK_R], NEG, tl.float32)
    m_t = tl.full([BLOCK_R], NEG, tl.float32)
    k_s = tl.zeros([BLOCK_R], tl.int32)
    k_t = tl.zeros([BLOCK_R], tl.int32)
    o_s = tl.zeros([BLOCK_R], tl.float32)
    o_t = tl.zeros([BLOCK_R], tl.float32)
    low_s = tl.full([BLOCK_R], INF, tl.float32)
    low_t = tl.full([BLOCK_R], INF, tl.float32)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=STAGES):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < V)[None, :]
        for which in tl.static_range(2):
            if which == 0:
                x = _load(s_ptr, rows, cols, stride, mask)
                m, k, o, low = m_s, k_s, o_s, low_s
            else:
                x = _load(t_ptr, rows, cols, stride, mask)
                m, k, o, low = m_t, k_t, o_t, low_t
            # the maximum and the smallest finite entry over the entries above −inf (not NaN:
            # the sum below tells a NaN)
            above = x > NEG
            low = tl.minimum(low, tl.min(tl.where(above, x, INF), 1))
            tile_max = tl.max(tl.where(above, x, NEG), 1)
            pos = tl.min(tl.where(x == tile_max[:, None], cols[None, :], 2**30), 1)
            better = tile_max > m
            new = tl.where(better, tile_max, m)
            off = tl.where(new == NEG, 0.0, new)  # a row of only −inf so far: terms 0
            # the sum so far and the old maximum's 1, at the new maximum (0 from −inf)
            carried = (o + tl.where(m == NEG, 0.0, 1.0)) * _exp((m - off) * inv_t, ACC)
            o = tl.where(better, carried, o)
            first = better[:, None] & (cols[None, :] == pos[:, None])  # the new maximum
            y = (x - off[:, None]) * inv_t
            o += tl.sum(tl.where(mask & ~first, _exp(y, ACC), 0.0), 1)
            k = tl.where(better, pos, k)
            if which == 0:
                m_s, k_s, o_s, low_s = new, k, o, low
            else:
                m_t, k_t, o_t, low_t = new, k, o, low
    tl.store(stats_ptr + 0 * n_rows + rows, m_s, mask=rmask)
    tl.store(stats_ptr + 1 * n_rows + rows, m_t, mask=rmask)
    tl.store(idx_ptr + 0 * n_rows + rows, k_s, mask=rmask)
    tl.store(idx_ptr + 1 * n_rows + rows, k_t, mask=rmask)
    if SHARD:  # S_o and the smallest entries, for the caller to combine
        tl.store(stats_ptr + 2 * n_rows + rows, o_s, mask=rmask)
        tl.store(stats_ptr + 3 * n_rows + rows, o_t, mask=rmask)
        tl.store(stats_ptr + 12 * n_rows + rows, low_s, mask=rmask)
        tl.store(stats_ptr + 13 * n_rows + rows, low_t, mask=rmask)
    else:
        bad_s = (o_s != o_s) | (m_s == INF) | (m_s == NEG) | (m_s != m_s)
        bad_t = (o_t != o_t) | (m_t == INF) | (m_t == NEG) | (m_t != m_t)
        flags = tl.where(bad_s, 1, 0) | tl.where(bad_t, 2, 0)
        # a bad row is not a temperature overflow: the torch kernel's message names the bad
        # logits (its shift by a NaN or +inf maximum leaves no entry to count)
        lost_s = (low_s < INF) & ((low_s - m_s) * inv_t == NEG) & ~bad_s
        lost_t = (low_t < INF) & ((low_t - m_t) * inv_t == NEG) & ~bad_t
        flags = flags | tl.where(lost_s, 32, 0) | tl.where(lost_t, 64, 0)
        tl.store(stats_ptr + 2 * n_rows + rows, _log1p(o_s, ACC), mask=rmask)
        tl.store(stats_ptr + 3 * n_rows + rows, _log1p(o_t, ACC), mask=rmask)
        tl.store(flags_ptr + rows, flags.to(tl.int16), mask=rmask)


@triton.jit
def _mixture_pass(s_ptr, t_ptr, stride, n_rows, V, stats_ptr, idx_ptr, flags_ptr,
                  inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride,
                  MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
                  REF_P: tl.constexpr, FIND_SILENT: tl.constexpr, STORE_MIX: tl.constexpr,
                  ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
                  SHARD: tl.constexpr = False, STAGES: tl.constexpr = 1):  # fmt: skip
    """Pass b: the row max of log m and where it first is (0 for a row of only −inf), log Z
    = shift + log1p(S_o) of log m (gpu._torch_kernel._log_normalizer) and log Z's ratio form
    of gpu._torch_kernel._log_ratio_to_mixture against the reference (p if REF_P else q):
    ``log1p(Σ ŝ·expm1(u)/Σ ŝ)`` or ``log Z − log Σ ŝ``.

    One pass with an online maximum (FlashAttention's softmax): S_o, the sum of e^(log m − M)
    over every entry but the first maximum, is kept relative to the maximum so far; when a
    tile raises it, the sum so far and the former maximum's own 1 are carried over by
    e^(M_old − M_new) ≤ 1. Each carry rounds once (an ulp of S_o); the torch kernel sums
    against the final maximum in a pass of its own.

    With FIND_SILENT, whether the row has an entry with w = 0 (row ``_ANY_SILENT``): only
    such a row has a through-Z term, so passes c–d form the normalizer operand h in the
    tiles of such rows alone (the torch kernel's ``red.any(silent)`` on its chunk).

    With STORE_MIX, log m and its ratio to the reference, in float32 at ``mix_ptr`` and
    ``u_ptr``, for passes c and c2 (_arguments' LOAD_MIX).

    With SHARD (one slice of the vocabulary: :func:`shard_chunk`), the partials instead: the
    local maximum of log m (row 4) and its first local arg-max, S_o relative to it (row 5),
    Σ ŝ and the log-ratio terms' sum (rows 7 and 8), whether an entry is finite (row 9) and
    the silent-entry flag; the caller combines the slices and forms log Z and its ratio form
    (:func:`_combine_mixtures`)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    NEG = float("-inf")
    m = tl.full([BLOCK_R], NEG, tl.float32)
    k = tl.zeros([BLOCK_R], tl.int32)
    others = tl.zeros([BLOCK_R], tl.float32)
    total = tl.zeros([BLOCK_R], tl.float32)
    terms_sum = tl.zeros([BLOCK_R], tl.float32)
    any_finite = tl.zeros([BLOCK_R], tl.int32)
    any_silent = tl.zeros([BLOCK_R], tl.int32)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=STAGES):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < V)[None, :]
        lp, lq, lm, ra, rb, w, maybe_silent = _tile(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows,
                                      inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr,
                                      MIX, LAM_LOW, BETA_NEG, ACC)  # fmt: skip
        top = tl.where(mask & (lm == lm), lm, NEG)
        tile_max = tl.max(top, 1)
        pos = tl.min(tl.where(top == tile_max[:, None], cols[None, :], 2**30), 1)
        better = tile_max > m
        new_m = tl.where(better, tile_max, m)
        ref = tl.where(new_m == NEG, 0.0, new_m)
        # carry: (S_o + 1)·e^(M_old − M_new) where the maximum rises from a finite one
        carry = _exp(tl.where(m == NEG, 0.0, m) - ref, ACC)
        others = tl.where(better, tl.where(m == NEG, 0.0, (others + 1.0) * carry), others)
        k = tl.where(better, pos, k)
        m = new_m
        keep = mask & (cols[None, :] != k[:, None])
        e_m = _exp(lm - ref[:, None], ACC)  # e^(log m − M), M = ref
        others += tl.sum(tl.where(keep, e_m, 0.0), 1)
        any_finite = any_finite | tl.max((mask & (lm != NEG) & (lm == lm)).to(tl.int32), 1)
        if FIND_SILENT:  # every entry with w = 0 (perhaps a few more: see _mixture)
            any_silent = any_silent | tl.max((mask & maybe_silent).to(tl.int32), 1)
        if REF_P:
            l_ref = lp
            u = ra
        else:
            l_ref = lq
            u = rb
        if STORE_MIX:
            offs = rows[:, None].to(tl.int64) * mix_stride + cols[None, :]
            tl.store(mix_ptr + offs, lm, mask=mask)
            tl.store(u_ptr + offs, u, mask=mask)
        s = _exp(l_ref, ACC)
        # s·expm1(u) (gpu._torch_kernel._log_ratio_sums) as s·u·expm1(u)/u where |u| ≤ 1
        # (_expm1_ratio) and e^(log m) − s beyond, e^(log m) = e^(log m − M)·e^M from the
        # sum's own exponential (the difference scales its operands' rounding by < 2.2; a
        # zero of s, u = ±inf, take it too); e^(log m) − s itself where s is not normal
        # or u > 80 (formed only in a tile that has such an entry)
        product = (u <= 80.0) & (l_ref >= -87.0)
        near_u = tl.abs(u) <= 1.0
        terms = tl.where(near_u, s * (u * _expm1_ratio(tl.where(near_u, u, 0.0))),
                         e_m * _exp(ref, ACC)[:, None] - s)  # fmt: skip
        if _anywhere(mask & ~product):
            terms = tl.where(product, terms, _exp(lm, ACC) - s)
        terms = _nan_to_zero(terms)
        total += tl.sum(tl.where(mask, s, 0.0), 1)
        terms_sum += tl.sum(tl.where(mask, terms, 0.0), 1)
    if FIND_SILENT:
        tl.store(stats_ptr + 17 * n_rows + rows, any_silent.to(tl.float32), mask=rmask)
    tl.store(idx_ptr + 2 * n_rows + rows, k, mask=rmask)
    if SHARD:  # the partials, for the caller to combine
        tl.store(stats_ptr + 4 * n_rows + rows, m, mask=rmask)
        tl.store(stats_ptr + 5 * n_rows + rows, others, mask=rmask)
        tl.store(stats_ptr + 7 * n_rows + rows, total, mask=rmask)
        tl.store(stats_ptr + 8 * n_rows + rows, terms_sum, mask=rmask)
        tl.store(stats_ptr + 9 * n_rows + rows, any_finite.to(tl.float32), mask=rmask)
    else:
        shift = tl.where(m == NEG, 0.0, m)
        corr = tl.where(any_finite != 0, _log1p(others, ACC), NEG)
        lz = shift + corr
        frac = terms_sum / total
        direct = lz - _log(total, ACC)
        log_zr = tl.where(tl.abs(frac) <= 0.5,
                          _log1p(tl.minimum(tl.maximum(frac, -0.5), 0.5), ACC), direct)  # fmt: skip
        tl.store(stats_ptr + 4 * n_rows + rows, shift, mask=rmask)
        tl.store(stats_ptr + 5 * n_rows + rows, corr, mask=rmask)
        tl.store(stats_ptr + 6 * n_rows + rows, log_zr, mask=rmask)
        flags = tl.load(flags_ptr + rows, mask=rmask, other=0).to(tl.int32)
        flags = flags | tl.where(lz == NEG, 4, 0)
        tl.store(flags_ptr + rows, flags.to(tl.int16), mask=rmask)


@_device
def _project(g, lw, cols, k, lw_k, others, g_k, ACC: tl.constexpr):
    """gpu._torch_kernel.LocalReduce.project_: g_j − w_j Σg, the top entry k as
    g_k(1 − w_k) − w_k Σ_{x≠k} g_x (1 − w_k = −expm1(log w_k))."""
    out = g - _exp(lw, ACC) * (others + g_k)[:, None]
    dominant = g_k * -_expm1(lw_k, ACC) - _exp(lw_k, ACC) * others
    return tl.where(cols[None, :] == k[:, None], dominant[:, None], out)


@_device
def _stored_mixture(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows, inv_t, beta, t_off,
                    mix_ptr, mix_stride, BETA_NEG: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """With pass b's stored log m (|β| > 0 regimes): the tile's log p, log q, log m, the
    offsets of the chunk-sized float32 buffers and w, formed from t as in _mixture."""
    lp, lq = _tile_log_probs(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows,
                             inv_t)  # fmt: skip
    offs = rows[:, None].to(tl.int64) * mix_stride + cols[None, :]
    lm = tl.load(mix_ptr + offs, mask=mask, other=float("-inf"))
    t = (lp - lq) * beta + t_off
    w, _ = _logistic_weight(t, _exp(-tl.abs(t), ACC), lm, BETA_NEG)
    return lp, lq, lm, offs, w


@_device
def _log_r(lm, stats_ptr, rows, n_rows):
    """log r = log m − shift − log Z of the row (pass b's row statistics)."""
    rmask = rows < n_rows
    shift = tl.load(stats_ptr + 4 * n_rows + rows, mask=rmask, other=0.0)
    corr_m = tl.load(stats_ptr + 5 * n_rows + rows, mask=rmask, other=0.0)
    return (lm - shift[:, None]) - corr_m[:, None]


@_device
def _project_r(g_r, lr, cols, stats_ptr, idx_ptr, rows, n_rows, ACC: tl.constexpr):
    """P_r(g_r): g_r's projection through log r = log m − log Z (pass b's index of the
    largest m and the sums of r beside it)."""
    rmask = rows < n_rows
    k_m = tl.load(idx_ptr + 2 * n_rows + rows, mask=rmask, other=0)
    corr_m = tl.load(stats_ptr + 5 * n_rows + rows, mask=rmask, other=0.0)
    r_others = tl.load(stats_ptr + 7 * n_rows + rows, mask=rmask, other=0.0)
    r_top = tl.load(stats_ptr + 8 * n_rows + rows, mask=rmask, other=0.0)
    return _project(g_r, lr, cols, k_m, -corr_m, r_others, r_top, ACC)


@_device
def _arguments(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows,
               inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride,
               MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
               FIRST_R: tl.constexpr, REF_P: tl.constexpr, ACC: tl.constexpr,
               LOAD_MIX: tl.constexpr):  # fmt: skip
    """The tile's log p, log q, log m, log m − log q, w, log r, and the divergence's
    arguments (log a, log b, log(a/b)) after passes a–b; log(a/b) from the mixture's ratio
    to p or q (gpu._torch_kernel._log_ratio_to_mixture).

    With LOAD_MIX (|β| > 0 regimes, passes c and c2 of a gradient), log m and the ratio to
    the reference are pass b's, stored in float32 (the same values: no pivot, correction,
    near series or ratio selection formed again) and w comes from t as in _mixture; the
    ratio to q is then not formed where the reference is p (only h reads it, and h forms its
    tile again: _elements)."""
    rmask = rows < n_rows
    if LOAD_MIX:
        lp, lq, lm, offs, w = _stored_mixture(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr,
                                              n_rows, inv_t, beta, t_off, mix_ptr, mix_stride,
                                              BETA_NEG, ACC)  # fmt: skip
        ra = tl.load(u_ptr + offs, mask=mask, other=float("nan"))
        rb = ra
    else:
        lp, lq, lm, ra, rb, w, _ = _tile(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows,
                                      inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr,
                                      MIX, LAM_LOW, BETA_NEG, ACC)  # fmt: skip
    log_zr = tl.load(stats_ptr + 6 * n_rows + rows, mask=rmask, other=0.0)
    lr = _log_r(lm, stats_ptr, rows, n_rows)
    if REF_P:
        u = ra
        l_other = lp
    else:
        u = rb
        l_other = lq
    log_ratio = u - log_zr[:, None]  # log(r/other)
    if FIRST_R:
        la = lr
        lb = l_other
        d = log_ratio
    else:
        la = l_other
        lb = lr
        d = -log_ratio
    return lp, lq, lm, rb, w, lr, la, lb, d


@_device
def _renyi_omega(la, lb, d, dprm_ptr, ACC: tl.constexpr):
    """gpu._divergences._renyi per element: a, a > 0, ω = log(a^ρ b^(1−ρ)) and
    a_e = a·expm1(cδ)/c (formed as (e^ω − a)/c once |cδ| > 1)."""
    NEG = float("-inf")
    c = tl.load(dprm_ptr + 1)
    a = _exp(la, ACC)
    a_pos = la != NEG
    dd = tl.where(a_pos, d, 0.0)
    omega = tl.where(a_pos, la + c * dd, NEG)
    cd = tl.where(a_pos, c * dd, 0.0)
    small = tl.abs(cd) <= 1.0
    a_e = tl.where(small, a * (_expm1(tl.where(small, cd, 0.0), ACC) / c),
                   (_exp(omega, ACC) - a) / c)  # fmt: skip
    a_e = tl.where(a_pos, a_e, 0.0)
    return a, omega, a_e


@_device
def _renyi_row(stats_ptr, rows, n_rows, dprm_ptr, ACC: tl.constexpr):
    """From pass c0's partial sums: log Σ e^ω, whether the row takes the series form
    (no e^ω overflows and |cM| ≤ ½), M there (0 elsewhere) and the loss."""
    INF = float("inf")
    rmask = rows < n_rows
    c = tl.load(dprm_ptr + 1)
    top = tl.load(stats_ptr + 14 * n_rows + rows, mask=rmask, other=0.0)
    total = tl.load(stats_ptr + 15 * n_rows + rows, mask=rmask, other=1.0)
    m = tl.load(stats_ptr + 16 * n_rows + rows, mask=rmask, other=0.0)
    finite = tl.abs(top) < INF
    lse = tl.where(finite, top + _log(tl.where(finite, total, 1.0), ACC), top)
    series = (top <= 80.0) & (tl.abs(c * m) <= 0.5)  # _RENYI_SERIES_CM
    m = tl.where(series, m, 0.0)
    value = tl.where(series, _log1p(c * m, ACC) / c, lse / c)
    return lse, series, m, value


@_device
def _renyi_elements(la, lb, d, stats_ptr, rows, n_rows, dprm_ptr, ACC: tl.constexpr):
    """gpu._divergences._renyi's gradients given the row sums: series rows
    g_a = ρ(a_e − aM)/(1 + cM), g_b = −(a + c·a_e)/(1 + cM); others (ρ/c)·π, −π with
    π = e^(ω − lse). The terms are 0: the loss is the row's (:func:`_renyi_row`)."""
    rho = tl.load(dprm_ptr + 0)
    c = tl.load(dprm_ptr + 1)
    rho_over_c = tl.load(dprm_ptr + 2)
    lse, series, m, value = _renyi_row(stats_ptr, rows, n_rows, dprm_ptr, ACC)
    a, omega, a_e = _renyi_omega(la, lb, d, dprm_ptr, ACC)
    denom = (1.0 + c * m)[:, None]
    pi = _nan_to_zero(_exp(omega - lse[:, None], ACC))
    ser = series[:, None]
    ga = tl.where(ser, rho * (a_e - a * m[:, None]) / denom, rho_over_c * pi)
    gb = tl.where(ser, -(a + c * a_e) / denom, -pi)
    return tl.zeros_like(ga), ga, gb, ga + gb


@triton.jit
def _renyi_pass(s_ptr, t_ptr, stride, n_rows, V, stats_ptr, idx_ptr,
                inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, dprm_ptr,
                MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
                FIRST_R: tl.constexpr, REF_P: tl.constexpr, ACC: tl.constexpr,
                BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, STAGES: tl.constexpr = 1):  # fmt: skip
    """Pass c0 (Rényi only): the row partial sums of gpu._divergences._renyi: max ω and
    Σ e^(ω − max ω) (an online log-sum-exp: a sharded caller combines shards by their max)
    and M = Σ a_e."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    NEG = float("-inf")
    top = tl.full([BLOCK_R], NEG, tl.float32)
    total = tl.zeros([BLOCK_R], tl.float32)
    m = tl.zeros([BLOCK_R], tl.float32)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=STAGES):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < V)[None, :]
        lp, lq, lm, rb, w, lr, la, lb, d = _arguments(
            s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows,
            inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride,
            MIX, LAM_LOW, BETA_NEG, FIRST_R, REF_P, ACC, False)  # fmt: skip
        a, omega, a_e = _renyi_omega(la, lb, d, dprm_ptr, ACC)
        omega = tl.where(mask, omega, NEG)
        new = tl.maximum(top, tl.max(omega, 1))
        ref = tl.where(tl.abs(new) < float("inf"), new, 0.0)
        total = total * _exp(top - ref, ACC) + tl.sum(_exp(omega - ref[:, None], ACC), 1)
        top = new
        m += tl.sum(tl.where(mask, a_e, 0.0), 1)
    tl.store(stats_ptr + 14 * n_rows + rows, top, mask=rmask)
    tl.store(stats_ptr + 15 * n_rows + rows, total, mask=rmask)
    tl.store(stats_ptr + 16 * n_rows + rows, m, mask=rmask)


@_device
def _elements(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr, n_rows,
              inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
              prm, prm_log, prm_log1m, dprm_ptr,
              MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
              DIV: tl.constexpr, FIRST_R: tl.constexpr, REF_P: tl.constexpr,
              THROUGH_R: tl.constexpr, H_MODE: tl.constexpr, ACC: tl.constexpr,
              LOAD_MIX: tl.constexpr):  # fmt: skip
    """Everything elementwise of one tile after passes a–b: the divergence's terms, the
    direct g_q (0 when q is not an argument; for the AB family with q an argument and the
    assistant live, g_q + w·g_r in closed form), g_r with its silent entries (w = 0) apart,
    the normalizer's operand h (finite α: x = (1−β)u, of which _normalizer_k forms K,
    gpu._torch_kernel._normalizer_gradient; 0 otherwise), w, log q, log r."""
    NEG = float("-inf")
    rmask = rows < n_rows
    lp, lq, lm, rb, w, lr, la, lb, d = _arguments(
        s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows,
        inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride,
        MIX, LAM_LOW, BETA_NEG, FIRST_R, REF_P, ACC, LOAD_MIX)  # fmt: skip
    if DIV == 10:  # Rényi: elementwise given its row sums (pass c0)
        terms, ga, gb, g_sum = _renyi_elements(la, lb, d, stats_ptr, rows, n_rows, dprm_ptr,
                                               ACC)  # fmt: skip
    elif DIV >= 6 and DIV <= 8:  # the AB family: its powers kept for _ab_pair
        terms, ga, gb, g_sum, ex_x, ex_y, ex_xy = _ab_elements(la, lb, d, dprm_ptr, mask, DIV,
                                                               ACC)  # fmt: skip
    else:
        terms, ga, gb, g_sum = _divergence(la, lb, d, prm, prm_log, prm_log1m, dprm_ptr, mask,
                                           DIV, ACC)  # fmt: skip
    if FIRST_R:
        g_r = ga
        if REF_P:
            g_q = tl.zeros_like(ga)
        else:
            g_q = gb
    else:
        g_r = gb
        if REF_P:
            g_q = tl.zeros_like(ga)
        else:
            g_q = ga
    if THROUGH_R and (not REF_P) and DIV >= 6 and DIV <= 9:
        # g_q + w·g_r in closed form (gpu._torch_kernel.chunk's ``pair``)
        w_bar, w_diff = _weight_parts(lp, lq, lm, w, beta, lam, one_m_lam, t_off, MIX, BETA_NEG,
                                      ACC)  # fmt: skip
        if DIV == 9:  # χ² = 2·AB(2, −1) where both are positive, its own gradients elsewhere
            ex_x, ex_y, ex_xy = _ab_powers(la, lb, dprm_ptr, ACC)
            pair = _ab_pair(la, lb, d, w, w_bar, w_diff, ga, gb, g_sum, ex_x, ex_y, ex_xy,
                            dprm_ptr, FIRST_R, 2.0)  # fmt: skip
            both = (la != NEG) & (lb != NEG)
            if FIRST_R:
                g_q = tl.where(both, pair, gb + w * ga)
            else:
                g_q = tl.where(both, pair, ga + w * gb)
        else:
            g_q = _ab_pair(la, lb, d, w, w_bar, w_diff, ga, gb, g_sum, ex_x, ex_y, ex_xy,
                           dprm_ptr, FIRST_R, 1.0)  # fmt: skip
    silent = w == 0.0
    h = tl.zeros_like(lq)
    if THROUGH_R and H_MODE >= 2:
        # finite α: x = (1−β)u, of which K is formed (_normalizer_sums, _normalizer_k). It
        # matters only in rows with a through-Z term, which need an entry with w = 0: formed
        # in the row blocks that hold such a row (pass b's _ANY_SILENT), 0 elsewhere; on
        # every row for the near-row pair form (H_MODE 3). (λ = 1: no term; α = ±inf: K from
        # w, log r and log q, _normalizer_k_inf.)
        need_h = tl.max(tl.load(stats_ptr + 17 * n_rows + rows, mask=rmask, other=0.0), 0)
        if H_MODE == 3:
            need_h = need_h * 0.0 + 1.0
        if need_h != 0.0:  # a row of the block (the same in every tile)
            if LOAD_MIX and REF_P:  # the ratio to q was not stored (_arguments): formed here
                _, _, _, _, rb, _, _ = _tile(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr,
                                             n_rows, inv_t, beta, inv_beta, lam, one_m_lam, t_off,
                                             c_a, c_b, log_lam, log_1m_lam, kc_ptr, MIX, LAM_LOW,
                                             BETA_NEG, ACC)  # fmt: skip
            h = _nan_to_zero(tl.where(lq == NEG, 0.0, rb * (1.0 - beta_h)))
    return terms, g_q, g_r, silent, h, w, lq, lr


@_device
def _normalizer_sums(x, lq, log_c, ACC: tl.constexpr):
    """The two summands of K's row sums (gpu._torch_kernel._normalizer_gradient): q·expm1(x)
    and e^(x + log q + log((1−λ)/Z) + B) = r ⊙ w·e^B, 0 where q = 0 (B = 60, the torch
    kernel's float32 ``_LIFT``)."""
    NEG = float("-inf")
    e_q = _exp(lq, ACC)
    t = tl.where(x <= 1.0, _expm1(tl.minimum(x, 1.0), ACC) * e_q, _exp(x + lq, ACC) - e_q)
    lifted = _exp(x + lq + (log_c + 60.0)[:, None], ACC)
    return (_nan_to_zero(tl.where(lq == NEG, 0.0, t)),
            _nan_to_zero(tl.where(lq == NEG, 0.0, lifted)))  # fmt: skip


@_device
def _normalizer_k(x, lq, log_c, total, lifted, ACC: tl.constexpr):
    """K = S·q·expm1(x − L) from the row sums of _normalizer_sums (L = log1p of the first
    where it is at least −½, else log of the second − B − log c; log S = log c + L)."""
    NEG = float("-inf")
    log_e = tl.where(total >= -0.5, _log1p(tl.maximum(total, -0.5), ACC),
                     _log(lifted, ACC) - 60.0 - log_c)  # fmt: skip
    log_s = (log_c + log_e)[:, None]
    y = x - log_e[:, None]
    scale = _exp(log_s + lq, ACC)
    k = tl.where(y <= 1.0, _expm1(tl.minimum(y, 1.0), ACC) * scale,
                 _exp(y + log_s + lq, ACC) - scale)  # fmt: skip
    return _nan_to_zero(tl.where(lq == NEG, 0.0, k))


@_device
def _tile_k(h, lq, stats_ptr, rows, n_rows, log_1m_lam, ACC: tl.constexpr):
    """K of one tile (_normalizer_k) from x (``h``), log Z and pass c's two row sums, and the
    first of those sums (L takes its log1p form where it is at least −½)."""
    rmask = rows < n_rows
    log_c = log_1m_lam - (tl.load(stats_ptr + 4 * n_rows + rows, mask=rmask, other=0.0)
                          + tl.load(stats_ptr + 5 * n_rows + rows, mask=rmask, other=0.0))  # fmt: skip
    total = tl.load(stats_ptr + 10 * n_rows + rows, mask=rmask, other=0.0)
    lifted = tl.load(stats_ptr + 11 * n_rows + rows, mask=rmask, other=0.0)
    return _normalizer_k(h, lq, log_c, total, lifted, ACC), total


@_device
def _normalizer_k_inf(w, lq, lr, held, left, ACC: tl.constexpr):
    """K at α = ±inf (gpu._torch_kernel._normalizer_gradient): w·r·Ā − (1 − w)·q·S from
    pass c's row sums S = Σ w r (``held``) and Ā = Σ (1 − w) q (``left``), 0 where q = 0."""
    NEG = float("-inf")
    k = w * _exp(lr, ACC) * left[:, None] - (1.0 - w) * _exp(lq, ACC) * held[:, None]
    return _nan_to_zero(tl.where(lq == NEG, 0.0, k))


@triton.jit
def _divergence_pass(s_ptr, t_ptr, stride, n_rows, V, stats_ptr, idx_ptr, flags_ptr, loss_ptr,
                     pr_ptr, inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
                     prm, prm_log, prm_log1m, dprm_ptr,
                     MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
                     DIV: tl.constexpr, FIRST_R: tl.constexpr, REF_P: tl.constexpr,
                     THROUGH_R: tl.constexpr, H_MODE: tl.constexpr, WANT_GRAD: tl.constexpr, ACC: tl.constexpr,
                     LOAD_MIX: tl.constexpr, STORE_PAIR: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, STAGES: tl.constexpr = 1):  # fmt: skip
    """Pass c: the loss per row and the sums the projections need: Σ_{x≠k_m} g_r and
    g_r at k_m (P_r), Σ of g_r over the silent entries, and for finite α the two row sums
    of the normalizer term K (_normalizer_sums).

    With STORE_PAIR (the AB family and χ² with q an argument and the assistant live, |β| > 0
    regimes with the mixture stored), the tile's g_q + w·g_r in closed form over the stored
    ratio (read first, in the same tile) and g_r (0 at the silent entries) at ``pr_ptr``,
    in float32: pass c2 reads them instead of forming the divergence again (_stored_direction)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    k_m = tl.load(idx_ptr + 2 * n_rows + rows, mask=rmask, other=0)
    value = tl.zeros([BLOCK_R], tl.float32)
    r_others = tl.zeros([BLOCK_R], tl.float32)
    r_top = tl.zeros([BLOCK_R], tl.float32)
    g_silent = tl.zeros([BLOCK_R], tl.float32)
    k_total = tl.zeros([BLOCK_R], tl.float32)
    k_lifted = tl.zeros([BLOCK_R], tl.float32)
    log_c = log_1m_lam - (tl.load(stats_ptr + 4 * n_rows + rows, mask=rmask, other=0.0)
                          + tl.load(stats_ptr + 5 * n_rows + rows, mask=rmask, other=0.0))  # fmt: skip
    any_silent = tl.load(stats_ptr + 17 * n_rows + rows, mask=rmask, other=0.0)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=STAGES):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < V)[None, :]
        terms, g_q, g_r, silent, h, w, lq, lr = _elements(
            s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr, n_rows,
            inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
            prm, prm_log, prm_log1m, dprm_ptr, MIX, LAM_LOW, BETA_NEG, DIV, FIRST_R, REF_P, THROUGH_R,
            H_MODE,
            ACC, LOAD_MIX)  # fmt: skip
        value += tl.sum(tl.where(mask, terms, 0.0), 1)
        if STORE_PAIR:
            offs = rows[:, None].to(tl.int64) * mix_stride + cols[None, :]
            tl.store(u_ptr + offs, g_q, mask=mask)
            tl.store(pr_ptr + offs, tl.where(silent, 0.0, g_r), mask=mask)
        if THROUGH_R:
            at_m = cols[None, :] == k_m[:, None]
            g_silent += tl.sum(tl.where(mask & silent, g_r, 0.0), 1)
            g_r = tl.where(silent, 0.0, g_r)
            r_others += tl.sum(tl.where(mask & ~at_m, g_r, 0.0), 1)
            r_top += tl.sum(tl.where(mask & at_m, g_r, 0.0), 1)
            if H_MODE >= 2:  # K's two row sums (_normalizer_sums), in blocks with such rows
                need_k = tl.max(any_silent, 0)
                if H_MODE == 3:  # the near-row pair form: every row
                    need_k = need_k * 0.0 + 1.0
                if need_k != 0.0:
                    t_h, lift_h = _normalizer_sums(h, lq, log_c, ACC)
                    k_total += tl.sum(tl.where(mask, t_h, 0.0), 1)
                    k_lifted += tl.sum(tl.where(mask, lift_h, 0.0), 1)
            elif H_MODE == 1:  # α = ±inf: S = Σ w r and Ā = Σ (1 − w) q, every row
                k_total += tl.sum(tl.where(mask, _nan_to_zero(w * _exp(lr, ACC)), 0.0), 1)
                k_lifted += tl.sum(tl.where(mask, _nan_to_zero((1.0 - w) * _exp(lq, ACC)), 0.0), 1)
    if DIV == 10:  # Rényi: the row's value from pass c0's sums
        lse, series, m_sum, value = _renyi_row(stats_ptr, rows, n_rows, dprm_ptr, ACC)
    tl.store(loss_ptr + rows, value, mask=rmask)
    if THROUGH_R:
        tl.store(stats_ptr + 7 * n_rows + rows, r_others, mask=rmask)
        tl.store(stats_ptr + 8 * n_rows + rows, r_top, mask=rmask)
        tl.store(stats_ptr + 9 * n_rows + rows, g_silent, mask=rmask)
        tl.store(stats_ptr + 10 * n_rows + rows, k_total, mask=rmask)
        tl.store(stats_ptr + 11 * n_rows + rows, k_lifted, mask=rmask)
    flags = tl.load(flags_ptr + rows, mask=rmask, other=0).to(tl.int32)
    flags = flags | tl.where(value != value, 16, 0)
    if WANT_GRAD:
        flags = flags | tl.where(tl.abs(value) == float("inf"), 8, 0)
    tl.store(flags_ptr + rows, flags.to(tl.int16), mask=rmask)


@_device
def _student_direction(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr, n_rows,
                       inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
                       prm, prm_log, prm_log1m, dprm_ptr,
                       MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
                       DIV: tl.constexpr, FIRST_R: tl.constexpr, REF_P: tl.constexpr,
                       THROUGH_R: tl.constexpr, H_MODE: tl.constexpr, ACC: tl.constexpr,
                       LOAD_MIX: tl.constexpr):  # fmt: skip
    """G = g_q + w·P_r(g_r) and the through-Z term g_silent·K of one tile, both before the
    projection P_q that the gradient takes of G − g_silent·K, and log q."""
    rmask = rows < n_rows
    terms, g_q, g_r, silent, h, w, lq, lr = _elements(
        s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr, n_rows,
        inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
        prm, prm_log, prm_log1m, dprm_ptr, MIX, LAM_LOW, BETA_NEG, DIV, FIRST_R, REF_P, THROUGH_R,
        H_MODE,
        ACC, LOAD_MIX)  # fmt: skip
    through_z = tl.zeros_like(g_q)
    if THROUGH_R and H_MODE == 1:
        # α = ±inf: g_q + w ⊙ g_r − (Σ g_r)·K on every row, K exact (_normalizer_k_inf):
        # the projected form cancelled where Σ g_r is large (gpu._torch_kernel._through_r_exact)
        g_all = (tl.load(stats_ptr + 7 * n_rows + rows, mask=rmask, other=0.0)
                 + tl.load(stats_ptr + 8 * n_rows + rows, mask=rmask, other=0.0)
                 + tl.load(stats_ptr + 9 * n_rows + rows, mask=rmask, other=0.0))  # fmt: skip
        held = tl.load(stats_ptr + 10 * n_rows + rows, mask=rmask, other=0.0)
        left = tl.load(stats_ptr + 11 * n_rows + rows, mask=rmask, other=0.0)
        if not ((not REF_P) and DIV >= 6 and DIV <= 9):  # (the pair is g_q + w·g_r already)
            g_q = g_q + tl.where(silent, 0.0, w * g_r)
        k_all = _normalizer_k_inf(w, lq, lr, held, left, ACC)
        through_z = tl.where((g_all != 0.0)[:, None], k_all * g_all[:, None], 0.0)
    elif THROUGH_R:
        pair = g_q  # (the closed-form g_q + w·g_r where q is an argument: H_MODE 3 reads it)
        g_silent = tl.load(stats_ptr + 9 * n_rows + rows, mask=rmask, other=0.0)
        g_r = tl.where(silent, 0.0, g_r)
        g_logm = _project_r(g_r, lr, cols, stats_ptr, idx_ptr, rows, n_rows, ACC)
        if (not REF_P) and DIV >= 6 and DIV <= 9:
            g_q = g_q - (g_r - g_logm) * w  # pair − w·(g_r − P_r(g_r))
        else:
            g_q = g_q + g_logm * w
        # unprojected: the callers subtract it from G before P_q (one projection of both);
        # formed in the row blocks that have a through-Z term only (rare)
        if H_MODE == 3:  # K on every row (below), formed once
            k_all, total = _tile_k(h, lq, stats_ptr, rows, n_rows, log_1m_lam, ACC)
        if _anywhere(mask & (g_silent != 0.0)[:, None]):
            if H_MODE == 3:
                k_z = k_all
            elif H_MODE == 2:  # K from x and pass c's two row sums
                k_z, _ = _tile_k(h, lq, stats_ptr, rows, n_rows, log_1m_lam, ACC)
            else:  # λ = 1: 0
                k_z = h
            through_z = tl.where((g_silent != 0.0)[:, None], k_z * g_silent[:, None], 0.0)
        if H_MODE == 3:
            # 0 < λ < PAIR_LAM_MIN with the closed-form pair: on the rows where r ⊙ w is near a
            # multiple of q (L in its log1p form) pair − (Σ g_r)·K, K exact, in place of the
            # projected form, which keeps ε/λ of w ⊙ r·Σ g_r
            # (gpu._torch_kernel._through_r_paired)
            g_all = (tl.load(stats_ptr + 7 * n_rows + rows, mask=rmask, other=0.0)
                     + tl.load(stats_ptr + 8 * n_rows + rows, mask=rmask, other=0.0)
                     + g_silent)  # fmt: skip
            near = (total >= -0.5)[:, None]
            own = pair - tl.where((g_all != 0.0)[:, None], k_all * g_all[:, None], 0.0)
            g_q = tl.where(near, own, g_q)
            through_z = tl.where(near, 0.0, through_z)
    return g_q, through_z, lq


@_device
def _stored_direction(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr, n_rows,
                      inv_t, beta, t_off, mix_ptr, u_ptr, mix_stride, pr_ptr,
                      BETA_NEG: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """G = g_q + w·P_r(g_r) of one tile (before its projection P_q) and log q, from pass c's
    stored g_q + w·g_r and g_r (STORE_PAIR): log q, log r and w from the logits and the
    stored log m, then G = pair − w·(g_r − P_r(g_r)) as in _student_direction (the same
    values: pass c formed them with the same code from the same stored mixture, and g_r is
    stored 0 at the silent entries, as _student_direction sets it). The through-Z term is
    pass d's alone (c2 sums G without it)."""
    _, lq, lm, offs, w = _stored_mixture(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, n_rows,
                                         inv_t, beta, t_off, mix_ptr, mix_stride, BETA_NEG, ACC)  # fmt: skip
    pair = tl.load(u_ptr + offs, mask=mask, other=0.0)
    g_r = tl.load(pr_ptr + offs, mask=mask, other=0.0)
    lr = _log_r(lm, stats_ptr, rows, n_rows)
    g_logm = _project_r(g_r, lr, cols, stats_ptr, idx_ptr, rows, n_rows, ACC)
    return pair - (g_r - g_logm) * w, lq


@triton.jit
def _gradient_sum_pass(s_ptr, t_ptr, stride, n_rows, V, stats_ptr, idx_ptr, g_ptr, g_stride,
                       pr_ptr, inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
                       prm, prm_log, prm_log1m, dprm_ptr,
                       MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
                       DIV: tl.constexpr, FIRST_R: tl.constexpr, REF_P: tl.constexpr,
                       THROUGH_R: tl.constexpr, H_MODE: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_V: tl.constexpr, STORE_G: tl.constexpr, LOAD_MIX: tl.constexpr,
                       LOAD_PAIR: tl.constexpr, STAGES: tl.constexpr = 1):  # fmt: skip
    """Pass c2: Σ_{x≠k_s} G and G at k_s, G = g_q + w·P_r(g_r) − g_silent·K (for P_q);
    with STORE_G, G itself too, in float32 at ``g_ptr`` (pass d then reads it instead of
    forming it again); with LOAD_PAIR, G from pass c's stored pair and g_r
    (_stored_direction), the through-Z term formed from the tile in the rows that have one."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    k_s = tl.load(idx_ptr + 0 * n_rows + rows, mask=rmask, other=0)
    q_others = tl.zeros([BLOCK_R], tl.float32)
    q_top = tl.zeros([BLOCK_R], tl.float32)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=STAGES):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < V)[None, :]
        if LOAD_PAIR:
            g, lq = _stored_direction(s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr,
                                      n_rows, inv_t, beta, t_off, mix_ptr, u_ptr, mix_stride,
                                      pr_ptr, BETA_NEG, ACC)  # fmt: skip
            if THROUGH_R:  # the through-Z term, in rows that have one (rare): the tile again
                g_silent = tl.load(stats_ptr + 9 * n_rows + rows, mask=rmask, other=0.0)
                if _anywhere(mask & (g_silent != 0.0)[:, None]):
                    _, through_z, _ = _student_direction(
                        s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr, n_rows,
                        inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride,
                        beta_h, prm, prm_log, prm_log1m, dprm_ptr, MIX, LAM_LOW, BETA_NEG, DIV,
                        FIRST_R, REF_P, THROUGH_R, H_MODE, ACC, False)  # fmt: skip
                    g = g - through_z
        else:
            g, through_z, lq = _student_direction(
                s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr, n_rows,
                inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
                prm, prm_log, prm_log1m, dprm_ptr, MIX, LAM_LOW, BETA_NEG, DIV, FIRST_R, REF_P, THROUGH_R,
                H_MODE,
                ACC, LOAD_MIX)  # fmt: skip
            g = g - through_z
        at_s = cols[None, :] == k_s[:, None]
        q_others += tl.sum(tl.where(mask & ~at_s, g, 0.0), 1)
        q_top += tl.sum(tl.where(mask & at_s, g, 0.0), 1)
        if STORE_G:
            tl.store(g_ptr + rows[:, None].to(tl.int64) * g_stride + cols[None, :], g, mask=mask)
    tl.store(stats_ptr + 12 * n_rows + rows, q_others, mask=rmask)
    tl.store(stats_ptr + 13 * n_rows + rows, q_top, mask=rmask)


@triton.jit
def _gradient_pass(s_ptr, t_ptr, stride, n_rows, V, stats_ptr, idx_ptr, flags_ptr,
                   out_ptr, out_stride, lo_ptr, lo_stride, scale, g_ptr, g_stride,
                   inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
                   prm, prm_log, prm_log1m, dprm_ptr,
                   MIX: tl.constexpr, LAM_LOW: tl.constexpr, BETA_NEG: tl.constexpr,
                   DIV: tl.constexpr, FIRST_R: tl.constexpr, REF_P: tl.constexpr,
                   THROUGH_R: tl.constexpr, H_MODE: tl.constexpr, HAS_LO: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, LOAD_G: tl.constexpr, STAGES: tl.constexpr = 1):  # fmt: skip
    """Pass d: ∂loss/∂s = P_q(G − g_silent·K)·scale, written in the output's dtype (the
    residual of that rounding into ``lo`` when HAS_LO); _NAN_GRAD / _INF_GRAD from the
    written values (gpu._torch_kernel._grad_flags). With LOAD_G, G − g_silent·K is pass
    c2's (float32 at ``g_ptr``, the same values): the tile is not formed again."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    k_s = tl.load(idx_ptr + 0 * n_rows + rows, mask=rmask, other=0)
    corr_s = tl.load(stats_ptr + 2 * n_rows + rows, mask=rmask, other=0.0)
    q_others = tl.load(stats_ptr + 12 * n_rows + rows, mask=rmask, other=0.0)
    q_top = tl.load(stats_ptr + 13 * n_rows + rows, mask=rmask, other=0.0)
    nan = tl.zeros([BLOCK_R], tl.int32)
    inf = tl.zeros([BLOCK_R], tl.int32)
    if LOAD_G:
        top_s = tl.load(stats_ptr + 0 * n_rows + rows, mask=rmask, other=0.0)
    for v0 in tl.range(0, V, BLOCK_V, num_stages=STAGES):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = rmask[:, None] & (cols < V)[None, :]
        if LOAD_G:  # G − g_silent·K as pass c2 stored it
            lq = _scaled(_load(s_ptr, rows, cols, stride, mask), top_s, inv_t) - corr_s[:, None]
            g = tl.load(g_ptr + rows[:, None].to(tl.int64) * g_stride + cols[None, :], mask=mask,
                        other=0.0)  # fmt: skip
        else:
            g, through_z, lq = _student_direction(
                s_ptr, t_ptr, rows, cols, stride, mask, stats_ptr, idx_ptr, n_rows,
                inv_t, beta, inv_beta, lam, one_m_lam, t_off, c_a, c_b, log_lam, log_1m_lam, kc_ptr, mix_ptr, u_ptr, mix_stride, beta_h,
                prm, prm_log, prm_log1m, dprm_ptr, MIX, LAM_LOW, BETA_NEG, DIV, FIRST_R, REF_P, THROUGH_R,
                H_MODE,
                ACC, False)  # fmt: skip
            g = g - through_z
        grad = _project(g, lq, cols, k_s, -corr_s, q_others, q_top, ACC) * scale
        ptrs = out_ptr + rows[:, None].to(tl.int64) * out_stride + cols[None, :]
        written = grad.to(out_ptr.dtype.element_ty)
        tl.store(ptrs, written, mask=mask)
        back = written.to(tl.float32)
        if HAS_LO:
            lo_ptrs = lo_ptr + rows[:, None].to(tl.int64) * lo_stride + cols[None, :]
            tl.store(lo_ptrs, (grad - back).to(lo_ptr.dtype.element_ty), mask=mask)
        nan = nan | tl.max((mask & (back != back)).to(tl.int32), 1)
        inf = inf | tl.max((mask & (tl.abs(back) == float("inf"))).to(tl.int32), 1)
    flags = tl.load(flags_ptr + rows, mask=rmask, other=0).to(tl.int32)
    flags = flags | tl.where(nan != 0, 128, 0) | tl.where(inf != 0, 256, 0)
    tl.store(flags_ptr + rows, flags.to(tl.int16), mask=rmask)


# --- host side -----------------------------------------------------------------------------


def _mixture_constants(alpha: float, lam: float) -> dict:
    """The regime (constexpr) and the float constants of the mixture, in double precision
    as gpu._mixture forms them."""
    if lam == 0.0:
        mix = _MIX_Q
    elif lam == 1.0:
        mix = _MIX_P
    elif math.isinf(alpha):
        mix = _MIX_MAX if alpha < 0 else _MIX_MIN
    elif (1.0 - alpha) / 2.0 == 0.0:
        mix = _MIX_GEO
    elif abs((1.0 - alpha) / 2.0) >= _FAST_BETA:
        mix = _MIX_FAST
    else:
        mix = _MIX_PIVOT
    beta = (1.0 - alpha) / 2.0 if not math.isinf(alpha) else 0.0
    beta_f = max(-_BETA_CLAMP, min(_BETA_CLAMP, beta))
    inv_beta = 1.0 / beta_f if beta_f != 0.0 else 0.0
    interior = 0.0 < lam < 1.0
    log_lam = math.log(lam) if interior else 0.0
    log_1m_lam = math.log1p(-lam) if lam < 1.0 else 0.0
    # β of the normalizer gradient: clamped as the mixture's (0 at α = ±inf: unused there)
    return {
        "consts": dict(
            beta=beta_f,
            inv_beta=inv_beta,
            lam=lam,
            one_m_lam=1.0 - lam,
            t_off=log_lam - log_1m_lam,
            c_a=log_lam * inv_beta,
            c_b=log_1m_lam * inv_beta,
            log_lam=log_lam,
            log_1m_lam=log_1m_lam,
            beta_h=beta_f,
        ),
        "MIX": mix,
        "LAM_LOW": lam <= 0.5,
        "BETA_NEG": beta < 0,
    }


def _ab_constants(a_: float, b_: float, first_r: bool) -> tuple[int, list[float]]:
    """The AB family's DIV id (its pivot, as gpu._divergences._ab chooses it) and the
    constants of :data:`_P_A` …, in double precision as the torch kernel forms them."""
    lam = a_ + b_
    if a_ == 0.0 and b_ == 0.0:
        div = _AB_ZERO
    elif abs(a_) <= abs(b_):
        div = _AB
    else:
        div = _AB_MIRROR
    nan = math.nan
    k_y = math.log(a_) + math.log(lam) if (a_ > 0 and lam > 0) else nan
    k_x = math.log(b_) + math.log(lam) if (b_ > 0 and lam > 0) else nan
    c0, c1 = (b_, a_) if first_r else (a_, b_)
    m, series = (0.0, ()) if div == _AB_ZERO else pivot_series(a_, b_, div == _AB_MIRROR,
                                                              torch.float32)  # fmt: skip
    return div, [a_, b_, lam, k_y, k_x, c0 + c1 / 2.0, m, 0.0, *series]


def _divergence_constants(name: str, params: dict, first_r: bool = True) -> tuple[int, dict]:
    """DIV id and (prm, log prm, log(1 − prm), the ``dprm`` list); JS with β ∈ {0, 1} and
    skew 0 map to the forms the torch kernel uses for them (zero, KL), Amari γ to AB((1 − γ)/2,
    (1 + γ)/2) as gpu._divergences._amari."""
    kernel = GPU_DIVERGENCES[name]
    div = _PORTED[kernel]
    prm = 0.0
    dprm = [0.0] * _N_DPRM
    if kernel is _ab:
        div, ab = _ab_constants(float(params["alpha"]), float(params["beta"]), first_r)
        dprm[: len(ab)] = ab
    elif kernel is _amari:
        gamma = float(params["alpha"])
        div, ab = _ab_constants((1.0 - gamma) / 2.0, (1.0 + gamma) / 2.0, first_r)
        dprm[: len(ab)] = ab
    elif kernel is _renyi:
        rho = float(params["order"])
        if rho == 1.0:  # KL, as the torch kernel
            div = _KL
        else:
            dprm[:3] = [rho, rho - 1.0, rho / (rho - 1.0)]
    elif kernel is _chi2:  # its pair is 2·AB(2, −1)'s (gpu._divergences._chi2_pair)
        _, ab = _ab_constants(2.0, -1.0, first_r)
        dprm[: len(ab)] = ab
    if kernel is _js:
        prm = float(params["beta"])
    elif kernel is _skew_kl:
        prm = float(params["skew"])
        if prm == 0.0:
            div = _PORTED[_kl]
    if kernel in (_js, _skew_kl):  # their near forms' series (_cgf)
        dprm[_P_CGF_1M : _P_CGF_1M + _K_TERMS] = _cgf_coefficients(1.0 - prm)
        dprm[_P_CGF : _P_CGF + _K_TERMS] = _cgf_coefficients(prm)
    logs = (math.log(prm) if prm > 0 else 0.0, math.log1p(-prm) if prm < 1 else 0.0)
    return div, {"prm": prm, "prm_log": logs[0], "prm_log1m": logs[1], "dprm": dprm}


#: Compile options of every launch: no FMA contraction, so that each form is rounded as
#: written, as in the torch kernel it mirrors and under the interpreter the tests run (the
#: elementary functions of libdevice keep their own fused steps). Explicit because
#: triton's default changes (contraction on through 3.9, off from 3.10).
_LAUNCH_OPTIONS = {"enable_fp_fusion": False}
#: The one exception: each step of the Horner series (_cgf, _pivot_series) is an explicit
#: ``tl.fma``, one instruction and one rounding where ``k·x + c`` takes two of each (the
#: series' bounds hold for either; triton 3.9's interpreter fuses it too, 3.6's does not).


#: The passes by their letters (module docstring), as :data:`LAUNCH_ENV` names them.
PASSES = {"a": "_normalizer_pass", "b": "_mixture_pass", "c0": "_renyi_pass",
          "c": "_divergence_pass", "c2": "_gradient_sum_pass", "d": "_gradient_pass"}  # fmt: skip
#: The environment variable that sets the launch shape of the passes: ``R:V:W`` or
#: ``R:V:W:S`` (every pass: BLOCK_R rows per program, BLOCK_V-wide tiles, W warps, S
#: software-pipeline stages of the vocabulary loop, 1 by default: none) and/or
#: ``LETTER=R:V:W[:S]`` for one pass (:data:`PASSES`), comma-separated, e.g.
#: ``1:2048:4:3,a=1:4096:8``. For measuring launch shapes (``python -m gpu.device_check``'s
#: ``tune`` stage); unset, each pass takes :func:`_blocks`' default.
LAUNCH_ENV = "AMID_TRITON_LAUNCH"
#: The launch shape set by :func:`launch_config` (it takes precedence over the variable).
_LAUNCH_SET: list[dict] = []
#: Pipeline stages a launch shape may ask for (``tl.range(..., num_stages=S)``: the loads
#: of the next S − 1 tiles are in flight, through shared memory, while a tile is computed).
_STAGES = (1, 2, 3, 4)


def _power_of_two(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def parse_launch(text: str, where: str = LAUNCH_ENV) -> dict[str, tuple[int, int, int, int]]:
    """``{kernel name: (BLOCK_R, BLOCK_V, num_warps, stages)}`` from :data:`LAUNCH_ENV`'s
    syntax.

    BLOCK_R and BLOCK_V are powers of two (BLOCK_R ≤ 64, 16 ≤ BLOCK_V ≤ 16384, their
    product ≤ 16384: the tile lives in registers), W is 1, 2, 4, 8, 16 or 32, S (optional,
    1 if left out) 1 to 4. Anything else raises ``ValueError`` naming ``where`` and the
    item. A pass's own shape takes precedence over the shape for every pass, wherever it
    stands."""
    general, specific = None, {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        letter, _, shape = item.rpartition("=")
        letter = letter.strip()
        if letter and letter not in PASSES:
            raise ValueError(f"{where}: unknown pass {letter!r} in {item!r}; the passes are "
                             f"{', '.join(PASSES)}")  # fmt: skip
        try:
            numbers = [int(x) for x in shape.split(":")]
            if len(numbers) not in (3, 4):
                raise ValueError
        except ValueError:
            raise ValueError(f"{where}: {item!r} is not R:V:W or R:V:W:S (integers, e.g. "
                             f"1:4096:8)") from None  # fmt: skip
        r, bv, w, stages = (*numbers, 1)[:4]
        if not (_power_of_two(r) and _power_of_two(bv) and r <= 64 and 16 <= bv <= 16384
                and r * bv <= 16384):  # fmt: skip
            raise ValueError(f"{where}: {item!r}: BLOCK_R and BLOCK_V must be powers of two, "
                             f"BLOCK_R ≤ 64, 16 ≤ BLOCK_V ≤ 16384, BLOCK_R·BLOCK_V ≤ 16384")  # fmt: skip
        if w not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"{where}: {item!r}: the warps must be 1, 2, 4, 8, 16 or 32")
        if stages not in _STAGES:
            raise ValueError(f"{where}: {item!r}: the pipeline stages must be 1, 2, 3 or 4")
        if letter:
            specific[PASSES[letter]] = (r, bv, w, stages)
        else:
            general = (r, bv, w, stages)
    shapes = dict.fromkeys(PASSES.values(), general) if general else {}
    return {**shapes, **specific}


@contextlib.contextmanager
def launch_config(text: str | None):
    """Within ``with``: the passes' launch shapes as :data:`LAUNCH_ENV` would set them
    (``None``: the defaults), whatever the variable says; for timing launch shapes."""
    _LAUNCH_SET.append(parse_launch(text or "", "launch_config"))
    try:
        yield
    finally:
        _LAUNCH_SET.pop()


@functools.lru_cache(maxsize=8)
def _env_launch(text: str) -> dict[str, tuple[int, int, int, int]]:
    return parse_launch(text)


def launch_shapes() -> dict[str, tuple[int, int, int, int]]:
    """The launch shapes set now (:func:`launch_config`, else :data:`LAUNCH_ENV`), by kernel
    name; raises ``ValueError`` (naming the variable) on a malformed variable, which the
    callers check before their first launch, so that it is raised, not fallen back from."""
    return _LAUNCH_SET[-1] if _LAUNCH_SET else _env_launch(os.environ.get(LAUNCH_ENV, ""))


def _blocks(n: int, v: int, kernel: str) -> tuple[int, int, int, int]:
    """(BLOCK_R, BLOCK_V, num_warps, stages) of pass ``kernel``: a row per program on CUDA
    with wide tiles and an unpipelined loop; under the interpreter (numpy) many rows per
    program and narrow tiles; a shape set by :func:`launch_config` or :data:`LAUNCH_ENV`
    where one is (its tile narrowed to the rows and the vocabulary)."""
    shapes = launch_shapes()
    if kernel in shapes:
        r, bv, w, stages = shapes[kernel]
        return (min(r, triton.next_power_of_2(max(n, 1))), min(bv, triton.next_power_of_2(v)),
                1 if _interpreted() else w, stages)  # fmt: skip
    if _interpreted():
        return min(32, triton.next_power_of_2(max(n, 1))), min(32, triton.next_power_of_2(v)), 1, 1
    block_v = min(4096, triton.next_power_of_2(v))
    return 1, block_v, 8 if block_v >= 2048 else 4, 1


def _launch(kernel: str, n: int, v: int) -> tuple[tuple[int], dict]:
    """The grid and the launch keywords (block sizes, warps, compile options) of pass
    ``kernel`` over ``n`` rows of width ``v``."""
    block_r, block_v, warps, stages = _blocks(n, v, kernel)
    return (triton.cdiv(n, block_r),), dict(BLOCK_R=block_r, BLOCK_V=block_v, num_warps=warps,
                                            STAGES=stages, **_LAUNCH_OPTIONS)  # fmt: skip


def triton_chunk(
    s: torch.Tensor,
    t: torch.Tensor,
    spec,
    want_grad: bool,
    grad_scale: float,
    out: torch.Tensor | None = None,
    out_lo: torch.Tensor | None = None,
    saved: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Loss per row (float32), gradient w.r.t. the student logits and row flags, as
    :func:`gpu._torch_kernel.chunk` (same arguments, outputs, dtypes and flag bits).

    ``out`` (optional, rows × V, any floating dtype) receives the scaled gradient, cast,
    and is returned; it may be ``s`` itself (each tile is read before it is written).
    ``out_lo`` (with ``out``) receives the rounding residual ``grad − out``; it may be
    ``t``. Without ``out`` the gradient is returned in float32.

    ``saved`` (optional, a dict, with ``want_grad``) receives what :func:`gradient_tile`
    needs to form the gradient of a column tile of these rows again: the row statistics
    (``"stats"``, ``"idx"``), the launch constants (``"launch"``) and ``"zero"`` (True when
    the gradient is identically zero). It stays empty when the chunk runs in torch.

    Specs outside :func:`runs_in_triton` (float64 inputs, the divergences not in
    :data:`TRITON_DIVERGENCES`, 1/T beyond float32) are computed by
    :func:`gpu._torch_kernel.chunk`, the reference this kernel follows.
    """
    if not _runs_here(spec, s, t):
        return torch_chunk(s, t, spec, want_grad, grad_scale, out, out_lo=out_lo)
    with _quiet_numpy():
        return _chunk(s, t, spec, want_grad, grad_scale, out, out_lo, saved)


def _quiet_numpy():
    """numpy's floating-point warnings off under the interpreter (its float32 arithmetic on
    −inf and NaN lanes, which the kernels select away); nothing on CUDA."""
    return np.errstate(all="ignore") if _interpreted() else contextlib.nullcontext()


def _runs_here(spec, s: torch.Tensor, t: torch.Tensor) -> bool:
    """Whether the chunk runs in Triton: :func:`runs_in_triton` and a teacher of a dtype
    the kernel loads."""
    floats = (torch.float32, torch.bfloat16, torch.float16)
    return runs_in_triton(spec, s.dtype) and t.dtype in floats


def shard_chunk(
    s: torch.Tensor,
    t: torch.Tensor,
    spec,
    want_grad: bool,
    grad_scale: float,
    out: torch.Tensor | None = None,
    red=None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """:func:`triton_chunk` on one slice of the vocabulary, the kernel of
    :func:`gpu.vocab_parallel_amid_loss` (the contract of :func:`gpu._torch_kernel.chunk`
    with a reducer ``red``, :class:`gpu._vocab_parallel._ShardReduce`).

    The passes run on the local columns; between them the per-row statistics are combined
    over the group (``red.all_reduce``), so every rank forms the same row statistics as the
    unsharded kernel would, up to the order of the sums. Passes a and b (``SHARD``) leave
    their partials (local maxima, their first local arg-maxima, the sums relative to
    them); :func:`_combine_normalizers` and :func:`_combine_mixtures` take the global
    maximum (max all-reduce), its first occurrence in global ids (min all-reduce: the
    arg-max becomes −1 on every other rank, so no column there takes the dominant form),
    and the sums carried to it (sum all-reduce), then form what the unsharded pass
    writes. Rényi's row sums (pass c0) combine by their maximum; the loss's partial sums
    and the projections' sums of passes c and c2 are summed. Pass d is local: its two
    flag bits go to ``red.flags`` (settled once per pass by the engine).

    Collectives per chunk with a gradient: 3 (pass a) + 3 (pass b) + 1 (c) + 1 (c2), and 2
    more for Rényi; the loss alone: 3 + 3 + 1. Specs outside :func:`runs_in_triton` run
    :func:`gpu._torch_kernel.chunk` with ``red``, as :func:`triton_chunk` does without."""
    if not _runs_here(spec, s, t):
        return torch_chunk(s, t, spec, want_grad, grad_scale, out, red=red)
    with _quiet_numpy():
        loss, grad, flags = _chunk(s, t, spec, want_grad, grad_scale, out, red=red)
    return loss, grad, red.flags(flags)  # the gradient's bits: settled once per pass


def _carried_to_top(local_max, index, others, top, scale, red):
    """The online maximum's partials of every slice combined, as a pass combines its
    tiles: whether this slice holds the first global occurrence of each row's maximum
    ``top`` (finite; a min all-reduce of the global ids, exact in ``red.ids``: float32
    below 2^24, float64 beyond, of the slices that reach it), and the sum of the others at
    ``top`` (a sum all-reduce): the holder's ``others`` as they are, every other slice's
    with its own maximum's 1, carried by e^((M_k − M)·scale)."""
    finite = torch.isfinite(top)
    ids = index.to(red.ids) + float(red.start)
    candidate = torch.where((local_max == top) & finite, ids, math.inf)
    first = red.all_reduce(candidate.clone(), "min")  # a copy: reduced in place
    mine = (candidate == first) & finite
    lead = (local_max > -math.inf).to(torch.float32)
    carry = torch.exp((local_max - torch.where(finite, top, 0.0)) * scale)
    part = torch.where(mine, others, (others + lead) * carry)
    return mine, part


def _combine_normalizers(stats, idx, flags, inv_t, red) -> None:
    """Pass a over the slices: the row maxima of s and t, their first occurrence (the local
    arg-max, −1 where another slice holds it), log1p of the others' sum carried to the
    global maximum by e^((M_k − M)/T) (a slice that does not hold it adds its own maximum's
    1), and the flags of :func:`_normalizer_pass` from the combined values."""
    local_max, others, low = stats[0:2], stats[2:4], stats[12:14]
    both = red.all_reduce(torch.cat([local_max, -low]), "max")
    top, low = both[0:2], -both[2:4]
    mine, part = _carried_to_top(local_max, idx[0:2], others, top, inv_t, red)
    total = red.all_reduce(part, "sum")
    bad = total.isnan() | ~torch.isfinite(top)
    lost = (low < math.inf) & ((low - top) * inv_t == -math.inf) & ~bad
    for i, (bad_bit, lost_bit) in enumerate(
        ((_BAD_STUDENT, _TEMPERATURE_STUDENT), (_BAD_TEACHER, _TEMPERATURE_TEACHER))
    ):
        flags |= torch.where(bad[i], bad_bit, 0).to(flags.dtype)
        flags |= torch.where(lost[i], lost_bit, 0).to(flags.dtype)
    stats[0:2] = top
    stats[2:4] = torch.log1p(total)
    idx[0:2] = torch.where(mine, idx[0:2], -1)


def _combine_mixtures(stats, idx, flags, live: bool, red) -> None:
    """Pass b over the slices: the row maximum of log m and its first occurrence, log Z =
    shift + log1p(S_o) with S_o carried to the global maximum, log Z's ratio form from the
    summed Σ ŝ and log-ratio terms, the silent-entry flag, and the empty-support flag, as
    :func:`_mixture_pass` forms them unsharded."""
    local_max = stats[4]
    rows = [local_max, stats[9]] + ([stats[17]] if live else [])
    maxima = red.all_reduce(torch.stack(rows), "max")
    top, any_finite = maxima[0], maxima[1]
    mine, part = _carried_to_top(local_max, idx[2], stats[5], top, 1.0, red)
    others, total, terms = red.all_reduce(torch.stack([part, stats[7], stats[8]]), "sum")
    shift = torch.where(top == -math.inf, 0.0, top)
    corr = torch.where(any_finite != 0, torch.log1p(others), -math.inf)
    lz = shift + corr
    frac = terms / total
    direct = lz - torch.log(total)
    ratio = torch.log1p(frac.clamp(-0.5, 0.5))
    stats[4] = shift
    stats[5] = corr
    stats[6] = torch.where(frac.abs() <= 0.5, ratio, direct)
    if live:
        stats[17] = maxima[2]
    idx[2] = torch.where(mine, idx[2], -1)
    stats[7:10] = 0.0  # the partials' rows: pass c's sums where the assistant is live
    flags |= torch.where(lz == -math.inf, _EMPTY_SUPPORT, 0).to(flags.dtype)


def _combine_renyi(stats, red) -> None:
    """Pass c0 over the slices: max ω, Σ e^(ω − max ω) carried to the global maximum, and
    M = Σ a_e."""
    top = red.all_reduce(stats[14].clone(), "max")  # a copy: reduced in place
    ref = torch.where(torch.isfinite(top), top, 0.0)
    part = stats[15] * torch.exp(stats[14] - ref)
    total, m = red.all_reduce(torch.stack([part, stats[16]]), "sum")
    stats[14], stats[15], stats[16] = top, total, m


def _chunk(
    s: torch.Tensor,
    t: torch.Tensor,
    spec,
    want_grad: bool,
    grad_scale: float,
    out: torch.Tensor | None = None,
    out_lo: torch.Tensor | None = None,
    saved: dict | None = None,
    red=None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Loss per row (float32), gradient w.r.t. the student logits and row flags, as
    :func:`gpu._torch_kernel.chunk` (same arguments, outputs, dtypes and flag bits).

    ``out`` (optional, rows × V, any floating dtype) receives the scaled gradient, cast,
    and is returned; it may be ``s`` itself (each tile is read before it is written).
    ``out_lo`` (with ``out``) receives the rounding residual ``grad − out``; it may be
    ``t``. Without ``out`` the gradient is returned in float32. With ``red`` (a
    vocabulary-sharded reducer: :func:`shard_chunk`) the row statistics are combined over
    its group between the passes.

    The body of :func:`triton_chunk` and :func:`shard_chunk`, which hand the specs outside
    :func:`_runs_here` to :func:`gpu._torch_kernel.chunk` before they call it.
    """
    shard = red is not None
    n, v = s.shape
    device = s.device
    s = s if s.stride(-1) == 1 else s.contiguous()
    t = t if t.stride(-1) == 1 else t.contiguous()
    if t.stride(0) != s.stride(0):
        t = t.contiguous()
        s = s.contiguous()
    loss = torch.zeros(n, dtype=torch.float32, device=device)
    flags = torch.zeros(n, dtype=_FLAG_DTYPE, device=device)
    if n == 0:
        grad = None
        if want_grad:
            grad = out if out is not None else torch.zeros(0, v, dtype=torch.float32, device=device)
        return loss, grad, flags
    stats = torch.zeros(_N_STATS, n, dtype=torch.float32, device=device)
    idx = torch.zeros(3, n, dtype=torch.int32, device=device)
    inv_t = 1.0 / spec.objective.temperature
    mix = _mixture_constants(spec.objective.alpha, spec.objective.lam)
    consts = mix["consts"]
    first, second = spec.objective.first, spec.objective.second
    first_r = first == "r"
    div, prm = _divergence_constants(spec.objective.divergence, spec.objective.params, first_r)
    dprm = torch.tensor(prm["dprm"], dtype=torch.float32, device=device)
    ref_p = (second if first_r else first) == "p"
    through_r = want_grad and not spec.objective.detach_assistant
    acc = not _interpreted() and libdevice is not None
    stride = s.stride(0)
    grid, blocks = _launch("_normalizer_pass", n, v)
    _normalizer_pass[grid](s, t, stride, n, v, stats, idx, flags, inv_t, ACC=acc, SHARD=shard,
                           **blocks)  # fmt: skip
    if shard:
        _combine_normalizers(stats, idx, flags, inv_t, red)
    regime = dict(MIX=mix["MIX"], LAM_LOW=mix["LAM_LOW"], BETA_NEG=mix["BETA_NEG"], ACC=acc)
    # the near branch's series in the weight it pivots on (λ ≤ ½: λ, else 1 − λ)
    c_near = spec.objective.lam if mix["LAM_LOW"] else 1.0 - spec.objective.lam
    kc = torch.tensor(_cgf_coefficients(c_near), dtype=torch.float32, device=device)
    js_trivial = GPU_DIVERGENCES[spec.objective.divergence] is _js and prm["prm"] in (0.0, 1.0)
    live = through_r and not js_trivial  # the assistant's path to the student is formed
    has_q = "q" in (first, second)
    grad_path = want_grad and not js_trivial and (has_q or through_r)
    grad = g_buf = None
    if grad_path:
        grad = out if out is not None else torch.empty(n, v, dtype=torch.float32, device=device)
        if grad.stride(-1) != 1:
            raise ValueError("out must have a unit stride along the vocabulary")
        # G = g_q + w·P_r(g_r) is stored by pass c2 and read by pass d, in float32: in the
        # gradient itself when that is float32 and not the logits (d reads them), else in a
        # scratch of the chunk's size (4 B per element written and read once, against forming
        # the mixture, the divergence and P_r again: python -m gpu.kernel_cost)
        g_buf = grad
        if grad.dtype != torch.float32 or _shares_memory(grad, s, t):
            g_buf = torch.empty(n, v, dtype=torch.float32, device=device)
    # With a gradient, pass b stores log m and its ratio to the reference (in G's buffer,
    # which c2 overwrites after reading it) for passes c and c2, which would otherwise form
    # the pivot, its correction, the near series and the ratios again (|β| > 0 regimes; the
    # others' mixture is a few instructions): 8 B per element written, read twice
    store = grad_path and mix["MIX"] in (_MIX_FAST, _MIX_PIVOT)
    m_buf = (
        torch.empty_strided((n, v), g_buf.stride(), dtype=torch.float32, device=device)
        if store
        else kc
    )
    stored = (m_buf, g_buf, g_buf.stride(0)) if store else (kc, kc, 0)
    scalars = (inv_t, consts["beta"], consts["inv_beta"], consts["lam"], consts["one_m_lam"],
               consts["t_off"], consts["c_a"], consts["c_b"], consts["log_lam"],
               consts["log_1m_lam"], kc)  # fmt: skip
    mix_args = (*scalars, *stored)
    grid, blocks = _launch("_mixture_pass", n, v)
    _mixture_pass[grid](s, t, stride, n, v, stats, idx, flags, *mix_args, REF_P=ref_p,
                        FIND_SILENT=live, STORE_MIX=store, SHARD=shard, **regime,
                        **blocks)  # fmt: skip
    if shard:
        _combine_mixtures(stats, idx, flags, live, red)
    div_args = (consts["beta_h"], prm["prm"], prm["prm_log"], prm["prm_log1m"], dprm)
    all_args = (*mix_args, *div_args)
    tile_args = (*scalars, kc, kc, 0, *div_args)  # no stored mixture (pass d, gradient_tile)
    if div == _RENYI:  # its row sums, before the loss
        grid, blocks = _launch("_renyi_pass", n, v)
        _renyi_pass[grid](s, t, stride, n, v, stats, idx, *mix_args, dprm, FIRST_R=first_r,
                          REF_P=ref_p, **regime, **blocks)  # fmt: skip
        if shard:
            _combine_renyi(stats, red)
    # the normalizer term's form: none (λ = 1), α = ±inf, finite α, finite α with the
    # closed-form pair's near-row form (0 < λ < PAIR_LAM_MIN)
    h_mode = (0 if spec.objective.lam == 1.0 else 1 if math.isinf(spec.objective.alpha)
              else 3 if live and small_lambda_pair(spec.objective) else 2)  # fmt: skip
    shape = dict(DIV=div, FIRST_R=first_r, REF_P=ref_p, THROUGH_R=live, H_MODE=h_mode)
    # The AB family and χ² with q an argument and the assistant live: pass c stores g_q + w·g_r
    # (over the ratio, in G's buffer) and g_r (in a third chunk-sized float32 buffer) for
    # pass c2, which would otherwise form the divergence and its closed-form pair again
    # (8 B per element written and read once: python -m gpu.kernel_cost)
    store_pair = (
        store
        and _STORE_PAIR
        and live
        and not ref_p
        and _PAIR_FIRST <= div <= _PAIR_LAST
        and h_mode != 3
    )  # (the near-row form reads x, which c2 forms from the tile)
    pr_buf = (
        torch.empty_strided((n, v), g_buf.stride(), dtype=torch.float32, device=device)
        if store_pair
        else kc
    )
    grid, blocks = _launch("_divergence_pass", n, v)
    _divergence_pass[grid](s, t, stride, n, v, stats, idx, flags, loss, pr_buf, *all_args,
                           WANT_GRAD=want_grad, LOAD_MIX=store, STORE_PAIR=store_pair, **shape,
                           **regime, **blocks)  # fmt: skip
    if shard:  # the loss's partial sums (Rényi's is the row's already) and P_r's, P_q's sums
        summed = [] if div == _RENYI else [loss]
        summed += list(stats[7:12]) if live else []
        if summed:
            got = red.all_reduce(torch.stack(summed), "sum")
            if div != _RENYI:
                loss.copy_(got[0])
            if live:
                stats[7:12] = got[-5:]
        flags &= ~(_NAN_LOSS | _INF_LOSS)
        flags |= torch.where(loss.isnan(), _NAN_LOSS, 0).to(flags.dtype)
        if want_grad:
            flags |= torch.where(loss.isinf(), _INF_LOSS, 0).to(flags.dtype)
    if js_trivial:  # m equals one argument: both KL terms vanish identically
        loss.zero_()
        flags &= ~(_NAN_LOSS | _INF_LOSS)
    if not want_grad:
        return loss, None, flags
    if saved is not None:  # the gradient of a column tile, again (gradient_tile: no stored
        # mixture, so none of this chunk's buffers is kept)
        launch = dict(all_args=tile_args, shape=shape, regime=regime, scale=inv_t)
        zero = js_trivial or not (has_q or through_r)
        saved.update(stats=stats, idx=idx, launch=launch, zero=zero)
    if not grad_path:  # no path to the student: a zero gradient
        if out is not None:
            if out_lo is not None:
                out_lo.zero_()
            return loss, out.zero_(), flags
        return loss, torch.zeros(n, v, dtype=torch.float32, device=device), flags
    grid, blocks = _launch("_gradient_sum_pass", n, v)
    _gradient_sum_pass[grid](s, t, stride, n, v, stats, idx, g_buf, g_buf.stride(0), pr_buf,
                             *all_args, **shape, **regime, **blocks, STORE_G=True,
                             LOAD_MIX=store, LOAD_PAIR=store_pair)  # fmt: skip
    if shard:  # P_q's sums of G
        stats[12:14] = red.all_reduce(stats[12:14].contiguous(), "sum")
    del m_buf, pr_buf, stored, mix_args, all_args  # pass d reads G, not the stored mixture
    lo = out_lo if (out is not None and out_lo is not None) else grad
    scale = grad_scale * inv_t
    grid, blocks = _launch("_gradient_pass", n, v)
    _gradient_pass[grid](s, t, stride, n, v, stats, idx, flags, grad, grad.stride(0), lo,
                         lo.stride(0), scale, g_buf, g_buf.stride(0), *tile_args, **shape,
                         HAS_LO=lo is not grad, **regime, **blocks, LOAD_G=True)  # fmt: skip
    del g_buf
    return loss, grad, flags


def _shares_memory(x: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether ``x``'s storage overlaps any of ``others``'."""
    lo = x.untyped_storage().data_ptr()
    hi = lo + x.untyped_storage().nbytes()
    for o in others:
        o_lo = o.untyped_storage().data_ptr()
        if o_lo < hi and lo < o_lo + o.untyped_storage().nbytes():
            return True
    return False


def gradient_tile(
    s: torch.Tensor,
    t: torch.Tensor,
    stats: torch.Tensor,
    idx: torch.Tensor,
    launch: dict,
    col0: int,
    grad_scale: float,
    out: torch.Tensor,
    out_lo: torch.Tensor | None,
    flags: torch.Tensor,
) -> None:
    """Pass d alone on a column tile: ∂loss/∂s of columns ``col0 … col0 + T − 1`` of rows
    whose whole-row statistics were saved by :func:`triton_chunk` (``saved``).

    ``s``, ``t`` (rows × T, unit stride along V, one row stride) are those columns of the
    student and teacher logits; ``stats`` (18, rows) float32 and ``idx`` (3, rows) int32
    the rows' statistics (contiguous), ``launch`` their launch constants. The gradient
    is written into ``out`` (rows × T; it may be ``s``) as pass d writes it, the rounding
    residual into ``out_lo`` (it may be ``t``); the gradient's flags are or-ed into
    ``flags`` (rows,). The pass compares the columns with the rows' top indices: they are
    given to it relative to ``col0`` (a top index outside the tile matches no column).
    """
    n, v = s.shape
    if n == 0 or v == 0:
        return
    if s.stride(-1) != 1 or t.stride(-1) != 1 or s.stride(0) != t.stride(0):
        raise ValueError("s and t must share one row stride and have a unit stride along V")
    if out.stride(-1) != 1 or (out_lo is not None and out_lo.stride(-1) != 1):
        raise ValueError("out and out_lo must have a unit stride along the vocabulary")
    local = (idx - col0).to(torch.int32)
    grid, blocks = _launch("_gradient_pass", n, v)
    lo = out if out_lo is None else out_lo
    with np.errstate(all="ignore"):
        # G formed here (LOAD_G=False: no stored G; ``out`` stands for its unused pointer)
        _gradient_pass[grid](s, t, s.stride(0), n, v, stats, local, flags, out, out.stride(0), lo,
                             lo.stride(0), grad_scale * launch["scale"], out, 0,
                             *launch["all_args"], **launch["shape"], HAS_LO=out_lo is not None,
                             **launch["regime"], **blocks, LOAD_G=False)  # fmt: skip
