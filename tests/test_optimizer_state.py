"""Optimiser and scheduler state across ``wrap``, in any order: a run saved with or without
the prior, its state loaded before or after ``add_prior_to_optimizer``, with the
learning-rate scheduler built first (as MSSNet, MPRNet and DeepDeblur build it)."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from pairs import blur_batches, small_unet
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LRScheduler,
    MultiStepLR,
    StepLR,
)

import sp_adapter as sp
from sp_adapter.attach.optim import STASH_KEY, schedulers_of, torch_optimizer
from sp_adapter.errors import WrapError

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE, BASE_LR, PRIOR_LR = 16, 1e-3, 5e-4


def _train(net, optimizer, scheduler, batches, prior: bool = True) -> None:
    for blurry, sharp in batches:
        optimizer.zero_grad()
        loss = F.l1_loss(net(blurry), sharp)
        if prior:
            loss = loss + 0.1 * sp.prior_loss(net, sharp)
        loss.backward()
        optimizer.step()
        scheduler.step()


def _warmup(optimizer):
    return LambdaLR(optimizer, lambda epoch: min(1.0, (epoch + 1) / 4))


def _cosine(optimizer):
    return CosineAnnealingLR(optimizer, T_max=10, eta_min=1e-5)


SCHEDULES = {"warmup": _warmup, "cosine": _cosine}


def _saved(obj) -> dict:
    """``obj`` through a file, as a resume reads it (safe loading)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _run_with_prior(teacher, schedule):
    """A fine-tuning run: optimiser and scheduler built before the prior's group was added."""
    net = sp.wrap(small_unet(), teacher=teacher)
    optimizer = torch.optim.AdamW(sp.backbone_parameters(net), lr=BASE_LR)
    scheduler = SCHEDULES[schedule](optimizer)
    sp.add_prior_to_optimizer(optimizer, net, lr=PRIOR_LR)
    _train(net, optimizer, scheduler, blur_batches(3, 0))
    return net, optimizer, scheduler


def _run_without_prior(schedule):
    net = small_unet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=BASE_LR)
    scheduler = SCHEDULES[schedule](optimizer)
    _train(net, optimizer, scheduler, blur_batches(3, 0), prior=False)
    return net, optimizer, scheduler


def _resume(teacher, schedule, saved, add_first):
    """The resume block of a repo's script: network, wrap, optimiser, scheduler (built
    first), then the saved states loaded; the prior added before or after the loads."""
    net = sp.wrap(small_unet(7), teacher=teacher)
    net.load_state_dict(saved["model"])  # a bare run's checkpoint warns once; tested elsewhere
    optimizer = torch.optim.AdamW(sp.backbone_parameters(net), lr=BASE_LR)
    scheduler = SCHEDULES[schedule](optimizer)
    if add_first:
        sp.add_prior_to_optimizer(optimizer, net, lr=PRIOR_LR)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if not add_first:
        sp.add_prior_to_optimizer(optimizer, net, lr=PRIOR_LR)
    return net, optimizer, scheduler


def _scheduled(schedule: str, base: float, epoch: int) -> float:
    if schedule == "warmup":
        return base * min(1.0, (epoch + 1) / 4)
    return 1e-5 + (base - 1e-5) * (1 + math.cos(math.pi * epoch / 10)) / 2


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("add_first", [True, False], ids=["add-then-load", "load-then-add"])
def test_a_run_saved_with_the_prior_resumes_bit_for_bit(teacher, schedule, add_first):
    net, optimizer, scheduler = _run_with_prior(teacher, schedule)
    saved = _saved({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()})
    # the saved state is that of the optimiser without the prior, the prior's group aside
    assert len(saved["optimizer"]["param_groups"]) == 1
    assert saved["optimizer"]["state"][STASH_KEY]["lr"] == optimizer.param_groups[1]["lr"]
    again, resumed, rescheduler = _resume(teacher, schedule, saved, add_first)
    assert [g["lr"] for g in resumed.param_groups] == [g["lr"] for g in optimizer.param_groups]
    # both runs go on with the same batches: every tensor stays equal, the prior's included
    more = blur_batches(3, 1)
    _train(net, optimizer, scheduler, more)
    _train(again, resumed, rescheduler, more)
    ours, theirs = net.state_dict(), again.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    mine, yours = optimizer.state_dict(), resumed.state_dict()
    assert mine["state"][STASH_KEY] == yours["state"][STASH_KEY]
    assert all(torch.equal(mine["state"][k]["exp_avg"], yours["state"][k]["exp_avg"])
               for k in mine["state"] if k != STASH_KEY)
    prior_lr = resumed.param_groups[1]["lr"]
    assert prior_lr == pytest.approx(_scheduled(schedule, PRIOR_LR, 6), rel=1e-9)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("add_first", [True, False], ids=["add-then-load", "load-then-add"])
