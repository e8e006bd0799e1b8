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

import importlib.metadata
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from amid_ref.conformance._adapters import Support
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
    lines = [f"{'peer':<28}{'package':<22}{'maps to':<28}summary"]
    for p in PEERS.values():
        v = p.version()
        pkg = f"{p.distribution} {v}" if v else f"{p.distribution} (not installed)"
        maps = f"{p.divergence} {'D(p‖q)' if p.order == 'pr' else 'D(q‖p)'}"
        maps += f" / {p.preset}" if p.preset else ""
        lines.append(f"{p.name:<28}{pkg:<22}{maps:<28}{p.summary}")
    lines.append("")
    lines.append("install them with: pip install 'amid-ref[peers]'")
    return "\n".join(lines)


def conform_peer(peer: str | Peer, **options: Any):
    """Run the peer's mapped battery (its divergence at λ = 0, with gradients) and return
    the :class:`~amid_ref.conformance.Report`; ``options`` are :func:`conform`'s.

    Raises ``ImportError`` naming the package when the peer is not installed.
    """
    rec = get_peer(peer)
    try:
        fn = rec.load()
    except ImportError as exc:
        raise ImportError(
            f"peer {rec.name!r} needs the package {rec.distribution!r} "
            f"(pip install 'amid-ref[peers]'): {exc}"
        ) from exc
    options.setdefault("grad", True)
    options.setdefault("convention", "student_first")
    options.setdefault("reduction", rec.reduction)
    options.setdefault("support", rec.support)
    options.setdefault("target", f"--peer {rec.name}")
    options.setdefault("divergences", (rec.divergence,))
    options.setdefault("orders", (rec.order,))
    kind = options.pop("kind", "divergence")
    if kind == "preset":  # the preset's own divergence and orders (gkd_jsd: KL, pr + qr)
        options.setdefault("preset", rec.preset)
        options.pop("divergences")
        options.pop("orders")
        options["support"] = replace(options["support"], divergences=None, orders=None)
    report = conform(fn, kind, reduction_names=rec.reduction_names, **options)
    report.settings["peer"] = rec.describe()
    return report
