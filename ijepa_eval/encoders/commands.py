"""`ijepa-eval inspect`, plus the shared --ckpt/--branch/--arch/--trust-checkpoint flags for other commands.

torch is imported inside the command functions so that `ijepa-eval --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from ijepa_eval.errors import ArchitectureError

INSPECT_EPILOG = """examples:
  ijepa-eval inspect IN1K-vit.h.14-300e.pth.tar                   # target encoder (default)
  ijepa-eval inspect IN1K-vit.h.14-300e.pth.tar --branch context  # the context encoder
  ijepa-eval inspect dino_checkpoint.pth --branch student --json
  ijepa-eval inspect mae_custom.pth --arch '{"num_heads": 8}'     # width not in the standard table
  ijepa-eval inspect vitb4_300ep.pth.tar                           # MSN: target encoder, no final norm
  ijepa-eval inspect beit_base_patch16_224_pt22k_ft22kto1k.pth     # BEiT fine-tuned: patch mean, then fc_norm
  ijepa-eval inspect data2vec-vision-base-ft1k/                    # transformers save_pretrained folder
  ijepa-eval inspect hf-hub:facebook/dinov2-base                  # transformers layout, from the local HF cache
  ijepa-eval inspect old_run.pth --trust-checkpoint                # pickles other objects: trusted files only"""


def parse_arch(text: str | None) -> str | dict[str, Any] | None:
    """--arch value: a JSON object of ViT kwargs, or a timm model name."""
    if text is None or not text.strip().startswith("{"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArchitectureError(f"--arch is not valid JSON ({err.msg}); e.g. --arch '{{\"num_heads\": 8}}'") from err
    if not isinstance(value, dict):
        raise ArchitectureError("--arch JSON must be an object of ViT kwargs, e.g. '{\"num_heads\": 8}'")
    return value


def _add_loading_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--branch", default=None,
        help="network inside a training checkpoint: target|context (I-JEPA, default target), "
        "teacher|student (DINO/iBOT, default teacher), target|anchor (MSN, default target), "
        "student|teacher (data2vec, default student)",
    )
    parser.add_argument(
        "--arch", default=None,
        help="architecture when it cannot be inferred: a timm model name or JSON of ViT kwargs, "
        "e.g. '{\"num_heads\": 8}' (Beit kwargs for data2vec/CAE/BEiT; '{\"final_norm\": true}' for MSN's norm); "
        "a value given here wins over the inferred one and the format's default (e.g. '{\"img_size\": 448}')",
    )
    parser.add_argument(
        "--trust-checkpoint", action="store_true",
        help="allow a full unpickle (can run code from the file); only for checkpoints you trust",
    )


