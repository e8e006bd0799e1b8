r"""Known-wrong formulas ("mutants"), each written once, for the checks that must catch them.

The conformance battery, the tests, notebook 04 and ``python -m gpu.bench`` all need the
same textbook formulas that the reference deliberately does *not* use; they import them from
here instead of writing their own copies. Nothing in :mod:`amid_ref` computes with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["naive_log_alpha_mean"]


def naive_log_alpha_mean(
    log_p: Any,
    log_q: Any,
    alpha: float,
    lam: float,
    *,
    logaddexp: Callable[[Any, Any], Any] = np.logaddexp,
    rnd: Callable[[Any], Any] | None = None,
) -> Any:
    r"""The textbook log α-mean, wrong near α = 1:

    .. math::

        \log m_\alpha = \frac1\beta\,\mathrm{logaddexp}\big(\log\lambda + \beta\log p,\
            \log(1-\lambda) + \beta\log q\big),\qquad \beta = \frac{1-\alpha}{2}.

    The bracket is O(β) while its rounding error is O(eps·|log λ|), so the relative error is
    eps/|β| (whole nats in bfloat16 at α = 1 ± 1e-3); undefined at α = 1 (β = 0) and α = ±∞.

    Parameters
    ----------
    log_p, log_q : array or tensor, shape (..., V)
        Log-probabilities (NumPy arrays or torch tensors: the arithmetic stays in their dtype).
    alpha, lam : float
        Finite α ≠ 1 and λ ∈ [0, 1].
    logaddexp : callable
        The backend's ``logaddexp`` (``numpy.logaddexp`` or ``torch.logaddexp``).
    rnd : callable, optional
        Applied to every intermediate result, to evaluate the formula in a lower precision
        (e.g. rounding to bfloat16).

    Returns
    -------
    array or tensor
        The unnormalized log-mean, shape (..., V).

    Examples
    --------
    >>> import numpy as np
    >>> from amid_ref._battery._known_wrong import naive_log_alpha_mean
    >>> lp, lq = np.log([0.7, 0.3]), np.log([0.2, 0.8])
    >>> np.round(np.exp(naive_log_alpha_mean(lp, lq, -1.0, 0.5)), 12)  # arithmetic mean
    array([0.45, 0.55])
    """
    r = rnd if rnd is not None else (lambda x: x)
    beta = (1.0 - alpha) / 2.0
    log_lam = math.log(lam) if lam > 0 else -math.inf
    log_mu = math.log1p(-lam) if lam < 1 else -math.inf
    a = r(r(r(log_p) * beta) + log_lam)
    b = r(r(r(log_q) * beta) + log_mu)
    return r(r(logaddexp(a, b)) / beta)
