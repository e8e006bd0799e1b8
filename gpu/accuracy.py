r"""Accuracy of the framework kernels that :func:`gpu.amid_loss` calls, measured.

A framework kernel's accuracy is not documented and differs between devices and versions
(measured on CPU with torch 2.13 at V = 128256 in float32: ``torch.log_softmax`` is off by
up to 3e-5 in log q where ``x − logsumexp(x)`` is off by 1e-6). :func:`kernel_accuracy`
evaluates each kernel in the working dtype on realistic logit rows (teacher
:math:`N(0, 2) - 1.1\log(\mathrm{rank})`) and on the argument ranges the loss feeds it, and
compares it with the same kernel evaluated in float64 on the same (rounded) inputs:

* elementwise kernels (``exp``, ``expm1``, ``log``, ``log1p``, ``sigmoid``, ``logaddexp``):
  the largest error in units of the working dtype's epsilon, relative to ``max(1, |y|)``
  for the log-type outputs and to ``|y|`` for the others;
* reductions (``sum``, ``logsumexp``) and the log-softmax forms at the full vocabulary:
  the largest absolute error of the result divided by epsilon (``sum``: relative to the sum
  of the magnitudes).

Run ``python -m gpu.accuracy [--device cuda] [--vocab 151936] [--compile]`` to print the
table; each row also says whether the kernel holds the budget the loss's error analysis
assumes (:data:`BUDGET_EPS`, in units of eps). ``--compile`` adds the elementwise kernels
as ``torch.compile`` (inductor) generates them, the form ``compile=True`` runs: measured on
CPU with torch 2.13, inductor's vectorized ``expm1`` is ``exp(x) - 1`` (8e6 eps at
|x| = 1e-30), which is why the loss calls :func:`gpu._elementwise.expm1` (1.5 eps compiled).
Only the raw compiled ``expm1`` row is allowed to fail: the loss does not call it.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

import amid_ref
from amid_ref.tolerances import tolerance
from gpu._elementwise import expm1 as traced_expm1
from gpu._loss import amid_loss

#: Error budget per kernel in units of the working dtype's eps, as assumed by the loss's
#: tolerance rows (amid_ref/tolerances.py, "gpu"/*/float32): elementwise kernels a few ulps,
#: reductions over V terms eps·log2(V)-type growth, log-softmax O(eps·max(1, |log q|)).
BUDGET_EPS: dict[str, float] = {
    "exp": 4.0,
    "expm1": 4.0,
    "log": 4.0,
    "log1p": 4.0,
    "sigmoid": 4.0,
    "logaddexp": 8.0,
    "sum": 64.0,
    "logsumexp": 64.0,
    "x - logsumexp(x)": 64.0,
    "log_softmax": 64.0,
}


#: Kernels measured for comparison that the loss does not call.
NOT_CALLED = ("log_softmax", "expm1 (compiled)")


def realistic_rows(rows: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """float64 teacher rows :math:`N(0, 2) - 1.1\\log(\\mathrm{rank})` of shape (rows, V)."""
    gen = torch.Generator().manual_seed(seed)
    rank = torch.arange(1, vocab + 1, dtype=torch.float64)
    noise = torch.randn(rows, vocab, generator=gen, dtype=torch.float64)
    return 2.0 * noise - 1.1 * torch.log(rank)


def _err(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor, eps: float) -> float:
    ok = torch.isfinite(want)
    e = ((got.double() - want).abs() / scale)[ok]
    return float(e.max()) / eps if e.numel() else 0.0


def kernel_accuracy(
    vocab: int = 151936,
    rows: int = 4,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    compiled: bool = False,
) -> dict[str, dict[str, float | bool]]:
    """Measured error of each kernel the gpu loss calls, in units of the dtype's eps.

    Parameters
    ----------
    vocab, rows : int
        Shape of the realistic logit rows for the reductions and the log-softmax forms.
    dtype : torch.dtype
        Working dtype (the loss computes in float32 for fp32/bf16/fp16 inputs).
    device : str or torch.device
        Where the kernels run (``"cuda"`` to measure the device's kernels).
    seed : int
        Seed of the rows.
    compiled : bool
        Also measure the elementwise kernels through ``torch.compile`` (rows
        ``"<name> (compiled)"``, and ``"gpu expm1 (compiled)"`` for the loss's own form).

    Returns
    -------
    dict
        ``name -> {"error_eps": measured, "budget_eps": BUDGET_EPS[name], "holds": bool}``.
    """
    eps = torch.finfo(dtype).eps
    x64 = realistic_rows(rows, vocab, seed)
    x = x64.to(dtype).to(device)
    xd = x.double().cpu()
    one = torch.ones((), dtype=torch.float64)
    out: dict[str, float] = {}
    ref_ls = xd - torch.logsumexp(xd, -1, keepdim=True)
    ls_scale = torch.maximum(one, ref_ls.abs())
    out["log_softmax"] = _err(torch.log_softmax(x, -1).cpu(), ref_ls, ls_scale, eps)
    out["x - logsumexp(x)"] = _err(
        (x - torch.logsumexp(x, -1, keepdim=True)).cpu(), ref_ls, ls_scale, eps
    )
    ref_lse = torch.logsumexp(xd, -1)
    out["logsumexp"] = _err(
        torch.logsumexp(x, -1).cpu(), ref_lse, torch.maximum(one, ref_lse.abs()), eps
    )
    p = torch.exp(ref_ls).to(dtype)
    pd = p.double()
    ref_sum = pd.sum(-1)
    out["sum"] = _err(p.to(device).sum(-1).cpu(), ref_sum, pd.abs().sum(-1), eps)
    # Elementwise kernels on the argument ranges the loss uses.
    grid = torch.linspace(-88.0, 88.0, 200001, dtype=torch.float64).to(dtype)
    small = torch.linspace(-1.0, 1.0, 200001, dtype=torch.float64).to(dtype)
    tiny = torch.logspace(-30.0, 0.0, 20001, dtype=torch.float64).to(dtype)
    positive = torch.logspace(-37.0, 37.0, 200001, dtype=torch.float64).to(dtype)
    cases = {
        "exp": (torch.exp, grid, False),
        "expm1": (torch.expm1, torch.cat([small, grid, tiny, -tiny]), False),
        "log": (torch.log, positive, True),
        "log1p": (torch.log1p, torch.cat([small.clamp(min=-0.9), positive]), True),
        "sigmoid": (torch.sigmoid, grid, False),
    }
    if compiled:
        for name, (fn, arg, log_type) in list(cases.items()):
            cases[f"{name} (compiled)"] = (torch.compile(fn), arg, log_type, fn)
        expm1_case = cases["expm1"]
        cases["gpu expm1 (compiled)"] = (
            torch.compile(traced_expm1),
            expm1_case[1],
            False,
            torch.expm1,
        )
    for name, (fn, arg, log_type, *exact) in cases.items():
        got = fn(arg.to(device)).cpu()
        want = (exact[0] if exact else fn)(arg.double())
        scale = torch.maximum(one, want.abs()) if log_type else want.abs().clamp(min=1e-300)
        tiny = torch.finfo(dtype).tiny
        keep = want.abs() >= tiny  # results below the normal range round to subnormals
        out[name] = _err(got[keep], want[keep], scale[keep], eps)
    a = grid.to(device)
    b = grid.flip(0).to(device)
    want = torch.logaddexp(a.double().cpu(), b.double().cpu())
    out["logaddexp"] = _err(torch.logaddexp(a, b).cpu(), want, torch.maximum(one, want.abs()), eps)
    budget = {k: BUDGET_EPS[k.split(" (")[0].removeprefix("gpu ")] for k in out}
    return {
        k: {"error_eps": v, "budget_eps": budget[k], "holds": v <= budget[k]}
        for k, v in out.items()
    }


#: The objectives whose loss and gradient :func:`backend_accuracy` holds to amid_ref:
#: (divergence, parameters, order, α, λ).
ACCURACY_OBJECTIVES = (
    ("kl", None, "pr", -5.0, 0.1),
    ("js", {"beta": 0.5}, "pr", 0.0, 0.0),
    ("ab", {"alpha": 0.2, "beta": 0.7}, "rq", -5.0, 0.1),
    ("kl", None, "rp", 1.0, 0.5),
    ("kl", None, "qr", float("inf"), 0.3),
)


def _bound_fraction(got, want, tol, row_scaled: bool = False) -> float:
    """max |got − want| / (atol + rtol·scale) over the finite entries (≤ 1: within the row);
    ``row_scaled``: both divided by max(1, max |want|) per row first (the gradient check)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if row_scaled:
        scale = np.maximum(1.0, np.max(np.abs(want), axis=-1, keepdims=True))
        got, want = got / scale, want / scale
    if np.isnan(got).any():
        return float("inf")
    scale = np.abs(want)
    if tol.log_scaled:
        scale = np.maximum(1.0, scale)
    finite = np.isfinite(want)
    if (np.isinf(got) != np.isinf(want)).any():
        return float("inf")
    err = np.abs(np.where(finite, got - want, 0.0))
    return float(np.max(err / (tol.atol + tol.rtol * scale)))


def backend_accuracy(
    vocab: int = 151936,
    rows: int = 4,
    dtypes=(torch.float32, torch.bfloat16),
    backends=("torch", "triton"),
    device: str | torch.device = "cpu",
    objectives=ACCURACY_OBJECTIVES,
    seed: int = 0,
) -> list[dict]:
    """The loss and gradient of :func:`gpu.amid_loss` per backend and dtype against
    :mod:`amid_ref` in float64 on the same (rounded) logits, as fractions of the "gpu"
    tolerance rows (``holds``: both ≤ 1).

    Realistic rows (:func:`realistic_rows`, student and teacher from two seeds). A backend
    that cannot run here (``backend="triton"`` without CUDA or ``TRITON_INTERPRET=1``, no
    Triton kernel) gives a row ``{"status": "not available", "why": ...}``; a fallback to
    another kernel counts as not available, never as a measurement of this backend.

    Returns
    -------
    list of dict
        One row per (backend, dtype, objective): ``loss_fraction``, ``grad_fraction``,
        ``holds`` (or ``status`` and ``why``).
    """
    t64 = realistic_rows(rows, vocab, seed)
    s64 = realistic_rows(rows, vocab, seed + 1)
    out = []
    for backend in backends:
        why = None
        for dtype in dtypes:
            name = str(dtype).removeprefix("torch.")
            s = s64.to(dtype).to(device)
            t = t64.to(dtype).to(device)
            sr, tr = s.double().cpu().numpy(), t.double().cpu().numpy()
            for div, params, order, alpha, lam in objectives:
                row = {"backend": backend, "dtype": name, "vocab": vocab, "divergence": div,
                       "params": params, "order": order, "alpha": alpha, "lam": lam}  # fmt: skip
                if why is not None:
                    out.append({**row, "status": "not available", "why": why})
                    continue
                x = s.clone().requires_grad_()
                try:
                    with warnings.catch_warnings():
                        warnings.filterwarnings("error", message=".*using the torch kernel.*")
                        loss = amid_loss(x, t, alpha, lam, div, order, params,
                                             reduction="none", backend=backend)  # fmt: skip
                        loss.sum().backward()
                except RuntimeWarning as exc:  # the engine fell back to the torch kernel
                    why = str(exc)[:300]
                    out.append({**row, "status": "not available", "why": why})
                    continue
                want = amid_ref.amid_loss(sr, tr, alpha, lam, div, order, params)
                gwant = amid_ref.amid_grad(sr, tr, alpha, lam, div, order, params)
                lf = _bound_fraction(loss.detach().double().cpu().numpy(), want,
                                     tolerance("gpu", "loss", name))  # fmt: skip
                gf = _bound_fraction(x.grad.double().cpu().numpy(), gwant,
                                     tolerance("gpu", "grad", name), row_scaled=True)  # fmt: skip
                out.append({**row, "status": "ok", "loss_fraction": lf, "grad_fraction": gf,
                            "holds": lf <= 1.0 and gf <= 1.0})  # fmt: skip
    return out


def sigmoid_accuracy(
    device: str | torch.device = "cpu", compiled: bool = True, compile_backend: str = "inductor"
) -> dict:
    """Is ``torch.sigmoid`` through ``torch.compile`` off by more than 4 eps on ``device``?

    Measured on t ∈ [−88, 88] (float32; 200001 points) against float64, relative to the
    result (results below float32's normal range excluded), for eager ``torch.sigmoid``,
    compiled ``torch.sigmoid``, and the form the mixture weight uses, ``1/(1 + e^(−t))``
    compiled (with ``compile_backend``: ``"inductor"``, the question; ``"eager"`` runs the
    same steps without code generation, as ``python -m gpu.device_check --cpu-dry-run``
    does, where inductor's C++ for the CPU would say nothing of its Triton for CUDA). In
    units of float32 eps; the loss's error analysis assumes ≤ 4 (:data:`BUDGET_EPS`).
    """
    eps = torch.finfo(torch.float32).eps
    tiny = torch.finfo(torch.float32).tiny
    arg = torch.linspace(-88.0, 88.0, 200001, dtype=torch.float64).float()
    want = torch.sigmoid(arg.double())
    keep = want.abs() >= tiny

    def err(fn) -> float:
        got = fn(arg.to(device)).cpu().double()
        return float(((got - want).abs() / want.abs())[keep].max()) / eps

    def reciprocal_form(t):
        return 1.0 / (1.0 + torch.exp(-t))

    out: dict = {"device": str(device), "budget_eps": BUDGET_EPS["sigmoid"],
                 "eager_sigmoid_eps": err(torch.sigmoid)}  # fmt: skip
    if compiled:
        out["compile_backend"] = compile_backend
        out["compiled_sigmoid_eps"] = err(torch.compile(torch.sigmoid, backend=compile_backend))
        out["compiled_reciprocal_form_eps"] = err(
            torch.compile(reciprocal_form, backend=compile_backend)
        )
        out["compiled_sigmoid_over_budget"] = out["compiled_sigmoid_eps"] > out["budget_eps"]
    return out


def format_table(result: dict[str, dict[str, float | bool]]) -> str:
    lines = [f"{'kernel':<20} {'error/eps':>12} {'budget':>8}  holds"]
    for name, row in result.items():
        lines.append(
            f"{name:<20} {row['error_eps']:>12.3g} {row['budget_eps']:>8.3g}  {row['holds']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu.accuracy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument(
        "--compile", action="store_true", help="also the torch.compile (inductor) kernels"
    )
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    result = kernel_accuracy(args.vocab, args.rows, dtype, args.device, compiled=args.compile)
    print(f"device={args.device} dtype={args.dtype} V={args.vocab} torch={torch.__version__}")
    print(format_table(result))
    used = [k for k in result if k not in NOT_CALLED]
    return 0 if all(result[k]["holds"] for k in used) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
