"""``sp-adapter demo``: offline, a UNet with and without the prior at a small budget, and a
report of the comparison."""

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

DESCRIPTION = """\
Offline, in minutes on a CPU: train a small UNet with and without the semantic prior on
the built-in photos, score both on held-out crops and write a report (README.md, scores,
pictures) to --out.

Its defaults differ from `sp-adapter train` on purpose, to show the comparison within its
budget: mild blur, 96 px crops, batch 4, lr 1e-3, a 16-channel UNet, prior kernel 3,
teacher levels 0 1 2 and no HCL distillation (train: severe blur, 256 px crops, batch 8,
lr 2e-4, the paper's prior with HCL at teacher levels 1 2 3)."""

EXAMPLES = [
    "sp-adapter demo",
    "sp-adapter demo --out my-report --steps 1200",
    "sp-adapter demo --protocol scratch --hcl",
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from sp_adapter.train.demo import DemoConfig

    d = DemoConfig()
    p = add_command(subparsers, "demo", "offline: UNet with vs without the prior, writes a "
                    "report", DESCRIPTION, EXAMPLES)
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
                      help="test crops from each held-out photo")
    data.add_argument("--seed", type=int, default=d.seed, help="seed of the data and weights")
    model = p.add_argument_group("network and prior")
    model.add_argument("--width", type=int, default=d.width, help="UNet width")
    model.add_argument("--student", default=d.student, choices=["teacher", "small"],
                       help="the prior's student network")
    model.add_argument("--student-steps", type=int, default=d.student_steps,
                       help="HCL pre-training steps of the student (none without --hcl)")
    add_teacher(model, d.teacher)
    model.add_argument("--teacher-levels", nargs="+", type=int, default=d.teacher_levels,
                       metavar="INDEX", help="the teacher's feature levels, finest first")
    hcl = model.add_mutually_exclusive_group()
    hcl.add_argument("--hcl", dest="hcl", action="store_true", default=d.hcl,
                     help="distil the prior from the teacher (Table 4 Net6)"
                          + (" (the default)" if d.hcl else ""))
    hcl.add_argument("--no-hcl", dest="hcl", action="store_false",
                     help="no distillation (Table 4 Net0*)" + ("" if d.hcl else
                                                              " (the default)"))
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
    print(f"demo: UNet vs UNet+SP, {cfg.protocol} protocol, {shared} shared + {arm} steps per "
          f"arm, batch {cfg.batch_size}, {cfg.crop} px crops, {cfg.blur} blur -> {cfg.out}")
    results = run_demo(cfg, args.command_line)
    base, sp = results["arms"]["base"], results["arms"]["sp"]
    blurry = results["blurry"]
    print(f"test set: {results['test_count']} crops")
    print(f"  blurry  PSNR {blurry['psnr']:.2f} dB  SSIM {blurry['ssim']:.4f}")
    for label, arm_result in (("base", base), ("+SP", sp)):
        seconds = arm_result["shared_seconds"] + arm_result["seconds"] + \
            arm_result["student_seconds"]
        print(f"  {label:<6}  PSNR {arm_result['psnr']:.2f} dB  SSIM {arm_result['ssim']:.4f}  "
              f"({arm_result['shared_steps'] + arm_result['steps']} steps, {seconds:.0f} s)")
    print(f"  +SP - base: {sp['psnr'] - base['psnr']:+.3f} dB")
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
        hcl=args.hcl, prior_kernel_size=args.prior_kernel_size,
        embedding_lr_scale=args.embedding_lr_scale, grids=args.grids,
        seed=args.seed, device=args.device, progress=not args.no_progress,
    )
