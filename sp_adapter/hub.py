"""Save, load and share a trained semantic prior: ``config.json`` + ``model.safetensors``.

A saved prior is a folder (or a Hugging Face Hub repository) with three files:

* ``config.json``: everything needed to rebuild the :class:`SemanticPrior` without the
  teacher's pretrained weights: the backbone name, the levels (every :class:`Level` field,
  regions included), the teacher's channels and reductions, the :class:`PriorConfig`
  (teacher spec and ablation switches included), the library version and a format version;
* ``model.safetensors``: the prior's state dict (student, CLC, MLA/SAT; never the backbone,
  never the teacher). Only safetensors is read, never pickle;
* ``README.md``: a model card.

The functions here are plain functions on top of ``huggingface_hub`` downloads and
``HfApi`` uploads rather than ``PyTorchModelHubMixin``: the mixin rebuilds a model from its
constructor arguments, but :class:`SemanticPrior` takes a :class:`Teacher` module and nested
dataclasses, and loading needs checks (format version, file integrity, key lists) and error
messages of its own. ``wrap(model, prior="org/repo")`` loads through :func:`from_pretrained`
and checks with :func:`check_prior_fits` that the prior belongs to the model.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import write_atomic
from .config import PriorConfig
from .errors import IncompatiblePriorError, PriorFileError, PriorNotFoundError
from .levels import BackboneMap, Level, Region, find_module
from .prior import SemanticPrior, checked_strength

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_NAME = "sp_adapter.semantic_prior"
FORMAT_VERSION = 1
"""Bumped whenever ``config.json`` or the state dict layout changes incompatibly."""

_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")

PathLike = str | os.PathLike


# -- the config ------------------------------------------------------------------------


def _library_version() -> str:
    from . import __version__

    return __version__


def level_to_dict(name: str, level: Level) -> dict[str, Any]:
    """A JSON-ready description of one level, its name first."""
    return {
        "name": name,
        "site": level.site,
        "channels": level.channels,
        "skip": level.skip,
        "on_input": level.on_input,
        "prior_level": level.prior_level,
        "regions": [
            {"top": r.top, "left": r.left, "height": r.height, "width": r.width}
            for r in level.regions
        ],
        "reduction": level.reduction,
    }


def level_from_dict(data: Mapping[str, Any]) -> tuple[str, Level]:
    """Inverse of :func:`level_to_dict`."""
    fields = dict(data)
    name = fields.pop("name")
    fields["regions"] = tuple(Region(**r) for r in fields.get("regions", ()))
    return name, Level(**fields)


def prior_config_dict(
    prior: SemanticPrior,
    *,
    model_class: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    data: Any = None,
) -> dict[str, Any]:
    """The content of ``config.json`` for ``prior``."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library": "sp_adapter",
        "library_version": _library_version(),
        "backbone": prior.backbone,
        "model_class": model_class,
        "levels": [level_to_dict(name, level) for name, level in prior.levels.items()],
        "channels": list(prior.channels),
        "reductions": list(prior.reductions),
        "config": prior.config.to_dict(),
        "strength": prior.strength,
        "data": data,
        "metrics": dict(metrics) if metrics else None,
    }


def _check_format(config: Mapping[str, Any], where: Path) -> None:
    if config.get("format") != FORMAT_NAME:
        raise PriorFileError(
            f"{where} is not a semantic prior saved by sp_adapter (its 'format' is "
            f"{config.get('format')!r}, expected {FORMAT_NAME!r})"
        )
    version = config.get("format_version")
    if not isinstance(version, int):
        raise PriorFileError(f"{where} has no integer 'format_version' (got {version!r})")
    if version > FORMAT_VERSION:
        raise PriorFileError(
            f"{where} has format_version {version} (written by sp_adapter "
            f"{config.get('library_version', '?')}), but this sp_adapter "
            f"({_library_version()}) reads format_version <= {FORMAT_VERSION}: upgrade it "
            "with `pip install -U sp-adapter`"
        )


def prior_from_config(config: Mapping[str, Any], where: Path) -> SemanticPrior:
    """An untrained :class:`SemanticPrior` with the architecture ``config`` describes.

    A teacher-initialised student is rebuilt from the teacher's architecture only (no
    pretrained weights are fetched); its weights come from ``model.safetensors``.
    """
    _check_format(config, where)
    try:
        prior_config = PriorConfig.from_dict(config["config"])
        levels = dict(level_from_dict(item) for item in config["levels"])
        channels, reductions = list(config["channels"]), list(config["reductions"])
        backbone = config["backbone"]
        strength = checked_strength(config.get("strength", 1.0))  # older files: 1
    except (KeyError, TypeError, ValueError) as err:
        raise PriorFileError(f"{where} does not describe a valid prior: {err!r}") from err
    teacher = _empty_teacher(prior_config, channels, reductions, where)
    prior = SemanticPrior(prior_config, levels, channels, reductions, backbone=backbone,
                          teacher=teacher)
    prior.strength = strength
    return prior


