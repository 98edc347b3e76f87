"""Tiny paired datasets for trainer tests (CPU and CUDA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


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
