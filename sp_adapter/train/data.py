"""The training data stream: a deterministic, resumable sequence of batches.

Batch ``b`` of the stream (counted from the start of training, over all epochs) is fully
determined by the dataset, the seed and ``b``: epoch ``b // batches_per_epoch`` shuffles
the indices with ``DistributedSampler`` (seeded with ``seed + epoch``; one replica for a
single process), and the loader's own generator (never the global RNG) seeds workers. A
run resumed at batch ``b`` therefore sees exactly the batches an uninterrupted run sees,
without loading the skipped ones, and two training arms started at the same ``b`` see
identical batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sp_adapter.errors import OptionError
from sp_adapter.train.distributed import DistInfo


class BatchStream:
    """Batches of ``dataset`` for one process, from any position of the stream.

    Args:
        dataset: map-style dataset of ``(blurry, sharp)`` or ``(blurry, sharp, key)``.
        batch_size: the global batch (split evenly across processes).
        info: this process's rank and the world size.
        seed: seeds the shuffling.
        new_samples_each_epoch: call ``dataset.set_epoch(epoch)`` if it has one.
        num_workers: DataLoader workers.
        pin_memory: pin host memory (CUDA training).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        info: DistInfo,
        seed: int = 0,
        new_samples_each_epoch: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if batch_size % info.world_size:
            raise OptionError(
                f"the global batch {batch_size} does not divide among {info.world_size} "
                "processes; choose a multiple"
            )
        self.dataset = dataset
        self.local_batch = batch_size // info.world_size
        self.seed = seed
        self.new_samples = new_samples_each_epoch
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.sampler = DistributedSampler(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
            drop_last=True,
        )
        self.batches_per_epoch = len(self.sampler) // self.local_batch
        if self.batches_per_epoch < 1:
            raise OptionError(
                f"the dataset has {len(dataset)} samples, fewer than one global batch of "
                f"{batch_size}: use a smaller batch or a longer dataset"
            )

    def _loader(self, indices: list[int], epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return DataLoader(
            self.dataset, batch_size=self.local_batch, sampler=indices, drop_last=True,
            num_workers=self.num_workers, generator=generator, pin_memory=self.pin_memory,
        )

    def batches(self, start: int = 0) -> Iterator[Any]:
        """Endless batches from stream position ``start``."""
        b = start
        while True:
            epoch, offset = divmod(b, self.batches_per_epoch)
            self.sampler.set_epoch(epoch)
            if self.new_samples and hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            indices = list(self.sampler)[offset * self.local_batch :]
            for batch in self._loader(indices, epoch):
                yield batch
                b += 1


def _nbytes(sample: Any) -> int:
    if isinstance(sample, torch.Tensor):
        return sample.element_size() * sample.nelement()
    if isinstance(sample, (tuple, list)):
        return sum(_nbytes(s) for s in sample)
    return 0


class SampleMemo(Dataset):
    """Remembers the samples of ``dataset`` by ``(epoch, index)`` so that several training
    arms reading the same stream synthesise each sample once.

    Only samples are shared, never batches or state: every arm still runs its own
    :class:`BatchStream`. Works with ``num_workers=0`` (workers would each hold a copy).
    Stops remembering once ``max_bytes`` are held (later samples are synthesised again).
    """

    def __init__(self, dataset: Dataset, max_bytes: int = 1 << 30) -> None:
        self.dataset = dataset
        self.max_bytes = max_bytes
        self.bytes = 0
        self.epoch = 0
        self._memo: dict[tuple[int, int], Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> Any:
        key = (self.epoch, int(index))
        if key in self._memo:
            return self._memo[key]
        sample = self.dataset[index]
        size = _nbytes(sample)
        if self.bytes + size <= self.max_bytes:
            self._memo[key] = sample
            self.bytes += size
        return sample
