"""``wrap`` / ``unwrap`` / ``prior_loss``: the two lines a training script adds."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import types
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from sp_adapter.adapters import known_backbones, match
from sp_adapter.attach import auto_levels
from sp_adapter.attach.compat import check_prior_fits, check_teacher_fits
from sp_adapter.attach.hook import SPEHook, check_image, check_pixel_range
from sp_adapter.attach.levels import BackboneMap, Level, closest_first, first_tensor
from sp_adapter.attach.locate import inner_backbone
from sp_adapter.attach.optim import PriorUpdateWatch
from sp_adapter.attach.state import (
    attach,
    base_model,
    check_free,
    detach,
    get_hook,
    get_prior,
    is_wrapped,
)
from sp_adapter.errors import (
    ImageInputError,
    LevelError,
    PriorLossError,
    UnknownOptionError,
    WrapError,
)
from sp_adapter.prior.config import PriorConfig, TeacherSpec
from sp_adapter.prior.hcl import hcl_loss
from sp_adapter.prior.semantic_prior import SemanticPrior
from sp_adapter.prior.teacher import Teacher, build_feature_model, load_teacher

_FROM_CONFIG: Any = object()
log = logging.getLogger(__name__)

LevelLike = str | int | Level | dict | tuple


def level_map_for(model: nn.Module) -> tuple[BackboneMap | None, str]:
    """The level map of ``model`` and where it came from, in words: the network's own
    ``sp_backbone_map()``, else the known backbone it is (:func:`sp_adapter.adapters.match`);
    ``None`` for a network no map knows."""
    own = getattr(model, "sp_backbone_map", None)
    if callable(own):
        return own(), "the network's own sp_backbone_map()"
    found = match(model)
    if found is None:
        return None, "no known backbone"
    known, level_map = found
    how = "a library twin" if isinstance(model, known.twins) else "matched by its modules"
    return level_map, f"adapter {known.name!r}, {how}"


def check_names(given: Any, choices: Sequence[str], what: str, where: str = "") -> None:
    """Refuse names in ``given`` that are not in ``choices`` (``what`` says what they
    are), listing the valid ones, closest to the first unknown name first."""
    unknown = [str(k) for k in given if k not in choices]
    if not unknown:
        return
    ordered = closest_first(unknown[0], list(choices))
    close = difflib.get_close_matches(unknown[0], list(choices), n=1, cutoff=0.5)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    plural = "s" if len(unknown) > 1 else ""
    raise UnknownOptionError(
        f"unknown {what}{plural} {', '.join(map(repr, unknown))}{where}{guess}; valid: "
        f"{ordered}"
    )


def _checked_model(model: Any) -> nn.Module:
    """``model`` itself if it is a network instance, else an error saying what it is."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise WrapError(
            f"wrap() was given the class {model.__name__}, not a network: build it first, "
            f"e.g. sp_adapter.wrap({model.__name__}(...))"
        )
    if isinstance(model, (types.FunctionType, types.LambdaType, types.MethodType)):
        kind = "a function"
    else:
        kind = f"{type(model).__name__} {model!r}"[:80]
    raise WrapError(
        f"wrap() takes the network to attach the prior to, an nn.Module instance (e.g. "
        f"sp_adapter.backbones.unet.UNet()); got {kind}. A saved prior goes in prior=..."
    )


def _as_level(item: LevelLike, position: int) -> Level:
    if isinstance(item, Level):
        level = item
    elif isinstance(item, dict):
        check_names(item, [f.name for f in dataclasses.fields(Level)], "Level field",
                    f" in levels[{position}]")
        level = Level(**item)
    elif isinstance(item, tuple) and len(item) in (2, 3):
        site, *rest = item
        if len(rest) == 1:
            level = Level(site=site, channels=rest[0])
        else:
            level = Level(site=site, skip=rest[0], channels=rest[1])
    else:
        raise LevelError(
            f"levels[{position}] is {item!r}: give a level name or index of the backbone map, a "
            "Level, a dict of Level fields, or a tuple (site, channels) / (site, skip, channels)"
        )
    if not isinstance(level.channels, int) or level.channels < 1:
        raise WrapError(
            f"levels[{position}]: channels must be a positive int, got {level.channels!r}"
        )
    return level