def _empty_teacher(config: PriorConfig, channels: list[int], reductions: list[int], where: Path):
    """The teacher's architecture without pretrained weights, for a teacher-initialised
    student (``None`` for a small student, which does not need it)."""
    if config.student != "teacher":
        return None
    from .teacher import Teacher, build_feature_model

    spec = config.teacher
    try:
        features = build_feature_model(spec, pretrained=False)
    except Exception as err:  # timm raises RuntimeError/KeyError for unknown names
        raise PriorFileError(
            f"{where}: cannot rebuild the student from the teacher architecture "
            f"{spec.arch!r} with out_indices {list(spec.out_indices)}: {err}"
        ) from err
    teacher = Teacher(features, spec.mean, spec.std, name=spec.arch)
    if teacher.channels != channels or teacher.reductions != reductions:
        raise PriorFileError(
            f"{where}: the teacher architecture {spec.arch!r} now gives channels "
            f"{teacher.channels} at reductions {teacher.reductions}, but the prior was saved "
            f"with {channels} at {reductions} (a different timm version?)"
        )
    return teacher


# -- writing ---------------------------------------------------------------------------


def _prior_and_class(prior_or_model: nn.Module) -> tuple[SemanticPrior, str | None]:
    """The prior to save and, for a wrapped model, the class name of the network."""
    if isinstance(prior_or_model, SemanticPrior):
        return prior_or_model, None
    from .wrap import base_model, get_prior

    return get_prior(prior_or_model), type(base_model(prior_or_model)).__name__


def _weights_bytes(prior: SemanticPrior) -> bytes:
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in prior.state_dict().items()}
    return save(state, metadata={"format": "pt", "sp_adapter_format_version": str(FORMAT_VERSION)})


def _check_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(
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
        The folder. Each file is written atomically (temporary file, then rename).
    """
    prior, model_class = _prior_and_class(prior_or_model)
    folder = Path(folder).expanduser()
    _check_folder(folder, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    config = prior_config_dict(prior, model_class=model_class, metrics=metrics, data=data)
    write_atomic(folder / WEIGHTS_NAME, _weights_bytes(prior))
    write_atomic(folder / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
    if model_card:
        card = model_card_text(config, repo_id or "<org>/<name>")
        write_atomic(folder / CARD_NAME, card.encode())
    return folder


# -- the model card --------------------------------------------------------------------


def _levels_table(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [
        "| level | site (f_de) | skip (f_en) | channels | join | prior level | regions |",
        "|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        join = "input of site" if lv["on_input"] else "output of site"
        rows.append(
            f"| {lv['name']} | `{lv['site']}` | {'`' + lv['skip'] + '`' if lv['skip'] else '-'} "
            f"| {lv['channels']} | {join} | {lv['prior_level']} | {len(lv['regions']) or '-'} |"
        )
    return rows


def _strength_lines(strength: float) -> list[str]:
    if strength == 1.0:
        return []
    return [f"- Strength: {strength:g} (each embedding's change scaled by it, chosen on "
            "held-out images; `wrap` restores it, `sp_adapter.set_prior_strength(model, 1)` "
            "gives the prior as trained)"]


def _metrics_lines(metrics: Mapping[str, Any] | None) -> list[str]:
    if not metrics:
        return ["No metrics were recorded with this prior."]
    return ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in metrics.items()]


def _data_lines(data: Any) -> list[str]:
    if data is None:
        return ["Not recorded."]
    if isinstance(data, str):
        return [data]
    return ["```json", json.dumps(data, indent=2), "```"]


def model_card_text(config: Mapping[str, Any], repo_id: str) -> str:
    """A ``README.md`` for a saved prior, from its ``config.json`` content."""
    prior = config["config"]
    teacher = prior["teacher"]
    backbone = config["backbone"]
    switches = ", ".join(
        f"{k}={prior[k]}" for k in ("student", "hcl", "clc", "mla", "fusion", "pool_sizes")
    )
    lines = [
        "---",
        "tags:",
        "- sp_adapter",
        "- image-deblurring",
        "- semantic-prior",
        "pipeline_tag: image-to-image",
        "---",
        "",
        f"# Semantic prior for {backbone}",
        "",
        "A learned semantic prior (\"Take a Prior from Other Tasks\", arXiv 2302.06898) that "
        f"plugs into a **{backbone}** deblurring network through forward hooks. This "
        "repository holds only the prior (student, cross-level connection and the per-level "
        "embeddings), not the deblurring network's weights.",
        "",
        "## Usage",
        "",
        "```python",
        "import sp_adapter",
        "",
        f"model = ...  # your {backbone}, with its trained weights",
        f'model = sp_adapter.wrap(model, prior="{repo_id}", teacher=None)  # inference',
        "restored = model(blurry)  # B x 3 x H x W in [0, 1]",
        "```",
        "",
        "Pass a teacher (e.g. `teacher=sp_adapter.TeacherSpec(...)`) instead of `None` to "
        "train the prior further with `sp_adapter.prior_loss`. The prior refuses to attach "
        f"to a network other than {backbone} or to one whose levels differ.",
        "",
        "## Prior",
        "",
        f"- Backbone: {backbone}" + (f" (class `{config['model_class']}`)"
                                     if config.get("model_class") else ""),
        f"- Teacher: `{teacher['arch']}`, weights `{teacher['weights']}`, feature levels "
        f"{teacher['out_indices']} (channels {config['channels']}, reductions "
        f"{config['reductions']}), input mean {teacher['mean']} / std {teacher['std']}",
        f"- Options: {switches}",
        *_strength_lines(config.get("strength", 1.0)),
        "",
        *_levels_table(config["levels"]),
        "",
        "## Training data",
        "",
        *_data_lines(config.get("data")),
        "",
        "## Metrics",
        "",
        *_metrics_lines(config.get("metrics")),
        "",
        f"Saved with sp_adapter {config['library_version']} (format version "
        f"{config['format_version']}).",
        "",
    ]
    return "\n".join(lines)


# -- reading ---------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PriorFileError(f"cannot read {path}: {err}") from err
    if not isinstance(config, dict):
        raise PriorFileError(f"{path} does not hold a JSON object")
    return config


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise PriorFileError(
            f"{path} is not a readable safetensors file ({err}): it is corrupted or truncated. "
            "Save the prior again, or download it again with force_download=True"
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


def load_folder(folder: PathLike) -> SemanticPrior:
    """The prior saved in a local ``folder`` (as written by :func:`save_pretrained`)."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise PriorNotFoundError(
                f"{folder} has no {path.name}: it is not a prior saved with "
                "sp_adapter.save_pretrained (only config.json + model.safetensors are read)"
            )
    prior = prior_from_config(_read_config(config_path), config_path)
    _load_state(prior, _read_weights(weights_path), weights_path)
    return prior.eval()


