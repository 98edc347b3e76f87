"""The ``sp-adapter`` command: ``demo``, ``train``, ``eval``, ``deblur``, ``calibrate``.

    sp-adapter demo                                  # offline: base vs +SP, writes ./report
    sp-adapter train --run-dir runs/unet_sp --steps 20000 --alpha 0
    torchrun --nproc_per_node=4 -m sp_adapter.cli train --run-dir runs/gopro \
        --dataset gopro --root GOPRO_Large ...
    sp-adapter eval --run-dir runs/unet_sp --dataset gopro --root GOPRO_Large
    sp-adapter deblur photo.jpg more/ --run-dir runs/unet_sp --out deblurred/ --tile 512
    sp-adapter calibrate --run-dir runs/unet_sp    # the prior's strength, on held-out photos

Under torchrun write ``--run-dir`` in full: torchrun reads its own options anywhere on the
command line and takes the short ``--run`` for its ``--run-path``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sp_adapter import cli_distill
from sp_adapter.errors import CLIError, SPAdapterError
from sp_adapter.prior.config import WHEEL_TEACHERS, PriorConfig, TeacherSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["sp-adapter", *map(shlex.quote, args)])


# -- checks shared by sub-commands -----------------------------------------------------
def _require_positive(value: int | None, flag: str, what: str) -> None:
    """Refuse a flag's value below 1 (``None``: not given)."""
    if value is not None and value < 1:
        raise CLIError(f"{flag} must be at least 1 ({what}), got {value}")


def _check_tile(tile: int | None, overlap: int | None = None) -> None:
    _require_positive(tile, "--tile", "the tile side in pixels; leave it out to run whole "
                      "images")
    if overlap is not None and overlap < 0:
        raise CLIError(f"--overlap must be 0 or more pixels, got {overlap}")


def _check_teacher_levels(levels: Sequence[int] | None, arch: str) -> None:
    """Refuse ``--teacher-levels`` the teacher does not have, before anything is built."""
    if not levels:
        return
    import timm

    reductions = timm.create_model(arch, pretrained=False, features_only=True
                                   ).feature_info.reduction()
    count = len(reductions)
    wrong = [level for level in levels if not 0 <= level < count]
    if wrong:
        raise CLIError(f"--teacher-levels {' '.join(map(str, wrong))}: the teacher {arch} has "
                       f"feature levels 0-{count - 1} (reductions {reductions[0]} to "
                       f"{reductions[-1]}), finest first")


def _load_trained(source: str):
    """``load_trained`` of a run folder or checkpoint, with a damaged or unsafe file said in
    one line naming it (never suggesting an unsafe load)."""
    import pickle

    from sp_adapter.train import load_trained
    from sp_adapter.train.checkpoint import short_reason
    from sp_adapter.train.model_spec import resolve_checkpoint

    file = resolve_checkpoint(source)
    try:
        return load_trained(file)
    except (SPAdapterError, FileNotFoundError):
        raise
    except pickle.UnpicklingError:
        raise CLIError(f"{file} is not a checkpoint this library can load safely (it holds "
                       "objects other than tensors and plain containers); use a checkpoint "
                       "written by sp-adapter train") from None
    except (OSError, RuntimeError, EOFError) as err:
        raise CLIError(f"cannot read the checkpoint {file}: {short_reason(err)} (the file is "
                       "truncated or corrupt); use another checkpoint of the run "
                       "(checkpoints/step_*.pt) or train again") from None


# -- argument groups shared by sub-commands --------------------------------------------
def _add_teacher(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--teacher", default=default, choices=list(WHEEL_TEACHERS.values()),
                   help="the offline teacher (Lite1 and Lite2 need sp_adapter[teachers])")


def _add_prior_kernel_size(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--prior-kernel-size", type=int, default=default,
                   help="kernel of the prior's CLC, MLA and SAT convolutions (odd; "
                        "default %(default)s)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_model_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", "--run", dest="run_dir",
                     help="a training run folder (its latest checkpoint is used)")
    src.add_argument("--checkpoint", help="a checkpoint file (checkpoints/step_*.pt)")


