"""The data a run was trained on, as ``eval`` and ``calibrate`` read it.

A run records its data options (``run.json`` and every checkpoint: dataset, crop, blur,
GoPro's folder, RealBlur's variant). ``eval`` and ``calibrate`` take them as their defaults,
print what they took, and refuse a given option that differs unless ``--other-data`` says
the difference is meant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def source_record(source: str) -> dict[str, Any] | None:
    """The data options and model spec a run folder or training checkpoint records
    (``None``: a checkpoint saved from Python, or nothing readable)."""
    path = Path(source)
    if path.is_dir():
        run = path / "run.json"
        if run.is_file():
            try:
                record = json.loads(run.read_text())
            except (OSError, ValueError):
                record = None
            if isinstance(record, dict):
                return record
        from sp_adapter.train.checkpoint import latest_checkpoint

        found = latest_checkpoint(path)
        if found is None:
            return None
        path = found
    if not path.is_file() or path.suffix == ".safetensors":
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - loading the model reports the damage, naming the file
        return None
    if not isinstance(state, dict) or state.get("model_spec") is None:
        return None
    return {k: state.get(k) for k in ("model_spec", "data_options", "config")}


def data_settings(record: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """The CLI options (by ``dest``) among ``keys`` that the record's data options set."""
    data = (record or {}).get("data_options") or {}
    if "dataset" not in data:
        return {}
    settings: dict[str, Any] = {"dataset": data["dataset"]}
    if data["dataset"] == "synthetic":
        settings["blur"] = data.get("blur", "severe")
    if data["dataset"] == "gopro":
        settings["gopro_blur"] = data.get("gopro_blur", "blur")
    if data["dataset"] == "realblur":
        settings["realblur_variant"] = data.get("realblur_variant", "J")
    if "crop" in data:
        settings["crop"] = data["crop"]
    return {k: v for k, v in settings.items() if k in keys}


def take_data(args: argparse.Namespace, sources: list[str], given: set[str],
              keys: tuple[str, ...]) -> list[str]:
    """Set the data options not given to what the runs were trained on; refuse a given one
    that differs (unless ``--other-data``) and runs that disagree. Returns what was taken."""
    from sp_adapter.errors import CLIError

    per_source = [(source, data_settings(source_record(source), keys)) for source in sources]
    known = [(source, s) for source, s in per_source if s]
    if not known:
        return []
    merged: dict[str, Any] = {}
    for key in keys:
        values = {repr(s[key]): (source, s[key]) for source, s in known if key in s}
        if len(values) > 1 and key not in given:
            listed = "; ".join(f"{source}: {value}" for source, value in values.values())
            raise CLIError(f"the models were trained on different data (--{_dash(key)}: "
                           f"{listed}); give --{_dash(key)} to score them all on one")
        if values:
            merged[key] = next(iter(values.values()))[1]
    if merged.get("dataset") not in (None, "synthetic"):
        merged.pop("blur", None)
    differ = [f"--{_dash(k)} {getattr(args, k)} (trained on {v})" for k, v in merged.items()
              if k in given and getattr(args, k) != v]
    if differ and not getattr(args, "other_data", False):
        raise CLIError(f"the model was trained on other data: {'; '.join(differ)}; leave "
                       "these out to use the run's, or add --other-data to use them anyway")
    taken = []
    for key, value in merged.items():
        if key not in given and getattr(args, key) != value:
            setattr(args, key, value)
            taken.append(f"--{_dash(key)} {value}")
    return taken


def _dash(key: str) -> str:
    return key.replace("_", "-")
