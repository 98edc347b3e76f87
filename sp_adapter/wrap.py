"""``wrap`` / ``unwrap`` / ``prior_loss``: the two lines a training script adds."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .config import PriorConfig, TeacherSpec
from .hcl import hcl_loss
from .hook import HOOK_ATTR, PRIOR_ATTR, SPEHook, check_image
from .levels import BackboneMap, Level, first_tensor
from .prior import SemanticPrior
from .teacher import Teacher, build_feature_model, feature_info, load_teacher

_FROM_CONFIG: Any = object()

LevelLike = str | int | Level | dict | tuple


def base_model(model: nn.Module) -> nn.Module:
    """The user's network inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def is_wrapped(model: nn.Module) -> bool:
    return HOOK_ATTR in base_model(model).__dict__


def get_hook(model: nn.Module) -> SPEHook:
    """The :class:`SPEHook` of a wrapped model."""
    inner = base_model(model)
    hook = inner.__dict__.get(HOOK_ATTR)
    if hook is None:
        raise ValueError(
            f"{type(inner).__name__} is not wrapped: call sp_adapter.wrap(model) first"
        )
    return hook


def get_prior(model: nn.Module) -> SemanticPrior:
    """The :class:`SemanticPrior` module a wrapped model carries."""
    get_hook(model)
    return getattr(base_model(model), PRIOR_ATTR)


def backbone_map_for(model: nn.Module) -> BackboneMap | None:
    """The level map of ``model``: its own ``sp_backbone_map()``, else the adapter table."""
    own = getattr(model, "sp_backbone_map", None)
    if callable(own):
        return own()
    from .adapters import adapter_for

    return adapter_for(model)


def _as_level(item: LevelLike, position: int) -> Level:
    if isinstance(item, Level):
        level = item
    elif isinstance(item, dict):
        level = Level(**item)
    elif isinstance(item, tuple) and len(item) in (2, 3):
        site, *rest = item
        if len(rest) == 1:
            level = Level(site=site, channels=rest[0])
        else:
            level = Level(site=site, skip=rest[0], channels=rest[1])
    else:
        raise TypeError(
            f"levels[{position}] is {item!r}: give a level name or index of the backbone map, a "
            "Level, a dict of Level fields, or a tuple (site, channels) / (site, skip, channels)"
        )
    if not isinstance(level.channels, int) or level.channels < 1:
        raise ValueError(
            f"levels[{position}]: channels must be a positive int, got {level.channels!r}"
        )
    return level


def resolve_levels(
    model: nn.Module, levels: Sequence[LevelLike] | None, backbone: BackboneMap | None
) -> dict[str, Level]:
    """The levels to wrap, by name; errors name what exists."""
    if levels is None:
        if backbone is None:
            from .adapters import known_backbones

            raise ValueError(
                f"no level map is known for {type(model).__name__} (known: {known_backbones()}); "
                "pass levels=[Level(site=..., skip=..., channels=...), ...] or "
                "backbone=BackboneMap(...)"
            )
        return backbone.select(None)
    if isinstance(levels, (str, int, Level, dict)):
        levels = [levels]
    resolved: dict[str, Level] = {}
    for position, item in enumerate(levels):
        if isinstance(item, (str, int)):
            if backbone is None:
                raise ValueError(
                    f"level {item!r} given by name, but {type(model).__name__} has no level map; "
                    "give Level(site=..., channels=...) objects instead"
                )
            ((name, level),) = backbone.select([item]).items()
        else:
            name, level = f"level{position + 1}", _as_level(item, position)
        if name in resolved:
            raise ValueError(f"level {name!r} is given twice")
        resolved[name] = level
    return resolved


