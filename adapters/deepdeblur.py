"""Level map of DeepDeblur's ``MSResNet`` (``sp_adapter.backbones.deepdeblur``).

DeepDeblur is not U-shaped: each of its three scales is a plain ResNet (head conv,
``n_resblocks`` residual blocks, tail conv), coarse to fine. We define, per scale ``s``:

* ``f_en``: the head's output ``body_models.s.body.0`` (the shallow feature, 64 ch);
* ``f_de``: the last residual block's output ``body_models.s.body.<n_resblocks>`` (64 ch),
  which the tail turns into the image.

The site is the last residual block (``skip`` = the head), so the modulation is
``f_de + (mu - 1) * (f_de + f_en) + sigma``: the prior scales the long-range sum of deep
and shallow features, as Eq. (6) does in a U-Net, while the network itself has no long
skip to add back (at initialisation the output is unchanged).

| level  | site                          | skip                   | ch | scale | prior level |
|--------|-------------------------------|------------------------|----|-------|-------------|
| scale0 | ``body_models.0.body.19``     | ``body_models.0.body.0`` | 64 | 1   | 0           |
| scale1 | ``body_models.1.body.19``     | ``body_models.1.body.0`` | 64 | 1/2 | 1           |
| scale2 | ``body_models.2.body.19``     | ``body_models.2.body.0`` | 64 | 1/4 | 2           |

(19 is ``n_resblocks``). The blurry image is the full-resolution entry of the input
pyramid, divided by ``rgb_range``. Default: all three scales. The network's pixel range is
[0, ``rgb_range``] (``input_range``): the wrapped model checks its input against it, and
``prior_loss`` takes the sharp image in [0, 1] (``prior_loss(model, sharp / rgb_range)``).
"""

from __future__ import annotations

import torch

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.levels import BackboneMap, Level
from sp_adapter.backbones.deepdeblur import RGB_RANGE, SIZE_MULTIPLE, MSResNet, to_input_pyramid
from sp_adapter.errors import ImageTypeError


def _image(rgb_range: float):
    def image(args: tuple, kwargs: dict) -> torch.Tensor:
        pyramid = args[0] if args else next(iter(kwargs.values()), None)
        if not isinstance(pyramid, (list, tuple)) or not pyramid:
            raise ImageTypeError(
                "MSResNet takes a list of scales [full, 1/2, 1/4] in [0, rgb_range]; got "
                f"{type(pyramid).__name__} (see sp_adapter.backbones.deepdeblur.to_input_pyramid)"
            )
        return pyramid[0] / rgb_range

    return image


def backbone_map(model) -> BackboneMap:
    n = model.n_resblocks
    levels = {
        f"scale{s}": Level(
            f"body_models.{s}.body.{n}",
            model.n_feats,
            skip=f"body_models.{s}.body.0",
            prior_level=min(s, 2),
            reduction=2**s,
        )
        for s in range(model.n_scales)
    }
    return BackboneMap(
        "MSResNet", levels, tuple(levels), image=_image(model.rgb_range),
        input_range=float(model.rgb_range),
    )


BACKBONES = (
    Backbone("deepdeblur", (MSResNet,), MSResNet, backbone_map, SIZE_MULTIPLE,
             input_range=float(RGB_RANGE), loss="deepdeblur",
             final_output=0, input_fn=to_input_pyramid),
)
