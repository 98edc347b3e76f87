"""``SPEHook``: the forward hooks that put the prior into a network without editing it.

* a pre-hook on the root computes the priors ``f_pri`` from the blurry input and resets
  the per-forward state (so nothing leaks from one call to the next, also after a call
  that raised);
* a hook on each ``skip`` module captures ``f_en``;
* a hook on each ``site`` modulates ``f_de (+ f_en)`` with the level's SPE (Eq. 5, 6);
* a post-hook on the root (run even when the forward raises) drops the captured skips.

Per-forward state is keyed by device, so DataParallel replicas running in threads do not
share it; the prior module is taken from the root module the pre-hook receives, so each
replica uses its own parameters. Hooks are registered once; :attr:`SPEHook.enabled`
toggles them (``torch.compile`` caches hook sets, so nothing is added or removed later);
the prior's :attr:`~sp_adapter.prior.SemanticPrior.strength` scales every SPE's change (1
by default; see :func:`sp_adapter.wrap.set_prior_strength`), drawn once per forward
(per image in training with ``PriorConfig.strength_jitter``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from .levels import ImageGetter, Level, find_module
from .prior import SemanticPrior
from .teacher import Teacher

PRIOR_ATTR = "sp_prior"
"""Name of the prior submodule added to a wrapped model (so ``parameters()`` has it)."""
HOOK_ATTR = "_sp_hook"
"""Name of the plain attribute holding the :class:`SPEHook` of a wrapped model."""


@dataclass
class ForwardState:
    """What one forward of the wrapped model on one device has computed so far."""

    prior: SemanticPrior
    priors: list[torch.Tensor]
    image_shape: torch.Size
    skips: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    maps: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    strength: float | torch.Tensor = 1.0


def check_image(image: Any, what: str = "the blurry image") -> torch.Tensor:
    """``image`` must be a float ``B x 3 x H x W`` tensor."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"{what} must be a torch.Tensor of shape Bx3xHxW, got {type(image).__name__}"
        )
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(
            f"{what} must have shape Bx3xHxW (a batch of RGB images), got {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor in [0, 1], got {image.dtype}")
    return image


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        values = value
    elif isinstance(value, Mapping):
        values = list(value.values())
    else:
        return None
    for item in values:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