def resolve_levels(
    model: nn.Module, levels: Sequence[LevelLike] | None, backbone: BackboneMap | None
) -> dict[str, Level]:
    """The levels to wrap, by name; errors name what exists."""
    if levels is None:
        if backbone is None:
            raise WrapError(
                f"no level map is known for {type(model).__name__} (known: {known_backbones()}); "
                "pass levels=[Level(site=..., skip=..., channels=...), ...] or "
                "backbone=BackboneMap(...)"
            )
        return backbone.select(None)
    names = list(backbone.levels) if backbone is not None else []
    valid = (
        f"level names {names} or indices 0..{len(names) - 1} of {backbone.name}'s map, "
        if backbone is not None else ""
    ) + "Level objects, dicts of Level fields or (site, channels) tuples"
    if isinstance(levels, (str, int, Level, dict)) and not isinstance(levels, bool):
        levels = [levels]
    if not isinstance(levels, (list, tuple)):
        raise WrapError(f"levels must be a list of {valid}; got {type(levels).__name__} "
                        f"{levels!r}")
    resolved: dict[str, Level] = {}
    for position, item in enumerate(levels):
        if isinstance(item, bool) or not isinstance(item, (str, int, Level, dict, tuple)):
            why = " (a bool is not an index)" if isinstance(item, bool) else ""
            raise WrapError(f"levels[{position}] is {item!r}{why}: give {valid}")
        if isinstance(item, (str, int)):
            if backbone is None:
                raise WrapError(
                    f"level {item!r} given by name, but {type(model).__name__} has no level map; "
                    "give Level(site=..., channels=...) objects instead"
                )
            ((name, level),) = backbone.select([item]).items()
        else:
            name, level = f"level{position + 1}", _as_level(item, position)
        if name in resolved:
            raise WrapError(f"level {name!r} is given twice")
        resolved[name] = level
    return resolved


def _default_prior_levels(levels: dict[str, Level], n_prior: int) -> dict[str, Level]:
    out = {}
    for i, (name, level) in enumerate(levels.items()):
        if level.prior_level >= n_prior:
            raise WrapError(
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
    prior: Any,
    teacher: Any,
    levels: Any,
    config: PriorConfig | None,
    options: dict[str, Any],
) -> tuple[SemanticPrior, Teacher | None]:
    """The trained prior ``wrap(prior=...)`` attaches, checked against ``model``, and the
    teacher (``None`` unless one is given)."""
    if isinstance(prior, (str, os.PathLike)):
        raise WrapError(
            f"prior={str(prior)!r} names a saved prior: load it and wrap in one call, "
            f"sp_adapter.from_pretrained({str(prior)!r}, model=model), or pass the loaded "
            "prior, wrap(model, prior=sp_adapter.from_pretrained(...))"
        )
    if not isinstance(prior, SemanticPrior):
        raise WrapError(f"prior must be a SemanticPrior (sp_adapter.from_pretrained(...)), got "
                        f"{type(prior).__name__}")
    if levels is not None or config is not None or options:
        raise WrapError(
            "a trained prior brings its own levels and options: do not pass levels=, config= "
            f"or options ({sorted(options)}) together with prior="
        )
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
    prior: SemanticPrior | None = None,
    **options: Any,
) -> nn.Module:
    """Attach a semantic prior to ``model``'s decoder levels through forward hooks.

    Args:
        model: any U-shaped network; its code and ``state_dict`` keys are not changed.
        levels: which levels: names or indices of the backbone's level map, or
            :class:`Level` objects (dicts/tuples) for a network no adapter knows.
            ``None``: the backbone's default levels; with no level map for the network,
            or ``"auto"``, the skip joins found by one probe forward
            (:func:`sp_adapter.attach.auto_levels.find_levels`; the table is logged at INFO).
        backbone: a :class:`BackboneMap` for a network the adapters don't know.
        teacher: the frozen teacher for the prior loss: a :class:`TeacherSpec`, a timm
            name, a ``features_only`` module, a :class:`Teacher`, or ``None`` for
            inference only. Default: ``config.teacher`` (the offline EfficientNet-Lite0).
        config: the prior's options; keyword ``options`` override its fields
            (e.g. ``clc=False, fusion="add", student="small"``).
        prior: a trained :class:`SemanticPrior` to attach (:func:`sp_adapter.from_pretrained`
            loads one from a folder or the Hub, and with ``model=`` wraps it too). Its
            levels and options come with it (no ``levels``/``config``/``options``); it
            refuses a network it was not trained for. The teacher then defaults to ``None``
            (inference); give one to train further.

    Returns:
        ``model`` itself, with ``model.sp_prior`` added (so ``model.parameters()`` holds the
        prior's trainable parameters) and hooks registered. Its output at initialisation is
        bit-exact with the unwrapped model's.
    """
    inner = base_model(_checked_model(model))
    if is_wrapped(inner):
        raise WrapError(
            f"{type(inner).__name__} is already wrapped; call sp_adapter.unwrap(model) first"
        )
    check_names(options, [f.name for f in dataclasses.fields(PriorConfig)], "option")
    if backbone is None and level_map_for(inner)[0] is None and _levels_by_name(levels):
        # adapter for the model itself -> a known backbone inside it -> (level discovery)
        inner = inner_backbone(inner) or inner
    check_free(inner)
    if backbone is None:
        backbone, route = level_map_for(inner)
    else:
        route = "backbone= given"
    _check_image_channels(backbone)
    image_getter = backbone.image if backbone is not None else first_tensor
    if prior is not None:
        prior, teacher_module = _trained_prior(
            inner, backbone, prior, teacher, levels, config, options
        )
        chosen = prior.levels
        route = f"a trained prior for {prior.backbone}"
    else:
        config = dataclasses.replace(config or PriorConfig(), **options)
        if auto_levels.wanted(levels, backbone):
            chosen = auto_levels.levels_for_wrap(inner)
            route = f"found automatically by one probe forward ({route})"
        else:
            chosen = resolve_levels(inner, levels, backbone)
            if levels is not None and not _levels_by_name(levels):
                route = "levels given"
        if teacher is _FROM_CONFIG:
            teacher = config.teacher
        teacher_module = load_teacher(teacher)
        # without a teacher (inference: trained weights are loaded next) a
        # teacher-initialised student is built from the teacher's architecture alone
        source = teacher_module or _architecture_teacher(config.teacher)
        chosen = _default_prior_levels(chosen, len(source.channels))
        prior = SemanticPrior(
            config,
            chosen,
            source.channels,
            source.reductions,
            backbone=backbone.name if backbone else "custom",
            teacher=source if config.student == "teacher" else None,
            needs_weights=teacher_module is None and config.student == "teacher",
        )
    log.info("wrap %s: levels %s from %s", type(inner).__name__, list(chosen), route)
    if _on_meta(prior):
        raise WrapError(
            "the prior's weights are on the meta device (wrap was called inside `with "
            "torch.device('meta')`, or the prior given was built there), so they hold no "
            "values: call wrap outside that block. A network on the meta device may be "
            "wrapped: its prior keeps its initial weights until the network is materialised "
            "(to_empty, then load_state_dict)"
        )
    device, dtype = _model_device_dtype(inner)
    # on the meta device the prior's initial weights would be lost: they are kept aside and
    # given to the prior when the model is materialised (to_empty, then load_state_dict)
    initial = ({k: v.detach().to("cpu", copy=True) for k, v in prior.state_dict().items()}
               if device.type == "meta" and not _on_meta(prior) else None)
    prior.to(device=device, dtype=dtype)
    prior.train(inner.training)
    hook = SPEHook(
        inner, chosen, image_getter, teacher_module,
        input_range=backbone.input_range if backbone is not None else None,
        min_size=backbone.min_size if backbone is not None else 1, route=route,
    )
    hook.initial_state = initial
    attach(inner, prior, hook)
    if any(p.requires_grad for p in prior.parameters()):
        hook.watch = PriorUpdateWatch(inner)
    return model


