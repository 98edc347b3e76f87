"""``sp-adapter train``: train a backbone with or without the prior, in a run folder.

The run folder is the run's record: ``run.json`` and every checkpoint hold the network's
description, the data options and the training options. ``--resume`` reads them, takes
every option not given from the run and refuses one given that contradicts it. Options and
data are checked before anything is written, and a start that fails before the first
checkpoint leaves the folder as it was.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from sp_adapter.cli.common import (
    add_command,
    add_common,
    add_dataset,
    add_prior_kernel_size,
    add_teacher,
    check_teacher_levels,
    check_writable_folder,
    make_dataset,
    require_finite,
    require_positive,
    resolve_device,
)
from sp_adapter.errors import CLIError, SPAdapterError
from sp_adapter.prior.config import PriorConfig, TeacherSpec

DESCRIPTION = """\
Train a backbone with the semantic prior (or without it, --no-prior) and write its log,
run.json and checkpoints to --run-dir.

Defaults follow the paper's training (severe synthetic blur, 256 px crops, lr 2e-4, HCL
distillation, 1x1 prior convolutions, teacher levels 1 2 3). `sp-adapter demo` differs on
purpose: it is a minutes-long CPU comparison, so it trains a small UNet on mild blur with
96 px crops, lr 1e-3 and teacher levels 0 1 2; see `sp-adapter demo --help`.

--resume continues the run in --run-dir exactly where its newest readable checkpoint
stopped: options you leave out are taken from the run (it prints which), an option that
contradicts the run is refused. --steps may grow on resume: the cosine schedule is then
stretched to the new total, so the learning rate from the resumed step on is the longer
schedule's. Resuming a finished run with the same --steps changes nothing."""