class SPEHook:
    """The hooks of one wrapped model; see the module docstring.

    Args:
        model: the network (its code is not changed).
        levels: the levels to modulate, by name.
        image: returns the blurry image from the root forward's ``(args, kwargs)``.
        teacher: the frozen teacher for :meth:`prior_loss` (``None`` for inference only).
    """

    def __init__(
        self,
        model: nn.Module,
        levels: Mapping[str, Level],
        image: ImageGetter,
        teacher: Teacher | None,
    ) -> None:
        self.levels = dict(levels)
        self.image = image
        self.teacher = teacher
        self.enabled = True
        self._states: dict[torch.device, ForwardState] = {}
        modules = {}
        for name, level in self.levels.items():
            modules[name] = (
                find_module(model, level.site, f"level {name!r}: site"),
                find_module(model, level.skip, f"level {name!r}: skip") if level.skip else None,
            )
        model.register_forward_pre_hook(self._begin, with_kwargs=True)
        model.register_forward_hook(self._end, always_call=True)
        for name, (site, skip) in modules.items():
            if skip is not None:
                skip.register_forward_hook(partial(self._capture, name))
            if self.levels[name].on_input:
                site.register_forward_pre_hook(partial(self._modulate_input, name))
            else:
                site.register_forward_hook(partial(self._modulate_output, name))

    def __deepcopy__(self, memo: dict) -> SPEHook:
        """A copy for a deep-copied model (EMA, replicas): same levels, no state, and the
        same frozen teacher (shared, not copied). The copied model's hooks are bound to
        the copy, so removing them never touches the original's."""
        new = object.__new__(SPEHook)
        memo[id(self)] = new
        new.levels, new.image, new.teacher = self.levels, self.image, self.teacher
        new.enabled = self.enabled
        new._states = {}
        return new

    def _owns(self, fn: Any) -> bool:
        fn = fn.func if isinstance(fn, partial) else fn
        return getattr(fn, "__self__", None) is self

    def hooks_in(self, model: nn.Module) -> list[tuple[nn.Module, str, int]]:
        """``(module, hook dict name, hook id)`` of every hook of this object in ``model``."""
        found = []
        for module in model.modules():
            for kind in ("_forward_pre_hooks", "_forward_hooks"):
                for key, fn in getattr(module, kind).items():
                    if self._owns(fn):
                        found.append((module, kind, key))
        return found

    def remove(self, model: nn.Module) -> None:
        """Remove every hook of this object from ``model`` (and its per-forward state)."""
        # by key from torch's hook dicts: a deep-copied model (EMA, replicas) carries the
        # hooks but not their RemovableHandles, so handles alone could not find them
        for module, kind, key in self.hooks_in(model):
            del getattr(module, kind)[key]
            for extra in (
                "_forward_pre_hooks_with_kwargs",
                "_forward_hooks_with_kwargs",
                "_forward_hooks_always_called",
            ):
                getattr(module, extra, {}).pop(key, None)
        self._states.clear()

    def state(self, device: torch.device) -> ForwardState | None:
        """The state of the last forward on ``device`` (``None`` if none ran)."""
        return self._states.get(device)

    # -- root hooks -------------------------------------------------------------------
    def _begin(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        try:
            image = check_image(self.image(args, kwargs), "the wrapped model's blurry input")
        except Exception:
            self._states.clear()
            raise
        self._states.pop(image.device, None)
        if not self.enabled:
            return
        prior: SemanticPrior = getattr(module, PRIOR_ATTR)
        self._states[image.device] = ForwardState(
            prior, prior(image), image.shape,
            strength=prior.sample_strengths(image.shape[0], image.device))

    def _end(self, module: nn.Module, args: tuple, output: Any) -> None:
        tensor = _first_tensor(output)
        states = [self._states.get(tensor.device)] if tensor is not None else self._states.values()
        for state in states:
            if state is not None:
                state.skips.clear()
                state.maps.clear()
                state.calls.clear()

    # -- level hooks ------------------------------------------------------------------
    def _state_for(self, tensor: torch.Tensor, name: str) -> ForwardState:
        state = self._states.get(tensor.device)
        if state is None:
            raise RuntimeError(
                f"level {name!r} ran outside a forward of the wrapped model on {tensor.device} "
                "(its module was called directly, or the input was on another device than "
                "its features)"
            )
        return state

    def _capture(self, name: str, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.enabled:
            return
        level = self.levels[name]
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"level {name!r}: skip module {level.skip!r} returned {type(output).__name__}, "
                "expected a tensor (choose a module that outputs the encoder feature itself)"
            )
        untracked = torch.compiler.is_compiling() or output.is_inference()
        version = -1 if untracked else output._version
        self._state_for(output, name).skips[name] = (output, version)

    def _modulate(self, name: str, h: Any) -> torch.Tensor:
        level = self.levels[name]
        where = f"level {name!r} ({'input' if level.on_input else 'output'} of {level.site!r})"
        if not isinstance(h, torch.Tensor) or h.dim() != 4:
            raise TypeError(
                f"{where} must be a 4D tensor, got {getattr(h, 'shape', type(h).__name__)}"
            )
        if h.shape[1] != level.channels:
            raise ValueError(
                f"{where} has {h.shape[1]} channels but the level was declared with "
                f"{level.channels}: fix Level(channels=...) or choose another module"
            )
        state = self._state_for(h, name)
        g = h
        if level.skip is not None:
            if name not in state.skips:
                raise RuntimeError(
                    f"{where}: its skip module {level.skip!r} has not run before it in this forward"
                )
            skip, version = state.skips[name]
            if version >= 0 and skip._version != version:  # eager only
                raise RuntimeError(
                    f"level {name!r}: the output of skip module {level.skip!r} was modified in "
                    "place after it was captured; choose a module whose output the network "
                    "does not modify in place"
                )
            if skip.shape != h.shape:
                raise ValueError(
                    f"{where} has shape {tuple(h.shape)} but its skip {level.skip!r} has "
                    f"{tuple(skip.shape)}: f_de and f_en must match to be added"
                )
            g = h + skip
        call = state.calls.get(name, 0)
        state.calls[name] = call + 1
        region = None
        if level.regions:
            if call >= len(level.regions):
                raise RuntimeError(
                    f"{where} ran {call + 1} times in one forward, but only "
                    f"{len(level.regions)} regions are declared"
                )
            region = level.regions[call]
        embedding = state.prior.embeddings[name]
        maps = state.maps.get(name)
        if maps is None:
            maps = state.maps[name] = embedding.maps(state.priors)
        if h.shape[0] != state.image_shape[0]:
            raise ValueError(
                f"{where} has batch {h.shape[0]} but the blurry input had "
                f"{state.image_shape[0]}: the prior's maps are one per input image, so a "
                "level must see the batch as the network received it"
            )
        return embedding(h, g, maps, region, state.image_shape[-2:], state.strength)

    def _modulate_output(self, name: str, module: nn.Module, args: tuple, output: Any):
        if not self.enabled:
            return None
        return self._modulate(name, output)

    def _modulate_input(self, name: str, module: nn.Module, args: tuple):
        if not self.enabled:
            return None
        if not args:
            raise TypeError(f"level {name!r}: {self.levels[name].site!r} was called without inputs")
        return (self._modulate(name, args[0]), *args[1:])
