"""DeepDeblur MSResNet twin against the facts recorded from the official model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sp_adapter.backbones.deepdeblur import (
    MSResNet,
    ResBlock,
    gaussian_pyramid,
    to_input_pyramid,
)

DATA = Path(__file__).parent / "data" / "backbones"
TYPE_NAMES = {"conv_end": "ConvEnd"}  # official class name -> ours


def facts() -> dict[str, Any]:
    return json.loads((DATA / "DeepDeblur_MSResNet.json").read_text())


def small(**kwargs: Any) -> MSResNet:
    torch.manual_seed(0)
    return MSResNet(**{"n_resblocks": 2, "n_feats": 8, **kwargs}).eval()


def test_state_dict_matches_official() -> None:
    f = facts()
    model = MSResNet()
    sd = model.state_dict()
    assert list(sd) == list(f["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == f["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == f["params"]
    assert len(sd) == f["state_dict_num_entries"]
    unique = {id(t) for t in model.state_dict(keep_vars=True).values()}
    assert len(unique) == f["state_dict_unique_tensors"]
    assert model.conv_end_models[0] is None and len(model.conv_end_models) == 3


def test_module_output_shapes_at_256() -> None:
    f = facts()
    with torch.device("meta"):
        model = MSResNet().eval()
        pyramid = to_input_pyramid(torch.empty(1, 3, 256, 256))
    modules = dict(model.named_modules())
    seen: dict[str, list[torch.Size]] = {m["name"]: [] for m in f["modules"]}
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: seen[n].append(out.shape))
        for n in seen
    ]
    with torch.no_grad():
        out = model(pyramid)
    for h in handles:
        h.remove()
    for m in f["modules"]:
        assert len(seen[m["name"]]) == m["calls_per_forward"], m["name"]
        assert all(list(s) == [1, *m["out_shape_at_256"]] for s in seen[m["name"]]), m["name"]
        assert type(modules[m["name"]]).__name__ == TYPE_NAMES.get(m["type"], m["type"])
    assert [list(o.shape[1:]) for o in out] == f["output_shapes_at_256"]


def test_default_model_forward_small_input() -> None:
    torch.manual_seed(0)
    model = MSResNet().eval()
    with torch.no_grad():
        out = model(to_input_pyramid(torch.rand(1, 3, 16, 16)))
    assert isinstance(out, list)
    assert [tuple(o.shape) for o in out] == [(1, 3, 16, 16), (1, 3, 8, 8), (1, 3, 4, 4)]


def test_callers_list_is_not_modified() -> None:
    model = small()
    pyramid = to_input_pyramid(torch.rand(2, 3, 32, 32))
    before = list(pyramid)
    copies = [t.clone() for t in pyramid]
    with torch.no_grad():
        out = model(pyramid)
    assert [tuple(o.shape) for o in out] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    assert all(a is b for a, b in zip(pyramid, before, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(pyramid, copies, strict=True))


@pytest.mark.parametrize("rgb_range", [255.0, 1.0])
def test_output_is_tail_plus_mean_without_input_residual(rgb_range: float) -> None:
    model = small(rgb_range=rgb_range)
    for body in model.body_models:
        nn.init.zeros_(body.body[-1].weight)
        nn.init.zeros_(body.body[-1].bias)
    pyramid = to_input_pyramid(torch.rand(1, 3, 16, 16), rgb_range=rgb_range)
    with torch.no_grad():
        out = model(pyramid)
    for o in out:
        assert torch.equal(o, torch.full_like(o, rgb_range / 2))


def test_scales_run_coarse_to_fine_with_concatenated_inputs() -> None:
    model = small()
    inputs: dict[int, torch.Tensor] = {}
    ups: dict[int, torch.Tensor] = {}
    order: list[str] = []

    def record_input(s: int) -> Any:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs[s] = args[0]
            order.append(f"b{s}")

        return hook

    def record_up(s: int) -> Any:
        def hook(_m: nn.Module, _args: Any, out: torch.Tensor) -> None:
            ups[s] = out
            order.append(f"c{s}")

        return hook

    handles = [model.body_models[s].register_forward_pre_hook(record_input(s)) for s in range(3)]
    handles += [model.conv_end_models[s].register_forward_hook(record_up(s)) for s in (1, 2)]
    pyramid = to_input_pyramid(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        model(pyramid)
    for h in handles:
        h.remove()
    assert order == ["b2", "c2", "b1", "c1", "b0"]
    assert torch.equal(inputs[2], pyramid[2] - 127.5)
    assert torch.equal(inputs[1], torch.cat([pyramid[1] - 127.5, ups[2]], dim=1))
    assert torch.equal(inputs[0], torch.cat([pyramid[0] - 127.5, ups[1]], dim=1))
    assert ups[2].shape == (1, 3, 16, 16) and ups[1].shape == (1, 3, 32, 32)


def test_only_first_resblock_convs_are_modified_in_place() -> None:
    model = small()
    saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=n: saved.__setitem__(n, (out, out.clone())))
        for n, m in model.named_modules()
        if n and m is not None
    ]
    with torch.no_grad():
        model(to_input_pyramid(torch.rand(1, 3, 16, 16)))
    for h in handles:
        h.remove()
    changed = {n for n, (out, copy) in saved.items() if not torch.equal(out, copy)}
    expected = {f"{n}.body.0" for n, m in model.named_modules() if isinstance(m, ResBlock)}
    assert changed == expected


def test_input_checks() -> None:
    model = small()
    with pytest.raises(TypeError, match="list"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="3 input scales"):
        model(to_input_pyramid(torch.rand(1, 3, 16, 16), n_scales=2))
    with pytest.raises(ValueError, match="exactly twice"):
        model(to_input_pyramid(torch.rand(1, 3, 30, 32)))


def test_from_args() -> None:
    args = SimpleNamespace(rgb_range=1, n_resblocks=1, n_feats=4, kernel_size=3, n_scales=2)
    model = MSResNet.from_args(args)
    assert model.mean == 0.5 and len(model.body_models) == 2
    assert model.body_models[0].body[0].weight.shape == (4, 6, 3, 3)
    assert model.conv_end_models[1].uppath[0].weight.shape == (12, 3, 5, 5)


def test_gaussian_pyramid_sizes_and_constants() -> None:
    x = torch.full((1, 3, 30, 22), 7.0)
    levels = gaussian_pyramid(x, n_scales=3)
    assert [tuple(t.shape[-2:]) for t in levels] == [(30, 22), (15, 11), (8, 6)]
    assert levels[0] is x
    for t in levels:
        assert torch.allclose(t, torch.full_like(t, 7.0))


@pytest.mark.parametrize("size", [(36, 44), (30, 21)])
def test_gaussian_pyramid_matches_scikit_image(size: tuple[int, int]) -> None:
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    img = (rng.random((*size, 3)) * 255).astype(np.float32)  # the official float32 0..255
    expected = list(transform.pyramid_gaussian(img, max_layer=2, channel_axis=-1))
    got = gaussian_pyramid(torch.from_numpy(img).permute(2, 0, 1)[None], n_scales=3)
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected, strict=True):
        e_t = torch.from_numpy(np.ascontiguousarray(e.transpose(2, 0, 1))).float()[None]
        assert g.shape == e_t.shape
        assert torch.allclose(g, e_t, atol=1e-3, rtol=0)
