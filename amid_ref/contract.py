"""The AMiD contract, public: what every implementation agrees on.

The records live in :mod:`amid_ref._specs` (one :class:`DivergenceSpec` per divergence, with
its :class:`Param` rules, and the validated :class:`Objective`); the shared input rules in
:mod:`amid_ref._validation`. This module re-exports them under one public name, the one the
sibling packages (``gpu``, ``proofs_check``) and user code import: a record or a check is
written once, here, and read by all three implementations (``amid_ref``,
:mod:`amid_ref.precise`, ``gpu``).

Examples
--------
>>> from amid_ref.contract import SPECS, Objective
>>> Objective.of(alpha=-5.0, lam=0.1, divergence="js").params["beta"]
0.5
>>> [p.name for p in SPECS["ab"].params]
['alpha', 'beta']
"""

from __future__ import annotations

from amid_ref import _sparse, _specs
from amid_ref._loss import _sparse_pair as sparse_pair
from amid_ref._sparse import *  # noqa: F403 (the sparse-teacher checks, all of them)
from amid_ref._specs import *  # noqa: F403 (the records and checks, all of them)
from amid_ref._validation import (
    NORMALIZATION_TOL,
    check_vocabulary_axis,
    empty_vocabulary_message,
    temperature_overflow_message,
)

#: Every record and check of :mod:`amid_ref._specs` and :mod:`amid_ref._sparse`, the shared
#: messages, and the leftover policies' pair (:func:`sparse_pair`, MATH.md's table).
__all__ = [
    *_specs.__all__,
    *_sparse.__all__,
    "NORMALIZATION_TOL",
    "check_vocabulary_axis",
    "empty_vocabulary_message",
    "sparse_pair",
    "temperature_overflow_message",
]
