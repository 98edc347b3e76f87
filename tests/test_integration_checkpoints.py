"""Each official repo's checkpoint idiom, replayed on our twins, on either side of ``wrap``.

For MIMO-UNet (``{'model', 'optimizer', 'scheduler', 'epoch'}``), MPRNet (``{'state_dict'}``
saved through DataParallel, so with ``module.``, loaded by its try/strip-``module.``
helper), MSSNet (``{'model_state_dict', 'optimizer_state_dict', 'epoch'}``), DeepDeblur
(its ``Model`` container saving ``{'G'}``) and BasicSR (``{'params'}``, our UNet): a
checkpoint saved before ``wrap`` loads into a wrapped model with the repo's own code; a
wrapped run resumes with its optimiser; a wrapped checkpoint goes into the bare network
through :func:`sp_adapter.files.checkpoints.load_backbone_checkpoint`. No forward is needed,
so every network is small and each case takes a moment.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import sp_adapter as sp
from sp_adapter.backbones.deepdeblur import MSResNet
from sp_adapter.backbones.mimo_unet import MIMOUNet
from sp_adapter.backbones.mprnet import MPRNet
from sp_adapter.backbones.mssnet import DeblurNet
from sp_adapter.backbones.unet import UNet
from sp_adapter.files.checkpoints import load_backbone_checkpoint


class DeepDeblurModel(nn.Module):
    """DeepDeblur-PyTorch's ``Model``: the network at ``model.G``; its state dict and its
    loading see ``G`` only (``{'G': ...}``)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.ModuleDict({"G": MSResNet(n_resblocks=1, n_feats=8)})

    def forward(self, pyramid):
        return self.model.G(pyramid)

    def state_dict(self, *args, **kwargs):  # the repo's own override
        return {"G": self.model.G.state_dict()}

    def load_state_dict(self, state_dict, strict=True):
        return self.model.G.load_state_dict(state_dict["G"], strict=strict)


def _adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-4)


# -- the repos' own save / resume / test-script code, replayed ---------------------------
def _mimo_save(model, optimizer, path):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": {}, "epoch": 3}, path)


def _mimo_resume(model, optimizer, path):
    state = torch.load(path)
    optimizer.load_state_dict(state["optimizer"])
    model.load_state_dict(state["model"])


def _mimo_test(model, path):
    model.load_state_dict(torch.load(path)["model"])


def _mprnet_save(model, optimizer, path):
    # trained under DataParallel: its state dict carries "module."
    torch.save({"epoch": 3, "state_dict": nn.DataParallel(model).state_dict(),
                "optimizer": optimizer.state_dict()}, path)


def _mprnet_load_checkpoint(model, path):
    checkpoint = torch.load(path)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError:
        stripped = OrderedDict((k[7:], v) for k, v in checkpoint["state_dict"].items())
        model.load_state_dict(stripped)


def _mprnet_resume(model, optimizer, path):
    _mprnet_load_checkpoint(model, path)
    optimizer.load_state_dict(torch.load(path)["optimizer"])


