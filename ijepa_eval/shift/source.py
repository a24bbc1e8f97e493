"""Where the evaluated head comes from (a result's saved head, or a head file) and whether it fits an encoder.

A head is only meaningful on the features it was trained on: the same checkpoint content, branch and
architecture, the same representation (pool, blocks) and the same transform. Each of these is recorded
in the head file's ``context`` when the protocol saves it; :func:`check_fits` compares them with the
encoder about to extract features and refuses a mismatch in one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ijepa_eval.data import describe_transform
from ijepa_eval.errors import ConfigError
from ijepa_eval.features import parse_representation
from ijepa_eval.probes.headfile import SavedHead, load_head
from ijepa_eval.results import ResultRecord, load_result


@dataclass
class HeadSource:
    head: SavedHead
    path: Path
    sha256: str
    result: ResultRecord | None = None  # the frozen-probe result the head reports, when given
    result_path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.result_path or self.path)


def from_result(path: str | os.PathLike) -> HeadSource:
    """The head a result JSON points to (``head_file``), checked against the sha256 it records."""
    path = Path(path)
    result = load_result(path)
    field = result.head_file
    if result.shift:
        source = (result.shift.get("source_result") or {}).get("file") or result.shift["head"]["file"]
        raise ConfigError(f"result {path} is itself a shift result; pass the ImageNet result it applied ({source})")
    if not field:
        kind = (result.protocol.get("config") or {}).get("probe", "?")
        raise ConfigError(f"result {path} keeps no head (probe {kind}; only linear and logreg results written by "
                          "this version save one); re-run its protocol, or pass --ckpt and --head")
    head_path = path.parent / field["file"]
    return HeadSource(load_head(head_path, field["sha256"]), head_path, field["sha256"], result, path)


def from_file(path: str | os.PathLike) -> HeadSource:
    from ijepa_eval.io import sha256_file

    head = load_head(path)
    return HeadSource(head, Path(path), sha256_file(path))


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def check_fits(source: HeadSource, encoder: Any, dataset_name: str = "imagenet") -> None:
    """Refuse a head whose encoder, representation or transform differs from ``encoder``'s features."""
    ctx = source.head.context
    trained = ctx.get("encoder") or {}
    info = getattr(encoder, "info", {}) or {}
    here = {"sha256": info.get("sha256"), "branch": info.get("branch"), "arch": _json(info.get("arch"))}
    for key in ("sha256", "branch", "arch"):
        if key in trained and _json(trained[key]) != here[key]:
            want, got = (str(v)[:12] if key == "sha256" else v for v in (trained[key], here[key]))
            raise ConfigError(f"head {source.name} was trained on features of another encoder ({key} {want}, "
                              f"not {got}); pass the checkpoint and --branch it was trained with")
    feats = ctx.get("features") or {}
    pools = ["avg", "cls"] if encoder.has_class_token else ["avg"]
    n_blocks = int(feats.get("n_last_blocks", 4))
    try:
        _, n = parse_representation(source.head.representation, n_blocks, pools)
    except ConfigError as err:
        raise ConfigError(f"head {source.name} reads {source.head.representation}, which this encoder's features "
                          f"do not offer ({err})") from None
    dim = source.head.tensors["weight"].shape[0]
    if dim != n * encoder.embed_dim:
        raise ConfigError(f"head {source.name} expects {dim} features ({source.head.representation}), this encoder "
                          f"gives {n * encoder.embed_dim}; pass the checkpoint it was trained on")
    want = feats.get("transform")
    got = _json(describe_transform(dataset_name, encoder.img_size))
    if want is not None and _json(want) != got:
        raise ConfigError(f"head {source.name} was trained on features of another transform ({want}, not {got}); "
                          "extract with the same image size and transform")
