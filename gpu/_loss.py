r"""The batched AMiD loss on logits: :func:`amid_loss` and its module :class:`AMiDLoss`.

A chunked ``torch.autograd.Function`` with a closed-form gradient, run by the engine
(:mod:`gpu._engine`: chunking, labels, flags, reduction, the kernel backends). The forward
pass forms the loss and, when the student needs one, its gradient, written into one (N, V)
buffer in the student's dtype; the backward pass scales the stored buffer by the upstream
gradient in place and hands it to autograd (no copy). A second backward through the same
graph (``retain_graph=True``) recomputes the gradient from the saved logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from amid_ref.contract import Objective, objective_parameters
from gpu._autograd import _refuse_double_backward
from gpu._engine import (
    _reduce,
    _run,
    _scale_by_upstream,
    _select_kernel,
    _spec_of,
    _valid_rows,
    check_backend,
    default_chunk_size,
)
from gpu._teachers import prepare_teacher, teaching_kernel
from gpu._torch_kernel import LOCAL
from gpu._validation import (
    check_bool,
    check_chunk_size,
    check_float_tensor,
    check_ignore_index,
    check_reduction,
    check_temperature_scaling,
    compute_dtype,
)

__all__ = ["AMiDLoss", "amid_loss", "default_chunk_size"]


class _AMiDFunction(torch.autograd.Function):
    """Chunked forward that also produces the gradient; backward scales and hands it over.

    The one autograd function of the logits losses: :func:`amid_loss` (``red`` the local
    reduction) and :func:`gpu.vocab_parallel_amid_loss` (``red`` the shard group's, every
    row sum all-reduced between the passes). Differentiable once: ``create_graph=True``
    is refused with a clear error (:func:`gpu._autograd._refuse_double_backward`).
    """

    @staticmethod
    def forward(
        ctx,
        student,
        teacher,
        rows,
        spec,
        reduction,
        n_valid,
        leading,
        factor=1.0,
        kernel=None,
        red=LOCAL,
    ):
        v = student.shape[-1]
        s2 = student.reshape(-1, v)
        scale = factor / n_valid if (reduction == "mean" and n_valid > 0) else factor
        row_loss, grad = _run(s2, teacher, rows, spec, True, scale, leading, kernel, red=red)
        if factor != 1.0:
            row_loss.mul_(factor)
        ctx.save_for_backward(student)
        ctx.teacher = teacher  # (N, V_t) logits or a SparseTeacher, never differentiated
        ctx.rows, ctx.spec, ctx.reduction, ctx.scale = rows, spec, reduction, scale
        ctx.leading, ctx.kernel, ctx.red, ctx.grad_buffer = leading, kernel, red, grad
        return _reduce(row_loss, reduction, n_valid, leading)

    @staticmethod
    @_refuse_double_backward
    def backward(ctx, grad_output):
        grad = ctx.grad_buffer
        ctx.grad_buffer = None  # hand the buffer to autograd (no copy)
        (student,) = ctx.saved_tensors
        v = student.shape[-1]
        if grad is None:  # second backward (retain_graph=True): recompute (every rank, sharded)
            _, grad = _run(
                student.reshape(-1, v),
                ctx.teacher,
                ctx.rows,
                ctx.spec,
                True,
                ctx.scale,
                ctx.leading,
                ctx.kernel,
                red=ctx.red,
            )
        _scale_by_upstream(grad, grad_output, ctx.spec, ctx.reduction)
        return (grad.view(student.shape),) + (None,) * 9


def amid_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    lam: float,
    divergence: str = "kl",
    order: str = "pr",
    div_params: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    detach_assistant: bool = False,
    chunk_size: int | None = None,
    *,
    shift_labels: bool = False,
    temperature_scaling: str | None = None,
    compile: bool | str = False,
    backend: str = "auto",
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    leftover: str = "bucket",
    vocab_alignment: str = "error",
    softcap: float | tuple[float | None, float | None] | None = None,
    logit_scale: float | tuple[float, float] | None = None,
    temperature_applies_to: str = "both",
) -> torch.Tensor:
    r"""Batched AMiD distillation loss with a memory-efficient closed-form gradient.

    Torch convention for ``labels``: ``labels[..., t]`` masks the logits at position t, as
    in ``torch.nn.CrossEntropyLoss`` (``shift_labels=False``, the default). Hugging Face
    causal-LM labels are *unshifted* (``labels[:, t]`` is token t, predicted at position
    t − 1): pass ``shift_labels=True`` with them, or use :func:`gpu.hf.amid_compute_loss`,
    whose entry points default to them. Nothing is inferred from the shapes, which are the
    same in both conventions.

    .. math::

        p = \mathrm{softmax}(t/T),\quad q = \mathrm{softmax}(s/T),\quad
        r \propto m_\alpha(p, q;\lambda) = \big(\lambda p^\beta + (1-\lambda)q^\beta\big)^{1/\beta},
        \ \beta=\tfrac{1-\alpha}{2},

    and per position the loss :math:`D(p\|r)`, :math:`D(q\|r)`, :math:`D(r\|p)` or
    :math:`D(r\|q)` (``order`` ``"pr"``, ``"qr"``, ``"rp"``, ``"rq"``). Torch twin of
    :func:`amid_ref.amid_loss` (student first, as in torch losses), with its gradient
    :func:`amid_ref.amid_grad` computed in closed form chunk by chunk.

    Parameters
    ----------
    student_logits : torch.Tensor, shape (..., V)
        Student logits, any floating dtype (bf16, fp16, fp32, fp64); the only input that
        receives a gradient. ``-inf`` entries are masked tokens (probability exactly 0).
    teacher_logits : torch.Tensor, shape (..., V)
        Teacher logits, same shape (same V: a clear error otherwise), any floating dtype.
        Never receives a gradient.
    alpha : float
        Path parameter, any real or ``±inf``.
    lam : float
        Teacher weight of the assistant in ``[0, 1]`` (λ = 1 gives r = p, λ = 0 gives r = q).
    divergence : str
        A name of :data:`gpu.DIVERGENCES` (names and ``div_params`` as in
        :func:`amid_ref.divergence`, checked by the same contract, :mod:`amid_ref._specs`).
    order : {"pr", "qr", "rp", "rq"}
        Argument order; p is the teacher.
    div_params : mapping, optional
        Divergence parameters.
    temperature : float
        Softmax temperature T > 0 applied to both logits (no T² factor unless
        ``temperature_scaling="T2"``).
    labels : torch.Tensor of int or bool, shape (...), optional
        Integer labels: positions with ``labels == ignore_index`` contribute nothing (loss
        0, gradient 0). Bool mask: True marks the positions that count.
    ignore_index : int or None
        The ignored label value; ``None`` ignores no value.
    reduction : {"mean", "batchmean", "sum", "none"}
        ``"mean"`` divides the sum by the number of valid positions (0 if there is none);
        ``"batchmean"`` is the same (per valid *token*, as TRL's distillation losses; torch's
        ``kl_div(..., "batchmean")`` divides by ``input.size(0)``, which is the same number
        when the logits are passed flattened to (B·T, V) without masking, and the batch size
        B, not the token count, for (B, T, V) input); ``"sum"`` sums them (divide by the
        trainer's ``num_items_in_batch`` under gradient accumulation); ``"none"`` returns the
        per-position loss of shape (...).
    detach_assistant : bool
        Treat r as a constant (TAID, DistiLLM-2): the gradient flows only through a direct
        occurrence of q (orders ``qr``, ``rq``).
    chunk_size : int, optional
        Rows per chunk; ``None`` picks :func:`default_chunk_size` from V, the device and the
        kernel (larger chunks for the Triton kernel on CUDA).
        The result does not depend on it beyond summation order.
    shift_labels : bool
        False (default): ``labels[..., t]`` masks the logits at position t (the convention
        of ``torch.nn.CrossEntropyLoss``; labels already aligned with the logits, e.g. from
        ``logits[:, :-1]`` and ``labels[:, 1:]``). True: ``labels`` are unshifted Hugging
        Face causal-LM labels of the same (B, T) shape as the logits; position t counts iff
        label t + 1 does, the last position never counts (as ``transformers``'
        ``ForCausalLMLoss``). The default keeps the mask where the caller put it; nothing
        is inferred from the shapes, which are the same in both conventions.
    temperature_scaling : {None, "T2"}
        ``"T2"`` multiplies the loss and its gradient by T² (Hinton et al. 2015: keeps
        the gradient's magnitude independent of T); ``None`` (default) leaves it as is.
    compile : bool or str
        ``True``: run the per-chunk kernel through ``torch.compile`` (inductor; a string
        names another backend), which fuses its ~130 elementwise ops and reductions into a
        few loops on CPU and CUDA. The first call compiles (tens of seconds on CPU). If
        compilation fails (no compiler, unsupported backend) a ``RuntimeWarning`` says so
        and the eager kernel is used; results agree with the eager kernel within the
        ``"gpu"`` tolerance rows (tested with inductor, near p = q). The graph is
        specialized on the objective: each new α or λ compiles again (seconds), and after
        torch's recompile limit (8 graphs) the kernel runs eagerly (a ``RuntimeWarning``
        says so from half the limit in objectives); keep ``compile=False`` with a
        per-step α/λ schedule (docs/gpu.md, *Compiled per-chunk kernel*).
    backend : {"auto", "torch", "triton"}
        The per-chunk kernel (:mod:`gpu._engine`): ``"triton"`` streams each row over V
        in tiles with fp32 in registers (one program per row, no (N, V) scratch);
        ``"torch"`` is the eager kernel (and ``compile`` applies to it); ``"auto"`` picks
        Triton for CUDA tensors when triton imports and torch otherwise. Where the Triton
        kernel cannot run (triton missing, CPU tensors without ``TRITON_INTERPRET=1``, a
        compile failure) a ``RuntimeWarning`` says so once and the torch kernel is used.
        Both are held to :mod:`amid_ref` on the same tolerance rows.
    teacher_topk : pair of torch.Tensor, optional
        A sparse teacher ``(indices, logprobs)``, both of shape (..., k): int64 ids in
        [0, V), distinct per row, and the teacher's log-probabilities of its full
        distribution at them (padded slots: index −1, logprob −inf). ``teacher_logits``
        must then be ``None``. No (N, V) teacher tensor is formed (``gpu._teachers``).
    leftover : {"bucket", "renormalize", "uniform"}
        What a sparse teacher's leftover becomes, as in :func:`amid_ref.amid_loss`.
    vocab_alignment : {"error", "pad", "truncate"}
        A dense teacher whose V differs from the student's, as in :func:`amid_ref.amid_loss`
        (padding with −inf logits, or cutting to the shared ids, per chunk).
    softcap : float or pair, optional
        :math:`z \mapsto c\tanh(z/c)`, for both or ``(student_cap, teacher_cap)``; applied
        inside the chunk loop with its derivative.
    logit_scale : float or pair, optional
        :math:`z \mapsto \kappa z`, for both or ``(student_scale, teacher_scale)``. Order:
        scale, then cap, then temperature.
    temperature_applies_to : {"both", "student"}
        With ``teacher_topk`` a temperature ≠ 1 needs ``"student"`` (the log-probabilities
        are used as given).

    Returns
    -------
    torch.Tensor
        float32 (float64 for float64 inputs): 0-d for ``"mean"``/``"sum"``, shape (...) for
        ``"none"``. Its gradient w.r.t. ``student_logits`` has the student's dtype.

    Raises
    ------
    TypeError, ValueError
        On bad arguments (naming the parameter), NaN or ``+inf`` logits, a row of only
        ``-inf``, an empty assistant support (α ≥ 1 and disjoint supports), or a ``+inf``
        loss when a gradient is required. Value checks run inside the chunked pass and are
        raised at its end, naming the rows.

    Notes
    -----
    Arithmetic in float32 at least (float64 for float64 inputs), uniformly accurate in α
    (see :mod:`gpu._mixture`); tolerances against :mod:`amid_ref` are the ``"gpu"`` rows of
    :mod:`amid_ref.tolerances`. Peak extra memory is one (N, V) gradient buffer in the
    student dtype plus O(chunk_size·V) scratch (module docstring). Theorem 3.4: for
    0 < λ < 1 the loss vanishes iff q = p; Proposition 3.5 gives the gradient through r.

    References
    ----------
    Theorem 3.4 (optimality) and Proposition 3.5 (the gradient through r).

    See Also
    --------
    amid_ref.amid_loss, amid_ref.amid_grad : the float64 reference it is held to.
    amid_ref.precise.amid_loss : the mpmath oracle behind the reference.

    Examples
    --------
    >>> import torch, gpu
    >>> t = torch.tensor([[2.0, 0.5, -1.0]])
    >>> s = torch.zeros(1, 3, requires_grad=True)
    >>> loss = gpu.amid_loss(s, t, alpha=-5.0, lam=0.1)
    >>> loss.backward()
    >>> s.grad.shape
    torch.Size([1, 3])
    """
    arguments = dict(locals())  # the call's arguments by name, before any other local
    # the objective's parameters first, then the logits: amid_ref's order, so that a call
    # with both wrong names the same one
    objective = _objective_of(arguments)
    cdtype = _compute_dtype(student_logits, teacher_logits, teacher_topk)
    return _loss_of(
        objective, cdtype, student_logits, teacher_logits, labels, teacher_topk,
        ignore_index=ignore_index, reduction=reduction, chunk_size=chunk_size,
        shift_labels=shift_labels, temperature_scaling=temperature_scaling, compile=compile,
        backend=backend,
    )  # fmt: skip


def _compute_dtype(student_logits, teacher_logits, teacher_topk) -> torch.dtype:
    """The compute dtype of the logits (checked as floating tensors with a vocabulary)."""
    check_float_tensor(student_logits, "student_logits")
    if teacher_logits is not None:
        check_float_tensor(teacher_logits, "teacher_logits")
        teacher_dtype = teacher_logits.dtype
    elif _is_pair(teacher_topk):
        teacher_dtype = teacher_topk[1].dtype
    else:
        teacher_dtype = student_logits.dtype
    return compute_dtype(student_logits.dtype, teacher_dtype)


def _loss_of(
    objective: Objective,
    cdtype: torch.dtype,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    teacher_topk: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    ignore_index: int | None,
    reduction: str,
    chunk_size: int | None,
    shift_labels: bool,
    temperature_scaling: str | None,
    compile: bool | str,
    backend: str,
) -> torch.Tensor:
    """:func:`amid_loss` of a validated (gpu) ``objective`` on logits whose compute dtype is
    ``cdtype`` (:func:`_compute_dtype`); the options are checked here."""
    leading = tuple(student_logits.shape[:-1])
    v = student_logits.shape[-1]
    device = student_logits.device
    spec = _spec_of(objective, cdtype, v, device, chunk_size)
    teacher = prepare_teacher(student_logits, teacher_logits, teacher_topk, spec)
    ignore_index = check_ignore_index(ignore_index)
    reduction = check_reduction(reduction)
    factor = check_temperature_scaling(temperature_scaling, objective.temperature)
    rows, n_valid = _valid_rows(labels, leading, device, ignore_index, shift_labels)
    kernel = _select_kernel(compile, backend, device)
    if chunk_size is None and getattr(kernel, "backend", None) == "triton":
        spec = dataclasses.replace(spec, chunk_size=default_chunk_size(v, device, "triton"))
    kernel = teaching_kernel(kernel, spec)
    if torch.is_grad_enabled() and student_logits.requires_grad:
        return _AMiDFunction.apply(
            student_logits, teacher, rows, spec, reduction, n_valid, leading, factor, kernel
        )
    with torch.no_grad():
        s2 = student_logits.reshape(-1, v)
        row_loss, _ = _run(s2, teacher, rows, spec, False, 1.0, leading, kernel)
        if factor != 1.0:
            row_loss.mul_(factor)
        return _reduce(row_loss, reduction, n_valid, leading)


def _is_pair(x) -> bool:
    return isinstance(x, tuple | list) and len(x) == 2 and isinstance(x[1], torch.Tensor)


def _objective_of(arguments: Mapping[str, Any]) -> Objective:
    """The objective (validated for gpu: errors name the parameter) of a loss's arguments by
    name, ``arguments`` holding every parameter of :meth:`Objective.of`: the one place where
    :func:`amid_loss`, :class:`AMiDLoss`, :func:`gpu.vocab_parallel_amid_loss` and
    :class:`gpu.VocabParallelAMiDLoss` turn their keyword arguments into an objective."""
    fields = {name: arguments[name] for name in objective_parameters()}
    return Objective.of(**fields, implementation="gpu")


def _gpu_objective(objective: Any, **changes: Any) -> Objective:
    """``objective`` validated for gpu (the divergences gpu offers), with ``changes`` (keyword
    arguments of :meth:`Objective.of`) applied: errors name the parameter."""
    if not isinstance(objective, Objective):
        raise TypeError(
            "objective must be an amid_ref.contract.Objective (built by Objective.of), "
            f"got {type(objective).__name__}"
        )
    return Objective.of(**{**objective.keywords(), **changes}, implementation="gpu")


class _ObjectiveModule(torch.nn.Module):
    """A loss module that holds one validated :class:`amid_ref.contract.Objective` (for gpu)
    and its own options (reduction, labels, chunking, backend...).

    Each parameter of :meth:`Objective.of` reads as an attribute of the module: ``alpha``,
    ``lam``, ..., ``div_params`` (the objective's read-only ``params``), ``softcap`` and
    ``logit_scale`` (normalized pairs). Assigning one (``loss.lam = 0.3``, a schedule's step)
    validates the objective anew with that value and replaces it: a bad value raises the
    contract's error naming the parameter and leaves the module as it was. ``objective``
    reads and assigns the whole objective (validated for gpu).
    """

    #: Objective.of's parameters, the attributes that read and assign the objective.
    _objective_fields: tuple[str, ...] = objective_parameters()

    @classmethod
    def from_objective(cls, objective: Objective, **options: Any):
        """The module of ``objective`` (an :class:`amid_ref.contract.Objective`) with the
        module's own ``options`` as keywords: equal to the keyword constructor given the
        objective's fields (:meth:`Objective.keywords`). A field of the objective among the
        options raises ``TypeError``."""
        objective = _gpu_objective(objective)
        fields = [name for name in options if name in cls._objective_fields]
        if fields:
            raise TypeError(
                f"{cls.__name__}.from_objective takes the objective's fields from the "
                f"objective, not as options: {', '.join(fields)} (pass them to Objective.of)"
            )
        return cls(**objective.keywords(), **options)

    def _held(self) -> Objective | None:
        """The objective held (``None`` while the module is being built)."""
        return self.__dict__.get("_objective")

    def _hold(self, objective: Objective) -> None:
        """Hold ``objective`` (validated by the caller)."""
        self.__dict__["_objective"] = objective

    @property
    def objective(self) -> Objective:
        """The objective (validated for gpu); assigning one replaces it."""
        return self._held()

    @objective.setter
    def objective(self, objective: Objective) -> None:
        self._hold(_gpu_objective(objective))

    def __getattr__(self, name: str) -> Any:
        if name in _ObjectiveModule._objective_fields:
            held = self._held()
            if held is not None:
                return held.params if name == "div_params" else getattr(held, name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _ObjectiveModule._objective_fields:
            held = self._held()
            if held is not None:
                self._hold(_gpu_objective(held, **{name: value}))
                return
        super().__setattr__(name, value)


#: The objective's scalars an :class:`AMiDLoss` keeps as buffers (in ``state_dict``).
_MODULE_SCALARS = ("alpha", "lam")


class AMiDLoss(_ObjectiveModule):
    r"""Module form of :func:`amid_loss` for training loops.

    .. math::

        \mathcal L = \operatorname{reduce}_{\text{valid positions}}
            D\big(\cdot\,\|\,\cdot\big)\ \text{over}\ \{p, q_\theta, r^{(\alpha,\lambda)}\}

    The module holds one validated :class:`amid_ref.contract.Objective` (``objective``)
    and its own options (``ignore_index``, ``reduction``, ``chunk_size``,
    ``shift_labels``, ``temperature_scaling``, ``compile``, ``backend``);
    :meth:`from_objective` builds it from an objective. The objective's fields read and
    assign as attributes (``crit.lam = 0.3``): an assignment validates the objective anew
    with that value (a bad one raises naming the parameter, and nothing changes);
    ``div_params`` reads as the objective's read-only mapping. To change the divergence
    and its parameters together, assign a new ``objective``.

    Parameters
    ----------
    alpha : float
        Path parameter, any real or ``±inf``. Reads and assigns as a plain float (validated
        on assignment) and may change between steps; stored as a float64 buffer, so
        ``state_dict()`` holds its current value and a checkpoint restores a schedule.
    lam : float
        Teacher weight of the assistant in ``[0, 1]``. Like ``alpha``: a float attribute
        kept in a float64 buffer (TAID schedules λ).
    divergence : str
        As in :func:`amid_loss`.
    order : {"pr", "qr", "rp", "rq"}
        As in :func:`amid_loss`.
    div_params : mapping, optional
        As in :func:`amid_loss`.
    temperature : float
        As in :func:`amid_loss`.
    ignore_index : int
        As in :func:`amid_loss`.
    reduction : {"mean", "batchmean", "sum", "none"}
        As in :func:`amid_loss`.
    detach_assistant : bool
        As in :func:`amid_loss`.
    chunk_size : int, optional
        As in :func:`amid_loss`.
    shift_labels : bool
        As in :func:`amid_loss`.
    temperature_scaling : {None, "T2"}
        As in :func:`amid_loss`.
    compile : bool or str
        As in :func:`amid_loss`.
    backend : {"auto", "torch", "triton"}
        As in :func:`amid_loss`.
    leftover, vocab_alignment, softcap, logit_scale, temperature_applies_to
        As in :func:`amid_loss` (the teacher-side configuration; the sparse teacher itself
        is data, ``forward(..., teacher_topk=(indices, logprobs))``).

    See Also
    --------
    amid_loss : the functional form.
    amid_ref.presets : the prior methods as AMiD settings.

    Examples
    --------
    >>> import torch, gpu
    >>> crit = gpu.AMiDLoss(alpha=0.0, lam=0.1)
    >>> s = torch.randn(2, 3, 11, requires_grad=True)
    >>> t = torch.randn(2, 3, 11)
    >>> crit.lam = 0.2  # e.g. a schedule
    >>> sorted(crit.state_dict())
    ['alpha', 'lam']
    >>> from amid_ref.contract import Objective
    >>> objective = Objective.of(alpha=0.0, lam=0.2, divergence="js")
    >>> gpu.AMiDLoss.from_objective(objective, reduction="sum").objective == objective
    True
    >>> crit(s, t, labels=torch.tensor([[1, 2, -100], [4, -100, -100]])).ndim
    0
    """

    def __init__(
        self,
        alpha: float,
        lam: float,
        divergence: str = "kl",
        order: str = "pr",
        div_params: Mapping[str, Any] | None = None,
        temperature: float = 1.0,
        ignore_index: int | None = -100,
        reduction: str = "mean",
        detach_assistant: bool = False,
        chunk_size: int | None = None,
        *,
        shift_labels: bool = False,
        temperature_scaling: str | None = None,
        compile: bool | str = False,
        backend: str = "auto",
        leftover: str = "bucket",
        vocab_alignment: str = "error",
        softcap: float | tuple[float | None, float | None] | None = None,
        logit_scale: float | tuple[float, float] | None = None,
        temperature_applies_to: str = "both",
    ) -> None:
        super().__init__()
        objective = _objective_of(locals())
        # α and λ are also float64 buffers, for ``state_dict`` (a checkpoint restores a
        # schedule); they stay on the CPU (``_apply``, used by ``.to``, ``.cuda``,
        # ``.half``, is overridden below to leave them alone) and follow the objective.
        for name in _MODULE_SCALARS:
            value = getattr(objective, name)
            self.register_buffer(name, torch.tensor(value, dtype=torch.float64))
        self._hold(objective)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.chunk_size = check_chunk_size(chunk_size)
        self.shift_labels = check_bool(shift_labels, "shift_labels")
        check_temperature_scaling(temperature_scaling, objective.temperature)
        self.temperature_scaling = temperature_scaling
        if not isinstance(compile, (bool, str)):
            raise TypeError(f"compile must be a bool or a backend name, got {compile!r}")
        self.compile = compile
        self.backend = check_backend(backend)

    def _hold(self, objective: Objective) -> None:
        super()._hold(objective)
        for name in _MODULE_SCALARS:
            self._buffers[name].fill_(getattr(objective, name))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint's α and λ are validated before anything is loaded (a bad one raises
        # naming it and leaves the module as it was), then held by the objective.
        loaded = {n: state_dict[prefix + n] for n in _MODULE_SCALARS if prefix + n in state_dict}
        objective = _gpu_objective(self.objective, **loaded)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._hold(objective)

    def _apply(self, fn, recurse=True):
        saved = {k: self._buffers[k] for k in _MODULE_SCALARS}
        out = super()._apply(fn, recurse)
        self._buffers.update(saved)
        return out

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        cdtype = _compute_dtype(student_logits, teacher_logits, teacher_topk)
        return _loss_of(
            self.objective, cdtype, student_logits, teacher_logits, labels, teacher_topk,
            **self._options(),
        )  # fmt: skip

    def _options(self) -> dict[str, Any]:
        """The module's own options (keyword arguments of :func:`amid_loss` beside the
        objective's)."""
        return {
            "ignore_index": self.ignore_index,
            "reduction": self.reduction,
            "chunk_size": self.chunk_size,
            "shift_labels": self.shift_labels,
            "temperature_scaling": self.temperature_scaling,
            "compile": self.compile,
            "backend": self.backend,
        }

    def _loss_kwargs(self) -> dict[str, Any]:
        """The configuration as keyword arguments of :func:`amid_loss` (and of
        :func:`gpu.amid_fused_linear_loss`, whose module keeps an ``AMiDLoss`` as its
        configuration): the objective's (:meth:`Objective.keywords`) and the options."""
        return {**self.objective.keywords(), **self._options()}

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, lam={self.lam}, divergence={self.divergence!r}, "
            f"order={self.order!r}, reduction={self.reduction!r}"
        )
