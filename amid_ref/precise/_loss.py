"""The AMiD loss and its gradient (central differences) in mpmath.

The mirror of :mod:`amid_ref._loss`: the loss evaluated from the definitions of
:mod:`amid_ref.precise._mixture` and :mod:`amid_ref.precise._divergences`, its gradient by
central differences at raised precision, independent of Proposition 3.5's closed form.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from mpmath import mp, mpf

from amid_ref._sparse import (
    SPARSE_EPS_ROUNDING,
    check_teacher_source,
    check_teacher_topk,
    leftover_needs_mass_message,
    mass_above_one_message,
    sparse_transform_message,
    truncate_dropped_message,
    vocab_mismatch_message,
)
from amid_ref._specs import ORDERS as _CONTRACT_ORDERS
from amid_ref._specs import (
    check_leftover,
    check_logit_scale,
    check_softcap,
    check_temperature_applies_to,
    check_vocab_alignment,
    order_arguments,
)
from amid_ref.precise._common import (
    _NINF,
    DIVERGENCE_GUARD_DIGITS,
    GRADIENT_GUARD_DIGITS,
    PARAMETER_DPS,
    _check_dps,
    _lam_param,
    _logits_array,
    _object_array,
    _param,
    _rows,
    _scalar_or_array,
)
from amid_ref.precise._divergences import _divergence_row_fn
from amid_ref.precise._mixture import _beta, _log_mean_kernel, _log_mixture_row, _mean_extra_digits
from amid_ref.tolerances import SPARSE_MASS_TOL, VOCAB_TRUNCATE_MAX_DROPPED

ORDERS: tuple[str, ...] = tuple(_CONTRACT_ORDERS)
"""The argument orders of the contract: the loss is D(first ‖ second) with ``"pr"`` = D(p‖r),
``"qr"``, ``"rp"``, ``"rq"`` (p the teacher, q the student, r the α-mixture)."""


# --------------------------------------------------------------------------------------
# the AMiD loss and its gradient
# --------------------------------------------------------------------------------------


def _log_softmax(x: list, inv_t: mpf) -> list:
    """log softmax(x/T) of one row of mpf logits (``-inf`` entries stay ``-inf``)."""
    z = [v * inv_t if v != _NINF else _NINF for v in x]
    finite = [v for v in z if v != _NINF]
    if not finite:
        raise ValueError("a row of logits is entirely -inf (no probability mass)")
    top = max(finite)
    exp = mpmath.exp
    lse = top + mpmath.log(mpmath.fsum(exp(v - top) for v in finite))
    return [v - lse if v != _NINF else _NINF for v in z]


class _TeacherForm:
    """The teacher's form (sparse teacher, vocabulary alignment, logit transforms), checked
    with the contract's validators (:mod:`amid_ref._specs`), the same words everywhere."""

    def __init__(
        self,
        teacher_topk=None,
        leftover="bucket",
        vocab_alignment="error",
        softcap=None,
        logit_scale=None,
        temperature_applies_to="both",
    ):
        self.teacher_topk = teacher_topk
        self.leftover = check_leftover(leftover)
        self.vocab_alignment = check_vocab_alignment(vocab_alignment)
        self.softcap = check_softcap(softcap)
        self.logit_scale = check_logit_scale(logit_scale)
        self.temperature_applies_to = check_temperature_applies_to(temperature_applies_to)

    @property
    def default(self) -> bool:
        return (
            self.teacher_topk is None
            and self.softcap == (None, None)
            and self.logit_scale == (1.0, 1.0)
            and self.temperature_applies_to == "both"
            and self.vocab_alignment == "error"
        )


