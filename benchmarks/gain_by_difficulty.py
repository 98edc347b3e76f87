"""Where a variant gains: its per-image gain over Net0 against how hard each test image is.

Reads a result file of ``benchmarks/quality.py`` whose rows keep every test image's PSNR
(``image_psnr``), averages each image's score and gain over the seeds both arms ran, and
prints the mean gain of the images in bands of Net0's PSNR (a hard image restores to a
low PSNR), with the correlation between the two:

    python benchmarks/gain_by_difficulty.py benchmarks/results/quality_unet_X.json \
        --variant 'Net0*' --bands 22 25 26

Writes nothing: the result file holds every number it prints.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any


def seed_pairs(runs: dict[str, list[dict[str, Any]]], variant: str
               ) -> list[tuple[dict[str, float], dict[str, float]]]:
    """``(Net0's, variant's)`` per-image PSNRs of each seed both arms scored."""
    if "Net0" not in runs or variant not in runs:
        raise SystemExit(f"the file needs Net0 and {variant!r} rows; it has {sorted(runs)}")
    reference = {row["seed"]: row.get("image_psnr") for row in runs["Net0"]}
    pairs = [(reference[row["seed"]], row["image_psnr"]) for row in runs[variant]
             if row.get("image_psnr") and reference.get(row["seed"])]
    if not pairs:
        raise SystemExit("no seed has per-image scores for both arms (files written before "
                         "quality.py kept them have none)")
    return pairs


def image_scores(pairs: list[tuple[dict[str, float], dict[str, float]]]
                 ) -> dict[str, tuple[float, float]]:
    """Per test image: Net0's PSNR and the variant's gain over it, both averaged over the
    seed pairs."""
    return {key: (statistics.fmean(base[key] for base, _ in pairs),
                  statistics.fmean(other[key] - base[key] for base, other in pairs))
            for key in pairs[0][0]}


def pooled_psnr(image_psnr: dict[str, float]) -> float:
    """One PSNR of a whole test set: from the mean of its images' squared errors (images
    of one size), not the mean of their PSNRs."""
    return -10 * math.log10(statistics.fmean(10 ** (-psnr / 10) for psnr in image_psnr.values()))


def psnr_bands(edges: list[float]) -> list[tuple[str, float, float]]:
    """``(label, low, high)`` of the bands below the first edge (dB), between each pair of
    edges and from the last one up."""
    bounds = [float("-inf"), *sorted(edges), float("inf")]
    return [(f"< {high:g} dB" if low == float("-inf") else
             f">= {low:g} dB" if high == float("inf") else f"{low:g}-{high:g} dB", low, high)
            for low, high in zip(bounds, bounds[1:], strict=False)]


def bands(scores: dict[str, tuple[float, float]], edges: list[float]
          ) -> list[tuple[str, int, float | None]]:
    """``(band, images, mean gain)`` for Net0's PSNR in each of :func:`psnr_bands`."""
    out = []
    for label, low, high in psnr_bands(edges):
        gains = [gain for base, gain in scores.values() if low <= base < high]
        out.append((label, len(gains), statistics.fmean(gains) if gains else None))
    return out


def main(argv: list[str] | None = None) -> list[tuple[str, int, float | None]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", help="a quality.py result file (.json)")
    parser.add_argument("--variant", default="Net0*")
    parser.add_argument("--bands", nargs="+", type=float, default=[22.0, 25.0, 26.0],
                        metavar="DB", help="edges of the bands of Net0's PSNR")
    args = parser.parse_args(argv)
    runs = json.loads(Path(args.result).read_text())["runs"]
    pairs = seed_pairs(runs, args.variant)
    scores = image_scores(pairs)
    rows = bands(scores, args.bands)
    base, gain = zip(*scores.values(), strict=True)
    print(f"{args.variant} against Net0, {len(scores)} test images, mean gain "
          f"{statistics.fmean(gain):+.3f} dB; correlation of the gain with Net0's PSNR "
          f"{statistics.correlation(base, gain):+.2f}")
    pooled = [pooled_psnr(other) - pooled_psnr(base) for base, other in pairs]
    print(f"scored as one PSNR of the set's mean squared error (easy images weigh less): "
          f"gain {statistics.fmean(pooled):+.3f} dB")
    print("| Net0 PSNR | images | mean gain (dB) |")
    print("|---|---|---|")
    for label, count, mean in rows:
        print(f"| {label} | {count} | {'' if mean is None else f'{mean:+.3f}'} |")
    return rows


if __name__ == "__main__":
    main()