def _add_dataset(p: argparse.ArgumentParser, default_crop: int) -> None:
    p.add_argument("--dataset", default="synthetic",
                   choices=["synthetic", "gopro", "hide", "realblur"],
                   help="built-in synthetic blur on built-in photos (offline), or a folder")
    p.add_argument("--root", help="dataset folder (GOPRO_Large, HIDE, RealBlur root)")
    p.add_argument("--blur", default="severe", choices=["severe", "mild"],
                   help="synthetic blur strength")
    p.add_argument("--crop", type=int, default=default_crop, help="crop side in pixels")
    p.add_argument("--gopro-blur", default="blur", choices=["blur", "blur_gamma"],
                   help="GoPro's blurry folder: blur (most published tables; default) or "
                        "blur_gamma (DeepDeblur's own numbers)")
    p.add_argument("--realblur-variant", default="J", choices=["J", "R"],
                   help="RealBlur-J (JPEG, default) or RealBlur-R (raw)")


def _dataset(name: str, root: str | None, split: str, crop: int | None, blur: str, seed: int,
             length: int | None = None, keys: bool = False, training: bool = False,
             crops_per_photo: int = 16, augment: bool = False,
             photos: list[str] | None = None, whole: bool = False,
             gopro_blur: str = "blur", realblur_variant: str = "J"):
    """A training set (random crops, flips, new samples per epoch) or an evaluation set
    (whole images or the fixed synthetic test crops, in a fixed order, with keys).
    ``augment`` and ``photos`` choose the built-in training set's crops and photos;
    ``whole`` makes the built-in test set the whole test photos instead of crops;
    ``gopro_blur`` and ``realblur_variant`` choose GoPro's blurry folder and RealBlur's
    variant."""
    from sp_adapter.data import (
        GoProDataset,
        HIDEDataset,
        RealBlurDataset,
        SyntheticBlurDataset,
        blur_preset,
    )

    if name != "synthetic" and (augment or photos):
        raise CLIError("--augment and --photos are for --dataset synthetic (the "
                         "built-in photos)")
    if name == "synthetic":
        if split == "train":
            return SyntheticBlurDataset("train", crop=crop or 128, length=length,
                                        blur=blur_preset(blur), seed=seed,
                                        return_key=keys or not training,
                                        augment=augment, photos=photos)
        return SyntheticBlurDataset("test", crop=None if whole else crop or 128,
                                    blur=blur_preset(blur),
                                    crops_per_photo=crops_per_photo, return_key=True)
    if root is None:
        raise CLIError(f"--dataset {name} needs --root (the dataset folder)")
    cls = {"gopro": GoProDataset, "hide": HIDEDataset, "realblur": RealBlurDataset}[name]
    extra = {"gopro": {"gamma": gopro_blur == "blur_gamma"},
             "realblur": {"variant": realblur_variant}}.get(name, {})
    if training:
        return cls(root, split=split, train=True, crop=crop, seed=seed, return_key=keys,
                   **extra)
    return cls(root, split=split, train=False, crop=None, return_key=True, **extra)


