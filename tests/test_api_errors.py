"""Bad input to ``wrap``, a wrapped model, ``prior_loss`` and the checkpoint loaders gets the
library's own error: what was wrong, and what would be right."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import sp_adapter as sp
from sp_adapter.adapters import match
from sp_adapter.backbones.unet import UNet
from sp_adapter.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ImageInputError,
    LevelNotFoundError,
    PriorLossError,
    SPAdapterError,
    UnknownOptionError,
    UnsafeCheckpointError,
    WrapError,
)
from sp_adapter.files.checkpoints import load_backbone_checkpoint, read_checkpoint
from sp_adapter.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _unet() -> UNet:
    torch.manual_seed(0)
    return UNet(width=8, blocks=1)


@pytest.fixture
def small_pair():
    g = torch.Generator().manual_seed(3)
    sharp = torch.rand(2, 3, 32, 32, generator=g)
    return F.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False), sharp


# -- what wrap is given --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("x", r"nn\.Module instance .*got str 'x'"),
        (None, r"nn\.Module instance .*got NoneType None"),
        (UNet, r"the class UNet, not a network: build it first, e\.g\. sp_adapter\.wrap\(UNet"),
        (lambda x: x, r"nn\.Module instance .*got a function"),
    ],
)
def test_wrap_of_something_that_is_no_network(given, said):
    with pytest.raises(WrapError, match=said):
        sp.wrap(given)


def test_levels_that_are_no_list_or_a_bool_are_refused_naming_the_choices():
    with pytest.raises(WrapError, match=r"levels must be a list of level names \['level1', "
                                        r"'level2', 'level3'\].*got float 3\.5"):
        sp.wrap(_unet(), levels=3.5, teacher=None)
    with pytest.raises(WrapError, match=r"levels\[0\] is True \(a bool is not an index\)"):
        sp.wrap(_unet(), levels=[True], teacher=None)
    with pytest.raises(LevelNotFoundError, match=r"a bool is not an index"):
        match(_unet())[1].select([False])


def test_a_misspelt_level_name_lists_the_closest_first():
    with pytest.raises(LevelNotFoundError, match=r"no level 'levle2'; its levels are "
                                                 r"\['level2', "):
        sp.wrap(_unet(), levels=["levle2"], teacher=None)


def test_a_misspelt_option_names_the_valid_ones_closest_first():
    with pytest.raises(UnknownOptionError, match=r"unknown option 'fusoin' \(did you mean "
                                                 r"'fusion'\?\); valid: \['fusion', ") as info:
        sp.wrap(_unet(), teacher=None, fusoin="add")
    assert isinstance(info.value, TypeError) and isinstance(info.value, SPAdapterError)


def test_a_misspelt_level_field_names_the_valid_ones():
    with pytest.raises(UnknownOptionError, match=r"unknown Level field 'chanels' in "
                                                 r"levels\[0\] \(did you mean 'channels'\?\)"):
        sp.wrap(_unet(), levels=[{"site": "up1", "chanels": 8}], teacher=None, student="small")


# -- what a wrapped model is given ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_another_precision_than_the_weights_names_both(dtype, small_pair):
    net = sp.wrap(_unet(), teacher=None, student="small")
    with pytest.raises(ImageInputError, match=rf"input is {dtype} but its weights are "
                                              r"torch\.float32.*torch\.autocast"):
        net(small_pair[0].to(dtype))


def test_autocast_inputs_are_not_refused(small_pair):
    net = sp.wrap(_unet(), teacher=None, student="small")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(small_pair[0].to(torch.bfloat16))
    assert out.shape == small_pair[0].shape


@pytest.mark.parametrize("side", [1, 2])
def test_an_image_below_the_networks_minimum_names_it(side):
    net = sp.wrap(_unet(), teacher=None, student="small")
    with pytest.raises(ImageInputError, match=rf"is {side}x{side} pixels; this network needs "
                                              r"at least 3x3"):
        net(torch.rand(1, 3, side, side))
    assert net(torch.rand(1, 3, 3, 3)).shape == (1, 3, 3, 3)


# -- prior_loss after the wrong kind of forward ----------------------------------------------
def test_prior_loss_after_a_no_grad_forward_names_it(teacher, small_pair):
    blurry, sharp = small_pair
    net = sp.wrap(_unet(), teacher=teacher)
    with torch.no_grad():
        net(blurry)
    with pytest.raises(PriorLossError, match=r"without gradients \(under torch\.no_grad"):
        sp.prior_loss(net, sharp)
    with torch.no_grad():  # logging the loss under no_grad is fine
        assert torch.isfinite(sp.prior_loss(net, sharp))


def test_prior_loss_after_a_forward_that_raised_is_refused(teacher, small_pair):
    blurry, sharp = small_pair
    net = sp.wrap(_unet(), teacher=teacher)
    net(blurry)

    def out_of_memory(module, args):
        raise RuntimeError("CUDA out of memory (simulated)")

    handle = net.dec1.register_forward_pre_hook(out_of_memory)
    with pytest.raises(RuntimeError, match="simulated"):
        net(blurry)
    handle.remove()
    with pytest.raises(PriorLossError, match=r"last forward .* raised an exception"):
        sp.prior_loss(net, sharp)
    net(blurry)  # the next batch trains normally
    sp.prior_loss(net, sharp).backward()


# -- checkpoint files ----------------------------------------------------------------------
def _weights(tmp_path: Path) -> tuple[Path, Path]:
    state = _unet().state_dict()
    pt, st = tmp_path / "good.pt", tmp_path / "good.safetensors"
    torch.save({"params": state}, pt)
    save_file(dict(state), str(st))
    return pt, st


def _broken(tmp_path: Path) -> dict[str, Path]:
    pt, st = _weights(tmp_path)
    files = {}
    data = st.read_bytes()
    files["header too large"] = tmp_path / "header.safetensors"
    files["header too large"].write_bytes(b"\xff" * 8 + data[8:])
    files["incomplete metadata"] = tmp_path / "short.safetensors"
    files["incomplete metadata"].write_bytes(data[:-16])
    files["truncated zip"] = tmp_path / "short.pt"
    files["truncated zip"].write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    files["empty"] = tmp_path / "empty.pt"
    files["empty"].write_bytes(b"")
    legacy = tmp_path / "legacy.pt"
    torch.save({"params": _unet().state_dict()}, legacy, _use_new_zipfile_serialization=False)
    files["truncated legacy"] = tmp_path / "legacy_short.pt"
    files["truncated legacy"].write_bytes(legacy.read_bytes()[:200])
    return files


def test_unreadable_checkpoints_are_one_error_naming_the_file(tmp_path):
    for why, path in _broken(tmp_path).items():
        for load in (lambda p: load_backbone_checkpoint(_unet(), p), read_checkpoint,
                     load_checkpoint):
            with pytest.raises(CheckpointError, match="could not be read as a checkpoint") as info:
                load(path)
            assert str(path) in str(info.value), why
            assert isinstance(info.value, ValueError)


class NotWeights:
    """An arbitrary object in a pickle: never rebuilt."""

    rebuilt = False

    def __setstate__(self, state):
        NotWeights.rebuilt = True


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, for evil.pkl
def test_a_pickle_that_is_no_weights_file_is_refused_without_suggesting_unsafe_loading(
    tmp_path,
):
    files = {"torch.save": tmp_path / "evil.pt", "pickle": tmp_path / "evil.pkl",
             "text": tmp_path / "notes.pth"}
    torch.save({"params": _unet().state_dict(), "x": NotWeights()}, files["torch.save"])
    with open(files["pickle"], "wb") as handle:
        pickle.dump({"x": NotWeights()}, handle)
    files["text"].write_text("not a checkpoint")
    for kind, path in files.items():
        for load in (read_checkpoint, load_checkpoint):
            with pytest.raises(UnsafeCheckpointError,
                               match="not a checkpoint this library can load safely") as info:
                load(path)
            message = str(info.value)
            assert str(path) in message and "weights_only" not in message
            assert ("NotWeights" in message) == (kind == "torch.save")
    assert not NotWeights.rebuilt


def test_a_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as info:
        load_backbone_checkpoint(_unet(), tmp_path / "nope.pth")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CheckpointError)
    with pytest.raises(CheckpointNotFoundError, match="is a folder"):
        read_checkpoint(tmp_path)


def test_good_files_still_load(tmp_path):
    pt, st = _weights(tmp_path)
    reference = _unet().state_dict()
    for path in (pt, st):
        loaded = load_backbone_checkpoint(UNet(width=8, blocks=1), path).state_dict()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference)
