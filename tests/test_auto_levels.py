"""Levels found automatically (``sp_adapter.attach.auto_levels``) on the twins and on U-Nets that
no adapter knows, against the adapter tables."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sp_adapter as sp
from sp_adapter.adapters import match
from sp_adapter.attach.auto_levels import find_levels
from sp_adapter.backbones.mimo_unet import MIMOUNet, MIMOUNetPlus
from sp_adapter.backbones.mprnet import MPRNet
from sp_adapter.backbones.nafnet import NAFNet, NAFNetLocal
from sp_adapter.backbones.restormer import Restormer
from sp_adapter.backbones.unet import UNet
from sp_adapter.errors import AutoLevelsError, LevelNotFoundError
from sp_adapter.prior.embedding import SemanticAttentionTransform


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class AddUNet(nn.Module):
    """A foreign U-Net, 4 resolutions: strided-conv downsampling, functional bilinear
    up-sampling then a conv (``fuse.i``), the skip ADDED in forward code."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        chans = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.enc = nn.ModuleList(_conv(c, c) for c in chans)
        self.down = nn.ModuleList(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
                                  for c in chans[:-1])
        self.fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in chans[:-1])
        self.dec = nn.ModuleList(_conv(c, c) for c in chans[:-1])
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = self.stem(x)
        for i, enc in enumerate(self.enc):
            h = enc(h)
            if i < len(self.down):
                skips.append(h)
                h = self.down[i](h)
        for i in reversed(range(len(skips))):
            h = self.fuse[i](F.interpolate(h, scale_factor=2, mode="bilinear"))
            h = h + skips[i]
            h = self.dec[i](h)
        return x + self.head(h)


class CatUNet(nn.Module):
    """A foreign U-Net, 3 resolutions: max-pool downsampling, transposed-conv
    up-sampling, the skip CONCATENATED and fed to the decoder block."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.inc = _conv(3, w)
        self.enc2 = _conv(w, 2 * w)
        self.bottom = _conv(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _conv(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _conv(2 * w, w)
        self.out = nn.Conv2d(w, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.inc(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


class InPlaceUNet(nn.Module):
    """Joins written two more ways: ``h += skip`` in place after a module (level 1), and a
    functional up-sampling added to the skip and handed to a module (level 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.e1 = nn.Conv2d(3, 8, 3, padding=1)
        self.e2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.e3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.reduce = nn.Conv2d(32, 16, 1)
        self.d2 = nn.Conv2d(16, 16, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(e1)
        b = self.reduce(self.e3(e2))
        h = self.d2(F.interpolate(b, scale_factor=2) + e2)
        h = self.up1(h)
        h += e1
        return self.tail(h)


class PlainCNN(nn.Module):
    """No skips, no up-sampling: nothing to find."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.tail = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.body(x))


class TwoSkipsOneUp(nn.Module):
    """One up-sampler's output added to two different encoder features: which is f_en?"""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.tail = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.a(x)
        e2 = self.b(e1)
        u = self.up(self.down(e2))
        return self.tail(torch.cat([u + e1, u + e2], 1))


def _lv(level) -> tuple:
    return (level.site, level.skip, level.channels, level.on_input)


def _nafnet(cls=NAFNet):
    extra = {"train_size": (1, 3, 32, 32)} if cls is NAFNetLocal else {}
    model = cls(width=8, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1], **extra)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0, 0.5)
    return model


BUILD = {
    "UNet": lambda: UNet(width=8, blocks=1),
    "MIMOUNet": lambda: MIMOUNet(num_res=1),
    "MIMOUNetPlus": lambda: MIMOUNetPlus(num_res=1),
    "NAFNet": _nafnet,
    "NAFNetLocal": lambda: _nafnet(NAFNetLocal),
    "Restormer": lambda: Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "MPRNet": lambda: MPRNet(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1),
}

NOT_FOUND = {
    # adapter levels that are no skip join, so the search cannot see them (docs say why):
    "UNet": {"level3"},  # dec3 + enc3: a residual around the bottleneck, no up-sampling
    "MIMOUNet": {"level3"},  # Decoder.0 output: the 1/4 level has no skip
    "MIMOUNetPlus": {"level3"},
    # stage 2's 1/4 level has no skip; stage 1 runs on image patches (2 calls per forward)
    "MPRNet": {"s2_level3", "s1_level1", "s1_level2", "s1_level3"},
}


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return BUILD[name]().eval()


@pytest.mark.parametrize("name", list(BUILD))
def test_found_levels_equal_the_adapter_table_up_to_the_listed_differences(name):
    model = _build(name)
    found = find_levels(model)
    _, table = match(model)
    expected = [lv for n, lv in table.levels.items() if n not in NOT_FOUND.get(name, set())]
    expected.sort(key=lambda lv: lv.reduction)
    assert [_lv(lv) for lv in found] == [_lv(lv) for lv in expected]
    assert [lv.reduction for lv in found] == [lv.reduction for lv in expected]


def test_mprnet_patch_wise_stage_is_reported_not_used():
    found = find_levels(_build("MPRNet"))
    unused = {c.site: c.reason for c in found.candidates if c.reason}
    assert set(unused) == {"stage1_decoder.up21", "stage1_decoder.up32"}
    assert all("runs 2 times per forward" in r and "regions" in r for r in unused.values())
    assert "not used:" in found.table()


FOREIGN = {
    "AddUNet": (AddUNet, [("fuse.0", "enc.0", 8, False), ("fuse.1", "enc.1", 16, False),
                          ("fuse.2", "enc.2", 32, False)]),
    "CatUNet": (CatUNet, [("dec1", None, 16, True), ("dec2", None, 32, True)]),
    "InPlaceUNet": (InPlaceUNet, [("up1", "e1", 8, False), ("d2", None, 16, True)]),
}


