"""Quality at equal budget: base vs +SP and the Table 4 ablations, several seeds.

Every variant of a seed trains on identical batches from identical backbone weights
(``sp_adapter.train.run_arms``); seeds change the initialisation, the training samples
and the data order. The spread over seeds is reported as the noise of the comparison,
and each variant's gain over Net0 as the mean and spread of the per-seed (paired)
differences.

Variants (Table 4 of the paper, plus two controls):

| name       | prior | HCL | CLC | MLA | fusion | student |
|------------|-------|-----|-----|-----|--------|---------|
| Net0       | no    |     |     |     |        |         |
| Net0*      | yes   | no  | yes | yes | SAT    | teacher |
| Net1       | yes   | yes | no  | no  | add    | teacher |
| Net2       | yes   | yes | no  | no  | concat | teacher |
| Net3       | yes   | yes | no  | no  | SAT    | teacher |
| Net4       | yes   | yes | yes | no  | SAT    | teacher |
| Net5       | yes   | yes | no  | yes | SAT    | teacher |
| Net6       | yes   | yes | yes | yes | SAT    | teacher |
| Net6-small | Net6 with the small random student instead of the teacher-initialised one |
| Net0-wide  | the bare UNet widened to Net6's parameter count (does capacity alone help?) |

    python benchmarks/quality.py                                  # UNet, all variants, 3 seeds
    python benchmarks/quality.py --variants Net0 Net6 --seeds 0 1 2 3 4 --steps 800 \
        --protocol finetune --pretrain-steps 1500 --student-steps 200

Writes ``benchmarks/results/quality_<backbone>_<tag>.md`` and ``.json`` (with the exact
command). Seeds, and variants, can run in parallel processes (``--seeds 0``, ``--seeds 1``,
``--variants Net0-wide``, ... with their own ``--tag``) and be merged into one table
without training (runs may differ in options their arms did not read, such as
``--student-steps`` for the bare UNet):

    python benchmarks/quality.py --merge results/quality_unet_a.json results/quality_unet_b.json \
        --tag merged

``FILE#Net0`` takes only that file's Net0 rows, so one run's Net0 pairs with another's
prior variant trained with other options (``--student-lr-scale 0.1``, say). The widened
control merges with prior arms whose ``--prior-options`` differ only in options that
size nothing (``strength_jitter``). Arms whose own steps trained at other rates
(``--arm-lr``, a prior arm's lr factors) merge too, each variant's rows sharing one
recipe, and the table names each variant's (a matched-rate control, say). Pair runs of
one machine: rows are bit-identical only on the same CPU kernels (newer result files
name them); on another machine Net0 of the same seeds and settings moved by +0.002 to
+0.007 dB.

``--base-store DIR`` keeps each seed's shared base (the fine-tuning protocol's first
steps, the same for every variant) and reads it back in later runs of the same settings:
a second variant's run then costs its arm alone, with the same scores.

``--eval-every N`` also scores each arm every N of its steps: a second table follows the
gain along one run, and each JSON row gets the mean reconstruction and prior (HCL) losses
of the steps in between. ``--train-probe K`` also scores each arm on K fixed crops of the
training photos (fresh kernels), with each variant's gain there over Net0: set against the
test gain, it shows how much of a gain is the training photos' own.

Every table is followed by the gain per test photo (each row keeps its per-photo PSNR),
so a mean gain carried by one or two photos shows. ``--test-crop`` and
``--test-crops-per-photo`` choose the test set (``--test-crop whole``: the whole test
photos less the blur margin, as deblurring benchmarks score full images, with
``--test-crops-per-photo`` kernels each); runs of the same seeds and training options
train bit-identical arms, so two test sets score the same models. ``--test-seed`` draws
other crops and kernels of the same test photos: a setting chosen by its score on the
test set of seed 0 is checked on a draw that took no part in choosing it. Each row also
keeps every test image's PSNR, and a last table gives each gain's standard error over the
test images and over the photos: the noise that the choice of test crops brings, which a
fresh draw moves and the seed spread does not show.

``--run-root DIR`` keeps each arm's final checkpoint (``DIR/seed<S>/<variant>``), which
``benchmarks/prior_errors.py`` reads back to show what a prior changes in Net0's images
and to score the same arms on other test draws. ``--arm-loss mse`` trains every arm's own
steps on the mean squared error instead of the backbone's loss (the shared base keeps
its loss); ``--arm-lr 1e-4`` trains every arm's own steps at that peak learning rate
(the shared base keeps ``--lr``): the bare arms at the rate a prior arm gives its
backbone with ``--backbone-lr-scale 0.1``.

On a GPU, ``--workers N`` gives each process DataLoader workers to synthesise the blurred
crops; ``benchmarks/gpu_scratch.py`` runs every variant and seed at once on one GPU,
``benchmarks/gpu_sweep.py`` every setting of a settings file (a screen of this protocol).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sp_adapter.atomic import write_atomic
from sp_adapter.config import WHEEL_TEACHERS, PriorConfig, TeacherSpec, teacher_at_levels
from sp_adapter.data import TEST_PHOTOS, SyntheticBlurDataset, blur_preset
from sp_adapter.data.synthetic import TEST_MIN_DETAIL
from sp_adapter.losses import BACKBONE_LOSSES
from sp_adapter.teacher import load_teacher
from sp_adapter.train import (
    Arm,
    BaseStore,
    TrainConfig,
    backbone_spec,
    count_parameters,
    run_arms,
)
from sp_adapter.train.evaluate import evaluate
from sp_adapter.train.report import markdown_table
from sp_adapter.wrap import wrap

RESULTS = Path(__file__).parent / "results"
PROBE_SEED = 999_983  # --train-probe's crops and kernels: no training seed draws them

VARIANTS: dict[str, PriorConfig | None] = {
    "Net0": None,
    "Net0*": PriorConfig(hcl=False),
    "Net1": PriorConfig(clc=False, mla=False, fusion="add"),
    "Net2": PriorConfig(clc=False, mla=False, fusion="concat"),
    "Net3": PriorConfig(clc=False, mla=False, fusion="sat"),
    "Net4": PriorConfig(clc=True, mla=False, fusion="sat"),
    "Net5": PriorConfig(clc=False, mla=True, fusion="sat"),
    "Net6": PriorConfig(),
    "Net6-small": PriorConfig(student="small"),
}
CONTROL = "Net0-wide"
ALL = [*VARIANTS, CONTROL]


def parse_options(items: list[str], flag: str = "--options") -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when possible (``num_res=1``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# PriorConfig fields that define the Table 4 variants, so --prior-options may not set them
VARIANT_SWITCHES = ("hcl", "clc", "mla", "fusion", "student")


def parse_prior_options(items: list[str]) -> dict[str, Any]:
    """``--prior-options``: PriorConfig fields set in every prior variant (``kernel_size=3``,
    ``sigma_bound=4``); list values become tuples (``pool_sizes=[1,2]``)."""
    options = parse_options(items, "--prior-options")
    settable = sorted(set(PriorConfig.__dataclass_fields__) - {"teacher", *VARIANT_SWITCHES})
    wrong = sorted(set(options) - set(settable))
    if wrong:
        raise SystemExit(f"--prior-options cannot set {wrong}: the variants set "
                         f"{list(VARIANT_SWITCHES)} and --teacher-levels the teacher; "
                         f"settable: {settable}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        PriorConfig(**options)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--prior-options: {error}") from None
    return options


def teacher_spec(levels: list[int] | None = None,
                 arch: str = "tf_efficientnet_lite0") -> TeacherSpec:
    """The offline teacher ``arch`` (``--teacher``) with feature levels ``levels``
    (``--teacher-levels``; timm's ``out_indices``, finest first; ``None``: the default
    levels)."""
    try:
        return teacher_at_levels(levels, arch)
    except ValueError as error:
        raise SystemExit(f"--teacher / --teacher-levels: {error}") from None


def variant_config(
    name: str, prior_options: dict[str, Any] | None = None, teacher: TeacherSpec | None = None,
) -> PriorConfig | None:
    """The prior of variant ``name`` with ``prior_options`` and the ``teacher`` applied
    (``None``: no prior)."""
    prior = VARIANTS[name]
    if prior is None:
        return None
    return replace(prior, **(prior_options or {}), **({"teacher": teacher} if teacher else {}))


def matched_width(target: int, blocks: int) -> tuple[int, int]:
    """The UNet width whose parameter count is closest to ``target``."""
    from sp_adapter.backbones.unet import UNet

    def params(width: int) -> int:
        return count_parameters(UNet(width, blocks))

    low, high = 1, 8
    while params(high) < target:  # the count grows with the width: bracket, then bisect
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if params(mid) < target else (low, mid)
    best = min((low, high), key=lambda w: abs(params(w) - target))
    return best, params(best)


def describe(name: str) -> list[str]:
    if name == CONTROL:
        return ["no", "", "", "", "", "wider"]
    cfg = VARIANTS[name]
    if cfg is None:
        return ["no", "", "", "", "", ""]
    yes = {True: "yes", False: "no"}
    return ["yes", yes[cfg.hcl], yes[cfg.clc], yes[cfg.mla], cfg.fusion, cfg.student]


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


# TrainConfig fields that the prior arms take from the command line (the bare arms do not)
PRIOR_TRAIN_OPTIONS = ("embedding_lr_scale", "student_lr_scale", "backbone_lr_scale")


def build_arms(
    names: list[str], student_steps: int, control: Arm | None,
    prior_train: dict[str, float] | None = None,
    prior_options: dict[str, Any] | None = None,
    teacher: TeacherSpec | None = None,
    arm_loss: str | None = None,
    arm_lr: float | None = None,
) -> list[Arm]:
    """The arms of ``names``; ``prior_train`` (``PRIOR_TRAIN_OPTIONS``) reaches the prior
    arms' own steps only, ``prior_options`` (``--prior-options``) and ``teacher``
    (``--teacher-levels``) their priors, ``arm_loss`` (``--arm-loss``) and ``arm_lr``
    (``--arm-lr``) every arm's own steps (not the shared base's)."""
    own_steps: dict[str, Any] = {"loss": arm_loss} if arm_loss else {}
    if arm_lr is not None:
        own_steps["lr"] = arm_lr
    arms = []
    for name in names:
        if name == CONTROL:
            if control is not None:
                arms.append(replace(control, train={**control.train, **own_steps}))
            continue
        prior = variant_config(name, prior_options, teacher)
        # student pre-training is HCL distillation: the variant without HCL gets none
        arms.append(Arm(
            name, prior=prior, student_steps=student_steps if prior and prior.hcl else 0,
            train={**(prior_train or {}), **own_steps} if prior else dict(own_steps),
        ))
    return arms


# options of an arm's own steps (its peak lr, a prior arm's lr factors): merged files may
# differ in them where each variant's rows agree, and the table then names each variant's
OWN_STEP_OPTIONS = ("arm_lr", *PRIOR_TRAIN_OPTIONS)
OWN_STEP_LABELS = {"embedding_lr_scale": "MLA/SAT", "student_lr_scale": "student",
                   "backbone_lr_scale": "backbone"}


def own_step_options(options: dict[str, Any], name: str) -> dict[str, Any]:
    """How variant ``name`` of a run with ``options`` trained its own steps: its peak lr
    (``--arm-lr``, else ``--lr``) and, for a prior variant, its lr factors."""
    lr = options["arm_lr"] if options.get("arm_lr") is not None else options["lr"]
    factors = ({k: options.get(k, 1.0) for k in PRIOR_TRAIN_OPTIONS}
               if VARIANTS.get(name) is not None else {})
    return {"arm_lr": lr, **factors}


def describe_own_steps(own: dict[str, dict[str, Any]]) -> str:
    """``{"Net0": {"arm_lr": 1e-4}, ...}`` -> "Net0: lr 0.0001; Net0*: lr 0.001, backbone
    x0.1" (variants trained alike share one entry)."""
    groups: dict[str, list[str]] = {}
    for name, options in own.items():
        text = f"lr {options['arm_lr']:g}" + "".join(
            f", {OWN_STEP_LABELS[k]} x{options[k]:g}" for k in PRIOR_TRAIN_OPTIONS
            if options.get(k, 1.0) != 1.0)
        groups.setdefault(text, []).append(name)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in groups.items())


