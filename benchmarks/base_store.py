"""Shared bases of the fine-tuning protocol, kept on disk between runs.

The fine-tuning protocol (:func:`sp_adapter.train.protocol.run_arms`) trains the bare
backbone ``pretrain_steps`` once per seed before the arms. A comparison run later with
other arms (another variant, other prior options) starts from the same base, so training
it again only spends time. A :class:`BaseStore` keeps each base as a ``.safetensors``
file named by a hash of everything that decides its weights, and gives it back instead of
training it again: the arms' results are bit-identical to those of a run that trained it
(a test checks it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from sp_adapter.files.atomic import write_atomic
from sp_adapter.train.config import TrainConfig

# TrainConfig fields that do not change a base's weights: the base trains no validation
# (the protocol gives its validation set to the arms only) and has no prior (whose loss
# weight and learning-rate factors are therefore unused), and the batches are the same
# whatever the number of DataLoader workers
NOT_IN_KEY = ("progress", "val_every", "val_batch_size", "log_every", "checkpoint_every",
              "keep_checkpoints", "beta", "embedding_lr_scale", "student_lr_scale",
              "backbone_lr_scale", "num_workers")


@dataclass(frozen=True)
class StoredBase:
    """A base read back from the store: its weights and the seconds its training took."""

    state: dict[str, torch.Tensor]
    seconds: float
    path: Path


@dataclass(frozen=True)
class BaseStore:
    """Where shared bases are kept, and what identifies the training data.

    Attributes:
        root: the folder of the ``base-<hash>.safetensors`` files.
        data: what decides the training stream besides the seed and the batch size, as a
            JSON-ready dict (for the built-in set: crop, blur, samples per epoch). The
            store cannot see inside a dataset: two datasets described alike share bases.
    """

    root: Path
    data: dict[str, Any]

    def key(self, backbone: str, options: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
        """Everything that decides a base's weights, besides the code itself: the data,
        the backbone and its options, the training options of the shared steps, the torch
        version and the CPU thread count (it can change the order of float sums)."""
        settings = {k: v for k, v in asdict(config).items() if k not in NOT_IN_KEY}
        return {"data": self.data, "backbone": backbone, "options": options,
                "config": settings, "torch": torch.__version__,
                "threads": torch.get_num_threads()}

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
        return Path(self.root) / f"base-{digest.hexdigest()[:16]}.safetensors"

    def load(self, key: dict[str, Any]) -> StoredBase | None:
        """The stored base of ``key``, or ``None`` when there is none. A file whose recorded
        key differs from ``key`` (a hash collision, an edited file) is an error."""
        path = self.path(key)
        if not path.exists():
            return None
        with safe_open(path, "pt") as handle:
            metadata = handle.metadata() or {}
        expected = json.dumps(key, sort_keys=True, default=str)
        if metadata.get("key") != expected:
            raise ValueError(f"{path} holds the base of another configuration; remove it "
                             f"or choose another store folder (stored key: "
                             f"{metadata.get('key')}, wanted: {expected})")
        return StoredBase(load_file(path), float(metadata["seconds"]), path)

    def save(self, key: dict[str, Any], state: dict[str, torch.Tensor], seconds: float) -> Path:
        """Write the base of ``key`` atomically (an existing file is the same base: the
        key decides the weights, so it is replaced by an equal one)."""
        metadata = {"key": json.dumps(key, sort_keys=True, default=str), "seconds": repr(seconds)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        return write_atomic(self.path(key), save(tensors, metadata=metadata))

