"""Multi-process training under ``torchrun``: process group, DDP wrapping, reductions.

``torchrun --nproc_per_node=N -m sp_adapter.cli train ...`` (or the ``sp-adapter``
script) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and joins the group (NCCL on CUDA,
gloo on CPU). Rank 0 alone logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """The current process group's ranks (a single process when there is none)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return DistInfo()


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's variables, if ``WORLD_SIZE > 1``.

    Does nothing when a group already exists or when run as a single process.
    """
    if dist.is_available() and dist.is_initialized():
        return dist_info()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return dist_info()


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (already on ``device``)."""
    kwargs: dict[str, Any] = {"find_unused_parameters": find_unused_parameters}
    if device.type == "cuda":
        kwargs.update(device_ids=[device.index], output_device=device.index)
    return nn.parallel.DistributedDataParallel(model, **kwargs)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """The mean of each value over the processes (for logging)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist(), strict=True))


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every process, in rank order (all processes receive the list)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
