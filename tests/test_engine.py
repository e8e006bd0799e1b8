"""The engine's kernel selection: ``backend="auto" | "torch" | "triton"``."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import gpu  # noqa: E402
from gpu import _engine  # noqa: E402
from gpu._torch_kernel import chunk as torch_chunk  # noqa: E402


def test_backend_is_validated_everywhere():
    s, t = torch.zeros(2, 5), torch.zeros(2, 5)
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'triton'"):
        gpu.amid_loss(s, t, -5.0, 0.1, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        gpu.AMiDLoss(-5.0, 0.1, backend=None)
    with pytest.raises(ValueError, match="compile applies to the torch kernel"):
        gpu.amid_loss(s, t, -5.0, 0.1, backend="triton", compile=True)


def test_auto_picks_torch_on_cpu():
    assert _engine._select_kernel(False, "auto", torch.device("cpu")) is torch_chunk
    assert _engine._select_kernel(False, "torch", torch.device("cpu")) is torch_chunk


def test_triton_where_it_cannot_run_warns_once_and_uses_torch(monkeypatch):
    monkeypatch.setattr(_engine, "_WARNED", set())
    monkeypatch.setattr(_engine, "_triton_usable", lambda device: "no triton here (test)")
    with pytest.warns(RuntimeWarning, match="backend='triton': no triton here"):
        kernel = _engine._select_kernel(False, "triton", torch.device("cpu"))
    assert kernel is torch_chunk
    # once: a second selection says nothing more
    assert _engine._select_kernel(False, "triton", torch.device("cpu")) is torch_chunk


def _fake_triton_kernel(monkeypatch, triton_chunk) -> None:
    """The engine with ``triton_chunk`` as the Triton kernel, fresh (no earlier fallback, no
    warning said), usable on this device."""
    import sys
    import types

    fake = types.ModuleType("gpu._triton_kernel")
    fake.triton_chunk = triton_chunk
    fake.launch_shapes = dict  # no launch shapes set
    monkeypatch.setitem(sys.modules, "gpu._triton_kernel", fake)
    monkeypatch.setattr(_engine, "_TRITON", [])
    monkeypatch.setattr(_engine, "_WARNED", set())
    monkeypatch.setattr(_engine, "_triton_usable", lambda device: None)


def test_failing_triton_kernel_falls_back_once_with_the_same_result(monkeypatch):
    """A kernel that fails to compile or run: one RuntimeWarning, then the torch kernel."""

    def broken(*args, **kwargs):
        raise RuntimeError("PTX compilation failed (test)")

    _fake_triton_kernel(monkeypatch, broken)
    s = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 7, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="Triton AMiD kernel failed.*PTX"):
        got = gpu.amid_loss(s, t, -5.0, 0.1, backend="triton")
    want = gpu.amid_loss(s, t, -5.0, 0.1, backend="torch")
    assert torch.equal(got, want)


def test_out_of_memory_in_the_triton_kernel_is_raised_and_keeps_it(monkeypatch):
    """An out-of-memory is the batch's, not the kernel's: it is raised as such (no warning,
    no torch kernel run, which would need more memory), and the next call tries the Triton
    kernel again."""
    import warnings

    calls = []

    def short_of_memory(*args, **kwargs):
        calls.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    _fake_triton_kernel(monkeypatch, short_of_memory)
    s, t = torch.randn(3, 7), torch.randn(3, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            with pytest.raises(torch.cuda.OutOfMemoryError, match="Tried to allocate"):
                gpu.amid_loss(s, t, -5.0, 0.1, backend="triton")
    assert len(calls) == 2
