"""What a user meets inside a repo's own training code: pixel ranges, the repo's container
module, an optimiser built before ``wrap``, the teacher after a saved prior, DataParallel
and the CLI's perceptual flags."""

from __future__ import annotations

import copy
import os
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from pairs import small_unet
from torch import nn

import sp_adapter as sp
from sp_adapter.backbones.deepdeblur import MSResNet, to_input_pyramid
from sp_adapter.errors import (
    ImageInputError,
    PriorLossError,
    TeacherWeightsError,
    WrapError,
)
from sp_adapter.prior.config import BUILTIN_TEACHER_WEIGHTS, TeacherSpec
from sp_adapter.prior.teacher import build_feature_model, load_teacher, spec_for_name

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 32


@pytest.fixture
def small_pair():
    g = torch.Generator().manual_seed(3)
    sharp = torch.rand(2, 3, SIZE, SIZE, generator=g)
    return F.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False), sharp


def _step(model, optimizer, blurry, sharp):
    optimizer.zero_grad()
    out = model(blurry)
    loss = F.l1_loss(out, sharp) + 0.1 * sp.prior_loss(model, sharp)
    loss.backward()
    optimizer.step()


# -- pixel range ---------------------------------------------------------------------------
def test_prior_loss_refuses_a_sharp_batch_in_0_255_and_allows_a_small_overshoot(
    teacher, small_pair
):
    blurry, sharp = small_pair
    net = sp.wrap(small_unet(), teacher=teacher)
    net(blurry)
    with pytest.raises(ImageInputError, match=r"values in \[0\.\d+, 2\d\d\.\d+\].*by 255"):
        sp.prior_loss(net, sharp * 255)
    assert torch.isfinite(sp.prior_loss(net, (sharp * 1.05).clamp(-0.02, 1.05)))


def test_a_network_taking_0_1_refuses_an_input_in_0_255(teacher, small_pair):
    net = sp.wrap(small_unet(), teacher=teacher)
    with pytest.raises(ImageInputError, match=r"in \[0, 1\].*divide images in \[0, 255\]"):
        net(small_pair[0] * 255)
    net(small_pair[0] * 1.05)  # overshoot of resampling is fine


def test_deepdeblur_input_is_checked_against_its_rgb_range(teacher, small_pair):
    blurry, sharp = small_pair
    torch.manual_seed(0)
    net = sp.wrap(MSResNet(n_resblocks=1, n_feats=8), teacher=teacher)
    net(to_input_pyramid(blurry))  # [0, 255]: the network's own range
    assert torch.isfinite(sp.prior_loss(net, sharp))
    with pytest.raises(ImageInputError, match=r"sharp / 255"):
        sp.prior_loss(net, sharp * 255)
    with pytest.raises(ImageInputError, match=r"must be in \[0, 255\]"):
        net([x * 255 for x in to_input_pyramid(blurry)])


# -- a repo's own container --------------------------------------------------------------
class Container(nn.Module):
    """DeepDeblur's ``Model``: the network at ``model.model.G``."""

    def __init__(self, second: bool = False) -> None:
        super().__init__()
        self.model = nn.ModuleDict({"G": MSResNet(n_resblocks=1, n_feats=8)})
        if second:
            self.model["D"] = small_unet()

    def forward(self, pyramid):
        return self.model.G(pyramid)


def test_wrap_of_a_container_wraps_its_only_known_backbone_and_says_which(teacher, small_pair):
    blurry, sharp = small_pair
    torch.manual_seed(0)
    model = Container()
    state = copy.deepcopy(model.state_dict())
    reference = model(to_input_pyramid(blurry))[0]
    with pytest.warns(UserWarning, match=r"model\.model\.G \(MSResNet\)"):
        assert sp.wrap(model, teacher=teacher) is model
    assert sp.is_wrapped(model) and hasattr(model.model.G, "sp_prior")
    assert torch.equal(model(to_input_pyramid(blurry))[0], reference)
    assert torch.isfinite(sp.prior_loss(model, sharp))
    assert sp.unwrap(model) is model
    assert not sp.is_wrapped(model)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    restored = model.state_dict()
    assert list(restored) == list(state)
    assert all(torch.equal(restored[k], state[k]) for k in state)


