"""Tiny paired data and a tiny UNet for the tests (CPU and CUDA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sp_adapter.backbones.unet import UNet


class Pairs(Dataset):
    """``n`` fixed (blurry, sharp[, key]) pairs of smooth random images."""

    def __init__(self, n: int = 8, size: int = 32, keys: bool = False, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.sharp = F.avg_pool2d(torch.rand(n, 3, size, size, generator=g), 3, 1, 1)
        self.blurry = F.avg_pool2d(self.sharp, 7, 1, 3, count_include_pad=False)
        self.keys = keys

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int):
        if self.keys:
            return self.blurry[i], self.sharp[i], f"s{i}"
        return self.blurry[i], self.sharp[i]


def small_unet(seed: int = 0) -> UNet:
    """The library's UNet at width 8 with one block per level, initialised from ``seed``."""
    torch.manual_seed(seed)
    return UNet(width=8, blocks=1)


def blur_batches(n: int, seed: int = 0, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` one-image ``(blurry, sharp)`` batches: uniform noise and its 3x3 box blur."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sharp = torch.rand(1, 3, size, size, generator=g)
        out.append((F.avg_pool2d(sharp, 3, 1, 1, count_include_pad=False), sharp))
    return out
