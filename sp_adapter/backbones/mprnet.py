"""MPRNet (Zamir et al., CVPR 2021), deblurring configuration: a twin of the official model.

Written for this project from a reading of the official ``Deblurring/MPRNet.py`` of
swz30/MPRNet. The module tree, attribute names, registration order, shapes and parameter
sharing are the official ones, so ``MPRNet().load_state_dict(official, strict=True)``
works (after removing a ``module.`` prefix: ``sp_adapter.load_backbone_checkpoint``
does it), and the forward computes what the official forward computes.

Structure (defaults ``n_feat=96, scale_unetfeats=48, scale_orsnetfeats=32``):

* stage 1 (``shallow_feat1``, ``stage1_encoder``, ``stage1_decoder``, ``sam12``) runs
  PATCH BY PATCH: the encoder once on each image quadrant in the order top-left,
  top-right, bottom-left, bottom-right; the quadrant features are put side by side and
  the decoder runs on the top half, then on the bottom half; ``sam12`` likewise.
* stage 2 (``shallow_feat2``, ``concat12``, ``stage2_encoder``) runs on the top half,
  then on the bottom half; ``stage2_decoder`` and ``sam23`` run once on the whole image.
* stage 3 (``shallow_feat3``, ``concat23``, ``stage3_orsnet``, ``tail``) stays at full
  resolution.
* U-Net levels: 96 / 144 / 192 channels at scales 1, 1/2, 1/4 of the patch (or image) the
  call sees. The decoder joins its encoder skip by ADDITION in ``up32`` (level 2) and
  ``up21`` (level 1): ``upK(dec, skip_attnK(enc)) = conv1x1(bilinear_x2(dec)) + skip``.
* one :class:`torch.nn.PReLU` instance is shared by every CAB of the network (55
  ``state_dict`` keys, one tensor): 316 entries, 262 unique tensors, 20,127,073
  parameters.

Differences from the official code that do not change any value: additions are written
out of place (the official code adds residuals in place into the output of
``...CA`` and ``stage3_orsnet.orbK.body``, and its channel-attention ReLU is in place), so
here every module output stays as returned and may be captured by a forward hook without
a copy; and the input size is checked up front (see :func:`check_size`), where the
official model fails later with a shape error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from sp_adapter.errors import ImageInputError, OptionError

SIZE_MULTIPLE = 8
"""MPRNet input height and width must be multiples of this (the official test pads)."""


def conv(in_ch: int, out_ch: int, kernel_size: int, bias: bool = False) -> nn.Conv2d:
    """A stride-1 convolution with 'same' zero padding (odd ``kernel_size``)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias)