def _on_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in module.state_dict().values())


def _check_image_channels(backbone: BackboneMap | None) -> None:
    """Refuse, at wrap time, a known network built for other than 3-channel images: the
    prior is computed from the blurry RGB image (the teacher is an RGB classifier)."""
    channels = backbone.image_channels if backbone is not None else None
    if channels is None or channels == 3:
        return
    raise WrapError(
        f"this {backbone.name} takes {channels}-channel images (its first convolution has "
        f"{channels} input channels), but the semantic prior is computed from the blurry "
        "image by an RGB network and needs 3-channel RGB images: build the network for 3 "
        "image channels (NAFNet(img_channel=3), Restormer(inp_channels=3, out_channels=3)), "
        "or use it without the prior"
    )


def _levels_by_name(levels: Any) -> bool:
    """Whether ``levels`` refers to a backbone map (none, or names / indices), so the map
    of a known backbone inside a container may serve."""
    if levels is None or isinstance(levels, str):
        return True
    return isinstance(levels, (list, tuple)) and all(
        isinstance(item, (str, int)) and not isinstance(item, bool) for item in levels
    )


def _architecture_teacher(spec: TeacherSpec) -> Teacher:
    """The teacher's network without pretrained weights: enough for the prior's shapes and
    for a student whose trained weights are loaded afterwards."""
    return Teacher(build_feature_model(spec, pretrained=False), spec.mean, spec.std,
                   name=spec.arch)


def unwrap(model: nn.Module) -> nn.Module:
    """Remove every hook and the prior module; returns ``model`` (the original network,
    unchanged; or the container whose known backbone ``wrap`` wrapped, restored)."""
    detach(model)
    return base_model(model)


def _teacher_call(spec: TeacherSpec) -> str:
    """How to write ``spec`` in a call (the default spec is just ``TeacherSpec()``)."""
    if spec == TeacherSpec():
        return "sp_adapter.TeacherSpec()"
    return (f"sp_adapter.TeacherSpec(arch={spec.arch!r}, weights={spec.weights!r}, "
            f"out_indices={tuple(spec.out_indices)})")


