"""The backbones the library knows: one file each, read as plain data.

Installed as ``sp_adapter.adapters`` (there is no top-level ``adapters`` package). Each
file holds a ``backbone_map(model) -> BackboneMap`` (which module is the decoder output
and the encoder skip of each level, their channels and scale, where the blurry image is)
and its :class:`~sp_adapter.attach.backbone.Backbone` records (twin, size multiple, input
range, CLI name, loss, training defaults), collected in :data:`BACKBONES`. Adding a
backbone is one file here plus its twin in ``sp_adapter/backbones/``.
"""

from __future__ import annotations

import difflib

from torch import nn

from sp_adapter.adapters import deepdeblur, mimo_unet, mprnet, mssnet, nafnet, restormer, unet
from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.levels import BackboneMap
from sp_adapter.errors import UnknownOptionError

BACKBONES: tuple[Backbone, ...] = (
    *unet.BACKBONES,
    *mimo_unet.BACKBONES,
    *mprnet.BACKBONES,
    *mssnet.BACKBONES,
    *deepdeblur.BACKBONES,
    *nafnet.BACKBONES,
    *restormer.BACKBONES,
)
"""Every known backbone, in the order a network is matched against them (a full MPRNet
before its stage-1 part)."""


def backbone_named(name: str) -> Backbone:
    """The backbone whose CLI name is ``name`` (any case); an unknown name lists them."""
    names = [b.name for b in BACKBONES]
    for backbone in BACKBONES:
        if backbone.name == str(name).lower():
            return backbone
    close = difflib.get_close_matches(str(name).lower(), names, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownOptionError(f"unknown backbone {name!r}{guess}; choose one of {names}")


def match(model: nn.Module) -> tuple[Backbone, BackboneMap] | None:
    """The known backbone ``model`` is and its level map, or ``None``: an instance of a
    library twin, else the first backbone whose level map reads off ``model`` with every
    module it names. The class name alone decides nothing."""
    for backbone in BACKBONES:
        if isinstance(model, backbone.twins):
            return backbone, backbone.level_map(model)
    for backbone in BACKBONES:
        found = backbone.map_of(model)
        if found is not None:
            return backbone, found
    return None


def known_backbones() -> list[str]:
    """The CLI names of the known backbones."""
    return [b.name for b in BACKBONES]
