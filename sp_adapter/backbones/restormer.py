"""Restormer (Zamir et al., CVPR 2022): a twin of the official model, in one file.

Written for this project from a reading of swz30/Restormer,
``basicsr/models/archs/restormer_arch.py``. Module names, registration order and shapes
are the official ones, so a published checkpoint (``torch.load(p)["params"]``, e.g.
``motion_deblurring.pth``) loads with ``strict=True``; heads are split with
``einops.rearrange`` as there.

Conventions:

* input: one ``B x C x H x W`` tensor in [0, 1], H and W multiples of 8 (the official test
  script reflect-pads to 8 and crops back; this forward checks and says so);
* output: one tensor, ``output(refinement(...)) + input`` (global residual), not clamped.

Levels (``dim`` 48): ``encoder_level1..3`` at 1, 1/2, 1/4 (48, 96, 192 channels),
``latent`` at 1/8 (384). The decoder joins each skip by CONCATENATION in forward code:
``cat(up4_3(latent), encoder_level3)`` is the input of ``reduce_chan_level3`` (1x1,
384 -> 192), ``cat(up3_2(.), encoder_level2)`` of ``reduce_chan_level2`` (192 -> 96) and
``cat(up2_1(.), encoder_level1)`` of ``decoder_level1`` directly (96 channels, no
reduction). The level map is in ``sp_adapter/adapters/restormer.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sp_adapter.errors import ImageInputError

SIZE_MULTIPLE = 8
"""Restormer's input height and width must be multiples of this (three 2x downsamplings)."""


class BiasFree_LayerNorm(nn.Module):  # noqa: N801 (the official class name)
    """Layer norm over the last dimension without mean subtraction or shift."""

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(sigma + 1e-5) * self.weight


class WithBias_LayerNorm(nn.Module):  # noqa: N801 (the official class name)
    """Layer norm over the last dimension (eps 1e-5) with scale and shift."""

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    """Per-pixel layer norm over the channels of a ``B x C x H x W`` tensor."""

    def __init__(self, dim: int, LayerNorm_type: str) -> None:
        super().__init__()
        self.body = (
            BiasFree_LayerNorm(dim) if LayerNorm_type == "BiasFree" else WithBias_LayerNorm(dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.body(rearrange(x, "b c h w -> b (h w) c"))
        return rearrange(y, "b (h w) c -> b c h w", h=h, w=w)


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN): 1x1 to two branches, depthwise 3x3,
    ``gelu(x1) * x2``, 1x1 back."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2,
                                bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class Attention(nn.Module):
    """Multi-Dconv head transposed attention (MDTA): attention across channels, per head,
    with a learned temperature."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = (
            rearrange(t, "b (head c) h w -> b head c (h w)", head=self.num_heads).contiguous()
            for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        )
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        out = rearrange(attn @ v, "b head c (h w) -> b (head c) h w", head=self.num_heads,
                        h=h, w=w)
        return self.project_out(out)


class TransformerBlock(nn.Module):
    """``x + attn(norm1(x))``, then ``x + ffn(norm2(x))``."""

    def __init__(
        self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
        LayerNorm_type: str,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """A 3x3 convolution from the image to ``embed_dim`` channels."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """3x3 conv to half the channels, then PixelUnshuffle(2): half the size, twice the
    channels."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3x3 conv to twice the channels, then PixelShuffle(2): twice the size, half the
    channels."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Restormer(nn.Module):
    """Restormer with the official constructor; the defaults are the motion-deblurring
    model.

    Args:
        inp_channels, out_channels: image channels in and out.
        dim: channels of level 1 (doubled at each level).
        num_blocks: transformer blocks per level, finest first (the last is ``latent``).
        num_refinement_blocks: blocks of the full-resolution ``refinement``.
        heads: attention heads per level.
        ffn_expansion_factor: hidden width of the feed-forward, relative to ``dim``.
        bias: biases in the convolutions.
        LayerNorm_type: ``"WithBias"`` or ``"BiasFree"``.
        dual_pixel_task: the dual-pixel defocus variant (6 input channels, ``skip_conv``).
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",
        dual_pixel_task: bool = False,
    ) -> None:
        super().__init__()

        def blocks(level_dim: int, n: int, n_heads: int) -> nn.Sequential:
            return nn.Sequential(*(
                TransformerBlock(level_dim, n_heads, ffn_expansion_factor, bias, LayerNorm_type)
                for _ in range(n)
            ))

        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = blocks(d1, num_blocks[0], heads[0])
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = blocks(d2, num_blocks[1], heads[1])
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = blocks(d3, num_blocks[2], heads[2])
        self.down3_4 = Downsample(d3)
        self.latent = blocks(d4, num_blocks[3], heads[3])
        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, 1, bias=bias)
        self.decoder_level3 = blocks(d3, num_blocks[2], heads[2])
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, 1, bias=bias)
        self.decoder_level2 = blocks(d2, num_blocks[1], heads[1])
        self.up2_1 = Upsample(d2)
        # level 1 keeps the concatenation's 2 * dim channels (no 1x1 reduction)
        self.decoder_level1 = blocks(d2, num_blocks[0], heads[0])
        self.refinement = blocks(d2, num_refinement_blocks, heads[0])
        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(d1, d2, 1, bias=bias)
        self.output = nn.Conv2d(d2, out_channels, 3, padding=1, bias=bias)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        h, w = inp_img.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ImageInputError(
                f"Restormer needs input height and width that are multiples of {SIZE_MULTIPLE}; "
                f"got {h}x{w}. Pad the image (reflect) and crop the output."
            )
        inp_enc_level1 = self.patch_embed(inp_img)
        out_enc_level1 = self.encoder_level1(inp_enc_level1)
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        latent = self.latent(self.down3_4(out_enc_level3))

        inp_dec_level3 = torch.cat([self.up4_3(latent), out_enc_level3], 1)
        out_dec_level3 = self.decoder_level3(self.reduce_chan_level3(inp_dec_level3))
        inp_dec_level2 = torch.cat([self.up3_2(out_dec_level3), out_enc_level2], 1)
        out_dec_level2 = self.decoder_level2(self.reduce_chan_level2(inp_dec_level2))
        inp_dec_level1 = torch.cat([self.up2_1(out_dec_level2), out_enc_level1], 1)
        out_dec_level1 = self.refinement(self.decoder_level1(inp_dec_level1))

        if self.dual_pixel_task:
            return self.output(out_dec_level1 + self.skip_conv(inp_enc_level1))
        return self.output(out_dec_level1) + inp_img
