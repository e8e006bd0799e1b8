"""Study configurations, the list of runs they expand to, and the sweep runner."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from amid_ref._cli._util import (
    Progress,
    ignore_interrupts,
    staged_output,
    starting_workers,
    stop_workers,
)
from amid_ref._specs import SPECS
from amid_ref.study._metrics import METRIC_NAMES
from amid_ref.study._plots import plot_all
from amid_ref.study._records import (
    EXPERIMENTS,
    Method,
    RunResult,
    RunSpec,
    StudyConfig,
    StudyResult,
    TrainConfig,
)
from amid_ref.study._report import answers, summary_markdown
from amid_ref.study._teacher import TeacherConfig, make_teacher
from amid_ref.study._train import (
    amid_method,
    preset_method,
    train_student,
)

__all__ = [
    "DEFAULT_DIV_PARAMS",
    "EXPERIMENTS",
    "RunSpec",
    "StudyConfig",
    "StudyResult",
    "auto_lam",
    "build_runs",
    "default_config",
    "load_study",
    "quick_config",
    "run_study",
]

#: Divergence parameters used by the sweep for a divergence with parameters: its record's
#: first "sweep" parameter set (for AB the AMiD paper's (0.2, 0.7)).
DEFAULT_DIV_PARAMS: dict[str, dict[str, float]] = {
    name: dict(spec.cases_for("sweep")[0])
    for name, spec in SPECS.items()
    if spec.params and spec.cases_for("sweep")
}


def auto_lam(order: str) -> float:
    """λ used for ``order`` when the sweep's λ is ``"auto"``.

    The assistant is put near the distribution it is compared with, as the prior methods
    do: λ = 0.1 (r ≈ q) for ``pr`` and ``rp``; λ = 0.9 (r ≈ p) for ``qr`` and ``rq``
    (DistiLLM's skew reverse KL uses ``qr`` with λ = 0.9; TAID's t ends near 1).
    """
    if order in ("pr", "rp"):
        return 0.1
    if order in ("qr", "rq"):
        return 0.9
    raise ValueError(f"order must be one of 'pr', 'qr', 'rp', 'rq', got {order!r}")


def _stability_methods() -> tuple[Method, ...]:
    return (
        amid_method(1.0, 0.0, "kl", "pr", label="KL (λ=0, pr)"),
        amid_method(1.0, 0.0, "kl", "rp", label="RKL (λ=0, rp)"),
        amid_method(-5.0, 0.1, "kl", "pr", label="AMiD α=-5 λ=0.1 pr"),
        amid_method(-1.0, 0.1, "kl", "pr", label="AMiD α=-1 λ=0.1 pr"),
        amid_method(1.0, 0.1, "kl", "pr", label="AMiD α=1 λ=0.1 pr"),
        amid_method(-5.0, 0.9, "kl", "qr", label="AMiD α=-5 λ=0.9 qr"),
    )


def default_config(**overrides) -> StudyConfig:
    """The default study: a few minutes on two CPU cores (two worker processes).

    Vocabulary 2048, 2-component teacher, 2048 training and 512 held-out contexts,
    200 Adam steps (cosine learning rate from 0.02) of 32 contexts; α ∈ {−5, −3, −1, 0,
    0.5, 1, 3} × the four orders of KL (auto λ) plus the AB-divergence (0.2, 0.7) in order
    ``pr``; two seeds; the stability experiment on a cold (T = 0.25) and a
    top-20-truncated teacher; all seven presets. 108 runs.
    """
    cfg = StudyConfig(
        name="default",
        teacher=TeacherConfig(
            vocab_size=2048,
            n_components=2,
            sharpness=32.0,
            mixing_scale=1.0,
            n_train=2048,
            n_test=512,
        ),
        train=TrainConfig(steps=200, batch_size=32, lr=2e-2, eval_every=25, student_rank=16),
        seeds=(0, 1),
        sweep_pairs=(("kl", "pr"), ("kl", "qr"), ("kl", "rp"), ("kl", "rq"), ("ab", "pr")),
        stability_methods=_stability_methods(),
        jobs=2,
    )
    return replace(cfg, **overrides)


def quick_config(**overrides) -> StudyConfig:
    """The ``--quick`` study (well under a minute of CPU): same teacher family, smaller.

    Vocabulary 2048, 512 training and 256 held-out contexts, 60 steps of 32 contexts, one
    seed, α ∈ {−5, −1, 1} for KL ``pr`` and ``rp``, three stability methods on the cold
    teacher and three presets; one process. 12 runs.
    """
    cfg = StudyConfig(
        name="quick",
        teacher=TeacherConfig(
            vocab_size=2048,
            n_components=2,
            sharpness=32.0,
            mixing_scale=1.0,
            n_train=512,
            n_test=256,
        ),
        train=TrainConfig(steps=60, batch_size=32, lr=2e-2, eval_every=20, student_rank=16),
        seeds=(0,),
        alphas=(-5.0, -1.0, 1.0),
        sweep_pairs=(("kl", "pr"), ("kl", "rp")),
        stability_teachers=("cold",),
        stability_methods=_stability_methods()[:3],
        presets=("kd", "gkd_jsd", "taid"),
        jobs=1,
    )
    return replace(cfg, **overrides)


def build_runs(config: StudyConfig) -> list[RunSpec]:
    """Expand a configuration into its list of runs (a fixed, deterministic order)."""
    runs: list[RunSpec] = []
    if "alpha" in config.experiments:
        for divergence, order in config.pairs():
            params = DEFAULT_DIV_PARAMS.get(divergence)
            lams = config.lams if config.lams is not None else (auto_lam(order),)
            for lam in lams:
                for alpha in config.alphas:
                    method = amid_method(alpha, lam, divergence, order, params)
                    runs.extend(RunSpec("alpha", "base", method, s) for s in config.seeds)
    if "stability" in config.experiments:
        for teacher in config.stability_teachers:
            for method in config.stability_methods:
                runs.extend(RunSpec("stability", teacher, method, s) for s in config.seeds)
    if "presets" in config.experiments:
        methods = [preset_method(name) for name in config.presets]
        methods.extend(config.preset_extra)
        for method in methods:
            runs.extend(RunSpec("presets", "base", method, s) for s in config.seeds)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError("the configuration expands to duplicate runs (same label and seed)")
    return runs


# --------------------------------------------------------------------------- runner


_TEACHERS: dict[tuple[TeacherConfig, int], Any] = {}


def _teacher(config: TeacherConfig, seed: int):
    key = (config, seed)
    if key not in _TEACHERS:
        _TEACHERS.clear()  # one teacher at a time keeps memory flat
        _TEACHERS[key] = make_teacher(config, seed)
    return _TEACHERS[key]


def _configure_torch(threads: int) -> None:
    # torch: optional (the gpu extra)
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _execute(payload: tuple[StudyConfig, RunSpec]) -> RunResult:
    """Run one spec (also the entry point of worker processes)."""

    config, spec = payload
    teacher = _teacher(config.teacher_config(spec.teacher), config.teacher_seed)
    return train_student(teacher, spec.method, config.train, spec.seed)


def _worker_init(threads: int) -> None:
    ignore_interrupts()  # Ctrl-C: the parent stops the workers (stop_workers)
    _configure_torch(threads)


class _Progress:
    """One display line for the runs (:class:`amid_ref._cli._util.Progress`) and one log
    line per finished run; ETAs appear once a few runs have finished."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total = total
        self.stream = stream
        self.display = None if stream is None else Progress(stream)
        self.task = None

    def __enter__(self) -> _Progress:
        if self.display is not None:
            self.display.__enter__()
            self.task = self.display.task("runs", self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.display is not None:
            self.display.__exit__(*exc)

    def update(self, spec: RunSpec, result: RunResult) -> None:
        if self.display is None:
            return
        f = result.final
        bad = int(result.stability["skipped_steps"])
        self.display.log(
            f"  {spec.experiment:9s} {spec.teacher:9s} {spec.method.label} s{spec.seed}: "
            f"KL(p‖q) {result.initial['forward_kl']:.3f}→{f['forward_kl']:.3f} "
            f"H(q) {f['student_entropy']:.2f}"
            + (f" skipped {bad}" if bad else "")
            + f" [{result.seconds:.1f} s]"
        )
        self.task.update(advance=1)


def _run_all(config: StudyConfig, specs, results: list, tracker: _Progress) -> None:
    """Run every spec (here or in ``config.jobs`` processes) into ``results``."""
    # torch: optional (the gpu extra)
    import torch

    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        _configure_torch(config.threads)
        if config.jobs == 1:
            for i, spec in enumerate(specs):
                results[i] = _execute((config, spec))
                tracker.update(spec, results[i])
        else:
            pool = cf.ProcessPoolExecutor(
                max_workers=config.jobs,
                mp_context=mp.get_context("spawn"),
                initializer=_worker_init,
                initargs=(config.threads,),
            )
            try:
                with starting_workers():  # submit starts them
                    futures = {pool.submit(_execute, (config, s)): i for i, s in enumerate(specs)}
                for future in cf.as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    tracker.update(specs[i], results[i])
            except BaseException:  # Ctrl-C or a failed run: stop the other runs now
                stop_workers(pool)
                raise
            pool.shutdown()
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)
        _TEACHERS.clear()