EXAMPLES = [
    "sp-adapter train --run-dir runs/unet_sp --steps 20000",
    "sp-adapter train --run-dir runs/unet --no-prior --steps 20000",
    "sp-adapter train --run-dir runs/unet_sp --resume                 # after Ctrl-C",
    "sp-adapter train --run-dir runs/unet_sp --resume --steps 40000   # train further",
    "sp-adapter train --run-dir runs/gopro --dataset gopro --root GOPRO_Large "
    "--backbone mimo-unet",
    "sp-adapter train --backbone nafnet --levels list      # the levels a backbone offers",
    "torchrun --nproc_per_node=4 -m sp_adapter.cli train --run-dir runs/gopro ...",
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(subparsers, "train", "train a backbone with or without the prior",
                    DESCRIPTION, EXAMPLES)
    out = p.add_argument_group("output (the run folder)")
    out.add_argument("--run-dir", "--run", dest="run_dir", default=None,
                     help="run folder (log, run.json, checkpoints; required); write "
                          "--run-dir in full under torchrun")
    start = out.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its newest readable "
                            "checkpoint, with the run's options")
    start.add_argument("--overwrite", action="store_true",
                       help="start again in a --run-dir that holds a run (deletes its log "
                            "and checkpoints)")
    out.add_argument("--checkpoint-every", type=int, default=500,
                     help="steps between checkpoints (the last step always writes one)")
    out.add_argument("--log-every", type=int, default=10,
                     help="steps between log lines (0: none)")
    out.add_argument("--val-every", type=int, default=0,
                     help="steps between validations (0: only at the end)")
    out.add_argument("--val-limit", type=int, default=None,
                     help="validate on the first N test images (default: all)")

    data = p.add_argument_group("data")
    add_dataset(data, default_crop=256)
    data.add_argument("--length", type=int, default=1000, help="synthetic samples per epoch")
    data.add_argument("--fixed-samples", action="store_true",
                      help="repeat the same samples every epoch (needed by --cache-teacher)")
    data.add_argument("--augment", action="store_true",
                      help="synthetic: also rescale (0.5-1) and turn the training crops")
    data.add_argument("--photos", nargs="+", default=None, metavar="NAME",
                      help="synthetic: train on these photos (default: the built-in training "
                           "photos; extra ones: greyscale camera coins brick grass gravel "
                           "moon; colour quokka, luispedro where imgaug, mahotas are "
                           "installed)")
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    data.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")

    model = p.add_argument_group("network and prior")
    model.add_argument("--backbone", default="unet", help=_backbone_help())
    model.add_argument("--width", type=int, default=None,
                       help="UNet width (default: the backbone's own)")
    prior = model.add_mutually_exclusive_group()
    prior.add_argument("--prior", dest="prior", action="store_true", default=True,
                       help="wrap the backbone with the semantic prior (the default)")
    prior.add_argument("--no-prior", dest="prior", action="store_false",
                       help="train the bare backbone")
    model.add_argument("--levels", nargs="+", default=None, metavar="NAME",
                       help="the backbone's levels to wrap, by name (default: the "
                            "backbone's adapter chooses, not always all of them: e.g. 3 of "
                            "NAFNet's 4 levels, 3 of MSSNet's 18); `--levels list` prints "
                            "the levels of --backbone and its defaults")
    model.add_argument("--no-hcl", action="store_true",
                       help="no distillation from the teacher (the paper's Table 4 Net0*)")
    model.add_argument("--no-clc", action="store_true", help="no cross-level connection")
    model.add_argument("--no-mla", action="store_true", help="no multi-level aggregation")
    model.add_argument("--fusion", default="sat", choices=["sat", "add", "concat"],
                       help="how the prior joins a decoder level (sat: the paper's SAT)")
    add_prior_kernel_size(model, PriorConfig().kernel_size)
    model.add_argument("--prior-strength-jitter", type=float, default=0.0, metavar="A",
                       help="train each image at a prior strength drawn from [1-A, 1+A] (a "
                            "noise like dropout; evaluation uses strength 1)")
    model.add_argument("--student", default="teacher", choices=["teacher", "small"],
                       help="the prior's student network: the teacher's architecture, or a "
                            "small one")
    model.add_argument("--teacher-levels", nargs="+", type=int, default=None, metavar="INDEX",
                       help="the teacher's feature levels, finest first (timm out_indices; "
                            "the built-in teacher's 0-4 are reductions 2-32; default: 1 2 3; "
                            "the demo uses 0 1 2: see `sp-adapter demo --help`)")
    add_teacher(model, TeacherSpec().arch)

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=1000,
                     help="optimiser steps in all (the budget); may grow on --resume")
    opt.add_argument("--batch", type=int, default=8, help="global batch size")
    opt.add_argument("--lr", type=float, default=2e-4,
                     help="peak learning rate of AdamW (after --warmup)")
    opt.add_argument("--min-lr", type=float, default=1e-6,
                     help="learning rate at the end of the cosine schedule (at most --lr)")
    opt.add_argument("--embedding-lr-scale", type=float, default=1.0,
                     help="learning-rate factor of the prior's MLA/SAT layers")
    opt.add_argument("--student-lr-scale", type=float, default=1.0,
                     help="learning-rate factor of the prior's student (0 freezes it)")
    opt.add_argument("--backbone-lr-scale", type=float, default=1.0,
                     help="learning-rate factor of the backbone's own layers when training "
                          "with the prior, e.g. 0.1 to fine-tune a trained network gently "
                          "(0 freezes it)")
    opt.add_argument("--warmup", type=int, default=0,
                     help="steps of linear learning-rate warm-up before the cosine")
    opt.add_argument("--grad-clip", type=float, default=None, metavar="NORM",
                     help="clip the gradients' total norm to NORM (default: no clipping)")
    opt.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                     help="mixed precision on CUDA (auto: bf16 where supported, else fp16; "
                          "always off on the CPU)")
    opt.add_argument("--loss", default=None, choices=_losses(),
                     help="reconstruction loss (default: the backbone's own, as its paper "
                          "trained it)")
    opt.add_argument("--alpha", type=float, default=0.01,
                     help="weight of the perceptual loss (0: off)")
    opt.add_argument("--beta", type=float, default=0.1,
                     help="weight of the prior's distillation loss (HCL, Eq. 8)")
    opt.add_argument("--perceptual", default="vgg16", choices=["vgg16", "teacher", "none"],
                     help="the perceptual loss's feature network (vgg16 downloads its "
                          "weights once; teacher is offline)")
    opt.add_argument("--prior-only", action="store_true",
                     help="freeze the backbone, train the prior only")
    opt.add_argument("--cache-teacher", action="store_true",
                     help="compute the teacher's features of each sample once (needs "
                          "--fixed-samples)")
    add_common(p)
    return p