def test_a_run_saved_before_wrap_resumes_with_the_prior_in_the_schedule(
    teacher, schedule, add_first
):
    net, optimizer, scheduler = _run_without_prior(schedule)
    saved = _saved({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()})
    with pytest.warns(UserWarning, match="none of the prior's"):
        again, resumed, rescheduler = _resume(teacher, schedule, saved, add_first)
    assert len(resumed.param_groups) == 2
    # the backbone's optimiser state went on as saved
    assert torch.equal(resumed.state[next(sp.backbone_parameters(again))]["exp_avg"],
                       optimizer.state[next(net.parameters())]["exp_avg"])
    assert resumed.param_groups[1]["lr"] == pytest.approx(_scheduled(schedule, PRIOR_LR, 3))
    before = {k: v.clone() for k, v in sp.prior_state_dict(again).items()}
    _train(again, resumed, rescheduler, blur_batches(2, 1))
    after = sp.prior_state_dict(again)
    assert any(not torch.equal(after[k], before[k]) for k in before)  # the prior trains
    for group in resumed.param_groups:  # and follows the schedule, as the backbone does
        assert group["lr"] == pytest.approx(_scheduled(schedule, group["initial_lr"], 5))


# -- other schedulers built before the prior's group -----------------------------------
class WarmupThen(LRScheduler):
    """A warm-up wrapper in the style of ``warmup_scheduler``: the learning rate climbs to
    ``multiplier`` times the base over ``total`` epochs, then ``after`` schedules it from
    there."""

    def __init__(self, optimizer, multiplier: float, total: int, after: LRScheduler) -> None:
        self.multiplier, self.total, self.after, self.finished = multiplier, total, after, False
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch > self.total:
            if not self.finished:
                self.after.base_lrs = [base * self.multiplier for base in self.base_lrs]
                self.finished = True
            return self.after.get_last_lr()
        return [base * ((self.multiplier - 1) * self.last_epoch / self.total + 1)
                for base in self.base_lrs]

    def step(self, epoch=None):
        if self.finished:
            self.after.step()
            self._last_lr = self.after.get_last_lr()
        else:
            super().step()


class RestartingSteps(LRScheduler):
    """A BasicSR-style multi-step scheduler that reads ``optimizer.param_groups``: the
    learning rate drops by ``gamma`` at each milestone and restarts from ``initial_lr`` at
    ``restart``."""

    def __init__(self, optimizer, milestones: list[int], gamma: float, restart: int) -> None:
        self.milestones, self.gamma, self.restart = milestones, gamma, restart
        super().__init__(optimizer)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == self.restart:
            return [g["initial_lr"] for g in groups]
        factor = self.gamma if self.last_epoch in self.milestones else 1.0
        return [g["lr"] * factor for g in groups]


def _step_only(optimizer, scheduler, epochs: int) -> list[tuple[float, float]]:
    """``(backbone lr / its base, prior lr / its base)`` after each scheduler step."""
    ratios = []
    for _ in range(epochs):
        optimizer.step()
        scheduler.step()
        backbone, prior = optimizer.param_groups
        ratios.append((backbone["lr"] / backbone["initial_lr"], prior["lr"] / prior["initial_lr"]))
    return ratios


@pytest.mark.parametrize("build", [
    lambda o: StepLR(o, step_size=2, gamma=0.5),
    lambda o: MultiStepLR(o, milestones=[1, 3], gamma=0.1),
    lambda o: WarmupThen(o, multiplier=2.0, total=2, after=StepLR(o, step_size=2, gamma=0.5)),
    lambda o: RestartingSteps(o, milestones=[1, 2], gamma=0.5, restart=4),
], ids=["StepLR", "MultiStepLR", "warmup-wrapper", "basicsr-restart"])
def test_schedulers_built_first_schedule_the_prior_group(teacher, build):
    net = sp.wrap(small_unet(), teacher=teacher)
    optimizer = torch.optim.Adam(sp.backbone_parameters(net), lr=BASE_LR)
    scheduler = build(optimizer)
    optimizer.step()
    scheduler.step()  # one epoch in: the prior's group starts where the schedule stands
    sp.add_prior_to_optimizer(optimizer, net, lr=PRIOR_LR)
    backbone, prior = optimizer.param_groups
    assert prior["lr"] / PRIOR_LR == pytest.approx(backbone["lr"] / BASE_LR)
    ratios = _step_only(optimizer, scheduler, 6)
    assert len({round(b, 9) for b, _ in ratios}) > 1  # the schedule did move
    assert all(b == pytest.approx(p) for b, p in ratios)


def test_schedulers_of_finds_a_wrapper_and_the_scheduler_it_holds(teacher):
    net = sp.wrap(small_unet(), teacher=teacher)
    optimizer = torch.optim.Adam(sp.backbone_parameters(net), lr=BASE_LR)
    after = StepLR(optimizer, step_size=2)
    warm = WarmupThen(optimizer, multiplier=2.0, total=2, after=after)
    assert {id(s) for s in schedulers_of(optimizer)} == {id(after), id(warm)}


# -- which optimiser --------------------------------------------------------------------
class Holder:
    """A repo's optimiser object holding the torch optimiser (DeepDeblur: ``optimizer.G``)."""

    def __init__(self, params, second=None) -> None:
        self.name = "holder"
        self.G = torch.optim.Adam(params, lr=BASE_LR)
        if second is not None:
            self.D = torch.optim.Adam(second, lr=BASE_LR)


