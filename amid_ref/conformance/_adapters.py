"""Adapters: how the battery calls an external implementation, and what it declares it supports."""

from __future__ import annotations

import functools
import inspect
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amid_ref._battery._case import IGNORE_INDEX, Case, canonical_dtype
from amid_ref._battery._compare import passes, tolerance_for
from amid_ref._specs import ORDERS
from amid_ref.conformance._cases import PRESET_PARAM_ALIASES
from amid_ref.conformance._reference import reduce_rows

__all__ = ["LossAdapter", "MixtureAdapter", "Outputs", "Support", "Unsupported", "labels_in"]

_REDUCTIONS = ("auto", "none", "mean", "sum", "batchmean")


class Unsupported(Exception):
    """Raised by an adapter (or by the implementation, as NotImplementedError) to skip a case."""


@dataclass(frozen=True)
class Support:
    """What the implementation under test declares it supports; other cases are skipped.

    Parameters
    ----------
    divergences : tuple of str, optional
        Divergence names accepted (None: every name; an implementation without a
        ``divergence`` parameter is limited to ``"kl"`` by the adapter anyway).
    orders : tuple of str, optional
        Orders accepted among ``pr, qr, rp, rq`` (None: all; without an ``order`` parameter
        only ``pr``).
    alpha_range : (float, float)
        Closed interval of α accepted; α = ±inf is included iff the bound is ±inf.
    lam_range : (float, float)
        Closed interval of λ accepted.
    neg_inf : bool
        Whether −inf logits / log-probabilities (masked entries) are accepted.
    ignore_index : bool, optional
        Whether ``labels`` with ``ignore_index`` are accepted (None: iff the function names
        ``labels`` and ``ignore_index`` parameters; a ``**kwargs`` wrapper must declare True,
        which also lets the battery pass ``reduction`` through it).
    temperature : bool, optional
        Whether a temperature is accepted (None: iff the function has a ``temperature``
        parameter).
    max_vocab : int, optional
        Largest V accepted.
    leading_dims : tuple of int
        Numbers of leading (batch) dimensions accepted, among 0, 1, 2.
    detach_assistant : bool
        The implementation detaches the assistant r from the graph (TAID, DistiLLM-2):
        gradients are compared with ``amid_grad(..., detach_assistant=True)``.
    temperature_squared : bool
        The implementation multiplies the loss at temperature T by T² (Hinton et al.'s
        scaling, which keeps gradient magnitudes comparable across T); the reference is
        scaled the same way.
    """

    divergences: tuple[str, ...] | None = None
    orders: tuple[str, ...] | None = None
    alpha_range: tuple[float, float] = (-math.inf, math.inf)
    lam_range: tuple[float, float] = (0.0, 1.0)
    neg_inf: bool = True
    ignore_index: bool | None = None
    temperature: bool | None = None
    max_vocab: int | None = None
    leading_dims: tuple[int, ...] = (0, 1, 2)
    detach_assistant: bool = False
    temperature_squared: bool = False

    def __post_init__(self) -> None:
        lo, hi = (float(x) for x in self.alpha_range)
        if not lo <= hi:
            raise ValueError(f"alpha_range: need lo <= hi, got {self.alpha_range!r}")
        lo, hi = (float(x) for x in self.lam_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"lam_range: need 0 <= lo <= hi <= 1, got {self.lam_range!r}")
        if self.orders is not None:
            bad = [o for o in self.orders if o not in ORDERS]
            if bad:
                raise ValueError(f"orders: unknown {bad}; expected some of {tuple(ORDERS)}")

    def reason_unsupported(self, case: Case, neg_inf_present: bool) -> str | None:
        """Why ``case`` is outside the declared support (None if it is inside)."""
        lo, hi = self.alpha_range
        if not lo <= case.alpha <= hi:
            return f"alpha outside declared alpha_range {list(self.alpha_range)}"
        lo, hi = self.lam_range
        if not lo <= case.lam <= hi:
            return f"lam outside declared lam_range {list(self.lam_range)}"
        if case.kind != "mixture":
            if self.divergences is not None and case.divergence not in self.divergences:
                return f"divergence {case.divergence!r} not declared"
            if self.orders is not None and case.order not in self.orders:
                return f"order {case.order!r} not declared"
            if case.mask is not None and self.ignore_index is False:
                return "ignore_index not declared"
            if case.temperature != 1.0 and self.temperature is False:
                return "temperature not declared"
        if neg_inf_present and not self.neg_inf:
            return "-inf inputs not declared"
        if self.max_vocab is not None and case.vocab > self.max_vocab:
            return f"V above declared max_vocab={self.max_vocab}"
        if len(case.shape) - 1 not in self.leading_dims:
            return f"{len(case.shape) - 1} leading dims not declared ({self.leading_dims})"
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "divergences": list(self.divergences) if self.divergences is not None else "all",
            "orders": list(self.orders) if self.orders is not None else "all",
            "alpha_range": [str(x) for x in self.alpha_range],
            "lam_range": list(self.lam_range),
            "neg_inf": self.neg_inf,
            "ignore_index": self.ignore_index,
            "temperature": self.temperature,
            "max_vocab": self.max_vocab,
            "leading_dims": list(self.leading_dims),
            "detach_assistant": self.detach_assistant,
            "temperature_squared": self.temperature_squared,
        }


