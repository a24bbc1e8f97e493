"""Shift recipes: the issue's set names, each with its reference, label convention and valid dataset splits."""

import pytest

from ijepa_eval.data.imagenet_tables import CORRUPTIONS, EXTRA_CORRUPTIONS
from ijepa_eval.errors import ConfigError
from ijepa_eval.protocols.recipes import available_recipes
from ijepa_eval.shift.recipes import ShiftDataset, ShiftRecipe, shift_recipe, shift_recipes


def test_every_set_has_a_recipe_with_its_convention():
    recipes = shift_recipes()
    assert list(recipes) == ["v2-matched-frequency", "v2-threshold0.7", "v2-top-images", "real", "a", "r",
                             "sketch", "c"]
    for name, r in recipes.items():
        assert r.set == name and r.reference and r.labels and r.size > 0 and "top1" in r.metrics
    assert {n for n, r in recipes.items() if r.classes == "subset"} == {"a", "r"}
    assert "988 of the 1000" in recipes["v2-top-images"].labels and "excluded" in recipes["real"].labels
    c = recipes["c"]
    assert c.corruptions == list(CORRUPTIONS) and c.extra_corruptions == list(EXTRA_CORRUPTIONS)
    assert c.metrics["mce"].higher_is_better is False
    # the protocol registry does not mistake them for probe recipes
    assert not any(n.startswith("shift") for n in available_recipes())


def test_corruption_subsets_and_lookup_errors():
    c = shift_recipe("c")
    assert len(c.splits()) == 75 and c.splits(["fog", "saturate"]) == [f"{n}/{s}" for n in ("fog", "saturate")
                                                                          for s in range(1, 6)]
    with pytest.raises(ConfigError, match="unknown corruption 'fogg'. Did you mean 'fog'"):
        c.splits(["fogg"])
    with pytest.raises(ConfigError, match="unknown shift set 'v2'"):
        shift_recipe("v2")
    with pytest.raises(ConfigError, match="classes=subset is defined for imagenet_a, imagenet_r"):
        ShiftRecipe("x", "x", 1, "", "", "", ShiftDataset("imagenet_sketch", ["test"]), 1, {}, classes="subset")
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        ShiftRecipe("x", "x", 1, "", "", "", ShiftDataset("imagenet_a", ["val"]), 1, {})
