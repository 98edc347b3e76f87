"""The demo's options, and the committed benchmark behind its default budget.

The demo trains four rows at one budget: the blurry input (no training), the bare UNet,
the bare UNet widened to the +SP arm's parameter count (the capacity control), and the
UNet with the paper's prior (Table 4's Net6: HCL distillation, Eq. 4, with CLC, MLA and
SAT). Its defaults are one setting of ``benchmarks/quality.py`` (:data:`BENCHMARK`),
so the spread over seeds of what the demo prints is measured and committed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from sp_adapter.prior.config import PriorConfig, TeacherSpec, teacher_at_levels

EVAL_CROPS_PER_PHOTO = 16
"""Crops per test photo of the test set ``sp-adapter eval --dataset synthetic`` scores."""


@dataclass
class DemoConfig:
    """Options of the demo (the CLI's ``sp-adapter demo`` flags).

    The defaults are the setting of :data:`BENCHMARK` (seed 0 of it: a test checks the
    demo against the benchmark on a tiny budget). Where they differ from ``sp-adapter
    train``'s defaults, and why:

    * the budget (``steps``, ``batch_size``, ``crop``, ``lr``): minutes on a CPU, not
      hours; the benchmark shows the prior beating both controls at it;
    * ``blur="mild"``: at this budget the bare UNet gains little on severe blur, so the
      table would compare noise;
    * no perceptual term (Eq. 8's VGG16 weights need a download; the demo is offline);
    * ``teacher_levels=(0, 1, 2)`` (``train``: 1-3): the prior adds 73 k parameters
      instead of 763 k, so the widened control (UNet width 17 instead of 27) fits the
      time.

    HCL (Net6) and the 1x1 prior convolutions are ``train``'s defaults too.

    Attributes:
        out: the report folder.
        overwrite: replace the demo's files in a non-empty ``out``.
        steps: training steps of each arm in all (shared pre-training included).
        protocol: ``"finetune"``: the base trains ``steps - arm_steps`` steps, then each
            arm continues ``arm_steps``; ``"scratch"``: each arm trains ``steps``.
        arm_fraction: the share of ``steps`` trained after the split (fine-tuning).
        batch_size, crop, lr, beta, train_length: training (``train_length`` samples per
            epoch; new ones every epoch).
        blur: ``"mild"`` (15-31 px kernels) or ``"severe"`` (31-65 px).
        test_crop, test_crops_per_photo: the fixed test set; at
            :data:`EVAL_CROPS_PER_PHOTO` per photo it is the one ``sp-adapter eval``
            scores, and the report's eval command reproduces its table.
        width: UNet width of the base and the +SP arm.
        widened: also train the capacity control, the bare UNet at the width whose
            parameter count is nearest the +SP arm's, started (fine-tuning) from the
            shared base widened so that it computes exactly the base, as the freshly
            wrapped +SP arm does (:func:`~sp_adapter.train.widen.widen_into`).
        student, student_steps: the prior's student and its HCL pre-training steps
            (none without ``hcl``).
        teacher: the offline teacher's timm architecture
            (:data:`~sp_adapter.prior.config.WHEEL_TEACHERS`).
        teacher_levels: the teacher's feature levels (timm's ``out_indices``, finest
            first; ``None``: the default levels).
        hcl: distil the prior from the teacher (Eq. 4; Table 4's Net6, the paper's
            method); ``False`` is Table 4's Net0*: the teacher-initialised student
            trains only through the deblurring loss.
        prior_kernel_size: kernel of the prior's CLC, MLA and SAT convolutions
            (:attr:`~sp_adapter.prior.config.PriorConfig.kernel_size`).
        embedding_lr_scale: learning-rate factor of MLA/SAT in the +SP arm (1: the
            paper's single learning rate).
        grids: how many test images get pictures (``None``: all).
        seed, device, progress: as in :class:`~sp_adapter.train.TrainConfig`.
    """

    out: str = "report"
    overwrite: bool = False
    steps: int = 300
    protocol: Literal["finetune", "scratch"] = "finetune"
    arm_fraction: float = 0.5
    batch_size: int = 4
    crop: int = 96
    lr: float = 1e-3
    beta: float = 0.1
    train_length: int = 1000
    blur: str = "mild"
    test_crop: int = 128
    test_crops_per_photo: int = EVAL_CROPS_PER_PHOTO
    width: int = 16
    widened: bool = True
    student: Literal["teacher", "small"] = "teacher"
    student_steps: int = 100
    teacher: str = TeacherSpec.arch
    teacher_levels: tuple[int, ...] | None = (0, 1, 2)
    hcl: bool = True
    prior_kernel_size: int = PriorConfig.kernel_size
    embedding_lr_scale: float = 1.0
    grids: int | None = None
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.prior()  # a wrong teacher, wrong levels or a wrong kernel fail before any work

    def prior(self) -> PriorConfig:
        """The prior of the +SP arm."""
        return PriorConfig(student=self.student, hcl=self.hcl,
                           kernel_size=self.prior_kernel_size, teacher=self.teacher_spec())

    def teacher_spec(self) -> TeacherSpec:
        """The teacher of the +SP arm."""
        return teacher_at_levels(self.teacher_levels, self.teacher)

    def split(self) -> tuple[int, int]:
        """``(shared pre-training steps, steps per arm)``."""
        if self.protocol == "scratch":
            return 0, self.steps
        arm = min(self.steps, max(1, round(self.steps * self.arm_fraction)))
        return self.steps - arm, arm

    def student_steps_run(self) -> int:
        """Student pre-training steps the +SP arm runs (HCL distillation: none without)."""
        return self.student_steps if self.hcl else 0


NOT_TRAINING = ("out", "overwrite", "grids", "seed", "device", "progress")
"""DemoConfig fields that change neither the arms' training nor the test set."""


@dataclass(frozen=True)
class Benchmark:
    """The committed 3-seed run of ``benchmarks/quality.py`` at the demo's defaults.

    Attributes:
        file: the result file (it opens with its exact command).
        over_base, over_wide: the +SP arm's PSNR gain (dB) over the base and over the
            widened base, mean and standard deviation of the per-seed differences.
        seeds: the seeds run.
    """

    file: str
    over_base: tuple[float, float]
    over_wide: tuple[float, float]
    seeds: tuple[int, ...] = (0, 1, 2)

    def covers(self, cfg: DemoConfig) -> list[str]:
        """The training options where ``cfg`` differs from the benchmark's (the demo's
        defaults); empty when the benchmark measured this setting."""
        default = DemoConfig()
        return [f.name for f in fields(DemoConfig) if f.name not in NOT_TRAINING
                and getattr(cfg, f.name) != getattr(default, f.name)]


BENCHMARK = Benchmark(
    file="benchmarks/results/quality_unet_demo_w150.md",
    over_base=(0.055, 0.016),
    over_wide=(0.054, 0.013),
)
"""The benchmark behind the default budget (a test checks these numbers against its
JSON file, and the defaults against its options)."""
