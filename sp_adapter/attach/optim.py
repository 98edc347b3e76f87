"""The prior and an optimiser (and its schedulers) built before ``wrap``.

A repo's script usually builds its optimiser and learning-rate scheduler right after the
network and loads their saved states in a resume block; ``wrap`` may come anywhere in
between. :func:`add_prior_to_optimizer` gives the prior's parameters a group of their own
and keeps three things true whatever the order:

* schedulers already built on the optimiser schedule the new group too (their per-group
  lists, ``base_lrs``, ``lr_lambdas``, ..., grow by one entry; its ``lr`` starts where the
  schedule stands);
* a state saved by the optimiser is the state of the same optimiser without the prior,
  with the prior's group kept aside inside it (under :data:`STASH_KEY`), so it loads into an
  optimiser with or without the prior's group, and the prior's part comes back bit for bit
  when the group is added after the load;
* a state saved before ``wrap`` (no prior group) loads into an optimiser that has one: the
  prior's group and its state are kept.

:class:`PriorUpdateWatch` warns once when an optimiser of the model steps while the prior
receives gradients it never applies.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from sp_adapter.attach.state import get_prior, prior_of
from sp_adapter.errors import WrapError
from sp_adapter.warn import warn_user

WATCH_STEPS = 3
"""Optimiser steps without the prior after which :class:`PriorUpdateWatch` warns."""
PRIOR_GROUP_KEY = "sp_prior"
"""The option that marks the prior's parameter group (``group["sp_prior"] is True``)."""
STASH_KEY = "sp_prior_group"
"""The entry of a saved optimiser state's ``"state"`` that keeps the prior's group aside."""
SCHEDULE_LISTS = ("base_lrs", "_last_lr", "lr_lambdas", "min_lrs")
"""Per-group lists a learning-rate scheduler keeps (torch's, BasicSR's, warm-up wrappers')."""
_DECIDED: list[Any] = []
"""Handles of watches that have decided: removed by the next watch (torch forbids removing
a step hook while the hooks are being run)."""
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Optimisers :func:`add_prior_to_optimizer` has set up -> whether their schedulers must be
checked before the next step (after a load)."""


def _held(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def backbone_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters of a wrapped ``model`` that are not the prior's: an optimiser built
    on them has the same groups as one built before ``wrap`` (so the repo's saved
    optimiser state loads into it)."""
    prior = {id(p) for p in get_prior(model).parameters()}
    return (p for p in model.parameters() if id(p) not in prior)


def torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser that holds the parameter groups: ``optimizer`` itself, or the one
    optimiser attribute of a wrapper object, followed down (DeepDeblur's ``Optimizer`` keeps it
    in ``.G``, Accelerate's ``AcceleratedOptimizer`` in ``.optimizer``, Lightning's
    ``LightningOptimizer`` in ``._optimizer``)."""
    start = optimizer
    while True:
        inner = {
            name: value for name, value in getattr(optimizer, "__dict__", {}).items()
            if isinstance(value, torch.optim.Optimizer) and value is not optimizer
        }
        if len(inner) == 1:
            optimizer = next(iter(inner.values()))
            continue
        if len(inner) > 1:
            names = ", ".join(f"optimizer.{name}" for name in inner)
            raise WrapError(
                f"the {type(optimizer).__name__} given as optimiser holds several torch "
                f"optimisers ({names}): pass the one that trains the wrapped network"
            )
        if isinstance(optimizer, torch.optim.Optimizer):
            return optimizer
        raise WrapError(
            "add_prior_to_optimizer needs a torch.optim.Optimizer (or an object holding one), "
            f"got {type(start).__name__} with none among its attributes: pass the torch "
            "optimiser that trains the wrapped network"
        )


def add_prior_to_optimizer(
    optimizer: Any, model: nn.Module, lr: float | None = None, **group_options: Any,
) -> dict[str, Any]:
    """Give the trainable parameters of ``model``'s prior a parameter group of their own in
    ``optimizer`` and return that group.

    Args:
        optimizer: a torch optimiser built before ``wrap`` (or on
            :func:`backbone_parameters`, or on ``model.parameters()`` after ``wrap``: the
            prior's parameters then move out of their groups into their own), or a repo's
            object holding one (:func:`torch_optimizer`).
        model: the wrapped model (or DDP / compile around it).
        lr: the group's base learning rate, the one its schedule scales (default: the
            optimiser's, or that of the group the prior's parameters were in).
        group_options: other options of the group (``weight_decay=...``).

    Call it once, anywhere after the optimiser is built: before or after a learning-rate
    scheduler is built (schedulers already built are extended to the new group, and its
    ``lr`` starts where their schedule stands) and before or after the optimiser's (and the
    scheduler's) saved state is loaded, whether that state was saved with the prior or
    before ``wrap``. Loading a state saved with the prior restores the prior's optimiser
    state (moments, step, learning rate) bit for bit, in either order.
    """
    optimizer = torch_optimizer(optimizer)
    prior_ids = [id(p) for p in get_prior(model).parameters() if p.requires_grad]
    if not prior_ids:
        raise WrapError("the prior has no trainable parameters (it is frozen)")
    params = {id(p): p for p in get_prior(model).parameters()}
    if _prior_index(optimizer) is not None:
        raise WrapError("this optimiser already has the prior's group (add_prior_to_optimizer "
                        "was called for it before): nothing to add")
    source = _take_out(optimizer, set(prior_ids))
    options = {k: v for k, v in (source or optimizer.defaults).items() if k != "params"}
    if "initial_lr" in options:  # a scheduler runs: the group's base, not its current lr
        options["lr"] = options.pop("initial_lr")
    options.update(group_options)
    if lr is not None:
        options["lr"] = lr
    optimizer.add_param_group({"params": [params[i] for i in prior_ids], **options,
                               PRIOR_GROUP_KEY: True})
    group = optimizer.param_groups[-1]
    if not _restore_stash(optimizer, group):
        _join_schedule(optimizer, group)
    _keep(optimizer)
    fit_schedulers(optimizer)
    return group


def _prior_index(optimizer: torch.optim.Optimizer) -> int | None:
    return next((i for i, g in enumerate(optimizer.param_groups) if g.get(PRIOR_GROUP_KEY)),
                None)


def _take_out(optimizer: torch.optim.Optimizer, prior_ids: set[int]) -> dict | None:
    """Remove the prior's parameters from the groups holding them (an optimiser built on
    ``model.parameters()`` after ``wrap``); returns the first such group (its options become
    the prior group's), ``None`` when no group held them."""
    source = None
    for group in list(optimizer.param_groups):
        kept = [p for p in group["params"] if id(p) not in prior_ids]
        if len(kept) == len(group["params"]):
            continue
        source = source or dict(group)
        group["params"] = kept
        if not kept:
            optimizer.param_groups.remove(group)
    return source


def _reference(optimizer: torch.optim.Optimizer, index: int) -> dict | None:
    """The first group other than ``index`` that a scheduler has set up (``initial_lr``)."""
    return next((g for i, g in enumerate(optimizer.param_groups)
                 if i != index and "initial_lr" in g), None)


def _join_schedule(optimizer: torch.optim.Optimizer, group: dict) -> None:
    """Set up a new group as the schedulers built earlier set up the others: ``initial_lr``
    (its base learning rate) and options such as OneCycle's ``max_lr`` scaled to it, and an
    ``lr`` where the schedule stands (the reference group's ratio of current to base
    learning rate, taken above a cosine schedule's ``eta_min``)."""
    index = optimizer.param_groups.index(group)
    ref = _reference(optimizer, index)
    if ref is None:
        return
    base = group["lr"]
    scale = base / ref["initial_lr"] if ref["initial_lr"] else 1.0
    for key, value in ref.items():
        if key not in group:
            group[key] = value * scale if key.endswith("_lr") and isinstance(value, float) \
                else value
    group["initial_lr"] = base
    group["lr"] = _where_schedule_stands(optimizer, base, ref)


def _where_schedule_stands(optimizer: torch.optim.Optimizer, base: float, ref: dict) -> float:
    """The learning rate of a group of base learning rate ``base`` at the point of the
    schedule where group ``ref`` stands: ``ref``'s ratio of current to base learning rate,
    taken above a cosine schedule's ``eta_min``."""
    floor = next((s.eta_min for s in schedulers_of(optimizer)
                  if isinstance(getattr(s, "eta_min", None), (int, float))), 0.0)
    if ref["initial_lr"] == floor:
        return base
    return floor + (base - floor) * (ref["lr"] - floor) / (ref["initial_lr"] - floor)


def schedulers_of(optimizer: torch.optim.Optimizer) -> list[Any]:
    """Every object whose ``optimizer`` attribute is ``optimizer``: the learning-rate
    schedulers built on it (torch's, BasicSR's, a warm-up wrapper and the scheduler it
    holds), found among the objects that refer to it."""
    found: dict[int, Any] = {}
    for ref in gc.get_referrers(optimizer):
        if isinstance(ref, dict):
            if ref.get("optimizer") is optimizer:
                for owner in gc.get_referrers(ref):
                    if getattr(owner, "__dict__", None) is ref:
                        found[id(owner)] = owner
        elif getattr(ref, "optimizer", None) is optimizer and not isinstance(ref, type):
            found[id(ref)] = ref
    return [s for s in found.values() if any(isinstance(vars(s).get(n), list)
                                             for n in SCHEDULE_LISTS)]


def fit_schedulers(optimizer: Any) -> None:
    """Give every scheduler of ``optimizer`` one entry per group: where a per-group list is
    one short of the groups (the scheduler was built, or its state saved, before the prior's
    group existed), insert the prior group's entry: its base learning rate (scaled as that
    scheduler scales the others, e.g. a warm-up's multiplier), its current learning rate,
    and the first group's ``lr_lambda`` / ``min_lr``. Called by
    :func:`add_prior_to_optimizer` and again before the first step after any load."""
    optimizer = torch_optimizer(optimizer)
    index = _prior_index(optimizer)
    if index is None:
        return
    groups = optimizer.param_groups
    group = groups[index]
    ref = _reference(optimizer, index) or groups[1 if index == 0 else 0]
    for scheduler in schedulers_of(optimizer):
        for name in SCHEDULE_LISTS:
            values = vars(scheduler).get(name)
            if not isinstance(values, list) or len(values) != len(groups) - 1 or not values:
                continue
            if name in ("base_lrs", "_last_lr") and values[0] != ref["lr"]:
                # as this scheduler sees the groups (e.g. a warm-up's multiplier)
                base = ref.get("initial_lr", ref["lr"])
                value = group.get("initial_lr", group["lr"]) * (values[0] / base if base else 1)
            elif name in ("base_lrs", "_last_lr"):  # the scheduler in charge right now
                value = group.get("initial_lr", group["lr"]) if name == "base_lrs" else group["lr"]
            else:
                value = values[0]
            values.insert(index, value)


def _restore_stash(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    """After a state saved with the prior was loaded into the optimiser without its group,
    the prior's group and per-parameter state wait in ``optimizer.state`` (torch keeps
    entries it cannot place): move them onto the new group. Returns whether there were any."""
    stash = optimizer.state.pop(STASH_KEY, None)
    if stash is None:
        return False
    ids = stash["params"]
    if len(ids) != len(group["params"]):
        raise WrapError(
            f"the loaded optimiser state holds a prior group of {len(ids)} parameters, but this "
            f"model's prior has {len(group['params'])} trainable ones: it was saved for a prior "
            "with other levels or options"
        )
    group.update({k: v for k, v in stash.items() if k != "params"})
    for key, param in zip(ids, group["params"], strict=True):
        state = optimizer.state.pop(key, None)
        if state is not None:
            optimizer.state[param] = _placed(state, param, group)
    return True


def _placed(state: dict, param: torch.Tensor, group: dict) -> dict:
    """A saved per-parameter state on ``param``'s device and precision, as torch places it on
    load (``step`` stays where it is unless the optimiser is fused or capturable)."""
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
        elif key == "step":
            keep = not (group.get("fused") or group.get("capturable"))
            out[key] = value.clone() if keep else value.to(param.device, torch.float32)
        elif value.is_floating_point():
            out[key] = value.to(device=param.device, dtype=param.dtype).clone()
        else:
            out[key] = value.to(param.device).clone()
    return out


# -- the optimiser's own hooks ----------------------------------------------------------
def _keep(optimizer: torch.optim.Optimizer) -> None:
    """Register the optimiser hooks that keep the prior's group across saves and loads
    (once per optimiser)."""
    if optimizer in _KEPT:
        return
    _KEPT[optimizer] = False
    optimizer.register_state_dict_post_hook(_stash_on_save)
    optimizer.register_load_state_dict_pre_hook(_unstash_on_load)
    optimizer.register_load_state_dict_post_hook(_after_load)
    optimizer.register_step_pre_hook(_before_step)


def _stash_on_save(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """Save the prior's group aside (see the module docstring)."""
    index = _prior_index(optimizer)
    groups = state_dict["param_groups"]
    if index is None or len(groups) != len(optimizer.param_groups):
        return state_dict
    state = dict(state_dict["state"])
    state[STASH_KEY] = dict(groups[index])
    return {**state_dict, "state": state,
            "param_groups": [g for i, g in enumerate(groups) if i != index]}


def _unstash_on_load(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """Give a state to load the prior's group back: the one kept aside in it, or (a state
    saved before ``wrap``) the optimiser's current group and state for the prior."""
    index = _prior_index(optimizer)
    if index is None:
        return state_dict
    saved = list(state_dict["param_groups"])
    state = dict(state_dict["state"])
    stash = state.pop(STASH_KEY, None)
    if len(saved) != len(optimizer.param_groups) - 1:
        return state_dict
    if stash is None:  # saved before wrap: keep the prior's group as it is now
        group = optimizer.param_groups[index]
        taken = {k for g in saved for k in g["params"]} | {k for k in state if isinstance(k, int)}
        first = max(taken, default=-1) + 1
        stash = {k: v for k, v in group.items() if k != "params"}
        stash["params"] = list(range(first, first + len(group["params"])))
        for key, param in zip(stash["params"], group["params"], strict=True):
            if param in optimizer.state:
                state[key] = optimizer.state[param]
        ref = next((g for g in saved if "initial_lr" in g), None)
        if ref is not None and "initial_lr" in stash:
            # the loaded run stands elsewhere in its schedule: so does the prior's group
            stash["lr"] = _where_schedule_stands(optimizer, stash["initial_lr"], ref)
    saved.insert(index, stash)
    return {**state_dict, "state": state, "param_groups": saved}


def _after_load(optimizer: torch.optim.Optimizer) -> None:
    _KEPT[optimizer] = True  # a scheduler's state may be loaded next: check before stepping


def _before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if _KEPT.get(optimizer):
        _KEPT[optimizer] = False
        fit_schedulers(optimizer)


class PriorUpdateWatch:
    """Warns once when an optimiser holding the model's backbone but none of the prior
    steps :data:`WATCH_STEPS` times while the prior has gradients: the prior is not being
    trained, almost always because the optimiser was built before ``wrap``.

    It is a global optimiser step hook that removes itself as soon as it has decided (an
    optimiser holding the prior stepped, or the warning was given), so it costs nothing
    after the first steps.
    """

    def __init__(self, model: nn.Module, steps: int = WATCH_STEPS) -> None:
        self._model = weakref.ref(model)
        self._prior = weakref.ref(prior_of(model))
        self.steps, self.count = steps, 0
        while _DECIDED:
            _DECIDED.pop().remove()
        self._handle: Any = register_optimizer_step_post_hook(self._after_step)

    def close(self) -> None:
        """Stop watching (the hook is removed by the next watch: this may be called from
        inside an optimiser step, while torch runs the hooks)."""
        if self._handle is not None:
            _DECIDED.append(self._handle)
            self._handle = None

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        model, prior = self._model(), self._prior()
        if self._handle is None:
            return
        if model is None or prior is None or prior_of(model) is not prior:
            self.close()
            return
        held = _held(optimizer)
        trainable = [p for p in prior.parameters() if p.requires_grad]
        if not trainable or any(id(p) in held for p in trainable):
            self.close()  # the prior is frozen, or it is being trained
            return
        ours = {id(p) for p in prior.parameters()}
        if not any(id(p) in held for p in model.parameters() if id(p) not in ours):
            return  # another model's optimiser
        if not any(p.grad is not None for p in trainable):
            return
        self.count += 1
        if self.count >= self.steps:
            self.close()
            warn_user(
                f"the prior of the wrapped {type(model).__name__} received gradients in "
                f"{self.count} optimiser steps but is not in the optimiser, so it is not "
                "trained (the optimiser was built before sp_adapter.wrap?): add it with "
                "sp_adapter.add_prior_to_optimizer(optimizer, model, lr=...), or build the "
                "optimiser after wrap; to keep the prior fixed on purpose, freeze it with "
                "sp_adapter.get_prior(model).requires_grad_(False)"
            )
