"""Training losses: the paper's total loss (Eq. 7, 8) and the backbones' own losses.

* Pixel losses: :func:`l1_loss`, :func:`mse_loss`, :func:`charbonnier_loss`,
  :func:`edge_loss` (Charbonnier of Laplacian-pyramid differences, as MPRNet trains),
  :func:`fft_l1_loss` (L1 on the real and imaginary parts of the 2-D FFT, as MIMO-UNet
  and MSSNet train).
* Perceptual losses (Eq. 8): :class:`VGGPerceptualLoss` (VGG16 ``relu3_3`` with
  torchvision's ImageNet weights; a clear :class:`PerceptualWeightsError` when they cannot
  be had, never random weights) and :class:`TeacherPerceptualLoss` (the same distance on
  the offline teacher's standardised features, an explicit alternative).
* Multi-output reconstruction losses by name (:data:`BACKBONE_LOSSES`); where a
  backbone's final image is, is its adapter's (:meth:`~sp_adapter.attach.backbone.Backbone.final`).
* :class:`TotalLoss`: Eq. (7), ``L_rec + alpha * L_vgg + beta * L_prior``.

All losses take images on the [0, 1] scale (DeepDeblur's [0, 255] outputs are rescaled
inside its loss) and return a float32 scalar averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sp_adapter.attach.state import is_wrapped
from sp_adapter.attach.wrap import prior_loss
from sp_adapter.backbones.deepdeblur import RGB_RANGE, gaussian_pyramid
from sp_adapter.errors import OptionError, PerceptualWeightsError
from sp_adapter.prior.config import TeacherSpec
from sp_adapter.prior.teacher import load_teacher

Outputs = torch.Tensor | Sequence[torch.Tensor]
Final = Callable[[Outputs], torch.Tensor]
"""A network's output: one image, or a list of images (multi-scale / multi-stage)."""

DEFAULT_ALPHA = 0.01
"""Weight of the perceptual loss in Eq. (7) (Sec. 4.1)."""
DEFAULT_BETA = 0.1
"""Weight of the prior loss in Eq. (7) (Sec. 4.1)."""


