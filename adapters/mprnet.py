"""Level maps of MPRNet (``sp_adapter.backbones.mprnet.MPRNet``) and its stage-1 variant.

Stages 1 and 2 are U-shaped; the decoder joins each skip by ADDITION inside
``stageK_decoder.up21`` / ``up32`` (their output is exactly ``up(dec) + skip_attn(enc)``),
so those outputs are ``f_de + f_en`` of Eq. (6) and are modulated directly. The 1/4 level
has no join: ``decoder_level3``'s output (``f_de`` alone) is modulated there.

| level     | site                               | channels          | scale | calls, regions     |
|-----------|------------------------------------|-------------------|-------|--------------------|
| s1_level1 | ``stage1_decoder.up21``            | n_feat (96)       | 1     | 2: top, bottom     |
| s1_level2 | ``stage1_decoder.up32``            | n_feat + s (144)  | 1/2   | 2: top, bottom     |
| s1_level3 | ``stage1_decoder.decoder_level3``  | n_feat + 2s (192) | 1/4   | 2: top, bottom     |
| s2_level1 | ``stage2_decoder.up21``            | 96                | 1     | 1: whole image     |
| s2_level2 | ``stage2_decoder.up32``            | 144               | 1/2   | 1                  |
| s2_level3 | ``stage2_decoder.decoder_level3``  | 192               | 1/4   | 1                  |

Stage 1 runs its decoder on the top half, then the bottom half of the image: the prior,
computed once on the whole image, is cropped to each call's half (``regions``).

Defaults: the full MPRNet gets the prior in stage 2 (its decoder sees the whole image
once, so each level is modulated once per forward, and stage 2 feeds the final stage);
:class:`MPRNetStage1` (the paper's simplified MPRNet, the only MPRNet the paper reports)
in its only stage. The student runs once per forward either way, so the choice is about
where the network uses the prior, not about cost (``benchmarks/RESULTS.md#overhead-on-the-cpu``).
Choose with ``levels=[...]`` (e.g. all six names).
"""

from __future__ import annotations

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.levels import BackboneMap, Level, Region, conv_channels
from sp_adapter.backbones.mprnet import SIZE_MULTIPLE, MPRNet, MPRNetStage1

HALVES = (Region(0.0, 0.0, 0.5, 1.0), Region(0.5, 0.0, 0.5, 1.0))


def _stage_levels(stage: int, n_feat: int, s: int, regions: tuple[Region, ...]) -> dict[str, Level]:
    d = f"stage{stage}_decoder"
    return {
        f"s{stage}_level1": Level(f"{d}.up21", n_feat, prior_level=0, regions=regions, reduction=1),
        f"s{stage}_level2": Level(
            f"{d}.up32", n_feat + s, prior_level=1, regions=regions, reduction=2
        ),
        f"s{stage}_level3": Level(
            f"{d}.decoder_level3", n_feat + 2 * s, prior_level=2, regions=regions, reduction=4
        ),
    }


def _widths(model) -> tuple[int, int]:
    n_feat = conv_channels(model.stage1_decoder.skip_attn1)
    return n_feat, conv_channels(model.stage1_decoder.skip_attn2) - n_feat


def stage1_map(model) -> BackboneMap:
    """Stage 1 alone (:class:`MPRNetStage1`): halves when it runs patch-wise."""
    n_feat, s = _widths(model)
    stage1 = _stage_levels(1, n_feat, s, HALVES if getattr(model, "patch_wise", True) else ())
    return BackboneMap("MPRNetStage1", stage1, tuple(stage1), input_range=1.0)


def backbone_map(model) -> BackboneMap:
    """The full MPRNet: both U-shaped stages, stage 2 by default."""
    n_feat, s = _widths(model)
    stage1 = _stage_levels(1, n_feat, s, HALVES)
    stage2 = _stage_levels(2, n_feat, s, ())
    return BackboneMap("MPRNet", {**stage1, **stage2}, tuple(stage2), input_range=1.0)


BACKBONES = (
    Backbone("mprnet", (MPRNet,), MPRNet, backbone_map, SIZE_MULTIPLE, loss="mprnet",
             final_output=0),
    Backbone("mprnet-stage1", (MPRNetStage1,), MPRNetStage1, stage1_map, SIZE_MULTIPLE,
             loss="mprnet", final_output=0),
)
