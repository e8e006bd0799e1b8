"""Every threshold at which the float64 (:mod:`amid_ref`) or torch (:mod:`gpu`) numerics
switch formulas, in one list, each with a way to build an input at a chosen position.

A :class:`BranchPoint` names the switch, its value, the module constant that holds it
(``None`` for a literal in the code), the function and quantity it applies to, and
``build(x)``: the probes (calls) whose branch quantity equals ``x``. The test
(``tests/test_branch_points.py``) evaluates every probe at ``x = value·(1 − 1e-9)``,
``value``, ``value·(1 + 1e-9)``, ``value/2`` and ``2·value`` against
:mod:`amid_ref.precise`, for value and gradient, and fails when a module defines a numeric
module-level constant that is neither listed here nor in :data:`NOT_BRANCH_POINTS`.

Probe kinds: ``("mean", kwargs)`` is :func:`amid_ref.log_alpha_mean` with its weight
:func:`amid_ref.alpha_mixture_weight`; ``("loss", kwargs)`` is ``amid_loss``/``amid_grad``
of the implementation ``impl`` on two-token logits built so that ``log p_0`` and
``log q_0`` take given values (λ = 0 gives D(p‖q) itself, the divergence kernel seen
directly).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np

__all__ = ["BRANCH_POINTS", "NOT_BRANCH_POINTS", "SCANNED_MODULES", "BranchPoint", "logits_for"]

#: Modules whose module-level numeric constants must each be a listed branch point or a
#: listed non-branch constant.
SCANNED_MODULES = (
    "amid_ref._mixture",
    "amid_ref._divergences",
    "amid_ref._special",
    "amid_ref._loss",
    "amid_ref._validation",
    "gpu._mixture",
    "gpu._divergences",
    "gpu._loss",
    "gpu._engine",
    "gpu._flags",
    "gpu._torch_kernel",
    "gpu._validation",
    "gpu._elementwise",
    "gpu._fused",
    "gpu._vocab_parallel",
    "gpu._triton_kernel",
    "amid_ref._specs",
    "amid_ref._sparse",
    "amid_ref.tolerances",
)

#: Numeric module constants that are not formula switches, with the reason.
NOT_BRANCH_POINTS: dict[tuple[str, str], str] = {
    ("amid_ref._validation", "NORMALIZATION_TOL"): "input check (refusal), tested by "
    "tests/test_validation.py and the bad-input table",
    ("gpu._engine", "_CPU_CHUNK_ELEMENTS"): "rows per chunk: the result does not depend on it "
    "(tests/test_gpu.py::test_chunking_is_invisible)",
    ("gpu._engine", "_CPU_WIDE_CHUNK_ELEMENTS"): "rows per chunk of the fused and sharded losses "
    "on CPU (as above)",
    ("gpu._engine", "_CUDA_CHUNK_ELEMENTS"): "rows per chunk on CUDA (as above)",
    ("gpu._engine", "_CPU_WORKER_MIN_ELEMENTS"): "chunk workers or the calling thread: bitwise "
    "the same results (tests/test_gpu_kernels.py::test_chunk_workers_are_bitwise_the_"
    "sequential_path)",
    ("gpu._engine", "_TRITON_CHUNK_ELEMENTS"): "Triton rows per chunk (memory)",
    ("gpu._torch_kernel", "_MAX_BLOCK"): "block of the two-stage row maximum: the values and "
    "indices are torch.max's (tests/test_gpu_kernels.py::test_two_stage_row_maximum_is_"
    "torch_max)",
    ("gpu._fused", "_TRITON_FUSED_CHUNK_ELEMENTS"): "fused Triton rows per chunk",
    ("gpu._fused", "_VOCAB_TILE_ELEMENTS"): "fused two-phase vocabulary tile (memory; "
    "tests/test_gpu_fused_tiled.py runs other sizes against amid_ref)",
    ("gpu._fused", "_VOCAB_TILE_QUANTUM"): "fused two-phase tile width multiple (as above)",
    ("gpu._elementwise", "_BLEND_MIN"): "entries from which a select blends bits rather than "
    "branch: the same bits either way (tests/test_gpu_kernels.py::test_selects_blend_the_bits_"
    "of_torch_where, and the eager-shortcut test with blends from one entry)",
    ("gpu._vocab_parallel", "_MASK_BITS"): "rows packed per float64 in the valid-row agreement",
    ("gpu._vocab_parallel", "_HASH_MODULUS"): "modulus of the sparse teacher's fingerprint",
    ("gpu._vocab_parallel", "_NO_VOCAB_LIMIT"): "a V no check reaches (the structural checks of "
    "a sparse teacher before the shards are agreed)",
    ("gpu._triton_kernel", "_P_SERIES"): "slot layout of the divergence's constants",
    ("gpu._triton_kernel", "_N_DPRM"): "slot layout of the divergence's constants",
    ("gpu._triton_kernel", "_K_TERMS"): "terms of the near correction's series (its accuracy: "
    "tests/test_triton_kernel.py against mpmath), not a switch",
    ("gpu._triton_kernel", "_ANY_SILENT"): "row of the statistics layout",
    ("gpu._triton_kernel", "_N_STATS"): "rows of the statistics layout",
    ("amid_ref._specs", "_LAMBDA_EDGE_OFFSET"): "distance of the λ grid's edge cases from 0 and "
    "1 (test data, not numerics)",
    ("amid_ref._sparse", "SPARSE_EPS_ROUNDING"): "a sparse teacher's leftover ε below it is the "
    "rounding of the kept sum (renormalized, ε = 0): a rule on the input, the same in amid_ref, "
    "precise and gpu (tests/test_gpu_sparse.py::test_leftover_rounding_rule_is_the_reference, "
    "just below and above it)",
    ("amid_ref.tolerances", "SPARSE_MASS_TOL"): "input check of a sparse teacher (refusal or "
    "renormalization; tested just below and above it as SPARSE_EPS_ROUNDING)",
    ("amid_ref.tolerances", "VOCAB_TRUNCATE_MAX_DROPPED"): "input check of "
    "vocab_alignment='truncate' (refusal)",
    ("amid_ref.tolerances", "SPARSE_CONDITIONING_BELOW"): "test tolerance for a sparse teacher",
    ("amid_ref.tolerances", "SPARSE_LOGPROB_ROUNDING_ULPS"): "test tolerance for a sparse teacher",
    ("gpu._flags", "_BAD_STUDENT"): "row flag bit",
    ("gpu._flags", "_BAD_TEACHER"): "row flag bit",
    ("gpu._flags", "_EMPTY_SUPPORT"): "row flag bit",
    ("gpu._flags", "_TRUNCATED_TEACHER"): "row flag bit",
    ("gpu._flags", "_TRUNCATED_STUDENT"): "row flag bit",
    ("gpu._flags", "_INF_LOSS"): "row flag bit",
    ("gpu._flags", "_NAN_LOSS"): "row flag bit",
    ("gpu._flags", "_TEMPERATURE_STUDENT"): "row flag bit",
    ("gpu._flags", "_TEMPERATURE_TEACHER"): "row flag bit",
    ("gpu._flags", "_NAN_GRAD"): "row flag bit",
    ("gpu._flags", "_INF_GRAD"): "row flag bit",
    ("amid_ref._mixture", "NEG_INF"): "the value -inf, not a threshold",
    ("gpu._mixture", "NEG_INF"): "the value -inf, not a threshold",
    ("gpu._mixture", "INF"): "the value +inf, not a threshold",
    ("gpu._divergences", "NEG_INF"): "the value -inf, not a threshold",
    ("gpu._divergences", "INF"): "the value +inf, not a threshold",
}


def logits_for(lp0: float, lq0: float) -> tuple[list[float], list[float]]:
    """Two-token (student, teacher) logits with ``log p_0 ≈ lp0`` and ``log q_0 ≈ lq0``
    (both < 0), to a few ulps: softmax([τ, 0]) has log p_0 = −log1p(e^(−τ))."""

    def tau(l0: float) -> float:  # e^(−τ) = expm1(−l0), without overflow for l0 ≪ 0
        return l0 - math.log(-math.expm1(l0))

    return [tau(lq0), 0.0], [tau(lp0), 0.0]


def _loss(impl: str, lp0: float, lq0: float, divergence: str, params=None, **kw) -> tuple:
    s, t = logits_for(lp0, lq0)
    args = {
        "student_logits": s,
        "teacher_logits": t,
        "alpha": kw.pop("alpha", 0.5),
        "lam": kw.pop("lam", 0.0),
        "divergence": divergence,
        "order": kw.pop("order", "pr"),
        "div_params": params or {},
        "temperature": kw.pop("temperature", 1.0),
    }
    assert not kw, kw
    return ("loss", impl, args)


def _mean(log_a: float, log_b: float, alpha: float, lam: float) -> tuple:
    return ("mean", "amid_ref", {"log_a": log_a, "log_b": log_b, "alpha": alpha, "lam": lam})


@dataclass(frozen=True)
class BranchPoint:
    """One formula switch: where it is, what it applies to, how to reach it."""

    name: str
    value: float
    module: str
    constant: str | None
    applies_to: str
    build: Callable[[float], list[tuple[str, str, dict[str, Any]]]] = field(repr=False)
    refuses_above: bool = False  # beyond the value the input is refused (ValueError)


def _reverse_kl_generator(u):
    """u − 1 − log u (finite up to u = e^709), on NumPy arrays and on mpmath scalars."""
    if isinstance(u, mpmath.mpf):
        return u - 1 - mpmath.log(u) if u else mpmath.mpf("inf")
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return u - 1.0 - np.log(u)


_AB = {"alpha": 0.25, "beta": 0.75}  # a_ + b_ = 1, |a_| ≤ |b_|: the y-pivot of the AB terms
_AB_NEG = {"alpha": -0.4, "beta": -0.3}  # a_ + b_ < 0, |a_| > |b_|: the x-pivot
_AB_PAIR = {"alpha": -1.6, "beta": -2.9}  # a_ + b_ = −4.5: g_r weighted by r^−4.5


def _max_mixture_probe(impl: str, a: float) -> tuple:
    """α = −inf, λ = ½ on p = [a, 1−a], q = [1−a, a]: Z = 2(1 − a) (a ≤ ½)."""
    return _loss(impl, math.log(a), math.log1p(-a), "kl", alpha=-math.inf, lam=0.5)


def _chi2_renyi_probe(impl: str, x: float) -> tuple:
    """Rényi of order 2 on p = [½, ½] and q = [q0, 1 − q0] with c·M = Σ p²/q − 1 = x:
    (½ − q0)² = x·q0(1 − q0), the smaller root."""
    q0 = (1.0 - math.sqrt(1.0 - 1.0 / (1.0 + x))) / 2.0
    return _loss(impl, math.log(0.5), math.log(q0), "renyi", {"order": 2.0})


def _both(fn):
    """Probes for amid_ref and gpu from one builder ``fn(impl, x)``."""
    return lambda x: [fn("amid_ref", x), fn("gpu", x)]


BRANCH_POINTS: tuple[BranchPoint, ...] = (
    BranchPoint(
        "mean.small_beta_d",
        1.0,
        "amid_ref._mixture",
        None,
        "log_alpha_mean: |β·(log a − log b)| ≤ 1 selects the log1p/expm1 pivot",
        lambda x: [_mean(2.0 * x, 0.0, 0.0, 0.3), _mean(-2.0 * x, 0.0, 0.0, 0.7)],
    ),
    BranchPoint(
        "mean.lambda_pivot",
        0.5,
        "amid_ref._mixture",
        None,
        "log_alpha_mean: λ ≤ ½ pivots on log b, else on log a",
        lambda x: [_mean(1.3, -0.4, 0.3, x), _mean(-30.0, -0.4, -3.0, x)],
    ),
    BranchPoint(
        "gpu.mean.small_beta_d",
        1.0,
        "gpu._mixture",
        None,
        "log_alpha_mean_and_weight (|β| < ½): |β·d| ≤ 1 selects the log1p/expm1 pivot "
        "(λ outside the two-pivot form's range, which has no such switch)",
        lambda x: [_loss("gpu", -0.5, -0.5 - 4.0 * x, "kl", alpha=0.5, lam=0.02)],
    ),
    BranchPoint(
        "gpu.mean.fast_beta",
        0.5,
        "gpu._mixture",
        "_FAST_BETA",
        "log_alpha_mean_and_weight: |β| ≥ ½ (α = 1 − 2β) uses one logaddexp",
        lambda x: [
            _loss("gpu", -0.5, -2.0, "kl", alpha=1.0 - 2.0 * x, lam=0.3),
            _loss("gpu", -0.5, -2.0, "kl", alpha=1.0 + 2.0 * x, lam=0.3, order="rq"),
            _loss("gpu", -0.5, -2.0, "kl", alpha=1.0 - 2.0 * x, lam=0.02),
            _loss("gpu", -0.5, -2.0, "kl", alpha=1.0 + 2.0 * x, lam=0.98, order="rq"),
        ],
    ),
    BranchPoint(
        "gpu.mean.two_pivot_lambda",
        0.05,
        "gpu._mixture",
        "TWO_PIVOT_LAM_MIN",
        "log_alpha_mean_and_weight with the log ratios wanted: λ ∈ [0.05, 0.95] takes the "
        "two-pivot form (_two_pivot), else the pivoted form's three branches",
        lambda x: [
            _loss("gpu", -0.5, -2.0, "kl", alpha=-5.0, lam=x),
            _loss("gpu", -0.5, -0.6, "kl", alpha=0.5, lam=1.0 - x, order="rq"),
            _loss("gpu", -0.5, -0.6, "chi2", alpha=3.0, lam=x, order="rq"),
            _loss("gpu", -2.0, -0.5, "js", {"beta": 0.5}, alpha=1.5, lam=1.0 - x, order="qr"),
        ],
    ),
    BranchPoint(
        "gpu.mean.two_pivot_expm1_top",
        700.0,
        "gpu._mixture",
        None,
        "_two_pivot: beyond |β·d| = 700 (80 in float32; _EXPM1_TOP) a ratio is the other "
        "one ± d and w = 1/(1 + e^t)",
        lambda x: [
            _loss("gpu", -0.5, -0.5 - x / 3.0, "kl", alpha=-5.0, lam=0.3),
            _loss("gpu", -0.5 - x / 3.0, -0.5, "kl", alpha=-5.0, lam=0.3),
            _loss("gpu", -0.5 - x / 3.0, -0.5, "kl", alpha=7.0, lam=0.3, order="rq"),
            _loss("gpu", -0.5, -0.5 - x / 3.0, "ab", _AB_PAIR, alpha=7.0, lam=0.3, order="qr"),
        ],
    ),
    BranchPoint(
        "gpu.mean.beta_clamp",
        1e30,
        "gpu._mixture",
        "_BETA_CLAMP",
        "log_alpha_mean_and_weight: |β| clamped to 1e30 (α → ∓inf)",
        lambda x: [_loss("gpu", -0.5, -2.0, "kl", alpha=1.0 - 2.0 * x, lam=0.3)],
    ),
    BranchPoint(
        "gpu.pair_lambda_min",
        1e-3,
        "gpu._torch_kernel",
        "PAIR_LAM_MIN",
        "chunk: below λ = 1e-3 the closed-form pairs (AB, Amari, χ² with q an argument) take "
        "−(Σ g_r)·K on the rows where r ⊙ w is near a multiple of q (_through_r_paired)",
        lambda x: [
            _loss("gpu", -0.5, -2.0, "ab", _AB_PAIR, alpha=3.0, lam=x, order="qr"),
            _loss("gpu", -0.5, -0.6, "chi2", alpha=-5.0, lam=x, order="rq"),
        ],
    ),
    BranchPoint(
        "special.expm1mx_series",
        0.7,
        "amid_ref._special",
        "_SERIES_CUTOFF",
        "expm1mx: |z| < 0.7 Taylor series, else expm1(z) − z (AB terms, z = (a_+b_)·δ)",
        _both(lambda impl, x: _loss(impl, -3.0 + x, -3.0, "ab", _AB)),
    ),
    BranchPoint(
        "gpu.ab_second_order",
        1.0,
        "gpu._divergences",
        "_SECOND_ORDER_CUTOFF",
        "_ab_pivot_terms: max(|λz|, |cz|) ≤ 1 sums the second-order form as one series "
        "(pivot_series), beyond it the first-order form",
        lambda x: [_loss("gpu", -3.0 - x, -3.0, "ab", _AB)],
    ),
    BranchPoint(
        "ab.second_order",
        1.0,
        "amid_ref._divergences",
        None,
        "_ab_pivot_terms: max(|λz|, |cz|) ≤ 1 uses the second-order form F",
        lambda x: [_loss("amid_ref", -3.0 + x, -3.0, "ab", _AB)],
    ),
    BranchPoint(
        "special.big",
        40.0,
        "amid_ref._special",
        "_BIG",
        "scaled_expm1_ratio: c·z > 40 forms e^(log_s + cz) directly (AB gradient, c = −b_)",
        _both(lambda impl, x: _loss(impl, -1.0 - x / 0.75, -1.0, "ab", _AB)),
    ),
    BranchPoint(
        "gpu.big",
        40.0,
        "gpu._divergences",
        "_BIG",
        "_scaled_expm1_ratio: c·z > 40 forms e^(log_s + cz) directly",
        lambda x: [_loss("gpu", -1.0 - x / 0.75, -1.0, "ab", _AB)],
    ),
    BranchPoint(
        "special.exp_safe",
        700.0,
        "amid_ref._special",
        "_EXP_SAFE",
        "times_exp: |log s| > 700 forms x·e^(log s) as one exponential (AB, a_+b_ < 0)",
        _both(lambda impl, x: _loss(impl, -x / 0.7, -x / 0.7 - 1e-3, "ab", _AB_NEG)),
    ),
    BranchPoint(
        "ab.snap",
        1e-200,
        "amid_ref._specs",
        "_AB_SNAP",
        "AB parameters with |a_| or |b_| below 1e-200 are put on the line a_ = 0 (b_ = 0)",
        _both(lambda impl, x: _loss(impl, -0.5, -2.0, "ab", {"alpha": x, "beta": 0.5})),
    ),
    BranchPoint(
        "renyi.series",
        0.5,
        "amid_ref._divergences",
        "_RENYI_SERIES_CM",
        "Rényi: rows with |c·M| ≤ ½ (and no overflow) use log1p(c·M)/c, any ρ (ρ = 2)",
        lambda x: [_chi2_renyi_probe("amid_ref", x)],
    ),
    BranchPoint(
        "gpu.renyi.series",
        0.5,
        "gpu._divergences",
        "_RENYI_SERIES_CM",
        "Rényi (gpu): rows with |c·M| ≤ ½ (and no overflow) use log1p(c·M)/c (ρ = 2)",
        lambda x: [_chi2_renyi_probe("gpu", x)],
    ),
    BranchPoint(
        "renyi.overflow_log",
        700.0,
        "amid_ref._divergences",
        "_OVERFLOW_LOG",
        "Rényi series only while ω = log a + c·δ ≤ 700 (ρ = 1.3)",
        _both(lambda impl, x: _loss(impl, -0.5, -0.5 - (x + 0.5) / 0.3, "renyi", {"order": 1.3})),
    ),
    BranchPoint(
        "renyi.small_cd",
        1.0,
        "amid_ref._divergences",
        None,
        "Rényi series: |c·δ| ≤ 1 uses a·expm1(cδ)/c, else (e^ω − a)/c (ρ = 1.3)",
        _both(lambda impl, x: _loss(impl, -0.5, -0.5 - x / 0.3, "renyi", {"order": 1.3})),
    ),
    BranchPoint(
        "js.near",
        1.0,
        "amid_ref._divergences",
        None,
        "JS: |δ| ≤ 1 forms log a − log m as −log1p((1−β)·expm1(−δ)) (δ the given ratio)",
        _both(lambda impl, x: _loss(impl, -3.0 + x, -3.0, "js", {"beta": 0.3}, lam=1e-9)),
    ),
    BranchPoint(
        "tv.near",
        1.0,
        "amid_ref._divergences",
        None,
        "TV: |δ| ≤ 1 forms a − b as b·expm1(δ) (δ the given ratio)",
        _both(lambda impl, x: _loss(impl, -3.0 + x, -3.0, "tv", lam=1e-9)),
    ),
    BranchPoint(
        "mixture.ratio_normalizer",
        0.5,
        "amid_ref._mixture",
        None,
        "_log_ratio_to_mixture (and its gpu twin): |Z/Σs − 1| ≤ ½ uses log1p, else "
        "log-sum-exp (α = −inf, p = [a, 1−a], q = [1−a, a]: Z − 1 = 1 − 2a)",
        _both(lambda impl, x: _max_mixture_probe(impl, max((1.0 - x) / 2.0, 1e-300))),
    ),
    BranchPoint(
        "mixture.ratio_term_product",
        700.0,
        "gpu._torch_kernel",
        None,
        "_log_ratio_sums (gpu): a term is s·expm1(u) while u ≤ 700 (float64; 80 in float32) "
        "and s is normal, e^(log m) − s beyond (λ = 0: u = log q_0 − log p_0)",
        lambda x: [
            _loss("gpu", -1.0 - x, -1.0, "kl", lam=0.0),
            _loss("gpu", -1.0 - x, -1.0, "js", {"beta": 0.5}, lam=0.0, order="rp"),
        ],
    ),
    BranchPoint(
        "f.ratio_range",
        709.0,
        "amid_ref._divergences",
        None,
        "f-divergence: a log ratio above 709 is refused (the generator cannot be evaluated)",
        lambda x: [
            _loss(
                "amid_ref",
                -0.5,
                -0.5 - x,
                "f",
                {"f": _reverse_kl_generator, "f_prime": lambda u: 1.0 - 1.0 / u},
            )
        ],
        refuses_above=True,
    ),
)
