"""Prior distillation methods as special cases of AMiD (mathematics page, "Prior methods as special
cases"). One registry, :data:`PRESETS`; :func:`get` returns a record with overrides.

=================  ==========================================================
preset             AMiD setting
=================  ==========================================================
``kd``             λ = 0, KL, ``pr``: KL(p‖q)
``rkl``            λ = 0, KL, ``rp``: KL(q‖p)
``distillm_skl``   α = −1, λ = 0.1, KL, ``pr``: KL(p‖0.1p + 0.9q)
``distillm_srkl``  α = −1, λ = 0.9, KL, ``qr``: KL(q‖0.9p + 0.1q)
``gkd_jsd``        α = −1, λ = β: β·KL(p‖r) + (1−β)·KL(q‖r) = JSD_β(p‖q)
``taid``           α = 1, λ = t, KL, ``rq``, assistant detached
``abkd``           λ = 0, AB-divergence (a_, b_) = (0.2, 0.7), ``pr``: D_AB(p‖q)
``symmetric_kl``   λ = 0, KL: ρ·KL(p‖q) + (1−ρ)·KL(q‖p), ρ = ½ by default
=================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from amid_ref._loss import grad_of, loss_of
from amid_ref._specs import Objective

__all__ = ["LAMBDA_PARAMETERS", "PRESETS", "Preset", "get"]


@dataclass(frozen=True)
class Preset:
    """A named AMiD setting reproducing a prior method.

    The loss is ``Σ_k weight_k · D(order_k)`` over :attr:`terms`, each term an
    :func:`amid_ref.amid_loss` with the shared ``alpha``, ``lam``, ``divergence`` and
    ``div_params``.
    """

    name: str
    alpha: float
    lam: float
    divergence: str
    terms: tuple[tuple[str, float], ...]
    div_params: Mapping[str, Any] = field(default_factory=dict)
    detach_assistant: bool = False
    description: str = ""
    reference: str = ""

    def _weighted_sum(self, term) -> np.ndarray:
        """Σ_k weight_k · term(order_k) over :attr:`terms` (zero weights skipped)."""
        total = 0.0
        for order, weight in self.terms:
            if weight != 0.0:
                total = total + weight * np.asarray(term(order))
        return np.asarray(total, dtype=np.float64)

    def objective(self, order: str, temperature: float = 1.0, **form: Any) -> Objective:
        """The validated AMiD objective of the term with argument order ``order``; ``form``
        holds the teacher's form (``leftover``, ``vocab_alignment``, ``softcap``,
        ``logit_scale``, ``temperature_applies_to``) as in :func:`amid_ref.amid_loss`."""
        return Objective.of(
            self.alpha, self.lam, self.divergence, order, dict(self.div_params), temperature,
            self.detach_assistant, **form,
        )  # fmt: skip

    def loss(
        self,
        student_logits,
        teacher_logits,
        temperature: float = 1.0,
        *,
        teacher_topk=None,
        leftover: str = "bucket",
        vocab_alignment: str = "error",
        softcap=None,
        logit_scale=None,
        temperature_applies_to: str = "both",
    ):
        """Per-row loss of the method, shape = leading dims of the logits.

        The keyword-only parameters (a sparse teacher, vocabulary alignment, logit
        transforms) pass through to every term, as in :func:`amid_ref.amid_loss`.
        """
        form = {
            "leftover": leftover,
            "vocab_alignment": vocab_alignment,
            "softcap": softcap,
            "logit_scale": logit_scale,
            "temperature_applies_to": temperature_applies_to,
        }
        out = self._weighted_sum(
            lambda order: loss_of(
                self.objective(order, temperature, **form),
                student_logits,
                teacher_logits,
                teacher_topk=teacher_topk,
            )
        )
        return out[()] if out.ndim == 0 else out

    def grad(
        self,
        student_logits,
        teacher_logits,
        temperature: float = 1.0,
        *,
        teacher_topk=None,
        leftover: str = "bucket",
        vocab_alignment: str = "error",
        softcap=None,
        logit_scale=None,
        temperature_applies_to: str = "both",
    ):
        """Gradient of :meth:`loss` per row with respect to the student logits (the same
        keyword-only parameters)."""
        form = {
            "leftover": leftover,
            "vocab_alignment": vocab_alignment,
            "softcap": softcap,
            "logit_scale": logit_scale,
            "temperature_applies_to": temperature_applies_to,
        }
        return self._weighted_sum(
            lambda order: grad_of(
                self.objective(order, temperature, **form),
                student_logits,
                teacher_logits,
                teacher_topk=teacher_topk,
            )
        )


def _gkd(beta: float = 0.5) -> Preset:
    return Preset(
        "gkd_jsd",
        -1.0,
        beta,
        "kl",
        (("pr", beta), ("qr", 1.0 - beta)),
        description="GKD generalized JSD(β) = β·KL(p‖m) + (1−β)·KL(q‖m), m = βp + (1−β)q "
        "[claim: presets.gkd_jsd]",
        reference="Agarwal et al. 2024, On-policy distillation of language models (GKD)",
    )


def _symmetric(ratio: float = 0.5) -> Preset:
    return Preset(
        "symmetric_kl",
        -1.0,
        0.0,
        "kl",
        (("pr", ratio), ("rp", 1.0 - ratio)),
        description="Symmetric KL ρ·KL(p‖q) + (1−ρ)·KL(q‖p) (λ = 0, orders pr and rp); "
        "ρ = ½ is half the Jeffreys divergence.",
        reference="torchtune SymmetricKLLoss (sym_kd_ratio = ρ), after DistiLLM's losses",
    )


PRESETS: dict[str, Preset] = {
    "kd": Preset(
        "kd",
        -1.0,
        0.0,
        "kl",
        (("pr", 1.0),),
        description="Forward KL, KL(p‖q): λ = 0 makes r = q for every α.",
        reference="Hinton et al. 2015, Distilling the knowledge in a neural network",
    ),
    "rkl": Preset(
        "rkl",
        -1.0,
        0.0,
        "kl",
        (("rp", 1.0),),
        description="Reverse KL, KL(q‖p): λ = 0 and order rp.",
        reference="Gu et al. 2024, MiniLLM",
    ),
    "distillm_skl": Preset(
        "distillm_skl",
        -1.0,
        0.1,
        "kl",
        (("pr", 1.0),),
        description="DistiLLM skew KL, KL(p‖0.1p + 0.9q) [claim: presets.distillm_skl]",
        reference="Ko et al. 2024, DistiLLM",
    ),
    "distillm_srkl": Preset(
        "distillm_srkl",
        -1.0,
        0.9,
        "kl",
        (("qr", 1.0),),
        description="DistiLLM skew reverse KL, KL(q‖0.9p + 0.1q) [claim: presets.distillm_srkl]",
        reference="Ko et al. 2024, DistiLLM",
    ),
    "gkd_jsd": _gkd(0.5),
    "taid": Preset(
        "taid",
        1.0,
        0.0,
        "kl",
        (("rq", 1.0),),
        detach_assistant=True,
        description="TAID with interpolation t = λ (set lam=t, increasing over training): "
        "KL(r‖q) with r ∝ p^t q^(1−t) detached; same gradient as TAID's cross-entropy "
        "[claim: presets.taid]",
        reference="Shing et al. 2025, TAID",
    ),
    "abkd": Preset(
        "abkd",
        -1.0,
        0.0,
        "ab",
        (("pr", 1.0),),
        div_params={"alpha": 0.2, "beta": 0.7},
        description="ABKD: AB-divergence D_AB(p‖q) with (a_, b_) = (0.2, 0.7) as in the AMiD "
        "paper's experiments.",
        reference="Wang et al. 2025, ABKD",
    ),
    "symmetric_kl": _symmetric(0.5),
}


#: The named parameter that a preset takes in place of λ (``get("taid", t=0.4)``); for
#: ``gkd_jsd`` it also sets the term weights (β, 1 − β).
LAMBDA_PARAMETERS: dict[str, str] = {"gkd_jsd": "beta", "taid": "t"}


def get(name: str, **overrides: Any) -> Preset:
    """The preset ``name`` with fields replaced by ``overrides``.

    ``gkd_jsd`` accepts ``beta=`` (sets λ and the term weights together); ``taid`` accepts
    ``t=`` (sets λ); ``distillm_skl`` and ``distillm_srkl`` accept DistiLLM's ``skew=`` s,
    the weight of the divergence's first argument in the mixture (λ = s for the skew KL,
    λ = 1 − s for the skew reverse KL); ``symmetric_kl`` accepts ``ratio=`` ρ. Other
    overrides replace fields of :class:`Preset` directly.

    Examples
    --------
    >>> from amid_ref import presets
    >>> presets.get("gkd_jsd", beta=0.1).terms
    (('pr', 0.1), ('qr', 0.9))
    >>> presets.get("distillm_srkl", skew=0.1).lam
    0.9
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    if name == "gkd_jsd" and "beta" in overrides:
        beta = float(overrides.pop("beta"))
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"gkd_jsd beta must lie in [0, 1], got {beta!r}")
        base = _gkd(beta)
    elif name == "symmetric_kl" and "ratio" in overrides:
        ratio = float(overrides.pop("ratio"))
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"symmetric_kl ratio must lie in [0, 1], got {ratio!r}")
        base = _symmetric(ratio)
    else:
        base = PRESETS[name]
    if name in ("distillm_skl", "distillm_srkl") and "skew" in overrides:
        skew = float(overrides.pop("skew"))
        if not 0.0 <= skew <= 1.0:
            raise ValueError(f"{name} skew must lie in [0, 1], got {skew!r}")
        overrides["lam"] = skew if name == "distillm_skl" else 1.0 - skew
    if name == "taid" and "t" in overrides:
        overrides["lam"] = overrides.pop("t")
    bad = sorted(set(overrides) - set(Preset.__dataclass_fields__))
    if bad:
        raise ValueError(f"unknown preset field(s) {bad}")
    return replace(base, **overrides) if overrides else base
