"""Students, distillation methods and the training loop of the study (torch).

A *method* is one distillation objective: a single AMiD term
``D(order; r^(α,λ))`` or a preset of :mod:`amid_ref.presets` (a weighted sum of AMiD
terms, optionally with a λ schedule such as TAID's). The loss itself always comes from
:class:`gpu.AMiDLoss`; this module only wires it into an optimisation loop and measures
the student exactly against the known teacher.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from amid_ref import presets
from amid_ref.study._metrics import HeldOutEvaluator
from amid_ref.study._records import Method, RunResult, TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from amid_ref.study._teacher import SyntheticTeacher

__all__ = [
    "Method",
    "RunResult",
    "TrainConfig",
    "amid_method",
    "build_loss",
    "make_student",
    "preset_method",
    "train_student",
]


#: TAID's default interpolation schedule (Shing et al., ICLR 2025: t_start = 0.4,
#: t_end = 1.0); the study uses its non-adaptive (linear) form.
TAID_SCHEDULE: tuple[float, float] = (0.4, 1.0)


def amid_method(
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: dict[str, float] | None = None,
    label: str | None = None,
) -> Method:
    """A single-term AMiD method ``D(order)`` with assistant ``r^(α,λ)`` (not detached)."""
    params = tuple(sorted((div_params or {}).items()))
    if label is None:
        label = f"amid[{divergence},{order},α={alpha:g},λ={lam:g}]"
    return Method(
        label=label,
        alpha=float(alpha),
        lam=float(lam),
        divergence=divergence,
        terms=((order, 1.0),),
        div_params=params,
    )


def preset_method(name: str, label: str | None = None) -> Method:
    """The method of preset ``name`` from :mod:`amid_ref.presets`.

    The preset supplies α, λ, the divergence, its parameters, the weighted terms and
    whether the assistant is detached. ``taid`` additionally gets TAID's linear
    schedule λ = t from 0.4 to 1.0 over training (its non-adaptive form).
    """

    preset = presets.get(name)
    params = preset.div_params or {}
    schedule = TAID_SCHEDULE if preset.name == "taid" else None
    return Method(
        label=label or preset.name,
        alpha=float(preset.alpha),
        lam=float(preset.lam),
        divergence=preset.divergence,
        terms=tuple((str(o), float(w)) for o, w in preset.terms),
        div_params=tuple(sorted(dict(params).items())),
        detach_assistant=bool(preset.detach_assistant),
        lam_schedule=schedule,
        preset=preset.name,
    )


def _default_loss_class():
    # gpu: optional (needs torch, the gpu extra)
    import gpu

    try:
        return gpu.AMiDLoss
    except AttributeError:  # e.g. a stale editable install resolving ``gpu`` as a namespace
        raise ImportError(
            "gpu.AMiDLoss is not available (gpu resolved to "
            f"{list(getattr(gpu, '__path__', []))}); reinstall the project "
            "(pip install -e .) or run from the repository root"
        ) from None


def build_loss(
    method: Method, loss_class: Callable[..., Any] | None = None
) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """The training loss of ``method``: ``(student_logits, teacher_logits, progress) → scalar``.

    .. math::

        \\mathcal{L}(s, t) = \\sum_i w_i \\, \\mathrm{AMiDLoss}_{\\text{order}_i}
        \\big(s, t; \\alpha, \\lambda(\\text{progress})\\big)

    Each term is a :class:`gpu.AMiDLoss` (mean over the batch rows); λ is updated from the
    method's schedule before each call.
    """
    cls = _default_loss_class() if loss_class is None else loss_class
    params = dict(method.div_params) or None
    modules = [
        (
            cls(
                method.alpha,
                method.lam_at(0.0),
                divergence=method.divergence,
                order=order,
                div_params=params,
                detach_assistant=method.detach_assistant,
            ),
            float(weight),
        )
        for order, weight in method.terms
    ]

    def loss(student_logits, teacher_logits, progress: float):
        lam = method.lam_at(progress)
        total = None
        for module, weight in modules:
            module.lam = lam
            term = module(student_logits, teacher_logits)
            total = weight * term if total is None else total + weight * term
        return total

    return loss


def make_student(context_dim: int, vocab_size: int, config: TrainConfig):
    """The low-capacity student network (a torch ``nn.Module``), float32.

    Shapes: input (N, context_dim) → logits (N, vocab_size).
    """
    # torch: optional (the gpu extra)
    from torch import nn

    return nn.Sequential(
        nn.Linear(context_dim, config.student_hidden),
        nn.Tanh(),
        nn.Linear(config.student_hidden, config.student_rank),
        nn.Linear(config.student_rank, vocab_size),
    )


def _grad_norm(parameters) -> float:
    # torch: optional (the gpu extra)
    import torch

    grads = [p.grad.detach().reshape(-1) for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.cat(grads)).item())


def train_student(
    teacher: SyntheticTeacher,
    method: Method,
    config: TrainConfig,
    seed: int = 0,
    *,
    loss_class: Callable[..., Any] | None = None,
    extra_metrics: Callable[[np.ndarray], dict[str, float]] | None = None,
) -> RunResult:
    """Distill a fresh student from ``teacher`` with ``method`` and measure it.

    The student's initial weights and the sequence of training batches depend only on
    ``seed`` (``torch.manual_seed(seed)`` and a seeded ``torch.Generator``), so every
    method sees the same initialisation and the same data order: comparisons are paired.
    A step whose loss or gradient is not finite, or whose loss raises ``ValueError``
    (``gpu.AMiDLoss`` refuses rows with an infinite loss), is counted and skipped (no
    update; the learning-rate schedule still advances).

    Parameters
    ----------
    teacher : SyntheticTeacher
        Teacher with its training and held-out contexts.
    method : Method
        Objective (see :func:`amid_method`, :func:`preset_method`).
    config : TrainConfig
        Steps, batch size, optimiser, student size and metric thresholds.
    seed : int
        Seed of the student initialisation and of the batch order.
    loss_class : callable, optional
        Replacement for :class:`gpu.AMiDLoss` (same constructor; called as
        ``module(student_logits, teacher_log_probs)``), e.g. a sparse-teacher loss.
    extra_metrics : callable, optional
        ``f(student_logits) → dict`` on the held-out contexts (float64, shape (N, V)),
        merged into every evaluation (``initial``, ``final``, ``curve``).

    Returns
    -------
    RunResult
    """
    # torch: optional (the gpu extra)
    import torch

    start = time.perf_counter()
    cpu_start = time.process_time()
    loss_fn = build_loss(method, loss_class)
    torch.manual_seed(seed)
    cfg = teacher.config
    student = make_student(cfg.context_dim, cfg.vocab_size, config)
    params = list(student.parameters())
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=config.lr)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr)

    def lr_at(step: int) -> float:
        if config.lr_schedule == "cosine":  # cosine decay from lr to 0, no warm-up
            return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
        return config.lr

    generator = torch.Generator().manual_seed(seed)

    x_train = torch.as_tensor(teacher.train_contexts, dtype=torch.float32)
    t_train = torch.as_tensor(teacher.train_log_probs, dtype=torch.float32)
    x_test = torch.as_tensor(teacher.test_contexts, dtype=torch.float32)
    evaluator = HeldOutEvaluator(
        teacher.test_log_probs,
        top_k=config.top_k,
        mode_mass=config.mode_mass,
        cover_mass=config.cover_mass,
    )

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            logits = student(x_test).double().numpy()
        metrics = evaluator(logits)
        if extra_metrics is not None:
            metrics.update(extra_metrics(logits))
        return metrics

    initial = evaluate()
    curve: list[dict[str, float]] = [
        {"step": 0, **initial, "train_loss": float("nan"), "grad_norm_max": float("nan")}
    ]
    losses: list[float] = []
    norms: list[float] = []
    window_losses: list[float] = []
    window_norms: list[float] = []
    bad_loss = bad_grad = 0
    first_error: str | None = None
    n_train = x_train.shape[0]
    for step in range(config.steps):
        progress = step / max(config.steps - 1, 1)
        idx = torch.randint(n_train, (config.batch_size,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        try:
            loss = loss_fn(student(x_train[idx]), t_train[idx], progress)
            value = float(loss.detach().item())
        except ValueError as exc:
            # gpu.AMiDLoss refuses rows whose loss is +inf (gradient undefined): count the
            # step as non-finite and keep the first message for the report.
            value = math.inf
            if first_error is None:
                first_error = str(exc)
        if not math.isfinite(value):
            bad_loss += 1
            losses.append(value)
        else:
            loss.backward()
            norm = _grad_norm(params)
            if not math.isfinite(norm):
                bad_grad += 1
            else:
                norms.append(norm)
                window_norms.append(norm)
                losses.append(value)
                window_losses.append(value)
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
                optimizer.step()
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            curve.append(
                {
                    "step": step + 1,
                    **evaluate(),
                    "train_loss": float(np.mean(window_losses)) if window_losses else math.nan,
                    "grad_norm_max": float(np.max(window_norms)) if window_norms else math.nan,
                }
            )
            window_losses, window_norms = [], []
    final = {k: v for k, v in curve[-1].items() if k not in ("step", "train_loss", "grad_norm_max")}
    arr = np.asarray(norms, dtype=np.float64)
    median = float(np.median(arr)) if arr.size else math.nan
    stability = {
        "nonfinite_loss_steps": float(bad_loss),
        "nonfinite_grad_steps": float(bad_grad),
        "skipped_steps": float(bad_loss + bad_grad),
        "grad_norm_median": median,
        "grad_norm_p99": float(np.quantile(arr, 0.99)) if arr.size else math.nan,
        "grad_norm_max": float(arr.max()) if arr.size else math.nan,
        "grad_spike_ratio": float(arr.max() / median) if arr.size and median > 0 else math.nan,
        "final_train_loss": float(losses[-1]) if losses else math.nan,
    }
    return RunResult(
        method=method,
        seed=seed,
        initial=initial,
        final=final,
        stability=stability,
        curve=curve,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        loss_error=" ".join((first_error or "").split()),
    )