# options that may differ between runs merged into one table: where they write, how fast
# they ran, which seeds and variants they trained, whether they also scored the arms
# along the run or on training photos, whether they read their shared bases from a store
# and how many DataLoader workers made their batches (these leave the scores unchanged;
# tests check it)
MERGE_FREE = {"seeds", "variants", "tag", "out", "threads", "no_progress", "device", "merge",
              "eval_every", "base_store", "workers", "train_probe", "run_root"}
# options added after result files were first written, with the value that gives the
# behaviour of the runs made before them
ADDED_LATER = {"student_lr_scale": 1.0, "backbone_lr_scale": 1.0, "prior_options": [],
               "augment": False,
               "train_photos": None, "test_seed": 0,
               "teacher_levels": list(TeacherSpec().out_indices),
               "teacher": TeacherSpec().arch, "arm_loss": None, "arm_lr": None}


# PriorConfig fields that change no parameter count: the widened control, as wide as Net6
# built with the prior options, merges with prior arms trained with any value of them
WIDTH_FREE_PRIOR_OPTIONS = ("strength_jitter",)


def width_prior_options(items: list[str] | None) -> list[str]:
    """The ``--prior-options`` entries that size Net6 (and so the control)."""
    return [item for item in items or []
            if item.partition("=")[0] not in WIDTH_FREE_PRIOR_OPTIONS]


