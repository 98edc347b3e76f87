"""PSNR/SSIM conventions and agreement with scikit-image; LPIPS fails loudly offline."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sp_adapter.data.blur import MILD, blur_image, camera_shake_kernel
from sp_adapter.data.photos import load_photo
from sp_adapter.metrics import gaussian_window, lpips_metric, psnr, ssim


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    return structural_similarity(
        _u8(x),
        _u8(y),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
        data_range=255,
    )


def test_psnr_of_constant_images_with_known_mse() -> None:
    x = torch.full((3, 16, 16), 100 / 255)
    y = torch.full((3, 16, 16), 110 / 255)  # MSE = 100 on the 0..255 scale
    expected = 10 * math.log10(255**2 / 100)
    assert abs(float(psnr(x, y)) - expected) < 1e-9
    assert abs(float(psnr(x * 255, y * 255, data_range=255)) - expected) < 1e-9
    assert psnr(x, x).item() == math.inf


def test_psnr_averages_per_image_scores() -> None:
    x = torch.full((2, 3, 8, 8), 100 / 255)
    y = x.clone()
    y[0] += 10 / 255  # MSE 100
    y[1] += 20 / 255  # MSE 400
    per_image = psnr(x, y, reduction="none")
    assert per_image.shape == (2,)
    expected = [10 * math.log10(255**2 / m) for m in (100, 400)]
    assert torch.allclose(per_image, torch.tensor(expected, dtype=torch.float64))
    assert abs(float(psnr(x, y)) - sum(expected) / 2) < 1e-9
    assert abs(float(psnr(x, y)) - 10 * math.log10(255**2 / 250)) > 0.1  # not pooled MSE


def test_quantization_switch() -> None:
    x = torch.full((3, 8, 8), 100 / 255)
    y = x + 0.1 / 255
    assert psnr(x, y).item() == math.inf  # both round to 100
    ours = float(psnr(x, y, quantize=False))  # float32 inputs: offset exact to ~1e-5
    assert abs(ours - 10 * math.log10(255**2 / 0.01)) < 1e-3
    # quantised values are clamped like saved PNGs: 1.2 counts as 1.0
    assert psnr(torch.full((3, 4, 4), 1.2), torch.ones(3, 4, 4)).item() == math.inf


def test_psnr_matches_skimage_on_a_photo() -> None:
    x = load_photo("coffee")[:, :120, :160]
    y = (x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ours = float(psnr(x, y))
    theirs = peak_signal_noise_ratio(_u8(x), _u8(y), data_range=255)
    assert abs(ours - theirs) < 1e-9 and 25 < ours < 35


def test_ssim_identical_is_one_and_window_is_gaussian() -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ssim(x, x, reduction="none"), torch.ones(2, dtype=torch.float64))
    window = gaussian_window()
    assert window.numel() == 11 and abs(float(window.sum()) - 1) < 1e-12
    assert int(window.argmax()) == 5 and float(window[0]) < float(window[5])


def test_ssim_matches_skimage_on_random_images() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 40, 37, generator=gen)
    y = (0.6 * x + 0.4 * torch.rand(3, 40, 37, generator=gen)).clamp(0, 1)
    ours = float(ssim(x, y))
    assert abs(ours - _skimage_ssim(x, y)) < 1e-4
    assert 0.1 < ours < 0.99
    assert abs(ours - float(ssim(y, x))) < 1e-12  # symmetric


def test_ssim_matches_skimage_on_real_photos_and_batches() -> None:
    sharp = torch.stack(
        [load_photo("chelsea")[:, :96, :128], load_photo("astronaut")[:, 100:196, 100:228]]
    )
    blurry = blur_image(sharp, camera_shake_kernel(4, MILD))
    per_image = ssim(blurry, sharp, reduction="none")
    reference = [_skimage_ssim(blurry[i], sharp[i]) for i in range(2)]
    assert torch.allclose(per_image, torch.tensor(reference, dtype=torch.float64), atol=1e-4)
    assert abs(float(ssim(blurry, sharp)) - sum(reference) / 2) < 1e-4
    assert all(r < 0.95 for r in reference)  # the blur is visible to SSIM


def test_metric_input_checks() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="reduction"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), reduction="sum")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        psnr(torch.zeros(8, 8), torch.zeros(8, 8))


def test_lpips_without_the_package_raises_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    with pytest.raises(RuntimeError, match="not installed") as info:
        lpips_metric()
    message = str(info.value)
    assert "weights" in message and "alexnet" in message and "download" in message


def _fake_lpips(calls: list) -> types.ModuleType:
    module = types.ModuleType("lpips")

    class LPIPS(torch.nn.Module):
        def __init__(self, net: str, verbose: bool = True) -> None:
            super().__init__()
            calls.append(net)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            assert float(a.min()) >= -1 and float(a.max()) <= 1
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    module.LPIPS = LPIPS
    return module


def test_lpips_needs_the_backbone_checkpoint(monkeypatch, tmp_path) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "lpips", _fake_lpips(calls))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(RuntimeError, match="vgg16-397923af.pth not found"):
        lpips_metric("vgg")
    assert calls == []  # nothing was built, nothing downloaded
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    metric = lpips_metric("alex")
    assert calls == ["alex"]
    x = torch.zeros(2, 3, 8, 8)
    assert float(metric(x, x + 0.5)) == pytest.approx(1.0)  # [0,1] mapped to [-1,1]
    with pytest.raises(ValueError, match="net must be"):
        lpips_metric("resnet")
