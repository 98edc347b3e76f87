"""Training and evaluation of deblurring networks with and without the semantic prior.

* :class:`Trainer` + :class:`TrainConfig`: one training run (Eq. 7, Sec. 4.1), resumable,
  DDP-ready, with an optional teacher-feature cache.
* :func:`evaluate` / :func:`deblur`: PSNR/SSIM on a dataset, images of any size.
* :func:`run_arms`: base vs +SP (and ablations) at equal budget on identical batches;
  :class:`BaseStore` keeps its shared bases between runs.
* :func:`calibrate_strength`: the prior's strength for inference, chosen on held-out
  images (:func:`held_out_set`).
* :func:`pretrain_student`: student-only distillation before joint training.
* :class:`ModelSpec` / :func:`load_trained`: rebuild a trained network from its checkpoint.
"""

from .backbones import BACKBONES, BackboneSpec, available_backbones, backbone_spec
from .base_store import BaseStore
from .cache import CacheMismatchError, TeacherFeatureCache
from .calibrate import StrengthCalibration, calibrate_strength, held_out_set
from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_atomic
from .config import TrainConfig
from .data import BatchStream, SampleMemo
from .distributed import DistInfo, dist_info, init_distributed
from .evaluate import EvalResult, deblur, evaluate
from .model_spec import ModelSpec, load_trained, resolve_checkpoint
from .protocol import Arm, ArmResult, count_parameters, run_arms
from .schedule import WarmupCosine, build_optimizer
from .student import StudentResult, pretrain_student
from .trainer import Trainer, TrainResult, freeze_backbone, freeze_student, seed_everything

__all__ = [
    "BACKBONES",
    "Arm",
    "ArmResult",
    "BackboneSpec",
    "BaseStore",
    "BatchStream",
    "CacheMismatchError",
    "DistInfo",
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
