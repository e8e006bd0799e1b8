"""Hold an external AMiD implementation to the reference.

Runs a battery of cases in families (α grid incl. ±∞ and 1 ± 1e-6; λ at and near 0 and 1;
extreme and −inf logits; one-hot teachers; V from 2 to 151936; bf16/fp16-rounded inputs;
every divergence and order; temperature; ignore_index masks; shapes) against a loss over
logits or an α-mixture over log-probabilities, with the float64 ``amid_ref`` value on the
same (rounded) inputs as the reference and the tolerance of ``amid_ref.tolerances`` for the
declared dtype. Failing cases are diagnosed by evaluating known-wrong formulas (geometric
collapse for α ≥ 1, logaddexp/β in bf16, probability-space mixtures, AB 1/a_ slips and
cancellation, swapped Amari limits, padded logits set to 0, 0/0 masks, λ on the student)
on the failing case.

Published implementations (TRL's GKD JSD and DistillationTrainer loss, liger-kernel's JSD
and Triton kernels, torchtune's KD losses, NVIDIA ModelOpt's logits loss, torch's ``kl_div``
used for KD) are checked with their built-in adapters (:data:`PEERS`), mapped to the
reference: a plain divergence at λ = 0 (``kind="divergence"``) or a prior method of
:mod:`amid_ref.presets` (``kind="preset"``). A user's function is checked as it is written:
``param_map`` (``--map skew=lam``) renames parameters, :func:`labels_in` takes labels out of
a dict argument, and a run where no case ran is "nothing checked" (exit code 3).

Examples::

    amid-ref conform gpu:amid_loss --kind loss
    amid-ref conform gpu:amid_loss --kind loss --dtype bf16 --grad
    amid-ref conform my_pkg.losses:alpha_mix --kind mixture --json
    amid-ref conform --peer list
    amid-ref conform --peer trl-gjsd --dtype bf16
    amid-ref conform my_pkg.losses:gkd --preset gkd_jsd --set beta=0.1
    amid-ref conform my_pkg.losses:srkl --preset distillm_srkl --map skew=s

exits 1 on any failure, 3 when nothing was checked. In Python, :func:`conform` returns a
:class:`Report` and :func:`assert_conforms` raises ``AssertionError`` with the report for use
inside pytest (``allow=`` the failure modes a library documents, ``tolerances=`` the rows).
"""

from __future__ import annotations

from amid_ref.conformance._adapters import (
    LossAdapter,
    MixtureAdapter,
    Support,
    Unsupported,
    labels_in,
)
from amid_ref.conformance._assert import assert_conforms
from amid_ref.conformance._cases import (
    DTYPES,
    FAMILIES,
    IGNORE_INDEX,
    Case,
    battery,
    canonical_dtype,
    get_case,
    round_to_dtype,
)

# the command-line plumbing of `amid-ref conform`, reached through amid_ref.cli.SUBCOMMANDS
# (not in __all__: not part of the public API)
from amid_ref.conformance._cli import configure_parser, load_target, run  # noqa: F401
from amid_ref.conformance._failure_modes import Diagnosis, FailureMode
from amid_ref.conformance._mutants import FAILURE_MODES
from amid_ref.conformance._peers import PEERS, Peer, conform_peer
from amid_ref.conformance._reference import PROPOSED_TOLERANCES, tolerance_for
from amid_ref.conformance._runner import (
    CaseResult,
    Report,
    check_case,
    conform,
)

__all__ = [
    "DTYPES",
    "FAILURE_MODES",
    "FAMILIES",
    "IGNORE_INDEX",
    "PEERS",
    "PROPOSED_TOLERANCES",
    "Case",
    "CaseResult",
    "Diagnosis",
    "FailureMode",
    "LossAdapter",
    "MixtureAdapter",
    "Peer",
    "Report",
    "Support",
    "Unsupported",
    "assert_conforms",
    "battery",
    "canonical_dtype",
    "check_case",
    "conform",
    "conform_peer",
    "get_case",
    "labels_in",
    "round_to_dtype",
    "tolerance_for",
]
