"""A wider network that starts out computing exactly what a trained narrower one computes.

The capacity control of a comparison should start where the +SP arm starts: ``wrap`` adds
parameters to the trained base and leaves its output unchanged (every fusion is zero at
initialisation), so the widened control gets the base's weights in its leading channels and
extra channels that the old ones do not read. Trained on the same batches for the same
steps, the two differ only in what their new parameters are.
"""

from __future__ import annotations

import torch
from torch import nn

from sp_adapter.errors import OptionError

_IN_OUT = {nn.Conv1d: (1, 0), nn.Conv2d: (1, 0), nn.Conv3d: (1, 0), nn.Linear: (1, 0),
           nn.ConvTranspose1d: (0, 1), nn.ConvTranspose2d: (0, 1), nn.ConvTranspose3d: (0, 1)}
"""Where a layer's weight keeps its (input, output) channels."""


@torch.no_grad()
def widen_into(base: nn.Module, wide: nn.Module) -> nn.Module:
    """Copy ``base`` into ``wide``, a network of the same structure with as many or more
    channels, so that ``wide`` computes exactly ``base``'s output; returns ``wide``.

    Each layer's weight takes ``base``'s in its leading input and output channels; the
    weights from the new input channels to the old output channels are zero, so no old
    channel reads a new one; the new output channels keep ``wide``'s own initialisation
    (they compute something, so the zero weights leaving them get a gradient). Works for
    networks of convolutions, linear layers and channel-wise operations in which every
    tensor keeps its channels in one order (the library's UNet); a grouped convolution,
    a normalisation over channels or any other parameter whose shape changed is refused.
    """
    base_modules = dict(base.named_modules())
    for name, module in wide.named_modules():
        old = base_modules.get(name)
        where = f"module {name!r}" if name else "the network"
        if old is None or type(old) is not type(module):
            raise OptionError(f"cannot widen {type(base).__name__} into "
                              f"{type(wide).__name__}: {where} differs between them")
        tensors = {**dict(module.named_parameters(recurse=False)),
                   **dict(module.named_buffers(recurse=False))}
        old_tensors = {**dict(old.named_parameters(recurse=False)),
                       **dict(old.named_buffers(recurse=False))}
        for key, tensor in tensors.items():
            source = old_tensors.get(key)
            if source is None:
                raise OptionError(f"cannot widen: {where} has {key!r}, the base has not")
            if source.shape == tensor.shape:
                tensor.copy_(source)
                continue
            dims = _IN_OUT.get(type(module))
            if dims is None or getattr(module, "groups", 1) != 1 or \
                    tensor.dim() != source.dim() or \
                    any(n < o for n, o in zip(tensor.shape, source.shape, strict=True)):
                raise OptionError(
                    f"cannot widen {where} ({type(module).__name__}) {key} from "
                    f"{tuple(source.shape)} to {tuple(tensor.shape)}: only ungrouped "
                    "convolutions and linear layers may grow"
                )
            leading = tuple(slice(0, n) for n in source.shape)
            tensor[leading] = source
            if key == "weight":
                inputs, outputs = dims
                unread = [slice(None)] * tensor.dim()
                unread[inputs] = slice(source.shape[inputs], None)
                unread[outputs] = slice(0, source.shape[outputs])
                tensor[tuple(unread)] = 0
    return wide
