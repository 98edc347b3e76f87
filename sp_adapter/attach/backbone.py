"""A known backbone: everything the library knows about one network, in one record.

Each file in ``adapters/`` (installed as :mod:`sp_adapter.adapters`) holds the records of
one backbone family; :data:`sp_adapter.adapters.BACKBONES` collects them. A network is
matched to a record by what it is (an instance of the library's twin, or a network whose
modules the level map finds), never by its class name alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sp_adapter.attach.levels import BackboneMap, find_module
from sp_adapter.errors import LevelNotFoundError, WrapError

Outputs = torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Backbone:
    """One backbone: its twin, level map, input format and training defaults.

    Attributes:
        name: the CLI's ``--backbone`` name (``"mimo-unet"``).
        twins: the library's classes of this network (``sp_adapter.backbones``); an instance
            of one is this backbone whatever its options.
        build: builds the network from keyword options (the twin, or a size preset).
        level_map: the network's levels, read off an instance (its widths).
        size_multiple: input height and width must be multiples of this (1: the network
            pads inside its forward).
        input_range: the network's pixel range ``[0, input_range]`` (255 for DeepDeblur).
        loss: its reconstruction loss by name (``sp_adapter.train.losses.BACKBONE_LOSSES``).
        final_output: index of the final image in a list output (``None``: a tensor).
        to_input: turns a blurry batch in [0, 1] into the network's input (DeepDeblur: a
            Gaussian pyramid on [0, 255]); ``None``: the batch itself.
        defaults: keyword options passed to ``build`` unless overridden.
    """

    name: str
    twins: tuple[type[nn.Module], ...]
    build_fn: Callable[..., nn.Module]
    level_map: Callable[[nn.Module], BackboneMap]
    size_multiple: int = 1
    input_range: float = 1.0
    loss: str = "l1"
    final_output: int | None = None
    input_fn: Callable[[torch.Tensor], Any] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def build(self, **options: Any) -> nn.Module:
        """A freshly initialised network (uses the global torch RNG)."""
        return self.build_fn(**{**self.defaults, **options})

    def to_input(self, blurry: torch.Tensor) -> Any:
        """The network's input for a blurry batch in [0, 1]."""
        return blurry if self.input_fn is None else self.input_fn(blurry)

    def final(self, out: Outputs) -> torch.Tensor:
        """The final deblurred image of an output, on the [0, 1] scale (not clamped)."""
        image = out if self.final_output is None else out[self.final_output]
        if not isinstance(image, torch.Tensor):
            raise WrapError(f"{self.name}: found no final image tensor in the network's output "
                            f"(a {type(out).__name__})")
        return image / self.input_range if self.input_range != 1.0 else image

    def predict(self, model: nn.Module, blurry: torch.Tensor) -> torch.Tensor:
        """``final(model(to_input(blurry)))`` for a batch whose sides fit the multiple."""
        return self.final(model(self.to_input(blurry)))

    def map_of(self, model: nn.Module) -> BackboneMap | None:
        """The level map of ``model`` if it is this backbone, else ``None``: an instance of a
        twin, or a network the level map can be read off with every module it names."""
        if isinstance(model, self.twins):
            return self.level_map(model)
        try:
            found = self.level_map(model)
            for level in found.levels.values():
                find_module(model, level.site)
                if level.skip is not None:
                    find_module(model, level.skip)
        except (AttributeError, TypeError, IndexError, KeyError, ValueError,
                LevelNotFoundError):
            return None
        return found
