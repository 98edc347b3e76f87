"""The backbones training knows, by CLI name: the records of ``adapters/``.

Everything about a backbone (its twin, level map, size multiple, input range and format,
reconstruction loss, where its final image is, training defaults) is in its adapter file;
this module looks the records up by name.
"""

from __future__ import annotations

from sp_adapter.adapters import BACKBONES as TABLE
from sp_adapter.adapters import backbone_named
from sp_adapter.attach.backbone import Backbone

BACKBONES: dict[str, Backbone] = {b.name: b for b in TABLE}
"""The backbones training knows, by name."""


def backbone_spec(name: str | Backbone) -> Backbone:
    """The backbone named ``name`` (any case)."""
    return name if isinstance(name, Backbone) else backbone_named(name)


def available_backbones() -> list[str]:
    """Names of the backbones training knows."""
    return list(BACKBONES)
