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
the prior's :attr:`~sp_adapter.SemanticPrior.strength` scales every SPE's change (1
by default; see :func:`sp_adapter.attach.wrap.set_prior_strength`), drawn once per forward
(per image in training with ``PriorConfig.strength_jitter``).

The hook also checks what crosses into the library: the blurry input's precision, size
and (where the backbone map declares it) pixel range; and it lets the root's
``load_state_dict`` accept a checkpoint saved before ``wrap`` (none of the prior's keys:
the prior is kept, with one warning), while a checkpoint with only some of them is
refused, naming the parts of the prior it lacks. A prior wrapped on the meta device keeps
its initial weights aside (:attr:`SPEHook.initial_state`) and takes them once the model is
materialised (``to_empty``), so it never runs on uninitialised memory.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from sp_adapter.attach.levels import ImageGetter, Level, find_module
from sp_adapter.attach.state import PRIOR_ATTR
from sp_adapter.errors import (
    ForwardError,
    ImageInputError,
    ImageTypeError,
    LevelError,
    PartialPriorStateError,
)
from sp_adapter.prior.semantic_prior import SemanticPrior
from sp_adapter.prior.teacher import Teacher
from sp_adapter.warn import warn_user

RANGE_SLACK = 0.1
"""How far outside [0, 1] an image may go (resampling overshoot, noise) before it is
taken for one in another pixel range."""
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


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
    complete: bool = False
    """Set when the forward returned (it stays ``False`` after a forward that raised)."""
    grad_enabled: bool = True
    """Whether gradients were on during the forward (off under ``torch.no_grad``)."""
    replica: bool = False
    """Whether the forward ran in a ``DataParallel`` replica (one chunk of the batch)."""


@dataclass
class SkipRecipe:
    """A skip to recompute at its site from the skip module's (smaller) inputs instead of
    holding it through the forward (:func:`sp_adapter.optimize_for_inference` with
    ``recompute_skips``); ``check``: the captured output, kept on the first forward to
    verify that recomputing gives it exactly."""

    module: nn.Module
    args: tuple
    check: torch.Tensor | None = None


