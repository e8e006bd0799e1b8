"""The table of bad (and borderline-accepted) inputs that :mod:`amid_ref`,
:mod:`amid_ref.precise` and :mod:`gpu` are held to, case by case.

Each :class:`BadInput` names one deviation from a valid call of ``amid_loss`` (or
``divergence``) and what every implementation must do with it: accept it
(``exception=None``) or raise ``exception`` with a message matching ``match`` (which names
the parameter). :func:`call` builds the call for one implementation, so that the same
logical input reaches all three: NumPy inputs become float64 torch tensors for :mod:`gpu`,
other objects (lists of bools, torch tensors) are passed unchanged. ``only`` restricts a
case to the implementations that have the parameter (``labels``, ``ignore_index`` and
devices exist only in :mod:`gpu`; the generic ``"f"`` divergence is not offered there).

The command line is an entry point of :mod:`amid_ref` too: a case with
``function="cli"`` runs ``amid-ref ARGV`` (``overrides["argv"]``; ``{tmp}`` stands for a
fresh temporary folder, and ``overrides["files"]`` lists files to create in it first).
The command must exit with code 0 where the case is accepted, and where it is refused
with exit code 2 and its message, on one line of stderr with no traceback, naming the
option; :func:`call` raises :class:`CommandRefused` (a ``ValueError``) with that message.

The ``"gpu.hf"`` rows hold the Hugging Face entry points of :mod:`gpu.hf` to the same
contract: ``function`` names the entry point (:func:`gpu.hf.amid_compute_loss` on two tiny
torch language models and a batch with Hugging Face's labels, :class:`gpu.hf.AMiDSchedule`,
:class:`gpu.hf.AMiDTrainer`, :class:`gpu.hf.AMiDConfig`) and ``overrides`` replace its
keyword arguments; torch objects are described by :class:`_HFObject` and built when the case
runs.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

import amid_ref
from amid_ref import precise, presets
from amid_ref.cli import main

__all__ = ["BAD_INPUTS", "IMPLEMENTATIONS", "BadInput", "CommandRefused", "call"]

IMPLEMENTATIONS = ("amid_ref", "precise", "gpu", "gpu.hf")

_S = [0.3, -0.2, 1.0]
_T = [0.5, 0.1, -0.4]
_P = [0.2, 0.3, 0.5]
_Q = [0.4, 0.4, 0.2]


class _Torch:
    """A torch tensor built at call time (torch is imported only when a case runs)."""

    def __init__(self, values, *, dtype: str = "float64", requires_grad=False, device=None):
        self.values, self.dtype, self.requires_grad, self.device = (
            values,
            dtype,
            requires_grad,
            device,
        )

    def build(self):
        import torch  # heavy (optional: the gpu extra): only for the torch cases

        t = torch.tensor(self.values, dtype=getattr(torch, self.dtype), device=self.device)
        return t.requires_grad_() if self.requires_grad else t


class _HFObject:
    """A torch object of a ``gpu.hf`` case, built when the case runs: ``kind`` is one of
    ``"mse_loss"`` (``torch.nn.MSELoss()``), ``"amid_loss"`` (``gpu.AMiDLoss(**kw)``),
    ``"preset"`` (``gpu.presets.get(**kw)``), ``"reference_preset"``
    (``amid_ref.presets.get(**kw)``), ``"config"`` (``gpu.hf.AMiDConfig(**kw)``), ``"lm"``
    (a tiny torch language model), ``"inputs"`` (a batch; ``kw["labels"]`` picks its labels:
    ``"hf"``, ``"pre_shifted"``, ``"float"``, ``"short"``; ``kw["drop"]`` a key to leave out)."""

    def __init__(self, kind: str, **kw):
        self.kind, self.kw = kind, kw

    def build(self):
        import torch  # heavy (optional: the gpu extra): only for the gpu.hf cases

        import gpu  # heavy (optional: torch, the gpu extra)

        if self.kind == "mse_loss":
            return torch.nn.MSELoss()
        if self.kind == "amid_loss":
            return gpu.AMiDLoss(**self.kw)
        if self.kind == "preset":
            return gpu.presets.get(**self.kw)
        if self.kind == "reference_preset":
            return presets.get(**self.kw)
        if self.kind == "config":
            from gpu import hf  # heavy (optional: torch, the gpu extra)

            return hf.AMiDConfig(**self.kw)
        if self.kind == "lm":
            return _tiny_lm(self.kw.get("seed", 0))
        if self.kind == "inputs":
            return _hf_inputs(**self.kw)
        raise ValueError(self.kind)  # pragma: no cover - a typo in the table


def _tiny_lm(seed: int):
    """A causal LM in plain torch: embedding, one linear layer mixing the previous token,
    ``.logits`` (B, T, V) with V = 7 (no lm_head exposed: the logits path)."""
    import torch  # heavy (optional: the gpu extra)

    class TinyLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            gen = torch.Generator().manual_seed(seed)
            self.embed = torch.nn.Parameter(torch.randn(7, 5, generator=gen))
            self.out = torch.nn.Parameter(torch.randn(5, 7, generator=gen))

        def forward(self, input_ids, attention_mask=None):
            h = self.embed[input_ids]
            h = h + torch.nn.functional.pad(h, (0, 0, 1, 0))[:, :-1]  # the previous token
            return types.SimpleNamespace(logits=h @ self.out)

    return TinyLM()


def _hf_inputs(labels: str = "hf", drop: str | None = None):
    """Two rows of six tokens with Hugging Face's unshifted labels (prompt masked)."""
    import torch  # heavy (optional: the gpu extra)

    ids = torch.tensor([[1, 4, 2, 6, 3, 5], [2, 2, 5, 1, 6, 4]])
    hf_labels = ids.masked_fill(torch.tensor([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]) == 1, -100)
    if labels == "hf":
        lab = hf_labels
    elif labels == "pre_shifted":  # labels[:, t] = token t+1, last column ignored
        lab = torch.full_like(hf_labels, -100)
        lab[:, :-1] = hf_labels[:, 1:]
    elif labels == "float":
        lab = hf_labels.double()
    elif labels == "short":
        lab = hf_labels[:, :-1]
    else:  # pragma: no cover - a typo in the table
        raise ValueError(labels)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": lab}
    if drop is not None:
        out.pop(drop)
    return out


