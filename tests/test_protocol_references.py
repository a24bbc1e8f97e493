"""Every recipe against the values of the reference config it names: equal, or declared in `deviations`.

REFERENCE holds, per recipe, the reference's value of each recipe field, read off the reference itself
(paths in the comments). A field whose recipe value differs must be covered by a `deviations` entry that
starts with the given topic ("head grid: ...", "selection: ..."), so a new difference is either fixed or
declared. Add a row when you add a recipe.
"""

from collections.abc import Callable
from typing import Any

import pytest

from ijepa_eval.data import describe_transform
from ijepa_eval.protocols.finetune_widths import for_width
from ijepa_eval.protocols.recipes import Recipe, available_recipes, load_recipe

VISSL = "vissl configs/config/benchmark/linear_image_classification"


def transform(name: str, resize: int | None, interpolation: str, img_size: int = 224) -> dict:
    """The TEST transform as describe_transform writes it: crop (resize shorter side, center crop) or
    resize (whole image to s×s) when ``resize`` is None."""
    desc = {"kind": "crop" if resize else "resize", "img_size": img_size, "interpolation": interpolation,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "train": False}
    return desc | ({"resize": resize} if resize else {})


# A reference value, the deviation topic that must declare a difference, and optionally a predicate
# (recipe value -> bool) where "equal" is not the right test.
Check = tuple[Any, str] | tuple[Any, str, Callable[[Any], bool]]


def vissl_linear_eval(epochs: int, milestones: list[int] | None, transform_224: dict, transform_448: dict) -> dict[str, Check]:
    """{VISSL}/<dataset>/eval_resnet_8gpu_transfer_<dataset>_linear.yaml + models/vit_h16_no_cls*.yaml."""
    row: dict[str, Check] = {
        "optimizer.name": ("sgd", "optimizer"),
        "optimizer.base_lr": (0.01, "optimizer"),  # auto_lr_scaling.base_value
        "optimizer.base_batch": (256, "optimizer"),  # base_lr_batch_size
        "batch_size": (256, "optimizer"),  # BATCHSIZE_PER_REPLICA 32 x NUM_PROC_PER_NODE 8
        "effective_lr": (0.01, "optimizer"),
        "optimizer.momentum": (0.9, "optimizer"),
        "optimizer.nesterov": (True, "optimizer"),
        "optimizer.regularize_bias": (True, "optimizer"),  # regularize_bias: True
        "grid.heads": ({"bn_linear", "linear"}, "head grid", set),  # eval_mlp, mlp
        "representations": ({"lastPOOL", "concatPOOL4"}, "head grid", set),
        "n_last_blocks": (4, "head grid"),
        "grid.lr_mults": ([1.0], "head grid"),  # one lr for all 4 heads
        "grid.wds": ([5e-4], "head grid"),  # weight_decay: 0.0005
        "epochs": (epochs, "optimizer"),
        "aug": ("paper", "features"),  # TRAIN transforms re-run every epoch
        "selection.split": ("test", "selection"),  # the best head is read off the TEST meters
        "transform": (transform_224, "transform"),
        "transform@448": (transform_448, "transform"),
    }
    if milestones is None:  # CLEVR: cosine start 0.01 end 0.0001, update_interval epoch
        row |= {"schedule.name": ("cosine", "optimizer"), "schedule.final_lr": (1e-4, "optimizer"),
                "schedule.update_interval": ("epoch", "optimizer"), "schedule.warmup_epochs": (0.0, "optimizer"),
                "dataset.train_split": ("trainval", "selection")}  # VISSL trains on all 70k CLEVR train images
    else:  # multistep values [0.01, 0.001, ...]
        row |= {"schedule.name": ("step", "optimizer"), "schedule.milestones": (milestones, "optimizer"),
                "schedule.gamma": (0.1, "optimizer"), "schedule.warmup_epochs": (0.0, "optimizer")}
    return row


