"""Run a deblurring network on images of any size: padding to a multiple, and tiling.

Networks with ``k`` down-samplings need sides divisible by ``2**k``: :func:`run_padded`
pads the bottom and right edges (reflect by default), runs the network and crops the
output back. Images too big for memory go through :func:`run_tiled`, which runs the
network on overlapping tiles and blends them.

Tiling guarantee: tiles start at multiples of ``multiple`` and step by
``tile - overlap`` rounded down to a multiple of ``multiple``. Along every edge a tile
shares with a neighbour, its blending weight is 0 on the first ``overlap // 4`` pixels,
then rises linearly across the middle of the overlap (the two ramps sum to 1), so pixels
that saw the tile's artificial edge are never used. Blending is a running weighted mean,
``mean += w / W * (y - mean)``, which leaves a value untouched when the tiles agree.
Hence, for a network whose receptive field radius is at most ``overlap // 4`` pixels
(its receptive field is narrower than ``overlap / 2``) and that is translation
equivariant for shifts by ``multiple``:

* a pointwise function gives exactly (bit for bit) the whole-image result;
* a convolutional network matches :func:`run_padded` on the whole image up to
  floating-point rounding (tests check max abs diff < 1e-5 in float32) away from the
  image borders, and in practice at the borders too, since the last tile pads the image
  edge exactly as the whole image is padded.

Networks with larger receptive fields (any U-Net) only approximate the whole-image
result near tile seams: take a larger overlap.

These functions take any callable on ``(N, C, H, W)`` tensors, wrapped with the prior or
not; ``docs/inference.md`` deblurs a folder of photos with them and
:mod:`sp_adapter.files.image_io`.

Example::

    from sp_adapter.inference import run_padded, run_tiled

    with torch.inference_mode():
        y = run_padded(net, x, multiple=8)                         # any H, W
        y = run_tiled(net, big, tile=512, overlap=64, multiple=8)  # bounded memory
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sp_adapter.errors import ImageInputError, OptionError, OptionTypeError

__all__ = ["crop_back", "pad_to_multiple", "run_padded", "run_tiled"]

Selector = int | Callable[[Any], torch.Tensor] | None

_MODES = ("reflect", "replicate", "constant", "circular")


def _check_4d(x: torch.Tensor, what: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ImageInputError(
            f"{what} must be a 4-D (N, C, H, W) tensor, got {shape}; add a batch axis "
            "with x.unsqueeze(0) for a single image"
        )


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom and right of ``x`` so that H and W are multiples of ``multiple``.

    Args:
        x: ``(N, C, H, W)`` tensor.
        multiple: the required divisor (e.g. 8 for three down-samplings).
        mode: ``"reflect"``, ``"replicate"``, ``"constant"`` (zeros) or ``"circular"``.
            Reflect needs the padding to be smaller than the side; for tiny images it
            falls back to replicate.

    Returns:
        The padded tensor (``x`` itself when no padding is needed) and the original
        ``(H, W)`` for :func:`crop_back`.

    Example::

        padded, size = pad_to_multiple(torch.rand(1, 3, 250, 333), 8)  # 1 x 3 x 256 x 336
        y = crop_back(net(padded), size)                                # 1 x 3 x 250 x 333
    """
    _check_4d(x)
    if multiple < 1:
        raise OptionError(f"multiple must be >= 1, got {multiple}")
    if mode not in _MODES:
        raise OptionError(f"mode must be one of {_MODES}, got {mode!r}")
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def crop_back(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left ``size = (H, W)`` of ``y``.

    Example::

        crop_back(torch.zeros(1, 3, 256, 336), (250, 333)).shape  # (1, 3, 250, 333)
    """
    h, w = size
    if y.dim() < 2 or y.shape[-2] < h or y.shape[-1] < w:
        raise ImageInputError(f"cannot crop a tensor of shape {tuple(y.shape)} back to {size}")
    return y[..., :h, :w]


def _select(out: Any, select: Selector) -> torch.Tensor:
    if select is None:
        if isinstance(out, torch.Tensor):
            return out
        raise OptionTypeError(
            f"fn returned a {type(out).__name__}, not a tensor: pass select= to pick the "
            "final image, e.g. select=-1 for MIMO-UNet (outputs coarse to fine) or "
            "select=0 for MPRNet (outputs last stage first)"
        )
    picked = select(out) if callable(select) else out[select]
    if not isinstance(picked, torch.Tensor):
        raise OptionTypeError(f"select picked a {type(picked).__name__}, expected a tensor")
    return picked


def run_padded(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    multiple: int = 8,
    select: Selector = None,
    mode: str = "reflect",
) -> torch.Tensor:
    """Pad ``x`` to a multiple, call ``fn``, pick its final image, crop it back.

    Args:
        fn: the network (or any callable) on ``(N, C, H', W')`` inputs.
        x: ``(N, C, H, W)`` input.
        multiple: the side divisor ``fn`` needs.
        select: how to get the final image from ``fn``'s output. ``None``: the output
            must be a tensor, used as is; a list or tuple output then raises, because
            networks disagree on where the final image is (MIMO-UNet returns it last,
            MPRNet first). An ``int`` indexes the output; a callable maps it to a tensor.
        mode: padding mode, see :func:`pad_to_multiple`.

    Returns:
        The selected output cropped to ``x``'s ``(H, W)``.

    Example::

        y = run_padded(unet, x, multiple=8)                 # a tensor output
        y = run_padded(mimo_unet, x, multiple=8, select=-1) # outputs coarse to fine
    """
    padded, size = pad_to_multiple(x, multiple, mode)
    out = _select(fn(padded), select)
    if out.dim() != 4 or out.shape[-2:] != padded.shape[-2:]:
        raise ImageInputError(
            f"fn output has shape {tuple(out.shape)}; expected (N, C, "
            f"{padded.shape[-2]}, {padded.shape[-1]}), the padded input's size"
        )
    return crop_back(out, size)


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile starts: 0, step, 2*step, ... until a tile reaches the end."""
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + step)
    return starts


