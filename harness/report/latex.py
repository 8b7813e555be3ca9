"""Text for LaTeX tables that compile with plain `pdflatex` (Debian's texlive-latex-recommended).

pdflatex reads UTF-8 but has glyphs for few characters beyond ASCII: every other one stops
the run ("Unicode character … not set up for use with LaTeX"). So the report's Greek letters,
math signs, dashes, super- and subscripts become LaTeX commands; a character with no mapping
falls back to its base character when it has one (é → e, ά → α), else to its code point.
Math goes through `\\ensuremath`, never `$…$`: two mapped characters in a row would give `$$`,
which TeX reads as the start of display math.
"""

from __future__ import annotations

import math
import unicodedata

PACKAGES = ("booktabs",)  # what a document needs in its preamble to \input the tables

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}",
            # OT1 text fonts print ¡ ¿ — in these slots
            "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_TEXT = {"–": "--", "—": "---", "−": "-", "…": r"\ldots{}", "†": r"\dag{}", "‡": r"\ddag{}",
         "§": r"\S{}", "‘": "`", "’": "'", "“": "``", "”": "''", "\u00a0": "~"}
_MATH = {"×": r"\times", "±": r"\pm", "·": r"\cdot", "≈": r"\approx", "≥": r"\geq",
         "≤": r"\leq", "≠": r"\neq", "→": r"\rightarrow", "←": r"\leftarrow",
         "↔": r"\leftrightarrow", "∞": r"\infty", "√": r"\surd", "∇": r"\nabla",
         "÷": r"\div", "‖": r"\|", "⊥": r"\perp", "∩": r"\cap", "∪": r"\cup", "∈": r"\in",
         "⊆": r"\subseteq", "⊙": r"\odot", "⟨": r"\langle", "⟩": r"\rangle", "°": r"^{\circ}",
         "½": r"\frac{1}{2}", "∑": r"\sum", "∏": r"\prod", "∂": r"\partial"}
_SUPER = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻ⁿᵀ", "0123456789+-nT"))
_SUB = dict(zip("₀₁₂₃₄₅₆₇₈₉ᵢⱼ", "0123456789ij"))
_GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
          "pi rho sigma tau upsilon phi chi psi omega").split()
# Greek capitals that look like Latin ones have no TeX command: the Latin letter is the glyph
_LATIN_CAPITALS = {"alpha": "A", "beta": "B", "epsilon": "E", "zeta": "Z", "eta": "H",
                   "iota": "I", "kappa": "K", "mu": "M", "nu": "N", "omicron": "O", "rho": "P",
                   "tau": "T", "chi": "X"}


def _greek() -> dict[str, str]:
    out = {"\u03c2": r"\ensuremath{\varsigma}", "\u03bf": "o"}  # final sigma; omicron
    for name in _GREEK:
        unicode_name = name.upper().replace("LAMBDA", "LAMDA")  # Unicode's spelling
        small = unicodedata.lookup(f"GREEK SMALL LETTER {unicode_name}")
        out.setdefault(small, rf"\ensuremath{{\{name}}}")
        capital = unicodedata.lookup(f"GREEK CAPITAL LETTER {unicode_name}")
        out[capital] = _LATIN_CAPITALS.get(name) or rf"\ensuremath{{\{name.capitalize()}}}"
    return out


_GREEK_TEX = _greek()
MISSING = "–"  # what an empty cell (None, NaN) prints as


def tex_char(char: str) -> str:
    """One character as pdflatex can typeset it."""
    if char in _SPECIAL:
        return _SPECIAL[char]
    if char.isascii():
        return char
    if char in _TEXT:
        return _TEXT[char]
    if char in _MATH:
        return rf"\ensuremath{{{_MATH[char]}}}"
    if char in _SUPER:
        return rf"\textsuperscript{{{_SUPER[char]}}}"
    if char in _SUB:
        return rf"\ensuremath{{_{{\mathrm{{{_SUB[char]}}}}}}}"
    if char in _GREEK_TEX:
        return _GREEK_TEX[char]
    # é → e, ά → α, µ → μ, a lone combining accent → nothing; the rest: its code point
    base = "".join(c for c in unicodedata.normalize("NFKD", char)
                   if not unicodedata.combining(c))
    if base != char:
        return "".join(tex_char(c) for c in base)
    return f"[U+{ord(char):04X}]"


def tex_escape(text: object) -> str:
    """`text` (any cell value) as LaTeX text: specials escaped, non-ASCII mapped (see the
    module), None / NaN as an en dash. A leading `[` is braced: after a table's `\\\\` it
    would be read as the row-spacing argument."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        text = MISSING
    out = "".join(tex_char(c) for c in str(text))
    return "{[}" + out[1:] if out.startswith("[") else out
