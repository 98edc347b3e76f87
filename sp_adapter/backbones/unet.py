"""The paper's plain UNet baseline: three levels, skips joined by addition (Sec. 3.2).

Encoder levels at full, 1/2 and 1/4 resolution (``width``, ``2 width``, ``4 width``
channels), residual blocks, strided-convolution downsampling, transposed-convolution
upsampling, and a global residual (the network predicts ``sharp - blurry``). Each decoder
level adds its encoder skip in ``forward`` (``f_de + f_en``), which is where Eq. (6)
modulates; the level map is in ``adapters/unet.py``, so ``sp_adapter.wrap(UNet())`` needs
no other argument.

Any input size works: the input is padded (reflection) to a multiple of 4 inside
``forward`` and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """``x + conv(act(conv(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def _blocks(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels) for _ in range(n)))


class UNet(nn.Module):
    """A 3-level U-Net for deblurring.

    Args:
        width: channels of the first level (then 2x and 4x).
        blocks: residual blocks per encoder and per decoder level.
    """

    size_multiple = 4

    def __init__(self, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.width, self.blocks = width, blocks
        w1, w2, w3 = width, 2 * width, 4 * width
        self.head = nn.Conv2d(3, w1, 3, padding=1)
        self.enc1 = _blocks(w1, blocks)
        self.down1 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.enc2 = _blocks(w2, blocks)
        self.down2 = nn.Conv2d(w2, w3, 3, stride=2, padding=1)
        self.enc3 = _blocks(w3, blocks)
        self.dec3 = _blocks(w3, blocks)
        self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2 = _blocks(w2, blocks)
        self.up1 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        self.dec1 = _blocks(w1, blocks)
        self.tail = nn.Conv2d(w1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.size_multiple, -w % self.size_multiple
        padded = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
        e1 = self.enc1(self.head(padded))
        e2 = self.enc2(self.down1(e1))
        e3 = self.enc3(self.down2(e2))
        d3 = self.dec3(e3) + e3
        d2 = self.dec2(self.up2(d3) + e2)
        d1 = self.dec1(self.up1(d2) + e1)
        out = padded + self.tail(d1)
        return out[..., :h, :w]
