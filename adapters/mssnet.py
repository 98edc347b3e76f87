"""Level map of MSSNet (``sp_adapter.backbones.mssnet.DeblurNet``), all three widths.

Six encoder/decoder pairs: ``D1_1`` at scales 1/4, 1/8, 1/16 of the input; ``D2_1``,
``D2_2`` at 1/2, 1/4, 1/8; ``D3_1``, ``D3_2``, ``D3_3`` at 1, 1/2, 1/4. As in MPRNet,
each decoder joins its skip by ADDITION inside ``up21`` / ``up32``, whose outputs are
``f_de + f_en`` of Eq. (6); the coarsest level has no join and ``decoder_level3``'s output
is modulated.

| level           | site                 | channels (base) | scale in pair |
|-----------------|----------------------|-----------------|---------------|
| ``<D>_level1``  | ``<D>.up21``         | wf (54)         | finest        |
| ``<D>_level2``  | ``<D>.up32``         | wf + scale (96) | middle        |
| ``<D>_level3``  | ``<D>.decoder_level3`` | wf + scale + vscale (138) | coarsest |

for ``<D>`` in ``D1_1, D2_1, D2_2, D3_1, D3_2, D3_3``. Default: the last pair ``D3_3``,
the decoder whose output becomes the final image (the analogue of the paper's UNet,
whose decoder produces the output). The student runs once per forward whatever the
choice, so the pair decides where the network uses the prior more than what it costs
(``benchmarks/RESULTS.md#overhead-on-the-cpu``); choose with ``levels=[...]``.
"""

from __future__ import annotations

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.levels import BackboneMap, Level, conv_channels
from sp_adapter.backbones.mssnet import (
    SIZE_MULTIPLE,
    DeblurNet,
    mssnet_base,
    mssnet_large,
    mssnet_small,
)

PAIRS = ("D1_1", "D2_1", "D2_2", "D3_1", "D3_2", "D3_3")
PAIR_REDUCTION = {"D1_1": 4, "D2_1": 2, "D2_2": 2, "D3_1": 1, "D3_2": 1, "D3_3": 1}


def backbone_map(model) -> BackboneMap:
    decoder = model.D3_3
    widths = (
        conv_channels(decoder.skip_attn1),
        conv_channels(decoder.skip_attn2),
        conv_channels(decoder.decoder_level3),
    )
    levels = {}
    for pair in PAIRS:
        r = PAIR_REDUCTION[pair]
        for i, site in enumerate(("up21", "up32", "decoder_level3")):
            levels[f"{pair}_level{i + 1}"] = Level(
                f"{pair}.{site}", widths[i], prior_level=i, reduction=r * 2**i
            )
    return BackboneMap(
        "MSSNet", levels, tuple(f"D3_3_level{i}" for i in (1, 2, 3)), input_range=1.0
    )


BACKBONES = tuple(
    Backbone(name, (DeblurNet,), build, backbone_map, SIZE_MULTIPLE, loss="mssnet",
             final_output=5)
    for name, build in (("mssnet", mssnet_base), ("mssnet-small", mssnet_small),
                        ("mssnet-large", mssnet_large))
)
