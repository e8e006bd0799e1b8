"""Plain-text rendering of the simple LaTeX in claim statements and docstrings (for the
reports and ``--help``, which must read without MathJax)."""

from __future__ import annotations

import re

_LATEX_SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "Delta": "Δ", "lambda": "λ",
    "rho": "ρ", "psi": "ψ", "theta": "θ", "chi": "χ", "infty": "∞", "to": "→", "le": "≤",
    "ge": "≥", "ne": "≠", "iff": "⇔", "Rightarrow": "⇒", "sum": "Σ", "partial": "∂",
    "nabla": "∇", "cup": "∪", "cap": "∩", "in": "∈", "pm": "±", "mp": "∓", "cdot": "·",
    "times": "×", "approx": "≈", "lim": "lim", "log": "log", "min": "min", "max": "max",
    "arg": "arg", "exp": "exp", "quad": "  ", "qquad": "    ", "Vert": "‖", "vert": "|",
}  # fmt: skip


def _par(text: str) -> str:
    """Parenthesize a fraction's part unless it is one symbol or number."""
    return text if re.fullmatch(r"\w+|[^\s\w]", text.strip()) else f"({text})"


def latex_to_text(tex: str) -> str:
    """Render the simple LaTeX of claim statements as Unicode text (for the report, which
    must read without MathJax): Greek letters, relations, ``\\text{}``, ``\\frac``,
    ``\\sqrt``; anything else is left as written."""
    out = tex.replace("\\|", "‖").replace("\\tfrac12", "½").replace("\\frac12", "½")
    out = re.sub(r"\\t?frac(\d)(\d)", r"\1/\2", out)
    groups = ("text", "mathrm", "operatorname", "mathbf", "mathit", "mathbb", "frac", "tfrac")
    out = re.sub(
        r"\\([A-Za-z]+)",
        lambda m: m[0] if m[1] in groups else _LATEX_SYMBOLS.get(m[1], m[0]),
        out,
    )
    for _ in range(4):  # innermost groups first
        out = re.sub(r"\^\{([^{}]*)\}", r"^(\1)", out)
        out = re.sub(r"_\{([^{}]*)\}", r"_(\1)", out)
        out = re.sub(r"\\(?:text|mathrm|operatorname|mathbf|mathit)\{([^{}]*)\}", r" \1", out)
        out = re.sub(r"\\mathbb\{([^{}]*)\}", lambda m: {"R": "ℝ"}.get(m[1], m[1]), out)
        out = re.sub(
            r"\\t?frac\{([^{}]*)\}\{([^{}]*)\}", lambda m: f"{_par(m[1])}/{_par(m[2])}", out
        )
        out = re.sub(r"\\sqrt\{([^{}]*)\}", r"√(\1)", out)
    out = re.sub(r"\\[Bb]ig[lr]?", "", out)
    out = re.sub(r"\\[,;:! ]", " ", out)
    return re.sub(r"\s+", " ", out).strip()
