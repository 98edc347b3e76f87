"""Checkpoints of a training run: written atomically, found by step, restoring RNGs.

A checkpoint is ``<run>/checkpoints/step_00001234.pt``, a ``torch.save`` of plain
containers and tensors (so ``torch.load(weights_only=True)`` reads it): the model, the
optimiser, scheduler and gradient-scaler states, the step, the training and run
configuration, and the random number generator states of every process. It is written to
a temporary file in the same folder, flushed to disk, then renamed over the final name
with ``os.replace`` (atomic on POSIX and Windows), so a run killed while saving leaves
either the previous checkpoint or the new one, never a truncated file under a
checkpoint's name.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sp_adapter.files.atomic import write_atomic

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")
# the temporary files of save_atomic (sp_adapter.files.atomic): ".step_N.pt.<random>.tmp"
_TEMPORARY = re.compile(r"^\.step_\d{8,}\.pt\..+\.tmp$")
# what reading a damaged checkpoint raises: torch's zip reader (RuntimeError), the OS
# (OSError: Invalid argument on a truncated file), the unpickler, and the library's errors
UNREADABLE = (ValueError, OSError, RuntimeError, EOFError, pickle.UnpicklingError)


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def strength_path(checkpoint: str | os.PathLike) -> Path:
    """Where a prior strength calibrated for ``checkpoint`` is saved
    (:mod:`~sp_adapter.train.strength_file`): ``step_N.pt`` -> ``step_N.strength.json``."""
    path = Path(checkpoint)
    return path.with_name(path.stem + ".strength.json")


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the run's checkpoints, by increasing step."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step, or ``None``."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (a temporary file, then ``os.replace``)."""
    return write_atomic(path, lambda handle: torch.save(obj, handle))


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a run killed while saving a checkpoint left behind;
    returns their paths (call it only while no process of the run is saving)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if _TEMPORARY.match(path.name) and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def short_reason(err: BaseException, limit: int = 120) -> str:
    """The first sentence of an error's message (torch's read errors run to paragraphs)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` latest checkpoints (and the strengths saved for them,
    ``step_N.strength.json``)."""
    for _, path in list_checkpoints(run_dir)[:-keep]:
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            strength_path(path).unlink()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU; an unreadable or
    unsafe file is a :class:`~sp_adapter.errors.CheckpointError` naming it."""
    from sp_adapter.files.checkpoints import read_checkpoint

    return read_checkpoint(path)


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _python_state_to_plain(random.getstate()),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(_python_state_from_plain(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}


def _python_state_from_plain(plain: dict[str, Any]) -> tuple:
    internal = tuple(int(v) for v in plain["internal"].tolist())
    return (plain["version"], internal, plain["gauss"])
