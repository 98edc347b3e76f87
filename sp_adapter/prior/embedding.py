"""The semantic prior embedding (SPE): MLA, Eq. (5), and SAT, Eq. (6).

One :class:`SemanticPriorEmbedding` per chosen decoder level. It turns the priors into
modulation maps at the PRIOR's resolution (cheap) and resizes those maps bilinearly to
the decoder level, aligned pixel for pixel with the image (:func:`crop_to_site`); the
element-wise modulation is then applied at the decoder's resolution (where nothing
needs a gradient a few channels at a time, :func:`lean_modulation`). Every fusion is
written as ``h + delta`` with ``delta`` exactly zero at initialisation, so a freshly
wrapped network is bit-exact with the original.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.errors import OptionError
from sp_adapter.prior.config import PriorConfig
from sp_adapter.prior.learner import resize, zero_conv
from sp_adapter.prior.region import Region


class MultiLevelAggregation(nn.Module):
    """Eq. (5): ``M^i = conv(cat(f^i, up(f^t), t != i)) * f^i + f^i``."""

    def __init__(self, channels: Sequence[int], level: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.level = level
        self.conv = nn.Conv2d(sum(channels), channels[level], kernel_size, padding=kernel_size // 2)

    def forward(self, priors: Sequence[torch.Tensor]) -> torch.Tensor:
        f = priors[self.level]
        size = f.shape[-2:]
        stacked = torch.cat(
            [f] + [resize(p, size) for t, p in enumerate(priors) if t != self.level], 1
        )
        return self.conv(stacked) * f + f


def add_scaled(h: torch.Tensor, delta: torch.Tensor,
               strength: float | torch.Tensor) -> torch.Tensor:
    """``h + strength * delta``: a fusion's change at the prior's strength (a float, or
    one per image as a ``B x 1 x 1 x 1`` tensor); exactly ``h + delta`` at 1."""
    if isinstance(strength, torch.Tensor) or strength != 1.0:
        return h + delta * strength
    return h + delta


class SemanticAttentionTransform(nn.Module):
    """Eq. (6): ``f_sa = mu * (f_de + f_en) + sigma`` with ``mu = 1 + tanh(conv1(M))`` and
    ``sigma = s * tanh(conv2(M))``.

    Both convolutions start at zero (``mu = 1``, ``sigma = 0`` exactly). The bounds keep the
    modulation stable once training moves them: unbounded ``mu``/``sigma`` were measured to
    destabilise training.
    """

    def __init__(
        self, prior_channels: int, channels: int, kernel_size: int = 3, sigma_bound: float = 1.0
    ) -> None:
        super().__init__()
        self.conv1 = zero_conv(prior_channels, channels, kernel_size)
        self.conv2 = zero_conv(prior_channels, channels, kernel_size)
        self.sigma_bound = sigma_bound

    def maps(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu - 1, sigma)`` at the prior's resolution."""
        return torch.tanh(self.conv1(m)), self.sigma_bound * torch.tanh(self.conv2(m))

    @staticmethod
    def apply(h: torch.Tensor, g: torch.Tensor, maps: Sequence[torch.Tensor],
              strength: float | torch.Tensor = 1.0) -> torch.Tensor:
        """``h + (mu - 1) * g + sigma`` with ``g = f_de + f_en``: Eq. (6) up to ``h - g``,
        the skip the network itself adds after the site (see :mod:`sp_adapter.attach.levels`).
        ``strength`` scales that change (1: Eq. 6 as it is; 0: the bare network); a
        ``B x 1 x 1 x 1`` tensor scales each image's (``PriorConfig.strength_jitter``)."""
        mu_minus_one, sigma = maps
        if isinstance(strength, torch.Tensor):
            return add_scaled(h, torch.addcmul(sigma, mu_minus_one, g), strength)
        if strength == 1.0:
            return torch.addcmul(h + sigma, mu_minus_one, g)
        return torch.addcmul(h + sigma * strength, mu_minus_one, g, value=strength)


