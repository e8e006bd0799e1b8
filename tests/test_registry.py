"""The divergence contract (amid_ref.contract, defined in amid_ref._specs), what registers
against it, and the layers of the project.

* Every record has a kernel in amid_ref, precise and gpu (or the record states why not), a
  zero case, a grid case, a strategy, its claims, a textbook form, a zero-iff-equal generator
  and a row in the generated docs table; every registration belongs to a record.
  :func:`registry_problems` lists what is missing with its file, and a throw-away record
  shows it names each registration that is removed.
* The three implementations agree on signatures, parameter names, defaults and error types.
* No hand-written list or dict of divergence names remains outside the contract and the
  registries.
* No import cycles, TYPE_CHECKING imports included; function-local imports only for optional
  or heavy dependencies; each module imports only its layer and those below (LAYERS); the
  sibling packages import no private module of amid_ref.
* docs/contributing.md shows LAYERS and the files of each registration.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import inspect
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import amid_ref
from amid_ref import _divergences, analysis, precise, strategies
from amid_ref._battery import _compare
from amid_ref._specs import (
    DIVERGENCES,
    IMPLEMENTATIONS,
    ORDERS,
    SPECS,
    DivergenceSpec,
    Objective,
    Param,
    ParameterError,
    alpha_grid,
    lambda_grid,
)
from amid_ref.conformance import _adapters, _reference, _runner
from amid_ref.tolerances import Tolerance

ROOT = Path(__file__).resolve().parents[1]


def _load_docs_tables():
    spec = importlib.util.spec_from_file_location(
        "amid_ref_contract_tables", ROOT / "docs" / "_contract_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gpu_kernels() -> Mapping[str, object]:
    torch_missing = importlib.util.find_spec("torch") is None
    if torch_missing:  # pragma: no cover - the gpu extra is part of the test install
        pytest.skip("torch is not installed (pip install amid-ref[gpu])")
    from gpu._divergences import GPU_DIVERGENCES  # torch: optional (the gpu extra)

    return GPU_DIVERGENCES


def _claims() -> Mapping[str, object]:
    pytest.importorskip("sympy")
    import proofs_check  # sympy: optional (the proofs extra)

    return proofs_check.CLAIMS


def _textbook() -> Mapping[str, object]:
    pytest.importorskip("torch")
    from _textbook import TEXTBOOK  # torch: optional (the gpu extra)

    return TEXTBOOK


def _zero_generators() -> Mapping[str, object]:
    pytest.importorskip("sympy")
    from proofs_check.claims_divergences import ZERO_GENERATORS  # sympy: optional

    return ZERO_GENERATORS


def registrations() -> dict:
    """Everything that registers against the records, by kind."""
    return {
        "kernels": {
            "amid_ref": _divergences.KERNELS,
            "precise": precise.ROW_FUNCTIONS,
            "gpu": _gpu_kernels(),
        },
        "strategies": strategies.PARAM_STRATEGIES,
        "no_strategy": strategies.NO_STRATEGY,
        "claims": _claims(),
        "textbook": _textbook(),
        "zero_generators": _zero_generators(),
        "docs_rows": _load_docs_tables().page_block(
            (ROOT / "docs" / "mathematics.md").read_text(encoding="utf-8")
        )
        or "",
    }


#: Where each implementation registers its kernels: (file, variable).
_KERNEL_REGISTRIES = {
    "amid_ref": ("amid_ref/_divergences.py", "KERNELS"),
    "precise": ("amid_ref/precise/_divergences.py", "ROW_FUNCTIONS"),
    "gpu": ("gpu/_divergences.py", "GPU_DIVERGENCES"),
}


def registry_problems(specs: Mapping[str, DivergenceSpec], reg: dict) -> list[str]:
    """What a set of records lacks (or has too much of) in the registrations ``reg``; each
    missing registration is named with its file."""
    problems = []
    for impl, table in reg["kernels"].items():
        problems += [f"{impl}: kernel {n!r} has no record" for n in table if n not in specs]
    problems += [f"strategy {n!r} has no record" for n in reg["strategies"] if n not in specs]
    problems += [f"textbook form {n!r} has no record" for n in reg["textbook"] if n not in specs]
    problems += [
        f"zero generator {n!r} has no record" for n in reg["zero_generators"] if n not in specs
    ]
    for name, spec in specs.items():
        for impl in IMPLEMENTATIONS:
            has = name in reg["kernels"][impl]
            if not has and spec.offered_by(impl):
                where = " ".join(_KERNEL_REGISTRIES[impl])
                problems.append(f"{name}: no {impl} kernel and no stated reason ({where})")
            if has and not spec.offered_by(impl):
                problems.append(f"{name}: a {impl} kernel although the record says not offered")
        for use in ("zero", "grid", "accuracy"):
            if not spec.cases_for(use) and not spec.no_cases:
                problems.append(f"{name}: no {use!r} parameter set and no stated reason")
        if spec.params and name not in reg["strategies"] and name not in reg["no_strategy"]:
            problems.append(
                f"{name}: parameters but no strategy (amid_ref/strategies.py PARAM_STRATEGIES)"
            )
        if spec.offered_by("gpu") and name not in reg["textbook"]:
            problems.append(f"{name}: no textbook form (tests/_textbook.py TEXTBOOK)")
        if not spec.no_cases and name not in reg["zero_generators"]:
            problems.append(
                f"{name}: no zero-iff-equal generator (proofs_check/claims_divergences.py "
                "ZERO_GENERATORS)"
            )
        if not spec.claims and not spec.no_cases:
            problems.append(f"{name}: no proofs_check claim (proofs_check/claims_divergences.py)")
        for claim in spec.claims:
            if claim not in reg["claims"]:
                problems.append(
                    f"{name}: claim {claim!r} is not in proofs_check.CLAIMS "
                    "(proofs_check/claims_divergences.py)"
                )
        if f"| `{name}` |" not in reg["docs_rows"]:
            problems.append(
                f"{name}: no row in the divergence table of docs/mathematics.md "
                "(python docs/_contract_tables.py --write)"
            )
    return problems


# --- the registry is complete, and the check notices every missing registration ------------


def test_every_record_is_registered_everywhere():
    assert registry_problems(SPECS, registrations()) == []


def test_the_docs_table_is_generated_from_the_records():
    tables = _load_docs_tables()
    page = (ROOT / "docs" / "mathematics.md").read_text(encoding="utf-8")
    assert tables.page_block(page) == tables.generated_block(), (
        "docs/mathematics.md is out of date: run python docs/_contract_tables.py --write"
    )


def _toy_registrations(reg: dict) -> tuple[dict, dict]:
    toy = DivergenceSpec(
        "toy",
        "toy divergence",
        r"\sum_x (a - b)^4",
        "A throw-away record.",
        params=(Param("k", 1.0, domain="(0, ∞)", inside=lambda x: x > 0, error="k > 0"),),
        cases={"grid": ({"k": 1.0},), "accuracy": ({"k": 1.0},), "zero": ({"k": 1.0},)},
        claims=("divergence.toy.claim",),
    )
    specs = {**SPECS, "toy": toy}
    full = {
        "kernels": {impl: {**t, "toy": object()} for impl, t in reg["kernels"].items()},
        "strategies": {**reg["strategies"], "toy": object()},
        "no_strategy": reg["no_strategy"],
        "claims": {**reg["claims"], "divergence.toy.claim": object()},
        "textbook": {**reg["textbook"], "toy": object()},
        "zero_generators": {**reg["zero_generators"], "toy": object()},
        "docs_rows": reg["docs_rows"] + "\n| `toy` | ... |",
    }
    return specs, full


def _without(reg: dict, path: tuple) -> dict:
    """A copy of ``reg`` with the toy entry removed at ``path``."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in reg.items()}
    if path[0] == "kernels":
        out["kernels"] = {i: dict(t) for i, t in reg["kernels"].items()}
        del out["kernels"][path[1]]["toy"]
    elif path[0] == "docs_rows":
        out["docs_rows"] = reg["docs_rows"].replace("\n| `toy` | ... |", "")
    else:
        del out[path[0]][path[1]]
    return out


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("kernels", "amid_ref"), "no amid_ref kernel"),
        (("kernels", "precise"), "no precise kernel"),
        (("kernels", "gpu"), "no gpu kernel"),
        (("strategies", "toy"), "no strategy"),
        (("claims", "divergence.toy.claim"), "not in proofs_check.CLAIMS"),
        (("textbook", "toy"), "no textbook form"),
        (("zero_generators", "toy"), "no zero-iff-equal generator"),
        (("docs_rows",), "no row in the divergence table"),
    ],
)
def test_a_missing_registration_of_a_new_record_is_reported(path, message):
    specs, full = _toy_registrations(registrations())
    assert registry_problems(specs, full) == []
    problems = registry_problems(specs, _without(full, path))
    assert len(problems) == 1 and problems[0].startswith("toy: ") and message in problems[0]


