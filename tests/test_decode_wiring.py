"""The decode backend through recipes, the feature cache and result JSONs (issue 23)."""

import pytest

from ijepa_eval.errors import ConfigError
from ijepa_eval.protocols.recipes import load_recipe


def test_decode_is_a_recipe_field_checked_against_what_the_protocol_can_do():
    assert load_recipe("cifar100").decode == "pil"  # the reference path stays the default
    assert load_recipe("cifar100", ["decode=tensor"]).to_dict()["decode"] == "tensor"
    with pytest.raises(ConfigError, match="Did you mean 'tensor'"):
        load_recipe("cifar100", ["decode=tensr"])
    with pytest.raises(ConfigError, match="aug=paper crops and flips every image on the host"):
        load_recipe("cifar100", ["decode=gpu", "aug=paper"])
    assert load_recipe("cifar100", ["decode=tensor", "aug=paper"]).decode == "tensor"
    with pytest.raises(ConfigError, match="RandAugment, which works on PIL"):
        load_recipe("in1k_1pct_finetune", ["decode=tensor"])
