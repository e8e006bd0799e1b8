r"""The weighted α-mean and α-mixture in torch, accurate uniformly in α.

Scheme (MATH.md, "Log domain"), with :math:`\beta = (1-\alpha)/2`, :math:`d = \log a - \log b`
and :math:`t = \beta d + \log\lambda - \log(1-\lambda)`:

* :math:`|\beta d| \le 1`: pivot on the argument with the larger weight,
  :math:`\log m = \log b + \operatorname{log1p}(\lambda\,\operatorname{expm1}(\beta d))/\beta`
  (λ ≤ ½) or :math:`\log a + \operatorname{log1p}((1-\lambda)\operatorname{expm1}(-\beta d))/\beta`;
  the ``log1p`` argument stays in ``[-0.32, 1.72]``, so the quotient by β keeps a relative
  error of a few ulps even as β → 0 (α → 1).
* :math:`|\beta d| > 1`: pivot on the dominant weighted term,
  :math:`\log m = \log a + (\log\lambda + \operatorname{log1p}(e^{-|t|}))/\beta` (t ≥ 0) or
  :math:`\log b + (\log(1-\lambda) + \operatorname{log1p}(e^{-|t|}))/\beta` (t < 0).
* When :math:`|\beta| \ge \tfrac12` (α ≤ 0 or α ≥ 2) the one-kernel form
  :math:`\operatorname{logaddexp}(\beta\log a + \log\lambda, \beta\log b + \log(1-\lambda))/\beta`
  is used: its rounding, a few ulps of :math:`\beta|\log a|`, divided by β stays a few ulps
  of :math:`|\log a|`; only β → 0 makes it lose digits. This cuts the elementwise work
  (and the kernel launches) of the common settings by half. Where the log ratios below are
  wanted too (the AMiD loss), they take the pivot's correction
  :math:`\operatorname{log1p}(e^{-|t|})/\beta` anyway, and log m is the pivot plus that
  correction: the same logaddexp written out, one ``exp`` and one ``log1p`` per element
  fewer (the near branch stays the ratios' only: at |β| ≥ ½ the quotient by β does not
  amplify the bracket's rounding).

* With the log ratios wanted (the AMiD loss) at moderate λ (:data:`TWO_PIVOT_LAM_MIN`
  ≤ λ ≤ 1 − :data:`TWO_PIVOT_LAM_MIN`), each ratio pivots on its own argument for every d,
  :math:`\log(m/b) = \operatorname{log1p}(\lambda\operatorname{expm1}(\beta d))/\beta` and
  :math:`\log(m/a) = \operatorname{log1p}((1-\lambda)\operatorname{expm1}(-\beta d))/\beta`
  (:func:`_two_pivot`): no ``log1p`` argument comes near −1 there, so one formula serves
  the near and the far branches, without their selects (on CPU the costliest passes of
  the loss after the exponentials).

The weight of Proposition 3.5 comes from the same ``t``:
:math:`w = \partial\log m/\partial\log b = \sigma(-t)`.
All scalar constants (``log λ/β``, ``1/β``) are formed in Python double precision and the
elementwise work is done in the tensors' dtype (float32 or float64).
"""

from __future__ import annotations

import math

import torch

from gpu._autograd import _refuse_double_backward
from gpu._elementwise import (
    Shared,
    bounds,
    expm1,
    expm1_,
    masked_fill_,
    side,
    surely_above,
    where,
)
from gpu._validation import check_alpha, check_float_tensor, check_lam, check_pair, compute_dtype

NEG_INF = float("-inf")
INF = float("inf")

#: |β| at or above which the single logaddexp-type branch is accurate to a few ulps.
_FAST_BETA = 0.5
#: β is clamped to this magnitude before the elementwise product β·d, so that float32 never
#: sees β = inf (|α| > 6.8e38); log m is then the max/min to within float32 resolution.
_BETA_CLAMP = 1e30


