"""Level maps of known backbones, one file each, looked up by the model's class name.

Installed as ``sp_adapter.adapters`` (there is no top-level ``adapters`` package). Each
file defines ``backbone_map(model) -> BackboneMap``: which module is the decoder output
and the encoder skip of each level, their channels and scale, and where the blurry image
is among the forward's arguments.
"""

from __future__ import annotations

from importlib import import_module

from torch import nn

from sp_adapter.levels import BackboneMap

ADAPTERS: dict[str, str] = {
    "UNet": "unet",
    "MIMOUNet": "mimo_unet",
    "MIMOUNetPlus": "mimo_unet",
    "MSResNet": "deepdeblur",
    "MPRNet": "mprnet",
    "MPRNetStage1": "mprnet",
    "DeblurNet": "mssnet",
    "NAFNet": "nafnet",
    "NAFNetLocal": "nafnet",
    "Restormer": "restormer",
}
"""Class name -> the adapter file (in this folder) that maps it."""


def known_backbones() -> list[str]:
    """Class names with an adapter."""
    return sorted(ADAPTERS)


def adapter_for(model: nn.Module) -> BackboneMap | None:
    """The level map of ``model`` by its class name, or ``None`` if no adapter knows it."""
    file = ADAPTERS.get(type(model).__name__)
    if file is None:
        return None
    return import_module(f"{__name__}.{file}").backbone_map(model)
