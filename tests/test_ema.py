"""EMA copies of a wrapped network carry the prior, whatever builds them: ``deepcopy``,
``AveragedModel``, timm's ``ModelEmaV3``, or a network built afresh and wrapped like the
trained one (BasicSR's ``net_g_ema``); the EMA prior is saved and loaded with the EMA
weights."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from pairs import small_unet
from timm.utils import ModelEmaV3
from torch.optim.swa_utils import AveragedModel

import sp_adapter as sp
from sp_adapter.attach.state import PRIOR_PREFIX
from sp_adapter.errors import IncompatiblePriorError

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 16


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(5)
    sharp = torch.rand(1, 3, SIZE, SIZE, generator=g)
    return F.avg_pool2d(sharp, 3, 1, 1, count_include_pad=False), sharp


def _train_step(net, optimizer, blurry, sharp) -> None:
    optimizer.zero_grad()
    loss = F.l1_loss(net(blurry), sharp) + 0.1 * sp.prior_loss(net, sharp)
    loss.backward()
    optimizer.step()


def _prior_tensors(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith(PRIOR_PREFIX)}


def _reloaded_output(state: dict, teacher, blurry) -> torch.Tensor:
    """The output of a fresh wrapped network given ``state`` (EMA weights saved to a file)."""
    fresh = sp.wrap(small_unet(9), teacher=teacher)
    fresh.load_state_dict(state)  # strict: the prior's tensors are in the EMA weights
    fresh.eval()
    with torch.no_grad():
        return fresh(blurry)


def test_a_deepcopy_has_its_own_prior_and_hooks(teacher, batch):
    blurry, sharp = batch
    net = sp.wrap(small_unet(), teacher=teacher)
    ema = copy.deepcopy(net)
    assert sp.is_wrapped(ema) and sp.get_prior(ema) is not sp.get_prior(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    _train_step(net, optimizer, blurry, sharp)
    with torch.no_grad():  # the EMA update, as a repo writes it
        for e, p in zip(ema.state_dict().values(), net.state_dict().values(), strict=True):
            if e.is_floating_point():
                e.mul_(0.5).add_(p, alpha=0.5)
    ema.eval()
    with torch.no_grad():
        out = ema(blurry)
        with sp.prior_disabled(ema):
            bare = ema(blurry)
    assert not torch.equal(out, bare)  # the copy's prior modulates its own forward
    assert torch.equal(_reloaded_output(ema.state_dict(), teacher, blurry), out)


def test_averaged_model_averages_the_prior_and_saves_it(teacher, batch):
    blurry, sharp = batch
    net = sp.wrap(small_unet(), teacher=teacher)
    averaged = AveragedModel(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    snapshots = [copy.deepcopy(sp.prior_state_dict(net))]
    for _ in range(2):
        _train_step(net, optimizer, blurry, sharp)
        averaged.update_parameters(net)
        snapshots.append(copy.deepcopy(sp.prior_state_dict(net)))
    assert sp.is_wrapped(averaged)
    name, weight = next((k, v) for k, v in sp.get_prior(averaged).named_parameters()
                        if v.requires_grad)
    # the first update copies, the second averages: (after step 1 + after step 2) / 2
    expected = (snapshots[1][name] + snapshots[2][name]) / 2
    assert torch.allclose(weight, expected) and not torch.equal(weight, snapshots[0][name])
    averaged.eval()
    with torch.no_grad():
        out = averaged(blurry)
    saved = averaged.module.state_dict()
    assert _prior_tensors(saved)
    assert torch.equal(_reloaded_output(saved, teacher, blurry), out)


def test_timm_model_ema_v3_moves_the_prior_and_saves_it(teacher, batch):
    blurry, sharp = batch
    net = sp.wrap(small_unet(), teacher=teacher)
    ema = ModelEmaV3(net, decay=0.9)
    start = copy.deepcopy(sp.prior_state_dict(net))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    _train_step(net, optimizer, blurry, sharp)
    ema.update(net)
    trained = sp.prior_state_dict(net)
    for key, value in sp.get_prior(ema.module).state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.9 * start[key] + 0.1 * trained[key], atol=1e-7)
    assert any(not torch.equal(sp.prior_state_dict(ema.module)[k], start[k]) for k in start)
    with torch.no_grad():
        out = ema.module(blurry)
    assert torch.equal(_reloaded_output(ema.module.state_dict(), teacher, blurry), out)


def test_a_network_built_afresh_is_wrapped_like_the_trained_one(teacher, batch):
    """BasicSR's ``net_g_ema = define_network(opt)``: a second network, built separately."""
    net_g = sp.wrap(small_unet(), teacher=teacher)
    optimizer = torch.optim.Adam(net_g.parameters(), lr=1e-2)
    _train_step(net_g, optimizer, *batch)
    bare = small_unet(1)
    with pytest.raises(IncompatiblePriorError, match=r"carries no prior.*sp_adapter\.wrap_like"):
        sp.check_priors_match(bare, net_g)
    net_g_ema = sp.wrap_like(bare, net_g)
    sp.check_priors_match(net_g_ema, net_g)
    assert sp.get_hook(net_g_ema).teacher is sp.get_hook(net_g).teacher  # shared, not loaded
    ours, theirs = sp.prior_state_dict(net_g_ema), sp.prior_state_dict(net_g)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # starts as the trained prior
    assert sp.get_prior(net_g_ema) is not sp.get_prior(net_g)
    other = sp.wrap(small_unet(2), teacher=teacher, levels=["level1"])
    with pytest.raises(IncompatiblePriorError, match="do not line up.*missing"):
        sp.check_priors_match(other, net_g)


def test_a_wrapped_network_pickles_with_its_prior(teacher, batch):
    """``torch.save(model)`` and spawned DDP workers (Lightning's ``ddp_spawn``) pickle the
    whole network: the copy carries the prior and the hooks, not the optimiser watch."""
    net = sp.wrap(small_unet(), teacher=teacher)
    torch.manual_seed(1)
    with torch.no_grad():  # a prior that changes the output
        for p in sp.get_prior(net).parameters():
            p.add_(0.05 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert sp.is_wrapped(again) and sp.get_hook(again).watch is None
    with torch.no_grad():
        out = again(batch[0])
        with sp.prior_disabled(again):
            assert not torch.equal(again(batch[0]), out)
        assert torch.equal(out, net(batch[0]))
