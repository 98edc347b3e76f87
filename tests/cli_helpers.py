"""What the CLI tests share: a tiny training budget and the check of a user's mistake."""

from __future__ import annotations

import re

from sp_adapter.cli import main

TINY = ["--crop", "32", "--batch", "2", "--length", "4", "--width", "8", "--alpha", "0",
        "--perceptual", "none", "--val-limit", "1", "--no-progress"]
"""``sp-adapter train`` options for a run of a few seconds."""


def one_error_line(capsys, argv: list[str], pattern: str) -> str:
    """``argv`` exits 2 with one ``error:`` line matching ``pattern``, no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert err.startswith("error: ") and len(lines) == 1, err
    assert re.search(pattern, err) and "Traceback" not in err, err
    return err
