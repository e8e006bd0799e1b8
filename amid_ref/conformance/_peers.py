"""Published distillation losses as conformance targets (``amid-ref conform --peer NAME``).

A *peer* is an installable implementation of a prior method, checked against the reference
in one line. Its record (:class:`Peer`) holds an *adapter* and declarations:

* the adapter is a function of the conformance protocol: ``fn(student_logits,
  teacher_logits, *, <the divergence's parameters by name>, temperature=1.0, labels=None)``
  returning the peer's loss as a tensor (labels use ignore_index = −100). Most adapters are
  the peer's own function or a few lines around it;
* the mapping: which plain divergence the peer computes (``js`` with β, ``kl``) and in which
  direction (``pr`` = D(p‖q), ``rp`` = D(q‖p); p is the teacher), i.e. the AMiD loss at
  λ = 0, and the equivalent preset of :mod:`amid_ref.presets`;
* its conventions: the reduction it returns, T² scaling, masking, what it supports, and the
  endpoint special cases its authors document (reported as differences by design, not bugs).

A user's own implementation follows the same protocol: a ≤ 10-line adapter of that
signature, run with ``amid-ref conform my_module:adapter --kind divergence --divergences js
--orders pr``; or a :class:`Peer` record in the user's module, run with ``--peer
my_module:MY_PEER``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from amid_ref.conformance._adapters import Support, Unsupported
from amid_ref.conformance._runner import conform
from amid_ref.conformance._targets import load_object

__all__ = ["PEERS", "Peer", "conform_peer", "get_peer", "peer_table"]


@dataclass(frozen=True)
class Peer:
    """A published implementation, its adapter and what it declares.

    Parameters
    ----------
    name : str
        The ``--peer`` name.
    summary : str
        One line: what the peer is.
    distribution : str
        The package on the index (its installed version is reported).
    source : str
        The peer's own function or class (``module.Class.method``).
    load : callable
        ``load()`` imports the peer and returns the adapter (the protocol function).
    divergence, order, div_params
        The plain divergence the peer computes, its direction (``"pr"``: D(p‖q), ``"rp"``:
        D(q‖p)) and its parameters by name as the adapter takes them.
    preset : str, optional
        The equivalent :mod:`amid_ref.presets` preset.
    reduction : str
        What the adapter returns: ``none``, ``mean`` (over kept rows), ``sum`` or
        ``batchmean`` (torch's: the sum over the first dimension's size).
    reduction_names : mapping, optional
        The peer's own ``reduction=`` word for each reduction a case may ask for (cases
        asking another are outside its support).
    support : Support
        What the peer supports (leading dims, vocabulary, masking, temperature, T²).
    conventions : tuple of str
        Its conventions, in words (which side β weights, T, reduction, masks).
    by_design : tuple of str
        Where it differs from the reference by its authors' documented intent.
    by_design_modes : tuple of str
        The failure modes (:data:`~amid_ref.conformance.FAILURE_MODES` ids) that diagnose
        those documented differences; reports call them "by design", not defects.
    kind : {"divergence", "preset"}
        The battery :func:`conform_peer` runs by default: the plain divergence (λ = 0), or
        the preset (for a peer no single divergence and direction describes, e.g. a
        weighted sum of two directions).
    params : tuple of (str, str)
        The peer's own parameters and what each is in AMiD's terms (the mapping page).
    amid : str
        The AMiD setting the peer computes, in one line (α, λ, divergence, order).
    label_shift, masking : str
        Whether the peer shifts labels by one position itself, and how it masks (ignored
        positions, −inf logits).
    runtime : str
        ``"torch"`` (runs anywhere), ``"triton"`` (Triton kernels: natively on CUDA, under
        the Triton interpreter on a CPU).
    """

    name: str
    summary: str
    distribution: str
    source: str
    load: Callable[[], Callable]
    divergence: str
    order: str = "pr"
    preset: str | None = None
    reduction: str = "none"
    reduction_names: Mapping[str, str] | None = None
    support: Support = field(default_factory=Support)
    conventions: tuple[str, ...] = ()
    by_design: tuple[str, ...] = ()
    by_design_modes: tuple[str, ...] = ()
    kind: str = "divergence"
    params: tuple[tuple[str, str], ...] = ()
    amid: str = ""
    label_shift: str = "none: the labels are aligned with the logits"
    masking: str = ""
    runtime: str = "torch"

    def __post_init__(self) -> None:
        if self.kind not in ("divergence", "preset"):
            raise ValueError(f"kind: expected 'divergence' or 'preset', got {self.kind!r}")
        if self.kind == "preset" and not self.preset:
            raise ValueError(f"peer {self.name!r}: kind 'preset' needs a preset")
        if self.runtime not in ("torch", "triton"):
            raise ValueError(f"runtime: expected 'torch' or 'triton', got {self.runtime!r}")

    def version(self) -> str | None:
        """The installed version of :attr:`distribution` (None if not installed)."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "distribution": self.distribution,
            "version": self.version(),
            "source": self.source,
            "divergence": self.divergence,
            "direction": {"pr": "D(p‖q)", "rp": "D(q‖p)"}[self.order],
            "preset": self.preset,
            "reduction": self.reduction,
            "conventions": list(self.conventions),
            "by_design": list(self.by_design),
            "by_design_modes": list(self.by_design_modes),
            "kind": self.kind,
            "params": [list(x) for x in self.params],
            "amid": self.amid,
            "runtime": self.runtime,
        }