def _neg_inf_like(x: torch.Tensor) -> torch.Tensor:
    return torch.full_like(x, NEG_INF)


def _ratios(
    la: torch.Tensor, lb: torch.Tensor, lm: torch.Tensor, beta: float, lam: float, parts
) -> list[torch.Tensor]:
    r"""``[log m − log a, log m − log b]`` for finite β ≠ 0, each formed directly as the
    correction of the module docstring's pivot (never as a difference with ``log m``):

    * :math:`|\beta d| \le 1`: ``log1p(λ·expm1(βd))/β`` is the ratio to b (λ ≤ ½), or
      ``log1p((1−λ)·expm1(−βd))/β`` the ratio to a, the other one ∓ d;
    * else, with the dominant term (t ≥ 0: a): ``(log λ + log1p(e^(−|t|)))/β`` is the
      ratio to a, or ``(log(1−λ) + log1p(e^(−|t|)))/β`` the ratio to b, the other ± d.

    Where m = 0 (a zero under intersection support) or both arguments are zero, the plain
    differences (−inf, NaN).

    ``parts`` = ``(corr, near, small, a_dom)``: the pivoted form's own ``log1p(e^(−|t|))/β``,
    near-branch correction, ``|βd| ≤ 1`` mask and ``t ≥ 0`` mask (``corr`` and ``near`` are
    overwritten). Formed in place: at most five (N, V) tensors live here (chunk scratch is
    the fused loss's memory).
    """
    inv_beta = 1.0 / beta
    log_lam, log_1m_lam = math.log(lam), math.log1p(-lam)
    corr, near, small, a_dom = parts
    d = la - lb
    rb = corr + log_1m_lam * inv_beta  # ratio to b where b dominates
    ra = rb - d
    corr.add_(log_lam * inv_beta)  # ratio to a where a dominates
    where(a_dom, corr, ra, out=ra)
    where(a_dom, corr.add_(d), rb, out=rb)
    del corr
    if lam <= 0.5:  # near is the ratio to b
        where(small, near, rb, out=rb)
        where(small, near.sub_(d), ra, out=ra)
    else:  # near is the ratio to a
        where(small, near, ra, out=ra)
        where(small, near.add_(d), rb, out=rb)
    del near, d
    return _plain_at_zeros(la, lb, lm, ra, rb)


def _plain_at_zeros(la, lb, lm, ra, rb) -> list[torch.Tensor]:
    """``[ra, rb]`` with the plain differences ``lm − la``, ``lm − lb`` (−inf, NaN) in place
    where m = 0 or both arguments are zero."""
    # (eager CPU: no zero, nothing to replace; told by reductions before any mask is formed)
    no_zero = surely_above(lm, NEG_INF) and (surely_above(la, NEG_INF) or surely_above(lb, NEG_INF))
    plain = None if no_zero else torch.isneginf(lm) | (torch.isneginf(la) & torch.isneginf(lb))
    if plain is not None and side(plain) is not False:
        where(plain, lm - la, ra, out=ra)
        where(plain, lm - lb, rb, out=rb)
    return [ra, rb]


#: :func:`_two_pivot` takes λ ∈ [c, 1 − c] with this c: there each of its ``log1p``
#: arguments is at least −0.95 (λ·expm1(βd) ≥ −λ, (1−λ)·expm1(−βd) ≥ −(1−λ)), where
#: ``log1p`` amplifies the argument's relative error by at most (1−c)/(c·|log c|) = 6.3.
TWO_PIVOT_LAM_MIN = 0.05
#: Largest βd whose ``expm1`` :func:`_two_pivot` forms (e^80 is 5.5e34, normal in float32).
_EXPM1_TOP = {torch.float32: 80.0, torch.float64: 700.0}


