"""sp_adapter: a learned semantic prior for existing deblurring networks.

Two lines in a training script::

    model = sp_adapter.wrap(model)                      # hooks + prior, output unchanged
    loss = l1(model(blurry), sharp) + 0.1 * sp_adapter.prior_loss(model, sharp)
"""

from .config import PriorConfig, TeacherSpec
from .errors import (
    IncompatiblePriorError,
    LevelNotFoundError,
    PriorFileError,
    PriorNotFoundError,
    SPAdapterError,
)
from .hcl import hcl_loss
from .hook import SPEHook
from .hub import (
    from_pretrained,
    push_to_hub,
    save_pretrained,
)
from .levels import BackboneMap, Level, Region
from .optimize import compile_prior, decompile_prior, optimize_for_inference
from .prior import SemanticPrior
from .prior_learner import PriorLearner
from .teacher import Teacher, load_teacher
from .wrap import (
    get_hook,
    get_prior,
    is_wrapped,
    prior_disabled,
    prior_loss,
    prior_state_dict,
    prior_strength,
    set_prior_strength,
    unwrap,
    wrap,
)

# isort: split
# -- checkpoints either side of wrap, optimisers built before it ---------------------
from .checkpoints import load_backbone_checkpoint
from .errors import ImageInputError, PriorLossError, UnknownOptionError, WrapError
from .locate import known_backbones_in
from .optim import add_prior_to_optimizer, backbone_parameters
from .state_dict import split_state_dict

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
]
