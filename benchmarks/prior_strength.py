"""The prior's strength chosen on held-out photos, scored on fresh test draws.

Reads result files of ``benchmarks/quality.py`` runs made with ``--run-root`` (each arm's
final checkpoint kept): for every seed, Net0, a prior variant and, where a file holds
it, the widened control (``Net0-wide``). For each seed it

1. chooses the variant's strength (:func:`sp_adapter.set_prior_strength`: the factor on
   the change every SPE makes; 1 is the model as trained) on crops of the extra greyscale
   photos (:func:`sp_adapter.train.held_out_set`), which neither training nor testing
   uses: the best mean PSNR of ``--strengths``;
2. scores Net0, the control, the variant as trained and at the chosen strength on each
   draw of test crops in ``--test-seeds`` (the files' own draw is checked against the
   scores they recorded, to 0.001 dB).

    python benchmarks/prior_strength.py benchmarks/results/parts/X_seed{0,1,2}.json \\
        benchmarks/results/parts/X_wide_seed{0,1,2}.json --test-seeds 2 3 4 5 --tag X

``FILE#NAME`` reads only arm ``NAME`` of a file: ``X_seed0.json#Net0 Y_seed0.json#Net0*``
pairs the Net0 of one set of runs with the prior arm of another (same seeds and base).

Gains are paired by seed (mean ± std of the per-seed differences of mean PSNR). Writes
``prior_strength_<tag>.md`` and ``.json`` in ``--out`` (default: a scratch folder;
``--out benchmarks/results`` for the record).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gain_by_difficulty import psnr_bands
from prior_errors import (
    add_kept_run_args,
    check_recorded,
    kept_run,
    load_arm,
    test_set,
    write_results,
)
from quality_arms import CONTROL, PRIOR_TRAIN_OPTIONS
from quality_merge import split_spec
from quality_report import mean_std

from sp_adapter import prior_strength
from sp_adapter.data import blur_preset
from sp_adapter.train import calibrate_strength, evaluate, held_out_set
from sp_adapter.train.calibrate import DEFAULT_STRENGTHS
from sp_adapter.train.report import markdown_table

# the options that make a test set: every file read must share them
TEST_SET_OPTIONS = ("test_crop", "test_crops_per_photo", "test_seed", "test_min_detail", "blur")


@dataclass
class KeptArms:
    """What :func:`kept_arms` read: the files' shared options; per seed each kept arm's
    folder and its recorded per-image PSNR; the files each arm came from; and, for each
    prior arm, the options it was trained with where they differ from the defaults."""

    options: dict[str, Any]
    arms: dict[int, dict[str, tuple[Path, dict[str, float]]]]
    sources: dict[str, list[str]]
    settings: dict[str, str]


def prior_settings(options: dict[str, Any]) -> str:
    """A prior arm's ``--prior-options`` and its learning-rate factors other than 1."""
    parts = list(options.get("prior_options") or [])
    parts += [f"{name}={options[name]:g}" for name in PRIOR_TRAIN_OPTIONS
              if options.get(name, 1.0) != 1.0]
    return " ".join(parts)


def kept_arms(paths: list[str], variant: str, run_root: str | None) -> KeptArms:
    """The kept arms of the result files ``paths`` (Net0 and ``variant`` required, the
    control where present).

    ``FILE#NAME`` takes only arm ``NAME``'s rows of a file (``FILE#Net0*`` pairs one run's
    prior arms with another's Net0); an arm of one seed found in two files is refused."""
    options: dict[str, Any] | None = None
    arms: dict[int, dict[str, tuple[Path, dict[str, float]]]] = {}
    sources: dict[str, list[str]] = {}
    settings: dict[str, str] = {}
    origin: dict[tuple[int, str], str] = {}
    for item in paths:
        path = split_spec(item)[0]
        payload, root = kept_run(item, run_root)
        mine = {k: payload["options"].get(k) for k in TEST_SET_OPTIONS}
        if options is None:
            options = payload["options"]
        elif mine != {k: options.get(k) for k in TEST_SET_OPTIONS}:
            raise SystemExit(f"{path} scored another test set than {paths[0]}: {mine}")
        for name, rows in payload["runs"].items():
            for row in rows:
                found = arms.setdefault(row["seed"], {})
                if name in found:
                    raise SystemExit(f"seed {row['seed']}'s {name} is in "
                                     f"{origin[row['seed'], name]} and {path}: choose one "
                                     "with FILE#NAME")
                found[name] = (root / f"seed{row['seed']}" / name, row["image_psnr"])
                origin[row["seed"], name] = path
                if path not in sources.setdefault(name, []):
                    sources[name].append(path)
            trained_with = prior_settings(payload["options"])
            if name not in ("Net0", CONTROL) and trained_with:
                settings.setdefault(name, trained_with)
    assert options is not None
    for seed, found in arms.items():
        missing = [name for name in ("Net0", variant) if name not in found]
        if missing:
            raise SystemExit(f"seed {seed} has no {missing} rows in {paths}; it has "
                             f"{sorted(found)}")
    return KeptArms(options, arms, sources, settings)


