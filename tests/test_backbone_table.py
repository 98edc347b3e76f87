"""The backbone table: networks are matched by what they are, never by their class name.

A user's own network called ``UNet``, ``NAFNet`` or ``MIMOUNet`` (nothing like the twins)
gets automatic levels; the library's twins, and networks built like them under any name,
get their adapter; ``summary`` says which route was taken.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sp_adapter as sp
from sp_adapter.adapters import BACKBONES, backbone_named, match
from sp_adapter.backbones.mimo_unet import MIMOUNet as TwinMIMOUNet
from sp_adapter.backbones.nafnet import NAFNet as TwinNAFNet
from sp_adapter.backbones.unet import UNet as TwinUNet
from sp_adapter.errors import UnknownOptionError


class _SmallUNet(nn.Module):
    """Three convolutions down, two transposed convolutions up, skips joined by addition."""

    def __init__(self) -> None:
        super().__init__()
        self.inc = nn.Conv2d(3, 8, 3, padding=1)
        self.down1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.inc(x))
        b = torch.relu(self.down1(a))
        c = torch.relu(self.down2(b))
        d = self.up2(c) + b
        e = self.up1(d) + a
        return self.out(e) + x


# the most common class names in the field, on networks unlike the library's twins
USER_NETWORKS = {name: type(name, (_SmallUNet,), {}) for name in ("UNet", "NAFNet", "MIMOUNet")}


@pytest.mark.parametrize("name", list(USER_NETWORKS))
@pytest.mark.parametrize("levels", [None, "auto"])
def test_a_users_network_named_like_a_twin_wraps_bit_exactly(name, levels):
    torch.manual_seed(0)
    net = USER_NETWORKS[name]().eval()
    assert type(net).__name__ == name and match(net) is None
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = net(x)
        sp.wrap(net, levels, teacher=None)
        wrapped = net(x)
    assert torch.equal(wrapped, reference)
    found = sp.find_levels(USER_NETWORKS[name]()).levels
    assert [lv.site for lv in sp.get_hook(net).levels.values()] == [
        lv.site for lv in found.values()]
    assert sp.summary(net).route == "found automatically by one probe forward (no known backbone)"


def _same_modules_other_class(twin: nn.Module, name: str) -> nn.Module:
    """A network built like ``twin`` whose class is not the library's (a user's copy of the
    official code, under any name)."""
    code = {k: v for c in reversed(type(twin).__mro__[:-2]) for k, v in vars(c).items()
            if not k.startswith("__")}
    cls = type(name, (nn.Module,), code)
    copy_ = cls()
    for child_name, child in twin.named_children():
        copy_.add_module(child_name, child)
    for key, value in vars(twin).items():
        if not key.startswith("_") and key != "training":
            setattr(copy_, key, value)
    return copy_


TWINS = {
    "unet": lambda: TwinUNet(width=8, blocks=1),
    "mimo-unet": lambda: TwinMIMOUNet(num_res=1),
    "nafnet": lambda: TwinNAFNet(width=8, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1]),
}


@pytest.mark.parametrize("name", list(TWINS))
def test_twins_get_their_adapter_and_copies_under_any_name_are_matched_by_modules(name):
    torch.manual_seed(0)
    twin = TWINS[name]().eval()
    known, level_map = match(twin)
    assert known.name == name
    copied = _same_modules_other_class(twin, "SomebodysNetwork")
    found = match(copied)
    assert found is not None and found[0].name == name
    assert found[1].levels == level_map.levels
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = copied(x)
        sp.wrap(copied, teacher=None)
        out = copied(x)
    outputs = zip(out, reference, strict=True) if isinstance(out, list) else [(out, reference)]
    assert all(torch.equal(a, b) for a, b in outputs)
    assert sp.summary(copied).route == f"adapter {name!r}, matched by its modules"
    assert sp.summary(sp.wrap(TWINS[name](), teacher=None)).route == (
        f"adapter {name!r}, a library twin")


def test_every_table_entry_builds_its_twin_and_maps_its_levels():
    names = [b.name for b in BACKBONES]
    assert len(names) == len(set(names))
    for known in BACKBONES:
        assert known.size_multiple >= 1 and known.input_range in (1.0, 255.0)
        assert known.build_fn is known.twins[0] or callable(known.build_fn)
    assert backbone_named("MIMO-UNet") is backbone_named("mimo-unet")
    with pytest.raises(UnknownOptionError, match=r"unknown backbone 'unte' \(did you mean 'unet'"):
        backbone_named("unte")


def test_summary_of_an_adapted_network():
    torch.manual_seed(0)
    net = sp.wrap(TwinUNet(width=8, blocks=1), teacher=None)
    text = str(sp.summary(net))
    prior = sum(p.numel() for p in sp.get_prior(net).parameters())
    bare = sum(p.numel() for p in TwinUNet(width=8, blocks=1).parameters())
    assert text.splitlines() == [
        "UNet with a semantic prior at 3 levels: adapter 'unet', a library twin",
        "| level | site | skip | channels | reduction | prior level |",
        "|---|---|---|---|---|---|",
        "| level1 | up1 | enc1 | 8 | 1 | 0 |",
        "| level2 | up2 | enc2 | 16 | 1/2 | 1 |",
        "| level3 | dec3 | enc3 | 32 | 1/4 | 2 |",
        f"prior: {prior:,} parameters ({prior:,} trainable), {prior / bare:.1%} of the "
        f"network's {bare:,}",
        "options: student initialised from the teacher; HCL on, CLC on, MLA on, fusion sat, "
        "1x1 convolutions",
        "teacher: none (inference; the prior was built for tf_efficientnet_lite0)",
        "strength: 1",
    ]


def test_summary_of_an_automatically_wrapped_network_with_a_teacher(teacher):
    torch.manual_seed(0)
    net = sp.wrap(USER_NETWORKS["UNet"](), teacher=teacher, student="small", small_width=8,
                  clc=False)
    sp.set_prior_strength(net, 0.5)
    summary = sp.summary(net)
    assert summary.network == "UNet" and list(summary.levels) == ["level1", "level2"]
    assert summary.network_parameters == sum(p.numel() for p in _SmallUNet().parameters())
    text = str(summary)
    assert text.splitlines()[0] == ("UNet with a semantic prior at 2 levels: found automatically "
                                    "by one probe forward (no known backbone)")
    assert "| level1 | out (input) | - | 8 | 1 | 0 |" in text
    assert "| level2 | up1 (input) | - | 16 | 1/2 | 1 |" in text
    assert "options: student small (width 8); HCL on, CLC off, MLA on, fusion sat" in text
    assert f"teacher: {teacher.name}, frozen" in text
    assert text.endswith("strength: 0.5")


def test_summary_sees_through_ddp_style_containers_and_a_deep_copy():
    net = sp.wrap(TwinUNet(width=8, blocks=1), teacher=None)
    assert sp.summary(copy.deepcopy(net)).route == sp.summary(net).route
    assert sp.summary(nn.DataParallel(net)).levels == sp.summary(net).levels
