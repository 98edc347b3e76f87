"""NAFNet (Chen et al., ECCV 2022) and its test-time local converter: twins of the official
models, in one file.

Written for this project from a reading of megvii-research/NAFNet,
``basicsr/models/archs/NAFNet_arch.py`` (``SimpleGate``, ``NAFBlock``, ``NAFNet``,
``NAFNetLocal``), ``arch_util.py`` (``LayerNorm2d``) and ``local_arch.py`` (``AvgPool2d``,
``Local_Base``). Module names, registration order and shapes are the official ones, so a
BasicSR checkpoint (``torch.load(p)["params"]``) loads with ``strict=True``.

Conventions:

* input: one ``B x C x H x W`` tensor in [0, 1] of any size: ``forward`` zero-pads the
  bottom and right to a multiple of ``2 ** len(encoders)`` (16 for the GoPro models) and
  crops the output back, as the official forward does;
* output: one tensor, ``ending(x) + input`` (global residual), not clamped.

Levels (width ``w``, four encoders): ``encoders.i`` outputs ``w * 2**i`` channels at
``1 / 2**i``; ``ups.i`` (1x1 conv + PixelShuffle) brings the decoder to the resolution of
``encoders.(3 - i)``, whose output the forward code ADDS right after ``ups.i``
(``x = up(x); x = x + enc_skip; x = decoder(x)``). None of these tensors is modified in
place. The level map is in ``sp_adapter/adapters/nafnet.py``.

:class:`NAFNetLocal` is what the published GoPro numbers use: the same network and state
dict, with the global average pool of every block's channel attention replaced by a local
average pool whose window is the training crop's pooled extent (the "test-time local
converter", Chu et al., arXiv 2112.04491), so statistics at test time match training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.errors import OptionError


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of an ``N x C x H x W`` tensor (eps 1e-6), with a
    per-channel scale ``weight`` and shift ``bias``."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them (NAFNet's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class NAFBlock(nn.Module):
    """Norm, 1x1 conv, depthwise 3x3, gate, simplified channel attention (``sca``: global
    average pool + 1x1 conv), 1x1 conv, scaled by ``beta``; then a gated 1x1 feed-forward
    scaled by ``gamma``. ``beta`` and ``gamma`` start at zero, so a new block is the
    identity."""

    def __init__(
        self, c: int, DW_Expand: int = 2, FFN_Expand: int = 2, drop_out_rate: float = 0.0
    ) -> None:
        super().__init__()
        dw = c * DW_Expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        ffn = FFN_Expand * c
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.dropout1(self.conv3(x * self.sca(x)))
        y = inp + x * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + self.dropout2(x) * self.gamma


def _blocks(c: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(c) for _ in range(n)))


class NAFNet(nn.Module):
    """NAFNet with the official constructor (``NAFNet(img_channel=3, width=64,
    middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1])`` is the GoPro
    width-64 model; ``width=32`` the width-32 one).

    Args:
        img_channel: image channels in and out.
        width: channels of the full-resolution level (doubled at each encoder).
        middle_blk_num: blocks at the coarsest level.
        enc_blk_nums: blocks per encoder level (also the number of levels).
        dec_blk_nums: blocks per decoder level (as many levels as ``enc_blk_nums``).
    """

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 16,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (),
        dec_blk_nums: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise OptionError(
                f"enc_blk_nums {list(enc_blk_nums)} and dec_blk_nums {list(dec_blk_nums)} "
                "must have one entry per level each"
            )
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        # registered in the official order (it fixes the state_dict key order)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = nn.Sequential()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(_blocks(chan, num))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks.extend(NAFBlock(chan) for _ in range(middle_blk_num))
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False),
                                          nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(_blocks(chan, num))
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        h, w = inp.shape[-2:]
        inp = self.check_image_size(inp)
        x = self.intro(inp)
        encs = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            encs.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, enc_skip in zip(self.decoders, self.ups, encs[::-1], strict=True):
            x = up(x)
            x = x + enc_skip
            x = decoder(x)
        x = self.ending(x) + inp
        return x[:, :, :h, :w]

    def check_image_size(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` zero-padded at the bottom and right to a multiple of :attr:`padder_size`."""
        h, w = x.shape[-2:]
        return F.pad(x, (0, -w % self.padder_size, 0, -h % self.padder_size))



