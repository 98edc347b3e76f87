"""``distill_to_backbone``: a wrapped network distilled into its bare backbone (the user's
class, keys and loading code), nearer the +SP output than where it started; resumable,
written atomically; and ``sp-adapter distill`` end to end."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import sp_adapter as sp
from sp_adapter.backbones.mimo_unet import MIMOUNet
from sp_adapter.backbones.nafnet import NAFNet
from sp_adapter.backbones.unet import UNet
from sp_adapter.errors import DistillError, WrapError
from sp_adapter.train.checkpoint import save_atomic
from sp_adapter.train.distill import STATE_FILE, DistillConfig, LevelTaps

BUILD = {
    "UNet": lambda: UNet(width=8, blocks=1),
    "MIMOUNet": lambda: MIMOUNet(num_res=1),
    "NAFNet": lambda: NAFNet(width=8, enc_blk_nums=[1, 1, 1], dec_blk_nums=[1, 1, 1]),
}


def _wrapped(name: str = "UNet") -> nn.Module:
    """A wrapped network whose prior changes its output, as a trained one does."""
    torch.manual_seed(0)
    model = sp.wrap(BUILD[name](), teacher=None, student="small")
    with torch.no_grad():
        for p in sp.get_prior(model).parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _batch(n: int = 2, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(5))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _final(out) -> torch.Tensor:
    return out[-1] if isinstance(out, (list, tuple)) else out


def _gap(net: nn.Module, wrapped: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (_final(net(x)) - _final(wrapped(x))).abs().mean().item()


def test_distilled_network_is_the_bare_class_with_its_keys_and_no_hooks(one_thread):
    wrapped = _wrapped()
    x = _batch()
    with torch.no_grad():
        before = wrapped(x)
    bare = sp.distill_to_backbone(wrapped, [x], steps=2, progress=False)
    assert type(bare) is UNet
    assert not sp.is_wrapped(bare) and _hooks(bare) == 0
    assert list(bare.state_dict()) == list(UNet(width=8, blocks=1).state_dict())
    fresh = UNet(width=8, blocks=1)
    fresh.load_state_dict(bare.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), bare(x))
        # the wrapped network is left as it was: still wrapped, same outputs, no extra hooks
        assert sp.is_wrapped(wrapped) and torch.equal(wrapped(x), before)
    assert not bare.training


@pytest.mark.parametrize(("name", "feature_weight"), [("UNet", 0.0), ("MIMOUNet", 0.1)])
def test_short_distillation_moves_nearer_the_prior_output(name, feature_weight, one_thread):
    """On a fixed batch, a few steps bring the bare network nearer the +SP output than
    the backbone weights it started from (MIMO-UNet: also matching the level tensors,
    which it modulates at its concatenated inputs)."""
    wrapped = _wrapped(name)
    x = _batch(side=32)
    start = sp.unwrap(copy.deepcopy(wrapped))
    bare = sp.distill_to_backbone(wrapped, [x], steps=15, lr=1e-3, progress=False,
                                  feature_weight=feature_weight, cache_targets=True)
    assert _gap(bare, wrapped, x) < 0.7 * _gap(start, wrapped, x)


def test_level_taps_see_the_modulated_tensors_and_come_off(one_thread):
    """The taps on a wrapped network record the level tensors after the prior changed
    them (not the bare network's), and leave no hook behind."""
    wrapped = _wrapped()
    bare = sp.unwrap(copy.deepcopy(wrapped))
    levels = sp.get_hook(wrapped).levels
    hooks = _hooks(wrapped), _hooks(bare)
    taps = LevelTaps(wrapped, levels), LevelTaps(bare, levels)
    x = _batch()
    with torch.no_grad():
        wrapped(x), bare(x)
    seen = [t.take() for t in taps]
    assert set(seen[0]) == set(levels)
    assert any((seen[0][k][0] - seen[1][k][0]).abs().max() > 1e-4 for k in levels)
    for t in taps:
        t.remove()
    assert (_hooks(wrapped), _hooks(bare)) == hooks


def test_resume_continues_where_the_state_stopped(tmp_path, one_thread):
    """A distillation stopped after its step-3 save and resumed ends where an
    uninterrupted one ends."""
    x1, x2 = _batch(), _batch(side=32) * 0.5
    data = [x1, x2]
    whole = sp.distill_to_backbone(_wrapped(), data, steps=6, lr=1e-3, progress=False)

    def stop(step: int, loss: float) -> None:
        if step == 4:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        sp.distill_to_backbone(_wrapped(), data, steps=6, lr=1e-3, save_every=3, run_dir=run,
                               progress=False, on_step=stop)
    assert torch.load(run / STATE_FILE, weights_only=True)["step"] == 3
    resumed = sp.distill_to_backbone(_wrapped(), data, steps=6, lr=1e-3, save_every=3,
                                     run_dir=run, progress=False)
    for key, value in whole.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key], value, atol=1e-6), key
    with pytest.raises(DistillError, match="other settings"):
        sp.distill_to_backbone(_wrapped(), data, steps=6, lr=5e-4, run_dir=run, progress=False)
    with pytest.raises(DistillError, match="exists"):
        sp.distill_to_backbone(_wrapped(), data, steps=6, lr=1e-3, run_dir=run, resume=False,
                               progress=False)


