"""Camera-shake kernels and the blur model (sp_adapter.data.blur)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from sp_adapter.data.blur import (
    MILD,
    SEVERE,
    BlurConfig,
    blur_image,
    blur_preset,
    camera_shake_kernel,
)


def _centre_of_mass(kernel: torch.Tensor) -> tuple[float, float]:
    k = kernel.double()
    idx = torch.arange(k.shape[0], dtype=torch.float64)
    return float((k.sum(1) * idx).sum()), float((k.sum(0) * idx).sum())


@pytest.mark.parametrize("config", [SEVERE, MILD], ids=["severe", "mild"])
def test_kernel_is_a_normalised_centred_psf_in_the_size_range(config: BlurConfig) -> None:
    sizes = set()
    for seed in range(40):
        k = camera_shake_kernel(seed, config)
        size = k.shape[0]
        sizes.add(size)
        assert k.dtype == torch.float32 and k.shape == (size, size)
        assert size % 2 == 1 and config.min_size <= size <= config.max_size
        assert abs(float(k.double().sum()) - 1.0) < 1e-6
        assert float(k.min()) >= 0.0
        row, col = _centre_of_mass(k)
        centre = (size - 1) / 2
        assert abs(row - centre) < 1e-3 and abs(col - centre) < 1e-3


def test_kernel_sizes_spread_over_the_range() -> None:
    sizes = {camera_shake_kernel(seed, SEVERE).shape[0] for seed in range(60)}
    assert len(sizes) >= 10
    assert min(sizes) <= 37 and max(sizes) >= 59


def test_kernel_is_a_long_connected_path() -> None:
    for seed in range(10):
        k = camera_shake_kernel(seed, SEVERE).numpy()
        size = k.shape[0]
        support = k > 0
        _, components = ndimage.label(support, structure=np.ones((3, 3)))
        assert components == 1, f"seed {seed}: path broken into {components} pieces"
        # a severe kernel is a stroke, not a dot: it reaches >= 80% of the half-width
        rows, cols = np.nonzero(support)
        reach = max(np.abs(rows - (size - 1) / 2).max(), np.abs(cols - (size - 1) / 2).max())
        assert reach >= 0.8 * (size - 1) / 2 - 1
        assert support.sum() > size


def test_kernel_is_seeded_and_deterministic() -> None:
    a = camera_shake_kernel(123)
    assert torch.equal(a, camera_shake_kernel(123))
    assert torch.equal(
        camera_shake_kernel(np.random.default_rng(7)), camera_shake_kernel(np.random.default_rng(7))
    )
    b = camera_shake_kernel(124)
    assert a.shape != b.shape or not torch.equal(a, b)
    # a shared generator moves on: consecutive draws differ
    rng = np.random.default_rng(0)
    c, d = camera_shake_kernel(rng), camera_shake_kernel(rng)
    assert c.shape != d.shape or not torch.equal(c, d)


def test_rng_type_is_checked() -> None:
    with pytest.raises(TypeError):
        camera_shake_kernel("seed")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        camera_shake_kernel(True)  # type: ignore[arg-type]


def test_presets_and_config_validation() -> None:
    assert (SEVERE.min_size, SEVERE.max_size) == (31, 65)
    assert (MILD.min_size, MILD.max_size) == (15, 31)
    assert blur_preset("severe") == SEVERE and blur_preset("mild") == MILD
    assert SEVERE.margin == 32
    with pytest.raises(ValueError, match="unknown blur preset"):
        blur_preset("extreme")
    with pytest.raises(dataclasses.FrozenInstanceError):
        SEVERE.min_size = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="odd"):
        BlurConfig(min_size=30, max_size=65)
    with pytest.raises(ValueError):
        BlurConfig(min_size=33, max_size=31)
    with pytest.raises(ValueError):
        BlurConfig(inertia=(0.5, 1.0))


def test_blur_is_a_true_convolution() -> None:
    # a kernel whose only tap is (r + 1, r + 2) shifts the image down 1 and right 2
    x = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0))
    k = torch.zeros(7, 7)
    k[4, 5] = 1.0
    y = blur_image(x, k)
    torch.testing.assert_close(y[:, 1:, 2:], x[:, :-1, :-2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding", ["reflect", "replicate"])
def test_blur_matches_direct_convolution_with_padding(padding: str) -> None:
    x = torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(1))
    k = camera_shake_kernel(3, MILD)
    r = k.shape[0] // 2
    reference = F.conv2d(
        F.pad(x[:, None], (r, r, r, r), mode=padding), k.flip(0, 1)[None, None]
    ).squeeze(1)
    y = blur_image(x, k, padding=padding)
    assert y.shape == x.shape
    torch.testing.assert_close(y, reference, atol=1e-5, rtol=0)


def test_blur_changes_the_image_and_keeps_constants() -> None:
    x = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(2))
    k = camera_shake_kernel(5, SEVERE)
    y = blur_image(x, k)
    assert float((y - x).abs().mean()) > 0.05  # not the identity
    assert float(y.std()) < 0.5 * float(x.std())  # white noise is strongly smoothed
    flat = torch.full((3, 80, 80), 0.3)
    torch.testing.assert_close(blur_image(flat, k), flat, atol=1e-5, rtol=0)


def test_noise_is_seeded_and_output_clamped() -> None:
    x = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(3))
    k = camera_shake_kernel(1, MILD)
    clean = blur_image(x, k)
    a = blur_image(x, k, noise_sigma=0.2, rng=np.random.default_rng(5))
    b = blur_image(x, k, noise_sigma=0.2, rng=np.random.default_rng(5))
    c = blur_image(x, k, noise_sigma=0.2, rng=np.random.default_rng(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float((a - clean).abs().mean()) > 0.05
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_batched_blur_equals_per_image_and_input_checks() -> None:
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    k = camera_shake_kernel(2, MILD)
    y = blur_image(x, k)
    torch.testing.assert_close(y[1], blur_image(x[1], k), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="reflect padding"):
        blur_image(torch.rand(3, 10, 10), camera_shake_kernel(0, SEVERE))
    assert blur_image(torch.rand(3, 10, 10), camera_shake_kernel(0, SEVERE), padding="replicate")[
        0
    ].shape == (10, 10)
    with pytest.raises(ValueError, match="odd"):
        blur_image(x, torch.ones(4, 4) / 16)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        blur_image(torch.rand(40, 40), k)
