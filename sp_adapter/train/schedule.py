"""The optimiser and learning-rate schedule of Sec. 4.1: AdamW, warm-up then cosine."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from sp_adapter.attach.state import PRIOR_ATTR
from sp_adapter.errors import OptionError
from sp_adapter.train.config import TrainConfig


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


EMBEDDING_PREFIX = f"{PRIOR_ATTR}.embeddings."
STUDENT_PREFIX = f"{PRIOR_ATTR}.learner.student."
PRIOR_PREFIX = f"{PRIOR_ATTR}."


def build_optimizer(
    params: Iterable[tuple[str, torch.nn.Parameter]] | Iterable[torch.nn.Parameter],
    config: TrainConfig,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` with :class:`WarmupCosine` (stepped once per optimiser step).

    ``params`` may be named (``model.named_parameters()``): the prior's embeddings
    (MLA and SAT, Eqs. 5-6, under ``sp_prior.embeddings.``) then form their own group
    with learning rate ``config.lr * config.embedding_lr_scale``, its student F_S
    (under ``sp_prior.learner.student.``) one with ``config.lr * config.student_lr_scale``,
    and, in a wrapped network, the backbone (every parameter outside ``sp_prior.``) one
    with ``config.lr * config.backbone_lr_scale`` (a group whose factor is 0 is left out
    of the optimiser).
    """
    named = [(n or "", p) for n, p in _pairs(params) if p.requires_grad]
    scaled = {EMBEDDING_PREFIX: config.embedding_lr_scale}
    if config.student_lr_scale != 1:  # at 1 the student stays in the first group, as before
        scaled[STUDENT_PREFIX] = config.student_lr_scale
    wrapped = any(n.startswith(PRIOR_PREFIX) for n, _ in named)
    split_backbone = wrapped and config.backbone_lr_scale != 1  # at 1: the first group

    def in_first_group(name: str) -> bool:
        if split_backbone and not name.startswith(PRIOR_PREFIX):
            return False
        return not name.startswith(tuple(scaled))

    rest = [p for n, p in named if in_first_group(n)]
    groups: list[dict] = [{"params": rest}] if rest else []
    for prefix, scale in scaled.items():
        own = [p for n, p in named if n.startswith(prefix)]
        if own and scale > 0:
            groups.append({"params": own, "lr": config.lr * scale})
    if split_backbone and config.backbone_lr_scale > 0:
        own = [p for n, p in named if not n.startswith(PRIOR_PREFIX)]
        if own:
            groups.append({"params": own, "lr": config.lr * config.backbone_lr_scale})
    if not groups:
        raise OptionError("no trainable parameters: everything is frozen")
    optimizer = torch.optim.AdamW(
        groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    factor = WarmupCosine(config.steps, config.warmup_steps, config.min_lr / config.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _pairs(
    params: Iterable[tuple[str, torch.nn.Parameter]] | Iterable[torch.nn.Parameter],
) -> Iterable[tuple[str | None, torch.nn.Parameter]]:
    for item in params:
        yield item if isinstance(item, tuple) else (None, item)
