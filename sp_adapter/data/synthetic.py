"""Blurry/sharp pairs synthesised from the built-in photos with camera-shake kernels.

Valid borders: each sample crops a region ``margin`` pixels larger than ``crop`` on every
side (``margin = blur.max_size // 2``, the half-width of the largest kernel), blurs that
region, and keeps its centre. Every blurry pixel returned is then a true convolution of
real photo pixels; the padding inside :func:`~sp_adapter.data.blur.blur_image` only
touches the discarded margin.

Randomness is derived, never shared: sample ``i`` of the training split draws from
``numpy.random.default_rng([seed, 0, epoch, i])`` and test sample ``j`` of test photo
``p`` from ``default_rng([seed, 1, p, j])``. Samples are therefore reproducible, do not
depend on the order of access or on DataLoader workers, and the test set is the same on
every run and machine (kernels and crop positions bit for bit; blurred pixels up to
floating-point rounding of the FFT).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sp_adapter.data.blur import SEVERE, BlurConfig, blur_image, camera_shake_kernel
from sp_adapter.errors import (
    DatasetError,
    DatasetIndexError,
    OptionError,
    OptionTypeError,
    PhotoError,
)
from sp_adapter.photos import TEST_PHOTOS, extra_photos, photo_array, photo_names

__all__ = ["TEST_MIN_DETAIL", "SyntheticBlurDataset", "detail"]

_TRAIN_STREAM, _TEST_STREAM = 0, 1

TEST_MIN_DETAIL = 0.005
"""Least :func:`detail` of a test crop: flat sky and walls (about 0.002) are redrawn."""

_MAX_DRAWS = 100

MIN_SCALE = 0.5
"""Smallest rescale factor of ``augment=True``: a region up to twice the side is shrunk."""


def detail(sharp: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels of the grey image (mean of
    RGB) of an ``(H, W, 3)`` uint8 crop, on the [0, 1] scale (0 for a flat crop).

    A crop with nearly no detail has nothing to deblur, yet its blurry PSNR is 40-50 dB
    and a one-grey-level bias of the network costs it 10 dB: a few such crops dominate a
    mean PSNR over crops. The test split therefore only keeps crops with
    ``detail >= min_detail``.
    """
    grey = sharp.astype(np.float32).mean(axis=2) / 255.0
    if grey.shape[0] < 2 or grey.shape[1] < 2:
        return 0.0
    rows = np.abs(np.diff(grey, axis=0)).mean()
    cols = np.abs(np.diff(grey, axis=1)).mean()
    return float(rows + cols) / 2.0


def _training_photos(split: str, photos: Sequence[str]) -> tuple[str, ...]:
    """``photos`` checked as a training set: named, distinct, available, none a test photo."""
    if split != "train":
        raise OptionError("photos is for the training split; the test photos are fixed")
    if isinstance(photos, str):
        raise OptionTypeError(f"photos must be a sequence of names, got the string {photos!r}")
    names = tuple(photos)
    allowed = photo_names("train") + extra_photos()
    tested = [n for n in names if n in TEST_PHOTOS]
    if tested:
        raise OptionError(f"{tested} are test photos and are never used for training")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise OptionError(f"photos {unknown} are not training photos available here; "
                          f"choose among {list(allowed)}")
    if not names or len(set(names)) != len(names):
        raise OptionError(f"photos must name at least one photo, each once; got {list(names)}")
    return names


