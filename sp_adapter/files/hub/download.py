"""Fetch a prior's files from the Hugging Face Hub into the huggingface_hub cache.

Every failure becomes a :class:`PriorNotFoundError` naming the repository and revision and
saying what to do. With nothing cached, one metadata request without retries comes first, so
an unreachable Hub fails within seconds instead of after huggingface_hub's retries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sp_adapter.errors import PriorFileError, PriorNotFoundError
from sp_adapter.files.hub.config import CONFIG_NAME, WEIGHTS_NAME

PathLike = str | os.PathLike

_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")

_HTTP_CLIENTS = ("httpx", "httpx2", "requests", "urllib3")
"""Packages whose errors mean the Hub could not be reached (huggingface_hub's HTTP client:
httpx2 in 2.x, requests before)."""


class _Unreachable(Exception):
    """The Hub did not answer (connection refused, no DNS, timeout) or answered with a server
    error; the message says which."""


def is_network_error(err: BaseException) -> bool:
    """True for the HTTP client's connection and timeout errors."""
    return (isinstance(err, (ConnectionError, TimeoutError))
            or type(err).__module__.split(".")[0] in _HTTP_CLIENTS)


def repo_name(repo_id: str, revision: str | None) -> str:
    """How messages name a repository (and its revision)."""
    return f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return endpoint or constants.ENDPOINT


def _is_cached(repo_id: str, revision: str | None, cache_dir: PathLike | None) -> bool:
    """Both files of ``revision`` are in the cache (then a failed request falls back to them
    at once, without huggingface_hub's retries)."""
    from huggingface_hub import try_to_load_from_cache

    return all(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision),
                   str)
        for name in (CONFIG_NAME, WEIGHTS_NAME)
    )


def _probe(repo_id: str, revision: str | None, token: str | bool | None,
           endpoint: str | None) -> None:
    """One request for the config's metadata, without retries: raises the Hub's own error
    (no such repository, revision or file) or :class:`_Unreachable`."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import HfHubHTTPError

    url = hf_hub_url(repo_id, CONFIG_NAME, revision=revision, endpoint=endpoint)
    try:
        get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status is not None and status >= 500:
            raise _Unreachable(f"the Hub at {_endpoint(endpoint)} answered with server error "
                               f"{status}") from err
        raise
    except Exception as err:
        if is_network_error(err):
            raise _Unreachable(f"cannot reach the Hub at {_endpoint(endpoint)} "
                               f"({type(err).__name__}: {err})") from err
        raise


def _download(repo_id: str, revision: str | None, **kwargs: Any) -> Path:
    """Download config and weights of one commit into the cache; returns the config path."""
    from huggingface_hub import hf_hub_download

    config_path = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision, **kwargs))
    # The cache keeps each commit in snapshots/<commit hash>/: fetch the weights of that
    # same commit, even if the branch moves between the two downloads.
    commit = config_path.parent.name
    pinned = commit if _COMMIT_HASH.fullmatch(commit) else revision
    weights_path = Path(hf_hub_download(repo_id, WEIGHTS_NAME, revision=pinned, **kwargs))
    if weights_path.parent != config_path.parent:
        raise PriorFileError(f"{repo_id!r}: config and weights come from different commits")
    return config_path


def download_prior(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    endpoint: str | None = None,
) -> Path:
    """Download (or find in the cache) a prior's files; returns the local snapshot folder.

    Raises:
        PriorNotFoundError: no such repository, revision or file, an invalid repository id,
            or the Hub unreachable (or downloads disabled) with nothing cached.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        validate_repo_id,
    )

    named = repo_name(repo_id, revision)
    kwargs = dict(cache_dir=cache_dir, token=token, force_download=force_download,
                  local_files_only=local_files_only, endpoint=endpoint)
    offline = local_files_only or constants.HF_HUB_OFFLINE
    if offline and force_download:
        raise PriorNotFoundError(
            f"force_download=True needs the Hub, but downloads of {named} are disabled "
            "(HF_HUB_OFFLINE=1 or local_files_only=True): drop force_download, or connect and "
            "unset HF_HUB_OFFLINE"
        )
    try:
        validate_repo_id(repo_id)
        if not offline and (force_download or not _is_cached(repo_id, revision, cache_dir)):
            _probe(repo_id, revision, token, endpoint)
        return _download(repo_id, revision, **kwargs).parent
    except HFValidationError as err:
        raise PriorNotFoundError(
            f"{repo_id!r} is neither an existing folder nor a valid Hub repository id "
            f"('org/name'): {err}"
        ) from err
    except _Unreachable as err:
        raise PriorNotFoundError(
            f"{err}, so the prior {named} cannot be downloaded, and it is not in the local "
            "cache: check the connection (or HF_ENDPOINT) and try again, or give a local folder"
        ) from err
    except RepositoryNotFoundError as err:
        raise PriorNotFoundError(
            f"the prior repository {named} was not found on the Hub (or it is private or gated "
            "and no valid token was given): check the repository id, pass token=..., or give "
            "a local folder"
        ) from err
    except RevisionNotFoundError as err:
        raise PriorNotFoundError(
            f"the prior repository {repo_id!r} has no revision {revision!r}: give an existing "
            "branch, tag or commit hash"
        ) from err
    except LocalEntryNotFoundError as err:
        raise PriorNotFoundError(
            f"cannot download the prior {named} and it is not in the local cache: the Hub is "
            "unreachable or downloads are disabled (HF_HUB_OFFLINE=1 or local_files_only=True). "
            "Connect and unset HF_HUB_OFFLINE, download it once while online, or give a local "
            f"folder ({err})"
        ) from err
    except EntryNotFoundError as err:
        raise PriorNotFoundError(
            f"the repository {named} has no {CONFIG_NAME} / {WEIGHTS_NAME}: it is not a prior "
            "saved with sp_adapter.save_pretrained or sp_adapter.push_to_hub"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise PriorNotFoundError(f"cannot download the prior {named}: {err}") from err
