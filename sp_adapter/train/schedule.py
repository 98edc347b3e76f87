"""The optimiser and learning-rate schedule of Sec. 4.1: AdamW, warm-up then cosine."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .config import TrainConfig


class WarmupCosine:
    """Learning-rate factor for ``LambdaLR``: a linear warm-up over ``warmup`` steps, then
    a cosine from 1 to ``floor`` (``min_lr / lr``) at ``total`` steps, flat afterwards.

    A plain object (not a closure) so ``LambdaLR.state_dict()`` saves and restores it.
    """

    def __init__(self, total: int, warmup: int = 0, floor: float = 0.0) -> None:
        self.total, self.warmup, self.floor = int(total), int(warmup), float(floor)

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: TrainConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` with :class:`WarmupCosine` (stepped once per optimiser step)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: everything is frozen")
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    factor = WarmupCosine(config.steps, config.warmup_steps, config.min_lr / config.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