def _scalar_only_f(u):
    return u * math.log(u) if u > 0 else 0.0 * u


def _neg_inf_at_zero_f(u):
    if isinstance(u, mpmath.mpf):
        return mpmath.mpf("-inf") if u == 0 else u * mpmath.log(u)
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(u == 0, -np.inf, u * np.log(np.where(u > 0, u, 1.0)))


@dataclass(frozen=True)
class BadInput:
    """One input case: the deviation from a valid call and the required outcome."""

    id: str
    overrides: dict[str, Any]
    exception: type[Exception] | None
    match: str = ""
    function: str = "amid_loss"
    only: tuple[str, ...] = ("amid_ref", "precise", "gpu")
    extra: dict[str, Any] = field(default_factory=dict)  # gpu-only keyword arguments


_L = "amid_loss"
_D = "divergence"
_CLI = "cli"
_NO_GPU = ("amid_ref", "precise")
_PQ = ("--p", "0.7,0.2,0.1", "--q", "0.1,0.3,0.6")


def _cli(case_id: str, argv, match: str | None, files: tuple[str, ...] = ()) -> BadInput:
    """A command-line case: refused with a message matching ``match``, or accepted."""
    return BadInput(
        case_id,
        {"argv": tuple(argv), "files": files},
        None if match is None else ValueError,
        match or "",
        function=_CLI,
        only=("amid_ref",),
    )


_HF = ("gpu.hf",)
_HF_FUNCTIONS = ("amid_compute_loss", "AMiDSchedule", "AMiDTrainer", "AMiDConfig")


