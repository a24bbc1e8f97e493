"""Write a table as Markdown, CSV and LaTeX; every output is byte-identical for the same input.

A table holds strings and ``ValueCell``s (a number with its interval and marks): Markdown, LaTeX and HTML
show a ``ValueCell`` as its text (``72.4 [71.1, 73.6] ↑``), CSV splits it into value, lo, hi and marks columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ijepa_eval.errors import ConfigError
from ijepa_eval.io import atomic_write_text

FORMATS = ("md", "csv", "tex")
MISSING = "—"
LATEX_GLYPHS = {"Δ": r"$\Delta$", MISSING: "---", "×": r"$\times$", "±": r"$\pm$", "↑": r"$\uparrow$",
                "↓": r"$\downarrow$", "≈": r"$\approx$", "‡": r"\ddag{}", "∉": r"$\notin$", "∈": r"$\in$",
                "−": "-"}


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


@dataclass(frozen=True)
class ValueCell:
    """A number as a table shows it: ``72.4‡ [71.1, 73.6] ↑ (note; note)``.

    ``‡`` follows the value when the head was chosen on the test split; the interval is printed as it is
    (never ± a half-width, which misstates an asymmetric one); ``mark`` is a paired test's ↑ / ↓ / ≈ or the
    paper check's ∉ / ∈; ``notes`` say what else the reader must know (seed spread, the protocol chosen).
    """

    value: float | None
    ci: tuple[float, float] | None = None
    mark: str = ""
    notes: tuple[str, ...] = ()
    test_selected: bool = False
    signed: bool = False  # a difference: +1.2

    def marks(self) -> str:
        """Everything after the interval: the mark and the notes."""
        parts = [self.mark] if self.mark else []
        if self.notes:
            parts.append(f"({'; '.join(self.notes)})")
        return " ".join(parts)

    def __str__(self) -> str:
        if self.value is None:
            return MISSING
        text = fmt(self.value, self.signed) + ("‡" if self.test_selected else "")
        if self.ci is not None:
            text += f" [{fmt(self.ci[0], self.signed)}, {fmt(self.ci[1], self.signed)}]"
        return f"{text} {self.marks()}".rstrip()

    def csv_fields(self) -> tuple[str, str, str, str]:
        """(value, lo, hi, marks) with 2 decimals; ``‡`` moves to the marks."""
        def num(v: float | None) -> str:
            return MISSING if v is None else f"{v:+.2f}" if self.signed else f"{v:.2f}"

        lo, hi = self.ci if self.ci is not None else (None, None)
        marks = " ".join(m for m in ("‡" if self.test_selected else "", self.marks()) if m)
        return num(self.value), num(lo), num(hi), marks


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Every column holding ``ValueCell``s split: the value, ``<column> lo`` and ``<column> hi`` (not for a
    column of differences without intervals, Δ), ``<column> marks``."""
    out: dict[str, list[str]] = {}
    for name in df.columns:
        values = df[name].tolist()
        cells = [v for v in values if isinstance(v, ValueCell)]
        if not cells:
            out[str(name)] = [str(v) for v in values]
            continue
        fields = [v.csv_fields() if isinstance(v, ValueCell) else (str(v), MISSING, MISSING, "") for v in values]
        bare = all(c.signed and c.ci is None for c in cells)
        keep = ("", None, None, " marks") if bare else ("", " lo", " hi", " marks")
        for suffix, column in zip(keep, zip(*fields, strict=True), strict=True):
            if suffix is not None:
                out[f"{name}{suffix}"] = list(column)
    return pd.DataFrame(out, columns=list(out))


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
            atomic_write_text(path, csv_frame(df).to_csv(index=False, lineterminator="\n"))
        else:
            atomic_write_text(path, latex(df.map(str), caption))
        written.append(path)
    return written