class SyntheticBlurDataset(Dataset):
    """``(blurry, sharp)`` pairs of ``(3, crop, crop)`` float32 tensors in [0, 1].

    Training split (``split="train"``): photo drawn uniformly among the training photos,
    a random crop (the same for both images), a fresh kernel, random horizontal and
    vertical flips (applied to both), all from the sample's own generator. ``length``
    samples make an epoch; call :meth:`set_epoch` to get new samples in the next epoch
    (without it every epoch repeats the same ``length`` samples).

    Test split (``split="test"``): ``crops_per_photo`` fixed crops and kernels for each of
    the four test photos (:data:`~sp_adapter.photos.TEST_PHOTOS`), in a fixed order
    (photo, then crop), no flips: 64 samples with the defaults, identical every time. A
    crop position whose sharp crop has less :func:`detail` than ``min_detail`` is drawn
    again from the sample's generator (flat sky would otherwise dominate the mean PSNR).
    The benchmark test set is the one with the defaults ``seed=0``, ``crop=128``,
    ``crops_per_photo=16``, ``min_detail=TEST_MIN_DETAIL`` and a given blur preset;
    changing any of them changes it.

    Whole test photos (``split="test", crop=None``): each sample is a whole test photo less
    the blur margin on every side (the deblurring benchmarks' protocol of scoring full
    images, e.g. 570x370 for ``coffee`` with the mild preset), blurred with its own fixed
    kernel; ``crops_per_photo`` kernels per photo. Samples of different photos differ in
    size, so evaluate them one at a time (``batch_size=1``); ``min_detail`` is not used.

    Args:
        split: ``"train"`` or ``"test"``.
        crop: side of the square crops, in pixels; ``None`` (test split only): whole
            photos.
        length: samples per epoch (train only; default 1000). Not accepted for test.
        blur: kernel size range and noise level (:data:`~sp_adapter.data.blur.SEVERE`).
        seed: base seed of every generator.
        crops_per_photo: test crops per test photo.
        return_key: also return a string key (``"coffee/03"``, ``"train/0/17"``).
        min_detail: least :func:`detail` of a sharp crop; positions below it are redrawn
            (at most 100 draws, then an error). ``None``: :data:`TEST_MIN_DETAIL` for the
            test split, 0 (every crop) for training.
        augment: training split only: also rescale each sample's photo region by a random
            factor in [:data:`MIN_SCALE`, 1] (antialiased, before the blur) and rotate the
            pair by a random multiple of 90 degrees, so that few photos give more varied
            crops. Off by default (earlier results used flips alone).
        photos: training split only: the photos to draw from, each a training photo
            (:func:`~sp_adapter.photos.photo_names` ``("train")``) or an extra one,
            greyscale or colour (:func:`~sp_adapter.photos.extra_photos`); never a
            test photo. Default: the training photos.
    """

    def __init__(
        self,
        split: str = "train",
        crop: int | None = 128,
        length: int | None = None,
        blur: BlurConfig = SEVERE,
        seed: int = 0,
        crops_per_photo: int = 16,
        return_key: bool = False,
        min_detail: float | None = None,
        augment: bool = False,
        photos: Sequence[str] | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise OptionError(f"split must be 'train' or 'test', got {split!r}")
        if augment and split != "train":
            raise OptionError("augment=True is for the training split; the test set is fixed")
        self.augment = augment
        if crop is None and split != "test":
            raise OptionError("crop=None (whole photos) is for the test split; training "
                              "batches need one crop size, e.g. crop=128")
        if crop is not None and crop < 1:
            raise OptionError(f"crop must be positive, got {crop}")
        if seed < 0:
            raise OptionError(f"seed must be non-negative, got {seed}")
        if split == "test" and length is not None:
            raise OptionError(
                "length is fixed for the test split (crops_per_photo x the test photos); "
                "use crops_per_photo to change it"
            )
        if min_detail is None:
            min_detail = TEST_MIN_DETAIL if split == "test" else 0.0
        if min_detail < 0:
            raise OptionError(f"min_detail must be >= 0, got {min_detail}")
        self.min_detail = float(min_detail)
        self.split = split
        self.crop = crop
        self.blur = blur
        self.seed = seed
        self.return_key = return_key
        self.epoch = 0
        self.photos = photo_names(split) if photos is None else _training_photos(split, photos)
        if not self.photos:
            raise PhotoError(f"no {split} photos are available offline")
        self.region = None if crop is None else crop + 2 * blur.margin
        for name in self.photos:
            h, w = photo_array(name).shape[:2]
            if crop is None and min(h, w) <= 2 * blur.margin:
                raise DatasetError(f"photo {name!r} is {h}x{w}, no larger than the "
                                   f"{blur.margin} px blur margin on each side")
            if crop is not None and min(h, w) < self.region:
                raise DatasetError(
                    f"photo {name!r} is {h}x{w}, smaller than the {self.region} px region "
                    f"needed for crop={crop} plus a {blur.margin} px blur margin on each side"
                )
        if split == "train":
            self.length = 1000 if length is None else int(length)
            if self.length < 1:
                raise OptionError(f"length must be positive, got {length}")
        else:
            if crops_per_photo < 1:
                raise OptionError(f"crops_per_photo must be positive, got {crops_per_photo}")
            self.crops_per_photo = crops_per_photo
            self.length = crops_per_photo * len(self.photos)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Select the training samples of ``epoch`` (no effect on the test split)."""
        if epoch < 0:
            raise OptionError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    def _sample_plan(self, index: int) -> tuple[str, str, np.random.Generator]:
        """Photo name, key and generator of sample ``index``."""
        if self.split == "train":
            rng = np.random.default_rng([self.seed, _TRAIN_STREAM, self.epoch, index])
            name = self.photos[int(rng.integers(len(self.photos)))]
            return name, f"train/{self.epoch}/{index}", rng
        p, j = divmod(index, self.crops_per_photo)
        rng = np.random.default_rng([self.seed, _TEST_STREAM, p, j])
        return self.photos[p], f"{self.photos[p]}/{j:02d}", rng

    def _draw_region(self, image: np.ndarray, name: str, rng: np.random.Generator,
                     size: int | None = None) -> np.ndarray:
        """A ``size``-sized patch (default ``region``) whose centre crop (``crop`` scaled
        like the patch) has at least ``min_detail``."""
        h, w = image.shape[:2]
        size = self.region if size is None else size
        m = round(self.blur.margin * size / self.region)
        c = size - 2 * m
        for _ in range(_MAX_DRAWS):
            top = int(rng.integers(h - size + 1))
            left = int(rng.integers(w - size + 1))
            patch = image[top : top + size, left : left + size]
            if self.min_detail <= 0 or detail(patch[m : m + c, m : m + c]) >= self.min_detail:
                return patch
        raise PhotoError(
            f"photo {name!r}: no {c} px crop with detail >= {self.min_detail} in "
            f"{_MAX_DRAWS} draws; lower min_detail (0 keeps every crop)"
        )

    def __getitem__(self, index: int):
        if not -self.length <= index < self.length:
            raise DatasetIndexError(f"index {index} out of range for {self.length} samples")
        index %= self.length
        name, key, rng = self._sample_plan(index)
        image = photo_array(name)
        if self.crop is None:
            blurry, sharp = self._whole(image, rng)
            return (blurry, sharp, key) if self.return_key else (blurry, sharp)
        size = self.region
        if self.augment:  # a larger source region, shrunk to the region below
            scale = rng.uniform(MIN_SCALE, 1.0)
            size = min(round(self.region / scale), *image.shape[:2])
        patch = self._draw_region(image, name, rng, size)
        region = torch.from_numpy(patch.transpose(2, 0, 1).astype(np.float32) / 255.0)
        if size != self.region:
            region = F.interpolate(region[None], size=(self.region, self.region),
                                   mode="bilinear", antialias=True, align_corners=False)[0]
            region = region.clamp(0, 1)
        kernel = camera_shake_kernel(rng, self.blur)
        blurred = blur_image(region, kernel, noise_sigma=self.blur.noise_sigma, rng=rng)
        m, c = self.blur.margin, self.crop
        blurry = blurred[:, m : m + c, m : m + c].contiguous()
        sharp = region[:, m : m + c, m : m + c].contiguous()
        if self.split == "train":
            flips = [d for d, flip in zip((-1, -2), rng.random(2) < 0.5, strict=True) if flip]
            if flips:
                blurry, sharp = blurry.flip(flips), sharp.flip(flips)
            if self.augment:
                turns = int(rng.integers(4))
                blurry, sharp = blurry.rot90(turns, (1, 2)), sharp.rot90(turns, (1, 2))
                blurry, sharp = blurry.contiguous(), sharp.contiguous()
        if self.return_key:
            return blurry, sharp, key
        return blurry, sharp

    def _whole(self, image: np.ndarray,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Test pair of ``crop=None``: the whole photo blurred, less the margin."""
        region = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255.0)
        kernel = camera_shake_kernel(rng, self.blur)
        blurred = blur_image(region, kernel, noise_sigma=self.blur.noise_sigma, rng=rng)
        m, (h, w) = self.blur.margin, image.shape[:2]
        blurry = blurred[:, m : h - m, m : w - m].contiguous()
        sharp = region[:, m : h - m, m : w - m].contiguous()
        return blurry, sharp
