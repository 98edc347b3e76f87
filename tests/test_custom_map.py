"""A user-supplied level map on a U-Net the library has never seen; deep copies."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sp_adapter as sp
from sp_adapter.prior.embedding import SemanticAttentionTransform


class ConcatUNet(nn.Module):
    """A third-party 2-level U-Net: skip joined by concatenation, input as a keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.inc = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.Conv2d(16 + 8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
        e1 = F.relu(self.inc(image))
        e2 = F.relu(self.down(e1))
        d2 = F.relu(self.mid(e2)) + e2
        d1 = F.relu(self.fuse(torch.cat([self.up(d2), e1], 1)))
        return {"restored": image + scale * self.out(d1)}


def _levels():
    return [
        sp.Level(site="fuse", channels=24, on_input=True, prior_level=0),
        sp.Level(site="mid", skip="down", channels=16, prior_level=1),
    ]


def test_user_map_on_unknown_unet_is_exact_and_trains(teacher):
    torch.manual_seed(0)
    net = ConcatUNet()
    x = torch.rand(2, 3, 32, 32)
    sharp = torch.rand(2, 3, 32, 32)
    reference = net(image=x)["restored"]
    sp.wrap(net, _levels(), teacher=teacher)
    assert torch.equal(net(image=x)["restored"], reference)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sat = [
        m for m in net.sp_prior.modules() if isinstance(m, SemanticAttentionTransform)
    ]
    assert len(sat) == 2
    loss = F.l1_loss(net(image=x)["restored"], sharp) + 0.1 * sp.prior_loss(net, sharp)
    loss.backward()
    for m in sat:
        assert m.conv1.weight.grad.abs().sum() > 0 and m.conv2.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(net(image=x)["restored"], reference)
    sp.unwrap(net)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_user_backbone_map_with_named_levels(teacher):
    net = ConcatUNet()
    levels = dict(zip(["fine", "coarse"], _levels(), strict=True))
    bmap = sp.BackboneMap(
        "ConcatUNet", levels, default_levels=("coarse",), image=lambda args, kwargs: kwargs["image"]
    )
    sp.wrap(net, backbone=bmap, teacher=teacher)
    assert list(net.sp_prior.embeddings) == ["coarse"]
    net(image=torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no level 'middle'"):
        sp.wrap(ConcatUNet(), ["middle"], backbone=bmap, teacher=teacher)


def test_model_without_map_gets_its_join_found_automatically(teacher):
    net = sp.wrap(ConcatUNet(), teacher=teacher)  # sp_adapter.attach.auto_levels; more there
    assert [(lv.site, lv.channels, lv.on_input) for lv in net.sp_prior.levels.values()] == [
        ("fuse", 24, True)]


def test_deepcopy_of_wrapped_model_is_independent(teacher):
    torch.manual_seed(0)
    net = sp.wrap(ConcatUNet(), _levels(), teacher=teacher)
    x = torch.rand(1, 3, 32, 32)
    net(image=x)  # leave state behind: the copy must not carry it
    twin = copy.deepcopy(net)
    assert sp.get_hook(twin) is not sp.get_hook(net)
    assert sp.get_hook(twin).teacher is sp.get_hook(net).teacher  # frozen teacher is shared
    with torch.no_grad():
        assert torch.equal(twin(image=x)["restored"], net(image=x)["restored"])
    sp.unwrap(twin)
    assert sp.is_wrapped(net)
    # root forward pre/post and load_state_dict pre/post + 2 sites + 1 skip
    assert len(sp.get_hook(net).hooks_in(net)) == 4 + 3
    net(image=x)
    sp.prior_loss(net, torch.rand(1, 3, 32, 32))
