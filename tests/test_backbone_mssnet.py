"""The MSSNet twin (three sizes) against the facts read off the official model.

Shapes at 256x256 are measured on the meta device (no compute); real forwards run at
32x32 or with the small widths, so the file runs in a few seconds on one core.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hook_probe import run_with_hooks, shapes
from torch import nn

from sp_adapter.backbones.mssnet import DeblurNet, mssnet, mssnet_large, mssnet_small

DATA = Path(__file__).parent / "data" / "backbones"
SIZES = {"small": "MSSNet_small", "base": "MSSNet", "large": "MSSNet_large"}
FACTS: dict[str, dict[str, Any]] = {
    size: json.loads((DATA / f"{name}.json").read_text()) for size, name in SIZES.items()
}
TYPE_NAMES = {"Tail_shuffle": "TailShuffle"}  # the one class renamed in the twin


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: far faster than two when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base() -> DeblurNet:
    torch.manual_seed(0)
    return DeblurNet().eval()


@pytest.mark.parametrize("size", list(SIZES))
def test_state_dict_params_and_sharing(size: str) -> None:
    facts = FACTS[size]
    model = mssnet(size)
    sd = model.state_dict()
    assert list(sd) == list(facts["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == facts["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == facts["params"]
    assert len(sd) == facts["state_dict_num_entries"] == 328
    assert len({v.data_ptr() for v in sd.values()}) == facts["state_dict_unique_tensors"] == 242
    prelu_keys = [k for k, v in sd.items() if v.shape == (1,)]
    assert len(prelu_keys) == 87
    assert len({sd[k].data_ptr() for k in prelu_keys}) == 1


def test_size_constructors() -> None:
    assert FACTS["small"]["params"] == 6_756_161
    assert FACTS["base"]["params"] == 15_614_497
    assert FACTS["large"]["params"] == 28_182_041
    with torch.device("meta"):
        small, large = mssnet_small(), mssnet_large()
    assert small.shallow_feat1[0].out_channels == 20
    assert small.E1_1.encoder_level3[0].body[0].out_channels == 100
    assert large.shallow_feat1[0].out_channels == 80
    assert large.E1_1.encoder_level3[0].body[0].out_channels == 180
    with pytest.raises(ValueError, match="unknown MSSNet size"):
        mssnet("huge")


def test_loads_official_layout_strict() -> None:
    g = torch.Generator().manual_seed(0)
    ckpt = {k: torch.randn(s, generator=g) for k, s in FACTS["small"]["state_dict"].items()}
    for k in ckpt:
        if k.endswith("body.1.weight"):  # the one shared PReLU: the same value under 87 keys
            ckpt[k] = torch.full((1,), 0.3)
    twin = mssnet_small()
    twin.load_state_dict(ckpt, strict=True)
    assert torch.equal(twin.D3_3.up21.up[1].weight, ckpt["D3_3.up21.up.1.weight"])


@pytest.mark.parametrize("size", list(SIZES))
def test_module_shapes_and_calls_at_256_on_meta(size: str) -> None:
    facts = FACTS[size]
    with torch.device("meta"):
        meta = mssnet(size)
    names = [m["name"] for m in facts["modules"]]
    out, calls = run_with_hooks(meta, names, torch.empty(1, 3, 256, 256, device="meta"))
    assert shapes(out) == facts["output_shapes_at_256"]
    for m in facts["modules"]:
        got = calls[m["name"]]
        kind = type(meta.get_submodule(m["name"])).__name__
        assert kind == TYPE_NAMES.get(m["type"], m["type"]), m["name"]
        assert len(got) == m["calls_per_forward"], m["name"]
        assert all(s == m["out_shape_at_256"] for s in got), (m["name"], got)


def test_forward_conventions_at_32(base: DeblurNet) -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tails = ["tail1_1", "tail2_1", "tail2_2", "tail3_1", "tail3_2", "tail3_3"]
    out, calls = run_with_hooks(base, tails, x, keep=True)
    assert isinstance(out, list) and len(out) == 6
    assert [tuple(o.shape) for o in out] == [(1, 3, 16, 16)] + [(1, 3, 32, 32)] * 5
    # order [res1_1, res2_1, res2_2, res3_1, res3_2, res3_3]: each = its tail + the input
    # (res1_1: + the input resized by 0.5, bilinear with align_corners=True); final last
    half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)
    torch.testing.assert_close(out[0], calls["tail1_1"][0] + half, rtol=0, atol=0)
    for o, name in zip(out[1:], tails[1:], strict=True):
        torch.testing.assert_close(o, calls[name][0] + x, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(40, 48), (32, 24), (8, 8), (33, 32)])
def test_size_check(size: tuple[int, int]) -> None:
    with torch.device("meta"):
        net = mssnet_small()
    with pytest.raises(ValueError, match=rf"multiples of 16; got {size[0]}x{size[1]}"):
        net(torch.empty(1, 3, *size, device="meta"))
    with pytest.raises(ValueError, match="B x C x H x W"):
        net(torch.empty(3, 32, 32, device="meta"))


def flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) module output."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flatten(o)]


def test_outputs_are_not_modified_in_place_later() -> None:
    """Every module output (any depth) is final when returned: safe to capture by hook."""
    net = mssnet_small().eval()
    refs: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def keep(name: str):
        def fn(_m: nn.Module, _a: tuple, out: Any) -> None:
            for t in flatten(out):
                refs.append((name, t, t.detach().clone()))

        return fn

    handles = [m.register_forward_hook(keep(n)) for n, m in net.named_modules() if n]
    with torch.no_grad():
        net(torch.rand(1, 3, 32, 32))
    for h in handles:
        h.remove()
    assert refs
    assert [name for name, t, c in refs if not torch.equal(t, c)] == []


def test_pixel_unshuffle_layout() -> None:
    """Channel ``4c + 2dy + dx`` holds pixel ``(2i + dy, 2j + dx)`` of channel ``c``: the
    layout of the official grouped-convolution unshuffle."""
    x = torch.rand(1, 3, 8, 12)
    with torch.device("meta"):
        unshuffle = mssnet_small().pixel_unshuffle  # no weights
    y = unshuffle(x)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                assert torch.equal(y[:, 4 * c + 2 * dy + dx], x[:, c, dy::2, dx::2])
