"""``TrainConfig``: every option of a training run, in one dataclass (Sec. 4.1 defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from sp_adapter.errors import OptionError

AmpMode = Literal["auto", "bf16", "fp16", "off"]
PerceptualKind = Literal["vgg16", "teacher", "none"]


@dataclass
class TrainConfig:
    """Options of :class:`~sp_adapter.train.Trainer`.

    Optimisation (Sec. 4.1): AdamW (0.9, 0.999), lr 2e-4 decayed with a cosine to 1e-6
    over ``steps``, after an optional linear warm-up.

    Attributes:
        steps: optimiser steps of the run (the cosine schedule spans them).
        batch_size: the GLOBAL batch; under DDP each of the ``W`` processes takes
            ``batch_size / W`` samples (must divide), so results do not depend on ``W``.
        lr, min_lr, betas, weight_decay: AdamW and the cosine schedule (weight decay is
            PyTorch's AdamW default; the paper does not give one).
        embedding_lr_scale: learning-rate factor of the prior's embeddings (MLA and SAT,
            Eqs. 5-6), which start at zero so the wrapped network starts exactly as the
            backbone; a factor below 1 lets that modulation grow gently when fine-tuning.
        student_lr_scale: learning-rate factor of the prior's student F_S (Sec. 3.1) in
            joint training; 0 freezes it (turns off its parameters' gradients, as
            ``prior_only`` does for the backbone: its features stay those of its
            initialisation or student pre-training; CLC, MLA and SAT still train).
        backbone_lr_scale: learning-rate factor of the backbone's own parameters in a
            wrapped network (every parameter outside the prior), for fine-tuning a trained
            network: the new prior modules learn at ``lr``, the backbone at
            ``lr * backbone_lr_scale``; 0 freezes it (as ``prior_only``). A bare network
            has no prior and ignores it.
        warmup_steps: linear warm-up from ``lr / warmup_steps`` to ``lr``.
        grad_clip: clip the global gradient norm to this (``None``: no clipping).
        amp: mixed precision on CUDA: ``"auto"`` (bf16 where supported, else fp16),
            ``"bf16"``, ``"fp16"`` (with a gradient scaler) or ``"off"``. Nothing on CPU.
        loss: the reconstruction loss by name (``sp_adapter.train.losses.BACKBONE_LOSSES``);
            ``None``: the backbone's own.
        alpha, beta: weights of the perceptual and prior terms of Eq. (7).
        perceptual: feature network of Eq. (8): ``"vgg16"`` (the paper's; torchvision
            downloads its weights once), ``"teacher"`` (offline) or ``"none"``.
        prior_only: train only the prior's parameters (the backbone is frozen).
        cache_teacher: compute the teacher's features of each sharp sample once and
            reuse them (needs a dataset returning keys and samples that repeat).
        new_samples_each_epoch: call the dataset's ``set_epoch`` every epoch (fresh random
            crops/kernels); ``False`` repeats the same samples (a fixed-crop dataset).
        data_start: batches of the data stream already consumed before step 0 (the
            fine-tuning protocol continues the stream of the pre-training).
        seed: seeds the model-side RNGs at the start and the data order.
        val_every, log_every, checkpoint_every: in steps; 0 = only at the end (logging:
            never). ``keep_checkpoints`` latest checkpoints are kept.
        val_batch_size: batch size of validation.
        num_workers: DataLoader workers.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        find_unused_parameters: for DDP; ``None``: True when the model is wrapped (prior
            modules of levels that do not run would otherwise stall DDP), else False.
        progress: show tqdm progress bars.
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-4
    min_lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    embedding_lr_scale: float = 1.0
    student_lr_scale: float = 1.0
    backbone_lr_scale: float = 1.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    amp: AmpMode = "auto"
    loss: str | None = None
    alpha: float = 0.01
    beta: float = 0.1
    perceptual: PerceptualKind = "vgg16"
    prior_only: bool = False
    cache_teacher: bool = False
    new_samples_each_epoch: bool = True
    data_start: int = 0
    seed: int = 0
    val_every: int = 0
    log_every: int = 10
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    val_batch_size: int = 8
    num_workers: int = 0
    device: str = "auto"
    find_unused_parameters: bool | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise OptionError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.min_lr <= self.lr:
            raise OptionError(f"need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise OptionError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {self.amp!r}")
        if self.perceptual not in ("vgg16", "teacher", "none"):
            raise OptionError(
                f"perceptual must be 'vgg16', 'teacher' or 'none', got {self.perceptual!r}"
            )
        if self.embedding_lr_scale <= 0:
            raise OptionError(
                f"embedding_lr_scale must be positive, got {self.embedding_lr_scale}"
            )
        if self.student_lr_scale < 0:
            raise OptionError(
                f"student_lr_scale must be >= 0 (0 freezes the student), got "
                f"{self.student_lr_scale}"
            )
        if self.backbone_lr_scale < 0:
            raise OptionError(
                f"backbone_lr_scale must be >= 0 (0 freezes the backbone), got "
                f"{self.backbone_lr_scale}"
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise OptionError(f"grad_clip must be positive or None, got {self.grad_clip}")
        for name in ("warmup_steps", "data_start", "val_every", "log_every",
                     "checkpoint_every", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise OptionError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise OptionError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise OptionError(f"unknown TrainConfig keys {sorted(unknown)}")
        return cls(**data)
