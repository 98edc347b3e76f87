"""``ModelSpec``: what a checkpoint needs to rebuild its network (backbone + prior).

A training checkpoint stores the spec next to the weights, so ``sp-adapter deblur`` and
``sp-adapter eval`` rebuild the same network from the file alone. For inference the
prior's student is built from the teacher's ARCHITECTURE only (no pretrained weights
needed): every trained weight comes from the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sp_adapter.attach.state import get_hook, get_prior
from sp_adapter.attach.wrap import wrap
from sp_adapter.errors import CheckpointError, CheckpointNotFoundError
from sp_adapter.prior.config import PriorConfig
from sp_adapter.prior.teacher import Teacher, build_feature_model, load_teacher
from sp_adapter.train.backbones import backbone_spec
from sp_adapter.train.checkpoint import latest_checkpoint, load_checkpoint
from sp_adapter.train.strength_file import saved_strength


@dataclass
class ModelSpec:
    """A backbone by name, its options, and the prior (``None``: no prior).

    Attributes:
        backbone: a name of :data:`~sp_adapter.train.backbones.BACKBONES`.
        options: keyword options of the backbone's constructor (e.g. ``{"width": 32}``).
        prior: ``PriorConfig.to_dict()`` of the prior, or ``None`` for the bare backbone.
        levels: the wrapped levels by name (``None``: the backbone's defaults).
    """

    backbone: str = "unet"
    options: dict[str, Any] = field(default_factory=dict)
    prior: dict[str, Any] | None = None
    levels: list[str] | None = None

    @property
    def prior_config(self) -> PriorConfig | None:
        return None if self.prior is None else PriorConfig.from_dict(self.prior)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**data)

    def build(self, teacher: Teacher | str | None = "pretrained") -> nn.Module:
        """The network, wrapped when the spec has a prior.

        Args:
            teacher: ``"pretrained"``: the config's teacher with its weights, calibrated
                (for training); ``"architecture"``: the teacher's architecture only (for
                loading trained weights); a :class:`Teacher` to share one; ``None``: no
                teacher (only for a ``"small"`` student).
        """
        model = backbone_spec(self.backbone).build(**self.options)
        config = self.prior_config
        if config is None:
            return model
        if teacher == "pretrained":
            teacher = load_teacher(config.teacher)
        elif teacher == "architecture":
            spec = config.teacher
            teacher = Teacher(build_feature_model(spec, pretrained=False), spec.mean, spec.std,
                              name=spec.arch)
        return wrap(model, self.levels, teacher=teacher, config=config)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the latest checkpoint of a run folder."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointNotFoundError(f"no checkpoint in the run folder {path}")
        return found
    if not path.is_file():
        raise CheckpointNotFoundError(f"no such checkpoint or run folder: {path}")
    return path


def load_trained(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild and load a trained network from a checkpoint or run folder.

    Returns the model (in eval mode, on the CPU; for inference: a wrapped model has no
    teacher, so ``prior_loss`` refuses it), its spec, and the checkpoint's other entries
    (``step``, ``config``, ``metrics``...). A prior strength saved for this checkpoint
    (``sp-adapter calibrate --save``, :mod:`~sp_adapter.train.strength_file`) is applied;
    ``info["prior_strength"]`` is the strength loaded (``None`` without a prior).
    """
    file = resolve_checkpoint(path)
    ckpt = load_checkpoint(file)
    if ckpt.get("model_spec") is None:
        raise CheckpointError(
            f"{file} has no model spec (it was trained from Python with a custom model): "
            "rebuild the network yourself and load checkpoint['model'] into it"
        )
    spec = ModelSpec.from_dict(ckpt["model_spec"])
    model = spec.build(teacher="architecture")
    model.load_state_dict(ckpt["model"], strict=True)
    strength = None
    if spec.prior is not None:
        # the teacher was built without its weights: never let it supervise anything
        get_hook(model).teacher = None
        strength = saved_strength(file)
        if strength is not None:
            get_prior(model).strength = strength
        strength = get_prior(model).strength
    info = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler",
                                                       "scaler", "rng")}
    info["path"] = str(file)
    info["prior_strength"] = strength
    return model.eval(), spec, info
