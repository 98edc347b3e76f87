"""Image-quality metrics for deblurring, with the conventions published tables use.

:mod:`~sp_adapter.metrics.core` holds PSNR, the 2-D and 3-D Gaussian SSIM and LPIPS;
:mod:`~sp_adapter.metrics.conventions` names the ways published tables combine them
(``matlab``, ``basicsr``, ``skimage``, ``realblur``); :mod:`~sp_adapter.metrics.realblur`
is the RealBlur protocol (ECC alignment, scores over the valid mask; needs OpenCV).
"""

from sp_adapter.metrics.conventions import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    Convention,
    PairScores,
    get_convention,
    score,
)
from sp_adapter.metrics.core import gaussian_window, lpips_metric, psnr, ssim, ssim3d
from sp_adapter.metrics.realblur import Alignment, RealBlurScore, align_to_sharp, realblur_score

__all__ = [
    "CONVENTIONS",
    "DEFAULT_CONVENTION",
    "Alignment",
    "Convention",
    "PairScores",
    "RealBlurScore",
    "align_to_sharp",
    "gaussian_window",
    "get_convention",
    "lpips_metric",
    "psnr",
    "realblur_score",
    "score",
    "ssim",
    "ssim3d",
]
