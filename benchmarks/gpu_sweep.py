"""Screen several quality-benchmark settings at once on one GPU.

Every (setting, seed) runs ``benchmarks/quality.py`` in its own process, all at once (a
lent GPU is short-lived, and the small networks of the CPU protocol leave it mostly
idle). A settings file names each setting and the ``quality.py`` arguments that make it
differ from the common ones (given after ``--``); a setting's arguments come last, so
they override the common ones (``--variants Net0 Net6`` replaces the common variants).
Blank lines and ``#`` comments are skipped::

    reference:
    severe: --blur severe
    lr2e-3: --lr 2e-3 --seeds 0 1 2

The result: each process's result file and log under ``OUT/parts``, and ``OUT/sweep.md``
/ ``sweep.json``: per setting and prior variant, the gain over Net0 paired by seed on
the test photos (and on the training photos where ``--train-probe`` is given), with
each process's wall time. A process still running at ``--seconds`` is killed and its
setting reported as unfinished. This screens; a setting worth keeping is then rerun by
``quality.py`` itself with its exact command.

    python benchmarks/gpu_sweep.py --out /tmp/sweep --settings sweep.txt --seconds 480 \\
        -- --pretrain-steps 1000 --steps 1000 --batch 4 --crop 128 --device cuda
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from parallel import split_passed, wait_all

QUALITY = Path(__file__).with_name("quality.py")
SET_HERE = {"--out", "--tag", "--merge"}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    own, common = split_passed(argv, SET_HERE)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for every file of the sweep")
    parser.add_argument("--settings", required=True,
                        help="file of 'name: quality.py arguments' lines")
    parser.add_argument("--seconds", type=float, required=True,
                        help="wall seconds after which unfinished processes are killed")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="seeds of a setting that names none with --seeds")
    args = parser.parse_args(own)
    return args, common


def read_settings(path: str | Path) -> dict[str, list[str]]:
    """``{name: arguments}`` of a settings file, in its order."""
    settings: dict[str, list[str]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, colon, rest = line.partition(":")
        name = name.strip()
        if not colon or not name or not name.replace("-", "").replace("_", "").replace(
                ".", "").isalnum():
            raise SystemExit(f"{path}:{number}: expected 'name: arguments' with a name of "
                             f"letters, digits, '-', '_' or '.', got {line!r}")
        if name in settings:
            raise SystemExit(f"{path}:{number}: setting {name!r} is named twice")
        arguments = shlex.split(rest)
        clash = sorted(SET_HERE & {a.split("=")[0] for a in arguments})
        if clash:
            raise SystemExit(f"{path}:{number}: {clash} are set by this script")
        settings[name] = arguments
    if not settings:
        raise SystemExit(f"{path} names no setting")
    return settings


def seeds_of(arguments: list[str], default: list[int]) -> list[int]:
    """The seeds a setting's arguments name with ``--seeds`` (the last such option), or
    ``default``."""
    if "--seeds" not in arguments:
        return default
    start = len(arguments) - arguments[::-1].index("--seeds")
    seeds = []
    for value in arguments[start:]:
        if value.startswith("--"):
            break
        seeds.append(int(value))
    return seeds


def without_seeds(arguments: list[str]) -> list[str]:
    """``arguments`` with every ``--seeds`` option and its values removed."""
    out, skipping = [], False
    for value in arguments:
        if value == "--seeds":
            skipping = True
        elif skipping and not value.startswith("--"):
            continue
        else:
            skipping = False
            out.append(value)
    return out


def launch_all(settings: dict[str, list[str]], common: list[str], default_seeds: list[int],
               folder: Path) -> list[dict[str, Any]]:
    """Start one ``quality.py`` process per (setting, seed); its log and result file go
    to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, arguments in settings.items():
        for seed in seeds_of(arguments, seeds_of(common, default_seeds)):
            tag = f"{name}_seed{seed}"
            command = [sys.executable, str(QUALITY), *without_seeds(common),
                       *without_seeds(arguments), "--seeds", str(seed),
                       "--out", str(folder), "--tag", tag]
            with open(folder / f"{tag}.log", "w", encoding="utf-8") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            jobs.append({"setting": name, "seed": seed, "tag": tag, "command": command,
                         "process": process})
    return jobs


