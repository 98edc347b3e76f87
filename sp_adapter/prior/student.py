"""The student F_S: predicts the teacher's features from the BLURRY image (Sec. 3.1).

Two kinds, both returning ``m^1..m^L`` with the teacher's channels and reductions, in the
teacher's standardised feature space:

* :class:`TeacherInitStudent`: a trainable copy of the teacher's stages up to its deepest
  level, started from the teacher's weights and fine-tuned on blurry images. It starts
  out predicting what the teacher sees in a blurry image, which is much closer to the
  sharp features than anything a random network learns in a short budget.
* :class:`SmallStudent`: a small randomly initialised CNN, a 3-scale pyramid of strided
  convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sp_adapter.errors import OptionError
from sp_adapter.prior.teacher import Teacher


class TeacherInitStudent(nn.Module):
    """A trainable copy of the teacher's feature stages.

    The copy's batch-norm layers keep the teacher's running statistics (they stay in eval
    mode; their affine parameters still train): small deblurring batches would otherwise
    overwrite ImageNet statistics with noisy ones. Outputs are standardised with the
    teacher's fixed statistics, stored here as buffers so a saved prior carries them.
    """

    def __init__(self, teacher: Teacher) -> None:
        super().__init__()
        self.features = teacher.trainable_copy()
        self.channels, self.reductions = list(teacher.channels), list(teacher.reductions)
        self.register_buffer("input_mean", teacher.input_mean.detach().clone())
        self.register_buffer("input_std", teacher.input_std.detach().clone())
        for i, (mean, std) in enumerate(teacher.statistics()):
            self.register_buffer(f"feature_mean{i}", mean.detach().clone())
            self.register_buffer(f"feature_std{i}", std.detach().clone())

    def train(self, mode: bool = True) -> TeacherInitStudent:
        super().train(mode)
        for module in self.features.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, blurry: torch.Tensor) -> list[torch.Tensor]:
        x = (blurry - self.input_mean.to(blurry.dtype)) / self.input_std.to(blurry.dtype)
        out = []
        for i, f in enumerate(self.features(x)):
            mean = getattr(self, f"feature_mean{i}").to(f.dtype)
            std = getattr(self, f"feature_std{i}").to(f.dtype)
            out.append((f - mean) / std)
        return out


def _conv_act(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GELU())


class SmallStudent(nn.Module):
    """A small CNN: strided 3x3 convolutions down to each teacher reduction.

    Args:
        channels: output channels per level (the teacher's).
        reductions: output reductions per level, powers of two, increasing.
        width: channels of the first stage; doubled at every level, capped at 4x.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], width: int = 32) -> None:
        super().__init__()
        for r in reductions:
            if r < 2 or r & (r - 1):
                raise OptionError(
                    f"SmallStudent needs power-of-two reductions >= 2, got {reductions}"
                )
        if list(reductions) != sorted(set(reductions)):
            raise OptionError(f"reductions must increase, got {reductions}")
        self.channels, self.reductions = list(channels), list(reductions)
        stages, heads = [], []
        c_prev, r_prev = 3, 1
        for level, (c_out, r) in enumerate(zip(channels, reductions, strict=True)):
            width_here = width * min(2**level, 4)
            layers: list[nn.Module] = []
            while r_prev < r:
                layers.append(_conv_act(c_prev, width_here, 2))
                c_prev, r_prev = width_here, r_prev * 2
            layers.append(_conv_act(c_prev, width_here, 1))
            c_prev = width_here
            stages.append(nn.Sequential(*layers))
            heads.append(nn.Conv2d(width_here, c_out, 1))
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)

    def forward(self, blurry: torch.Tensor) -> list[torch.Tensor]:
        x = blurry * 2 - 1
        out = []
        for stage, head in zip(self.stages, self.heads, strict=True):
            x = stage(x)
            out.append(head(x))
        return out
