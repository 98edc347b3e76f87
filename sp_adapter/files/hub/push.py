"""Upload a prior (config, weights, model card) to a Hugging Face Hub repository in one
commit; every failure becomes a :class:`HubError` saying what failed and what to do."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import Any

from torch import nn

from sp_adapter.errors import HubError
from sp_adapter.files.hub.download import is_network_error
from sp_adapter.files.hub.save import prior_and_class, save_pretrained


def _offline_error(repo_id: str) -> HubError:
    return HubError(f"cannot push the prior to {repo_id!r}: uploads are disabled "
                    "(HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE and connect, or save it locally "
                    "with sp_adapter.save_pretrained and push it later")


def _push_error(err: Exception, repo_id: str, endpoint: str) -> HubError | None:
    """The library's error for a failed upload step, or ``None`` if ``err`` is not one."""
    from huggingface_hub.utils import (
        HfHubHTTPError,
        HFValidationError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    head = f"cannot push the prior to {repo_id!r}"
    if isinstance(err, OfflineModeIsEnabled):
        return _offline_error(repo_id)
    if isinstance(err, HFValidationError):
        return HubError(f"{head}: it is not a valid Hub repository id ('org/name'): {err}")
    if isinstance(err, LocalTokenNotFoundError):
        return HubError(f"{head}: no Hugging Face token; log in with `hf auth login`, set "
                        "HF_TOKEN, or pass token=...")
    if isinstance(err, RepositoryNotFoundError):
        return HubError(f"{head}: the repository is not visible with this token; check the "
                        "repository id and that the token may write to it")
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            what = "the token is not valid or may not write there; pass a token with write access"
        elif status is not None and status >= 500:
            what = f"the Hub answered with server error {status}; try again later"
        else:
            what = f"the Hub refused the upload ({status})"
        return HubError(f"{head}: {what} ({err})")
    if is_network_error(err):
        return HubError(f"{head}: cannot reach the Hub at {endpoint} ({type(err).__name__}: "
                        f"{err}); check the connection (or HF_ENDPOINT) and try again")
    return None


def push_to_hub(
    prior_or_model: nn.Module,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    metrics: Mapping[str, Any] | None = None,
    data: Any = None,
    endpoint: str | None = None,
):
    """Upload a prior (config, weights, model card) to a Hub repository in one commit.

    Args:
        prior_or_model: a wrapped model or a :class:`SemanticPrior`.
        repo_id: ``"org/name"``; created (as a model repository) if it does not exist.
        revision: the branch to commit to (created from the default branch if needed);
            default: the default branch.
        private: visibility of a newly created repository.
        token, endpoint: passed to ``huggingface_hub.HfApi``.
        commit_message: default ``"Upload semantic prior for <backbone>"``.
        create_pr: open a pull request instead of committing to the branch.
        metrics, data: recorded in the config and the model card.

    Returns:
        ``huggingface_hub.CommitInfo`` of the commit.

    Raises:
        HubError: uploads disabled (``HF_HUB_OFFLINE=1``), no or a refused token, an invalid
            repository id, the Hub unreachable or failing.
    """
    from huggingface_hub import HfApi, constants

    prior, _ = prior_and_class(prior_or_model)
    if constants.HF_HUB_OFFLINE:
        raise _offline_error(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"Upload semantic prior for {prior.backbone}"
    with tempfile.TemporaryDirectory(prefix="sp_prior_") as tmp:
        save_pretrained(prior_or_model, tmp, metrics=metrics, data=data, overwrite=True,
                        repo_id=repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision is not None and not revision.startswith("refs/"):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=message,
                create_pr=create_pr, repo_type="model",
            )
        except Exception as err:
            wrapped = _push_error(err, repo_id, api.endpoint)
            if wrapped is None:
                raise
            raise wrapped from err
