"""BasicSR-style training (NAFNet's ``ImageRestorationModel``, Restormer's
``ImageCleanModel``) with only the two lines, replayed step by step: the network built and
wrapped before ``model_to_device`` and ``load_network``, the prior's term added where each
model sums its loss (NAFNet ``l_total``, Restormer ``l_pix``), Restormer's EMA network built
afresh and updated key by key, ``{'params'}`` / ``{'params_ema'}`` saved and loaded in both
directions, and the training state resumed. basicsr itself is not importable on current
torch; these are minimal equivalents of the steps, written here."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pairs import blur_batches

import sp_adapter as sp
from sp_adapter.backbones.unet import UNet
from sp_adapter.errors import IncompatiblePriorError

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 16


def define_network(seed: int = 0) -> UNet:
    """A fresh network from the options, as ``define_network(opt['network_g'])`` builds it."""
    torch.manual_seed(seed)
    return UNet(width=8, blocks=1)


def load_network(net, path, strict: bool = True, param_key: str = "params") -> None:
    """The steps of BasicSR's loader: a ``{param_key: state}`` file (``params_ema`` falls back
    to ``params``), ``module.`` prefixes dropped, then the network's own strict load."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if param_key not in saved and "params" in saved:
        param_key = "params"
    state = {k.removeprefix("module."): v for k, v in saved[param_key].items()}
    net.load_state_dict(state, strict=strict)


def save_network(nets, keys, path) -> None:
    torch.save({key: {k: v.cpu() for k, v in net.state_dict().items()}
                for net, key in zip(nets, keys, strict=True)}, path)


class RestorationReplay:
    """The parts of a BasicSR image restoration model that meet the prior."""

    def __init__(self, teacher, style: str, pretrain=None, ema_decay: float = 0.0,
                 seed: int = 0) -> None:
        self.style = style
        self.net_g = sp.wrap(define_network(seed), teacher=teacher)  # added line 1
        if pretrain is not None:
            load_network(self.net_g, pretrain)
        self.ema_decay = ema_decay
        if ema_decay > 0:
            # the one documented line for a fresh EMA network: wrap it like net_g
            self.net_g_ema = sp.wrap_like(define_network(seed + 1), self.net_g)
            if pretrain is not None:
                load_network(self.net_g_ema, pretrain, param_key="params_ema")
            else:
                self.model_ema(0)
            self.net_g_ema.eval()
        params = [v for _, v in self.net_g.named_parameters() if v.requires_grad]
        self.optimizer_g = torch.optim.AdamW(params, lr=1e-3)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer_g, T_max=20,
                                                                    eta_min=1e-6)

    def model_ema(self, decay: float) -> None:
        """For every parameter of the EMA network: ema = decay * ema + (1 - decay) * net."""
        net = dict(self.net_g.named_parameters())
        for key, ema in self.net_g_ema.named_parameters():
            ema.data.mul_(decay).add_(net[key].data, alpha=1 - decay)

    def optimize_parameters(self, lq, gt) -> None:
        self.optimizer_g.zero_grad()
        preds = self.net_g(lq)
        preds = preds if isinstance(preds, list) else [preds]
        if self.style == "nafnet":
            l_total = 0
            l_total += sum(F.l1_loss(p, gt) for p in preds)
            l_total += 0.1 * sp.prior_loss(self.net_g, gt)  # added line 2
            l_total.backward()
        else:  # Restormer: the pixel loss is the whole loss
            l_pix = 0.0
            for pred in preds:
                l_pix += F.l1_loss(pred, gt)
            l_pix += 0.1 * sp.prior_loss(self.net_g, gt)  # added line 2
            l_pix.backward()
        torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), 0.01)
        self.optimizer_g.step()
        self.scheduler.step()
        if self.ema_decay > 0:
            self.model_ema(self.ema_decay)

    def training_state(self) -> dict:
        return {"optimizers": [self.optimizer_g.state_dict()],
                "schedulers": [self.scheduler.state_dict()]}

    def resume_training(self, state: dict) -> None:
        self.optimizer_g.load_state_dict(state["optimizers"][0])
        self.scheduler.load_state_dict(state["schedulers"][0])