def vjepa_image_eval() -> dict[str, Check]:
    """facebookresearch/jepa configs/evals/vith16_{in1k,places,inat}.yaml (vitl16_*: the same values) run by
    evals/image_classification_frozen/eval.py, models from src/models/attentive_pooler.py."""
    return {
        "probe": ("attentive", "probe"),
        "attentive.variant": ("vjepa", "probe"),  # jepa's pooler: any extra blocks after the cross-attention
        "attentive.depth": (1, "probe"),  # AttentiveClassifier(depth=1)
        "attentive.num_heads": (None, "probe"),  # num_heads=encoder.num_heads
        "attentive.mlp_ratio": (4.0, "probe"),
        "attentive.lrs": ([1e-3], "head grid"),  # lr: 0.001 (one probe)
        "attentive.wds": ([1e-3], "head grid"),  # weight_decay: 0.001
        "attentive.start_lr": (1e-3, "optimizer", lambda v: v in (None, 1e-3)),  # start_lr: 0.001 (None = lr)
        "attentive.warmup_epochs": (0.0, "optimizer"),  # warmup: 0.
        "attentive.final_lr": (0.0, "optimizer"),  # final_lr: 0.0
        "attentive.final_wd": (1e-6, "optimizer"),  # init_opt(final_wd=1e-6): the config sets none
        "attentive.exclude_bias_and_norm": (True, "optimizer"),  # the WD_exclude group
        "attentive.clip_grad": (1.0, "optimizer"),  # clip_grad_norm_(..., 1.0)
        "attentive.base_batch": (1024, "optimizer"),
        "batch_size": (1024, "optimizer"),  # batch_size 16 x nodes 8 x tasks_per_node 8
        "attentive_effective_lrs": ([1e-3], "optimizer"),
        "epochs": (20, "optimizer"),  # num_epochs: 20
        "attentive.precision": ("float16", "probe precision"),  # use_bfloat16 -> autocast(float16) + GradScaler
        "attentive.tokens": ("online", "features"),  # the encoder runs on every training batch
        "attentive.transforms": ("vjepa", "transform"),  # make_dataloader's timm / Resize + CenterCrop transforms
    }


