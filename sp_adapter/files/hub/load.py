"""Read a saved prior from a local folder or a Hub repository, checking every file.

A string names a local folder only if that folder holds ``config.json`` (or the string is
plainly a path: ``./x``, ``/x``, ``~/x``, ``a/b/c``); otherwise it is a Hub repository id, so
an empty ``./org/name`` does not hide the repository ``org/name``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sp_adapter.attach.wrap import wrap
from sp_adapter.errors import OptionError, PriorFileError, PriorNotFoundError
from sp_adapter.files.hub.config import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_format,
    prior_from_config,
    read_config,
    recorded_digest,
)
from sp_adapter.files.hub.download import download_prior, repo_name
from sp_adapter.files.hub.integrity import check_digest, hub_sha256
from sp_adapter.prior.semantic_prior import SemanticPrior

PathLike = str | os.PathLike

_LOCAL_REMEDY = ("save the prior again with sp_adapter.save_pretrained, or copy it again from "
                 "where it came from")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise PriorFileError(f"cannot read {path}: {err}") from err


def _parse_weights(data: bytes, path: Path, remedy: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise PriorFileError(
            f"{path} is not a readable safetensors file ({err}): it is corrupted or truncated; "
            f"{remedy}"
        ) from err


def _load_state(prior: SemanticPrior, state: Mapping[str, torch.Tensor], where: Path) -> None:
    """Load ``state`` strictly, with an error that lists every key that does not fit."""
    expected = prior.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs prior {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise PriorFileError(
            f"{where} does not fit the prior described by {CONFIG_NAME}: "
            f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {shapes}"
        )
    prior.load_state_dict(dict(state), strict=True)


def _load(folder: Path, *, remedy: str, server_sha256: str | None = None,
          allow_unchecked: bool = False) -> SemanticPrior:
    """The prior in ``folder``; ``remedy`` ends the messages about corrupted files,
    ``server_sha256`` is the Hub's digest of the weights, where known, and
    ``allow_unchecked`` lets weights with no known digest load (with a warning)."""
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise PriorNotFoundError(
                f"{folder} has no {path.name}: it is not a prior saved with "
                "sp_adapter.save_pretrained (only config.json + model.safetensors are read)"
            )
    config = read_config(config_path)
    check_format(config, config_path)
    data = _read_bytes(weights_path)
    check_digest(data, weights_path, recorded=recorded_digest(config, WEIGHTS_NAME, config_path),
                 server=server_sha256, config_name=CONFIG_NAME, remedy=remedy,
                 allow_unchecked=allow_unchecked)
    state = _parse_weights(data, weights_path, remedy)
    prior = prior_from_config(config, config_path)
    _load_state(prior, state, weights_path)
    return prior.eval()


def load_folder(folder: PathLike, *, allow_unchecked: bool = False) -> SemanticPrior:
    """The prior saved in a local ``folder`` (as written by :func:`save_pretrained`); the
    weights must match the SHA-256 its ``config.json`` records (one that records none is
    refused unless ``allow_unchecked=True``)."""
    return _load(Path(folder), remedy=_LOCAL_REMEDY, allow_unchecked=allow_unchecked)


def _is_plain_path(text: str) -> bool:
    """Written as a path (``./x``, ``/x``, ``~/x``, ``C:\\x``, ``a/b/c``), never a repo id."""
    return (text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or "\\" in text
            or os.path.isabs(text))


def _local_folder(folder: Path, revision: str | None, allow_unchecked: bool) -> SemanticPrior:
    if revision is not None:
        raise OptionError(
            f"revision={revision!r} applies to Hub repositories, but {folder} is a local folder"
            + (f" holding a prior ({CONFIG_NAME}), which is loaded before a Hub repository of "
               "the same name: drop revision, or run from another folder"
               if (folder / CONFIG_NAME).is_file() else "")
        )
    if not folder.is_dir():
        raise PriorNotFoundError(f"the prior folder {folder} does not exist")
    return load_folder(folder, allow_unchecked=allow_unchecked)


def from_pretrained(
    repo_id_or_folder: PathLike,
    *,
    model: nn.Module | None = None,
    teacher: Any = None,
    **load_options: Any,
) -> Any:
    """A trained :class:`SemanticPrior` from a local folder or a Hub repository
    (:func:`load_prior`); with ``model``, that network wrapped with it.

    Args:
        repo_id_or_folder, load_options: what :func:`load_prior` takes (``revision``,
            ``cache_dir``, ``token``, ``force_download``, ``local_files_only``,
            ``endpoint``, ``allow_unchecked``).
        model: the network the prior was trained for: it is wrapped with the prior
            (``sp_adapter.wrap(model, prior=prior, teacher=teacher)``) and returned.
        teacher: with ``model``, the teacher to train further (``None``: inference).

    Example::

        model = sp_adapter.from_pretrained("org/unet-prior", revision="v1", model=UNet())
    """
    prior = load_prior(repo_id_or_folder, **load_options)
    return prior if model is None else wrap(model, prior=prior, teacher=teacher)


def load_prior(
    repo_id_or_folder: PathLike,
    *,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    endpoint: str | None = None,
    allow_unchecked: bool = False,
) -> SemanticPrior:
    """The :class:`SemanticPrior` saved in a folder or a Hub repository.

    Args:
        repo_id_or_folder: a folder written by :func:`save_pretrained` (a ``Path`` is always
            a folder; a string is one if it holds ``config.json`` or reads as a path), or a
            Hub repository id ``"org/name"``.
        revision: branch, tag or commit hash on the Hub (pins the download).
        cache_dir, token, force_download, local_files_only, endpoint: passed to
            ``huggingface_hub``; ``HF_HUB_OFFLINE=1`` is respected (cache only).
        allow_unchecked: load weights that nothing can check (a ``config.json`` saved
            before the library recorded a SHA-256, and no digest from the Hub). Off by
            default: such files are refused, since flipped bytes would load unnoticed.

    Returns:
        The prior in eval mode, on the CPU (the teacher's pretrained weights are not
        needed).

    Raises:
        PriorNotFoundError: no such folder / repository / revision, or offline (or the Hub
            unreachable) with nothing cached; the message says what was tried.
        PriorFileError: unreadable or corrupted files (the weights' SHA-256 differs from the
            one ``config.json`` records, or from the Hub's), weights that cannot be checked
            (no SHA-256 recorded nor reported) without ``allow_unchecked=True``, a newer
            format, or weights that do not fit the config (missing and unexpected keys are
            listed).

    Warns:
        UserWarning: weights loaded unchecked (``allow_unchecked=True``); or a local folder
            of the repository id's name holds no prior, so the Hub repository was loaded
            instead.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if isinstance(repo_id_or_folder, os.PathLike) or _is_plain_path(str(repo_id_or_folder)):
        return _local_folder(Path(repo_id_or_folder).expanduser(), revision, allow_unchecked)
    text = str(repo_id_or_folder)
    folder = Path(text).expanduser()
    if (folder / CONFIG_NAME).is_file():
        return _local_folder(folder, revision, allow_unchecked)
    try:
        validate_repo_id(text)
    except HFValidationError as err:
        if folder.is_dir():
            return load_folder(folder, allow_unchecked=allow_unchecked)  # says: no config.json
        raise PriorNotFoundError(
            f"{text!r} is neither an existing folder nor a valid Hub repository id "
            f"('org/name'): {err}"
        ) from err
    if folder.is_dir():
        local = f"the local folder {folder} holds no {CONFIG_NAME} (it is not a saved prior)"
    else:
        local = f"there is no folder {text!r} in {Path.cwd()}"
    try:
        snapshot = download_prior(
            text, revision=revision, cache_dir=cache_dir, token=token,
            force_download=force_download, local_files_only=local_files_only, endpoint=endpoint,
        )
    except PriorNotFoundError as err:
        raise PriorNotFoundError(f"{local}, and as a Hub repository: {err}") from err
    if folder.is_dir():
        warnings.warn(f"{local}: loaded the Hub repository {text!r} instead", stacklevel=2)
    fix = f"revision={revision!r}, " if revision else ""
    remedy = (f"download it again with sp_adapter.from_pretrained({text!r}, {fix}"
              "force_download=True); if it still differs, the files of "
              f"{repo_name(text, revision)} do not belong together: push the prior again (or "
              "ask its owner to)")
    return _load(snapshot, remedy=remedy, server_sha256=hub_sha256(snapshot / WEIGHTS_NAME),
                 allow_unchecked=allow_unchecked)

