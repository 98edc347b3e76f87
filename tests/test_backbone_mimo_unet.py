"""MIMO-UNet / MIMO-UNet+ twins against the facts recorded from the official models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.backbones.mimo_unet import BasicConv, MIMOUNet, MIMOUNetPlus

DATA = Path(__file__).parent / "data" / "backbones"
CASES = [(MIMOUNet, "MIMO-UNet"), (MIMOUNetPlus, "MIMO-UNetPlus")]


def facts(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def capture_outputs(
    model: nn.Module, names: list[str], inputs: Any
) -> tuple[dict[str, list[torch.Tensor]], Any]:
    """Run ``model(inputs)`` and return every output of the named modules (per call)."""
    modules = dict(model.named_modules())
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: seen[n].append(out))
        for n in names
    ]
    try:
        with torch.no_grad():
            out = model(inputs)
    finally:
        for h in handles:
            h.remove()
    return seen, out


@pytest.mark.parametrize(("cls", "name"), CASES)
def test_state_dict_matches_official(cls: type[nn.Module], name: str) -> None:
    f = facts(name)
    model = cls()
    sd = model.state_dict()
    assert list(sd) == list(f["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == f["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == f["params"]
    assert len(sd) == f["state_dict_num_entries"]
    unique = {id(t) for t in model.state_dict(keep_vars=True).values()}
    assert len(unique) == f["state_dict_unique_tensors"]


@pytest.mark.parametrize(("cls", "name"), CASES)
def test_module_output_shapes_at_256(cls: type[nn.Module], name: str) -> None:
    f = facts(name)
    with torch.device("meta"):
        model = cls().eval()
        x = torch.empty(1, 3, 256, 256)
    names = [m["name"] for m in f["modules"]]
    seen, out = capture_outputs(model, names, x)
    modules = dict(model.named_modules())
    for m in f["modules"]:
        calls = seen[m["name"]]
        assert len(calls) == m["calls_per_forward"], m["name"]
        assert all(list(t.shape) == [1, *m["out_shape_at_256"]] for t in calls), m["name"]
        assert type(modules[m["name"]]).__name__ == m["type"]
    assert [list(o.shape[1:]) for o in out] == f["output_shapes_at_256"]


@pytest.mark.parametrize("cls", [MIMOUNet, MIMOUNetPlus])
def test_outputs_are_heads_plus_nearest_downsampled_input(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = cls(num_res=1).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, list)
    assert [tuple(o.shape) for o in out] == [(2, 3, 8, 8), (2, 3, 16, 16), (2, 3, 32, 32)]
    # with the three image heads zeroed, each output is the nearest-downsampled input
    for head in (model.ConvsOut[0], model.ConvsOut[1], model.feat_extract[5]):
        nn.init.zeros_(head.main[0].weight)
        nn.init.zeros_(head.main[0].bias)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out[0], x[..., ::4, ::4])
    assert torch.equal(out[1], x[..., ::2, ::2])
    assert torch.equal(out[2], x)


def test_plus_equals_base_forward_in_eval() -> None:
    """MIMO-UNet+ differs only by depth and skip dropout (identity in eval)."""
    torch.manual_seed(0)
    plus = MIMOUNetPlus(num_res=2).eval()
    base = MIMOUNet(num_res=2).eval()
    base.load_state_dict(plus.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        for a, b in zip(plus(x), base(x), strict=True):
            assert torch.equal(a, b)


def test_plus_skip_dropout_in_train_mode() -> None:
    model = MIMOUNetPlus(num_res=1)
    assert isinstance(model.drop1, nn.Dropout2d) and model.drop1.p == 0.1
    assert isinstance(model.drop2, nn.Dropout2d) and model.drop2.p == 0.1
    x = torch.rand(1, 3, 16, 16)
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)[2]
        torch.manual_seed(2)
        b = model(x)[2]
    assert not torch.equal(a, b)


def test_skips_join_by_concatenation() -> None:
    """The input of ``Convs.0/1`` is ``cat([up-sampled decoder, AFF skip])``."""
    torch.manual_seed(0)
    model = MIMOUNet(num_res=1).eval()
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        model.Convs[i].register_forward_pre_hook(
            lambda _m, args, i=i: inputs.__setitem__(f"Convs.{i}", args[0])
        )
        for i in (0, 1)
    ]
    names = ["feat_extract.3", "feat_extract.4", "AFFs.0", "AFFs.1", "Decoder.1", "Decoder.2"]
    seen, _ = capture_outputs(model, names, torch.rand(1, 3, 32, 32))
    for h in handles:
        h.remove()
    level2 = torch.cat([seen["feat_extract.3"][0], seen["AFFs.1"][0]], dim=1)
    level1 = torch.cat([seen["feat_extract.4"][0], seen["AFFs.0"][0]], dim=1)
    assert inputs["Convs.0"].shape == (1, 128, 16, 16)
    assert torch.equal(inputs["Convs.0"], level2)
    assert inputs["Convs.1"].shape == (1, 64, 32, 32)
    assert torch.equal(inputs["Convs.1"], level1)
    assert seen["Decoder.1"][0].shape == (1, 64, 16, 16)
    assert seen["Decoder.2"][0].shape == (1, 32, 32, 32)


def test_only_convs_before_inplace_relu_are_modified() -> None:
    """Every module output stays as returned except the convolution inside a BasicConv
    that ends in ReLU(inplace=True); so level outputs can be hooked without a copy."""
    torch.manual_seed(0)
    model = MIMOUNet(num_res=2).eval()
    saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=n: saved.__setitem__(n, (out, out.clone())))
        for n, m in model.named_modules()
        if n
    ]
    with torch.no_grad():
        model(torch.rand(1, 3, 16, 16))
    for h in handles:
        h.remove()
    changed = {n for n, (out, copy) in saved.items() if not torch.equal(out, copy)}
    expected = {
        f"{n}.main.0"
        for n, m in model.named_modules()
        if isinstance(m, BasicConv) and isinstance(m.main[-1], nn.ReLU)
    }
    assert changed == expected
    for safe in ("Encoder.0", "Encoder.2", "Decoder.0", "Decoder.2", "AFFs.0", "AFFs.1"):
        assert safe in saved and safe not in changed


def test_input_size_is_checked() -> None:
    model = MIMOUNet(num_res=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(torch.rand(3, 32, 32))


def test_nearest_pyramid_matches_interpolate_default() -> None:
    """The forward's x_2 / x_4 are F.interpolate's default (nearest) halvings."""
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(F.interpolate(x, scale_factor=0.5), x[..., ::2, ::2])
