"""The semantic prior as one module: prior learner (F_S + CLC) and one SPE per level.

This is everything :func:`sp_adapter.wrap` adds to a network, and everything a saved
prior holds: not the backbone, not the teacher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .config import PriorConfig
from .embedding import SemanticPriorEmbedding
from .levels import Level
from .prior_learner import PriorLearner, build_prior_learner
from .teacher import Teacher


class SemanticPrior(nn.Module):
    """Prior learner plus the embeddings of the chosen levels.

    Args:
        config: the prior's options.
        levels: the chosen levels by name (names must be valid attribute names).
        channels, reductions: the teacher's feature channels and reductions.
        backbone: the backbone the levels belong to (a saved prior refuses others).
        teacher: needed to start a teacher-initialised student.
    """

    def __init__(
        self,
        config: PriorConfig,
        levels: Mapping[str, Level],
        channels: Sequence[int],
        reductions: Sequence[int],
        backbone: str = "custom",
        teacher: Teacher | None = None,
    ) -> None:
        super().__init__()
        if not levels:
            raise ValueError("a semantic prior needs at least one level")
        self.config = config
        self.levels = dict(levels)
        self.backbone = backbone
        self.channels, self.reductions = list(channels), list(reductions)
        self.learner: PriorLearner = build_prior_learner(config, channels, reductions, teacher)
        self.embeddings = nn.ModuleDict(
            {
                name: SemanticPriorEmbedding(channels, level.prior_level, level.channels, config,
                                             reduction=self.reductions[level.prior_level])
                for name, level in levels.items()
            }
        )

    def forward(self, blurry: torch.Tensor) -> list[torch.Tensor]:
        """The priors ``f_pri^1..L`` of a blurry batch in [0, 1]."""
        return self.learner(blurry)
