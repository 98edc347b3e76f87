"""The attachment state: which network carries a prior and its hook, in one place.

``wrap`` adds two things to the network it attaches to: the prior as a submodule named
:data:`PRIOR_ATTR` (so ``parameters()``, ``state_dict()``, ``.to()`` and DDP see it) and the
:class:`~sp_adapter.attach.hook.SPEHook` as a plain attribute :data:`HOOK_ATTR` (not a
module, so it never enters the ``state_dict``). Every other module finds, adds and removes
them through the functions here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from sp_adapter.errors import WrapError
from sp_adapter.prior.semantic_prior import SemanticPrior

if TYPE_CHECKING:  # the hook module reads the names below
    from sp_adapter.attach.hook import SPEHook

PRIOR_ATTR = "sp_prior"
"""The prior's submodule name; its tensors are ``sp_prior.*`` in a wrapped ``state_dict``."""
HOOK_ATTR = "_sp_hook"
"""The hook's attribute (in the network's ``__dict__``, not a submodule)."""
PRIOR_PREFIX = PRIOR_ATTR + "."
"""The ``state_dict`` key prefix of the prior's tensors."""


def base_model(model: nn.Module) -> nn.Module:
    """The user's network inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def carries_prior(module: nn.Module) -> bool:
    """Whether ``module`` itself is a network ``wrap`` attached a prior to."""
    return HOOK_ATTR in module.__dict__


def wrapped_module(model: nn.Module) -> nn.Module | None:
    """The network that carries the prior: ``model`` itself (inside DDP / DataParallel /
    compile), or the one wrapped network among its submodules (``wrap`` of a container);
    ``None`` if there is none. Several wrapped networks are an error naming each path."""
    inner = base_model(model)
    if carries_prior(inner):
        return inner
    found = [(path, m) for path, m in inner.named_modules() if carries_prior(m)]
    if len(found) > 1:
        raise WrapError(
            f"{type(inner).__name__} holds several wrapped networks "
            f"({', '.join('model.' + path for path, _ in found)}): pass the one you mean"
        )
    return found[0][1] if found else None


def is_wrapped(model: nn.Module) -> bool:
    """Whether ``model`` (or the one network inside it) carries a prior."""
    return wrapped_module(model) is not None


def _carrier(model: nn.Module) -> nn.Module:
    inner = wrapped_module(model)
    if inner is None:
        raise WrapError(
            f"{type(base_model(model)).__name__} is not wrapped: call sp_adapter.wrap(model) "
            "first"
        )
    return inner


def get_hook(model: nn.Module) -> SPEHook:
    """The :class:`SPEHook` of a wrapped model."""
    return _carrier(model).__dict__[HOOK_ATTR]


def get_prior(model: nn.Module) -> SemanticPrior:
    """The :class:`SemanticPrior` module a wrapped model carries."""
    return _carrier(model)._modules[PRIOR_ATTR]


def prior_of(module: nn.Module) -> SemanticPrior | None:
    """The prior ``module`` itself carries, ``None`` for a bare network (no search inside)."""
    return module._modules.get(PRIOR_ATTR) if carries_prior(module) else None


def check_free(module: nn.Module) -> None:
    """Refuse a network that already has an attribute of the prior's name."""
    if PRIOR_ATTR in dir(module):
        raise WrapError(f"{type(module).__name__} already has an attribute {PRIOR_ATTR!r}")


def attach(module: nn.Module, prior: SemanticPrior, hook: SPEHook) -> None:
    """Add ``prior`` as ``module``'s submodule and ``hook`` as its hook attribute."""
    check_free(module)
    module.add_module(PRIOR_ATTR, prior)
    module.__dict__[HOOK_ATTR] = hook


def detach(model: nn.Module) -> nn.Module:
    """Remove the hooks and the prior from the wrapped network in ``model``; returns that
    network, as it was before ``wrap``."""
    inner = _carrier(model)
    inner.__dict__[HOOK_ATTR].remove(inner)
    del inner._modules[PRIOR_ATTR]
    del inner.__dict__[HOOK_ATTR]
    return inner