def _hf_rows() -> tuple[BadInput, ...]:
    """The rows of :mod:`gpu.hf`: ``(id, function, overrides, exception, match)``."""
    nan, inf = float("nan"), float("inf")
    L, S, T, C = _HF_FUNCTIONS
    mse = _HFObject("mse_loss")
    rows = [
        # --- amid_compute_loss: accepted ----------------------------------------------------
        ("hf_num_items_int", L, {"num_items_in_batch": 9}, None, ""),
        ("hf_num_items_tensor", L, {"num_items_in_batch": _Torch(9.0)}, None, ""),
        ("hf_ce_weight_tensor", L, {"ce_weight": _Torch(0.5)}, None, ""),
        ("hf_criterion_preset", L, {"criterion": _HFObject("preset", name="taid", t=0.4)},
         None, ""),
        ("hf_criterion_reference_preset", L,
         {"criterion": _HFObject("reference_preset", name="gkd_jsd", beta=0.3)}, None, ""),
        ("hf_criterion_sum_reduction", L, {"criterion": _HFObject("amid_loss", alpha=-5.0,
         lam=0.1, reduction="sum", shift_labels=True)}, None, ""),
        ("hf_labels_pre_shifted_aligned_criterion", L,
         {"inputs": _HFObject("inputs", labels="pre_shifted"),
          "criterion": _HFObject("amid_loss", alpha=0.0, lam=0.1)}, None, ""),
        # --- amid_compute_loss: refused -----------------------------------------------------
        ("hf_num_items_nan", L, {"num_items_in_batch": nan}, ValueError, "num_items_in_batch"),
        ("hf_num_items_negative", L, {"num_items_in_batch": -4}, ValueError,
         "num_items_in_batch"),
        ("hf_num_items_inf", L, {"num_items_in_batch": inf}, ValueError, "num_items_in_batch"),
        ("hf_num_items_zero_with_tokens", L, {"num_items_in_batch": 0}, ValueError,
         "num_items_in_batch"),
        ("hf_num_items_str", L, {"num_items_in_batch": "9"}, TypeError, "num_items_in_batch"),
        ("hf_num_items_bool", L, {"num_items_in_batch": True}, TypeError, "num_items_in_batch"),
        ("hf_ce_weight_nan", L, {"ce_weight": nan}, ValueError, "ce_weight"),
        ("hf_ce_weight_negative", L, {"ce_weight": -1.0}, ValueError, "ce_weight"),
        ("hf_ce_weight_inf", L, {"ce_weight": inf}, ValueError, "ce_weight"),
        ("hf_ce_weight_str", L, {"ce_weight": "0.5"}, TypeError, "ce_weight"),
        ("hf_ce_weight_bool", L, {"ce_weight": True}, TypeError, "ce_weight"),
        ("hf_fused_str", L, {"fused": "yes"}, TypeError, "fused"),
        ("hf_fused_int", L, {"fused": 1}, TypeError, "fused"),
        ("hf_criterion_mse", L, {"criterion": mse}, TypeError, "criterion"),
        ("hf_criterion_name", L, {"criterion": "kd"}, TypeError, "criterion"),
        ("hf_criterion_reduction_none", L,
         {"criterion": _HFObject("amid_loss", alpha=0.0, lam=0.1, reduction="none",
                                 shift_labels=True)}, ValueError, "reduction"),
        ("hf_model_not_module", L, {"model": "gpt2"}, TypeError, "model"),
        ("hf_teacher_not_module", L, {"teacher_model": None}, TypeError, "teacher_model"),
        ("hf_inputs_not_mapping", L, {"inputs": [1, 2, 3]}, TypeError, "inputs"),
        ("hf_inputs_without_ids", L, {"inputs": _HFObject("inputs", drop="input_ids")},
         ValueError, "input_ids"),
        ("hf_labels_float", L, {"inputs": _HFObject("inputs", labels="float")}, TypeError,
         "labels"),
        ("hf_labels_shape", L, {"inputs": _HFObject("inputs", labels="short")}, ValueError,
         "labels"),
        ("hf_labels_double_shift", L, {"inputs": _HFObject("inputs", labels="pre_shifted")},
         ValueError, "double shift"),
        ("hf_labels_unshifted_aligned_criterion", L,
         {"criterion": _HFObject("amid_loss", alpha=0.0, lam=0.1)}, ValueError,
         "shift_labels=True"),
        # --- AMiDSchedule --------------------------------------------------------------------
        ("hf_schedule_lam_constant", S, {"lam": 0.5}, None, ""),
        ("hf_schedule_alpha_constant_inf", S, {"alpha": -inf}, None, ""),
        ("hf_schedule_alpha_from_inf", S, {"alpha": (-inf, 1.0)}, ValueError, "alpha"),
        ("hf_schedule_alpha_nan", S, {"alpha": (nan, 1.0)}, ValueError, "alpha"),
        ("hf_schedule_lam_above_one", S, {"lam": (0.0, 2.0)}, ValueError, "lam"),
        ("hf_schedule_lam_str", S, {"lam": "0.5"}, TypeError, "lam"),
        ("hf_schedule_lam_triple", S, {"lam": (0.0, 0.5, 1.0)}, ValueError, "lam"),
        ("hf_schedule_num_steps_bool", S, {"num_steps": True}, TypeError, "num_steps"),
        ("hf_schedule_num_steps_float", S, {"num_steps": 3.0}, TypeError, "num_steps"),
        ("hf_schedule_num_steps_zero", S, {"num_steps": 0}, ValueError, "num_steps"),
        ("hf_schedule_shape_unknown", S, {"shape": "step"}, ValueError, "shape"),
        # --- AMiDTrainer -----------------------------------------------------------------------
        ("hf_trainer_preset", T, {"criterion": _HFObject("preset", name="kd")}, None, ""),
        ("hf_trainer_criterion_mse", T, {"criterion": mse}, TypeError, "criterion"),
        ("hf_trainer_fused_str", T, {"fused": "yes"}, TypeError, "fused"),
        ("hf_trainer_ce_weight_str", T, {"ce_weight": "0.5"}, TypeError, "ce_weight"),
        ("hf_trainer_ce_weight_nan", T, {"ce_weight": nan}, ValueError, "ce_weight"),
        ("hf_trainer_ce_weight_negative", T, {"ce_weight": -1.0}, ValueError, "ce_weight"),
        ("hf_trainer_schedule_not_schedule", T, {"schedule": {"lam": (0, 1)}}, TypeError,
         "schedule"),
        ("hf_trainer_no_teacher", T, {"teacher_model": None}, TypeError, "teacher_model"),
        ("hf_trainer_ignore_index", T,
         {"criterion": _HFObject("amid_loss", alpha=0.0, lam=0.1, ignore_index=-1,
                                 shift_labels=True)}, ValueError, "ignore_index"),
        ("hf_trainer_config_type", T, {"amid_config": {"alpha": -5.0}}, TypeError,
         "amid_config"),
        ("hf_trainer_config_and_criterion", T,
         {"amid_config": _HFObject("config", alpha=-5.0),
          "criterion": _HFObject("preset", name="kd")}, TypeError, "amid_config"),
        # --- AMiDConfig --------------------------------------------------------------------------
        ("hf_config_taid_schedule", C, {"preset": "taid", "lam": 0.4, "lam_end": 1.0}, None, ""),
        ("hf_config_alpha_neg_inf", C, {"alpha": -inf}, None, ""),
        ("hf_config_preset_unknown", C, {"preset": "taid2"}, ValueError, "preset"),
        ("hf_config_preset_with_order", C, {"preset": "kd", "order": "rp"}, ValueError, "order"),
        ("hf_config_alpha_nan", C, {"alpha": nan}, ValueError, "alpha"),
        ("hf_config_lam_above_one", C, {"lam": 2.0}, ValueError, "lam"),
        ("hf_config_divergence_unknown", C, {"divergence": "kld"}, ValueError, "divergence"),
        ("hf_config_div_params_json", C, {"div_params": "{beta: 1}"}, ValueError, "div_params"),
        ("hf_config_temperature_zero", C, {"kd_temperature": 0.0}, ValueError, "temperature"),
        ("hf_config_temperature_scaling", C, {"kd_temperature_scaling": "T3"}, ValueError,
         "temperature_scaling"),
        ("hf_config_ce_weight_negative", C, {"ce_weight": -1.0}, ValueError, "ce_weight"),
        ("hf_config_lam_end_above_one", C, {"lam_end": 2.0}, ValueError, "lam_end"),
        ("hf_config_alpha_end_from_inf", C, {"alpha": -inf, "alpha_end": 1.0}, ValueError,
         "alpha"),
        ("hf_config_schedule_shape", C, {"lam_end": 1.0, "schedule_shape": "step"}, ValueError,
         "schedule_shape"),
        ("hf_config_schedule_steps_zero", C, {"lam_end": 1.0, "schedule_steps": 0}, ValueError,
         "schedule_steps"),
        ("hf_config_schedule_steps_alone", C, {"schedule_steps": 5}, ValueError,
         "schedule_steps"),
        ("hf_config_fused_str", C, {"fused": "yes"}, TypeError, "fused"),
    ]  # fmt: skip
    return tuple(
        BadInput(case_id, overrides, exc, match, function=function, only=_HF)
        for case_id, function, overrides, exc, match in rows
    )


