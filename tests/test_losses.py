"""Losses against direct computations; the VGG16 weights' offline error."""

from __future__ import annotations

import math
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sp_adapter
from sp_adapter.backbones.unet import UNet
from sp_adapter.train import losses
from sp_adapter.train.backbones import backbone_spec
from sp_adapter.train.losses import (
    BACKBONE_LOSSES,
    PerceptualWeightsError,
    TeacherPerceptualLoss,
    TotalLoss,
    VGGPerceptualLoss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)


def test_l1_and_charbonnier(images):
    a, b = images
    assert torch.allclose(losses.l1_loss(a, b), (a - b).abs().sum() / a.numel())
    eps = 1e-3
    direct = sum(math.sqrt((x - y) ** 2 + eps**2) for x, y in
                 zip(a.flatten().tolist(), b.flatten().tolist(), strict=True)) / a.numel()
    assert losses.charbonnier_loss(a, b, eps).item() == pytest.approx(direct, rel=1e-5)


def _laplacian_numpy(x: np.ndarray) -> np.ndarray:
    """MPRNet's edge filter written with explicit loops (replicate borders)."""
    k1 = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    k = np.outer(k1, k1)

    def blur(img):
        padded = np.pad(img, 2, mode="edge")
        out = np.zeros_like(img)
        for i in range(img.shape[0]):
            for j in range(img.shape[1]):
                out[i, j] = (padded[i : i + 5, j : j + 5] * k).sum()
        return out

    filtered = blur(x)
    up = np.zeros_like(filtered)
    up[::2, ::2] = filtered[::2, ::2] * 4
    return x - blur(up)


def test_laplacian_and_edge_loss(images):
    a, b = images
    lap = losses.laplacian(a.double())
    for n in range(2):
        for c in range(3):
            assert np.allclose(lap[n, c].numpy(), _laplacian_numpy(a[n, c].double().numpy()))
    direct = losses.charbonnier_loss(losses.laplacian(a), losses.laplacian(b))
    assert torch.allclose(losses.edge_loss(a, b), direct)


def test_fft_l1_matches_numpy(images):
    a, b = images
    fa, fb = np.fft.fft2(a.double().numpy()), np.fft.fft2(b.double().numpy())
    direct = (np.abs(fa.real - fb.real).sum() + np.abs(fa.imag - fb.imag).sum()) / (2 * a.numel())
    assert losses.fft_l1_loss(a, b).item() == pytest.approx(direct, rel=1e-5)


def test_backbone_losses_against_direct_sums(images):
    _, sharp = images
    g = torch.Generator().manual_seed(1)
    full = [torch.rand(2, 3, 16, 16, generator=g) for _ in range(6)]
    half = torch.rand(2, 3, 8, 8, generator=g)
    quarter = torch.rand(2, 3, 4, 4, generator=g)
    down2 = sharp.reshape(2, 3, 8, 2, 8, 2).mean((3, 5))  # bilinear 1/2 = 2x2 means

    mimo = [quarter, half, full[0]]
    t4 = F.interpolate(sharp, scale_factor=0.25, mode="bilinear", align_corners=False)
    expect = sum(losses.l1_loss(o, t) + 0.1 * losses.fft_l1_loss(o, t)
                 for o, t in zip(mimo, [t4, down2, sharp], strict=True))
    assert torch.allclose(BACKBONE_LOSSES["mimo"](mimo, sharp), expect, rtol=1e-6)
    assert backbone_spec("mimo-unet").final(mimo) is full[0]

    mpr = full[:3]
    expect = sum(losses.charbonnier_loss(o, sharp) + 0.05 * losses.edge_loss(o, sharp)
                 for o in mpr)
    assert torch.allclose(BACKBONE_LOSSES["mprnet"](mpr, sharp), expect, rtol=1e-6)
    assert backbone_spec("mprnet").final(mpr) is full[0]

    mss = [half, *full[:5]]
    targets = [down2] + [sharp] * 5
    expect = sum(losses.l1_loss(o, t) + 0.1 * losses.fft_l1_loss(o, t)
                 for o, t in zip(mss, targets, strict=True))
    assert torch.allclose(BACKBONE_LOSSES["mssnet"](mss, sharp), expect, rtol=1e-6)
    assert backbone_spec("mssnet").final(mss) is full[4]

    from sp_adapter.backbones.deepdeblur import gaussian_pyramid

    deep = [full[0] * 255, half * 255, quarter * 255]
    pyramid = gaussian_pyramid(sharp, 3)
    expect = sum((o / 255 - t).abs().mean() for o, t in zip(deep, pyramid, strict=True))
    assert torch.allclose(BACKBONE_LOSSES["deepdeblur"](deep, sharp), expect, rtol=1e-6)
    assert torch.allclose(backbone_spec("deepdeblur").final(deep), full[0])

    assert torch.allclose(BACKBONE_LOSSES["l1"](full[0], sharp), losses.l1_loss(full[0], sharp))
    assert torch.allclose(BACKBONE_LOSSES["mse"](full[0], sharp),
                          (full[0] - sharp).pow(2).mean())
    # PSNR of [0, 1] images (unrounded) is -10 log10 of it
    from sp_adapter.metrics import psnr
    assert float(psnr(full[0][:1], sharp[:1], quantize=False)) == pytest.approx(
        -10 * math.log10(float(losses.mse_loss(full[0][:1], sharp[:1]))))