# --------------------------------------------------------------------------------------
# Adapters (the conformance protocol); each imports its peer lazily
# --------------------------------------------------------------------------------------


def _trl_gjsd() -> Callable:
    with warnings.catch_warnings():  # TRL warns that trl.experimental may change
        warnings.simplefilter("ignore")
        # trl: optional (the peers extra)
        from trl.experimental.gkd.gkd_trainer import GKDTrainer

    # Already the protocol: (student_logits, teacher_logits, labels, beta, temperature,
    # reduction); labels equal to -100 are dropped.
    return GKDTrainer.generalized_jsd_loss


def _liger_chunk_jsd() -> Callable:
    # liger-kernel: optional (the peers extra)
    from liger_kernel.chunked_loss.jsd_loss import LigerFusedLinearJSDFunction

    def liger_jsd_loss_fn(student_logits, teacher_logits, beta=0.5, labels=None):
        return LigerFusedLinearJSDFunction.distillation_loss_fn(
            student_logits, teacher_logits, beta=beta, target=labels, ignore_index=-100
        )

    return liger_jsd_loss_fn


def _liger_fused_jsd() -> Callable:
    # torch: optional (the peers extra)
    import torch

    # liger-kernel: optional (the peers extra)
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    def liger_fused_linear_jsd(student_logits, teacher_logits, beta=0.5, temperature=1.0,
                               labels=None):  # fmt: skip
        # Hidden states = the logits and lm_head = the identity: the layer's logits are
        # exactly the case's, and the gradient w.r.t. its input is the logits' gradient.
        v = student_logits.shape[-1]
        eye = torch.eye(v, dtype=student_logits.dtype)
        n = student_logits.numel() // v
        y = labels.reshape(-1) if labels is not None else torch.zeros(n, dtype=torch.long)
        loss = LigerFusedLinearJSDLoss(0.0, 1.0, beta, temperature=temperature, compiled=False)
        return loss(student_logits.reshape(n, v), eye, teacher_logits.reshape(n, v), eye, y)

    return liger_fused_linear_jsd


def _torch_kd(reverse: bool, log_target: bool) -> Callable[[], Callable]:
    def load() -> Callable:
        # torch: optional (the peers extra)
        import torch.nn.functional as F

        def kd(student_logits, teacher_logits, temperature=1.0):
            log_q = F.log_softmax(student_logits / temperature, dim=-1)
            log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
            inp, tgt = (log_p, log_q) if reverse else (log_q, log_p)
            tgt = tgt if log_target else tgt.exp()
            kl = F.kl_div(inp, tgt, reduction="batchmean", log_target=log_target)
            return kl * temperature**2

        kd.__qualname__ = f"kl_div_{'reverse' if reverse else 'forward'}" + (
            "_log_target" if log_target else ""
        )
        return kd

    return load


