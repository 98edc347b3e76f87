"""Student pre-training: distil the prior learner alone before joint training.

Only the student F_S and the CLC run (not the backbone), trained with the HCL prior loss
(Eq. 2, 4) to predict the frozen teacher's features of the sharp crop from the blurred
crop. A student step costs a fraction of a joint step, so a short pre-training hands
the joint training a prior that already carries semantics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sp_adapter.attach.state import get_hook, get_prior
from sp_adapter.errors import OptionError
from sp_adapter.prior.hcl import hcl_loss
from sp_adapter.train.data import BatchStream
from sp_adapter.train.distributed import DistInfo


@dataclass
class StudentResult:
    """Steps, seconds and the prior loss of every step."""

    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def pretrain_student(
    model: torch.nn.Module,
    dataset: Dataset,
    steps: int,
    batch_size: int = 8,
    lr: float = 2e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
    data_start: int = 0,
    progress: bool = True,
    num_workers: int = 0,
) -> StudentResult:
    """Train the prior learner of wrapped ``model`` on ``steps`` batches of ``dataset``.

    AdamW with a constant ``lr``; the data stream is the one :class:`Trainer` uses
    (same seed, same batches from ``data_start``; ``num_workers`` DataLoader workers).
    The embeddings (MLA/SAT) and the backbone are untouched.
    """
    hook = get_hook(model)
    if hook.teacher is None:
        raise OptionError("student pre-training needs a model wrapped with a teacher")
    prior = get_prior(model)
    if not prior.config.hcl:
        raise OptionError(
            "student pre-training distils the teacher through HCL (Eq. 2), but this prior is "
            "configured without it (hcl=False, Table 4's Net0*): give it 0 student steps"
        )
    learner = prior.learner.to(device)
    params = [p for p in learner.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999))
    device = torch.device(device)
    stream = BatchStream(dataset, batch_size, DistInfo(), seed=seed, num_workers=num_workers,
                         pin_memory=device.type == "cuda")
    batches = stream.batches(data_start)
    losses: list[float] = []
    was_training = learner.training
    learner.train()
    elapsed = 0.0
    for _ in tqdm(range(steps), desc="student", unit="step", disable=not progress):
        batch = next(batches)
        blurry = batch[0].to(device, non_blocking=True)
        sharp = batch[1].to(device, non_blocking=True)
        start = time.perf_counter()
        loss = hcl_loss(learner(blurry), hook.teacher(sharp), prior.config.pool_sizes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))  # waits for the device: the step is timed whole
        elapsed += time.perf_counter() - start
    learner.train(was_training)
    return StudentResult(steps=steps, seconds=elapsed, losses=losses)
