"""Padding to a multiple and tiled inference (sp_adapter.inference)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sp_adapter.inference import crop_back, pad_to_multiple, run_padded, run_tiled


def _image(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant", "circular"])
def test_pad_then_crop_back_is_identity(mode: str) -> None:
    x = _image(2, 3, 37, 50)
    padded, size = pad_to_multiple(x, 8, mode)
    assert padded.shape == (2, 3, 40, 56) and size == (37, 50)
    assert torch.equal(crop_back(padded, size), x)
    if mode == "reflect":
        assert torch.equal(padded[..., 37, :50], x[..., 35, :])  # mirrored about row 36


def test_padding_edge_cases() -> None:
    x = _image(1, 3, 16, 24)
    padded, size = pad_to_multiple(x, 8)
    assert padded is x and size == (16, 24)
    tiny = _image(1, 1, 3, 2)
    padded, _ = pad_to_multiple(tiny, 8)  # reflect impossible: replicate instead
    assert padded.shape == (1, 1, 8, 8) and torch.equal(padded[..., 7, 7], tiny[..., 2, 1])
    with pytest.raises(ValueError, match="4-D"):
        pad_to_multiple(torch.zeros(3, 8, 8), 8)
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(x, 0)
    with pytest.raises(ValueError, match="crop"):
        crop_back(torch.zeros(1, 1, 4, 4), (5, 4))


def test_run_padded_calls_fn_on_a_multiple_and_crops_back() -> None:
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c, 1, 1] = 1.0  # identity
    seen = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        return conv(t)

    x = _image(1, 3, 29, 45)
    with torch.no_grad():
        y = run_padded(fn, x, 16)
    assert seen == [(32, 48)]
    assert torch.equal(y, x)


def test_run_padded_list_outputs_need_select() -> None:
    x = _image(1, 3, 10, 12)

    def multi(t: torch.Tensor) -> list[torch.Tensor]:
        return [t * 0, t[..., ::2, ::2], t + 1]

    with pytest.raises(TypeError, match="select"):
        run_padded(multi, x, 4)
    torch.testing.assert_close(run_padded(multi, x, 4, select=-1), x + 1)
    torch.testing.assert_close(run_padded(multi, x, 4, select=lambda o: o[0]), x * 0)
    with pytest.raises(ValueError, match="padded input's size"):
        run_padded(multi, x, 4, select=1)
    with pytest.raises(ValueError, match="4-D"):
        run_padded(lambda t: t, x[0], 4)


def test_tiled_equals_whole_image_exactly_for_a_pointwise_fn() -> None:
    x = _image(2, 3, 100, 131, seed=1)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return t * 1.7 - t * t

    calls = []

    def counted(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape[-2:]))
        return fn(t)

    out = run_tiled(counted, x, tile=32, overlap=8, multiple=8)
    assert torch.equal(out, fn(x))
    assert len(calls) > 9 and all(h % 8 == 0 and w % 8 == 0 for h, w in calls)
    assert max(max(c) for c in calls) == 32


def _small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(  # receptive field 7x7 (radius 3)
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(8, 3, 3, padding=1),
    ).eval()


class _Strided(nn.Module):
    """Down- and up-sampling by 2: needs sides divisible by 2, receptive radius < 4."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 3, 2, stride=2)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(t)))


@pytest.mark.parametrize("net", [_small_net(3), _Strided()], ids=["conv", "strided"])
def test_tiled_matches_whole_image_for_a_small_conv_net(net: nn.Module) -> None:
    # receptive field 7 px < overlap / 2 = 8 px: within rounding of the whole-image run
    x = _image(1, 3, 90, 117, seed=2)
    with torch.inference_mode():
        whole = run_padded(net, x, 8)
        tiled = run_tiled(net, x, tile=40, overlap=16, multiple=8)
    assert tiled.shape == whole.shape == (1, 3, 90, 117)
    interior = (tiled - whole)[..., 8:-8, 8:-8].abs().max()
    assert float(interior) < 1e-5
    assert float((tiled - whole).abs().max()) < 1e-5  # borders too (see module docstring)


def test_tiling_matters_when_the_overlap_is_too_small() -> None:
    """Guard against a vacuous test: no overlap shows seams for the same net."""
    net = _small_net(3)
    x = _image(1, 3, 90, 117, seed=2)
    with torch.inference_mode():
        whole = run_padded(net, x, 8)
        seams = run_tiled(net, x, tile=40, overlap=0, multiple=8)
    assert float((seams - whole)[..., 8:-8, 8:-8].abs().max()) > 1e-3


def test_tiled_small_image_channels_and_errors() -> None:
    x = _image(1, 3, 20, 26, seed=3)
    to_gray = lambda t: t.mean(dim=1, keepdim=True)
    torch.testing.assert_close(run_tiled(to_gray, x, tile=64, overlap=16), to_gray(x))
    with pytest.raises(ValueError, match="4-D"):
        run_tiled(to_gray, x[0])
    with pytest.raises(ValueError, match="multiple"):
        run_tiled(to_gray, x, tile=30, multiple=8)
    with pytest.raises(ValueError, match="overlap"):
        run_tiled(to_gray, x, tile=32, overlap=32)
    with pytest.raises(TypeError, match="select"):
        run_tiled(lambda t: (t, t), x, tile=16, overlap=4)