@dataclass
class Outputs:
    """What one call of the implementation returned, as float64 NumPy arrays."""

    value: np.ndarray
    grad: np.ndarray | None = None
    upstream: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _signature(fn: Callable) -> tuple[list[str], bool]:
    """Named parameters of ``fn`` (``forward`` for an ``nn.Module``) and whether it takes **kw."""
    target = fn.forward if _is_torch_module(fn) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return [], True
    kinds = inspect.Parameter
    names = [
        n
        for n, p in sig.parameters.items()
        if p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
    ]
    var_kw = any(p.kind is kinds.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def _is_torch_module(fn: Any) -> bool:
    return any(
        cls.__module__.startswith("torch.nn") and cls.__name__ == "Module"
        for cls in type(fn).__mro__
    )


def _detect_backend(fn: Callable) -> tuple[str, str]:
    if _is_torch_module(fn):
        return "torch", "torch.nn.Module"
    module = getattr(fn, "__module__", "") or ""
    if module.split(".")[0] == "torch":
        return "torch", f"defined in {module}"
    torch = sys.modules.get("torch")
    glb = getattr(inspect.unwrap(fn), "__globals__", {})
    if torch is not None and any(v is torch for v in glb.values()):
        return "torch", f"{module} imports torch"
    return "numpy", "no torch in the function's module"


_TORCH_DTYPES = {"float64": "float64", "float32": "float32", "bfloat16": "bfloat16"}
_TORCH_DTYPES["float16"] = "float16"
_NUMPY_DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": np.float32,  # numpy has no bf16: the values are bf16-representable
}


