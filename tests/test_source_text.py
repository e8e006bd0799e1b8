"""Source and documentation files hold no control characters: a backslash sequence such as
``\\f`` or ``\\b`` written through an unraw string (``\\frac``, ``\\beta`` in a formula)
lands in the file as a form feed or a backspace, and the rendered formula loses it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# every C0 control character but tab, newline and carriage return
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SUFFIXES = (".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".txt", ".ipynb")


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.splitlines() if name.endswith(_SUFFIXES)]


def test_no_control_characters_in_source_and_docs():
    found = []
    for path in _tracked():
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            match = _CONTROL.search(line)
            if match:
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group()!r}")
    assert not found, "control characters (an unraw backslash sequence?):\n" + "\n".join(found)


def test_the_check_finds_a_form_feed():
    assert _CONTROL.search("\\log" + "\x0c" + "rac{m}{b}")
    assert not _CONTROL.search("\\log\\frac{m}{b}\t")