class LocalAvgPool2d(nn.Module):
    """The mean over a ``kernel_size`` window around each pixel, edge-padded back to the
    input's size (a global mean when the window covers the whole input).

    Args:
        kernel_size: window ``(height, width)``.
        fast_imp: the official faster approximation (pools a strided subsample and
            upsamples the result; not equal to the exact mean).
        max_r: ``(rows, cols)`` subsampling limits of ``fast_imp``.
    """

    RATES = (5, 4, 3, 2, 1)

    def __init__(
        self, kernel_size: tuple[int, int], fast_imp: bool = False,
        max_r: tuple[int, int] = (5, 5),
    ) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.fast_imp = fast_imp
        self.max_r = tuple(max_r)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, fast_imp={self.fast_imp}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        k1, k2 = self.kernel_size
        if k1 >= h and k2 >= w:
            return F.adaptive_avg_pool2d(x, 1)
        if self.fast_imp:
            r1 = min(self.max_r[0], next(r for r in self.RATES if h % r == 0))
            r2 = min(self.max_r[1], next(r for r in self.RATES if w % r == 0))
            s = x[:, :, ::r1, ::r2].cumsum(dim=-1).cumsum(dim=-2)
            sh, sw = s.shape[-2:]
            k1, k2 = min(sh - 1, k1 // r1), min(sw - 1, k2 // r2)
            out = (s[:, :, :-k1, :-k2] - s[:, :, :-k1, k2:] - s[:, :, k1:, :-k2]
                   + s[:, :, k1:, k2:]) / (k1 * k2)
            out = F.interpolate(out, scale_factor=(r1, r2))
        else:
            # box sums from a summed-area table with a zero first row and column
            s = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))
            k1, k2 = min(h, k1), min(w, k2)
            out = (s[:, :, k1:, k2:] + s[:, :, :-k1, :-k2] - s[:, :, :-k1, k2:]
                   - s[:, :, k1:, :-k2]) / (k1 * k2)
        oh, ow = out.shape[-2:]
        pad = ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2)
        return F.pad(out, pad, mode="replicate")


class NAFNetLocal(NAFNet):
    """:class:`NAFNet` with the test-time local converter (the published GoPro models).

    Same constructor plus ``train_size`` (the training batch shape) and ``fast_imp``. Each
    block's ``sca.0`` global pool becomes a :class:`LocalAvgPool2d` whose window is 1.5x
    the block's feature size at ``train_size``, as ``Local_Base.convert`` computes it on a
    probe forward; here it is computed from the block's level, without a forward. The
    state dict is :class:`NAFNet`'s.
    """

    def __init__(
        self, *args, train_size: Sequence[int] = (1, 3, 256, 256), fast_imp: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.train_size = tuple(train_size)
        self.fast_imp = fast_imp
        n = len(self.encoders)
        levels = (
            [(enc, 2**i) for i, enc in enumerate(self.encoders)]
            + [(self.middle_blks, 2**n)]
            + [(dec, 2 ** (n - 1 - i)) for i, dec in enumerate(self.decoders)]
        )
        for blocks, reduction in levels:
            for block in blocks:
                block.sca[0] = self._local_pool(reduction)
        self.eval()

    def _local_pool(self, reduction: int) -> LocalAvgPool2d:
        train_h, train_w = self.train_size[-2:]
        base_h, base_w = int(train_h * 1.5), int(train_w * 1.5)
        # the block's feature size at the training size, after the forward's own padding
        feat_h = (train_h + -train_h % self.padder_size) // reduction
        feat_w = (train_w + -train_w % self.padder_size) // reduction
        kernel = (feat_h * base_h // train_h, feat_w * base_w // train_w)
        max_r = (max(1, 5 * feat_h // train_h), max(1, 5 * feat_w // train_w))
        return LocalAvgPool2d(kernel, self.fast_imp, max_r)