def test_backbone_losses_reject_wrong_outputs(images):
    a, b = images
    with pytest.raises(ValueError, match="list of 3 outputs"):
        BACKBONE_LOSSES["mimo"](a, b)
    with pytest.raises(ValueError, match="single output"):
        BACKBONE_LOSSES["l1"]([a, a], b)
    with pytest.raises(ValueError, match="single output"):
        BACKBONE_LOSSES["mse"]([a, a], b)
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        losses.reconstruction_loss("nope")


def test_vgg_perceptual_is_feature_mse(images):
    a, b = images
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    loss = VGGPerceptualLoss(features)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    fa, fb = features((a - mean) / std), features((b - mean) / std)
    assert torch.allclose(loss(a, b), ((fa - fb) ** 2).mean())
    pred = a.clone().requires_grad_(True)
    loss(pred, b).backward()
    assert pred.grad is not None and all(p.grad is None for p in features.parameters())


def test_vgg_offline_error_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PerceptualWeightsError) as err:
        VGGPerceptualLoss.pretrained(allow_download=False)
    text = str(err.value)
    assert "vgg16-397923af.pth" in text and str(tmp_path) in text
    assert "perceptual='teacher'" in text and "alpha=0" in text

    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(PerceptualWeightsError, match="could not get the VGG16 weights"):
        VGGPerceptualLoss.pretrained(allow_download=True)


def test_teacher_perceptual_matches_direct(teacher, images):
    a, b = images
    a, b = F.interpolate(a, 32), F.interpolate(b, 32)
    loss = TeacherPerceptualLoss(teacher)
    expect = torch.stack([F.mse_loss(p, t) for p, t in zip(teacher(a), teacher(b),
                                                            strict=True)]).mean()
    assert torch.allclose(loss(a, b), expect, rtol=1e-5)
    pred = a.clone().requires_grad_(True)
    loss(pred, b).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_total_loss_is_eq7(teacher, pair):
    blurry, sharp = pair
    torch.manual_seed(0)
    model = sp_adapter.wrap(UNet(width=8, blocks=1), teacher=teacher, student="small",
                            small_width=8)
    perceptual = TeacherPerceptualLoss(teacher)
    out = model(blurry)
    terms = TotalLoss("l1", alpha=0.01, beta=0.1, perceptual=perceptual)(out, sharp, model)
    prior = sp_adapter.prior_loss(model, sharp)
    expect = losses.l1_loss(out, sharp) + 0.01 * perceptual(out, sharp) + 0.1 * prior
    assert torch.allclose(terms.total, expect, rtol=1e-6)
    assert terms.prior.item() == pytest.approx(prior.item())
    base = TotalLoss("l1", alpha=0.0, beta=0.1)(out, sharp, model=None)
    assert base.prior.item() == 0 and torch.allclose(base.total, losses.l1_loss(out, sharp))
    with pytest.raises(ValueError, match="perceptual loss module"):
        TotalLoss("l1", alpha=0.01)
