"""Tests of ``amid-ref study --topk``: the dense teacher against its top-k under each leftover
policy.

Oracles: the sparse loss wiring against the float64 reference ``amid_ref.amid_loss`` with
``teacher_topk``; the extra metrics against values worked out by hand from their
definitions; at k = V every policy against the dense run (the sparse and the dense path are
separate code in ``gpu``).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import amid_ref  # noqa: E402
from amid_ref import study  # noqa: E402
from amid_ref._specs import LEFTOVER_POLICIES  # noqa: E402
from amid_ref.cli import main  # noqa: E402
from amid_ref.tolerances import assert_within, tolerance  # noqa: E402

VOCAB = 48
KS = (8, VOCAB)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def topk_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("topk")
    args = ["study", "--quick", "--topk", ",".join(map(str, KS)), "--vocab-size", str(VOCAB)]
    args += ["--steps", "8", "--seeds", "0", "--out", str(out), "--quiet"]
    assert main(args) == 0
    return out


def test_topk_run_writes_every_policy_and_k(topk_out):
    rows = _read_csv(topk_out / "topk.csv")
    assert tuple(rows[0]) == study.TOPK_COLUMNS
    methods = {m.label for m in study.TOPK_METHODS}
    assert {r["method"] for r in rows} == methods
    expected = {("dense", VOCAB)} | {(p, k) for p in LEFTOVER_POLICIES for k in KS}
    for method in methods:
        got = [(r["leftover"], int(r["k"])) for r in rows if r["method"] == method]
        assert sorted(got) == sorted(expected)
    for r in rows:
        assert np.isfinite(float(r["forward_kl"])), r
        assert 0.0 <= float(r["argmax_agreement"]) <= 1.0
        assert float(r["skipped_steps"]) == 0.0
    table = (topk_out / "topk.md").read_text(encoding="utf-8")
    for policy in (*LEFTOVER_POLICIES, "dense"):
        assert f"| {policy} |" in table
    assert (topk_out / "figures" / "topk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_top_v_equals_dense_for_every_policy(topk_out):
    rows = _read_csv(topk_out / "topk.csv")
    for method in {r["method"] for r in rows}:
        dense = next(r for r in rows if r["method"] == method and r["leftover"] == "dense")
        for policy in LEFTOVER_POLICIES:
            sparse = next(
                r
                for r in rows
                if r["method"] == method and r["leftover"] == policy and int(r["k"]) == VOCAB
            )
            assert float(sparse["teacher_mass_off_topk"]) == 0.0
            for name in ("forward_kl", "reverse_kl", "student_entropy"):
                assert_within(
                    float(sparse[name]),
                    float(dense[name]),
                    tolerance("gpu", "loss", "float32"),  # a float32 student, same steps
                    what=f"{method} {policy} k=V {name}",
                )
            assert sparse["argmax_agreement"] == dense["argmax_agreement"]


@pytest.mark.parametrize("leftover", LEFTOVER_POLICIES)
def test_sparse_loss_class_matches_the_reference(leftover):
    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 20))
    t = rng.normal(size=(5, 20)) * 3.0
    lt = t - np.log(np.exp(t).sum(axis=1, keepdims=True))
    cls = study.sparse_loss_class(6, leftover)
    module = cls(-2.0, 0.3, divergence="kl", order="pr")
    module.lam = 0.4  # reaches the wrapped loss (the study's λ schedules)
    got = float(module(torch.tensor(s), torch.tensor(lt)))
    ids = np.argsort(-lt, axis=1)[:, :6]
    want = amid_ref.amid_loss(
        s,
        None,
        -2.0,
        0.4,
        divergence="kl",
        order="pr",
        teacher_topk=(ids, np.take_along_axis(lt, ids, axis=1)),
        leftover=leftover,
    )
    assert_within(got, np.mean(want), tolerance("gpu", "loss", "float64"), what=leftover)


def test_topk_metrics_from_the_definitions():
    lp = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.6, 0.1]]))
    logits = np.log(np.array([[0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.4, 0.1]]))
    m = study.topk_metrics(lp, 2)(logits)
    assert m["argmax_agreement"] == 0.5  # row 0: student 1, teacher 0; row 1: both 2
    # off the teacher's top-2: row 0 ids {2, 3}; row 1 one of the tied ids 0, 3 (p = 0.1)
    assert m["teacher_mass_off_topk"] == pytest.approx((0.2 + 0.2) / 2, rel=1e-12)
    assert m["student_mass_off_topk"] in (
        pytest.approx((0.3 + 0.35) / 2, rel=1e-12),
        pytest.approx((0.3 + 0.5) / 2, rel=1e-12),
    )
    dense = study.topk_metrics(lp, None)(logits)
    assert dense["teacher_mass_off_topk"] == 0.0 == dense["student_mass_off_topk"]


def test_topk_rejects_bad_k_and_policy():
    cfg = study.quick_config(teacher=study.TeacherConfig(vocab_size=16, n_train=8, n_test=8))
    with pytest.raises(ValueError, match="--topk"):
        study.run_topk(cfg, (17,), progress=None)
    with pytest.raises(ValueError, match="--leftovers"):
        study.run_topk(cfg, (4,), ("ghost",), progress=None)
    with pytest.raises(ValueError, match="leftover"):
        study.sparse_loss_class(4, "zero")
