"""Shared pytest configuration: Hypothesis profiles and the ``gpu`` marker hook.

Hypothesis profiles (select with ``HYPOTHESIS_PROFILE``):

* ``dev`` (default): few examples, fast feedback while editing.
* ``ci``: derandomized (reproducible on every CI run), no deadline, more examples.
* ``deep``: opt-in exhaustive search for local investigation.

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
