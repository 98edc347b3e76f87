"""What the demo writes: the README of its report folder and its pictures.

The README gives, per row (blurry input, base, widened base, +SP), the PSNR/SSIM, the
parameters, the training seconds and the exact loss; the +SP gain over each control with
its spread over seeds from the committed benchmark; the ``sp-adapter eval`` command that
reproduces the table from the run folders; and where ``wrap`` attached the prior.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sp_adapter.attach.state import get_prior
from sp_adapter.errors import OptionError
from sp_adapter.train.demo_config import BENCHMARK, EVAL_CROPS_PER_PHOTO, DemoConfig
from sp_adapter.train.protocol import ArmResult, count_parameters
from sp_adapter.train.report import (
    change_map,
    gain_map,
    grid,
    inner,
    markdown_table,
    most_changed_window,
    outline,
    prior_map_images,
    safe_name,
    save_png,
    stack,
    to_uint8,
    zoom,
)

CHANGE_GAIN = 20.0
"""How many times the pictures amplify the difference between two restorations."""

ARMS = ("base", "wide", "sp")
"""The trained arms, in the table's order (their run sub-folders have these names)."""

CONVENTION = "skimage"
"""The PSNR/SSIM convention of the demo's scores (``sp_adapter.metrics.CONVENTIONS``)."""


def arm_label(name: str, cfg: DemoConfig, arm: ArmResult) -> str:
    """The row name of an arm in the report."""
    width = arm.spec.options.get("width", cfg.width)
    if name == "base":
        return f"base (UNet width {width})"
    if name == "wide":
        return f"widened base (UNet width {width})"
    return ("+SP: UNet + the paper's prior (Table 4 Net6)" if cfg.hcl
            else "+SP without HCL (Table 4 Net0*)")


def arm_loss(name: str, cfg: DemoConfig) -> str:
    """The exact training loss of an arm (Eq. 7 with the demo's weights)."""
    if name != "sp":
        return "L1 (Eq. 7 with the perceptual and prior terms off)"
    if cfg.hcl:
        return (f"L1 + {cfg.beta:g} × L_prior (HCL, Eq. 4), after "
                f"{cfg.student_steps_run()} student steps on L_prior alone")
    return ("L1 only: without HCL the prior has no loss of its own (Net0*); the student "
            "starts from the teacher's weights and learns through L1")


def eval_command(cfg: DemoConfig, names: list[str]) -> str | None:
    """The ``sp-adapter eval`` command that scores the run folders on the demo's test set
    with the demo's convention; ``None`` when ``eval`` has no such test set (it scores
    :data:`EVAL_CROPS_PER_PHOTO` crops per photo)."""
    if cfg.test_crops_per_photo != EVAL_CROPS_PER_PHOTO:
        return None
    runs = [shlex.quote(str(Path(cfg.out) / "runs" / name)) for name in names]
    return (f"sp-adapter eval --run-dir {' '.join(runs)} --dataset synthetic --blur "
            f"{cfg.blur} --crop {cfg.test_crop} --convention {CONVENTION}")


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _seconds(arm: ArmResult) -> float:
    return arm.shared_seconds + arm.seconds + arm.student_seconds


def _better(a: ArmResult, b: ArmResult) -> int:
    assert a.evaluation is not None and b.evaluation is not None
    return sum(float(x["psnr"]) > float(y["psnr"])
               for x, y in zip(a.evaluation.per_image, b.evaluation.per_image, strict=True))


def gains_line(cfg: DemoConfig, arms: Mapping[str, ArmResult]) -> str:
    """This run's +SP gain over each control, and the committed benchmark's over seeds."""
    sp = arms["sp"]
    assert sp.evaluation is not None
    count = len(sp.evaluation.per_image)
    parts = []
    for name, what in (("base", "the base"), ("wide", "the widened base")):
        if name in arms:
            other = arms[name].evaluation
            assert other is not None
            parts.append(f"{sp.evaluation.psnr - other.psnr:+.3f} dB over {what} (better on "
                         f"{_better(sp, arms[name])} of {count} crops)")
    line = "+SP, this run: " + ", ".join(parts) + "."
    differs = BENCHMARK.covers(cfg)
    if differs:
        return (line + f" Over seeds: not measured for these options ({', '.join(differs)} "
                f"differ from the defaults that `{BENCHMARK.file}` measured).")
    (mb, sb), (mw, sw) = BENCHMARK.over_base, BENCHMARK.over_wide
    return (line + f" Over seeds {', '.join(map(str, BENCHMARK.seeds))} "
            f"(`{BENCHMARK.file}`): {mb:+.3f} ± {sb:.3f} dB over the base, {mw:+.3f} ± "
            f"{sw:.3f} dB over the widened base (mean ± std of the per-seed gains).")