def _default_prior_levels(levels: dict[str, Level], n_prior: int) -> dict[str, Level]:
    out = {}
    for i, (name, level) in enumerate(levels.items()):
        if level.prior_level >= n_prior:
            raise ValueError(
                f"level {name!r} asks for prior level {level.prior_level}; "
                f"the teacher has {n_prior}"
            )
        out[name] = (
            level
            if level.prior_level >= 0
            else dataclasses.replace(level, prior_level=min(i, n_prior - 1))
        )
    return out


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _trained_prior(
    model: nn.Module,
    backbone: BackboneMap | None,
    prior: SemanticPrior | str | os.PathLike,
    revision: str | None,
    teacher: Any,
    levels: Any,
    config: PriorConfig | None,
    options: dict[str, Any],
) -> tuple[SemanticPrior, Teacher | None]:
    """The trained prior ``wrap(prior=...)`` attaches (loaded if a folder / repo id), checked
    against ``model``, and the teacher (``None`` unless one is given)."""
    from .hub import check_prior_fits, check_teacher_fits, from_pretrained

    if levels is not None or config is not None or options:
        raise ValueError(
            "a trained prior brings its own levels and options: do not pass levels=, config= "
            f"or options ({sorted(options)}) together with prior="
        )
    if isinstance(prior, (str, os.PathLike)):
        prior = from_pretrained(prior, revision=revision)
    elif not isinstance(prior, SemanticPrior):
        raise TypeError(
            f"prior must be a SemanticPrior, a folder or a Hub repo id, got {type(prior).__name__}"
        )
    elif revision is not None:
        raise ValueError("prior_revision applies only when prior names a Hub repository")
    check_prior_fits(prior, model, backbone)
    teacher_module = load_teacher(None if teacher is _FROM_CONFIG else teacher)
    check_teacher_fits(prior, teacher_module)
    return prior, teacher_module


def wrap(
    model: nn.Module,
    levels: Sequence[LevelLike] | None = None,
    *,
    backbone: BackboneMap | None = None,
    teacher: TeacherSpec | Teacher | nn.Module | str | None = _FROM_CONFIG,
    config: PriorConfig | None = None,
    prior: SemanticPrior | str | os.PathLike | None = None,
    prior_revision: str | None = None,
    **options: Any,
) -> nn.Module:
    """Attach a semantic prior to ``model``'s decoder levels through forward hooks.

    Args:
        model: any U-shaped network; its code and ``state_dict`` keys are not changed.
        levels: which levels: names or indices of the backbone's level map, or
            :class:`Level` objects (dicts/tuples) for a network no adapter knows.
            ``None``: the backbone's default levels.
        backbone: a :class:`BackboneMap` for a network the adapters don't know.
        teacher: the frozen teacher for the prior loss: a :class:`TeacherSpec`, a timm
            name, a ``features_only`` module, a :class:`Teacher`, or ``None`` for
            inference only. Default: ``config.teacher`` (the offline EfficientNet-Lite0).
        config: the prior's options; keyword ``options`` override its fields
            (e.g. ``clc=False, fusion="add", student="small"``).
        prior: a trained prior to attach: a :class:`SemanticPrior`, a folder written by
            :func:`sp_adapter.save_pretrained`, or a Hub repository ``"org/name"`` (loaded
            with :func:`sp_adapter.from_pretrained`). Its levels and options come with it
            (no ``levels``/``config``/``options``); it refuses a network it was not trained
            for. The teacher then defaults to ``None`` (inference); give one to train further.
        prior_revision: branch, tag or commit of the Hub repository ``prior`` names.

    Returns:
        ``model`` itself, with ``model.sp_prior`` added (so ``model.parameters()`` holds the
        prior's trainable parameters) and hooks registered. Its output at initialisation is
        bit-exact with the unwrapped model's.
    """
    inner = base_model(model)
    if is_wrapped(inner):
        raise ValueError(
            f"{type(inner).__name__} is already wrapped; call sp_adapter.unwrap(model) first"
        )
    if PRIOR_ATTR in dir(inner):
        raise ValueError(f"{type(inner).__name__} already has an attribute {PRIOR_ATTR!r}")
    backbone = backbone if backbone is not None else backbone_map_for(inner)
    image_getter = backbone.image if backbone is not None else first_tensor
    if prior is not None:
        prior, teacher_module = _trained_prior(
            inner, backbone, prior, prior_revision, teacher, levels, config, options
        )
        chosen = prior.levels
    else:
        config = dataclasses.replace(config or PriorConfig(), **options)
        chosen = resolve_levels(inner, levels, backbone)
        if teacher is _FROM_CONFIG:
            teacher = config.teacher
        teacher_module = load_teacher(teacher)
        if teacher_module is not None:
            channels, reductions = teacher_module.channels, teacher_module.reductions
        else:
            channels, reductions = feature_info(
                build_feature_model(config.teacher, pretrained=False)
            )
        if config.student == "teacher" and teacher_module is None:
            raise ValueError(
                "student='teacher' starts from the teacher's weights: give a teacher, or load "
                "trained prior weights with prior=..."
            )
        chosen = _default_prior_levels(chosen, len(channels))
        prior = SemanticPrior(
            config,
            chosen,
            channels,
            reductions,
            backbone=backbone.name if backbone else "custom",
            teacher=teacher_module,
        )
    device, dtype = _model_device_dtype(inner)
    prior.to(device=device, dtype=dtype)
    prior.train(inner.training)
    hook = SPEHook(inner, chosen, image_getter, teacher_module)
    inner.add_module(PRIOR_ATTR, prior)
    inner.__dict__[HOOK_ATTR] = hook
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """Remove every hook and the prior module; returns the original network, unchanged."""
    inner = base_model(model)
    hook = get_hook(inner)
    hook.remove(inner)
    del inner._modules[PRIOR_ATTR]
    del inner.__dict__[HOOK_ATTR]
    return inner


