"""Arbitrary-precision oracle for :mod:`amid_ref` (mpmath).

Every float64 function of :mod:`amid_ref` is checked against the function of the same name
here. To be a real check the oracle shares no code and no numerical identity with the float
modules: it is a literal transcription of the definitions of the docs' mathematics page,
evaluated in mpmath at ``dps`` decimal digits plus enough guard digits to absorb every
cancellation of the literal formulas.

* The α-mean is the power mean :math:`(\\lambda a^\\beta + (1-\\lambda) b^\\beta)^{1/\\beta}`
  with :math:`a^\\beta = e^{\\beta \\log a}` (no log1p/expm1 pivots); its limits
  (α = 1 geometric, α = ∓inf max/min, λ ∈ {0, 1}) are their closed forms at the exact
  parameter values. Near α = 1 the literal formula loses ``log10(1/|β|)`` digits, which are
  added to the working precision.
* Divergences are plain sums (:func:`mpmath.fsum`) of their defining terms; limit members
  (Amari γ = ±1, Rényi ρ = 1, the AB-divergence at a_ = 0, b_ = 0, a_ + b_ = 0) are their
  closed forms at the exact limit parameter and the literal formula elsewhere, with the
  precision raised by the digits the literal formula loses near the limit.
* :func:`amid_grad` differentiates :func:`amid_loss` numerically (central differences with
  a step of about ``10**-(dps/2 + 10)`` at raised precision), an identity independent of the
  analytic gradient of Proposition 3.5.

Inputs are float64 scalars or arrays (Python floats, lists, NumPy arrays), converted exactly
to ``mpf``; object arrays of ``mpf`` are accepted too (tests use them to step below float64
resolution), as are ``mpf`` parameters (α, λ, divergence parameters). Outputs are NumPy
object arrays of ``mpf`` (0-d results are plain ``mpf``); :func:`to_float` rounds them to
float64.

The oracle is written for correctness first: it loops over elements in Python (about
50-100 µs per element and operation) and :func:`amid_grad` costs ``O(V²)`` per row.

The modules mirror :mod:`amid_ref`'s: ``_mixture`` (the α-mean, the mixture, its
normalizer and weight), ``_divergences`` (one row function per divergence of the contract,
registered in ``ROW_FUNCTIONS``, and :func:`divergence`), ``_loss`` (:func:`amid_loss`,
:func:`amid_grad`) and ``_common`` (conversions, parameter checks, the precision constants).
From :mod:`amid_ref` they import only the contract's names, parameter rules and words of
the errors (:mod:`amid_ref._specs`, :mod:`amid_ref._sparse`, the messages of
:mod:`amid_ref._validation`) and the tensor-to-array conversion, no numerical code.
"""

# The precision constants and the kernel table are module attributes outside __all__
# (read by the registry test and by callers tuning the oracle): re-exported by name.
from amid_ref.precise._common import DIVERGENCE_GUARD_DIGITS as DIVERGENCE_GUARD_DIGITS
from amid_ref.precise._common import GRADIENT_GUARD_DIGITS as GRADIENT_GUARD_DIGITS
from amid_ref.precise._common import MEAN_GUARD_DIGITS as MEAN_GUARD_DIGITS
from amid_ref.precise._common import PARAMETER_DPS as PARAMETER_DPS
from amid_ref.precise._common import to_float
from amid_ref.precise._divergences import DIVERGENCES, divergence
from amid_ref.precise._divergences import ROW_FUNCTIONS as ROW_FUNCTIONS
from amid_ref.precise._loss import ORDERS, amid_grad, amid_loss
from amid_ref.precise._mixture import (
    alpha_mean,
    alpha_mixture,
    alpha_mixture_normalizer,
    alpha_mixture_weight,
    log_alpha_mean,
    log_alpha_mixture,
)

__all__ = [
    "DIVERGENCES",
    "ORDERS",
    "alpha_mean",
    "alpha_mixture",
    "alpha_mixture_normalizer",
    "alpha_mixture_weight",
    "amid_grad",
    "amid_loss",
    "divergence",
    "log_alpha_mean",
    "log_alpha_mixture",
    "to_float",
]
