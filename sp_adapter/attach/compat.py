"""Does a trained prior fit a network and a teacher? Checks made before it is attached."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from sp_adapter.attach.levels import BackboneMap, Level, find_module
from sp_adapter.errors import IncompatiblePriorError
from sp_adapter.prior.semantic_prior import SemanticPrior


def describe_levels(levels: Mapping[str, Level]) -> str:
    """``level1: up1 + enc1, 16 ch; ...``: how the error messages name a prior's levels."""
    return "; ".join(
        f"{name}: {lv.site}{' + ' + lv.skip if lv.skip else ''}{' (input)' if lv.on_input else ''}"
        f", {lv.channels} ch"
        for name, lv in levels.items()
    )


def _declared_channels(module: nn.Module, on_input: bool) -> int | None:
    """Channels a module declares (conv ``in/out_channels``, norm ``num_features``)."""
    names = ("in_channels", "num_features") if on_input else ("out_channels", "num_features")
    for attr in names:
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return None


def _expected_channels(level: Level, model: nn.Module, backbone: BackboneMap | None) -> int | None:
    """What the model has at ``level.site``: the level map's channels for that site, else
    what the module declares, else ``None`` (then the first forward checks)."""
    if backbone is not None:
        for known in backbone.levels.values():
            if known.site == level.site and known.on_input == level.on_input:
                return known.channels
    return _declared_channels(model.get_submodule(level.site), level.on_input)


def check_prior_fits(prior: SemanticPrior, model: nn.Module, backbone: BackboneMap | None) -> None:
    """Refuse a prior trained for another backbone, or whose levels' modules or channels
    do not exist in ``model`` (the network inside any wrappers)."""
    model_name = type(model).__name__
    model_backbone = backbone.name if backbone is not None else None
    head = (
        f"this prior was trained for {prior.backbone} levels [{describe_levels(prior.levels)}], "
        f"the model is {model_name}"
    )
    if prior.backbone != "custom" and prior.backbone != model_backbone:
        known = f"its level map is {model_backbone!r}" if model_backbone else "it has no level map"
        raise IncompatiblePriorError(
            f"{head} ({known}): load a prior trained for this network, or train one with "
            "sp_adapter.wrap(model)"
        )
    for name, level in prior.levels.items():
        for module_name, what in ((level.site, "site"), (level.skip, "skip")):
            if module_name is None:
                continue
            try:
                find_module(model, module_name, f"level {name!r}: {what}")
            except ValueError as err:
                raise IncompatiblePriorError(f"{head}: {err}") from None
        expected = _expected_channels(level, model, backbone)
        if expected is not None and expected != level.channels:
            raise IncompatiblePriorError(
                f"{head}: level {name!r} ({level.site!r}) has {level.channels} channels in the "
                f"prior but {expected} in the model (a {model_name} of another width?)"
            )


def check_teacher_fits(prior: SemanticPrior, teacher: nn.Module | None) -> None:
    """Refuse a teacher whose features differ from the ones the prior was trained on."""
    if teacher is None:
        return
    channels, reductions = list(teacher.channels), list(teacher.reductions)
    if channels != prior.channels or reductions != prior.reductions:
        spec = prior.config.teacher
        raise IncompatiblePriorError(
            f"the teacher gives channels {channels} at reductions {reductions}, but the prior "
            f"was trained on {spec.arch!r} features with channels {prior.channels} at "
            f"reductions {prior.reductions}: use that teacher (TeacherSpec(arch={spec.arch!r}, "
            f"out_indices={tuple(spec.out_indices)})) or teacher=None for inference"
        )
