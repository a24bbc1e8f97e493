"""Write a table of strings as Markdown, CSV and LaTeX; every output is byte-identical for the same input."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ijepa_eval.errors import ConfigError
from ijepa_eval.io import atomic_write_text

FORMATS = ("md", "csv", "tex")
MISSING = "—"
LATEX_GLYPHS = {"Δ": r"$\Delta$", MISSING: "---", "×": r"$\times$", "±": r"$\pm$", "↑": r"$\uparrow$",
                "↓": r"$\downarrow$", "≈": r"$\approx$"}


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"unknown format {bad[0] if bad else text!r}; choose from {', '.join(FORMATS)}")
    return formats


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return MISSING
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def markdown(df: pd.DataFrame) -> str:
    """GitHub pipe table (no tabulate dependency); numbers-looking columns right-aligned."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    align = "|" + "|".join(":---" if i == 0 else "---" for i in range(len(df.columns))) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


def latex(df: pd.DataFrame, caption: str) -> str:
    """booktabs tabular via pandas; Δ, —, ± and the significance marks spelled so plain pdflatex compiles it."""
    caption = "".join("\\" + c if c in "&%$#_{}" else c for c in caption)
    text = df.to_latex(index=False, escape=True, caption=caption)
    for glyph, tex in LATEX_GLYPHS.items():
        text = text.replace(glyph, tex)
    return text


def write_frame(df: pd.DataFrame, stem: str | os.PathLike, formats: tuple[str, ...], caption: str, md: str | None = None) -> list[Path]:
    """Write ``stem.md/.csv/.tex``; ``md`` replaces the plain Markdown rendering (title, notes)."""
    stem = Path(stem)
    written = []
    for f in formats:
        path = stem.with_suffix(f".{f}")
        if f == "md":
            atomic_write_text(path, md if md is not None else markdown(df))
        elif f == "csv":
            atomic_write_text(path, df.to_csv(index=False, lineterminator="\n"))
        else:
            atomic_write_text(path, latex(df, caption))
        written.append(path)
    return written
