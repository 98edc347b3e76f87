"""EMA copies of a wrapped network carry the prior too.

A ``deepcopy`` of a wrapped network (``torch.optim.swa_utils.AveragedModel``, timm's
``ModelEmaV3``) copies the prior and its hooks with it. A repo that builds its EMA network
afresh instead (BasicSR's ``net_g_ema = define_network(...)``) gets a bare network: its
averaging loop then skips the prior and validation runs without it. One line fixes that,
wrapping the fresh network like the trained one: ``net_g_ema = sp_adapter.wrap_like(
define_network(...), net_g)``; :func:`check_priors_match` says whether two networks' priors
line up key for key.
"""

from __future__ import annotations

import copy

from torch import nn

from sp_adapter.attach.state import PRIOR_PREFIX, get_hook, get_prior, wrapped_module
from sp_adapter.attach.wrap import wrap
from sp_adapter.errors import IncompatiblePriorError


def wrap_like(model: nn.Module, like: nn.Module) -> nn.Module:
    """Wrap ``model`` (a separately built copy of ``like``'s network, e.g. an EMA network)
    with the same levels and options as the wrapped ``like``, and a copy of its prior's
    current weights; the teacher is shared, not loaded again. Returns ``model``."""
    wrap(model, prior=copy.deepcopy(get_prior(like)), teacher=get_hook(like).teacher)
    return model


def check_priors_match(model: nn.Module, like: nn.Module) -> None:
    """Refuse (:class:`~sp_adapter.errors.IncompatiblePriorError`) when ``model``'s prior
    does not line up key for key and shape for shape with the wrapped ``like``'s: averaging
    or copying one into the other would then skip or mismatch tensors. ``model`` without a
    prior is refused too, with the line that gives it one."""
    theirs = get_prior(like).state_dict()
    if wrapped_module(model) is None:
        raise IncompatiblePriorError(
            f"{type(model).__name__} carries no prior while the network it copies has "
            f"{len(theirs)} prior tensors ({PRIOR_PREFIX}*): an EMA or averaged copy built "
            "afresh must be wrapped like the trained one, "
            "model = sp_adapter.wrap_like(model, trained_model)"
        )
    ours = get_prior(model).state_dict()
    missing = [k for k in theirs if k not in ours]
    extra = [k for k in ours if k not in theirs]
    shapes = [k for k in theirs if k in ours and ours[k].shape != theirs[k].shape]
    if missing or extra or shapes:
        parts = [
            f"{what}: {', '.join(PRIOR_PREFIX + k for k in keys[:4])}"
            + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            for what, keys in (("missing", missing), ("extra", extra),
                               ("other shapes", shapes)) if keys
        ]
        raise IncompatiblePriorError(
            f"the priors do not line up ({'; '.join(parts)}): they were wrapped with other "
            "levels or options; wrap the copy with sp_adapter.wrap_like(copy, trained_model)"
        )
