"""``sp-adapter calibrate``: choose the prior's strength on held-out photos."""

from __future__ import annotations

import argparse
from typing import Any

from sp_adapter.cli.common import (
    add_command,
    add_common,
    add_model_source,
    check_backbone,
    check_writable_folder,
    load_model,
    require_finite,
    require_positive,
    resolve_device,
)
from sp_adapter.errors import CLIError

DESCRIPTION = """\
Score the prior at several strengths on held-out crops of the built-in photos (never used
for training) with synthetic blur, and name the best. --save records it beside the
checkpoint; eval and deblur then apply it.

The blur and the crop side default to those the run was trained on (it prints what it
took). A run trained on a folder dataset (GoPro, HIDE, RealBlur) is refused unless
--other-data: a strength chosen on built-in synthetic crops may not suit that data."""

EXAMPLES = [
    "sp-adapter calibrate --run-dir runs/unet_sp",
    "sp-adapter calibrate --run-dir runs/unet_sp --save",
    "sp-adapter calibrate --run-dir runs/unet_sp --strengths 0 0.5 1 1.5",
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from sp_adapter.train.calibrate import DEFAULT_STRENGTHS

    p = add_command(subparsers, "calibrate", "choose the prior's strength on held-out photos",
                    DESCRIPTION, EXAMPLES)
    add_model_source(p)
    data = p.add_argument_group("data (held-out crops)")
    data.add_argument("--blur", default="severe", choices=["severe", "mild"],
                      help="synthetic blur of the held-out crops (default: the run's)")
    data.add_argument("--crop", type=int, default=128,
                      help="held-out crop side in pixels (default: the run's)")
    data.add_argument("--crops", type=int, default=48, help="number of held-out crops")
    data.add_argument("--seed", type=int, default=1000, help="seed of the held-out draw")
    data.add_argument("--other-data", action="store_true",
                      help="calibrate on blur or crops other than the run trained on, or on "
                           "the built-in crops for a run trained on a folder dataset")
    prior = p.add_argument_group("prior")
    prior.add_argument("--strengths", nargs="+", type=float, default=list(DEFAULT_STRENGTHS),
                       metavar="S", help="strengths to try (1: the model as trained)")
    prior.add_argument("--batch", type=int, default=8, help="crops per batch")
    out = p.add_argument_group("output")
    out.add_argument("--save", action="store_true",
                     help="record the best strength beside the checkpoint "
                          "(step_N.strength.json): eval and deblur then use it")
    add_common(p)
    return p


def _take_from_run(args: argparse.Namespace, source: str) -> None:
    from sp_adapter.cli.run_data import data_settings, source_record, take_data

    given = getattr(args, "given", set())
    settings = data_settings(source_record(source), ("dataset", "blur", "crop"))
    dataset = settings.get("dataset")
    if dataset not in (None, "synthetic") and not args.other_data:
        raise CLIError(f"{source} was trained on --dataset {dataset}; the held-out crops are "
                       "built-in photos with synthetic blur, whose best strength may not suit "
                       f"{dataset}: add --other-data to calibrate on them anyway, or calibrate "
                       "from Python on held-out images of that dataset "
                       "(sp_adapter.train.calibrate_strength)")
    if dataset not in (None, "synthetic"):
        return
    args.dataset = "synthetic"
    taken = take_data(args, [source], given | {"dataset"}, ("blur", "crop"))
    if taken:
        print(f"from the run: {', '.join(taken)}")


def run(args: argparse.Namespace) -> int:
    from sp_adapter.attach.state import is_wrapped
    from sp_adapter.data import blur_preset, grey_photos
    from sp_adapter.train import calibrate_strength, held_out_set

    source = args.run_dir or args.checkpoint
    _take_from_run(args, source)
    for value, flag, what in ((args.crop, "--crop", "the crop side in pixels"),
                              (args.crops, "--crops", "the number of held-out crops"),
                              (args.batch, "--batch", "crops per batch")):
        require_positive(value, flag, what)
    for strength in args.strengths:
        require_finite(strength, "--strengths", "strengths of 0 or more")
    device = resolve_device(args.device)
    model, spec, info = load_model(args, source)
    check_backbone(args, spec, info)
    if not is_wrapped(model):
        raise CLIError("calibrate needs a model trained with the prior; this one has none")
    if args.save:
        from pathlib import Path

        check_writable_folder(Path(info["path"]).parent, "--save")
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
