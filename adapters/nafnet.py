"""Level map of NAFNet and NAFNetLocal (``sp_adapter.backbones.nafnet``).

NAFNet ADDS each skip in its forward code right after the upsampler
(``x = up(x); x = x + enc_skip; x = decoder(x)``), so each level is a site ``ups.i``
with the skip ``encoders.(3 - i)``: the hook modulates ``ups.i``'s output so that, after
the network's own addition, the result is exactly Eq. (6).

| level  | site (f_de) | skip (f_en)  | channels (width w) | scale | prior level |
|--------|-------------|--------------|--------------------|-------|-------------|
| level1 | ``ups.3``   | ``encoders.0`` | w                | 1     | 0           |
| level2 | ``ups.2``   | ``encoders.1`` | 2 w              | 1/2   | 1           |
| level3 | ``ups.1``   | ``encoders.2`` | 4 w              | 1/4   | 2           |
| level4 | ``ups.0``   | ``encoders.3`` | 8 w              | 1/8   | 2           |

Default: level1-level3, the three finest joins, as the paper's three levels at 1, 1/2
and 1/4, one per prior level. The 1/8 join has the most channels (its SAT convolutions
are the largest) and no prior level of its own; add it with ``levels=[..., "level4"]``.
NAFNet pads to a multiple of 16 inside its forward, so any image size works wrapped.
Both classes are named ``NAFNet`` in saved priors: NAFNetLocal is the same network at test
time, so a prior trained on NAFNet attaches to it.
"""

from __future__ import annotations

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.levels import BackboneMap, Level
from sp_adapter.backbones.nafnet import NAFNet, NAFNetLocal


def backbone_map(model) -> BackboneMap:
    n = len(model.encoders)
    levels = {}
    for k in range(n):  # k = 0 is the finest level
        i = n - 1 - k  # ups.i brings the decoder to the resolution of encoders.k
        channels = model.ups[i][0].out_channels // 4  # PixelShuffle(2) divides by 4
        levels[f"level{k + 1}"] = Level(
            site=f"ups.{i}", skip=f"encoders.{k}", channels=channels,
            prior_level=min(k, 2), reduction=2**k,
        )
    return BackboneMap(
        name="NAFNet", levels=levels, default_levels=tuple(levels)[:3],
        image_channels=model.intro.in_channels,
    )


GOPRO = {"width": 32, "middle_blk_num": 1, "enc_blk_nums": [1, 1, 1, 28],
         "dec_blk_nums": [1, 1, 1, 1]}
"""NAFNet's GoPro configuration (width 32; ``nafnet-64`` is the width-64 model)."""
BACKBONES = (
    Backbone("nafnet", (NAFNet, NAFNetLocal), NAFNet, backbone_map, defaults=GOPRO),
    Backbone("nafnet-64", (NAFNet, NAFNetLocal), NAFNet, backbone_map,
             defaults={**GOPRO, "width": 64}),
)
