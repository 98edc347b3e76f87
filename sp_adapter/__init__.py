"""sp_adapter: a learned semantic prior for existing deblurring networks.

Two lines in a training script::

    model = sp_adapter.wrap(model)                      # hooks + prior, output unchanged
    loss = l1(model(blurry), sharp) + 0.1 * sp_adapter.prior_loss(model, sharp)
"""

from sp_adapter.attach.hook import SPEHook
from sp_adapter.attach.levels import BackboneMap, Level, Region
from sp_adapter.attach.optimize import compile_prior, decompile_prior, optimize_for_inference
from sp_adapter.attach.state import get_hook, get_prior, is_wrapped
from sp_adapter.attach.wrap import (
    prior_disabled,
    prior_loss,
    prior_state_dict,
    prior_strength,
    set_prior_strength,
    unwrap,
    wrap,
)
from sp_adapter.errors import (
    IncompatiblePriorError,
    LevelNotFoundError,
    PriorFileError,
    PriorNotFoundError,
    SPAdapterError,
)
from sp_adapter.files.hub import (
    from_pretrained,
    push_to_hub,
    save_pretrained,
)
from sp_adapter.prior.config import PriorConfig, TeacherSpec
from sp_adapter.prior.hcl import hcl_loss
from sp_adapter.prior.learner import PriorLearner
from sp_adapter.prior.semantic_prior import SemanticPrior
from sp_adapter.prior.teacher import Teacher, load_teacher

# isort: split
# -- checkpoints either side of wrap, optimisers built before it ---------------------
from sp_adapter.attach.locate import known_backbones_in
from sp_adapter.attach.optim import add_prior_to_optimizer, backbone_parameters
from sp_adapter.errors import ImageInputError, PriorLossError, UnknownOptionError, WrapError
from sp_adapter.files.checkpoints import load_backbone_checkpoint
from sp_adapter.files.state_dict import split_state_dict

# isort: split
# -- the prior at zero inference cost: distilled back into the bare network -------------
from sp_adapter.train.distill import DistillConfig, distill_to_backbone, save_backbone_checkpoint

__version__ = "0.1.0"

__all__ = [
    "BackboneMap",
    "IncompatiblePriorError",
    "Level",
    "LevelNotFoundError",
    "PriorConfig",
    "PriorFileError",
    "PriorLearner",
    "PriorNotFoundError",
    "Region",
    "SPAdapterError",
    "SPEHook",
    "SemanticPrior",
    "compile_prior",
    "decompile_prior",
    "Teacher",
    "TeacherSpec",
    "from_pretrained",
    "get_hook",
    "get_prior",
    "hcl_loss",
    "is_wrapped",
    "load_teacher",
    "optimize_for_inference",
    "prior_disabled",
    "prior_loss",
    "prior_state_dict",
    "prior_strength",
    "push_to_hub",
    "save_pretrained",
    "set_prior_strength",
    "unwrap",
    "wrap",
    # checkpoints either side of wrap, optimisers built before it
    "ImageInputError",
    "PriorLossError",
    "UnknownOptionError",
    "WrapError",
    "add_prior_to_optimizer",
    "backbone_parameters",
    "known_backbones_in",
    "load_backbone_checkpoint",
    "split_state_dict",
    # the prior at zero inference cost
    "DistillConfig",
    "distill_to_backbone",
    "save_backbone_checkpoint",
]
