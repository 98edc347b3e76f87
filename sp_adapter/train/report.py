"""Pictures and tables for reports: image grids, colour-mapped prior and difference maps,
Markdown.

No plotting library: images are assembled as arrays and written with Pillow (a
torchvision dependency); the colour map is a small built-in table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from sp_adapter.errors import OptionError

# A perceptually ordered dark-blue -> green -> yellow ramp (viridis-like), 9 anchors.
_COLORMAP_ANCHORS = np.array(
    [
        (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
        (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
    ],
    dtype=np.float64,
)


# A diverging ramp: blue (negative) -> white (zero) -> red (positive).
_DIVERGING_ANCHORS = np.array(
    [(33, 102, 172), (103, 169, 207), (209, 229, 240), (247, 247, 247), (253, 219, 199),
     (239, 138, 98), (178, 24, 43)],
    dtype=np.float64,
)


def _ramp(anchors: np.ndarray, values: np.ndarray) -> np.ndarray:
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    pos = v * (len(anchors) - 1)
    low = np.floor(pos).astype(int).clip(0, len(anchors) - 2)
    frac = (pos - low)[..., None]
    rgb = anchors[low] * (1 - frac) + anchors[low + 1] * frac
    return np.round(rgb).astype(np.uint8)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to ``(..., 3)`` uint8 RGB by linear interpolation
    between the anchors of a viridis-like ramp."""
    return _ramp(_COLORMAP_ANCHORS, values)


def diverging_colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [-1, 1] (any shape) to ``(..., 3)`` uint8 RGB: blue below zero, white
    at zero, red above."""
    return _ramp(_DIVERGING_ANCHORS, (np.asarray(values, dtype=np.float64) + 1.0) / 2.0)


def change_map(a: torch.Tensor, b: torch.Tensor, gain: float) -> np.ndarray:
    """Where two restorations of one image differ: ``|a - b|`` (``3 x H x W`` in [0, 1]),
    averaged over channels, times ``gain``, colour-mapped (dark: equal; yellow: a
    difference of ``1 / gain`` or more)."""
    diff = (a.detach().float() - b.detach().float()).abs().mean(0)
    return colormap((diff * gain).cpu().numpy())


def gain_map(base: torch.Tensor, sp: torch.Tensor, sharp: torch.Tensor,
             gain: float) -> np.ndarray:
    """Where one restoration is nearer the sharp image than another:
    ``|base - sharp| - |sp - sharp|`` (``3 x H x W`` in [0, 1]), averaged over channels,
    times ``gain``, colour-mapped (red: ``sp`` nearer; blue: ``base`` nearer; white:
    equal)."""
    sharp = sharp.detach().float()
    closer = (base.detach().float() - sharp).abs() - (sp.detach().float() - sharp).abs()
    return diverging_colormap((closer.mean(0) * gain).cpu().numpy())


def normalise(map2d: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (a constant map becomes 0.5)."""
    lo, hi = float(np.min(map2d)), float(np.max(map2d))
    if hi - lo < 1e-12:
        return np.full_like(map2d, 0.5, dtype=np.float64)
    return (map2d - lo) / (hi - lo)


def prior_map_images(priors: Sequence[torch.Tensor], size: tuple[int, int],
                     reductions: Sequence[int] | None = None,
                     margin: int = 0) -> list[np.ndarray]:
    """Fig. 6-style pictures of one image's priors: the mean over channels of each level
    ``f_pri^i`` (``C x h x w``), min-max normalised, colour-mapped, enlarged to ``size``
    (nearest neighbour, so the prior's own resolution stays visible).

    With ``reductions`` (image pixels per prior pixel of each level), each level is
    enlarged by its reduction and cropped to ``size``: the prior learner pads images
    that are no multiple of its reductions, and its last pixels cover that padding.
    ``margin`` (image pixels) leaves out each border, where the student's convolutions
    read zero padding: the maps show (and are normalised over) the valid region only."""
    out = []
    for i, level in enumerate(priors):
        mean = level.detach().float().mean(0, keepdim=True)[None]
        if reductions is None:
            big = torch.nn.functional.interpolate(mean, size=size, mode="nearest")[0, 0]
        else:
            r = int(reductions[i])
            big = torch.nn.functional.interpolate(mean, scale_factor=r, mode="nearest")[0, 0]
            big = big[: size[0], : size[1]]
        big = inner(big, margin)
        out.append(colormap(normalise(big.cpu().numpy())))
    return out


