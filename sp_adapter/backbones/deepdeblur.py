"""DeepDeblur multi-scale ResNet (Nah et al., CVPR 2017): a twin of the official PyTorch model.

Written for this project from a reading of SeungjunNah/DeepDeblur-PyTorch:
``src/model/MSResNet.py`` (classes ``MSResNet`` and ``conv_end``), ``src/model/ResNet.py``
(``ResNet``) and ``src/model/common.py`` (``default_conv``, ``ResBlock``), plus the data
pipeline of ``src/data/dataset.py`` / ``src/data/common.py`` for :func:`gaussian_pyramid`.
Module names, registration order, shapes and parameter count are the official ones, so
an official checkpoint (``torch.load(p)["G"]``) loads with ``strict=True``.

Constructor: the official ``MSResNet(args)`` reads ``args.rgb_range``, ``args.n_resblocks``,
``args.n_feats``, ``args.kernel_size`` and ``args.n_scales``; ours takes them as keyword
arguments with the official defaults (``src/option.py``): ``rgb_range=255,
n_resblocks=19, n_feats=64, kernel_size=5, n_scales=3``. :meth:`MSResNet.from_args`
accepts an ``args``-like object.

Forward, per scale ``s`` from coarse to fine (``s = 2`` is 1/4, ``1`` is 1/2, ``0`` full):
``body_models.s`` is a plain ResNet whose ``body`` sequential holds the head conv
(``body.0``: 3 -> 64 channels at the coarsest scale, 6 -> 64 at the finer ones), 19
ResBlocks (``body.1`` .. ``body.19``, 64 channels, two 5x5 convs each) and the tail conv
(``body.20``, 64 -> 3). For ``s > 0``, ``conv_end_models.s`` (5x5 conv 3 -> 12, then
``PixelShuffle(2)``) up-samples that scale's result, and the next finer scale's input is
``cat([input_pyramid[s-1] - mean, up-sampled result])`` (6 channels, input first).
``conv_end_models.0`` is ``None`` (no entry in the ``state_dict``), as officially.

Conventions:

* input: a LIST ``[full, 1/2, 1/4]`` of ``B x 3 x H x W`` tensors in [0, ``rgb_range``]
  (a Gaussian pyramid, see :func:`gaussian_pyramid` / :func:`to_input_pyramid`); each
  level exactly twice the size of the next, so H and W are multiples of 4 (checked up
  front with a clear ``ValueError``);
* the model subtracts ``mean = rgb_range / 2`` from every input and adds it back to every
  output; there is NO global residual to the input image: an output is ``tail + mean``;
* output: a list ``[full, 1/2, 1/4]`` in [0, ``rgb_range``] scale (not clamped);
  ``out[0]`` is the final image (``out[0] / rgb_range`` for [0, 1]).

Differences from the official code that do not change any value:

* the official forward REPLACES the entries of the caller's input list with the
  mean-subtracted tensors (the tensors themselves are not modified); ours leaves the
  caller's list untouched;
* the official ResBlock adds its input in place into the output of its ``body``; ours adds
  out of place. So the only module outputs modified in place here are the first conv of
  each ResBlock (``body_models.s.body.k.body.0``, overwritten by the in-place ReLU, as
  officially). Safe to capture with a forward hook without a copy: ``body_models.s``,
  ``body_models.s.body.k`` (head, ResBlocks, tail), ``conv_end_models.s`` and the
  ResBlocks' ``body`` / ``body.2`` (the latter two not in the official model);
* the input list is checked up front (``TypeError`` for a single tensor, ``ValueError``
  for wrong length or sizes) where the official model fails later or silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.errors import ImageInputError, ImageTypeError, OptionError

SIZE_MULTIPLE = 4
RGB_RANGE = 255
"""The official default pixel range ``[0, rgb_range]`` of inputs and outputs."""
"""With 3 scales, input height and width must be multiples of this (``2 ** (n_scales-1)``)."""


def default_conv(
    in_channels: int, out_channels: int, kernel_size: int, bias: bool = True
) -> nn.Conv2d:
    """A stride-1 convolution with 'same' zero padding (official ``common.default_conv``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with ``body = [conv, ReLU(inplace), conv]`` (official
    ``common.ResBlock`` without norm). The residual addition is out of place here."""

    def __init__(self, n_feats: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats, kernel_size, bias=bias),
            nn.ReLU(inplace=True),
            default_conv(n_feats, n_feats, kernel_size, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResNet(nn.Module):
    """Head conv, ``n_resblocks`` ResBlocks, tail conv, all in ``body`` (official ``ResNet``).

    No global residual and no normalisation: ``forward(x) = body(x)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_feats: int = 64,
        kernel_size: int = 5,
        n_resblocks: int = 19,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_feats = n_feats
        self.kernel_size = kernel_size
        self.n_resblocks = n_resblocks
        self.body = nn.Sequential(
            default_conv(in_channels, n_feats, kernel_size),
            *(ResBlock(n_feats, kernel_size) for _ in range(n_resblocks)),
            default_conv(n_feats, out_channels, kernel_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ConvEnd(nn.Module):
    """Up-sampling path between scales (official ``conv_end``): a conv to
    ``out_channels = in_channels * ratio**2`` channels, then ``PixelShuffle(ratio)``,
    in ``uppath``. The official model builds it with its default 5x5 kernel whatever
    ``kernel_size`` the ResNets use."""

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, kernel_size: int = 5, ratio: int = 2
    ) -> None:
        super().__init__()
        self.uppath = nn.Sequential(
            default_conv(in_channels, out_channels, kernel_size), nn.PixelShuffle(ratio)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.uppath(x)


class MSResNet(nn.Module):
    """The multi-scale deblurring network (official ``MSResNet``): 11,721,321 parameters.

    ``body_models`` holds one :class:`ResNet` per scale, index 0 = full resolution (6 input
    channels), index ``n_scales - 1`` = coarsest (3 input channels); ``conv_end_models``
    holds ``None`` at index 0 and a :class:`ConvEnd` (3 -> 12 channels, x2) at 1 .. n-1.
    See the module docstring for the forward and the conventions.
    """

    def __init__(
        self,
        rgb_range: float = RGB_RANGE,
        n_resblocks: int = 19,
        n_feats: int = 64,
        kernel_size: int = 5,
        n_scales: int = 3,
    ) -> None:
        super().__init__()
        if n_scales < 1:
            raise OptionError(f"n_scales must be >= 1, got {n_scales}")
        self.rgb_range = rgb_range
        self.mean = rgb_range / 2
        self.n_resblocks = n_resblocks
        self.n_feats = n_feats
        self.kernel_size = kernel_size
        self.n_scales = n_scales

        def resnet(in_channels: int) -> ResNet:
            return ResNet(in_channels, 3, n_feats, kernel_size, n_resblocks)

        # finer scales take the image plus the up-sampled coarser result (3 + 3 channels)
        self.body_models = nn.ModuleList([resnet(6) for _ in range(n_scales - 1)] + [resnet(3)])
        self.conv_end_models = nn.ModuleList(
            [None] + [ConvEnd(3, 12) for _ in range(n_scales - 1)]  # type: ignore[list-item]
        )

    @classmethod
    def from_args(cls, args: Any) -> MSResNet:
        """Build from an object with the official option names (like the official
        constructor): ``rgb_range``, ``n_resblocks``, ``n_feats``, ``kernel_size``,
        ``n_scales``."""
        return cls(
            rgb_range=args.rgb_range,
            n_resblocks=args.n_resblocks,
            n_feats=args.n_feats,
            kernel_size=args.kernel_size,
            n_scales=args.n_scales,
        )

    def _check_pyramid(self, input_pyramid: Sequence[torch.Tensor]) -> None:
        if isinstance(input_pyramid, torch.Tensor):
            raise ImageTypeError(
                "MSResNet expects a list [full, 1/2, ...] of image tensors in "
                f"[0, {self.rgb_range}], not a single tensor; build it with "
                "sp_adapter.backbones.deepdeblur.to_input_pyramid(x01)"
            )
        if len(input_pyramid) != self.n_scales:
            raise ImageInputError(
                f"MSResNet expects {self.n_scales} input scales, got {len(input_pyramid)}"
            )
        for s, level in enumerate(input_pyramid):
            if level.dim() != 4 or level.shape[1] != 3:
                raise ImageInputError(
                    f"MSResNet input scale {s} must be B x 3 x H x W, got {tuple(level.shape)}"
                )
        for s in range(1, self.n_scales):
            fine, coarse = input_pyramid[s - 1].shape[-2:], input_pyramid[s].shape[-2:]
            if fine[0] != 2 * coarse[0] or fine[1] != 2 * coarse[1]:
                raise ImageInputError(
                    f"MSResNet input scale {s - 1} ({fine[0]}x{fine[1]}) must be exactly twice "
                    f"scale {s} ({coarse[0]}x{coarse[1]}); the full-resolution size must be "
                    f"a multiple of {2 ** (self.n_scales - 1)} (pad the image)"
                )

    def forward(self, input_pyramid: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``input_pyramid``: ``[full, 1/2, ...]`` in [0, rgb_range]. Returns the restored
        ``[full, 1/2, ...]`` in the same scale; the caller's list is not modified."""
        self._check_pyramid(input_pyramid)
        centred = [level - self.mean for level in input_pyramid]
        outputs: list[torch.Tensor] = [torch.empty(0)] * self.n_scales
        input_s = centred[-1]
        for s in range(self.n_scales - 1, -1, -1):  # coarse to fine
            outputs[s] = self.body_models[s](input_s)
            if s > 0:
                up = self.conv_end_models[s](outputs[s])
                input_s = torch.cat((centred[s - 1], up), dim=1)
        return [out + self.mean for out in outputs]


def _gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius ``int(truncate * sigma + 0.5)`` (as SciPy's
    ``gaussian_filter``, which scikit-image's pyramid uses), float64."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices that extend ``0 .. n-1`` by ``radius`` on both sides with the half-sample
    symmetric rule (``... b a | a b ... y z | z y ...``, SciPy's ``mode='reflect'``)."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel, half-sample symmetric borders."""
    kernel = _gaussian_kernel1d(sigma).to(device=x.device, dtype=x.dtype)
    radius = kernel.numel() // 2
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    y = y.index_select(2, _symmetric_index(h, radius, x.device))
    y = F.conv2d(y, kernel.view(1, 1, -1, 1))
    y = y.index_select(3, _symmetric_index(w, radius, x.device))
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    return y.reshape(b, c, h, w)


def gaussian_pyramid(
    x: torch.Tensor, n_scales: int = 3, downscale: int = 2, sigma: float | None = None
) -> list[torch.Tensor]:
    """The Gaussian pyramid of the official DeepDeblur data pipeline, in PyTorch.

    The official ``Dataset.__getitem__`` casts the uint8 image to float32 (values 0..255)
    and calls scikit-image's ``pyramid_gaussian(img, n_scales - 1, multichannel=True)``
    with its defaults (``downscale=2``, ``sigma=None`` i.e. ``2 * downscale / 6 = 2/3``,
    ``order=1``, ``mode='reflect'``, ``preserve_range=False``, which leaves float input
    unscaled). Level 0 is the image itself; each next level is computed from the previous
    one: a Gaussian blur (``sigma``, truncated at 4 sigma, i.e. a 7-tap kernel for 2/3;
    half-sample symmetric borders), then a bilinear resize without anti-aliasing to
    ``ceil(H / downscale) x ceil(W / downscale)`` with pixel-centre alignment (for even
    sizes: the mean of each 2x2 block). This function does the same on a
    ``B x C x H x W`` tensor of any value range (it is linear) and returns
    ``[full, 1/2, ...]``.
    """
    if x.dim() != 4:
        raise ImageInputError(f"expected a B x C x H x W tensor, got shape {tuple(x.shape)}")
    if sigma is None:
        sigma = 2 * downscale / 6.0
    levels = [x]
    for _ in range(n_scales - 1):
        prev = levels[-1]
        h, w = prev.shape[-2:]
        size = (math.ceil(h / downscale), math.ceil(w / downscale))
        blurred = _gaussian_blur(prev, sigma)
        levels.append(F.interpolate(blurred, size=size, mode="bilinear", align_corners=False))
    return levels


def to_input_pyramid(
    x: torch.Tensor, n_scales: int = 3, rgb_range: float = RGB_RANGE
) -> list[torch.Tensor]:
    """MSResNet input from a ``B x 3 x H x W`` image in [0, 1]: ``gaussian_pyramid(x *
    rgb_range)``. H and W must be multiples of ``2 ** (n_scales - 1)`` for the model (the
    official demo pads the image by edge replication at the bottom/right; its test set
    sizes are already multiples)."""
    return gaussian_pyramid(x * rgb_range, n_scales)
