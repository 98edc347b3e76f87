"""NAFNet / NAFNetLocal twins against the facts recorded from the official models, and
through ``sp_adapter.wrap`` with their adapter (tiny widths)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sp_adapter as sp
from sp_adapter.adapters import match
from sp_adapter.backbones.nafnet import LocalAvgPool2d, NAFNet, NAFNetLocal
from sp_adapter.prior.embedding import SemanticAttentionTransform

DATA = Path(__file__).parent / "data" / "backbones"
GOPRO = dict(middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1])
TINY = dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1])


def facts(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def _tiny(cls: type[nn.Module] = NAFNet, **extra: Any) -> nn.Module:
    torch.manual_seed(0)
    model = cls(**TINY, **extra).eval()
    # NAFBlock's beta/gamma start at zero (every block the identity): give them values so
    # the tests see the whole network compute
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("cls", [NAFNet, NAFNetLocal])
@pytest.mark.parametrize("width", [64, 32])
def test_state_dict_matches_official(cls: type[nn.Module], width: int) -> None:
    f = facts(f"NAFNet-GoPro-width{width}")
    assert f["constructor"] == dict(img_channel=3, width=width, **GOPRO)
    model = cls(**f["constructor"])
    sd = model.state_dict()
    assert list(sd) == list(f["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == f["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == f["params"]
    assert len({id(t) for t in model.state_dict(keep_vars=True).values()}) == f[
        "state_dict_unique_tensors"]


def test_module_output_shapes_at_256() -> None:
    f = facts("NAFNet-GoPro-width64")
    with torch.device("meta"):
        model = NAFNet(**f["constructor"]).eval()
        x = torch.empty(1, 3, 256, 256)
    modules = dict(model.named_modules())
    seen: dict[str, list[tuple]] = {n: [] for n in f["modules"]}
    for n in f["modules"]:
        modules[n].register_forward_hook(
            lambda _m, args, out, n=n: seen[n].append((args[0].shape, out.shape)))
    with torch.no_grad():
        out = model(x)
    for n, m in f["modules"].items():
        assert len(seen[n]) == m["calls_per_forward"], n
        assert [list(s) for s in seen[n][0]] == [m["input_shape"], m["output_shape"]], n
        assert type(modules[n]).__name__ == m["type"], n
    assert list(out.shape) == f["output_shape_at_256"]


def test_pads_to_16_inside_forward_and_crops_back() -> None:
    """Any size works: zero padding at the bottom/right to a multiple of 16, cropped."""
    model = _tiny()
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        out = model(x)
        padded = model(F.pad(x, (0, 3, 0, 11)))
    assert out.shape == x.shape
    assert torch.equal(out, padded[..., :37, :45])
    assert model.padder_size == 16


def test_skip_is_added_after_each_up() -> None:
    """The input of ``decoders.i`` is ``ups.i(x) + encoders.(3 - i)(...)``."""
    model = _tiny()
    outs: dict[str, torch.Tensor] = {}
    ins: dict[str, torch.Tensor] = {}
    for i in range(4):
        for n in (f"ups.{i}", f"encoders.{i}"):
            model.get_submodule(n).register_forward_hook(
                lambda _m, _a, o, n=n: outs.__setitem__(n, o))
        model.decoders[i].register_forward_pre_hook(
            lambda _m, a, i=i: ins.__setitem__(f"decoders.{i}", a[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 48))
    for i in range(4):
        assert torch.equal(ins[f"decoders.{i}"], outs[f"ups.{i}"] + outs[f"encoders.{3 - i}"])
        assert ins[f"decoders.{i}"].shape[1] == 8 * 2 ** (3 - i)


def test_local_pool_is_a_box_mean_edge_padded() -> None:
    x = torch.rand(2, 4, 20, 27)
    pool = LocalAvgPool2d((6, 9))
    expected = F.pad(F.avg_pool2d(x, (6, 9), stride=1), (4, 4, 2, 3), mode="replicate")
    assert torch.allclose(pool(x), expected, atol=1e-5)
    assert torch.equal(LocalAvgPool2d((20, 27))(x), x.mean((2, 3), keepdim=True))


def test_fast_local_pool_keeps_size_and_constants() -> None:
    """The official fast approximation: the input's size, a constant stays that constant."""
    pool = LocalAvgPool2d((12, 12), fast_imp=True, max_r=(2, 2))
    x = torch.full((1, 2, 40, 30), 0.7)
    assert pool(x).shape == x.shape
    assert torch.allclose(pool(x), x, atol=1e-5)
    model = NAFNetLocal(**TINY, train_size=(1, 3, 32, 32), fast_imp=True)
    assert model.encoders[0][0].sca[0].fast_imp
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 48)).shape == (1, 3, 64, 48)


def test_local_converter_windows_follow_the_training_size() -> None:
    """The window of each block is 1.5x its feature size at ``train_size`` (GoPro: 384 at
    full resolution, 24 at 1/16); the state dict is NAFNet's."""
    model = NAFNetLocal(width=8, enc_blk_nums=[1, 1, 1, 2], dec_blk_nums=[1, 1, 1, 1])
    assert model.encoders[0][0].sca[0].kernel_size == (384, 384)
    assert model.encoders[3][1].sca[0].kernel_size == (48, 48)
    assert model.middle_blks[0].sca[0].kernel_size == (24, 24)
    assert model.decoders[3][0].sca[0].kernel_size == (384, 384)
    assert not model.training
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert pools == []
    assert list(model.state_dict()) == list(NAFNet(width=8, enc_blk_nums=[1, 1, 1, 2],
                                                   dec_blk_nums=[1, 1, 1, 1]).state_dict())