def find_results(jobs: list[dict[str, Any]], folder: Path) -> None:
    """Record each finished job's result file (``None`` where it failed or wrote none)."""
    for job in jobs:
        found = sorted(folder.glob(f"quality_*_{job['tag']}.json"))
        job["file"] = str(found[0]) if found and job["returncode"] == 0 else None


def gains(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting and prior variant: the per-seed gains over Net0 on the test photos
    (and on the training-photo probe where the rows have one), with their mean and std."""
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        by_setting.setdefault(job["setting"], []).append(job)
    rows = []
    for setting, members in by_setting.items():
        finished = [j for j in members if j["file"]]
        per_variant: dict[str, dict[str, list[float]]] = {}
        base_psnr, blurry = [], []
        for job in finished:
            runs = json.loads(Path(job["file"]).read_text(encoding="utf-8"))["runs"]
            net0 = runs.get("Net0", [None])[0]
            if net0 is None:
                continue
            base_psnr.append(net0["psnr"])
            blurry.append(net0["blurry_psnr"])
            for variant, variant_rows in runs.items():
                if variant == "Net0":
                    continue
                row = variant_rows[0]
                cell = per_variant.setdefault(variant, {"test": [], "probe": []})
                cell["test"].append(row["psnr"] - net0["psnr"])
                if "train_probe_psnr" in row and "train_probe_psnr" in net0:
                    cell["probe"].append(row["train_probe_psnr"] - net0["train_probe_psnr"])
        walls = [j["wall"] for j in members]
        if not per_variant:
            rows.append({"setting": setting, "variant": "", "seeds": 0,
                         "finished": f"{len(finished)}/{len(members)}", "walls": walls})
        for variant, cell in per_variant.items():
            rows.append({
                "setting": setting, "variant": variant, "seeds": len(cell["test"]),
                "finished": f"{len(finished)}/{len(members)}", "walls": walls,
                "blurry_psnr": statistics.fmean(blurry), "net0_psnr": statistics.fmean(base_psnr),
                "test_gains": cell["test"], "probe_gains": cell["probe"],
            })
    return rows


def mean_std_text(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:+.3f}"
    return f"{statistics.fmean(values):+.3f} ± {statistics.stdev(values):.3f}"


def machine_of(jobs: list[dict[str, Any]]) -> str:
    """The machine line of the first finished process's result file ("" when none)."""
    for job in jobs:
        if job["file"]:
            return json.loads(Path(job["file"]).read_text(encoding="utf-8")).get("machine", "")
    return ""


def table(record: dict[str, Any]) -> str:
    """The Markdown report of a sweep record (``sweep.json``)."""
    settings, rows = record["settings"], record["rows"]
    lines = [
        "# Settings screened at once on one GPU",
        "",
        f"Command: `python {shlex.join(record['argv'])}`",
        "",
        f"Machine: {record['machine']}; {len(record['jobs'])} processes at once.",
        "",
        "| setting | arguments | variant | seeds | finished | blurry | Net0 | gain on test "
        "photos | gain on training photos | wall s |",
        "| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['setting']} | `{shlex.join(settings[row['setting']])}` | "
            f"{row['variant']} | {row['seeds']} | {row['finished']} | "
            f"{row.get('blurry_psnr', float('nan')):.3f} | "
            f"{row.get('net0_psnr', float('nan')):.3f} | "
            f"{mean_std_text(row.get('test_gains', []))} | "
            f"{mean_std_text(row.get('probe_gains', []))} | "
            f"{max(row['walls']):.0f} |")
    lines += ["", "Gains are over Net0 of the same process (same base, same batches), in dB: "
              "one seed gives the value, several give mean ± std over seeds. A screen, "
              "not a result: rerun a setting with quality.py for its table."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, common = parse_args(argv)
    settings = read_settings(args.settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.seconds
    jobs = launch_all(settings, common, args.seeds, out / "parts")
    print(f"{len(jobs)} processes started", flush=True)
    wait_all(jobs, deadline)
    find_results(jobs, out / "parts")
    given = sys.argv[1:] if argv is None else argv
    record = {"argv": [f"benchmarks/{Path(__file__).name}", *given], "common": common,
              "settings": settings, "machine": machine_of(jobs), "jobs": jobs,
              "rows": gains(jobs)}
    (out / "sweep.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    text = table(record)
    (out / "sweep.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    return record


if __name__ == "__main__":
    main()
