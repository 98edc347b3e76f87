"""Level map of the paper's UNet (``sp_adapter.backbones.unet.UNet``).

| level  | site (f_de) | skip (f_en) | channels  | scale | prior level |
|--------|-------------|-------------|-----------|-------|-------------|
| level1 | ``up1``     | ``enc1``    | width     | 1     | 0 (1/4)     |
| level2 | ``up2``     | ``enc2``    | 2 width   | 1/2   | 1 (1/8)     |
| level3 | ``dec3``    | ``enc3``    | 4 width   | 1/4   | 2 (1/16)    |

The network adds each skip right after its site, so the hooks realise Eq. (6) exactly.
"""

from __future__ import annotations

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.levels import BackboneMap, Level
from sp_adapter.backbones.unet import UNet


def backbone_map(model) -> BackboneMap:
    w = model.width
    return BackboneMap(
        name="UNet",
        levels={
            "level1": Level(site="up1", skip="enc1", channels=w, prior_level=0, reduction=1),
            "level2": Level(site="up2", skip="enc2", channels=2 * w, prior_level=1, reduction=2),
            "level3": Level(site="dec3", skip="enc3", channels=4 * w, prior_level=2, reduction=4),
        },
        default_levels=("level1", "level2", "level3"),
        input_range=1.0,
        # the network reflect-pads to a multiple of 4, which needs a side above half of it
        min_size=model.size_multiple // 2 + 1,
    )


BACKBONES = (Backbone("unet", (UNet,), UNet, backbone_map),)
