"""The I-JEPA paper's reference numbers (``results/paper/*.csv``) and how our protocols map onto them.

The numbers live in CSV (data, not code) so a reader can audit them against the paper; this module only
loads them, names the tables and normalises the row keys a result's ``model.meta`` is matched against.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ijepa_eval.errors import ConfigError

PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"
PAPER_CSV = PAPER_DIR / "ijepa_paper.csv"
COMPUTE_CSV = PAPER_DIR / "ijepa_compute.csv"

PAPER_COLUMNS = ("table", "source", "method", "arch", "epochs", "data", "masking", "protocol", "metric", "value", "kind")
# What places a model in a paper row. An empty cell in the paper CSV matches anything (the paper's
# Tables 3-5 do not list epochs; only Table 6 varies the masking).
ROW_KEYS = ("method", "arch", "epochs", "data", "masking")

# The paper's Table 2 ("IN-1k 1%") reports, per method, whichever adaptation worked best (fine-tuning or
# a frozen probe). Our suite splits that into separate protocols; a Table 2 cell takes the best of these.
# Every other paper protocol is filled by our protocol of the same name.
PROTOCOL_SOURCES: dict[str, tuple[str, ...]] = {
    "in1k_1pct": ("in1k_1pct_finetune", "in1k_1pct_finetune_semivit", "in1k_1pct_linear", "in1k_1pct_logreg"),
}
ADAPTATIONS = ("finetune", "frozen")  # results.py ResultRecord.adaptation values
UNKNOWN = "unknown"  # a paper row whose adaptation no source states: no "ours" / Δ beside it


@dataclass(frozen=True)
class RowSource:
    """How the number in a mixed-adaptation column was made, and by whom (results/paper/README.md quotes
    the sentences); ``note``: why the row is reference only (no Δ can be computed like with like)."""

    adaptation: str  # one of ADAPTATIONS, or UNKNOWN
    source: str  # short citation, shown in the table's `paper source` column
    note: str = ""


_RESNET = "a ResNet; this suite evaluates ViT checkpoints only, so no result of ours can sit beside it"
_MSN_LOGREG = "MSN Table 2: logistic regression on frozen features (MSN App. A.2)"
ROW_SOURCES: dict[str, dict[str, RowSource]] = {
    "in1k_1pct": {
        "ijepa": RowSource("finetune", "I-JEPA App. A.2 (MAE's fine-tuning protocol)"),
        "mae": RowSource("finetune", "Semi-ViT README 'Finetune' acc@1% (its FINETUNE.md)"),
        "data2vec": RowSource(UNKNOWN, "not found", "data2vec ViT-L/16 73.3: no source found for this number "
                              "(the row cites the data2vec paper; neither the I-JEPA text nor the sources read "
                              "here state how it was made), so its adaptation is unknown"),
        "ibot": RowSource("frozen", f"{_MSN_LOGREG}, run by MSN"),
        "dino": RowSource("frozen", f"{_MSN_LOGREG}, run by MSN"),
        "msn": RowSource("frozen", _MSN_LOGREG),
        "simclrv2": RowSource("finetune", "SimCLRv2 Table 1 (RN152 2x, no SK)",
                              f"SimCLRv2 RN152 (2x) 70.2 (the paper prints 'RN151'; SimCLRv2's Table 1 has "
                              f"depth 152): {_RESNET}"),
        "byol": RowSource("finetune", "BYOL Table 2b", f"BYOL RN200 (2x) 71.2: {_RESNET}"),
    },
}
# Table 2's adaptation per method, from the sentences results/paper/README.md quotes: I-JEPA App. A.2
# fine-tunes I-JEPA's own ViT-L/H; the MAE numbers are Semi-ViT's fine-tuned ones; MSN computed the iBOT,
# DINO and MSN numbers with a frozen logistic regression; SimCLRv2 and BYOL fine-tune the whole ResNet;
# data2vec's is not stated anywhere read.
ADAPTATION_SPLIT: dict[str, dict[str, str]] = {
    p: {method: row.adaptation for method, row in rows.items()} for p, rows in ROW_SOURCES.items()
}
DEFAULT_META = {"data": "IN-1k", "masking": "multi-block"}  # I-JEPA's default masking; most rows are IN-1k

_VIT_SIZES = {"tiny": "ti", "small": "s", "base": "b", "large": "l", "huge": "h", "giant": "g", "gigantic": "g"}


def our_protocols(paper_protocol: str) -> tuple[str, ...]:
    """Our protocol names whose results fill a paper protocol's column."""
    return PROTOCOL_SOURCES.get(paper_protocol, (paper_protocol,))


