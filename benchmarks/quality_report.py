"""The tables of a quality result: per-variant means over seeds, gains paired by seed,
per test photo, per test image (the test set's own noise) and along each arm's run."""

from __future__ import annotations

import argparse
import math
import statistics
from typing import Any

from quality_arms import CONTROL, VARIANTS, describe_own_steps

from sp_adapter.data import TEST_PHOTOS
from sp_adapter.prior.config import TeacherSpec
from sp_adapter.train.report import markdown_table


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
        + (f"teacher {args.teacher}, " if args.teacher != TeacherSpec().arch else "")
        + (f"teacher levels {args.teacher_levels}, "
           if list(args.teacher_levels) != list(TeacherSpec().out_indices) else "")
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
