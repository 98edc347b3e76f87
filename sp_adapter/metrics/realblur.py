"""The RealBlur evaluation protocol (Rim et al.): align to the ground truth, score the mask.

RealBlur's sharp and blurry photos come from two cameras, so a restored image is first
matched to its ground truth: one intensity gain (least squares over all pixels and
channels), then an ECC homography found by OpenCV's ``findTransformECC`` on the greyscale
images (``MOTION_HOMOGRAPHY``, 100 iterations, Gaussian filter 5, from the identity). The
restored image is warped onto the ground truth (cubic, ``WARP_INVERSE_MAP``, reflected
borders) and the pixels the warp brings from outside the image (a nearest-neighbour warp
of ones: the mask) are zeroed in both images. PSNR is the MSE over the mask's pixels; SSIM
is the per-channel 2-D Gaussian map of :func:`~sp_adapter.metrics.ssim` at the valid
positions, averaged with the mask as weights per channel, then over channels. This is the
protocol of the RealBlur authors' evaluation as MPRNet's ``evaluate_RealBlur.py`` and
Restormer's ``evaluate_realblur.py`` run it; published RealBlur-J/-R tables use it.

Both images are taken as those scripts read saved PNGs: rounded to 8 bits, then float32
on [0, 1]. OpenCV is an optional extra: ``pip install 'sp-adapter[realblur]'``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sp_adapter.errors import AlignmentError, ImageInputError, OptionalDependencyError
from sp_adapter.metrics.core import _ssim_map_valid

__all__ = ["Alignment", "RealBlurScore", "align_to_sharp", "masked_psnr", "masked_ssim",
           "realblur_score", "require_opencv"]

ECC_ITERATIONS = 100
ECC_GAUSSIAN_FILTER = 5


def require_opencv():
    """The ``cv2`` module, or :class:`~sp_adapter.errors.OptionalDependencyError` saying
    how to install it."""
    try:
        import cv2
    except ImportError as err:
        raise OptionalDependencyError(
            "the RealBlur protocol aligns images with OpenCV's ECC (cv2.findTransformECC), "
            "which is not installed: pip install 'sp-adapter[realblur]' (or "
            "opencv-python-headless)"
        ) from err
    return cv2


def _as_8bit_float(image: torch.Tensor | np.ndarray, data_range: float) -> np.ndarray:
    """An ``(H, W, 3)`` float32 array on [0, 1] holding 8-bit values, from a ``(3, H, W)``
    tensor on ``[0, data_range]`` or an ``(H, W, 3)`` array (uint8, or float on
    ``[0, data_range]``)."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3:
            raise ImageInputError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
        array = image.detach().cpu().double().permute(1, 2, 0).numpy()
    else:
        array = np.asarray(image)
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        array = array.astype(np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageInputError(f"expected an RGB image, got shape {array.shape}")
    eight_bit = np.clip(np.round(array * (255.0 / data_range)), 0, 255)
    return eight_bit.astype(np.float32) / 255.0


@dataclass(frozen=True)
class Alignment:
    """A restored image aligned to its sharp one, as the RealBlur protocol scores them.

    Attributes:
        restored: ``(H, W, 3)`` float32, intensity-matched and warped, zero off the mask.
        sharp: ``(H, W, 3)`` float32, the sharp image, zero off the mask.
        mask: ``(H, W, 3)`` float32, 1 where the warped image has data, else 0.
        homography: the ``(3, 3)`` ECC warp; it maps a sharp image's pixel ``(x, y, 1)``
            to the restored image's pixel that lands there (up to scale).
        gain: the intensity factor applied to the restored image.
    """

    restored: np.ndarray
    sharp: np.ndarray
    mask: np.ndarray
    homography: np.ndarray
    gain: float


def align_to_sharp(restored: torch.Tensor | np.ndarray, sharp: torch.Tensor | np.ndarray,
                   data_range: float = 1.0) -> Alignment:
    """Intensity-match and ECC-align ``restored`` to ``sharp`` (see the module docstring).

    Args:
        restored, sharp: ``(3, H, W)`` tensors on ``[0, data_range]``, or ``(H, W, 3)``
            arrays (uint8, or float on ``[0, data_range]``), the same size.

    Raises:
        OptionalDependencyError: OpenCV is not installed.
        AlignmentError: ECC did not converge, or the restored image is black.
    """
    cv2 = require_opencv()
    z, x = _as_8bit_float(restored, data_range), _as_8bit_float(sharp, data_range)
    if z.shape != x.shape:
        raise ImageInputError(f"images differ in shape: {z.shape} vs {x.shape} (H, W, C)")
    energy = float(np.sum(z.astype(np.float64) ** 2))
    if energy == 0:
        raise AlignmentError("cannot align a black restored image to its sharp one")
    gain = float(np.sum(x.astype(np.float64) * z)) / energy
    matched = (z * gain).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 0)
    try:
        _, warp = cv2.findTransformECC(
            cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(matched, cv2.COLOR_RGB2GRAY),
            np.eye(3, dtype=np.float32), cv2.MOTION_HOMOGRAPHY, criteria, None,
            ECC_GAUSSIAN_FILTER)
    except cv2.error as err:
        message = str(err).strip().splitlines()[-1]
        raise AlignmentError(
            f"ECC alignment of the restored image to its sharp one failed ({message}); the "
            "two may be too different, or too flat, to align"
        ) from None
    size = (x.shape[1], x.shape[0])
    warped = cv2.warpPerspective(matched, warp, size,
                                 flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpPerspective(np.ones_like(matched), warp, size,
                               flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Alignment(restored=warped * mask, sharp=x * mask, mask=mask,
                     homography=np.asarray(warp, dtype=np.float64), gain=gain)


def masked_psnr(restored: np.ndarray, sharp: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (peak 1) of ``(H, W, 3)`` arrays on [0, 1] with the MSE over ``mask``'s
    pixels only (both images already zero off the mask, as :class:`Alignment` gives)."""
    count = float(np.sum(mask, dtype=np.float64))
    if count == 0:
        raise AlignmentError("the alignment mask is empty: no pixel left to score")
    err = float(np.sum((sharp.astype(np.float64) - restored) ** 2)) / count
    return math.inf if err == 0 else 10.0 * math.log10(1.0 / err)


def masked_ssim(restored: np.ndarray, sharp: np.ndarray, mask: np.ndarray) -> float:
    """Per-channel Gaussian SSIM of ``(H, W, 3)`` arrays on [0, 1] at the valid positions,
    each channel's map averaged with ``mask`` (cut to those positions) as weights, then
    the mean over channels."""

    def chw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).permute(2, 0, 1)[None]

    ssim_map = _ssim_map_valid(chw(sharp) * 255.0, chw(restored) * 255.0)
    weights = chw(mask)[..., 5:-5, 5:-5]
    total = weights.sum(dim=(2, 3))
    if bool((total == 0).any()):
        raise AlignmentError("the alignment mask leaves no valid SSIM window in a channel")
    return float(((ssim_map * weights).sum(dim=(2, 3)) / total).mean())


@dataclass(frozen=True)
class RealBlurScore:
    """One pair's RealBlur-protocol scores and the homography the alignment found."""

    psnr: float
    ssim: float
    homography: np.ndarray


def realblur_score(restored: torch.Tensor | np.ndarray, sharp: torch.Tensor | np.ndarray,
                   data_range: float = 1.0) -> RealBlurScore:
    """PSNR and SSIM of one pair under the RealBlur protocol (align, then score the mask);
    arguments as :func:`align_to_sharp`."""
    aligned = align_to_sharp(restored, sharp, data_range)
    return RealBlurScore(
        psnr=masked_psnr(aligned.restored, aligned.sharp, aligned.mask),
        ssim=masked_ssim(aligned.restored, aligned.sharp, aligned.mask),
        homography=aligned.homography,
    )
