"""What training needs to know about each backbone, as a table of :class:`BackboneSpec`.

A spec says how to build the network, how to turn a blurry batch in [0, 1] into its
input (DeepDeblur takes a Gaussian pyramid on [0, 255]), which reconstruction loss it
trains with, where its final image is, and which side multiple its input needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import torch
from torch import nn

from ..losses import Outputs, ReconstructionLoss, reconstruction_loss


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone.

    Attributes:
        name: the key in :data:`BACKBONES` (and the CLI's ``--backbone``).
        factory: ``"module:callable"`` building the network from keyword options.
        loss: its reconstruction loss by name (``sp_adapter.losses.BACKBONE_LOSSES``).
        size_multiple: input sides must be multiples of this (1: the network pads).
        pyramid_input: the input is a Gaussian pyramid on [0, 255] (DeepDeblur).
        defaults: keyword options passed to ``factory`` unless overridden.
    """

    name: str
    factory: str
    loss: str
    size_multiple: int = 1
    pyramid_input: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)

    def build(self, **options: Any) -> nn.Module:
        """A freshly initialised network (uses the global torch RNG)."""
        module, _, attr = self.factory.partition(":")
        return getattr(import_module(module), attr)(**{**self.defaults, **options})

    @property
    def reconstruction(self) -> ReconstructionLoss:
        return reconstruction_loss(self.loss)

    def to_input(self, blurry: torch.Tensor) -> Any:
        """The network's input for a blurry batch in [0, 1]."""
        if self.pyramid_input:
            from ..backbones.deepdeblur import to_input_pyramid

            return to_input_pyramid(blurry)
        return blurry

    def final(self, out: Outputs) -> torch.Tensor:
        """The final deblurred image on the [0, 1] scale (not clamped)."""
        return self.reconstruction.final(out)

    def predict(self, model: nn.Module, blurry: torch.Tensor) -> torch.Tensor:
        """``final(model(to_input(blurry)))`` for a batch whose sides fit the multiple."""
        return self.final(model(self.to_input(blurry)))


_B = "sp_adapter.backbones"
_NAFNET_GOPRO = {"width": 32, "middle_blk_num": 1, "enc_blk_nums": [1, 1, 1, 28],
                 "dec_blk_nums": [1, 1, 1, 1]}
"""NAFNet's GoPro configuration (width 32; ``nafnet-64`` is the width-64 model)."""
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("unet", f"{_B}.unet:UNet", "l1", 1),
        BackboneSpec("mimo-unet", f"{_B}.mimo_unet:MIMOUNet", "mimo", 4),
        BackboneSpec("mimo-unet-plus", f"{_B}.mimo_unet:MIMOUNetPlus", "mimo", 4),
        BackboneSpec("mprnet", f"{_B}.mprnet:MPRNet", "mprnet", 8),
        BackboneSpec("mprnet-stage1", f"{_B}.mprnet:MPRNetStage1", "mprnet", 8),
        BackboneSpec("mssnet", f"{_B}.mssnet:mssnet_base", "mssnet", 16),
        BackboneSpec("mssnet-small", f"{_B}.mssnet:mssnet_small", "mssnet", 16),
        BackboneSpec("mssnet-large", f"{_B}.mssnet:mssnet_large", "mssnet", 16),
        BackboneSpec("deepdeblur", f"{_B}.deepdeblur:MSResNet", "deepdeblur", 4,
                     pyramid_input=True),
        BackboneSpec("nafnet", f"{_B}.nafnet:NAFNet", "l1", 1, defaults=_NAFNET_GOPRO),
        BackboneSpec("nafnet-64", f"{_B}.nafnet:NAFNet", "l1", 1,
                     defaults={**_NAFNET_GOPRO, "width": 64}),
        BackboneSpec("restormer", f"{_B}.restormer:Restormer", "l1", 8),
    )
}
"""The backbones training knows, by name."""


def backbone_spec(name: str | BackboneSpec) -> BackboneSpec:
    """The spec named ``name``."""
    if isinstance(name, BackboneSpec):
        return name
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def available_backbones() -> list[str]:
    """Names of the backbones whose network module imports in this installation."""
    found = []
    for name, spec in BACKBONES.items():
        module, _, attr = spec.factory.partition(":")
        try:
            if hasattr(import_module(module), attr):
                found.append(name)
        except ImportError:
            continue
    return found