def run_study(
    config: StudyConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    progress: TextIO | None = sys.stderr,
    plots: bool = True,
) -> StudyResult:
    """Run every training run of ``config``; optionally write the outputs to ``out_dir``.

    Torch is set to ``config.threads`` threads and deterministic algorithms while the
    study runs (the previous settings are restored afterwards). Runs are independent and
    seeded, so the results depend on the configuration (and the thread count), not on
    ``config.jobs`` or on the order of completion.

    Parameters
    ----------
    config : StudyConfig
    out_dir : path, optional
        Where to write ``runs.csv``, ``curves.csv``, ``results.json``, ``summary.md``,
        ``timings.json`` and ``figures/*.png`` (see :func:`write_outputs`).
    progress : text stream or None
        Where to show the progress (``None``: silent): a live display on a terminal,
        else one line per finished run and the count with its ETA every few seconds.
    plots : bool
        Render the figures (needs matplotlib).

    Returns
    -------
    StudyResult
    """
    specs = build_runs(config)
    if progress is not None:
        print(
            f"amid-ref study '{config.name}': {len(specs)} runs, {config.train.steps} steps "
            f"each, V={config.teacher.vocab_size}, jobs={config.jobs}, threads={config.threads}",
            file=progress,
            flush=True,
        )
    start = time.perf_counter()
    results: list[RunResult | None] = [None] * len(specs)
    with _Progress(len(specs), progress) as tracker:
        _run_all(config, specs, results, tracker)
    study = StudyResult(
        config=config,
        runs=[(s, r) for s, r in zip(specs, results, strict=True) if r is not None],
        seconds=time.perf_counter() - start,
    )
    if out_dir is not None:
        write_outputs(study, out_dir, plots=plots)
    return study


