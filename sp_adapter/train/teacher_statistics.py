"""Measure the offline teachers' standardisation statistics and write the files shipped in
``sp_adapter/statistics/`` (read by :func:`sp_adapter.prior.statistics.stored_statistics`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sp_adapter.files.atomic import write_atomic
from sp_adapter.prior.config import TeacherSpec, teacher_at_levels
from sp_adapter.prior.statistics import STATISTICS_DIR, Statistics, statistics_file
from sp_adapter.prior.teacher import Teacher, default_calibration_images


def measure_statistics(arch: str) -> tuple[TeacherSpec, Statistics]:
    """Calibrate the offline teacher ``arch`` at all its feature levels on the built-in
    training photos, on one CPU thread (so the sums come out the same on every run);
    needs the ``demo`` extra. Returns the spec measured and its statistics."""
    import timm

    levels = len(timm.create_model(arch, pretrained=False, features_only=True).feature_info)
    spec = teacher_at_levels(tuple(range(levels)), arch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher = Teacher.from_spec(spec, calibrate=False)
        teacher.calibrate(default_calibration_images())
    finally:
        torch.set_num_threads(threads)
    return spec, [(m.clone(), s.clone()) for m, s in teacher.statistics()]


def write_statistics(arch: str, folder: str | os.PathLike = STATISTICS_DIR) -> Path:
    """Measure the statistics of ``arch`` (:func:`measure_statistics`) and write its file
    atomically in ``folder``."""
    spec, statistics = measure_statistics(arch)
    stored = {
        "arch": arch, "weights": spec.weights, "input_mean": list(spec.mean),
        "input_std": list(spec.std),
        "images": "sp_adapter.prior.teacher.default_calibration_images()",
        "levels": [{"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
                   for mean, std in statistics],
    }
    path = statistics_file(arch, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(stored) + "\n").encode("utf-8"))
    return path
