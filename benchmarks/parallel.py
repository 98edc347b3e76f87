"""Benchmark drivers that run quality.py processes side by side: their command lines
and the wait for them, with a deadline."""

from __future__ import annotations

import sys
import time
from typing import Any


def split_passed(argv: list[str] | None, set_here: set[str]) -> tuple[list[str], list[str]]:
    """A driver's own arguments and those after ``--`` (passed to every ``quality.py``
    process), refusing passed options the driver sets itself (``set_here``)."""
    own = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    if "--" in own:
        cut = own.index("--")
        own, passed = own[:cut], own[cut + 1:]
    clash = sorted(set_here & {a.split("=")[0] for a in passed})
    if clash:
        raise SystemExit(f"{clash} are set by this script; pass the others after --")
    return own, passed


def wait_all(jobs: list[dict[str, Any]], deadline: float) -> None:
    """Wait for every job's ``"process"`` (a ``subprocess.Popen``), killing those still
    running at ``deadline`` (a ``time.monotonic()`` value). Each job then holds, instead
    of its process, ``"wall"`` (seconds from this call to its end) and ``"returncode"``
    (negative where it was killed)."""
    started = time.monotonic()
    running = list(jobs)
    while running:
        time.sleep(0.5)
        late = time.monotonic() > deadline
        for job in list(running):
            process = job["process"]
            if process.poll() is None and late:
                process.kill()
                process.wait()
            if process.poll() is not None:
                job["wall"] = round(time.monotonic() - started, 1)
                running.remove(job)
    for job in jobs:
        job["returncode"] = job.pop("process").returncode
