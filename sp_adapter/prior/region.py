"""What the prior needs to know of a place in a network: its channels, which prior level
feeds it, and the image boxes of a module called on patches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Region:
    """A box of the whole image, as fractions of its height and width.

    Used for modules that a network calls several times per forward on image patches
    (MPRNet runs its stage-1 decoder on the top half, then on the bottom half): call
    ``n`` of such a module sees ``regions[n]`` of the image.
    """

    top: float
    left: float
    height: float
    width: float


class LevelSpec(Protocol):
    """The part of a level the prior is built from
    (:class:`sp_adapter.attach.levels.Level` is the full description)."""

    @property
    def channels(self) -> int: ...

    @property
    def prior_level(self) -> int: ...

    @property
    def regions(self) -> tuple[Region, ...]: ...