def level_table(sp: ArmResult, cfg: DemoConfig) -> list[str]:
    """Where ``wrap`` attached the prior in the +SP network, and its parameter count."""
    prior = get_prior(sp.model)
    indices = list(cfg.teacher_spec().out_indices)
    rows = []
    for name, level in prior.levels.items():
        i = level.prior_level
        skip = f" + `{level.skip}`" if level.skip else ""
        rows.append([name, f"`{level.site}`{skip}", level.channels,
                     level.reduction if level.reduction is not None else "?",
                     f"f_pri^{i + 1}", indices[i], prior.reductions[i], prior.channels[i],
                     f"{count_parameters(prior.embeddings[name]):,}"])
    learner = count_parameters(prior.learner)
    embeddings = count_parameters(prior.embeddings)
    backbone = sp.params - learner - embeddings
    table = markdown_table(
        ["level", "hooked module + skip", "channels", "reduction", "prior",
         "teacher level", "its reduction", "its channels", "MLA/SAT parameters"], rows)
    return [table, "",
            f"Parameters of the wrapped network: {sp.params:,} = UNet {backbone:,} + prior "
            f"learner (student F_S and CLC) {learner:,} + MLA/SAT {embeddings:,}. The teacher "
            "is used for training only and is not counted."]


def _compute_table(arms: Mapping[str, ArmResult], cfg: DemoConfig) -> str:
    rows = []
    for name, arm in arms.items():
        shared = ("shared" if name == "base" else
                  "the base's, widened" if arm.widened_base else
                  "the base's" if name == "sp" and arm.shared_steps else
                  "its own" if arm.shared_steps else "-")
        rows.append([arm_label(name, cfg, arm), f"{arm.params:,}", arm.shared_steps, shared,
                     arm.student_steps, arm.steps, f"{arm.shared_seconds:.1f}",
                     f"{arm.student_seconds:.1f}", f"{arm.seconds:.1f}",
                     f"{_seconds(arm):.1f}"])
    return markdown_table(
        ["arm", "parameters", "pre-training steps", "pre-training", "student steps",
         "own steps", "s pre-training", "s student", "s own", "s in all"], rows)