def add_checkpoint_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add --ckpt, --branch, --arch, --trust-checkpoint the same way in every command."""
    parser.add_argument(
        "--ckpt", required=required,
        help="checkpoint file (.pth/.pth.tar/.pt/.safetensors), transformers folder, hf-hub:ORG/NAME (local HF "
        "cache) or timm model name (random:NAME = random init)",
    )
    _add_loading_args(parser)


def encoder_from_args(args: argparse.Namespace, *, img_size: int | None = None):
    """The Encoder the flags added by add_checkpoint_args describe."""
    from ijepa_eval.encoders.load import load_encoder

    return load_encoder(
        args.ckpt, branch=args.branch, arch=parse_arch(args.arch), img_size=img_size,
        trust_checkpoint=args.trust_checkpoint,
    )


def summarize_keys(keys: list[str]) -> dict[str, int]:
    """Group keys by prefix up to the first layer index (``decoder_blocks.3.x`` -> ``decoder_blocks``)."""
    groups: Counter[str] = Counter()
    for key in keys:
        parts = []
        for part in key.split("."):
            if part.isdigit() or len(parts) == 2:
                break
            parts.append(part)
        groups[".".join(parts) or key] += 1
    return dict(groups)


def inspect_report(source: str, branch: str | None, arch: Any, trust_checkpoint: bool) -> dict[str, Any]:
    """What `inspect` shows; works when the architecture is only partly known (no model is built then)."""
    from ijepa_eval.encoders.architecture.base import final_norm_of_arch
    from ijepa_eval.encoders.architecture.families import resolve_arch
    from ijepa_eval.encoders.encoder import FEATURE_PATHS
    from ijepa_eval.encoders.load import check_checkpoint_fits, load_encoder, read_encoder_checkpoint
    from ijepa_eval.encoders.read import is_checkpoint_source
    from ijepa_eval.encoders.registry import FORMATS

    if not is_checkpoint_source(source):  # timm model name: build it, nothing to read
        enc = load_encoder(source, branch, arch)
        report = dict(enc.info, unknown=[], params=sum(p.numel() for p in enc.parameters()))
        report.update(format_description="timm model", final_norm=enc.final_norm, features=FEATURE_PATHS[enc.final_norm])
        return report
    ckpt = read_encoder_checkpoint(source, branch, trust_checkpoint=trust_checkpoint)
    arch_kwargs, unknown = dict(ckpt.arch.kwargs), list(ckpt.arch.unknown)
    if arch is not None:
        resolved = resolve_arch(ckpt.arch, arch)
        if isinstance(resolved, str):
            arch_kwargs = {**arch_kwargs, "timm_model": resolved}
            unknown = []
        else:
            arch_kwargs, unknown = resolved, [k for k in unknown if resolved.get(k) is None]
    final_norm = final_norm_of_arch(arch_kwargs)
    if not unknown:  # report inconsistent records now, as loading would
        check_checkpoint_fits(ckpt, arch_kwargs.get("timm_model") or arch_kwargs, source)
    return dict(
        ckpt.info(arch_kwargs), unknown=unknown, params=sum(v.numel() for v in ckpt.state_dict.values()),
        format_description=FORMATS[ckpt.format].description, final_norm=final_norm,
        features=FEATURE_PATHS[final_norm],
    )


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _print_report(report: dict[str, Any]) -> None:
    branches = ", ".join(f"{b}*" if b == report["branch"] else b for b in report["branches"])
    branches = f"{branches}   (* = loaded)" if branches else "- (one network in this file)"
    arch = dict(report["arch"])
    for key in report["unknown"]:
        arch[key] = "? (unknown: pass --arch)"
    dropped = summarize_keys(report["dropped_keys"])
    lines = [
        f"source:   {report['source']}",
        f"sha256:   {report['sha256']}",
        f"format:   {report['format']} ({report['format_description']})",
        f"branches: {branches}",
        f"arch:     {_fmt(arch)}",
        f"params:   {report['params']:,} ({report['params'] / 1e6:.1f} M, encoder only)",
        f"features: {report['features']}",
        *(f"  note: {note}" for note in report.get("notes", [])),
        "dropped:  " + (", ".join(f"{k} ({n} keys)" for k, n in dropped.items()) or "-"),
        "meta:" + ("" if report["meta"] else "     -"),
    ]
    if report["branch"] == "context":
        lines.insert(4, "note:     context (online) encoder, not the EMA target encoder the I-JEPA paper evaluates")
    lines += [f"  {k}: {_fmt(v)}" for k, v in report["meta"].items()]
    print("\n".join(lines))


def cmd_inspect(args: argparse.Namespace) -> int:
    report = inspect_report(args.ckpt, args.branch, parse_arch(args.arch), args.trust_checkpoint)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report)
    return 0


def register(subparsers) -> None:
    from ijepa_eval.cli_base import HelpFormatter

    parser = subparsers.add_parser(
        "inspect", help="show a checkpoint's format, branches, architecture, dropped keys and metadata",
        description="Read a checkpoint safely and report what load_encoder would load from it. "
        "Works even when the number of heads cannot be inferred.",
        epilog=INSPECT_EPILOG, formatter_class=HelpFormatter,
    )
    parser.add_argument("ckpt", metavar="CKPT", help="checkpoint file, transformers folder, hf-hub:ORG/NAME or timm model name")
    _add_loading_args(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=cmd_inspect)
