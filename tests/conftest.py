"""Shared fixtures: a real offline teacher (built once) and small inputs."""

from __future__ import annotations

import pytest
import torch

from sp_adapter.prior.config import TeacherSpec
from sp_adapter.prior.teacher import Teacher, build_feature_model

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def teacher() -> Teacher:
    """The built-in EfficientNet-Lite0 teacher, calibrated on a few smooth random images
    (calibration on the real photos is tested in test_teacher.py)."""
    t = Teacher(build_feature_model(TeacherSpec()), name="tf_efficientnet_lite0")
    g = torch.Generator().manual_seed(0)
    images = [
        torch.nn.functional.avg_pool2d(torch.rand(3, 96, 96, generator=g)[None], 5, 1, 2)[0]
        for _ in range(4)
    ]
    return t.calibrate(images)


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed (blurry, sharp) batch of 2 images, 64x64."""
    g = torch.Generator().manual_seed(1)
    sharp = torch.rand(2, 3, 64, 64, generator=g)
    blurry = torch.nn.functional.avg_pool2d(sharp, 7, 1, 3, count_include_pad=False)
    return blurry, sharp


@pytest.fixture
def one_thread():
    """One torch thread for tiny models: OpenMP threads stall when other jobs share the
    cores (seen: 30-60x slower steps with 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