def test_local_equals_global_up_to_the_training_size_and_differs_beyond() -> None:
    base = _tiny()
    local = NAFNetLocal(**TINY, train_size=(1, 3, 32, 32)).eval()
    local.load_state_dict(base.state_dict(), strict=True)
    small, big = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(local(small), base(small))
        assert not torch.allclose(local(big), base(big), atol=1e-4)


@pytest.mark.parametrize("cls", [NAFNet, NAFNetLocal])
def test_wrapped_is_bit_exact_at_init_at_any_size_and_unwrap_is_exact(cls, teacher) -> None:
    extra = {"train_size": (1, 3, 32, 32)} if cls is NAFNetLocal else {}
    model = _tiny(cls, **extra)
    state = copy.deepcopy(model.state_dict())
    x = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
        sp.wrap(model, teacher=teacher)
        wrapped = model(x)
    assert model.sp_prior.backbone == "NAFNet"  # NAFNetLocal: the same network at test time
    assert [lv.site for lv in model.sp_prior.levels.values()] == ["ups.3", "ups.2", "ups.1"]
    assert torch.equal(wrapped, reference)
    sp.unwrap(model)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    restored = model.state_dict()
    assert list(restored) == list(state)
    assert all(torch.equal(restored[k], state[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(model(x), reference)


@pytest.mark.parametrize("cls", [NAFNet, NAFNetLocal])
def test_one_step_gives_gradients_in_every_sat_layer(cls, teacher) -> None:
    extra = {"train_size": (1, 3, 32, 32)} if cls is NAFNetLocal else {}
    model = _tiny(cls, **extra).train()
    sp.wrap(model, ["level1", "level2", "level3", "level4"], teacher=teacher)
    blurry = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    sharp = torch.rand_like(blurry)
    loss = F.l1_loss(model(blurry), sharp) + 0.1 * sp.prior_loss(model, sharp)
    loss.backward()
    sats = [m for m in model.sp_prior.modules() if isinstance(m, SemanticAttentionTransform)]
    assert len(sats) == 4
    for sat in sats:
        assert sat.conv1.weight.grad.abs().sum() > 0
        assert sat.conv2.weight.grad.abs().sum() > 0


def test_level_map_table() -> None:
    model = NAFNet(width=16, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1])
    _, bmap = match(model)
    assert bmap.default_levels == ("level1", "level2", "level3")
    got = {n: (lv.site, lv.skip, lv.channels, lv.reduction) for n, lv in bmap.levels.items()}
    assert got == {
        "level1": ("ups.3", "encoders.0", 16, 1),
        "level2": ("ups.2", "encoders.1", 32, 2),
        "level3": ("ups.1", "encoders.2", 64, 4),
        "level4": ("ups.0", "encoders.3", 128, 8),
    }


def _load_example(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_example_from_a_basicsr_checkpoint(tmp_path) -> None:
    """BasicSR ``{'params': sd}`` in; step 0 equals the published model; only the prior is
    trained and saved; it re-attaches to a fresh NAFNet and to NAFNetLocal."""
    published = _tiny()
    checkpoint = tmp_path / "NAFNet-GoPro-width8.pth"
    torch.save({"params": published.state_dict()}, checkpoint)  # the BasicSR format
    out = tmp_path / "prior"
    result = _load_example("finetune_nafnet").main([
        "--checkpoint", str(checkpoint), "--out", str(out), "--width", "8",
        "--enc-blk-nums", "1", "1", "1", "1", "--steps", "3", "--crop", "32", "--batch", "2",
        "--lr", "1e-3",
    ])
    assert result["exact_at_step0"]
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors"}
    trained = {k: v for k, v in result["model"].state_dict().items() if not k.startswith("sp_")}
    reference = published.state_dict()
    assert list(trained) == list(reference)
    assert all(torch.equal(trained[k].cpu(), reference[k]) for k in trained)
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    tuned = result["model"].eval()
    with torch.no_grad():
        expected = tuned(x)
        bare = published(x)
    assert not torch.allclose(expected, bare, atol=1e-6)  # the prior was trained
    for cls, extra in ((NAFNet, {}), (NAFNetLocal, {"train_size": (1, 3, 64, 64)})):
        fresh = cls(**TINY, **extra)
        fresh.load_state_dict(torch.load(checkpoint, weights_only=True)["params"], strict=True)
        sp.from_pretrained(out, model=fresh.eval())
        with torch.no_grad():
            got = fresh(x)
        # 40 px is under the local converter's 96 px window: both compute the same
        assert torch.allclose(got, expected, atol=1e-6), cls.__name__


@pytest.mark.parametrize(("name", "width"), [("nafnet", 32), ("nafnet-64", 64)])
def test_training_table_builds_the_gopro_models(name: str, width: int) -> None:
    from sp_adapter.train.backbones import backbone_spec

    with torch.device("meta"):
        model = backbone_spec(name).build()
    f = facts(f"NAFNet-GoPro-width{width}")
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == f["state_dict"]
    assert backbone_spec(name).size_multiple == 1