def test_a_new_record_without_cases_claims_or_reasons_is_reported():
    specs, full = _toy_registrations(registrations())
    bare = dataclasses.replace(specs["toy"], cases={}, claims=())
    problems = registry_problems({**specs, "toy": bare}, full)
    assert sum("no 'zero' parameter set" in p for p in problems) == 1
    assert sum("no proofs_check claim" in p for p in problems) == 1
    not_offered = dataclasses.replace(specs["toy"], not_offered={"gpu": "a reason"})
    assert registry_problems({**specs, "toy": not_offered}, full) == [
        "toy: a gpu kernel although the record says not offered"
    ]


def test_a_kernel_without_a_record_is_reported():
    reg = registrations()
    reg["kernels"] = {**reg["kernels"], "precise": {**reg["kernels"]["precise"], "ghost": 0}}
    assert registry_problems(SPECS, reg) == ["precise: kernel 'ghost' has no record"]


# --- the implementations read the same contract --------------------------------------------

P = np.array([0.5, 0.25, 0.125, 0.125])
Q = np.array([0.25, 0.25, 0.25, 0.25])


def _callers() -> dict:
    torch = pytest.importorskip("torch")
    import gpu  # torch: optional (the gpu extra)

    return {
        "amid_ref": lambda name, **kw: amid_ref.divergence(P, Q, name, **kw),
        "precise": lambda name, **kw: precise.divergence(P, Q, name, **kw),
        "gpu": lambda name, **kw: gpu.divergence(
            torch.tensor(P, dtype=torch.float64), torch.tensor(Q, dtype=torch.float64), name, **kw
        ),
    }


