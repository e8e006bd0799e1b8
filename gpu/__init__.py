"""Batched, memory-efficient torch AMiD losses, held to :mod:`amid_ref` in float64.

The public names mirror :mod:`amid_ref` (torch order: student first):

* :func:`log_alpha_mixture` -- log of the normalized α-mixture (the assistant r);
* :func:`divergence` -- the divergences of the reference registry, reduced over a dim;
* :func:`amid_loss` / :class:`AMiDLoss` -- the distillation loss on logits of shape
  (..., V), chunked, with a closed-form gradient in the student's dtype.

Runs on CUDA when the tensors live there and on CPU otherwise; ``python -m gpu.bench``
measures time and peak memory against the textbook autograd implementation.
"""

from gpu._divergences import GPU_DIVERGENCES, divergence
from gpu._loss import AMiDLoss, amid_loss, default_chunk_size
from gpu._mixture import log_alpha_mixture
from gpu._validation import ORDERS
from gpu.accuracy import kernel_accuracy

#: Divergence names implemented by the gpu package (the reference's, without ``"f"``).
DIVERGENCES: tuple[str, ...] = tuple(GPU_DIVERGENCES)

__all__ = [
    "DIVERGENCES",
    "ORDERS",
    "AMiDLoss",
    "amid_loss",
    "default_chunk_size",
    "divergence",
    "kernel_accuracy",
    "log_alpha_mixture",
]
