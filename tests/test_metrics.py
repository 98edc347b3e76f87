"""PSNR/SSIM conventions, agreement with scikit-image and with the 3-D SSIM's definition;
LPIPS fails loudly offline; ``sp-adapter eval --convention`` says which it used."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import types

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sp_adapter.data.blur import MILD, blur_image, camera_shake_kernel
from sp_adapter.errors import UnknownConventionError
from sp_adapter.metrics import (
    CONVENTIONS,
    gaussian_window,
    get_convention,
    lpips_metric,
    psnr,
    score,
    ssim,
    ssim3d,
)
from sp_adapter.metrics.core import _ssim3d_map, _ssim_map_valid
from sp_adapter.photos import load_photo


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


def test_images_on_0_255_scored_with_the_default_data_range_are_refused() -> None:
    """A 26 dB pair on [0, 255] with data_range=1 scored 17 dB before; now it is refused,
    naming data_range=255, which gives the true score."""
    from sp_adapter.errors import MetricInputError

    g = torch.Generator().manual_seed(0)
    sharp = torch.rand(1, 3, 32, 32, generator=g) * 200 + 28
    noisy = (sharp + torch.randn(1, 3, 32, 32, generator=g) * 12.8).clamp(0, 255)
    true = float(psnr(noisy, sharp, data_range=255))
    assert 25.5 < true < 26.5
    for metric in (psnr, ssim, ssim3d):
        with pytest.raises(MetricInputError, match=r"values in \[.*, 255\], far outside "
                                                   r"\[0, data_range=1\].*pass data_range=255"):
            metric(noisy, sharp)
        metric(noisy, sharp, data_range=255)  # the fitting range scores
    # a float output that overshoots [0, 1] a little is still scored, as before
    assert math.isfinite(float(psnr(sharp / 255 * 1.1 - 0.05, sharp / 255, quantize=False)))
    with pytest.raises(MetricInputError, match=r"pass data_range=65535"):
        psnr(sharp * 257, sharp * 257)


def test_non_finite_images_are_refused_not_scored() -> None:
    from sp_adapter.errors import MetricInputError

    x = torch.rand(2, 3, 16, 16)
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[1, 0, 3, 3] = bad
        with pytest.raises(MetricInputError, match=r"second image holds 1 NaN or infinite "
                                                   r"value \(of 1536\)"):
            psnr(x, y, reduction="none")
        with pytest.raises(MetricInputError, match="first image holds 1 NaN"):
            ssim(y, x)


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


# -- the 3-D SSIM (MATLAB's ssim on HxWx3, BasicSR's ssim3d) ---------------------------
def _ssim3d_by_definition(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two ``(H, W, C)`` volumes written out from the definition: at every voxel,
    local statistics under one 11x11x11 Gaussian (sigma 1.5, normalised over its 1331
    taps) over height, width and channel; a tap falling outside the volume reads the
    nearest voxel inside (edges replicated on all three axes, as MATLAB's imfilter
    'replicate' and BasicSR's Conv3d padding_mode='replicate' do; so along the 3-deep
    channel axis most taps read the first or last channel); the map averaged over all
    H*W*C voxels."""
    h, w, c = a.shape
    offsets = list(itertools.product(range(-5, 6), repeat=3))
    weights = np.array([math.exp(-(i * i + j * j + k * k) / (2 * 1.5**2)) for i, j, k in offsets])
    weights /= weights.sum()
    rows, cols, chans = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    stats = np.zeros((5, h, w, c))
    for weight, (i, j, k) in zip(weights, offsets, strict=True):
        r = np.clip(rows + i, 0, h - 1)
        q = np.clip(cols + j, 0, w - 1)
        d = np.clip(chans + k, 0, c - 1)
        va, vb = a[r, q, d], b[r, q, d]
        stats += weight * np.stack([va, vb, va * va, vb * vb, va * vb])
    mu_a, mu_b, aa, bb, ab = stats
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


