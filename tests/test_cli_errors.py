"""The CLI's answer to a user's mistake or a damaged file: one ``error:`` line naming the
input and what would be right, exit status 2, no traceback (in-process and as a program)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import TINY, one_error_line
from PIL import Image

from sp_adapter.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A one-step bare UNet run, a truncated copy of its checkpoint, an image and a damaged
    image."""
    folder = tmp_path_factory.mktemp("errors")
    run = folder / "run"
    assert main(["train", "--run-dir", str(run), "--no-prior", "--steps", "1", *TINY]) == 0
    checkpoint = run / "checkpoints" / "step_00000001.pt"
    truncated = folder / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:3000])
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(folder / "photo.png")
    data = (folder / "photo.png").read_bytes()
    (folder / "damaged.png").write_bytes(data[: len(data) // 2])
    return {"run": run, "truncated": truncated, "image": folder / "photo.png",
            "damaged": folder / "damaged.png", "folder": folder}


def test_a_truncated_checkpoint_is_named_by_eval_deblur_and_calibrate(files, tmp_path, capsys):
    bad = str(files["truncated"])
    for argv in (["eval", "--checkpoint", bad, "--limit", "1", "--no-progress"],
                 ["deblur", str(files["image"]), "--checkpoint", bad, "--out",
                  str(tmp_path / "out"), "--no-progress"],
                 ["calibrate", "--checkpoint", bad, "--crops", "1", "--no-progress"]):
        err = one_error_line(capsys, argv, rf"{re.escape(bad)}.*(truncated|corrupt)")
        assert "truncated, corrupt" in err and "weights_only" not in err


class Gadget:
    """An object the restricted unpickler refuses."""


def test_a_checkpoint_holding_other_objects_is_refused_without_suggesting_unsafe_loading(
        files, tmp_path, capsys):
    import torch

    evil = tmp_path / "evil.pt"
    torch.save({"model_spec": None, "model": {}, "gadget": Gadget()}, evil)
    for argv in (["eval", "--checkpoint", str(evil), "--no-progress"],
                 ["deblur", str(files["image"]), "--checkpoint", str(evil), "--out",
                  str(tmp_path / "out"), "--no-progress"]):
        err = one_error_line(capsys, argv, re.escape(str(evil)))
        assert "weights_only=False" not in err and "can be loaded" not in err, err


def test_train_resume_with_only_damaged_checkpoints_names_them(files, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000001.pt").write_bytes(files["truncated"].read_bytes())
    capsys.readouterr()
    one_error_line(capsys, ["train", "--run-dir", str(run), "--resume", "--no-prior",
                              "--steps", "2", *TINY],
                     r"no checkpoint in .*checkpoints can be read: step_00000001\.pt \(")


def test_bad_numbers_are_refused_naming_the_flag(files, tmp_path, capsys):
    run, image = str(files["run"]), str(files["image"])
    out = str(tmp_path / "out")
    one_error_line(capsys, ["deblur", image, "--run-dir", run, "--out", out, "--tile", "-5"],
                     r"--tile must be at least 1 .*got -5")
    one_error_line(capsys, ["deblur", image, "--run-dir", run, "--out", out, "--overlap",
                              "-1"], "--overlap must be 0 or more")
    one_error_line(capsys, ["eval", "--run-dir", run, "--tile", "0"], "--tile must be")
    one_error_line(capsys, ["eval", "--run-dir", run, "--limit", "0"], "--limit must be")
    one_error_line(capsys, ["calibrate", "--run-dir", run, "--crops", "0"], "--crops must be")
    one_error_line(capsys, ["demo", "--out", str(tmp_path / "demo"), "--width", "0"],
                     "--width must be at least 1")
    for flag in ("--width", "--steps", "--batch"):
        argv = ["train", "--run-dir", str(tmp_path / "new"), "--no-prior", "--steps", "1",
                *TINY, flag, "0"]
        one_error_line(capsys, argv, rf"{flag} must be at least 1 .*got 0")
    assert not (tmp_path / "out").exists() and not (tmp_path / "new").exists()
    assert not (tmp_path / "demo").exists()


def test_teacher_levels_the_teacher_lacks_are_refused(tmp_path, capsys):
    one_error_line(capsys, ["train", "--run-dir", str(tmp_path / "new"), "--student", "small",
                              "--teacher-levels", "1", "2", "9", *TINY],
                     r"--teacher-levels 9: the teacher tf_efficientnet_lite0 has feature "
                     r"levels 0-4")
    one_error_line(capsys, ["demo", "--out", str(tmp_path / "demo"), "--teacher-levels",
                              "0", "5", "--no-progress"], r"--teacher-levels 5: the teacher")
    assert not (tmp_path / "new").exists() and not (tmp_path / "demo").exists()


def test_out_pointing_at_a_file_is_refused(files, tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("mine")
    one_error_line(capsys, ["deblur", str(files["image"]), "--run-dir", str(files["run"]),
                              "--out", str(out)], rf"--out {re.escape(str(out))} is a file")
    one_error_line(capsys, ["demo", "--out", str(out)], rf"--out {re.escape(str(out))} is "
                     "a file")
    assert out.read_text() == "mine"


def test_missing_inputs_exit_2_with_one_line(tmp_path, capsys):
    one_error_line(capsys, ["train", "--run-dir", str(tmp_path / "g"), "--dataset", "gopro",
                              "--no-prior", *TINY], "--dataset gopro needs --root")
    one_error_line(capsys, ["eval", "--run-dir", "/nonexistent"],
                     "no such checkpoint or run folder: /nonexistent")
    one_error_line(capsys, ["train", "--run-dir", str(tmp_path / "typo"), "--resume",
                              "--no-prior", *TINY], "holds no run to resume")
    assert not (tmp_path / "typo").exists() and not (tmp_path / "g").exists()


def test_a_run_folder_with_a_log_but_no_checkpoint_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"step": 1, "total": 0.5}) + "\n")
    (run / "run.json").write_text("{}\n")
    argv = ["train", "--run-dir", str(run), "--no-prior", "--steps", "1", *TINY]
    one_error_line(capsys, argv, "already holds a run without a checkpoint yet.*--overwrite")
    assert (run / "log.jsonl").read_text() == json.dumps({"step": 1, "total": 0.5}) + "\n"
    assert main([*argv, "--overwrite"]) == 0
    assert (run / "checkpoints" / "step_00000001.pt").is_file()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SP_ADAPTER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "sp_adapter.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_program_ends_damaged_inputs_without_a_traceback(files, tmp_path):
    """As a user runs it: a damaged image, a truncated checkpoint, levels timm lacks."""
    cases = [
        (["deblur", str(files["damaged"]), "--run-dir", str(files["run"]), "--out",
          str(tmp_path / "out"), "--no-progress"],
         f"cannot read the image {files['damaged']}: image file is truncated"),
        (["eval", "--checkpoint", str(files["truncated"]), "--no-progress"],
         f"{files['truncated']} could not be read as a checkpoint"),
        (["train", "--run-dir", str(tmp_path / "new"), "--student", "small",
          "--teacher-levels", "9", *TINY], "--teacher-levels 9: the teacher"),
    ]
    for argv, message in cases:
        done = run_cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr
        assert message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