def test_state_and_checkpoint_writes_are_atomic(tmp_path, monkeypatch, one_thread):
    """A save that fails half-way leaves the previous file whole and no temporary file;
    an existing checkpoint is not replaced unless asked."""
    target = tmp_path / "model.pt"
    save_atomic({"w": torch.ones(3)}, target)
    bare = sp.distill_to_backbone(_wrapped(), [_batch()], steps=1, progress=False)
    with pytest.raises(DistillError, match="exists"):
        sp.save_backbone_checkpoint(bare, target)

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk unplugged")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="unplugged"):
        sp.save_backbone_checkpoint(bare, target, overwrite=True)
    with pytest.raises(OSError, match="unplugged"):
        sp.distill_to_backbone(_wrapped(), [_batch()], steps=1, run_dir=tmp_path / "r",
                               progress=False)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["model.pt"]


@pytest.mark.parametrize(("name", "key"), [("MIMOUNet", "model"), ("NAFNet", "params"),
                                           ("UNet", None)])
def test_checkpoint_in_the_backbones_own_format_loads_strictly(name, key, tmp_path,
                                                                one_thread):
    bare = sp.distill_to_backbone(_wrapped(name), [_batch()], steps=1, progress=False)
    path = sp.save_backbone_checkpoint(bare, tmp_path / "net.pt")
    saved = torch.load(path, weights_only=True)
    state = saved if key is None else saved[key]
    if key is not None:
        assert list(saved) == [key]
    fresh = BUILD[name]()
    fresh.load_state_dict(state, strict=True)  # what the official code does
    for k, v in bare.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_refusals_are_the_librarys_errors(tmp_path, one_thread):
    with pytest.raises(WrapError, match="not wrapped"):
        sp.distill_to_backbone(UNet(width=8, blocks=1), [_batch()], steps=1, progress=False)
    with pytest.raises(DistillError, match="no batch"):
        sp.distill_to_backbone(_wrapped(), [], steps=1, progress=False)
    with pytest.raises(DistillError, match="steps must be at least 1"):
        sp.distill_to_backbone(_wrapped(), [_batch()], steps=0, progress=False)
    with pytest.raises(DistillError, match="first item"):
        sp.distill_to_backbone(_wrapped(), [{"blurry": _batch()}], steps=1, progress=False)
    assert DistillConfig().lr_at(0) == DistillConfig().lr


# -- the command ---------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("SP_ADAPTER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "sp_adapter.cli", "distill", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def _run_folder(tmp_path):
    """A run folder as ``sp-adapter train --prior`` leaves it (a tiny UNet, small
    student), with a prior that changes the output."""
    from sp_adapter.prior.config import PriorConfig
    from sp_adapter.train import ModelSpec
    from sp_adapter.train.checkpoint import checkpoint_path

    spec = ModelSpec("unet", {"width": 8}, PriorConfig(student="small").to_dict())
    torch.manual_seed(0)
    model = spec.build(teacher=None)
    with torch.no_grad():
        for p in sp.get_prior(model).parameters():
            p.add_(0.05 * torch.randn_like(p))
    run = tmp_path / "run"
    save_atomic({"model": model.state_dict(), "model_spec": spec.to_dict(), "step": 1},
                checkpoint_path(run, 1))
    return run


def test_cli_distills_a_run_into_a_checkpoint_the_bare_network_loads(tmp_path):
    run, out = _run_folder(tmp_path), tmp_path / "out"
    done = _cli("--run-dir", str(run), "--out", str(out), "--steps", "2", "--batch", "1",
                "--crop", "32", "--no-progress")
    assert done.returncode == 0, done.stderr
    state = torch.load(out / "model.pt", weights_only=True)  # UNet: a bare state dict
    from sp_adapter.train import backbone_spec

    backbone_spec("unet").build(width=8).load_state_dict(state, strict=True)
    assert (out / "distill.json").is_file() and not (out / STATE_FILE).exists()
    again = _cli("--run-dir", str(run), "--out", str(out), "--steps", "1")
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_cli_bad_run_dir_is_one_line_without_traceback(tmp_path):
    done = _cli("--run-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "missing" in done.stderr


def test_cli_distills_on_a_folder_of_blurry_photos(tmp_path, one_thread):
    """``--images``: the user's own blurry photos (no sharp images) are enough."""
    import numpy as np
    from PIL import Image

    from sp_adapter.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            photos / f"p{i}.png")
    run, out = _run_folder(tmp_path), tmp_path / "out"
    assert main(["distill", "--run-dir", str(run), "--out", str(out), "--images", str(photos),
                 "--steps", "2", "--batch", "2", "--crop", "32", "--no-progress"]) == 0
    state = torch.load(out / "model.pt", weights_only=True)
    UNet(width=8).load_state_dict(state, strict=True)
    assert main(["distill", "--run-dir", str(run), "--out", str(tmp_path / "o2"),
                 "--images", str(photos), "--crop", "64"]) == 2  # larger than the photos