# -- train ------------------------------------------------------------------------------
def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a backbone with or without the prior")
    p.add_argument("--run-dir", "--run", dest="run_dir", required=True,
                   help="run folder (log, run.json, checkpoints); write --run-dir under torchrun")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from the newest readable checkpoint in --run-dir")
    start.add_argument("--overwrite", action="store_true",
                       help="start again in a --run-dir that holds a run (deletes its log "
                            "and checkpoints)")
    _add_dataset(p, default_crop=256)
    p.add_argument("--length", type=int, default=1000, help="synthetic samples per epoch")
    p.add_argument("--fixed-samples", action="store_true",
                   help="repeat the same samples every epoch (needed by --cache-teacher)")
    p.add_argument("--augment", action="store_true",
                   help="synthetic: also rescale (0.5-1) and turn the training crops")
    p.add_argument("--photos", nargs="+", default=None, metavar="NAME",
                   help="synthetic: train on these photos (built-in training photos or the "
                        "extra ones: greyscale camera coins brick grass gravel moon; colour "
                        "quokka, luispedro where imgaug, mahotas are installed)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N images")
    p.add_argument("--backbone", default="unet", help="unet, mimo-unet, mprnet, mssnet, ...")
    p.add_argument("--width", type=int, default=None, help="UNet width")
    prior = p.add_mutually_exclusive_group()
    prior.add_argument("--prior", dest="prior", action="store_true", default=True,
                       help="wrap the backbone with the semantic prior (default)")
    prior.add_argument("--no-prior", dest="prior", action="store_false",
                       help="train the bare backbone")
    p.add_argument("--levels", nargs="+", default=None, help="level names (default: all)")
    p.add_argument("--no-hcl", action="store_true", help="Table 4 Net0*: no distillation")
    p.add_argument("--no-clc", action="store_true", help="no cross-level connection")
    p.add_argument("--no-mla", action="store_true", help="no multi-level aggregation")
    p.add_argument("--fusion", default="sat", choices=["sat", "add", "concat"])
    _add_prior_kernel_size(p, PriorConfig().kernel_size)
    p.add_argument("--prior-strength-jitter", type=float, default=0.0, metavar="A",
                   help="train each image at a prior strength drawn from [1-A, 1+A] (a "
                        "noise like dropout; evaluation uses strength 1; default 0)")
    p.add_argument("--student", default="teacher", choices=["teacher", "small"])
    p.add_argument("--teacher-levels", nargs="+", type=int, default=None, metavar="INDEX",
                   help="the teacher's feature levels, finest first (timm out_indices; the "
                        "built-in teacher's 0-4 are reductions 2-32; default: 1 2 3)")
    _add_teacher(p, TeacherSpec().arch)
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps (the budget)")
    p.add_argument("--batch", type=int, default=8, help="global batch size")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--embedding-lr-scale", type=float, default=1.0,
                   help="learning-rate factor of the prior's MLA/SAT layers")
    p.add_argument("--student-lr-scale", type=float, default=1.0,
                   help="learning-rate factor of the prior's student (0 freezes it)")
    p.add_argument("--backbone-lr-scale", type=float, default=1.0,
                   help="learning-rate factor of the backbone's own layers when training "
                        "with the prior, e.g. 0.1 to fine-tune a trained network gently "
                        "(0 freezes it)")
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--loss", default=None, help="reconstruction loss (default: the backbone's)")
    p.add_argument("--alpha", type=float, default=0.01, help="perceptual weight (0: off)")
    p.add_argument("--beta", type=float, default=0.1, help="prior weight")
    p.add_argument("--perceptual", default="vgg16", choices=["vgg16", "teacher", "none"])
    p.add_argument("--prior-only", action="store_true", help="freeze the backbone")
    p.add_argument("--cache-teacher", action="store_true",
                   help="compute the teacher's features of each sample once")
    p.add_argument("--val-every", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
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


def cmd_train(args: argparse.Namespace) -> int:
    from sp_adapter.prior.config import teacher_at_levels
    from sp_adapter.train import ModelSpec, TrainConfig, Trainer, backbone_spec, init_distributed
    from sp_adapter.train.trainer import check_run_folder

    if args.perceptual == "none" and args.alpha > 0:
        raise CLIError(f"--perceptual none turns the perceptual loss off, but --alpha (its "
                       f"weight) is {args.alpha:g}: add --alpha 0, or choose --perceptual "
                       "teacher (offline) or vgg16")
    _require_positive(args.steps, "--steps", "the optimiser steps to train")
    _require_positive(args.width, "--width", "the UNet's channels")
    _require_positive(args.batch, "--batch", "images per step")
    _require_positive(args.crop, "--crop", "the crop side in pixels")
    if args.prior:
        _check_teacher_levels(args.teacher_levels, args.teacher)
    check_run_folder(args.run_dir, args.resume, args.overwrite)
    info = init_distributed()
    spec = backbone_spec(args.backbone)
    options = {"width": args.width} if args.width is not None else {}
    prior = None
    if args.prior:
        prior = PriorConfig(student=args.student, hcl=not args.no_hcl, clc=not args.no_clc,
                            mla=not args.no_mla, fusion=args.fusion,
                            kernel_size=args.prior_kernel_size,
                            strength_jitter=args.prior_strength_jitter,
                            teacher=teacher_at_levels(args.teacher_levels,
                                                      args.teacher)).to_dict()
    model_spec = ModelSpec(spec.name, options, prior, args.levels)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch, lr=args.lr, min_lr=args.min_lr,
        embedding_lr_scale=args.embedding_lr_scale, student_lr_scale=args.student_lr_scale,
        backbone_lr_scale=args.backbone_lr_scale,
        warmup_steps=args.warmup, grad_clip=args.grad_clip, amp=args.amp, loss=args.loss,
        alpha=args.alpha, beta=args.beta, perceptual=args.perceptual,
        prior_only=args.prior_only, cache_teacher=args.cache_teacher,
        new_samples_each_epoch=not args.fixed_samples, seed=args.seed,
        val_every=args.val_every, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, num_workers=args.workers, device=args.device,
        progress=not args.no_progress,
    )
    train = _dataset(args.dataset, args.root, "train", args.crop, args.blur, args.seed,
                     length=args.length, keys=args.cache_teacher, training=True,
                     augment=args.augment, photos=args.photos, gopro_blur=args.gopro_blur,
                     realblur_variant=args.realblur_variant)
    val = _dataset(args.dataset, args.root, "test", None, args.blur, 0,
                   gopro_blur=args.gopro_blur, realblur_variant=args.realblur_variant)
    if args.val_limit is not None:
        val = torch.utils.data.Subset(val, range(min(args.val_limit, len(val))))
    torch.manual_seed(args.seed)
    model = model_spec.build()
    trainer = Trainer(model, train, config, run_dir=args.run_dir, val_data=val, backbone=spec,
                      model_spec=model_spec, data_options=_data_options(args), dist=info)
    result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if info.is_main:
        v = result.validation
        scores = f"; test PSNR {v.psnr:.3f} dB, SSIM {v.ssim:.4f} ({v.count} images)" if v else ""
        print(f"trained {result.steps} steps in {result.seconds:.0f} s{scores}")
        print(f"checkpoint: {result.checkpoint}")
    return 0


# -- eval -------------------------------------------------------------------------------
def _eval_parser(sub) -> None:
    from sp_adapter.metrics import CONVENTIONS

    p = sub.add_parser("eval", help="PSNR/SSIM (and LPIPS when available) on a dataset, "
                                    "with a row of the paper's Table 1 per model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", "--run", dest="run_dir", nargs="+", metavar="RUN",
                     help="training run folders (each one's latest checkpoint is used)")
    src.add_argument("--checkpoint", nargs="+", metavar="FILE",
                     help="checkpoint files (checkpoints/step_*.pt)")
    _add_dataset(p, default_crop=128)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--convention", default=None, choices=list(CONVENTIONS),
                   help="how PSNR/SSIM are computed, as published tables do (docs/metrics.md):"
                        " matlab (default; realblur for --dataset realblur), basicsr, "
                        "skimage (training validation's), realblur (needs sp_adapter[realblur])")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write the scores (per image too) and the convention to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--whole", action="store_true",
                   help="synthetic test split: score the whole test photos (less the blur "
                        "margin, 16 kernels each) instead of crops, one image per batch")
    p.add_argument("--limit", type=int, default=None, help="score the first N images")
    p.add_argument("--tile", type=int, default=None, help="tiled inference with this tile side")
    p.add_argument("--batch", type=int, default=None, help="batch (default 8 synthetic, else 1)")
    _add_prior_strength(p)
    _add_common(p)


