"""``sp-adapter demo``: offline, the paper's prior (Table 4 Net6) against the bare UNet and the
UNet widened to the wrapped network's size, at a small budget, and a report of the comparison."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sp_adapter.cli.common import (
    add_command,
    add_common,
    add_prior_kernel_size,
    add_teacher,
    check_teacher_levels,
    check_writable_folder,
    require_finite,
    require_positive,
    resolve_device,
)
from sp_adapter.errors import CLIError, SPAdapterError


def description() -> str:
    """The command's help: what it does, and its budget and benchmark as they are now."""
    from sp_adapter.train.demo_config import BENCHMARK, DemoConfig

    shared, own = DemoConfig().split()
    return f"""\
Offline, in minutes on a CPU: train a small UNet three ways on the built-in photos (bare,
widened to the wrapped network's parameter count from the base's weights, and with the
paper's prior: HCL + CLC + MLA + SAT, Table 4 Net6), score them on held-out crops and
write a report (README.md with each arm's loss, parameters and seconds and the
`sp-adapter eval` command that reproduces its table, scores, pictures) to --out.

Its defaults differ from `sp-adapter train` where the demo must run offline in minutes on a
CPU: {shared} + {own} steps, batch 4, 96 px crops, lr 1e-3, mild blur, a 16-channel UNet, no
perceptual term (its VGG16 weights need a download), teacher levels 0 1 2 (a prior of 73 k
parameters instead of 763 k, so the widened control stays small). HCL and 1x1 prior
convolutions are train's defaults too. The 3-seed benchmark behind this budget:
{BENCHMARK.file}."""

EXAMPLES = [
    "sp-adapter demo",
    "sp-adapter demo --out my-report --steps 1200",
    "sp-adapter demo --no-hcl   # Table 4 Net0*: no distillation",
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from sp_adapter.train.demo import DemoConfig

    d = DemoConfig()
    p = add_command(subparsers, "demo", "offline: the paper's prior (Table 4 Net6) against the "
                    "bare UNet and the UNet widened to its size; writes a report", description(),
                    EXAMPLES)
    out = p.add_argument_group("output")
    out.add_argument("--out", default=d.out, help="report folder")
    out.add_argument("--overwrite", action="store_true", help="replace an existing report")
    out.add_argument("--grids", type=int, default=None,
                     help="pictures for the first N test crops (default: all)")
    data = p.add_argument_group("data")
    data.add_argument("--crop", type=int, default=d.crop, help="training crop side")
    data.add_argument("--length", type=int, default=d.train_length,
                      help="training samples per epoch")
    data.add_argument("--blur", default=d.blur, choices=["severe", "mild"],
                      help="synthetic blur strength")
    data.add_argument("--test-crop", type=int, default=d.test_crop, help="test crop side")
    data.add_argument("--test-crops-per-photo", type=int, default=d.test_crops_per_photo,
                      help="crops per test photo (16: the test set `sp-adapter eval --dataset "
                           "synthetic` scores, so the report's eval command reproduces its "
                           "table)")
    data.add_argument("--seed", type=int, default=d.seed, help="seed of the data and weights")
    model = p.add_argument_group("network and prior")
    model.add_argument("--width", type=int, default=d.width, help="UNet width")
    model.add_argument("--student", default=d.student, choices=["teacher", "small"],
                       help="the prior's student network")
    model.add_argument("--student-steps", type=int, default=d.student_steps,
                       help="HCL pre-training steps of the student (none without --hcl)")
    add_teacher(model, d.teacher)
    model.add_argument("--teacher-levels", nargs="+", type=int, default=d.teacher_levels,
                       metavar="INDEX", help="the teacher's feature levels, finest first "
                       "(train's default is 1 2 3: levels 0-2 give a prior of 73 k parameters "
                       "instead of 763 k, so the widened control fits the demo's time)")
    hcl = model.add_mutually_exclusive_group()
    hcl.add_argument("--hcl", dest="hcl", action="store_true", default=d.hcl,
                     help="distil the prior from the teacher (HCL, Eq. 4; Table 4 Net6, the "
                          "paper's method)" + (" (the default)" if d.hcl else ""))
    hcl.add_argument("--no-hcl", dest="hcl", action="store_false",
                     help="Table 4 Net0*: no distillation; the student starts from the "
                          "teacher's weights and learns through the deblurring loss only"
                          + ("" if d.hcl else " (the default)"))
    model.add_argument("--no-widened", dest="widened", action="store_false", default=d.widened,
                       help="skip the capacity control (the bare UNet widened to the +SP "
                            "network's parameter count)")
    add_prior_kernel_size(model, d.prior_kernel_size)
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=d.steps,
                     help="training steps of each arm in all (shared pre-training included)")
    opt.add_argument("--protocol", default=d.protocol, choices=["finetune", "scratch"],
                     help="finetune: both arms share a pre-trained UNet, then split; "
                          "scratch: each arm trains from the start")
    opt.add_argument("--arm-fraction", type=float, default=d.arm_fraction,
                     help="fine-tuning: share of --steps trained after the split")
    opt.add_argument("--batch", type=int, default=d.batch_size, help="batch size")
    opt.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    opt.add_argument("--beta", type=float, default=d.beta,
                     help="weight of the prior's distillation loss (with --hcl)")
    opt.add_argument("--embedding-lr-scale", type=float, default=d.embedding_lr_scale,
                     help="learning-rate factor of MLA/SAT in the +SP arm")
    add_common(p)
    return p


