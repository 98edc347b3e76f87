"""The CLI and the runs it writes (issue 45): a run folder is the source of truth for
``train --resume``, ``eval`` and ``calibrate``; options and data are checked before anything
is written; environment faults are one ``error:`` line, exit 2, and nothing half-done."""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import TINY, one_error_line
from PIL import Image

from sp_adapter.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SP_ADAPTER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "sp_adapter.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_program_error(done: subprocess.CompletedProcess, text: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and text in done.stderr, done.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two bare one-step UNet runs (seeds 0 and 1, mild blur) and an image."""
    folder = tmp_path_factory.mktemp("runs")
    for name, seed in (("a", "0"), ("b", "1")):
        assert main(["train", "--run-dir", str(folder / name), "--no-prior", "--steps", "1",
                     "--blur", "mild", "--seed", seed, *TINY]) == 0
    image = folder / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(image)
    return {"a": folder / "a", "b": folder / "b", "image": image, "folder": folder}


# -- eval of several runs ----------------------------------------------------------------
def test_eval_of_two_runs_prints_one_blurry_score_and_writes_it_to_json(runs, tmp_path,
                                                                        capsys):
    from sp_adapter.cli.common import make_dataset
    from sp_adapter.train.evaluate import score_inputs

    scores = tmp_path / "scores.json"
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(runs["a"]), str(runs["b"]), "--limit", "3",
                 "--crop", "32", "--json", str(scores), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "from the run: --blur mild" in out  # the runs' data, said
    assert len(re.findall(r"blurry input: PSNR", out)) == 1
    printed = float(re.search(r"blurry input: PSNR ([\d.]+) dB", out).group(1))
    # the inputs scored on their own, as a network that returns its input
    data = make_dataset("synthetic", None, "test", 32, "mild", 0)
    subset = torch.utils.data.Subset(data, range(3))
    report = json.loads(scores.read_text())
    truth = score_inputs(subset, convention=report["convention"]["name"])
    assert printed == pytest.approx(truth.psnr, abs=1e-3)
    assert report["blurry"]["psnr"] == pytest.approx(truth.psnr, abs=1e-9)
    deblurred = [m["psnr"] for m in report["models"]]
    assert deblurred[0] != deblurred[1]
    for model in report["models"]:
        assert model["blurry_psnr"] == pytest.approx(truth.psnr, abs=1e-9)
        assert model["blurry_psnr"] != model["psnr"]
        for row, own in zip(model["per_image"], truth.per_image, strict=True):
            assert row["blurry_psnr"] == pytest.approx(own["psnr"], abs=1e-9)


def test_eval_and_calibrate_refuse_data_the_run_did_not_train_on(runs, capsys):
    one_error_line(capsys, ["eval", "--run-dir", str(runs["a"]), "--blur", "severe",
                            "--limit", "1"],
                   r"trained on other data: --blur severe \(trained on mild\).*--other-data")
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(runs["a"]), "--blur", "severe", "--other-data",
                 "--limit", "1", "--crop", "32", "--no-progress"]) == 0
    assert "synthetic (severe blur) test" in capsys.readouterr().out


