"""Where ``eval``, ``deblur`` and ``calibrate`` get a trained network from.

Three routes, all read safely (tensors and plain containers only):

- a run folder or a checkpoint written by ``sp-adapter train``: it holds its ``ModelSpec``,
  so the network is rebuilt from the file alone;
- a checkpoint saved from Python (documented formats: ``torch.save(model.state_dict(), f)``,
  ``torch.save({"model": model.state_dict()}, f)`` or ``{"state_dict": ...}``, or a
  ``.safetensors`` file) plus ``--backbone``: the bare backbone is built and loaded;
- the same plus ``--prior-folder``, a folder written by ``sp_adapter.save_pretrained``: the
  backbone is wrapped with that prior before its weights are loaded (a state dict saved
  after ``wrap`` then loads its prior tensors too).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from torch import nn

from sp_adapter.errors import CLIError, SPAdapterError


def _checkpoint_error(file: Path, err: BaseException) -> CLIError:
    from sp_adapter.train.checkpoint import short_reason

    if isinstance(err, pickle.UnpicklingError):
        return CLIError(f"{file} is not a checkpoint this library can load safely (it holds "
                        "objects other than tensors and plain containers); use a checkpoint "
                        "written by sp-adapter train, or a state dict saved from Python")
    return CLIError(f"cannot read the checkpoint {file}: {short_reason(err)} (the file is "
                    "truncated or corrupt); use another checkpoint of the run "
                    "(checkpoints/step_*.pt) or train again")


def _read(file: Path) -> Any:
    from sp_adapter.train.checkpoint import load_checkpoint

    try:
        if file.suffix == ".safetensors":
            from sp_adapter.files.checkpoints import read_checkpoint

            return read_checkpoint(file)
        return load_checkpoint(file)
    except (SPAdapterError, FileNotFoundError):
        raise
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError) as err:
        raise _checkpoint_error(file, err) from None


def _python_model(file: Path, obj: Any, backbone: str | None, options: dict[str, Any],
                  prior_folder: str | None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """A network from a checkpoint saved from Python, built as ``backbone`` says."""
    from sp_adapter.adapters import backbone_named
    from sp_adapter.files.checkpoints import load_backbone_checkpoint, unwrap_checkpoint
    from sp_adapter.files.state_dict import has_prior_keys
    from sp_adapter.train.model_spec import ModelSpec

    if backbone is None:
        raise CLIError(f"{file} holds weights saved from Python, without the network's "
                       "description: add --backbone NAME (and --width for a UNet) to say "
                       "which network they belong to")
    spec = backbone_named(backbone)
    state = unwrap_checkpoint(obj)
    model = spec.build(**options)
    prior_config = None
    if prior_folder is not None:
        from sp_adapter.files.hub.load import from_pretrained

        model = from_pretrained(Path(prior_folder), model=model)
        prior_config = {"from": str(prior_folder)}
    elif has_prior_keys(state):
        raise CLIError(f"{file} was saved from a wrapped network (it holds sp_prior.* "
                       "tensors) but the prior's description is not in it: save the prior "
                       "with sp_adapter.save_pretrained(model, FOLDER) and add "
                       "--prior-folder FOLDER")
    load_backbone_checkpoint(model, state, strict=True)
    info: dict[str, Any] = {"path": str(file), "step": None, "prior_strength": None}
    if prior_config is not None:
        from sp_adapter.attach.state import get_hook, get_prior

        get_hook(model).teacher = None
        info["prior_strength"] = get_prior(model).strength
    model_spec = ModelSpec(spec.name, options, prior_config, None)
    return model.eval(), model_spec, info


def load_source(source: str, backbone: str | None = None, options: dict | None = None,
                prior_folder: str | None = None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(model, spec, info)`` of a run folder or checkpoint (see the module docstring);
    ``backbone``/``options``/``prior_folder`` describe a checkpoint saved from Python."""
    from sp_adapter.train.model_spec import load_trained, resolve_checkpoint

    file = resolve_checkpoint(source)
    obj = _read(file)
    is_training = isinstance(obj, dict) and obj.get("model_spec") is not None
    if not is_training:
        return _python_model(file, obj, backbone, dict(options or {}), prior_folder)
    if prior_folder is not None:
        raise CLIError(f"{file} is a checkpoint of sp-adapter train, which holds its prior: "
                       "leave out --prior-folder")
    try:
        return load_trained(file)
    except (SPAdapterError, FileNotFoundError):
        raise
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError) as err:
        raise _checkpoint_error(file, err) from None
