"""Protocol recipes: versioned YAML files in the repository's top-level ``protocols/`` folder.

Each file fills one :class:`Recipe`; unknown keys and wrong types are ConfigErrors, so a typo never
silently falls back to a default. ``key=value`` overrides (dotted for nested keys, values parsed as YAML:
``epochs=2``, ``optimizer.base_lr=0.1``, ``grid.wds=[0.0]``) go through the same checks. Bump ``version``
whenever a recipe's numbers can change: results record it and ``skip_existing`` compares it.

Learning rates are stated per ``optimizer.base_batch`` (256) images; ``batch_size=`` rescales the lr the
recipe trains with (lr = base_lr × batch_size / base_batch, VISSL's auto_lr_scaling and MAE's rule).
Every recipe names its ``reference`` (the config or code it follows) and lists its ``deviations`` from it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ijepa_eval.data.decode import Decode
from ijepa_eval.errors import ConfigError, unknown_choice
from ijepa_eval.finetune.config import FinetuneSpec
from ijepa_eval.probes.attentive_grid import AttentiveSpec
from ijepa_eval.probes.linear import LinearTrainConfig, OptimizerConfig, ScheduleConfig
from ijepa_eval.probes.logreg import LogRegVariant
from ijepa_eval.validate import check_ranges

YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
RECIPES_DIR = Path(__file__).resolve().parent.parent.parent / "protocols"

ProbeKind = Literal["linear", "logreg", "knn", "finetune", "attentive"]
SelectionSplit = Literal["train_holdout", "test"]
AugMode = Literal["cached", "paper"]
SelectionMetric = Literal["top1", "top5", "mean_per_class_acc"]  # what every probe scores

# Value limits checked when a recipe is built (ijepa_eval.validate): nothing runs on an impossible recipe.
RANGES = {
    "epochs": ">=1", "batch_size": ">=1", "extraction_batch_size": ">=1", "n_last_blocks": ">=1", "seed": ">=0",
    "representations": "nonempty", "cls_representations": "nonempty",
    "optimizer.base_lr": ">0", "optimizer.base_batch": ">=1", "optimizer.momentum": "[0,1)",
    "optimizer.trust_coefficient": ">0",
    "schedule.gamma": ">0", "schedule.final_lr": ">=0", "schedule.warmup_epochs": ">=0",
    "grid.heads": "nonempty", "grid.lr_mults": "each>0", "grid.wds": "each>=0",
    "logreg.lambdas": "each>0", "logreg.max_iter": ">=1",
    "knn.temperature": ">0", "knn.shots": ">=1", "selection.holdout_fraction": "(0,1)",
    "finetune.blr": ">0", "finetune.base_batch": ">=1", "finetune.lr": ">0", "finetune.min_lr": ">=0",
    "finetune.warmup_epochs": ">=0", "finetune.weight_decay": ">=0", "finetune.layer_decay": "(0,1]",
    "finetune.smoothing": "[0,1)", "finetune.hflip": "[0,1]", "finetune.reprob": "[0,1]", "finetune.mixup": ">=0",
    "finetune.cutmix": ">=0", "finetune.drop_path": "[0,1)", "finetune.eval_every": ">=1",
    "finetune.micro_batch": ">=1", "finetune.eval_batch_size": ">=1",
    "attentive.depth": ">=1", "attentive.num_heads": ">=1", "attentive.mlp_ratio": ">0", "attentive.lrs": "each>0",
    "attentive.wds": "each>=0", "attentive.base_batch": ">=1", "attentive.start_lr": ">=0",
    "attentive.warmup_epochs": ">=0", "attentive.final_lr": ">=0", "attentive.final_wd": ">=0",
    "attentive.clip_grad": ">0",
}


@dataclass
class DatasetSpec:
    name: str
    train_split: str = "train"
    test_split: str = "val"
    val_split: str | None = None  # a held-out split of its own (VTAB val for CLEVR) instead of 10% of train
    options: dict[str, Any] = field(default_factory=dict)  # extra get_dataset options


@dataclass
class GridSpec:
    heads: list[str] = field(default_factory=lambda: ["bn_linear", "linear"])
    lr_mults: list[float] = field(default_factory=lambda: [1.0, 0.1])
    wds: list[float] = field(default_factory=lambda: [5e-4, 0.0])


@dataclass
class LogRegSpec:
    variant: LogRegVariant = "msn"  # msn: MSN logistic_eval.py (cyanure); sklearn: train-mean centring + intercept
    lambdas: list[float] = field(default_factory=lambda: [2.5e-5, 2.5e-4, 2.5e-3, 2.5e-2, 2.5e-1])  # cyanure lambd
    max_iter: int = 1000


@dataclass
class KnnSpec:
    ks: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    temperature: float = 0.07
    shots: int | None = None  # per-class training examples (seeded subsample); None = all

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"knn.ks must be a list of neighbour counts >= 1, got {self.ks}")


@dataclass
class SelectionSpec:
    split: SelectionSplit = "train_holdout"
    metric: SelectionMetric = "top1"
    holdout_fraction: float = 0.1
    retrain_on_full_train: bool = True


@dataclass
class MetricSpec:
    higher_is_better: bool = True


@dataclass
class Recipe:
    name: str
    version: int
    description: str
    reference: str
    dataset: DatasetSpec
    deviations: list[str] = field(default_factory=list)  # declared differences from `reference`; results copy them
    probe: ProbeKind = "linear"
    representations: list[str] = field(default_factory=lambda: ["lastPOOL", "concatPOOL4"])
    cls_representations: list[str] = field(default_factory=lambda: ["lastCLS", "concatCLS4"])  # cls-token models
    grid: GridSpec = field(default_factory=GridSpec)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10
    batch_size: int = 256
    logreg: LogRegSpec = field(default_factory=LogRegSpec)
    knn: KnnSpec = field(default_factory=KnnSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)  # probe: finetune (end-to-end, ijepa_eval.finetune)
    attentive: AttentiveSpec = field(default_factory=AttentiveSpec)  # probe: attentive (V-JEPA's pooler, probes.attentive)
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    aug: AugMode = "cached"
    n_last_blocks: int = 4
    extraction_batch_size: int = 64
    decode: Decode = "pil"  # image decoding and resizing: pil (the reference) | tensor | gpu (ijepa_eval.data.decode)
    seed: int = 0

    def __post_init__(self) -> None:
        """Settings that cannot work together fail at load time, not after hours of extraction and training."""
        check_ranges(self, RANGES, f"protocol {self.name}")
        if self.aug == "paper" and self.probe != "linear":
            raise ConfigError(f"aug=paper applies to linear probes only; protocol {self.name} uses {self.probe}")
        if (self.aug == "paper" and self.dataset.val_split and self.selection.split != "test"
                and self.selection.retrain_on_full_train):
            raise ConfigError(f"aug=paper cannot retrain on train+{self.dataset.val_split} (protocol {self.name}); "
                              "add selection.retrain_on_full_train=false")
        if self.probe == "finetune" and self.finetune.keep == "last" and self.selection.split == "test":
            raise ConfigError(f"protocol {self.name} reports the last epoch, so there is nothing to select on test; "
                              "add finetune.keep=best")
        if self.decode != "pil" and self.probe == "finetune":
            raise ConfigError(f"protocol {self.name}: fine-tuning augments with timm's RandAugment, which works on PIL "
                              f"images; use decode=pil (got {self.decode})")
        if self.decode != "pil" and self.probe == "attentive" and self.attentive.tokens == "online":
            raise ConfigError(f"protocol {self.name}: online attentive probes augment PIL images every step (timm's "
                              f"AutoAugment); use decode=pil, or attentive.tokens=cached (got {self.decode})")
        if self.decode == "gpu" and self.aug == "paper":
            raise ConfigError(f"protocol {self.name}: aug=paper crops and flips every image on the host; "
                              "use decode=tensor (or pil) with it")
        if self.probe == "finetune" and self.selection.retrain_on_full_train:
            raise ConfigError(f"protocol {self.name}: fine-tuning reports the kept epoch's weights and does not "
                              "retrain; set selection.retrain_on_full_train=false")

    def train_config(self) -> LinearTrainConfig:
        return LinearTrainConfig(self.optimizer, self.schedule, self.epochs, self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A recipe name (``cifar100``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"protocol file {path} does not exist")
        return path
    candidate = RECIPES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(unknown_choice("protocol", str(name_or_path), available_recipes()))
    return candidate


def load_recipe(name_or_path: str | os.PathLike, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    path = recipe_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"protocol file {path} is not valid YAML ({problem}{at}); fix it") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"protocol file {path} must be a mapping of recipe keys")
    raw = apply_overrides(raw, overrides or {})
    return build(Recipe, raw, where=path.name)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=2", "optimizer.base_lr=0.1"]`` -> {"epochs": 2, "optimizer.base_lr": 0.1} (values parsed as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not key=value (e.g. epochs=2 or optimizer.base_lr=0.1)")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"override '{item}': value is not valid YAML") from None
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a copy of ``raw``; key names are checked against the dataclasses."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        cls, node = Recipe, raw
        *parents, leaf = dotted.split(".")
        for i, part in enumerate([*parents, leaf]):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                prefix = ".".join(parents[:i])
                names = [f"{prefix}.{n}" if prefix else n for n in hints]
                raise ConfigError(unknown_choice("override key", dotted, names))
            if part == leaf and i == len(parents):
                break
            if typing.get_origin(hints[part]) is dict:  # a free-form mapping: the rest is one key in it
                node, leaf = node.setdefault(part, {}), ".".join([*parents, leaf][i + 1:])
                break
            if not dataclasses.is_dataclass(hints[part]):
                raise ConfigError(f"override key '{dotted}': '{part}' is not a section")
            cls = hints[part]
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked (and minimally converted: int -> float, scalar -> [scalar]) against type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return build(tp, value, where=key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(unknown_choice(f"value for '{key}'", str(value), map(str, args)))
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return {str(k): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and YAML11_EXPONENT.fullmatch(value.strip()):
        return float(value)  # `lr=1e-3`: YAML 1.1 reads an exponent without a dot as a string
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"'{key}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys and missing required ones."""
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in hints:
            raise ConfigError(f"{where}: " + unknown_choice("key", str(key), hints))
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls(**{k: coerce(v, hints[k], f"{k}" if where.endswith(".yaml") else f"{where}.{k}")
                  for k, v in data.items()})
