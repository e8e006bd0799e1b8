r"""AMiD distillation in the Hugging Face trainers (optional extra ``hf``: transformers, trl).

The pieces, each usable alone:

* :func:`amid_compute_loss` -- the loss of one batch of causal-LM inputs for a student and a
  teacher model: the causal shift, the label mask, the teacher in eval/no_grad, the fused
  lm_head path when both models expose their output embeddings, an optional cross-entropy
  mix, and the division by ``num_items_in_batch`` (the trainer's token count over all
  gradient-accumulation micro-batches);
* :func:`collate_topk` and :func:`teacher_topk_of` -- a cached or served teacher: its
  top-k ``(indices, logprobs)`` as dataset columns (:data:`TOPK_COLUMNS` by default),
  padded across a batch, taken by :func:`amid_compute_loss` with ``teacher_model=None``
  and by :class:`AMiDTrainer` with ``teacher_topk_columns`` (no teacher model in memory);
* a *criterion*: a :class:`gpu.AMiDLoss`, a :class:`gpu.AMiDFusedLinearLoss`, a preset
  (``gpu.presets.get("taid", t=0.4)``, ``gpu.presets.get("kd")``, ...) or its module form
  :class:`gpu.presets.PresetLoss`: taken everywhere below;
* :class:`AMiDSchedule` -- a λ (and α) schedule as a ``TrainerCallback`` whose state is
  written into every checkpoint's ``trainer_state.json`` (``ExportableState``); for a
  preset λ is its own parameter (TAID's t, GKD's β);
* :class:`AMiDConfig` -- the objective as a dataclass that ``HfArgumentParser`` fills from
  the command line (``--alpha -5 --lam 0.1 --divergence kl``);
* :class:`AMiDTrainer` (a ``transformers.Trainer``) and :func:`amid_gkd_trainer` (TRL's
  ``GKDTrainer`` with its loss replaced), through the mixin :class:`AMiDTrainerMixin`,
  which logs α, λ and the KD and CE terms at every logging step;
* ``python -m gpu.hf.train`` -- a training script built on them (:mod:`gpu.hf.train`).

Labels. The entry points of this package default to Hugging Face's *unshifted* causal-LM
labels (``labels[:, t]`` is token t, predicted at position t − 1; ``-100`` where there is
no target): the default criterion, a preset passed as it is and :class:`AMiDConfig`'s
criterion have ``shift_labels=True``. An :class:`gpu.AMiDLoss` keeps the torch convention
it was built with (``shift_labels=False`` by default: ``labels[:, t]`` is the target of
position t); labels that contradict the criterion's convention in a way that ``input_ids``
shows are refused with a ``ValueError`` at the first batch.

The loss of a batch is

.. math::

    L = \frac{1}{N}\Big(\sum_{(b,t)\in\mathcal V} \sum_k w_k D_k\big(p_{b,t}, q_{b,t}, r_{b,t}\big)
        + w_{\mathrm{CE}}\sum_{(b,t)\in\mathcal V} -\log q_{b,t}(y_{b,t+1})\Big),\quad
    \mathcal V = \{(b, t) : y_{b,t+1} \ne -100\},

with N = ``num_items_in_batch`` when the trainer passes it (the count of valid positions
over every micro-batch of the optimizer step, so that gradient accumulation sums to the
same gradient as one large batch), else :math:`|\mathcal V|` of this batch; one term of
weight 1 for an AMiD criterion, a preset's terms for a preset.

Gradient accumulation. ``transformers.Trainer`` divides the returned loss by the number of
accumulation steps unless it was already normalized by ``num_items_in_batch``
(``loss_is_scaled_for_ga``). A loss that takes the *mean* over its own micro-batch and is
then declared scaled is counted twice; one that takes the mean and is divided again weighs
micro-batches equally instead of tokens. :class:`AMiDTrainer` sums over the micro-batch,
divides by ``num_items_in_batch`` and says so; the tests check that accumulation 2 gives the
gradient of accumulation 1 on the same tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpu.hf._compute import (
    TOPK_COLUMNS,
    amid_compute_loss,
    collate_topk,
    lm_head_of,
    teacher_topk_of,
)
from gpu.hf._config import AMiDConfig
from gpu.hf._mixin import AMiDTrainerMixin, amid_gkd_trainer
from gpu.hf._schedule import AMiDSchedule

if TYPE_CHECKING:  # imported on first access (transformers is an optional extra)
    from gpu.hf._trainer import AMiDTrainer

__all__ = [
    "TOPK_COLUMNS",
    "AMiDConfig",
    "AMiDSchedule",
    "AMiDTrainer",
    "AMiDTrainerMixin",
    "amid_compute_loss",
    "amid_gkd_trainer",
    "collate_topk",
    "lm_head_of",
    "teacher_topk_of",
]


def __getattr__(name: str):
    if name == "AMiDTrainer":
        # optional: transformers (the hf extra) is imported on first use of AMiDTrainer
        from gpu.hf._trainer import AMiDTrainer

        globals()["AMiDTrainer"] = AMiDTrainer
        return AMiDTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
