"""Write a prior to a folder: ``model.safetensors``, ``config.json`` (with the weights'
SHA-256) and the model card, each atomically.

Only the library's own files are ever replaced: a ``config.json`` or ``model.safetensors``
that another program wrote is refused, and a ``README.md`` the user wrote is kept (the
library's card carries ``sp_adapter_card: true`` in its front matter)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from sp_adapter.attach.state import prior_of
from sp_adapter.errors import PriorFolderError, WrapError
from sp_adapter.files.atomic import write_atomic
from sp_adapter.files.hub.card import CARD_MARKER, is_own_card, model_card_text
from sp_adapter.files.hub.config import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_NAME,
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


def _own_config(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT_NAME
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _own_weights(path: Path) -> bool:
    """Whether a safetensors file's header metadata says this library wrote it."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= 100_000_000:
                return False
            header = json.loads(handle.read(size))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(meta, dict) and "sp_adapter_format_version" in meta


def _own_card(path: Path) -> bool:
    try:
        return is_own_card(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False


def _check_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise PriorFolderError(f"{folder} exists and is not a folder; give a folder path")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise PriorFolderError(
            f"{folder} already exists and is not empty; pass overwrite=True to replace the "
            f"prior's files ({CONFIG_NAME}, {WEIGHTS_NAME}, {CARD_NAME}) in it, or choose "
            "another folder"
        )
    checks = ((CONFIG_NAME, _own_config), (WEIGHTS_NAME, _own_weights))
    foreign = [folder / name for name, own in checks
               if (folder / name).exists() and not own(folder / name)]
    if foreign:
        listed = " and ".join(str(path) for path in foreign)
        raise PriorFolderError(
            f"{listed} {'were' if len(foreign) > 1 else 'was'} not written by sp_adapter, and "
            "save_pretrained does not replace files it did not write, even with overwrite=True; "
            "save the prior into another folder, or move those files away first"
        )


def _keep_users_card(folder: Path) -> bool:
    """Whether ``folder`` holds a ``README.md`` this library did not write (it is kept)."""
    card = folder / CARD_NAME
    if not card.exists() or _own_card(card):
        return False
    warnings.warn(
        f"{card} was not written by sp_adapter (its front matter has no "
        f"'{CARD_MARKER}: true'), so it is kept and no model card was written; delete or "
        "move it to get the library's card",
        stacklevel=3,
    )
    return True


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
            ``overwrite=True``; then the library's own three files are replaced and every
            other file is left alone: a ``config.json`` or ``model.safetensors`` written by
            something else is refused, a ``README.md`` the user wrote is kept (with a
            warning) instead of the card.
        metrics: results to record in the config and the card, e.g. ``{"PSNR (GoPro)": 31.1}``.
        data: what the prior was trained on (a string, or JSON-ready data).
        overwrite: allow writing into a non-empty folder.
        repo_id: the Hub repository the card's usage example should name.
        model_card: write ``README.md`` (marked ``sp_adapter_card: true`` in its front
            matter, which is how a later save recognises it as the library's own).

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
    if model_card and not _keep_users_card(folder):
        card = model_card_text(config, repo_id or "<org>/<name>")
        write_atomic(folder / CARD_NAME, card.encode())
    return folder
