"""The semantic prior as one module: prior learner (F_S + CLC) and one SPE per level.

This is everything :func:`sp_adapter.wrap` adds to a network, and everything a saved
prior holds: not the backbone, not the teacher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from sp_adapter.errors import OptionError, PriorStrengthError
from sp_adapter.prior.config import PriorConfig
from sp_adapter.prior.embedding import SemanticPriorEmbedding
from sp_adapter.prior.learner import PriorLearner, build_prior_learner
from sp_adapter.prior.region import LevelSpec
from sp_adapter.prior.teacher import Teacher

MAX_STRENGTH = 10.0
"""The largest prior strength accepted. The strength multiplies the change each SPE makes
to its decoder level (Eq. 6), a change trained at 1; beyond a few times that the network
sees features it never saw, and huge strengths overflow to inf and NaN outputs (float16
already past 65504), so nothing above this bound is meaningful."""


def checked_strength(strength: float) -> float:
    """``strength`` as a float, refused unless finite and in ``[0, MAX_STRENGTH]``."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_STRENGTH:
        raise PriorStrengthError(
            f"the prior's strength must be a finite number >= 0 and <= {MAX_STRENGTH:g} (1: "
            f"Eq. 6 as trained, 0: the bare network; larger values scale the trained change "
            f"beyond anything seen in training and overflow to NaN), got {strength!r}")
    return value


class SemanticPrior(nn.Module):
    """Prior learner plus the embeddings of the chosen levels.

    :attr:`strength` scales the change every SPE makes to its decoder level (1, the
    default: Eq. 6 as trained; see :func:`sp_adapter.attach.wrap.set_prior_strength`). It is a
    plain attribute, not a tensor: copies of the module carry it, its ``state_dict`` does
    not; :func:`sp_adapter.save_pretrained` records it in ``config.json``.

    Args:
        config: the prior's options.
        levels: the chosen levels by name (names must be valid attribute names).
        channels, reductions: the teacher's feature channels and reductions.
        backbone: the backbone the levels belong to (a saved prior refuses others).
        teacher: needed to start a teacher-initialised student.
        needs_weights: the student was built from the teacher's architecture alone
            (``wrap(teacher=None)``) and waits for trained weights: the wrapped model warns
            on its first forward until a state dict with the prior's weights is loaded.
    """

    def __init__(
        self,
        config: PriorConfig,
        levels: Mapping[str, LevelSpec],
        channels: Sequence[int],
        reductions: Sequence[int],
        backbone: str = "custom",
        teacher: Teacher | None = None,
        needs_weights: bool = False,
    ) -> None:
        super().__init__()
        if not levels:
            raise OptionError("a semantic prior needs at least one level")
        self.config = config
        self.levels = dict(levels)
        self.backbone = backbone
        self.channels, self.reductions = list(channels), list(reductions)
        self._strength = 1.0
        self.needs_weights = needs_weights
        self.learner: PriorLearner = build_prior_learner(config, channels, reductions, teacher)
        self.embeddings = nn.ModuleDict(
            {
                name: SemanticPriorEmbedding(channels, level.prior_level, level.channels, config,
                                             reduction=self.reductions[level.prior_level])
                for name, level in levels.items()
            }
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        if any(k.startswith(prefix) for k in state_dict):
            self.needs_weights = False
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def strength(self) -> float:
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        self._strength = checked_strength(value)

    def sample_strengths(self, batch: int, device: torch.device) -> float | torch.Tensor:
        """The strength the SPEs apply in one forward of ``batch`` images: :attr:`strength`,
        or in training mode with ``config.strength_jitter = a > 0`` one strength per image,
        uniform in ``[1 - a, 1 + a]`` times it (a ``batch x 1 x 1 x 1`` tensor)."""
        jitter = self.config.strength_jitter
        if not (self.training and jitter > 0):
            return self._strength
        noise = torch.rand(batch, 1, 1, 1, device=device).mul_(2 * jitter).add_(1 - jitter)
        return noise.mul_(self._strength)

    def forward(self, blurry: torch.Tensor) -> list[torch.Tensor]:
        """The priors ``f_pri^1..L`` of a blurry batch in [0, 1]."""
        return self.learner(blurry)