def _losses() -> list[str]:
    from sp_adapter.train.losses import BACKBONE_LOSSES

    return sorted(BACKBONE_LOSSES)


def _backbone_help() -> str:
    from sp_adapter.adapters import known_backbones

    return "the network: " + ", ".join(known_backbones())


# -- the run's record ---------------------------------------------------------------------
def _run_record(run_dir: Path) -> dict[str, Any] | None:
    """What the run in ``run_dir`` was trained with: run.json, else the newest checkpoint."""
    from sp_adapter.train.trainer import RUN_NAME

    path = run_dir / RUN_NAME
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and record.get("config"):
            return record
    from sp_adapter.train.checkpoint import latest_checkpoint, load_checkpoint

    found = latest_checkpoint(run_dir)
    if found is None:
        return None
    try:
        return load_checkpoint(found)
    except Exception:  # noqa: BLE001 - a damaged checkpoint is reported by the resume
        return None


def run_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The CLI options (by ``dest``) a run was trained with, from its record."""
    spec = record.get("model_spec") or {}
    config = record.get("config") or {}
    data = record.get("data_options") or {}
    prior = spec.get("prior")
    settings: dict[str, Any] = {}
    if spec:
        settings.update(backbone=spec.get("backbone"),
                        width=(spec.get("options") or {}).get("width"),
                        prior=prior is not None, levels=spec.get("levels"))
    if prior:
        teacher = prior.get("teacher") or {}
        settings.update(student=prior.get("student"), no_hcl=not prior.get("hcl", True),
                        no_clc=not prior.get("clc", True), no_mla=not prior.get("mla", True),
                        fusion=prior.get("fusion"), prior_kernel_size=prior.get("kernel_size"),
                        prior_strength_jitter=prior.get("strength_jitter", 0.0),
                        teacher=teacher.get("arch"),
                        teacher_levels=_teacher_levels(teacher))
    for key in ("dataset", "crop", "blur", "length", "augment", "photos"):
        if key in data:
            settings[key] = data[key]
    if data.get("dataset") == "gopro":
        settings["gopro_blur"] = data.get("gopro_blur", "blur")
    if data.get("dataset") == "realblur":
        settings["realblur_variant"] = data.get("realblur_variant", "J")
    names = {"steps": "steps", "batch_size": "batch", "lr": "lr", "min_lr": "min_lr",
             "embedding_lr_scale": "embedding_lr_scale", "student_lr_scale": "student_lr_scale",
             "backbone_lr_scale": "backbone_lr_scale", "warmup_steps": "warmup",
             "grad_clip": "grad_clip", "amp": "amp", "loss": "loss", "alpha": "alpha",
             "beta": "beta", "perceptual": "perceptual", "prior_only": "prior_only",
             "cache_teacher": "cache_teacher", "seed": "seed", "val_every": "val_every",
             "log_every": "log_every", "checkpoint_every": "checkpoint_every"}
    for key, dest in names.items():
        if key in config:
            settings[dest] = config[key]
    if "new_samples_each_epoch" in config:
        settings["fixed_samples"] = not config["new_samples_each_epoch"]
    return {k: v for k, v in settings.items() if k != "backbone" or v is not None}


def _teacher_levels(teacher: dict[str, Any]) -> list[int] | None:
    levels = teacher.get("out_indices")
    if levels is None or list(levels) == list(TeacherSpec().out_indices):
        return None
    return list(levels)


# options a resume may change without contradicting the run
_FREE_ON_RESUME = {"steps", "val_every", "log_every", "checkpoint_every"}
_FLAG = {"prior": "--prior/--no-prior", "no_hcl": "--no-hcl", "no_clc": "--no-clc",
         "no_mla": "--no-mla", "fixed_samples": "--fixed-samples"}


def _normal(dest: str, value: Any) -> Any:
    if dest == "teacher_levels" and value is not None and list(value) == list(
            TeacherSpec().out_indices):
        return None
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [*a] == [*b]
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


def _flag(dest: str) -> str:
    return _FLAG.get(dest, "--" + dest.replace("_", "-"))


def _show(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def take_from_run(args: argparse.Namespace, settings: dict[str, Any],
                  given: set[str]) -> list[str]:
    """Fill the options not given from the run's ``settings``; refuse given ones that differ
    (one line naming each). Returns ``--flag value`` for each option taken."""
    if "backbone" in given and "backbone" in settings:
        from sp_adapter.train import backbone_spec

        args.backbone = backbone_spec(args.backbone).name
    differ = [f"{_flag(dest)} {_show(getattr(args, dest))} (the run: {_show(value)})"
              for dest, value in settings.items()
              if dest in given and dest not in _FREE_ON_RESUME
              and not _same(_normal(dest, getattr(args, dest)), value)]
    if differ:
        raise CLIError(f"--resume: {args.run_dir} was trained with other options: "
                       f"{'; '.join(differ)}; leave these out to continue the run as it was, "
                       "or start a new run (another --run-dir, or --overwrite)")
    taken = []
    for dest, value in settings.items():
        if dest not in given and not _same(_normal(dest, getattr(args, dest, None)), value):
            setattr(args, dest, value)
            taken.append(f"{_flag(dest)} {_show(value)}")
    return taken


# -- checks before anything is written ------------------------------------------------------
def check_options(args: argparse.Namespace) -> None:
    """Every option in the CLI's words, before anything is built or written."""
    if args.run_dir is None:
        raise CLIError("train needs --run-dir (the folder for the log, run.json and "
                       "checkpoints)")
    if args.perceptual == "none" and args.alpha > 0:
        raise CLIError(f"--perceptual none turns the perceptual loss off, but --alpha (its "
                       f"weight) is {args.alpha:g}: add --alpha 0, or choose --perceptual "
                       "teacher (offline) or vgg16")
    require_positive(args.steps, "--steps", "the optimiser steps to train")
    require_positive(args.width, "--width", "the UNet's channels")
    require_positive(args.batch, "--batch", "images per step")
    require_positive(args.crop, "--crop", "the crop side in pixels")
    require_positive(args.length, "--length", "synthetic samples per epoch")
    require_positive(args.val_limit, "--val-limit", "the number of test images")
    require_finite(args.lr, "--lr", "the peak learning rate", 0.0, strict=True)
    require_finite(args.min_lr, "--min-lr", "the final learning rate", 0.0, strict=True)
    if args.min_lr > args.lr:
        raise CLIError(f"--min-lr {args.min_lr:g} is above --lr {args.lr:g}: the schedule "
                       "falls from --lr to --min-lr; give a --min-lr at most --lr")
    require_finite(args.embedding_lr_scale, "--embedding-lr-scale", "a learning-rate factor",
                   0.0, strict=True)
    for flag, value in (("--student-lr-scale", args.student_lr_scale),
                        ("--backbone-lr-scale", args.backbone_lr_scale)):
        require_finite(value, flag, "a learning-rate factor; 0 freezes")
    require_finite(args.grad_clip, "--grad-clip", "the largest gradient norm", 0.0,
                   strict=True)
    require_finite(args.alpha, "--alpha", "a loss weight")
    require_finite(args.beta, "--beta", "a loss weight")
    require_finite(args.prior_strength_jitter, "--prior-strength-jitter",
                   "strengths are drawn from [1-A, 1+A]")
    for flag, value in (("--warmup", args.warmup), ("--val-every", args.val_every),
                        ("--log-every", args.log_every),
                        ("--checkpoint-every", args.checkpoint_every),
                        ("--workers", args.workers), ("--seed", args.seed)):
        if value < 0:
            raise CLIError(f"{flag} must be 0 or more, got {value}")
    if args.cache_teacher and not args.fixed_samples:
        raise CLIError("--cache-teacher keeps the teacher's features of each sample, so the "
                       "samples must repeat: add --fixed-samples")
    if args.prior_only and not args.prior:
        raise CLIError("--prior-only trains the prior alone, but --no-prior leaves it out")
    if args.prior:
        check_teacher_levels(args.teacher_levels, args.teacher)