@pytest.mark.parametrize("name", list(FOREIGN))
def test_foreign_unets_are_found(name):
    cls, expected = FOREIGN[name]
    torch.manual_seed(0)
    found = find_levels(cls().eval())
    assert [_lv(lv) for lv in found] == expected
    assert [lv.reduction for lv in found] == [2**i for i in range(len(expected))]


CASES = list(BUILD) + list(FOREIGN)


@pytest.mark.parametrize("name", CASES)
def test_wrapped_with_found_levels_is_bit_exact_and_unwrap_is_exact(name, teacher):
    torch.manual_seed(0)
    model = (FOREIGN[name][0]() if name in FOREIGN else BUILD[name]()).eval()
    state = copy.deepcopy(model.state_dict())
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
        # foreign networks have no level map, so wrap finds their levels by itself
        sp.wrap(model, levels=None if name in FOREIGN else "auto", teacher=teacher)
        wrapped = model(x)
    assert len(model.sp_prior.levels) >= 2
    refs = reference if isinstance(reference, (list, tuple)) else [reference]
    outs = wrapped if isinstance(wrapped, (list, tuple)) else [wrapped]
    assert all(torch.equal(a, b) for a, b in zip(outs, refs, strict=True))
    sp.unwrap(model)
    restored = model.state_dict()
    assert list(restored) == list(state)
    assert all(torch.equal(restored[k], state[k]) for k in state)


def test_foreign_unet_trains_every_sat_layer(teacher):
    torch.manual_seed(0)
    model = sp.wrap(AddUNet().train(), teacher=teacher)
    assert model.sp_prior.backbone == "custom"
    blurry = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sharp = torch.rand_like(blurry)
    loss = F.l1_loss(model(blurry), sharp) + 0.1 * sp.prior_loss(model, sharp)
    loss.backward()
    sats = [m for m in model.sp_prior.modules() if isinstance(m, SemanticAttentionTransform)]
    assert len(sats) == 3
    assert all(s.conv1.weight.grad.abs().sum() > 0 and s.conv2.weight.grad.abs().sum() > 0
               for s in sats)


def test_an_adapter_wins_unless_auto_is_asked(teacher):
    default = sp.wrap(_build("NAFNet"), teacher=teacher)
    auto = sp.wrap(_build("NAFNet"), levels="auto", teacher=teacher)
    assert [lv.site for lv in default.sp_prior.levels.values()] == ["ups.3", "ups.2", "ups.1"]
    assert [lv.site for lv in auto.sp_prior.levels.values()] == [
        "ups.3", "ups.2", "ups.1", "ups.0"]
    assert auto.sp_prior.backbone == "NAFNet"


def test_wrap_logs_the_table_it_chose(teacher, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="sp_adapter.attach.auto_levels"):
        sp.wrap(CatUNet(), teacher=teacher)
    text = caplog.text
    assert "| level | site | kind | skip | channels | reduction |" in text
    assert "| level1 | dec1 | input (concatenation) | - | 16 | 1 |" in text
    assert "| level2 | dec2 | input (concatenation) | - | 32 | 2 |" in text


def test_an_unrecognisable_network_gets_the_candidates_and_a_levels_example(teacher):
    with pytest.raises(AutoLevelsError) as info:
        sp.wrap(PlainCNN(), teacher=teacher)
    message = str(info.value)
    assert isinstance(info.value, LevelNotFoundError) and isinstance(info.value, ValueError)
    assert "found no skip join" in message and "PlainCNN" in message
    assert "1/1: body.0 (8 ch), body.1 (8 ch)" in message
    assert "1/2: body.2 (16 ch), body.3 (16 ch), body (16 ch), tail.0 (12 ch)" in message
    assert "levels=[Level(site='body.1', channels=8), Level(site='tail.0', channels=12)]" in message


def test_two_joins_on_one_site_cannot_be_decided():
    with pytest.raises(AutoLevelsError, match=r"cannot decide: 2 joins reach the same module "
                                              r"'up'") as info:
        find_levels(TwoSkipsOneUp())
    message = str(info.value)
    assert "f_en from a" in message and "f_en from b" in message
    assert "Level(site='up', skip='a', channels=8)" in message


def test_a_probe_the_network_refuses_says_so():
    class SixChannels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(6, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(AutoLevelsError, match=r"needs one forward on a 1x3x64x64 image, which "
                                              r"failed: .*find_levels\(model, probe\)"):
        find_levels(SixChannels())


def test_the_probe_leaves_the_model_as_it_was():
    model = AddUNet().train()
    before = copy.deepcopy(model.state_dict())
    find_levels(model)
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_a_prior_on_found_levels_saves_and_reattaches(teacher, tmp_path):
    torch.manual_seed(0)
    model = sp.wrap(CatUNet().eval(), teacher=teacher)
    for embedding in model.sp_prior.embeddings.values():
        nn.init.normal_(embedding.fusion.conv2.weight, std=0.1)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    sp.save_pretrained(model, tmp_path / "prior")
    fresh = CatUNet().eval()
    fresh.load_state_dict(sp.unwrap(model).state_dict())
    sp.from_pretrained(tmp_path / "prior", model=fresh)
    assert [_lv(lv) for lv in fresh.sp_prior.levels.values()] == FOREIGN["CatUNet"][1]
    with torch.no_grad():
        assert torch.allclose(fresh(x), expected, atol=1e-6)
