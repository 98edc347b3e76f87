"""``sp-adapter eval``: PSNR/SSIM (and LPIPS when available) of trained networks on a test
set, with a row of the paper's Table 1 per model and the blurry inputs' score once."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from sp_adapter.cli.common import (
    add_command,
    add_common,
    add_dataset,
    add_max_pixels,
    add_model_source,
    add_prior_strength,
    apply_max_pixels,
    apply_prior_strength,
    check_backbone,
    check_output_file,
    check_tile,
    check_tile_fits,
    load_model,
    make_dataset,
    require_positive,
    resolve_device,
)
from sp_adapter.errors import CLIError

DESCRIPTION = """\
Score trained networks on a test set: PSNR and SSIM in a published table's convention,
LPIPS where the lpips package is installed, and the time per image.

The data defaults to what the run was trained on (its dataset, blur, GoPro folder or
RealBlur variant; the folder itself with --root); the command prints what it took from the
run. An option that contradicts the run is refused unless --other-data says it is meant.
The blurry inputs are scored once per test set and shown once."""

EXAMPLES = [
    "sp-adapter eval --run-dir runs/unet_sp",
    "sp-adapter eval --run-dir runs/unet runs/unet_sp --json scores.json",
    "sp-adapter eval --run-dir runs/gopro --root GOPRO_Large",
    "sp-adapter eval --checkpoint net.pt --backbone mimo-unet --prior-folder my-prior "
    "--dataset gopro --root GOPRO_Large",
]

DATA_KEYS = ("dataset", "blur", "gopro_blur", "realblur_variant")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from sp_adapter.metrics import CONVENTIONS

    p = add_command(subparsers, "eval", "PSNR/SSIM (and LPIPS when available) on a dataset, "
                    "with a row of the paper's Table 1 per model", DESCRIPTION, EXAMPLES)
    add_model_source(p, many=True)
    data = p.add_argument_group("data")
    add_dataset(data, default_crop=128)
    data.add_argument("--split", default="test", choices=["train", "test"],
                      help="which split of the dataset to score")
    data.add_argument("--whole", action="store_true",
                      help="synthetic test split: score the whole test photos (less the blur "
                           "margin, 16 kernels each) instead of crops, one image per batch")
    data.add_argument("--limit", type=int, default=None,
                      help="score the first N images (default: all)")
    data.add_argument("--other-data", action="store_true",
                      help="score on data other than the run was trained on (otherwise a "
                           "--dataset/--blur/... that differs from the run is refused)")
    add_max_pixels(data)
    prior = p.add_argument_group("prior")
    add_prior_strength(prior)
    scoring = p.add_argument_group("scoring")
    scoring.add_argument("--convention", default=None, choices=list(CONVENTIONS),
                         help="how PSNR/SSIM are computed, as published tables do "
                              "(docs/metrics.md): matlab (default; realblur for --dataset "
                              "realblur), basicsr, skimage (training validation's), realblur "
                              "(needs sp_adapter[realblur])")
    scoring.add_argument("--tile", type=int, default=None,
                         help="tiled inference with this tile side (default: whole images)")
    scoring.add_argument("--batch", type=int, default=None,
                         help="images per batch (default: 8 for synthetic crops, else 1)")
    out = p.add_argument_group("output")
    out.add_argument("--json", default=None, metavar="FILE",
                     help="also write the scores (per image too), the convention and the "
                          "command to FILE (default: no file)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    add_common(p)
    return p


def _lpips_or_note(device: Any):
    from sp_adapter.metrics import lpips_metric

    try:
        return lpips_metric("alex", device=device), None
    except RuntimeError as err:
        return None, f"LPIPS not computed: {err}"


def _convention(args: argparse.Namespace):
    from sp_adapter.metrics import DEFAULT_CONVENTION, get_convention

    if args.convention is not None:
        return get_convention(args.convention), "chosen"
    name = "realblur" if args.dataset == "realblur" else DEFAULT_CONVENTION
    return get_convention(name), f"default for --dataset {args.dataset}"


def data_label(args: argparse.Namespace) -> str:
    detail = {"gopro": f" ({args.gopro_blur})", "realblur": f" (RealBlur-{args.realblur_variant})",
              "synthetic": f" ({args.blur} blur)"}.get(args.dataset, "")
    return f"{args.dataset}{detail} {args.split}"


def input_scores(result: Any) -> Any:
    """The blurry inputs' own scores, out of a result scored with ``score_blurry=True``
    (as :func:`sp_adapter.train.evaluate.score_inputs` would give them)."""
    rows = [{"key": row["key"], "psnr": row["blurry_psnr"], "ssim": row["blurry_ssim"]}
            for row in result.per_image]
    return replace(result, psnr=result.blurry_psnr, ssim=result.blurry_ssim, per_image=rows,
                   blurry_psnr=None, blurry_ssim=None, seconds_per_image=None)


def run(args: argparse.Namespace) -> int:
    from sp_adapter.cli.run_data import take_data
    from sp_adapter.files.atomic import write_atomic
    from sp_adapter.train import evaluate
    from sp_adapter.train.evaluate import (
        TABLE_HEADER,
        table_name,
        table_row,
        with_input_scores,
    )

    check_tile(args.tile)
    require_positive(args.limit, "--limit", "the number of images to score")
    require_positive(args.batch, "--batch", "images per batch")
    apply_max_pixels(args.max_pixels)
    sources = args.run_dir or args.checkpoint
    taken = take_data(args, sources, getattr(args, "given", set()), DATA_KEYS)
    if taken:
        print(f"from the run: {', '.join(taken)}")
    if args.whole and (args.dataset != "synthetic" or args.split != "test"):
        raise CLIError("--whole is for --dataset synthetic --split test (the "
                       "folder datasets are scored on whole images already)")
    if args.json is not None:
        check_output_file(Path(args.json), "--json", args.overwrite)
    convention, why = _convention(args)
    if convention.align:
        from sp_adapter.metrics.realblur import require_opencv

        require_opencv()  # before any model is loaded
    device = resolve_device(args.device)
    data = make_dataset(args.dataset, args.root, args.split, args.crop, args.blur, 0,
                        whole=args.whole, gopro_blur=args.gopro_blur,
                        realblur_variant=args.realblur_variant)
    batch = args.batch or (8 if args.dataset == "synthetic" and not args.whole else 1)
    lpips, note = _lpips_or_note(device)
    count = len(data) if args.limit is None else min(args.limit, len(data))
    print(f"data: {data_label(args)}, {count} images")
    print(f"convention: {convention.name} ({why}): {convention.description}")
    if note is not None:
        print(note)
    inputs = None
    models: list[dict[str, Any]] = []
    rows: list[str] = []
    for source in sources:
        model, spec, info = load_model(args, source)
        check_backbone(args, spec, info)
        check_tile_fits(args.tile, model, spec.backbone)
        model.to(device)
        strength = apply_prior_strength(model, args.prior_strength, info)
        lpips_values: list[float] = []

        def on_batch(blurry, restored, sharp, keys, values=lpips_values) -> None:
            if lpips is not None:
                values.append(float(lpips(restored, sharp)) * len(keys))

        result = evaluate(model, data, spec.backbone, device=device, batch_size=batch,
                          tile=args.tile, limit=args.limit, score_blurry=inputs is None,
                          progress=not args.no_progress, on_batch=on_batch,
                          convention=convention.name, warmup=True)
        if inputs is None:  # the blurry inputs score the same for every model: once
            inputs = input_scores(result)
            print(f"blurry input: PSNR {inputs.psnr:.3f} dB  SSIM {inputs.ssim:.4f}")
        else:
            result = with_input_scores(result, inputs)
        model.to("cpu")
        lpips_mean = sum(lpips_values) / result.count if lpips is not None else None
        method, structure = table_name(spec.backbone, spec.prior is not None)
        print(f"model: {info['path']} (step {info.get('step')}, {spec.backbone}, "
              f"{'with' if spec.prior else 'without'} prior{strength})")
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
        report = {"command": "eval", "command_line": getattr(args, "command_line", None),
                  "convention": convention.as_dict(),
                  "convention_source": why,
                  "data": {"dataset": args.dataset, "root": args.root, "split": args.split,
                           "label": data_label(args), "count": inputs.count},
                  "blurry": {"psnr": inputs.psnr, "ssim": inputs.ssim},
                  "device": str(device), "batch": batch, "lpips_note": note,
                  "models": models, "table": table}
        text = json.dumps(report, indent=2, allow_nan=True) + "\n"
        print(f"scores: {write_atomic(args.json, text.encode())}")
    return 0
