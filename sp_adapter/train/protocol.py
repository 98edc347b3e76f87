"""Comparisons at equal budget: train several arms (base, +SP, ablations) on identical data.

Two protocols:

* ``"finetune"`` (default): the bare backbone trains ``pretrain_steps`` once; every arm
  starts from those weights (wrapped or not) and trains ``arm_steps`` more on the SAME
  batches (the data stream continues at ``pretrain_steps`` for every arm) with the same
  seeds. Arms differ only in what they add. An arm whose backbone options differ gets its
  own pre-training on the same batches, or, with ``widen_base`` (the widened control),
  starts from the shared base widened to its options (:func:`~sp_adapter.train.widen.widen_into`:
  at its first step it computes exactly the base, as a freshly wrapped network does).
* ``"scratch"``: every arm trains ``arm_steps`` from a fresh initialisation (the same
  backbone weights for arms with the same options) on the same batches.

Every arm is scored on the same test set; the time of each part is measured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.wrap import wrap
from sp_adapter.errors import OptionError
from sp_adapter.prior.config import PriorConfig
from sp_adapter.prior.teacher import Teacher, load_teacher
from sp_adapter.train.backbones import backbone_spec
from sp_adapter.train.config import TrainConfig
from sp_adapter.train.data import SampleMemo
from sp_adapter.train.distributed import DistInfo
from sp_adapter.train.evaluate import EvalResult, evaluate, score_inputs, with_input_scores
from sp_adapter.train.model_spec import ModelSpec
from sp_adapter.train.student import pretrain_student
from sp_adapter.train.trainer import Trainer, resolve_device, seed_everything
from sp_adapter.train.widen import widen_into

ProtocolKind = Literal["finetune", "scratch"]



class BaseStore(Protocol):
    """Keeps the shared bases of the fine-tuning protocol between runs
    (``benchmarks/base_store.py`` is the one the benchmarks use)."""

    def key(self, backbone: str, options: dict[str, Any], config: TrainConfig) -> dict: ...

    def load(self, key: dict) -> Any: ...

    def save(self, key: dict, state: dict[str, torch.Tensor], seconds: float) -> None: ...

@dataclass(frozen=True)
class Arm:
    """One variant of a comparison.

    Attributes:
        name: a short label (also the run sub-folder).
        prior: the prior's options; ``None``: the bare backbone.
        options: backbone options overriding the shared ones (e.g. a wider control).
        student_steps: student-only distillation steps before joint training.
        train: ``TrainConfig`` fields overriding the shared ones for this arm's own
            steps (e.g. ``{"embedding_lr_scale": 0.1}``); the shared pre-training keeps
            the shared config.
        widen_base: (fine-tuning) start from the shared base widened to ``options``
            instead of pre-training a base of its own.
    """

    name: str
    prior: PriorConfig | None = None
    options: dict[str, Any] = field(default_factory=dict)
    student_steps: int = 0
    train: dict[str, Any] = field(default_factory=dict)
    widen_base: bool = False


@dataclass
class ArmResult:
    """An arm's model, its score and its compute: ``seconds`` in its own training steps,
    ``shared_seconds`` in the shared pre-training (``shared_from``: the stored base it was
    read from, whose training took those seconds in an earlier run; ``widened_base``: it
    started from that base widened), ``student_seconds`` in student pre-training,
    ``data_seconds`` waiting for its batches (not compute)."""

    name: str
    model: nn.Module
    spec: ModelSpec
    params: int
    steps: int
    seconds: float
    shared_steps: int = 0
    shared_seconds: float = 0.0
    shared_from: str | None = None
    widened_base: bool = False
    student_steps: int = 0
    student_seconds: float = 0.0
    data_seconds: float = 0.0
    evaluation: EvalResult | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[torch.Tensor] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers (no model)."""
        out = {
            "name": self.name, "params": self.params, "steps": self.steps,
            "seconds": round(self.seconds, 3), "shared_steps": self.shared_steps,
            "shared_seconds": round(self.shared_seconds, 3),
            **({"shared_from": self.shared_from} if self.shared_from else {}),
            **({"widened_base": True} if self.widened_base else {}),
            "student_steps": self.student_steps,
            "student_seconds": round(self.student_seconds, 3),
            "data_seconds": round(self.data_seconds, 3),
            "spec": self.spec.to_dict(),
        }
        if self.evaluation is not None:
            out.update(psnr=self.evaluation.psnr, ssim=self.evaluation.ssim,
                       test_count=self.evaluation.count,
                       blurry_psnr=self.evaluation.blurry_psnr)
        return out


