"""Restormer twin against the facts recorded from the official model, and through
``sp_adapter.wrap`` with its adapter (tiny settings)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sp_adapter as sp
from sp_adapter.backbones.restormer import Restormer
from sp_adapter.prior.embedding import SemanticAttentionTransform

DATA = Path(__file__).parent / "data" / "backbones"
TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4])


def facts() -> dict:
    return json.loads((DATA / "Restormer.json").read_text())


def _tiny() -> Restormer:
    torch.manual_seed(0)
    return Restormer(**TINY).eval()


def test_state_dict_matches_official() -> None:
    f = facts()
    model = Restormer()
    sd = model.state_dict()
    assert list(sd) == list(f["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == f["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == f["params"]
    assert len({id(t) for t in model.state_dict(keep_vars=True).values()}) == f[
        "state_dict_unique_tensors"]


def test_module_output_shapes_at_256() -> None:
    f = facts()
    with torch.device("meta"):
        model = Restormer().eval()
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


def test_skips_join_by_concatenation() -> None:
    """The inputs of ``reduce_chan_level3/2`` and ``decoder_level1`` are
    ``cat(up-sampled decoder, encoder)``."""
    model = _tiny()
    outs: dict[str, torch.Tensor] = {}
    ins: dict[str, torch.Tensor] = {}
    for n in ("up4_3", "up3_2", "up2_1", "encoder_level1", "encoder_level2", "encoder_level3"):
        model.get_submodule(n).register_forward_hook(
            lambda _m, _a, o, n=n: outs.__setitem__(n, o))
    for n in ("reduce_chan_level3", "reduce_chan_level2", "decoder_level1"):
        model.get_submodule(n).register_forward_pre_hook(
            lambda _m, a, n=n: ins.__setitem__(n, a[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 24))
    pairs = {"reduce_chan_level3": ("up4_3", "encoder_level3"),
             "reduce_chan_level2": ("up3_2", "encoder_level2"),
             "decoder_level1": ("up2_1", "encoder_level1")}
    for site, (up, enc) in pairs.items():
        assert torch.equal(ins[site], torch.cat([outs[up], outs[enc]], 1)), site
    assert [ins[s].shape[1] for s in pairs] == [64, 32, 16]


def test_input_size_is_checked() -> None:
    with pytest.raises(ValueError, match="multiples of 8; got 30x32"):
        _tiny()(torch.rand(1, 3, 30, 32))


def test_bias_free_norm_and_dual_pixel_variant_build() -> None:
    model = Restormer(**TINY, LayerNorm_type="BiasFree", inp_channels=6, dual_pixel_task=True)
    assert "encoder_level1.0.norm1.body.bias" not in model.state_dict()
    assert "skip_conv.weight" in model.state_dict()
    with torch.no_grad():
        assert model(torch.rand(1, 6, 16, 16)).shape == (1, 3, 16, 16)


def test_wrapped_is_bit_exact_at_init_and_unwrap_is_exact(teacher) -> None:
    model = _tiny()
    state = copy.deepcopy(model.state_dict())
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
        sp.wrap(model, teacher=teacher)
        wrapped = model(x)
    assert model.sp_prior.backbone == "Restormer"
    levels = model.sp_prior.levels
    assert [(lv.site, lv.channels, lv.on_input) for lv in levels.values()] == [
        ("decoder_level1", 16, True), ("reduce_chan_level2", 32, True),
        ("reduce_chan_level3", 64, True)]
    assert torch.equal(wrapped, reference)
    sp.unwrap(model)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    restored = model.state_dict()
    assert list(restored) == list(state)
    assert all(torch.equal(restored[k], state[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(model(x), reference)


def test_one_step_gives_gradients_in_every_sat_layer(teacher) -> None:
    model = _tiny().train()
    sp.wrap(model, teacher=teacher)
    blurry = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sharp = torch.rand_like(blurry)
    loss = F.l1_loss(model(blurry), sharp) + 0.1 * sp.prior_loss(model, sharp)
    loss.backward()
    sats = [m for m in model.sp_prior.modules() if isinstance(m, SemanticAttentionTransform)]
    assert len(sats) == 3
    for sat in sats:
        assert sat.conv1.weight.grad.abs().sum() > 0
        assert sat.conv2.weight.grad.abs().sum() > 0


def test_training_table_builds_the_published_model() -> None:
    from sp_adapter.train.backbones import backbone_spec

    with torch.device("meta"):
        model = backbone_spec("restormer").build()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == facts()["state_dict"]
    assert backbone_spec("restormer").size_multiple == 8
