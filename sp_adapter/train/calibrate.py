"""Choose the prior's strength on held-out images.

The strength scales the change every SPE makes to its decoder level
(:func:`sp_adapter.attach.wrap.set_prior_strength`; 1 is Eq. 6 as trained). It is a post-hoc
setting, not part of the paper: a prior trained on few photos can change images with
little left to restore too much, and a strength chosen on photos that neither training
nor testing uses corrects part of that (``benchmarks/RESULTS.md#prior-strength``).

The held-out images must be neither training nor test images: :func:`held_out_set` draws
them from the extra greyscale photos (:func:`~sp_adapter.photos.grey_photos`),
which no default training set and no test set contains.

``sp-adapter calibrate --save`` records the chosen strength beside the checkpoint
(:mod:`sp_adapter.train.strength_file`); ``save_pretrained`` records the strength set on
a prior (:attr:`sp_adapter.prior.semantic_prior.SemanticPrior.strength`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from sp_adapter.attach.backbone import Backbone
from sp_adapter.attach.wrap import prior_strength
from sp_adapter.data import BlurConfig, SyntheticBlurDataset, grey_photos
from sp_adapter.data.synthetic import TEST_MIN_DETAIL
from sp_adapter.errors import OptionError, PhotoError
from sp_adapter.train.evaluate import evaluate

DEFAULT_STRENGTHS: tuple[float, ...] = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class StrengthCalibration:
    """Mean PSNR (dB) of one wrapped model on held-out images at each strength tried."""

    strengths: tuple[float, ...]
    psnr: tuple[float, ...]
    count: int

    @property
    def best(self) -> float:
        """The strength with the highest mean PSNR (a tie goes to the larger strength,
        the one nearer the model as trained)."""
        top = max(self.psnr)
        return max(s for s, p in zip(self.strengths, self.psnr, strict=True) if p == top)

    def as_dict(self) -> dict[str, object]:
        return {"strengths": list(self.strengths), "psnr": list(self.psnr),
                "count": self.count, "best": self.best}


def calibrate_strength(
    model: nn.Module,
    dataset: Dataset,
    backbone: str | Backbone = "unet",
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
) -> StrengthCalibration:
    """Score a wrapped ``model`` on ``dataset`` (held-out ``(blurry, sharp[, key])``
    pairs) at each of ``strengths``; the model's strength is left as it was.

    Use :attr:`StrengthCalibration.best` with
    :func:`~sp_adapter.attach.wrap.set_prior_strength` for inference. Choose ``dataset`` from
    images the model was not trained on and that the final score does not use, e.g.
    :func:`held_out_set`.
    """
    values = tuple(float(s) for s in strengths)
    if not values:
        raise OptionError("strengths must name at least one strength, e.g. (0.5, 0.75, 1.0)")
    if len(set(values)) != len(values):
        raise OptionError(f"strengths must differ, got {list(values)}")
    scores = []
    count = 0
    for value in values:
        with prior_strength(model, value):
            result = evaluate(model, dataset, backbone, device=device, batch_size=batch_size)
        scores.append(result.psnr)
        count = result.count
    return StrengthCalibration(strengths=values, psnr=tuple(scores), count=count)


def held_out_set(crop: int, blur: BlurConfig, count: int = 48, seed: int = 1000,
                 min_detail: float = TEST_MIN_DETAIL) -> SyntheticBlurDataset:
    """``count`` fixed blurred crops of the extra greyscale photos (camera, coins, brick,
    grass, gravel, moon): outside the default training photos and the test photos, so a
    strength chosen on them is chosen on neither. Crops flatter than ``min_detail`` are
    redrawn, as in the test set. Do not use it for a model trained on those photos
    (``--train-photos`` naming them)."""
    photos = grey_photos()
    if not photos:
        raise PhotoError("the extra greyscale photos are not bundled with this "
                         "scikit-image install; pass another held-out dataset")
    if count < 1:
        raise OptionError(f"count must be a positive number of crops, got {count}")
    return SyntheticBlurDataset("train", crop=crop, length=count, blur=blur, seed=seed,
                                return_key=True, min_detail=min_detail, photos=photos)