def _given(spec: DivergenceSpec) -> dict:
    """A valid parameter set: the grid set, or a generator for the f-divergence."""
    if spec.cases_for("grid"):
        return spec.cases_for("grid")[0]
    import mpmath

    return {"f": lambda u: (u - 1) ** 2 if isinstance(u, mpmath.mpf) else (u - 1.0) ** 2}


def _outside(param: Param):
    for value in (-1.0, 2.0, 1.0, 0.0, -1e-9):
        if not param.inside(value):
            return value
    raise AssertionError(f"no value outside the domain of {param.name}")  # pragma: no cover


@pytest.mark.parametrize("name", DIVERGENCES)
def test_parameter_names_defaults_and_errors_match_across_implementations(name):
    spec = SPECS[name]
    callers = _callers()
    given = _given(spec)
    for impl, call in callers.items():
        if not spec.offered_by(impl):
            with pytest.raises(ValueError, match=f"not offered by the {impl} package"):
                call(name, **given)
            continue
        with pytest.raises(ParameterError, match="unexpected"):
            call(name, **given, bogus=1.0)
        for param in spec.params:
            rest = {k: v for k, v in given.items() if k != param.name}
            if param.required:
                with pytest.raises(ParameterError, match=f"requires the parameter '{param.name}'"):
                    call(name, **rest)
                continue
            omitted = call(name, **rest)
            explicit = call(name, **rest, **{param.name: param.default})
            assert float(omitted) == float(explicit), (impl, name, param.name)
            if param.kind == "real":
                with pytest.raises(ValueError, match="NaN"):
                    call(name, **rest, **{param.name: math.nan})
            if param.inside is not None:
                bad = _outside(param)
                if impl == "precise" and param.oracle_inside is not None:
                    bad = _outside(dataclasses.replace(param, inside=param.oracle_inside))
                    error = param.oracle_error.format(value=bad)
                else:
                    error = param.error.format(value=bad)
                with pytest.raises(ValueError, match=re.escape(error)):
                    call(name, **rest, **{param.name: bad})


def test_signatures_match_across_implementations():
    pytest.importorskip("torch")
    import gpu  # torch: optional (the gpu extra)

    def names(fn, n):
        return [p for p in inspect.signature(fn).parameters.values()][:n]

    def key(params):
        return [(p.name.replace("dim", "axis"), p.default) for p in params]

    assert key(names(amid_ref.divergence, 5)) == key(names(precise.divergence, 5))
    assert key(names(amid_ref.divergence, 5)) == key(names(gpu.divergence, 5))
    assert key(names(amid_ref.amid_loss, 8)) == key(names(precise.amid_loss, 8))
    assert key(names(amid_ref.amid_loss, 8)) == key(names(gpu.amid_loss, 8))
    assert key(names(amid_ref.amid_grad, 9)) == key(names(precise.amid_grad, 9))
    assert tuple(amid_ref.ORDERS) == tuple(precise.ORDERS) == tuple(gpu.ORDERS) == tuple(ORDERS)
    offered = {impl: [n for n in DIVERGENCES if SPECS[n].offered_by(impl)] for impl in ("gpu",)}
    assert list(amid_ref.DIVERGENCES) == list(precise.DIVERGENCES) == list(DIVERGENCES)
    assert list(gpu.DIVERGENCES) == offered["gpu"]


def test_objective_is_validated_once_and_frozen():
    obj = Objective.of(-5.0, 0.1, "skew_kl", "rq", None, 2.0, True)
    assert (obj.first, obj.second, dict(obj.params)) == ("r", "q", {"skew": 0.1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.alpha = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        obj.params["skew"] = 0.5  # type: ignore[index]
    assert pickle.loads(pickle.dumps(obj)) == obj
    with pytest.raises(ValueError, match="skew must lie in"):
        Objective.of(-5.0, 0.1, "skew_kl", div_params={"skew": 1.0})
    with pytest.raises(ValueError, match="not offered by the gpu package"):
        Objective.of(-5.0, 0.1, "f", div_params={"f": np.log}, implementation="gpu")


def test_grids_have_their_densities():
    assert lambda_grid("quick") == (0.0, 1e-15, 0.5, 1.0 - 1e-15, 1.0)
    assert lambda_grid("full") == (0.0, 1e-15, 0.1, 0.5, 0.9, 1.0 - 1e-15, 1.0)
    assert set(alpha_grid("quick")) <= set(alpha_grid("full")) | {1.0 - 1e-10, 1.0 + 1e-10}
    for density in ("quick", "full", "contract"):
        grid = alpha_grid(density)
        assert {-math.inf, -1.0, 1.0, math.inf} <= set(grid) and len(set(grid)) == len(grid)
    with pytest.raises(ValueError, match="density"):
        alpha_grid("dense")


# --- no hand-written list of divergence names outside the contract -------------------------

_NAMES = [n for n in DIVERGENCES if n not in ("f",)]
_WORD = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, _NAMES)) + r")(?![A-Za-z0-9_])")
_ENTRY = re.compile(r"""^\s*\(\s*["'](""" + "|".join(map(re.escape, _NAMES)) + r""")["']\s*,""")