def _ramp(n: int, inner_start: bool, inner_end: bool, overlap: int) -> torch.Tensor:
    """1-D blending weight of a tile side of ``n`` pixels (float64)."""
    weight = torch.ones(n, dtype=torch.float64)
    if overlap == 0:
        return weight
    dead = overlap // 4
    ramp_len = overlap - 2 * dead
    dist = torch.arange(n, dtype=torch.float64)
    rising = ((dist - dead + 1) / (ramp_len + 1)).clamp(0, 1)
    if inner_start:
        weight = torch.minimum(weight, rising)
    if inner_end:
        weight = torch.minimum(weight, rising.flip(0))
    return weight


def run_tiled(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    tile: int = 256,
    overlap: int = 32,
    multiple: int = 8,
    select: Selector = None,
    mode: str = "reflect",
) -> torch.Tensor:
    """Run ``fn`` on overlapping tiles of ``x`` and blend them into the full output.

    See the module docstring for the blending and what it guarantees. Every tile goes
    through :func:`run_padded`, so tiles at the bottom/right edge that are smaller than
    ``tile`` are padded to ``multiple``. Memory: one tile at a time through ``fn``, plus
    the full-size output and weight accumulators. Wrap the call in
    ``torch.inference_mode()`` when no gradients are needed.

    Args:
        fn: the network, as in :func:`run_padded`; must keep the spatial size.
        x: ``(N, C, H, W)`` input.
        tile: tile side, a multiple of ``multiple``.
        overlap: minimum overlap between neighbouring tiles, ``0 <= overlap < tile``.
        multiple: side divisor ``fn`` needs.
        select: picks the final image from ``fn``'s output, see :func:`run_padded`.
        mode: padding mode for tiles at the image edge, see :func:`pad_to_multiple`.

    Returns:
        ``(N, C_out, H, W)`` output, in the dtype and device of ``fn``'s output.

    Example::

        with torch.inference_mode():
            y = run_tiled(net, torch.rand(1, 3, 3000, 4000), tile=512, overlap=64)
    """
    _check_4d(x)
    if multiple < 1 or tile < multiple or tile % multiple:
        raise OptionError(f"tile ({tile}) must be a positive multiple of multiple ({multiple})")
    if not 0 <= overlap < tile:
        raise OptionError(f"overlap must satisfy 0 <= overlap < tile, got {overlap}")
    step = max(multiple, (tile - overlap) // multiple * multiple)
    height, width = x.shape[-2:]
    mean: torch.Tensor | None = None
    total: torch.Tensor | None = None
    for top in _starts(height, tile, step):
        bottom = min(top + tile, height)
        rows = _ramp(bottom - top, top > 0, bottom < height, overlap)
        for left in _starts(width, tile, step):
            right = min(left + tile, width)
            cols = _ramp(right - left, left > 0, right < width, overlap)
            out = run_padded(fn, x[..., top:bottom, left:right], multiple, select, mode)
            if mean is None or total is None:
                shape = (out.shape[0], out.shape[1], height, width)
                mean = torch.zeros(shape, dtype=out.dtype, device=out.device)
                total = torch.zeros((1, 1, height, width), dtype=torch.float64, device=out.device)
            weight = (rows[:, None] * cols[None, :]).to(out.device)[None, None]
            acc = total[..., top:bottom, left:right]
            new_total = acc + weight
            share = torch.where(weight > 0, weight / new_total.clamp_min(1e-300), 0.0)
            view = mean[..., top:bottom, left:right]
            blended = view + share.to(out.dtype) * (out - view)
            mean[..., top:bottom, left:right] = torch.where(weight > 0, blended, view)
            total[..., top:bottom, left:right] = new_total
    # tile > overlap (checked above) puts every pixel in a tile: a failure here is a bug
    assert mean is not None and total is not None and bool((total > 0).all()), (
        "tiling left pixels without any tile weight"
    )
    return mean