def inner(image, margin: int):
    """``image`` (``H x W [x C]`` array or tensor) less ``margin`` pixels at each border."""
    if margin <= 0:
        return image
    if margin * 2 >= min(image.shape[0], image.shape[1]):
        raise OptionError(f"a margin of {margin} px leaves nothing of a "
                         f"{image.shape[0]}x{image.shape[1]} image")
    return image[margin:-margin, margin:-margin]


def most_changed_window(a: torch.Tensor, b: torch.Tensor, side: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``side`` x ``side`` window where two restorations
    (``3 x H x W``) differ most (largest mean ``|a - b|``)."""
    diff = (a.detach().float() - b.detach().float()).abs().mean(0)[None, None]
    pooled = torch.nn.functional.avg_pool2d(diff, side, stride=1)[0, 0]
    index = int(torch.argmax(pooled))
    return index // pooled.shape[1], index % pooled.shape[1]


def zoom(panel: np.ndarray, y: int, x: int, side: int, factor: int) -> np.ndarray:
    """The ``side`` x ``side`` window at ``(y, x)`` of an ``H x W x 3`` picture, enlarged
    ``factor`` times (nearest neighbour: the pixels stay visible)."""
    window = panel[y : y + side, x : x + side]
    return np.ascontiguousarray(window.repeat(factor, axis=0).repeat(factor, axis=1))


def outline(panel: np.ndarray, y: int, x: int, side: int,
            colour: tuple[int, int, int] = (255, 0, 255)) -> np.ndarray:
    """A copy of ``panel`` with a one-pixel frame around the window at ``(y, x)``."""
    out = panel.copy()
    bottom, right = min(y + side, out.shape[0]) - 1, min(x + side, out.shape[1]) - 1
    out[y, x : right + 1] = out[bottom, x : right + 1] = colour
    out[y : bottom + 1, x] = out[y : bottom + 1, right] = colour
    return out


def stack(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Pictures (``H x W x 3`` uint8) one below the other, left-aligned, on white."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
              for r in rows]
    return np.concatenate(padded, axis=0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``3 x H x W`` in [0, 1] -> ``H x W x 3`` uint8 (rounded, as PNGs are scored)."""
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy()
    return np.ascontiguousarray(rearrange(array, "c h w -> h w c"))


def grid(panels: Sequence[np.ndarray], labels: Sequence[str] = (), gap: int = 4) -> np.ndarray:
    """Panels (``H x W x 3`` uint8, same height) side by side on white, each with its
    label above it when given."""
    if not panels:
        raise OptionError("grid needs at least one panel")
    h = max(p.shape[0] for p in panels)
    label_h = 14 if labels else 0
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) + 1)
    canvas = np.full((h + label_h + 2 * gap, width, 3), 255, dtype=np.uint8)
    x = gap
    for panel in panels:
        canvas[label_h + gap : label_h + gap + panel.shape[0], x : x + panel.shape[1]] = panel
        x += panel.shape[1] + gap
    if labels:
        canvas = _draw_labels(canvas, panels, labels, gap)
    return canvas


def _draw_labels(canvas: np.ndarray, panels: Sequence[np.ndarray], labels: Sequence[str],
                 gap: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    x = gap
    for panel, label in zip(panels, labels, strict=False):
        draw.text((x + 1, 1), label, fill=(0, 0, 0))
        x += panel.shape[1] + gap
    return np.asarray(image)


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``H x W x 3`` uint8 array as PNG, atomically (folders created)."""
    from PIL import Image

    from sp_adapter.files.atomic import write_atomic

    picture = Image.fromarray(np.ascontiguousarray(array))
    return write_atomic(path, lambda handle: picture.save(handle, format="PNG"))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table (first column left-aligned, others right-aligned)."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def safe_name(key: str) -> str:
    """A file-name-safe version of a sample key."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)
