"""Level map of MIMO-UNet and MIMO-UNetPlus (``sp_adapter.backbones.mimo_unet``).

MIMO-UNet joins its skips by CONCATENATION: ``Convs.1`` receives
``cat(up-sampled decoder feature, AFF skip)`` at full resolution, ``Convs.0`` the same at
1/2. The natural analogue of Eq. (6) there is a channel-wise ``mu``/``sigma`` on the
concatenated tensor (``on_input``: a pre-hook modulates ``Convs.N``'s input), which is
``mu_de * f_de (+) mu_en * f_en`` with separate scales for the decoder and encoder halves.
The 1/4 level has no skip: ``Decoder.0``'s output (``f_de``, which also feeds the 1/4
output head) is modulated.

| level  | site        | kind                  | channels (MIMO / MIMO+) | scale | prior level |
|--------|-------------|-----------------------|-------------------------|-------|-------------|
| level1 | ``Convs.1`` | input: cat(dec, skip) | 64                      | 1     | 0           |
| level2 | ``Convs.0`` | input: cat(dec, skip) | 128                     | 1/2   | 1           |
| level3 | ``Decoder.0`` | output: f_de        | 128                     | 1/4   | 2           |

MIMO-UNetPlus has the same names and widths (more residual blocks, and dropout on the
skips in training). Default: all three levels.
"""

from __future__ import annotations

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.levels import BackboneMap, Level, conv_channels
from sp_adapter.backbones.mimo_unet import SIZE_MULTIPLE, MIMOUNet, MIMOUNetPlus


def backbone_map(model) -> BackboneMap:
    levels = {
        "level1": Level(
            "Convs.1", conv_channels(model.Convs[1]), on_input=True, prior_level=0, reduction=1
        ),
        "level2": Level(
            "Convs.0", conv_channels(model.Convs[0]), on_input=True, prior_level=1, reduction=2
        ),
        "level3": Level("Decoder.0", conv_channels(model.Decoder[0]), prior_level=2, reduction=4),
    }
    return BackboneMap(type(model).__name__, levels, tuple(levels), input_range=1.0)


BACKBONES = (
    Backbone("mimo-unet", (MIMOUNet,), MIMOUNet, backbone_map, SIZE_MULTIPLE, loss="mimo",
             final_output=2),
    Backbone("mimo-unet-plus", (MIMOUNetPlus,), MIMOUNetPlus, backbone_map, SIZE_MULTIPLE,
             loss="mimo", final_output=2),
)
