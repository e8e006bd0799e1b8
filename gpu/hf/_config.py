"""The objective of an AMiD trainer as a dataclass that ``HfArgumentParser`` fills."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from amid_ref import presets as _reference_presets
from amid_ref.contract import (
    check_lam,
    check_leftover,
    check_real,
    check_temperature_applies_to,
    check_vocab_alignment,
)
from gpu import presets as _presets
from gpu._loss import AMiDLoss
from gpu.hf._criterion import check_ce_weight, check_fused
from gpu.hf._schedule import SHAPES, AMiDSchedule

__all__ = ["AMiDConfig"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class AMiDConfig:
    r"""The distillation objective of :class:`gpu.hf.AMiDTrainer`, as ``GKDConfig`` is GKD's.

    ``transformers.HfArgumentParser`` fills it from the command line (with
    ``TrainingArguments`` next to it), and ``AMiDTrainer(..., amid_config=config)`` trains
    with it; :meth:`build_criterion` and :meth:`build_schedule` give the pieces. Either an
    AMiD setting (``divergence``, ``order``, ``alpha``, ``lam``) or a ``preset``, whose own
    parameter is ``lam`` (TAID's t, GKD's β)::

        --alpha -5 --lam 0.1 --divergence kl
        --preset taid --lam 0.4 --lam_end 1.0          # TAID, t from 0.4 to 1
        --preset gkd_jsd --lam 0.5                     # GKD's JSD(β = 0.5)

    The criterion takes Hugging Face's unshifted labels (``shift_labels=True``) and
    ignores ``-100``. A value that cannot be used raises ``TypeError`` or ``ValueError``
    naming the field when the config is built. On a command line an infinite or exponent
    value is written with ``=`` (``--alpha=-inf``, ``--alpha=-1e3``): argparse reads a
    separate ``-inf`` as an option.

    Parameters
    ----------
    divergence : str, optional
        A name of :data:`gpu.DIVERGENCES`; ``None``: ``"kl"``, or the preset's.
    order : {"pr", "qr", "rp", "rq"}, optional
        Argument order; ``None``: ``"pr"``. A preset fixes its own terms (refused with one).
    alpha : float, optional
        Path parameter α (any real or ±inf); ``None``: 0.0, or the preset's.
    lam : float, optional
        Teacher weight λ in [0, 1] (TAID's ``t``, GKD's ``beta`` with those presets);
        ``None``: 0.1, or the preset's.
    preset : str, optional
        A name of ``gpu.presets.PRESETS`` (``kd``, ``rkl``, ``taid``, ``gkd_jsd``, ...).
    div_params : str, optional
        The divergence's parameters as a JSON object, e.g. ``'{"alpha": 0.2, "beta": 0.7}'``.
    kd_temperature : float
        Softmax temperature T > 0 of both distributions.
    kd_temperature_scaling : str, optional
        ``"T2"`` multiplies the distillation loss by T².
    ce_weight : float
        Weight ≥ 0 of the cross-entropy on the labels.
    lam_end : float, optional
        λ at the end of the schedule (a schedule from ``lam`` to ``lam_end``).
    alpha_end : float, optional
        α at the end of the schedule (from ``alpha``; finite ends).
    schedule_shape : {"linear", "cosine"}
        Shape of the schedule.
    schedule_steps : int, optional
        Steps of the schedule; ``None``: the run's ``max_steps``.
    fused : bool, optional
        The fused lm_head path; ``None``: automatic.
    leftover : {"bucket", "renormalize", "uniform"}, optional
        A sparse (top-k) teacher's policy for the probability off its top-k (MATH.md);
        ``None``: ``"bucket"``.
    vocab_alignment : {"error", "pad", "truncate"}, optional
        Teacher and student vocabularies of different sizes (one padded), or a sparse
        teacher's ids beyond the student's (``"truncate"`` drops them); ``None``:
        ``"error"``.
    temperature_applies_to : {"both", "student"}, optional
        What ``kd_temperature`` divides; a sparse teacher's log-probabilities are used as
        given, so a temperature ≠ 1 with one needs ``"student"``. ``None``: ``"both"``.

    Examples
    --------
    >>> from transformers import HfArgumentParser
    >>> from gpu.hf import AMiDConfig
    >>> (config,) = HfArgumentParser(AMiDConfig).parse_args_into_dataclasses(
    ...     ["--alpha", "-5", "--lam", "0.1", "--divergence", "kl"])
    >>> config.build_criterion()
    AMiDLoss(alpha=-5.0, lam=0.1, divergence='kl', order='pr', reduction='mean')
    """

    divergence: str | None = field(
        default=None, metadata=_help("divergence name (default: kl, or the preset's)")
    )
    order: str | None = field(
        default=None, metadata=_help("argument order pr, qr, rp or rq (default: pr)")
    )
    alpha: float | None = field(
        default=None, metadata=_help("path parameter alpha (default: 0, or the preset's)")
    )
    lam: float | None = field(
        default=None,
        metadata=_help("teacher weight lambda in [0, 1]; TAID's t, GKD's beta (default: 0.1)"),
    )
    preset: str | None = field(
        default=None, metadata=_help("a prior method: kd, rkl, distillm_skl, taid, gkd_jsd, ...")
    )
    div_params: str | None = field(
        default=None, metadata=_help('divergence parameters as JSON, e.g. {"beta": 0.5}')
    )
    kd_temperature: float = field(default=1.0, metadata=_help("softmax temperature T > 0"))
    kd_temperature_scaling: str | None = field(
        default=None, metadata=_help("T2: multiply the distillation loss by T^2")
    )
    ce_weight: float = field(default=0.0, metadata=_help("weight of the cross-entropy term"))
    lam_end: float | None = field(
        default=None, metadata=_help("lambda at the end of a schedule from --lam")
    )
    alpha_end: float | None = field(
        default=None, metadata=_help("alpha at the end of a schedule from --alpha")
    )
    schedule_shape: str = field(default="linear", metadata=_help("linear or cosine"))
    schedule_steps: int | None = field(
        default=None, metadata=_help("steps of the schedule (default: max_steps)")
    )
    fused: bool | None = field(
        default=None, metadata=_help("fused lm_head loss (default: when both models allow it)")
    )
    leftover: str | None = field(
        default=None,
        metadata=_help("top-k teacher: bucket, renormalize or uniform (default: bucket)"),
    )
    vocab_alignment: str | None = field(
        default=None,
        metadata=_help("vocabularies of different sizes: error, pad or truncate (default: error)"),
    )
    temperature_applies_to: str | None = field(
        default=None,
        metadata=_help("what kd_temperature divides: both or student (default: both)"),
    )

    def __post_init__(self) -> None:
        self.ce_weight = check_ce_weight(self.ce_weight)
        self.fused = check_fused(self.fused)
        self.build_criterion()  # every objective field is checked here
        self.build_schedule()
        self.teaching()

    def teaching(self) -> dict[str, str]:
        """The teacher-side settings that are set (``leftover``, ``vocab_alignment``,
        ``temperature_applies_to``), as keyword arguments of
        :func:`gpu.hf.amid_compute_loss`, which applies them over the criterion's.

        Returns
        -------
        dict
            The fields that are not ``None``, checked.
        """
        checks = {"leftover": check_leftover, "vocab_alignment": check_vocab_alignment,
                  "temperature_applies_to": check_temperature_applies_to}  # fmt: skip
        return {
            name: check(getattr(self, name))
            for name, check in checks.items()
            if getattr(self, name) is not None
        }

    def _div_params(self) -> dict[str, Any] | None:
        if self.div_params is None:
            return None
        if isinstance(self.div_params, dict):
            return dict(self.div_params)
        try:
            value = json.loads(self.div_params)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"div_params must be a JSON object, e.g. '{{\"beta\": 0.5}}', got "
                f"{self.div_params!r}"
            ) from exc
        if not isinstance(value, dict):
            raise ValueError(f"div_params must be a JSON object, got {self.div_params!r}")
        return value

    def build_criterion(self) -> torch.nn.Module:
        """The criterion: an :class:`gpu.AMiDLoss`, or a preset's :class:`gpu.presets.PresetLoss`.

        Returns
        -------
        torch.nn.Module
            With ``shift_labels=True`` (Hugging Face's labels) and ``ignore_index=-100``.
        """
        temperature = check_real(self.kd_temperature, "kd_temperature")
        if not temperature > 0.0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature!r}")
        if self.kd_temperature_scaling not in (None, "T2"):
            raise ValueError(
                f"kd_temperature_scaling must be None or 'T2' (multiply the loss by T**2), got "
                f"{self.kd_temperature_scaling!r}"
            )
        common = dict(temperature=temperature, shift_labels=True,
                      temperature_scaling=self.kd_temperature_scaling)  # fmt: skip
        if self.preset is None:
            return AMiDLoss(
                0.0 if self.alpha is None else self.alpha,
                0.1 if self.lam is None else self.lam,
                "kl" if self.divergence is None else self.divergence,
                "pr" if self.order is None else self.order,
                self._div_params(),
                **common,
            )
        if not isinstance(self.preset, str) or self.preset not in _presets.PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}; known: {', '.join(_presets.PRESETS)}"
            )
        if self.order is not None:
            raise ValueError(
                f"order={self.order!r} with preset={self.preset!r}: a preset fixes its terms "
                f"{_presets.PRESETS[self.preset].terms}; leave order unset"
            )
        overrides: dict[str, Any] = {}
        if self.lam is not None:
            name = _reference_presets.LAMBDA_PARAMETERS.get(self.preset, "lam")
            overrides[name] = self.lam
        if self.alpha is not None:
            overrides["alpha"] = self.alpha
        if self.divergence is not None:
            overrides["divergence"] = self.divergence
        if self.div_params is not None:
            overrides["div_params"] = self._div_params()
        return _presets.get(self.preset, **overrides).criterion(**common)

    def build_schedule(self) -> AMiDSchedule | None:
        """The schedule from ``lam`` to ``lam_end`` (and ``alpha`` to ``alpha_end``), if any.

        Returns
        -------
        gpu.hf.AMiDSchedule or None
            ``None`` when neither ``lam_end`` nor ``alpha_end`` is set.
        """
        if self.lam_end is None and self.alpha_end is None:
            if self.schedule_steps is not None:
                raise ValueError("schedule_steps without lam_end or alpha_end: nothing to schedule")
            return None
        start = self.build_criterion()
        lam = float(start.lam)
        if self.lam_end is not None:
            lam = (lam, check_lam(self.lam_end, "lam_end"))
        alpha = None
        if self.alpha_end is not None:
            alpha = (float(start.alpha), check_real(self.alpha_end, "alpha_end", allow_inf=True))
            if alpha[0] != alpha[1] and not all(math.isfinite(a) for a in alpha):
                raise ValueError(
                    f"alpha={alpha[0]} to alpha_end={alpha[1]}: a schedule between an infinite "
                    "and another value has no meaning; give finite ends"
                )
        if not isinstance(self.schedule_shape, str) or self.schedule_shape not in SHAPES:
            raise ValueError(f"schedule_shape must be one of {SHAPES}, got {self.schedule_shape!r}")
        try:
            return AMiDSchedule(lam=lam, alpha=alpha, num_steps=self.schedule_steps,
                                shape=self.schedule_shape)  # fmt: skip
        except (TypeError, ValueError) as exc:  # num_steps is schedule_steps here
            raise type(exc)(str(exc).replace("num_steps", "schedule_steps")) from None
