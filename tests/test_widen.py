"""The widened control: a wider UNet that starts from the trained base's exact output."""

from __future__ import annotations

import pytest
import torch
from pairs import Pairs
from torch import nn

from sp_adapter.backbones.unet import UNet
from sp_adapter.errors import OptionError
from sp_adapter.train import Arm, TrainConfig, run_arms
from sp_adapter.train.widen import widen_into

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_unet(width: int) -> UNet:
    torch.manual_seed(0)
    net = UNet(width, blocks=1)
    with torch.no_grad():  # away from the initialisation, as a trained base is
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_the_widened_unet_computes_exactly_the_base_and_its_new_weights_learn():
    base = trained_unet(6)
    wide = widen_into(base, UNet(7, blocks=1))
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(wide.eval()(x), base(x))
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in base.parameters())
    # the zero weights from new channels into old ones get a gradient: they can learn
    wide.train()
    wide(x).square().mean().backward()
    unread = wide.enc1[0].conv1.weight.grad[:6, 6:]
    assert unread.abs().sum() > 0
    assert torch.equal(wide.enc1[0].conv1.weight[:6, 6:], torch.zeros_like(unread))
    # transposed convolutions keep their inputs first: up1 maps 14 -> 7 channels
    assert torch.equal(wide.up1.weight[:12, :6], base.up1.weight)
    assert torch.equal(wide.up1.weight[12:, :6], torch.zeros(2, 6, 2, 2))


def test_what_cannot_grow_is_refused_naming_the_module():
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(OptionError, match=r"module '0'.*ungrouped"):
        widen_into(grouped, nn.Sequential(nn.Conv2d(6, 6, 3, groups=2)))
    normed = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    with pytest.raises(OptionError, match=r"module '1' \(BatchNorm2d\)"):
        widen_into(normed, nn.Sequential(nn.Conv2d(3, 5, 1), nn.BatchNorm2d(5)))
    with pytest.raises(OptionError, match="module '1' differs"):
        widen_into(nn.Sequential(nn.Conv2d(3, 4, 1)),
                   nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))


def test_a_widen_base_arm_starts_from_the_shared_bases_output():
    config = TrainConfig(steps=3, batch_size=4, alpha=0.0, perceptual="none", log_every=1,
                         progress=False, device="cpu")
    arms = [Arm("base"), Arm("wide", options={"width": 9}, widen_base=True),
            Arm("own", options={"width": 9})]
    base, wide, own = run_arms(arms, Pairs(8), None, config, options={"width": 8, "blocks": 1},
                               pretrain_steps=2, arm_steps=3)
    first = [r.history[0]["reconstruction"] for r in (base, wide, own)]
    assert first[1] == pytest.approx(first[0], abs=1e-7)  # the same function at the start
    assert first[2] != pytest.approx(first[0], abs=1e-4)  # its own pre-training: not
    assert wide.params == own.params > base.params
    assert wide.widened_base and not own.widened_base and wide.summary()["widened_base"]
    assert wide.shared_steps == 2 and wide.shared_seconds == base.shared_seconds
    with pytest.raises(OptionError, match="widen_base needs the fine-tuning protocol"):
        run_arms(arms[1:2], Pairs(8), None, config, options={"width": 8, "blocks": 1},
                 protocol="scratch", arm_steps=1)
