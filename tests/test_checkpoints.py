"""Loading published checkpoint formats into the backbone twins."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from sp_adapter.backbones.deepdeblur import MSResNet
from sp_adapter.backbones.mimo_unet import MIMOUNet
from sp_adapter.files.checkpoints import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_backbone_checkpoint,
    unwrap_checkpoint,
)

UNPICKLED: list[str] = []


class Marker:
    """An arbitrary object; records it if the loader ever rebuilds it."""

    def __setstate__(self, state: dict) -> None:
        UNPICKLED.append("Marker")
        self.__dict__.update(state)


def mimo() -> MIMOUNet:
    return MIMOUNet(num_res=1)


def deepdeblur() -> MSResNet:
    return MSResNet(n_resblocks=1, n_feats=8)


def randomized(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict for ``model``'s architecture with fresh random values."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}


def assert_loaded(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert list(own) == list(state)
    for k, v in state.items():
        assert torch.equal(own[k], v), k


def prefixed(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"module.{k}": v for k, v in state.items()}


FORMATS = {
    "mimo_pkl": lambda sd: {"model": sd},
    "mimo_full": lambda sd: {"model": sd, "optimizer": {"state": {}}, "epoch": 3},
    "mprnet": lambda sd: {"state_dict": prefixed(sd), "epoch": 3},
    "mssnet": lambda sd: {
        "model_state_dict": sd,
        "optimizer_state_dict": {"state": {}, "param_groups": []},
        "epoch": 3,
    },
    "deepdeblur": lambda sd: {"G": sd},
    "basicsr": lambda sd: {"params": sd},
    "bare": lambda sd: sd,
    "bare_prefixed": lambda sd: prefixed(sd),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_published_formats_load_strictly(fmt: str, tmp_path: Path) -> None:
    model = deepdeblur()
    state = randomized(model, 0)
    path = tmp_path / f"{fmt}.pth"
    torch.save(FORMATS[fmt](state), path)
    assert load_backbone_checkpoint(model, path) is model
    assert_loaded(model, state)
    # the same object, already loaded, and the path as a string
    model2 = load_backbone_checkpoint(deepdeblur(), FORMATS[fmt](state))
    assert_loaded(model2, state)
    assert_loaded(load_backbone_checkpoint(deepdeblur(), str(path)), state)


def test_mimo_unet_pkl(tmp_path: Path) -> None:
    model = mimo()
    state = randomized(model, 10)
    path = tmp_path / "MIMO-UNet.pkl"
    torch.save({"model": state}, path)
    assert_loaded(load_backbone_checkpoint(model, path), state)


def test_legacy_serialization_format(tmp_path: Path) -> None:
    """Checkpoints written by old PyTorch (non-zip format) also load under weights_only."""
    model = deepdeblur()
    state = randomized(model, 11)
    path = tmp_path / "legacy.pt"
    torch.save({"G": state}, path, _use_new_zipfile_serialization=False)
    assert_loaded(load_backbone_checkpoint(model, path), state)


def test_deepdeblur_checkpoint_with_discriminator(tmp_path: Path) -> None:
    model = deepdeblur()
    state = randomized(model, 1)
    path = tmp_path / "model-1000.pt"
    torch.save({"G": state, "D": {"conv.weight": torch.zeros(1)}}, path)
    assert_loaded(load_backbone_checkpoint(model, path), state)


def test_basicsr_prefers_ema_and_key_chooses(tmp_path: Path) -> None:
    model = deepdeblur()
    ema, raw = randomized(model, 2), randomized(model, 3)
    path = tmp_path / "net_g.pth"
    torch.save({"params": raw, "params_ema": ema}, path)
    assert_loaded(load_backbone_checkpoint(model, path), ema)
    assert_loaded(load_backbone_checkpoint(model, path, key="params"), raw)
    with pytest.raises(CheckpointFormatError, match="no entry 'nope'"):
        load_backbone_checkpoint(model, path, key="nope")


def test_safetensors(tmp_path: Path) -> None:
    model = deepdeblur()
    state = randomized(model, 4)
    path = tmp_path / "deepdeblur.safetensors"
    save_file(state, str(path))
    assert_loaded(load_backbone_checkpoint(model, path), state)


def test_module_and_unwrap() -> None:
    src = deepdeblur()
    state = unwrap_checkpoint(src)
    assert list(state) == list(src.state_dict())
    unwrapped = unwrap_checkpoint({"state_dict": prefixed(state), "epoch": 1})
    assert list(unwrapped) == list(state)
    kept = unwrap_checkpoint({"state_dict": prefixed(state)}, strip_prefix=False)
    assert all(k.startswith("module.") for k in kept)
    partly = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert list(unwrap_checkpoint(partly)) == ["module.a", "b"]


def test_unknown_format_is_reported() -> None:
    with pytest.raises(CheckpointFormatError, match="'net'") as info:
        unwrap_checkpoint({"net": {"weight": 1}, "epoch": 2})
    assert isinstance(info.value, ValueError)
    with pytest.raises(CheckpointFormatError, match="not a state dict"):
        unwrap_checkpoint({"model": {"a": torch.zeros(1)}, "x": 1}, key="x")


def test_prefix_kept_when_the_model_has_it() -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Conv2d(1, 1, 1)

    model = Holder()
    state = {"module.weight": torch.ones(1, 1, 1, 1), "module.bias": torch.ones(1)}
    assert_loaded(load_backbone_checkpoint(model, {"model": state}), state)


def test_mismatch_lists_missing_unexpected_and_shapes() -> None:
    model = deepdeblur()
    state = randomized(model, 5)
    del state["body_models.1.body.1.body.2.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["conv_end_models.2.uppath.0.weight"] = torch.zeros(12, 3, 3, 3)
    with pytest.raises(CheckpointMismatchError) as info:
        load_backbone_checkpoint(model, {"G": state})
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, CheckpointError)
    assert err.missing == ["body_models.1.body.1.body.2.bias"]
    assert err.unexpected == ["extra.weight"]
    assert err.shape_mismatches == [
        ("conv_end_models.2.uppath.0.weight", (12, 3, 5, 5), (12, 3, 3, 3))
    ]
    msg = str(err)
    assert "missing keys (1): body_models.1.body.1.body.2.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "conv_end_models.2.uppath.0.weight (expected [12, 3, 5, 5], got [12, 3, 3, 3])" in msg


def test_mismatch_message_truncates_long_lists() -> None:
    n_mimo = len(mimo().state_dict())
    n_dd = len(deepdeblur().state_dict())
    with pytest.raises(CheckpointMismatchError) as info:
        load_backbone_checkpoint(deepdeblur(), {"model": randomized(mimo(), 6)})
    msg = str(info.value)
    assert len(info.value.missing) == n_dd and len(info.value.unexpected) == n_mimo
    assert f"missing keys ({n_dd}):" in msg and f"... and {n_dd - 10} more" in msg
    assert f"unexpected keys ({n_mimo}):" in msg and f"... and {n_mimo - 10} more" in msg
    assert len(msg) < 3000


def test_non_strict_skips_keys_but_not_shapes() -> None:
    model = deepdeblur()
    state = randomized(model, 7)
    del state["body_models.0.body.0.bias"]
    state["extra.weight"] = torch.zeros(2)
    before = model.state_dict()["body_models.0.body.0.bias"].clone()
    with pytest.warns(UserWarning, match="1 missing keys"):
        load_backbone_checkpoint(model, state, strict=False)
    own = model.state_dict()
    assert torch.equal(own["body_models.0.body.0.bias"], before)
    key = "body_models.2.body.1.body.0.weight"
    assert torch.equal(own[key], state[key])
    state["body_models.0.body.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_backbone_checkpoint(model, state, strict=False)


def test_arbitrary_objects_are_never_unpickled(tmp_path: Path) -> None:
    model = deepdeblur()
    path = tmp_path / "evil.pkl"
    torch.save({"model": model.state_dict(), "extra": Marker()}, path)
    UNPICKLED.clear()
    with pytest.raises(UnsafeCheckpointError, match="not a checkpoint this library can load "
                       "safely") as info:
        load_backbone_checkpoint(model, path)
    assert "weights_only=False" not in str(info.value) and str(path) in str(info.value)
    assert UNPICKLED == []
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, pickle.UnpicklingError)