def _quiet_import(module: str):
    """Import ``module`` with its import-time warnings silenced (torchtune, ModelOpt and
    TRL warn about versions of their optional dependencies)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def _flat(x, v: int):
    return x.reshape(-1, v)


def _all_kept(student_logits):
    # torch: optional (the peers extra)
    import torch

    return torch.zeros(student_logits.shape[:-1], dtype=torch.long, device=student_logits.device)


def _torchtune(cls_name: str) -> Callable[[], Callable]:
    def load() -> Callable:
        # torchtune: optional (the peers extra; it imports torchao)
        kd_losses = _quiet_import("torchtune.modules.loss.kd_losses")
        cls = getattr(kd_losses, cls_name)

        if cls_name == "ForwardKLWithChunkedOutputLoss":

            def chunked(student_logits, teacher_logits, labels=None):
                # (B, T, V) logits as the list of chunks along T the loss takes (the
                # recipe's model.output(chunk) for chunk in h.chunk(8, dim=1))
                v = student_logits.shape[-1]
                lead = student_logits.shape[:-1]
                b, t = (lead[0], lead[1]) if len(lead) == 2 else (1, max(1, lead.numel()))
                labels = _all_kept(student_logits) if labels is None else labels
                loss = cls()  # num_output_chunks=8, ignore_index=-100
                n = loss.num_output_chunks
                s3 = student_logits.reshape(b, t, v).chunk(n, dim=1)
                t3 = teacher_logits.reshape(b, t, v).chunk(n, dim=1)
                return loss(list(s3), list(t3), labels.reshape(b, t))

            return chunked

        if cls_name == "SymmetricKLLoss":

            def symmetric(student_logits, teacher_logits, ratio=0.5, labels=None):
                v = student_logits.shape[-1]
                labels = _all_kept(student_logits) if labels is None else labels
                loss = cls(sym_kd_ratio=ratio)
                return loss(_flat(student_logits, v), _flat(teacher_logits, v), labels.reshape(-1))

            return symmetric

        def kd(student_logits, teacher_logits, labels=None):
            v = student_logits.shape[-1]
            labels = _all_kept(student_logits) if labels is None else labels
            return cls()(_flat(student_logits, v), _flat(teacher_logits, v), labels.reshape(-1))

        kd.__qualname__ = cls_name
        return kd

    return load


def _trl_distillation() -> Callable:
    # trl: optional (the peers extra)
    trainer = _quiet_import("trl.trainer.distillation_trainer")
    # torch: optional (the peers extra)
    import torch

    def trl_chunked_divergence(student_logits, teacher_logits, beta=0.5, temperature=1.0,
                               labels=None):  # fmt: skip
        # The loss takes hidden states (N, H) and lm_head weights (V, H). With H = N, the
        # hidden states the identity and the weight the transposed logits, its fp32
        # projection I·Wᵀ is exactly the case's logits, and the student weight's gradient is
        # the logits' gradient (transposed).
        v = student_logits.shape[-1]
        s, t = _flat(student_logits, v), _flat(teacher_logits, v)
        n = s.shape[0]
        eye = torch.eye(n, dtype=s.dtype, device=s.device).reshape(1, n, n)
        keep = torch.ones(n, dtype=torch.long) if labels is None else labels.reshape(-1) != -100
        loss, _, _ = trainer._chunked_divergence_loss(
            eye, eye, s.t(), t.t(), keep.reshape(1, n).long(), beta, temperature=temperature
        )
        return loss

    return trl_chunked_divergence


def _triton_runtime() -> str:
    """Where liger-kernel's Triton kernels run: ``"cuda"``, or ``"interpreter"`` on a CPU.

    The interpreter must be chosen before the kernels are defined (TRITON_INTERPRET=1 when
    ``liger_kernel.ops`` is first imported). Triton 3.9's interpreter hands a float scalar
    argument to the kernel as a Python float, where compiled Triton passes an fp32 scalar
    (liger's ``eps.to(tl.float32)`` then raises): such arguments are passed as fp32 scalars,
    as compiled Triton does. Nothing else of the interpreter or of the kernels is changed.
    """
    # torch: optional (the peers extra)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") != "1":
        if any(m.startswith("liger_kernel.ops") for m in sys.modules):
            raise ImportError(
                "liger-kernel's Triton kernels were already imported in this process without "
                "TRITON_INTERPRET=1 and there is no CUDA device: run this peer in a fresh "
                "process (amid-ref conform --peer NAME sets the interpreter itself)"
            )
        os.environ["TRITON_INTERPRET"] = "1"
    _fp32_float_scalars()
    return "interpreter"


def _fp32_float_scalars() -> None:
    # triton: optional (comes with torch on Linux)
    import triton.language as tl
    import triton.runtime.interpreter as interpreter

    if getattr(interpreter._implicit_cvt, "_amid_fp32_scalars", False):
        return
    convert = interpreter._implicit_cvt

    def implicit_cvt(arg):
        if isinstance(arg, float):
            handle = interpreter.TensorHandle(np.array([arg], dtype=np.float32), tl.float32)
            return tl.tensor(handle, tl.float32)
        return convert(arg)

    implicit_cvt._amid_fp32_scalars = True
    interpreter._implicit_cvt = implicit_cvt


#: Why a Triton kernel that computes in its input dtype is not run in bf16/fp16 under the
#: interpreter.
INTERPRETER_LOW_PRECISION = (
    "Triton 3.9's interpreter keeps bf16 values as their raw 16-bit patterns and does "
    "arithmetic on those (0.5·|x| of bf16 inputs stored to an fp32 tensor reads 1e35): this "
    "kernel computes in its input dtype, so its bf16/fp16 run needs CUDA"
)


def _liger_triton(which: str) -> Callable[[], Callable]:
    def load() -> Callable:
        runtime = _triton_runtime()
        # liger-kernel: optional (the peers extra)
        lt = _quiet_import("liger_kernel.transformers")
        # torch: optional (the peers extra)
        import torch.nn.functional as F

        def logs(x, v):  # log-softmax in fp32, handed over in the input dtype
            return F.log_softmax(_flat(x, v).float(), -1).to(x.dtype)

        def probs(x, v):
            return F.softmax(_flat(x, v).float(), -1).to(x.dtype)

        if which == "jsd":

            def liger_triton_jsd(student_logits, teacher_logits, beta=0.5, labels=None):
                v = student_logits.shape[-1]
                y = None if labels is None else labels.reshape(-1)
                jsd = lt.LigerJSD(beta=beta)
                return jsd(logs(student_logits, v), logs(teacher_logits, v), y)

            return liger_triton_jsd
        if which == "kldiv":

            def liger_triton_kldiv(student_logits, teacher_logits):
                v = student_logits.shape[-1]
                kl = lt.LigerKLDIVLoss(reduction="batchmean")
                return kl(logs(student_logits, v), probs(teacher_logits, v))

            return liger_triton_kldiv

        def liger_triton_tvd(student_logits, teacher_logits, labels=None):
            if runtime == "interpreter" and student_logits.dtype.itemsize < 4:
                raise Unsupported(INTERPRETER_LOW_PRECISION)
            v = student_logits.shape[-1]
            y = None if labels is None else labels.reshape(-1)
            tvd = lt.LigerTVDLoss(reduction="batchmean")
            return tvd(probs(student_logits, v), probs(teacher_logits, v), y)

        return liger_triton_tvd

    return load


def _modelopt_kd() -> Callable:
    # nvidia-modelopt: optional (the peers extra)
    losses = _quiet_import("modelopt.torch.distill.losses")

    def modelopt_logits_kd(student_logits, teacher_logits, temperature=1.0):
        kd = losses.LogitsDistillationLoss(temperature=temperature, reduction="none")
        return kd(student_logits, teacher_logits)

    return modelopt_logits_kd


_KL_DIV_SUPPORT = Support(ignore_index=False, leading_dims=(1, 2), temperature_squared=True)

_ENDPOINTS = (
    "At β = 0 and β = 1 the generalized JSD is 0 for every p, q (the mixture is q, resp. p); "
    "the peer returns KL(p‖q) at β = 0 and KL(q‖p) at β = 1 instead, as {doc}. Its loss is "
    "continuous in β on (0, 1) and jumps at the two endpoints."
)
_TRL_ENDPOINTS = _ENDPOINTS.format(
    doc="its documentation states (trl.experimental.gkd.GKDConfig, beta: 'When beta is 0.0, "
    "the loss is the KL divergence. When beta is 1.0, the loss is the Inverse KL Divergence.')"
)
_LIGER_ENDPOINTS = _ENDPOINTS.format(
    doc="liger-kernel documents for its JSD (liger_kernel.ops.jsd: 'It implements "
    "forward/reverse KL when beta equals 0 and 1 respectively')"
)

PEERS: dict[str, Peer] = {}


def _register(peer: Peer) -> None:
    PEERS[peer.name] = peer


_register(
    Peer(
        "trl-gjsd",
        "TRL GKDTrainer.generalized_jsd_loss: generalized JSD over logits (GKD)",
        "trl",
        "trl.experimental.gkd.gkd_trainer.GKDTrainer.generalized_jsd_loss",
        _trl_gjsd,
        "js",
        "pr",
        preset="gkd_jsd",
        reduction="batchmean",
        reduction_names={"batchmean": "batchmean", "mean": "batchmean", "sum": "sum"},
        support=Support(divergences=("js",), orders=("pr",), leading_dims=(1, 2)),
        conventions=(
            "mixture m = β·p + (1−β)·q: β weights the teacher p, as amid_ref's js and the "
            "gkd_jsd preset (λ = β)",
            "loss β·KL(p‖m) + (1−β)·KL(q‖m) = D_js(p‖q; β), the AMiD loss at λ = 0 with "
            "divergence js, order pr",
            "temperature divides both logits; no T² factor",
            "reduction='batchmean': the sum over rows divided by the first dimension's size "
            "(B for (B, T, V)); with labels, the mean over kept rows (at least 1)",
            "labels equal to −100 drop their rows",
        ),
        by_design=(_TRL_ENDPOINTS,),
        by_design_modes=("jsd_endpoint_kl",),
    )
)
_register(
    Peer(
        "liger-jsd",
        "liger-kernel LigerFusedLinearJSDFunction.distillation_loss_fn: the per-chunk JSD",
        "liger-kernel",
        "liger_kernel.chunked_loss.jsd_loss.LigerFusedLinearJSDFunction.distillation_loss_fn",
        _liger_chunk_jsd,
        "js",
        "pr",
        preset="gkd_jsd",
        reduction="sum",
        support=Support(divergences=("js",), orders=("pr",), ignore_index=True, temperature=False),
        conventions=(
            "mixture m = β·p + (1−β)·q: β weights the teacher p (as TRL and amid_ref's js)",
            "returns the sum over rows of D_js(p‖q; β); rows whose target is −100 are 0",
            "no temperature here: the fused layer divides the logits by T before calling it",
        ),
        by_design=(_LIGER_ENDPOINTS,),
        by_design_modes=("jsd_endpoint_kl",),
    )
)
_register(
    Peer(
        "liger-fused-jsd",
        "liger-kernel LigerFusedLinearJSDLoss: lm_head matmul fused with the JSD (pure torch)",
        "liger-kernel",
        "liger_kernel.chunked_loss.LigerFusedLinearJSDLoss",
        _liger_fused_jsd,
        "js",
        "pr",
        preset="gkd_jsd",
        reduction="mean",
        support=Support(
            divergences=("js",),
            orders=("pr",),
            ignore_index=True,
            max_vocab=4099,
            leading_dims=(1, 2),
        ),
        conventions=(
            "called with weight_hard_loss=0, weight_soft_loss=1, compiled=False and the "
            "identity as both lm_head weights, so its logits are the case's logits",
            "mixture m = β·p + (1−β)·q: β weights the teacher p",
            "temperature divides both logits; no T² factor",
            "returns the mean over rows whose label is not −100 (the count clamped to 1)",
            "V ≤ 4099 here only because the identity lm_head is V × V",
        ),
        by_design=(_LIGER_ENDPOINTS,),
        by_design_modes=("jsd_endpoint_kl",),
    )
)
for _reverse in (False, True):
    for _log_target in (False, True):
        _word = "reverse" if _reverse else "forward"
        _name = f"torch-kl-{_word}" + ("-log-target" if _log_target else "")
        _inp, _tgt = ("log p", "q") if _reverse else ("log q", "p")
        _tgt = f"log {_tgt}" if _log_target else _tgt
        _register(
            Peer(
                _name,
                f"torch F.kl_div, {_word} KD: kl_div({_inp}, {_tgt}, reduction='batchmean', "
                f"log_target={_log_target}) · T²",
                "torch",
                "torch.nn.functional.kl_div",
                _torch_kd(_reverse, _log_target),
                "kl",
                "rp" if _reverse else "pr",
                preset="rkl" if _reverse else "kd",
                reduction="batchmean",
                support=_KL_DIV_SUPPORT,
                conventions=(
                    ("KL(q‖p)" if _reverse else "KL(p‖q)")
                    + ": F.kl_div(input, target) is Σ target·(log target − input)",
                    "log-softmax of logits / T, the loss multiplied by T² (Hinton et al.)",
                    "reduction='batchmean': the sum divided by the first dimension's size",
                ),
            )
        )


# --- the parameters of the first peers, for the mapping page --------------------------

_JS_PARAMS = (("beta", "λ = β, the teacher's weight in m = β·p + (1−β)·q (js β)"),)
_JS_AMID = "α = −1, λ = β: β·KL(p‖r) + (1−β)·KL(q‖r) = js D(p‖q; β) at λ = 0 (gkd_jsd)"
for _name, _extra in {
    "trl-gjsd": {
        "params": (*_JS_PARAMS, ("temperature", "T, dividing both logits (no T²)")),
        "masking": "labels = −100 drop rows (mean over kept rows); −inf logits unmasked "
        "(F.kl_div NaN where a distribution has a zero)",
        "label_shift": "none: labels aligned with the logits (the trainer shifts before)",
    },
    "liger-jsd": {
        "params": (*_JS_PARAMS,),
        "masking": "target = −100 zeroes the row; −inf logits unmasked (F.kl_div NaN)",
    },
    "liger-fused-jsd": {
        "params": (*_JS_PARAMS, ("temperature", "T, dividing both logits (no T²)")),
        "masking": "labels = −100 drop rows (mean over kept rows); −inf logits unmasked",
    },
}.items():
    PEERS[_name] = replace(PEERS[_name], amid=_JS_AMID, **_extra)
for _name in [n for n in PEERS if n.startswith("torch-kl-")]:
    _rev = "reverse" in _name
    PEERS[_name] = replace(
        PEERS[_name],
        params=(("temperature", "T, dividing both logits; the loss is multiplied by T²"),),
        amid=f"λ = 0, KL, {'rp' if _rev else 'pr'}: {'KL(q‖p)' if _rev else 'KL(p‖q)'} "
        f"({'rkl' if _rev else 'kd'}), × T²",
        masking="no labels; −inf logits unmasked (0·(−inf) = NaN where a target is 0)",
    )

# --- torchtune 0.6.1 ------------------------------------------------------------------

_TORCHTUNE_CE = (
    "The value is the cross-entropy −Σ p·log q = KL(p‖q) + H(p): the teacher's entropy H(p) "
    "is left out of the subtraction (as in the DistiLLM code it cites). It is constant in "
    "the student, so the gradient is KL's; the value differs from KL by H(p)."
)
_TORCHTUNE_MASK = (
    "labels = −100 drop rows (the sum over kept rows divided by their count; 0 when none is "
    "kept); entries where {which} logit is ±inf are zeroed (masked_fill(isinf(...), 0))"
)
_TORCHTUNE_SUPPORT = Support(ignore_index=True, temperature=False)
_TORCHTUNE_CONVENTIONS = (
    "logits flattened to (N, V) and labels to (N,); no temperature (the recipe divides nothing)",
    "softmax and log-softmax in float32 whatever the logits' dtype",
    "returns the mean over rows whose label is not −100 (normalize=True), 0 when none is",
)
_register(
    Peer(
        "torchtune-forward-kl",
        "torchtune ForwardKLLoss: forward KL (KD) over logits, masked by labels",
        "torchtune",
        "torchtune.modules.loss.ForwardKLLoss",
        _torchtune("ForwardKLLoss"),
        "kl",
        "pr",
        preset="kd",
        reduction="mean",
        reduction_names={"mean": "mean"},
        support=_TORCHTUNE_SUPPORT,
        conventions=(*_TORCHTUNE_CONVENTIONS, _TORCHTUNE_CE),
        params=(("ignore_index", "labels equal to it drop their rows (−100)"),),
        amid="λ = 0, KL, pr: KL(p‖q) (kd); value + H(p)",
        masking=_TORCHTUNE_MASK.format(which="the student's"),
    )
)
_register(
    Peer(
        "torchtune-reverse-kl",
        "torchtune ReverseKLLoss: reverse KL over logits, masked by labels",
        "torchtune",
        "torchtune.modules.loss.ReverseKLLoss",
        _torchtune("ReverseKLLoss"),
        "kl",
        "rp",
        preset="rkl",
        reduction="mean",
        reduction_names={"mean": "mean"},
        support=_TORCHTUNE_SUPPORT,
        conventions=(*_TORCHTUNE_CONVENTIONS, "KL(q‖p) = Σ q·(log q − log p)"),
        params=(("ignore_index", "labels equal to it drop their rows (−100)"),),
        amid="λ = 0, KL, rp: KL(q‖p) (rkl)",
        masking=_TORCHTUNE_MASK.format(which="either side's"),
    )
)
_register(
    Peer(
        "torchtune-symmetric-kl",
        "torchtune SymmetricKLLoss: ρ·forward KL + (1−ρ)·reverse KL over logits",
        "torchtune",
        "torchtune.modules.loss.SymmetricKLLoss",
        _torchtune("SymmetricKLLoss"),
        "kl",
        "pr",
        preset="symmetric_kl",
        reduction="mean",
        reduction_names={"mean": "mean"},
        support=_TORCHTUNE_SUPPORT,
        conventions=(
            *_TORCHTUNE_CONVENTIONS,
            "sym_kd_ratio ρ: ρ·ForwardKLLoss + (1−ρ)·ReverseKLLoss (ρ = 1: forward, 0: reverse)",
            "its forward part is ForwardKLLoss's cross-entropy: the value is KL's + ρ·H(p)",
        ),
        kind="preset",
        params=(
            ("sym_kd_ratio", "ρ: the weight of KL(p‖q); 1 − ρ weights KL(q‖p)"),
            ("ignore_index", "labels equal to it drop their rows (−100)"),
        ),
        amid="λ = 0, KL: ρ·KL(p‖q) + (1−ρ)·KL(q‖p), orders pr and rp (symmetric_kl); "
        "value + ρ·H(p)",
        masking=_TORCHTUNE_MASK.format(which="the student's (forward) or either side's"),
    )
)
_register(
    Peer(
        "torchtune-forward-kl-chunked",
        "torchtune ForwardKLWithChunkedOutputLoss: forward KL over logit chunks along tokens",
        "torchtune",
        "torchtune.modules.loss.ForwardKLWithChunkedOutputLoss",
        _torchtune("ForwardKLWithChunkedOutputLoss"),
        "kl",
        "pr",
        preset="kd",
        reduction="mean",
        reduction_names={"mean": "mean"},
        support=_TORCHTUNE_SUPPORT,
        conventions=(
            "called with (B, T, V) logits split into num_output_chunks = 8 chunks along T "
            "(a list, as the recipe passes them) and labels (B, T)",
            *_TORCHTUNE_CONVENTIONS[1:],
            _TORCHTUNE_CE,
        ),
        params=(
            ("num_output_chunks", "memory only: 8 chunks along the tokens"),
            ("ignore_index", "labels equal to it drop their rows (−100)"),
        ),
        amid="λ = 0, KL, pr: KL(p‖q) (kd); value + H(p)",
        masking=_TORCHTUNE_MASK.format(which="the student's"),
    )
)

# --- TRL 1.16 DistillationTrainer -------------------------------------------------------

_register(
    Peer(
        "trl-distillation",
        "TRL DistillationTrainer's loss: generalized JSD from hidden states and lm_head "
        "weights, projected in chunks",
        "trl",
        "trl.trainer.distillation_trainer._chunked_divergence_loss",
        _trl_distillation,
        "js",
        "pr",
        preset="gkd_jsd",
        reduction="mean",
        reduction_names={"mean": "mean"},
        support=Support(divergences=("js",), orders=("pr",), ignore_index=True, neg_inf=False),
        conventions=(
            "called with the identity as hidden states and the transposed logits as lm_head "
            "weights: the fp32 projection is exactly the case's logits, and the gradient is "
            "read from the student weight",
            "ChunkedDivergenceFunction: tiles of 4096 tokens × 32768 vocabulary entries, "
            "projected in fp32 (torch tiles on a CPU, Triton kernels on CUDA)",
            "mixture (1−β)·q + β·p: β weights the teacher; β = 0 returns KL(p‖q), β = 1 "
            "KL(q‖p), computed from running sums instead of the mixture",
            "temperature divides both logits; no T² factor",
            "returns the sum over positions with completion_mask = 1 divided by their count "
            "(clamped to 1); labels ≠ −100 are the mask here",
            "no −inf logits: hidden states times weights cannot produce them (−inf in the "
            "weights gives NaN in the projection)",
        ),
        by_design=(
            _ENDPOINTS.format(
                doc="its docstring states (_chunked_divergence_loss, beta: '0.0 = forward KL, "
                "1.0 = reverse KL, else generalized JSD')"
            ),
        ),
        by_design_modes=("jsd_endpoint_kl",),
        params=(
            *_JS_PARAMS,
            ("temperature", "T, dividing both logits (no T²)"),
            ("completion_mask", "positions kept (labels ≠ −100 here)"),
        ),
        amid=_JS_AMID,
        label_shift="none inside the loss: hidden states aligned to the completion tokens",
        masking="completion_mask = 0 drops positions (mean over kept, at least 1); no −inf",
    )
)

# --- liger-kernel 0.8.5 Triton kernels ---------------------------------------------------

_TRITON_NOTE = (
    "Triton kernel: natively on CUDA; on a CPU under the Triton interpreter "
    "(TRITON_INTERPRET=1), with float scalar arguments passed as fp32 as compiled Triton does"
)
_LOG_INPUTS = (
    "log-softmax of the logits in fp32, handed to the kernel in the logits' dtype (bf16 "
    "log-probabilities in a bf16 run)"
)
_register(
    Peer(
        "liger-triton-jsd",
        "liger-kernel LigerJSD: generalized JSD Triton kernel over log-probabilities",
        "liger-kernel",
        "liger_kernel.transformers.LigerJSD",
        _liger_triton("jsd"),
        "js",
        "pr",
        preset="gkd_jsd",
        reduction="mean",
        reduction_names={"mean": "mean"},
        support=Support(
            divergences=("js",),
            orders=("pr",),
            ignore_index=True,
            temperature=False,
            max_vocab=4099,
        ),
        conventions=(
            _TRITON_NOTE,
            _LOG_INPUTS,
            "mixture m = β·p + (1−β)·q: β weights the teacher p",
            "returns the sum of the per-row JSD divided by the number of rows whose label is "
            "not −100; the loss is returned in the input dtype",
            "V ≤ 4099 here to keep the interpreter fast",
        ),
        by_design=(_LIGER_ENDPOINTS,),
        by_design_modes=("jsd_endpoint_kl",),
        params=(*_JS_PARAMS, ("shift_labels", "labels = −100 drop rows")),
        amid=_JS_AMID,
        masking="shift_labels = −100 drop rows; −inf log-probabilities unmasked",
        runtime="triton",
    )
)
_register(
    Peer(
        "liger-triton-kldiv",
        "liger-kernel LigerKLDIVLoss: KL divergence Triton kernel (as torch's KLDivLoss)",
        "liger-kernel",
        "liger_kernel.transformers.LigerKLDIVLoss",
        _liger_triton("kldiv"),
        "kl",
        "pr",
        preset="kd",
        reduction="mean",
        support=Support(ignore_index=False, temperature=False, max_vocab=4099),
        conventions=(
            _TRITON_NOTE,
            "called as KLDivLoss(log q, p) with reduction='batchmean' (its default, "
            "inherited from torch's KLDivLoss, is 'mean': the sum over rows × V)",
            _LOG_INPUTS + "; the teacher's probabilities likewise",
            "log_target=False: p·(log max(p, 1e−10) − log q)",
            "V ≤ 4099 here to keep the interpreter fast",
        ),
        params=(
            ("reduction", "batchmean: the mean over rows (its default 'mean' divides by V too)"),
            ("log_target", "False: the target is p (True: log p)"),
            ("eps", "1e−10, a floor under p inside the log"),
        ),
        amid="λ = 0, KL, pr: KL(p‖q) (kd)",
        masking="no labels; the eps floor keeps p = 0 finite",
        runtime="triton",
    )
)
_register(
    Peer(
        "liger-triton-tvd",
        "liger-kernel LigerTVDLoss: total variation distance Triton kernel",
        "liger-kernel",
        "liger_kernel.transformers.LigerTVDLoss",
        _liger_triton("tvd"),
        "tv",
        "pr",
        reduction="mean",
        reduction_names={"mean": "mean"},
        support=Support(
            divergences=("tv",),
            orders=("pr",),
            ignore_index=True,
            temperature=False,
            max_vocab=4099,
        ),
        conventions=(
            _TRITON_NOTE,
            "probabilities (softmax in fp32) handed to the kernel in the logits' dtype",
            "½·Σ|p − q|, symmetric; reduction='batchmean': the sum over rows divided by the "
            "number of rows whose label is not −100",
            "V ≤ 4099 here to keep the interpreter fast",
        ),
        params=(("shift_labels", "labels = −100 drop rows"),),
        amid="λ = 0, tv: ½·Σ|p − q| (no preset)",
        masking="shift_labels = −100 drop rows",
        runtime="triton",
    )
)

# --- NVIDIA ModelOpt ----------------------------------------------------------------------

_register(
    Peer(
        "modelopt-logits-kd",
        "NVIDIA ModelOpt LogitsDistillationLoss: Hinton KD over logits",
        "nvidia-modelopt",
        "modelopt.torch.distill.losses.LogitsDistillationLoss",
        _modelopt_kd,
        "kl",
        "pr",
        preset="kd",
        reduction="none",
        support=Support(ignore_index=False, temperature_squared=True),
        conventions=(
            "F.kl_div(log_softmax(s/T), softmax(t/T).detach()) · T²",
            "called with reduction='none' (summed over the vocabulary: the KL per row); its "
            "default 'mean' divides the sum by rows × V, torch's kl_div 'mean'",
            "imports without Megatron (its Megatron plugins are optional)",
        ),
        params=(
            ("temperature", "T, dividing both logits; the loss is multiplied by T²"),
            ("reduction", "'none' here (per row); default 'mean' = Σ/(rows·V)"),
        ),
        amid="λ = 0, KL, pr: KL(p‖q) (kd), × T²",
        masking="no labels (a loss mask is the caller's, on reduction='none'); −inf logits "
        "unmasked",
    )
)


def get_peer(name: str) -> Peer:
    """The built-in peer ``name``, or a :class:`Peer` named by ``MODULE:ATTRIBUTE``."""
    if isinstance(name, Peer):
        return name
    if name in PEERS:
        return PEERS[name]
    if ":" in str(name):
        obj = load_object(name)
        if isinstance(obj, Peer):
            return obj
        raise TypeError(f"peer: {name!r} is not a Peer record")
    raise ValueError(f"peer: unknown {name!r}; built-in: {', '.join(PEERS)} (or MODULE:PEER)")


def peer_table() -> str:
    """What ``--peer list`` prints: name, package (installed version), what it computes."""
    lines = [f"{'peer':<30}{'package':<26}{'maps to':<30}summary"]
    for p in PEERS.values():
        v = p.version()
        pkg = f"{p.distribution} {v}" if v else f"{p.distribution} (not installed)"
        if p.kind == "preset":
            maps = f"preset {p.preset}"
        else:
            maps = f"{p.divergence} {'D(p‖q)' if p.order == 'pr' else 'D(q‖p)'}"
            maps += f" / {p.preset}" if p.preset else ""
        lines.append(f"{p.name:<30}{pkg:<26}{maps:<30}{p.summary}")
    lines.append("")
    lines.append("install them with: pip install 'amid-ref[peers]'")
    return "\n".join(lines)


def conform_peer(peer: str | Peer, **options: Any):
    """Run the peer's mapped battery (its divergence at λ = 0, with gradients) and return
    the :class:`~amid_ref.conformance.Report`; ``options`` are :func:`conform`'s.

    Raises ``ImportError`` naming the package when the peer is not installed, or saying why
    it cannot run in this process (liger-kernel's Triton kernels already defined without the
    interpreter, on a machine without CUDA).
    """
    rec = get_peer(peer)
    try:
        fn = rec.load()
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"peer {rec.name!r} needs the package {rec.distribution!r} "
            f"(pip install 'amid-ref[peers]'): {exc}"
        ) from exc
    options.setdefault("grad", True)
    options.setdefault("backend", "torch")  # every peer takes torch tensors
    options.setdefault("convention", "student_first")
    options.setdefault("reduction", rec.reduction)
    options.setdefault("support", rec.support)
    options.setdefault("target", f"--peer {rec.name}")
    options.setdefault("divergences", (rec.divergence,))
    options.setdefault("orders", (rec.order,))
    kind = options.pop("kind", None) or rec.kind
    if kind == "divergence" and rec.kind == "preset":
        raise ValueError(
            f"kind: peer {rec.name!r} is a weighted sum of directions; it is checked as the "
            f"preset {rec.preset!r} only (kind='preset')"
        )
    if kind == "preset" and not rec.preset:
        raise ValueError(f"kind: peer {rec.name!r} has no preset; check it as a divergence")
    if kind == "preset":  # the preset's own divergence and orders (gkd_jsd: KL, pr + qr)
        options.setdefault("preset", rec.preset)
        options.pop("divergences")
        options.pop("orders")
        options["support"] = replace(options["support"], divergences=None, orders=None)
    report = conform(fn, kind, reduction_names=rec.reduction_names, **options)
    report.settings["peer"] = rec.describe()
    return report
