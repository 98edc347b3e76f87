"""MIMO-UNet and MIMO-UNet+ (Cho et al., ICCV 2021): twins of the official models.

Written for this project from a reading of chosj95/MIMO-UNet, ``models/MIMOUNet.py``
(classes ``EBlock``, ``DBlock``, ``AFF``, ``SCM``, ``FAM``, ``MIMOUNet``, ``MIMOUNetPlus``)
and ``models/layers.py`` (``BasicConv``, ``ResBlock``). Module names, registration order,
shapes and parameter count are the official ones, so an official checkpoint
(``torch.load(p)["model"]``, see :func:`sp_adapter.files.checkpoints.load_backbone_checkpoint`)
loads with ``strict=True``; the forward computes what the official forward computes, in
the same order (so forward hooks fire in the official order).

Conventions:

* input: one ``B x 3 x H x W`` tensor in [0, 1], H and W multiples of 4 (checked up front
  with a clear ``ValueError``; the official model fails later with a shape error);
* output: a list ``[1/4 scale, 1/2 scale, full]``; ``out[2]`` is the final image. Each
  output is a head plus the nearest-downsampled input (global residual). Nothing is
  clamped here (the official test script clamps ``out[2]`` to [0, 1]).

Structure (base width 32): ``Encoder.0/1/2`` and ``Decoder.2/1/0`` at full, 1/2 and 1/4
resolution (32, 64, 128 channels); the skips ``AFFs.0`` / ``AFFs.1`` are concatenated with
the up-sampled decoder feature as the input of ``Convs.1`` / ``Convs.0``. Where the prior
meets them: :mod:`sp_adapter.adapters.mimo_unet`. MIMO-UNet+ has 20 residual blocks per
block instead of 8 and applies ``Dropout2d(0.1)`` (``drop2`` on ``AFFs.1``, ``drop1`` on
``AFFs.0``) to the skips, the identity in eval.

In-place operations (kept as in the official code): every ``BasicConv`` built with a ReLU
ends in ``ReLU(inplace=True)``, which overwrites the output of its convolution
(``<BasicConv>.main.0``). Those inner convolution outputs are the ONLY module outputs that
change after their module returns. Safe to capture with a forward hook without a copy:
the level-sized outputs ``Encoder.N``, ``Decoder.N``, ``AFFs.N``, ``FAM1/2``, ``SCM1/2``,
``drop1/2``, the output of every ``BasicConv`` itself (``feat_extract.N``, ``Convs.N``,
``ConvsOut.N``) and of every ``ResBlock``, and the inputs of ``Convs.N`` (forward
pre-hook: the concatenation of up-sampled decoder feature and skip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.errors import ImageInputError

SIZE_MULTIPLE = 4
"""MIMO-UNet input height and width must be multiples of this."""

BASE_CHANNELS = 32
"""Width of level 1; levels 2 and 3 have twice and four times as many channels."""


def _check_input(x: torch.Tensor, model: str) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is ``B x 3 x H x W`` with H, W multiples of 4."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ImageInputError(f"{model} expects a B x 3 x H x W tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ImageInputError(
            f"{model} needs input height and width that are multiples of {SIZE_MULTIPLE}; "
            f"got {h}x{w}. Pad the image and crop the output."
        )


class BasicConv(nn.Module):
    """Convolution (or transposed convolution), optional batch norm, optional in-place ReLU.

    Mirrors ``BasicConv`` of the official ``models/layers.py``: the layers live in a
    ``main`` sequential (``main.0`` the convolution). A regular convolution pads by
    ``kernel_size // 2``; a transposed one by ``kernel_size // 2 - 1`` (so kernel 4,
    stride 2 doubles the size). With ``norm`` the convolution has no bias.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        stride: int,
        bias: bool = True,
        norm: bool = False,
        relu: bool = True,
        transpose: bool = False,
    ) -> None:
        super().__init__()
        use_bias = bias and not norm
        layers: list[nn.Module] = []
        if transpose:
            layers.append(
                nn.ConvTranspose2d(
                    in_channel,
                    out_channel,
                    kernel_size,
                    stride=stride,
                    padding=kernel_size // 2 - 1,
                    bias=use_bias,
                )
            )
        else:
            layers.append(
                nn.Conv2d(
                    in_channel,
                    out_channel,
                    kernel_size,
                    stride=stride,
                    padding=kernel_size // 2,
                    bias=use_bias,
                )
            )
        if norm:
            layers.append(nn.BatchNorm2d(out_channel))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ResBlock(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))`` (official ``ResBlock`` of ``models/layers.py``)."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            BasicConv(in_channel, out_channel, kernel_size=3, stride=1, relu=True),
            BasicConv(out_channel, out_channel, kernel_size=3, stride=1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x


class _ResStack(nn.Module):
    """``num_res`` residual blocks in a ``layers`` sequential."""

    def __init__(self, channel: int, num_res: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(ResBlock(channel, channel) for _ in range(num_res)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class EBlock(_ResStack):
    """Encoder block: a stack of residual blocks (official ``EBlock``)."""


class DBlock(_ResStack):
    """Decoder block: a stack of residual blocks (official ``DBlock``)."""


class AFF(nn.Module):
    """Asymmetric feature fusion (official ``AFF``): concatenate the three levels' features
    (resized to one scale) and mix them with a 1x1 conv + ReLU, then a 3x3 conv."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            BasicConv(in_channel, out_channel, kernel_size=1, stride=1, relu=True),
            BasicConv(out_channel, out_channel, kernel_size=3, stride=1, relu=False),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x1, x2, x4], dim=1))


class SCM(nn.Module):
    """Shallow convolutional module (official ``SCM``): features of a downsampled input image.

    ``main`` maps the 3-channel image to ``out_plane - 3`` channels; the image is
    concatenated in front of them and a 1x1 conv (``conv``) mixes the result.
    """

    def __init__(self, out_plane: int) -> None:
        super().__init__()
        quarter, half = out_plane // 4, out_plane // 2
        self.main = nn.Sequential(
            BasicConv(3, quarter, kernel_size=3, stride=1, relu=True),
            BasicConv(quarter, half, kernel_size=1, stride=1, relu=True),
            BasicConv(half, half, kernel_size=3, stride=1, relu=True),
            BasicConv(half, out_plane - 3, kernel_size=1, stride=1, relu=True),
        )
        self.conv = BasicConv(out_plane, out_plane, kernel_size=1, stride=1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, self.main(x)], dim=1))


class FAM(nn.Module):
    """Feature attention module (official ``FAM``): ``x1 + merge(x1 * x2)``."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.merge = BasicConv(channel, channel, kernel_size=3, stride=1, relu=False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return x1 + self.merge(x1 * x2)


class _MIMOUNetBase(nn.Module):
    """The module tree and forward shared by :class:`MIMOUNet` and :class:`MIMOUNetPlus`.

    Submodules are created in the official order (``Encoder``, ``feat_extract``,
    ``Decoder``, ``Convs``, ``ConvsOut``, ``AFFs``, ``FAM1``, ``SCM1``, ``FAM2``, ``SCM2``),
    which fixes the ``state_dict`` key order.
    """

    def __init__(self, num_res: int) -> None:
        super().__init__()
        c = BASE_CHANNELS
        self.num_res = num_res
        self.Encoder = nn.ModuleList(
            [EBlock(c, num_res), EBlock(2 * c, num_res), EBlock(4 * c, num_res)]
        )
        self.feat_extract = nn.ModuleList(
            [
                BasicConv(3, c, kernel_size=3, stride=1, relu=True),
                BasicConv(c, 2 * c, kernel_size=3, stride=2, relu=True),
                BasicConv(2 * c, 4 * c, kernel_size=3, stride=2, relu=True),
                BasicConv(4 * c, 2 * c, kernel_size=4, stride=2, relu=True, transpose=True),
                BasicConv(2 * c, c, kernel_size=4, stride=2, relu=True, transpose=True),
                BasicConv(c, 3, kernel_size=3, stride=1, relu=False),
            ]
        )
        self.Decoder = nn.ModuleList(
            [DBlock(4 * c, num_res), DBlock(2 * c, num_res), DBlock(c, num_res)]
        )
        self.Convs = nn.ModuleList(
            [
                BasicConv(4 * c, 2 * c, kernel_size=1, stride=1, relu=True),
                BasicConv(2 * c, c, kernel_size=1, stride=1, relu=True),
            ]
        )
        self.ConvsOut = nn.ModuleList(
            [
                BasicConv(4 * c, 3, kernel_size=3, stride=1, relu=False),
                BasicConv(2 * c, 3, kernel_size=3, stride=1, relu=False),
            ]
        )
        self.AFFs = nn.ModuleList([AFF(7 * c, c), AFF(7 * c, 2 * c)])
        self.FAM1 = FAM(4 * c)
        self.SCM1 = SCM(4 * c)
        self.FAM2 = FAM(2 * c)
        self.SCM2 = SCM(2 * c)

    def _drop_skips(
        self, skip1: torch.Tensor, skip2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook for MIMO-UNet+'s skip dropout; identity here."""
        return skip1, skip2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: ``B x 3 x H x W`` in [0, 1]. Returns ``[1/4, 1/2, full]`` restored images."""
        _check_input(x, type(self).__name__)
        # nearest-neighbour image pyramid (F.interpolate's default mode)
        x_2 = F.interpolate(x, scale_factor=0.5)
        x_4 = F.interpolate(x_2, scale_factor=0.5)
        z2 = self.SCM2(x_2)
        z4 = self.SCM1(x_4)

        # encoder
        enc1 = self.Encoder[0](self.feat_extract[0](x))
        enc2 = self.Encoder[1](self.FAM2(self.feat_extract[1](enc1), z2))
        z = self.Encoder[2](self.FAM1(self.feat_extract[2](enc2), z4))

        # asymmetric feature fusion: every level resized to levels 1 and 2
        enc1_to_2 = F.interpolate(enc1, scale_factor=0.5)
        enc2_to_1 = F.interpolate(enc2, scale_factor=2)
        enc3_to_2 = F.interpolate(z, scale_factor=2)
        enc3_to_1 = F.interpolate(enc3_to_2, scale_factor=2)
        skip2 = self.AFFs[1](enc1_to_2, enc2, enc3_to_2)
        skip1 = self.AFFs[0](enc1, enc2_to_1, enc3_to_1)
        skip1, skip2 = self._drop_skips(skip1, skip2)

        outputs: list[torch.Tensor] = []
        # level 3 (1/4)
        z = self.Decoder[0](z)
        outputs.append(self.ConvsOut[0](z) + x_4)
        z = self.feat_extract[3](z)
        # level 2 (1/2)
        z = self.Decoder[1](self.Convs[0](torch.cat([z, skip2], dim=1)))
        outputs.append(self.ConvsOut[1](z) + x_2)
        z = self.feat_extract[4](z)
        # level 1 (full)
        z = self.Decoder[2](self.Convs[1](torch.cat([z, skip1], dim=1)))
        outputs.append(self.feat_extract[5](z) + x)
        return outputs


class MIMOUNet(_MIMOUNetBase):
    """MIMO-UNet (official ``MIMOUNet(num_res=8)``): 6,807,171 parameters, 244 tensors."""

    def __init__(self, num_res: int = 8) -> None:
        super().__init__(num_res)


class MIMOUNetPlus(_MIMOUNetBase):
    """MIMO-UNet+ (official ``MIMOUNetPlus(num_res=20)``): 16,107,651 parameters.

    As :class:`MIMOUNet` with 20 residual blocks per ``EBlock``/``DBlock`` and
    ``Dropout2d(0.1)`` on the two skips (``drop2`` on ``AFFs.1``, then ``drop1`` on
    ``AFFs.0``, the official order), active in train mode only.
    """

    def __init__(self, num_res: int = 20) -> None:
        super().__init__(num_res)
        self.drop1 = nn.Dropout2d(0.1)
        self.drop2 = nn.Dropout2d(0.1)

    def _drop_skips(
        self, skip1: torch.Tensor, skip2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        skip2 = self.drop2(skip2)
        skip1 = self.drop1(skip1)
        return skip1, skip2
