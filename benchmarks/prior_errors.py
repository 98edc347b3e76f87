"""What the prior changes in the restored images, and where that change helps or hurts.

Reads result files of ``benchmarks/quality.py`` runs made with ``--run-root`` (each arm's
final checkpoint kept), rebuilds their test set, and deblurs it with Net0 and a prior
variant of each seed. For one test image, with ``r = sharp - Net0's output`` (what Net0
leaves to restore) and ``d = variant's output - Net0's output`` (what the prior changes),
the variant's squared error is

    |r - d|^2 = |r|^2 - (2 <r, d> - |d|^2)

so the change lowers the error by its *help* ``2 <r, d>`` (how far it points along the
residual) less its *harm* ``|d|^2`` (its size). Both split exactly over bands of spatial
frequency (Parseval): the image's mean colour (DC), coarse structure, mid and fine detail
(``--edges`` in cycles per pixel). Each is given as a percentage of Net0's squared error,
so ``help - harm`` summed over the bands is the share of Net0's error the prior removes
(``gain = -10 log10(1 - share)``). A last pair of columns gives the energy of each
output's finest band over the sharp image's (above 1: sharper than the truth; below 1:
still blurred).

    python benchmarks/prior_errors.py /tmp/diag/quality_unet_diag_seed0.json \\
        /tmp/diag/quality_unet_diag_seed1.json --variant 'Net0*' --bands 26 --tag X

Images are grouped by Net0's PSNR (``--bands``, dB) and by test photo; every image's
numbers are in the JSON. Writes ``prior_errors_<tag>.md`` and ``.json`` into ``--out``
(default: a scratch folder; ``--out benchmarks/results`` for the record).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gain_by_difficulty import psnr_bands
from quality_merge import read_result
from scratch import OUT_HELP, scratch
from torch.utils.data import DataLoader

from sp_adapter import is_wrapped, set_prior_strength
from sp_adapter.data import SyntheticBlurDataset, blur_preset
from sp_adapter.files.atomic import write_atomic
from sp_adapter.train.evaluate import deblur
from sp_adapter.train.model_spec import load_trained
from sp_adapter.train.report import grid, markdown_table, safe_name, save_png

BAND_NAMES = ("DC", "coarse", "mid", "fine")
BORDER = 16  # px: the rim that padding inside the networks and the teacher reaches


def to_8bit(image: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` images as the scores see them: 8-bit values in float64 on [0, 255]."""
    return (image.double() * 255).clamp(0, 255).round()


def band_masks(height: int, width: int, edges: tuple[float, float]) -> list[torch.Tensor]:
    """Boolean masks of ``fft2``'s frequencies: the DC term, then radial frequency (cycles
    per pixel) in ``(0, edges[0]]``, ``(edges[0], edges[1]]`` and above ``edges[1]``."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(width, dtype=torch.float64)[None, :]
    radius = (fy**2 + fx**2).sqrt()
    dc = radius == 0
    coarse = ~dc & (radius <= edges[0])
    mid = (radius > edges[0]) & (radius <= edges[1])
    return [dc, coarse, mid, radius > edges[1]]


def band_energy(spectrum: torch.Tensor, masks: list[torch.Tensor]) -> list[float]:
    """``sum |x|^2`` of each band of an image whose ``fft2`` is ``spectrum`` (Parseval)."""
    n = spectrum.shape[-1] * spectrum.shape[-2]
    power = spectrum.abs().pow(2)
    return [float(power[..., mask].sum()) / n for mask in masks]


def decompose(sharp: torch.Tensor, base: torch.Tensor, other: torch.Tensor,
              edges: tuple[float, float], border: int = 16) -> dict[str, Any]:
    """One image's help and harm per band, as fractions of ``base``'s squared error
    (``(C, H, W)`` images on the same scale), the same within ``border`` px of the image's
    edges (``border_help``, ``border_harm``), and each output's fine-band energy over the
    sharp image's."""
    masks = band_masks(sharp.shape[-2], sharp.shape[-1], edges)
    r_space, d_space = sharp - base, other - base
    r, d = torch.fft.fft2(r_space), torch.fft.fft2(d_space)
    n = sharp.shape[-1] * sharp.shape[-2]
    base_error = float(r_space.pow(2).sum())
    cross = (r.conj() * d).real
    help_ = [2 * float(cross[..., m].sum()) / n / base_error for m in masks]
    harm = [e / base_error for e in band_energy(d, masks)]
    fine = [band_energy(torch.fft.fft2(x), masks[-1:])[0]
            for x in (sharp, base, other)]
    rim = torch.ones(sharp.shape[-2:], dtype=torch.bool)
    rim[border:-border, border:-border] = False
    return {"help": help_, "harm": harm, "base_sse": base_error,
            "border_help": 2 * float((r_space * d_space)[..., rim].sum()) / base_error,
            "border_harm": float(d_space.pow(2)[..., rim].sum()) / base_error,
            "border_area": float(rim.float().mean()),
            "other_sse": float((sharp - other).pow(2).sum()),
            "fine_base": fine[1] / fine[0], "fine_other": fine[2] / fine[0]}