def arm_sources(kept: KeptArms) -> str:
    """One line naming each arm's files and, for a prior arm, how it was trained."""
    parts = []
    for name, paths in kept.sources.items():
        extra = f" (trained with {kept.settings[name]})" if name in kept.settings else ""
        parts.append(f"{name} from {', '.join(f'`{Path(p).name}`' for p in paths)}{extra}")
    return "- Arms: " + "; ".join(parts) + "."


def image_scores(model: torch.nn.Module, data, recorded: dict[str, float] | None,
                 where: str) -> dict[str, float]:
    """Per-image PSNR of ``model`` on ``data``; stops unless it matches ``recorded``."""
    scores = {str(r["key"]): float(r["psnr"]) for r in evaluate(model, data, "unet").per_image}
    if recorded is not None:
        check_recorded(scores, recorded, where)
    return scores


def score_seed(seed: int, arms: dict[str, tuple[Path, dict[str, float]]], variant: str,
               options: dict[str, Any], held_out, strengths: list[float],
               test_seeds: list[int], hindsight: list[float]) -> dict[str, Any]:
    """One seed: the calibration on the held-out crops, then every arm on every draw (and
    the variant at each ``hindsight`` strength, stored as ``"s=<S>"``)."""
    models = {name: load_arm(folder) for name, (folder, _) in arms.items()
              if name in ("Net0", variant, CONTROL)}
    calibration = calibrate_strength(models[variant], held_out, strengths=strengths)
    chosen = calibration.best
    own = options.get("test_seed", 0)
    draws = {}
    for test_seed in test_seeds:
        data = test_set(options, test_seed)
        check = test_seed == own
        scores = {}
        for name, model in models.items():
            recorded = arms[name][1] if check else None
            scores[name] = image_scores(model, data, recorded, f"seed {seed}'s {name}")
        with prior_strength(models[variant], chosen):
            scores["calibrated"] = image_scores(models[variant], data, None, "")
        for value in hindsight:
            with prior_strength(models[variant], value):
                scores[f"s={value:g}"] = image_scores(models[variant], data, None, "")
        draws[str(test_seed)] = scores
    return {"seed": seed, "calibration": calibration.as_dict(), "strength": chosen,
            "draws": draws}


def seed_means(seeds: list[dict[str, Any]], draws: list[str], name: str) -> list[float]:
    """Per seed, the mean PSNR of arm ``name`` over every image of ``draws``."""
    return [statistics.fmean(v for d in draws for v in s["draws"][d][name].values())
            for s in seeds]


def gain_cell(seeds: list[dict[str, Any]], draws: list[str], name: str, over: str) -> str:
    if any(over not in s["draws"][draws[0]] for s in seeds):
        return ""
    gains = [a - b for a, b in zip(seed_means(seeds, draws, name),
                                   seed_means(seeds, draws, over), strict=True)]
    mean, spread = mean_std(gains)
    return f"{mean:+.3f} ± {spread:.3f}"


def table(seeds: list[dict[str, Any]], variant: str) -> tuple[list[str], list[list[str]]]:
    draws = list(seeds[0]["draws"])
    header = ["test draw", "images", "Net0 (dB)", f"{variant} - Net0",
              f"{variant} calibrated - Net0", f"{variant} - {CONTROL}",
              f"{variant} calibrated - {CONTROL}", "calibrated gains on"]
    body = []
    for label, chosen in [*((f"test seed {d}", [d]) for d in draws), ("all", draws)]:
        count = sum(len(seeds[0]["draws"][d]["Net0"]) for d in chosen)
        wins = sum(s["draws"][d]["calibrated"][k] > s["draws"][d]["Net0"][k]
                   for s in seeds for d in chosen for k in s["draws"][d]["Net0"])
        net0 = statistics.fmean(seed_means(seeds, chosen, "Net0"))
        body.append([label, str(count), f"{net0:.3f}",
                     gain_cell(seeds, chosen, variant, "Net0"),
                     gain_cell(seeds, chosen, "calibrated", "Net0"),
                     gain_cell(seeds, chosen, variant, CONTROL),
                     gain_cell(seeds, chosen, "calibrated", CONTROL),
                     f"{wins}/{count * len(seeds)}"])
    return header, body


def band_rows(seeds: list[dict[str, Any]], variant: str, edges: list[float]) -> list[list[str]]:
    """Every restoration (seed x draw x image) grouped by Net0's PSNR: how many, and the
    variant's mean gain over Net0 as trained and at the calibrated strength."""
    pairs = [(s["draws"][d]["Net0"][k], s["draws"][d][variant][k], s["draws"][d]["calibrated"][k])
             for s in seeds for d in s["draws"] for k in s["draws"][d]["Net0"]]
    rows = []
    for label, low, high in psnr_bands(edges):
        chosen = [(b, v, c) for b, v, c in pairs if low <= b < high]
        if chosen:
            rows.append([label, str(len(chosen)),
                         f"{statistics.fmean(v - b for b, v, _ in chosen):+.3f}",
                         f"{statistics.fmean(c - b for b, _, c in chosen):+.3f}"])
    return rows