def test_a_wrapper_object_holding_one_optimiser_is_accepted(teacher):
    net = sp.wrap(small_unet(), teacher=teacher)
    holder = Holder(sp.backbone_parameters(net))
    group = sp.add_prior_to_optimizer(holder, net, lr=PRIOR_LR)
    assert torch_optimizer(holder) is holder.G and holder.G.param_groups[1] is group


def test_a_wrapper_object_with_several_optimisers_names_them(teacher):
    net = sp.wrap(small_unet(), teacher=teacher)
    holder = Holder(sp.backbone_parameters(net), second=small_unet(1).parameters())
    with pytest.raises(WrapError, match=r"optimizer\.G, optimizer\.D.*pass the one"):
        sp.add_prior_to_optimizer(holder, net)
    with pytest.raises(WrapError, match="got str with none"):
        sp.add_prior_to_optimizer("adam", net)


def test_an_optimiser_built_after_wrap_gives_the_prior_its_own_group(teacher):
    """MSSNet builds its optimiser on ``model.parameters()``: the prior moves to a group of
    its own, so a state saved before wrap loads into it."""
    bare = small_unet()
    bare_optimizer = torch.optim.Adam(bare.parameters(), lr=BASE_LR)
    _train(bare, bare_optimizer, StepLR(bare_optimizer, 5), blur_batches(1, 0), prior=False)
    net = sp.wrap(small_unet(), teacher=teacher)
    optimizer = torch.optim.Adam(net.parameters(), lr=BASE_LR)
    group = sp.add_prior_to_optimizer(optimizer, net)
    assert group["lr"] == BASE_LR and len(optimizer.param_groups[0]["params"]) == len(
        list(bare.parameters()))
    optimizer.load_state_dict(_saved(bare_optimizer.state_dict()))
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[1] is not None
    with pytest.raises(WrapError, match="already has the prior's group"):
        sp.add_prior_to_optimizer(optimizer, net)


class SchedulingAdam(torch.optim.Adam):
    """A repo's optimiser class that builds its own scheduler and saves it with its state
    (DeepDeblur's, kept at ``optimizer.G``)."""

    def __init__(self, params) -> None:
        super().__init__(params, lr=BASE_LR)
        self.scheduler = MultiStepLR(self, milestones=[2, 4], gamma=0.5)

    def state_dict(self):
        state = super().state_dict()
        state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.scheduler.load_state_dict(state["scheduler"])


class OptimizerObject:
    def __init__(self, params) -> None:
        self.G = SchedulingAdam([p for p in params if p.requires_grad])


def test_a_repo_optimiser_class_with_its_own_scheduler_resumes_a_run_from_before_wrap(
    teacher,
):
    bare = small_unet()
    old = OptimizerObject(bare.parameters())
    _train(bare, old.G, old.G.scheduler, blur_batches(3, 0), prior=False)
    saved = _saved({"G": bare.state_dict(), "optim": old.G.state_dict()})
    net = sp.wrap(small_unet(), teacher=teacher)
    with pytest.warns(UserWarning, match="none of the prior's"):
        net.load_state_dict(saved["G"])
    optimizer = OptimizerObject(net.parameters())  # built after wrap: the prior is inside
    sp.add_prior_to_optimizer(optimizer, net)
    optimizer.G.load_state_dict(saved["optim"])
    assert len(optimizer.G.param_groups) == 2 and optimizer.G.scheduler.last_epoch == 3
    before = {k: v.clone() for k, v in sp.prior_state_dict(net).items()}
    _train(net, optimizer.G, optimizer.G.scheduler, blur_batches(2, 1))
    after = sp.prior_state_dict(net)
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert [g["lr"] for g in optimizer.G.param_groups] == [BASE_LR * 0.25] * 2
    # and the fine-tuned run's own state resumes with the same class, the prior's part included
    again = sp.wrap(small_unet(3), teacher=teacher)
    again.load_state_dict(net.state_dict())
    resumed = OptimizerObject(again.parameters())
    sp.add_prior_to_optimizer(resumed, again)
    resumed.G.load_state_dict(_saved(optimizer.G.state_dict()))
    mine, yours = optimizer.G.state_dict(), resumed.G.state_dict()
    assert mine["state"][STASH_KEY] == yours["state"][STASH_KEY]
    assert all(torch.equal(mine["state"][k]["exp_avg_sq"], yours["state"][k]["exp_avg_sq"])
               for k in mine["state"] if k != STASH_KEY)


def test_an_optimiser_built_after_wrap_mid_warmup_keeps_the_prior_on_schedule(teacher):
    net = sp.wrap(small_unet(), teacher=teacher)
    optimizer = torch.optim.Adam(net.parameters(), lr=BASE_LR)
    scheduler = _warmup(optimizer)
    optimizer.step()
    scheduler.step()
    group = sp.add_prior_to_optimizer(optimizer, net)  # the base of the group it came from
    assert group["initial_lr"] == BASE_LR
    assert group["lr"] == optimizer.param_groups[0]["lr"] == BASE_LR * 0.5
