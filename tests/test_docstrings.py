"""The API reference renders every public parameter: each numpydoc ``Parameters`` section
names exactly the parameters of the signature, each with a description, and a parameter
documented as ``optional`` (or with a stated default) has that default in the signature.

The docstrings are parsed by griffe's numpy parser, the one mkdocstrings uses for the site,
so a combined or malformed line fails here as it would render wrongly there.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

griffe = pytest.importorskip("griffe")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("amid_ref", "amid_ref.precise", "gpu", "gpu.hf", "proofs_check")

_VARIADIC = ("variadic positional", "variadic keyword")
# "default 0.5", "default: 0.5", "default=0.5" in the type of a parameter
_STATED_DEFAULT = re.compile(r"\bdefault\s*[:=]?\s*([^,]+)")


def _public(package: str) -> list[tuple[str, object]]:
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)], docstring_parser=griffe.Parser.numpy)
    root = loader.load(package.split(".")[0])
    if package.split(".")[0] != "amid_ref":
        loader.load("amid_ref")  # gpu re-exports names of the contract module amid_ref._specs
    loader.resolve_aliases(implicit=False, external=False)
    module = root if "." not in package else root.get_member(package.split(".", 1)[1])
    names = module.exports if module.exports is not None else list(module.members)
    out = []
    for name in (str(n) for n in names):
        if name.startswith("_"):
            continue
        obj = module.get_member(name)
        obj = obj.final_target if obj.is_alias else obj
        if obj.is_function:
            out.append((f"{package}.{name}", obj))
        elif obj.is_class:
            out.append((f"{package}.{name}", obj))
            for member_name, member in obj.members.items():
                member = member.final_target if member.is_alias else member
                if not member_name.startswith("_") and member.is_function:
                    out.append((f"{package}.{name}.{member_name}", member))
    return out


def _signature(obj) -> list:
    if obj.is_class:
        init = obj.members.get("__init__")
        params = list(init.parameters) if init is not None else []
    else:
        params = list(obj.parameters)
    return [p for p in params if p.name not in ("self", "cls")]


def _documented(obj) -> list:
    logging.getLogger("griffe").setLevel(logging.ERROR)  # the checks below say what is wrong
    sections = obj.docstring.parse(griffe.Parser.numpy) if obj.docstring else []
    return [
        p for s in sections if s.kind is griffe.DocstringSectionKind.parameters for p in s.value
    ]


def _problems(obj) -> list[str]:
    documented = _documented(obj)
    if not documented:
        return []  # no Parameters section (or nothing to document)
    signature = _signature(obj)
    named = {p.name: p for p in signature if p.kind.value not in _VARIADIC}
    variadic = {f"{'*' if p.kind.value == _VARIADIC[0] else '**'}{p.name}" for p in signature}
    variadic |= {v.lstrip("*") for v in variadic}
    out = []
    doc_names = [p.name for p in documented]
    missing = [n for n in named if n not in doc_names]
    unknown = [n for n in doc_names if n not in named and n not in variadic]
    if missing:
        out.append(f"parameters not documented: {missing}")
    if unknown:
        out.append(f"documented but not in the signature: {unknown}")
    repeated = sorted({n for n in doc_names if doc_names.count(n) > 1})
    if repeated:
        out.append(f"documented twice: {repeated}")
    for doc in documented:
        if not doc.description.strip():
            out.append(f"{doc.name}: empty description")
        param = named.get(doc.name)
        if param is None:
            continue
        kind = str(doc.annotation or "")
        if re.search(r"\boptional\b", kind) and param.default is None:
            out.append(f"{doc.name}: documented as optional but required in the signature")
        stated = _STATED_DEFAULT.search(kind)
        if stated and param.default is not None:
            want, got = stated.group(1).strip().strip("`"), str(param.default).strip("'\"")
            if want.strip("'\"") != got:
                out.append(f"{doc.name}: documented default {want}, signature default {got}")
    return out


# ids without the bare word "gpu": that keyword is the CUDA marker (tests/conftest.py)
@pytest.mark.parametrize("package", PACKAGES, ids=[f"pkg_{p}" for p in PACKAGES])
def test_parameters_sections_match_the_signatures(package):
    objects = _public(package)
    assert len(objects) >= 3, f"{package}: public API not found"
    problems = {name: p for name, obj in objects if (p := _problems(obj))}
    assert not problems, "\n".join(f"{name}: {'; '.join(p)}" for name, p in problems.items())


def test_the_check_catches_a_combined_parameter_line():
    """The defect it guards against: a numpydoc line naming several parameters without a
    type renders as untyped parameters without descriptions."""
    module = griffe.visit(
        "sample",
        filepath=Path("sample.py"),
        code='def f(alpha, lam, chunk_size=None):\n    """F.\n\n    Parameters\n    ----------\n'
        '    alpha, lam,\n    chunk_size\n        As elsewhere.\n    """\n',
        docstring_parser=griffe.Parser.numpy,
    )
    problems = _problems(module["f"])
    assert any("empty description" in p for p in problems), problems