def hindsight_rows(seeds: list[dict[str, Any]], hindsight: list[float]) -> list[list[str]]:
    """Per draw: the variant's gain over Net0 at each ``hindsight`` strength (mean over
    seeds), and a per-image choice of the best of them made on the test images' own
    scores (an upper bound, flattered by picking the largest of several noisy scores)."""
    names = [f"s={value:g}" for value in hindsight]
    rows = []
    for draw in seeds[0]["draws"]:
        cells = [f"test seed {draw}"]
        for name in names:
            gains = [a - b for a, b in zip(seed_means(seeds, [draw], name),
                                           seed_means(seeds, [draw], "Net0"), strict=True)]
            cells.append(f"{statistics.fmean(gains):+.3f}")
        best = [max(s["draws"][draw][n][k] for n in names) - s["draws"][draw]["Net0"][k]
                for s in seeds for k in s["draws"][draw]["Net0"]]
        rows.append([*cells, f"{statistics.fmean(best):+.3f}"])
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_kept_run_args(parser)
    parser.add_argument("--strengths", nargs="+", type=float, default=list(DEFAULT_STRENGTHS))
    parser.add_argument("--held-out-crops", type=int, default=48)
    parser.add_argument("--held-out-seed", type=int, default=1000)
    parser.add_argument("--test-seeds", nargs="+", type=int, default=None,
                        help="draws of test crops to score (default: the files' own)")
    parser.add_argument("--hindsight", nargs="*", type=float, default=[], metavar="S",
                        help="also score the variant at these strengths on the test draws "
                             "(chosen on the test crops themselves: for analysis only)")
    parser.add_argument("--bands", nargs="*", type=float, default=[22.0, 26.0], metavar="DB",
                        help="edges of the groups by Net0's PSNR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = kept_arms(args.results, args.variant, args.run_root)
    options, arms = kept.options, kept.arms
    crop = options["test_crop"]
    if crop is None:
        raise SystemExit("whole-photo test sets differ in size: use runs with --test-crop N")
    held_out = held_out_set(crop, blur_preset(options["blur"]), args.held_out_crops,
                            args.held_out_seed)
    test_seeds = args.test_seeds or [options.get("test_seed", 0)]
    seeds = [score_seed(seed, arms[seed], args.variant, options, held_out, args.strengths,
                        test_seeds, args.hindsight) for seed in sorted(arms)]
    command = "python benchmarks/prior_strength.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    header, body = table(seeds, args.variant)
    calibration_rows = [[str(s["seed"]), *(f"{p:.3f}" for p in s["calibration"]["psnr"]),
                         f"{s['strength']:g}"] for s in seeds]
    text = "\n".join([
        f"# {args.variant} at a strength chosen on held-out photos", "",
        f"Command: `{command}`", "",
        arm_sources(kept),
        f"- Held-out crops: {len(held_out)} of {crop} px from the extra greyscale photos "
        f"({', '.join(held_out.photos)}; seed {args.held_out_seed}), blur preset "
        f"{options['blur']!r}: neither the training nor the test photos. The strength with "
        "the best mean PSNR there is chosen per seed, before any test crop is scored.",
        f"- Test crops: {options['test_crops_per_photo']} of {crop} px per test photo in "
        f"each draw; the files' own draw (test seed {options.get('test_seed', 0)}) is "
        "checked against their recorded scores.",
        "- Gains: mean ± std over seeds of the per-seed difference of mean PSNR (dB); "
        "\"calibrated gains on\": restorations (seeds x images) where the calibrated arm "
        "beats Net0.", "",
        "Held-out PSNR (dB) per strength:", "",
        markdown_table(["seed", *(f"{s:g}" for s in args.strengths), "chosen"],
                       calibration_rows), "",
        markdown_table(header, body), "",
        "Every restoration of every draw, by Net0's PSNR (mean gain over Net0, dB):", "",
        markdown_table(["Net0", "restorations", f"{args.variant}",
                        f"{args.variant} calibrated"],
                       band_rows(seeds, args.variant, args.bands)), ""])
    if args.hindsight:
        text += "\n".join([
            "", "In hindsight, for analysis only (strengths compared on the test crops "
            "themselves; mean gain over Net0, dB; the last column takes for each "
            "restoration the best of these strengths, an upper bound that picking the "
            "largest of several noisy scores flatters):", "",
            markdown_table(["test draw", *(f"strength {v:g}" for v in args.hindsight),
                            "best per restoration"], hindsight_rows(seeds, args.hindsight)),
            ""])
    print(text)
    record = {"command": command, "variant": args.variant, "options": options,
              "sources": kept.sources,
              "strengths": args.strengths, "held_out_crops": len(held_out),
              "held_out_seed": args.held_out_seed, "hindsight": args.hindsight,
              "seeds": seeds}
    write_results(Path(args.out), f"prior_strength_{args.tag}", text, record)
    return record


if __name__ == "__main__":
    main()