# The implementations that take a sparse teacher, vocabulary alignment and logit transforms
# (gpu joins when its entry points have them).
_FORM = ("amid_ref", "precise", "gpu")
_LOG = [float(np.log(0.5)), float(np.log(0.2))]  # P_S = 0.7, ε = 0.3


def _topk(indices, logprobs):
    return (np.asarray(indices, dtype=np.int64), np.asarray(logprobs, dtype=np.float64))


def _form_rows() -> tuple[BadInput, ...]:
    """Sparse teacher, vocabulary alignment, logit transforms: ``(id, overrides, exception,
    match)``; a sparse teacher replaces ``teacher_logits`` unless the row gives both."""
    ninf, nan, inf = -np.inf, np.nan, np.inf
    sparse = {"teacher_logits": None}
    rows = [
        # --- configuration, refused -----------------------------------------------------
        ("leftover_unknown", {"leftover": "ghost"}, ValueError, "leftover"),
        ("leftover_not_str", {"leftover": 1}, TypeError, "leftover"),
        ("vocab_alignment_unknown", {"vocab_alignment": "slice"}, ValueError,
         "vocab_alignment"),
        ("temperature_applies_to_unknown", {"temperature_applies_to": "teacher"}, ValueError,
         "temperature_applies_to"),
        ("softcap_zero", {"softcap": 0.0}, ValueError, "softcap"),
        ("softcap_negative_teacher", {"softcap": (30.0, -1.0)}, ValueError, r"softcap\[1\]"),
        ("softcap_nan", {"softcap": nan}, ValueError, "softcap"),
        ("softcap_inf", {"softcap": inf}, ValueError, "softcap"),
        ("softcap_str", {"softcap": "30"}, TypeError, "softcap"),
        ("softcap_bool", {"softcap": True}, TypeError, "softcap"),
        ("softcap_three", {"softcap": (1.0, 2.0, 3.0)}, ValueError, "softcap"),
        ("logit_scale_zero", {"logit_scale": 0.0}, ValueError, "logit_scale"),
        ("logit_scale_negative_student", {"logit_scale": (-2.0, 1.0)}, ValueError,
         r"logit_scale\[0\]"),
        ("logit_scale_inf", {"logit_scale": inf}, ValueError, "logit_scale"),
        # --- sparse teacher, refused ----------------------------------------------------
        ("topk_and_teacher_logits", {"teacher_topk": _topk([0, 1], _LOG)}, ValueError,
         "teacher_logits and teacher_topk"),
        ("teacher_neither", {"teacher_logits": None}, ValueError, "teacher_logits.*teacher_topk"),
        ("topk_not_pair", {**sparse, "teacher_topk": _topk([0, 1], _LOG)[0]}, TypeError,
         "teacher_topk"),
        ("topk_float_indices", {**sparse, "teacher_topk": (np.array([0.0, 1.0]),
         np.array(_LOG))}, TypeError, "teacher_topk indices"),
        ("topk_int_logprobs", {**sparse, "teacher_topk": (np.array([0, 1]),
         np.array([-1, -2]))}, TypeError, "teacher_topk logprobs"),
        ("topk_duplicate", {**sparse, "teacher_topk": _topk([1, 1], _LOG)}, ValueError,
         "teacher_topk.*duplicate"),
        ("topk_out_of_range", {**sparse, "teacher_topk": _topk([0, 3], _LOG)}, ValueError,
         "teacher_topk.*out of range"),
        ("topk_negative_index", {**sparse, "teacher_topk": _topk([-2, 0], _LOG)}, ValueError,
         "teacher_topk.*out of range"),
        ("topk_padded_slot_finite", {**sparse, "teacher_topk": _topk([-1, 0], _LOG)},
         ValueError, "teacher_topk.*padded"),
        ("topk_mass_above_one", {**sparse, "teacher_topk": _topk([0, 1], np.log([0.7, 0.6]))},
         ValueError, "teacher_topk.*above 1"),
        ("topk_k_exceeds_v", {**sparse, "teacher_topk": _topk([0, 1, 2, -1],
         [*np.log([0.2, 0.3, 0.4]), ninf])}, ValueError, "teacher_topk.*exceeds"),
        ("topk_nan_logprob", {**sparse, "teacher_topk": _topk([0, 1], [nan, -1.0])},
         ValueError, "teacher_topk logprobs"),
        ("topk_pos_inf_logprob", {**sparse, "teacher_topk": _topk([0, 1], [inf, -1.0])},
         ValueError, "teacher_topk logprobs"),
        ("topk_shapes_disagree", {**sparse, "teacher_topk": _topk([0, 1], [-1.0, -2.0, -3.0])},
         ValueError, "teacher_topk.*shape"),
        ("topk_leading_shape", {**sparse, "teacher_topk": _topk([[0, 1]], [_LOG])}, ValueError,
         "teacher_topk.*leading shape"),
        ("topk_uniform_full_leftover", {**sparse, "leftover": "uniform",
         "teacher_topk": _topk([0, 1, 2], np.log([0.5, 0.2, 0.1]))}, ValueError,
         "leftover='uniform'"),
        ("topk_renormalize_no_mass", {**sparse, "leftover": "renormalize",
         "teacher_topk": _topk([0, 1], [ninf, ninf])}, ValueError, "leftover='renormalize'"),
        ("topk_temperature_both", {**sparse, "temperature": 2.0,
         "teacher_topk": _topk([0, 1], _LOG)}, ValueError, "temperature_applies_to='student'"),
        ("topk_teacher_softcap", {**sparse, "softcap": 30.0,
         "teacher_topk": _topk([0, 1], _LOG)}, ValueError, "softcap"),
        ("topk_teacher_logit_scale", {**sparse, "logit_scale": (1.0, 2.0),
         "teacher_topk": _topk([0, 1], _LOG)}, ValueError, "logit_scale"),
        ("topk_beyond_v_pad", {**sparse, "vocab_alignment": "pad",
         "teacher_topk": _topk([0, 4], _LOG)}, ValueError, "teacher_topk.*out of range"),
        ("topk_truncate_drops_too_much", {**sparse, "vocab_alignment": "truncate",
         "teacher_topk": _topk([0, 4], _LOG)}, ValueError, "vocab_alignment='truncate'"),
        # --- vocabulary alignment, refused ----------------------------------------------
        ("vocab_mismatch_error", {"teacher_logits": [*_T, 0.2]}, ValueError, "vocab_alignment"),
        ("vocab_truncate_drops_too_much", {"vocab_alignment": "truncate",
         "teacher_logits": [*_T, 3.0]}, ValueError, "vocab_alignment='truncate'.*teacher"),
        ("vocab_truncate_student_drops_too_much", {"vocab_alignment": "truncate",
         "teacher_logits": _T[:2]}, ValueError, "vocab_alignment='truncate'.*student"),
        # --- accepted -------------------------------------------------------------------
        ("leftover_with_dense_teacher", {"leftover": "uniform"}, None, ""),
        ("vocab_pad_same_v", {"vocab_alignment": "pad"}, None, ""),
        ("vocab_pad_teacher_longer", {"vocab_alignment": "pad", "teacher_logits": [*_T, 0.2]},
         None, ""),
        ("vocab_truncate_padding", {"vocab_alignment": "truncate",
         "teacher_logits": [*_T, -40.0]}, None, ""),
        ("softcap_pair_none", {"softcap": (None, 2.0)}, None, ""),
        ("logit_scale_pair", {"logit_scale": (2.0, 0.5)}, None, ""),
        ("temperature_student_only", {"temperature": 2.0, "temperature_applies_to": "student"},
         None, ""),
        ("topk_bucket", {**sparse, "teacher_topk": _topk([2, 0], _LOG)}, None, ""),
        ("topk_renormalize", {**sparse, "leftover": "renormalize",
         "teacher_topk": _topk([2, 0], _LOG)}, None, ""),
        ("topk_uniform", {**sparse, "leftover": "uniform", "teacher_topk": _topk([2, 0], _LOG)},
         None, ""),
        ("topk_padded_slot", {**sparse, "teacher_topk": _topk([1, -1], [-1.0, ninf])}, None, ""),
        ("topk_mass_rounding_above_one", {**sparse,
         "teacher_topk": _topk([0, 1, 2], [*np.log([0.5, 0.2]), float(np.log(0.30001))])},
         None, ""),
        ("topk_full_tiny_leftover_uniform", {**sparse, "leftover": "uniform",
         "teacher_topk": _topk([0, 1, 2], np.log([0.5, 0.2, 0.29999]))}, None, ""),
        ("topk_student_temperature", {**sparse, "temperature": 2.0,
         "temperature_applies_to": "student", "teacher_topk": _topk([0, 1], _LOG)}, None, ""),
        ("topk_student_softcap", {**sparse, "softcap": (2.0, None),
         "teacher_topk": _topk([0, 1], _LOG)}, None, ""),
        ("topk_tensor_indices", {**sparse, "teacher_topk": (_Torch([0, 1], dtype="int64"),
         _Torch(_LOG))}, None, ""),
        ("topk_truncate_padding_id", {**sparse, "vocab_alignment": "truncate",
         "teacher_topk": _topk([0, 4], [float(np.log(0.5)), -30.0])}, None, ""),
    ]  # fmt: skip
    return tuple(BadInput(case_id, o, exc, match, only=_FORM) for case_id, o, exc, match in rows)