class _LossSetup:
    """Validated parameters of :func:`amid_loss` / :func:`amid_grad`."""

    def __init__(self, alpha, lam, divergence, order, div_params, temperature, dps, form=None):
        self.dps = _check_dps(dps)
        self.form = _TeacherForm(**(form or {}))
        self.alpha = _param(alpha, "alpha", allow_inf=True)
        self.lam = _lam_param(lam)
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.order = order
        if div_params is None:
            div_params = {}
        if not isinstance(div_params, dict):
            raise TypeError(f"div_params must be a dict or None, got {div_params!r}")
        self.row_fn, div_extra = _divergence_row_fn(divergence, div_params)
        self.temperature = _param(temperature, "temperature")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.extra_digits = _mean_extra_digits(self.alpha) + div_extra
        self.digits = self.dps + DIVERGENCE_GUARD_DIGITS + self.extra_digits
        self.negative_power = 0.0
        if divergence == "ab":
            with mp.workdps(PARAMETER_DPS):
                s_ = _param(div_params["alpha"], "alpha") + _param(div_params["beta"], "beta")
            self.negative_power = float(max(-s_, 0))

    def input_digits(self, rows_s: list, rows_t: list) -> int:
        """Extra digits the inputs need: with a_ + b_ < 0 the AB terms are powers
        p^(a_+b_) up to e^(|a_+b_|·|log p|) cancelling to O(1), so every quantity they are
        formed from (p, q, r) must be accurate to that many more digits."""
        if not self.negative_power or not rows_s:
            return 0
        span = 0.0
        for row in (*rows_s, *rows_t):
            finite = [float(v) for v in row if v != _NINF]
            span = max(span, (max(finite) - min(finite)) / float(self.temperature))
        span += math.log(len(rows_s[0]))
        return int(self.negative_power * span / math.log(10)) + 5

    def rows(self, student_logits, teacher_logits):
        """The rows of the logits (none where the leading shape has a 0), their leading
        shape and V."""
        s = _logits_array(student_logits, "student_logits")
        t = _logits_array(teacher_logits, "teacher_logits")
        if s.shape[:-1] == t.shape[:-1] and s.shape != t.shape:
            raise ValueError(vocab_mismatch_message(s.shape[-1], t.shape[-1]))
        if s.shape != t.shape:
            raise ValueError(
                f"shape mismatch: student_logits has shape {s.shape}, teacher_logits has {t.shape}"
            )
        rows_s, moved = _rows(s, -1)
        rows_t, _ = _rows(t, -1)
        for rows, name in ((rows_s, "student_logits"), (rows_t, "teacher_logits")):
            if any(all(v == _NINF for v in row) for row in rows):
                raise ValueError(f"{name} has a row whose logits are all -inf: no distribution")
        return rows_s, rows_t, moved[:-1], moved[-1]

    def mixture(self, lp: list, lq: list) -> list:
        kernel = _log_mean_kernel(self.alpha, self.lam)
        _, m, z = _log_mixture_row(lp, lq, kernel)
        if z == 0:
            raise ValueError(
                f"the α-mixture is undefined: Z = 0 (alpha={self.alpha} keeps only the "
                "intersection of the teacher and student supports, and it is empty)"
            )
        return [v / z for v in m]

    def divergence_of(self, p: list, q: list, r: list) -> mpf:
        return self.row_fn(*order_arguments(self.order, p, q, r))

    def loss_row(self, s: list, t: list) -> mpf:
        """Loss of one row at student logits ``s`` and teacher logits ``t``."""
        exp = mpmath.exp
        lp = _log_softmax(t, 1 / self.temperature)
        lq = _log_softmax(s, 1 / self.temperature)
        p = [exp(v) for v in lp]
        q = [exp(v) for v in lq]
        return self.divergence_of(p, q, self.mixture(lp, lq))

    def teacher(self, t: list) -> list:
        exp = mpmath.exp
        return [exp(v) for v in _log_softmax(t, 1 / self.temperature)]


