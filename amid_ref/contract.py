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

from amid_ref._specs import (
    DIVERGENCES,
    IMPLEMENTATIONS,
    ORDERS,
    REQUIRED,
    SPECS,
    DivergenceSpec,
    Objective,
    Param,
    ParameterError,
    alpha_grid,
    check_alpha,
    check_bool,
    check_lam,
    check_order,
    check_real,
    check_temperature,
    get_spec,
    lambda_grid,
    order_arguments,
    resolve_params,
)
from amid_ref._validation import NORMALIZATION_TOL, temperature_overflow_message

__all__ = [
    "DIVERGENCES",
    "IMPLEMENTATIONS",
    "NORMALIZATION_TOL",
    "ORDERS",
    "REQUIRED",
    "SPECS",
    "DivergenceSpec",
    "Objective",
    "Param",
    "ParameterError",
    "alpha_grid",
    "check_alpha",
    "check_bool",
    "check_lam",
    "check_order",
    "check_real",
    "check_temperature",
    "get_spec",
    "lambda_grid",
    "order_arguments",
    "resolve_params",
    "temperature_overflow_message",
]
