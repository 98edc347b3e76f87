"""A calibrated prior strength saved beside the checkpoint it was chosen for.

``sp-adapter calibrate --save`` writes ``step_00001234.strength.json`` next to
``step_00001234.pt``: the chosen strength, the PSNR of every strength tried, the held-out
images' description, and the checkpoint's SHA-256. :func:`sp_adapter.train.load_trained`
applies the strength when the file still describes that checkpoint; if the checkpoint
was rewritten since, it warns and loads the prior as trained (strength 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from sp_adapter.errors import PriorFileError
from sp_adapter.files.atomic import write_atomic
from sp_adapter.prior.semantic_prior import checked_strength
from sp_adapter.train.calibrate import StrengthCalibration
from sp_adapter.train.checkpoint import strength_path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_strength(checkpoint: str | os.PathLike, calibration: StrengthCalibration,
                  held_out: dict[str, Any]) -> Path:
    """Record ``calibration.best`` for ``checkpoint`` (atomically; a previous calibration
    of the same checkpoint is replaced). Returns the file written."""
    checkpoint = Path(checkpoint)
    record = {"strength": calibration.best, "checkpoint": checkpoint.name,
              "sha256": file_sha256(checkpoint), "calibration": calibration.as_dict(),
              "held_out": dict(held_out)}
    target = strength_path(checkpoint)
    write_atomic(target, (json.dumps(record, indent=1) + "\n").encode())
    return target


def saved_strength(checkpoint: str | os.PathLike) -> float | None:
    """The strength saved for ``checkpoint``, or ``None`` when none is saved or the file
    no longer matches the checkpoint (then with a warning saying so)."""
    checkpoint = Path(checkpoint)
    path = strength_path(checkpoint)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        strength = checked_strength(record["strength"])
        recorded = record["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PriorFileError(f"{path} is not a prior strength written by `sp-adapter calibrate "
                             f"--save` ({err!r}): delete it or calibrate again") from err
    if recorded != file_sha256(checkpoint):
        warnings.warn(f"{path} was calibrated for an earlier {checkpoint.name} (its SHA-256 "
                      "differs): the prior is loaded as trained (strength 1); run "
                      "`sp-adapter calibrate --save` again", stacklevel=2)
        return None
    return strength
