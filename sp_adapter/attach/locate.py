"""Known backbones inside a repo's own container module (DeepDeblur's ``Model.model.G``).

Training code often keeps the network inside a wrapper of its own (which also loads
checkpoints, splits GPUs, ...). ``wrap`` is given that wrapper; when it has no level map
of its own, :func:`inner_backbone` finds the one known backbone among its submodules, so
the wrap can stay where the repo's script has the model, before or after its loading.
"""

from __future__ import annotations

import warnings

from torch import nn

from sp_adapter.adapters import match
from sp_adapter.errors import WrapError


def has_level_map(module: nn.Module) -> bool:
    """Whether ``wrap`` knows ``module``'s levels (its own ``sp_backbone_map()`` or a known
    backbone it is)."""
    return callable(getattr(module, "sp_backbone_map", None)) or match(module) is not None


def known_backbones_in(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of the submodules of ``model`` with a level map, outermost only
    (a known backbone's own submodules are not searched)."""
    found: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(outer + ".") for outer, _ in found):
            continue
        if has_level_map(module):
            found.append((path, module))
    return found


def inner_backbone(model: nn.Module) -> nn.Module | None:
    """The one known backbone inside ``model`` (said in a warning, with its path), ``None``
    if there is none; several are an error naming each one's path."""
    found = known_backbones_in(model)
    if not found:
        return None
    name = type(model).__name__
    if len(found) > 1:
        listed = ", ".join(f"model.{path} ({type(m).__name__})" for path, m in found)
        raise WrapError(
            f"{name} has no level map of its own and holds several known backbones: {listed}. "
            f"Wrap the one to train, e.g. sp_adapter.wrap(model.{found[0][0]})"
        )
    path, module = found[0]
    warnings.warn(
        f"{name} has no level map of its own: wrapping the known backbone inside it, "
        f"model.{path} ({type(module).__name__}); to choose another network, wrap it "
        "directly", stacklevel=3,
    )
    return module