IMAGENET = transform("imagenet", 256, "bicubic"), transform("imagenet", 512, "bicubic", 448)
REFERENCE: dict[str, dict[str, Check]] = {
    # {VISSL}/cifar100/models/vit_h16_no_cls.yaml TEST: Resize 256 interpolation 3, CenterCrop 224 (448: 512/448)
    "cifar100": vissl_linear_eval(28, [8, 16, 24], *IMAGENET),
    # {VISSL}/places205 and inaturalist18 base yamls TEST: Resize 256 (no interpolation), CenterCrop 224
    "places205": vissl_linear_eval(14, [4, 8, 12], transform("", 256, "bilinear"), transform("", 512, "bilinear", 448)),
    "inat18": vissl_linear_eval(84, [24, 48, 72], transform("", 256, "bilinear"), transform("", 512, "bilinear", 448)),
    # {VISSL}/clevr_{count,dist} base yamls TEST: Resize [224, 224]; 448px yaml: Resize [448, 448]
    "clevr_count": vissl_linear_eval(50, None, transform("", None, "bilinear"), transform("", None, "bilinear", 448)),
    "clevr_dist": vissl_linear_eval(100, None, transform("", None, "bilinear"), transform("", None, "bilinear", 448)),
    # {VISSL}/imagenet1k/models/vit_h16_no_cls.yaml: LARS exclude_bias_and_norm, base_value 0.1 per 256,
    # 256 x 8 nodes x 8 GPUs, multistep x0.1 at 15/30/45, 50 epochs, linear_eval_heads lr {1, 0.1} x wd {5e-4, 0}
    "in1k_linear": vissl_linear_eval(50, [15, 30, 45], *IMAGENET) | {
        "optimizer.name": ("lars", "optimizer"), "optimizer.base_lr": (0.1, "optimizer"),
        "batch_size": (16384, "optimizer"), "effective_lr": (6.4, "optimizer"), "optimizer.nesterov": (False, "optimizer"),
        "optimizer.trust_coefficient": (0.001, "optimizer"), "grid.lr_mults": ([1.0, 0.1], "head grid"),
        "grid.wds": ([5e-4, 0.0], "head grid"),
    },
    # No published config: VISSL's linear-eval defaults with in1k_linear's epochs, declared as "recipe".
    "in1k_1pct_linear": vissl_linear_eval(50, [15, 30, 45], *IMAGENET) | {"reference config": (None, "recipe")},
    # Not a paper protocol: the cifar100 row's VISSL defaults with the ImageNet transform.
    "folder_linear": vissl_linear_eval(28, [8, 16, 24], *IMAGENET),
    # DINO eval_knn.py: nb_knn [10, 20, 100, 200], temperature 0.07, Resize 256 bicubic + CenterCrop 224,
    # every k reported on val; features = the cls token.
    "knn": {
        "knn.ks": ([10, 20, 100, 200], "selection"), "knn.temperature": (0.07, "selection"),
        "selection.split": ("test", "selection"), "cls_representations": (["lastCLS"], "representations"),
        "transform": (IMAGENET[0], "transform"),
    },
    # MSN logistic_eval.py: cyanure preprocess + MultiClassifier, lambd 0.00025 (default; 0.0025 in its README),
    # fixed; torchvision Resize(256) (bilinear) + CenterCrop 224.
    "in1k_1pct_logreg": {
        "logreg.variant": ("msn", "preprocessing"),
        "logreg.lambdas": (2.5e-4, "regularisation", lambda lambdas: 2.5e-4 in lambdas and 2.5e-3 in lambdas),
        "transform": (transform("", 256, "bilinear"), "transform"),
    },
    "in1k_attentive": vjepa_image_eval(),
    "places205_attentive": vjepa_image_eval(),  # vith16_places.yaml
    "inat18_attentive": vjepa_image_eval() | {"dataset.name": ("inat21", "dataset")},  # vith16_inat.yaml: iNat21
    # No V-JEPA config for these: its image recipe unchanged, declared as "recipe".
    "in1k_1pct_attentive": vjepa_image_eval() | {"reference config": (None, "recipe")},
    "cifar100_attentive": vjepa_image_eval() | {"reference config": (None, "recipe")},
    "clevr_count_attentive": vjepa_image_eval() | {"reference config": (None, "recipe")},
    "clevr_dist_attentive": vjepa_image_eval() | {"reference config": (None, "recipe")},
    # facebookresearch/vjepa2 configs/eval/vitl/in1k.yaml run by its evals/image_classification_frozen/eval.py:
    # 21 multihead_kwargs (the lr x wd product with start_lr 2e-4, warmup 5, final_weight_decay = weight_decay,
    # plus one at lr 1e-3 / wd 1e-3 -> 0 without warm-up), one param group per probe (all decayed), no clipping,
    # the best probe's val accuracy logged.
    "in1k_attentive_vjepa2": vjepa_image_eval() | {
        "attentive.variant": ("vjepa2", "probe"), "attentive.depth": (4, "probe"),  # num_probe_blocks: 4
        "attentive.num_heads": (16, "probe"),  # classifier.num_heads: 16
        "attentive.lrs": ([5e-4, 1e-3, 1.5e-3, 2e-3], "head grid"),
        "attentive.wds": ([8e-3, 4e-3, 2e-3, 1e-3, 5e-4], "head grid"), "attentive_members": (21, "head grid"),
        "attentive.start_lr": (2e-4, "optimizer"), "attentive.warmup_epochs": (5.0, "optimizer"),
        "attentive.final_wd": (None, "optimizer"), "attentive.exclude_bias_and_norm": (False, "optimizer"),
        "attentive.clip_grad": (None, "optimizer"), "attentive_effective_lrs": ([5e-4, 1e-3, 1.5e-3, 2e-3], "optimizer"),
        "selection.split": ("test", "selection"),
    },
}


def mae_finetune(**reference: Any) -> dict[str, Check]:
    """facebookresearch/mae main_finetune.py argparse defaults (util/lr_sched.py, util/lr_decay.py,
    util/datasets.py build_transform: timm create_transform, eval Resize 256 bicubic + CenterCrop 224), topic
    "hyperparameters", with ``reference`` as {recipe field: value or (value, topic)} on top."""
    row: dict[str, Check] = {
        "epochs": (50, "hyperparameters"), "finetune.base_batch": (256, "hyperparameters"),
        "finetune.min_lr": (1e-6, "hyperparameters"), "finetune.warmup_epochs": (5, "hyperparameters"),
        "finetune.weight_decay": (0.05, "hyperparameters"), "finetune.layer_decay": (0.75, "hyperparameters"),
        "finetune.betas": ([0.9, 0.999], "hyperparameters"), "finetune.clip_grad": (None, "hyperparameters"),
        "finetune.smoothing": (0.1, "hyperparameters"), "finetune.auto_augment": ("rand-m9-mstd0.5-inc1", "hyperparameters"),
        "finetune.crop_scale": ([0.08, 1.0], "hyperparameters"), "finetune.hflip": (0.5, "hyperparameters"),
        "finetune.reprob": (0.25, "hyperparameters"), "finetune.mixup": (0.0, "hyperparameters"),
        "finetune.cutmix": (0.0, "hyperparameters"), "finetune.drop_path": (0.1, "hyperparameters"),
        "finetune.head_init_std": (2e-5, "hyperparameters"),
        "finetune.pool": ("avg", "head"), "finetune.head_norm": ("fc_norm", "head"),  # --global_pool (default)
        "finetune.keep": ("best", "selection"), "finetune.eval_every": (1, "selection"),  # max accuracy over epochs
        "selection.split": ("test", "selection"),  # ... read off ImageNet val, the reported split
        "transform": (IMAGENET[0], "transform"),
    }
    return row | {k: v if isinstance(v, tuple) else (v, "hyperparameters") for k, v in reference.items()}


