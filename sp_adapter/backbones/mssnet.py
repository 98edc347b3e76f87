"""MSSNet (Kim et al., ECCVW 2022): a twin of the official ``DeblurNet``.

Written for this project from a reading of the official ``model/MSSNet.py`` (training
class, six outputs) and ``model/MSSNet_eval.py`` (same parameters, final output only) of
kky7/MSSNet. Module names, registration order, shapes and the shared PReLU are the
official ones, so ``DeblurNet().load_state_dict(ckpt["model_state_dict"], strict=True)``
works, and the forward computes what the official training forward computes.

Structure (defaults ``wf=54, scale=42, vscale=42``; level widths ``wf``,
``wf + scale``, ``wf + scale + vscale`` = 54 / 96 / 138):

* scale 1 (1/4 resolution): the input is resized by 0.5 (bilinear, ``align_corners=True``)
  and pixel-unshuffled by 2 (12 channels); ``shallow_feat1`` -> ``E1_1`` -> ``D1_1``
  (levels at 1/4, 1/8, 1/16) -> ``tail1_1`` (conv to 12 ch + pixel shuffle) + the half-size
  input = ``res1_1`` (H/2 x W/2).
* scale 2 (1/2): pixel-unshuffled input -> ``shallow_feat2``, fused (``fusion12``) with
  ``up_scale1_feat(D1_1 level 1)``; two stages ``E2_1/D2_1`` and ``E2_2/D2_2`` (levels at
  1/2, 1/4, 1/8); ``E2_1`` gets the x2-upsampled ``E1_1``/``D1_1`` features as cross-stage
  inputs; ``E2_2`` takes ``D2_1`` level 1 as its input and ``E2_1``/``D2_1`` as cross-stage
  inputs. ``tail2_1``/``tail2_2`` (conv + pixel shuffle) + input = ``res2_1``/``res2_2``.
* scale 3 (full): ``shallow_feat3`` fused (``fusion23``) with ``up_scale2_feat(D2_2
  level 1)``; three stages ``E3_k/D3_k`` (levels at 1, 1/2, 1/4) chained the same way;
  ``tail3_k`` (conv) + input = ``res3_k``.
* every decoder joins its encoder skip by ADDITION in ``up32`` and ``up21`` (the
  :class:`~sp_adapter.backbones.mprnet.SkipUpSample` block of MPRNet).
* one PReLU instance is shared by every residual block: 87 ``state_dict`` keys, one
  tensor (328 entries, 242 unique tensors).

Differences from the official code that do not change any value: pixel unshuffle uses
:func:`torch.nn.functional.pixel_unshuffle` (the official grouped convolution with a 0/1
kernel puts input pixel ``(2i + dy, 2j + dx)`` of channel ``c`` in output channel
``4c + 2dy + dx``, which is the same layout); residual additions are out of place (the
official ``ResBlock`` adds into its ``body`` output in place), so every module output may
be captured by a forward hook without a copy; the input size is checked up front.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.backbones.mprnet import (
    DownSample,
    SkipUpSample,
    add_csff_convs,
    check_size,
    conv,
    decode_three_levels,
    encode_three_levels,
)
from sp_adapter.errors import OptionError

SIZE_MULTIPLE = 16
"""MSSNet input height and width must be multiples of this (scale 1 reaches H/16)."""


class ResBlock(nn.Module):
    """``x + conv(act(conv(x)))``; mirrors the official MSSNet ``ResBlock``.

    ``act`` is the network-wide shared PReLU at ``body.1``.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool, act: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(channels, channels, kernel_size, bias=bias),
            act,
            conv(channels, channels, kernel_size, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def res_stack(n: int, channels: int, kernel_size: int, bias: bool, act: nn.Module) -> nn.Sequential:
    """``n`` residual blocks in a row (one U-Net level)."""
    return nn.Sequential(*(ResBlock(channels, kernel_size, bias, act) for _ in range(n)))


def level_widths(wf: int, scale: int, vscale: int) -> tuple[int, int, int]:
    """Channels of the three U-Net levels: ``wf``, ``wf + scale``, ``wf + scale + vscale``."""
    return wf, wf + scale, wf + scale + vscale


class Encoder(nn.Module):
    """Three-level encoder of one MSSNet stage; mirrors the official MSSNet ``Encoder``.

    Levels of 2 :class:`ResBlock` joined by :class:`DownSample` (``down12``: +``scale``
    channels, ``down23``: +``vscale``). With ``csff=True`` the given encoder and decoder
    features of the previous stage are added after each level through 1x1 convs
    ``csff_enc1..3`` / ``csff_dec1..3``. Returns ``[enc1, enc2, enc3]``.
    """

    def __init__(
        self,
        wf: int,
        scale: int,
        vscale: int,
        kernel_size: int,
        act: nn.Module,
        bias: bool,
        csff: bool,
    ) -> None:
        super().__init__()
        chans = level_widths(wf, scale, vscale)
        self.encoder_level1 = res_stack(2, chans[0], kernel_size, bias, act)
        self.encoder_level2 = res_stack(2, chans[1], kernel_size, bias, act)
        self.encoder_level3 = res_stack(2, chans[2], kernel_size, bias, act)
        self.down12 = DownSample(chans[0], scale)
        self.down23 = DownSample(chans[1], vscale)
        self.csff = csff
        if csff:
            add_csff_convs(self, chans, bias)

    def forward(
        self,
        x: torch.Tensor,
        encoder_outs: Sequence[torch.Tensor] | None = None,
        decoder_outs: Sequence[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        return encode_three_levels(self, x, encoder_outs, decoder_outs)


class Decoder(nn.Module):
    """Three-level decoder of one MSSNet stage; mirrors the official MSSNet ``Decoder``.

    ``dec3 = decoder_level3(enc3)``; ``dec2 = decoder_level2(up32(dec3, skip_attn2(enc2)))``;
    ``dec1 = decoder_level1(up21(dec2, skip_attn1(enc1)))``; returns ``[dec1, dec2, dec3]``.
    ``skip_attn1/2`` are plain :class:`ResBlock` here. Registration order: levels 1-3,
    ``skip_attn1/2``, then ``up32`` BEFORE ``up21`` (unlike MPRNet).
    """

    def __init__(
        self,
        wf: int,
        scale: int,
        vscale: int,
        kernel_size: int,
        act: nn.Module,
        bias: bool,
    ) -> None:
        super().__init__()
        chans = level_widths(wf, scale, vscale)
        self.decoder_level1 = res_stack(2, chans[0], kernel_size, bias, act)
        self.decoder_level2 = res_stack(2, chans[1], kernel_size, bias, act)
        self.decoder_level3 = res_stack(2, chans[2], kernel_size, bias, act)
        self.skip_attn1 = ResBlock(chans[0], kernel_size, bias, act)
        self.skip_attn2 = ResBlock(chans[1], kernel_size, bias, act)
        self.up32 = SkipUpSample(chans[1], vscale)
        self.up21 = SkipUpSample(chans[0], scale)

    def forward(self, outs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return decode_three_levels(self, outs)


class PairUpsample(nn.Module):
    """Bilinear x2 of every tensor of two lists; mirrors the official ``EDUp`` (no weights).

    Brings a coarser scale's encoder and decoder features to the next scale, where they
    are the cross-stage inputs of that scale's first encoder.
    """

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(
        self, elist: Sequence[torch.Tensor], dlist: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [self.up(f) for f in elist], [self.up(f) for f in dlist]


class ScaleUpSample(nn.Module):
    """Bilinear x2 then 1x1 conv (same width); mirrors the official ``ScaleUpSample``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scaleUp = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaleUp(x)


class TailShuffle(nn.Module):
    """Conv to ``4 x`` image channels, then pixel shuffle by 2; mirrors ``Tail_shuffle``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, bias: bool) -> None:
        super().__init__()
        self.tail = conv(in_ch, out_ch, kernel_size, bias=bias)
        self.pixelshuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pixelshuffle(self.tail(x))


def shallow_block(
    in_ch: int, wf: int, kernel_size: int, bias: bool, act: nn.Module
) -> nn.Sequential:
    """Shallow feature extractor of a scale: conv ``in_ch -> wf`` then one ResBlock."""
    return nn.Sequential(
        conv(in_ch, wf, kernel_size, bias=bias), ResBlock(wf, kernel_size, bias, act)
    )


class DeblurNet(nn.Module):
    """MSSNet; mirrors the official ``DeblurNet`` of ``model/MSSNet.py`` (see module doc).

    Args follow the official constructor. ``reduction`` is accepted and unused (as in the
    official code); ``in_c``/``out_c`` (ignored there, which hard-codes 3) set the image
    channels here and must be equal, since every output adds the input image.

    Input: ``B x in_c x H x W`` in [0, 1], H and W multiples of 16 (no padding).
    Output: list of 6 ``[res1_1 (H/2 x W/2), res2_1, res2_2, res3_1, res3_2, res3_3]``, the
    last one the final restoration (final LAST, unlike MPRNet).
    """

    size_multiple = SIZE_MULTIPLE

    def __init__(
        self,
        in_c: int = 3,
        out_c: int = 3,
        wf: int = 54,
        scale: int = 42,
        vscale: int = 42,
        kernel_size: int = 3,
        reduction: int = 4,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if in_c != out_c:
            raise OptionError(
                f"MSSNet adds its input image to every output, so in_c must equal out_c; "
                f"got in_c={in_c}, out_c={out_c}"
            )
        del reduction  # unused by the architecture, kept for the official signature
        act = nn.PReLU()
        unet = (wf, scale, vscale, kernel_size, act, bias)
        ps_ch = 4 * in_c  # channels after pixel unshuffle by 2
        self.pixel_unshuffle = nn.PixelUnshuffle(2)
        self.ED_up = PairUpsample()
        # scale 1
        self.shallow_feat1 = shallow_block(ps_ch, wf, kernel_size, bias, act)
        self.E1_1 = Encoder(*unet, csff=False)
        self.D1_1 = Decoder(*unet)
        self.tail1_1 = TailShuffle(wf, 4 * out_c, kernel_size, bias)
        # scale 2
        self.shallow_feat2 = shallow_block(ps_ch, wf, kernel_size, bias, act)
        self.up_scale1_feat = ScaleUpSample(wf)
        self.fusion12 = conv(2 * wf, wf, kernel_size, bias=bias)
        self.E2_1 = Encoder(*unet, csff=True)
        self.D2_1 = Decoder(*unet)
        self.E2_2 = Encoder(*unet, csff=True)
        self.D2_2 = Decoder(*unet)
        self.tail2_1 = TailShuffle(wf, 4 * out_c, kernel_size, bias)
        self.tail2_2 = TailShuffle(wf, 4 * out_c, kernel_size, bias)
        # scale 3
        self.shallow_feat3 = shallow_block(in_c, wf, kernel_size, bias, act)
        self.up_scale2_feat = ScaleUpSample(wf)
        self.fusion23 = conv(2 * wf, wf, kernel_size, bias=bias)
        self.E3_1 = Encoder(*unet, csff=True)
        self.D3_1 = Decoder(*unet)
        self.E3_2 = Encoder(*unet, csff=True)
        self.D3_2 = Decoder(*unet)
        self.E3_3 = Encoder(*unet, csff=True)
        self.D3_3 = Decoder(*unet)
        self.tail3_1 = conv(wf, out_c, kernel_size, bias=bias)
        self.tail3_2 = conv(wf, out_c, kernel_size, bias=bias)
        self.tail3_3 = conv(wf, out_c, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_size(x, SIZE_MULTIPLE, "MSSNet")
        half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)

        # Scale 1 (features at 1/4): one encoder-decoder.
        e1_1 = self.E1_1(self.shallow_feat1(self.pixel_unshuffle(half)))
        d1_1 = self.D1_1(e1_1)
        res1_1 = self.tail1_1(d1_1[0]) + half

        # Scale 2 (features at 1/2): two stages.
        shallow2 = self.shallow_feat2(self.pixel_unshuffle(x))
        fused2 = self.fusion12(torch.cat([shallow2, self.up_scale1_feat(d1_1[0])], dim=1))
        e_up, d_up = self.ED_up(e1_1, d1_1)
        e2_1 = self.E2_1(fused2, e_up, d_up)
        d2_1 = self.D2_1(e2_1)
        e2_2 = self.E2_2(d2_1[0], e2_1, d2_1)
        d2_2 = self.D2_2(e2_2)
        res2_1 = self.tail2_1(d2_1[0]) + x
        res2_2 = self.tail2_2(d2_2[0]) + x

        # Scale 3 (full resolution): three stages.
        shallow3 = self.shallow_feat3(x)
        fused3 = self.fusion23(torch.cat([shallow3, self.up_scale2_feat(d2_2[0])], dim=1))
        e_up, d_up = self.ED_up(e2_2, d2_2)
        e3_1 = self.E3_1(fused3, e_up, d_up)
        d3_1 = self.D3_1(e3_1)
        e3_2 = self.E3_2(d3_1[0], e3_1, d3_1)
        d3_2 = self.D3_2(e3_2)
        e3_3 = self.E3_3(d3_2[0], e3_2, d3_2)
        d3_3 = self.D3_3(e3_3)
        res3_1 = self.tail3_1(d3_1[0]) + x
        res3_2 = self.tail3_2(d3_2[0]) + x
        res3_3 = self.tail3_3(d3_3[0]) + x
        return [res1_1, res2_1, res2_2, res3_1, res3_2, res3_3]


WIDTHS = {"small": (20, 40, 40), "base": (54, 42, 42), "large": (80, 50, 50)}
"""``(wf, scale, vscale)`` of the published MSSNet sizes (README of the official repo)."""


def mssnet(size: str = "base", **kwargs: int | bool) -> DeblurNet:
    """MSSNet of a published size: ``"small"`` (20, 40, 40), ``"base"``, ``"large"``."""
    if size not in WIDTHS:
        raise OptionError(f"unknown MSSNet size {size!r}; choose one of {sorted(WIDTHS)}")
    wf, scale, vscale = WIDTHS[size]
    return DeblurNet(wf=wf, scale=scale, vscale=vscale, **kwargs)  # type: ignore[arg-type]


def mssnet_small(**kwargs: int | bool) -> DeblurNet:
    """MSSNet-small: ``DeblurNet(wf=20, scale=40, vscale=40)``, 6,756,161 parameters."""
    return mssnet("small", **kwargs)


def mssnet_base(**kwargs: int | bool) -> DeblurNet:
    """MSSNet (base): ``DeblurNet(wf=54, scale=42, vscale=42)``, 15,614,497 parameters."""
    return mssnet("base", **kwargs)


def mssnet_large(**kwargs: int | bool) -> DeblurNet:
    """MSSNet-large: ``DeblurNet(wf=80, scale=50, vscale=50)``, 28,182,041 parameters."""
    return mssnet("large", **kwargs)