BAD_INPUTS: tuple[BadInput, ...] = (
    # --- accepted everywhere -------------------------------------------------------------
    BadInput("alpha_0d_int_array", {"alpha": np.array(1)}, None),
    BadInput("alpha_0d_float_array", {"alpha": np.array(0.5)}, None),
    BadInput("alpha_np_int64", {"alpha": np.int64(2)}, None),
    BadInput("alpha_tensor", {"alpha": _Torch(0.5)}, None),
    BadInput("lam_0d_float_array", {"lam": np.array(0.3)}, None),
    BadInput("lam_tensor", {"lam": _Torch(0.3)}, None),
    BadInput("temperature_tensor", {"temperature": _Torch(2.0)}, None),
    BadInput("temperature_0d_array", {"temperature": np.array(2.0)}, None),
    BadInput("temperature_tiny", {"temperature": 1e-40}, None),
    BadInput(
        "teacher_tensor_requires_grad", {"teacher_logits": _Torch(_T, requires_grad=True)}, None
    ),
    # --- logits ---------------------------------------------------------------------------
    BadInput(
        "student_bool_list", {"student_logits": [True, False, True]}, TypeError, "student_logits"
    ),
    BadInput(
        "teacher_bool_list", {"teacher_logits": [True, False, True]}, TypeError, "teacher_logits"
    ),
    BadInput(
        "student_int_array", {"student_logits": np.array([1, 0, 2])}, TypeError, "student_logits"
    ),
    BadInput("student_nan", {"student_logits": [np.nan, 0.0, 1.0]}, ValueError, "student_logits"),
    BadInput(
        "teacher_pos_inf", {"teacher_logits": [np.inf, 0.0, 1.0]}, ValueError, "teacher_logits"
    ),
    BadInput(
        "student_all_neg_inf", {"student_logits": [-np.inf] * 3}, ValueError, "student_logits"
    ),
    BadInput("shape_mismatch", {"student_logits": [0.0, 1.0]}, ValueError, "shape|V ="),
    # --- scalar parameters ----------------------------------------------------------------
    BadInput("alpha_nan", {"alpha": np.nan}, ValueError, "alpha"),
    # two things wrong: every implementation checks the objective's parameters first
    BadInput(
        "alpha_nan_and_student_nan",
        {"alpha": np.nan, "student_logits": [np.nan, 0.0, 1.0]},
        ValueError,
        "^alpha",
    ),
    BadInput(
        "lam_above_one_and_teacher_shape",
        {"lam": 1.5, "teacher_logits": [0.0, 1.0]},
        ValueError,
        "^lam",
    ),
    BadInput(
        "divergence_unknown_and_student_bool",
        {"divergence": "nope", "student_logits": [True, False, True]},
        ValueError,
        "divergence",
    ),
    BadInput("alpha_str", {"alpha": "1"}, TypeError, "alpha"),
    BadInput("alpha_bool", {"alpha": True}, TypeError, "alpha"),
    BadInput("alpha_bool_array", {"alpha": np.array(True)}, TypeError, "alpha"),
    BadInput("lam_above_one", {"lam": 1.5}, ValueError, "lam"),
    BadInput("lam_negative", {"lam": -0.1}, ValueError, "lam"),
    BadInput("lam_nan", {"lam": np.nan}, ValueError, "lam"),
    BadInput("lam_bool", {"lam": True}, TypeError, "lam"),
    BadInput("lam_vector", {"lam": np.array([0.3, 0.4])}, TypeError, "lam"),
    BadInput("temperature_zero", {"temperature": 0.0}, ValueError, "temperature"),
    BadInput("temperature_negative", {"temperature": -1.0}, ValueError, "temperature"),
    BadInput("temperature_inf", {"temperature": np.inf}, ValueError, "temperature"),
    BadInput("temperature_str", {"temperature": "1"}, TypeError, "temperature"),
    # (logit − max)/T beyond the dtype's range would turn finite logits into masked tokens
    # and change the support (α ≥ 1): refused naming temperature (the oracle computes it)
    BadInput(
        "temperature_overflows_float64",
        {"temperature": 1e-310},
        ValueError,
        r"temperature=1e-310 is too small for student_logits",
        only=("amid_ref", "gpu"),
    ),
    BadInput(
        "temperature_overflows_float32",
        {
            "student_logits": _Torch(_S, dtype="float32"),
            "teacher_logits": _Torch(_T, dtype="float32"),
            "temperature": 1e-300,
        },
        ValueError,
        r"temperature=1e-300 is too small for student_logits.*float32 range",
        only=("gpu",),
    ),
    # --- divergence, order, parameters ----------------------------------------------------
    BadInput("divergence_unknown", {"divergence": "kld"}, ValueError, "divergence"),
    BadInput("divergence_not_str", {"divergence": 3}, TypeError, "divergence"),
    BadInput("order_unknown", {"order": "pq"}, ValueError, "order"),
    BadInput("div_params_unknown", {"div_params": {"beta": 0.5}}, ValueError, "beta"),
    BadInput("div_params_missing", {"divergence": "renyi", "div_params": {}}, ValueError, "order"),
    BadInput("div_params_not_mapping", {"div_params": [("beta", 0.5)]}, TypeError, "div_params"),
    BadInput(
        "ab_param_nan",
        {"divergence": "ab", "div_params": {"alpha": np.nan, "beta": 0.5}},
        ValueError,
        "alpha",
    ),
    BadInput(
        "renyi_order_negative",
        {"divergence": "renyi", "div_params": {"order": -1.0}},
        ValueError,
        "order",
    ),
    BadInput("js_beta_bool", {"divergence": "js", "div_params": {"beta": True}}, TypeError, "beta"),
    BadInput(
        "js_beta_above_one", {"divergence": "js", "div_params": {"beta": 1.5}}, ValueError, "beta"
    ),
    # --- the generic f-divergence (amid_ref and the oracle only) --------------------------
    BadInput(
        "f_scalar_only",
        {"divergence": "f", "div_params": {"f": _scalar_only_f}},
        TypeError,
        r"generator f\b",
        only=("amid_ref",),
    ),
    BadInput(
        "f_returns_neg_inf",
        {
            "divergence": "f",
            "div_params": {"f": _neg_inf_at_zero_f},
            "teacher_logits": [0.5, 0.1, -np.inf],
        },
        ValueError,
        r"generator f\b.*-inf",
        only=_NO_GPU,
    ),
    BadInput(
        "f_not_callable",
        {"divergence": "f", "div_params": {"f": 3.0}},
        TypeError,
        r"\bf\b",
        only=_NO_GPU,
    ),
    # --- divergence() -----------------------------------------------------------------------
    BadInput(
        "divergence_unnormalized",
        {"a": [0.2, 0.3, 0.6]},
        ValueError,
        r"\ba\b.*normalized",
        function=_D,
        only=("amid_ref", "gpu"),
    ),
    BadInput(
        "divergence_negative",
        {"b": [0.6, 0.6, -0.2]},
        ValueError,
        r"\bb\b.*negative",
        function=_D,
        only=("amid_ref", "gpu"),
    ),
    BadInput(
        "divergence_bool_list",
        {"a": [True, False, False]},
        TypeError,
        r"\ba\b",
        function=_D,
        only=("amid_ref", "gpu"),
    ),
    # --- gpu only: labels, ignore_index, devices -------------------------------------------
    BadInput(
        "ignore_index_huge",
        {},
        ValueError,
        "ignore_index",
        only=("gpu",),
        extra={"ignore_index": 2**70, "labels": "int64"},
    ),
    BadInput(
        "ignore_index_beyond_int64",
        {},
        ValueError,
        "ignore_index",
        only=("gpu",),
        extra={"ignore_index": 2**63, "labels": "int64"},
    ),
    BadInput(
        "ignore_index_beyond_int8",
        {},
        ValueError,
        "ignore_index",
        only=("gpu",),
        extra={"ignore_index": 300, "labels": "int8"},
    ),
    BadInput(
        "ignore_index_float",
        {},
        TypeError,
        "ignore_index",
        only=("gpu",),
        extra={"ignore_index": -100.0},
    ),
    BadInput(
        "student_meta_device",
        {"student_logits": _Torch(_S, device="meta")},
        ValueError,
        "student_logits",
        only=("gpu",),
    ),
    BadInput(
        "divergence_unknown_lists_what_gpu_takes",
        {"divergence": "kld"},
        ValueError,
        r"^unknown divergence 'kld'; known: kl, (?!.*\bf\b)",
        only=("gpu",),
    ),
    # --- the command line: list options, output folders ------------------------------------
    _cli("cli_alphas_negative_list", ["mixture", *_PQ, "--alphas", "-5,-1"], None),
    _cli("cli_alphas_negative_infinity", ["mixture", *_PQ, "--alphas", "-inf,0"], None),
    _cli("cli_alphas_not_numbers", ["mixture", *_PQ, "--alphas", "-5,x"], r"--alphas.*'-5,x'"),
    _cli("cli_alphas_empty", ["mixture", *_PQ, "--alphas", ","], r"--alphas"),
    _cli("cli_alphas_nan", ["mixture", *_PQ, "--alphas", "nan"], r"--alphas: NaN"),
    _cli("cli_p_negative", ["mixture", "--p", "-0.1,0.6,0.5", "--q", "0.1,0.3,0.6"], r"\bp\b"),
    _cli("cli_q_not_normalized", ["mixture", "--p", "1,0,0", "--q", "0,0.5,0.6"], r"\bq\b"),
    _cli("cli_lam_negative", ["mixture", *_PQ, "--lam", "-0.1"], r"\blam\b"),
    _cli("cli_mixture_undefined_rows", ["mixture", "--p", "1,0,0", "--q", "0,0.5,0.5"], None),
    _cli("cli_study_alphas_not_numbers", ["study", "--quick", "--alphas", "-1,a"], r"--alphas"),
    _cli("cli_study_lams_negative", ["study", "--quick", "--lams", "-0.1,0.5"], r"lams.*λ"),
    _cli("cli_study_seeds_negative", ["study", "--quick", "--seeds", "-1,2"], r"--seeds.*>= 0"),
    _cli("cli_study_seeds_not_integers", ["study", "--quick", "--seeds", "0.5"], r"--seeds"),
    _cli("cli_alpha_range_one_bound", ["conform", "m:f", "--alpha-range", "-10"], r"--alpha-range"),
    _cli("cli_lam_range_nan", ["conform", "m:f", "--lam-range", "-0.1,nan"], r"--lam-range.*NaN"),
    _cli(
        "cli_verify_out_is_a_file", ["verify", "--out", "{tmp}/f"], r"--out.*not a folder", ("f",)
    ),
    _cli(
        "cli_verify_out_not_empty",
        ["verify", "--out", "{tmp}/d"],
        r"--out.*not empty.*--force",
        ("d/keep.txt",),
    ),
    _cli("cli_study_out_is_a_file", ["study", "--quick", "--out", "{tmp}/f"], r"--out", ("f",)),
    _cli(
        "cli_plot_out_under_a_file",
        ["plot", "normalizer", "--out", "{tmp}/f/sub"],
        r"--out.*cannot create.*--out DIR",
        ("f",),
    ),
    _cli("cli_plot_unknown_figure", ["plot", "nope", "--out", "{tmp}"], r"figure 'nope'"),
    *_hf_rows(),
    *_form_rows(),
)