def unused_options(runs: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Options that no arm of a result file read, so it merges with files that set them
    otherwise: an arm without the prior has no prior loss (beta) and no MLA/SAT (yet the
    widened control is as wide as Net6 built with the file's prior options and teacher
    levels), and an arm whose rows record no student pre-training did not read the
    student steps (Net0* of files made before 2026-11-25 did). A test checks that the
    rows equal."""
    unused = set()
    if all(VARIANTS.get(name) is None for name in runs):
        unused |= {"beta", *PRIOR_TRAIN_OPTIONS}
        if CONTROL not in runs:  # the control's width matches Net6 built with these
            unused |= {"prior_options", "teacher_levels", "teacher"}
    if all(row.get("student_steps") == 0 for rows in runs.values() for row in rows):
        unused.add("student_steps")
    return unused


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
    parser.add_argument("--backbone", default="unet")
    parser.add_argument("--options", nargs="*", default=[], help="backbone options key=value")
    parser.add_argument("--variants", nargs="+", default=ALL, choices=ALL)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="training steps of each arm")
    parser.add_argument("--protocol", default="finetune", choices=["finetune", "scratch"])
    parser.add_argument("--pretrain-steps", type=int, default=300,
                        help="finetune: shared base steps before the arms")
    parser.add_argument("--student-steps", type=int, default=0,
                        help="student-only HCL distillation steps before joint training "
                             "(variants with HCL)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--embedding-lr-scale", type=float, default=1.0,
                        help="learning-rate factor of MLA/SAT in the prior arms")
    parser.add_argument("--student-lr-scale", type=float, default=1.0,
                        help="learning-rate factor of the student in the prior arms' joint "
                             "training (0 freezes it after its pre-training)")
    parser.add_argument("--backbone-lr-scale", type=float, default=1.0,
                        help="learning-rate factor of the backbone's own layers in the prior "
                             "arms (0 freezes them: only the prior trains); the bare arms "
                             "train at the full rate")
    parser.add_argument("--arm-lr", type=float, default=None,
                        help="peak learning rate of every arm's own steps (default: --lr); "
                             "the shared base keeps --lr")
    parser.add_argument("--arm-loss", default=None, choices=sorted(BACKBONE_LOSSES),
                        help="reconstruction loss of every arm's own steps (default: the "
                             "backbone's, L1 for the UNet); the shared base keeps it")
    parser.add_argument("--prior-options", nargs="*", default=[], metavar="KEY=VALUE",
                        help="PriorConfig fields set in every prior variant, e.g. "
                             "kernel_size=3 sigma_bound=4 (not the Table 4 switches)")
    parser.add_argument("--teacher-levels", nargs="+", type=int,
                        default=list(TeacherSpec().out_indices), metavar="INDEX",
                        help="the teacher's feature levels, finest first (timm out_indices; "
                             "for EfficientNet-Lite0 0-4 are reductions 2, 4, 8, 16, 32)")
    parser.add_argument("--teacher", default=TeacherSpec().arch,
                        choices=list(WHEEL_TEACHERS.values()),
                        help="the offline teacher (Lite1 and Lite2 need sp_adapter[teachers])")
    parser.add_argument("--length", type=int, default=1000, help="training samples per epoch")
    parser.add_argument("--blur", default="severe", choices=["severe", "mild"])
    parser.add_argument("--augment", action="store_true",
                        help="training crops also rescaled (0.5-1) and turned by multiples "
                             "of 90 degrees (SyntheticBlurDataset(augment=True))")
    parser.add_argument("--train-photos", nargs="+", default=None, metavar="NAME",
                        help="the photos the arms train on (default: the built-in training "
                             "photos); training or extra (greyscale or colour) photos, never test "
                             "photos (SyntheticBlurDataset(photos=...)); the --train-probe "
                             "crops stay on the built-in training photos")
    parser.add_argument("--test-crop", type=test_crop, default=128,
                        help="side of the square test crops in px, or 'whole': the whole "
                             "test photos less the blur margin, scored one at a time")
    parser.add_argument("--test-crops-per-photo", type=int, default=16)
    parser.add_argument("--test-seed", type=int, default=0,
                        help="seed of the test set's crops and kernels (default 0, the "
                             "benchmark test set; another seed draws a fresh test set of "
                             "the same photos, to check a setting chosen on seed 0)")
    parser.add_argument("--test-min-detail", type=float, default=None,
                        help="least detail of a test crop (default: the dataset's, "
                             "0.005; 0 keeps flat crops, the test set before 2026-11-24)")
    parser.add_argument("--train-probe", type=int, default=0, metavar="K",
                        help="also score each arm on K fixed crops of the training photos "
                             "(fresh kernels): a prior that gains more there than on the "
                             "test photos fits the photos it trained on")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also score every arm on the test set every N of its steps "
                             "(a PSNR trajectory along one run, with the mean losses in "
                             "between in the JSON rows; 0: at the end only)")
    parser.add_argument("--base-store", default=None, metavar="DIR",
                        help="finetune: keep each seed's shared base in DIR and read it "
                             "from there in later runs of the same settings (other "
                             "variants or prior options) instead of training it again; "
                             "empty DIR after changing the training code")
    parser.add_argument("--run-root", default=None, metavar="DIR",
                        help="write each arm's run (log, final checkpoint) to "
                             "DIR/seed<S>/<variant>, to look at the trained arms later "
                             "(benchmarks/prior_errors.py)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers per process (GPU runs: synthesising the "
                             "blurred crops on the main thread starves the GPU)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--tag", default=None, help="file name tag (default: a timestamp)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
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
                                crops_per_photo=args.test_crops_per_photo, return_key=True,
                                min_detail=args.test_min_detail)
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
            control = Arm(CONTROL, options={"width": width})
            control_note = (f"{CONTROL}: UNet width {width} ({params:,} parameters) against "
                            f"{target:,} for Net6")

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
                          spec_of_teacher, args.arm_loss, args.arm_lr)
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


def photo_means(per_image: list[dict[str, Any]], score: str = "psnr") -> dict[str, float]:
    """Mean ``score`` per test photo, from per-image rows keyed ``"photo/crop"``."""
    by_photo: dict[str, list[float]] = {}
    for row in per_image:
        by_photo.setdefault(str(row["key"]).split("/")[0], []).append(float(row[score]))
    return {photo: statistics.fmean(values) for photo, values in by_photo.items()}


def photo_rows(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Per test photo: Net0's PSNR (mean over seeds) and every other variant's gain over it,
    paired by seed (mean ± std). Both empty when the rows carry no per-photo scores."""
    def of_photo(rows: list[dict[str, Any]], photo: str) -> list[dict[str, Any]]:
        return [{"seed": row["seed"], "psnr": row["photo_psnr"][photo]}
                for row in rows if "photo_psnr" in row]

    base = [row for row in runs.get("Net0", []) if "photo_psnr" in row]
    if not base:
        return [], []
    others = [name for name in runs if name != "Net0"]
    out = []
    for photo in base[0]["photo_psnr"]:
        reference = of_photo(base, photo)
        mean, _ = mean_std([row["psnr"] for row in reference])
        cells = [photo, f"{mean:.3f}"]
        for name in others:
            _, gain, spread = paired_gain(of_photo(runs[name], photo), reference)
            cells.append("" if gain is None else f"{gain:+.3f} ± {spread:.3f}")
        out.append(cells)
    return others, out


def image_gains(rows: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, float]:
    """Per test image (``"photo/crop"``): the gain over ``reference``, averaged over the
    seeds both scored it in."""
    by_seed = {row["seed"]: row["image_psnr"] for row in reference if "image_psnr" in row}
    differences: dict[str, list[float]] = {}
    for row in rows:
        if "image_psnr" in row and row["seed"] in by_seed:
            for key, psnr in row["image_psnr"].items():
                differences.setdefault(key, []).append(psnr - by_seed[row["seed"]][key])
    return {key: statistics.fmean(values) for key, values in differences.items()}


def image_spread(gains: dict[str, float]) -> dict[str, Any]:
    """How much the mean gain rests on which test images were drawn: the standard error
    over images (``std / sqrt(n)``), the same over the photos' mean gains (crops of one
    photo are alike, so this one is the more honest), and how many images gained."""
    values = list(gains.values())
    by_photo: dict[str, list[float]] = {}
    for key, gain in gains.items():
        by_photo.setdefault(key.split("/")[0], []).append(gain)
    photo_means = [statistics.fmean(v) for v in by_photo.values()]

    def standard_error(xs: list[float]) -> float | None:
        return statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None

    return {"count": len(values), "mean": statistics.fmean(values),
            "se_images": standard_error(values), "photos": len(photo_means),
            "se_photos": standard_error(photo_means),
            "improved": sum(gain > 0 for gain in values)}


def image_rows(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[list[str]]]:
    """Each variant's gain over Net0 (and a prior variant's over the widened control) with
    the test images' spread, from the rows' per-image scores (none: both empty)."""
    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    spreads, rows = {}, []
    for name, seeds in runs.items():
        references = [] if name == "Net0" or "Net0" not in runs else ["Net0"]
        if CONTROL in runs and VARIANTS.get(name) is not None:
            references.append(CONTROL)
        for reference in references:
            gains = image_gains(seeds, runs[reference])
            if not gains:
                continue
            spread = image_spread(gains)
            spreads.setdefault(name, {})[reference] = spread
            rows.append([name, reference, str(spread["count"]), f"{spread['mean']:+.3f}",
                         cell(spread["se_images"]), cell(spread["se_photos"]),
                         f"{spread['improved']}/{spread['count']}"])
    return spreads, rows


def trajectory(history: list[dict[str, Any]]) -> list[list[float]]:
    """``[arm step, test PSNR]`` of every validation in an arm's history."""
    return [[entry["step"], entry["val_psnr"]] for entry in history if "val_psnr" in entry]


def loss_trajectory(history: list[dict[str, Any]]) -> list[list[float]]:
    """``[arm step, reconstruction loss, prior (HCL, Eq. 4) loss]``, each the mean over the
    training steps since the previous entry (the ones logged with ``--eval-every``)."""
    return [[entry["step"], entry["reconstruction"], entry["prior"]]
            for entry in history if "reconstruction" in entry]


def trajectory_rows(
    runs: dict[str, list[dict[str, Any]]],
) -> tuple[list[str], list[list[str]]]:
    """The variants whose rows carry a trajectory, and per arm step each one's PSNR (mean
    over seeds) with its gain over Net0 paired by seed. Both empty when no row does."""
    scores: dict[str, dict[int, dict[int, float]]] = {}  # variant -> step -> seed -> PSNR
    for name, rows in runs.items():
        for row in rows:
            for step, psnr in row.get("trajectory", []):
                scores.setdefault(name, {}).setdefault(int(step), {})[row["seed"]] = psnr
    base = scores.get("Net0", {})
    out = []
    for step in sorted({s for by_step in scores.values() for s in by_step}):
        cells = [str(step)]
        for name in scores:
            by_seed = scores[name].get(step, {})
            if not by_seed:
                cells.append("")
                continue
            mean, _ = mean_std(list(by_seed.values()))
            paired = [v - base[step][seed] for seed, v in by_seed.items()
                      if name != "Net0" and seed in base.get(step, {})]
            if paired:
                gain, spread = mean_std(paired)
                cells.append(f"{mean:.3f} ({gain:+.3f} ± {spread:.3f})")
            else:
                cells.append(f"{mean:.3f}")
        out.append(cells)
    return list(scores), out


def _test_min_detail(path: str, payload: dict[str, Any]) -> float:
    """The test set's ``min_detail`` of a result file (older files carry only the option)."""
    if "test_min_detail" in payload:
        return payload["test_min_detail"]
    if "test_min_detail" not in payload["options"]:
        raise SystemExit(f"{path}: made before --test-min-detail existed; its test set kept "
                         "flat crops and cannot be told apart")
    given = payload["options"]["test_min_detail"]
    return TEST_MIN_DETAIL if given is None else given


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``PATH#Net0,Net0-wide`` -> the file and the variants picked (none: every one). A
    file whose own name holds a ``#`` is taken whole."""
    if "#" in spec and not Path(spec).exists():
        path, _, picked = spec.rpartition("#")
        return path, picked.split(",")
    return spec, []


def read_result(spec: str) -> dict[str, Any]:
    """A result file's payload; ``PATH#Net0,Net0-wide`` keeps only the rows of those
    variants (to pair a file's Net0 with another run's prior variants), see
    :func:`split_spec`."""
    path, names = split_spec(spec)
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    if names:
        missing = [name for name in names if name not in payload["runs"]]
        if missing:
            raise SystemExit(f"{path} has no rows of {missing}; its variants are "
                             f"{list(payload['runs'])}")
        payload["runs"] = {name: payload["runs"][name] for name in names}
        if CONTROL not in names:  # its note on the control's width goes with its rows
            payload["control"] = ""
    return payload


def merge(paths: list[str]) -> tuple[argparse.Namespace, dict[str, Any], list[str]]:
    """The options, rows and commands of result files that differ only in their seeds or
    variants (each variant of a seed comes from one file: its rows do not depend on which
    other variants ran beside it, as every arm trains on the same stream of batches)."""
    payloads = [read_result(p) for p in paths]
    for path, payload in zip(paths, payloads, strict=True):
        payload["test_min_detail"] = _test_min_detail(path, payload)
    options = [{**ADDED_LATER, **payload["options"]} for payload in payloads]
    keys = set().union(*options) - MERGE_FREE  # an option a file lacks counts as None
    used = [keys - unused_options(payload["runs"]) for payload in payloads]
    bare = [all(VARIANTS.get(name) is None for name in payload["runs"]) for payload in payloads]
    # each option is compared with (and the merged table takes) the first run that uses
    # it, a run with a prior before the others
    first = sorted(range(len(paths)), key=lambda i: bare[i])
    source = {k: i for i in reversed(first) for k in used[i]}
    merged = {**options[0], **{k: options[i].get(k) for k, i in source.items()}}

    def agrees(key: str, value: Any, is_bare: bool) -> bool:
        if key == "prior_options" and is_bare:  # the control: only its width must agree
            return width_prior_options(value) == width_prior_options(merged[key])
        return value == merged[key]

    for path, payload, own, uses, is_bare in zip(paths, payloads, options, used, bare,
                                                 strict=True):
        differ = {k: paths[source[k]] for k in sorted(uses - set(OWN_STEP_OPTIONS))
                  if not agrees(k, own.get(k), is_bare)}
        if payload["test_min_detail"] != payloads[0]["test_min_detail"]:
            differ["its test set"] = paths[0]
        if differ:
            raise SystemExit(
                f"{path} differs in {list(differ)} from {', '.join(dict.fromkeys(differ.values()))}"
                "; only runs that differ in their seeds or variants (or in options their "
                "variants do not use) can be merged")
    own_steps = merged_own_steps(paths, payloads, options)
    runs: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, int]] = set()
    for path, payload in zip(paths, payloads, strict=True):
        pairs = {(name, row["seed"]) for name, rows in payload["runs"].items() for row in rows}
        if pairs & seen:
            raise SystemExit(f"{path}: (variant, seed) {sorted(pairs & seen)} appear in two "
                             "files")
        seen |= pairs
        for name, rows in payload["runs"].items():
            runs.setdefault(name, []).extend(rows)
    for rows in runs.values():
        rows.sort(key=lambda row: row["seed"])
    order = {name: i for i, name in enumerate(ALL)}
    runs = dict(sorted(runs.items(), key=lambda item: order.get(item[0], len(ALL))))
    args = argparse.Namespace(**{**merged, "seeds": sorted({seed for _, seed in seen}),
                                 "variants": list(runs)})
    control = next((p["control"] for p in payloads if p["control"]), "")
    context = {
        "runs": runs, "backbone": payloads[0].get("backbone", merged["backbone"]),
        "control": control, "test_count": payloads[0]["test_count"],
        "test_min_detail": payloads[0]["test_min_detail"],
        "seconds": sum(p.get("seconds", float("nan")) for p in payloads),
        "machine": "; ".join(dict.fromkeys(p.get("machine", "not recorded") for p in payloads)),
        **({"own_steps": {name: own_steps[name] for name in runs}} if own_steps else {}),
    }
    return args, context, [p["command"] for p in payloads]


