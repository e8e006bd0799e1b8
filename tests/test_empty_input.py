"""Empty logits, alike in :mod:`amid_ref`, :mod:`amid_ref.precise` and :mod:`gpu` (the torch
kernel on the CPU, float64).

* No rows, V ≥ 1 (shape (0, V), (2, 0, V), ...): accepted. The per-row loss has the leading
  shape of the logits and no entries, the gradient the student's shape and no entries;
  a sparse teacher with no rows is accepted the same way.
* V = 0 (shape (..., 0)): ``ValueError`` with the words ``"{name} has an empty vocabulary
  axis (V = 0)"``, naming the parameter whose last axis is empty (the student's first).

The expected shapes follow from the input shapes, the expected message from the contract
(docs/edge-cases.md, "Empty input"); nothing here is read back from the code under test.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import amid_ref
from amid_ref import precise

IMPLEMENTATIONS = ("amid_ref", "precise", "gpu")
#: Test ids: a bare "gpu" id would read as the ``gpu`` marker (CUDA only) in conftest's hook.
IMPL_IDS = ("amid_ref", "precise", "gpu_torch_cpu")

#: The refusal of a vocabulary axis of length 0, word for word (the gpu package's).
EMPTY_VOCABULARY = "{name} has an empty vocabulary axis (V = 0)"


def _torch():
    return pytest.importorskip("torch")


def _tensor(x, torch, *, grad: bool = False):
    t = torch.tensor(np.asarray(x), dtype=torch.float64)
    return t.requires_grad_() if grad else t


def _gpu_call(student, teacher, kwargs, *, grad: bool):
    """``gpu.amid_loss`` with ``reduction="none"`` (the per-row loss) or the gradient of
    its sum (the per-row gradient), as NumPy arrays."""
    torch = _torch()
    import gpu  # heavy (optional: torch, the gpu extra)

    kwargs = dict(kwargs)
    if kwargs.get("teacher_topk") is not None:
        idx, lp = kwargs["teacher_topk"]
        kwargs["teacher_topk"] = (torch.tensor(idx, dtype=torch.int64), _tensor(lp, torch))
    s = _tensor(student, torch, grad=grad)
    t = None if teacher is None else _tensor(teacher, torch)
    if not grad:
        kwargs.pop("detach_assistant", None)
        return gpu.amid_loss(s, t, reduction="none", backend="torch", **kwargs).numpy()
    loss = gpu.amid_loss(s, t, reduction="sum", backend="torch", **kwargs)
    (g,) = torch.autograd.grad(loss, s)
    return g.numpy()


def _call(impl: str, student, teacher, kwargs, *, grad: bool):
    """The per-row loss (``grad=False``) or its gradient of one implementation."""
    if impl == "gpu":
        return _gpu_call(student, teacher, kwargs, grad=grad)
    mod = amid_ref if impl == "amid_ref" else precise
    kwargs = dict(kwargs)
    if not grad:
        kwargs.pop("detach_assistant", None)
    f = mod.amid_grad if grad else mod.amid_loss
    return np.asarray(f(student, teacher, **kwargs))


# --- no rows ------------------------------------------------------------------------------

#: Shapes (..., V) with no rows; V = 1 is the smallest vocabulary.
NO_ROWS = [(0, 5), (2, 0, 5), (0, 3, 1), (4, 0, 0, 2)]

#: Objectives that reach different parts of each implementation: the closed forms at
#: α = ±inf, the AB-divergence's powers, the logit transforms and the temperature, a
#: detached assistant, and the vocabulary alignments (a teacher of another V).
OBJECTIVES = {
    "skew_kl": {"alpha": -1.0, "lam": 0.5},
    "max_tv_rq": {"alpha": -math.inf, "lam": 0.3, "divergence": "tv", "order": "rq"},
    "min_kl_rp": {"alpha": math.inf, "lam": 0.3, "order": "rp"},
    "ab_qr_tempered": {
        "alpha": 2.0,
        "lam": 0.1,
        "divergence": "ab",
        "div_params": {"alpha": -1.6, "beta": -2.9},
        "order": "qr",
        "temperature": 2.0,
    },
    "softcap_scale_detached": {
        "alpha": 0.5,
        "lam": 0.5,
        "order": "rq",
        "softcap": 3.0,
        "logit_scale": (2.0, 0.5),
        "detach_assistant": True,
    },
    "pad_longer_teacher": {"alpha": -1.0, "lam": 0.5, "vocab_alignment": "pad", "_teacher_v": 7},
    "truncate_shorter_teacher": {
        "alpha": -1.0,
        "lam": 0.5,
        "vocab_alignment": "truncate",
        "_teacher_v": 1,
    },
}


def _dense_case(shape, objective):
    kwargs = dict(objective)
    teacher_v = kwargs.pop("_teacher_v", shape[-1])
    return np.zeros(shape), np.zeros((*shape[:-1], teacher_v)), kwargs


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
@pytest.mark.parametrize("objective", list(OBJECTIVES), ids=list(OBJECTIVES))
@pytest.mark.parametrize("shape", NO_ROWS, ids=str)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IMPL_IDS)
def test_no_rows_give_empty_results(impl, shape, objective, grad):
    student, teacher, kwargs = _dense_case(shape, OBJECTIVES[objective])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a reduction over no rows
        out = _call(impl, student, teacher, kwargs, grad=grad)
    assert out.shape == (shape if grad else shape[:-1])
    assert out.size == 0


@pytest.mark.parametrize("leftover", ["bucket", "renormalize", "uniform"])
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
@pytest.mark.parametrize("shape", [(0, 5), (3, 0, 4)], ids=str)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IMPL_IDS)
def test_no_rows_with_a_sparse_teacher(impl, shape, grad, leftover):
    k = 2
    topk = (np.zeros((*shape[:-1], k), dtype=np.int64), np.zeros((*shape[:-1], k)))
    kwargs = {"alpha": -1.0, "lam": 0.5, "teacher_topk": topk, "leftover": leftover}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _call(impl, np.zeros(shape), None, kwargs, grad=grad)
    assert out.shape == (shape if grad else shape[:-1])
    assert out.size == 0


def test_gpu_reductions_over_no_rows_are_the_sum_of_the_reference_rows():
    """``"sum"`` is the sum of the reference's (empty) per-row losses; ``"mean"`` over no
    valid row is 0, the convention of a batch whose rows are all ignored by ``labels``."""
    torch = _torch()
    import gpu  # heavy (optional: torch, the gpu extra)

    s, t = np.zeros((0, 5)), np.zeros((0, 5))
    rows = amid_ref.amid_loss(s, t, alpha=-1.0, lam=0.5)
    total = gpu.amid_loss(_tensor(s, torch), _tensor(t, torch), -1.0, 0.5, reduction="sum")
    assert float(total) == float(np.sum(rows))
    ignored = gpu.amid_loss(
        _tensor(np.zeros((2, 5)), torch),
        _tensor(np.zeros((2, 5)), torch),
        -1.0,
        0.5,
        labels=torch.full((2,), -100),
    )
    empty = gpu.amid_loss(_tensor(s, torch), _tensor(t, torch), -1.0, 0.5, reduction="mean")
    assert float(empty) == float(ignored) == 0.0


def test_presets_take_no_rows():
    s = np.zeros((0, 4))
    for name in amid_ref.presets.PRESETS:
        preset = amid_ref.presets.get(name)
        assert preset.loss(s, s).shape == (0,), name
        assert preset.grad(s, s).shape == (0, 4), name


# --- V = 0 ---------------------------------------------------------------------------------

#: (student shape, teacher shape, options, the parameter named). The student is checked
#: first; a vocabulary alignment does not make a teacher of V = 0 acceptable.
EMPTY_VOCABULARIES = [
    ((3, 0), (3, 0), {}, "student_logits"),
    ((0, 0), (0, 0), {}, "student_logits"),
    ((0,), (0,), {}, "student_logits"),
    ((2, 0, 0), (2, 0, 0), {}, "student_logits"),
    ((3, 0), (3, 5), {"vocab_alignment": "truncate"}, "student_logits"),
    ((3, 5), (3, 0), {}, "teacher_logits"),
    ((3, 5), (3, 0), {"vocab_alignment": "pad"}, "teacher_logits"),
    ((0, 5), (0, 0), {"vocab_alignment": "truncate"}, "teacher_logits"),
    ((2, 5), (0,), {}, "teacher_logits"),
]


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
@pytest.mark.parametrize(
    ("student", "teacher", "options", "name"),
    EMPTY_VOCABULARIES,
    ids=[f"{s}-{t}-{'-'.join(o.values()) or 'error'}" for s, t, o, _ in EMPTY_VOCABULARIES],
)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IMPL_IDS)
def test_empty_vocabulary_is_refused_in_the_same_words(impl, student, teacher, options, name, grad):
    kwargs = {"alpha": -1.0, "lam": 0.5, **options}
    with pytest.raises(ValueError) as info:
        _call(impl, np.zeros(student), np.zeros(teacher), kwargs, grad=grad)
    assert type(info.value) is ValueError
    assert str(info.value) == EMPTY_VOCABULARY.format(name=name)


@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IMPL_IDS)
def test_empty_student_vocabulary_with_a_sparse_teacher(impl, grad):
    topk = (np.zeros((3, 1), dtype=np.int64), np.zeros((3, 1)))
    kwargs = {"alpha": -1.0, "lam": 0.5, "teacher_topk": topk}
    with pytest.raises(ValueError) as info:
        _call(impl, np.zeros((3, 0)), None, kwargs, grad=grad)
    assert str(info.value) == EMPTY_VOCABULARY.format(name="student_logits")


@pytest.mark.parametrize(
    "impl",
    [
        "precise",
        pytest.param("gpu", id="gpu_torch_cpu"),
    ],
)
def test_sparse_teacher_of_no_ids_is_refused_as_in_amid_ref(impl):
    """k = 0 ids per row (a sparse teacher that says nothing) is not the zero-row case: it
    is refused, with the reference's exception and words."""
    topk = (np.zeros((3, 0), dtype=np.int64), np.zeros((3, 0)))
    kwargs = {"alpha": -1.0, "lam": 0.5, "teacher_topk": topk}
    with pytest.raises(ValueError) as want:
        _call("amid_ref", np.zeros((3, 5)), None, kwargs, grad=False)
    with pytest.raises(ValueError) as got:
        _call(impl, np.zeros((3, 5)), None, kwargs, grad=False)
    assert str(got.value) == str(want.value)
    assert "teacher_topk" in str(got.value)
