"""From-scratch quality run on one GPU, sized to the time a lent machine has.

Every (variant, seed) of ``benchmarks/quality.py --protocol scratch`` trains in its own
process, all at once on the one GPU (each with its own DataLoader workers: the blurred
crops are synthesised on the CPU). A short calibration run of the same processes
measures each one's fixed cost (start, teacher, test set) and its seconds per step;
the main run then gets the largest step count (a multiple of 100) whose slowest process
is predicted to end within ``--seconds`` with a margin. The result files are the
calibration's and the main run's per-process files, their merged table
(``quality_<backbone>_<tag>.md``/``.json``, with the exact per-process commands) and
``driver.json`` (the calibration, the prediction and each process's wall time).

    python benchmarks/gpu_scratch.py --out /tmp/gpu --seconds 360 -- \\
        --crop 256 --batch 8 --lr 1e-3 --blur severe --test-crop 192 --test-crops-per-photo 8

Arguments after ``--`` go to every ``quality.py`` process (not ``--steps``,
``--student-steps``, ``--seeds``, ``--variants``, ``--protocol``, ``--out`` or ``--tag``,
which this script sets).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from parallel import split_passed, wait_all

QUALITY = Path(__file__).with_name("quality.py")
SET_HERE = {"--steps", "--student-steps", "--seeds", "--variants", "--protocol", "--out",
            "--tag", "--merge"}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    own, passed = split_passed(argv, SET_HERE)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for every file of the run")
    parser.add_argument("--seconds", type=float, required=True,
                        help="wall seconds the calibration and the main run may take")
    parser.add_argument("--variants", nargs="+", default=["Net0", "Net6", "Net0*"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--calibration-steps", type=int, default=150)
    parser.add_argument("--student-fraction", type=float, default=0.25,
                        help="student pre-training steps as a share of the arm steps")
    parser.add_argument("--margin", type=float, default=0.8,
                        help="share of the time left that the predicted main run may use")
    parser.add_argument("--max-steps", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    parser.add_argument("--tag", default="scratch_gpu")
    args = parser.parse_args(own)
    return args, passed


def launch(args: argparse.Namespace, passed: list[str], variant: str, seed: int, steps: int,
           folder: Path, tag: str) -> tuple[list[str], subprocess.Popen]:
    command = [
        sys.executable, str(QUALITY), "--protocol", "scratch", "--variants", variant,
        "--seeds", str(seed), "--steps", str(steps),
        "--student-steps", str(round(steps * args.student_fraction)),
        "--workers", str(args.workers), "--threads", "1", "--no-progress",
        "--out", str(folder), "--tag", tag, *passed,
    ]
    with open(folder / f"{tag}.log", "w", encoding="utf-8") as log:  # the child keeps its copy
        return command, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def run_all(args: argparse.Namespace, passed: list[str], steps: int, folder: Path,
            prefix: str, deadline: float, eval_every: int = 0) -> list[dict[str, Any]]:
    """One process per (variant, seed), all at once; each one's command, wall seconds,
    exit status and result file. Processes still running at ``deadline`` are killed."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = ["--eval-every", str(eval_every)] if eval_every else []
    jobs = []
    for variant in args.variants:
        for seed in args.seeds:
            tag = f"{prefix}_{variant.replace('*', 'star')}_seed{seed}"
            command, process = launch(args, [*passed, *extra], variant, seed, steps, folder,
                                      tag)
            jobs.append({"variant": variant, "seed": seed, "tag": tag, "process": process,
                         "command": command})
    wait_all(jobs, deadline)
    for job in jobs:
        path = folder / f"quality_{backbone(passed)}_{job['tag']}.json"
        job["file"] = str(path) if path.exists() else None
    return jobs


def backbone(passed: list[str]) -> str:
    return passed[passed.index("--backbone") + 1] if "--backbone" in passed else "unet"


def step_costs(job: dict[str, Any]) -> tuple[float, float]:
    """``(fixed seconds, seconds per arm step with its share of student steps)`` of a
    finished calibration process: its loop time from the rows (student steps count their
    data wait at the arm's rate), the rest of its wall time fixed."""
    row = next(iter(json.loads(Path(job["file"]).read_text())["runs"].values()))[0]
    compute, data, student = row["seconds"], row["data_seconds"], row["student_seconds"]
    loop = compute + data + student * (1 + data / max(compute, 1e-9))
    return max(0.0, job["wall"] - loop), loop / row["steps"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, passed = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    deadline = begin + args.seconds
    record: dict[str, Any] = {"argv": sys.argv if argv is None else argv,
                              "seconds": args.seconds}

    calibration = run_all(args, passed, args.calibration_steps, out / "calibration", "cal",
                          deadline)
    record["calibration"] = calibration
    failed = [j["tag"] for j in calibration if j["returncode"] != 0 or not j["file"]]
    if failed:
        (out / "driver.json").write_text(json.dumps(record, indent=2))
        raise SystemExit(f"calibration failed for {failed}: see {out / 'calibration'}/*.log")
    costs = {j["tag"]: step_costs(j) for j in calibration}
    left = deadline - time.monotonic()
    steps = min(args.max_steps, min(
        math.floor((args.margin * left - fixed) / per_step) for fixed, per_step in costs.values()
    ) // 100 * 100)
    record.update(costs={k: [round(a, 2), round(b, 5)] for k, (a, b) in costs.items()},
                  left_after_calibration=round(left, 1), steps=steps)
    print(f"calibration: {len(calibration)} processes, {left:.0f} s left -> {steps} steps",
          flush=True)
    if steps < 100:
        (out / "driver.json").write_text(json.dumps(record, indent=2))
        raise SystemExit(f"only {left:.0f} s left after calibration: too little for 100 steps")
    record["predicted_wall"] = round(max(f + p * steps for f, p in costs.values()), 1)

    main_jobs = run_all(args, passed, steps, out / "parts", "main", deadline,
                        eval_every=max(1, steps // 4))
    record["main"] = main_jobs
    (out / "driver.json").write_text(json.dumps(record, indent=2))
    files = [j["file"] for j in main_jobs if j["returncode"] == 0 and j["file"]]
    print(f"main: {len(files)}/{len(main_jobs)} processes finished, walls "
          f"{[j['wall'] for j in main_jobs]} s (predicted {record['predicted_wall']})",
          flush=True)
    if files:
        subprocess.run([sys.executable, str(QUALITY), "--merge", *files, "--out", str(out),
                        "--tag", f"{args.tag}_{steps}"], check=True)
    return record


if __name__ == "__main__":
    main()
