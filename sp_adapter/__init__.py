"""sp_adapter: a learned semantic prior for existing deblurring networks.

Two lines in a training script::

    model = sp_adapter.wrap(model)                      # hooks + prior, output unchanged
    loss = l1(model(blurry), sharp) + 0.1 * sp_adapter.prior_loss(model, sharp)

``__all__`` holds the everyday names, one group per line of the README's API section;
everything else is importable from its module (``docs/architecture.md`` maps them).
"""

# isort: off
# -- attach and train ------------------------------------------------------------------
from sp_adapter.attach.wrap import wrap, unwrap, prior_loss
from sp_adapter.attach.summary import summary
from sp_adapter.attach.ema import wrap_like
from sp_adapter.prior.config import PriorConfig, TeacherSpec

# -- save, load and the Hub ------------------------------------------------------------
from sp_adapter.files.hub import save_pretrained, from_pretrained, push_to_hub

# -- levels of a network no adapter knows -----------------------------------------------
from sp_adapter.attach.levels import Level, BackboneMap
from sp_adapter.attach.auto_levels import find_levels

# -- checkpoints and optimisers either side of wrap -----------------------------------
from sp_adapter.files.checkpoints import load_backbone_checkpoint
from sp_adapter.files.state_dict import split_state_dict
from sp_adapter.attach.optim import add_prior_to_optimizer

# -- inference and deployment -----------------------------------------------------------
from sp_adapter.attach.wrap import prior_disabled, set_prior_strength
from sp_adapter.attach.optimize import optimize_for_inference
from sp_adapter.train.distill import distill_to_backbone

# -- the error base ----------------------------------------------------------------------
from sp_adapter.errors import SPAdapterError

# -- advanced: kept importable here as well as from their modules (not in __all__) --------
from sp_adapter.attach.ema import check_priors_match  # noqa: F401
from sp_adapter.attach.hook import SPEHook  # noqa: F401
from sp_adapter.attach.levels import Region  # noqa: F401
from sp_adapter.attach.locate import known_backbones_in  # noqa: F401
from sp_adapter.attach.optim import backbone_parameters  # noqa: F401
from sp_adapter.attach.optimize import compile_prior, decompile_prior  # noqa: F401
from sp_adapter.attach.state import get_hook, get_prior, is_wrapped  # noqa: F401
from sp_adapter.attach.wrap import prior_state_dict, prior_strength  # noqa: F401
from sp_adapter.errors import ImageInputError, IncompatiblePriorError  # noqa: F401
from sp_adapter.errors import LevelNotFoundError, PriorFileError  # noqa: F401
from sp_adapter.errors import PriorLossError, PriorNotFoundError  # noqa: F401
from sp_adapter.errors import UnknownOptionError, WrapError  # noqa: F401
from sp_adapter.files.hub import load_prior  # noqa: F401
from sp_adapter.prior.hcl import hcl_loss  # noqa: F401
from sp_adapter.prior.learner import PriorLearner  # noqa: F401
from sp_adapter.prior.semantic_prior import SemanticPrior  # noqa: F401
from sp_adapter.prior.teacher import Teacher, load_teacher  # noqa: F401
from sp_adapter.train.distill import DistillConfig, save_backbone_checkpoint  # noqa: F401
from sp_adapter.version import __version__  # noqa: F401
# isort: on

__all__ = [
    # attach and train
    "wrap", "unwrap", "prior_loss", "summary", "wrap_like", "PriorConfig", "TeacherSpec",
    # save, load and the Hub
    "save_pretrained", "from_pretrained", "push_to_hub",
    # levels of a network no adapter knows
    "Level", "BackboneMap", "find_levels",
    # checkpoints and optimisers either side of wrap
    "load_backbone_checkpoint", "split_state_dict", "add_prior_to_optimizer",
    # inference
    "prior_disabled", "set_prior_strength", "optimize_for_inference", "distill_to_backbone",
    # the error base
    "SPAdapterError",
]
