"""Every backbone of Table 1 through ``sp_adapter.wrap`` with its adapter (small widths)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import sp_adapter as sp
from sp_adapter.backbones.deepdeblur import MSResNet, to_input_pyramid
from sp_adapter.backbones.mimo_unet import MIMOUNet, MIMOUNetPlus
from sp_adapter.backbones.mprnet import MPRNet, MPRNetStage1
from sp_adapter.backbones.mssnet import mssnet_small
from sp_adapter.backbones.unet import UNet
from sp_adapter.prior.embedding import SemanticAttentionTransform

SIZE = 32


def _image_inputs(x):
    return (x,)


BACKBONES = {
    "UNet": (lambda: UNet(width=8, blocks=1), _image_inputs),
    "MSResNet": (lambda: MSResNet(n_resblocks=2, n_feats=16), lambda x: (to_input_pyramid(x),)),
    "MPRNet": (
        lambda: MPRNet(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1),
        _image_inputs,
    ),
    "MPRNetStage1": (lambda: MPRNetStage1(n_feat=16, scale_unetfeats=8), _image_inputs),
    "MIMOUNet": (lambda: MIMOUNet(num_res=1), _image_inputs),
    "MIMOUNetPlus": (lambda: MIMOUNetPlus(num_res=1), _image_inputs),
    "MSSNet": (mssnet_small, _image_inputs),
}


def _outputs(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _build(name):
    torch.manual_seed(0)
    build, inputs = BACKBONES[name]
    return build().eval(), inputs


@pytest.fixture(scope="module")
def blurry():
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_wrapped_equals_unwrapped_for_every_output_and_unwrap_is_exact(name, teacher, blurry):
    model, inputs = _build(name)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        reference = _outputs(model(*inputs(blurry)))
        sp.wrap(model, teacher=teacher)
        wrapped = _outputs(model(*inputs(blurry)))
    assert len(wrapped) == len(reference)
    assert all(torch.equal(a, b) for a, b in zip(wrapped, reference, strict=True))
    assert model.sp_prior.backbone == (name if name != "MSSNet" else "MSSNet")
    sp.unwrap(model)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    restored = model.state_dict()
    assert list(restored) == list(state) and all(torch.equal(restored[k], state[k]) for k in state)
    with torch.no_grad():
        again = _outputs(model(*inputs(blurry)))
    assert all(torch.equal(a, b) for a, b in zip(again, reference, strict=True))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_one_step_gives_gradients_in_every_sat_layer(name, teacher, blurry):
    model, inputs = _build(name)
    model.train()
    sp.wrap(model, teacher=teacher)
    sharp = torch.rand_like(blurry)
    outs = _outputs(model(*inputs(blurry)))
    scale = 255.0 if name == "MSResNet" else 1.0
    # a multi-output loss: every output against the sharp image at its size
    loss = sum(
        F.l1_loss(o / scale, F.interpolate(sharp, size=o.shape[-2:], mode="area")) for o in outs
    )
    loss = loss + 0.1 * sp.prior_loss(model, sharp)
    loss.backward()
    sats = [m for m in model.sp_prior.modules() if isinstance(m, SemanticAttentionTransform)]
    assert len(sats) == len(model.sp_prior.levels) >= 3
    for sat in sats:
        assert sat.conv1.weight.grad.abs().sum() > 0
        assert sat.conv2.weight.grad.abs().sum() > 0


def test_level_selection_by_index_and_name(teacher):
    model, _ = _build("MPRNet")
    sp.wrap(model, ["s1_level1", -1], teacher=teacher)
    assert list(model.sp_prior.embeddings) == ["s1_level1", "s2_level3"]
    with pytest.raises(ValueError, match=r"out of range for MPRNet: it has 6 levels"):
        sp.wrap(_build("MPRNet")[0], [6], teacher=teacher)


def test_mprnet_stage1_patches_see_their_half_of_the_prior(teacher, blurry):
    """Stage 1 runs on top/bottom halves: the prior must follow each half."""
    model, _ = _build("MPRNetStage1")
    sp.wrap(model, ["s1_level1"], teacher=teacher)
    sat = model.sp_prior.embeddings["s1_level1"].fusion
    torch.nn.init.normal_(sat.conv2.weight, std=1.0)
    seen = []
    model.stage1_decoder.up21.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    with torch.no_grad():
        model(blurry)
    assert [s[-2:] for s in seen] == [(SIZE // 2, SIZE)] * 2
    whole = MPRNetStage1(n_feat=16, scale_unetfeats=8, patch_wise=False)
    sp.wrap(whole, teacher=teacher)
    assert not whole.sp_prior.levels["s1_level1"].regions
    assert model.sp_prior.levels["s1_level1"].regions


def test_deepdeblur_rejects_a_single_tensor(teacher, blurry):
    model, _ = _build("MSResNet")
    sp.wrap(model, teacher=teacher)
    with pytest.raises(TypeError, match="list of scales"):
        model(blurry)
