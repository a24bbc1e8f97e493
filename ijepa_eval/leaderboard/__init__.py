"""Leaderboards: the paper's reference numbers, paper-vs-ours tables, comparisons, plots, regression checks.

Reads result JSONs only (``ijepa_eval.results``); ``compare`` delegates running to ``run_protocol``.
Exports resolve lazily so that ``ijepa-eval --help`` (which imports ``.commands``) does not load pandas.
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

_EXPORTS = {
    "load_expected": "check",
    "Comparison": "comparison",
    "PROTOCOL_SOURCES": "paper",
    "load_compute": "paper",
    "load_paper": "paper",
    "paper_tables": "paper",
    "Result": "records",
    "load_manifest": "records",
    "load_results": "records",
    "build_tables": "tables",
    "write_tables": "tables",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
