"""The prior and an optimiser built before ``wrap``.

A repo's script usually builds its optimiser right after the network; when ``wrap`` comes
later, the prior's parameters are in no optimiser and never train. :func:`add_prior_to_optimizer`
adds them as a group of their own (with their own learning rate), and
:class:`PriorUpdateWatch` warns once when an optimiser of the model steps while the prior
receives gradients it never applies.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from sp_adapter.attach.state import get_prior, prior_of
from sp_adapter.errors import WrapError

WATCH_STEPS = 3
"""Optimiser steps without the prior after which :class:`PriorUpdateWatch` warns."""
_DECIDED: list[Any] = []
"""Handles of watches that have decided: removed by the next watch (torch forbids removing
a step hook while the hooks are being run)."""


def _held(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def backbone_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters of a wrapped ``model`` that are not the prior's: an optimiser built
    on them has the same groups as one built before ``wrap`` (so the repo's saved
    optimiser state loads into it)."""
    prior = {id(p) for p in get_prior(model).parameters()}
    return (p for p in model.parameters() if id(p) not in prior)


def add_prior_to_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, lr: float | None = None,
    **group_options: Any,
) -> dict[str, Any]:
    """Add the trainable parameters of ``model``'s prior to ``optimizer`` as one new
    parameter group and return it.

    Args:
        optimizer: an optimiser built before ``wrap`` (or on :func:`backbone_parameters`).
        model: the wrapped model (or DDP / compile around it).
        lr: the group's learning rate (default: the optimiser's).
        group_options: other options of the group (``weight_decay=...``).

    A learning-rate scheduler built earlier does not know the new group: add the group
    before building the scheduler (when resuming, before loading the optimiser's and the
    scheduler's saved states, if they were saved with the group).
    """
    trainable = [p for p in get_prior(model).parameters() if p.requires_grad]
    if not trainable:
        raise WrapError("the prior has no trainable parameters (it is frozen)")
    held = _held(optimizer)
    new = [p for p in trainable if id(p) not in held]
    if not new:
        raise WrapError(
            "the optimiser already holds every parameter of the prior (it was built after "
            "wrap, on model.parameters()): nothing to add"
        )
    group: dict[str, Any] = {"params": new, **group_options}
    if lr is not None:
        group["lr"] = lr
    optimizer.add_param_group(group)
    added = optimizer.param_groups[-1]
    # schedulers built with last_epoch >= 0 (a resume) read each group's initial_lr
    if any("initial_lr" in g for g in optimizer.param_groups[:-1]):
        added.setdefault("initial_lr", added["lr"])
    return added


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
            warnings.warn(
                f"the prior of the wrapped {type(model).__name__} received gradients in "
                f"{self.count} optimiser steps but is not in the optimiser, so it is not "
                "trained (the optimiser was built before sp_adapter.wrap?): add it with "
                "sp_adapter.add_prior_to_optimizer(optimizer, model, lr=...), or build the "
                "optimiser after wrap; to keep the prior fixed on purpose, freeze it with "
                "sp_adapter.get_prior(model).requires_grad_(False)",
                stacklevel=3,
            )
