"""An explicit ``arch`` value always wins: a format's default (DINOv2's 224-px eval size, CAE's heads from its
args, MSN's missing final norm, a transformers config's heads and eps) may fill what the user left out, never
replace what they said. One checkpoint per format family, each written the way its tool writes it."""

from __future__ import annotations

import pytest
import torch
from fixtures_checkpoints import (
    tiny_vit_state_dict,
    write_beit_finetuned_checkpoint,
    write_cae_checkpoint,
    write_data2vec_checkpoint,
    write_dino_checkpoint,
    write_dinov2_release,
    write_hf_data2vec,
    write_hf_model,
    write_ijepa_checkpoint,
    write_mae_checkpoint,
    write_msn_checkpoint,
    write_safetensors,
)
from reference_forwards import close

from ijepa_eval.encoders import load_encoder


def _timm_hub_folder(path):
    import timm
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0), str(path),
                safe_serialization=True)


# format: (writer(path), an input size other than the one the checkpoint would build at by itself)
WRITERS = {
    "ijepa": (write_ijepa_checkpoint, 64),
    "mae": (write_mae_checkpoint, 64),
    "wrapped": (lambda p: write_mae_checkpoint(p, encoder_only=True), 64),
    "dino": (lambda p: write_dino_checkpoint(p, "dino"), 64),
    "ibot": (lambda p: write_dino_checkpoint(p, "ibot"), 64),
    "msn": (write_msn_checkpoint, 64),
    "state_dict": (lambda p: write_safetensors(p, tiny_vit_state_dict()), 64),
    "data2vec": (write_data2vec_checkpoint, 64),
    "cae": (write_cae_checkpoint, 64),
    "beit": (lambda p: write_beit_finetuned_checkpoint(p, release=True), 64),
    "dinov2": (lambda p: write_dinov2_release(p, dim=192), 32),  # DINOv2's own default: 224
    "hf": (lambda p: write_hf_model(p, "vit"), 48),
    "hf-dinov2": (lambda p: write_hf_model(p, "dinov2"), 32),  # the issue's case: built at 224 before
    "hf-data2vec-vision": (lambda p: write_hf_data2vec(p, "Data2VecVisionModel", use_absolute_position_embeddings=True), 64),
    "timm-hub": (_timm_hub_folder, 48),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    paths = {}
    for name, (write, _) in WRITERS.items():
        folder_layout = name.startswith(("hf", "timm"))  # save_pretrained / save_for_hf folders
        paths[name] = folder / (name + ("" if folder_layout else ".safetensors" if name == "state_dict" else ".pth"))
        write(paths[name])
    return paths


@pytest.mark.parametrize("name", list(WRITERS))
def test_arch_img_size_builds_at_that_size(sources, name):
    size = WRITERS[name][1]
    enc = load_encoder(sources[name], arch={"img_size": size})
    assert enc.info["format"] == name.replace("hf-dinov2", "hf")
    assert enc.img_size == size and enc.info["arch"]["img_size"] == size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    close(enc.forward_features(x, 2), load_encoder(sources[name], img_size=size).forward_features(x, 2))


def heads_and_eps(enc) -> tuple[int, float]:
    return enc.vit.blocks[0].attn.num_heads, enc.vit.blocks[0].norm1.eps


# format: (the user's arch, what the built model shows, with the format's own default, with the user's arch)
OVERRIDES = {
    "msn": ({"final_norm": True}, lambda enc: enc.final_norm, "none", "tokens"),
    "cae": ({"num_heads": 6}, lambda enc: enc.vit.blocks[0].attn.num_heads, 12, 6),  # args: cae_small
    "hf": ({"num_heads": 4, "norm_eps": 1e-5}, heads_and_eps, (2, 1e-12), (4, 1e-5)),  # config.json
    "hf-data2vec-vision": ({"num_heads": 2, "norm_eps": 1e-5}, heads_and_eps, (4, 1e-12), (2, 1e-5)),
}


@pytest.mark.parametrize("name", list(OVERRIDES))
def test_user_value_beats_the_format_default(sources, name):
    arch, shown, default, wanted = OVERRIDES[name]
    assert shown(load_encoder(sources[name])) == default
    enc = load_encoder(sources[name], arch=arch)
    assert shown(enc) == wanted and all(enc.info["arch"][k] == v for k, v in arch.items())