def _add_prior_strength(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior-strength", type=float, default=None, metavar="S",
                   help="scale the prior's change to each decoder level by S (1: as "
                        "trained, 0: the bare network; default: the strength `calibrate "
                        "--save` recorded for the checkpoint, else 1)")


def _apply_prior_strength(model: torch.nn.Module, strength: float | None,
                          info: dict) -> str:
    """Set ``--prior-strength`` if given; describe the strength in use ("" for a model
    without the prior or at 1 by default)."""
    from sp_adapter.attach.state import is_wrapped
    from sp_adapter.attach.wrap import set_prior_strength

    if strength is None:
        loaded = info.get("prior_strength")
        if loaded is None or loaded == 1.0:
            return ""
        return f" at strength {loaded:g} (saved by calibrate --save)"
    if not is_wrapped(model):
        raise CLIError("--prior-strength needs a model trained with the prior; "
                         "this one has none")
    try:
        set_prior_strength(model, strength)
    except ValueError as err:
        raise CLIError(f"--prior-strength: {err}") from None
    return f" at strength {strength:g}"


def _lpips_or_note(device: torch.device):
    from sp_adapter.metrics import lpips_metric

    try:
        return lpips_metric("alex", device=device), None
    except RuntimeError as err:
        return None, f"LPIPS not computed: {err}"