def _two_pivot(la, lb, beta, inv_beta, lam, want_weight, keep_bd=False):
    r"""``(log m, [log m − log a, log m − log b], w, βd)`` (βd where ``keep_bd``, else
    ``None``) for finite β ≠ 0 at λ ∈ [c, 1 − c] (c = :data:`TWO_PIVOT_LAM_MIN`), each ratio
    formed around its own argument:

    .. math::

        \log\frac{m}{b} = \frac{\operatorname{log1p}(\lambda\operatorname{expm1}(\beta d))}
        {\beta},\qquad
        \log\frac{m}{a} = \frac{\operatorname{log1p}((1-\lambda)\operatorname{expm1}
        (-\beta d))}{\beta},

    (m^β = b^β(1 + λ expm1(βd)) = a^β(1 + (1−λ) expm1(−βd))), with
    :math:`w = \sigma(-t) = (1-\lambda)/(1 + \lambda\operatorname{expm1}(\beta d))` and
    log m the pivot on the dominant weighted term (t ≥ 0: ``log a + log(m/a)``). Each
    ``log1p`` argument is at least −0.95, so each ratio is exact to a few ulps of itself
    for every d (the near and far branches of :func:`log_alpha_mean_and_weight`'s
    pivoted form in one formula): two ``expm1`` and two ``log1p`` passes and no select,
    where the pivoted form selects among three branches (four blends of the bits on
    CPU). Where ``expm1`` would overflow (βd > 80 in float32) the ratio is the other one
    ± d (that argument dominates: exact) and w = 1/(1 + e^t). Zeros give the pivoted
    form's values (the caller applies its NaN and support rules). It has no twin:
    :mod:`amid_ref` and the Triton kernel take the three branches, so the tests hold it to
    forms it does not share."""
    top = _EXPM1_TOP.get(la.dtype, _EXPM1_TOP[torch.float32])
    # βd: ±inf where one argument is zero, NaN where both are
    bd = (la - lb).mul_(beta)
    lo_hi = bounds(bd)  # (eager CPU; NaN bounds where an entry is NaN: then not known)
    over_hi = lo_hi is None or not lo_hi[1] <= top
    over_lo = lo_hi is None or not lo_hi[0] >= -top
    y = expm1(bd.clamp(max=top) if over_hi else bd).mul_(lam)  # λ·expm1(βd) ≥ −λ
    rb = torch.log1p(y).mul_(inv_beta)
    keep = over_hi or over_lo or keep_bd  # (else −βd is formed in place: bd is not read again)
    x = bd.neg() if keep else bd.neg_()
    ra = expm1_(x.clamp_(max=top) if over_lo else x).mul_(1.0 - lam).log1p_().mul_(inv_beta)
    del x
    if over_hi or over_lo:
        d = la - lb
        if over_hi:
            hi = bd > top
            ra_over = ra + d  # (ra exact there: −βd < −top)
        if over_lo:
            where(bd < -top, rb - d, ra, out=ra)
        if over_hi:
            where(hi, ra_over, rb, out=rb)
            del ra_over
        del d
    a_dom = y >= 1.0 - 2.0 * lam  # t ≥ 0 (NaN: false)
    lm = lb + rb
    lm = where(a_dom, la + ra, lm, out=lm, spend_a=True)
    del a_dom
    w = None
    if want_weight:
        w = y.add_(1.0).reciprocal_().mul_(1.0 - lam)  # (y is not read again)
        if over_hi:  # there λ·expm1(βd) was clamped: w = σ(−t)
            t = bd + (math.log(lam) - math.log1p(-lam))
            where(hi, torch.exp(t).add_(1.0).reciprocal_(), w, out=w)
    return lm, [ra, rb], w, (bd if keep else None)


def _near_correction(bd: torch.Tensor, lam: float, inv_beta: float) -> torch.Tensor:
    """``log1p(λ·expm1(βd))/β`` (λ ≤ ½: log m − log b) or ``log1p((1−λ)·expm1(−βd))/β``
    (λ > ½: log m − log a), the |βd| ≤ 1 branch of the pivot; a new tensor."""
    if lam <= 0.5:
        return expm1(bd).mul_(lam).log1p_().mul_(inv_beta)
    return expm1_(bd.neg()).mul_(1.0 - lam).log1p_().mul_(inv_beta)


