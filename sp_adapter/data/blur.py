"""Severe camera-shake blur: random trajectory kernels and the blur model.

A kernel is the path of a shaking camera during the exposure. The path is a random walk
with inertia: the velocity is an AR(1) process ``v <- a * v + sqrt(1 - a^2) * n`` (``a``,
the inertia, drawn per kernel) plus rare impulsive jerks, integrated over a few hundred
sub-steps. The path is resampled every 0.2 px (sub-steps take equal time, so each carries
equal energy), shifted so that its energy-weighted mean sits on the kernel centre, scaled
so that it spans a random fraction of the kernel's half-width, and rasterised with
bilinear splatting (each sample spread over its four neighbouring pixels by sub-pixel
position). Bilinear splatting preserves the mean position, so the kernel's centre of
mass is the centre pixel up to rounding: blurring does not shift the image on average.

The blur model is ``blurry = clamp(sharp * k + n, 0, 1)`` with ``*`` a true 2-D
convolution, not a correlation (a kernel tap at offset ``(dy, dx)`` from the centre moves
content by ``(+dy, +dx)``), ``n`` optional white Gaussian noise, all in the intensity
space the image is given in (no gamma linearisation).

Everything random comes from a :class:`numpy.random.Generator` (or an ``int`` seed), so
the same seed gives the same kernel, bit for bit, on every machine. Blurring an image
uses scipy, of the ``demo`` extra (``pip install "sp-adapter[demo]"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sp_adapter.errors import ImageInputError, OptionError, OptionTypeError
from sp_adapter.extras import import_extra

__all__ = [
    "BlurConfig",
    "MILD",
    "PRESETS",
    "SEVERE",
    "blur_image",
    "blur_preset",
    "camera_shake_kernel",
]


@dataclass(frozen=True)
class BlurConfig:
    """Parameters of the camera-shake synthesiser.

    Attributes:
        min_size: smallest kernel side in pixels (odd).
        max_size: largest kernel side in pixels (odd); sizes are drawn uniformly among the
            odd integers in ``[min_size, max_size]``.
        steps: sub-steps of the random walk (trajectory points = ``steps + 1``).
        inertia: range of the per-kernel velocity memory ``a`` in ``[0, 1)``; close to 1
            gives long smooth strokes, lower values give tighter wiggles.
        jerk_prob: probability, per sub-step, of an impulsive shake.
        jerk_scale: standard deviation of a jerk relative to the stationary velocity.
        fill: range of the fraction of the kernel half-width that the trajectory spans
            (per axis, measured from the kernel centre).
        noise_sigma: standard deviation of the additive Gaussian noise (on the [0, 1]
            scale) that datasets add after blurring.
    """

    min_size: int = 31
    max_size: int = 65
    steps: int = 384
    inertia: tuple[float, float] = (0.90, 0.99)
    jerk_prob: float = 0.02
    jerk_scale: float = 4.0
    fill: tuple[float, float] = (0.8, 1.0)
    noise_sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.min_size % 2 == 0 or self.max_size % 2 == 0:
            raise OptionError(
                f"kernel sizes must be odd, got min_size={self.min_size}, max_size={self.max_size}"
            )
        if not 3 <= self.min_size <= self.max_size:
            raise OptionError(
                f"need 3 <= min_size <= max_size, got {self.min_size}, {self.max_size}"
            )
        if self.steps < 2:
            raise OptionError(f"steps must be >= 2, got {self.steps}")
        lo, hi = self.inertia
        if not 0.0 <= lo <= hi < 1.0:
            raise OptionError(f"inertia must satisfy 0 <= lo <= hi < 1, got {self.inertia}")
        lo, hi = self.fill
        if not 0.0 < lo <= hi <= 1.0:
            raise OptionError(f"fill must satisfy 0 < lo <= hi <= 1, got {self.fill}")
        if not 0.0 <= self.jerk_prob <= 1.0 or self.jerk_scale < 0:
            raise OptionError("jerk_prob must be in [0, 1] and jerk_scale >= 0")
        if self.noise_sigma < 0:
            raise OptionError(f"noise_sigma must be >= 0, got {self.noise_sigma}")

    @property
    def margin(self) -> int:
        """Half-width of the largest kernel: the border a valid blur of any kernel needs."""
        return self.max_size // 2

    @classmethod
    def severe(cls) -> BlurConfig:
        """Severe shake: kernels of 31-65 px."""
        return cls(min_size=31, max_size=65)

    @classmethod
    def mild(cls) -> BlurConfig:
        """Mild shake: kernels of 15-31 px."""
        return cls(min_size=15, max_size=31)


SEVERE = BlurConfig.severe()
MILD = BlurConfig.mild()
PRESETS: dict[str, BlurConfig] = {"severe": SEVERE, "mild": MILD}


def blur_preset(name: str) -> BlurConfig:
    """Return the preset called ``name`` (``"severe"`` or ``"mild"``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise OptionError(
            f"unknown blur preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None


_SPACING = 0.2  # px between samples of the rasterised path


def _as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise OptionTypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _trajectory(rng: np.random.Generator, config: BlurConfig) -> np.ndarray:
    """Random walk with inertia; returns ``(steps + 1, 2)`` positions (row, col)."""
    steps = config.steps
    inertia = rng.uniform(*config.inertia)
    innovation = math.sqrt(1.0 - inertia**2)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    noise = rng.standard_normal((steps, 2))
    jerks = (rng.random(steps) < config.jerk_prob)[:, None] * (
        config.jerk_scale * rng.standard_normal((steps, 2))
    )
    velocity = np.array([math.sin(angle), math.cos(angle)])
    positions = np.zeros((steps + 1, 2))
    for t in range(steps):
        velocity = inertia * velocity + innovation * noise[t] + jerks[t]
        positions[t + 1] = positions[t] + velocity
    return positions


def _densify(points: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample a polyline at most ``spacing`` apart, equal total weight per segment.

    The walk's sub-steps take equal time, so each segment carries equal exposure; a long
    segment is cut into pieces, sampled at their midpoints, that share its weight.
    Returns the samples and their weights (summing to the number of segments).
    """
    start, delta = points[:-1], np.diff(points, axis=0)
    pieces = np.maximum(1, np.ceil(np.linalg.norm(delta, axis=1) / spacing)).astype(np.int64)
    seg = np.repeat(np.arange(len(delta)), pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    t = (np.arange(len(seg)) - first + 0.5) / pieces[seg]
    return start[seg] + t[:, None] * delta[seg], 1.0 / pieces[seg]


def _splat(points: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Bilinear splatting of weighted points lying inside ``[0, size - 1]^2``."""
    base = np.clip(np.floor(points), 0, size - 2).astype(np.int64)
    frac = points - base
    kernel = np.zeros(size * size)
    (r0, c0), (fr, fc) = base.T, frac.T
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            np.add.at(kernel, (r0 + dr) * size + (c0 + dc), weights * wr * wc)
    return kernel.reshape(size, size)


def camera_shake_kernel(
    rng: np.random.Generator | int, config: BlurConfig = SEVERE
) -> torch.Tensor:
    """Draw one camera-shake kernel.

    Args:
        rng: a numpy Generator (consumed) or an int seed; the same seed gives the same
            kernel bit for bit.
        config: size range and trajectory parameters (:data:`SEVERE` by default).

    Returns:
        A ``(k, k)`` float32 tensor, ``k`` odd in ``[config.min_size, config.max_size]``,
        non-negative, summing to 1, with its centre of mass at the centre pixel
        ``((k - 1) / 2, (k - 1) / 2)`` up to rounding.
    """
    gen = _as_generator(rng)
    n_sizes = (config.max_size - config.min_size) // 2 + 1
    size = config.min_size + 2 * int(gen.integers(n_sizes))
    fill = gen.uniform(*config.fill)
    centre = (size - 1) / 2.0
    points = _trajectory(gen, config)
    extent = np.abs(points - points.mean(axis=0)).max()
    if extent < 1e-12:  # a motionless walk: a delta kernel
        points, weights = np.zeros((1, 2)), np.ones(1)
    else:
        # Scale to pixels, sample the path densely, then centre its (weighted) mean and
        # rescale so that the path spans ``fill`` of the half-width along its wider axis.
        points, weights = _densify(points * (centre / extent), _SPACING)
        points -= np.average(points, axis=0, weights=weights)
        points *= fill * centre / np.abs(points).max()
    kernel = _splat(np.clip(points + centre, 0.0, size - 1.0), weights, size)
    kernel /= kernel.sum()
    return torch.from_numpy(kernel.astype(np.float32))


def blur_image(
    sharp: torch.Tensor,
    kernel: torch.Tensor | np.ndarray,
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
    padding: str = "reflect",
) -> torch.Tensor:
    """Blur ``sharp`` with ``kernel`` (true convolution, via FFT), add noise, clamp to [0, 1].

    Borders: the image is extended by ``k // 2`` pixels on each side with ``padding``
    (``"reflect"``, the default, mirrors without repeating the edge pixel; or
    ``"replicate"``) and only the valid part of the convolution is kept, so the output
    has the input's size. Near the border the result depends on that extension; datasets
    that need physically valid borders blur a larger region and crop its centre (see
    :class:`~sp_adapter.data.synthetic.SyntheticBlurDataset`).

    Args:
        sharp: ``(C, H, W)`` or ``(N, C, H, W)`` float image in [0, 1].
        kernel: ``(k, k)`` kernel with ``k`` odd (normally summing to 1).
        noise_sigma: standard deviation of additive white Gaussian noise; 0 for none.
        rng: numpy Generator for the noise (reproducible); ``None`` uses torch's global RNG.
        padding: ``"reflect"`` or ``"replicate"``. Reflect needs ``k // 2 < min(H, W)``.

    Returns:
        The blurry image, same shape and dtype as ``sharp``, clamped to [0, 1].
    """
    if sharp.dim() not in (3, 4):
        raise ImageInputError(
            f"sharp must be (C, H, W) or (N, C, H, W), got shape {tuple(sharp.shape)}"
        )
    if padding not in ("reflect", "replicate"):
        raise OptionError(f"padding must be 'reflect' or 'replicate', got {padding!r}")
    k = torch.as_tensor(kernel, dtype=torch.float32, device=sharp.device)
    if k.dim() != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise OptionError(f"kernel must be square with an odd side, got shape {tuple(k.shape)}")
    size = k.shape[0]
    r = size // 2
    x = sharp.unsqueeze(0) if sharp.dim() == 3 else sharp
    h, w = x.shape[-2:]
    if padding == "reflect" and r >= min(h, w):
        raise ImageInputError(
            f"reflect padding needs kernel half-size {r} < image side {min(h, w)}; "
            "use padding='replicate' or a larger image"
        )
    xp = F.pad(x.float(), (r, r, r, r), mode=padding)
    # any FFT size >= padded + kernel - 1 gives the linear convolution; pick fast ones
    next_fast_len = import_extra("scipy.fft", "synthesising blur").next_fast_len
    fh = next_fast_len(xp.shape[-2] + size - 1, real=True)
    fw = next_fast_len(xp.shape[-1] + size - 1, real=True)
    spectrum = torch.fft.rfft2(xp, s=(fh, fw)) * torch.fft.rfft2(k, s=(fh, fw))
    full = torch.fft.irfft2(spectrum, s=(fh, fw))
    out = full[..., size - 1 : size - 1 + h, size - 1 : size - 1 + w]
    if noise_sigma > 0:
        if rng is None:
            noise = torch.randn_like(out)
        else:
            noise = torch.from_numpy(rng.standard_normal(tuple(out.shape)).astype(np.float32))
            noise = noise.to(out.device)
        out = out + noise_sigma * noise
    out = out.clamp(0.0, 1.0).to(sharp.dtype)
    return out.squeeze(0) if sharp.dim() == 3 else out