@pytest.mark.parametrize("style", ["nafnet", "restormer"])
def test_the_prior_trains_where_each_model_sums_its_loss(teacher, style):
    model = RestorationReplay(teacher, style)
    before = {k: v.clone() for k, v in sp.prior_state_dict(model.net_g).items()}
    for lq, gt in blur_batches(2):
        model.optimize_parameters(lq, gt)
    after = sp.prior_state_dict(model.net_g)
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_ema_of_a_fresh_network_replays_basicsr_update_with_the_prior(teacher, tmp_path):
    model = RestorationReplay(teacher, "restormer", ema_decay=0.5)
    names = [k for k, _ in model.net_g_ema.named_parameters()]
    assert any(k.startswith("sp_prior.") for k in names)  # the update loop reaches the prior
    sp.check_priors_match(model.net_g_ema, model.net_g)
    start = {k: v.clone() for k, v in model.net_g_ema.named_parameters()}
    lq, gt = blur_batches(1)[0]
    model.optimize_parameters(lq, gt)
    trained = dict(model.net_g.named_parameters())
    for key, ema in model.net_g_ema.named_parameters():
        assert torch.equal(ema, start[key] * 0.5 + trained[key] * 0.5), key
    # the EMA prior goes into params_ema and comes back with it
    path = tmp_path / "net_g_latest.pth"
    save_network([model.net_g, model.net_g_ema], ["params", "params_ema"], path)
    again = RestorationReplay(teacher, "restormer", pretrain=path, ema_decay=0.5, seed=3)
    with torch.no_grad():
        assert torch.equal(again.net_g_ema(lq), model.net_g_ema(lq))
        assert torch.equal(again.net_g(lq), model.net_g(lq))


def test_an_ema_network_left_bare_is_caught(teacher):
    net_g = sp.wrap(define_network(), teacher=teacher)
    with pytest.raises(IncompatiblePriorError, match="wrap_like"):
        sp.check_priors_match(define_network(1), net_g)


def test_a_bare_params_checkpoint_warns_once_at_the_callers_line(teacher, tmp_path):
    bare = define_network()
    path = tmp_path / "NAFNet-GoPro-width8.pth"
    save_network([bare], ["params"], path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = RestorationReplay(teacher, "nafnet", pretrain=path, seed=4)
    prior_warnings = [w for w in record if "none of the prior's" in str(w.message)]
    assert len(prior_warnings) == 1  # one line, however many prior tensors
    assert Path(prior_warnings[0].filename) == Path(__file__)  # the loader's line, not torch's
    ours, theirs = model.net_g.state_dict(), bare.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_wrapped_params_checkpoint_goes_back_to_a_bare_network(teacher, tmp_path):
    model = RestorationReplay(teacher, "nafnet")
    for lq, gt in blur_batches(2):
        model.optimize_parameters(lq, gt)
    path = tmp_path / "net_g_latest.pth"
    save_network([model.net_g], ["params"], path)
    bare = define_network(5)
    with pytest.raises(RuntimeError, match="Unexpected key.*sp_prior"):
        load_network(bare, path)  # strict_load_g: true (the default) refuses the prior's keys
    load_network(bare, path, strict=False)  # strict_load_g: false, no code changed
    lq = blur_batches(1, 7)[0][0]
    with torch.no_grad(), sp.prior_disabled(model.net_g):
        assert torch.equal(bare(lq), model.net_g(lq))


def test_resume_state_restores_optimiser_and_scheduler_bit_for_bit(teacher, tmp_path):
    model = RestorationReplay(teacher, "nafnet")
    for lq, gt in blur_batches(2):
        model.optimize_parameters(lq, gt)
    net_path, state_path = tmp_path / "net_g_2.pth", tmp_path / "2.state"
    save_network([model.net_g], ["params"], net_path)
    torch.save(model.training_state(), state_path)
    again = RestorationReplay(teacher, "nafnet", pretrain=net_path, seed=6)
    again.resume_training(torch.load(state_path, weights_only=True))
    for lq, gt in blur_batches(2, 1):
        model.optimize_parameters(lq, gt)
        again.optimize_parameters(lq, gt)
    ours, theirs = model.net_g.state_dict(), again.net_g.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