def _base(function: str) -> dict[str, Any]:
    if function == "amid_compute_loss":
        return {
            "model": _HFObject("lm", seed=0),
            "teacher_model": _HFObject("lm", seed=1),
            "inputs": _HFObject("inputs"),
            "criterion": _HFObject("amid_loss", alpha=0.0, lam=0.1, shift_labels=True),
        }
    if function == "AMiDSchedule":
        return {"lam": (0.0, 1.0)}
    if function == "AMiDTrainer":
        return {"model": _HFObject("lm", seed=0), "teacher_model": _HFObject("lm", seed=1)}
    if function == "AMiDConfig":
        return {}
    if function == _D:
        return {"a": _P, "b": _Q, "name": "kl"}
    return {
        "student_logits": _S,
        "teacher_logits": _T,
        "alpha": 0.5,
        "lam": 0.3,
        "divergence": "kl",
        "order": "pr",
        "div_params": None,
        "temperature": 1.0,
    }


def _materialize(value, *, for_gpu: bool):
    if isinstance(value, (_Torch, _HFObject)):
        return value.build()
    if isinstance(value, dict):
        return {k: _materialize(v, for_gpu=for_gpu) for k, v in value.items()}
    if isinstance(value, tuple):  # a sparse teacher (indices, logprobs): gpu gets int64 ids
        out = []
        for v in value:
            if for_gpu and isinstance(v, np.ndarray) and v.dtype.kind in "iu":
                import torch  # heavy (optional: the gpu extra)

                out.append(torch.tensor(v, dtype=torch.int64))
            else:
                out.append(_materialize(v, for_gpu=for_gpu))
        return tuple(out)
    if for_gpu and isinstance(value, list | np.ndarray):
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            import torch  # heavy (optional: the gpu extra)

            return torch.tensor(arr, dtype=torch.float64)
    return value


