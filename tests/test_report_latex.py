"""Every `.tex` table the report writes compiles: a document that `\\input`s them all goes
through a real `pdflatex` (Debian's texlive-latex-recommended; `.ci/run` installs it)."""

import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

import harness
from harness.report import build_report
from harness.report.document import Table, write_table
from harness.report.latex import PACKAGES, tex_escape

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(
    PDFLATEX is None, reason="no pdflatex: .ci/run installs Debian's texlive-latex-recommended "
    "with apt-get, and this machine has neither")


def compile_tables(tables: list[Path], folder: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """pdflatex on a document that inputs `tables`, in `folder`; (the run, the PDF path)."""
    body = "\n".join(rf"\input{{{path.resolve().as_posix()}}}" for path in tables)
    preamble = "\n".join(rf"\usepackage{{{package}}}" for package in PACKAGES)
    (folder / "tables.tex").write_text(
        f"\\documentclass{{article}}\n{preamble}\n\\begin{{document}}\n{body}\n"
        "\\end{document}\n")
    run = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "tables.tex"],
                         cwd=folder, capture_output=True, text=True, timeout=120)
    return run, folder / "tables.pdf"


def _assert_compiled(run: subprocess.CompletedProcess, pdf: Path, tables: list[Path]) -> str:
    log = pdf.with_suffix(".log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    # a glyph pdflatex lacks is a warning, not an error: the cell would print blank
    assert "Missing character" not in log, re.findall(r"Missing character.*", log)
    text = " ".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert re.findall(r"Table (\d+):", text) == [str(i) for i in range(1, len(tables) + 1)]
    return text


def test_tex_escape_maps_specials_greek_and_signs_by_hand():
    assert tex_escape("ρ_1 & 50% #2: Δ ± τ — x") == (
        r"\ensuremath{\rho}\_1 \& 50\% \#2: \ensuremath{\Delta} \ensuremath{\pm} "
        r"\ensuremath{\tau} --- x")
    # two math characters in a row must not make "$$" (display math)
    assert tex_escape("ρη") == r"\ensuremath{\rho}\ensuremath{\eta}"
    assert tex_escape("0.81 [0.80, 0.82] – n²") == r"0.81 [0.80, 0.82] -- n\textsuperscript{2}"
    assert tex_escape("[0.1, 0.2]") == "{[}0.1, 0.2]"  # not the optional argument of \\
    assert tex_escape(math.nan) == tex_escape(None) == "--"
    assert tex_escape("p<0.05 | Ω Α") == r"p\textless{}0.05 \textbar{} \ensuremath{\Omega} A"
    assert tex_escape("é ά 😀") == r"e \ensuremath{\alpha} [U+1F600]"


@needs_pdflatex
def test_every_character_of_the_harness_text_compiles(tmp_path):
    """A table holding every non-ASCII character the harness's code can put in a table, the
    LaTeX specials and an empty cell."""
    chars = sorted({c for path in Path(harness.__file__).parent.rglob("*.py")
                    for c in path.read_text() if not c.isascii()})
    chars = [c for c in chars if c.isprintable()]
    cells = ["".join(chars[i:i + 8]) for i in range(0, len(chars), 8)]
    specials = "\\ & % $ # _ { } ~ ^ < > | [x]"
    display = pd.DataFrame({"cell": [*cells, specials, math.nan], "Δ ρ": "±"})
    table = Table("characters", display, display, "Every character: ρ_1 & 50 % #2 — Δ.")
    paths = write_table(table, tmp_path, {"tex"})
    run, pdf = compile_tables(paths, tmp_path)
    _assert_compiled(run, pdf, paths)


@needs_pdflatex
def test_every_table_the_report_writes_compiles(report_home, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(report_home))
    tables = []
    for study in ("tiny", "tiny-fail"):  # a failed method's reasons and empty cells too
        out = build_report(study, out=tmp_path / study, formats=["tex"])
        tables += sorted((out / "tables").glob("*.tex"))
    names = {p.stem for p in tables}
    assert {"summary", "run_outcomes", "delta_summary", "miou_by_severity", "delta_vs_adamw",
            "domain_prompt", "sharpness_probes", "tuning_trials", "cost_claims", "settings",
            "provenance"} <= names
    run, pdf = compile_tables(tables, tmp_path)
    text = _assert_compiled(run, pdf, tables)
    assert "Provenance of this report." in text