class _PerturbedRowLoss:
    """The loss of one row as a function of one shifted student logit, for :func:`amid_grad`.

    Shifting the scaled logit ``s_j/T`` by ``ε`` changes the log-sum-exp by
    ``δ = log(1 + q_j (e^ε − 1))``, so ``log q'_x = log q_x − δ`` (x ≠ j) and
    ``log q'_j = log q_j + ε − δ``; the student term of the power mean scales as
    ``(1−λ) q'^β = (1−λ) q^β · e^(−βδ)``. These exact identities let each evaluation reuse
    the powers ``λ p^β`` and ``(1−λ) q^β`` of the base point; everything else (the mean, Z,
    r, the divergence) is evaluated afresh by the same code as :func:`amid_loss`.
    """

    def __init__(self, setup: _LossSetup, s: list, t: list, *, detach: bool):
        exp, log = mpmath.exp, mpmath.log
        self.setup = setup
        self.p = setup.teacher(t)
        self.lp = [log(v) for v in self.p]
        self.lq = _log_softmax(s, 1 / setup.temperature)
        self.q = [exp(v) for v in self.lq]
        self.kernel = _log_mean_kernel(setup.alpha, setup.lam)
        self.r_fixed = setup.mixture(self.lp, self.lq) if detach else None
        alpha, lam = setup.alpha, setup.lam
        self.beta = None
        if 0 < lam < 1 and not mpmath.isinf(alpha) and alpha != 1:
            beta = self.beta = _beta(alpha)
            self.teacher_terms = [lam * exp(beta * v) if v != _NINF else None for v in self.lp]
            self.student_terms = [
                (1 - lam) * exp(beta * v) if v != _NINF else None for v in self.lq
            ]

    def base(self) -> mpf:
        r = self.r_fixed if self.r_fixed is not None else self.setup.mixture(self.lp, self.lq)
        return self.setup.divergence_of(self.p, self.q, r)

    def at(self, j: int, eps: mpf) -> mpf:
        """The loss with the scaled student logit ``j`` shifted by ``eps``."""
        exp = mpmath.exp
        delta = mpmath.log1p(self.q[j] * mpmath.expm1(eps))
        scale = exp(-delta)
        q = [v * scale for v in self.q]
        q[j] = self.q[j] * exp(eps - delta)
        if self.r_fixed is not None:
            r = self.r_fixed
        else:
            log_m = self._log_mean(j, self.lq[j] + eps - delta, delta)
            m = [exp(v) for v in log_m]
            z = mpmath.fsum(m)
            if z == 0:
                raise ValueError("the α-mixture is undefined at a perturbed point: Z = 0")
            r = [v / z for v in m]
        return self.setup.divergence_of(self.p, q, r)

    def _log_mean(self, j: int, lq_j: mpf, delta: mpf) -> list:
        if self.beta is None:  # λ ∈ {0, 1}, α = 1, α = ∓inf: closed forms, no powers
            lq = [v - delta for v in self.lq]
            lq[j] = lq_j
            return [self.kernel(x, y) for x, y in zip(self.lp, lq, strict=True)]
        beta, log = self.beta, mpmath.log
        factor = mpmath.exp(-beta * delta)
        out = []
        for a_term, b_term in zip(self.teacher_terms, self.student_terms, strict=True):
            if a_term is None or b_term is None:
                if beta < 0:  # intersection support
                    out.append(_NINF)
                    continue
                total = a_term if b_term is None else b_term * factor
                out.append(log(total) / beta if total is not None else _NINF)
                continue
            out.append(log(a_term + b_term * factor) / beta)
        out[j] = self.kernel(self.lp[j], lq_j)
        return out


