"""The prior's strength chosen on held-out images: calibrate_strength and held_out_set."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

import sp_adapter as sp
from sp_adapter.backbones.unet import UNet
from sp_adapter.data import TEST_PHOTOS, blur_preset, grey_photos, photo_names
from sp_adapter.train import calibrate_strength, held_out_set
from sp_adapter.train.evaluate import deblur

pytestmark = pytest.mark.usefixtures("one_thread")


def _wrapped(teacher) -> UNet:
    torch.manual_seed(0)
    net = sp.wrap(UNet(width=8, blocks=1), teacher=teacher)
    g = torch.Generator().manual_seed(5)
    for name, p in sp.get_prior(net).named_parameters():
        if "student" not in name:  # non-zero CLC/MLA/SAT, as after training
            p.data = 0.3 * torch.randn(p.shape, generator=g)
    return net.eval()


def test_calibration_finds_the_strength_the_targets_were_made_with(teacher):
    """Targets made by the model at strength 0.6 (plus a little noise): of 0.25, 0.6 and
    1, calibration scores 0.6 best, and the model keeps the strength it had."""
    net = _wrapped(teacher)
    blurry = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with sp.prior_strength(net, 0.6):
        made = deblur(net, blurry)
    noise = 0.01 * torch.randn(made.shape, generator=torch.Generator().manual_seed(3))
    data = TensorDataset(blurry, (made + noise).clamp(0, 1))
    sp.set_prior_strength(net, 0.9)
    result = calibrate_strength(net, data, strengths=(1.0, 0.6, 0.25), batch_size=2)
    assert result.best == 0.6 and result.count == 4
    assert result.psnr[1] > result.psnr[0] + 1 and result.psnr[1] > result.psnr[2] + 1
    assert sp.get_prior(net).strength == 0.9
    assert result.as_dict()["best"] == 0.6


def test_calibration_ties_go_to_the_larger_strength_and_bad_lists_are_refused(teacher):
    net = _wrapped(teacher)
    blurry = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    data = TensorDataset(blurry, blurry)
    for p in sp.get_prior(net).parameters():  # a prior that changes nothing: all tie
        p.data.zero_()
    result = calibrate_strength(net, data, strengths=(0.5, 1.0, 0.8))
    assert len(set(result.psnr)) == 1 and result.best == 1.0
    with pytest.raises(ValueError, match="at least one strength"):
        calibrate_strength(net, data, strengths=())
    with pytest.raises(ValueError, match="must differ"):
        calibrate_strength(net, data, strengths=(0.5, 0.5))
    with pytest.raises(ValueError, match="finite number >= 0"):
        calibrate_strength(net, data, strengths=(-1.0,))


def test_held_out_set_uses_neither_training_nor_test_photos():
    data = held_out_set(64, blur_preset("mild"), count=6, seed=7)
    assert len(data) == 6 and data.photos == grey_photos()
    assert not set(data.photos) & (set(photo_names("train")) | set(TEST_PHOTOS))
    blurry, sharp, key = data[3]
    assert blurry.shape == sharp.shape == (3, 64, 64)
    again = held_out_set(64, blur_preset("mild"), count=6, seed=7)[3]
    assert torch.equal(again[0], blurry) and again[2] == key  # fixed draw
    assert not torch.equal(held_out_set(64, blur_preset("mild"), count=6, seed=8)[3][0], blurry)
    with pytest.raises(ValueError, match="positive number of crops"):
        held_out_set(64, blur_preset("mild"), count=0)


def test_training_a_prior_at_another_strength_warns(teacher):
    """A calibrated prior trained further would learn a scaled change: the trainer says
    so; at strength 1 it says nothing."""
    from sp_adapter.train import TrainConfig, Trainer

    net = _wrapped(teacher)
    pairs = TensorDataset(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    config = TrainConfig(alpha=0.0, perceptual="none", device="cpu", batch_size=2)
    sp.set_prior_strength(net, 0.8)
    with pytest.warns(UserWarning, match="training with the prior at strength 0.8"):
        Trainer(net, pairs, config)
    sp.set_prior_strength(net, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(net, pairs, config)