@pytest.mark.parametrize("shape", [(3, 16, 16), (3, 13, 17), (1, 16, 16)])
def test_ssim3d_matches_its_definition(shape) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(shape, generator=gen)
    y = (0.5 * x + 0.5 * torch.rand(shape, generator=gen)).clamp(0, 1)
    ours = float(ssim3d(x, y))
    reference = _ssim3d_by_definition(_u8(x).astype(np.float64).reshape(shape[1], shape[2], -1),
                                      _u8(y).astype(np.float64).reshape(shape[1], shape[2], -1))
    assert abs(ours - reference) < 1e-6, (ours, reference)
    assert 0.2 < ours < 0.95
    assert float(ssim3d(x, x)) == pytest.approx(1.0, abs=1e-12)


def test_psnr_with_and_without_rounding() -> None:
    x = torch.full((3, 16, 16), 100.4 / 255, dtype=torch.float64)
    y = torch.full((3, 16, 16), 100.6 / 255, dtype=torch.float64)
    # rounded: 100 vs 101, MSE 1; float: MSE 0.2^2
    assert float(score(x, y, "matlab").psnr[0]) == pytest.approx(10 * math.log10(255**2), abs=1e-9)
    assert float(score(x, y, "basicsr").psnr[0]) == pytest.approx(
        10 * math.log10(255**2 / 0.04), abs=1e-6)
    assert float(score(x, y, "skimage").psnr[0]) == float(score(x, y, "matlab").psnr[0])
    # a difference rounding hides: both values round to 100
    z = torch.full((3, 16, 16), 100.2 / 255, dtype=torch.float64)
    assert score(x, z, "matlab").psnr[0].item() == math.inf
    assert score(x, z, "basicsr").psnr[0].item() == pytest.approx(
        10 * math.log10(255**2 / 0.04), abs=1e-6)
    # and SSIM follows the same switch
    gen = torch.Generator().manual_seed(4)
    noisy = (x + 0.3 / 255 * torch.rand(x.shape, generator=gen, dtype=torch.float64))
    assert float(score(noisy, x, "matlab").ssim[0]) != float(score(noisy, x, "basicsr").ssim[0])


def test_2d_and_3d_ssim_differ_on_rgb_and_agree_on_grey() -> None:
    sharp = load_photo("astronaut")[:, 100:164, 100:164]
    blurry = blur_image(sharp[None], camera_shake_kernel(4, MILD))[0]
    two_d, three_d = float(ssim(blurry, sharp)), float(ssim3d(blurry, sharp))
    assert abs(two_d - three_d) > 1e-3, (two_d, three_d)  # RGB: the window spans channels
    # greyscale replicated to three channels: the channel window sums to one over equal
    # channels, so each channel's 3-D map is the 2-D map with replicated edges; wherever the
    # 2-D window lies inside the image (the positions the 2-D convention averages) the two
    # maps agree. The means still differ: the 3-D convention also averages the border.
    grey_sharp, grey_blurry = sharp.mean(0, keepdim=True), blurry.mean(0, keepdim=True)
    a = (grey_blurry.expand(3, -1, -1)[None].double() * 255).round()
    b = (grey_sharp.expand(3, -1, -1)[None].double() * 255).round()
    inner = _ssim3d_map(a, b)[..., 5:-5, 5:-5]
    assert torch.allclose(inner, _ssim_map_valid(a, b), atol=1e-12, rtol=0)
    grey_3d = float(ssim3d(grey_blurry.expand(3, -1, -1), grey_sharp.expand(3, -1, -1)))
    assert grey_3d == pytest.approx(float(ssim3d(grey_blurry, grey_sharp)), abs=1e-12)
    assert abs(grey_3d - float(ssim(grey_blurry.expand(3, -1, -1),
                                    grey_sharp.expand(3, -1, -1)))) > 1e-4


def test_conventions_by_name() -> None:
    assert set(CONVENTIONS) == {"matlab", "basicsr", "skimage", "realblur"}
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 24, 24, generator=gen)
    y = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    skimage_scores = score(x, y, "skimage")
    assert torch.equal(skimage_scores.ssim, ssim(x, y, reduction="none"))
    assert torch.equal(score(x, y, "matlab").ssim, ssim3d(x, y, reduction="none"))
    assert torch.equal(score(x, y, "basicsr").ssim, ssim3d(x, y, quantize=False,
                                                           reduction="none"))
    assert get_convention(CONVENTIONS["basicsr"]) is CONVENTIONS["basicsr"]
    with pytest.raises(UnknownConventionError, match="choose one of matlab") as info:
        score(x, y, "matlb")
    assert isinstance(info.value, ValueError)


