"""PSNR, SSIM (2-D per channel and 3-D over the RGB volume) and LPIPS on RGB images.

Conventions shared by every function here:

* Inputs are ``(N, C, H, W)`` or ``(C, H, W)`` tensors on a ``[0, data_range]`` scale.
  Both images are mapped to [0, 255] and, with ``quantize=True`` (the default),
  clamped and rounded to integers, exactly as if saved as 8-bit PNGs and read back.
  ``quantize=False`` measures the raw float output (values outside the range included).
* All channels count (RGB, not the Y channel of YCbCr) and no border is cropped.
* Each image gets its own score; ``reduction="mean"`` averages the scores over the
  batch (not the MSEs), ``"none"`` returns one score per image.
* Arithmetic is in float64; results are float64 tensors.
* Images holding NaN or infinite values, or values far outside ``[0, data_range]`` (below
  ``-0.5 * data_range`` or above ``1.5 * data_range``: [0, 255] tensors scored with the
  default ``data_range=1``, say), raise :class:`~sp_adapter.errors.MetricInputError`
  naming the ``data_range`` that fits, instead of returning a wrong score.

:func:`ssim` is the Gaussian-weighted SSIM of Wang et al.: an 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, population (not sample) covariances, computed
per channel and averaged over channels and over the *valid* positions (windows lying
wholly inside the image; no padding). This equals
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, channel_axis=-1, data_range=255)`` on the 8-bit images:
scikit-image filters with reflect padding but then drops a 5-pixel border, which leaves
exactly the valid positions (tests check agreement within 1e-4; it is ~1e-12).

:func:`ssim3d` is MATLAB's ``ssim`` on an HxWx3 array (and BasicSR's ``ssim3d``): one
11x11x11 Gaussian window over height, width and channel, edges replicated on all three
axes, the map averaged over every position. :mod:`sp_adapter.metrics.conventions` names
the combinations published tables use.

LPIPS needs pretrained network weights that no installed wheel ships, see
:func:`lpips_metric`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from sp_adapter.errors import ImageInputError, MetricInputError, OptionError, PerceptualWeightsError

__all__ = ["gaussian_window", "lpips_metric", "psnr", "ssim", "ssim3d"]

_LPIPS_BACKBONES = {
    "alex": ("AlexNet_Weights", "IMAGENET1K_V1"),
    "vgg": ("VGG16_Weights", "IMAGENET1K_V1"),
    "squeeze": ("SqueezeNet1_1_Weights", "IMAGENET1K_V1"),
}


_SLACK = 0.5
"""How far (as a share of ``data_range``) values may lie outside ``[0, data_range]``: a
network's raw float output overshoots a little, a tensor on another scale by far more."""


def _fitting_range(high: float) -> str:
    for candidate in (1.0, 255.0, 65535.0):
        if high <= candidate * (1 + _SLACK):
            return f"data_range={candidate:g}"
    return f"the data_range of their scale (their maximum is {high:g})"


def _check_values(t: torch.Tensor, name: str, data_range: float) -> None:
    """Refuse non-finite values and values far outside ``[0, data_range]``."""
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise MetricInputError(
            f"{name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''} (of "
            f"{t.numel()}): a score of it would be meaningless; check the network's output "
            "(e.g. torch.isfinite(output).all()) before scoring")
    low, high = float(t.min()), float(t.max())
    if low < -_SLACK * data_range or high > (1 + _SLACK) * data_range:
        raise MetricInputError(
            f"{name} holds values in [{low:g}, {high:g}], far outside [0, data_range="
            f"{data_range:g}]: scores on the wrong scale are wrong, not just off; pass "
            f"{_fitting_range(max(high, -low))} for images on that scale, or scale them to "
            f"[0, {data_range:g}]")