class CommandRefused(ValueError):
    """An ``amid-ref`` command of the table exited with code 2; the message is what it
    printed."""


def _run_command(argv: tuple[str, ...], files: tuple[str, ...]) -> str:
    """``amid-ref ARGV`` in this process; stdout when it succeeds, :class:`CommandRefused`
    when it refuses the input (exit code 2, one line on stderr, no traceback)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in files:
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([a.replace("{tmp}", tmp) for a in argv])
            except SystemExit as exc:  # argparse's own errors (usage line, then the error)
                code = exc.code
        text = err.getvalue()
    if code == 0:
        return out.getvalue()
    if "Traceback" in text:
        raise AssertionError(f"amid-ref {' '.join(argv)} printed a traceback:\n{text}")
    lines = [line for line in text.splitlines() if not line.startswith(("usage:", " "))]
    if code != 2 or len(lines) != 1:
        raise AssertionError(f"amid-ref {' '.join(argv)}: exit code {code}, stderr:\n{text}")
    raise CommandRefused(lines[0])


def call(case: BadInput, implementation: str):
    """Run the case's call on one implementation (``"amid_ref"``, ``"precise"``,
    ``"gpu"``) and return its result; exceptions propagate. A command-line case
    (``function="cli"``) returns the command's stdout or raises :class:`CommandRefused`."""
    if case.function == _CLI:
        return _run_command(case.overrides["argv"], case.overrides["files"])
    args = {**_base(case.function), **case.overrides}
    if implementation == "gpu.hf":
        return _call_hf(case.function, {k: _materialize(v, for_gpu=False) for k, v in args.items()})
    for_gpu = implementation == "gpu"
    args = {k: _materialize(v, for_gpu=for_gpu) for k, v in args.items()}
    if implementation == "amid_ref":
        mod = amid_ref
    elif implementation == "precise":
        mod = precise
    else:
        import gpu as mod  # heavy (optional: torch, the gpu extra)
    if case.function == _D:
        a, b, name = args.pop("a"), args.pop("b"), args.pop("name")
        return mod.divergence(a, b, name, **args)
    pos = [
        args.pop(k)
        for k in ("student_logits", "teacher_logits", "alpha", "lam", "divergence", "order")
    ]
    if for_gpu:
        extra = dict(case.extra)
        if extra.get("labels") in ("int64", "int8"):
            import torch  # heavy (optional: the gpu extra)

            leading = tuple(pos[0].shape[:-1]) if hasattr(pos[0], "shape") else ()
            extra["labels"] = torch.zeros(leading, dtype=getattr(torch, extra["labels"]))
        args.update(extra)
    return mod.amid_loss(*pos, **args)


def _call_hf(function: str, args: dict[str, Any]):
    """Run a :mod:`gpu.hf` entry point on the built arguments."""
    from gpu import hf  # heavy (optional: torch, the gpu extra)

    if function == "amid_compute_loss":
        model, teacher = args.pop("model"), args.pop("teacher_model")
        inputs, criterion = args.pop("inputs"), args.pop("criterion")
        return hf.amid_compute_loss(model, teacher, inputs, criterion, **args)
    if function == "AMiDSchedule":
        return hf.AMiDSchedule(**args)
    if function == "AMiDConfig":
        return hf.AMiDConfig(**args)
    if function == "AMiDTrainer":
        import transformers  # heavy (optional: the hf extra)

        with tempfile.TemporaryDirectory() as out:
            training = transformers.TrainingArguments(output_dir=out, use_cpu=True, report_to=[])
            return hf.AMiDTrainer(args=training, **args)
    raise ValueError(f"unknown gpu.hf function {function!r}")  # pragma: no cover