def psnr_of(sse: float, count: int) -> float:
    return 10 * math.log10(255.0**2 * count / sse)


def test_set(options: dict[str, Any], test_seed: int | None = None) -> SyntheticBlurDataset:
    """The test set a quality run scored (its recorded options), or with ``test_seed``
    another draw of crops and kernels of the same size and number."""
    crop = options["test_crop"]
    if crop is None:
        raise SystemExit("whole-photo test sets differ in size: use a run with --test-crop N")
    return SyntheticBlurDataset(
        "test", crop=crop, blur=blur_preset(options["blur"]),
        seed=options.get("test_seed", 0) if test_seed is None else test_seed,
        crops_per_photo=options["test_crops_per_photo"],
        return_key=True, min_detail=options.get("test_min_detail"))


def kept_run(spec: str, run_root: str | None) -> tuple[dict[str, Any], Path]:
    """A result file's payload (``FILE#NAME,...``: only those arms' rows, as
    ``quality_merge.read_result`` reads them) and the folder its arms were kept in (``run_root``
    if given: the arms were moved)."""
    payload = read_result(spec)
    root = run_root or payload["options"].get("run_root")
    if not root:
        raise SystemExit(f"{spec}: the run kept no arms (run quality.py with --run-root)")
    return payload, Path(root)


def load_arm(folder: Path) -> torch.nn.Module:
    """A kept arm as trained: a strength saved by ``sp-adapter calibrate --save`` is
    ignored (set back to 1), so the rows named "as trained" are."""
    model = load_trained(folder)[0]
    if is_wrapped(model):
        set_prior_strength(model, 1.0)
    return model


def check_recorded(scores: dict[str, float], recorded: dict[str, float], where: str) -> None:
    """Stop unless every image of ``scores`` scores what the result file ``recorded``
    for it (to 0.001 dB)."""
    key = max(scores, key=lambda k: abs(scores[k] - recorded[k]))
    if abs(scores[key] - recorded[key]) > 1e-3:
        raise SystemExit(f"{where} scores {scores[key]:.4f} dB on {key} here but "
                         f"{recorded[key]:.4f} in its result file: the kept arms are not "
                         "the ones that file scored")


def seed_images(path: str, variant: str, edges: tuple[float, float],
                run_root: str | None = None, test_seed: int | None = None
                ) -> list[dict[str, Any]]:
    """Every test image of every seed of one result file: its key, seed, Net0's and the
    variant's PSNR and the decomposition. On the file's own test set, checks that the
    rebuilt arms score what the file recorded; ``test_seed`` scores them on another
    draw (a fresh check of a setting chosen on the file's)."""
    payload, root = kept_run(path, run_root)
    options = payload["options"]
    if "Net0" not in payload["runs"] or variant not in payload["runs"]:
        raise SystemExit(f"{path} needs Net0 and {variant!r} rows; it has "
                         f"{sorted(payload['runs'])}")
    own_draw = test_seed is None or test_seed == options.get("test_seed", 0)
    data = test_set(options, test_seed)
    rows = []
    for seed in options["seeds"]:
        arms = {name: load_arm(root / f"seed{seed}" / name) for name in ("Net0", variant)}
        recorded = {name: next(r for r in payload["runs"][name] if r["seed"] == seed)
                    for name in arms}
        for blurry, sharp, keys in DataLoader(data, batch_size=4):
            outs = {name: to_8bit(deblur(model, blurry, "unet")) for name, model in arms.items()}
            truth = to_8bit(sharp)
            for i, key in enumerate(keys):
                parts = decompose(truth[i], outs["Net0"][i], outs[variant][i], edges, BORDER)
                count = truth[i].numel()
                row = {"key": key, "seed": seed, "photo": key.split("/")[0],
                       "net0_psnr": psnr_of(parts["base_sse"], count),
                       "psnr": psnr_of(parts["other_sse"], count), **parts}
                if own_draw:
                    for name, column in (("Net0", "net0_psnr"), (variant, "psnr")):
                        check_recorded({key: row[column]}, recorded[name]["image_psnr"],
                                       f"{path}: seed {seed}'s {name} (under {root})")
                rows.append(row)
    return rows