def _eval_convention(args: argparse.Namespace):
    from sp_adapter.metrics import DEFAULT_CONVENTION, get_convention

    if args.convention is not None:
        return get_convention(args.convention), "chosen"
    name = "realblur" if args.dataset == "realblur" else DEFAULT_CONVENTION
    return get_convention(name), f"default for --dataset {args.dataset}"


def _data_label(args: argparse.Namespace) -> str:
    detail = {"gopro": f" ({args.gopro_blur})", "realblur": f" (RealBlur-{args.realblur_variant})",
              "synthetic": f" ({args.blur} blur)"}.get(args.dataset, "")
    return f"{args.dataset}{detail} {args.split}"


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from sp_adapter.files.atomic import write_atomic
    from sp_adapter.train import evaluate
    from sp_adapter.train.distributed import DistInfo
    from sp_adapter.train.evaluate import TABLE_HEADER, table_name, table_row, with_input_scores
    from sp_adapter.train.trainer import resolve_device

    _check_tile(args.tile)
    _require_positive(args.limit, "--limit", "the number of images to score")
    _require_positive(args.batch, "--batch", "images per batch")
    if args.whole and (args.dataset != "synthetic" or args.split != "test"):
        raise CLIError("--whole is for --dataset synthetic --split test (the "
                         "folder datasets are scored on whole images already)")
    if args.json is not None and Path(args.json).exists() and not args.overwrite:
        raise CLIError(f"--json {args.json} exists; pass --overwrite to replace it or "
                       "choose another file")
    convention, why = _eval_convention(args)
    if convention.align:
        from sp_adapter.metrics.realblur import require_opencv

        require_opencv()  # before any model is loaded
    device = resolve_device(args.device, DistInfo())
    data = _dataset(args.dataset, args.root, args.split, args.crop, args.blur, 0,
                    whole=args.whole, gopro_blur=args.gopro_blur,
                    realblur_variant=args.realblur_variant)
    batch = args.batch or (8 if args.dataset == "synthetic" and not args.whole else 1)
    lpips, note = _lpips_or_note(device)
    count = len(data) if args.limit is None else min(args.limit, len(data))
    print(f"data: {_data_label(args)}, {count} images")
    print(f"convention: {convention.name} ({why}): {convention.description}")
    if note is not None:
        print(note)
    inputs = None
    models: list[dict[str, Any]] = []
    rows: list[str] = []
    for source in args.run_dir or args.checkpoint:
        model, spec, info = _load_trained(source)
        model.to(device)
        strength = _apply_prior_strength(model, args.prior_strength, info)
        lpips_values: list[float] = []

        def on_batch(blurry, restored, sharp, keys, values=lpips_values) -> None:
            if lpips is not None:
                values.append(float(lpips(restored, sharp)) * len(keys))

        result = evaluate(model, data, spec.backbone, device=device, batch_size=batch,
                          tile=args.tile, limit=args.limit, score_blurry=inputs is None,
                          progress=not args.no_progress, on_batch=on_batch,
                          convention=convention.name, warmup=True)
        if inputs is None:
            inputs = result
        else:  # the blurry inputs score the same for every model
            result = with_input_scores(result, inputs)
        model.to("cpu")
        lpips_mean = sum(lpips_values) / result.count if lpips is not None else None
        method, structure = table_name(spec.backbone, spec.prior is not None)
        print(f"model: {info['path']} (step {info.get('step')}, {spec.backbone}, "
              f"{'with' if spec.prior else 'without'} prior{strength})")
        print(f"blurry input: PSNR {result.blurry_psnr:.3f} dB  SSIM {result.blurry_ssim:.4f}")
        print(f"deblurred:    PSNR {result.psnr:.3f} dB  SSIM {result.ssim:.4f}")
        if lpips_mean is not None:
            print(f"LPIPS (alex): {lpips_mean:.4f}")
        print(f"time: {result.seconds_per_image:.4f} s per image ({device}, batch {batch})")
        rows.append(table_row(method, structure, result, lpips_mean))
        models.append({"path": info["path"], "step": info.get("step"),
                       "backbone": spec.backbone, "prior": spec.prior is not None,
                       "prior_strength": (info.get("prior_strength")
                                          if args.prior_strength is None
                                          else args.prior_strength), "method": method,
                       **result.as_dict(), "lpips": lpips_mean, "per_image": result.per_image})
    table = "\n".join([TABLE_HEADER, *rows])
    print(f"\nTable 1 ({convention.name} convention, time on {device}):\n{table}")
    if args.json is not None:
        report = {"command": "eval", "convention": convention.as_dict(),
                  "convention_source": why,
                  "data": {"dataset": args.dataset, "root": args.root, "split": args.split,
                           "label": _data_label(args), "count": inputs.count},
                  "device": str(device), "batch": batch, "lpips_note": note,
                  "models": models, "table": table}
        text = json.dumps(report, indent=2, allow_nan=True) + "\n"
        print(f"scores: {write_atomic(args.json, text.encode())}")
    return 0