def merged_own_steps(paths: list[str], payloads: list[dict[str, Any]],
                     options: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Each variant's own-step options (:func:`own_step_options`) where the merged
    variants trained their own steps differently (``None`` where they agree). The rows of
    one variant must agree: a variant is one recipe."""
    own: dict[str, tuple[str, dict[str, Any]]] = {}
    for path, payload, opts in zip(paths, payloads, options, strict=True):
        recorded = payload.get("own_steps") or {}  # a merged file of mixed recipes
        for name in payload["runs"]:
            mine = recorded.get(name) or own_step_options(opts, name)
            if name not in own:
                own[name] = (path, mine)
                continue
            first, theirs = own[name]
            differ = [k for k in mine if mine[k] != theirs.get(k)]
            if differ:
                raise SystemExit(
                    f"{path} differs in {differ} from {first} in how its {name} rows trained "
                    f"their own steps; one variant's rows must share how they trained")
    by_variant = {name: mine for name, (_, mine) in own.items()}
    mixed = any(len({opts[k] for opts in by_variant.values() if k in opts}) > 1
                for k in OWN_STEP_OPTIONS)
    return by_variant if mixed else None


def paired_gain(rows: list[dict[str, Any]], reference: list[dict[str, Any]],
                score: str = "psnr") -> tuple[list[float], float | None, float | None]:
    """The per-seed differences of ``score`` of ``rows`` to ``reference`` (seeds both have
    scored), their mean and their std (``None`` when no seed is shared)."""
    by_seed = {row["seed"]: row[score] for row in reference if score in row}
    gains = [row[score] - by_seed[row["seed"]] for row in rows
             if score in row and row["seed"] in by_seed]
    return (gains, *mean_std(gains)) if gains else ([], None, None)


def summarise(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[list[str]]]:
    """Per variant: mean ± std over seeds, the gain over Net0 paired by seed and, where the
    widened control ran, each prior variant's gain over it paired by seed."""
    rows, summary = [], {}
    for name, seeds in runs.items():
        psnr_m, psnr_s = mean_std([r["psnr"] for r in seeds])
        ssim_m, _ = mean_std([r["ssim"] for r in seeds])
        gains, gain_m, gain_s = paired_gain(seeds, runs.get("Net0", []))
        if name == "Net0":
            gain_m = gain_s = None
        secs = statistics.fmean(r["seconds"] + r["student_seconds"] for r in seeds)
        summary[name] = {"psnr_mean": psnr_m, "psnr_std": psnr_s, "ssim_mean": ssim_m,
                         "gain_mean": gain_m, "gain_std": gain_s, "params": seeds[0]["params"],
                         "seconds_mean": secs, "gains": gains}
        probed = [r["train_probe_psnr"] for r in seeds if "train_probe_psnr" in r]
        probe_gains, probe_m, probe_s = paired_gain(seeds, runs.get("Net0", []),
                                                    "train_probe_psnr")
        if probed:
            summary[name].update(train_probe_psnr_mean=statistics.fmean(probed),
                                 train_probe_gains=probe_gains)
            if name != "Net0" and probe_gains:
                summary[name].update(train_probe_gain_mean=probe_m, train_probe_gain_std=probe_s)
        cells = ["" if gain_m is None else f"{gain_m:+.3f} ± {gain_s:.3f}"]
        if CONTROL in runs:
            # only a prior variant is compared with the control widened to its size
            wide, wide_m, wide_s = (paired_gain(seeds, runs[CONTROL])
                                    if VARIANTS.get(name) is not None else ([], None, None))
            summary[name].update(gain_vs_control_mean=wide_m, gain_vs_control_std=wide_s,
                                 gains_vs_control=wide)
            cells.append("" if wide_m is None else f"{wide_m:+.3f} ± {wide_s:.3f}")
        if probing(runs):
            cell = f"{statistics.fmean(probed):.3f}" if probed else ""
            if probed and name != "Net0" and probe_gains:
                cell += f" ({probe_m:+.3f} ± {probe_s:.3f})"
            cells.append(cell)
        rows.append([name, *describe(name), f"{seeds[0]['params']:,}",
                     f"{psnr_m:.3f} ± {psnr_s:.3f}", *cells, f"{ssim_m:.4f}", f"{secs:.1f}"])
    return summary, rows


def probing(runs: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether any row was also scored on training photos (``--train-probe``)."""
    return any("train_probe_psnr" in row for rows in runs.values() for row in rows)


def report(args: argparse.Namespace, context: dict[str, Any], command: str,
           sources: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    """The Markdown text and the JSON payload of a result."""
    runs = context["runs"]
    own_steps = context.get("own_steps")
    summary, rows = summarise(runs)
    table = markdown_table(
        ["variant", "prior", "HCL", "CLC", "MLA", "fusion", "student", "params",
         "PSNR (dB), mean ± std over seeds", "gain vs Net0 (paired)",
         *([f"gain vs {CONTROL} (paired)"] if CONTROL in runs else []),
         *(["training photos: PSNR (gain vs Net0)"] if probing(runs) else []), "SSIM",
         "s / arm"],
        rows)
    if probing(runs):
        table += ("\n\n\"Training photos\": the PSNR on fixed crops of the training photos "
                  "with fresh kernels (`--train-probe`), mean over seeds, and in brackets its "
                  "gain over Net0 paired by seed. A variant that gains more there than on the "
                  "test photos fits the photos it trained on rather than deblurring better.")
    others, photos = photo_rows(runs)
    if photos:
        table += ("\n\nPer test photo: Net0's PSNR (mean over seeds) and each variant's gain "
                  "over it, paired by seed (mean ± std).\n\n"
                  + markdown_table(["test photo", "Net0", *others], photos))
    spreads, images = image_rows(runs)
    if images:
        table += ("\n\nThe test images' spread: each image's gain averaged over the seeds, "
                  "then its mean, the standard error over images and over the photos' mean "
                  "gains (the noise a fresh draw of test crops brings, which the seed "
                  "spread above does not show; crops of one photo are alike, so the error "
                  "over photos is the more honest), and how many images gained.\n\n"
                  + markdown_table(["variant", "against", "images", "mean gain",
                                    "SE over images", "SE over photos", "images gaining"],
                                   images))
        for name, spread in spreads.items():
            summary[name]["image_spread"] = spread
    names, steps = trajectory_rows(runs)
    if steps:
        table += ("\n\nTest PSNR along each arm's run (mean over seeds; in brackets the gain "
                  "over Net0 paired by seed, ± its std). Before the last step the cosine "
                  "schedule has not reached its end, so these are not the scores of shorter "
                  "runs.\n\n" + markdown_table(["arm step", *names], steps))
    first = next(iter(runs.values()))[0]
    blurry = f"{first['blurry_psnr']:.3f} dB" if first.get("blurry_psnr") else "n/a"
    lines = [
        f"# Quality at equal budget: {context['backbone']}, {len(args.seeds)} seeds",
        "",
        f"Command: `{command}`",
        *([""] + [f"Merged from: `{c}`" for c in sources] if sources else []),
        "",
        f"- Protocol: {args.protocol}"
        + (f" ({args.pretrain_steps} shared base steps, then " if args.protocol == "finetune"
           else " (") + f"{args.steps} steps per arm on identical batches); batch {args.batch}, "
        f"crops {args.crop} px"
        + (" (rescaled 0.5-1 and turned by 90 degree steps)" if args.augment else "")
        + (f" of the photos {', '.join(args.train_photos)}" if args.train_photos else "")
        + f", {args.blur} blur, lr {args.lr}"
        + (" in the shared base (each variant's own steps: see below), " if own_steps else
           f" (MLA/SAT x{args.embedding_lr_scale}, student x{args.student_lr_scale} after "
           "its pre-training"
           + (f", backbone x{args.backbone_lr_scale}" if args.backbone_lr_scale != 1 else "")
           + "), ")
        + f"beta {args.beta}, "
        + (f"prior options {' '.join(args.prior_options)}, " if args.prior_options else "")
        + (f"teacher {args.teacher}, " if args.teacher != ADDED_LATER["teacher"] else "")
        + (f"teacher levels {args.teacher_levels}, "
           if args.teacher_levels != ADDED_LATER["teacher_levels"] else "")
        + (f"{args.arm_loss} loss in the arms' own steps (the shared base: the backbone's), "
           if args.arm_loss else "")
        + (f"lr {args.arm_lr} in the arms' own steps (the shared base: {args.lr}), "
           if args.arm_lr is not None and not own_steps else "")
        + "no "
        f"perceptual term; {args.student_steps} student pre-training steps for prior arms "
        "with HCL (Net0* has none).",
        (f"- Test: {context['test_count']} crops of {args.test_crop} px with detail >= "
         f"{context['test_min_detail']} (blurry input PSNR {blurry})" if args.test_crop else
         f"- Test: the {len(TEST_PHOTOS)} test photos whole, less the blur margin, "
         f"{args.test_crops_per_photo} kernel{'s' if args.test_crops_per_photo > 1 else ''} "
         f"each ({context['test_count']} images; blurry "
         f"input PSNR {blurry})")
        + (f"; drawn with test seed {args.test_seed}, not the benchmark test set's 0."
           if args.test_seed else "."),
        *([f"- Own steps, per variant (each on the same batches after the same base "
           f"steps; a gain compares these recipes): {describe_own_steps(own_steps)}."]
          if own_steps else []),
        f"- Seeds {args.seeds}: the ± is the standard deviation over seeds; the gain is the mean "
        "± std of the per-seed difference to Net0 (the noise of the comparison).",
        f"- {context['control']}" if context["control"] else "",
        f"- Machine: {context['machine']}; {context['seconds']:.0f} s in all"
        + (" (summed over the merged runs; nan: not recorded)." if sources else "."),
        "",
        table,
        "",
    ]
    payload = {"command": command, "options": vars(args), "summary": summary, "runs": runs,
               **{k: v for k, v in context.items() if k != "runs"}}
    if sources:
        payload["merged_from"] = sources
    return "\n".join(lines), payload


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
