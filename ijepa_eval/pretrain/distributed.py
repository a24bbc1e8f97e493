"""The loop's DDP (and torch.compile) wrappers, with the context that skips the gradient all-reduce on
accumulation steps (each process's device and the process group come from ``ijepa_eval.devices``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


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
