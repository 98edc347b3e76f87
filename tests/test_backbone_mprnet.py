"""The MPRNet twin against the facts read off the official model (tests/data/backbones).

Shapes at 256x256 are measured on the meta device (no compute); real forwards use
narrow models or 32x32 inputs, so the file runs in a few seconds on one core.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hook_probe import run_with_hooks, shapes
from torch import nn

from sp_adapter.backbones.mprnet import (
    MPRNet,
    MPRNetStage1,
    stage1_state_dict,
)
from sp_adapter.files.checkpoints import strip_module_prefix

DATA = Path(__file__).parent / "data" / "backbones"
FACTS: dict[str, Any] = json.loads((DATA / "MPRNet.json").read_text())
NARROW = dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)

# Image box (top, left, height, width as fractions) seen by each call of the modules that
# MPRNet runs on patches, in call order. Modules not listed run once on the whole image.
WHOLE = (0.0, 0.0, 1.0, 1.0)
QUADRANTS = [(0.0, 0.0, 0.5, 0.5), (0.0, 0.5, 0.5, 0.5), (0.5, 0.0, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5)]
HALVES = [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 0.5, 1.0)]
REGIONS = {
    "shallow_feat1": QUADRANTS,
    "stage1_encoder": QUADRANTS,
    "stage1_encoder.encoder_level3": QUADRANTS,
    "stage1_decoder": HALVES,
    "stage1_decoder.up32": HALVES,
    "stage1_decoder.up21": HALVES,
    "sam12": HALVES,
    "shallow_feat2": HALVES,
    "concat12": HALVES,
    "stage2_encoder": HALVES,
    "stage2_encoder.encoder_level1": HALVES,
    "stage2_decoder": [WHOLE],
    "stage2_decoder.up32": [WHOLE],
    "stage2_decoder.up21": [WHOLE],
    "sam23": [WHOLE],
    "stage3_orsnet": [WHOLE],
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: far faster than two when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> MPRNet:
    torch.manual_seed(0)
    return MPRNet().eval()


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return all(same(x, y) for x, y in zip(a, b, strict=True))


def test_state_dict_keys_and_shapes(model: MPRNet) -> None:
    sd = model.state_dict()
    assert list(sd) == list(FACTS["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == FACTS["state_dict"]


def test_param_count_and_sharing(model: MPRNet) -> None:
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == FACTS["params"] == 20_127_073
    assert len(sd) == FACTS["state_dict_num_entries"] == 316
    assert len({v.data_ptr() for v in sd.values()}) == FACTS["state_dict_unique_tensors"] == 262
    prelu_keys = [k for k, v in sd.items() if v.shape == (1,)]
    assert len(prelu_keys) == 55
    assert len({sd[k].data_ptr() for k in prelu_keys}) == 1
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == 1  # deduplicated


def test_loads_official_layout_strict(model: MPRNet) -> None:
    g = torch.Generator().manual_seed(0)
    ckpt = {f"module.{k}": torch.randn(s, generator=g) for k, s in FACTS["state_dict"].items()}
    for k in ckpt:
        if k.endswith("body.1.weight"):  # the one shared PReLU: the same value under 55 keys
            ckpt[k] = torch.full((1,), 0.3)
    twin = MPRNet()
    twin.load_state_dict(strip_module_prefix(ckpt), strict=True)
    key = "stage1_decoder.up21.up.1.weight"
    assert torch.equal(twin.state_dict()[key], ckpt["module." + key])


def test_module_shapes_and_calls_at_256_on_meta() -> None:
    with torch.device("meta"):
        meta = MPRNet()
    names = [m["name"] for m in FACTS["modules"]]
    x = torch.empty(1, 3, 256, 256, device="meta")
    out, calls = run_with_hooks(meta, names, x)
    assert shapes(out) == FACTS["output_shapes_at_256"]
    for m in FACTS["modules"]:
        got = calls[m["name"]]
        assert type(meta.get_submodule(m["name"])).__name__ == m["type"], m["name"]
        assert len(got) == m["calls_per_forward"], m["name"]
        assert all(s == m["out_shape_at_256"] for s in got), (m["name"], got)


def test_forward_conventions_at_32(model: MPRNet) -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out, calls = run_with_hooks(model, ["tail", "sam23", "sam12"], x, keep=True)
    assert isinstance(out, list) and len(out) == 3
    assert [tuple(o.shape) for o in out] == [(1, 3, 32, 32)] * 3
    # final first: tail + x, then the stage-2 SAM image, then the stage-1 SAM images
    torch.testing.assert_close(out[0], calls["tail"][0] + x, rtol=0, atol=0)
    torch.testing.assert_close(out[1], calls["sam23"][0][1], rtol=0, atol=0)
    stage1 = torch.cat([calls["sam12"][0][1], calls["sam12"][1][1]], dim=2)
    torch.testing.assert_close(out[2], stage1, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(30, 32), (32, 36), (20, 24)])
def test_size_check(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=rf"multiples of 8; got {size[0]}x{size[1]}"):
        MPRNet(**NARROW)(torch.rand(1, 3, *size))
    with pytest.raises(ValueError, match="B x C x H x W"):
        MPRNet(**NARROW)(torch.rand(3, 32, 32))


def test_patch_images_seen_by_stage1_and_stage2() -> None:
    """The image patches passed to the patch-wise modules, in call order."""
    net = MPRNet(**NARROW).eval()
    x = torch.rand(1, 3, 16, 24)
    seen: dict[str, list[torch.Tensor]] = {"shallow_feat1": [], "shallow_feat2": [], "sam12": []}
    handles = [
        net.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].append(args[1 if name == "sam12" else 0])
        )
        for name in seen
    ]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    quads = [x[..., :8, :12], x[..., :8, 12:], x[..., 8:, :12], x[..., 8:, 12:]]
    assert all(torch.equal(a, b) for a, b in zip(seen["shallow_feat1"], quads, strict=True))
    halves = [x[..., :8, :], x[..., 8:, :]]
    for name in ("shallow_feat2", "sam12"):
        assert all(torch.equal(a, b) for a, b in zip(seen[name], halves, strict=True)), name


def test_call_regions_by_perturbation() -> None:
    """Call n of a module changes iff a pixel inside REGIONS[module][n] changes."""
    torch.manual_seed(0)
    net = MPRNet(**NARROW).eval()
    h, w = 16, 24
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    names = list(REGIONS)
    _, base = run_with_hooks(net, names, x, keep=True)
    for name in names:
        assert len(base[name]) == len(REGIONS[name]), name
    for py, px in [(3, 5), (4, 17), (12, 2), (13, 20)]:  # one pixel in each quadrant
        x2 = x.clone()
        x2[..., py, px] += 1.0
        _, pert = run_with_hooks(net, names, x2, keep=True)
        for name in names:
            for n, (top, left, rh, rw) in enumerate(REGIONS[name]):
                inside = top * h <= py < (top + rh) * h and left * w <= px < (left + rw) * w
                changed = not same(base[name][n], pert[name][n])
                assert changed == inside, (name, n, (py, px))


def flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) module output."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flatten(o)]


def test_outputs_are_not_modified_in_place_later() -> None:
    """Every module output (any depth) is final when returned: safe to capture by hook."""
    net = MPRNet(**NARROW).eval()
    names = [n for n, _ in net.named_modules() if n]
    refs: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def keep(name: str):
        def fn(_m: nn.Module, _a: tuple, out: Any) -> None:
            for t in flatten(out):
                refs.append((name, t, t.detach().clone()))

        return fn

    handles = [net.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    with torch.no_grad():
        net(torch.rand(1, 3, 16, 16))
    for hd in handles:
        hd.remove()
    assert refs
    assert [name for name, t, c in refs if not torch.equal(t, c)] == []


def test_stage1_variant_reproduces_full_stage1_output() -> None:
    torch.manual_seed(0)
    full = MPRNet(**NARROW).eval()
    widths = {k: NARROW[k] for k in ("n_feat", "scale_unetfeats")}
    stage1 = MPRNetStage1(**widths).eval()
    stage1.load_state_dict(stage1_state_dict(full.state_dict()), strict=True)
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        ref = full(x)[2]
        out = stage1(x)
    assert isinstance(out, list) and len(out) == 1
    assert torch.equal(out[0], ref)

    whole = MPRNetStage1(**widths, patch_wise=False).eval()
    whole.load_state_dict(stage1.state_dict(), strict=True)
    with torch.no_grad():
        out_whole = whole(torch.rand(1, 3, 12, 20))  # whole image: multiple of 4 suffices
    assert out_whole[0].shape == (1, 3, 12, 20)
    with pytest.raises(ValueError, match="multiples of 8; got 12x20"):
        stage1(torch.rand(1, 3, 12, 20))


def test_stage1_variant_keys_are_full_model_keys() -> None:
    sd = MPRNetStage1().state_dict()
    assert len(sd) == 81
    assert len({v.data_ptr() for v in sd.values()}) == 67
    assert all(FACTS["state_dict"][k] == list(v.shape) for k, v in sd.items())
    wanted = [k for k in FACTS["state_dict"] if k in sd]
    assert list(sd) == wanted
    assert set(stage1_state_dict({f"module.{k}": 0 for k in FACTS["state_dict"]})) == set(sd)

