"""Shared pytest configuration: Hypothesis profiles and the ``gpu`` marker hook.

Hypothesis profiles (select with ``HYPOTHESIS_PROFILE``):

* ``dev`` (default): few examples, fast feedback while editing.
* ``ci``: derandomized (reproducible on every CI run), no deadline, more examples.
* ``deep``: opt-in exhaustive search for local investigation.

Where CUDA is absent, ``TRITON_INTERPRET=1`` is set (unless already set) so that the Triton
backend runs under triton's interpreter.

Tests marked ``gpu`` are skipped here when CUDA is absent; the check runs at collection
time only, never at import or parametrization time, so collection never touches CUDA when
torch is not installed.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="CUDA is not available on this machine")
    for item in gpu_items:
        item.add_marker(skip)


def pytest_configure(config):
    _set_triton_interpreter()
    _one_thread_per_worker()
    from _triton import patch_language_once  # tests/_triton.py

    patch_language_once()


def _one_thread_per_worker() -> None:
    """Under ``pytest -n N`` (pytest-xdist), each worker process runs torch and the BLAS on
    one thread, and so do the subprocesses its tests start: N workers of several threads each
    on N cores spend their time waiting on one another. On 2 cores, tests/test_fidelity_sweeps.py
    took 452 s with 2 workers of 2 threads against about 270 s in one serial process; its
    torch tests took 79 s with 2 workers of 1 thread against 150 s serial, and the whole
    suite 998 s against about 1550 s. Tests that need more threads set them (the
    ``threads`` fixture of tests/test_gpu_kernels.py)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def _set_triton_interpreter() -> None:
    """``TRITON_INTERPRET=1`` where there is no CUDA device and the variable is unset, before
    the test modules are collected and import triton (it is read when kernels are
    defined): ``backend="triton"`` then runs the Triton kernels in numpy on the CPU
    (tests/test_triton_kernel.py). Nothing else changes: ``backend="auto"`` still picks
    the torch kernel on CPU, and a peer's Triton kernels choose the interpreter themselves
    on a machine without CUDA."""
    if "TRITON_INTERPRET" in os.environ:
        return
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