# --------------------------------------------------------------------------- outputs

_STABILITY_NAMES: tuple[str, ...] = (
    "nonfinite_loss_steps",
    "nonfinite_grad_steps",
    "skipped_steps",
    "grad_norm_median",
    "grad_norm_p99",
    "grad_norm_max",
    "grad_spike_ratio",
    "final_train_loss",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def run_rows(study: StudyResult) -> list[dict[str, Any]]:
    """One flat dict per run: identification, final metrics, stability, initial KL."""
    rows = []
    for spec, result in study.runs:
        m = spec.method
        row: dict[str, Any] = {
            "run_id": spec.run_id,
            "experiment": spec.experiment,
            "teacher": spec.teacher,
            "method": m.label,
            "preset": m.preset or "",
            "divergence": m.divergence,
            "order": m.order,
            "alpha": float(m.alpha),
            "lam": float(m.lam),
            "lam_schedule": ""
            if m.lam_schedule is None
            else f"{m.lam_schedule[0]}->{m.lam_schedule[1]}",
            "detach_assistant": m.detach_assistant,
            "seed": spec.seed,
            "initial_forward_kl": result.initial["forward_kl"],
        }
        row.update({name: result.final[name] for name in METRIC_NAMES})
        row.update({name: result.stability[name] for name in _STABILITY_NAMES})
        row["loss_error"] = result.loss_error
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    keys = list(rows[0])
    lines = [",".join(keys)]
    for row in rows:
        cells = []
        for k in keys:
            cell = _fmt(row[k])
            if "," in cell or '"' in cell:
                cell = '"' + cell.replace('"', '""') + '"'
            cells.append(cell)
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_outputs(
    study: StudyResult, out_dir: str | os.PathLike[str], *, plots: bool = True
) -> Path:
    """Write a study's results into ``out_dir`` (created if needed).

    Files: ``runs.csv`` (one row per run), ``curves.csv`` (held-out metrics every
    ``eval_every`` steps), ``results.json`` (configuration, runs with curves, and the
    computed answers; non-finite numbers as the strings ``"nan"``, ``"inf"``,
    ``"-inf"``), ``summary.md`` (the answers as tables), ``timings.json`` (wall times: the
    only file that is not deterministic) and ``figures/*.png``. They are written into a
    private folder inside ``out_dir`` and moved into place at the end, so an interrupted
    call leaves ``out_dir`` as it was.
    """

    out = Path(out_dir)
    with staged_output(out) as work:
        _write_outputs(study, work, plots=plots)
    return out


def _write_outputs(study: StudyResult, out: Path, *, plots: bool) -> None:
    rows = run_rows(study)
    _write_csv(out / "runs.csv", rows)
    curve_rows = []
    for spec, result in study.runs:
        for point in result.curve:
            curve_rows.append({"run_id": spec.run_id, **point})
    _write_csv(out / "curves.csv", curve_rows)
    computed = answers(study)
    payload = {
        "config": study.config.describe(),
        "runs": [
            {
                "run_id": spec.run_id,
                "experiment": spec.experiment,
                "teacher": spec.teacher,
                "seed": spec.seed,
                "method": spec.method.describe(),
                "initial": result.initial,
                "final": result.final,
                "stability": result.stability,
                "curve": result.curve,
                "loss_error": result.loss_error,
            }
            for spec, result in study.runs
        ],
        "answers": computed,
    }
    (out / "results.json").write_text(
        json.dumps(_json_safe(payload), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "summary.md").write_text(summary_markdown(study, computed), encoding="utf-8")
    timings = {
        "total_seconds": study.seconds,
        "total_run_cpu_seconds": sum(r.cpu_seconds for _, r in study.runs),
        "runs": {
            spec.run_id: {"seconds": result.seconds, "cpu_seconds": result.cpu_seconds}
            for spec, result in study.runs
        },
        "jobs": study.config.jobs,
        "threads": study.config.threads,
        "cpu_count": os.cpu_count(),
    }
    (out / "timings.json").write_text(json.dumps(timings, indent=1) + "\n", encoding="utf-8")
    if plots:
        plot_all(study, out / "figures")


def _from_json(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _config_from_description(data: dict[str, Any]) -> StudyConfig:
    def tuple_or_none(value):
        return None if value is None else tuple(value)

    return StudyConfig(
        name=data["name"],
        teacher=TeacherConfig(**data["teacher"]),
        teacher_seed=int(data["teacher_seed"]),
        teacher_variants=tuple(
            (name, tuple(changes.items())) for name, changes in data["teacher_variants"].items()
        ),
        train=TrainConfig(**data["train"]),
        seeds=tuple(int(s) for s in data["seeds"]),
        alphas=tuple(float(a) for a in data["alphas"]),
        lams=tuple_or_none(data["lams"]),
        divergences=tuple(data["divergences"]),
        orders=tuple(data["orders"]),
        sweep_pairs=None
        if data["sweep_pairs"] is None
        else tuple((d, o) for d, o in data["sweep_pairs"]),
        stability_teachers=tuple(data["stability_teachers"]),
        stability_methods=tuple(Method.from_description(m) for m in data["stability_methods"]),
        presets=tuple(data["presets"]),
        preset_extra=tuple(Method.from_description(m) for m in data["preset_extra"]),
        experiments=tuple(data["experiments"]),
        threads=int(data["threads"]),
        jobs=int(data["jobs"]),
    )


def load_study(out_dir: str | os.PathLike[str]) -> StudyResult:
    """Read a study back from the ``results.json`` that :func:`write_outputs` wrote.

    The runs' wall times are not stored there and come back as 0. Used by
    ``amid-ref study --replot DIR`` to re-render the figures and ``summary.md`` without
    training again.
    """
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise ValueError(f"no results.json in {str(out_dir)!r}; run the study there first")
    data = _from_json(json.loads(path.read_text(encoding="utf-8")))
    config = _config_from_description(data["config"])
    runs = []
    for item in data["runs"]:
        method = Method.from_description(item["method"])
        spec = RunSpec(item["experiment"], item["teacher"], method, int(item["seed"]))
        result = RunResult(
            method=method,
            seed=int(item["seed"]),
            initial=item["initial"],
            final=item["final"],
            stability=item["stability"],
            curve=item["curve"],
            loss_error=item.get("loss_error", ""),
        )
        runs.append((spec, result))
    return StudyResult(config=config, runs=runs)


def replot(out_dir: str | os.PathLike[str], *, plots: bool = True) -> StudyResult:
    """Re-render ``summary.md`` and ``figures/*.png`` in ``out_dir`` from its results.json
    (written aside and moved into place at the end, as :func:`write_outputs` does)."""

    study = load_study(out_dir)
    with staged_output(out_dir) as work:
        (work / "summary.md").write_text(summary_markdown(study), encoding="utf-8")
        if plots:
            plot_all(study, work / "figures")
    return study
