"""The capacity control of a comparison: the bare UNet widened to the +SP arm's size.

The prior adds parameters (student, MLA, SAT). A bare UNet with about as many parameters,
trained on the same batches for the same steps, tells whether a gain comes from the
prior or from the extra capacity alone.
"""

from __future__ import annotations

from sp_adapter.backbones.unet import UNet
from sp_adapter.train.protocol import count_parameters


def unet_parameters(width: int, blocks: int = 2) -> int:
    """Parameters of the bare UNet of ``width`` channels and ``blocks`` blocks per level."""
    return count_parameters(UNet(width, blocks))


def matched_width(target: int, blocks: int = 2) -> tuple[int, int]:
    """The UNet width whose parameter count is closest to ``target``, and that count."""
    low, high = 1, 8
    while unet_parameters(high, blocks) < target:  # grows with the width: bracket, bisect
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if unet_parameters(mid, blocks) < target else (low, mid)
    best = min((low, high), key=lambda w: abs(unet_parameters(w, blocks) - target))
    return best, unet_parameters(best, blocks)