def test_a_container_with_several_known_backbones_names_their_paths(teacher):
    with pytest.raises(WrapError, match=r"model\.model\.G \(MSResNet\), model\.model\.D "
                                        r"\(UNet\).*sp_adapter\.wrap\(model\.model\.G\)"):
        sp.wrap(Container(second=True), teacher=teacher)
    assert sp.known_backbones_in(Container(second=True))[1][0] == "model.D"


# -- an optimiser built before wrap --------------------------------------------------------
def _watch_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "add_prior_to_optimizer" in str(w.message)]


def test_an_optimiser_without_the_prior_is_named_once(teacher, small_pair):
    net = small_unet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    sp.wrap(net, teacher=teacher)
    before = copy.deepcopy(sp.prior_state_dict(net))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(5):
            _step(net, optimizer, *small_pair)
    assert len(_watch_warnings(record)) == 1
    assert "not in the optimiser" in _watch_warnings(record)[0]
    after = sp.prior_state_dict(net)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_add_prior_to_optimizer_trains_the_prior_in_its_own_group(teacher, small_pair):
    net = small_unet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    sp.wrap(net, teacher=teacher)
    group = sp.add_prior_to_optimizer(optimizer, net, lr=5e-4, weight_decay=0.0)
    assert len(optimizer.param_groups) == 2 and group["lr"] == 5e-4
    trainable = [p for p in sp.get_prior(net).parameters() if p.requires_grad]
    assert {id(p) for p in group["params"]} == {id(p) for p in trainable}
    before = copy.deepcopy(sp.prior_state_dict(net))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(4):
            _step(net, optimizer, *small_pair)
    assert not _watch_warnings(record)
    after = sp.prior_state_dict(net)
    assert any(not torch.equal(after[k], before[k]) for k in before)
    with pytest.raises(WrapError, match="already has the prior.s group"):
        sp.add_prior_to_optimizer(optimizer, net)


def test_resume_recipe_old_optimiser_state_then_the_prior_group(teacher, small_pair):
    """A run trained without the prior resumes with it: the backbone's optimiser (built on
    backbone_parameters) loads the saved state, then the prior gets its own group."""
    old = small_unet()
    old_optimizer = torch.optim.Adam(old.parameters(), lr=1e-3)
    F.l1_loss(old(small_pair[0]), small_pair[1]).backward()
    old_optimizer.step()
    saved_model, saved_optimizer = old.state_dict(), old_optimizer.state_dict()

    net = sp.wrap(small_unet(1), teacher=teacher)
    with pytest.warns(UserWarning, match="none of the prior's"):
        net.load_state_dict(saved_model)
    optimizer = torch.optim.Adam(sp.backbone_parameters(net), lr=1e-3)
    optimizer.load_state_dict(saved_optimizer)
    sp.add_prior_to_optimizer(optimizer, net, lr=2e-4)
    _step(net, optimizer, *small_pair)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 2e-4]
    assert optimizer.state_dict()["state"][0]["step"] == 2  # the old state went on


# -- the teacher ---------------------------------------------------------------------------
def test_a_prior_loaded_from_a_folder_says_how_to_give_a_teacher(teacher, small_pair, tmp_path):
    net = sp.wrap(small_unet(), teacher=teacher)
    sp.save_pretrained(net, tmp_path / "prior")
    again = sp.from_pretrained(tmp_path / "prior", model=small_unet())
    again(small_pair[0])
    with pytest.raises(PriorLossError, match=r"teacher=sp_adapter\.TeacherSpec\(\)"):
        sp.prior_loss(again, small_pair[1])


def test_a_timm_name_with_an_installed_wheel_uses_the_wheel():
    assert spec_for_name("tf_efficientnet_lite0") == TeacherSpec()
    assert spec_for_name("resnet18").weights == "timm"
    start = time.monotonic()
    built = load_teacher("tf_efficientnet_lite0", calibrate=False)
    assert time.monotonic() - start < 30
    reference = build_feature_model(TeacherSpec())
    assert all(torch.equal(a, b) for a, b in zip(built.features.state_dict().values(),
                                                  reference.state_dict().values(), strict=True))
    assert BUILTIN_TEACHER_WEIGHTS in spec_for_name("tf_efficientnet_lite0").weights


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_offline_a_timm_download_fails_at_once_with_a_clear_message(monkeypatch, no_proxy):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(TeacherWeightsError, match=r"not in the local cache, and HF_HUB_OFFLINE"):
        build_feature_model(TeacherSpec(arch="resnet18", weights="timm"))
    assert time.monotonic() - start < 10


