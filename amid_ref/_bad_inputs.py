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
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

import amid_ref
from amid_ref import precise
from amid_ref.cli import main

__all__ = ["BAD_INPUTS", "IMPLEMENTATIONS", "BadInput", "CommandRefused", "call"]

IMPLEMENTATIONS = ("amid_ref", "precise", "gpu")

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
    only: tuple[str, ...] = IMPLEMENTATIONS
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
)


def _base(function: str) -> dict[str, Any]:
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
    if isinstance(value, _Torch):
        return value.build()
    if isinstance(value, dict):
        return {k: _materialize(v, for_gpu=for_gpu) for k, v in value.items()}
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