def paper_adaptation(paper_protocol: str, method: object) -> str | None:
    """How the paper adapted this row's model for a mixed-adaptation column (None: the column is not mixed;
    UNKNOWN: no source states it)."""
    split = ADAPTATION_SPLIT.get(paper_protocol)
    return None if split is None else split.get(normalize("method", method), UNKNOWN)


def row_source(paper_protocol: str, method: object) -> RowSource | None:
    """Where a mixed-adaptation column's paper number comes from (None: not a mixed column)."""
    rows = ROW_SOURCES.get(paper_protocol)
    if rows is None:
        return None
    return rows.get(normalize("method", method), RowSource(UNKNOWN, "not found"))


def normalize(key: str, value: object) -> str:
    """Canonical spelling of a row key so 'ViT-H/14', 'vit_huge_patch14_224' and 'h/14' compare equal."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return ""
    text = str(value).strip().lower().replace("×", "x")
    if key == "epochs":
        return str(int(float(text)))
    if key == "arch":
        text = re.sub(r"[\s()]", "", text)
        timm = re.fullmatch(r"vit_([a-z]+)_patch(\d+)(?:_[a-z]+)*?(?:_(\d{3}))?(?:\.[\w]+)?", text)
        if timm and timm.group(1) in _VIT_SIZES:
            res = timm.group(3)
            text = f"{_VIT_SIZES[timm.group(1)]}/{timm.group(2)}" + (f"@{res}" if res and res != "224" else "")
        text = re.sub(r"^vit[-_.]?", "", text)
        return re.sub(r"[-_](448)(px)?$", r"@\1", text)
    if key == "data":
        text = re.sub(r"[^a-z0-9]", "", text).replace("imagenet", "in")
        return {"in": "in1k", "in21k": "in22k"}.get(text, text)
    return re.sub(r"[^a-z0-9]", "", text)  # method, masking: 'I-JEPA' == 'ijepa', 'multi-block' == 'multiblock'


@dataclass(frozen=True)
class PaperTable:
    key: str  # "table1"
    title: str  # "Table 1 (IN-1k linear probe)"
    protocols: tuple[str, ...]  # paper protocol keys, column order
    row_keys: tuple[str, ...]  # ROW_KEYS that vary in this table (shown as columns)
    rows: pd.DataFrame  # this table's slice of the paper CSV


COMPUTE_COLUMNS = ("claim", "source", "method", "arch", "epochs", "data", "metric", "relation", "value", "kind")


def _read_reference(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Every column as text (empty cells stay ''), except ``value`` (float)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ConfigError(f"paper reference file not found: {path}; pass --paper FILE") from None
    missing = set(columns) - set(df.columns)
    if missing:
        raise ConfigError(f"{path} lacks columns {sorted(missing)}; expected {', '.join(columns)}")
    try:
        df["value"] = df["value"].astype(float)
    except ValueError:
        raise ConfigError(f"{path}: column 'value' must hold numbers only") from None
    return df


def load_paper(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Tables 1-6 (``ijepa_paper.csv``)."""
    return _read_reference(Path(path or PAPER_CSV), PAPER_COLUMNS)


def load_compute(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's compute claims (``ijepa_compute.csv``: GPU-hours bound, speed-up ratios)."""
    return _read_reference(Path(path or COMPUTE_CSV), COMPUTE_COLUMNS)


def paper_tables(paper: pd.DataFrame) -> list[PaperTable]:
    """Tables in CSV order; protocols and varying row keys in first-seen order."""
    tables = []
    for key in dict.fromkeys(paper["table"]):
        rows = paper[paper["table"] == key].reset_index(drop=True)
        varying = tuple(k for k in ROW_KEYS if k in ("method", "arch") or rows[k].nunique() > 1)
        tables.append(
            PaperTable(
                key=key,
                title=rows["source"].iloc[0],
                protocols=tuple(dict.fromkeys(rows["protocol"])),
                row_keys=varying,
                rows=rows,
            )
        )
    return tables


def row_matches(row: dict, meta: dict) -> bool:
    """A model's meta fits a paper row when every key both give agrees; method and arch are required."""
    if not meta.get("method") or not meta.get("arch"):
        return False
    for key in ROW_KEYS:
        want = normalize(key, row.get(key))
        if not want:
            continue
        have = normalize(key, meta.get(key, DEFAULT_META.get(key)))
        if have and have != want:
            return False
    return True
