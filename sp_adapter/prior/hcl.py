"""The hierarchical context loss (HCL) of the prior, Eq. (2) and (4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sp_adapter.errors import IncompatiblePriorError, OptionError


def hcl_distance(prior: torch.Tensor, target: torch.Tensor, pool_sizes: Sequence[int] = (1, 2, 4)):
    """``sum_k || avg^k(prior) - avg^k(target) ||^2`` of one level, Eq. (2), per element.

    Each pooled term is normalised by its number of elements ``B * C * (H/k) * (W/k)``
    (the paper's normalisation by ``W^i H^i``, taken as the mean-square error the text
    describes, and extended to the batch and channels so the scale does not depend on the
    width of the teacher). Poolings coarser than the map are skipped.
    """
    if prior.shape != target.shape:
        raise IncompatiblePriorError(
            f"prior {tuple(prior.shape)} and teacher feature {tuple(target.shape)} differ in shape"
        )
    prior, target = prior.float(), target.float()
    total = prior.new_zeros(())
    for k in pool_sizes:
        if k > min(prior.shape[-2:]):
            continue
        if k == 1:
            p, t = prior, target
        else:
            p, t = F.avg_pool2d(prior, k), F.avg_pool2d(target, k)
        total = total + F.mse_loss(p, t)
    return total


def hcl_loss(
    priors: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    pool_sizes: Sequence[int] = (1, 2, 4),
) -> torch.Tensor:
    """``L_prior``: the mean over levels of :func:`hcl_distance`, Eq. (4)."""
    if len(priors) != len(targets):
        raise IncompatiblePriorError(
            f"{len(priors)} prior levels but {len(targets)} teacher levels"
        )
    if not priors:
        raise OptionError("hcl_loss needs at least one level")
    losses = [hcl_distance(p, t, pool_sizes) for p, t in zip(priors, targets, strict=True)]
    return torch.stack(losses).mean()