class _BaseAdapter:
    kind: str = ""

    def __init__(
        self,
        fn: Callable,
        *,
        dtype: Any = None,
        backend: str = "auto",
        device: str = "cpu",
        convention: str = "auto",
        kwargs: Mapping[str, Any] | None = None,
        param_map: Mapping[str, str] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
        self.fn = fn
        if backend not in ("auto", "torch", "numpy"):
            raise ValueError(f"backend: expected auto/torch/numpy, got {backend!r}")
        if backend == "auto":
            self.backend, self.backend_source = _detect_backend(fn)
        else:
            self.backend, self.backend_source = backend, "declared"
        self.dtype_source = "declared"
        if dtype is None:  # torch code is usually run in fp32, NumPy code in float64
            dtype = "float32" if self.backend == "torch" else "float64"
            self.dtype_source = "default"
        self.dtype = canonical_dtype(dtype)
        self.device = str(device)
        if self.device != "cpu" and self.backend == "torch":
            # torch: optional (the gpu extra)
            import torch

            try:
                torch.empty(0, device=self.device)
            except (RuntimeError, AssertionError) as exc:
                raise ValueError(f"device: cannot use {self.device!r} ({exc})") from None
        if convention not in ("auto", "student_first", "teacher_first"):
            raise ValueError(
                f"convention: expected auto/student_first/teacher_first, got {convention!r}"
            )
        self.convention = convention
        self.convention_source = "declared"
        self.kwargs = dict(kwargs or {})
        self.params, self.var_kw = _signature(fn)
        # The check's parameter name -> the function's (--map skew=lam); filled further by
        # the published aliases of a preset's parameters (PRESET_PARAM_ALIASES).
        self.param_map = dict(param_map or {})
        self.aliased: dict[str, str] = {}
        self.name = getattr(fn, "__qualname__", None) or type(fn).__name__
        self.target = f"{getattr(fn, '__module__', '?')}:{self.name}"

    # -- helpers ---------------------------------------------------------------------------
    def _resolve_backend(self, call: Callable[[], Any]) -> None:
        """If the guessed backend's probe call raises, try the other array type."""
        if self.backend_source == "declared":
            return
        try:
            call()
            return
        except Exception:  # a failing probe is the reason to try the other backend
            pass
        guessed = self.backend
        other = "numpy" if guessed == "torch" else "torch"
        if other == "torch":
            try:
                # torch: optional (the gpu extra)
                import torch  # noqa: F401
            except ImportError:
                return
        self.backend = other
        try:
            call()
        except Exception:  # neither works: keep the guess, the battery reports the errors
            self.backend = guessed
            return
        self.backend_source = f"probed: {guessed} inputs raised, {other} inputs work"
        if self.dtype_source == "default":
            self.dtype = "float32" if other == "torch" else "float64"

    def accepts(self, name: str) -> bool:
        return name in self.params or self.var_kw

    def _to_backend(self, x: np.ndarray, requires_grad: bool = False):
        if self.backend == "torch":
            # torch: optional (the gpu extra)
            import torch

            t = torch.as_tensor(np.ascontiguousarray(x)).to(
                device=self.device, dtype=getattr(torch, _TORCH_DTYPES[self.dtype])
            )
            if requires_grad:
                t.requires_grad_(True)
            return t
        return np.ascontiguousarray(x).astype(_NUMPY_DTYPES[self.dtype])

    def _labels(self, labels: np.ndarray):
        if self.backend == "torch":
            # torch: optional (the gpu extra)
            import torch

            return torch.as_tensor(labels, dtype=torch.long, device=self.device)
        return labels

    @staticmethod
    def _to_numpy(x: Any) -> np.ndarray:
        if hasattr(x, "detach"):
            # torch: optional (the gpu extra)
            import torch

            return x.detach().to(device="cpu", dtype=torch.float64).numpy()
        return np.asarray(x, dtype=np.float64)

    def fn_name(self, name: str, case: Case | None = None) -> str:
        """The function's name for the check's parameter ``name``: mapped by ``param_map``,
        else its own name if the function takes it, else a published alias the function
        takes (DistiLLM's ``lam`` for a DistiLLM preset's ``skew``), else ``name``."""
        if name in self.param_map:
            return self.param_map[name]
        if name in self.params or case is None or case.kind != "preset":
            return name
        for alias in PRESET_PARAM_ALIASES.get(case.preset, {}).get(name, ()):
            if alias in self.params:
                self.aliased[name] = alias
                return alias
        return name

    def _alpha_lam(self, case: Case) -> tuple[tuple, dict]:
        if case.kind == "divergence":  # the divergence's own parameters, by name
            return (), {self.fn_name(k, case): float(v) for k, v in case.div_params.items()}
        if case.kind == "preset":  # the preset's own parameters, by name
            return (), {self.fn_name(k, case): float(v) for k, v in case.preset_params.items()}
        alpha, lam = self.fn_name("alpha"), self.fn_name("lam")
        if alpha in self.params and lam in self.params:
            return (), {alpha: float(case.alpha), lam: float(case.lam)}
        return (float(case.alpha), float(case.lam)), {}

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "backend": f"{self.backend} ({self.backend_source})",
            "dtype": self.dtype,
            "device": self.device,
            "convention": f"{self.convention} ({self.convention_source})",
            **({"param_map": self.mapped()} if self.mapped() else {}),
        }

    def mapped(self) -> dict[str, str]:
        """The parameters passed under another name: ``param_map`` and the aliases used."""
        return {**self.aliased, **self.param_map}


