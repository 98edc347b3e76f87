"""Deblur and score: final images of any size (padding or tiles), PSNR/SSIM on a dataset.

Scores follow a named convention of :mod:`sp_adapter.metrics.conventions` (RGB, no border
crop, one score per image averaged over images). :func:`evaluate` defaults to ``skimage``
(8-bit rounding, 2-D Gaussian SSIM), which training validation and the benchmarks use;
``sp-adapter eval`` defaults to ``matlab``, the convention of most published tables.
:func:`table_row` writes a result as a row of the paper's Table 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from sp_adapter.attach.backbone import Backbone
from sp_adapter.errors import DatasetError, OptionError
from sp_adapter.inference import run_padded, run_tiled
from sp_adapter.metrics import get_convention, score
from sp_adapter.train.backbones import backbone_spec


def deblur(
    model: nn.Module,
    blurry: torch.Tensor,
    backbone: str | Backbone = "unet",
    tile: int | None = None,
    overlap: int = 32,
) -> torch.Tensor:
    """The final deblurred batch in [0, 1], same size as ``blurry`` (no gradients).

    The input is padded (reflect) to the backbone's side multiple and the output cropped
    back; with ``tile`` the image goes through overlapping tiles (for big images).
    """
    spec = backbone_spec(backbone)
    multiple = max(1, spec.size_multiple)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return spec.predict(model, x)

    with torch.inference_mode():
        if tile:
            tile = max(multiple, tile // multiple * multiple)
            out = run_tiled(fn, blurry, tile=tile, overlap=min(overlap, tile - multiple),
                            multiple=multiple)
        else:
            out = run_padded(fn, blurry, multiple=multiple)
    return out.clamp(0, 1)


@dataclass
class EvalResult:
    """Mean scores and per-image scores (with the samples' keys when known).

    ``convention`` names how the scores were computed (:data:`sp_adapter.metrics.CONVENTIONS`);
    ``seconds_per_image`` is the time spent deblurring (the model with its padding or
    tiling; not data loading or scoring), per image.
    """

    psnr: float
    ssim: float
    count: int
    per_image: list[dict[str, float | str]] = field(default_factory=list)
    blurry_psnr: float | None = None
    blurry_ssim: float | None = None
    convention: str = "skimage"
    seconds_per_image: float | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {"psnr": self.psnr, "ssim": self.ssim, "count": self.count,
                "blurry_psnr": self.blurry_psnr, "blurry_ssim": self.blurry_ssim,
                "convention": self.convention, "seconds_per_image": self.seconds_per_image}


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    backbone: str | Backbone = "unet",
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    tile: int | None = None,
    limit: int | None = None,
    score_blurry: bool = False,
    progress: bool = False,
    on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[str]], None] | None = None,
    convention: str = "skimage",
    warmup: bool = False,
) -> EvalResult:
    """PSNR/SSIM of ``model`` on ``dataset`` (``(blurry, sharp[, key])`` samples).

    Args:
        limit: score only the first ``limit`` samples.
        score_blurry: also score the blurry inputs (the "do nothing" baseline).
        on_batch: called with ``(blurry, restored, sharp, keys)`` per batch (e.g. to save
            images).
        convention: how to compute the scores, a name in
            :data:`sp_adapter.metrics.CONVENTIONS` (``"realblur"`` needs OpenCV).
        warmup: deblur the first batch once, untimed, before the timed pass (kernel
            selection and allocations), so ``seconds_per_image`` is the steady pace.
    """
    conv = get_convention(convention)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    rows: list[dict[str, float | str]] = []
    index = 0
    seconds = 0.0
    try:
        for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            blurry, sharp = batch[0].to(device), batch[1].to(device)
            keys = list(batch[2]) if len(batch) > 2 else [
                str(index + i) for i in range(blurry.shape[0])]
            index += blurry.shape[0]
            if warmup:
                deblur(model, blurry, backbone, tile=tile)
                warmup = False
            started = _synchronized_clock(device)
            restored = deblur(model, blurry, backbone, tile=tile)
            seconds += _synchronized_clock(device) - started
            scores = score(restored, sharp, conv)
            if score_blurry:
                inputs = score(blurry, sharp, conv)
            for i, key in enumerate(keys):
                row: dict[str, float | str] = {"key": key, "psnr": float(scores.psnr[i]),
                                               "ssim": float(scores.ssim[i])}
                if score_blurry:
                    row.update(blurry_psnr=float(inputs.psnr[i]),
                               blurry_ssim=float(inputs.ssim[i]))
                rows.append(row)
            if on_batch is not None:
                on_batch(blurry, restored, sharp, keys)
    finally:
        model.train(was_training)
    if not rows:
        raise DatasetError("the evaluation dataset is empty")

    def mean(name: str) -> float:
        return sum(float(r[name]) for r in rows) / len(rows)

    return EvalResult(
        psnr=mean("psnr"), ssim=mean("ssim"), count=len(rows), per_image=rows,
        blurry_psnr=mean("blurry_psnr") if score_blurry else None,
        blurry_ssim=mean("blurry_ssim") if score_blurry else None,
        convention=conv.name, seconds_per_image=seconds / len(rows),
    )


def _synchronized_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done (CUDA runs async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def score_inputs(dataset: Dataset, device: torch.device | str = "cpu",
                 batch_size: int = 8, convention: str = "skimage") -> EvalResult:
    """PSNR/SSIM of the blurry inputs themselves (the "do nothing" baseline): the scores
    of a model that returns its input unchanged."""
    return evaluate(nn.Identity(), dataset, "unet", device=device, batch_size=batch_size,
                    convention=convention)


def with_input_scores(result: EvalResult, inputs: EvalResult) -> EvalResult:
    """``result`` with the blurry inputs' scores (from :func:`score_inputs` on the same
    dataset) added, as ``evaluate(..., score_blurry=True)`` gives them."""
    if [r["key"] for r in result.per_image] != [r["key"] for r in inputs.per_image]:
        raise OptionError("the input scores come from another dataset than the result's")
    if result.convention != inputs.convention:
        raise OptionError(f"the input scores use the {inputs.convention!r} convention, the "
                          f"result the {result.convention!r} one")
    rows = [{**row, "blurry_psnr": blurry["psnr"], "blurry_ssim": blurry["ssim"]}
            for row, blurry in zip(result.per_image, inputs.per_image, strict=True)]
    return replace(result, per_image=rows, blurry_psnr=inputs.psnr, blurry_ssim=inputs.ssim)


TABLE_HEADER = ("| Methods | Structure | PSNR ↑ | SSIM ↑ | LPIPS ↓ | Time (s) |\n"
                "|---|---|---|---|---|---|")
"""The header of the paper's Table 1 (GoPro), in Markdown."""