#: Files allowed to enumerate divergences by hand, each with the reason.
_ENUMERATION_ALLOWED = {
    "amid_ref/_specs.py": "the contract itself",
    "tests/test_registry.py": "this check",
    "tests/test_gpu.py": (
        "BIG_CASES: hand-picked (divergence, order, α, λ, dtype) rows for the real "
        "vocabularies (one row per combination worth its cost at V = 151936), not a registry"
    ),
    "amid_ref/conformance/_mutants.py": (
        "the low-precision failure mode applies to the divergences computed from probabilities "
        "that must sum to 1 (kl, js, tv, skew_kl, jeffreys): a property of that wrong formula, "
        "which no record states"
    ),
}
#: Dicts keyed by divergence name that are registrations, (file, variable): each is checked
#: against the records by test_every_record_is_registered_everywhere.
_CHECKED_REGISTRIES = {
    *_KERNEL_REGISTRIES.values(),
    ("amid_ref/strategies.py", "PARAM_STRATEGIES"),
    ("tests/_textbook.py", "TEXTBOOK"),
    ("proofs_check/claims_divergences.py", "ZERO_GENERATORS"),
}
_SCANNED = (
    "amid_ref/**/*.py",
    "gpu/**/*.py",
    "proofs_check/**/*.py",
    "tests/**/*.py",
    "notebooks/*.py",
    "docs/**/*.md",
    "README.md",
)


def _enumerations(text: str) -> list[str]:
    """Lines naming ≥ 3 divergences other than kl, or blocks of ≥ 4 ``("name", ...)`` rows."""
    lines = text.splitlines()
    hits = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|"):
            continue  # Markdown table rows: the generated table is checked against the records
        found = {m.group(1) for m in _WORD.finditer(line)} - {"kl"}
        if len(found) >= 3:
            hits.append(f"line {i + 1}: {sorted(found)}")
    for i in range(len(lines)):
        block = {m.group(1) for row in lines[i : i + 12] if (m := _ENTRY.match(row))}
        if len(block) >= 4:
            hits.append(f"rows from line {i + 1}: {sorted(block)}")
            break
    return hits


def _keyed_rows(text: str) -> list[tuple[str, int, list[str]]]:
    """Dict literals keyed by ≥ 4 divergence names other than f: (the variable it is assigned
    to, or "", line, the names)."""
    tree = ast.parse(text)
    assigned = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            assigned[id(node.value)] = ast.unparse(target)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            names = sorted(keys & set(_NAMES))
            if len(names) >= 4:
                hits.append((assigned.get(id(node), ""), node.lineno, names))
    return hits


def _hand_lists() -> dict[str, list[str]]:
    found, registries = {}, set()
    for pattern in _SCANNED:
        for path in ROOT.glob(pattern):
            rel = path.relative_to(ROOT).as_posix()
            if rel in _ENUMERATION_ALLOWED or "/.venv/" in rel:
                continue
            text = path.read_text(encoding="utf-8")
            hits = _enumerations(text)
            if rel.endswith(".py"):
                for name, line, names in _keyed_rows(text):
                    if (rel, name) in _CHECKED_REGISTRIES:
                        registries.add((rel, name))
                    else:
                        hits.append(f"line {line}: {name or 'a dict'} keyed by {names}")
            if hits:
                found[rel] = hits
    missing = _CHECKED_REGISTRIES - registries
    assert not missing, f"registries listed in _CHECKED_REGISTRIES but not found: {missing}"
    return found


def test_no_hand_written_list_of_divergence_names_outside_the_contract():
    found = _hand_lists()
    assert found == {}, f"divergence names listed by hand (read them from the records): {found}"


def test_the_enumeration_check_finds_a_list():
    assert _enumerations('NAMES = ("kl", "js", "tv", "hellinger")\n')
    assert _enumerations('CASES = [\n    ("kl", {}),\n    ("js", {}),\n    ("tv", {}),\n'
                         '    ("chi2", {}),\n]\n')  # fmt: skip
    assert not _enumerations('loss = amid_loss(s, t, 0.5, 0.3, "js", "pr", {"beta": 0.3})\n')
    rows = (
        'P = {\n    "ab": {"alpha": 0.2},\n    "js": {},\n    "amari": {},\n    "renyi": {},\n}\n'
    )
    assert _keyed_rows(rows) == [("P", 1, ["ab", "amari", "js", "renyi"])]
    assert _keyed_rows('f({"kl": 1, "js": 2, "tv": 3, "chi2": 4})\n') == [
        ("", 1, ["chi2", "js", "kl", "tv"])
    ]
    assert not _keyed_rows('P = {"kl": 1, "js": 2, "tv": 3}\n')


# --- one copy of the orders, of the order lookup and of the known-wrong formulas -----------

_ORDER_NAMES = frozenset(ORDERS)

#: Files allowed to spell the four orders out, each with the reason.
_ORDERS_ALLOWED = {
    "amid_ref/_specs.py": "the contract itself",
    "tests/test_validation.py": "asserts the public value of amid_ref.ORDERS",
}
#: The naive log α-mean (1/β)·logaddexp(...) written out; amid_ref._battery._known_wrong holds
#: it once.
_NAIVE_LOG_MEAN = re.compile(r"logaddexp\(.*\)\s*/\s*beta\b")
_NAIVE_ALLOWED = {
    "amid_ref/_battery/_known_wrong.py": "the known-wrong formulas, each written once",
    "tests/test_registry.py": "this check",
}
_PY_SCANNED = tuple(p for p in _SCANNED if p.endswith(".py"))


