"""Load published backbone checkpoints into this project's twins, safely and strictly.

Files are read with ``torch.load(..., weights_only=True, map_location="cpu")`` (never an
unrestricted unpickler) or, for ``.safetensors``, with safetensors. The published wrappers
are recognised by :func:`unwrap_checkpoint`:

=============================  ==========================================================
wrapper key                    published by
=============================  ==========================================================
``params_ema`` / ``params``    BasicSR-style training (``params_ema`` preferred, see below)
``model_state_dict``           MSSNet (next to ``optimizer_state_dict``, ``epoch``)
``state_dict``                 MPRNet (keys usually carry a ``module.`` prefix)
``model``                      MIMO-UNet / MIMO-UNet+ ``.pkl``
``G``                          DeepDeblur-PyTorch (next to ``D`` when trained adversarially)
(none)                         a bare state dict
=============================  ==========================================================

When several wrapper keys are present the first in the table wins; ``key=`` chooses
explicitly. BasicSR saves both ``params`` (the trained network) and ``params_ema`` (its
exponential moving average) when EMA is on, and evaluates with the EMA network, so the
published numbers come from ``params_ema``: it is preferred.

A ``module.`` prefix (``DataParallel``) is removed when every key has it (and, in
:func:`load_backbone_checkpoint`, the model's own keys do not).

Checkpoints saved after :func:`sp_adapter.wrap` hold the prior's tensors under
``sp_prior.`` next to the backbone's: :func:`load_backbone_checkpoint` loads them into a
wrapped model's prior, and splits them off (reporting them) for a bare network; a wrapped
model given a checkpoint saved before ``wrap`` loads its backbone and keeps its prior.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from sp_adapter.attach.state import prior_of
from sp_adapter.errors import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
)
from sp_adapter.files.state_dict import PRIOR_PREFIX, split_state_dict

WRAPPER_KEYS: tuple[str, ...] = (
    "params_ema",
    "params",
    "model_state_dict",
    "state_dict",
    "model",
    "G",
)
"""Keys under which published checkpoints keep the state dict, in order of preference."""

MODULE_PREFIX = "module."
MAX_LISTED = 10
"""How many keys an error message lists per category before summarising the rest."""

ModelT = TypeVar("ModelT", bound=nn.Module)


class CheckpointMismatchError(CheckpointError):
    """State dict keys or shapes do not match the model.

    Attributes ``missing``, ``unexpected`` (key lists) and ``shape_mismatches`` (tuples
    ``(key, expected_shape, checkpoint_shape)``) hold the full lists; the message lists at
    most :data:`MAX_LISTED` of each, with counts.
    """

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        model_name: str = "model",
    ) -> None:
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatches = shape_mismatches
        lines = [f"checkpoint does not match {model_name}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_short_list(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_short_list(unexpected)}")
        if shape_mismatches:
            shown = [
                f"{k} (expected {list(exp)}, got {list(got)})"
                for k, exp, got in shape_mismatches[:MAX_LISTED]
            ]
            more = len(shape_mismatches) - len(shown)
            tail = f", ... and {more} more" if more > 0 else ""
            lines.append(f"  shape mismatches ({len(shape_mismatches)}): {', '.join(shown)}{tail}")
        super().__init__("\n".join(lines))


def _short_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    more = len(keys) - MAX_LISTED
    return f"{shown}, ... and {more} more" if more > 0 else shown


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [repr(k) for k in list(obj)[:MAX_LISTED]]
        more = f", ... ({len(obj)} keys)" if len(obj) > MAX_LISTED else ""
        return f"a {type(obj).__name__} with keys [{', '.join(keys)}{more}]"
    return f"an object of type {type(obj).__name__}"


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a leading ``module.`` from every key if EVERY key has one; else return a copy.

    The ``_metadata`` attribute of a ``state_dict()`` result is carried over (re-keyed).
    """
    if not state_dict or not all(k.startswith(MODULE_PREFIX) for k in state_dict):
        out = OrderedDict(state_dict)
        metadata = getattr(state_dict, "_metadata", None)
        if metadata is not None:
            out._metadata = metadata  # type: ignore[attr-defined]
        return out
    out = OrderedDict((k[len(MODULE_PREFIX) :], v) for k, v in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        renamed = OrderedDict()
        for k, v in metadata.items():
            if k == "module":
                renamed[""] = v
            elif k.startswith(MODULE_PREFIX):
                renamed[k[len(MODULE_PREFIX) :]] = v
        out._metadata = renamed  # type: ignore[attr-defined]
    return out


def unwrap_checkpoint(
    obj: Any, key: str | None = None, strip_prefix: bool = True
) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object.

    ``obj`` may be a bare state dict, a published wrapper (see the module docstring),
    or an ``nn.Module`` (its ``state_dict()``). ``key`` selects the wrapper entry
    explicitly. With ``strip_prefix`` a ``module.`` prefix on every key is removed.
    Raises :class:`CheckpointFormatError` when no state dict is found.
    """
    if isinstance(obj, nn.Module):
        state = obj.state_dict()
    elif key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise CheckpointFormatError(
                f"no entry {key!r} in the checkpoint: it is {_describe(obj)}"
            )
        state = obj[key]
        if not _is_state_dict(state):
            raise CheckpointFormatError(
                f"checkpoint entry {key!r} is not a state dict (str -> Tensor): "
                f"it is {_describe(state)}"
            )
    elif _is_state_dict(obj):
        state = obj
    else:
        found = [k for k in WRAPPER_KEYS if isinstance(obj, Mapping) and _is_state_dict(obj.get(k))]
        if not found:
            raise CheckpointFormatError(
                "not a state dict nor a known checkpoint wrapper (a mapping with a state "
                f"dict under one of {list(WRAPPER_KEYS)}): got {_describe(obj)}; pass key= "
                "to choose the entry"
            )
        state = obj[found[0]]
    return strip_module_prefix(state) if strip_prefix else OrderedDict(state)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_checkpoint(path: str | Path) -> Any:
    """The object in a checkpoint file, read safely onto the CPU: ``.safetensors`` with
    safetensors, anything else with ``torch.load(weights_only=True)``, which rebuilds only
    tensors and plain containers.

    Every failure is a :class:`CheckpointError` naming the file: missing
    (:class:`CheckpointNotFoundError`), truncated or corrupt, or holding other objects
    (:class:`UnsafeCheckpointError`; such a file is never unpickled).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CheckpointNotFoundError(f"checkpoint {path} {what}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _GLOBAL.search(str(err))
        what = (
            f"it holds objects other than tensors and plain containers (it refers to "
            f"{found.group(1)})" if found else
            "it is no file written by torch.save, or a pickle in a form the safe loader does "
            "not read"
        )
        raise UnsafeCheckpointError(
            f"{path} is not a checkpoint this library can load safely: {what}; such files are "
            "never unpickled. Use a checkpoint saved as a state dict (torch.save("
            "model.state_dict(), ...)) or a .safetensors file"
        ) from None
    except MemoryError:
        raise
    except Exception as err:  # torch's zip reader, pickle's EOF, safetensors' header checks
        reason = str(err).split(". ")[0] or type(err).__name__
        raise CheckpointError(
            f"{path} could not be read as a checkpoint ({type(err).__name__}: {reason}): it is "
            "truncated, corrupt or not a checkpoint; download or copy it again"
        ) from err


def compare_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """``(missing, unexpected, shape_mismatches)`` of ``state_dict`` against ``model``;
    keys in the model's order, then the checkpoint's."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        (k, tuple(expected[k].shape), tuple(state_dict[k].shape))
        for k in expected
        if k in state_dict and tuple(expected[k].shape) != tuple(state_dict[k].shape)
    ]
    return missing, unexpected, shapes


def load_backbone_checkpoint(
    model: ModelT,
    path_or_state: str | Path | Any,
    strict: bool = True,
    key: str | None = None,
    return_prior: bool = False,
) -> ModelT | tuple[ModelT, dict[str, torch.Tensor]]:
    """Load a published checkpoint into ``model`` and return ``model``.

    ``path_or_state`` is a file path (``.safetensors``, or anything ``torch.load`` reads
    with ``weights_only=True``) or an already loaded object (state dict, wrapper, module).
    The wrapper is unwrapped as in :func:`unwrap_checkpoint` (``key`` chooses the entry) and
    a ``module.`` prefix on every key is removed unless the model's keys carry it too.

    With ``strict`` any missing or unexpected key raises :class:`CheckpointMismatchError`;
    without, those are skipped with a warning. A shape mismatch always raises. A file with
    arbitrary pickled objects raises :class:`UnsafeCheckpointError`, an unreadable one
    :class:`CheckpointError` (see :func:`read_checkpoint`); all errors are ``ValueError``
    subclasses.

    Either side of ``wrap``: into a wrapped ``model`` the backbone loads strictly and the
    checkpoint's prior tensors, if it has any (saved after ``wrap``), load into the prior
    when they fit it exactly; otherwise they are reported and the prior is kept. Into a
    bare ``model`` a wrapped checkpoint's prior tensors are split off and reported.
    ``return_prior=True`` returns ``(model, prior_state)``, the checkpoint's prior tensors
    without the ``sp_prior.`` prefix (empty if none).
    """
    is_path = isinstance(path_or_state, str | Path)
    obj = read_checkpoint(path_or_state) if is_path else path_or_state
    state = unwrap_checkpoint(obj, key=key, strip_prefix=False)
    own_keys = list(model.state_dict())
    model_prefixed = bool(own_keys) and all(k.startswith(MODULE_PREFIX) for k in own_keys)
    if not model_prefixed:
        state = strip_module_prefix(state)
    state, prior_state = split_state_dict(state)
    source = str(path_or_state) if is_path else "the checkpoint"
    prior = prior_of(model)
    loaded_prior = prior is not None and _load_prior(prior, prior_state, source)

    target = _BackboneView(model) if prior is not None else model
    missing, unexpected, shapes = compare_state_dict(target, state)
    name = type(model).__name__
    if shapes or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(missing, unexpected, shapes, model_name=name)
    if missing or unexpected:
        warnings.warn(
            f"partial checkpoint load into {name}: {len(missing)} missing keys "
            f"({_short_list(missing)}), {len(unexpected)} unexpected keys "
            f"({_short_list(unexpected)})",
            stacklevel=2,
        )
    if prior is not None and not loaded_prior:
        # the root's load hook keeps the prior when no prior key is given; it says so
        # unless the prior that did not fit was reported above
        with warnings.catch_warnings():
            if prior_state:
                warnings.filterwarnings("ignore", message=".*none of the prior's")
            model.load_state_dict(state, strict=strict)
    elif prior is not None:
        model.load_state_dict(
            {**state, **{PRIOR_PREFIX + k: v for k, v in prior_state.items()}}, strict=strict
        )
    else:
        model.load_state_dict(state, strict=strict)
        if prior_state:
            warnings.warn(
                f"{source} was saved from a wrapped model: its {len(prior_state)} prior tensors "
                f"({PRIOR_PREFIX}*) were split off and {name}'s backbone loaded. To keep the "
                "prior, wrap the model first with the options it was trained with, then load "
                "(or pass return_prior=True to get them)",
                stacklevel=2,
            )
    if return_prior:
        return model, prior_state
    return model


class _BackboneView(nn.Module):
    """A wrapped model's state dict without the prior's entries (for key comparisons)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.__dict__["_model"] = model  # not a submodule: nothing registered twice

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return split_state_dict(self._model.state_dict(keep_vars=True))[0]


def _load_prior(prior: nn.Module, prior_state: dict[str, torch.Tensor], source: str) -> bool:
    """Whether ``prior_state`` (a checkpoint's prior tensors) fits ``prior`` exactly, so it
    is loaded with the backbone; one that does not is reported and the prior kept."""
    if not prior_state:
        return False
    missing, unexpected, shapes = compare_state_dict(prior, prior_state)
    if not (missing or unexpected or shapes):
        return True
    warnings.warn(
        f"{source} holds a prior that does not fit this model's ({len(missing)} missing, "
        f"{len(unexpected)} unexpected, {len(shapes)} mismatched tensors, e.g. "
        f"{_short_list((missing + unexpected + [k for k, *_ in shapes])[:3])}); it was wrapped "
        "with other levels or options: the backbone was loaded and the prior kept",
        stacklevel=3,
    )
    return False