def test_evaluate_records_its_convention_and_time() -> None:
    from sp_adapter.train import evaluate

    sharp = torch.stack([load_photo("coffee")[:, :48, :48], load_photo("chelsea")[:, :48, :48]])
    blurry = blur_image(sharp, camera_shake_kernel(4, MILD))
    data = torch.utils.data.TensorDataset(blurry, sharp)
    default = evaluate(torch.nn.Identity(), data, "unet")
    matlab = evaluate(torch.nn.Identity(), data, "unet", convention="matlab")
    assert default.convention == "skimage" and matlab.convention == "matlab"
    assert default.ssim == pytest.approx(float(ssim(blurry, sharp)), abs=1e-12)
    assert matlab.ssim == pytest.approx(float(ssim3d(blurry, sharp)), abs=1e-12)
    assert default.psnr == matlab.psnr  # both round to 8 bits
    assert matlab.as_dict()["convention"] == "matlab"
    assert matlab.seconds_per_image is not None and matlab.seconds_per_image >= 0

    class Counting(torch.nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x

    model = Counting()
    evaluate(model, data, "unet", batch_size=1)
    assert model.calls == 2
    evaluate(model, data, "unet", batch_size=1, warmup=True)  # one untimed pass first
    assert model.calls == 2 + 3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A bare UNet (width 8) trained one step on the built-in photos."""
    from sp_adapter.cli import main

    run = tmp_path_factory.mktemp("eval") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["train", "--run-dir", str(run), "--steps", "1", "--batch", "1", "--crop",
                 "32", "--length", "2", "--width", "8", "--no-prior", "--alpha", "0",
                 "--perceptual", "none", "--val-limit", "1", "--no-progress"]) == 0
    torch.set_num_threads(before)
    return run


def test_eval_says_its_convention_and_writes_json(tiny_run, tmp_path, capsys) -> None:
    from sp_adapter.cli import main

    common = ["eval", "--run-dir", str(tiny_run), "--limit", "2", "--crop", "32",
              "--no-progress"]
    results = {}
    for convention in (None, "skimage", "basicsr"):
        out_file = tmp_path / f"{convention}.json"
        extra = [] if convention is None else ["--convention", convention]
        capsys.readouterr()
        assert main([*common, *extra, "--json", str(out_file)]) == 0
        out = capsys.readouterr().out
        report = json.loads(out_file.read_text())
        name = convention or "matlab"
        assert f"convention: {name} (" in out
        assert ("default for --dataset synthetic" in out) is (convention is None)
        assert report["convention"]["name"] == name
        model = report["models"][0]
        assert model["convention"] == name and len(model["per_image"]) == 2
        # the Table 1 row: method, structure, PSNR, SSIM, LPIPS ('-' offline), time
        row = re.search(r"^\| UNet \| multi-scale \| ([\d.]+) \| ([\d.]+) \| - \| ([\d.]+) \|$",
                        out, re.M)
        assert row and row.group(0) in report["table"]
        assert float(row.group(1)) == pytest.approx(model["psnr"], abs=0.005)
        assert float(row.group(2)) == pytest.approx(model["ssim"], abs=0.0005)
        assert float(row.group(3)) == pytest.approx(model["seconds_per_image"], abs=0.0005)
        results[name] = model
    assert results["matlab"]["psnr"] == results["skimage"]["psnr"]
    assert results["matlab"]["ssim"] != results["skimage"]["ssim"]
    assert results["matlab"]["psnr"] != results["basicsr"]["psnr"]
    # an existing --json file is kept unless --overwrite
    capsys.readouterr()
    assert main([*common, "--json", str(tmp_path / "skimage.json")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((tmp_path / "skimage.json").read_text())["convention"]["name"] == "skimage"
    assert main([*common, "--json", str(tmp_path / "skimage.json"), "--overwrite"]) == 0
    assert json.loads((tmp_path / "skimage.json").read_text())["convention"]["name"] == "matlab"