def _order_copies(text: str) -> list[str]:
    """Dict literals mapping ≥ 3 orders to argument pairs (the lookup of
    :func:`amid_ref._specs.order_arguments`), and literals listing the four orders."""
    hits = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            pairs = all(isinstance(v, ast.Tuple | ast.List) and len(v.elts) == 2
                        for v in node.values)  # fmt: skip
            if len(keys & _ORDER_NAMES) >= 3 and pairs:
                hits.append(f"line {node.lineno}: an order → argument pair lookup")
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if len(values) == len(node.elts) == len(_ORDER_NAMES) and set(values) == _ORDER_NAMES:
                hits.append(f"line {node.lineno}: the orders listed by hand")
    return hits


def test_orders_and_the_order_lookup_are_written_once():
    found = {}
    for pattern in _PY_SCANNED:
        for path in ROOT.glob(pattern):
            rel = path.relative_to(ROOT).as_posix()
            if rel in _ORDERS_ALLOWED or "/.venv/" in rel:
                continue
            if hits := _order_copies(path.read_text(encoding="utf-8")):
                found[rel] = hits
    assert found == {}, f"read the orders from amid_ref._specs (ORDERS, order_arguments): {found}"


def test_the_naive_log_mean_is_written_once():
    found = {}
    for pattern in _PY_SCANNED:
        for path in ROOT.glob(pattern):
            rel = path.relative_to(ROOT).as_posix()
            if rel in _NAIVE_ALLOWED or "/.venv/" in rel:
                continue
            lines = path.read_text(encoding="utf-8").splitlines()
            hits = [i + 1 for i, line in enumerate(lines) if _NAIVE_LOG_MEAN.search(line)]
            if hits:
                found[rel] = hits
    assert found == {}, f"use amid_ref._battery._known_wrong.naive_log_alpha_mean: {found}"


def test_the_copy_checks_find_copies():
    lookup = 'x, y = {"pr": (lp, lr), "qr": (lq, lr), "rp": (lr, lp), "rq": (lr, lq)}[order]\n'
    assert _order_copies(lookup) == ["line 1: an order → argument pair lookup"]
    assert _order_copies('ORDERS = ("pr", "qr", "rp", "rq")\n')
    assert not _order_copies('flip = {"pr": "rp", "rp": "pr", "qr": "rq", "rq": "qr"}\n')
    assert not _order_copies('orders = ("pr", "qr")\n')
    assert _NAIVE_LOG_MEAN.search("lm = np.logaddexp(a + beta * lp, b + beta * lq) / beta")


def test_the_battery_builds_its_objectives_through_the_contract():
    """The conformance reference evaluates amid_ref through Objective (loss_of / grad_of),
    not through loose keyword calls of amid_loss / amid_grad."""
    calls = re.compile(r"\bamid_ref\.amid_(loss|grad)\(")
    for path in (ROOT / "amid_ref" / "conformance").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not calls.search(text), path.name
    reference = (ROOT / "amid_ref" / "conformance" / "_reference.py").read_text(encoding="utf-8")
    assert "Objective.of(" in reference


# --- one battery engine: one comparison and one summary for the three pairings -----------


def test_the_three_batteries_share_one_comparison_and_one_summary():
    # One summary type: the validation sweep's and the conformance families'.
    assert analysis.SweepSummary is _compare.Summary
    assert issubclass(_runner.FamilySummary, _compare.Summary)  # with the earlier count names
    # One comparison: the runner and the adapters call the same verdict and tolerance lookup.
    assert _runner.passes is _adapters.passes is _compare.passes
    assert _reference.tolerance_for is _adapters.tolerance_for is _compare.tolerance_for
    # The verdict is assert_within's (what the gpu tests assert), and agrees with fails().
    tol = Tolerance(rtol=1e-10, atol=0.0, reason="test")
    want = np.array([1.0, -math.inf, 0.0, 2.0])
    for got, ok in (
        (want.copy(), True),
        (np.array([1.0 + 1e-12, -math.inf, 0.0, 2.0]), True),
        (np.array([1.0 + 1e-8, -math.inf, 0.0, 2.0]), False),
        (np.array([1.0, math.inf, 0.0, 2.0]), False),
        (np.array([1.0, -math.inf, math.nan, 2.0]), False),
    ):
        assert _compare.passes(got, want, tol) is ok
        assert (not _compare.fails(got, want, tol).any()) is ok
        assert (_compare.error_ratio(got, want, tol)[0] <= 1.0) is ok


def test_the_summary_counts_and_says_its_status():
    s = _compare.Summary("loss")
    assert (s.status, s.passed, s.quantity) == ("skip", False, "loss")
    s.n_checks += 2
    s.skip("outside the support")
    s.skip("outside the support")
    assert (s.status, s.passed, s.n_passed, s.skip_reasons) == (
        "pass",
        True,
        2,
        ["outside the support"],
    )
    s.fail("off by 1e-3")
    assert (s.status, s.passed, s.n_failed, s.n_passed) == ("FAIL", False, 1, 1)