def prior_loss(
    model: nn.Module, sharp: torch.Tensor, targets: Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """``L_prior`` (Eq. 4) of the last forward of ``model``, given the sharp batch.

    Args:
        model: the wrapped model (or DDP / compile around it).
        sharp: the sharp images of the batch the last forward saw, ``B x 3 x H x W`` in [0, 1].
        targets: precomputed standardised teacher features of ``sharp`` (a cache); the
            teacher runs on ``sharp`` when omitted.
    """
    hook = get_hook(model)
    check_image(sharp, "the sharp batch")
    state = hook.state(sharp.device)
    if state is None:
        raise RuntimeError(
            f"no forward of the wrapped model has run on {sharp.device} yet: call "
            "model(blurry) first, then prior_loss(model, sharp)"
        )
    if sharp.shape != state.image_shape:
        raise ValueError(
            f"the sharp batch has shape {tuple(sharp.shape)} but the last forward saw a blurry "
            f"batch of shape {tuple(state.image_shape)}"
        )
    config = state.prior.config
    if not config.hcl:
        return sharp.new_zeros((), dtype=torch.float32)
    if targets is None:
        if hook.teacher is None:
            raise RuntimeError(
                "this wrapped model has no teacher (it was wrapped with teacher=None for "
                "inference); wrap it with a teacher to train the prior"
            )
        targets = hook.teacher(sharp)
    return hcl_loss(state.priors, targets, config.pool_sizes)


def prior_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the prior's weights (student, CLC, MLA/SAT), without the ``sp_prior.`` prefix."""
    return get_prior(model).state_dict()


@contextlib.contextmanager
def prior_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as if unwrapped inside the block (the hooks stay registered)."""
    hook = get_hook(model)
    previous, hook.enabled = hook.enabled, False
    try:
        yield model
    finally:
        hook.enabled = previous


def set_prior_strength(model: nn.Module, strength: float) -> None:
    """Scale the change every SPE makes to its decoder level by ``strength`` (1, the
    default: Eq. 6 as trained; 0: the bare network, exactly).

    A post-hoc setting for inference, not part of the paper, chosen on held-out images
    (:func:`sp_adapter.train.calibrate.calibrate_strength`): a prior trained on few photos
    can change images with little left to restore too much
    (``benchmarks/RESULTS.md#prior-strength``). It lives on the prior
    (:attr:`SemanticPrior.strength`): :func:`sp_adapter.save_pretrained` records it and
    ``wrap(model, prior=...)`` restores it; ``sp-adapter calibrate --save`` records it
    for a training run.
    """
    get_prior(model).strength = strength


@contextlib.contextmanager
def prior_strength(model: nn.Module, strength: float) -> Iterator[nn.Module]:
    """Run ``model`` with the prior at ``strength`` inside the block
    (:func:`set_prior_strength`), then restore the previous strength."""
    prior = get_prior(model)
    previous = prior.strength
    prior.strength = strength
    try:
        yield model
    finally:
        prior.strength = previous
