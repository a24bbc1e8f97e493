"""SLURM launch through submitit: one task per GPU, torchrun-style env vars, requeue on preemption."""

from __future__ import annotations

import os
from pathlib import Path

from ijepa_eval.errors import ConfigError
from ijepa_eval.pretrain.configs import PretrainConfig


class _Job:
    """Picklable callable: sets RANK/WORLD_SIZE/... from submitit, trains, resumes after a requeue."""

    def __init__(self, cfg: PretrainConfig, out_dir: str, resume: bool):
        self.cfg, self.out_dir, self.resume = cfg, out_dir, resume

    def __call__(self) -> dict:
        import submitit

        from ijepa_eval.pretrain.loop import train
        from ijepa_eval.pretrain.run_folder import CKPT_NAME

        env = submitit.JobEnvironment()
        os.environ.update(
            RANK=str(env.global_rank),
            WORLD_SIZE=str(env.num_tasks),
            LOCAL_RANK=str(env.local_rank),
            MASTER_ADDR=env.hostnames[0],
            MASTER_PORT=os.environ.get("MASTER_PORT", "29500"),
        )
        resume = self.resume or (Path(self.out_dir) / CKPT_NAME).exists()
        return train(self.cfg, self.out_dir, resume=resume, progress=env.global_rank == 0)

    def checkpoint(self):
        """Called by submitit on preemption/timeout: requeue the same job, resuming from latest.pth.tar."""
        import submitit

        return submitit.helpers.DelayedSubmission(_Job(self.cfg, self.out_dir, resume=True))


def submit(
    cfg: PretrainConfig,
    out_dir: str,
    *,
    nodes: int,
    gpus_per_node: int,
    partition: str | None,
    timeout_min: int,
    resume: bool,
) -> str:
    try:
        import submitit
    except ImportError:
        raise ConfigError("SLURM launch needs submitit: pip install submitit (or use torchrun)") from None
    executor = submitit.AutoExecutor(folder=Path(out_dir) / "slurm")
    executor.update_parameters(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        tasks_per_node=gpus_per_node,
        cpus_per_task=max(1, cfg.num_workers + 1),
        timeout_min=timeout_min,
        slurm_partition=partition,
        name="ijepa-pretrain",
    )
    return executor.submit(_Job(cfg, str(out_dir), resume)).job_id
