"""``config.json``: what a saved prior records to be rebuilt without the teacher's weights.

The file holds the backbone name, the levels (every :class:`Level` field, regions included),
the teacher's channels and reductions, the :class:`PriorConfig` (teacher spec and ablation
switches included), the strength, the SHA-256 of ``model.safetensors``, the library version
and a format version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sp_adapter.attach.levels import Level, Region
from sp_adapter.errors import PriorFileError
from sp_adapter.prior.config import PriorConfig
from sp_adapter.prior.semantic_prior import SemanticPrior, checked_strength

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_NAME = "sp_adapter.semantic_prior"
FORMAT_VERSION = 1
"""Bumped whenever ``config.json`` or the state dict layout changes incompatibly (an added
optional entry, such as ``sha256``, is not such a change: older readers ignore it)."""

DIGESTS_KEY = "sha256"
"""The ``config.json`` entry mapping each file of the prior to its SHA-256 (hex)."""


def library_version() -> str:
    from sp_adapter.version import __version__

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
    digests: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The content of ``config.json`` for ``prior``; ``digests`` maps file names to their
    SHA-256, checked when the prior is loaded."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library": "sp_adapter",
        "library_version": library_version(),
        "backbone": prior.backbone,
        "model_class": model_class,
        "levels": [level_to_dict(name, level) for name, level in prior.levels.items()],
        "channels": list(prior.channels),
        "reductions": list(prior.reductions),
        "config": prior.config.to_dict(),
        "strength": prior.strength,
        "data": data,
        "metrics": dict(metrics) if metrics else None,
        DIGESTS_KEY: dict(digests) if digests else None,
    }


def config_json(config: Mapping[str, Any]) -> bytes:
    """``config`` as the bytes written to ``config.json``."""
    return (json.dumps(config, indent=2) + "\n").encode()


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, refused (naming the file) unless it is one."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PriorFileError(f"cannot read {path}: {err}") from err
    if not isinstance(config, dict):
        raise PriorFileError(f"{path} does not hold a JSON object")
    return config


def check_format(config: Mapping[str, Any], where: Path) -> None:
    """Refuse a ``config.json`` not written by this library, or by a newer format."""
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
            f"({library_version()}) reads format_version <= {FORMAT_VERSION}: upgrade it "
            "with `pip install -U sp-adapter`"
        )


def recorded_digest(config: Mapping[str, Any], filename: str, where: Path) -> str | None:
    """The SHA-256 ``config.json`` records for ``filename``; ``None`` in files saved before
    the library recorded one."""
    digests = config.get(DIGESTS_KEY)
    if digests is None:
        return None
    value = digests.get(filename) if isinstance(digests, dict) else None
    if not (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value)):
        raise PriorFileError(
            f"{where}: its {DIGESTS_KEY!r} entry must map {filename!r} to a SHA-256 of 64 "
            f"lowercase hex digits, got {digests!r}; save the prior again"
        )
    return value


def prior_from_config(config: Mapping[str, Any], where: Path) -> SemanticPrior:
    """An untrained :class:`SemanticPrior` with the architecture ``config`` describes.

    A teacher-initialised student is rebuilt from the teacher's architecture only (no
    pretrained weights are fetched); its weights come from ``model.safetensors``.
    """
    check_format(config, where)
    required = ("config", "levels", "channels", "reductions", "backbone")
    missing = [name for name in required if name not in config]
    if missing:
        fields = ", ".join(repr(name) for name in missing)
        raise PriorFileError(
            f"{where} has no {fields} field{'s' if len(missing) > 1 else ''}, which every "
            "prior saved by sp_adapter.save_pretrained records (it was edited, or written by "
            "hand): save the prior again, or restore the file from where it came from"
        )
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
    from sp_adapter.prior.teacher import Teacher, build_feature_model

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
