"""amid-ref: reference implementation of α-mixture knowledge distillation (AMiD)."""

from amid_ref import presets
from amid_ref._divergences import DIVERGENCES, divergence
from amid_ref._loss import ORDERS, amid_grad, amid_loss
from amid_ref._mixture import (
    alpha_mean,
    alpha_mixture,
    alpha_mixture_normalizer,
    alpha_mixture_weight,
    log_alpha_mean,
    log_alpha_mixture,
)
from amid_ref._version import __version__

__all__ = [
    "DIVERGENCES",
    "ORDERS",
    "__version__",
    "alpha_mean",
    "alpha_mixture",
    "alpha_mixture_normalizer",
    "alpha_mixture_weight",
    "amid_grad",
    "amid_loss",
    "divergence",
    "log_alpha_mean",
    "log_alpha_mixture",
    "presets",
]