# --- imports: no cycles, function-local imports only for optional or heavy dependencies ----

_PACKAGES = ("amid_ref", "gpu", "proofs_check")

#: Import edges that still close a cycle, each with what breaks it.
_KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}

#: Modules whose function-local imports of project modules are not yet converted.
_LOCAL_IMPORTS_PENDING: tuple[str, ...] = ()


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in _PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, module: str, is_package: bool, type_checking: bool = False):
    """(imported module name, line, inside a function, a module rather than a name in one)
    for every runtime import, and with ``type_checking`` also those under
    ``if TYPE_CHECKING:``."""
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child) and not type_checking:
                continue
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function, True) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module
                out.append((name, child.lineno, in_function, True))
                out.extend(
                    (f"{name}.{a.name}", child.lineno, in_function, False) for a in child.names
                )
            visit(child, inside)

    visit(tree, False)
    return out


def _resolve(name: str, modules: Mapping[str, Path], is_module: bool = False) -> str | None:
    """The project module that importing ``name`` reads. A module of the project that is not
    in the tree (an optional module imported under ``try``) is no edge; outside the project,
    ``None``."""
    if name in modules:
        return name
    if not is_module:  # a name imported from a module: that module
        return _resolve(name.rpartition(".")[0], modules, True)
    return None


@functools.cache
def _import_graph(type_checking: bool = False):
    """(module → the project modules it imports, function-local imports), with
    ``type_checking`` counting the imports under ``if TYPE_CHECKING:`` too."""
    modules = _modules()
    graph, local = {}, []
    for module, path in modules.items():
        text = path.read_text(encoding="utf-8")
        edges = set()
        for name, line, in_function, is_module in _imports(
            ast.parse(text), module, path.name == "__init__.py", type_checking
        ):
            target = _resolve(name, modules, is_module)
            if target and target != module:
                edges.add(target)
            if in_function:
                local.append((module, path, line, name, target))
        graph[module] = frozenset(edges)
    return graph, tuple(local)


def _cycles(graph: Mapping[str, set]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return comps


def test_no_module_imports_one_that_imports_it_back():
    graph = dict(_import_graph()[0])
    for (a, b), reason in _KNOWN_CYCLE_EDGES.items():
        assert b in graph[a], f"{a} → {b} is gone: remove it from _KNOWN_CYCLE_EDGES ({reason})"
        graph[a] = graph[a] - {b}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_function_local_imports_are_optional_or_heavy_dependencies_with_a_comment():
    _, local = _import_graph()
    bad = []
    for module, path, line, name, target in local:
        if module.startswith(_LOCAL_IMPORTS_PENDING) or (module, target) in _KNOWN_CYCLE_EDGES:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        context = " ".join(lines[max(0, line - 3) : line + 1]).lower()
        if not re.search(r"#.*\b(optional|heavy)\b", context):
            bad.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert bad == [], (
        "function-local imports need a comment naming the optional or heavy dependency: "
        + ", ".join(sorted(set(bad)))
    )


def test_no_cycle_even_through_type_checking_imports():
    assert _cycles(_import_graph(type_checking=True)[0]) == []


# --- layers: the reference at the bottom, the tools above it -------------------------------

#: The layers of the project, bottom first (module name prefixes): a module imports only
#: modules of its own layer or of one below, counting function-local and ``TYPE_CHECKING``
#: imports. ``docs/contributing.md`` shows the same map.
LAYERS: dict[str, tuple[str, ...]] = {
    "reference": (
        "amid_ref",
        "amid_ref._specs",
        "amid_ref._special",
        "amid_ref._validation",
        "amid_ref._mixture",
        "amid_ref._divergences",
        "amid_ref._loss",
        "amid_ref.presets",
        "amid_ref.tolerances",
        "amid_ref.contract",
        "amid_ref._version",
    ),
    "oracle": ("amid_ref.precise",),
    "battery": (
        "amid_ref._battery",
        "amid_ref.strategies",
        "amid_ref.analysis",
        "amid_ref.conformance",
    ),
    "siblings": ("gpu", "proofs_check"),
    "tools": (
        "amid_ref._cli",
        "amid_ref.cli",
        "amid_ref.__main__",
        "amid_ref.verify",
        "amid_ref.plotting",
        "amid_ref.study",
    ),
}

#: Imports of a higher layer, each with the reason it cannot go yet.
_LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("gpu.bench", "amid_ref._battery._known_wrong"): (
        "the benchmark times the naive log α-mean (a known-wrong formula of the battery "
        "engine) as the baseline a user would write; it is a script, not the gpu library"
    ),
}


def _layer(module: str) -> str:
    """The layer of a module: the layer of its longest matching prefix."""
    best = ("", "")
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[1]):
                best = (layer, prefix)
    assert best[0], f"{module} is in no layer: add it to tests/test_registry.py LAYERS"
    return best[0]


def _upward_imports(graph: Mapping[str, set]) -> list[str]:
    order = list(LAYERS)
    return sorted(
        f"{a} ({_layer(a)}) → {b} ({_layer(b)})"
        for a, targets in graph.items()
        for b in targets
        if order.index(_layer(b)) > order.index(_layer(a)) and (a, b) not in _LAYER_EXCEPTIONS
    )


