"""The study's records: what a run is (:class:`Method`, :class:`RunSpec`), how it is set up
(:class:`TrainConfig`, :class:`StudyConfig`) and what it measured (:class:`RunResult`,
:class:`StudyResult`). Plain data, apart from the training loop, the sweep, the report and
the plots that read them, so that none of those modules imports another for its types."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from amid_ref._specs import ORDERS
from amid_ref.presets import PRESETS
from amid_ref.study._teacher import TeacherConfig

__all__ = [
    "EXPERIMENTS",
    "Method",
    "RunResult",
    "RunSpec",
    "StudyConfig",
    "StudyResult",
    "TrainConfig",
]

_ORDERS = tuple(ORDERS)


#: The three experiments of the study: the α sweep (questions 1 and 2), stability with
#: near-zero teacher probabilities (question 3), prior methods' presets (question 4).
EXPERIMENTS: tuple[str, ...] = ("alpha", "stability", "presets")


#: Presets of the registry left out of the default prior-methods experiment, each with the
#: reason.
PRESETS_NOT_IN_STUDY: dict[str, str] = {
    "symmetric_kl": (
        "registered after the default study behind docs/figures/study was run; adding it "
        "changes that study's runs"
    ),
}

#: The presets of the prior-methods experiment: the registry's (amid_ref.presets.PRESETS), in
#: its order, but those of PRESETS_NOT_IN_STUDY.
_PRESETS: tuple[str, ...] = tuple(name for name in PRESETS if name not in PRESETS_NOT_IN_STUDY)


@dataclass(frozen=True)
class Method:
    """One distillation objective: ``Σ_i w_i · D(order_i)`` with the assistant ``r^(α,λ)``.

    Parameters
    ----------
    label : str
        Short unique name used in tables and plots.
    alpha : float
        α of the assistant (±inf allowed).
    lam : float
        λ ∈ [0, 1], the teacher's weight in the assistant.
    divergence : str
        Divergence name understood by :class:`gpu.AMiDLoss`.
    terms : tuple of (str, float)
        ``(order, weight)`` pairs; order in ``("pr", "qr", "rp", "rq")``.
    div_params : tuple of (str, float)
        Divergence parameters as sorted pairs (hashable), e.g. ``(("alpha", 0.2),
        ("beta", 0.7))`` for ``"ab"``.
    detach_assistant : bool
        Stop gradients through ``r`` (TAID and DistiLLM-2 do; AMiD does not).
    lam_schedule : tuple of (float, float) or None
        If set, λ moves linearly from the first to the second value over training
        (TAID's ``t``), overriding ``lam``.
    preset : str or None
        Name of the :mod:`amid_ref.presets` preset this method reproduces, if any.
    """

    label: str
    alpha: float
    lam: float
    divergence: str = "kl"
    terms: tuple[tuple[str, float], ...] = (("pr", 1.0),)
    div_params: tuple[tuple[str, float], ...] = ()
    detach_assistant: bool = False
    lam_schedule: tuple[float, float] | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"Method.label must be a non-empty str, got {self.label!r}")
        if math.isnan(float(self.alpha)):
            raise ValueError("Method.alpha is NaN")
        if not 0.0 <= float(self.lam) <= 1.0:
            raise ValueError(f"Method.lam must lie in [0, 1], got {self.lam!r}")
        if not self.terms:
            raise ValueError("Method.terms is empty")
        for order, weight in self.terms:
            if order not in _ORDERS:
                raise ValueError(f"Method.terms: order must be one of {_ORDERS}, got {order!r}")
            if not math.isfinite(float(weight)):
                raise ValueError(f"Method.terms: weight must be finite, got {weight!r}")
        if self.lam_schedule is not None:
            a, b = self.lam_schedule
            if not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0):
                raise ValueError(
                    f"Method.lam_schedule must lie in [0, 1]², got {self.lam_schedule}"
                )

    @property
    def order(self) -> str:
        """The orders of the terms joined by ``+`` (e.g. ``"pr+qr"`` for GKD's JSD)."""
        return "+".join(order for order, _ in self.terms)

    def lam_at(self, progress: float) -> float:
        """λ at training progress ``progress ∈ [0, 1]`` (constant without a schedule)."""
        if self.lam_schedule is None:
            return float(self.lam)
        a, b = self.lam_schedule
        return float(a + (b - a) * min(max(progress, 0.0), 1.0))

    def describe(self) -> dict[str, Any]:
        """Plain-data description (for CSV/JSON); :meth:`from_description` inverts it."""
        out = asdict(self)
        out["terms"] = [list(t) for t in self.terms]
        out["div_params"] = dict(self.div_params)
        out["order"] = self.order
        return out

    @classmethod
    def from_description(cls, data: dict[str, Any]) -> Method:
        """The method that :meth:`describe` described (α may be the strings ``"±inf"``)."""
        schedule = data.get("lam_schedule")
        return cls(
            label=data["label"],
            alpha=float(data["alpha"]),
            lam=float(data["lam"]),
            divergence=data["divergence"],
            terms=tuple((str(o), float(w)) for o, w in data["terms"]),
            div_params=tuple(sorted((str(k), float(v)) for k, v in data["div_params"].items())),
            detach_assistant=bool(data["detach_assistant"]),
            lam_schedule=None if schedule is None else (float(schedule[0]), float(schedule[1])),
            preset=data.get("preset"),
        )


@dataclass(frozen=True)
class TrainConfig:
    """Student size, optimiser and measurement settings of one training run.

    The student maps a context ``x`` to logits ``E h(x) + b`` with
    ``h = W₂ tanh(W₁ x)`` of dimension ``student_rank``: a rank-limited softmax that can
    follow one teacher component but not the mixture of several.
    """

    steps: int = 300
    batch_size: int = 128
    lr: float = 1e-2
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    grad_clip: float | None = None
    eval_every: int = 50
    student_hidden: int = 64
    student_rank: int = 8
    top_k: int = 10
    mode_mass: float = 0.05
    cover_mass: float = 0.01

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "eval_every",
            "student_hidden",
            "student_rank",
            "top_k",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(
                f"TrainConfig.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}"
            )
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"TrainConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be None or > 0, got {self.grad_clip!r}")


@dataclass
class RunResult:
    """Everything measured in one training run.

    ``initial`` and ``final`` are :func:`exact_metrics` dicts on the held-out contexts;
    ``stability`` holds non-finite step counts and gradient-norm statistics; ``curve`` is a
    list of dicts with ``step``, the metrics, the mean training loss over the preceding
    window and the largest gradient norm in it; ``loss_error`` is the first error the loss
    raised (e.g. ``gpu.AMiDLoss`` refusing an infinite loss), empty if none; ``seconds``
    and ``cpu_seconds`` are the run's wall and process CPU time.
    """

    method: Method
    seed: int
    initial: dict[str, float]
    final: dict[str, float]
    stability: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    loss_error: str = ""


@dataclass(frozen=True)
class RunSpec:
    """One training run: experiment, teacher variant, method and seed."""

    experiment: str
    teacher: str
    method: Method
    seed: int

    @property
    def run_id(self) -> str:
        """Stable identifier ``experiment/teacher/label/seed``."""
        return f"{self.experiment}/{self.teacher}/{self.method.label}/s{self.seed}"


@dataclass(frozen=True)
class StudyConfig:
    """Everything that determines a study (and therefore its results).

    Parameters
    ----------
    name : str
        ``"default"``, ``"quick"`` or a user label.
    teacher : TeacherConfig
        The base teacher.
    teacher_seed : int
        Seed of the teacher's weights and contexts.
    teacher_variants : tuple of (str, tuple of (str, value))
        Named teachers derived from the base one for the stability experiment, e.g.
        ``("cold", (("temperature", 0.25),))``; ``"base"`` is always available.
    train : TrainConfig
        Student, optimiser and metric settings shared by every run (equal budget).
    seeds : tuple of int
        Seeds of the student initialisation and batch order; every method runs with each.
    alphas : tuple of float
        α grid of the sweep.
    lams : tuple of float or None
        λ grid of the sweep; ``None`` uses :func:`auto_lam` per order.
    divergences, orders : tuple of str
        Divergence × order grid of the sweep.
    sweep_pairs : tuple of (str, str) or None
        If set, the sweep uses only these (divergence, order) pairs instead of the full
        product ``divergences × orders``.
    stability_teachers : tuple of str
        Teacher variants used by the stability experiment.
    stability_methods : tuple of Method
        Methods of the stability experiment.
    presets : tuple of str
        Preset names of the prior-methods experiment.
    preset_extra : tuple of Method
        AMiD settings run alongside the presets.
    experiments : tuple of str
        Subset of :data:`EXPERIMENTS` to run.
    threads : int
        ``torch.set_num_threads`` in every worker.
    jobs : int
        Worker processes (1 runs in this process). Results do not depend on it.
    """

    name: str = "default"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    teacher_seed: int = 0
    teacher_variants: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = (
        ("cold", (("temperature", 0.25),)),
        ("truncated", (("top_k", 20),)),
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: tuple[int, ...] = (0, 1)
    alphas: tuple[float, ...] = (-5.0, -3.0, -1.0, 0.0, 0.5, 1.0, 3.0)
    lams: tuple[float, ...] | None = None
    divergences: tuple[str, ...] = ("kl",)
    orders: tuple[str, ...] = tuple(ORDERS)
    sweep_pairs: tuple[tuple[str, str], ...] | None = None
    stability_teachers: tuple[str, ...] = ("cold", "truncated")
    stability_methods: tuple[Method, ...] = ()
    presets: tuple[str, ...] = _PRESETS
    preset_extra: tuple[Method, ...] = ()
    experiments: tuple[str, ...] = EXPERIMENTS
    threads: int = 1
    jobs: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"experiments: unknown {sorted(unknown)}; choose from {EXPERIMENTS}")
        names = {"base"} | {name for name, _ in self.teacher_variants}
        missing = set(self.stability_teachers) - names
        if missing:
            raise ValueError(f"stability_teachers: unknown teacher variants {sorted(missing)}")
        if not self.seeds:
            raise ValueError("seeds is empty")
        if self.threads < 1 or self.jobs < 1:
            raise ValueError(f"threads and jobs must be >= 1, got {self.threads}, {self.jobs}")
        for lam in self.lams or ():
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"lams: every λ must lie in [0, 1], got {lam}")
        for alpha in self.alphas:
            if math.isnan(alpha):
                raise ValueError("alphas contains NaN")

    def teacher_config(self, variant: str) -> TeacherConfig:
        """The :class:`TeacherConfig` of a named teacher variant (``"base"`` included)."""
        if variant == "base":
            return self.teacher
        for name, changes in self.teacher_variants:
            if name == variant:
                return self.teacher.variant(**dict(changes))
        raise ValueError(f"unknown teacher variant {variant!r}")

    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The (divergence, order) pairs of the α sweep."""
        if self.sweep_pairs is not None:
            return self.sweep_pairs
        return tuple((d, o) for d in self.divergences for o in self.orders)

    def describe(self) -> dict[str, Any]:
        """Plain-data description (for JSON)."""
        out = asdict(self)
        out["stability_methods"] = [m.describe() for m in self.stability_methods]
        out["preset_extra"] = [m.describe() for m in self.preset_extra]
        out["teacher_variants"] = {n: dict(c) for n, c in self.teacher_variants}
        return out


@dataclass
class StudyResult:
    """Results of a study: the configuration, one result per run and the wall time."""

    config: StudyConfig
    runs: list[tuple[RunSpec, RunResult]]
    seconds: float = 0.0

    def select(
        self, experiment: str, teacher: str | None = None
    ) -> list[tuple[RunSpec, RunResult]]:
        """The runs of one experiment (optionally one teacher variant)."""
        return [
            (s, r)
            for s, r in self.runs
            if s.experiment == experiment and (teacher is None or s.teacher == teacher)
        ]