def log_alpha_mean_and_weight(
    la: torch.Tensor,
    lb: torch.Tensor,
    alpha: float,
    lam: float,
    *,
    want_weight: bool,
    ratios: list | None = None,
    weight_bar: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""``log m_α(a, b; λ)`` and, if asked, :math:`w = \partial \log m/\partial \log b`.

    If ``ratios`` is a list, the log ratios ``log m − log a`` and ``log m − log b`` are
    appended to it, each formed directly from the branch's correction term (the difference
    ``log m − log a`` would carry an ulp of ``|log a|``; ±inf/NaN at zero arguments as the
    plain differences). If ``weight_bar`` is a list (and ``want_weight``), the complement
    :math:`\bar w = 1 - w = \partial \log m/\partial \log a` and the difference
    :math:`w - \bar w` are appended, each exact to a few ulps of itself (σ(t) itself, not
    1 − σ(−t); −tanh(t/2), not the difference of two numbers near ½); 0 where w is masked.

    The logistic function is formed as ``1/(1 + e^t)`` (a few ulps in both tails), not
    ``torch.sigmoid``, which ``torch.compile`` generates 32 eps off on CUDA.

    Unchecked kernel: ``la``, ``lb`` are same-shape floating tensors (``-inf`` allowed, no
    NaN), ``alpha`` a float or ±inf, ``lam`` in [0, 1]. The result may alias ``la`` or ``lb``
    when λ ∈ {0, 1} (the endpoint is returned exactly); callers must not write into it.
    Edge semantics are those of :func:`amid_ref.log_alpha_mean` and
    :func:`amid_ref.alpha_mixture_weight`.
    """
    if lam == 0.0:
        w = None
        if want_weight:  # 1 where b > 0 (eager CPU: a reduction tells that every b is)
            w = torch.ones_like(lb) if surely_above(lb, NEG_INF) else (lb != NEG_INF).to(la.dtype)
        if ratios is not None:
            ratios += [lb - la, torch.zeros_like(lb)]
        if want_weight and weight_bar is not None:
            weight_bar += [torch.zeros_like(lb), w.clone()]
        return lb, w
    if lam == 1.0:
        if ratios is not None:
            ratios += [torch.zeros_like(la), la - lb]
        if want_weight and weight_bar is not None:
            w_bar = (la != NEG_INF).to(la.dtype)
            weight_bar += [w_bar, -w_bar]
        return la, (torch.zeros_like(la) if want_weight else None)
    if math.isinf(alpha):
        if alpha < 0:
            lm = torch.maximum(la, lb)
            pick_b = lb > la
        else:
            lm = torch.minimum(la, lb)
            pick_b = lb < la
        w = None
        if want_weight:
            w = where(pick_b, 1.0, where(lb == la, 0.5, 0.0)).to(la.dtype)
            w.masked_fill_(torch.isneginf(lm), 0.0)
            if weight_bar is not None:  # 1 − w is exact for w ∈ {0, ½, 1}
                w_bar = (1.0 - w).masked_fill_(torch.isneginf(lm), 0.0)
                weight_bar += [w_bar, w - w_bar]
        if ratios is not None:  # 0 or ±(la − lb): exact
            ratios += [lm - la, lm - lb]
        return lm, w
    beta = (1.0 - alpha) / 2.0
    log_lam, log_1m_lam = math.log(lam), math.log1p(-lam)
    if beta == 0.0:
        # Geometric mean, pivoted on the heavier argument; a zero in either gives -inf.
        if lam <= 0.5:
            rb = lam * (la - lb)
            ra = rb - (la - lb)
            lm = lb + rb
        else:
            ra = (1.0 - lam) * (lb - la)
            rb = ra + (la - lb)
            lm = la + ra
        zero = torch.isneginf(la) | torch.isneginf(lb)
        lm.masked_fill_(zero, NEG_INF)
        if ratios is not None:  # at a zero argument, the plain differences (−inf, NaN)
            ratios += [where(zero, lm - la, ra), where(zero, lm - lb, rb)]
        w = None
        if want_weight:
            w = torch.full_like(la, 1.0 - lam).masked_fill_(torch.isneginf(lm), 0.0)
            if weight_bar is not None:
                zero = torch.isneginf(lm)
                weight_bar += [
                    torch.full_like(la, lam).masked_fill_(zero, 0.0),
                    torch.full_like(la, 1.0 - 2.0 * lam).masked_fill_(zero, 0.0),
                ]
        return lm, w

    beta_f = max(-_BETA_CLAMP, min(_BETA_CLAMP, beta))
    inv_beta = 1.0 / beta_f
    w = t = None
    zero_free = False  # known: neither argument has a zero (nothing to mask or scrub)
    if ratios is not None and TWO_PIVOT_LAM_MIN <= lam <= 1.0 - TWO_PIVOT_LAM_MIN:
        # the log ratios wanted (the AMiD loss), at moderate λ: one formula for each
        keep_bd = weight_bar is not None and want_weight
        lm, pair, w, bd = _two_pivot(la, lb, beta_f, inv_beta, lam, want_weight, keep_bd)
        # (eager CPU: two reductions tell that no argument is zero; then log m, the ratios
        # and w are finite, t too, and the zero rules below change nothing)
        zero_free = surely_above(la, NEG_INF) and surely_above(lb, NEG_INF)
        if zero_free:
            ratios += pair
        else:
            lm.nan_to_num_(nan=NEG_INF, posinf=float("inf"), neginf=NEG_INF)  # as below
            ratios += _plain_at_zeros(la, lb, lm, *pair)
        del pair
        if keep_bd:
            t = bd.add_(log_lam - log_1m_lam)
        del bd
    elif abs(beta) >= _FAST_BETA and ratios is None:
        # |β| ≥ ½: the bracket's rounding (a few ulps of β·|log a|) divided by β stays a few
        # ulps of |log a|, so the one-kernel logaddexp form is as accurate as the pivoted one.
        # Zeros need no mask: logaddexp(-inf, y) = y, and for β < 0 a zero gives +inf/β.
        lm = torch.logaddexp(la * beta_f + log_lam, lb * beta_f + log_1m_lam).mul_(inv_beta)
        t = None
        if want_weight:
            t = (la - lb).mul_(beta_f).add_(log_lam - log_1m_lam)
    else:
        # The pivoted form. With the ratios wanted it is also the cheaper one at |β| ≥ ½:
        # they take its correction log1p(e^(−|t|))/β anyway, and log m is then the pivot plus
        # that correction, the logaddexp above written out (no near branch for log m there:
        # at |β| ≥ ½ the quotient by β does not amplify the bracket's rounding).
        slow = abs(beta) < _FAST_BETA  # |β| < ½: log m takes the near branch too
        d = la - lb  # ±inf where one argument is zero, NaN where both are
        bd = d.mul_(beta_f)
        t = bd + (log_lam - log_1m_lam)  # NaN exactly where both arguments are zero
        # |βd| > 1: pivot on the dominant weighted term. Since t/β is the difference of the
        # candidates la + log λ/β and lb + log(1−λ)/β, the pivot is their max (β > 0) or
        # min (β < 0), and log m = pivot + log1p(exp(−|t|))/β.
        pivot = torch.maximum if beta > 0 else torch.minimum
        lm = pivot(la + log_lam * inv_beta, lb + log_1m_lam * inv_beta)
        corr = t.abs().neg_().exp_().log1p_().mul_(inv_beta)
        lm.add_(corr)
        # |βd| ≤ 1: log1p/expm1 around the argument with the larger weight.
        small = Shared(bd.abs() <= 1.0)  # (its mask formed once for every select on it)
        near_r = _near_correction(bd, lam, inv_beta)
        if slow:
            near = near_r + (lb if lam <= 0.5 else la)
            lm = where(small, near, lm)
            del near
        del bd, d
        if ratios is not None:
            ratios += _ratios(la, lb, lm, beta_f, lam, parts=(corr, near_r, small, Shared(t >= 0)))
        del corr, near_r, small
        # Both arguments zero: t is NaN; the mean is 0 (log m = -inf).
        lm.nan_to_num_(nan=NEG_INF, posinf=float("inf"), neginf=NEG_INF)
    if want_weight:
        w_bar = w_diff = None
        if weight_bar is not None:  # σ(t) = 1/(1 + e^(−t)), w − w̄ = −tanh(t/2)
            w_bar = torch.exp(-t).add_(1.0).reciprocal_()
            w_diff = torch.tanh(t * 0.5).neg_()
        if w is None:  # (the two-pivot form's, else) σ(−t), NaN where both are zero
            w = t.exp_().add_(1.0).reciprocal_()
        for x in (w, w_bar, w_diff):
            if x is None or zero_free:
                continue
            if beta < 0:
                # Intersection support: m = 0 wherever either argument is zero.
                masked_fill_(x, torch.isneginf(lm), 0.0)
            else:
                x.nan_to_num_(nan=0.0)
        if w_bar is not None:
            weight_bar += [w_bar, w_diff]
    return lm, w


def _check_log_pair(log_p, log_q, dim, name_p="log_p", name_q="log_q"):
    check_float_tensor(log_p, name_p)
    check_float_tensor(log_q, name_q)
    check_pair(log_p, log_q, name_p, name_q, vocab=False)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {dim!r}")
    if not -log_p.dim() <= dim < log_p.dim():
        raise ValueError(f"dim={dim} is out of range for {name_p} with {log_p.dim()} dimension(s)")
    for x, name in ((log_p, name_p), (log_q, name_q)):
        if torch.isnan(x).any():
            raise ValueError(f"{name} contains NaN")
        if torch.isposinf(x).any():
            raise ValueError(f"{name} contains +inf")


def log_alpha_mixture(
    log_p: torch.Tensor, log_q: torch.Tensor, alpha: float, lam: float, dim: int = -1
) -> torch.Tensor:
    r"""Log of the normalized α-mixture :math:`\log r^{(\alpha,\lambda)}` (the AMiD assistant).

    .. math::

        r^{(\alpha,\lambda)}(x) = \frac{m_\alpha(p(x), q(x); \lambda)}{Z_\alpha},\quad
        m_\alpha(a, b;\lambda) = \big(\lambda a^\beta + (1-\lambda) b^\beta\big)^{1/\beta},
        \quad \beta = \frac{1-\alpha}{2},

    with the geometric mean :math:`a^\lambda b^{1-\lambda}` at α = 1, ``max`` at α = −inf
    and ``min`` at α = +inf. Torch twin of :func:`amid_ref.log_alpha_mixture`.

    Parameters
    ----------
    log_p, log_q : torch.Tensor, shape (..., V, ...)
        Teacher and student log-probabilities (``-inf`` for zero probability), same shape,
        any floating dtype; expected normalized along ``dim`` (not checked: the result is
        normalized regardless).
    alpha : float
        Path parameter, any real or ``±inf``.
    lam : float
        Teacher weight in ``[0, 1]``: ``lam = 1`` gives ``log_p``, ``lam = 0`` gives ``log_q``.
    dim : int
        The vocabulary dimension.

    Returns
    -------
    torch.Tensor
        ``log r``, same shape, in float32 (float64 for float64 inputs); ``-inf`` exactly where
        the mixture is zero (union of the supports for α < 1, intersection for α ≥ 1).
        Differentiable once in ``log_p`` and ``log_q`` (closed-form backward, Proposition
        3.5; ``create_graph=True`` raises); the gradient is 0 where r = 0.

    Raises
    ------
    ValueError
        On NaN or ``+inf`` input, or if a row has ``Z = 0`` (α ≥ 1 and disjoint supports).

    Notes
    -----
    Accurate uniformly in α (module docstring), including α → 1 where the textbook
    ``logaddexp(...)/β`` loses all digits. Theorem 3.2 of the paper: r minimizes
    ``λ D_α(p‖r) + (1−λ) D_α(q‖r)``; Theorem 3.4: for 0 < λ < 1, r = p iff q = p.

    Examples
    --------
    >>> import torch, gpu
    >>> lp = torch.tensor([0.7, 0.2, 0.1]).log()
    >>> lq = torch.tensor([0.1, 0.3, 0.6]).log()
    >>> gpu.log_alpha_mixture(lp, lq, -1.0, 0.5).exp()  # arithmetic mixture
    tensor([0.4000, 0.2500, 0.3500])
    """
    _check_log_pair(log_p, log_q, dim)
    alpha = check_alpha(alpha)
    lam = check_lam(lam)
    cdt = compute_dtype(log_p.dtype, log_q.dtype)
    lp = log_p.to(cdt).movedim(dim, -1)
    lq = log_q.to(cdt).movedim(dim, -1)
    if torch.is_grad_enabled() and (lp.requires_grad or lq.requires_grad):
        out = _MixtureFunction.apply(lp, lq, alpha, lam)
    else:
        with torch.no_grad():
            out, _ = _log_mixture(lp, lq, alpha, lam, want_weight=False)
    return out.movedim(-1, dim)


def _log_mixture(lp, lq, alpha, lam, *, want_weight):
    """log r on the last dim and, if asked, the weight w = ∂log m/∂log q."""
    lm, w = log_alpha_mean_and_weight(lp, lq, alpha, lam, want_weight=want_weight)
    lz = torch.logsumexp(lm, dim=-1, keepdim=True)
    empty = torch.isneginf(lz)
    if bool(empty.any()):
        rows = torch.nonzero(empty[..., 0])[:5].tolist()
        raise ValueError(
            f"the α-mixture is undefined on row(s) {rows}: Z = 0 because alpha={alpha} ≥ 1 "
            "keeps only the intersection of the supports of p and q, and it is empty"
        )
    return lm - lz, w


class _MixtureFunction(torch.autograd.Function):
    r"""log r with the closed-form backward of Proposition 3.5.

    With :math:`G = \partial L/\partial\log r`: :math:`G_m = G - r\sum_x G_x` (through
    the normalizer), :math:`\partial L/\partial\log q = w\,G_m` and
    :math:`\partial L/\partial\log p = (1 - w)\,G_m` (m is positively homogeneous of
    degree 1, so the two log-weights sum to 1), both 0 where m = 0.
    """

    @staticmethod
    def forward(ctx, lp, lq, alpha, lam):
        lr, w = _log_mixture(lp, lq, alpha, lam, want_weight=True)
        ctx.save_for_backward(lr, w)
        return lr

    @staticmethod
    def backward(ctx, grad):
        return _refuse_double_backward(_mixture_backward)(ctx, grad)


def _mixture_backward(ctx, grad):
    lr, w = ctx.saved_tensors
    support = lr != NEG_INF
    grad = where(support, grad, 0.0)
    g_m = grad - torch.exp(lr) * grad.sum(-1, keepdim=True)
    g_q = where(support, w * g_m, 0.0) if ctx.needs_input_grad[1] else None
    g_p = where(support, (1.0 - w) * g_m, 0.0) if ctx.needs_input_grad[0] else None
    return g_p, g_q, None, None