def test_every_module_imports_only_its_layer_and_those_below():
    graph = _import_graph(type_checking=True)[0]
    for (a, b), reason in _LAYER_EXCEPTIONS.items():
        assert b in graph[a], f"{a} → {b} is gone: remove it from _LAYER_EXCEPTIONS ({reason})"
    assert _upward_imports(graph) == []


def test_the_reference_imports_nothing_outside_itself():
    graph = _import_graph(type_checking=True)[0]
    reference = [m for m in graph if _layer(m) == "reference"]
    assert "amid_ref._loss" in reference and "amid_ref.precise" not in reference
    outside = {m: sorted(b for b in graph[m] if _layer(b) != "reference") for m in reference}
    assert {m: b for m, b in outside.items() if b} == {}
    # gpu and proofs_check, even lazily, only from the tools at the top
    siblings = sorted(
        f"{a} → {b}"
        for a, targets in graph.items()
        if a.startswith("amid_ref")
        for b in targets
        if _layer(b) == "siblings"
    )
    assert all(_layer(line.split(" → ")[0]) == "tools" for line in siblings), siblings


def test_the_layer_check_finds_an_upward_import():
    graph = {"amid_ref._loss": {"amid_ref._battery._case"}, "amid_ref._battery._case": set()}
    assert _upward_imports(graph) == [
        "amid_ref._loss (reference) → amid_ref._battery._case (battery)"
    ]
    assert _upward_imports({"amid_ref.verify": {"proofs_check"}}) == []
    assert _upward_imports({"amid_ref.conformance._peers": {"gpu"}}) == [
        "amid_ref.conformance._peers (battery) → gpu (siblings)"
    ]


# --- the public contract: the sibling packages import public modules of amid_ref only -------

#: Sibling modules that still import a private module of amid_ref, each with the reason.
_PRIVATE_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {
    ("gpu.bench", "amid_ref._battery._known_wrong"): _LAYER_EXCEPTIONS[
        ("gpu.bench", "amid_ref._battery._known_wrong")
    ],
}


def _private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split(".")[1:])


def _private_imports(graph: Mapping[str, set]) -> list[str]:
    return sorted(
        f"{a} → {b}"
        for a, targets in graph.items()
        if not a.startswith("amid_ref")
        for b in targets
        if b.startswith("amid_ref") and _private(b) and (a, b) not in _PRIVATE_IMPORTS_ALLOWED
    )


def test_sibling_packages_import_no_private_module_of_amid_ref():
    graph = _import_graph(type_checking=True)[0]
    for (a, b), reason in _PRIVATE_IMPORTS_ALLOWED.items():
        assert b in graph[a], f"{a} → {b} is gone: remove it from the exemptions ({reason})"
    assert _private_imports(graph) == [], "import the contract from amid_ref.contract"
    assert _private_imports({"gpu._loss": {"amid_ref._specs"}}) == ["gpu._loss → amid_ref._specs"]
    assert _private_imports({"gpu._loss": {"amid_ref.contract"}}) == []


# --- docs/contributing.md: the map of the layers and of the files to touch ----------------


def _contributing_table(heading: str) -> dict[str, set[str]]:
    """First cell → the backticked paths of the last cell, for the table under ``heading``."""
    text = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (
            line.startswith("|")
            and len(cells) >= 2
            and cells[0] not in ("", "---", "layer", "to add")
        ):
            rows[cells[0]] = set(re.findall(r"`([^`]+)`", cells[-1]))
    return rows


def _path_of(prefix: str) -> str:
    """``amid_ref._battery`` → ``amid_ref/_battery/``, ``amid_ref._specs`` → its file."""
    if prefix in _PACKAGES and prefix != "amid_ref":
        return f"{prefix}/"
    if prefix == "amid_ref":
        return "amid_ref/__init__.py"
    path = prefix.replace(".", "/")
    return f"{path}/" if (ROOT / path).is_dir() else f"{path}.py"


def _source(obj) -> str:
    return Path(inspect.getsourcefile(obj)).resolve().relative_to(ROOT).as_posix()


def _registry_objects() -> dict[tuple[str, str], object]:
    """The object each (file, variable) of _CHECKED_REGISTRIES names."""
    out = {}
    for rel, var in _CHECKED_REGISTRIES:
        parts = Path(rel).with_suffix("").parts
        module = parts[-1] if parts[0] == "tests" else ".".join(parts)
        out[(rel, var)] = getattr(importlib.import_module(module), var)
    return out


def test_the_checked_registries_are_the_registrations():
    reg = registrations()
    registered = [*reg["kernels"].values(), reg["strategies"], reg["textbook"]]
    registered.append(reg["zero_generators"])
    objects = _registry_objects()
    assert sorted(map(id, registered)) == sorted(map(id, objects.values())), (
        "_CHECKED_REGISTRIES and registrations() name different registries"
    )


def test_the_contributing_map_lists_the_layers():
    rows = _contributing_table("The layers")
    assert rows == {layer: {_path_of(p) for p in prefixes} for layer, prefixes in LAYERS.items()}
    assert all((ROOT / path).exists() for paths in rows.values() for path in paths)


