"""A fine-tuning recipe resolved for one model size (``finetune.by_width``).

Fine-tuning references give settings per model size: the I-JEPA paper's Appendix A.2 a weight decay for
ViT-L and another for ViT-H, Semi-ViT's ``FINETUNE.md`` one command per ViT-B / L / H. A recipe states them
as ``finetune.by_width: {"<embed_dim>": {dotted.key: value}}``; once the encoder is loaded its width picks
the entry, which is applied as ``key=value`` overrides under the user's own (the user's win). A width the
table does not list runs the recipe's base values, and the result records which case it was.
"""

from __future__ import annotations

import os
from typing import Any

from ijepa_eval.errors import ConfigError
from ijepa_eval.protocols.recipes import Recipe, load_recipe, parse_overrides


def for_width(name_or_yaml: str | os.PathLike, width: int,
              overrides: list[str] | dict[str, Any] | None = None) -> tuple[Recipe, dict[str, Any]]:
    """(the recipe with its ``by_width`` entry for ``width`` applied, the record of what was applied)."""
    base = load_recipe(name_or_yaml, overrides)
    table = base.finetune.by_width
    entry = table.get(str(width))
    record = {"width": int(width), "listed": sorted(table, key=int), "matched": entry is not None,
              "applied": dict(entry or {})}
    if not entry:
        return base, record
    user = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    try:
        return load_recipe(name_or_yaml, {**entry, **user}), record
    except ConfigError as err:
        raise ConfigError(f"protocol {base.name}: finetune.by_width entry for width {width}: {err}") from None
