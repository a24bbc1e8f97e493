"""`ijepa-eval pretrain`: I-JEPA pretraining from a named config plus key=value overrides."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  ijepa-eval pretrain --config tiny_cpu --out runs/tiny                 # CLEVR-mini, 2 CPU cores, minutes
  ijepa-eval pretrain --config tiny_cpu --out runs/tiny --steps 50 lr=5e-4 batch_size=16
  ijepa-eval pretrain --out runs/tiny --resume                         # continue exactly where it stopped
  ijepa-eval pretrain --config vith14_in1k --out runs/vith14 --root /data/imagenet
  torchrun --standalone --nproc_per_node 8 -m ijepa_eval.pretrain.train \\
      --config vith14_in1k --out runs/vith14 --root /data/imagenet      # one node, 8 GPUs (DDP)
  ijepa-eval pretrain --config vith14_in1k --out runs/vith14 --root /data/imagenet \\
      --slurm-nodes 2 --slurm-gpus-per-node 8 --slurm-partition learn  # SLURM via submitit
Writes OUT/latest.pth.tar (official I-JEPA format; `ijepa-eval inspect` / load_encoder read it),
OUT/log.jsonl (one row per step) and OUT/config.json. Configs: vith14_in1k, vith16_448_in1k,
vith14_in22k, vitg16_in22k, vitb16_in1k, vitl16_in1k, tiny_cpu."""


def register(subparsers) -> None:
    from ijepa_eval.cli_base import HelpFormatter
    from ijepa_eval.validate import int_at_least

    p = subparsers.add_parser(
        "pretrain",
        help="I-JEPA pretraining (writes the official checkpoint format)",
        description="Train an I-JEPA context encoder, predictor and EMA target encoder.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--config", default=None, help="named config (default tiny_cpu; with --resume: the checkpoint's)"
    )
    p.add_argument("--out", required=True, help="run folder for latest.pth.tar, log.jsonl, config.json")
    p.add_argument("--steps", type=int_at_least(1), default=None, help="total training steps (schedules span them)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/latest.pth.tar with its config")
    p.add_argument("--root", default=None, help="dataset root (config key `root`)")
    p.add_argument("--save-every", type=int_at_least(1), default=None, help="checkpoint every N steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    slurm = p.add_argument_group("SLURM (needs `pip install submitit`)")
    slurm.add_argument(
        "--slurm-nodes", type=int_at_least(0), default=0, help="submit to SLURM on this many nodes (0 = run here)"
    )
    slurm.add_argument("--slurm-gpus-per-node", type=int_at_least(1), default=8)
    slurm.add_argument("--slurm-partition", default=None)
    slurm.add_argument("--slurm-timeout-min", type=int_at_least(1), default=72 * 60)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=5e-4")
    p.set_defaults(func=run_pretrain)


def resolve_config(args: argparse.Namespace):
    """Named config (or the checkpoint's when resuming) + --steps/--root/--save-every + key=value."""
    from pathlib import Path

    from ijepa_eval.pretrain.checkpoint import read_checkpoint
    from ijepa_eval.pretrain.configs import apply_overrides, config_from_dict, get_config

    if args.resume and args.config is None:
        cfg = config_from_dict(read_checkpoint(Path(args.out) / "latest.pth.tar")["config"])
    else:
        cfg = get_config(args.config or "tiny_cpu")
    flags = {"steps": args.steps, "root": args.root, "save_every": args.save_every}
    cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
    return apply_overrides(cfg, args.overrides)


def run_pretrain(args: argparse.Namespace) -> int:
    import json

    from ijepa_eval.pretrain.configs import config_to_dict

    cfg = resolve_config(args)
    if args.print_config:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    if args.slurm_nodes:
        from ijepa_eval.pretrain.slurm import submit

        job_id = submit(cfg, args.out, nodes=args.slurm_nodes, gpus_per_node=args.slurm_gpus_per_node,
                        partition=args.slurm_partition, timeout_min=args.slurm_timeout_min, resume=args.resume)  # fmt: skip
        print(f"submitted SLURM job {job_id}; logs in {args.out}/slurm")
        return 0
    from ijepa_eval.pretrain.loop import train

    summary = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0
