"""The prior learner: student F_S plus the cross-level connection (CLC), Eq. (3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.errors import ForwardError, OptionError
from sp_adapter.inference import pad_to_multiple
from sp_adapter.prior.config import PriorConfig
from sp_adapter.prior.student import SmallStudent, TeacherInitStudent
from sp_adapter.prior.teacher import Teacher


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (the paper's "linear interpolation"); no-op if equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def zero_conv(c_in: int, c_out: int, kernel_size: int = 1) -> nn.Conv2d:
    """A convolution with zero weights and bias: its output is exactly 0 at initialisation."""
    conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class CrossLevelConnection(nn.Module):
    """Eq. (3): ``f_pri^i = a^i * m^i + a^i * up(m^{i+1})``, ``f_pri^L = m^L``.

    ``a^i = conv(cat(m^i, up(m^{i+1})))`` is the attention map. Two details the equation
    leaves open, chosen so the connection starts as the identity (``f_pri^i = m^i``, which
    keeps a teacher-initialised student's features intact at step 0) while every weight
    still receives a gradient:

    * ``a^i = 1 + tanh(conv(...))`` with the conv zero-initialised (``a^i = 1`` at start);
    * ``m^{i+1}`` has other channels than ``m^i``; a 1x1 projection, zero-initialised,
      maps ``up(m^{i+1})`` to the channels of ``m^i``.
    """

    def __init__(self, channels: Sequence[int], kernel_size: int = 3) -> None:
        super().__init__()
        self.attention = nn.ModuleList(
            zero_conv(c + c_next, c, kernel_size)
            for c, c_next in zip(channels[:-1], channels[1:], strict=True)
        )
        self.project = nn.ModuleList(
            zero_conv(c_next, c, 1) for c, c_next in zip(channels[:-1], channels[1:], strict=True)
        )

    def forward(self, m: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, (att, proj) in enumerate(zip(self.attention, self.project, strict=True)):
            up = resize(m[i + 1], m[i].shape[-2:])
            a = 1 + torch.tanh(att(torch.cat([m[i], up], dim=1)))
            out.append(a * m[i] + a * proj(up))
        out.append(m[-1])
        return out


class PriorLearner(nn.Module):
    """F_S followed by the CLC: the blurry image to the priors ``f_pri^1..L``.

    Args:
        student: a module mapping a blurry batch in [0, 1] to ``L`` feature maps.
        channels: the channels of those maps (the teacher's).
        reductions: their spatial reductions (the teacher's).
        clc: apply the cross-level connection (Table 4's CLC switch).
    """

    def __init__(
        self,
        student: nn.Module,
        channels: Sequence[int],
        reductions: Sequence[int],
        clc: bool = True,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.student = student
        self.channels, self.reductions = list(channels), list(reductions)
        self.clc = (
            CrossLevelConnection(channels, kernel_size) if clc and len(channels) > 1 else None
        )

    def forward(self, blurry: torch.Tensor) -> list[torch.Tensor]:
        """The priors of ``blurry``, computed on it padded (bottom and right, reflected) to
        a multiple of the deepest reduction: level ``i`` then covers the padded image at
        exactly ``reductions[i]`` pixels per prior pixel, so the CLC's upsampling between
        levels and the resize to each decoder level stay aligned with the image whatever
        its size (:func:`~sp_adapter.prior.embedding.crop_to_site`)."""
        blurry, _ = pad_to_multiple(blurry, max(self.reductions))
        m = self.student(blurry)
        if len(m) != len(self.channels):
            raise ForwardError(
                f"the student returned {len(m)} levels, expected {len(self.channels)}"
            )
        return self.clc(m) if self.clc is not None else list(m)


def build_prior_learner(
    config: PriorConfig,
    channels: Sequence[int],
    reductions: Sequence[int],
    teacher: Teacher | None = None,
) -> PriorLearner:
    """The learner of ``config``; a teacher-initialised student copies ``teacher``."""
    if config.student == "teacher":
        if teacher is None:
            raise OptionError("student='teacher' needs the teacher (its weights start the student)")
        student: nn.Module = TeacherInitStudent(teacher)
    else:
        student = SmallStudent(channels, reductions, width=config.small_width)
    return PriorLearner(
        student, channels, reductions, clc=config.clc, kernel_size=config.kernel_size
    )
