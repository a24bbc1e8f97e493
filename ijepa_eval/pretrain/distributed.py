"""The loop's distributed plumbing: process group and device from torchrun's env vars, and the DDP (and
torch.compile) wrappers with the context that skips the gradient all-reduce on accumulation steps."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device) from torchrun's env vars; gloo on CPU, nccl on CUDA."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return rank, world_size, device


def wrap_models(encoder: nn.Module, predictor: nn.Module, world_size: int, compile_models: bool
                ) -> tuple[nn.Module, nn.Module, Callable[[], AbstractContextManager]]:
    """(context model, predictor model, no_sync) to train through; ``no_sync()`` skips DDP's gradient
    all-reduce on all but the last micro-batch of a step (a null context in one process)."""
    context_model, predictor_model = encoder, predictor
    no_sync = contextlib.nullcontext  # DDP: skip the gradient all-reduce on all but the last micro-batch
    if world_size > 1:
        # no static_graph: with no_sync it crashes (or stops all-reducing) in torch's reducer, and every
        # parameter is used each step anyway; bucket views save a gradient copy and its memory
        ddp = dict(gradient_as_bucket_view=True)
        context_model, predictor_model = DDP(encoder, **ddp), DDP(predictor, **ddp)
        ddp_models = (context_model, predictor_model)

        @contextlib.contextmanager
        def no_sync():
            with ddp_models[0].no_sync(), ddp_models[1].no_sync():
                yield

    if compile_models:
        # mask lengths change every batch: compile for dynamic shapes instead of recompiling per length
        context_model = torch.compile(context_model, dynamic=True)
        predictor_model = torch.compile(predictor_model, dynamic=True)
    return context_model, predictor_model, no_sync
