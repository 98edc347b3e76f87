"""Write a prior to a folder: ``model.safetensors``, ``config.json`` (with the weights'
SHA-256) and the model card, each atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from sp_adapter.attach.state import prior_of
from sp_adapter.errors import OverwriteError, WrapError
from sp_adapter.files.atomic import write_atomic
from sp_adapter.files.hub.card import model_card_text
from sp_adapter.files.hub.config import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    config_json,
    prior_config_dict,
)
from sp_adapter.files.hub.integrity import sha256_hex
from sp_adapter.prior.semantic_prior import SemanticPrior

PathLike = str | os.PathLike


def prior_and_class(prior_or_model: nn.Module) -> tuple[SemanticPrior, str | None]:
    """The prior to save and, for a wrapped model, the class name of the network carrying it
    (found inside DDP / DataParallel / ``torch.compile`` wrappers, which hold it as a
    submodule)."""
    if isinstance(prior_or_model, SemanticPrior):
        return prior_or_model, None
    if not isinstance(prior_or_model, nn.Module):
        raise WrapError(f"expected a wrapped model or a SemanticPrior, got "
                        f"{type(prior_or_model).__name__}")
    carriers = [(name, module) for name, module in prior_or_model.named_modules()
                if prior_of(module) is not None]
    if not carriers:
        raise WrapError(f"{type(prior_or_model).__name__} carries no semantic prior: call "
                        "sp_adapter.wrap(model) first, or pass a SemanticPrior")
    if len(carriers) > 1:
        names = ", ".join(repr(name or "<root>") for name, _ in carriers)
        raise WrapError(f"{type(prior_or_model).__name__} holds {len(carriers)} wrapped "
                        f"networks ({names}): save the one you mean")
    module = carriers[0][1]
    return prior_of(module), type(module).__name__


def weights_bytes(prior: SemanticPrior) -> bytes:
    """The prior's state dict as safetensors bytes (CPU, contiguous copies)."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in prior.state_dict().items()}
    return save(state, metadata={"format": "pt", "sp_adapter_format_version": str(FORMAT_VERSION)})


def _check_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise OverwriteError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise OverwriteError(
            f"{folder} already exists and is not empty; pass overwrite=True to replace the "
            f"prior's files ({CONFIG_NAME}, {WEIGHTS_NAME}, {CARD_NAME}) in it, or choose "
            "another folder"
        )


def save_pretrained(
    prior_or_model: nn.Module,
    folder: PathLike,
    *,
    metrics: Mapping[str, Any] | None = None,
    data: Any = None,
    overwrite: bool = False,
    repo_id: str | None = None,
    model_card: bool = True,
) -> Path:
    """Save a prior as ``config.json`` + ``model.safetensors`` (+ ``README.md``) in ``folder``.

    Args:
        prior_or_model: a wrapped model (DDP / compile around it is fine) or a
            :class:`SemanticPrior`. Only the prior is saved, not the network.
        folder: created if needed. An existing non-empty folder is refused unless
            ``overwrite=True`` (then the three files are replaced, others are left alone).
        metrics: results to record in the config and the card, e.g. ``{"PSNR (GoPro)": 31.1}``.
        data: what the prior was trained on (a string, or JSON-ready data).
        overwrite: allow writing into a non-empty folder.
        repo_id: the Hub repository the card's usage example should name.
        model_card: write ``README.md``.

    Returns:
        The folder. Each file is written atomically (temporary file, then rename);
        ``config.json`` records the SHA-256 of ``model.safetensors``, which loading checks.

    Example::

        sp_adapter.save_pretrained(model, "unet-prior", metrics={"PSNR (GoPro)": 31.1})
    """
    prior, model_class = prior_and_class(prior_or_model)
    folder = Path(folder).expanduser()
    _check_folder(folder, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    weights = weights_bytes(prior)
    config = prior_config_dict(prior, model_class=model_class, metrics=metrics, data=data,
                               digests={WEIGHTS_NAME: sha256_hex(weights)})
    write_atomic(folder / WEIGHTS_NAME, weights)
    write_atomic(folder / CONFIG_NAME, config_json(config))
    if model_card:
        card = model_card_text(config, repo_id or "<org>/<name>")
        write_atomic(folder / CARD_NAME, card.encode())
    return folder