def save_pictures(path: str, variant: str, keys: list[str], out: Path, tag: str,
                  run_root: str | None = None, test_seed: int | None = None) -> list[Path]:
    """A PNG per test image in ``keys``, from the first seed of result file ``path``:
    blurry, Net0, the variant, sharp, then Net0's residual ``r`` and the prior's change
    ``d`` (both x4 around mid-grey)."""
    payload, root = kept_run(path, run_root)
    options = payload["options"]
    arms = [load_arm(root / f"seed{options['seeds'][0]}" / name) for name in ("Net0", variant)]
    data = test_set(options, test_seed)
    index = {data[i][2]: i for i in range(len(data))}
    saved = []
    for key in keys:
        blurry, sharp, _ = data[index[key]]
        base, other = (deblur(m, blurry[None], "unet")[0] for m in arms)
        panels = [blurry, base, other, sharp, (sharp - base) * 4 + 0.5, (other - base) * 4 + 0.5]
        images = [(p.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                  for p in panels]
        labels = ["blurry", "Net0", variant, "sharp", "r x4", "d x4"]
        saved.append(save_png(grid(images, labels),
                              out / f"prior_errors_{tag}_{safe_name(key)}.png"))
    return saved


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean gain, help, harm and fine-band energies of a group of image rows."""
    out: dict[str, Any] = {"images": len({r["key"] for r in rows}),
                           "gain": statistics.fmean(r["psnr"] - r["net0_psnr"] for r in rows)}
    for part in ("help", "harm"):
        out[part] = [statistics.fmean(r[part][b] for r in rows) for b in range(len(BAND_NAMES))]
    out["share"] = sum(out["help"]) - sum(out["harm"])
    # the change scaled by lambda removes lambda * help - lambda^2 * harm: most at
    # lambda = help / (2 harm); below 1 the change overshoots, above 1 it falls short
    total_harm = sum(out["harm"])
    out["best_scale"] = sum(out["help"]) / (2 * total_harm) if total_harm else None
    for part in ("border_help", "border_harm"):
        out[part] = statistics.fmean(r[part] for r in rows)
    out["fine_base"] = statistics.fmean(r["fine_base"] for r in rows)
    out["fine_other"] = statistics.fmean(r["fine_other"] for r in rows)
    return out


def groups(rows: list[dict[str, Any]], edges_db: list[float]) -> dict[str, dict[str, Any]]:
    """Summaries of every image, of bands of Net0's PSNR (each image's mean over its
    seeds) and of each photo."""
    by_key: dict[str, list[float]] = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r["net0_psnr"])
    level = {key: statistics.fmean(v) for key, v in by_key.items()}
    out = {"all": summarise(rows)}
    for name, low, high in psnr_bands(edges_db):
        chosen = [r for r in rows if low <= level[r["key"]] < high]
        if chosen:
            out[f"Net0 {name}"] = summarise(chosen)
    for photo in dict.fromkeys(r["photo"] for r in rows):
        out[photo] = summarise([r for r in rows if r["photo"] == photo])
    return out


def table(summaries: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["images", "gain (dB)", "removed (%)", "best scale",
              *(f"{b} help/harm (%)" for b in BAND_NAMES), "border help/harm (%)",
              "fine: Net0", "fine: prior"]
    body = []
    for name, s in summaries.items():
        scale = "" if s["best_scale"] is None else f"{s['best_scale']:.2f}"
        body.append([name, str(s["images"]), f"{s['gain']:+.3f}", f"{100 * s['share']:+.1f}",
                     scale,
                     *(f"{100 * h:+.1f} / {100 * m:.1f}" for h, m in zip(s["help"], s["harm"],
                                                                          strict=True)),
                     f"{100 * s['border_help']:+.1f} / {100 * s['border_harm']:.1f}",
                     f"{s['fine_base']:.2f}", f"{s['fine_other']:.2f}"])
    return header, body


def write_results(out: Path, stem: str, text: str, record: dict[str, Any]) -> None:
    """``<out>/<stem>.md`` (the tables) and ``<stem>.json`` (every number), each written
    atomically; ``out`` is created if needed."""
    write_atomic(out / f"{stem}.md", text.encode())
    write_atomic(out / f"{stem}.json", (json.dumps(record, indent=1) + "\n").encode())


def add_kept_run_args(parser: argparse.ArgumentParser) -> None:
    """The options every script reading kept arms takes: the result files, the prior
    variant, where the arms are, threads, and where and under which tag to write."""
    parser.add_argument("results", nargs="+", help="quality.py result files of --run-root runs")
    parser.add_argument("--variant", default="Net0*")
    parser.add_argument("--run-root", default=None,
                        help="where the arms are, if moved since the run (default: the "
                             "file's --run-root)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(scratch()), help=OUT_HELP)
    parser.add_argument("--tag", default="latest")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_kept_run_args(parser)
    parser.add_argument("--test-seed", type=int, default=None,
                        help="score the kept arms on this draw of test crops instead of the "
                             "files' own (no recorded scores to check there)")
    parser.add_argument("--edges", nargs=2, type=float, default=[1 / 32, 1 / 8],
                        metavar="CYCLES", help="frequency edges of the coarse/mid/fine bands "
                                               "(cycles per pixel)")
    parser.add_argument("--bands", nargs="*", type=float, default=[26.0], metavar="DB",
                        help="edges of the groups by Net0's PSNR")
    parser.add_argument("--pictures", type=int, default=0, metavar="K",
                        help="also save the K test images the variant loses most on and the "
                             "K it gains most on (first seed) as PNGs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    edges = (args.edges[0], args.edges[1])
    rows = [row for path in args.results
            for row in seed_images(path, args.variant, edges, args.run_root, args.test_seed)]
    summaries = groups(rows, args.bands)
    header, body = table(summaries)
    command = "python benchmarks/prior_errors.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    seeds = sorted({r["seed"] for r in rows})
    per_seed = [statistics.fmean(r["psnr"] - r["net0_psnr"] for r in rows if r["seed"] == s)
                for s in seeds]
    text = "\n".join([
        f"# What {args.variant} changes in Net0's restorations", "",
        f"Command: `{command}`", "",
        f"- {len(rows)} image restorations ({summaries['all']['images']} test images, seeds "
        f"{seeds}"
        + (f", test crops drawn with test seed {args.test_seed}" if args.test_seed is not None
           else "") + "); frequency bands: DC, coarse (0, {edges[0]:g}], mid "
        f"({edges[0]:g}, {edges[1]:g}], fine above {edges[1]:g} cycles per pixel.",
        "- help / harm: `2<r, d>` / `|d|^2` of each band as a percentage of Net0's squared "
        "error (`r`: Net0's residual, `d`: the prior's change); removed: the sum of "
        "help - harm, the share of Net0's error the prior takes away; best scale: the "
        "factor on the change that would remove the most (help / 2 harm: below 1 the "
        "change overshoots).",
        f"- border: help / harm within {BORDER} px of the image's edges (all bands; "
        f"{100 * rows[0]['border_area']:.0f}% of the pixels).",
        f"- gain per seed: {', '.join(f'{g:+.3f}' for g in per_seed)} dB"
        + (f" (mean {statistics.fmean(per_seed):+.3f} ± {statistics.stdev(per_seed):.3f})"
           if len(per_seed) > 1 else "") + ".",
        "- fine: each output's fine-band energy over the sharp image's (1: as sharp as the "
        "truth).", "",
        markdown_table(["group", *header], body), ""])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.pictures:
        first = [r for r in rows if r["seed"] == rows[0]["seed"]]
        ranked = sorted(first, key=lambda r: r["psnr"] - r["net0_psnr"])
        chosen = [r["key"] for r in ranked[: args.pictures]]
        chosen += [r["key"] for r in ranked[::-1][: args.pictures] if r["key"] not in chosen]
        saved = save_pictures(args.results[0], args.variant, chosen, out, args.tag,
                              args.run_root, args.test_seed)
        gain = {r["key"]: r["psnr"] - r["net0_psnr"] for r in first}
        text += "\n" + "\n".join(
            f"- `{p.name}`: {key} (seed {first[0]['seed']}), gain {gain[key]:+.2f} dB"
            for p, key in zip(saved, chosen, strict=True)) + "\n"
    print(text)
    record = {"command": command, "variant": args.variant, "edges": list(edges),
              "test_seed": args.test_seed, "seed_gains": dict(zip(seeds, per_seed, strict=True)),
              "summaries": summaries, "rows": rows}
    write_results(out, f"prior_errors_{args.tag}", text, record)
    return record


if __name__ == "__main__":
    main()