def _mssnet_save(model, optimizer, path):
    torch.save({"model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(), "epoch": 3, "all_step": 9}, path)


def _mssnet_resume(model, optimizer, path):
    checkpoint = torch.load(path)
    model.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer_state_dict"])


def _mssnet_test(model, path):
    model.load_state_dict(torch.load(path)["model_state_dict"])


def _deepdeblur_save(model, optimizer, path):
    torch.save(model.state_dict(), path)
    torch.save({"G": optimizer.state_dict()}, path.with_suffix(".optim.pt"))


def _deepdeblur_resume(model, optimizer, path):
    model.load_state_dict(torch.load(path))
    optimizer.load_state_dict(torch.load(path.with_suffix(".optim.pt"))["G"])


def _basicsr_save(model, optimizer, path):
    torch.save({"params": model.state_dict()}, path)
    torch.save({"iter": 9, "optimizers": [optimizer.state_dict()]}, path.with_suffix(".state"))


def _basicsr_load_network(model, path):
    params = torch.load(path)["params"]
    params = OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in params.items())
    model.load_state_dict(params, strict=True)


def _basicsr_resume(model, optimizer, path):
    _basicsr_load_network(model, path)
    optimizer.load_state_dict(torch.load(path.with_suffix(".state"))["optimizers"][0])


@dataclass
class Repo:
    build: Callable[[], nn.Module]
    save: Callable
    resume: Callable
    test_load: Callable
    optimizer: Callable[[nn.Module], torch.optim.Optimizer] = _adam


REPOS = {
    "MIMO-UNet": Repo(lambda: MIMOUNet(num_res=1), _mimo_save, _mimo_resume, _mimo_test),
    "MPRNet": Repo(
        lambda: MPRNet(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1),
        _mprnet_save, _mprnet_resume, _mprnet_load_checkpoint,
    ),
    "MSSNet": Repo(lambda: DeblurNet(wf=8, scale=8, vscale=8), _mssnet_save, _mssnet_resume,
                   _mssnet_test),
    "DeepDeblur": Repo(DeepDeblurModel, _deepdeblur_save, _deepdeblur_resume,
                       lambda model, path: model.load_state_dict(torch.load(path)),
                       optimizer=lambda m: _adam(m.model.G)),
    "BasicSR": Repo(lambda: UNet(width=8, blocks=1), _basicsr_save, _basicsr_resume,
                    _basicsr_load_network),
}


def _network(model: nn.Module) -> nn.Module:
    """The network itself (DeepDeblur's is inside its container)."""
    return model.model.G if isinstance(model, DeepDeblurModel) else model


def _build(repo: Repo, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return repo.build()


def _wrap(model: nn.Module, teacher) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DeepDeblur: "wrapping the known backbone inside"
        return sp.wrap(model, teacher=teacher)


def _fake_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One optimiser step with unit gradients: the state and every trained weight change
    (a real forward is not what these tests are about)."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    optimizer.step()
    optimizer.zero_grad()


def _states(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _network(model).state_dict().items()}


def _assert_equal(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize("name", list(REPOS))
def test_unwrapped_checkpoint_loads_into_a_wrapped_model_with_the_repos_code(
    name, teacher, tmp_path
):
    repo = REPOS[name]
    trained = _build(repo, 0)
    _fake_step(trained, repo.optimizer(trained))
    path = tmp_path / "old.pth"
    repo.save(trained, repo.optimizer(trained), path)

    model = _wrap(_build(repo, 1), teacher)
    prior_before = copy.deepcopy(sp.prior_state_dict(model))
    with pytest.warns(UserWarning, match=rf"none of the prior's {len(prior_before)} tensors"):
        repo.test_load(model, path)
    backbone, prior = sp.split_state_dict(_network(model).state_dict())
    _assert_equal(backbone, _states(trained))
    _assert_equal(prior, prior_before)


@pytest.mark.parametrize("name", list(REPOS))
def test_a_wrapped_run_resumes_with_its_optimiser(name, teacher, tmp_path):
    repo = REPOS[name]
    run = _wrap(_build(repo, 0), teacher)
    optimizer = repo.optimizer(run)
    _fake_step(run, optimizer)
    path = tmp_path / "wrapped.pth"
    repo.save(run, optimizer, path)

    resumed = _wrap(_build(repo, 1), teacher)
    resumed_optimizer = repo.optimizer(resumed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key is there: nothing is kept or forgiven
        repo.resume(resumed, resumed_optimizer, path)
    _assert_equal(_states(resumed), _states(run))
    saved = optimizer.state_dict()["state"]
    loaded = resumed_optimizer.state_dict()["state"]
    trained = [p for p in _network(run).parameters() if p.requires_grad]
    assert saved.keys() == loaded.keys() and len(saved) == len(trained)
    assert all(torch.equal(saved[i]["exp_avg"], loaded[i]["exp_avg"]) for i in saved)


@pytest.mark.parametrize("name", list(REPOS))
def test_a_wrapped_checkpoint_loads_into_the_bare_network(name, teacher, tmp_path):
    repo = REPOS[name]
    run = _wrap(_build(repo, 0), teacher)
    _fake_step(run, repo.optimizer(run))
    path = tmp_path / "wrapped.pth"
    repo.save(run, repo.optimizer(run), path)
    backbone, prior = sp.split_state_dict(_states(run))

    # the repo's own test script on the bare network sees the prior's keys ...
    bare = _build(repo, 1)
    with pytest.raises(RuntimeError, match="sp_prior"):
        repo.test_load(bare, path)
    # ... which the library splits off, reports and returns
    with pytest.warns(UserWarning, match=rf"its {len(prior)} prior tensors .* were split off"):
        _, returned = load_backbone_checkpoint(_network(bare), path, return_prior=True)
    _assert_equal(_network(bare).state_dict(), backbone)
    _assert_equal(returned, prior)


def test_load_backbone_checkpoint_into_a_wrapped_model_takes_a_prior_that_fits(
    teacher, tmp_path
):
    """A wrapped checkpoint into a model wrapped the same way loads both parts; into a
    model wrapped with other levels its prior is reported and the model's own kept."""
    run = _wrap(UNet(width=8, blocks=1), teacher)
    _fake_step(run, _adam(run))
    path = tmp_path / "run.pt"
    torch.save({"params": run.state_dict()}, path)

    same = _wrap(UNet(width=8, blocks=1), teacher)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_backbone_checkpoint(same, path)
    _assert_equal(same.state_dict(), run.state_dict())

    bare = UNet(width=8, blocks=1)
    torch.save({"params": nn.DataParallel(bare).state_dict()}, tmp_path / "bare.pt")
    kept_prior = copy.deepcopy(sp.prior_state_dict(same))
    with pytest.warns(UserWarning, match="none of the prior's"):
        load_backbone_checkpoint(same, tmp_path / "bare.pt")
    _assert_equal(sp.split_state_dict(same.state_dict())[0], bare.state_dict())
    _assert_equal(sp.prior_state_dict(same), kept_prior)

    other = sp.wrap(UNet(width=8, blocks=1), levels=["level1"], teacher=teacher)
    kept = copy.deepcopy(sp.prior_state_dict(other))
    with pytest.warns(UserWarning, match="does not fit"):
        load_backbone_checkpoint(other, path)
    backbone, prior = sp.split_state_dict(other.state_dict())
    _assert_equal(backbone, sp.split_state_dict(run.state_dict())[0])
    _assert_equal(prior, kept)


def test_a_state_dict_with_only_some_prior_keys_is_still_an_error(teacher):
    model = _wrap(UNet(width=8, blocks=1), teacher)
    state = model.state_dict()
    dropped = [k for k in state if k.startswith("sp_prior.")][:2]
    for key in dropped:
        del state[key]
    with pytest.raises(RuntimeError, match=r"UNet.load_state_dict: the state dict holds "
                                           r"\d+ of the prior's \d+ tensors \(sp_prior\.\*\) "
                                           r"and lacks the student F_S \(2 of \d+ tensors\)"):
        model.load_state_dict(state)
    # half of the prior's keys: each missing part named, in the paper's words
    state = model.state_dict()
    prior_keys = [k for k in state if k.startswith("sp_prior.")]
    for key in prior_keys[len(prior_keys) // 2:]:
        del state[key]
    with pytest.raises(sp.SPAdapterError, match=r"lacks .*the cross-level connection \(CLC, "
                                                r"Eq\. 3\) \(all \d+ tensors\), level1's "
                                                r"embedding \(MLA/SAT, Eq\. 5-6\).*Load a "
                                                r"state dict saved from a model wrapped like"):
        model.load_state_dict(state)
    missing = model.load_state_dict(state, strict=False).missing_keys  # torch's way, as asked
    assert missing == prior_keys[len(prior_keys) // 2:]


def test_split_state_dict_strips_the_prefix_and_keeps_the_backbone(teacher):
    model = _wrap(UNet(width=8, blocks=1), teacher)
    backbone, prior = sp.split_state_dict(nn.DataParallel(model).state_dict())
    assert list(prior) == list(sp.prior_state_dict(model))
    assert all(k.startswith("module.") and "sp_prior" not in k for k in backbone)
    assert len(backbone) == len(UNet(width=8, blocks=1).state_dict())


def test_unwrap_removes_the_load_hooks(teacher):
    net = UNet(width=8, blocks=1)
    hooks = (dict(net._load_state_dict_pre_hooks), dict(net._load_state_dict_post_hooks))
    sp.unwrap(_wrap(net, teacher))
    assert (dict(net._load_state_dict_pre_hooks), dict(net._load_state_dict_post_hooks)) == hooks
    state = net.state_dict()
    del state["head.weight"]
    with pytest.raises(RuntimeError, match="head.weight"):
        net.load_state_dict(state)


def test_a_deep_copy_forgives_on_its_own_and_unwraps_on_its_own(teacher):
    model = _wrap(UNet(width=8, blocks=1), teacher)
    twin = copy.deepcopy(model)
    bare = {k: v for k, v in twin.state_dict().items() if not k.startswith("sp_prior.")}
    with pytest.warns(UserWarning, match="none of the prior's"):
        twin.load_state_dict(bare)
    sp.unwrap(twin)
    assert sp.is_wrapped(model)
    with pytest.warns(UserWarning, match="none of the prior's"):
        model.load_state_dict(bare)