def _prepare(
    x: torch.Tensor, y: torch.Tensor, data_range: float, quantize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise ImageInputError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.dim() != 4:
        raise ImageInputError(
            f"expected (N, C, H, W) or (C, H, W) images, got shape {tuple(x.shape)}"
        )
    if data_range <= 0:
        raise OptionError(f"data_range must be positive, got {data_range}")
    _check_values(x, "the first image", data_range)
    _check_values(y, "the second image", data_range)
    scale = 255.0 / data_range
    x, y = x.detach().double() * scale, y.detach().double() * scale
    if quantize:
        x, y = x.clamp(0, 255).round(), y.clamp(0, 255).round()
    return x, y


def _reduce(scores: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return scores.mean()
    if reduction == "none":
        return scores
    raise OptionError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    quantize: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """PSNR in dB on RGB [0, 255], no border crop, per image then averaged.

    ``10 * log10(255^2 / MSE)`` with the MSE over all channels and pixels of one image;
    identical images give ``inf``. See the module docstring for ``quantize``.

    Args:
        x, y: images on a ``[0, data_range]`` scale, ``(N, C, H, W)`` or ``(C, H, W)``.
        data_range: the value that maps to 255 (1.0 for [0, 1] tensors).
        quantize: round both images to 8-bit values first.
        reduction: ``"mean"`` over the batch or ``"none"``.
    """
    a, b = _prepare(x, y, data_range, quantize)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return _reduce(10.0 * torch.log10(255.0**2 / mse), reduction)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (float64), as used by :func:`ssim`."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def _filter_valid(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    channels = image.shape[1]
    rows = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    return F.conv2d(F.conv2d(image, rows, groups=channels), cols, groups=channels)


_C1, _C2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2


def _ssim_formula(mu_a, mu_b, aa, bb, ab) -> torch.Tensor:
    """The SSIM map from local means and local second moments (``aa`` = E[a^2] etc.)."""
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    return numerator / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))