def count_parameters(model: nn.Module) -> int:
    """Parameters of the model, prior included (the teacher is not part of it)."""
    return sum(p.numel() for p in model.parameters())


def _options_key(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True)


def run_arms(
    arms: Sequence[Arm],
    train_data: Dataset,
    test_data: Dataset | None,
    config: TrainConfig,
    *,
    backbone: str | Backbone = "unet",
    options: dict[str, Any] | None = None,
    protocol: ProtocolKind = "finetune",
    pretrain_steps: int = 0,
    arm_steps: int | None = None,
    teacher: Teacher | None = None,
    run_root: str | os.PathLike | None = None,
    eval_batch_size: int = 8,
    share_samples: bool = True,
    keep_outputs: bool = False,
    val_data: Dataset | None = None,
    base_store: BaseStore | None = None,
) -> list[ArmResult]:
    """Train and score every arm; see the module docstring.

    Args:
        config: training options shared by all runs (``steps`` and ``data_start`` are set
            here: ``pretrain_steps`` for the shared pre-training, ``arm_steps`` per arm).
        options: backbone options shared by the arms.
        arm_steps: steps of each arm (default ``config.steps``).
        teacher: one teacher shared by the arms with a prior (built once if omitted).
        run_root: arms write their runs (log, final checkpoint) to ``run_root/<name>``.
        share_samples: synthesise each training sample once for all arms (they read the
            same stream); identical batches either way, only faster.
        keep_outputs: keep each arm's deblurred test images (``ArmResult.outputs``, CPU).
        val_data: scored every ``config.val_every`` steps of each arm's own run (not the
            shared pre-training); the scores are in ``ArmResult.history`` (``val_psnr``).
            When it is ``test_data`` itself, an arm's final validation is its test score
            (not computed twice; the same numbers).
        base_store: keep the shared bases (finetune) on disk and take them from there
            when an earlier run trained them (``ArmResult.shared_seconds`` is then the
            seconds that training took, ``shared_from`` the file).
    """
    if protocol not in ("finetune", "scratch"):
        raise OptionError(f"protocol must be 'finetune' or 'scratch', got {protocol!r}")
    spec = backbone_spec(backbone)
    shared = dict(options or {})
    arm_steps = config.steps if arm_steps is None else arm_steps
    if protocol == "scratch":
        pretrain_steps = 0
    if len({arm.name for arm in arms}) != len(arms):
        raise OptionError("arm names must be unique")
    for arm in arms:  # before any training
        if arm.widen_base and not (protocol == "finetune" and pretrain_steps > 0):
            raise OptionError(f"arm {arm.name!r}: widen_base needs the fine-tuning protocol "
                              "with pre-training steps (a shared base to widen)")
    if teacher is None and any(arm.prior is not None for arm in arms):
        first = next(arm.prior for arm in arms if arm.prior is not None)
        teacher = load_teacher(first.teacher)
    root = Path(run_root) if run_root is not None else None
    arm_data = train_data
    if share_samples and len(arms) > 1 and config.num_workers == 0:
        arm_data = SampleMemo(train_data)
    # backbone options -> (base weights, seconds its training took, the stored file it
    # came from or None)
    pretrained: dict[str, tuple[dict[str, Any], float, str | None]] = {}
    # with the test set as validation set, an arm's final validation is its test score
    reuses_validation = (val_data is not None and val_data is test_data and not keep_outputs
                         and config.val_batch_size == eval_batch_size)
    inputs: EvalResult | None = None  # the blurry inputs' scores, the same for every arm
    results = []
    for arm in arms:
        arm_options = {**shared, **arm.options}
        base_options = shared if arm.widen_base else arm_options
        shared_seconds, shared_from = 0.0, None
        if protocol == "finetune" and pretrain_steps > 0:
            key = _options_key(base_options)
            base_config = replace(config, steps=pretrain_steps, data_start=0)
            store_key = base_store.key(spec.name, base_options, base_config) if base_store else {}
            stored = base_store.load(store_key) if base_store and key not in pretrained else None
            if stored is not None:
                pretrained[key] = (stored.state, stored.seconds, str(stored.path))
            if key not in pretrained:
                seed_everything(config.seed)
                base = spec.build(**base_options)
                tag = "pretrain" if base_options == shared else f"pretrain_{arm.name}"
                trainer = Trainer(
                    base, train_data, base_config,
                    run_dir=root / tag if root else None, backbone=spec,
                    model_spec=ModelSpec(spec.name, base_options), name=tag,
                )
                result = trainer.fit()
                state = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
                pretrained[key] = (state, result.seconds, None)
                if base_store is not None:
                    base_store.save(store_key, state, result.seconds)
            state, shared_seconds, shared_from = pretrained[key]
        seed_everything(config.seed)
        model = spec.build(**arm_options)
        if arm.widen_base:
            base = spec.build(**base_options)
            base.load_state_dict(state, strict=True)
            widen_into(base, model)
        elif protocol == "finetune" and pretrain_steps > 0:
            model.load_state_dict(state, strict=True)
        seed_everything(config.seed + 1)
        if arm.prior is not None:
            model = wrap(model, teacher=teacher, config=arm.prior)
        student_seconds = 0.0
        if arm.student_steps:
            if arm.prior is None:
                raise OptionError(f"arm {arm.name!r}: student_steps needs a prior")
            student = pretrain_student(
                model, arm_data, arm.student_steps, batch_size=config.batch_size,
                lr=config.lr, seed=config.seed, device=resolve_device(config.device, DistInfo()),
                data_start=pretrain_steps, progress=config.progress,
                num_workers=config.num_workers,
            )
            student_seconds = student.seconds
        model_spec = ModelSpec(spec.name, arm_options,
                               arm.prior.to_dict() if arm.prior is not None else None)
        trainer = Trainer(
            model, arm_data,
            replace(config, **arm.train, steps=arm_steps, data_start=pretrain_steps),
            run_dir=root / arm.name if root else None, backbone=spec, model_spec=model_spec,
            name=arm.name, val_data=val_data,
        )
        result = trainer.fit()
        evaluation = None
        outputs: list[torch.Tensor] | None = [] if keep_outputs else None

        def keep(blurry, restored, sharp, keys, outputs=outputs) -> None:
            if outputs is not None:
                outputs.extend(restored.detach().cpu())

        if reuses_validation:
            # the trainer's final validation already scored this arm on the test set
            if inputs is None:
                inputs = score_inputs(test_data, device=trainer.device,
                                      batch_size=eval_batch_size)
            evaluation = with_input_scores(result.validation, inputs)
        elif test_data is not None:
            evaluation = evaluate(trainer.module, test_data, spec, device=trainer.device,
                                  batch_size=eval_batch_size, score_blurry=True,
                                  progress=config.progress, on_batch=keep)
        results.append(ArmResult(
            name=arm.name, model=trainer.module, spec=model_spec,
            params=count_parameters(trainer.module), steps=arm_steps, seconds=result.seconds,
            shared_steps=pretrain_steps, shared_seconds=shared_seconds, shared_from=shared_from,
            widened_base=arm.widen_base, student_steps=arm.student_steps,
            student_seconds=student_seconds, data_seconds=result.data_seconds,
            evaluation=evaluation, history=result.history, outputs=outputs,
        ))
    return results