_TABLE_NAMES = {
    "unet": ("UNet", "multi-scale"),
    "deepdeblur": ("DeepDeblur", "multi-scale"),
    "mprnet": ("MPRNet", "multi-patch"),
    "mprnet-stage1": ("MPRNet (stage 1)", "multi-patch"),
    "mimo-unet": ("MIMO-UNet", "multi-scale"),
    "mimo-unet-plus": ("MIMOUNetPlus", "multi-scale"),
    "mssnet": ("MSSNet", "multi-stage"),
    "mssnet-small": ("MSSNet (small)", "multi-stage"),
    "mssnet-large": ("MSSNet (large)", "multi-stage"),
}


def table_name(backbone: str, prior: bool) -> tuple[str, str]:
    """The method's name (``+SP`` with the prior) and structure as Table 1 writes them."""
    name, structure = _TABLE_NAMES.get(backbone, (backbone, "-"))
    return (f"{name}+SP" if prior else name), structure


def table_row(method: str, structure: str, result: EvalResult,
              lpips: float | None = None) -> str:
    """``result`` as a Markdown row of Table 1: PSNR (2 decimals), SSIM, LPIPS and seconds
    per image (3 decimals); ``-`` where a value is missing."""
    lp = "-" if lpips is None else f"{lpips:.3f}"
    sec = "-" if result.seconds_per_image is None else f"{result.seconds_per_image:.3f}"
    return f"| {method} | {structure} | {result.psnr:.2f} | {result.ssim:.3f} | {lp} | {sec} |"
