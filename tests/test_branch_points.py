"""Every formula switch of tests/_branch_points.py, evaluated just below, at, just above
and a factor 2 on either side of its threshold, against the mpmath oracle (value and
gradient); and a guard that no module defines a numeric constant the list does not know."""

from __future__ import annotations

import ast
import importlib
import inspect

import numpy as np
import pytest
from _branch_points import (
    BRANCH_POINTS,
    NOT_BRANCH_POINTS,
    SCANNED_MODULES,
)

from amid_ref import alpha_mixture_weight, amid_grad, amid_loss, log_alpha_mean, precise
from amid_ref.tolerances import assert_within, tolerance

FACTORS = (1.0 - 1e-9, 1.0, 1.0 + 1e-9, 0.5, 2.0)


def _row_scaled(got, want, tol, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = np.maximum(1.0, np.max(np.abs(want), axis=-1, keepdims=True))
    assert_within(got / scale, want / scale, tol, what=what)


def _check_mean(args, what):
    want = precise.to_float(precise.log_alpha_mean(**args))
    got = log_alpha_mean(**args)
    assert_within(got, want, tolerance("reference", "log_mixture"), what=what)
    wargs = {"log_p": args["log_a"], "log_q": args["log_b"], "alpha": args["alpha"]}
    want_w = precise.to_float(precise.alpha_mixture_weight(**wargs, lam=args["lam"]))
    got_w = alpha_mixture_weight(**wargs, lam=args["lam"])
    assert_within(got_w, want_w, tolerance("reference", "grad"), what=what + " weight")


def _check_loss(impl, args, what, refuse):
    want = precise.to_float(precise.amid_loss(**args))
    if refuse:
        with pytest.raises(ValueError):
            amid_loss(**args)
        return
    finite = bool(np.isfinite(want))
    if impl == "amid_ref":
        got = amid_loss(**args)
        assert_within(got, want, tolerance("reference", "loss"), what=what)
        if not finite:
            with pytest.raises(ValueError, match="inf"):
                amid_grad(**args)
            return
        want_g = precise.to_float(precise.amid_grad(**args))
        _row_scaled(amid_grad(**args), want_g, tolerance("reference", "grad"), what + " grad")
        return
    import torch

    import gpu

    s = torch.tensor([args["student_logits"]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([args["teacher_logits"]], dtype=torch.float64)
    rest = {k: v for k, v in args.items() if k not in ("student_logits", "teacher_logits")}
    if not finite:
        with torch.no_grad():
            got = gpu.amid_loss(s, t, reduction="none", **rest)
        assert_within(got.numpy()[0], want, tolerance("gpu", "loss", "float64"), what=what)
        return
    loss = gpu.amid_loss(s, t, reduction="none", **rest)
    loss.sum().backward()
    assert_within(loss.detach().numpy()[0], want, tolerance("gpu", "loss", "float64"), what=what)
    want_g = precise.to_float(precise.amid_grad(**args))
    _row_scaled(s.grad.numpy()[0], want_g, tolerance("gpu", "grad", "float64"), what + " grad")


@pytest.mark.parametrize("bp", BRANCH_POINTS, ids=[b.name for b in BRANCH_POINTS])
def test_branch_point(bp):
    if bp.constant is not None:  # the listed value is the one the code uses
        assert getattr(importlib.import_module(bp.module), bp.constant) == bp.value, bp.name
    for factor in FACTORS:
        x = bp.value * factor
        for kind, impl, args in bp.build(x):
            what = f"{bp.name} at {factor}×{bp.value} ({impl})"
            if kind == "mean":
                _check_mean(args, what)
            else:
                if impl == "gpu":
                    pytest.importorskip("torch")
                _check_loss(impl, args, what, bp.refuses_above and x > bp.value)


def _numeric_constants(module_name: str) -> list[str]:
    """Module-level names bound to a number (int/float literal, or arithmetic on literals)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        try:
            v = eval(
                compile(ast.Expression(value), "<const>", "eval"),
                {"__builtins__": {}, "float": float},
            )
        except Exception:  # not a constant expression of literals
            continue
        if isinstance(v, int | float) and not isinstance(v, bool):
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


@pytest.mark.parametrize("module_name", SCANNED_MODULES)
def test_every_numeric_constant_is_a_listed_branch_point(module_name):
    pytest.importorskip("torch") if module_name.startswith("gpu") else None
    pytest.importorskip("triton") if module_name == "gpu._triton_kernel" else None
    listed = {(b.module, b.constant) for b in BRANCH_POINTS if b.constant}
    listed |= set(NOT_BRANCH_POINTS)
    missing = [n for n in _numeric_constants(module_name) if (module_name, n) not in listed]
    assert not missing, (
        f"{module_name} defines numeric constant(s) {missing}: add each to "
        "tests/_branch_points.py (BRANCH_POINTS, with a builder) or NOT_BRANCH_POINTS "
        "(with the reason it is not a formula switch)"
    )


def test_every_listed_constant_is_scanned_and_defined():
    """The lists name only constants of scanned modules that still define them (an entry of
    a module outside SCANNED_MODULES would excuse nothing, a stale one hides a rename)."""
    listed = {(b.module, b.constant) for b in BRANCH_POINTS if b.constant}
    listed |= set(NOT_BRANCH_POINTS)
    for module_name, name in sorted(listed):
        assert module_name in SCANNED_MODULES, (module_name, name)
        if module_name.startswith("gpu"):
            pytest.importorskip("torch")
        if module_name == "gpu._triton_kernel":
            pytest.importorskip("triton")
        assert hasattr(importlib.import_module(module_name), name), (module_name, name)


def test_branch_point_names_are_unique():
    names = [b.name for b in BRANCH_POINTS]
    assert len(names) == len(set(names))