class LossAdapter(_BaseAdapter):
    """Calls a distillation loss over logits.

    The function is called as ``fn(first, second, alpha, lam, **kw)`` where ``(first,
    second)`` is ``(student_logits, teacher_logits)`` (``student_first``, the torch and
    ``amid_ref`` convention) or ``(teacher_logits, student_logits)`` (``teacher_first``);
    ``alpha``/``lam`` go by keyword when the function names them so, else positionally. The
    keywords ``divergence``, ``order``, ``div_params`` and ``temperature`` are passed when
    the function names them, or through a ``**kwargs`` catch-all when the case's value is
    not the default; ``labels``/``ignore_index``/``reduction`` only when named (or declared,
    see :class:`Support`). A case needing a keyword the function lacks is skipped.
    ``kwargs`` are passed on every call.

    For ``kind="divergence"`` the call is ``fn(first, second, **div_params, ...)``: the
    divergence's own parameters by name (``beta=0.1`` for ``js``), no α or λ, and
    ``divergence=`` / ``direction=`` (``"pq"``: D(p‖q), ``"qp"``: D(q‖p)) only when named;
    for ``kind="preset"`` the preset's parameters by name (``beta`` for ``gkd_jsd``).

    Parameters
    ----------
    fn : callable
        The loss under test.
    dtype : str, optional
        Declared input dtype (``float64``, ``float32``, ``bfloat16``, ``float16``); default
        float32 for the torch backend, float64 for NumPy.
    backend : {"auto", "torch", "numpy"}
        Array type handed to ``fn``; ``auto`` picks torch for an ``nn.Module`` or a function
        whose module imports torch.
    device : str
        Torch device of the inputs.
    convention : {"auto", "student_first", "teacher_first"}
        Argument order; ``auto`` reads the first parameter's name (``student*`` /
        ``teacher*``), else probes a KD case against the reference.
    reduction : {"auto", "none", "mean", "sum", "batchmean"}
        What the function returns: per-row losses (shape = leading dims), their mean/sum
        over rows, or torch's ``batchmean`` (the sum over the first dimension's size).
        ``auto`` asks for ``"none"`` when the function has a ``reduction`` parameter, else
        probes the output shape.
    kwargs : mapping, optional
        Extra keyword arguments for every call (e.g. ``{"chunk_size": 1024}``).
    kind : {"loss", "divergence", "preset"}
        What the function computes (see above).
    reduction_names : mapping, optional
        The function's own ``reduction=`` word for each reduction a case asks for (TRL:
        ``{"mean": "batchmean", "sum": "sum"}``); cases asking for another are skipped.
    """

    kind = "loss"

    def __init__(
        self,
        fn: Callable,
        *,
        reduction: str = "auto",
        kind: str = "loss",
        reduction_names: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(fn, **options)
        # The function's own word for each reduction (e.g. TRL's "batchmean" is the masked
        # mean): a case asking for a reduction missing here is outside its support.
        self.reduction_names = dict(reduction_names) if reduction_names else None
        if kind not in ("loss", "divergence", "preset"):
            raise ValueError(f"kind: expected loss, divergence or preset, got {kind!r}")
        self.kind = kind
        self.ignore_index_declared = False  # set from Support by the runner
        self.probe_case: Case | None = None  # set by the runner for divergence/preset kinds
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.reduction_source = "declared"

    # -- resolution of auto settings -------------------------------------------------------
    def resolve(self, reference: Callable[[Case, str], Any]) -> None:
        self._resolve_backend(lambda: self._call(*self._probe_args(), grad=False))
        self._resolve_loss(reference)

    def _probe(self) -> Case:
        if self.probe_case is not None:
            return self.probe_case
        return Case("probe", "loss", -1.0, 0.3, shape=(3, 16), name="kd_probe", seed=20260101)

    def _probe_args(self):
        probe = self._probe()
        s, t = probe.arrays(self.dtype)
        return probe, s, t, None, None if self.reduction == "auto" else self.reduction

    def _resolve_loss(self, reference: Callable[[Case, str], Any]) -> None:
        """Fix ``convention`` and ``reduction`` when declared ``auto``.

        ``reference(case, dtype)`` returns the reference per-row loss on the case's rounded
        inputs (supplied by the runner).
        """
        if self.convention == "auto" and self.params:
            first = self.params[0].lower()
            if "student" in first or first in ("input", "logits", "s"):
                self.convention, self.convention_source = "student_first", "signature"
            elif "teacher" in first or first in ("target", "t"):
                self.convention, self.convention_source = "teacher_first", "signature"
        if self.reduction == "auto" and "reduction" in self.params:
            self.reduction, self.reduction_source = "none", "passed as reduction='none'"
        if self.convention != "auto" and self.reduction != "auto":
            return
        # Probe: a DistiLLM-type case (α = −1, λ = 0.3), or the first case of a divergence or
        # preset battery. A function called in its own convention returns the
        # student-first reference; one called in the other returns the loss with the roles
        # swapped, which differs for this asymmetric case.
        probe = self._probe()
        s, t = probe.arrays(self.dtype)
        want = np.asarray(reference(probe, self.dtype))
        tol = tolerance_for("loss", self.dtype)[0]
        conventions = (
            [self.convention] if self.convention != "auto" else ["student_first", "teacher_first"]
        )
        reductions = [self.reduction] if self.reduction != "auto" else ["none", "mean", "sum"]
        found = None
        for conv in conventions:
            try:
                got = self._call(probe, s, t, None, None, grad=False, convention=conv).value
            except Exception:  # a failing probe only means "not this one"
                continue
            for red in reductions:
                cand = {"none": want, "mean": want.mean(), "sum": want.sum()}.get(red)
                if cand is None:
                    cand = reduce_rows(want, None, red)
                if got.shape == np.shape(cand) and passes(got, cand, tol):
                    found = (conv, red)
                    break
            if found:
                break
        if found is not None:
            if self.convention == "auto":
                self.convention, self.convention_source = found[0], "probed"
            if self.reduction == "auto":
                self.reduction, self.reduction_source = found[1], "probed"
            return
        note = "no probe matched the reference; assumed"
        if self.convention == "auto":
            self.convention, self.convention_source = "student_first", note
        if self.reduction == "auto":
            try:
                got = self._call(probe, s, t, None, None, grad=False).value
                red = "none" if got.shape == want.shape else "mean"
            except Exception:
                red = "none"
            self.reduction, self.reduction_source = red, note

    # -- calling ---------------------------------------------------------------------------
    def reason_unsupported(self, case: Case, support: Any = None) -> str | None:
        if case.kind == "loss":
            checks = (
                ("divergence", case.divergence != "kl"),
                ("order", case.order != "pr"),
                ("div_params", bool(case.div_params)),
                ("temperature", case.temperature != 1.0),
            )
        elif case.kind == "divergence":  # its parameters are passed by their own names
            declared = support is not None and support.divergences is not None
            checks = (
                ("divergence", case.divergence != "kl" and not declared),
                ("direction", case.order != "pr" and not (support and support.orders)),
                ("temperature", case.temperature != 1.0),
                *((k, True) for k in case.div_params),
            )
        else:  # a preset: its own parameters by name; its direction is the preset's own
            checks = (
                ("temperature", case.temperature != 1.0),
                *((k, True) for k in case.preset_params),
            )
        for name, needed in checks:
            fn_name = self.fn_name(name, case)
            if needed and not self.accepts(fn_name):
                if fn_name != name:
                    return f"function has no {fn_name!r} parameter (mapped from {name!r})"
                return f"function has no {name!r} parameter"
        named = self.fn_name("labels") in self.params
        if case.mask is not None and not (named or (self.var_kw and self.ignore_index_declared)):
            return "function has no 'labels'/'ignore_index' parameters"
        names = self.reduction_names
        if case.reduction is not None and names is not None and case.reduction not in names:
            return f"case needs reduction={case.reduction!r}; the function has no such reduction"
        if (
            case.reduction is not None
            and case.reduction != self.reduction
            and not self.passes_reduction(case.reduction)
        ):
            return f"case needs reduction={case.reduction!r}; function returns {self.reduction}"
        return None

    def passes_reduction(self, reduction: str) -> bool:
        """Whether ``reduction=...`` can be passed (a named parameter, or **kwargs when the
        case asks for something other than what the function returns by default)."""
        if "reduction" in self.params:
            return True
        return self.var_kw and reduction != self.reduction and self.ignore_index_declared

    def effective_reduction(self, case: Case) -> str:
        return case.reduction or self.reduction

    def _call(
        self,
        case: Case,
        s: np.ndarray,
        t: np.ndarray,
        labels: np.ndarray | None,
        reduction: str | None,
        *,
        grad: bool,
        convention: str | None = None,
    ) -> Outputs:
        convention = convention or self.convention
        kw: dict[str, Any] = dict(self.kwargs)
        args, ab = self._alpha_lam(case)
        kw.update(ab)
        # Named parameters always get the case's value; a **kwargs catch-all gets only the
        # values that differ from the defaults (it may forward to a function lacking them).
        named = (
            ("divergence", case.divergence, "kl"),
            ("order", case.order, "pr"),
            ("div_params", dict(case.div_params) or None, None),
            (self.fn_name("temperature"), float(case.temperature), 1.0),
        )
        if case.kind == "divergence":  # the direction by its own name: Rényi has an "order"
            direction = ("direction", {"pr": "pq", "rp": "qp"}[case.order], "pq")
            named = (named[0], direction, named[3])
        elif case.kind == "preset":
            named = named[3:]
        for name, value, default in named:
            if name in self.params or (self.var_kw and value != default):
                kw[name] = value
        if labels is not None:
            kw[self.fn_name("labels")] = self._labels(labels)
            if "ignore_index" in self.params or self.var_kw:
                kw["ignore_index"] = IGNORE_INDEX
        if reduction is not None and self.passes_reduction(reduction):
            kw["reduction"] = (self.reduction_names or {}).get(reduction, reduction)
        want_grad = grad and self.backend == "torch"
        if self.backend == "torch":
            # torch: optional (the gpu extra)
            import torch

            st = self._to_backend(s, requires_grad=want_grad)
            tt = self._to_backend(t)
            first, second = (st, tt) if convention == "student_first" else (tt, st)
            with torch.enable_grad() if want_grad else torch.no_grad():
                out = self.fn(first, second, *args, **kw)
            if not hasattr(out, "detach"):
                out = torch.as_tensor(out)
            value = self._to_numpy(out)
            if not want_grad:
                return Outputs(value)
            if not out.requires_grad:
                # A constant (e.g. D(p‖p) = 0 computed without the student): its gradient is 0.
                return Outputs(value, np.zeros(s.shape), notes=["output has no grad_fn"])
            upstream = None
            if out.ndim == 0:
                out.backward()
            else:
                upstream = case.upstream(tuple(out.shape))
                out.backward(torch.as_tensor(upstream, dtype=out.dtype, device=out.device))
            if st.grad is None:
                return Outputs(value, np.zeros(s.shape), upstream, ["no gradient reached input"])
            return Outputs(value, self._to_numpy(st.grad), upstream)
        sa, ta = self._to_backend(s), self._to_backend(t)
        first, second = (sa, ta) if convention == "student_first" else (ta, sa)
        out = self.fn(first, second, *args, **kw)
        return Outputs(self._to_numpy(out))

    def evaluate(
        self, case: Case, s: np.ndarray, t: np.ndarray, labels: np.ndarray | None, *, grad: bool
    ) -> Outputs:
        return self._call(case, s, t, labels, self.effective_reduction(case), grad=grad)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["reduction"] = f"{self.reduction} ({self.reduction_source})"
        return d


class MixtureAdapter(_BaseAdapter):
    """Calls an α-mixture function over log-probabilities.

    Called as ``fn(log_p, log_q, alpha, lam, **kwargs)`` (``teacher_first``, the
    ``amid_ref.log_alpha_mixture`` convention; λ weights the teacher p) or
    ``fn(log_q, log_p, alpha, lam)`` (``student_first``). The result must have the input's
    shape ``(..., V)``: ``log r`` (``normalized=True``) or the unnormalized ``log m_α``.

    Parameters
    ----------
    fn : callable
    dtype, backend, device, kwargs
        As for :class:`LossAdapter`.
    convention : {"auto", "teacher_first", "student_first"}
        ``auto`` reads the first parameter's name, else assumes ``teacher_first``.
    normalized : bool
        Whether ``fn`` returns the normalized ``log r`` (default) or ``log m``.
    """

    kind = "mixture"

    def __init__(self, fn: Callable, *, normalized: bool = True, **options: Any) -> None:
        super().__init__(fn, **options)
        self.normalized = bool(normalized)
        self.reduction = "none"

    def resolve(self, reference: Callable[[Case, str], Any]) -> None:
        probe = Case("probe", "mixture", -1.0, 0.3, shape=(3, 16), name="probe", seed=20260102)
        log_q, log_p = probe.arrays(self.dtype)
        self._resolve_backend(lambda: self.evaluate(probe, log_q, log_p, None, grad=False))
        if self.convention != "auto":
            return
        first = self.params[0].lower() if self.params else ""
        if "student" in first or first in ("log_q", "q", "logq"):
            self.convention, self.convention_source = "student_first", "signature"
        else:
            how = "signature" if first else "assumed"
            self.convention, self.convention_source = "teacher_first", how

    def reason_unsupported(self, case: Case, support: Any = None) -> str | None:
        return None

    def effective_reduction(self, case: Case) -> str:
        return "none"

    def evaluate(
        self, case: Case, log_q: np.ndarray, log_p: np.ndarray, labels: Any, *, grad: bool
    ) -> Outputs:
        args, kw = self._alpha_lam(case)
        kw = {**self.kwargs, **kw}
        a, b = self._to_backend(log_p), self._to_backend(log_q)
        first, second = (a, b) if self.convention == "teacher_first" else (b, a)
        if self.backend == "torch":
            # torch: optional (the gpu extra)
            import torch

            with torch.no_grad():
                out = self.fn(first, second, *args, **kw)
        else:
            out = self.fn(first, second, *args, **kw)
        return Outputs(self._to_numpy(out))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["normalized"] = self.normalized
        return d


def make_adapter(fn: Callable, kind: str, **options: Any) -> _BaseAdapter:
    """The adapter for ``kind`` (``"loss"`` or ``"mixture"``) with ``options``."""
    if kind in ("loss", "divergence", "preset"):
        options.pop("normalized", None)
        return LossAdapter(fn, kind=kind, **options)
    if kind == "mixture":
        options.pop("reduction", None)
        options.pop("reduction_names", None)
        return MixtureAdapter(fn, **options)
    raise ValueError(f"kind: expected 'loss' or 'mixture', got {kind!r}")


def labels_in(fn: Callable, name: str = "no_model_batch", key: str = "label") -> Callable:
    """``fn`` taking its labels as ``labels=`` instead of inside a dict argument.

    Distillation code often takes the labels in a batch dict, e.g. DistiLLM's
    ``skewed_reverse_kl(logits, teacher_logits, no_model_batch, lam=0.1)`` reads
    ``no_model_batch["label"]`` (−100 = ignored). The battery passes ``labels=``; this
    wrapper puts them at ``name[key]`` (all positions kept when a case has no labels) and
    otherwise calls ``fn`` unchanged. Its signature is ``fn``'s without ``name``, plus
    ``labels=None``, so the battery still sees the function's own parameters.

    Parameters
    ----------
    fn : callable
        The loss, e.g. ``distillm.losses.skewed_reverse_kl``.
    name : str
        The dict parameter of ``fn`` (default ``"no_model_batch"``).
    key : str
        The labels' key in it (default ``"label"``).

    Returns
    -------
    callable

    Examples
    --------
    The one-line adapter (``amid-ref conform my_adapters:srkl --preset distillm_srkl``)::

        srkl = labels_in(distillm.losses.skewed_reverse_kl, "no_model_batch", "label")
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    sig = inspect.signature(fn)
    if name not in sig.parameters:
        raise ValueError(f"name: {getattr(fn, '__qualname__', fn)!r} has no parameter {name!r}")
    kinds = inspect.Parameter
    params = [p for p in sig.parameters.values() if p.name != name]
    var_kw = [p for p in params if p.kind is kinds.VAR_KEYWORD]
    params = [p for p in params if p.kind is not kinds.VAR_KEYWORD]
    params.append(kinds("labels", kinds.KEYWORD_ONLY, default=None))
    first = next(iter(sig.parameters))

    @functools.wraps(fn)
    def wrapper(*args, labels=None, **kw):
        if labels is None:  # every position kept
            logits = args[0] if args else kw[first]
            lead = tuple(logits.shape[:-1])
            if hasattr(logits, "new_zeros"):
                # torch: optional (the gpu extra); here the logits are a tensor
                import torch

                labels = logits.new_zeros(lead, dtype=torch.long)
            else:
                labels = np.zeros(lead, dtype=np.int64)
        kw[name] = {key: labels}
        return fn(*args, **kw)

    wrapper.__signature__ = sig.replace(parameters=params + var_kw)
    return wrapper