class AddFusion(nn.Module):
    """Table 4's "Add": ``f = (f_de + f_en) + conv(M)``."""

    def __init__(self, prior_channels: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = zero_conv(prior_channels, channels, kernel_size)

    def maps(self, m: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.conv(m),)

    @staticmethod
    def apply(h: torch.Tensor, g: torch.Tensor, maps: Sequence[torch.Tensor],
              strength: float | torch.Tensor = 1.0) -> torch.Tensor:
        return add_scaled(h, maps[0], strength)


class ConcatFusion(nn.Module):
    """Table 4's "Concat": ``f = (f_de + f_en) + conv(cat(f_de + f_en, M))``."""

    def __init__(self, prior_channels: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = zero_conv(prior_channels + channels, channels, kernel_size)

    def maps(self, m: torch.Tensor) -> tuple[torch.Tensor]:
        return (m,)

    def apply(self, h: torch.Tensor, g: torch.Tensor, maps: Sequence[torch.Tensor],
              strength: float | torch.Tensor = 1.0) -> torch.Tensor:
        delta = self.conv(torch.cat([g, maps[0].to(g.dtype)], 1))
        return add_scaled(h, delta, strength)


def _map_size(map_side: int, reduction: int, image_side: int, site_side: int) -> int:
    """Side the maps take at the site's resolution: the map covers ``map_side *
    reduction`` image pixels (the padded image), the site one pixel per ``s`` image pixels,
    ``s`` the power of two within 25% of ``image_side / site_side`` (a network that pads
    its input internally has a site a little larger than the image over ``s``). A site
    whose reduction is no power of two gets the maps stretched over it, as without
    alignment.

    Sizes may be ints, ``torch.export``'s symbolic ints or ``torch.jit.trace``'s 0-dim
    tensors: only integer products, comparisons and floor divisions touch them, so an
    exported graph keeps its height and width dynamic."""
    s = _site_reduction(image_side, site_side)
    if s is None:
        return site_side
    covered = map_side * reduction * s.denominator  # over s.numerator: the side at the site
    if s.numerator == 1:
        return covered
    if isinstance(covered, int):
        return max(1, round(covered / s.numerator))
    # halves round up here (ties need a site coarser than the padded image's multiple)
    return _at_least_one((2 * covered + s.numerator) // (2 * s.numerator))


_POWERS = [Fraction(2) ** k for k in range(-8, 12)]


def _site_reduction(image_side: int, site_side: int) -> Fraction | None:
    """The power of two ``s`` with ``0.75 s <= image_side / site_side <= 1.25 s`` (at most
    one exists), or ``None``; compared in integers, never divided."""
    if isinstance(image_side, torch.Tensor) or isinstance(site_side, torch.Tensor):
        # torch.jit.trace: s is the site's reduction, fixed for the network
        image_side, site_side = int(image_side), int(site_side)
    for p in _POWERS:
        scaled_image = 4 * image_side * p.denominator
        if 3 * p.numerator * site_side <= scaled_image <= 5 * p.numerator * site_side:
            return p
    return None


def _at_least_one(x: int | torch.Tensor) -> int | torch.Tensor:
    return x.clamp(min=1) if isinstance(x, torch.Tensor) else max(1, x)


def _round(x: float | torch.Tensor) -> int | torch.Tensor:
    """``round(x)`` (halves to even), also for a size that ``torch.jit.trace`` records as a
    0-dim tensor (kept a tensor so the trace follows the input's size)."""
    if isinstance(x, torch.Tensor):
        return torch.round(x).to(torch.int64)
    return round(x)


def _min(a: int | torch.Tensor, b: int | torch.Tensor) -> int | torch.Tensor:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return min(a, b)


def crop_to_site(
    maps: Sequence[torch.Tensor],
    size: Sequence[int],
    region: Region | None = None,
    image_size: Sequence[int] | None = None,
    reduction: int | None = None,
) -> list[torch.Tensor]:
    """Resize whole-image maps to a site of spatial ``size``.

    With ``image_size`` (the blurry image's ``(H, W)``) and ``reduction`` (image pixels
    per map pixel), the maps are scaled by ``reduction / s`` (``s``: the site's reduction)
    and their top-left part taken (edge-padded if short), so map and site cover the same
    image pixels even when the image is no multiple of the reductions: the prior learner
    pads its input to one, and a network may pad its own. Without them, the maps are
    stretched over the site (exact only for sizes that divide evenly).

    With a ``region`` the site sees only that box of the image (a module run on patches):
    the maps are resized to the whole-image size the site would have, then cropped.
    """
    # plain ints, except under torch.jit.trace: there sizes are 0-dim tensors, kept so
    # that a trace (and a legacy ONNX export) follows the input's height and width
    h, w = size[0], size[1]
    if region is None:
        full_h, full_w, top, left = h, w, 0, 0
    else:
        full_h, full_w = _round(h / region.height), _round(w / region.width)
        top = _min(_round(region.top * full_h), full_h - h)
        left = _min(_round(region.left * full_w), full_w - w)
    # one interpolation call for all maps (they share the prior's resolution)
    sizes = [m.shape[1] for m in maps]
    joined = torch.cat(list(maps), 1) if len(maps) > 1 else maps[0]
    target = (full_h, full_w)
    if image_size is not None and reduction is not None:
        target = (_map_size(joined.shape[-2], reduction, image_size[0], full_h),
                  _map_size(joined.shape[-1], reduction, image_size[1], full_w))
    joined = resize(joined, target)
    short_h, short_w = max(0, full_h - target[0]), max(0, full_w - target[1])
    if short_h or short_w:
        joined = F.pad(joined, (0, short_w, 0, short_h), mode="replicate")
    if joined.shape[-2:] != (h, w):
        joined = joined[..., top : top + h, left : left + w]
    return list(torch.split(joined, sizes, 1)) if len(maps) > 1 else [joined]


class SemanticPriorEmbedding(nn.Module):
    """The SPE of one decoder level: MLA (optional) then the fusion (SAT, add or concat).

    Args:
        prior_channels: channels of every prior level.
        prior_level: which prior feeds this decoder level.
        channels: channels of the decoder tensor that is modulated.
        config: the switches (``mla``, ``fusion``, ``kernel_size``, ``sigma_bound``).
        reduction: image pixels per pixel of that prior (aligns the maps with the site;
            ``None``: the maps are stretched over the site).
    """

    def __init__(
        self,
        prior_channels: Sequence[int],
        prior_level: int,
        channels: int,
        config: PriorConfig,
        reduction: int | None = None,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if not 0 <= prior_level < len(prior_channels):
            raise OptionError(
                f"prior_level {prior_level} is out of range: the prior has "
                f"{len(prior_channels)} levels"
            )
        self.prior_level = prior_level
        self.channels = channels
        k = config.kernel_size
        self.mla = MultiLevelAggregation(prior_channels, prior_level, k) if config.mla else None
        c = prior_channels[prior_level]
        if config.fusion == "sat":
            self.fusion: nn.Module = SemanticAttentionTransform(c, channels, k, config.sigma_bound)
        elif config.fusion == "add":
            self.fusion = AddFusion(c, channels, k)
        else:
            self.fusion = ConcatFusion(c, channels, k)

    fast_maps: Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor, ...]] | None = None
    """A compiled :meth:`reference_maps` (:func:`sp_adapter.attach.optimize.compile_prior`);
    ``None``: eager. Not copied with the module."""

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("fast_maps", None)  # bound to this instance: a copy computes eagerly
        return state

    def maps(self, priors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The modulation maps at the prior's resolution (computed once per forward)."""
        if self.fast_maps is not None:
            return self.fast_maps(priors)
        return self.reference_maps(priors)

    def reference_maps(self, priors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """:meth:`maps`, always computed eagerly."""
        m = self.mla(priors) if self.mla is not None else priors[self.prior_level]
        return self.fusion.maps(m)

    def forward(
        self,
        h: torch.Tensor,
        g: torch.Tensor,
        maps: Sequence[torch.Tensor],
        region: Region | None = None,
        image_size: Sequence[int] | None = None,
        strength: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Modulate ``h`` (what the network continues with) given ``g = f_de + f_en``;
        ``image_size``, the blurry image's ``(H, W)``, aligns the maps with the site;
        ``strength`` scales the change the fusion makes to ``h`` (see
        :func:`sp_adapter.attach.wrap.set_prior_strength`)."""
        site_maps = [m.to(h.dtype) for m in
                     crop_to_site(maps, h.shape[-2:], region, image_size, self.reduction)]
        if isinstance(strength, torch.Tensor):
            strength = strength.to(h.dtype)
        return self.fusion.apply(h, g, site_maps, strength)

    def modulate(
        self,
        h: torch.Tensor,
        skip: torch.Tensor | None,
        maps: Sequence[torch.Tensor],
        region: Region | None = None,
        image_size: Sequence[int] | None = None,
        strength: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """:meth:`forward` with ``g = h + skip`` (``g = h`` without a skip), in as little
        memory as the computation allows: where nothing needs a gradient, SAT and add
        apply their maps a few channels at a time (:func:`lean_modulation`), so neither the
        full-resolution maps nor ``g`` exist whole; otherwise it is :meth:`forward`."""
        if lean_applies(self.fusion, h, skip, maps, strength):
            return lean_modulation(self.fusion, h, skip, maps, lambda m: crop_to_site(
                m, h.shape[-2:], region, image_size, self.reduction), strength)
        return self(h, h if skip is None else h + skip, maps, region, image_size, strength)


_lean = True


@contextlib.contextmanager
def reference_modulation() -> Iterator[None]:
    """Within this block every SPE computes its modulation the reference way
    (:meth:`SemanticPriorEmbedding.forward`, full-resolution maps): for comparisons."""
    global _lean
    saved, _lean = _lean, False
    try:
        yield
    finally:
        _lean = saved


LEAN_CHUNK_ELEMENTS = 2**22
"""Sites with more elements than this are modulated in :data:`LEAN_CHUNKS` channel chunks
(smaller ones in one: on a GPU every chunk costs kernel launches)."""
LEAN_CHUNKS = 16


def lean_applies(fusion: nn.Module, h: torch.Tensor, skip: torch.Tensor | None,
                 maps: Sequence[torch.Tensor], strength: float | torch.Tensor) -> bool:
    """Whether :func:`lean_modulation` computes this modulation: SAT or add, nothing that
    needs a gradient (autograd would keep the full maps anyway), not while
    ``torch.compile`` traces (the compiler fuses the reference itself) nor under
    ``torch.jit.trace`` (the legacy ONNX exporter mistranslates writes into slices of
    one output tensor), and every
    operand already in ``h``'s dtype (so no type promotion is skipped)."""
    if not _lean or not isinstance(fusion, (SemanticAttentionTransform, AddFusion)):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    tensors = [h, *maps] + ([skip] if skip is not None else [])
    if isinstance(strength, torch.Tensor):
        tensors.append(strength)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if skip is not None and skip.dtype != h.dtype:
        return False
    return all(m.dtype == h.dtype for m in maps)


def lean_modulation(
    fusion: nn.Module,
    h: torch.Tensor,
    skip: torch.Tensor | None,
    maps: Sequence[torch.Tensor],
    to_site: Callable[[Sequence[torch.Tensor]], list[torch.Tensor]],
    strength: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """The fusion's output, the same operations as its ``apply`` on the same values, but
    channel chunk by channel chunk into one output tensor: each chunk's maps are resized
    to the site (``to_site``) and ``g`` summed only for that chunk. Bilinear resizing and
    the element-wise maths are per channel, so the result equals the reference."""
    if isinstance(strength, torch.Tensor):
        strength = strength.to(h.dtype)
    out = torch.empty_like(h)
    channels, numel = h.shape[1], h.numel()
    per_chunk = numel if numel <= LEAN_CHUNK_ELEMENTS else -(-numel // LEAN_CHUNKS)
    step = max(1, min(channels, per_chunk * channels // max(1, numel)))
    for c0 in range(0, channels, step):
        c1 = min(channels, c0 + step)
        site = to_site([m[:, c0:c1] for m in maps])
        part, h_part = out[:, c0:c1], h[:, c0:c1]
        if isinstance(fusion, AddFusion):
            delta = site[0]
            if isinstance(strength, torch.Tensor) or strength != 1.0:
                delta = delta * strength
            torch.add(h_part, delta, out=part)
            continue
        mu_minus_one, sigma = site
        g_part = h_part if skip is None else h_part + skip[:, c0:c1]
        if isinstance(strength, torch.Tensor):
            torch.add(h_part, torch.addcmul(sigma, mu_minus_one, g_part) * strength, out=part)
        elif strength == 1.0:
            torch.add(h_part, sigma, out=part)
            part.addcmul_(mu_minus_one, g_part)
        else:
            torch.add(h_part, sigma * strength, out=part)
            part.addcmul_(mu_minus_one, g_part, value=strength)
    return out
