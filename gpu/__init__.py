"""Batched, memory-efficient torch AMiD losses, held to :mod:`amid_ref` in float64.

The public names mirror :mod:`amid_ref` (torch order: student first):

* :func:`log_alpha_mixture` -- log of the normalized α-mixture (the assistant r);
* :func:`divergence` -- the divergences of the reference registry, reduced over a dim;
* :func:`amid_loss` / :class:`AMiDLoss` -- the distillation loss on logits of shape
  (..., V), chunked, with a closed-form gradient in the student's dtype;
* :func:`amid_fused_linear_loss` / :class:`AMiDFusedLinearLoss` -- the same loss from the
  lm_head inputs (hidden states and weights), never forming the (N, V) logits;
* :func:`vocab_parallel_amid_loss` / :class:`VocabParallelAMiDLoss` -- the same loss on
  logits sharded along the vocabulary over a ``torch.distributed`` group.

Runs on CUDA when the tensors live there and on CPU otherwise; ``python -m gpu.bench``
measures time and peak memory against the textbook autograd implementation (``--fused``:
the fused loss against liger-kernel), ``python -m gpu.device_check`` runs the CUDA checks.
:mod:`gpu.presets` holds the prior methods (the :mod:`amid_ref.presets` registry) and
:mod:`gpu.hf` the Hugging Face ``Trainer`` / TRL integration (optional extra ``hf``).
"""

from amid_ref.contract import SPECS
from gpu import presets
from gpu._divergences import GPU_DIVERGENCES, divergence
from gpu._fused import AMiDFusedLinearLoss, amid_fused_linear_loss
from gpu._loss import AMiDLoss, amid_loss, default_chunk_size
from gpu._mixture import log_alpha_mixture
from gpu._validation import ORDERS
from gpu._vocab_parallel import VocabParallelAMiDLoss, vocab_parallel_amid_loss
from gpu.accuracy import kernel_accuracy

#: Divergence names implemented by the gpu package, in the contract's order: every record of
#: :data:`amid_ref.contract.SPECS` that gpu offers (all but ``"f"``, with the record's reason).
DIVERGENCES: tuple[str, ...] = tuple(
    name for name, spec in SPECS.items() if spec.offered_by("gpu") and name in GPU_DIVERGENCES
)

__all__ = [
    "DIVERGENCES",
    "ORDERS",
    "AMiDFusedLinearLoss",
    "AMiDLoss",
    "VocabParallelAMiDLoss",
    "amid_fused_linear_loss",
    "amid_loss",
    "default_chunk_size",
    "divergence",
    "kernel_accuracy",
    "log_alpha_mixture",
    "presets",
    "vocab_parallel_amid_loss",
]
