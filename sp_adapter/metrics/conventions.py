"""Named metric conventions: the ways published deblurring tables compute PSNR and SSIM.

The same restored images score differently under each (the 2-D and the 3-D SSIM
window differ most), so a number is comparable with a published one only under that
table's convention. ``docs/metrics.md`` says which table uses which.

* ``matlab``: MATLAB ``psnr`` and ``ssim`` on saved 8-bit PNGs (MPRNet's, Restormer's and
  MSSNet's ``evaluate_GOPRO_HIDE.m``): both images rounded to 8 bits, the 3-D SSIM.
* ``basicsr``: NAFNet's BasicSR fork scoring the float output (``use_image: false``):
  no rounding, the 3-D SSIM (``calculate_ssim(..., ssim3d=True)``). With ``use_image``
  at its default the fork rounds first, which is ``matlab``.
* ``skimage``: 8-bit rounding and scikit-image's 2-D per-channel Gaussian SSIM at the
  valid positions; the library's functions and training validation use it.
* ``realblur``: the RealBlur protocol of :mod:`~sp_adapter.metrics.realblur` (8-bit
  rounding, intensity matching, ECC alignment, PSNR and SSIM over the valid mask).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sp_adapter.errors import AlignmentError, ImageInputError, UnknownConventionError
from sp_adapter.metrics.core import psnr, ssim, ssim3d

__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "Convention", "PairScores", "get_convention",
           "score"]


@dataclass(frozen=True)
class Convention:
    """How one family of published tables computes PSNR and SSIM.

    Attributes:
        name: the name used here and by ``sp-adapter eval --convention``.
        quantize: round both images to 8 bits first (as saving PNGs does).
        ssim_window: ``"3d"`` (one window over height, width and channel, edges
            replicated, all positions) or ``"2d"`` (per channel, valid positions).
        align: align each restored image to its sharp one and score the valid mask
            (the RealBlur protocol).
        description: one line for outputs and reports.
    """

    name: str
    quantize: bool
    ssim_window: str
    align: bool
    description: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "quantize": self.quantize, "ssim_window": self.ssim_window,
                "align": self.align, "description": self.description}


CONVENTIONS: dict[str, Convention] = {
    c.name: c for c in (
        Convention("matlab", True, "3d", False,
                   "MATLAB psnr/ssim on 8-bit images: PSNR after rounding, SSIM with one "
                   "11x11x11 Gaussian window over height, width and channel"),
        Convention("basicsr", False, "3d", False,
                   "NAFNet's BasicSR fork on float outputs: no rounding, SSIM with the "
                   "11x11x11 Gaussian window (ssim3d)"),
        Convention("skimage", True, "2d", False,
                   "8-bit rounding, scikit-image SSIM: 11x11 Gaussian window per channel, "
                   "valid positions, mean over channels"),
        Convention("realblur", True, "2d", True,
                   "RealBlur protocol: 8-bit images, intensity matching, ECC homography "
                   "alignment, PSNR and 2-D SSIM over the valid mask"),
    )
}
"""The conventions by name."""

DEFAULT_CONVENTION = "matlab"
"""``sp-adapter eval``'s convention (``realblur`` for ``--dataset realblur``): that of
most published GoPro and HIDE tables."""


def get_convention(name: str | Convention) -> Convention:
    """The convention called ``name`` (a :class:`Convention` is returned as it is)."""
    if isinstance(name, Convention):
        return name
    if name in CONVENTIONS:
        return CONVENTIONS[name]
    close = difflib.get_close_matches(str(name), list(CONVENTIONS), n=len(CONVENTIONS),
                                      cutoff=0)
    raise UnknownConventionError(
        f"unknown metric convention {name!r}; choose one of {', '.join(close)}")


@dataclass(frozen=True)
class PairScores:
    """Per-image PSNR (dB) and SSIM, float64 tensors of shape ``(N,)``."""

    psnr: torch.Tensor
    ssim: torch.Tensor


def score(restored: torch.Tensor, sharp: torch.Tensor,
          convention: str | Convention = DEFAULT_CONVENTION,
          data_range: float = 1.0, keys: Sequence[str] | None = None) -> PairScores:
    """PSNR and SSIM of each image of a batch under ``convention``.

    Args:
        restored, sharp: ``(N, 3, H, W)`` or ``(3, H, W)`` images on ``[0, data_range]``.
        convention: a name in :data:`CONVENTIONS` or a :class:`Convention`.
        keys: the pairs' names (file names), used in errors: a pair the RealBlur protocol
            cannot align raises an :class:`~sp_adapter.errors.AlignmentError` naming it.
    """
    conv = get_convention(convention)
    if conv.align:
        if restored.shape != sharp.shape:
            raise ImageInputError(
                f"images differ in shape: {tuple(restored.shape)} vs {tuple(sharp.shape)}")
        batch = (restored, sharp) if restored.dim() == 4 else (restored[None], sharp[None])
        scores = [_aligned_score(r, s, data_range, i, keys)
                  for i, (r, s) in enumerate(zip(*batch, strict=True))]
        return PairScores(torch.tensor([s.psnr for s in scores], dtype=torch.float64),
                          torch.tensor([s.ssim for s in scores], dtype=torch.float64))
    ssim_fn = ssim3d if conv.ssim_window == "3d" else ssim
    return PairScores(
        psnr(restored, sharp, data_range, quantize=conv.quantize, reduction="none"),
        ssim_fn(restored, sharp, data_range, quantize=conv.quantize, reduction="none"),
    )


def _aligned_score(restored: torch.Tensor, sharp: torch.Tensor, data_range: float, index: int,
                   keys: Sequence[str] | None):
    """One pair's RealBlur score; an alignment failure names the pair."""
    from sp_adapter.metrics.realblur import realblur_score

    try:
        return realblur_score(restored, sharp, data_range)
    except AlignmentError as err:
        where = f"image {index} of the batch"
        name = (f"pair {keys[index]!r} ({where})" if keys is not None and index < len(keys)
                else f"{where} (pass keys= to name it)")
        raise AlignmentError(
            f"{name} could not be aligned under the RealBlur protocol: {err}. A mean without "
            "it would not be the published protocol, so the scoring stops here: check that "
            "pair (do its restored and sharp images show the same scene? is the restored "
            "image blank?), or leave it out of the test set and report that you did"
        ) from err