def ijepa_a2(weight_decay: float) -> dict[str, Check]:
    """I-JEPA paper App. A.2 "Low-shot evaluation" (adapts MAE's protocol): 50 epochs, batch 512, layer decay
    0.75, smoothing 0.1, MAE's RandAugment, no mixup / cutmix / random erasing / drop path, "learning rate
    /weight decay of 3e-5/5e-2 for the ViT-L/16, 3e-5/4e-1 for the ViT-H/14 and ... the ViT-H/16 448"."""
    return mae_finetune(batch_size=512, **{"finetune.reprob": 0.0, "finetune.drop_path": 0.0,
        "finetune.weight_decay": weight_decay, "finetune.effective_lr": (3e-5, "learning rate")})


def semivit(batch_size: int, blr: float, epochs: int, layer_decay: float, cls_token: bool) -> dict[str, Check]:
    """amazon-science/semi-vit FINETUNE.md 1% ImageNet command (8 GPUs x --batch_size) over its main_finetune.py
    (MAE's fork: same defaults, --eval_freq 5, lr = blr x batch / 256); --cls_token: cls token after the norm."""
    head = {"finetune.pool": ("cls", "head"), "finetune.head_norm": ("final", "head")} if cls_token else {}
    return mae_finetune(batch_size=batch_size, epochs=epochs, **{"finetune.reprob": 0.0, "finetune.drop_path": 0.0,
        "finetune.blr": blr, "finetune.effective_lr": blr * batch_size / 256, "finetune.layer_decay": layer_decay,
        "finetune.eval_every": (5, "selection"), **head})


# Fine-tuning recipes whose reference differs per model size: {recipe: {encoder width: reference row}}.
REFERENCE_BY_WIDTH: dict[str, dict[int, dict[str, Check]]] = {
    "in1k_1pct_finetune": {1024: ijepa_a2(0.05), 1280: ijepa_a2(0.4)},
    "in1k_1pct_finetune_semivit": {
        768: semivit(64 * 8, 5e-5, 100, 0.65, cls_token=False),  # ViT-Base
        1024: semivit(64 * 8, 1e-3, 50, 0.75, cls_token=False),  # ViT-Large (I-JEPA Table 2: MAE 67.1)
        1280: semivit(16 * 8, 1e-2, 50, 0.75, cls_token=True),  # ViT-Huge (I-JEPA Table 2: MAE 71.5)
    },
}
# A recipe still on another branch when this table was written: give it a row when it lands.
PENDING: set[str] = set()


def value(recipe: Recipe, field: str) -> Any:
    if field == "transform":
        return describe_transform(recipe.dataset.name, 224)
    if field == "transform@448":
        return describe_transform(recipe.dataset.name, 448)
    if field == "effective_lr":
        return recipe.train_config().lr
    if field == "attentive_effective_lrs":  # lr x batch_size / base_batch, per distinct lr
        return [lr * recipe.batch_size / recipe.attentive.base_batch for lr in recipe.attentive.lrs]
    if field == "attentive_members":
        return len(recipe.attentive.lrs) * len(recipe.attentive.wds)
    if field == "finetune.effective_lr":
        return recipe.finetune.effective_lr(recipe.batch_size)
    if field == "reference config":
        return "ours"  # recipes with this check have no published config
    node: Any = recipe
    for part in field.split("."):
        node = getattr(node, part)
    return node


def same(ours: Any, ref: Any) -> bool:
    if isinstance(ref, float):
        return isinstance(ours, int | float) and ours == pytest.approx(ref)
    return ours == ref