def _is_local_path(source: PathLike) -> bool:
    """A folder path rather than a Hub repository id (``name`` or ``org/name``)."""
    if isinstance(source, os.PathLike):
        return True
    text = str(source)
    if Path(text).expanduser().is_dir():
        return True
    return (
        text.startswith((".", "/", "~", "\\"))
        or text.count("/") > 1
        or "\\" in text
        or os.path.isabs(text)
    )


def _where(repo_id: str, revision: str | None) -> str:
    return f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")


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

    Hub errors become :class:`PriorNotFoundError` naming the repository and revision.
    """
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = _where(repo_id, revision)
    kwargs = dict(cache_dir=cache_dir, token=token, force_download=force_download,
                  local_files_only=local_files_only, endpoint=endpoint)
    try:
        return _download(repo_id, revision, **kwargs).parent
    except HFValidationError as err:
        raise PriorNotFoundError(
            f"{repo_id!r} is neither an existing folder nor a valid Hub repository id "
            f"('org/name'): {err}"
        ) from err
    except RepositoryNotFoundError as err:
        raise PriorNotFoundError(
            f"the prior repository {where} was not found on the Hub (or it is private or gated "
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
            f"cannot download the prior {where} and it is not in the local cache: the Hub is "
            "unreachable or downloads are disabled (HF_HUB_OFFLINE=1 or local_files_only=True). "
            "Connect and unset HF_HUB_OFFLINE, download it once while online, or give a local "
            f"folder ({err})"
        ) from err
    except EntryNotFoundError as err:
        raise PriorNotFoundError(
            f"the repository {where} has no {CONFIG_NAME} / {WEIGHTS_NAME}: it is not a prior "
            "saved with sp_adapter.save_pretrained or sp_adapter.push_to_hub"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise PriorNotFoundError(f"cannot download the prior {where}: {err}") from err


def from_pretrained(
    repo_id_or_folder: PathLike,
    *,
    revision: str | None = None,
    cache_dir: PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    endpoint: str | None = None,
) -> SemanticPrior:
    """A trained :class:`SemanticPrior` from a local folder or a Hub repository.

    Args:
        repo_id_or_folder: a folder written by :func:`save_pretrained`, or ``"org/name"``.
        revision: branch, tag or commit hash on the Hub (pins the download).
        cache_dir, token, force_download, local_files_only, endpoint: passed to
            ``huggingface_hub``; ``HF_HUB_OFFLINE=1`` is respected (cache only).

    Returns:
        The prior in eval mode, on the CPU. The teacher's pretrained weights are not needed.

    Raises:
        PriorNotFoundError: no such folder / repository / revision, or offline with
            nothing cached.
        PriorFileError: unreadable or corrupted files, a newer format, or weights that do
            not fit the config (missing and unexpected keys are listed).
    """
    if _is_local_path(repo_id_or_folder):
        folder = Path(repo_id_or_folder).expanduser()
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub repositories, not {folder}")
        if not folder.is_dir():
            raise PriorNotFoundError(f"the prior folder {folder} does not exist")
        return load_folder(folder)
    repo_id = str(repo_id_or_folder)
    snapshot = download_prior(
        repo_id, revision=revision, cache_dir=cache_dir, token=token,
        force_download=force_download, local_files_only=local_files_only, endpoint=endpoint,
    )
    return load_folder(snapshot)


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
    """
    from huggingface_hub import HfApi

    prior, _ = _prior_and_class(prior_or_model)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None and not revision.startswith("refs/"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    message = commit_message or f"Upload semantic prior for {prior.backbone}"
    with tempfile.TemporaryDirectory(prefix="sp_prior_") as tmp:
        save_pretrained(prior_or_model, tmp, metrics=metrics, data=data, overwrite=True,
                        repo_id=repo_id)
        return api.upload_folder(
            repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=message,
            create_pr=create_pr, repo_type="model",
        )


# -- does a prior fit a network? -------------------------------------------------------


def describe_levels(levels: Mapping[str, Level]) -> str:
    """``level1: up1 + enc1, 16 ch; ...``: how the error messages name a prior's levels."""
    return "; ".join(
        f"{name}: {lv.site}{' + ' + lv.skip if lv.skip else ''}{' (input)' if lv.on_input else ''}"
        f", {lv.channels} ch"
        for name, lv in levels.items()
    )


def _declared_channels(module: nn.Module, on_input: bool) -> int | None:
    """Channels a module declares (conv ``in/out_channels``, norm ``num_features``)."""
    names = ("in_channels", "num_features") if on_input else ("out_channels", "num_features")
    for attr in names:
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return None


def _expected_channels(level: Level, model: nn.Module, backbone: BackboneMap | None) -> int | None:
    """What the model has at ``level.site``: the level map's channels for that site, else
    what the module declares, else ``None`` (then the first forward checks)."""
    if backbone is not None:
        for known in backbone.levels.values():
            if known.site == level.site and known.on_input == level.on_input:
                return known.channels
    return _declared_channels(model.get_submodule(level.site), level.on_input)


def check_prior_fits(prior: SemanticPrior, model: nn.Module, backbone: BackboneMap | None) -> None:
    """Refuse a prior trained for another backbone, or whose levels' modules or channels
    do not exist in ``model`` (the network inside any wrappers)."""
    model_name = type(model).__name__
    model_backbone = backbone.name if backbone is not None else None
    head = (
        f"this prior was trained for {prior.backbone} levels [{describe_levels(prior.levels)}], "
        f"the model is {model_name}"
    )
    if prior.backbone != "custom" and prior.backbone != model_backbone:
        known = f"its level map is {model_backbone!r}" if model_backbone else "it has no level map"
        raise IncompatiblePriorError(
            f"{head} ({known}): load a prior trained for this network, or train one with "
            "sp_adapter.wrap(model)"
        )
    for name, level in prior.levels.items():
        for module_name, what in ((level.site, "site"), (level.skip, "skip")):
            if module_name is None:
                continue
            try:
                find_module(model, module_name, f"level {name!r}: {what}")
            except ValueError as err:
                raise IncompatiblePriorError(f"{head}: {err}") from None
        expected = _expected_channels(level, model, backbone)
        if expected is not None and expected != level.channels:
            raise IncompatiblePriorError(
                f"{head}: level {name!r} ({level.site!r}) has {level.channels} channels in the "
                f"prior but {expected} in the model (a {model_name} of another width?)"
            )


def check_teacher_fits(prior: SemanticPrior, teacher: nn.Module | None) -> None:
    """Refuse a teacher whose features differ from the ones the prior was trained on."""
    if teacher is None:
        return
    channels, reductions = list(teacher.channels), list(teacher.reductions)
    if channels != prior.channels or reductions != prior.reductions:
        spec = prior.config.teacher
        raise IncompatiblePriorError(
            f"the teacher gives channels {channels} at reductions {reductions}, but the prior "
            f"was trained on {spec.arch!r} features with channels {prior.channels} at "
            f"reductions {prior.reductions}: use that teacher (TeacherSpec(arch={spec.arch!r}, "
            f"out_indices={tuple(spec.out_indices)})) or teacher=None for inference"
        )
