"""HCL (Eq. 2/4), CLC (Eq. 3), MLA (Eq. 5) and SAT (Eq. 6) against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sp_adapter.attach.levels import Region
from sp_adapter.prior.config import PriorConfig
from sp_adapter.prior.embedding import (
    MultiLevelAggregation,
    SemanticAttentionTransform,
    SemanticPriorEmbedding,
    crop_to_site,
)
from sp_adapter.prior.hcl import hcl_distance, hcl_loss
from sp_adapter.prior.learner import CrossLevelConnection


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_hcl_matches_a_direct_computation():
    p = [_randn(2, 3, 8, 8, seed=1), _randn(2, 5, 4, 4, seed=2)]
    t = [_randn(2, 3, 8, 8, seed=3), _randn(2, 5, 4, 4, seed=4)]

    def direct(a, b):
        total = 0.0
        for k in (1, 2, 4):
            B, C, H, W = a.shape
            pa = a.reshape(B, C, H // k, k, W // k, k).mean((3, 5))
            pb = b.reshape(B, C, H // k, k, W // k, k).mean((3, 5))
            total += ((pa - pb) ** 2).sum() / (B * C * (H // k) * (W // k))
        return total

    expected = (direct(p[0], t[0]) + direct(p[1], t[1])) / 2
    assert torch.allclose(hcl_loss(p, t), expected, rtol=1e-6)
    # pooling factor 1 only is the plain mean-square error
    assert torch.allclose(hcl_distance(p[0], t[0], (1,)), F.mse_loss(p[0], t[0]))
    assert hcl_loss(t, t).item() == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        hcl_loss([p[0]], [t[1]])


def test_clc_matches_equation_3():
    m = [_randn(1, 4, 8, 8, seed=1), _randn(1, 6, 4, 4, seed=2), _randn(1, 8, 2, 2, seed=3)]
    clc = CrossLevelConnection([4, 6, 8], kernel_size=3)
    # at initialisation the connection is the identity
    assert all(torch.equal(a, b) for a, b in zip(clc(m), m, strict=True))
    for conv in [*clc.attention, *clc.project]:
        torch.nn.init.normal_(conv.weight, std=0.1)
        torch.nn.init.normal_(conv.bias, std=0.1)
    out = clc(m)
    for i in range(2):
        up = F.interpolate(m[i + 1], size=m[i].shape[-2:], mode="bilinear", align_corners=False)
        a = 1 + torch.tanh(
            F.conv2d(
                torch.cat([m[i], up], 1), clc.attention[i].weight, clc.attention[i].bias, padding=1
            )
        )
        proj = F.conv2d(up, clc.project[i].weight, clc.project[i].bias)
        assert torch.allclose(out[i], a * m[i] + a * proj, atol=1e-6)
    assert torch.equal(out[2], m[2])


def test_mla_matches_equation_5():
    f = [_randn(1, 4, 8, 8, seed=1), _randn(1, 6, 4, 4, seed=2), _randn(1, 8, 2, 2, seed=3)]
    mla = MultiLevelAggregation([4, 6, 8], level=1, kernel_size=3)
    size = f[1].shape[-2:]
    others = [F.interpolate(f[t], size=size, mode="bilinear", align_corners=False) for t in (0, 2)]
    att = F.conv2d(torch.cat([f[1], *others], 1), mla.conv.weight, mla.conv.bias, padding=1)
    assert torch.allclose(mla(f), att * f[1] + f[1], atol=1e-6)


def test_sat_matches_equation_6_and_starts_at_identity():
    m = _randn(1, 4, 8, 8, seed=1)
    f_de, f_en = _randn(1, 5, 8, 8, seed=2), _randn(1, 5, 8, 8, seed=3)
    sat = SemanticAttentionTransform(4, 5, kernel_size=3, sigma_bound=0.5)
    maps = sat.maps(m)
    assert torch.equal(maps[0], torch.zeros_like(maps[0])) and torch.equal(
        maps[1], torch.zeros_like(maps[1])
    )
    # the network adds f_en after the site: h = f_de, g = f_de + f_en
    assert torch.equal(sat.apply(f_de, f_de + f_en, maps) + f_en, f_de + f_en)
    for conv in (sat.conv1, sat.conv2):
        torch.nn.init.normal_(conv.weight, std=0.5)
    mu = 1 + torch.tanh(F.conv2d(m, sat.conv1.weight, sat.conv1.bias, padding=1))
    sigma = 0.5 * torch.tanh(F.conv2d(m, sat.conv2.weight, sat.conv2.bias, padding=1))
    out = sat.apply(f_de, f_de + f_en, sat.maps(m)) + f_en
    assert torch.allclose(out, mu * (f_de + f_en) + sigma, atol=1e-5)
    assert mu.min() >= 0 and mu.max() <= 2 and sigma.abs().max() <= 0.5


def test_spe_resizes_maps_to_the_decoder_level_and_crops_regions():
    config = PriorConfig(mla=False)
    spe = SemanticPriorEmbedding([4, 6], prior_level=0, channels=5, config=config)
    torch.nn.init.normal_(spe.fusion.conv1.weight, std=0.5)
    priors = [_randn(1, 4, 4, 4, seed=1), _randn(1, 6, 2, 2, seed=2)]
    h = _randn(1, 5, 16, 16, seed=3)
    maps = spe.maps(priors)
    out = spe(h, h, maps)
    mu = 1 + F.interpolate(
        torch.tanh(spe.fusion.conv1(priors[0])), size=(16, 16), mode="bilinear", align_corners=False
    )
    assert torch.allclose(out, mu * h, atol=1e-6)
    # a module run on the bottom half of the image sees the bottom half of the maps
    bottom = crop_to_site(maps, (8, 16), Region(0.5, 0.0, 0.5, 1.0))
    whole = crop_to_site(maps, (16, 16))
    assert torch.equal(bottom[0], whole[0][..., 8:, :])


def test_maps_are_aligned_with_sites_of_networks_that_pad():
    """Maps of an image padded to a multiple of their reduction, on a site of a network
    that padded the image to another multiple: each site pixel gets the map value of the
    image pixels it covers (a linear ramp makes misalignment visible)."""
    ramp = torch.arange(12, dtype=torch.float32).view(1, 1, 1, 12).expand(1, 1, 12, 12)
    # image 90 px high and wide, padded to 96 for maps of reduction 8 (12 x 12); the network
    # pads it to 92 (a multiple of 4), so its reduction-4 site is 23 x 23
    (aligned,) = crop_to_site([ramp], (23, 23), image_size=(90, 90), reduction=8)
    (stretched,) = crop_to_site([ramp], (23, 23))
    exact = F.interpolate(ramp, size=(24, 24), mode="bilinear", align_corners=False)
    assert torch.equal(aligned, exact[..., :23, :23])
    assert (stretched - aligned).abs().max() > 0.2  # stretching 12 to 23 shifts the far side
    # sides that divide evenly: the same as stretching, bit for bit
    (even,) = crop_to_site([ramp], (24, 24), image_size=(96, 96), reduction=8)
    assert torch.equal(even, crop_to_site([ramp], (24, 24))[0])
    # a site larger than the maps cover is edge-padded; regions crop the aligned maps
    (wide,) = crop_to_site([ramp], (25, 25), image_size=(98, 98), reduction=8)
    assert torch.equal(wide[..., :24, :24], exact)
    assert torch.equal(wide[0, 0, 24, :24], exact[0, 0, 23])
    (bottom,) = crop_to_site([ramp], (12, 24), Region(0.5, 0.0, 0.5, 1.0), (96, 96), 8)
    assert torch.equal(bottom, exact[..., 12:, :])
