"""Shift recipes: one versioned YAML per set in ``protocols/shift/``, stating its layout and label convention.

A shift recipe trains nothing: it names the set (``set``, the ``--sets`` name), where its images come from
(``dataset``), how they are labelled (``labels``), how the head's logits are read (``classes``: ``all`` =
argmax over every class, ``subset`` = over the set's classes, as ImageNet-A/-R's own evaluation), the
documented size, the metrics, the ``reference`` it follows and its ``deviations``. Results copy all of it.
``val_images`` says that the set's images are the ImageNet val images (ReaL relabels them, ImageNet-C
corrupts them): a head chosen on IN-val, the paper's convention, was then chosen on these images too, and the
set's number carries the same test-selection mark (``‡``) as the IN-val number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import yaml

from ijepa_eval.data.imagenet_tables import CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES
from ijepa_eval.data.registry import SOURCES
from ijepa_eval.errors import ConfigError, unknown_choice
from ijepa_eval.protocols.recipes import RECIPES_DIR, MetricSpec, build

SHIFT_DIR = RECIPES_DIR / "shift"
ClassMode = Literal["all", "subset"]
SUBSET_DATASETS = ("imagenet_a", "imagenet_r")
SET_ORDER = ("v2-matched-frequency", "v2-threshold0.7", "v2-top-images", "real", "a", "r", "sketch", "c")


@dataclass
class ShiftDataset:
    name: str
    splits: list[str] = field(default_factory=list)  # empty for imagenet_c: <corruption>/<severity> of the run


@dataclass
class ShiftRecipe:
    name: str
    set: str
    version: int
    description: str
    reference: str
    labels: str
    dataset: ShiftDataset
    size: int
    metrics: dict[str, MetricSpec]
    deviations: list[str] = field(default_factory=list)
    classes: ClassMode = "all"
    corruptions: list[str] = field(default_factory=list)  # imagenet_c: the benchmark corruptions (mCE)
    extra_corruptions: list[str] = field(default_factory=list)  # imagenet_c: run on request, never in mCE
    val_images: bool = False  # the images are ImageNet val's (relabelled or corrupted)

    def __post_init__(self) -> None:
        if self.dataset.name not in SOURCES:
            raise ConfigError(f"shift recipe {self.name}: " + unknown_choice("dataset", self.dataset.name, SOURCES))
        if self.classes == "subset" and self.dataset.name not in SUBSET_DATASETS:
            raise ConfigError(f"shift recipe {self.name}: classes=subset is defined for {', '.join(SUBSET_DATASETS)}")
        for c in [*self.corruptions, *self.extra_corruptions]:
            if c not in (*CORRUPTIONS, *EXTRA_CORRUPTIONS):
                raise ConfigError(unknown_choice("corruption", c, (*CORRUPTIONS, *EXTRA_CORRUPTIONS)))
        valid = SOURCES[self.dataset.name][1]
        for split in self.dataset.splits:
            if split not in valid:
                raise ConfigError(f"shift recipe {self.name}: " + unknown_choice("split", split, valid))

    def splits(self, corruptions: list[str] | None = None) -> list[str]:
        """The dataset splits a run reads; for ImageNet-C every severity of ``corruptions`` (default: the 15)."""
        if self.dataset.name != "imagenet_c":
            return list(self.dataset.splits)
        chosen = self.corruptions if corruptions is None else corruptions
        for c in chosen:
            if c not in (*self.corruptions, *self.extra_corruptions):
                raise ConfigError(unknown_choice("corruption", c, (*self.corruptions, *self.extra_corruptions)))
        return [f"{c}/{s}" for c in chosen for s in SEVERITIES]


@functools.cache
def shift_recipes() -> dict[str, ShiftRecipe]:
    """{set name: recipe} from every ``protocols/shift/*.yaml``, in ``SET_ORDER`` (others after, by name)."""
    recipes = {}
    for path in sorted(SHIFT_DIR.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"shift recipe {path} is not valid YAML ({err}); fix it") from None
        recipe = build(ShiftRecipe, raw, where=path.name)
        if recipe.set in recipes:
            raise ConfigError(f"shift recipes {recipes[recipe.set].name} and {recipe.name} share the set name {recipe.set}")
        recipes[recipe.set] = recipe
    rank = {name: i for i, name in enumerate(SET_ORDER)}
    return dict(sorted(recipes.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def shift_recipe(set_name: str) -> ShiftRecipe:
    """The recipe of one ``--sets`` name; a lookup error lists the sets."""
    recipes = shift_recipes()
    if set_name not in recipes:
        raise ConfigError(unknown_choice("shift set", set_name, recipes))
    return recipes[set_name]
