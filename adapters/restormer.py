"""Level map of Restormer (``sp_adapter.backbones.restormer.Restormer``).

Restormer joins each skip by CONCATENATION in its forward code; the concatenated tensor
``cat(up-sampled decoder, encoder)`` is the first input of the next module, so each level
modulates that input (``on_input``: a pre-hook), channel-wise, the analogue of Eq. (6)
used for MIMO-UNet.

| level  | site                     | input: cat of            | channels (dim d) | scale | prior |
|--------|--------------------------|--------------------------|------------------|-------|-------|
| level1 | ``decoder_level1``       | up2_1, encoder_level1    | 2 d (96)         | 1     | 0     |
| level2 | ``reduce_chan_level2``   | up3_2, encoder_level2    | 4 d (192)        | 1/2   | 1     |
| level3 | ``reduce_chan_level3``   | up4_3, encoder_level3    | 8 d (384)        | 1/4   | 2     |

Level 1 has no 1x1 reduction: ``decoder_level1`` itself takes the 96-channel
concatenation. Default: all three, one per prior level (the network has three joins).
Input sides must be multiples of 8.
"""

from __future__ import annotations

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.levels import BackboneMap, Level
from sp_adapter.backbones.restormer import SIZE_MULTIPLE, Restormer


def backbone_map(model) -> BackboneMap:
    d = model.patch_embed.proj.out_channels
    levels = {
        "level1": Level("decoder_level1", 2 * d, on_input=True, prior_level=0, reduction=1),
        "level2": Level("reduce_chan_level2", 4 * d, on_input=True, prior_level=1, reduction=2),
        "level3": Level("reduce_chan_level3", 8 * d, on_input=True, prior_level=2, reduction=4),
    }
    return BackboneMap("Restormer", levels, tuple(levels),
                       image_channels=model.patch_embed.proj.in_channels)


BACKBONES = (Backbone("restormer", (Restormer,), Restormer, backbone_map, SIZE_MULTIPLE),)
