"""A calibrated strength saved beside its checkpoint: written, read back, checked."""

from __future__ import annotations

import json

import pytest
import torch

from sp_adapter.train.calibrate import StrengthCalibration
from sp_adapter.train.checkpoint import checkpoint_path, prune_checkpoints
from sp_adapter.train.strength_file import save_strength, saved_strength, strength_path

CALIBRATION = StrengthCalibration(strengths=(0.6, 0.8, 1.0), psnr=(21.9, 22.1, 22.0),
                                  count=4)


def _checkpoint(run, step: int, value: float = 0.0):
    path = checkpoint_path(run, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.full((2,), value)}, "step": step}, path)
    return path


def test_saved_strength_round_trips_and_records_what_was_measured(tmp_path):
    ckpt = _checkpoint(tmp_path, 10)
    assert saved_strength(ckpt) is None  # nothing saved yet
    written = save_strength(ckpt, CALIBRATION, {"photos": ["camera"], "crop": 32})
    assert written == strength_path(ckpt) == ckpt.with_name("step_00000010.strength.json")
    record = json.loads(written.read_text())
    assert record["strength"] == 0.8 and record["checkpoint"] == "step_00000010.pt"
    assert record["calibration"]["psnr"] == [21.9, 22.1, 22.0]
    assert record["held_out"] == {"photos": ["camera"], "crop": 32}
    assert saved_strength(ckpt) == 0.8


def test_a_rewritten_checkpoint_is_loaded_as_trained_with_a_warning(tmp_path):
    ckpt = _checkpoint(tmp_path, 10)
    save_strength(ckpt, CALIBRATION, {})
    _checkpoint(tmp_path, 10, value=1.0)  # another checkpoint under the same name
    with pytest.warns(UserWarning, match="calibrated for an earlier step_00000010.pt"):
        assert saved_strength(ckpt) is None


def test_a_damaged_strength_file_is_refused_naming_it(tmp_path):
    ckpt = _checkpoint(tmp_path, 10)
    path = save_strength(ckpt, CALIBRATION, {})
    record = json.loads(path.read_text())
    for damage in ("{not json", json.dumps({**record, "strength": "nan"}),
                   json.dumps({"strength": 0.8})):
        path.write_text(damage)
        with pytest.raises(ValueError, match="step_00000010.strength.json is not a prior"):
            saved_strength(ckpt)


def test_pruning_checkpoints_removes_their_strengths(tmp_path):
    old, new = _checkpoint(tmp_path, 2), _checkpoint(tmp_path, 4)
    save_strength(old, CALIBRATION, {})
    save_strength(new, CALIBRATION, {})
    prune_checkpoints(tmp_path, keep=1)
    assert not old.exists() and not strength_path(old).exists()
    assert new.exists() and strength_path(new).exists()