# -- train --resume reads the run ------------------------------------------------------------
def test_resume_takes_the_runs_options_extends_steps_and_leaves_a_finished_run_alone(
        tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--no-prior", "--steps", "2",
                 "--checkpoint-every", "1", *TINY]) == 0
    # the options left out come from the run: it is finished at --steps 2
    capsys.readouterr()
    files = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert main(["train", "--run-dir", str(run), "--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "from the run:" in out and "--width 8" in out and "--crop 32" in out
    assert "finished at step 2" in out and "nothing to do" in out
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == files
    # --steps may grow: the schedule is stretched to the new total
    assert main(["train", "--run-dir", str(run), "--resume", "--steps", "3", "--log-every",
                 "1", "--no-progress"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    fresh = tmp_path / "fresh"
    assert main(["train", "--run-dir", str(fresh), "--no-prior", "--steps", "3",
                 "--log-every", "1", *TINY]) == 0

    def last_lr(folder: Path) -> float:
        lines = (folder / "log.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if '"lr"' in line][-1]["lr"]

    assert last_lr(run) == pytest.approx(last_lr(fresh), rel=1e-12)  # the 3-step schedule's
    state = torch.load(run / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert state["config"]["steps"] == 3
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "total" in e] == [2, 3]  # no line twice
    one_error_line(capsys, ["train", "--run-dir", str(run), "--resume", "--steps", "2"],
                   r"--steps 2: the run .* is already at step 3")


def test_resume_with_another_backbone_or_prior_is_one_line_naming_each_difference(runs):
    done = run_cli("train", "--run-dir", str(runs["a"]), "--resume", "--backbone",
                   "mimo-unet", "--prior", "--steps", "2", "--no-progress")
    assert_program_error(done, "--backbone mimo-unet (the run: unet)")
    assert "--prior/--no-prior True (the run: False)" in done.stderr


# -- nothing written before the options and data are known good ------------------------------
def _gopro(root: Path, side: int = 40, damaged: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("000001.png", "000002.png"):
            sharp = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            for kind, image in (("sharp", sharp), ("blur", sharp // 2)):
                path = root / "GOPRO_Large" / split / "GOPR0001" / kind / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
    if damaged:
        bad = root / "GOPRO_Large" / "test" / "GOPR0001" / "blur" / "000001.png"
        bad.write_bytes(bad.read_bytes()[:60])
    return root


def test_a_failed_start_leaves_the_folder_so_the_corrected_command_trains(tmp_path, capsys):
    data = _gopro(tmp_path / "data")
    run = tmp_path / "run"
    common = ["train", "--run-dir", str(run), "--dataset", "gopro", "--root", str(data),
              "--no-prior", "--steps", "1", *[a for a in TINY if a not in ("--crop", "32")]]
    one_error_line(capsys, [*common, "--crop", "64"], r"--crop 64: crop 64 is larger than")
    assert not run.exists()
    run.mkdir()  # a folder the user made is kept, and stays empty
    one_error_line(capsys, [*common, "--crop", "64"], r"--crop 64")
    assert run.is_dir() and not any(run.iterdir())
    assert main([*common, "--crop", "32"]) == 0  # no --overwrite needed
    assert (run / "checkpoints" / "step_00000001.pt").is_file()


def test_an_unreadable_test_image_is_found_before_training(tmp_path, capsys):
    data = _gopro(tmp_path / "data", damaged=True)
    run = tmp_path / "run"
    one_error_line(capsys, ["train", "--run-dir", str(run), "--dataset", "gopro", "--root",
                            str(data), "--no-prior", "--steps", "1", *TINY],
                   r"cannot read the image .*000001\.png")
    assert not run.exists()


# -- Python routes to the CLI --------------------------------------------------------------
def test_deblur_takes_a_state_dict_saved_from_python_with_its_backbone(runs, tmp_path,
                                                                       capsys):
    from sp_adapter.train import load_trained

    model, _, _ = load_trained(runs["a"])
    bare, wrapped = tmp_path / "bare.pt", tmp_path / "wrapped.pt"
    torch.save(model.state_dict(), bare)
    torch.save({"model": model.state_dict()}, wrapped)
    outputs = {}
    for name, source in (("run", ["--run-dir", str(runs["a"])]),
                         ("bare", ["--checkpoint", str(bare), "--backbone", "unet",
                                   "--width", "8"]),
                         ("wrapped", ["--checkpoint", str(wrapped), "--backbone", "UNet",
                                      "--width", "8"])):
        out = tmp_path / name
        assert main(["deblur", str(runs["image"]), *source, "--out", str(out),
                     "--no-progress"]) == 0
        outputs[name] = (out / "photo.png").read_bytes()
    assert outputs["bare"] == outputs["run"] == outputs["wrapped"]
    one_error_line(capsys, ["deblur", str(runs["image"]), "--checkpoint", str(bare), "--out",
                            str(tmp_path / "x")], r"add --backbone NAME")
    one_error_line(capsys, ["deblur", str(runs["image"]), "--run-dir", str(runs["a"]),
                            "--backbone", "nafnet", "--out", str(tmp_path / "x")],
                   r"--backbone nafnet \(the checkpoint: unet\)")
    assert not (tmp_path / "x").exists()


def test_deblur_takes_a_save_pretrained_prior_with_the_networks_weights(tmp_path, capsys):
    import sp_adapter
    from sp_adapter.train import load_trained

    run = tmp_path / "sp"
    assert main(["train", "--run-dir", str(run), "--student", "small", "--steps", "1",
                 *TINY]) == 0
    model, _, _ = load_trained(run)
    sp_adapter.save_pretrained(model, tmp_path / "prior")
    torch.save(model.state_dict(), tmp_path / "net.pt")
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 24, 3), np.uint8)).save(image)
    assert main(["deblur", str(image), "--run-dir", str(run), "--out", str(tmp_path / "a"),
                 "--no-progress"]) == 0
    assert main(["deblur", str(image), "--checkpoint", str(tmp_path / "net.pt"), "--backbone",
                 "unet", "--width", "8", "--prior-folder", str(tmp_path / "prior"), "--out",
                 str(tmp_path / "b"), "--no-progress"]) == 0
    assert (tmp_path / "a" / "photo.png").read_bytes() == (tmp_path / "b" / "photo.png"
                                                           ).read_bytes()
    one_error_line(capsys, ["deblur", str(image), "--checkpoint", str(tmp_path / "net.pt"),
                            "--backbone", "unet", "--width", "8", "--out",
                            str(tmp_path / "c")], r"sp_prior.*--prior-folder FOLDER")


# -- options in the CLI's words, and help ------------------------------------------------
def test_learning_rates_are_refused_in_the_clis_words(tmp_path, capsys):
    run = str(tmp_path / "run")
    for value, pattern in (("nan", r"--lr must be a finite number"),
                           ("-1", r"--lr must be more than 0 .*got -1"),
                           ("inf", r"--lr must be a finite number")):
        err = one_error_line(capsys, ["train", "--run-dir", run, "--lr", value, *TINY], pattern)
        assert "min_lr" not in err
    one_error_line(capsys, ["train", "--run-dir", run, "--lr", "1e-4", "--min-lr", "1e-3",
                            *TINY], r"--min-lr 0.001 is above --lr 0.0001")
    assert not (tmp_path / "run").exists()


def test_every_option_has_help_and_shows_its_default(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        text = command.format_help()
        assert "examples:" in text, name
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, (name, action.option_strings)
            shown = command._get_formatter()._get_help_string(action) or ""
            if action.default not in (None, False, True):
                assert "%(default)" in shown, (name, action.option_strings)
            elif action.default is None:  # says what leaving it out means, or is required
                assert re.search(r"default|required", action.help), (name, action.help)
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    from sp_adapter.version import __version__

    assert capsys.readouterr().out.strip() == f"sp-adapter {__version__}"


def test_a_mistyped_option_is_one_line_naming_the_help(capsys):
    for argv, text in ((["train", "--stepz", "3"], "unrecognized arguments: --stepz 3"),
                       (["eval", "--run-dir", "r", "--convention", "x"], "invalid choice: 'x'"),
                       (["train", "--lr", "fast"], "argument --lr: invalid float value")):
        with pytest.raises(SystemExit) as done:
            main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: ") and text in err and "--help`)" in err, err


def test_levels_list_prints_each_backbones_levels_and_defaults(capsys):
    assert main(["train", "--backbone", "nafnet", "--width", "8", "--levels", "list"]) == 0
    out = capsys.readouterr().out
    assert "3 of 4" in out and re.search(r"\* level1", out) and re.search(r"  level4", out)


# -- environment faults ----------------------------------------------------------------------
def _read_only(monkeypatch, folder: Path) -> None:
    """Writes under ``folder`` fail as on a read-only mount (root ignores permissions, so a
    chmod would not do)."""
    import tempfile

    real = tempfile.NamedTemporaryFile

    def refuse(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)


def test_a_read_only_output_is_refused_before_the_work(runs, tmp_path, monkeypatch, capsys):
    import sp_adapter.cli.deblur as deblur_command
    import sp_adapter.cli.eval as eval_command

    locked = tmp_path / "locked"
    locked.mkdir()
    _read_only(monkeypatch, locked)
    loaded = []
    for module in (deblur_command, eval_command):
        monkeypatch.setattr(module, "load_model", lambda *a: loaded.append(a))
    for argv in (["deblur", str(runs["image"]), "--run-dir", str(runs["a"]), "--out",
                  str(locked / "out")],
                 ["eval", "--run-dir", str(runs["a"]), "--json", str(locked / "s.json")],
                 ["train", "--run-dir", str(locked / "run"), "--no-prior", *TINY]):
        one_error_line(capsys, argv, r"cannot write in .*locked \(read-only file system\)")
    assert not loaded and not any(locked.iterdir())
    # the check itself: a folder that can be written passes it and the model is loaded
    with pytest.raises(TypeError):  # the stand-in loader returns nothing to unpack
        main(["deblur", str(runs["image"]), "--run-dir", str(runs["a"]), "--out",
              str(tmp_path / "open")])
    assert len(loaded) == 1
    # calibrate --save writes beside the checkpoint: refused before calibrating
    run = tmp_path / "sp"
    assert main(["train", "--run-dir", str(run), "--student", "small", "--steps", "1",
                 *TINY]) == 0
    _read_only(monkeypatch, run)
    one_error_line(capsys, ["calibrate", "--run-dir", str(run), "--crops", "1", "--save"],
                   r"--save .*read-only file system")
    assert not list(run.rglob("*.strength.json"))


def test_paths_of_the_wrong_kind_are_one_line(runs, tmp_path, capsys):
    folder = tmp_path / "scores.json"
    folder.mkdir()
    one_error_line(capsys, ["eval", "--run-dir", str(runs["a"]), "--json", str(folder)],
                   r"--json .*scores\.json is a folder")
    out = tmp_path / "out"
    (out / "photo.png").mkdir(parents=True)
    one_error_line(capsys, ["deblur", str(runs["image"]), "--run-dir", str(runs["a"]),
                            "--out", str(out)], r"photo\.png is a folder")
    file = tmp_path / "a_file"
    file.write_text("mine")
    one_error_line(capsys, ["train", "--run-dir", str(file), "--no-prior", *TINY],
                   r"--run-dir .*a_file is a file")
    assert file.read_text() == "mine"


def test_the_program_names_environment_faults_in_one_line(runs, tmp_path):
    """As a user runs it: no CUDA, and an image whose header claims 400 megapixels."""
    if not torch.cuda.is_available():
        done = run_cli("deblur", str(runs["image"]), "--run-dir", str(runs["a"]), "--out",
                       str(tmp_path / "out"), "--device", "cuda")
        assert_program_error(done, "--device cuda: CUDA is not available")
    bomb = tmp_path / "bomb.png"
    chunks = b""
    for kind, body in ((b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)),
                       (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b"")):
        chunks += (struct.pack(">I", len(body)) + kind + body
                   + struct.pack(">I", zlib.crc32(kind + body)))
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    done = run_cli("deblur", str(bomb), "--run-dir", str(runs["a"]), "--out",
                   str(tmp_path / "out"), "--no-progress")
    assert_program_error(done, "--max-pixels")
    assert f"{bomb}: Image size (400000000 pixels) exceeds limit" in done.stderr
    # the limit raised, the header passes and the (bogus) pixels are what is refused
    done = run_cli("deblur", str(bomb), "--run-dir", str(runs["a"]), "--out",
                   str(tmp_path / "out"), "--no-progress", "--max-pixels", "500000000")
    assert_program_error(done, f"cannot read the image {bomb}")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ctrl_c_during_training_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    from sp_adapter.train import Trainer

    real_step = Trainer.train_step

    def interrupted(self, batch):
        if self.step == 2:
            raise KeyboardInterrupt
        return real_step(self, batch)

    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--no-prior", "--steps", "3",
            "--checkpoint-every", "1", *TINY]
    monkeypatch.setattr(Trainer, "train_step", interrupted)
    one_error_line(capsys, argv, rf"interrupted at step 2; the run continues from its "
                   rf"checkpoint at step 2 with: sp-adapter train --run-dir {re.escape(str(run))} "
                   r"--resume")
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert main(["train", "--run-dir", str(run), "--resume", "--no-progress"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    # interrupted before the first checkpoint: the folder is left as it was
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch: (_ for _ in ()).throw(
        KeyboardInterrupt))
    one_error_line(capsys, ["train", "--run-dir", str(fresh), "--no-prior", "--steps", "2",
                            *TINY], r"interrupted at step 0, before the first checkpoint")
    assert not fresh.exists()


# -- the one error path ------------------------------------------------------------------------
def test_a_bug_keeps_its_traceback_and_debug_shows_every_one(runs, monkeypatch, capsys):
    """Only family errors and named environment faults become one line; a ValueError from
    inside a command is a bug and is raised; SP_ADAPTER_DEBUG=1 raises family errors too."""
    import sp_adapter.cli.eval as eval_command
    from sp_adapter.errors import CLIError

    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr(eval_command, "run", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["eval", "--run-dir", str(runs["a"])])
    monkeypatch.undo()
    monkeypatch.setenv("SP_ADAPTER_DEBUG", "1")
    with pytest.raises(CLIError, match="--tile must be at least 1"):
        main(["eval", "--run-dir", str(runs["a"]), "--tile", "0"])


def test_environment_errors_are_named_in_the_clis_words():
    from sp_adapter.cli.common import error_message

    cases = {
        OSError(errno.EROFS, "Read-only file system", "/x/a.png"):
            "cannot write /x/a.png: read-only file system",
        PermissionError(errno.EACCES, "Permission denied", "/x/a.png"):
            "/x/a.png: permission denied",
        OSError(errno.ENOSPC, "No space left on device", "/x/a.png"): "no space left to write",
        IsADirectoryError(errno.EISDIR, "Is a directory", "/x/out"): "/x/out is a folder",
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/f/a"): "is a file, not a folder",
        FileNotFoundError(errno.ENOENT, "No such file", "/x/nope"): "no such file or folder",
    }
    for err, text in cases.items():
        assert text in error_message(err), err
    assert "interrupted" in error_message(KeyboardInterrupt())
    for bug in (ValueError("x"), TypeError("x"), RuntimeError("x"), KeyError("x"),
                OSError(errno.EIO, "I/O error")):
        assert error_message(bug) is None, bug


def test_calibrate_takes_the_runs_blur_and_crop_and_refuses_a_folder_datasets_run(tmp_path,
                                                                                    capsys):
    run = tmp_path / "mild"
    assert main(["train", "--run-dir", str(run), "--student", "small", "--steps", "1",
                 "--blur", "mild", *TINY]) == 0
    common = ["calibrate", "--run-dir", str(run), "--crops", "1", "--strengths", "1",
              "--no-progress"]
    capsys.readouterr()
    assert main(common) == 0
    out = capsys.readouterr().out
    assert "from the run: --blur mild, --crop 32" in out and "crops of 32 px" in out
    assert "(mild blur" in out
    one_error_line(capsys, [*common, "--blur", "severe"],
                   r"--blur severe \(trained on mild\).*--other-data")
    assert main([*common, "--blur", "severe", "--other-data"]) == 0
    assert "(severe blur" in capsys.readouterr().out
    data = _gopro(tmp_path / "data")
    gopro = tmp_path / "gopro"
    assert main(["train", "--run-dir", str(gopro), "--dataset", "gopro", "--root", str(data),
                 "--student", "small", "--steps", "1", *TINY]) == 0
    one_error_line(capsys, ["calibrate", "--run-dir", str(gopro), "--crops", "1"],
                   r"trained on --dataset gopro.*add --other-data")
    assert not list(gopro.rglob("*.strength.json"))


def test_ctrl_c_sent_to_the_program_is_one_line(tmp_path):
    """SIGINT to a training process once it has logged: exit 2, one line, no traceback, and
    a checkpoint to resume from."""
    import signal
    import time

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SP_ADAPTER_DEBUG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "sp_adapter.cli", "train", "--run-dir", str(run), "--no-prior",
         "--steps", "100000", "--log-every", "1", "--checkpoint-every", "1", *TINY],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(run.glob("checkpoints/step_*.pt")):  # a whole one, not a temporary
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 2, err
    assert err.startswith("error: interrupted at step ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "--resume" in err, err
    assert list((run / "checkpoints").glob("step_*.pt"))


def test_a_tile_smaller_than_the_network_takes_is_said_in_the_flags_words(runs, tmp_path,
                                                                          capsys):
    for command in (["deblur", str(runs["image"]), "--out", str(tmp_path / "out")],
                    ["eval", "--limit", "1", "--crop", "32"]):
        one_error_line(capsys, [*command, "--run-dir", str(runs["a"]), "--tile", "1",
                                "--no-progress"],
                       r"--tile 1: this unet needs tiles of at least \d+ pixels.*--tile \d+ or "
                       "more")
    assert main(["deblur", str(runs["image"]), "--out", str(tmp_path / "out"), "--run-dir",
                 str(runs["a"]), "--tile", "16", "--overlap", "4", "--no-progress"]) == 0
