"""Quality at equal budget: base vs +SP, the Table 4 ablations and a widened control.

The protocol (``--protocol finetune``): shared base steps of the bare backbone, then every
arm (``quality_arms.py``) trains its own steps from those weights on identical batches;
seeds change the initialisation, the training samples and the data order, and the spread
over seeds is the noise of the comparison. ``quality_report.py`` writes the tables,
``quality_merge.py`` joins runs made in parallel processes (``--merge``).

    python benchmarks/quality.py --variants Net0 'Net0*' --seeds 0 1 2 --blur mild \
        --pretrain-steps 300 --steps 300 --batch 4 --crop 96 --lr 1e-3 \
        --teacher-levels 0 1 2 --options width=16 --test-crops-per-photo 8
    python benchmarks/quality.py --merge a.json b.json 'c.json#Net0' --tag merged

Writes ``quality_<backbone>_<tag>.md`` and ``.json`` into ``--out`` (default: a scratch
folder, ``benchmarks/scratch.py``; ``--out benchmarks/results`` for the record), each opening
with its exact command. The published results and their commands: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from base_store import BaseStore
from quality_arms import (
    ALL,
    CONTROL,
    PRIOR_TRAIN_OPTIONS,
    VARIANTS,
    build_arms,
    parse_options,
    parse_prior_options,
    teacher_spec,
    variant_config,
)
from quality_merge import merge
from quality_report import photo_means, report
from scratch import OUT_HELP, scratch

from sp_adapter.attach.wrap import wrap
from sp_adapter.data import SyntheticBlurDataset, blur_preset
from sp_adapter.files.atomic import write_atomic
from sp_adapter.prior.config import WHEEL_TEACHERS, TeacherSpec
from sp_adapter.prior.teacher import load_teacher
from sp_adapter.train import Arm, TrainConfig, backbone_spec, count_parameters, run_arms
from sp_adapter.train.control import matched_width
from sp_adapter.train.evaluate import evaluate

PROBE_SEED = 999_983  # --train-probe's crops and kernels: no training seed draws them


def test_crop(text: str) -> int | None:
    """``--test-crop``: a crop side in px, or ``whole`` (None: whole test photos)."""
    if text == "whole":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a crop side in px or 'whole', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a crop side must be positive, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arms = parser.add_argument_group(
        "arms", "the backbone, the variants and seeds, and what every prior variant shares")
    arms.add_argument("--backbone", default="unet")
    arms.add_argument("--options", nargs="*", default=[], help="backbone options key=value")
    arms.add_argument("--variants", nargs="+", default=ALL, choices=ALL)
    arms.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    arms.add_argument("--prior-options", nargs="*", default=[], metavar="KEY=VALUE",
                      help="PriorConfig fields set in every prior variant, e.g. "
                           "kernel_size=3 sigma_bound=4 (not the Table 4 switches)")
    arms.add_argument("--teacher-levels", nargs="+", type=int,
                      default=list(TeacherSpec().out_indices), metavar="INDEX",
                      help="the teacher's feature levels, finest first (timm out_indices; "
                           "for EfficientNet-Lite0 0-4 are reductions 2, 4, 8, 16, 32)")
    arms.add_argument("--teacher", default=TeacherSpec().arch,
                      choices=list(WHEEL_TEACHERS.values()),
                      help="the offline teacher (Lite1 and Lite2 need sp_adapter[teachers])")
    training = parser.add_argument_group(
        "training", "the protocol: shared base steps, then each arm's own steps on the "
        "same batches")
    training.add_argument("--protocol", default="finetune", choices=["finetune", "scratch"])
    training.add_argument("--pretrain-steps", type=int, default=300,
                          help="finetune: shared base steps before the arms")
    training.add_argument("--steps", type=int, default=300, help="training steps of each arm")
    training.add_argument("--student-steps", type=int, default=0,
                          help="student-only HCL distillation steps before joint training "
                               "(variants with HCL)")
    training.add_argument("--batch", type=int, default=8)
    training.add_argument("--crop", type=int, default=64)
    training.add_argument("--lr", type=float, default=2e-4)
    training.add_argument("--beta", type=float, default=0.1)
    training.add_argument("--embedding-lr-scale", type=float, default=1.0,
                          help="learning-rate factor of MLA/SAT in the prior arms")
    training.add_argument("--student-lr-scale", type=float, default=1.0,
                          help="learning-rate factor of the student in the prior arms' joint "
                               "training (0 freezes it after its pre-training)")
    training.add_argument("--backbone-lr-scale", type=float, default=1.0,
                          help="learning-rate factor of the backbone's own layers in the prior "
                               "arms (0 freezes them: only the prior trains); the bare arms "
                               "train at the full rate")
    training.add_argument("--arm-lr", type=float, default=None,
                          help="peak learning rate of every arm's own steps (default: --lr); "
                               "the shared base keeps --lr")
    training.add_argument("--length", type=int, default=1000, help="training samples per epoch")
    training.add_argument("--blur", default="severe", choices=["severe", "mild"])
    training.add_argument("--augment", action="store_true",
                          help="training crops also rescaled (0.5-1) and turned by multiples "
                               "of 90 degrees (SyntheticBlurDataset(augment=True))")
    training.add_argument("--train-photos", nargs="+", default=None, metavar="NAME",
                          help="the photos the arms train on (default: the built-in "
                               "training photos); training or extra (greyscale or colour) "
                               "photos, never test photos (SyntheticBlurDataset(photos=...)); "
                               "the --train-probe crops stay on the built-in training photos")
    scoring = parser.add_argument_group(
        "scoring", "the test set, and what else each arm is scored on")
    scoring.add_argument("--test-crop", type=test_crop, default=128,
                         help="side of the square test crops in px, or 'whole': the whole "
                              "test photos less the blur margin, scored one at a time")
    scoring.add_argument("--test-crops-per-photo", type=int, default=16)
    scoring.add_argument("--test-seed", type=int, default=0,
                         help="seed of the test set's crops and kernels (default 0, the "
                              "benchmark test set; another seed draws a fresh test set of "
                              "the same photos, to check a setting chosen on seed 0)")
    scoring.add_argument("--train-probe", type=int, default=0, metavar="K",
                         help="also score each arm on K fixed crops of the training photos "
                              "(fresh kernels): a prior that gains more there than on the "
                              "test photos fits the photos it trained on")
    scoring.add_argument("--eval-every", type=int, default=0,
                         help="also score every arm on the test set every N of its steps "
                              "(a PSNR trajectory along one run, with the mean losses in "
                              "between in the JSON rows; 0: at the end only)")
    run_group = parser.add_argument_group(
        "run", "where and how the runs go, and merging finished runs")
    run_group.add_argument("--base-store", default=None, metavar="DIR",
                           help="finetune: keep each seed's shared base in DIR and read it "
                                "from there in later runs of the same settings (other "
                                "variants or prior options) instead of training it again; "
                                "empty DIR after changing the training code")
    run_group.add_argument("--run-root", default=None, metavar="DIR",
                           help="write each arm's run (log, final checkpoint) to "
                                "DIR/seed<S>/<variant>, to look at the trained arms later "
                                "(benchmarks/prior_errors.py)")
    run_group.add_argument("--device", default="auto")
    run_group.add_argument("--workers", type=int, default=0,
                           help="DataLoader workers per process (GPU runs: synthesising the "
                                "blurred crops on the main thread starves the GPU)")
    run_group.add_argument("--threads", type=int, default=None)
    run_group.add_argument("--out", default=str(scratch()), help=OUT_HELP)
    run_group.add_argument("--tag", default=None, help="file name tag (default: a timestamp)")
    run_group.add_argument("--no-progress", action="store_true")
    run_group.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                           help="no training: one table from the result files of runs that "
                                "differ only in their seeds (seeds run in parallel processes) "
                                "or variants; FILE#Net0,Net3 takes only those variants' rows")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and score every variant for every seed; the per-seed rows and the context."""
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = backbone_spec(args.backbone)
    options = parse_options(args.options)
    prior_options = parse_prior_options(args.prior_options)
    blur = blur_preset(args.blur)
    test = SyntheticBlurDataset("test", crop=args.test_crop, blur=blur, seed=args.test_seed,
                                crops_per_photo=args.test_crops_per_photo, return_key=True)
    probe = None
    if args.train_probe and args.test_crop is None:
        raise SystemExit("--train-probe scores crops of the training photos and needs a "
                         "--test-crop size, not 'whole'")
    if args.train_probe:  # the same crops for every seed and arm
        probe = SyntheticBlurDataset("train", crop=args.test_crop, length=args.train_probe,
                                     blur=blur, seed=PROBE_SEED, return_key=True,
                                     min_detail=test.min_detail)
    needs_teacher = any(VARIANTS.get(n) is not None for n in args.variants) or \
        CONTROL in args.variants
    spec_of_teacher = teacher_spec(args.teacher_levels, args.teacher)
    teacher = load_teacher(spec_of_teacher) if needs_teacher else None

    control, control_note = None, ""
    if CONTROL in args.variants:
        if spec.name != "unet":
            control_note = f"{CONTROL} skipped: width matching is implemented for the UNet only"
        else:
            torch.manual_seed(0)
            target = count_parameters(wrap(spec.build(**options), teacher=teacher,
                                           config=variant_config("Net6", prior_options,
                                                                 spec_of_teacher)))
            width, params = matched_width(target, options.get("blocks", 2))
            # fine-tuning: widened from the shared base, starting (as Net6 does) from its
            # exact output
            control = Arm(CONTROL, options={"width": width},
                          widen_base=args.protocol == "finetune" and args.pretrain_steps > 0)
            control_note = (f"{CONTROL}: UNet width {width} ({params:,} parameters) against "
                            f"{target:,} for Net6" + (", widened from the shared base (its "
                                                      "exact output at the start)"
                                                      if control.widen_base else ""))

    eval_batch = 8 if args.test_crop else 1  # whole photos differ in size
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch, lr=args.lr, alpha=0.0, perceptual="none",
        beta=args.beta, device=args.device, num_workers=args.workers,
        progress=not args.no_progress,
        val_every=args.eval_every, log_every=args.eval_every,
        val_batch_size=eval_batch,
    )
    store = None
    if args.base_store:  # what decides the training stream besides seed and batch size
        store = BaseStore(Path(args.base_store), {
            "dataset": "SyntheticBlurDataset/train", "crop": args.crop, "length": args.length,
            "blur": args.blur, **({"augment": True} if args.augment else {}),
            **({"photos": args.train_photos} if args.train_photos else {})})
    runs: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        train = SyntheticBlurDataset("train", crop=args.crop, length=args.length, blur=blur,
                                     seed=seed, augment=args.augment,
                                     photos=args.train_photos)
        arms = build_arms(args.variants, args.student_steps, control,
                          {k: getattr(args, k) for k in PRIOR_TRAIN_OPTIONS}, prior_options,
                          spec_of_teacher, args.arm_lr)
        results = run_arms(
            arms, train, test, replace(config, seed=seed), backbone=spec, options=options,
            protocol=args.protocol, pretrain_steps=args.pretrain_steps, arm_steps=args.steps,
            teacher=teacher, val_data=test if args.eval_every else None, base_store=store,
            eval_batch_size=eval_batch,
            run_root=Path(args.run_root) / f"seed{seed}" if args.run_root else None,
        )
        for r in results:
            row = {"seed": seed, **r.summary()}
            if r.evaluation is not None:
                row["photo_psnr"] = photo_means(r.evaluation.per_image)
                row["image_psnr"] = {str(image["key"]): float(image["psnr"])
                                     for image in r.evaluation.per_image}
            if probe is not None:
                row["train_probe_psnr"] = evaluate(
                    r.model, probe, spec, device=next(r.model.parameters()).device).psnr
            if args.eval_every:
                row["trajectory"] = trajectory(r.history)
                row["losses"] = loss_trajectory(r.history)
            runs.setdefault(r.name, []).append(row)
        print(f"seed {seed}: " + ", ".join(f"{r.name} {r.evaluation.psnr:.3f}"
                                           for r in results if r.evaluation), flush=True)
    return {"runs": runs, "backbone": spec.name, "control": control_note,
            "test_count": len(test), "test_min_detail": test.min_detail,
            "seconds": time.perf_counter() - started,
            "machine": machine(args.device)}


