r"""Elementwise functions whose accuracy must survive ``torch.compile``.

Inductor's CPU code generator (torch 2.13) lowers ``torch.expm1`` in its vectorized
loops to ``exp(x) - 1``, which cancels for small ``|x|``: the relative error is about
:math:`2^{-24}/|x|` in float32, 100 % at :math:`|x| = 10^{-7}`; the compiled AMiD kernel
then lost every digit of KL(p‖r) for p ≈ q (student logits within 1e-4 of the teacher's,
float32, against amid_ref on the same inputs: off by 170 % against 0.14 % eager). The
kernel's error is measured by ``python -m gpu.accuracy --compile``.

While ``torch.compile`` traces, :func:`expm1` is therefore formed as

.. math::

    \operatorname{expm1}(x) = \frac{2\tanh(x/2)}{1 - \tanh(x/2)} \quad (x \le 1),
    \qquad e^x - 1 \quad (x > 1),

exact to a few ulps: for :math:`x \le 1`, :math:`\tanh(x/2) \le 0.4622`, so
:math:`1 - \tanh(x/2) \ge 0.53` does not cancel (and tends to 2 as x → −∞, giving −1);
for :math:`x > 1`, :math:`e^x \ge e` and subtracting 1 loses less than one bit. Eager
code calls ``torch.expm1`` itself.

Selects. On CPU ``torch.where`` and ``masked_fill_`` branch on each entry: with a mask
that changes at random they cost 920 µs and 190 µs for 2^18 and 2^16 float32 entries
(torch 2.13, one thread), where a blend of the bits, ``b ^ ((a ^ b) & mask)``, costs 160
and 61 µs. :func:`where` and :func:`masked_fill_` blend from :data:`_BLEND_MIN` entries on
(eager CPU, float32 or float64, operands of the condition's shape); below it the blend's
five passes and the checks around them cost more than the branches (28 µs against 2.5 µs
at 384 entries, 44 against 28 at 2^15), and torch's own select runs. Both give the same
bits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch

__all__ = [
    "Shared",
    "all_",
    "any_",
    "bounds",
    "compiling",
    "exp_of",
    "expm1",
    "expm1_",
    "known_exps",
    "masked_fill_",
    "note_exp",
    "side",
    "surely_above",
    "surely_nonzero",
    "told",
    "where",
]


def compiling() -> bool:
    """Whether ``torch.compile`` is tracing the caller (its branches must not read tensors)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def _expm1_traced(x: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(x * 0.5)
    near = (t + t) / (1.0 - t)
    return torch.where(x > 1.0, torch.exp(x) - 1.0, near)


def expm1(x: torch.Tensor) -> torch.Tensor:
    """``torch.expm1(x)``, accurate also when traced by ``torch.compile`` (module docstring)."""
    if compiling():
        return _expm1_traced(x)
    return torch.expm1(x)


def expm1_(x: torch.Tensor) -> torch.Tensor:
    """In-place :func:`expm1` (a new tensor while ``torch.compile`` traces)."""
    if compiling():
        return _expm1_traced(x)
    return x.expm1_()


_BITS = {torch.float32: torch.int32, torch.float64: torch.int64}
#: Entries from which a select blends bits rather than branch (module docstring).
_BLEND_MIN = 1 << 15


def _blendable(cond: torch.Tensor, *xs) -> bool:
    return (
        cond.device.type == "cpu"
        and cond.numel() >= _BLEND_MIN
        and cond.dtype == torch.bool
        and not compiling()
        and all(
            isinstance(x, torch.Tensor)
            and x.dtype in _BITS
            and x.shape == cond.shape
            and x.device == cond.device
            for x in xs
        )
        and len({x.dtype for x in xs}) == 1
    )


def _mask(cond: torch.Tensor, ints: torch.dtype) -> torch.Tensor:
    """All bits set where ``cond`` holds, clear elsewhere, in ``ints``. Through an int8 view of
    the booleans (0 or 1): on CPU, bool → int32 conversion is about 3× slower than int8 → int32."""
    return cond.view(torch.int8).to(ints).neg_()


def any_(cond: torch.Tensor) -> bool:
    """``bool(cond.any())`` for a boolean tensor, through an int8 view of it: on CPU
    (torch 2.13) ``Tensor.any`` of a bool tensor is about 70× slower than the maximum of
    its int8 view (290 µs against 4 µs for 2^18 entries). ``True`` while ``torch.compile``
    traces (reading the tensor would break the graph): the callers then form the branch
    for the entries that take it, as the branch-free kernel does."""
    if compiling():
        return True
    if cond.dtype != torch.bool or cond.numel() == 0:
        return bool(cond.any())
    return bool(cond.view(torch.int8).max())


def all_(cond: torch.Tensor) -> bool:
    """``bool(cond.all())`` for a boolean tensor, through an int8 view (as :func:`any_`);
    ``False`` while ``torch.compile`` traces."""
    if compiling():
        return False
    if cond.dtype != torch.bool or cond.numel() == 0:
        return bool(cond.all())
    return bool(cond.view(torch.int8).min())


def bounds(x: torch.Tensor) -> tuple[float, float] | None:
    """Eager CPU only: ``(min, max)`` of ``x`` (one vectorized ``aminmax``; NaN for both
    where an entry is NaN, so that every comparison with them is false), so that a caller
    can tell that a mask holds nowhere or everywhere before forming it; ``None`` where
    traced, not on CPU or empty. On CPU (torch 2.13, float32, one thread) a comparison that
    makes a boolean tensor costs about 6× an ``aminmax`` (170 µs against 30 µs for 2^18
    entries), and ``masked_fill_`` with it 3× more again."""
    if x.device.type != "cpu" or compiling() or x.numel() == 0:
        return None
    lo, hi = torch.aminmax(x)
    return float(lo), float(hi)


def surely_above(x: torch.Tensor, value: float) -> bool:
    """Eager CPU only: ``True`` when every entry of ``x`` is above ``value`` (one ``amin``),
    so that the caller need not form the mask of the others; ``False`` means *unknown*
    (traced, not on CPU, empty, some entry at or below ``value``, or a NaN, which ``amin``
    propagates). See :func:`bounds`."""
    if x.device.type != "cpu" or compiling() or x.numel() == 0:
        return False
    return bool(x.amin() > value)


def surely_nonzero(x: torch.Tensor) -> bool:
    """Eager CPU only: ``True`` when no entry of ``x`` is ±0 (:func:`bounds` of one sign,
    else one ``amin`` of ``|x|``); ``False`` means *unknown*, as :func:`surely_above`."""
    b = bounds(x)
    if b is None:
        return False
    if b[0] > 0.0 or b[1] < 0.0:
        return True
    return surely_above(x.abs(), 0.0)


def told(x: torch.Tensor, lo: float, hi: float, value: bool, form: Callable[[], torch.Tensor]):
    """``(mask, its side)`` of a condition on ``x`` that is ``value`` wherever
    ``lo ≤ x ≤ hi``: where :func:`bounds` put every entry there (eager CPU), ``(None,
    value)`` without forming the mask; else ``form()`` and its :func:`side`."""
    b = bounds(x)
    if b is not None and lo <= b[0] and b[1] <= hi:
        return None, value
    mask = form()
    return mask, side(mask)


def side(cond: torch.Tensor) -> bool | None:
    """Eager CPU only: ``True`` where ``cond`` holds everywhere, ``False`` where nowhere,
    so that the caller forms only the branch a ``where`` on it would pick (the same bits,
    the other branch's passes spared); ``None`` where mixed, traced or not on CPU."""
    if cond.device.type != "cpu" or compiling() or cond.dtype != torch.bool:
        return None
    if not any_(cond):
        return False
    return True if all_(cond) else None


_UNSET = object()


class Shared:
    """A boolean condition that several :func:`where` calls share: its :func:`side` and its
    integer masks are formed once (eager CPU), where each call would form them again (the
    mask's conversion from the booleans is two passes). Pass it in place of the tensor."""

    __slots__ = ("_masks", "_side", "cond")

    def __init__(self, cond: torch.Tensor):
        self.cond = cond
        self._side = _UNSET
        self._masks: dict = {}

    def side(self) -> bool | None:
        if self._side is _UNSET:
            self._side = side(self.cond)
        return self._side

    def mask(self, ints: torch.dtype) -> torch.Tensor:
        """All bits set where the condition holds (read only: callers must not write it)."""
        if ints not in self._masks:
            self._masks[ints] = _mask(self.cond, ints)
        return self._masks[ints]


def _uniform(cond: torch.Tensor, a, b, out: torch.Tensor | None, like: torch.Tensor,
             shared: Shared | None = None):  # fmt: skip
    """``where(cond, a, b)`` where ``cond`` is all False or all True (eager CPU only): the
    chosen operand itself, copied (callers write into the result), without the blend's five
    passes; ``None`` where ``cond`` is mixed. Bit-exact: the blend would give these bits."""
    taken = side(cond) if shared is None else shared.side()
    if taken is None:
        return None
    pick = a if taken else b
    if out is not None:
        if pick is not out:
            out.copy_(pick) if isinstance(pick, torch.Tensor) else out.fill_(pick)
        return out
    if isinstance(pick, torch.Tensor):
        return pick.clone(memory_format=torch.contiguous_format)
    return torch.full_like(like, pick, memory_format=torch.contiguous_format)


def _as_tensor(x, like: torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.full_like(like, x)


def where(
    cond: torch.Tensor | Shared, a, b, *, out: torch.Tensor | None = None, spend_a: bool = False
) -> torch.Tensor:
    """``torch.where(cond, a, b)`` (bit-exact; branch-free on CPU, module docstring). A
    number for ``a`` or ``b`` takes the other operand's dtype, as ``torch.where`` does
    with a floating tensor. ``cond`` may be a :class:`Shared` condition. ``spend_a=True``
    (with ``out=b``): ``a`` is a temporary the caller gives up, and the blend works in it
    rather than in a new tensor."""
    shared = cond if isinstance(cond, Shared) else None
    if shared is not None:
        cond = shared.cond
    like = a if isinstance(a, torch.Tensor) else b
    tensors = [x for x in (a, b, out) if isinstance(x, torch.Tensor)]
    if isinstance(like, torch.Tensor) and _blendable(cond, *tensors):
        uniform = _uniform(cond, a, b, out, like, shared)
        if uniform is not None:
            return uniform
    if out is None and isinstance(like, torch.Tensor) and _blendable(cond, like):
        # a zero on one side (+0.0: all bits clear) is a mask of the other's bits
        if not isinstance(b, torch.Tensor) and b == 0.0 and str(b) != "-0.0":
            ints = _BITS[a.dtype]
            if shared is not None:
                return torch.bitwise_and(shared.mask(ints), a.contiguous().view(ints)).view(a.dtype)
            return _mask(cond, ints).bitwise_and_(a.contiguous().view(ints)).view(a.dtype)
        if not isinstance(a, torch.Tensor) and a == 0.0 and str(a) != "-0.0":
            ints = _BITS[b.dtype]
            mask = cond.view(torch.int8).to(ints).sub_(1)  # all ones where the condition fails
            return mask.bitwise_and_(b.contiguous().view(ints)).view(b.dtype)
    if isinstance(like, torch.Tensor):
        a_t, b_t = _as_tensor(a, like), _as_tensor(b, like)
        if _blendable(cond, a_t, b_t) and (out is None or _blendable(cond, out)):
            ints = _BITS[a_t.dtype]
            mask = _mask(cond, ints) if shared is None else shared.mask(ints)
            ai, bi = a_t.contiguous().view(ints), b_t.contiguous().view(ints)
            if out is b_t and b_t.is_contiguous():  # b ^= (a ^ b) & mask: no copy
                if spend_a and a_t is a and a.is_contiguous():
                    bi.bitwise_xor_(ai.bitwise_xor_(bi).bitwise_and_(mask))
                else:
                    bi.bitwise_xor_(torch.bitwise_xor(ai, bi).bitwise_and_(mask))
                return out
            blended = torch.bitwise_xor(ai, bi).bitwise_and_(mask).bitwise_xor_(bi)
            result = blended.view(a_t.dtype)
            if out is not None:
                return out.copy_(result)
            return result
    if out is not None:
        return torch.where(cond, a, b, out=out)
    return torch.where(cond, a, b)


def masked_fill_(x: torch.Tensor, cond: torch.Tensor, value: float) -> torch.Tensor:
    """``x.masked_fill_(cond, value)`` (bit-exact; branch-free on CPU for a same-shape mask)."""
    if _blendable(cond, x) and x.is_contiguous():
        if not any_(cond):  # nothing to fill: the blend's passes spared
            return x
        ints = _BITS[x.dtype]
        xi = x.view(ints)
        mask = _mask(cond, ints)
        if value == 0.0 and str(value) != "-0.0":
            return xi.bitwise_and_(mask.bitwise_not_()).view(x.dtype)
        fill = torch.full_like(x, value).view(ints)
        xi.bitwise_xor_(fill.bitwise_xor_(xi).bitwise_and_(mask))
        return x
    return x.masked_fill_(cond, value)


# --- exponentials already known -------------------------------------------------------------

_KNOWN = threading.local()


@contextmanager
def known_exps():
    r"""Within it (eager, in this thread), :func:`note_exp` records how to form ``e^x`` of a
    log-distribution without an ``exp`` pass, and :func:`exp_of` uses it. A kernel that
    normalizes by the maximum and ``log1p`` of the other entries' sum
    (:mod:`gpu._torch_kernel`) has formed :math:`e^{x_j - M}` for that sum already:
    :math:`e^{\log q_j} = e^{x_j - M}\,e^{-\operatorname{log1p}(S_o)}`, one product (a
    cheap pass) where ``exp`` is the costliest elementwise pass on CPU (torch 2.13, float32,
    one thread, 8 × 32000: 215 µs against 45 µs). The product is the softmax to a few ulps,
    where ``exp(log q)`` carries the rounding of log q (an ulp of |log q|, relative)."""
    before = getattr(_KNOWN, "table", None)
    _KNOWN.table = {}
    try:
        yield
    finally:
        _KNOWN.table = before


def note_exp(x: torch.Tensor, e: torch.Tensor, scale: torch.Tensor) -> None:
    """Record ``e ⊙ scale`` (``scale`` per row, keepdim) as ``e^x`` within
    :func:`known_exps` (nothing outside it, or while traced). The record holds while ``x``
    is not written to (its version counter is checked); ``e`` must not be written to."""
    table = getattr(_KNOWN, "table", None)
    if table is None or compiling():
        return
    table[id(x)] = (x, x._version, e, scale)


def exp_of(x: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.exp(x)`` (times ``times``, a per-row factor, keepdim, where given), a new
    tensor: from :func:`note_exp`'s record of ``x`` where there is one (one product, no
    ``exp`` pass), else ``torch.exp``."""
    table = getattr(_KNOWN, "table", None)
    if table:
        entry = table.get(id(x))
        if entry is not None and entry[0] is x and entry[1] == x._version:
            return entry[2] * (entry[3] if times is None else entry[3] * times)
    return torch.exp(x) if times is None else torch.exp(x).mul_(times)