def check_size(x: torch.Tensor, multiple: int, model: str) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is ``B x C x H x W`` with H, W multiples."""
    if x.dim() != 4:
        raise ImageInputError(f"{model} expects a B x C x H x W tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        ph, pw = -h % multiple, -w % multiple
        raise ImageInputError(
            f"{model} needs input height and width that are multiples of {multiple}; got "
            f"{h}x{w}. Pad the image (e.g. reflect-pad by {ph} rows and {pw} columns to "
            f"{h + ph}x{w + pw}) and crop the output."
        )


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention; mirrors the official ``CALayer``.

    ``x * sigmoid(conv1x1(relu(conv1x1(mean_hw(x)))))`` with ``channels // reduction``
    hidden channels. Submodules ``avg_pool`` and ``conv_du`` (0: conv, 1: ReLU,
    2: conv, 3: Sigmoid) as in the official model.
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        hidden = channels // reduction
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=bias),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class CAB(nn.Module):
    """Channel attention block; mirrors the official ``CAB``.

    ``x + CA(conv(act(conv(x))))``. ``act`` is the network-wide shared PReLU; it is put
    in ``body`` at index 1, so its weight appears in this block's ``state_dict`` as
    ``body.1.weight``. ``CA`` is registered before ``body`` (official key order).
    """

    def __init__(
        self, channels: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module
    ) -> None:
        super().__init__()
        self.CA = ChannelAttention(channels, reduction, bias=bias)
        self.body = nn.Sequential(
            conv(channels, channels, kernel_size, bias=bias),
            act,
            conv(channels, channels, kernel_size, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


def cab_stack(
    n: int, channels: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module
) -> nn.Sequential:
    """``n`` CABs in a row (one U-Net level)."""
    return nn.Sequential(*(CAB(channels, kernel_size, reduction, bias, act) for _ in range(n)))


class SAM(nn.Module):
    """Supervised attention module; mirrors the official ``SAM``.

    Given features ``x`` and the stage's input image, returns ``(features, image)`` with
    ``image = conv2(x) + x_img`` (the stage's restored image) and
    ``features = x + conv1(x) * sigmoid(conv3(image))`` (passed to the next stage).
    """

    def __init__(self, n_feat: int, kernel_size: int, bias: bool, img_ch: int = 3) -> None:
        super().__init__()
        self.conv1 = conv(n_feat, n_feat, kernel_size, bias=bias)
        self.conv2 = conv(n_feat, img_ch, kernel_size, bias=bias)
        self.conv3 = conv(img_ch, n_feat, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor, x_img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.conv2(x) + x_img
        gate = torch.sigmoid(self.conv3(img))
        return self.conv1(x) * gate + x, img


class DownSample(nn.Module):
    """Bilinear x0.5 then 1x1 conv ``in_ch -> in_ch + extra_ch``; mirrors ``DownSample``.

    ``down`` = (0: ``nn.Upsample(scale_factor=0.5, bilinear, align_corners=False)``,
    1: conv without bias). MSSNet uses the same block.
    """

    def __init__(self, in_ch: int, extra_ch: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=False),
            nn.Conv2d(in_ch, in_ch + extra_ch, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x)


class UpSample(nn.Module):
    """Bilinear x2 then 1x1 conv ``out_ch + extra_ch -> out_ch``; mirrors ``UpSample``."""

    def __init__(self, out_ch: int, extra_ch: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(out_ch + extra_ch, out_ch, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class SkipUpSample(UpSample):
    """:class:`UpSample` of the decoder feature plus the encoder skip (the ADD join).

    Mirrors the official ``SkipUpSample``: ``forward(dec, skip) = up(dec) + skip``. Its
    output is the joined feature ``f_de + f_en`` at the finer level. MSSNet uses the same
    block.
    """

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.up(x) + skip


def add_csff_convs(encoder: nn.Module, chans: Sequence[int], bias: bool) -> None:
    """Register the cross-stage feature fusion 1x1 convs ``csff_enc1..3`` then
    ``csff_dec1..3`` (this order: it is the official key order)."""
    for kind in ("enc", "dec"):
        for i, c in enumerate(chans, start=1):
            setattr(encoder, f"csff_{kind}{i}", nn.Conv2d(c, c, 1, bias=bias))


def encode_three_levels(
    encoder: nn.Module,
    x: torch.Tensor,
    encoder_outs: Sequence[torch.Tensor] | None = None,
    decoder_outs: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The forward of a stage encoder (MPRNet's and MSSNet's alike): ``encoder_level1..3``
    joined by ``down12`` / ``down23``; given the previous stage's features, each level adds
    ``csff_encK(enc_prev) + csff_decK(dec_prev)``. Returns ``[enc1, enc2, enc3]``."""

    def fuse(i: int, feat: torch.Tensor) -> torch.Tensor:
        if encoder_outs is None or decoder_outs is None:
            return feat
        enc_conv = getattr(encoder, f"csff_enc{i + 1}")
        dec_conv = getattr(encoder, f"csff_dec{i + 1}")
        return feat + enc_conv(encoder_outs[i]) + dec_conv(decoder_outs[i])

    enc1 = fuse(0, encoder.encoder_level1(x))
    enc2 = fuse(1, encoder.encoder_level2(encoder.down12(enc1)))
    enc3 = fuse(2, encoder.encoder_level3(encoder.down23(enc2)))
    return [enc1, enc2, enc3]


def decode_three_levels(decoder: nn.Module, outs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The forward of a stage decoder (MPRNet's and MSSNet's alike):
    ``dec3 = decoder_level3(enc3)``, ``dec2 = decoder_level2(up32(dec3, skip_attn2(enc2)))``,
    ``dec1 = decoder_level1(up21(dec2, skip_attn1(enc1)))``; returns ``[dec1, dec2, dec3]``."""
    enc1, enc2, enc3 = outs
    dec3 = decoder.decoder_level3(enc3)
    dec2 = decoder.decoder_level2(decoder.up32(dec3, decoder.skip_attn2(enc2)))
    dec1 = decoder.decoder_level1(decoder.up21(dec2, decoder.skip_attn1(enc1)))
    return [dec1, dec2, dec3]


class Encoder(nn.Module):
    """Three-level U-Net encoder of a stage; mirrors the official ``Encoder``.

    Levels of 2 CABs at ``n_feat``, ``n_feat + s``, ``n_feat + 2 s`` channels, joined by
    :class:`DownSample`. With ``csff=True`` (stage 2) the previous stage's encoder and
    decoder features are added after each level through 1x1 convs (cross-stage feature
    fusion, ``csff_enc1..3`` and ``csff_dec1..3``). Returns ``[enc1, enc2, enc3]``.
    """

    def __init__(
        self,
        n_feat: int,
        kernel_size: int,
        reduction: int,
        act: nn.Module,
        bias: bool,
        scale_unetfeats: int,
        csff: bool,
    ) -> None:
        super().__init__()
        s = scale_unetfeats
        chans = (n_feat, n_feat + s, n_feat + 2 * s)
        self.encoder_level1 = cab_stack(2, chans[0], kernel_size, reduction, bias, act)
        self.encoder_level2 = cab_stack(2, chans[1], kernel_size, reduction, bias, act)
        self.encoder_level3 = cab_stack(2, chans[2], kernel_size, reduction, bias, act)
        self.down12 = DownSample(chans[0], s)
        self.down23 = DownSample(chans[1], s)
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
    """Three-level U-Net decoder of a stage; mirrors the official ``Decoder``.

    ``dec3 = decoder_level3(enc3)``; ``dec2 = decoder_level2(up32(dec3, skip_attn2(enc2)))``;
    ``dec1 = decoder_level1(up21(dec2, skip_attn1(enc1)))``. Returns ``[dec1, dec2, dec3]``.
    Registration order (and so key order) is levels 1-3, ``skip_attn1/2``, ``up21``,
    ``up32``.
    """

    def __init__(
        self,
        n_feat: int,
        kernel_size: int,
        reduction: int,
        act: nn.Module,
        bias: bool,
        scale_unetfeats: int,
    ) -> None:
        super().__init__()
        s = scale_unetfeats
        chans = (n_feat, n_feat + s, n_feat + 2 * s)
        self.decoder_level1 = cab_stack(2, chans[0], kernel_size, reduction, bias, act)
        self.decoder_level2 = cab_stack(2, chans[1], kernel_size, reduction, bias, act)
        self.decoder_level3 = cab_stack(2, chans[2], kernel_size, reduction, bias, act)
        self.skip_attn1 = CAB(chans[0], kernel_size, reduction, bias, act)
        self.skip_attn2 = CAB(chans[1], kernel_size, reduction, bias, act)
        self.up21 = SkipUpSample(chans[0], s)
        self.up32 = SkipUpSample(chans[1], s)

    def forward(self, outs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return decode_three_levels(self, outs)


class ORB(nn.Module):
    """Original-resolution block; mirrors the official ``ORB``.

    ``x + body(x)`` with ``body`` = ``num_cab`` CABs then a ``kernel_size`` conv; that
    last conv has no bias whatever ``bias`` is (as in the official model).
    """

    def __init__(
        self,
        n_feat: int,
        kernel_size: int,
        reduction: int,
        act: nn.Module,
        bias: bool,
        num_cab: int,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            CAB(n_feat, kernel_size, reduction, bias, act) for _ in range(num_cab)
        ]
        blocks.append(conv(n_feat, n_feat, kernel_size, bias=False))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ORSNet(nn.Module):
    """Stage-3 original-resolution subnetwork; mirrors the official ``ORSNet``.

    Three ORBs at ``n_feat + scale_orsnetfeats`` channels; after ORB k the stage-2
    encoder and decoder features of level k are brought to full resolution
    (``up_enc1/up_dec1``: one :class:`UpSample`, ``up_enc2/up_dec2``: two) and added
    through 1x1 convs ``conv_enc{k}`` / ``conv_dec{k}``.
    """

    def __init__(
        self,
        n_feat: int,
        scale_orsnetfeats: int,
        kernel_size: int,
        reduction: int,
        act: nn.Module,
        bias: bool,
        scale_unetfeats: int,
        num_cab: int,
    ) -> None:
        super().__init__()
        width = n_feat + scale_orsnetfeats
        s = scale_unetfeats
        self.orb1 = ORB(width, kernel_size, reduction, act, bias, num_cab)
        self.orb2 = ORB(width, kernel_size, reduction, act, bias, num_cab)
        self.orb3 = ORB(width, kernel_size, reduction, act, bias, num_cab)
        self.up_enc1 = UpSample(n_feat, s)
        self.up_dec1 = UpSample(n_feat, s)
        self.up_enc2 = nn.Sequential(UpSample(n_feat + s, s), UpSample(n_feat, s))
        self.up_dec2 = nn.Sequential(UpSample(n_feat + s, s), UpSample(n_feat, s))
        for i in (1, 2, 3):
            setattr(self, f"conv_enc{i}", nn.Conv2d(n_feat, width, 1, bias=bias))
        for i in (1, 2, 3):
            setattr(self, f"conv_dec{i}", nn.Conv2d(n_feat, width, 1, bias=bias))

    def forward(
        self,
        x: torch.Tensor,
        encoder_outs: Sequence[torch.Tensor],
        decoder_outs: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        x = self.orb1(x)
        x = x + self.conv_enc1(encoder_outs[0]) + self.conv_dec1(decoder_outs[0])
        x = self.orb2(x)
        x = (
            x
            + self.conv_enc2(self.up_enc1(encoder_outs[1]))
            + self.conv_dec2(self.up_dec1(decoder_outs[1]))
        )
        x = self.orb3(x)
        x = (
            x
            + self.conv_enc3(self.up_enc2(encoder_outs[2]))
            + self.conv_dec3(self.up_dec2(decoder_outs[2]))
        )
        return x


def shallow_block(
    in_c: int, n_feat: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module
) -> nn.Sequential:
    """Shallow feature extractor of a stage: conv ``in_c -> n_feat`` then one CAB."""
    return nn.Sequential(
        conv(in_c, n_feat, kernel_size, bias=bias),
        CAB(n_feat, kernel_size, reduction, bias, act),
    )


def split_halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top and bottom halves of an image (rows ``[0, H//2)`` and ``[H//2, H)``)."""
    h = x.shape[2] // 2
    return x[:, :, :h], x[:, :, h:]


def split_columns(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right halves of an image (columns ``[0, W//2)`` and ``[W//2, W)``)."""
    w = x.shape[3] // 2
    return x[..., :w], x[..., w:]


def stage1_patchwise(
    shallow: nn.Module,
    encoder: nn.Module,
    decoder: nn.Module,
    top: torch.Tensor,
    bottom: torch.Tensor,
) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """MPRNet stage 1 as the official forward runs it, on the two halves of an image.

    The shallow block, then the encoder, run once per quadrant in the order top-left,
    top-right, bottom-left, bottom-right; each level's quadrant features are concatenated
    along the width into half-image features; the decoder runs on the top half, then on
    the bottom half. Returns ``([enc_top, enc_bottom], [dec_top, dec_bottom])``, each a
    list of the three level features.
    """
    quadrants = [*split_columns(top), *split_columns(bottom)]
    shallow_feats = [shallow(q) for q in quadrants]
    enc_quads = [encoder(f) for f in shallow_feats]
    enc_halves = [
        [torch.cat(pair, dim=3) for pair in zip(enc_quads[0], enc_quads[1], strict=True)],
        [torch.cat(pair, dim=3) for pair in zip(enc_quads[2], enc_quads[3], strict=True)],
    ]
    dec_halves = [decoder(enc_halves[0]), decoder(enc_halves[1])]
    return enc_halves, dec_halves


def _check_channels(in_c: int, out_c: int) -> None:
    if in_c != out_c:
        raise OptionError(
            f"MPRNet adds its input image to every stage's output, so in_c must equal out_c; "
            f"got in_c={in_c}, out_c={out_c}"
        )


class MPRNet(nn.Module):
    """Three-stage MPRNet for deblurring; mirrors the official ``MPRNet`` (see module doc).

    Args follow the official constructor; ``in_c``/``out_c`` (ignored by the official
    code, which hard-codes 3) set the image channels here and must be equal.

    Input: ``B x in_c x H x W`` in [0, 1], H and W multiples of 8.
    Output: ``[stage3_img + x, stage2_img, stage1_img]``, all ``B x out_c x H x W``;
    ``out[0]`` is the final restoration (the order is final FIRST).
    """

    size_multiple = SIZE_MULTIPLE

    def __init__(
        self,
        in_c: int = 3,
        out_c: int = 3,
        n_feat: int = 96,
        scale_unetfeats: int = 48,
        scale_orsnetfeats: int = 32,
        num_cab: int = 8,
        kernel_size: int = 3,
        reduction: int = 4,
        bias: bool = False,
    ) -> None:
        super().__init__()
        _check_channels(in_c, out_c)
        act = nn.PReLU()
        self.shallow_feat1 = shallow_block(in_c, n_feat, kernel_size, reduction, bias, act)
        self.shallow_feat2 = shallow_block(in_c, n_feat, kernel_size, reduction, bias, act)
        self.shallow_feat3 = shallow_block(in_c, n_feat, kernel_size, reduction, bias, act)
        unet = (n_feat, kernel_size, reduction, act, bias, scale_unetfeats)
        self.stage1_encoder = Encoder(*unet, csff=False)
        self.stage1_decoder = Decoder(*unet)
        self.stage2_encoder = Encoder(*unet, csff=True)
        self.stage2_decoder = Decoder(*unet)
        self.stage3_orsnet = ORSNet(
            n_feat, scale_orsnetfeats, kernel_size, reduction, act, bias, scale_unetfeats, num_cab
        )
        self.sam12 = SAM(n_feat, kernel_size=1, bias=bias, img_ch=in_c)
        self.sam23 = SAM(n_feat, kernel_size=1, bias=bias, img_ch=in_c)
        self.concat12 = conv(2 * n_feat, n_feat, kernel_size, bias=bias)
        self.concat23 = conv(2 * n_feat, n_feat + scale_orsnetfeats, kernel_size, bias=bias)
        self.tail = conv(n_feat + scale_orsnetfeats, out_c, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_size(x, SIZE_MULTIPLE, "MPRNet")
        top, bottom = split_halves(x)

        # Stage 1: quadrants through the encoder, halves through the decoder and SAM.
        enc1, dec1 = stage1_patchwise(
            self.shallow_feat1, self.stage1_encoder, self.stage1_decoder, top, bottom
        )
        sam_top, img1_top = self.sam12(dec1[0][0], top)
        sam_bottom, img1_bottom = self.sam12(dec1[1][0], bottom)
        stage1_img = torch.cat([img1_top, img1_bottom], dim=2)

        # Stage 2: halves through the encoder (with cross-stage fusion), whole-image decoder.
        shallow2 = [self.shallow_feat2(top), self.shallow_feat2(bottom)]
        fused2 = [
            self.concat12(torch.cat([shallow2[0], sam_top], dim=1)),
            self.concat12(torch.cat([shallow2[1], sam_bottom], dim=1)),
        ]
        enc2_halves = [self.stage2_encoder(fused2[i], enc1[i], dec1[i]) for i in (0, 1)]
        enc2 = [
            torch.cat(pair, dim=2) for pair in zip(enc2_halves[0], enc2_halves[1], strict=True)
        ]
        dec2 = self.stage2_decoder(enc2)
        sam3, stage2_img = self.sam23(dec2[0], x)

        # Stage 3: full resolution.
        fused3 = self.concat23(torch.cat([self.shallow_feat3(x), sam3], dim=1))
        feat3 = self.stage3_orsnet(fused3, enc2, dec2)
        return [self.tail(feat3) + x, stage2_img, stage1_img]


class Stage1ImageHead(nn.Module):
    """The image half of ``MPRNet.sam12``: ``conv2(features) + input image``.

    Only ``conv2`` (1x1, ``n_feat -> img_ch``) is kept, so the key ``sam12.conv2.weight``
    matches the full model's; ``sam12.conv1``/``conv3`` only make features for stage 2.
    """

    def __init__(self, n_feat: int, bias: bool, img_ch: int = 3) -> None:
        super().__init__()
        self.conv2 = conv(n_feat, img_ch, 1, bias=bias)

    def forward(self, x: torch.Tensor, x_img: torch.Tensor) -> torch.Tensor:
        return self.conv2(x) + x_img


STAGE1_PREFIXES = ("shallow_feat1.", "stage1_encoder.", "stage1_decoder.", "sam12.conv2.")
"""Key prefixes of the full MPRNet ``state_dict`` that :class:`MPRNetStage1` holds."""


def stage1_state_dict(full: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The :class:`MPRNetStage1` part of a full MPRNet ``state_dict`` (``module.`` dropped).

    ``MPRNetStage1().load_state_dict(stage1_state_dict(sd), strict=True)`` then gives a
    model whose output equals the full model's ``out[2]`` (stage-1 image) when
    ``patch_wise=True``.
    """
    prefixed = bool(full) and all(k.startswith("module.") for k in full)
    keys = {(k[len("module."):] if prefixed else k): v for k, v in full.items()}
    return {k: v for k, v in keys.items() if k.startswith(STAGE1_PREFIXES)}


class MPRNetStage1(nn.Module):
    """Single-stage MPRNet: stage 1 of :class:`MPRNet` alone, ending in its image output.

    What it is: ``shallow_feat1`` -> ``stage1_encoder`` -> ``stage1_decoder`` -> ``sam12``
    image projection (``conv2(dec1) + x``, see :class:`Stage1ImageHead`), with the full
    model's names, channels and a single shared PReLU; i.e. exactly the path that yields
    the full model's ``stage1_img``. This is the one-stage model of the paper's ablation on
    the number of stages (an encoder-decoder with CABs and the SAM output); no
    ``csff``/ORSNet/``concat`` parts. Defaults: 5,754,817 parameters, 81 ``state_dict``
    entries (67 unique tensors; the PReLU is shared by 15 keys).

    ``patch_wise=True`` (default) runs stage 1 exactly as the full model does: encoder on
    the four quadrants (top-left, top-right, bottom-left, bottom-right), decoder and head
    on the top then the bottom half. Chosen as the default because (a) weights taken from
    an official MPRNet checkpoint (:func:`stage1_state_dict`) then reproduce the full
    model's ``stage1_img`` bit for bit, and (b) the module call pattern (4 encoder calls,
    2 decoder calls, per-call regions) is the full model's, so level maps written for
    MPRNet's stage 1 apply unchanged. ``patch_wise=False`` runs each part once on the
    whole image (no patch seams; channel attention pools over the whole image; input
    multiple of 4 suffices): a plain U-Net, useful when training from scratch.

    Input: ``B x in_c x H x W`` in [0, 1], H and W multiples of 8 (4 if not patch-wise).
    Output: a one-element list ``[stage1_img]`` (``B x in_c x H x W``), so ``out[0]`` is
    the final image for both this class and :class:`MPRNet`.
    """

    def __init__(
        self,
        in_c: int = 3,
        out_c: int = 3,
        n_feat: int = 96,
        scale_unetfeats: int = 48,
        kernel_size: int = 3,
        reduction: int = 4,
        bias: bool = False,
        patch_wise: bool = True,
    ) -> None:
        super().__init__()
        _check_channels(in_c, out_c)
        act = nn.PReLU()
        self.patch_wise = patch_wise
        self.size_multiple = SIZE_MULTIPLE if patch_wise else 4
        self.shallow_feat1 = shallow_block(in_c, n_feat, kernel_size, reduction, bias, act)
        unet = (n_feat, kernel_size, reduction, act, bias, scale_unetfeats)
        self.stage1_encoder = Encoder(*unet, csff=False)
        self.stage1_decoder = Decoder(*unet)
        self.sam12 = Stage1ImageHead(n_feat, bias=bias, img_ch=in_c)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_size(x, self.size_multiple, "MPRNetStage1")
        if not self.patch_wise:
            dec = self.stage1_decoder(self.stage1_encoder(self.shallow_feat1(x)))
            return [self.sam12(dec[0], x)]
        top, bottom = split_halves(x)
        _, dec = stage1_patchwise(
            self.shallow_feat1, self.stage1_encoder, self.stage1_decoder, top, bottom
        )
        img = torch.cat([self.sam12(dec[0][0], top), self.sam12(dec[1][0], bottom)], dim=2)
        return [img]