def _check_run_dir(args: argparse.Namespace) -> Path:
    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CLIError(f"--run-dir {run_dir} is a file; give a folder for the run (it is "
                       "created if missing)")
    check_writable_folder(run_dir, "--run-dir")
    return run_dir


def _check_data(train: Any, val: Any, args: argparse.Namespace) -> None:
    """Read one training sample and every test image now, so a crop larger than the images
    or an unreadable test image is found before anything is written."""
    if len(train) == 0:
        raise CLIError(f"--dataset {args.dataset}: the training set is empty")
    try:
        train[0]
    except SPAdapterError as err:  # e.g. a crop larger than the images
        raise CLIError(f"--dataset {args.dataset} --crop {args.crop}: {err}") from None
    if args.dataset != "synthetic":  # the built-in photos are known to be readable
        for index in range(len(val)):
            val[index]


def _build(args: argparse.Namespace):
    """The model spec, training config and datasets of ``args``."""
    from sp_adapter.prior.config import teacher_at_levels
    from sp_adapter.train import ModelSpec, TrainConfig, backbone_spec

    spec = backbone_spec(args.backbone)
    options = {"width": args.width} if args.width is not None else {}
    prior = None
    try:
        if args.prior:
            prior = PriorConfig(student=args.student, hcl=not args.no_hcl, clc=not args.no_clc,
                                mla=not args.no_mla, fusion=args.fusion,
                                kernel_size=args.prior_kernel_size,
                                strength_jitter=args.prior_strength_jitter,
                                teacher=teacher_at_levels(args.teacher_levels,
                                                          args.teacher)).to_dict()
        config = TrainConfig(
            steps=args.steps, batch_size=args.batch, lr=args.lr, min_lr=args.min_lr,
            embedding_lr_scale=args.embedding_lr_scale,
            student_lr_scale=args.student_lr_scale, backbone_lr_scale=args.backbone_lr_scale,
            warmup_steps=args.warmup, grad_clip=args.grad_clip, amp=args.amp, loss=args.loss,
            alpha=args.alpha, beta=args.beta, perceptual=args.perceptual,
            prior_only=args.prior_only, cache_teacher=args.cache_teacher,
            new_samples_each_epoch=not args.fixed_samples, seed=args.seed,
            val_every=args.val_every, log_every=args.log_every,
            checkpoint_every=args.checkpoint_every, num_workers=args.workers,
            device=args.device, progress=not args.no_progress)
    except SPAdapterError as err:  # the options' own checks (prior kernel, jitter, ...)
        raise CLIError(f"{err}") from None
    if args.loss is not None:
        from sp_adapter.train.losses import BACKBONE_LOSSES

        if args.loss not in BACKBONE_LOSSES:
            raise CLIError(f"--loss {args.loss}: no such reconstruction loss; choose one of "
                           f"{', '.join(sorted(BACKBONE_LOSSES))}")
    model_spec = ModelSpec(spec.name, options, prior, args.levels)
    train = make_dataset(args.dataset, args.root, "train", args.crop, args.blur, args.seed,
                         length=args.length, keys=args.cache_teacher, training=True,
                         augment=args.augment, photos=args.photos,
                         gopro_blur=args.gopro_blur, realblur_variant=args.realblur_variant)
    val = make_dataset(args.dataset, args.root, "test", None, args.blur, 0,
                       gopro_blur=args.gopro_blur, realblur_variant=args.realblur_variant)
    if args.val_limit is not None:
        val = torch.utils.data.Subset(val, range(min(args.val_limit, len(val))))
    return spec, model_spec, config, train, val


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that decide ``train``'s training samples (a resume must repeat them).
    The dataset folder is left out: a dataset copied elsewhere is the same data."""
    options: dict[str, Any] = {"dataset": args.dataset, "crop": args.crop}
    if args.dataset == "synthetic":
        options.update(blur=args.blur, length=args.length, augment=args.augment,
                       photos=args.photos)
    # recorded only when not the default, so runs from before these flags still resume
    if args.dataset == "gopro" and args.gopro_blur != "blur":
        options["gopro_blur"] = args.gopro_blur
    if args.dataset == "realblur" and args.realblur_variant != "J":
        options["realblur_variant"] = args.realblur_variant
    return options


def _print_levels(args: argparse.Namespace) -> int:
    from sp_adapter.train import backbone_spec

    spec = backbone_spec(args.backbone)
    options = {"width": args.width} if args.width is not None else {}
    found = spec.level_map(spec.build(**options))
    defaults = set(found.default_levels)
    print(f"levels of --backbone {spec.name}, finest first (* : wrapped by default, "
          f"{len(defaults)} of {len(found.levels)}):")
    for name in found.levels:
        print(f"  {'*' if name in defaults else ' '} {name}")
    return 0


def _resume_hint(args: argparse.Namespace) -> str:
    return f"sp-adapter train --run-dir {args.run_dir} --resume"


def run(args: argparse.Namespace) -> int:
    from sp_adapter.train import Trainer, init_distributed
    from sp_adapter.train.checkpoint import latest_checkpoint, list_checkpoints
    from sp_adapter.train.trainer import check_run_folder, remove_run

    if args.levels == ["list"]:
        return _print_levels(args)
    if args.run_dir is None:
        raise CLIError("train needs --run-dir (the folder for the log, run.json and "
                       "checkpoints)")
    run_dir = _check_run_dir(args)
    check_run_folder(run_dir, args.resume, args.overwrite)
    done_at = None
    if args.resume:
        record = _run_record(run_dir)
        if record is not None:
            taken = take_from_run(args, run_settings(record), getattr(args, "given", set()))
            if taken:
                print(f"from the run: {', '.join(taken)}")
        found = list_checkpoints(run_dir)
        done_at = found[-1][0] if found else None
    check_options(args)
    if done_at is not None and args.steps < done_at:
        raise CLIError(f"--steps {args.steps}: the run in {run_dir} is already at step "
                       f"{done_at}; give --steps {done_at} or more")
    if done_at is not None and args.steps == done_at:
        print(f"the run in {run_dir} finished at step {done_at} (--steps {args.steps}); "
              f"nothing to do: pass a larger --steps to train further")
        print(f"checkpoint: {latest_checkpoint(run_dir)}")
        return 0
    resolve_device(args.device)  # no CUDA where --device cuda asks for it: said now
    info = init_distributed()
    spec, model_spec, config, train, val = _build(args)
    _check_data(train, val, args)
    torch.manual_seed(args.seed)
    model = model_spec.build()
    existed = run_dir.exists()
    fresh = not args.resume or done_at is None
    trainer = Trainer(model, train, config, run_dir=run_dir, val_data=val, backbone=spec,
                      model_spec=model_spec, data_options=data_options(args), dist=info)
    try:
        result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        kept = latest_checkpoint(run_dir)
        if kept is None and fresh and info.is_main:
            remove_run(run_dir)
            if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise CLIError(f"interrupted at step {trainer.step}, before the first checkpoint; "
                           f"{run_dir} was left as it was: run the same command again") from None
        step = list_checkpoints(run_dir)[-1][0] if kept is not None else 0
        raise CLIError(f"interrupted at step {trainer.step}; the run continues from its "
                       f"checkpoint at step {step} with: {_resume_hint(args)}") from None
    except BaseException:
        if fresh and info.is_main and latest_checkpoint(run_dir) is None:
            remove_run(run_dir)  # a failed start leaves the folder as it was
            if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise
    if info.is_main:
        v = result.validation
        scores = f"; test PSNR {v.psnr:.3f} dB, SSIM {v.ssim:.4f} ({v.count} images)" if v else ""
        print(f"trained {result.steps} steps in {result.seconds:.0f} s{scores}")
        print(f"checkpoint: {result.checkpoint}")
    return 0
