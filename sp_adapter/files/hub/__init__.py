"""Save, load and share a trained semantic prior: ``config.json`` + ``model.safetensors``.

A saved prior is a folder (or a Hugging Face Hub repository) with three files:

* ``config.json``: everything needed to rebuild the :class:`SemanticPrior` without the
  teacher's pretrained weights, and the SHA-256 of the weights (:mod:`.config`);
* ``model.safetensors``: the prior's state dict (student, CLC, MLA/SAT; never the backbone,
  never the teacher). Only safetensors is read, never pickle;
* ``README.md``: a model card (:mod:`.card`).

Writing is in :mod:`.save`, reading (a folder or a repository id) in :mod:`.load`, the Hub
downloads in :mod:`.download`, uploads in :mod:`.push`; whether a prior fits a network is
:mod:`sp_adapter.attach.compat`. These are plain functions on ``huggingface_hub`` downloads and
``HfApi`` uploads rather than ``PyTorchModelHubMixin``: the mixin rebuilds a model from its
constructor arguments, but :class:`SemanticPrior` takes a :class:`Teacher` module and nested
dataclasses, and loading needs checks (format version, file integrity, key lists) and error
messages of its own.
"""

from sp_adapter.attach.compat import check_prior_fits, check_teacher_fits, describe_levels
from sp_adapter.files.hub.card import model_card, model_card_text
from sp_adapter.files.hub.config import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    level_from_dict,
    level_to_dict,
    prior_config_dict,
    prior_from_config,
)
from sp_adapter.files.hub.download import download_prior
from sp_adapter.files.hub.load import from_pretrained, load_folder, load_prior
from sp_adapter.files.hub.push import push_to_hub
from sp_adapter.files.hub.save import save_pretrained

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "check_prior_fits",
    "check_teacher_fits",
    "describe_levels",
    "download_prior",
    "from_pretrained",
    "level_from_dict",
    "level_to_dict",
    "load_folder",
    "load_prior",
    "model_card",
    "model_card_text",
    "prior_config_dict",
    "prior_from_config",
    "push_to_hub",
    "save_pretrained",
]