def audit(recipe: Recipe, row: dict[str, Check]) -> tuple[list[str], set[str]]:
    """(undeclared differences, declared topics whose fields all equal the reference)."""
    topics = {d.split(":", 1)[0].strip() for d in recipe.deviations}
    undeclared, differing = [], set()
    for field, (ref, topic, *predicate) in row.items():
        ours = value(recipe, field)
        ok = predicate[0](ours) if predicate else same(set(ours) if isinstance(ref, set) else ours, ref)
        if not ok:
            differing.add(topic)
            if topic not in topics:
                undeclared.append(f"{field}: ours {ours!r}, reference {ref!r} (declare it under '{topic}:')")
    stale = (topics & {check[1] for check in row.values()}) - differing
    return undeclared, stale


def test_every_recipe_has_a_reference_row_and_a_deviations_list():
    for name in available_recipes():
        recipe = load_recipe(name)
        assert isinstance(recipe.deviations, list) and all(isinstance(d, str) and d for d in recipe.deviations)
        assert name in REFERENCE or name in REFERENCE_BY_WIDTH or name in PENDING, (
            f"add {name}'s reference values to REFERENCE")


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_recipe_equals_its_reference_or_declares_the_difference(name):
    undeclared, stale = audit(load_recipe(name), REFERENCE[name])
    assert not undeclared, f"{name}: " + "; ".join(undeclared)
    assert not stale, f"{name} declares deviations {sorted(stale)} that its fields no longer show"


@pytest.mark.parametrize("name,width", [(n, w) for n, rows in sorted(REFERENCE_BY_WIDTH.items()) for w in rows])
def test_finetune_recipe_per_model_size_equals_its_reference_or_declares_the_difference(name, width):
    recipe, sizes = for_width(name, width)
    assert sizes["matched"], f"{name} gives no settings for width {width} (finetune.by_width)"
    undeclared, stale = audit(recipe, REFERENCE_BY_WIDTH[name][width])
    assert not undeclared, f"{name} @ width {width}: " + "; ".join(undeclared)
    assert not stale, f"{name} @ width {width} declares deviations {sorted(stale)} that its fields no longer show"


def test_the_audit_catches_a_per_size_value_taken_from_the_wrong_size():
    """ViT-H's weight decay (0.4) on a ViT-L run, or Semi-ViT's ViT-L head on its ViT-H, is caught."""
    wrong = load_recipe("in1k_1pct_finetune", ["finetune.by_width={'1024': {finetune.weight_decay: 0.4}}"])
    recipe, _ = for_width("in1k_1pct_finetune", 1024, ["finetune.by_width={'1024': {finetune.weight_decay: 0.4}}"])
    assert wrong.finetune.weight_decay == 0.05 and recipe.finetune.weight_decay == 0.4  # resolved only for a width
    undeclared, _ = audit(recipe, REFERENCE_BY_WIDTH["in1k_1pct_finetune"][1024])
    assert [u.split(":")[0] for u in undeclared] == ["finetune.weight_decay"]
    recipe, _ = for_width("in1k_1pct_finetune_semivit", 1280, ["finetune.pool=avg", "finetune.head_norm=fc_norm"])
    undeclared, _ = audit(recipe, REFERENCE_BY_WIDTH["in1k_1pct_finetune_semivit"][1280])
    assert {u.split(":")[0] for u in undeclared} == {"finetune.pool", "finetune.head_norm"}


def test_the_audit_catches_undeclared_and_stale_deviations():
    row = REFERENCE["cifar100"]
    undeclared, _ = audit(load_recipe("cifar100", ["optimizer.base_lr=0.02"]), row)
    assert [u.split(":")[0] for u in undeclared] == ["optimizer.base_lr", "effective_lr"]
    undeclared, _ = audit(load_recipe("cifar100", ["deviations=[]"]), row)
    assert {u.split(":")[0] for u in undeclared} == {"grid.lr_mults", "grid.wds", "aug", "selection.split"}
    _, stale = audit(load_recipe("cifar100", ["grid.lr_mults=[1.0]", "grid.wds=[0.0005]"]), row)
    assert stale == {"head grid"}
    batch = load_recipe("cifar100", ["batch_size=1024"])
    assert value(batch, "effective_lr") == pytest.approx(0.04)  # batch_size= rescales the lr