def readme(cfg: DemoConfig, command: str, arms: Mapping[str, ArmResult], pictures: list[str],
           test_count: int, env: dict[str, Any]) -> str:
    """The report's README.md."""
    base, sp = arms["base"], arms["sp"]
    eb = base.evaluation
    assert eb is not None
    shared, own = cfg.split()
    rows = [["blurry input", _fmt(eb.blurry_psnr, 2), _fmt(eb.blurry_ssim, 4), "-", "-", "-"]]
    for name, arm in arms.items():
        assert arm.evaluation is not None
        rows.append([arm_label(name, cfg, arm), _fmt(arm.evaluation.psnr, 2),
                     _fmt(arm.evaluation.ssim, 4), f"{arm.params:,}",
                     arm.shared_steps + arm.steps + arm.student_steps, f"{_seconds(arm):.0f}"])
    quality = markdown_table(["", "PSNR (dB)", "SSIM", "parameters", "training steps",
                              "training seconds"], rows)
    command_eval = eval_command(cfg, list(arms))
    if command_eval is None:
        reproduce = [f"`sp-adapter eval` scores {EVAL_CROPS_PER_PHOTO} crops per test photo; "
                     f"this run's test set has {cfg.test_crops_per_photo}, so no eval command "
                     "reproduces its table."]
    else:
        reproduce = ["The same numbers from the run folders (the same test crops, the same "
                     "convention):", "", "```bash", command_eval, "```"]
    if cfg.protocol == "finetune":
        wide = ("; the widened base is those weights in the leading channels of the wider "
                "UNet, its new channels unread by the old ones (so it too starts from the "
                "base's exact output)" if "wide" in arms else "")
        protocol = (f"fine-tuning: the bare UNet trains {shared} steps; from those weights "
                    f"each arm trains {own} more steps on the same batches with the same "
                    "seeds, the base as is, +SP wrapped with the prior (zero-initialised, so "
                    f"it starts from the base's exact output){wide}")
    else:
        protocol = (f"from scratch: each arm trains {own} steps from a fresh UNet on the "
                    "same batches")
    losses = [f"- {arm_label(name, cfg, arm)}: {arm_loss(name, cfg)}"
              for name, arm in arms.items()]
    lines = [
        "# sp_adapter demo: UNet with and without the semantic prior",
        "",
        f"Command: `{command}`",
        "",
        f"- Data: built-in photos (no download) with synthetic {cfg.blur} camera-shake blur; "
        f"training crops {cfg.crop} px, batch {cfg.batch_size}, lr {cfg.lr:g} (cosine); test "
        f"set: {test_count} fixed crops of {cfg.test_crop} px from the test photos (never "
        "used for training).",
        f"- Protocol: {protocol}.",
        f"- Prior: {_prior_line(cfg)}; MLA/SAT learning rate x{cfg.embedding_lr_scale:g}.",
        f"- Machine: {env['machine']}, torch {env['torch']}, device {env['device']}, "
        f"{env['threads']} CPU threads.",
        "",
        "## Quality on the test set",
        "",
        quality,
        "",
        gains_line(cfg, arms),
        "",
        *reproduce,
        "",
        f"PSNR on RGB [0, 255], 8-bit rounded, no border crop; SSIM Gaussian 11x11, sigma "
        f"1.5 (the `{CONVENTION}` convention). Training steps count every optimiser step "
        "behind an arm (pre-training, student, own).",
        "",
        "## Losses",
        "",
        "Each arm's training loss (Eq. 7; the perceptual term is off in every arm: its "
        "VGG16 weights need a download):",
        "",
        *losses,
        "",
        "## Where the prior enters the UNet",
        "",
        "The levels `sp_adapter.wrap` chose (`get_prior(model).levels`): each decoder "
        "feature joined with its encoder skip is modulated by SAT (Eq. 6) with the prior "
        "of one teacher level, aggregated by MLA (Eq. 5).",
        "",
        *level_table(sp, cfg),
        "",
        "## What this budget shows",
        "",
        f"- What it shows: the same UNet trained {shared + own} steps with and without the "
        "prior on identical batches, against a bare UNet as large as the wrapped one, and "
        "where the prior changes the restoration (the pictures), on a CPU and offline.",
        "- What it cannot show: the gains the paper reports, which need a real dataset and "
        "the paper's budget (below); this is one seed on a few photos, and the line under "
        "the table gives the spread over seeds.",
        "",
        "## Compute",
        "",
        _compute_table(arms, cfg),
        "",
        "Seconds are the compute of training steps (forward, loss, backward, optimiser) on "
        "this machine as loaded during the run; the base's pre-training is shared with +SP "
        "(counted in both rows); synthesising the training samples "
        f"({sum(a.data_seconds for a in arms.values()):.0f} s, each made once for all arms) "
        "and evaluation are not included.",
        "",
        "## Pictures",
        "",
        f"- `images/`: for {len(pictures)} test crops, blurry | base | widened base | +SP | "
        "sharp with each one's PSNR, then where the prior changed the restoration, "
        f"|+SP - base| averaged over channels and amplified x{CHANGE_GAIN:g} (dark: "
        f"unchanged; yellow: {255 / CHANGE_GAIN:.1f} of 255 levels or more), and where it "
        "brought the restoration nearer the sharp crop, |base - sharp| - |+SP - sharp| "
        f"amplified x{CHANGE_GAIN:g} (red: +SP nearer; blue: base nearer; white: equal). "
        "The second row enlarges the window (magenta frame) where +SP and the base differ "
        "most.",
        "- `priors/`: the blurry crop and the +SP network's learned priors f_pri^1..3 (mean "
        "over channels, min-max normalised per map, dark blue = low, yellow = high), as in "
        "the paper's Fig. 6; the valid region only: a margin at each border, where the "
        "student's convolutions read zero padding, is left out.",
        "- `runs/`: logs and final checkpoints; deblur your own photos with "
        f"`sp-adapter deblur IMAGE... --run-dir {Path(cfg.out) / 'runs' / 'sp'} --out DIR`.",
        "",
    ]
    if pictures:
        lines += [f"![first test crop](images/{pictures[0]})", "",
                  f"![its priors](priors/{pictures[0]})", ""]
    lines += [
        "## On a real dataset",
        "",
        "The same comparison on GoPro (`GOPRO_Large/{train,test}/<scene>/{blur,sharp}`), "
        "with a GPU:",
        "",
        "```bash",
        *real_dataset_commands(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _prior_line(cfg: DemoConfig) -> str:
    spec = cfg.teacher_spec()
    if cfg.hcl:
        what = (f"HCL + CLC + MLA + SAT (Table 4, Net6); {cfg.student_steps_run()} student "
                "pre-training steps")
    else:
        what = ("CLC + MLA + SAT without the HCL distillation (Table 4, Net0*: the "
                "student starts from the teacher's weights and learns through the "
                "deblurring loss only)")
    k = cfg.prior_kernel_size
    return (f"student `{cfg.student}`, teacher {spec.arch} at levels "
            f"{list(spec.out_indices)}, {what}, {k}x{k} convolutions in CLC, MLA and SAT")


def real_dataset_commands(root: str = "GOPRO_Large") -> list[str]:
    """The commands that train and score the UNet with and without the prior on GoPro."""
    train = f"sp-adapter train --dataset gopro --root {root} --backbone unet --steps 200000"
    evaluate = f"sp-adapter eval --dataset gopro --root {root}"
    return [f"{train} --no-prior --run-dir runs/gopro_unet",
            f"{train} --run-dir runs/gopro_unet_sp",
            f"{evaluate} --run-dir runs/gopro_unet runs/gopro_unet_sp"]


def prior_margin(reductions: list[int], side: int) -> int:
    """Pixels left out at each border of the prior maps: two pixels of the coarsest prior
    level (its convolutions read zero padding there), at most a quarter of the crop."""
    return min(2 * max(reductions), side // 4)


def write_pictures(arms: Mapping[str, ArmResult], test: Dataset, out: Path,
                   limit: int | None, progress: bool) -> list[str]:
    """The grids and prior maps of the first ``limit`` test images; returns their names.

    The deblurred images are the ones the evaluation kept and scored (each panel's PSNR
    is its score); only the prior is run again.
    """
    for arm in arms.values():
        if arm.outputs is None or arm.evaluation is None:
            raise OptionError("the arms must keep their test outputs "
                             "(run_arms(keep_outputs=True))")
    base, sp = arms["base"], arms["sp"]
    prior = get_prior(sp.model)
    device = next(prior.parameters()).device
    gain = f"x{CHANGE_GAIN:g}"
    short = {"base": "base", "wide": "widened", "sp": "+SP"}
    names: list[str] = []
    total = len(test) if limit is None else min(limit, len(test))
    for index in tqdm(range(total), desc="pictures", disable=not progress, leave=False):
        blurry, sharp, key = test[index]
        assert base.evaluation is not None
        restored = {name: arm.outputs[index].cpu() for name, arm in arms.items()}  # type: ignore[index]
        psnr = {name: float(arm.evaluation.per_image[index]["psnr"])  # type: ignore[union-attr]
                for name, arm in arms.items()}
        blurry_psnr = float(base.evaluation.per_image[index]["blurry_psnr"])
        side = int(blurry.shape[-1])
        window = max(4, min(blurry.shape[-2:]) // 4)
        factor = min(blurry.shape[-2:]) // window
        y, x = most_changed_window(restored["sp"], restored["base"], window)
        images = [to_uint8(blurry), *(to_uint8(restored[n]) for n in arms), to_uint8(sharp)]
        labels = [f"blurry {blurry_psnr:.2f} dB",
                  *(f"{short[n]} {psnr[n]:.2f} dB" for n in arms), "sharp"]
        top = grid([outline(image, y, x, window) for image in images]
                   + [change_map(restored["sp"], restored["base"], CHANGE_GAIN),
                      gain_map(restored["base"], restored["sp"], sharp.cpu(), CHANGE_GAIN)],
                   labels + [f"|+SP - base| {gain}", f"+SP nearer: red {gain}"])
        zoomed = grid([zoom(image, y, x, window, factor) for image in images],
                      [f"x{factor}: {label.split(' ')[0]}" for label in labels])
        name = f"{index:02d}_{safe_name(key)}.png"
        save_png(stack([top, zoomed]), out / "images" / name)
        with torch.inference_mode():
            priors = prior(blurry[None].to(device))
        margin = prior_margin(list(prior.reductions), side)
        maps = prior_map_images([p[0] for p in priors], tuple(blurry.shape[-2:]),
                                prior.reductions, margin=margin)
        prior_labels = ["blurry"] + [f"f_pri^{k + 1}" for k in range(len(maps))]
        save_png(grid([inner(images[0], margin), *maps], prior_labels), out / "priors" / name)
        names.append(name)
    return names
