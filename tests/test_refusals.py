"""Mistakes and half-states met at the library's surface are refused in its own words:
each message says what was wrong and what would be right (issue 45)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sp_adapter as sp
from sp_adapter.attach.auto_levels import find_levels
from sp_adapter.attach.state import is_wrapped
from sp_adapter.backbones.nafnet import NAFNet
from sp_adapter.backbones.restormer import Restormer
from sp_adapter.backbones.unet import UNet
from sp_adapter.errors import ImageInputError, PriorLossError, ProbeError, WrapError


def _image(size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- a network built on the meta device ---------------------------------------------------


def test_a_meta_device_network_wraps_and_its_prior_gets_its_initial_weights():
    """to_empty + load_state_dict of a bare state dict: the prior takes the initial weights
    a freshly wrapped model has (not uninitialised memory), so the output equals the bare
    network's exactly, as at wrap time."""
    torch.manual_seed(0)
    bare = UNet(width=8).eval()
    with torch.device("meta"):
        net = UNet(width=8)
    net = sp.wrap(net, teacher=None, student="small").eval()
    net.to_empty(device="cpu")
    with pytest.warns(UserWarning, match=r"holds none of the prior's \d+ tensors.*the prior, "
                                         r"wrapped on the meta device, was given its initial"):
        net.load_state_dict(bare.state_dict())
    x = _image()
    with torch.no_grad():
        out = net(x)
        assert torch.isfinite(out).all()
        assert torch.equal(out, bare(x))
    reference = sp.prior_state_dict(sp.wrap(UNet(width=8), teacher=None, student="small"))
    for key, value in sp.prior_state_dict(net).items():
        assert torch.isfinite(value).all(), key
        if not reference[key].any():  # zero-initialised (SAT's convolutions): zero here too
            assert not value.any(), key
    assert sum(not v.any() for v in reference.values()) >= 6


def test_a_meta_device_network_loaded_with_a_wrapped_state_dict_keeps_the_loaded_prior():
    torch.manual_seed(0)
    trained = sp.wrap(UNet(width=8), teacher=None, student="small").eval()
    with torch.no_grad():
        for p in sp.get_prior(trained).parameters():
            p.add_(torch.randn_like(p) * 0.1)
    with torch.device("meta"):
        net = UNet(width=8)
    net = sp.wrap(net, teacher=None, student="small").eval()
    net.to_empty(device="cpu")
    net.load_state_dict(trained.state_dict())
    x = _image()
    with torch.no_grad():
        assert torch.equal(net(x), trained(x))


def test_wrap_inside_a_meta_device_block_is_refused():
    with torch.device("meta"), pytest.raises(WrapError, match=r"prior's weights are on the "
                                                              r"meta device.*outside that"):
        sp.wrap(UNet(width=8), teacher=None, student="small")


# -- find_levels on a network that takes more than the image --------------------------


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = UNet(width=8)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(x) * sigma


def test_find_levels_with_a_tuple_probe_says_how_to_search_a_two_input_network():
    net, x, sigma = TwoInputs(), _image(), torch.ones(1, 1, 1, 1)
    with pytest.raises(ProbeError, match=r"TwoInputs\(probe\) on one N x 3 x H x W image "
                                         r"tensor, but the probe is a tuple of 2 \(tensor "
                                         r"1x3x32x32, tensor 1x1x1x1\).*ImageOnly.*levels="):
        find_levels(net, (x, sigma))
    with pytest.raises(TypeError, match="the probe is ndarray"):
        find_levels(net, x.numpy())

    class ImageOnly(nn.Module):  # the route the message gives
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.net = inner

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.net(image, sigma)

    found = find_levels(ImageOnly(net), x)
    assert [lv.site for lv in found.levels.values()][:1] == ["net.net.up1"]


# -- prior_loss after a forward under prior_disabled, and in another precision ----------


def test_prior_loss_after_a_forward_under_prior_disabled_names_the_block(teacher, pair):
    blurry, sharp = pair
    net = sp.wrap(UNet(width=8), teacher=teacher)
    with sp.prior_disabled(net):
        net(blurry)
    with pytest.raises(PriorLossError, match=r"ran inside sp_adapter\.prior_disabled\(model\), "
                                             r"which runs the bare network.*outside that block"):
        sp.prior_loss(net, sharp)
    net(blurry)  # a forward with the prior: the loss is back
    assert torch.isfinite(sp.prior_loss(net, sharp))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_prior_loss_with_a_half_or_double_sharp_batch_names_the_dtype_and_the_cast(
        teacher, pair, dtype):
    blurry, sharp = pair
    net = sp.wrap(UNet(width=8), teacher=teacher)
    net(blurry)
    with pytest.raises(ImageInputError, match=rf"sharp batch given to prior_loss is "
                                              rf"{dtype}, but the teacher's weights are "
                                              r"torch\.float32: pass prior_loss\(model, "
                                              r"sharp\.to\(torch\.float32\)\)"):
        sp.prior_loss(net, sharp.to(dtype))
    assert torch.isfinite(sp.prior_loss(net, sharp.to(dtype).to(torch.float32)))


# -- networks built for other than RGB images --------------------------------------------


@pytest.mark.parametrize("build, channels", [
    (lambda: NAFNet(img_channel=1, width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]), 1),
    (lambda: Restormer(inp_channels=6, out_channels=3, dim=8, num_blocks=[1, 1, 1, 1],
                       num_refinement_blocks=1, heads=[1, 1, 1, 1]), 6),
])
def test_a_non_rgb_network_is_refused_at_wrap_time_naming_the_channels(build, channels):
    net = build()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(WrapError, match=rf"takes {channels}-channel images .*needs 3-channel "
                                        r"RGB images: build the network for 3 image channels"):
        sp.wrap(net, teacher=None, student="small")
    assert not is_wrapped(net)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_an_rgb_nafnet_still_wraps():
    net = NAFNet(img_channel=3, width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    sp.wrap(net, teacher=None, student="small")
    assert sp.get_prior(net) is not None
