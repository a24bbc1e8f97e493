"""The evaluation data behind each paper number, and whether a result was computed on that same data.

A paper cell compares like with like. Model metadata alone cannot tell a real CLEVR run from the demo's
CLEVR-mini (its dataset is also named ``clevr_count``) or from a run on a subset, so a result only fills a
paper cell when the data its JSON records (``dataset.name``, split names, ``num_classes`` and ``sizes``, the
number of images of each split actually evaluated; see ``protocols/runner.py``) is the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ijepa_eval.results import ResultRecord


@dataclass(frozen=True)
class PaperData:
    """The real data of one protocol: dataset name, classes, and images per split (train + reported split)."""

    dataset: str
    num_classes: int
    test_split: str  # the split the paper reports on
    sizes: dict[str, int]  # split name -> images; a split the result does not record is not checked
    tolerance: float = 0.0  # relative, where public copies differ and no exact count is pinned (Places205)
    official_split_file: bool = False  # 1%: the SimCLR split file (data/subsets.py checks its sha256)


_IN1K = {"train": 1_281_167, "val": 50_000}
_CLEVR = {"train": 63_000, "val": 7_000, "test": 15_000}  # VTAB: CLEVR train[:63000] / rest / CLEVR val
_IN1K_1PCT = PaperData("imagenet_1pct", 1000, "val", {"train": 12_811, "val": 50_000}, official_split_file=True)

# Keyed by our protocol name (results record it); every protocol that fills a paper column is listed.
PAPER_DATA: dict[str, PaperData] = {
    "in1k_linear": PaperData("imagenet", 1000, "val", _IN1K),
    "in1k_1pct_linear": _IN1K_1PCT,
    "in1k_1pct_logreg": _IN1K_1PCT,
    "in1k_1pct_finetune": _IN1K_1PCT,
    "in1k_1pct_finetune_semivit": _IN1K_1PCT,
    "cifar100": PaperData("cifar100", 100, "test", {"train": 50_000, "test": 10_000}),
    # VISSL's trainvalsplit_places205 lists: ≈2.45 M train, 100 val images per class (≈20,500)
    "places205": PaperData("places205", 205, "val", {"train": 2_448_873, "val": 20_500}, tolerance=0.01),
    "inat18": PaperData("inat18", 8142, "val", {"train": 437_513, "val": 24_426}),
    "clevr_count": PaperData("clevr_count", 8, "test", _CLEVR),
    "clevr_dist": PaperData("clevr_dist", 6, "test", _CLEVR),
}
# Attentive probes (the "Attentive probes" table) run on the same data as the linear protocol they pair with.
PAPER_DATA |= {f"{name}_attentive": PAPER_DATA[linear] for name, linear in (
    ("in1k", "in1k_linear"), ("in1k_1pct", "in1k_1pct_linear"), ("cifar100", "cifar100"),
    ("places205", "places205"), ("inat18", "inat18"), ("clevr_count", "clevr_count"), ("clevr_dist", "clevr_dist"))}
PAPER_DATA["in1k_attentive_vjepa2"] = PAPER_DATA["in1k_linear"]


def _count(n: int, spec: PaperData) -> str:
    return f"{'≈' if spec.tolerance else ''}{n:,}"


def _official_issue(record: ResultRecord) -> str | None:
    """The 1% split file: refused unless official by the data room, except with allow_custom_split."""
    info = record.dataset.get("split_info")
    if isinstance(info, dict) and "official" in info:
        return None if info["official"] else "eval data: 1% split file is not the official SimCLR file"
    options = ((record.protocol.get("config") or {}).get("dataset") or {}).get("options") or {}
    if options.get("allow_custom_split"):
        return "eval data: custom 1% split file allowed and no split_info recorded"
    return None


def data_issues(record: ResultRecord) -> list[str] | None:
    """Why this result was not evaluated on the paper's data ([] = it was); None: not a paper protocol."""
    spec = PAPER_DATA.get(record.protocol.get("name", ""))
    if spec is None:
        return None
    data: dict[str, Any] = record.dataset or {}
    sizes = data.get("sizes") or {}
    if not sizes:
        return ["eval data: not recorded (result has no dataset.sizes)"]
    issues = []
    if data.get("name") != spec.dataset:
        issues.append(f"eval data: dataset {data.get('name')!r} (paper: {spec.dataset})")
    reported = data.get("test_split")
    if reported != spec.test_split:
        issues.append(f"eval data: reported on split {reported!r} (paper: {spec.test_split})")
    elif reported not in sizes:
        issues.append(f"eval data: size of the reported split {reported!r} not recorded")
    for split, want in spec.sizes.items():
        have = sizes.get(split)
        if have is not None and abs(int(have) - want) > spec.tolerance * want:
            issues.append(f"eval data: {int(have):,} {split} images (paper: {_count(want, spec)})")
    classes = data.get("num_classes")
    if classes is not None and int(classes) != spec.num_classes:
        issues.append(f"eval data: {int(classes)} classes (paper: {spec.num_classes})")
    if spec.official_split_file and (issue := _official_issue(record)):
        issues.append(issue)
    return issues
