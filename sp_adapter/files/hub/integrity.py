"""File integrity of a saved prior: the SHA-256 that ``config.json`` records for the weights,
and, for a Hub download, the SHA-256 the Hub itself reports (its ETag of an LFS file)."""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

from sp_adapter.errors import PriorFileError

_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hub_sha256(cached_file: Path) -> str | None:
    """The Hub's SHA-256 of a file in the huggingface_hub cache, else ``None``.

    The cache stores each download as ``blobs/<ETag>`` and links ``snapshots/<commit>/<name>``
    to it; for an LFS file (safetensors weights are) the ETag is the content's SHA-256. A copy
    made without symlinks, or a file kept in git (ETag: a git hash), gives ``None``.
    """
    if not cached_file.is_symlink():
        return None
    blob = cached_file.resolve()
    return blob.name if blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name) else None


def check_digest(
    data: bytes, path: Path, *, recorded: str | None, server: str | None, config_name: str,
    remedy: str, allow_unchecked: bool = False,
) -> None:
    """Refuse ``data`` (the bytes of ``path``) unless it matches the SHA-256 the Hub reports
    (``server``) and the one ``config.json`` records (``recorded``). Where neither is known (a
    prior saved before the library recorded one), nothing proves the bytes are intact, so
    the file is refused unless the caller opts in with ``allow_unchecked=True`` (then it
    loads with one warning).

    Raises:
        PriorFileError: naming the file, both digests and ``remedy``; or, for a file that
            cannot be checked, naming it and ``allow_unchecked=True``.
    """
    actual = sha256_hex(data)
    if server is not None and actual != server:
        raise PriorFileError(
            f"{path} is corrupted or truncated: its SHA-256 is {actual[:16]}..., but the Hub's "
            f"(its ETag) is {server[:16]}...; {remedy}"
        )
    if recorded is not None and actual != recorded:
        raise PriorFileError(
            f"{path} is corrupted or truncated, or does not belong to its {config_name}: its "
            f"SHA-256 is {actual[:16]}..., but {config_name} records {recorded[:16]}...; {remedy}"
        )
    if recorded is None and server is None and not allow_unchecked:
        raise PriorFileError(
            f"{path} cannot be checked for corruption: its {config_name} records no SHA-256 "
            "(saved by an older sp_adapter), so damaged weights would load unnoticed; if you "
            "trust the file, pass allow_unchecked=True to from_pretrained / load_prior, then "
            "save the prior again with save_pretrained to record one"
        )
    if recorded is None and server is None:
        warnings.warn(
            f"{path} cannot be checked for corruption: its {config_name} records no SHA-256 "
            "(saved by an older sp_adapter); save the prior again to add one",
            stacklevel=4,
        )