def amid_loss(
    student_logits,
    teacher_logits,
    alpha,
    lam,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict | None = None,
    temperature=1.0,
    *,
    teacher_topk=None,
    leftover: str = "bucket",
    vocab_alignment: str = "error",
    softcap=None,
    logit_scale=None,
    temperature_applies_to: str = "both",
    dps: int = 50,
):
    r"""AMiD loss per row, to ``dps`` digits.

    .. math::

        p = \mathrm{softmax}(t/T),\quad q = \mathrm{softmax}(s/T),\quad
        r = r^{(\alpha,\lambda)}(p, q),\qquad
        \mathcal L = D(p\|r),\ D(q\|r),\ D(r\|p)\ \text{or}\ D(r\|q).

    Parameters
    ----------
    student_logits, teacher_logits : array_like of float (or of mpf), shape (..., V)
        Logits, same shape; ``-inf`` entries have probability 0. The leading shape may
        hold no rows (e.g. (0, V)); V must be at least 1.
    alpha : float or mpf
        Path parameter, any real or ``±inf``.
    lam : float or mpf
        Teacher weight in ``[0, 1]``.
    divergence : str
        One of :data:`DIVERGENCES`.
    order : str
        ``"pr"``, ``"qr"``, ``"rp"`` or ``"rq"`` (:data:`ORDERS`).
    div_params : dict, optional
        Parameters of the divergence (see :func:`divergence`).
    temperature : float
        Softmax temperature ``T > 0``.
    teacher_topk, leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to
        The teacher's form, as in :func:`amid_ref.amid_loss` (MATH.md "Sparse teachers,
        vocabulary alignment, logit transforms"), transcribed from the definitions: the
        pair (p̂, q̂) of the leftover policy is formed from exact sums (the leftover
        ε = 1 − Σ_S p_i, the student's mass off S as Σ_{j∉S} q_j), the transforms as
        c·tanh(κz/c) at working precision.
    dps : int
        Decimal digits.

    Returns
    -------
    mpf or ndarray of mpf
        Loss per row, shape (...); an empty array for no rows.

    Raises
    ------
    ValueError
        NaN or +inf logits, a row of all ``-inf``, ``Z = 0``, bad parameters; logits of
        shape (..., 0): ``"student_logits has an empty vocabulary axis (V = 0)"`` (or
        ``teacher_logits``), as :func:`amid_ref.amid_loss` and :func:`gpu.amid_loss`.

    Notes
    -----
    Theorem 3.4: for 0 < λ < 1 the loss vanishes iff the student equals the teacher
    [claim: theorem_3_4.optimality].

    References
    ----------
    Theorem 3.4 (optimality): for 0 < λ < 1, D(p‖r) = 0 iff q = p.

    See Also
    --------
    amid_ref.amid_loss : the float64 implementation this oracle checks.
    gpu.amid_loss : the chunked torch implementation.

    Examples
    --------
    >>> import numpy as np
    >>> from amid_ref import precise
    >>> t = np.log([0.7, 0.2, 0.1])
    >>> precise.amid_loss(t, t, alpha=-5.0, lam=0.1) == 0
    True
    """
    form = dict(
        teacher_topk=teacher_topk,
        leftover=leftover,
        vocab_alignment=vocab_alignment,
        softcap=softcap,
        logit_scale=logit_scale,
        temperature_applies_to=temperature_applies_to,
    )
    setup = _LossSetup(alpha, lam, divergence, order, div_params, temperature, dps, form)
    check_teacher_source(teacher_logits, teacher_topk)
    if not setup.form.default:
        return _form_loss(setup, student_logits, teacher_logits)
    with mp.workdps(setup.digits):
        rows_s, rows_t, shape, _ = setup.rows(student_logits, teacher_logits)
    with mp.workdps(setup.digits + setup.input_digits(rows_s, rows_t)):
        out = [setup.loss_row(s, t) for s, t in zip(rows_s, rows_t, strict=True)]
    return _scalar_or_array(_object_array(out, shape))