def run(args: argparse.Namespace) -> int:
    from sp_adapter.extras import require_demo_extra
    from sp_adapter.train.demo import run_demo

    require_demo_extra("the demo")  # before any output
    require_positive(args.width, "--width", "the UNet's channels")
    require_positive(args.steps, "--steps", "the training steps")
    require_positive(args.batch, "--batch", "images per step")
    require_finite(args.lr, "--lr", "the peak learning rate", 0.0, strict=True)
    require_finite(args.beta, "--beta", "a loss weight")
    check_teacher_levels(args.teacher_levels, args.teacher)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"the report folder {out} is not empty; pass --overwrite to replace the "
                       "demo's files in it, or choose another folder with --out")
    check_writable_folder(out, "--out")
    resolve_device(args.device)
    try:
        cfg = demo_config(args)
    except SPAdapterError as err:  # the prior's own option checks (kernel size, ...)
        raise CLIError(str(err)) from None
    shared, arm = cfg.split()
    arms = "UNet, UNet widened to +SP's size, UNet+SP" if cfg.widened else "UNet vs UNet+SP"
    print(f"demo: {arms}, {cfg.protocol} protocol, {shared} shared + {arm} steps per "
          f"arm, batch {cfg.batch_size}, {cfg.crop} px crops, {cfg.blur} blur -> {cfg.out}")
    results = run_demo(cfg, args.command_line)
    trained = results["arms"]
    blurry = results["blurry"]
    print(f"test set: {results['test_count']} crops")
    print(f"  blurry   PSNR {blurry['psnr']:.2f} dB  SSIM {blurry['ssim']:.4f}")
    labels = {"base": "base", "wide": "widened", "sp": "+SP"}
    for name, arm_result in trained.items():
        seconds = arm_result["shared_seconds"] + arm_result["seconds"] + \
            arm_result["student_seconds"]
        print(f"  {labels.get(name, name):<7}  PSNR {arm_result['psnr']:.2f} dB  SSIM "
              f"{arm_result['ssim']:.4f}  ({arm_result['shared_steps'] + arm_result['steps']} "
              f"steps, {seconds:.0f} s)")
    sp = trained["sp"]
    for name in ("base", "wide"):
        if name in trained:
            print(f"  +SP - {labels[name]}: {sp['psnr'] - trained[name]['psnr']:+.3f} dB")
    print(f"report: {Path(cfg.out) / 'README.md'} ({results['wall_seconds']:.0f} s in all)")
    return 0


def demo_config(args: argparse.Namespace):
    """The :class:`~sp_adapter.train.demo.DemoConfig` of the command's options."""
    from sp_adapter.train.demo import DemoConfig

    return DemoConfig(
        out=args.out, overwrite=args.overwrite, steps=args.steps, protocol=args.protocol,
        arm_fraction=args.arm_fraction, batch_size=args.batch, crop=args.crop, lr=args.lr,
        beta=args.beta, train_length=args.length, blur=args.blur, test_crop=args.test_crop,
        test_crops_per_photo=args.test_crops_per_photo, width=args.width,
        student=args.student, student_steps=args.student_steps,
        teacher=args.teacher,
        teacher_levels=tuple(args.teacher_levels) if args.teacher_levels else None,
        hcl=args.hcl, widened=args.widened, prior_kernel_size=args.prior_kernel_size,
        embedding_lr_scale=args.embedding_lr_scale, grids=args.grids,
        seed=args.seed, device=args.device, progress=not args.no_progress,
    )
