"""A wrapped model's state dict is the backbone's plus the prior's, under ``sp_prior.``.

:func:`split_state_dict` takes such a state dict apart, so a checkpoint saved after
``wrap`` loads into the bare network (the repo's own test script) and its prior can be
kept or reattached; the load hooks in :mod:`sp_adapter.attach.hook` go the other way and let a
wrapped model load a checkpoint saved before ``wrap``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch

from sp_adapter.attach.state import PRIOR_PREFIX
from sp_adapter.errors import CheckpointFormatError


def prior_key_start(key: str) -> int:
    """Where the prior's own name starts in ``key`` (``-1`` if it is no prior key): a key
    ``sp_prior.x``, or ``<path>.sp_prior.x`` for a network wrapped inside a container or
    saved through ``DataParallel`` (``module.sp_prior.x``)."""
    if key.startswith(PRIOR_PREFIX):
        return 0
    at = key.find("." + PRIOR_PREFIX)
    return -1 if at < 0 else at + 1


def split_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[OrderedDict[str, torch.Tensor], OrderedDict[str, torch.Tensor]]:
    """``(backbone, prior)``: the backbone's entries with their keys unchanged, and the
    prior's with the ``sp_prior.`` prefix removed (as :func:`sp_adapter.prior_state_dict`
    gives them, ready for ``sp_adapter.get_prior(model).load_state_dict``).

    A key ``<path>.sp_prior.x`` (a network wrapped inside a container, or saved through
    ``DataParallel``) goes to the prior as ``x``; a state dict holding two priors is refused.
    """
    backbone: OrderedDict[str, torch.Tensor] = OrderedDict()
    prior: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        start = prior_key_start(key)
        if start < 0:
            backbone[key] = value
        else:
            name = key[start + len(PRIOR_PREFIX):]
            if name in prior:
                raise CheckpointFormatError(
                    f"the state dict holds two priors ({key!r} and another {name!r}): split "
                    "the state dict of each wrapped network separately"
                )
            prior[name] = value
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:  # keep the per-module versions torch's loader reads
        backbone._metadata = OrderedDict(  # type: ignore[attr-defined]
            (k, v) for k, v in metadata.items() if prior_key_start(k + ".") < 0
        )
    return backbone, prior


def has_prior_keys(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` holds any of a prior's entries (it was saved after ``wrap``)."""
    return any(prior_key_start(k) >= 0 for k in state_dict)