def amid_grad(
    student_logits,
    teacher_logits,
    alpha,
    lam,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict | None = None,
    temperature=1.0,
    detach_assistant: bool = False,
    *,
    teacher_topk=None,
    leftover: str = "bucket",
    vocab_alignment: str = "error",
    softcap=None,
    logit_scale=None,
    temperature_applies_to: str = "both",
    dps: int = 50,
):
    r"""Gradient of the per-row AMiD loss with respect to the student logits.

    Central differences of :func:`amid_loss` at raised precision:

    .. math::

        \frac{\partial \mathcal L}{\partial s_j} \approx
        \frac{\mathcal L(s + h e_j) - \mathcal L(s - h e_j)}{2h},\qquad
        h = 10^{-(\lfloor dps/2\rfloor + 10)},

    evaluated at ``dps + dps/2 + 30`` working digits (plus the digits the mean and the
    divergence lose near their limits), so that both the truncation error ``O(h² L''')`` and
    the rounding error ``O(10^-digits/h)`` are far below ``10**-dps`` in absolute terms.
    Each perturbed loss reuses the base point's powers through exact identities (the
    log-sum-exp shift ``δ = log(1 + q_j(e^ε − 1))``, ``q'^β = q^β e^(−βδ)``); the mean,
    ``Z``, ``r`` and the divergence are re-evaluated in full.
    With ``detach_assistant=True`` the mixture ``r`` is frozen at its value and only the
    explicit dependence on ``q`` is differentiated (zero for orders ``pr``, ``rp``).

    Parameters
    ----------
    student_logits, teacher_logits : array_like of float (or of mpf), shape (..., V)
        Logits, same shape; ``-inf`` entries allowed.
    alpha, lam, divergence, order, div_params, temperature, dps
        As in :func:`amid_loss`.
    teacher_topk, leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to
        As in :func:`amid_loss`; the differences are taken in the caller's student logits,
        through the transforms, the temperature and the leftover policy.
    detach_assistant : bool
        Treat ``r`` as a constant (TAID / DistiLLM-2 style).

    Returns
    -------
    ndarray of mpf
        ``∂ loss_row / ∂ student_logits``, shape (..., V) (empty for no rows; V = 0 raises
        as in :func:`amid_loss`). Entries at ``-inf`` student logits are 0; rows whose loss
        is ``+inf`` are NaN (the gradient is undefined). At a kink
        (TV at a = b, α = ±inf at ties p = q) the value is the average of the one-sided
        derivatives.

    Notes
    -----
    Cost: ``2V`` loss evaluations per row, ``O(V²)`` element operations. Checked in the
    tests against Proposition 3.5, ``∂ KL(p‖r)/∂s_j = −g_j + q_j Σ g``,
    ``g = (p − r) w`` [claim: prop_3_5.kl_gradient].

    References
    ----------
    Proposition 3.5 (the gradient through the assistant); Theorem 3.4 (zero at q = p).

    See Also
    --------
    amid_ref.amid_grad : the closed-form float64 gradient this oracle checks.
    gpu.amid_loss : its backward pass is the same closed form in torch.

    Examples
    --------
    >>> import numpy as np
    >>> from amid_ref import precise
    >>> t = np.log([0.7, 0.2, 0.1])
    >>> g = precise.to_float(precise.amid_grad(np.zeros(3), t, alpha=-5.0, lam=0.1))
    >>> g.shape, abs(float(g.sum())) < 1e-15  # a softmax gradient sums to 0
    ((3,), True)
    """
    form = dict(
        teacher_topk=teacher_topk,
        leftover=leftover,
        vocab_alignment=vocab_alignment,
        softcap=softcap,
        logit_scale=logit_scale,
        temperature_applies_to=temperature_applies_to,
    )
    setup = _LossSetup(alpha, lam, divergence, order, div_params, temperature, dps, form)
    if not isinstance(detach_assistant, bool | np.bool_):
        raise TypeError(f"detach_assistant must be a bool, got {detach_assistant!r}")
    check_teacher_source(teacher_logits, teacher_topk)
    if not setup.form.default:
        return _form_grad(setup, student_logits, teacher_logits, bool(detach_assistant))
    step_digits = setup.dps // 2 + 10
    rows_s, rows_t, shape, vocab = setup.rows(student_logits, teacher_logits)
    more = setup.input_digits(rows_s, rows_t)
    with mp.workdps(setup.dps + step_digits + GRADIENT_GUARD_DIGITS + setup.extra_digits + more):
        h = mpf(10) ** (-step_digits)
        grads = []
        for s, t in zip(rows_s, rows_t, strict=True):
            row_loss = _PerturbedRowLoss(setup, s, t, detach=bool(detach_assistant))
            if mpmath.isinf(row_loss.base()):
                grads.append([mpmath.nan] * len(s))
                continue
            eps = h / setup.temperature  # a step h in s_j is a step h/T in the scaled logit
            grads.append(
                [
                    (row_loss.at(j, eps) - row_loss.at(j, -eps)) / (2 * h)
                    if sj != _NINF
                    else mpf(0)
                    for j, sj in enumerate(s)
                ]
            )
    return _object_array([g for row in grads for g in row], (*shape, vocab))


