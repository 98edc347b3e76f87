"""sp_adapter: a learned semantic prior for existing deblurring networks.

Two lines in a training script::

    model = sp_adapter.wrap(model)                      # hooks + prior, output unchanged
    loss = l1(model(blurry), sharp) + 0.1 * sp_adapter.prior_loss(model, sharp)
"""

from .config import PriorConfig, TeacherSpec
from .hcl import hcl_loss
from .levels import BackboneMap, Level, Region
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
    unwrap,
    wrap,
)
from .hook import SPEHook

__version__ = "0.1.0"

__all__ = [
    "BackboneMap",
    "Level",
    "PriorConfig",
    "PriorLearner",
    "Region",
    "SPEHook",
    "SemanticPrior",
    "Teacher",
    "TeacherSpec",
    "get_hook",
    "get_prior",
    "hcl_loss",
    "is_wrapped",
    "load_teacher",
    "prior_disabled",
    "prior_loss",
    "prior_state_dict",
    "unwrap",
    "wrap",
]
