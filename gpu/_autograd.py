"""The rule shared by the gpu package's closed-form backward passes: differentiable once."""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

__all__ = ["_refuse_double_backward"]


def _refuse_double_backward(backward):
    """``once_differentiable`` plus a clear error under ``create_graph=True``.

    Inside a backward, grad mode is on exactly when the caller asked for ``create_graph``;
    ``once_differentiable`` alone would then return a gradient without ``grad_fn`` (a
    silent zero Hessian) whenever the upstream gradient does not itself require grad.
    """
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the gpu AMiD losses are differentiable once: their closed-form backward "
                "is not itself differentiable, so create_graph=True (double backward, "
                "Hessian-vector products, gradgradcheck) is not supported"
            )
        return inner(ctx, *grad_outputs)

    return wrapper