# --------------------------------------------------------------------------------------
# the teacher's form: sparse teacher, vocabulary alignment, logit transforms (MATH.md),
# transcribed from the definitions in exact arithmetic
# --------------------------------------------------------------------------------------


def _transformed(row: list, scale: mpf, cap) -> list:
    """κ·z then c·tanh(z/c) of one row; −inf (masked) stays −inf."""
    out = []
    for v in row:
        if v == _NINF:
            out.append(_NINF)
            continue
        z = scale * v
        out.append(cap * mpmath.tanh(z / cap) if cap is not None else z)
    return out


def _log_sum(values: list) -> mpf:
    finite = [v for v in values if v != _NINF]
    if not finite:
        return _NINF
    top = max(finite)
    return top + mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in finite))


class _FormRow:
    """One row of the teacher's form: the teacher part (dense logits or sparse slots) and
    ``loss(s, r_fixed)`` of student logits ``s``, returning the loss and the assistant."""

    def __init__(self, setup, teacher, vocab: int, row_index):
        self.setup, self.teacher, self.vocab, self.row = setup, teacher, vocab, row_index
        form = setup.form
        self.scale_s, self.cap_s = (
            mpf(x) if x is not None else None for x in (form.logit_scale[0], form.softcap[0])
        )
        self.scale_t, self.cap_t = (
            mpf(x) if x is not None else None for x in (form.logit_scale[1], form.softcap[1])
        )
        self.inv_t = 1 / setup.temperature
        self.inv_t_teacher = self.inv_t if form.temperature_applies_to == "both" else mpf(1)
        if form.teacher_topk is not None:
            self.sparse = self._sparse_teacher()
        else:
            self.sparse = None
            self.lp_dense = self._dense_teacher()

    # -- teacher ---------------------------------------------------------------------
    def _dense_teacher(self) -> list:
        t = _transformed(self.teacher, self.scale_t, self.cap_t)
        lp = _log_softmax(t, self.inv_t_teacher)
        v_t, v_s = len(lp), self.vocab
        if v_t > v_s:
            if self.setup.form.vocab_alignment == "pad":
                return lp
            return self._truncate(lp, v_s, "teacher")
        if v_t < v_s and self.setup.form.vocab_alignment == "pad":
            return lp + [_NINF] * (v_s - v_t)
        return lp  # a longer student is cut by log_pair

    def _truncate(self, lp: list, shared: int, side: str) -> list:
        dropped = mpmath.fsum(mpmath.exp(v) for v in lp[shared:] if v != _NINF)
        if dropped > VOCAB_TRUNCATE_MAX_DROPPED:
            raise ValueError(
                truncate_dropped_message(side, float(dropped), self.row, VOCAB_TRUNCATE_MAX_DROPPED)
            )
        kept = lp[:shared]
        total = _log_sum(kept)
        return [v - total if v != _NINF else _NINF for v in kept]

    def _sparse_teacher(self):
        ids, lps, dropped_lps = self.teacher
        form, vocab = self.setup.form, self.vocab
        if dropped_lps:
            dropped = mpmath.fsum(mpmath.exp(v) for v in dropped_lps)
            if dropped > VOCAB_TRUNCATE_MAX_DROPPED:
                raise ValueError(
                    truncate_dropped_message(
                        "teacher", float(dropped), self.row, VOCAB_TRUNCATE_MAX_DROPPED
                    )
                )
            shift = mpmath.log(1 - dropped)
            lps = [v - shift if v != _NINF else _NINF for v in lps]
        p_s = mpmath.fsum(mpmath.exp(v) for v in lps if v != _NINF)
        if p_s > 1 + mpf(SPARSE_MASS_TOL):
            raise ValueError(mass_above_one_message(float(p_s), self.row))
        eps = 1 - p_s
        full = len(ids) == vocab
        if p_s > 0 and (eps <= mpf(SPARSE_EPS_ROUNDING) or (full and eps <= mpf(SPARSE_MASS_TOL))):
            log_total = mpmath.log(p_s)
            lps = [v - log_total if v != _NINF else _NINF for v in lps]
            eps = mpf(0)
        if form.leftover == "uniform" and full and eps > 0:
            raise ValueError(leftover_needs_mass_message("uniform", self.row, float(eps)))
        if form.leftover == "renormalize" and p_s == 0:
            raise ValueError(leftover_needs_mass_message("renormalize", self.row))
        return ids, lps, eps

    # -- the pair (p̂, q̂) and the loss -------------------------------------------------
    def log_pair(self, s: list) -> tuple[list, list]:
        """``(log p̂, log q̂)`` for student logits ``s`` (MATH.md table)."""
        x = _transformed(s, self.scale_s, self.cap_s)
        lq = _log_softmax(x, self.inv_t)
        if self.sparse is None:
            v_t = len(self.lp_dense)
            if v_t > len(lq):  # pad the student
                return self.lp_dense, lq + [_NINF] * (v_t - len(lq))
            if v_t < len(lq):  # truncate the student
                return self.lp_dense, self._truncate(lq, v_t, "student")
            return self.lp_dense, lq
        ids, lps, eps = self.sparse
        leftover = self.setup.form.leftover
        log_eps = mpmath.log(eps) if eps > 0 else _NINF
        if leftover == "bucket":
            on_s = set(ids)
            off = [lq[j] for j in range(len(lq)) if j not in on_s]
            return [*lps, log_eps], [lq[i] for i in ids] + [_log_sum(off)]
        vocab = len(lq)
        if leftover == "renormalize":
            log_total = _log_sum(lps)
            lp = [_NINF] * vocab
            for i, v in zip(ids, lps, strict=True):
                lp[i] = v - log_total if v != _NINF else _NINF
            return lp, lq
        fill = log_eps - mpmath.log(vocab - len(ids)) if eps > 0 else _NINF
        lp = [fill] * vocab
        for i, v in zip(ids, lps, strict=True):
            lp[i] = v
        return lp, lq

    def loss(self, s: list, r_fixed=None):
        lp, lq = self.log_pair(s)
        exp = mpmath.exp
        p = [exp(v) if v != _NINF else mpf(0) for v in lp]
        q = [exp(v) if v != _NINF else mpf(0) for v in lq]
        r = r_fixed if r_fixed is not None else self.setup.mixture(lp, lq)
        return self.setup.divergence_of(p, q, r), r


