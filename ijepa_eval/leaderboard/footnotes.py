"""Footnotes under tables: each protocol's reference and the deviations its recipe declares.

They come from the result JSONs (``protocol.reference`` / ``protocol.deviations``, schema 2), so a table
says what its numbers are without opening the recipes; results written before schema 2 say so.
"""

from __future__ import annotations

from collections.abc import Iterable

from ijepa_eval.leaderboard.records import Result


def deviation_footnotes(results: Iterable[Result]) -> list[str]:
    """Markdown lines, one block per (protocol, version, reference, deviations), in protocol order."""
    blocks: dict[tuple, None] = {}
    for r in results:
        p = r.record.protocol
        deviations = p.get("deviations")
        blocks[(r.protocol, p.get("version"), p.get("reference"),
                None if deviations is None else tuple(deviations))] = None
    if not blocks:
        return []
    lines = ["Protocols, their references and declared deviations (from the result JSONs):", ""]
    for task, version, reference, deviations in sorted(blocks, key=lambda b: (str(b[0]), str(b[1]))):
        head = f"- **{task}** v{version}" if version is not None else f"- **{task}**"
        lines.append(f"{head}: {' '.join(str(reference).split())}" if reference else f"{head}: reference not recorded")
        if deviations is None:
            lines.append("  - deviations not recorded (result written before schema 2)")
        elif not deviations:
            lines.append("  - no deviations")
        lines += [f"  - deviation: {' '.join(d.split())}" for d in deviations or ()]
    return lines
