"""Helpers of the numeric cross-checks: concrete inputs, exact evaluation of SymPy
expressions in mpmath, and comparisons through the project's one tolerance table.

The float64 inputs handed to :mod:`amid_ref` are converted *exactly* to mpmath numbers, and the
SymPy expression of the claim is evaluated at 50 significant digits, so a mismatch measures
the implementation, not the rounding of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mpmath as mp
import numpy as np
import sympy as sp

from amid_ref.tolerances import assert_within, tolerance
from proofs_check._core import ClaimFailed

__all__ = [
    "ALPHAS_FINITE",
    "ALPHAS_WITH_INF",
    "DPS",
    "LAMS",
    "check",
    "check_log",
    "distribution_pairs",
    "log_pairs",
    "mp_function",
    "mp_grad",
    "mp_softmax",
    "mp_values",
    "rng",
]

#: Working precision (significant digits) of the exact evaluations.
DPS = 50

#: α values of the cross-checks: the special cases, both sides of α = ±1, large |α|.
ALPHAS_FINITE: tuple[float, ...] = (
    -1e3,
    -7.0,
    -5.0,
    -3.0,
    -1.0 - 1e-7,
    -1.0,
    -1.0 + 1e-7,
    0.0,
    0.5,
    1.0 - 1e-9,
    1.0,
    1.0 + 1e-9,
    2.0,
    3.0,
    9.0,
    1e3,
)
ALPHAS_WITH_INF: tuple[float, ...] = (-np.inf, *ALPHAS_FINITE, np.inf)

#: λ values strictly inside (0, 1), including values 1e-6 from the ends.
LAMS: tuple[float, ...] = (1e-6, 0.1, 0.25, 0.5, 0.9, 1.0 - 1e-6)


def rng(seed: int) -> np.random.Generator:
    """A fixed-seed generator: every cross-check is reproducible."""
    return np.random.default_rng(seed)


def log_pairs(n: int, seed: int, spread: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of log-arguments ``(log a, log b)``, uniform in ``[-spread, spread]``,
    plus a few pinned pairs (equal arguments, a ratio of 1e±1, huge spread)."""
    g = rng(seed)
    la = g.uniform(-spread, spread, n)
    lb = g.uniform(-spread, spread, n)
    pinned_a = np.array([0.0, -2.5, 3.0, -spread, 1.0])
    pinned_b = np.array([0.0, -2.5, 3.0 - np.log(10.0), spread, 1.0 + 1e-9])
    return np.concatenate([la, pinned_a]), np.concatenate([lb, pinned_b])


def distribution_pairs(
    rows: int, vocab: int, seed: int, scale: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Teacher and student logits of shape ``(rows, vocab)`` (normal times ``scale``) and
    their softmax distributions (strictly positive): ``(t, s, p, q)``."""
    g = rng(seed)
    t = g.normal(size=(rows, vocab)) * scale
    s = g.normal(size=(rows, vocab)) * scale
    return t, s, _softmax(t), _softmax(s)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def mp_function(expr, symbols: Sequence[sp.Symbol]) -> Callable:
    """``expr`` as a function of ``symbols`` evaluated with mpmath (at the caller's
    precision)."""
    return sp.lambdify(tuple(symbols), expr, modules="mpmath")


def mp_values(func: Callable, *arrays, dps: int = DPS) -> np.ndarray:
    """Evaluate ``func`` elementwise over the broadcast float64 ``arrays`` at ``dps``
    digits, converting each input exactly; returns float64."""
    arrs = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in arrays])
    out = np.empty(arrs[0].shape, dtype=np.float64)
    with mp.workdps(dps):
        for idx in np.ndindex(out.shape):
            value = func(*[mp.mpf(float(a[idx])) for a in arrs])
            if isinstance(value, mp.mpc):
                if abs(value.imag) > abs(value) * mp.mpf(10) ** (-dps + 5):
                    raise ClaimFailed(f"exact value is complex ({value}) at {idx}")
                value = value.real
            out[idx] = float(value)
    return out


def mp_softmax(logits: Sequence) -> list:
    """Softmax at the working precision of a row of logits: float64 values (converted
    exactly) or mpf values (kept as they are, e.g. when mpmath perturbs them)."""
    xs = [x if isinstance(x, mp.mpf) else mp.mpf(float(x)) for x in logits]
    top = max(xs)
    es = [mp.exp(x - top) for x in xs]
    total = mp.fsum(es)
    return [e / total for e in es]


def mp_grad(func: Callable[[list], object], point: Sequence[float], dps: int = DPS) -> np.ndarray:
    """Gradient of a scalar mpmath function of a row of float64 numbers, by mpmath's
    high-precision numerical differentiation (independent of any closed form)."""
    with mp.workdps(dps):
        x0 = [mp.mpf(float(v)) for v in point]
        out = []
        for j in range(len(x0)):

            def along(h, j=j):
                x = list(x0)
                x[j] = x[j] + h
                return func(x)

            out.append(float(mp.diff(along, 0)))
    return np.array(out)


def check(got, want, quantity: str, what: str) -> None:
    """Compare with the ``("reference", quantity, "float64")`` tolerance of
    :mod:`amid_ref.tolerances`."""
    assert_within(got, want, tolerance("reference", quantity, "float64"), what=what)


def check_log(got_log, want_log, what: str) -> None:
    """Compare logarithms of positive quantities with the log-mixture tolerance
    (relative error ``1e-12·max(1, |log x|)`` of ``x``)."""
    assert_within(got_log, want_log, tolerance("reference", "log_mixture", "float64"), what=what)