def _form_rows(setup, student_logits, teacher_logits):
    """The rows of the teacher's form, checked (the same errors as amid_ref)."""
    form = setup.form
    s = _logits_array(student_logits, "student_logits")
    rows_s, moved = _rows(s, -1)
    if any(all(v == _NINF for v in row) for row in rows_s):
        raise ValueError("student_logits has a row whose logits are all -inf: no distribution")
    vocab = s.shape[-1]
    leading = moved[:-1]
    if form.teacher_topk is not None:
        if form.temperature_applies_to == "both" and setup.temperature != 1:
            raise ValueError(
                f"temperature={float(setup.temperature)} with teacher_topk: a sparse teacher's "
                "log-probabilities are used as given, so the temperature can divide the "
                "student's logits only; pass temperature_applies_to='student' (or give "
                "tempered log-probabilities)"
            )
        if form.softcap[1] is not None:
            raise ValueError(sparse_transform_message("softcap"))
        if form.logit_scale[1] != 1.0:
            raise ValueError(sparse_transform_message("logit_scale"))
        sparse = check_teacher_topk(form.teacher_topk, s.shape, form.vocab_alignment)
        k = sparse.indices.shape[-1]
        idx = sparse.indices.reshape(-1, k)
        lps = sparse.logprobs.reshape(-1, k)
        kept = sparse.kept.reshape(-1, k)
        dropped = sparse.dropped.reshape(-1, k)
        dropped_lps = sparse.dropped_logprobs.reshape(-1, k)
        teachers = [
            (
                [int(i) for i, c in zip(idx[n], kept[n], strict=True) if c],
                [mpf(float(v)) for v, c in zip(lps[n], kept[n], strict=True) if c],
                [mpf(float(v)) for v, c in zip(dropped_lps[n], dropped[n], strict=True) if c],
            )
            for n in range(len(rows_s))
        ]
    else:
        t = _logits_array(teacher_logits, "teacher_logits")
        if t.shape[:-1] != s.shape[:-1]:
            raise ValueError(
                f"shape mismatch: student_logits has shape {s.shape}, teacher_logits has {t.shape}"
            )
        teachers, _ = _rows(t, -1)
        if any(all(v == _NINF for v in row) for row in teachers):
            raise ValueError("teacher_logits has a row whose logits are all -inf: no distribution")
        if t.shape[-1] != vocab and form.vocab_alignment == "error":
            raise ValueError(vocab_mismatch_message(vocab, t.shape[-1]))
    index = list(np.ndindex(*leading)) if leading else [()]
    return rows_s, teachers, vocab, index, leading