def machine(device: str) -> str:
    """The processor (and its kernels), torch, threads, and the GPU where one trained."""
    text = (f"{platform.machine()} {platform.system()} "
            f"({torch.backends.cpu.get_cpu_capability()} kernels), "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if device != "cpu" and torch.cuda.is_available():
        index = torch.device(device).index if device.startswith("cuda:") else None
        text += f", {torch.cuda.get_device_name(index)} (CUDA {torch.version.cuda})"
    return text


def trajectory(history: list[dict[str, Any]]) -> list[list[float]]:
    """``[arm step, test PSNR]`` of every validation in an arm's history."""
    return [[entry["step"], entry["val_psnr"]] for entry in history if "val_psnr" in entry]


def loss_trajectory(history: list[dict[str, Any]]) -> list[list[float]]:
    """``[arm step, reconstruction loss, prior (HCL, Eq. 4) loss]``, each the mean over the
    training steps since the previous entry (the ones logged with ``--eval-every``)."""
    return [[entry["step"], entry["reconstruction"], entry["prior"]]
            for entry in history if "reconstruction" in entry]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = " ".join(["python", "benchmarks/quality.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    sources = None
    if args.merge:
        out, tag = args.out, args.tag
        args, context, sources = merge(args.merge)
        args.out, args.tag, args.merge = out, tag, None
    else:
        context = run(args)
    text, payload = report(args, context, command, sources)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or time.strftime("%Y%m%d-%H%M%S")
    stem = out / f"quality_{context['backbone']}_{tag}"
    for suffix, content in ((".md", text), (".json", json.dumps(payload, indent=2) + "\n")):
        write_atomic(f"{stem}{suffix}", content.encode("utf-8"))
    print(text)
    print(f"wrote {stem}.md and .json")
    return payload


if __name__ == "__main__":
    main()
