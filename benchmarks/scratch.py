"""Where the benchmark scripts write unless ``--out`` says otherwise.

A trial run must never write over the committed record in ``benchmarks/results/``: by
default every script writes under a scratch folder in the system's temporary directory;
pass ``--out benchmarks/results`` (``--out benchmarks/results/overhead`` for the scripts
whose ``--out`` is a file stem) to update the record on purpose.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

RECORD = Path(__file__).parent / "results"
"""The committed results, written only when ``--out`` names them."""

OUT_HELP = ("where to write (default: a scratch folder in the system's temporary directory; "
            "--out benchmarks/results updates the committed record)")


def scratch(*parts: str) -> Path:
    """A path under the scratch folder, ``<tmp>/sp_adapter_benchmarks/<parts>``."""
    return Path(tempfile.gettempdir(), "sp_adapter_benchmarks", *parts)


def write_markdown(out: str, text: str) -> Path:
    """Write a report atomically to ``<out>.md`` (``out`` may already end in ``.md``),
    creating its folder; returns the file."""
    from sp_adapter.files.atomic import write_atomic

    target = Path(out if out.endswith(".md") else out + ".md")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode())
    return target