def _input_units(hook: SPEHook) -> str:
    r = hook.input_range
    if r is None or r == 1:
        return ""
    return f" (this network takes [0, {r:g}]: pass prior_loss(model, sharp / {r:g}))"


def prior_loss(
    model: nn.Module, sharp: torch.Tensor, targets: Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """``L_prior`` (Eq. 4) of the last forward of ``model``, given the sharp batch.

    Args:
        model: the wrapped model (or DDP / compile around it).
        sharp: the sharp images of the batch the last forward saw, ``B x 3 x H x W`` in
            [0, 1] whatever the network's own pixel range (DeepDeblur: ``sharp / 255``).
        targets: precomputed standardised teacher features of ``sharp`` (a cache); the
            teacher runs on ``sharp`` when omitted.

    Refused (:class:`~sp_adapter.errors.PriorLossError`): no forward yet, a last forward
    that raised (its priors are incomplete), a forward under ``torch.no_grad`` while
    gradients are on here, a forward split over ``nn.DataParallel`` replicas, no teacher.
    """
    hook = get_hook(model)
    check_image(sharp, "the sharp batch")
    check_pixel_range(sharp, "the sharp batch given to prior_loss",
                      fix="the prior's teacher sees images in [0, 1]" + (
                          _input_units(hook) or ": divide images in [0, 255] by 255"))
    state = hook.state(sharp.device)
    if state is None and hook.ran_disabled(sharp.device):
        raise PriorLossError(
            f"the last forward of the wrapped model on {sharp.device} ran inside "
            "sp_adapter.prior_disabled(model), which runs the bare network and computes no "
            "prior: call prior_loss after a forward outside that block (prior_disabled is "
            "for comparing with the bare network, not for training the prior)"
        )
    if state is None:
        raise PriorLossError(
            f"no forward of the wrapped model has run on {sharp.device} yet: call "
            "model(blurry) first, then prior_loss(model, sharp)"
        )
    if state.replica:
        raise PriorLossError(
            "the last forward ran in nn.DataParallel replicas, each on one chunk of the "
            "batch, so no device holds the whole batch's priors: train with "
            "DistributedDataParallel (torchrun; one process per GPU, prior_loss per process), "
            "or on one GPU"
        )
    if not state.complete:
        raise PriorLossError(
            "the last forward of the wrapped model raised an exception (e.g. out of memory), "
            "so its priors belong to a batch that was never finished: run a forward that "
            "succeeds before prior_loss (skip the failed batch's loss too)"
        )
    config = state.prior.config
    if config.hcl and targets is None and hook.teacher is None:
        raise PriorLossError(
            "this wrapped model has no teacher (it was wrapped with teacher=None, or with "
            "prior=..., which brings none), and prior_loss compares the prior with the "
            "teacher's features: wrap it with the prior's teacher, e.g. sp_adapter.wrap("
            f"model, prior=..., teacher={_teacher_call(config.teacher)}), or pass "
            "targets=. Inference needs neither"
        )
    if (
        not state.grad_enabled
        and torch.is_grad_enabled()
        and any(p.requires_grad for p in state.prior.parameters())
    ):
        raise PriorLossError(
            "the last forward ran without gradients (under torch.no_grad() or "
            "torch.inference_mode()), so the prior loss could not train anything: run the "
            "training forward with gradients on, or compute prior_loss under torch.no_grad() "
            "too when only logging it"
        )
    if sharp.shape != state.image_shape:
        raise ImageInputError(
            f"the sharp batch has shape {tuple(sharp.shape)} but the last forward saw a blurry "
            f"batch of shape {tuple(state.image_shape)}"
        )
    if not config.hcl:
        return sharp.new_zeros((), dtype=torch.float32)
    if targets is None:
        _check_sharp_dtype(sharp, hook.teacher)
        targets = hook.teacher(sharp)
    return hcl_loss(state.priors, targets, config.pool_sizes)


def _check_sharp_dtype(sharp: torch.Tensor, teacher: nn.Module) -> None:
    """Refuse a sharp batch in another precision than the teacher's weights (outside
    autocast), which the teacher's first convolution would refuse in its own words."""
    weight = next((p for p in teacher.parameters() if p.is_floating_point()), None)
    if (weight is None or sharp.dtype == weight.dtype
            or torch.is_autocast_enabled(sharp.device.type)):
        return
    raise ImageInputError(
        f"the sharp batch given to prior_loss is {sharp.dtype}, but the teacher's weights are "
        f"{weight.dtype}: pass prior_loss(model, sharp.to({weight.dtype})), or compute the "
        "loss under torch.autocast (the teacher is frozen: its precision does not follow "
        "model.half() / model.double())"
    )


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
