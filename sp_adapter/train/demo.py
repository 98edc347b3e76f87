"""The demo: UNet with and without the semantic prior, offline, at a fixed budget.

Trains the paper's UNet on the built-in photos with synthetic camera-shake blur, once bare
and once wrapped with the prior, on identical batches with identical seeds (the
fine-tuning protocol by default, see :mod:`sp_adapter.train.protocol`), scores both on the
fixed test set, and writes a report folder:

* ``README.md``: the command, the protocol, a table (blurry / base / +SP, PSNR and SSIM),
  the compute of each arm (steps, seconds, parameters), what this budget can and cannot
  show, and the commands for a real dataset;
* ``results.json``: the same numbers, per-image scores, the options;
* ``images/NN_<key>.png``: blurry | base | +SP | sharp, then where the prior changed the
  restoration (``|+SP - base|``) and where it brought it nearer the sharp image, both
  amplified :data:`CHANGE_GAIN` times, per test image;
* ``priors/NN_<key>.png``: the blurry image and the learned priors ``f_pri^1..3`` of the
  +SP model (mean over channels, colour-mapped), as in the paper's Fig. 6;
* ``runs/<arm>/``: each arm's log and final checkpoint (``sp-adapter deblur --run-dir``).

The demo needs the ``demo`` extra (the built-in photos and the blur synthesis).
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sp_adapter.attach.state import get_prior
from sp_adapter.data import SyntheticBlurDataset, blur_preset
from sp_adapter.errors import OptionError, ReportFolderError
from sp_adapter.extras import require_demo_extra
from sp_adapter.files.atomic import write_atomic
from sp_adapter.prior.config import PriorConfig, TeacherSpec, teacher_at_levels
from sp_adapter.train.config import TrainConfig
from sp_adapter.train.data import SampleMemo
from sp_adapter.train.protocol import Arm, ArmResult, run_arms
from sp_adapter.train.report import (
    change_map,
    gain_map,
    grid,
    markdown_table,
    prior_map_images,
    safe_name,
    save_png,
    to_uint8,
)

DEMO_OUTPUTS = ("README.md", "results.json", "images", "priors", "runs")
"""What the demo writes in its folder (and removes first with ``overwrite``)."""

CHANGE_GAIN = 20.0
"""How many times the pictures amplify the difference between the two restorations."""


@dataclass
class DemoConfig:
    """Options of the demo (the CLI's ``sp-adapter demo`` flags).

    The defaults are the quality benchmark's short fine-tuning protocol on the built-in
    mild-blur set, whose result is
    ``benchmarks/results/quality_unet_finetune_crop96_mild_levels012_short300_kernel3.md``
    (see ``benchmarks/RESULTS.md``): 300 shared base steps, then 300 steps per arm on
    identical batches, UNet width 16, 96 px crops, batch 4, lr 1e-3, the prior as Table
    4's Net0* (teacher-initialised student at teacher levels 0-2, no HCL distillation)
    with 3x3 convolutions in the CLC, MLA and SAT. The demo's arms are that benchmark's
    seed 0 (a test checks it on a tiny budget). The paper's prior with HCL distillation
    at teacher levels 1-3 is ``hcl=True, teacher_levels=(1, 2, 3)``.

    Attributes:
        out: the report folder.
        overwrite: replace the demo's files in a non-empty ``out``.
        steps: training steps of each arm in all (shared pre-training included).
        protocol: ``"finetune"``: the base trains ``steps - arm_steps`` steps, then each
            arm continues ``arm_steps``; ``"scratch"``: each arm trains ``steps``.
        arm_fraction: the share of ``steps`` trained after the split (fine-tuning).
        batch_size, crop, lr, beta, train_length: training (``train_length`` samples per
            epoch; new ones every epoch).
        blur: ``"mild"`` (15-31 px kernels) or ``"severe"`` (31-65 px).
        test_crop, test_crops_per_photo: the fixed test set (the defaults are the
            benchmark test set).
        width: UNet width.
        student, student_steps: the prior's student and its pre-training steps (HCL
            distillation: none without ``hcl``).
        teacher: the offline teacher's timm architecture
            (:data:`~sp_adapter.prior.config.WHEEL_TEACHERS`).
        teacher_levels: the teacher's feature levels (timm's ``out_indices``, finest
            first; ``None``: the default levels).
        hcl: distil the prior from the teacher (Eq. 4; Table 4's Net6); ``False`` is
            Net0*: the teacher-initialised student trains only through the deblurring
            loss, and the teacher is needed for the initialisation only.
        prior_kernel_size: kernel of the prior's CLC, MLA and SAT convolutions
            (:attr:`~sp_adapter.prior.config.PriorConfig.kernel_size`).
        embedding_lr_scale: learning-rate factor of MLA/SAT in the +SP arm (1: the
            paper's single learning rate).
        grids: how many test images get pictures (``None``: all).
        seed, device, progress: as in :class:`TrainConfig`.
    """

    out: str = "report"
    overwrite: bool = False
    steps: int = 600
    protocol: Literal["finetune", "scratch"] = "finetune"
    arm_fraction: float = 0.5
    batch_size: int = 4
    crop: int = 96
    lr: float = 1e-3
    beta: float = 0.1
    train_length: int = 1000
    blur: str = "mild"
    test_crop: int = 128
    test_crops_per_photo: int = 8
    width: int = 16
    student: Literal["teacher", "small"] = "teacher"
    student_steps: int = 100
    teacher: str = TeacherSpec.arch
    teacher_levels: tuple[int, ...] | None = (0, 1, 2)
    hcl: bool = False
    prior_kernel_size: int = 3
    embedding_lr_scale: float = 1.0
    grids: int | None = None
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.prior()  # a wrong teacher, wrong levels or a wrong kernel fail before any work

    def prior(self) -> PriorConfig:
        """The prior of the +SP arm."""
        return PriorConfig(student=self.student, hcl=self.hcl,
                           kernel_size=self.prior_kernel_size, teacher=self.teacher_spec())

    def teacher_spec(self) -> TeacherSpec:
        """The teacher of the +SP arm."""
        return teacher_at_levels(self.teacher_levels, self.teacher)

    def split(self) -> tuple[int, int]:
        """``(shared pre-training steps, steps per arm)``."""
        if self.protocol == "scratch":
            return 0, self.steps
        arm = min(self.steps, max(1, round(self.steps * self.arm_fraction)))
        return self.steps - arm, arm


def prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; then remove the demo's old files."""
    if out.exists() and not out.is_dir():
        raise ReportFolderError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ReportFolderError(
                f"the report folder {out} is not empty; pass --overwrite to replace the demo's "
                "files in it, or choose another folder with --out"
            )
        for name in DEMO_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_pictures(
    base: ArmResult, sp: ArmResult, test: Dataset, out: Path, limit: int | None,
    progress: bool,
) -> list[str]:
    """The grids and prior maps of the first ``limit`` test images; returns their names.

    Each grid shows blurry | base | +SP | sharp (with each restoration's PSNR), then
    ``|+SP - base|`` and the per-pixel error reduction of +SP, both amplified
    :data:`CHANGE_GAIN` times. The deblurred images are the ones the evaluation kept and
    scored; only the prior is run again.
    """
    if base.outputs is None or sp.outputs is None:
        raise OptionError("the arms must keep their test outputs (run_arms(keep_outputs=True))")
    assert base.evaluation is not None and sp.evaluation is not None
    names: list[str] = []
    total = len(test) if limit is None else min(limit, len(test))
    prior = get_prior(sp.model)
    device = next(prior.parameters()).device
    gain = f"x{CHANGE_GAIN:g}"
    for index in tqdm(range(total), desc="pictures", disable=not progress, leave=False):
        blurry, sharp, key = test[index]
        with torch.inference_mode():
            priors = prior(blurry[None].to(device))
        name = f"{index:02d}_{safe_name(key)}.png"
        restored_base, restored_sp = base.outputs[index].cpu(), sp.outputs[index].cpu()
        psnr_base = float(base.evaluation.per_image[index]["psnr"])
        psnr_sp = float(sp.evaluation.per_image[index]["psnr"])
        panels = [to_uint8(blurry), to_uint8(restored_base), to_uint8(restored_sp),
                  to_uint8(sharp), change_map(restored_sp, restored_base, CHANGE_GAIN),
                  gain_map(restored_base, restored_sp, sharp.cpu(), CHANGE_GAIN)]
        labels = ["blurry", f"base {psnr_base:.2f} dB", f"+SP {psnr_sp:.2f} dB", "sharp",
                  f"|+SP - base| {gain}", f"+SP nearer: red {gain}"]
        save_png(grid(panels, labels), out / "images" / name)
        maps = prior_map_images([p[0] for p in priors], tuple(blurry.shape[-2:]),
                                prior.reductions)
        prior_labels = ["blurry"] + [f"f_pri^{k + 1}" for k in range(len(maps))]
        save_png(grid([panels[0], *maps], prior_labels), out / "priors" / name)
        names.append(name)
    return names


def _prior_line(cfg: DemoConfig, student_steps: int) -> str:
    spec = cfg.teacher_spec()
    if cfg.hcl:
        what = (f"HCL + CLC + MLA + SAT (Table 4, Net6); {student_steps} student "
                "pre-training steps")
    else:
        what = ("CLC + MLA + SAT without the HCL distillation (Table 4, Net0*: the "
                "student starts from the teacher's weights and learns through the "
                "deblurring loss only)")
    k = cfg.prior_kernel_size
    return (f"student `{cfg.student}`, teacher {spec.arch} at levels "
            f"{list(spec.out_indices)}, {what}, {k}x{k} convolutions in CLC, MLA and SAT")


def _readme(cfg: DemoConfig, command: str, base: ArmResult, sp: ArmResult,
            pictures: list[str], test_count: int, env: dict[str, Any]) -> str:
    eb, es = base.evaluation, sp.evaluation
    assert eb is not None and es is not None
    shared, arm = cfg.split()
    quality = markdown_table(
        ["", "PSNR (dB)", "SSIM", "training steps", "training seconds"],
        [
            ["blurry input", _fmt(eb.blurry_psnr, 2), _fmt(eb.blurry_ssim, 4), "-", "-"],
            ["base (UNet)", _fmt(eb.psnr, 2), _fmt(eb.ssim, 4), shared + arm,
             f"{base.shared_seconds + base.seconds:.0f}"],
            ["+SP (UNet + semantic prior)", _fmt(es.psnr, 2), _fmt(es.ssim, 4),
             shared + arm + sp.student_steps,
             f"{sp.shared_seconds + sp.seconds + sp.student_seconds:.0f}"],
        ],
    )
    better = sum(float(a["psnr"]) > float(b["psnr"])
                 for a, b in zip(es.per_image, eb.per_image, strict=True))
    compute = markdown_table(
        ["arm", "parameters", "shared base steps", "own steps", "student steps",
         "seconds (shared)", "seconds (own)"],
        [[r.name, f"{r.params:,}", r.shared_steps, r.steps, r.student_steps,
          f"{r.shared_seconds:.1f}", f"{r.seconds + r.student_seconds:.1f}"]
         for r in (base, sp)],
    )
    if cfg.protocol == "finetune":
        protocol = (
            f"fine-tuning protocol: the bare UNet trains {shared} steps; from those weights "
            f"each arm trains {arm} more steps on the same batches with the same seeds, the "
            "base as is, +SP wrapped with the prior (zero-initialised, so it starts from the "
            "base's exact output)"
        )
    else:
        protocol = (f"from scratch: each arm trains {arm} steps from the same initial UNet "
                    "weights on the same batches")
    lines = [
        "# sp_adapter demo: UNet with and without the semantic prior",
        "",
        f"Command: `{command}`",
        "",
        f"- Data: built-in photos (no download) with synthetic {cfg.blur} camera-shake blur; "
        f"training crops {cfg.crop} px, batch {cfg.batch_size}; test set: {test_count} fixed "
        f"crops of {cfg.test_crop} px from the test photos (never used for training).",
        f"- Protocol: {protocol}.",
        f"- Loss (Eq. 7): L1 + {cfg.beta} x prior loss for +SP; the perceptual term is off "
        "(its VGG16 weights need a download).",
        f"- Prior: {_prior_line(cfg, sp.student_steps)}; MLA/SAT learning rate x"
        f"{cfg.embedding_lr_scale}.",
        f"- Machine: {env['machine']}, torch {env['torch']}, device {env['device']}, "
        f"{env['threads']} CPU threads.",
        "",
        "## Quality on the test set",
        "",
        quality,
        "",
        f"+SP minus base: {es.psnr - eb.psnr:+.3f} dB PSNR, {es.ssim - eb.ssim:+.4f} SSIM; "
        f"+SP is better on {better} of {len(es.per_image)} test crops. PSNR on RGB [0, 255], "
        "8-bit rounded, no border crop; SSIM Gaussian 11x11, sigma 1.5.",
        "",
        "## What this budget shows",
        "",
        f"- What it shows: the same UNet trained {shared + arm} steps with and without the "
        "prior on identical batches, how far the prior moves each restoration and where "
        "(the pictures), and the priors it learns, on a CPU and offline.",
        "- What it cannot show: the gains the paper reports, which need a real dataset and "
        "the paper's budget (below); this is one seed on a dozen photos, and "
        "`benchmarks/RESULTS.md` gives the spread over seeds.",
        "",
        "## Compute",
        "",
        compute,
        "",
        "Seconds are the compute of training steps (forward, loss, backward, optimiser); "
        "synthesising the arms' training samples "
        f"({base.data_seconds + sp.data_seconds:.0f} s; each sample is made once and "
        "shared by the arms) and evaluation are not included.",
        "",
        "## Pictures",
        "",
        f"- `images/`: blurry | base | +SP | sharp for {len(pictures)} test crops, with each "
        "restoration's PSNR; then where the prior changed the restoration, |+SP - base| "
        f"averaged over channels and amplified x{CHANGE_GAIN:g} (dark: unchanged; yellow: a "
        f"change of {255 / CHANGE_GAIN:.1f} of 255 levels or more), and where it brought the "
        "restoration nearer the sharp crop, |base - sharp| - |+SP - sharp| amplified "
        f"x{CHANGE_GAIN:g} (red: +SP nearer; blue: base nearer; white: equal).",
        "- `priors/`: the blurry crop and the +SP model's learned priors f_pri^1..3 (mean "
        "over channels, min-max normalised per map, dark blue = low, yellow = high), as in "
        "the paper's Fig. 6.",
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


def real_dataset_commands(root: str = "GOPRO_Large") -> list[str]:
    """The commands that train and score the UNet with and without the prior on GoPro."""
    train = f"sp-adapter train --dataset gopro --root {root} --backbone unet --steps 200000"
    evaluate = f"sp-adapter eval --dataset gopro --root {root}"
    return [f"{train} --no-prior --run-dir runs/gopro_unet",
            f"{train} --run-dir runs/gopro_unet_sp",
            f"{evaluate} --run-dir runs/gopro_unet runs/gopro_unet_sp"]


def run_demo(cfg: DemoConfig, command: str = "sp-adapter demo") -> dict[str, Any]:
    """Run the demo and write the report; returns the numbers written to results.json."""
    require_demo_extra("the demo")
    out = Path(cfg.out)
    prepare_folder(out, cfg.overwrite)
    started = time.perf_counter()
    blur = blur_preset(cfg.blur)
    train = SyntheticBlurDataset("train", crop=cfg.crop, length=cfg.train_length, blur=blur,
                                 seed=cfg.seed)
    test = SampleMemo(SyntheticBlurDataset("test", crop=cfg.test_crop, blur=blur,
                                           crops_per_photo=cfg.test_crops_per_photo,
                                           return_key=True))  # synthesised once
    shared, arm_steps = cfg.split()
    config = TrainConfig(
        steps=arm_steps, batch_size=cfg.batch_size, lr=cfg.lr, alpha=0.0, perceptual="none",
        beta=cfg.beta, seed=cfg.seed, device=cfg.device, progress=cfg.progress,
        log_every=10, keep_checkpoints=1,
    )
    prior = cfg.prior()
    arms = [
        Arm("base"),
        Arm("sp", prior=prior, student_steps=cfg.student_steps if cfg.hcl else 0,
            train={"embedding_lr_scale": cfg.embedding_lr_scale}),
    ]
    base, sp = run_arms(
        arms, train, test, config, backbone="unet", options={"width": cfg.width},
        protocol=cfg.protocol, pretrain_steps=shared, arm_steps=arm_steps,
        run_root=out / "runs", keep_outputs=True,
    )
    device = next(base.model.parameters()).device
    pictures = write_pictures(base, sp, test, out, cfg.grids, cfg.progress)
    env = {"machine": platform.machine() + " " + platform.system(), "torch": torch.__version__,
           "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["device"] += f" ({torch.cuda.get_device_name(device)})"
    assert base.evaluation is not None and sp.evaluation is not None
    results = {
        "command": command,
        "options": asdict(cfg),
        "environment": env,
        "test_count": len(test),
        "blurry": {"psnr": base.evaluation.blurry_psnr, "ssim": base.evaluation.blurry_ssim},
        "arms": {r.name: r.summary() for r in (base, sp)},
        "per_image": [
            {"key": b["key"], "blurry_psnr": b["blurry_psnr"], "base_psnr": b["psnr"],
             "sp_psnr": s["psnr"], "base_ssim": b["ssim"], "sp_ssim": s["ssim"]}
            for b, s in zip(base.evaluation.per_image, sp.evaluation.per_image, strict=True)
        ],
        "pictures": pictures,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_atomic(out / "results.json", (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    readme = _readme(cfg, command, base, sp, pictures, len(test), env)
    write_atomic(out / "README.md", readme.encode("utf-8"))
    return results