def check_image(image: Any, what: str = "the blurry image") -> torch.Tensor:
    """``image`` must be a float ``B x 3 x H x W`` tensor."""
    if not isinstance(image, torch.Tensor):
        raise ImageTypeError(
            f"{what} must be a torch.Tensor of shape Bx3xHxW, got {type(image).__name__}"
        )
    if image.dim() != 4 or image.shape[1] != 3:
        raise ImageInputError(
            f"{what} must have shape Bx3xHxW (a batch of RGB images), got {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise ImageTypeError(f"{what} must be a floating-point tensor in [0, 1], got {image.dtype}")
    return image


def check_pixel_range(
    image: torch.Tensor, what: str, scale: float = 1.0, fix: str = ""
) -> None:
    """Refuse ``image`` (meant to be in [0, 1]) when it lies clearly outside [0, 1]; the
    message gives the values seen in the caller's units (``image * scale``). Skipped while
    ``torch.compile`` or ``torch.jit.trace`` traces (reading the values would break the
    graph, or freeze them into the trace)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or image.numel() == 0:
        return
    low, high = (v * scale for v in torch.aminmax(image.detach().float()))
    low, high = float(low), float(high)
    if -RANGE_SLACK * scale <= low and high <= (1 + RANGE_SLACK) * scale:
        return
    if not fix:
        fix = (
            "divide it by 255 (images in [0, 255])" if high > 2 * scale
            else f"scale it to [0, {scale:g}]"
        )
    raise ImageInputError(
        f"{what} has values in [{low:.4g}, {high:.4g}], but it must be in [0, {scale:g}]: "
        f"{fix}"
    )


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
        input_range: the network's pixel range ``[0, input_range]`` when known (the image
            getter divides by it); the input is then checked against it.
        min_size: the smallest height and width the network accepts.
        route: how the levels were chosen, in words (for :func:`sp_adapter.summary`).
    """

    def __init__(
        self,
        model: nn.Module,
        levels: Mapping[str, Level],
        image: ImageGetter,
        teacher: Teacher | None,
        *,
        input_range: float | None = None,
        min_size: int = 1,
        route: str = "levels given",
    ) -> None:
        self.levels = dict(levels)
        self.route = route
        self.image = image
        self.teacher = teacher
        self.enabled = True
        self.input_range, self.min_size = input_range, min_size
        self.watch: Any = None
        """A :class:`~sp_adapter.attach.optim.PriorUpdateWatch` (set by ``wrap``), closed on
        removal."""
        self.recompute_skips: dict[str, bool] = {}
        """Levels whose skip is recomputed at the site (level -> verified on a forward yet);
        set by :func:`~sp_adapter.attach.optimize.optimize_for_inference`."""
        self._states: dict[torch.device, ForwardState] = {}
        self._forgiven: list[str] = []
        self._strict = True
        self._warned: set[str] = set()
        self._disabled_on: set[torch.device] = set()
        self.initial_state: dict[str, torch.Tensor] | None = None
        """The prior's initial weights (on the CPU) while the wrapped model is on the meta
        device: loaded into the prior when the model is materialised (set by ``wrap``)."""
        modules = {}
        for name, level in self.levels.items():
            modules[name] = (
                find_module(model, level.site, f"level {name!r}: site"),
                find_module(model, level.skip, f"level {name!r}: skip") if level.skip else None,
            )
        model.register_forward_pre_hook(self._begin, with_kwargs=True)
        model.register_forward_hook(self._end, always_call=True)
        model.register_load_state_dict_pre_hook(self._before_load)
        model.register_load_state_dict_post_hook(self._after_load)
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
        new.route, new.recompute_skips = self.route, {}
        new.enabled = self.enabled
        new.input_range, new.min_size = self.input_range, self.min_size
        new.watch = None
        new._states, new._forgiven, new._warned = {}, [], set(self._warned)
        new._strict = True
        new._disabled_on = set()
        new.initial_state = self.initial_state
        return new

    def __getstate__(self) -> dict:
        """For pickling (``torch.save(model)``, spawned DDP workers): no per-forward state and
        no optimiser watch (it holds weak references; the copy's optimiser is built anew)."""
        state = dict(self.__dict__)
        state["watch"], state["_states"], state["_forgiven"] = None, {}, []
        return state

    def _owns(self, fn: Any) -> bool:
        fn = getattr(fn, "hook", fn)  # load_state_dict hooks are kept inside a _WrappedHook
        fn = fn.func if isinstance(fn, partial) else fn
        return getattr(fn, "__self__", None) is self

    def hooks_in(self, model: nn.Module) -> list[tuple[nn.Module, str, int]]:
        """``(module, hook dict name, hook id)`` of every hook of this object in ``model``."""
        found = []
        for module in model.modules():
            for kind in _HOOK_DICTS:
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
        if self.watch is not None:
            self.watch.close()
            self.watch = None

    def state(self, device: torch.device) -> ForwardState | None:
        """The state of the last forward on ``device`` (``None`` if none ran)."""
        return self._states.get(device)

    def ran_disabled(self, device: torch.device) -> bool:
        """Whether the last forward on ``device`` ran with the prior disabled
        (:func:`sp_adapter.attach.wrap.prior_disabled`), so it left no priors."""
        return device in self._disabled_on

    def materialise(self, prior: SemanticPrior) -> bool:
        """Give a prior wrapped on the meta device its initial weights once the model left
        the meta device (``to_empty`` leaves uninitialised memory); ``True`` if it did."""
        if self.initial_state is None:
            return False
        if any(t.is_meta for t in prior.state_dict().values()):
            return False
        initial, self.initial_state = self.initial_state, None
        with torch.no_grad():
            for key, value in prior.state_dict().items():
                value.copy_(initial[key])
        return True

    # -- root hooks -------------------------------------------------------------------
    def check_input(self, image: torch.Tensor, prior: SemanticPrior) -> None:
        """Refuse a blurry input the network or the prior cannot take, naming the cause:
        too small, another precision than the weights (outside autocast), or (where the
        backbone's pixel range is known) values outside it."""
        h, w = image.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise ImageInputError(
                f"the wrapped model's input is {h}x{w} pixels; this network needs at least "
                f"{self.min_size}x{self.min_size} (it pads by reflection to a multiple of its "
                "stride): give larger images"
            )
        weight = next((p for p in prior.parameters() if p.is_floating_point()), None)
        if (
            weight is not None
            and image.dtype != weight.dtype
            and not torch.is_autocast_enabled(image.device.type)
        ):
            raise ImageInputError(
                f"the wrapped model's input is {image.dtype} but its weights are "
                f"{weight.dtype}: cast the input (x.to({weight.dtype})) or the model "
                f"(model.to({image.dtype})), or run under torch.autocast"
            )
        if self.input_range is not None:
            r = self.input_range
            check_pixel_range(
                image, "the wrapped model's blurry input", scale=r,
                fix=f"this network takes images in [0, {r:g}]"
                + (" (divide images in [0, 255] by 255)" if r == 1 else
                   f" (multiply images in [0, 1] by {r:g})"),
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn_user(message)

    def _begin(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        prior: SemanticPrior = getattr(module, PRIOR_ATTR)
        try:
            image = check_image(self.image(args, kwargs), "the wrapped model's blurry input")
            if self.enabled:
                self.check_input(image, prior)
        except Exception:
            self._states.clear()
            raise
        self._states.pop(image.device, None)
        if not self.enabled:
            self._disabled_on.add(image.device)
            return
        self._disabled_on.discard(image.device)
        self.materialise(prior)
        if prior.needs_weights:
            self._warn_once(
                "weights",
                "the prior was wrapped with teacher=None and no trained prior weights were "
                "loaded since, so its student has random weights: load them (the model's "
                "load_state_dict with a wrapped checkpoint, or "
                "sp_adapter.from_pretrained(folder, model=model)), or wrap with a teacher to "
                "train the prior",
            )
        self._states[image.device] = ForwardState(
            prior, prior(image), image.shape,
            strength=prior.sample_strengths(image.shape[0], image.device),
            grad_enabled=torch.is_grad_enabled(),
            replica=bool(getattr(module, "_is_replica", False)))

    def _end(self, module: nn.Module, args: tuple, output: Any) -> None:
        # torch calls this hook with output None when the forward raised
        tensor = _first_tensor(output)
        if tensor is not None and tensor.device in self._states:
            self._states[tensor.device].complete = True
        states = [self._states.get(tensor.device)] if tensor is not None else self._states.values()
        for state in states:
            if state is not None:
                state.skips.clear()
                state.maps.clear()
                state.calls.clear()

    # -- load_state_dict hooks (on the root) ------------------------------------------
    def _before_load(self, module: nn.Module, state_dict: Mapping[str, Any], prefix: str,
                     local_metadata: Any, strict: bool, *_: Any) -> None:
        """Note the prior's keys when the state dict holds none of them (a checkpoint saved
        before ``wrap``): :meth:`_after_load` then forgives them as missing. A strict load
        holding only some of them is refused here, naming the parts of the prior missing."""
        prior = module._modules.get(PRIOR_ATTR)
        start = prefix + PRIOR_ATTR + "."
        self._strict = strict and _load_is_strict()
        self._forgiven = []
        if prior is None:
            return
        expected = list(prior.state_dict(keep_vars=True))
        present = [k for k in expected if start + k in state_dict]
        if not present:
            self._forgiven = [start + k for k in expected]
            return
        missing = [k for k in expected if start + k not in state_dict]
        if missing and self._strict:
            examples = ", ".join(start + k for k in missing[:2])
            raise PartialPriorStateError(
                f"{type(module).__name__}.load_state_dict: the state dict holds {len(present)} "
                f"of the prior's {len(expected)} tensors ({PRIOR_ATTR}.*) and lacks "
                f"{describe_prior_keys(missing, expected)} (e.g. {examples}): it was saved "
                "from a prior with other levels or options, or cut short. Load a state dict "
                "saved from a model wrapped like this one, one without any prior tensors (the "
                "backbone alone: the prior is kept), or the prior alone with "
                "sp_adapter.from_pretrained; load_state_dict(..., strict=False) loads the "
                "tensors it holds"
            )
        self.initial_state = None  # the prior's weights come from the state dict

    def _after_load(self, module: nn.Module, incompatible: Any) -> None:
        forgiven, self._forgiven = set(self._forgiven), []
        if not forgiven:
            return
        incompatible.missing_keys[:] = [
            k for k in incompatible.missing_keys if k not in forgiven
        ]
        if self._strict and (incompatible.missing_keys or incompatible.unexpected_keys):
            return  # the load fails on the backbone's own keys: say nothing of the prior
        prior = module._modules.get(PRIOR_ATTR)
        if prior is not None and self.materialise(prior):
            kept = ("the prior, wrapped on the meta device, was given its initial weights "
                    "(as a freshly wrapped model has)")
        else:
            kept = "the prior kept as it is"
        warn_user(
            f"{type(module).__name__}.load_state_dict: the state dict holds none of the "
            f"prior's {len(forgiven)} tensors ({PRIOR_ATTR}.*), as a checkpoint saved before "
            f"sp_adapter.wrap does: the backbone was loaded and {kept}",
        )

    # -- level hooks ------------------------------------------------------------------
    def _state_for(self, tensor: torch.Tensor, name: str) -> ForwardState:
        state = self._states.get(tensor.device)
        if state is None:
            raise ForwardError(
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
            raise LevelError(
                f"level {name!r}: skip module {level.skip!r} returned {type(output).__name__}, "
                "expected a tensor (choose a module that outputs the encoder feature itself)"
            )
        untracked = torch.compiler.is_compiling() or output.is_inference()
        version = -1 if untracked else output._version
        recipe = self._skip_recipe(name, module, args, output)
        self._state_for(output, name).skips[name] = (output if recipe is None else recipe,
                                                     version)

    def _skip_recipe(self, name: str, module: nn.Module, args: tuple,
                     output: torch.Tensor) -> SkipRecipe | None:
        """A :class:`SkipRecipe` where level ``name`` may recompute its skip: opted in,
        nothing needs a gradient, the module is in eval mode with no hooks but this one,
        and its inputs are tensors of at most half the output's size."""
        verified = self.recompute_skips.get(name)
        if verified is None or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return None
        if module.training or module._forward_pre_hooks or len(module._forward_hooks) != 1:
            return None
        if not args or not all(isinstance(a, torch.Tensor) for a in args):
            return None
        if 2 * sum(a.numel() for a in args) > output.numel():
            return None
        return SkipRecipe(module, args, None if verified else output)

    def _recomputed(self, name: str, recipe: SkipRecipe) -> torch.Tensor:
        """The skip of level ``name`` recomputed; on its first forward compared with the
        captured one, and recomputing switched off (one warning) unless they are equal."""
        skip = recipe.module.forward(*recipe.args)
        if recipe.check is not None:
            if skip.shape == recipe.check.shape and torch.equal(skip, recipe.check):
                self.recompute_skips[name] = True
            else:
                self.recompute_skips.pop(name, None)
                warnings.warn(
                    f"level {name!r}: recomputing skip module {self.levels[name].skip!r} from "
                    "its inputs does not give its output (it takes keyword arguments or its "
                    "inputs change later); the level holds the skip as usual",
                    stacklevel=2,
                )
                skip = recipe.check
            recipe.check = None
        return skip

    def _modulate(self, name: str, h: Any) -> torch.Tensor:
        level = self.levels[name]
        where = f"level {name!r} ({'input' if level.on_input else 'output'} of {level.site!r})"
        if not isinstance(h, torch.Tensor) or h.dim() != 4:
            raise LevelError(
                f"{where} must be a 4D tensor, got {getattr(h, 'shape', type(h).__name__)}"
            )
        if h.shape[1] != level.channels:
            raise LevelError(
                f"{where} has {h.shape[1]} channels but the level was declared with "
                f"{level.channels}: fix Level(channels=...) or choose another module"
            )
        state = self._state_for(h, name)
        skip = None
        if level.skip is not None:
            if name not in state.skips:
                raise ForwardError(
                    f"{where}: its skip module {level.skip!r} has not run before it in this forward"
                )
            skip, version = state.skips[name]
            if isinstance(skip, SkipRecipe):  # a fresh tensor: no version to compare
                skip, version = self._recomputed(name, skip), -1
            if version >= 0 and skip._version != version:  # eager only
                raise ForwardError(
                    f"level {name!r}: the output of skip module {level.skip!r} was modified in "
                    "place after it was captured; choose a module whose output the network "
                    "does not modify in place"
                )
            if skip.shape != h.shape:
                raise LevelError(
                    f"{where} has shape {tuple(h.shape)} but its skip {level.skip!r} has "
                    f"{tuple(skip.shape)}: f_de and f_en must match to be added"
                )
        call = state.calls.get(name, 0)
        state.calls[name] = call + 1
        region = None
        if level.regions:
            if call >= len(level.regions):
                raise ForwardError(
                    f"{where} ran {call + 1} times in one forward, but only "
                    f"{len(level.regions)} regions are declared"
                )
            region = level.regions[call]
        embedding = state.prior.embeddings[name]
        maps = state.maps.get(name)
        if maps is None:
            maps = state.maps[name] = embedding.maps(state.priors)
        if h.shape[0] != state.image_shape[0]:
            raise LevelError(
                f"{where} has batch {h.shape[0]} but the blurry input had "
                f"{state.image_shape[0]}: the prior's maps are one per input image, so a "
                "level must see the batch as the network received it"
            )
        # g = h + skip, summed inside (in chunks where nothing needs a gradient)
        return embedding.modulate(h, skip, maps, region, state.image_shape[-2:],
                                  state.strength)

    def _modulate_output(self, name: str, module: nn.Module, args: tuple, output: Any):
        if not self.enabled:
            return None
        return self._modulate(name, output)

    def _modulate_input(self, name: str, module: nn.Module, args: tuple):
        if not self.enabled:
            return None
        if not args:
            raise LevelError(
                f"level {name!r}: {self.levels[name].site!r} was called without inputs"
            )
        return (self._modulate(name, args[0]), *args[1:])


def _load_is_strict() -> bool:
    """Whether the ``nn.Module.load_state_dict`` call running now was asked to be strict
    (torch passes its hooks ``strict=True`` whatever the caller asked, and checks
    strictness only after loading)."""
    code = nn.Module.load_state_dict.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return bool(frame.f_locals.get("strict", True))
        frame = frame.f_back
    return True


def describe_prior_keys(keys: list[str], every: list[str]) -> str:
    """The parts of a prior that ``keys`` (of its state dict, ``every`` being all its keys)
    cover, in the paper's words: ``"the student F_S (all 206 tensors), level2's embedding
    (MLA/SAT; 3 of 6 tensors)"``."""
    def part(key: str) -> str:
        head = key.split(".")
        if head[:2] == ["learner", "student"]:
            return "the student F_S"
        if head[:2] == ["learner", "clc"]:
            return "the cross-level connection (CLC, Eq. 3)"
        if head[0] == "embeddings" and len(head) > 1:
            return f"{head[1]}'s embedding (MLA/SAT, Eq. 5-6)"
        return ".".join(head[:2])

    counts: dict[str, int] = {}
    totals: dict[str, int] = {}
    for key in every:
        totals[part(key)] = totals.get(part(key), 0) + 1
    for key in keys:
        counts[part(key)] = counts.get(part(key), 0) + 1
    return ", ".join(
        f"{name} ({'all ' + str(n) if n == totals[name] else f'{n} of {totals[name]}'} "
        f"tensor{'s' if totals[name] > 1 else ''})"
        for name, n in counts.items())
