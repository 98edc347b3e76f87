"""Where the prior enters a network: level maps, one dataclass each, readable as a table.

A *level* is one place in a deblurring network where the semantic prior modulates the
decoder feature joined with its encoder skip, ``f_sa = mu * (f_de + f_en) + sigma``
(Eq. 6). Networks join skips in three ways, and a :class:`Level` names the module where
each is visible to a forward hook:

* the join is a module output (``up21`` in MPRNet returns ``up(dec) + skip(enc)``):
  ``Level(site="...up21", channels=96)``; the hook modulates the site output ``h``.
* the network adds the skip in its own forward code right after ``site``
  (``x = self.up(x) + e``): ``Level(site="up", skip="enc", channels=...)``. The hook
  captures ``f_en`` at ``skip`` and returns ``f_de + (mu - 1) * (f_de + f_en) + sigma``,
  so that after the network's own addition the result is exactly Eq. 6.
* the join is a concatenation consumed by a module (MIMO-UNet ``Convs.0`` sees
  ``cat(dec, enc)``): ``Level(site="Convs.0", channels=128, on_input=True)``; the hook
  modulates the module's first input channel-wise, the natural analogue of Eq. 6.

In every case the modulation is computed as ``h + (mu - 1) * g + sigma`` with
``mu - 1`` and ``sigma`` exactly zero at initialisation, so a freshly wrapped network
computes bit for bit what it computed before.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sp_adapter.errors import ImageTypeError, LevelNotFoundError, WrapError
from sp_adapter.prior.region import Region

ImageGetter = Callable[[tuple, dict], torch.Tensor]


@dataclass(frozen=True)
class Level:
    """One modulation site (Eq. 6); see the module docstring for the three join kinds.

    Attributes:
        site: dotted module name (as in ``model.named_modules()``).
        channels: channels of the tensor modulated at ``site``.
        skip: module whose output is ``f_en`` when the network adds it after ``site``.
        on_input: modulate the first positional input of ``site`` instead of its output.
        prior_level: which prior ``f_pri^i`` feeds this site (0 = finest); ``-1``: by the
            level's position in the chosen list (the i-th level gets the i-th prior).
        regions: per-call image boxes for a site called several times per forward.
        reduction: spatial reduction of the site relative to the input (documentation).
    """

    site: str
    channels: int
    skip: str | None = None
    on_input: bool = False
    prior_level: int = -1
    regions: tuple[Region, ...] = ()
    reduction: int | None = None


def first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    """The blurry image is the first positional argument (most networks)."""
    if args:
        return args[0]
    if kwargs:
        return next(iter(kwargs.values()))
    raise ImageTypeError("the wrapped model was called without arguments; expected a blurry image")


@dataclass(frozen=True)
class BackboneMap:
    """Everything :func:`sp_adapter.wrap` needs to know about one backbone.

    Attributes:
        name: backbone name recorded in saved priors (a prior refuses other backbones).
        levels: named levels, finest first.
        default_levels: names used when ``wrap`` is given no ``levels``.
        image: returns the blurry image (``B x 3 x H x W`` in [0, 1]) from the
            forward call's ``(args, kwargs)``.
        input_range: the network's pixel range ``[0, input_range]`` where the adapter
            knows it (1 for most networks, ``rgb_range`` for DeepDeblur); the wrapped
            model's input is checked against it. ``None``: unknown, not checked.
        min_size: the smallest height and width the network accepts.
        image_channels: the channels of the images the network is built for, where the
            adapter can read them off the network (``wrap`` refuses other than 3: the
            prior needs RGB). ``None``: unknown, checked at the first forward.
    """

    name: str
    levels: Mapping[str, Level]
    default_levels: tuple[str, ...]
    image: ImageGetter = first_tensor
    notes: str = field(default="", compare=False)
    input_range: float | None = field(default=None, compare=False)
    min_size: int = field(default=1, compare=False)
    image_channels: int | None = field(default=None, compare=False)

    def select(self, names: Sequence[str | int] | None) -> dict[str, Level]:
        """The levels named (or indexed, finest first) in ``names``; defaults if None."""
        if names is None:
            names = self.default_levels
        keys = list(self.levels)
        chosen: dict[str, Level] = {}
        for item in names:
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise LevelNotFoundError(
                    f"{item!r} is not a level of {self.name}: give a level name "
                    f"{keys} or an index 0..{len(keys) - 1} (finest first)"
                    + (" (a bool is not an index)" if isinstance(item, bool) else "")
                )
            if isinstance(item, int):
                if not -len(keys) <= item < len(keys):
                    raise LevelNotFoundError(
                        f"level index {item} is out of range for {self.name}: it has "
                        f"{len(keys)} levels {keys}"
                    )
                item = keys[item]
            if item not in self.levels:
                raise LevelNotFoundError(
                    f"{self.name} has no level {item!r}; its levels are "
                    f"{closest_first(item, keys)} (closest first)"
                )
            chosen[item] = self.levels[item]
        return chosen


def closest_first(name: str, choices: Sequence[str]) -> list[str]:
    """``choices`` with the ones closest to ``name`` first (for messages that list what
    exists after a misspelling)."""
    close = difflib.get_close_matches(name, list(choices), n=len(choices), cutoff=0.5)
    return close + [c for c in choices if c not in close]


def conv_channels(module: nn.Module) -> int:
    """Input channels of the first convolution inside ``module`` (for adapters that read
    a backbone's widths off the module itself)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise WrapError(f"{type(module).__name__} holds no Conv2d")


def find_module(model: nn.Module, name: str, what: str = "module") -> nn.Module:
    """``model.get_submodule(name)`` with an error that lists the closest names."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=6, cutoff=0.5)
    hint = f" Close names that exist: {close}." if close else ""
    raise LevelNotFoundError(
        f"{what} {name!r} does not exist in {type(model).__name__}.{hint} "
        f"See model.named_modules() for all {len(modules) - 1} names."
    )
