"""amid_ref, amid_ref.precise, gpu and the Hugging Face entry points of gpu.hf hold to one
table of bad inputs (:data:`_bad_inputs.BAD_INPUTS`): the same inputs accepted or
refused, with the same exception type and a message naming the parameter."""

from __future__ import annotations

import warnings

import pytest
from _bad_inputs import BAD_INPUTS, IMPLEMENTATIONS, call

CASES = [(c, impl) for c in BAD_INPUTS for impl in IMPLEMENTATIONS if impl in c.only]


@pytest.mark.parametrize("case,impl", CASES, ids=[f"{c.id}-{i}" for c, i in CASES])
def test_bad_input(case, impl):
    if impl in ("gpu", "gpu.hf"):
        pytest.importorskip("torch")
    if case.function == "AMiDTrainer":
        pytest.importorskip("transformers")
    if case.exception is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            call(case, impl)
        return
    with pytest.raises(case.exception, match=case.match):
        call(case, impl)


def test_table_ids_are_unique_and_every_case_names_a_parameter():
    ids = [c.id for c in BAD_INPUTS]
    assert len(ids) == len(set(ids))
    for c in BAD_INPUTS:
        assert c.exception is None or c.match, c.id
        assert set(c.only) <= set(IMPLEMENTATIONS), c.id