# -- deblur -----------------------------------------------------------------------------
def _deblur_parser(sub) -> None:
    p = sub.add_parser("deblur", help="deblur image files with a trained network")
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    p.add_argument("--out", required=True,
                   help="output folder: each image is written under its own name, in its "
                        "own format, mode and bit depth")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files of the same names in --out")
    _add_model_source(p)
    p.add_argument("--tile", type=int, default=None, help="tile side for big images")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    _add_prior_strength(p)
    _add_common(p)


def _image_files(inputs: Sequence[str]) -> list[Path]:
    """The image files named or held by the inputs (a file named twice counts once)."""
    files: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found = [path]
        else:
            raise FileNotFoundError(f"no such image or folder: {path}")
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    if not files:
        raise FileNotFoundError("no images found in the inputs (looked for "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _deblur_targets(files: Sequence[Path], out_dir: Path, overwrite: bool) -> list[Path]:
    """Where each input is written: ``out_dir`` / its own name. Refused before any work:
    two inputs of one name (or names differing only in case), an output that is its own
    input, a format that cannot be written, and (without ``--overwrite``) existing files."""
    from sp_adapter.files.image_io import writable_suffix

    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} is a file; give a folder (it is created if missing)")
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name.casefold(), []).append(path)
    clashes = [paths for paths in by_name.values() if len(paths) > 1]
    if clashes:
        listed = "; ".join(" and ".join(map(str, paths)) for paths in clashes[:3])
        raise CLIError(f"inputs of the same name would be written to one file in {out_dir}: "
                       f"{listed}; deblur them into separate --out folders")
    targets = [out_dir / path.name for path in files]
    for path, target in zip(files, targets, strict=True):
        if not writable_suffix(path.suffix):
            raise CLIError(f"{path}: cannot write {path.suffix!r} files; convert it to PNG")
        if target.exists() and target.resolve() == path.resolve():
            raise CLIError(f"{target} is an input: the output would replace it; choose "
                           "another --out folder")
    existing = [target for target in targets if target.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        one = len(existing) == 1
        raise CLIError(f"{', '.join(map(str, existing[:3]))}{more} already exist"
                       f"{'s' if one else ''}: pass --overwrite to replace "
                       f"{'it' if one else 'them'}, or choose another --out folder")
    return targets


def cmd_deblur(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from sp_adapter.files.image_io import from_network, read_image, to_network, write_image
    from sp_adapter.train import deblur
    from sp_adapter.train.distributed import DistInfo
    from sp_adapter.train.trainer import resolve_device

    _check_tile(args.tile, args.overlap)
    files = _image_files(args.inputs)
    out_dir = Path(args.out)
    targets = _deblur_targets(files, out_dir, args.overwrite)
    device = resolve_device(args.device, DistInfo())
    model, spec, info = _load_trained(args.run_dir or args.checkpoint)
    model.to(device)
    strength = _apply_prior_strength(model, args.prior_strength, info)
    if strength:
        print(f"prior{strength}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(list(zip(files, targets, strict=True)), desc="deblur",
               disable=args.no_progress)
    for path, target in bar:
        image = read_image(path)
        y = deblur(model, to_network(image).to(device), spec.backbone, tile=args.tile,
                   overlap=args.overlap)
        result = from_network(y, image)
        write_image(target, result)
        alpha = ", alpha kept" if result.has_alpha else ""
        bar.write(f"wrote {target} ({result.describe()}{alpha}) from {path}")
    return 0


# -- calibrate --------------------------------------------------------------------------
def _calibrate_parser(sub) -> None:
    from sp_adapter.train.calibrate import DEFAULT_STRENGTHS

    p = sub.add_parser("calibrate", help="choose the prior's strength on held-out photos")
    _add_model_source(p)
    p.add_argument("--blur", default="severe", choices=["severe", "mild"],
                   help="synthetic blur of the held-out crops (as the model trained on)")
    p.add_argument("--crop", type=int, default=128, help="held-out crop side in pixels")
    p.add_argument("--crops", type=int, default=48, help="number of held-out crops")
    p.add_argument("--seed", type=int, default=1000, help="seed of the held-out draw")
    p.add_argument("--strengths", nargs="+", type=float, default=list(DEFAULT_STRENGTHS),
                   metavar="S", help="strengths to try (1: the model as trained)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--save", action="store_true",
                   help="record the best strength beside the checkpoint "
                        "(step_N.strength.json): eval and deblur then use it")
    _add_common(p)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sp_adapter.attach.state import is_wrapped
    from sp_adapter.data import blur_preset, grey_photos
    from sp_adapter.train import calibrate_strength, held_out_set
    from sp_adapter.train.distributed import DistInfo
    from sp_adapter.train.trainer import resolve_device

    for value, flag, what in ((args.crop, "--crop", "the crop side in pixels"),
                              (args.crops, "--crops", "the number of held-out crops"),
                              (args.batch, "--batch", "crops per batch")):
        _require_positive(value, flag, what)
    device = resolve_device(args.device, DistInfo())
    model, spec, info = _load_trained(args.run_dir or args.checkpoint)
    if not is_wrapped(model):
        raise CLIError("calibrate needs a model trained with the prior; this one "
                         "has none")
    trained_on = set((info.get("data_options") or {}).get("photos") or ())
    if trained_on & set(grey_photos()):
        raise CLIError(f"the model trained on {sorted(trained_on & set(grey_photos()))}"
                         ", which the held-out crops would use; calibrate it from Python on "
                         "other held-out images (sp_adapter.train.calibrate_strength)")
    model.to(device)
    data = held_out_set(args.crop, blur_preset(args.blur), args.crops, args.seed)
    result = calibrate_strength(model, data, spec.backbone, args.strengths, device=device,
                                batch_size=args.batch)
    print(f"model: {info['path']} (step {info.get('step')}, {spec.backbone})")
    print(f"held-out: {result.count} crops of {args.crop} px from {', '.join(data.photos)} "
          f"({args.blur} blur, seed {args.seed})")
    for strength, score in zip(result.strengths, result.psnr, strict=True):
        mark = "  <- best" if strength == result.best else ""
        print(f"strength {strength:g}: PSNR {score:.3f} dB{mark}")
    if args.save:
        from sp_adapter.train.strength_file import save_strength

        saved = save_strength(info["path"], result, {
            "photos": list(data.photos), "crop": args.crop, "crops": result.count,
            "blur": args.blur, "seed": args.seed})
        print(f"saved: {saved} (eval and deblur load strength {result.best:g}; "
              "--prior-strength overrides it)")
    else:
        print(f"use: --prior-strength {result.best:g} (eval, deblur), --save to record it, "
              f"or sp_adapter.set_prior_strength(model, {result.best:g})")
    return 0


# -- demo -------------------------------------------------------------------------------
def _demo_parser(sub) -> None:
    from sp_adapter.train.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser("demo", help="offline: UNet with vs without the prior, writes a report")
    p.add_argument("--out", default=d.out, help="report folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--steps", type=int, default=d.steps,
                   help="training steps of each arm in all (shared pre-training included)")
    p.add_argument("--protocol", default=d.protocol, choices=["finetune", "scratch"])
    p.add_argument("--arm-fraction", type=float, default=d.arm_fraction,
                   help="fine-tuning: share of --steps trained after the split")
    p.add_argument("--batch", type=int, default=d.batch_size)
    p.add_argument("--crop", type=int, default=d.crop, help="training crop side")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--beta", type=float, default=d.beta)
    p.add_argument("--length", type=int, default=d.train_length,
                   help="training samples per epoch")
    p.add_argument("--blur", default=d.blur, choices=["severe", "mild"])
    p.add_argument("--test-crop", type=int, default=d.test_crop)
    p.add_argument("--test-crops-per-photo", type=int, default=d.test_crops_per_photo)
    p.add_argument("--width", type=int, default=d.width, help="UNet width")
    p.add_argument("--student", default=d.student, choices=["teacher", "small"])
    p.add_argument("--student-steps", type=int, default=d.student_steps,
                   help="HCL pre-training steps of the student (none with --no-hcl)")
    _add_teacher(p, d.teacher)
    p.add_argument("--teacher-levels", nargs="+", type=int, default=d.teacher_levels,
                   metavar="INDEX", help="the teacher's feature levels, finest first")
    hcl = p.add_mutually_exclusive_group()
    hcl.add_argument("--hcl", dest="hcl", action="store_true", default=d.hcl,
                     help="distil the prior from the teacher (Table 4 Net6)")
    hcl.add_argument("--no-hcl", dest="hcl", action="store_false",
                     help="no distillation (Table 4 Net0*)")
    _add_prior_kernel_size(p, d.prior_kernel_size)
    p.add_argument("--embedding-lr-scale", type=float, default=d.embedding_lr_scale,
                   help="learning-rate factor of MLA/SAT in the +SP arm")
    p.add_argument("--grids", type=int, default=None, help="pictures for the first N test crops")
    p.add_argument("--seed", type=int, default=d.seed)
    _add_common(p)


def cmd_demo(args: argparse.Namespace, command: str) -> int:
    from sp_adapter.extras import require_demo_extra
    from sp_adapter.train.demo import DemoConfig, run_demo

    require_demo_extra("the demo")  # before any output
    _require_positive(args.width, "--width", "the UNet's channels")
    _check_teacher_levels(args.teacher_levels, args.teacher)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"the report folder {out} is not empty; pass --overwrite to replace the "
                       "demo's files in it, or choose another folder with --out")
    cfg = DemoConfig(
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
    shared, arm = cfg.split()
    print(f"demo: UNet vs UNet+SP, {cfg.protocol} protocol, {shared} shared + {arm} steps per "
          f"arm, batch {cfg.batch_size}, {cfg.crop} px crops, {cfg.blur} blur -> {cfg.out}")
    results = run_demo(cfg, command)
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


# -- entry point ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sp-adapter", description="Semantic prior for deblurring networks: train, "
        "evaluate, deblur, and an offline demo.")
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    _train_parser(sub)
    _eval_parser(sub)
    _deblur_parser(sub)
    _calibrate_parser(sub)
    cli_distill.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sp-adapter`` console script."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    handlers = {"train": cmd_train, "eval": cmd_eval, "deblur": cmd_deblur,
                "calibrate": cmd_calibrate, "distill": cli_distill.run}
    try:
        if args.command == "demo":
            return cmd_demo(args, _command_line(argv))
        return handlers[args.command](args)
    except (SPAdapterError, FileNotFoundError, ValueError) as err:
        if os.environ.get("SP_ADAPTER_DEBUG") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
