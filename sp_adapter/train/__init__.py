"""Training and evaluation of deblurring networks with and without the semantic prior.

* :class:`Trainer` + :class:`TrainConfig`: one training run (Eq. 7, Sec. 4.1), resumable,
  DDP-ready, with an optional teacher-feature cache.
* :func:`evaluate` / :func:`deblur`: PSNR/SSIM on a dataset, images of any size.
* :func:`run_arms`: base vs +SP (and ablations) at equal budget on identical batches.
* :func:`calibrate_strength`: the prior's strength for inference, chosen on held-out
  images (:func:`held_out_set`).
* :func:`pretrain_student`: student-only distillation before joint training.
* :func:`distill_to_backbone`: a trained wrapped network distilled into its bare backbone.
* :class:`ModelSpec` / :func:`load_trained`: rebuild a trained network from its checkpoint.
"""

from sp_adapter.train.backbones import BACKBONES, available_backbones, backbone_spec
from sp_adapter.train.cache import CacheMismatchError, TeacherFeatureCache
from sp_adapter.train.calibrate import StrengthCalibration, calibrate_strength, held_out_set
from sp_adapter.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_atomic,
)
from sp_adapter.train.config import TrainConfig
from sp_adapter.train.data import BatchStream, SampleMemo
from sp_adapter.train.distill import DistillConfig, distill_to_backbone
from sp_adapter.train.distributed import DistInfo, dist_info, init_distributed
from sp_adapter.train.evaluate import EvalResult, deblur, evaluate
from sp_adapter.train.model_spec import ModelSpec, load_trained, resolve_checkpoint
from sp_adapter.train.protocol import Arm, ArmResult, count_parameters, run_arms
from sp_adapter.train.schedule import WarmupCosine, build_optimizer
from sp_adapter.train.student import StudentResult, pretrain_student
from sp_adapter.train.trainer import (
    Trainer,
    TrainResult,
    freeze_backbone,
    freeze_student,
    seed_everything,
)

__all__ = [
    "BACKBONES",
    "Arm",
    "ArmResult",
    "BatchStream",
    "CacheMismatchError",
    "DistInfo",
    "DistillConfig",
    "EvalResult",
    "ModelSpec",
    "SampleMemo",
    "StrengthCalibration",
    "StudentResult",
    "TeacherFeatureCache",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WarmupCosine",
    "available_backbones",
    "backbone_spec",
    "build_optimizer",
    "calibrate_strength",
    "count_parameters",
    "deblur",
    "dist_info",
    "distill_to_backbone",
    "evaluate",
    "freeze_backbone",
    "freeze_student",
    "held_out_set",
    "init_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_trained",
    "pretrain_student",
    "resolve_checkpoint",
    "run_arms",
    "save_atomic",
    "seed_everything",
]