def test_the_contributing_map_lists_the_registrations():
    import amid_ref.conformance.audit_page as audit_page
    from amid_ref.conformance._peers import PEERS

    pytest.importorskip("torch")
    from gpu import _engine  # torch: optional (the gpu extra)

    claims = _claims()
    record_claims = {c for spec in SPECS.values() for c in spec.claims}
    preset_claims = {c for c in claims if c.startswith("presets.")}
    expected = {
        "a divergence": {
            _source(DivergenceSpec),
            *(rel for rel, _ in _CHECKED_REGISTRIES),
            *(_source(claims[c].symbolic) for c in record_claims),
            "docs/mathematics.md",
        },
        "an order": {rel for rel in _ORDERS_ALLOWED},
        "a preset": {
            _source(amid_ref.presets.Preset),
            *(_source(claims[c].symbolic) for c in preset_claims),
            "tests/test_presets.py",
        },
        "a backend": {_source(_engine), "gpu/_torch_kernel.py"},
        "a peer": {
            _source(next(iter(PEERS.values())).__class__),
            *(
                p.relative_to(ROOT).as_posix() + ("/" if p.is_dir() else "")
                for p in (audit_page.REPORTS, audit_page.PAGE, audit_page.MAPPING)
            ),
        },
    }
    assert _contributing_table("The files to touch") == expected
    assert "BACKENDS" in vars(_engine) and (ROOT / "gpu" / "_torch_kernel.py").exists()


# --- the Objective at every entry point: one parameter list, computed from Objective.of ---

#: Parameters of Objective.of an entry point may leave out, each with its reason.
_SIGNATURE_GAPS: dict[tuple[str, str], str] = {
    ("amid_ref.amid_loss", "detach_assistant"): "the loss value does not depend on it",
    ("amid_ref.precise.amid_loss", "detach_assistant"): "the loss value does not depend on it",
}  # fmt: skip


def _entry_points() -> dict[str, object]:
    import amid_ref.precise
    import gpu

    return {
        "amid_ref.amid_loss": amid_ref.amid_loss,
        "amid_ref.amid_grad": amid_ref.amid_grad,
        "amid_ref.precise.amid_loss": amid_ref.precise.amid_loss,
        "amid_ref.precise.amid_grad": amid_ref.precise.amid_grad,
        "gpu.amid_loss": gpu.amid_loss,
        "gpu.AMiDLoss": gpu.AMiDLoss.__init__,
        "gpu.amid_fused_linear_loss": gpu.amid_fused_linear_loss,
        "gpu.AMiDFusedLinearLoss": gpu.AMiDFusedLinearLoss.__init__,
        "gpu.vocab_parallel_amid_loss": gpu.vocab_parallel_amid_loss,
        "gpu.VocabParallelAMiDLoss": gpu.VocabParallelAMiDLoss.__init__,
    }


def _signature_problems(objective_of, entry_points) -> list[str]:
    """Each entry point lists Objective.of's parameters (but the gaps with a reason), in
    its order, with its defaults."""
    wanted = [
        p
        for p in inspect.signature(objective_of).parameters.values()
        if p.name not in ("cls", "implementation")
    ]
    problems = []
    for entry, fn in entry_points.items():
        have = inspect.signature(fn).parameters
        names = [p.name for p in wanted if (entry, p.name) not in _SIGNATURE_GAPS]
        missing = [n for n in names if n not in have]
        if missing:
            problems.append(f"{entry} lacks {missing}")
        listed = [n for n in have if n in names]
        if listed != [n for n in names if n in have]:
            problems.append(f"{entry} lists {listed} out of Objective.of's order")
        for p in wanted:
            if p.name in have and have[p.name].default != p.default:
                problems.append(f"{entry}: {p.name} defaults to {have[p.name].default!r}")
    return problems


def test_every_entry_point_takes_the_objectives_parameters():
    from amid_ref.contract import Objective

    assert _signature_problems(Objective.of, _entry_points()) == []


def test_a_new_objective_field_names_every_entry_point_to_change():
    def of(cls, alpha, lam, divergence="kl", order="pr", div_params=None, temperature=1.0,
           detach_assistant=False, *, leftover="bucket", vocab_alignment="error",
           softcap=None, logit_scale=None, temperature_applies_to="both", toy=0.0,
           implementation=None): ...  # fmt: skip

    problems = _signature_problems(of, _entry_points())
    assert len([p for p in problems if "lacks" in p and "'toy'" in p]) == len(_entry_points())


def test_objective_keywords_rebuild_it():
    """``Objective.keywords()`` lists exactly Objective.of's parameters, and rebuilds the
    objective, for every record with parameter sets and every teacher form."""
    from amid_ref.contract import SPECS, Objective, objective_parameters

    wanted = [n for n in inspect.signature(Objective.of).parameters if n != "implementation"]
    assert list(objective_parameters()) == wanted
    forms = ({}, {"softcap": 30.0, "logit_scale": (2.0, None), "leftover": "uniform",
                  "vocab_alignment": "pad", "temperature_applies_to": "student"})  # fmt: skip
    built = 0
    for name, spec in SPECS.items():
        for params in spec.cases_for("battery")[:2]:
            for form in forms:
                obj = Objective.of(0.5, 0.3, name, "rq", params, 2.0, True, **form)
                assert list(obj.keywords()) == wanted
                assert Objective.of(**obj.keywords()) == obj, (name, params, form)
                built += 1
    assert built >= 2 * len([s for s in SPECS.values() if s.cases_for("battery")])