# -- pixel losses ----------------------------------------------------------------------
def full(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a half-precision type; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error, the ``L_1`` of Eq. (8)."""
    return F.l1_loss(full(pred), full(target))


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error: the loss whose minimum is the best PSNR (PSNR is
    ``-10 log10(MSE)``). Under uncertainty it hedges (the mean of the plausible images)
    where L1 commits to one (their median)."""
    return F.mse_loss(full(pred), full(target))


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``mean(sqrt((pred - target)^2 + eps^2))`` (MPRNet's pixel loss, eps 1e-3)."""
    diff = full(pred) - full(target)
    return torch.sqrt(diff * diff + eps * eps).mean()


_GAUSS5 = (0.05, 0.25, 0.4, 0.25, 0.05)


def _gauss_blur5(x: torch.Tensor) -> torch.Tensor:
    """5x5 separable binomial-like blur of every channel, replicate borders."""
    k1 = torch.tensor(_GAUSS5, dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=x.shape[1])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """One Laplacian-pyramid band: ``x - G(up(down(G(x))))`` with ``G`` the 5-tap blur,
    ``down`` keeping every other pixel and ``up`` zero-insertion times 4 (MPRNet's edge
    filter)."""
    blurred = _gauss_blur5(x)
    upsampled = torch.zeros_like(blurred)
    upsampled[..., ::2, ::2] = blurred[..., ::2, ::2] * 4
    return x - _gauss_blur5(upsampled)


def edge_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier distance of the Laplacian bands of ``pred`` and ``target``."""
    return charbonnier_loss(laplacian(full(pred)), laplacian(full(target)), eps)


def fft_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the unnormalised 2-D FFTs, real and imaginary parts as separate entries
    (the mean over ``B x C x H x W x 2`` values, as MIMO-UNet's loss)."""
    p = torch.view_as_real(torch.fft.fft2(full(pred), dim=(-2, -1)))
    t = torch.view_as_real(torch.fft.fft2(full(target), dim=(-2, -1)))
    return F.l1_loss(p, t)


# -- perceptual losses (Eq. 8) ---------------------------------------------------------
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_RELU3_3 = 16
"""``vgg16().features[:16]`` ends with the ReLU after conv3_3."""


def _vgg_help(url: str, path: Path) -> str:
    return (
        "The paper's perceptual loss (Eq. 8) uses VGG16 relu3_3 features with torchvision's "
        f"ImageNet weights, which are downloaded from {url} and are not shipped in any "
        "wheel. Either run once with internet access (torchvision caches the file), or "
        f"download that file and put it at {path} (TORCH_HOME changes the folder), or choose "
        "another feature network explicitly: perceptual='teacher' (the sp_adapter teacher's "
        "features, offline; CLI: --perceptual teacher), or disable the term with alpha=0 "
        "(CLI: --alpha 0)."
    )


def vgg16_weights_path() -> Path:
    """Where torchvision keeps the VGG16 ImageNet checkpoint (it may not exist)."""
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


class VGGPerceptualLoss(nn.Module):
    """``L_vgg`` of Eq. (8): distance of VGG16 ``relu3_3`` features of output and target.

    The distance is the squared L2 norm of the feature difference normalised by
    ``H_p W_p C`` (and the batch), i.e. the mean squared error of the features. Inputs in
    [0, 1] are normalised with the ImageNet statistics inside. The network is frozen and
    kept in eval mode; gradients flow to the deblurred image only.

    Args:
        features: a module mapping a normalised image to ``relu3_3`` features; use
            :meth:`pretrained` for the paper's network.
    """

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def pretrained(cls, allow_download: bool = True) -> VGGPerceptualLoss:
        """VGG16 with torchvision's ``IMAGENET1K_V1`` weights, cut after ``relu3_3``.

        Raises:
            PerceptualWeightsError: the weights are not cached and cannot be downloaded
                (or ``allow_download`` is False); the message says what to do.
        """
        from torchvision.models import VGG16_Weights, vgg16

        weights = VGG16_Weights.IMAGENET1K_V1
        path = vgg16_weights_path()
        if not path.is_file() and not allow_download:
            raise PerceptualWeightsError(
                f"VGG16 weights are not at {path} and downloading is disabled. "
                + _vgg_help(weights.url, path)
            )
        try:
            net = vgg16(weights=weights)
        except Exception as err:  # URLError, OSError, hash mismatch: all mean "no weights"
            raise PerceptualWeightsError(
                f"could not get the VGG16 weights ({type(err).__name__}: {err}). "
                + _vgg_help(weights.url, path)
            ) from err
        return cls(net.features[:VGG16_RELU3_3])

    def train(self, mode: bool = True) -> VGGPerceptualLoss:  # noqa: ARG002 - frozen
        return super().train(False)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        return self.features(x)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self._features(target)
        return F.mse_loss(self._features(pred), target_features)


class TeacherPerceptualLoss(nn.Module):
    """Eq. (8)'s distance on the sp_adapter teacher's standardised features (all levels,
    averaged): an offline alternative to VGG16 chosen explicitly with
    ``perceptual="teacher"``. Not the paper's choice.

    Args:
        teacher: a :class:`~sp_adapter.prior.teacher.Teacher` (frozen; shared, not copied).
    """

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        t = self.teacher
        t.follow(x)
        x = (x.float() - t.input_mean) / t.input_std
        return [
            (f.float() - m) / s for f, (m, s) in zip(t.features(x), t.statistics(), strict=True)
        ]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = self._features(target)
        losses = [F.mse_loss(p, t) for p, t in zip(self._features(pred), targets, strict=True)]
        return torch.stack(losses).mean()


def build_perceptual(
    kind: str | nn.Module | None, teacher: nn.Module | None = None, allow_download: bool = True
) -> nn.Module | None:
    """The perceptual loss named ``kind``: ``"vgg16"`` (the paper's), ``"teacher"``
    (offline, needs ``teacher`` or builds the built-in one), ``"none"``/``None``; a module
    is returned as is."""
    if kind is None or isinstance(kind, nn.Module):
        return kind
    if kind == "none":
        return None
    if kind == "vgg16":
        return VGGPerceptualLoss.pretrained(allow_download=allow_download)
    if kind == "teacher":
        if teacher is None:

            teacher = load_teacher(TeacherSpec())
        return TeacherPerceptualLoss(teacher)
    raise OptionError(f"perceptual must be 'vgg16', 'teacher' or 'none', got {kind!r}")


# -- reconstruction losses of the backbones ---------------------------------------------
def _as_list(
    out: Outputs, n: int | tuple[int, ...], name: str, order: str
) -> list[torch.Tensor]:
    counts = (n,) if isinstance(n, int) else n
    if isinstance(out, torch.Tensor) or len(out) not in counts:
        got = "a single tensor" if isinstance(out, torch.Tensor) else f"{len(out)} outputs"
        want = " or ".join(map(str, counts))
        raise OptionError(f"the {name!r} loss expects a list of {want} outputs {order}, got {got}")
    return list(out)


def _resized_target(sharp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``sharp`` at ``out``'s size (bilinear, as the backbones' training code)."""
    if out.shape[-2:] == sharp.shape[-2:]:
        return sharp
    return F.interpolate(sharp, size=tuple(out.shape[-2:]), mode="bilinear", align_corners=False)


def _one_image(out: Outputs, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise OptionError(
            f"the {name!r} loss expects a single output tensor; for a multi-output backbone "
            "choose its loss by name: 'mimo', 'mprnet', 'mssnet' or 'deepdeblur'"
        )
    return out


def single_l1(out: Outputs, sharp: torch.Tensor) -> torch.Tensor:
    """``l1``: one output image (the final), L1 against the sharp batch."""
    return l1_loss(_one_image(out, "l1"), sharp)


def single_mse(out: Outputs, sharp: torch.Tensor) -> torch.Tensor:
    """``mse``: one output image (the final), mean squared error against the sharp batch."""
    return mse_loss(_one_image(out, "mse"), sharp)


def mimo_loss(out: Outputs, sharp: torch.Tensor) -> torch.Tensor:
    """``mimo``: outputs ``[1/4, 1/2, full]`` (final: ``out[2]``). Sum over the scales of
    L1 against the bilinearly down-sampled sharp image, plus 0.1 times the same sum of
    FFT L1."""
    outs = _as_list(out, 3, "mimo", "[1/4, 1/2, full]")
    targets = [
        F.interpolate(sharp, scale_factor=0.25, mode="bilinear", align_corners=False),
        F.interpolate(sharp, scale_factor=0.5, mode="bilinear", align_corners=False),
        sharp,
    ]
    content = sum(l1_loss(o, t) for o, t in zip(outs, targets, strict=True))
    fft = sum(fft_l1_loss(o, t) for o, t in zip(outs, targets, strict=True))
    return content + 0.1 * fft


def mprnet_loss(out: Outputs, sharp: torch.Tensor) -> torch.Tensor:
    """``mprnet``: outputs ``[stage3, stage2, stage1]``, all full size (final: ``out[0]``);
    also the one-element list of the single-stage MPRNet. Sum over outputs of Charbonnier
    (eps 1e-3) plus 0.05 times the sum of edge losses."""
    outs = _as_list(out, (3, 1), "mprnet", "[stage3 (final), stage2, stage1]")
    char = sum(charbonnier_loss(o, sharp) for o in outs)
    edge = sum(edge_loss(o, sharp) for o in outs)
    return char + 0.05 * edge


def mssnet_loss(out: Outputs, sharp: torch.Tensor) -> torch.Tensor:
    """``mssnet``: six outputs ``[res1_1 (H/2), res2_1, res2_2, res3_1, res3_2, res3_3]``
    (final: ``out[5]``). Sum over outputs of L1 plus 0.1 times the sum of FFT L1, each
    against the sharp image at the output's size (half size for ``res1_1``)."""
    outs = _as_list(out, 6, "mssnet", "[res1_1 (H/2), ..., res3_3 (final)]")
    targets = [_resized_target(sharp, o) for o in outs]
    content = sum(l1_loss(o, t) for o, t in zip(outs, targets, strict=True))
    fft = sum(fft_l1_loss(o, t) for o, t in zip(outs, targets, strict=True))
    return content + 0.1 * fft


DEEPDEBLUR_RANGE = float(RGB_RANGE)
"""DeepDeblur's outputs are on [0, 255] (its ``rgb_range``)."""


def deepdeblur_loss(out: Outputs, sharp: torch.Tensor) -> torch.Tensor:
    """``deepdeblur``: outputs ``[full, 1/2, 1/4]`` on [0, 255] (final: ``out[0]``). Sum over
    scales of L1 against the Gaussian pyramid of the sharp image (the pyramid of the
    official data pipeline). Computed on the [0, 1] scale: the official value on [0, 255]
    is 255 times this (with Adam only the effective epsilon differs)."""
    outs = _as_list(out, 3, "deepdeblur", "[full (final), 1/2, 1/4]")
    targets = gaussian_pyramid(full(sharp), n_scales=3)
    return sum(l1_loss(o / DEEPDEBLUR_RANGE, t) for o, t in zip(outs, targets, strict=True))


ReconstructionLoss = Callable[[Outputs, torch.Tensor], torch.Tensor]
"""``fn(output, sharp) -> loss``; where the final image is, is the backbone's
(:meth:`sp_adapter.attach.backbone.Backbone.final`)."""

BACKBONE_LOSSES: dict[str, ReconstructionLoss] = {
    "l1": single_l1,
    "mse": single_mse,
    "mimo": mimo_loss,
    "mprnet": mprnet_loss,
    "mssnet": mssnet_loss,
    "deepdeblur": deepdeblur_loss,
}
"""Reconstruction losses by name (an adapter's ``loss``, ``TrainConfig.loss``)."""


def reconstruction_loss(name: str | ReconstructionLoss) -> ReconstructionLoss:
    """The loss named ``name`` (see :data:`BACKBONE_LOSSES`)."""
    if callable(name):
        return name
    try:
        return BACKBONE_LOSSES[name]
    except KeyError:
        raise OptionError(
            f"unknown reconstruction loss {name!r}; choose one of {sorted(BACKBONE_LOSSES)}"
        ) from None


# -- Eq. (7) ----------------------------------------------------------------------------
@dataclass
class LossTerms:
    """The terms of Eq. (7) for one batch; ``total`` is what to back-propagate."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    perceptual: torch.Tensor
    prior: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in
                ("total", "reconstruction", "perceptual", "prior")}


def _single_output(out: Outputs) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise OptionError("a multi-output network needs final= (its backbone's Backbone.final)")
    return out


class TotalLoss:
    """Eq. (7): ``L_total = L_rec + alpha * L_vgg + beta * L_prior``.

    ``L_rec`` is the backbone's reconstruction loss (plain L1 for a single-output network,
    as in the paper); ``L_vgg`` (Eq. 8) is computed on the final image; ``L_prior`` (Eq. 4)
    is added when the model is wrapped and ``beta > 0``.

    Args:
        reconstruction: a name of :data:`BACKBONE_LOSSES` or a loss function.
        final: the final image of an output (the backbone's
            :meth:`~sp_adapter.attach.backbone.Backbone.final`), for the perceptual term.
        alpha: perceptual weight; 0 disables the term (then ``perceptual`` may be None).
        beta: prior weight; 0 disables the term.
        perceptual: the perceptual module (see :func:`build_perceptual`).
    """

    def __init__(
        self,
        reconstruction: str | ReconstructionLoss = "l1",
        final: Final | None = None,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        perceptual: nn.Module | None = None,
    ) -> None:
        if alpha < 0 or beta < 0:
            raise OptionError(f"alpha and beta must be >= 0, got {alpha}, {beta}")
        if alpha > 0 and perceptual is None:
            raise OptionError(
                "alpha > 0 needs a perceptual loss module: build_perceptual('vgg16') (the "
                "paper's, downloads once) or build_perceptual('teacher') (offline); or alpha=0"
            )
        self.reconstruction = reconstruction_loss(reconstruction)
        self.final: Final = final or _single_output
        self.alpha, self.beta = alpha, beta
        self.perceptual = perceptual

    def __call__(
        self,
        output: Outputs,
        sharp: torch.Tensor,
        model: nn.Module | None = None,
        prior_targets: Sequence[torch.Tensor] | None = None,
    ) -> LossTerms:
        """The terms for ``output`` (the model's raw output) against ``sharp`` in [0, 1].

        Args:
            model: the model that produced ``output``; its prior loss is added if wrapped.
            prior_targets: cached teacher features of ``sharp`` (see ``prior_loss``).
        """
        zero = sharp.new_zeros((), dtype=torch.float32)
        rec = self.reconstruction(output, sharp)
        perc = zero
        if self.alpha > 0 and self.perceptual is not None:
            perc = self.perceptual(self.final(output).float(), sharp.float())
        prior = zero
        if self.beta > 0 and model is not None and is_wrapped(model):
            prior = prior_loss(model, sharp, targets=prior_targets)
        total = rec + self.alpha * perc + self.beta * prior
        return LossTerms(total=total, reconstruction=rec, perceptual=perc, prior=prior)


def total_loss(
    output: Outputs,
    sharp: torch.Tensor,
    model: nn.Module | None = None,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    perceptual: nn.Module | None = None,
    reconstruction: str = "l1",
    prior_targets: Any = None,
) -> torch.Tensor:
    """Eq. (7) in one call; see :class:`TotalLoss`."""
    loss = TotalLoss(reconstruction, alpha=alpha, beta=beta, perceptual=perceptual)
    return loss(output, sharp, model, prior_targets).total