def _ssim_map_valid(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-channel 2-D SSIM map at the valid positions: ``(N, C, H - 10, W - 10)``."""
    window = gaussian_window(11, 1.5).to(a.device)
    if min(a.shape[-2:]) < window.numel():
        raise ImageInputError(
            f"SSIM needs images of at least 11x11 pixels, got {tuple(a.shape[-2:])}"
        )

    def f(t: torch.Tensor) -> torch.Tensor:
        return _filter_valid(t, window)

    return _ssim_formula(f(a), f(b), f(a * a), f(b * b), f(a * b))


def _channel_mixing(channels: int, window: torch.Tensor) -> torch.Tensor:
    """Filtering along the channel axis with replicated edges, as a ``(C, C)`` matrix.

    Tap ``k`` of output channel ``c`` reads channel ``c + k - r``, clamped into
    ``[0, C - 1]`` (the replicated edge), so with only three channels most taps land on the
    first or last channel.
    """
    radius = (window.numel() - 1) // 2
    mixing = torch.zeros(channels, channels, dtype=window.dtype)
    for c in range(channels):
        for k in range(window.numel()):
            mixing[c, min(max(c + k - radius, 0), channels - 1)] += window[k]
    return mixing


def _ssim3d_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3-D SSIM map at every position, edges replicated on all three axes: ``(N, C, H, W)``."""
    window = gaussian_window(11, 1.5).to(a.device)
    radius = (window.numel() - 1) // 2
    mixing = _channel_mixing(a.shape[1], window.cpu()).to(a.device)

    def f(t: torch.Tensor) -> torch.Tensor:
        t = torch.einsum("dc,nchw->ndhw", mixing, t)
        return _filter_valid(F.pad(t, (radius,) * 4, mode="replicate"), window)

    return _ssim_formula(f(a), f(b), f(a * a), f(b * b), f(a * b))


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    quantize: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Gaussian SSIM (11x11, sigma 1.5) on RGB [0, 255], per channel, valid windows only.

    Per image: the mean over channels and valid positions of the SSIM map; then averaged
    over the batch with ``reduction="mean"``. Identical images give 1. Matches
    scikit-image's ``structural_similarity`` as described in the module docstring.

    Args:
        x, y: images on a ``[0, data_range]`` scale, ``(N, C, H, W)`` or ``(C, H, W)``,
            at least 11 pixels on each side.
        data_range: the value that maps to 255 (1.0 for [0, 1] tensors).
        quantize: round both images to 8-bit values first.
        reduction: ``"mean"`` over the batch or ``"none"``.
    """
    a, b = _prepare(x, y, data_range, quantize)
    return _reduce(_ssim_map_valid(a, b).flatten(1).mean(dim=1), reduction)


def ssim3d(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    quantize: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """3-D Gaussian SSIM (11x11x11, sigma 1.5) over height, width and channel.

    MATLAB's ``ssim`` on an HxWx3 array, and BasicSR's ``ssim3d``: the window is one
    Gaussian over the whole RGB volume, the volume's edges are replicated on all three
    axes (so the channel axis, only 3 deep, is mostly replicated edge), and the map is
    averaged over every pixel and channel. Any image size works; on a one-channel image
    this is MATLAB's 2-D ``ssim``. Arguments as :func:`ssim`.
    """
    a, b = _prepare(x, y, data_range, quantize)
    return _reduce(_ssim3d_map(a, b).flatten(1).mean(dim=1), reduction)


def _lpips_help(net: str, weights_file: str, url: str, hub_dir: str) -> str:
    return (
        "LPIPS needs pretrained weights that are downloaded, not shipped in any wheel: the "
        "`lpips` package (pip install lpips) carries its small linear layers, but the "
        f"{net!r} backbone is torchvision's ImageNet checkpoint {weights_file}, which "
        "torchvision downloads on first use. To use LPIPS here, either run "
        f"`python -c \"import lpips; lpips.LPIPS(net='{net}')\"` once on a machine with "
        f"internet access, or download {url} and place it at "
        f"{Path(hub_dir) / 'checkpoints' / weights_file} (TORCH_HOME changes that folder). "
        "PSNR and SSIM need no weights."
    )


def lpips_metric(
    net: str = "alex", device: str | torch.device | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Build LPIPS (Zhang et al. 2018) if the package and its backbone weights are present.

    Nothing is downloaded and there is no fallback: when the ``lpips`` package or the
    torchvision backbone checkpoint is missing, this raises a ``RuntimeError`` saying
    what to install or where to put the file.

    Args:
        net: ``"alex"`` (the usual choice), ``"vgg"`` or ``"squeeze"``.
        device: where to run the network.

    Returns:
        ``metric(x, y)`` taking ``(N, 3, H, W)`` images in [0, 1] and returning the mean
        LPIPS distance over the batch (lower is closer), computed without gradients.
    """
    if net not in _LPIPS_BACKBONES:
        raise OptionError(f"net must be one of {sorted(_LPIPS_BACKBONES)}, got {net!r}")
    import torchvision.models as tvm

    enum_name, member = _LPIPS_BACKBONES[net]
    url = getattr(getattr(tvm, enum_name), member).url
    weights_file = url.rsplit("/", 1)[-1]
    hub_dir = torch.hub.get_dir()
    help_text = _lpips_help(net, weights_file, url, hub_dir)
    try:
        import lpips
    except ImportError as err:
        raise PerceptualWeightsError(f"the `lpips` package is not installed. {help_text}") from err
    if not (Path(hub_dir) / "checkpoints" / weights_file).is_file():
        raise PerceptualWeightsError(f"backbone weights {weights_file} not found. {help_text}")
    try:
        model = lpips.LPIPS(net=net, verbose=False)
    except Exception as err:  # any failure (download attempt, API change) gets the help
        raise PerceptualWeightsError(f"building LPIPS({net!r}) failed: {err}. {help_text}") from err
    model = model.eval().requires_grad_(False).to(device)

    def metric(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4:
            raise ImageInputError(f"expected two (N, 3, H, W) images, got {x.shape} and {y.shape}")
        with torch.no_grad():
            dist = model(x.to(device) * 2 - 1, y.to(device) * 2 - 1)
        return dist.flatten().mean()

    return metric
