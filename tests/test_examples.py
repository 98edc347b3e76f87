"""The examples run as a user would run them (tiny budgets)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import sp_adapter as sp
from sp_adapter.backbones.mimo_unet import MIMOUNetPlus
from sp_adapter.backbones.unet import UNet

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_trains_and_the_prior_loss_falls():
    history = _load("quickstart").main(
        ["--steps", "8", "--crop", "48", "--lr", "1e-3", "--width", "8"]
    )
    assert len(history) == 8
    first, last = history[0]["prior"], sum(h["prior"] for h in history[-3:]) / 3
    assert last < first


def test_third_party_script_with_two_added_lines():
    example = _load("third_party_training")
    with_prior = example.main(["--steps", "6", "--crop", "32"])
    without = example.main(["--steps", "6", "--crop", "32", "--no-prior"])
    assert len(with_prior) == len(without) == 6
    assert with_prior[-1] < with_prior[0]
    # the prior adds its loss term: the totals differ from the plain script's
    assert with_prior[0] != without[0]


def test_finetune_mimo_unet_plus_from_an_official_format_checkpoint(tmp_path):
    torch.manual_seed(0)
    published = MIMOUNetPlus(num_res=1)
    checkpoint = tmp_path / "MIMO-UNetPlus.pkl"
    torch.save({"model": published.state_dict()}, checkpoint)  # the official format
    out = tmp_path / "prior"
    result = _load("finetune_mimo_unet_plus").main(
        [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--steps",
            "3",
            "--crop",
            "32",
            "--batch",
            "2",
            "--num-res",
            "1",
            "--lr",
            "1e-3",
        ]
    )
    assert result["exact_at_step0"]
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors"}
    # only the prior was trained: the backbone still equals the published weights
    trained = {k: v for k, v in result["model"].state_dict().items() if not k.startswith("sp_")}
    reference_state = published.state_dict()
    assert list(trained) == list(reference_state)
    assert all(torch.equal(trained[k].cpu(), reference_state[k]) for k in trained)
    # the saved prior re-attaches to a freshly loaded published model and changes its output
    fresh = MIMOUNetPlus(num_res=1)
    fresh.load_state_dict(published.state_dict())
    sp.from_pretrained(out, model=fresh)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        modulated = fresh(x)[-1]
        reference = published(x)[-1]
    assert not torch.equal(modulated, reference)
    sp.unwrap(fresh)
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), published.state_dict().values(), strict=True)
    )


def test_lightning_module_fits_checkpoints_reloads_and_resumes_with_the_prior(tmp_path):
    pytest.importorskip("lightning")
    result = _load("lightning_training").main(
        ["--steps", "3", "--more", "2", "--crop", "16", "--out", str(tmp_path)])
    assert result["prior_trained"] and result["same_output"]
    assert result["global_step"] == 5  # fit(ckpt_path=...) went on from step 3
    saved = torch.load(result["checkpoint"], map_location="cpu", weights_only=True)
    assert any(k.startswith("net.sp_prior.") for k in saved["state_dict"])
    # the checkpoint's optimiser state covers the prior's parameters too
    held = sum(len(g["params"]) for g in saved["optimizer_states"][0]["param_groups"])
    assert held == sum(1 for p in result["module"].parameters() if p.requires_grad)


def test_accelerate_script_saves_loads_and_unwraps_with_the_prior(tmp_path):
    pytest.importorskip("accelerate")
    result = _load("accelerate_training").main(
        ["--steps", "3", "--more", "2", "--crop", "16", "--out", str(tmp_path)])
    assert result["restored"] and result["continued_alike"]
    assert sp.is_wrapped(result["network"])
    fresh = sp.from_pretrained(result["prior_dir"], model=UNet(width=8, blocks=1))
    saved, trained = sp.prior_state_dict(fresh), sp.prior_state_dict(result["network"])
    assert all(torch.equal(saved[k], trained[k]) for k in trained)