def test_an_unreachable_hub_fails_within_seconds(monkeypatch, no_proxy):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    start = time.monotonic()
    with pytest.raises(TeacherWeightsError, match=r"127\.0\.0\.1:9 cannot be reached"):
        build_feature_model(TeacherSpec(arch="resnet18", weights="timm"))
    assert time.monotonic() - start < 10


def test_offline_timm_weights_in_the_cache_are_used(monkeypatch, no_proxy, tmp_path):
    import timm
    from safetensors.torch import save_file

    import sp_adapter.prior.teacher as teacher_module

    torch.manual_seed(0)
    weights = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file(weights, str(tmp_path / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(teacher_module, "cached_timm_weights",
                        lambda arch: str(tmp_path / "model.safetensors"))
    features = build_feature_model(TeacherSpec(arch="resnet18", weights="timm"))
    assert torch.equal(features.state_dict()["conv1.weight"], weights["conv1.weight"])


def test_inference_needs_no_teacher(teacher, small_pair):
    blurry, sharp = small_pair
    trained = sp.wrap(small_unet(), teacher=teacher)
    g = torch.Generator().manual_seed(5)
    for name, p in sp.get_prior(trained).named_parameters():
        if "student" not in name:  # non-zero SAT, as after training
            p.data = 0.3 * torch.randn(p.shape, generator=g)
    trained.eval()
    with torch.no_grad():
        expected = trained(blurry)

    fresh = sp.wrap(small_unet(1), teacher=None).eval()
    with pytest.warns(UserWarning, match="random weights"), torch.no_grad():
        fresh(blurry)
    fresh.load_state_dict(trained.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            assert torch.equal(fresh(blurry), expected)
    with pytest.raises(PriorLossError, match="no teacher"):
        sp.prior_loss(fresh, sharp)


# -- DataParallel ----------------------------------------------------------------------------
def test_dataparallel_without_gpus_is_the_model_itself(teacher, small_pair):
    blurry, sharp = small_pair
    net = sp.wrap(small_unet(), teacher=teacher)
    net(blurry)
    expected = sp.prior_loss(net, sharp)
    parallel = nn.DataParallel(net)
    parallel(blurry)
    assert torch.equal(sp.prior_loss(parallel, sharp), expected)


def test_prior_loss_refuses_replicas_and_points_to_ddp(teacher, small_pair):
    """nn.DataParallel on several GPUs runs replicas on chunks of the batch; a replica's
    forward (made here on the CPU the way DataParallel makes them) is refused."""
    blurry, sharp = small_pair
    net = sp.wrap(small_unet(), teacher=teacher)
    replica = net._replicate_for_data_parallel()
    replica(blurry)
    with pytest.raises(PriorLossError, match="DistributedDataParallel"):
        sp.prior_loss(net, sharp)
    net(blurry)  # a forward of the model itself is fine again
    assert torch.isfinite(sp.prior_loss(net, sharp))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_prior_loss_refuses_dataparallel_on_two_gpus(teacher, small_pair):
    blurry, sharp = (x.cuda() for x in small_pair)
    net = sp.wrap(small_unet(), teacher=teacher).cuda()
    parallel = nn.DataParallel(net, device_ids=[0, 1])
    parallel(blurry)
    with pytest.raises(PriorLossError, match="DistributedDataParallel"):
        sp.prior_loss(parallel, sharp)


# -- the CLI ---------------------------------------------------------------------------------
def test_cli_perceptual_none_names_the_alpha_flag(tmp_path, capsys):
    from sp_adapter.cli import main

    run = tmp_path / "run"
    assert main(["train", "--run", str(run), "--perceptual", "none", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--alpha 0" in err and "build_perceptual" not in err
    assert not run.exists()
    assert os.listdir(tmp_path) == []