def _form_loss(setup, student_logits, teacher_logits):
    with mp.workdps(setup.digits):
        rows_s, teachers, vocab, index, leading = _form_rows(setup, student_logits, teacher_logits)
        dense_t = [t for t in teachers if isinstance(t, list)]
        more = setup.input_digits(rows_s, dense_t or rows_s)
    with mp.workdps(setup.digits + more):
        out = [
            _FormRow(setup, t, vocab, row).loss(s)[0]
            for s, t, row in zip(rows_s, teachers, index, strict=True)
        ]
    return _scalar_or_array(_object_array(out, leading))


def _form_grad(setup, student_logits, teacher_logits, detach):
    """Central differences of the form's loss in the caller's student logits (through the
    transforms, the temperature and the leftover policy), as :func:`amid_grad`."""
    step_digits = setup.dps // 2 + 10
    with mp.workdps(setup.digits):
        rows_s, teachers, vocab, index, leading = _form_rows(setup, student_logits, teacher_logits)
        dense_t = [t for t in teachers if isinstance(t, list)]
        more = setup.input_digits(rows_s, dense_t or rows_s)
    digits = setup.dps + step_digits + GRADIENT_GUARD_DIGITS + setup.extra_digits + more
    with mp.workdps(digits):
        h = mpf(10) ** (-step_digits)
        grads = []
        for s, t, row in zip(rows_s, teachers, index, strict=True):
            form_row = _FormRow(setup, t, vocab, row)
            base, r = form_row.loss(s)
            if mpmath.isinf(base):
                grads.append([mpmath.nan] * len(s))
                continue
            fixed = r if detach else None
            out = []
            for j, sj in enumerate(s):
                if sj == _NINF:
                    out.append(mpf(0))
                    continue
                up = list(s)
                down = list(s)
                up[j] = sj + h
                down[j] = sj - h
                out.append((form_row.loss(up, fixed)[0] - form_row.loss(down, fixed)[0]) / (2 * h))
            grads.append(out)
    return _object_array([g for row in grads for g in row], (*leading, vocab))
