"""Where a dataset lives: explicit root, else $IJEPA_EVAL_DATA/<folder>, else the user's data.yaml.

The data config is a small YAML mapping dataset (or family) names to roots, e.g.::

    imagenet: /datasets/imagenet        # also serves imagenet_1pct / imagenet_10pct
    clevr: /datasets/CLEVR_v1.0         # serves clevr_count and clevr_dist
    cifar100: /datasets/cifar100
    imagenet_a: /datasets/imagenet-a    # the shift sets each have their own key (imagenet_v2, imagenet_c, ...)
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ijepa_eval.errors import ConfigError, DatasetError

DATA_ENV = "IJEPA_EVAL_DATA"
CONFIG_ENV = "IJEPA_EVAL_CONFIG"

# Conventional sub-folders of $IJEPA_EVAL_DATA, in lookup order.
FAMILY_FOLDERS = {
    "imagenet": ("imagenet", "ImageNet", "imagenet-1k"),
    "cifar100": ("cifar100", "cifar-100", "CIFAR100"),
    "places205": ("places205", "Places205"),
    "inat18": ("inat18", "inaturalist2018", "iNat2018"),
    "clevr": ("clevr", "CLEVR_v1.0", "clevr/CLEVR_v1.0"),
    # distribution-shift sets: each has a family (and a root) of its own; ReaL's real.json may sit in imagenet/
    "imagenet_v2": ("imagenetv2", "imagenet-v2", "ImageNetV2"),
    "imagenet_real": ("imagenet-real", "reassessed-imagenet", "imagenet"),
    "imagenet_a": ("imagenet-a", "imagenet_a"),
    "imagenet_r": ("imagenet-r", "imagenet_r"),
    "imagenet_sketch": ("imagenet-sketch", "ImageNet-Sketch", "sketch"),
    "imagenet_c": ("imagenet-c", "ImageNet-C"),
}


def family(name: str) -> str:
    """The root family of a dataset name: imagenet_1pct -> imagenet, clevr_dist -> clevr, imagenet_a -> itself."""
    if name in FAMILY_FOLDERS:
        return name
    if name.startswith("imagenet"):
        return "imagenet"
    if name.startswith("clevr"):
        return "clevr"
    return name


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or Path.home() / ".config" / "ijepa-eval" / "data.yaml")


def _config_roots(path: Path) -> dict[str, str]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"data config {path} is not valid YAML ({err}); fix or remove it") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("roots"), dict):
        loaded = loaded["roots"]
    if not isinstance(loaded, dict):
        raise ConfigError(f"data config {path} must map dataset names to roots, e.g. 'imagenet: /data/imagenet'")
    return {str(k): str(v) for k, v in loaded.items()}


def resolve_root(name: str, root: str | os.PathLike | None = None, flag: str = "--root DIR") -> Path:
    """The existing root folder for dataset ``name``; a DatasetError listing every place looked otherwise
    (``flag``: how the command at hand takes a root, named in that error)."""
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DatasetError(f"dataset root {path} for '{name}' does not exist or is not a folder; check --root")
        return path
    fam = family(name)
    looked = []
    base = os.environ.get(DATA_ENV)
    if base:
        for folder in FAMILY_FOLDERS.get(fam, (fam,)):
            path = Path(base).expanduser() / folder
            if path.is_dir():
                return path
            looked.append(str(path))
    else:
        looked.append(f"${DATA_ENV} (not set)")
    cfg = config_path()
    if cfg.is_file():
        roots = _config_roots(cfg)
        for key in dict.fromkeys((name, fam)):
            if key in roots:
                path = Path(roots[key]).expanduser()
                if path.is_dir():
                    return path
                looked.append(f"{path} (from {cfg} key '{key}')")
        if name not in roots and fam not in roots:
            looked.append(f"{cfg} (no '{fam}' entry)")
    else:
        looked.append(f"{cfg} (no such file)")
    raise DatasetError(
        f"no data root for '{name}'; looked in: {'; '.join(looked)}. Pass {flag}, set ${DATA_ENV} "
        f"to a folder holding '{FAMILY_FOLDERS.get(fam, (fam,))[0]}/', or add '{fam}: DIR' to {cfg}"
    )
