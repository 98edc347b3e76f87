"""Test helper: record what chosen modules output during one forward."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def shapes(out: Any) -> Any:
    """Output shape(s) without the batch dimension, nested like the output."""
    if isinstance(out, torch.Tensor):
        return list(out.shape[1:])
    return [shapes(o) for o in out]


def clone(out: Any) -> Any:
    """A detached copy of a tensor or of a nested list of tensors."""
    if isinstance(out, torch.Tensor):
        return out.detach().clone()
    return [clone(o) for o in out]


def run_with_hooks(
    model: nn.Module, names: list[str], x: torch.Tensor, keep: bool = False
) -> tuple[Any, dict[str, list[Any]]]:
    """Forward ``x``; per module name, the list of its outputs (or their shapes) per call."""
    calls: dict[str, list[Any]] = {n: [] for n in names}

    def hook(name: str):
        def fn(_mod: nn.Module, _args: tuple, out: Any) -> None:
            calls[name].append(clone(out) if keep else shapes(out))

        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, calls
