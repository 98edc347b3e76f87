"""The library's errors: one family, so callers (and the CLI) can catch them all at once.

Every error derives from :class:`SPAdapterError` and keeps the builtin parent that says
what kind of failure it is (``ValueError`` for bad input, ``FileNotFoundError`` for a
missing file, ``RuntimeError`` for a failed run), as PEFT's errors do.
"""

from __future__ import annotations

import pickle


class SPAdapterError(Exception):
    """Base class of every error this library raises on purpose."""


# -- levels and wrapping ---------------------------------------------------------------
class LevelNotFoundError(SPAdapterError, ValueError):
    """A level names a module the network does not have (the message lists close names)."""


class AutoLevelsError(LevelNotFoundError):
    """No skip join could be found (or chosen) automatically; the message lists the joins
    and feature modules seen and the ``levels=[...]`` to pass by hand."""


class WrapError(SPAdapterError, ValueError):
    """``wrap`` was given something it cannot attach the prior to (the message says what)."""


class UnknownOptionError(WrapError, TypeError):
    """An option or :class:`~sp_adapter.attach.levels.Level` field name that does not exist (the
    message lists the valid names, closest first). Also a ``TypeError``, as Python's own
    error for an unexpected keyword is."""


# -- inputs of a wrapped model and of the prior loss -------------------------------------
class ImageInputError(SPAdapterError, ValueError):
    """An image given to a wrapped model or to ``prior_loss`` has the wrong size, precision
    or pixel range (the message says what was seen and what is expected)."""


class PriorLossError(SPAdapterError, RuntimeError):
    """``prior_loss`` cannot be computed from the model's last forward (none ran, it failed,
    it ran without gradients or under DataParallel replicas, or there is no teacher)."""


# -- checkpoints -----------------------------------------------------------------------
class CheckpointError(SPAdapterError, ValueError):
    """Base class of the errors raised while reading a checkpoint (the key/shape mismatch,
    ``sp_adapter.files.checkpoints.CheckpointMismatchError``, is one)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class CheckpointFormatError(CheckpointError):
    """The object is not a state dict nor a recognised wrapper of one."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file holds objects other than tensors and plain containers, so the restricted
    (``weights_only``) unpickler refused it."""


# -- saved priors (Hub or folder) ------------------------------------------------------
class PriorNotFoundError(SPAdapterError, FileNotFoundError):
    """A saved prior could not be found: no such folder, repository, revision or file, or the
    Hub could not be reached and nothing is cached."""


class PriorFileError(SPAdapterError, ValueError):
    """A saved prior's files are unreadable, from a newer format, or do not fit together."""


class IncompatiblePriorError(SPAdapterError, ValueError):
    """A prior does not fit the network (or the teacher) it is attached to."""


class HubError(SPAdapterError, RuntimeError):
    """A Hugging Face Hub operation (an upload) failed: the server refused or erred, the Hub
    was unreachable, or uploads are disabled (the message says which and what to do)."""


# -- pretrained feature networks -------------------------------------------------------
class TeacherWeightsError(SPAdapterError, RuntimeError):
    """The teacher's pretrained weights could not be found or loaded."""


class PerceptualWeightsError(SPAdapterError, RuntimeError):
    """The pretrained weights of the perceptual loss's feature network are unavailable."""


# -- metrics and optional libraries ---------------------------------------------------
class OptionalDependencyError(SPAdapterError, ImportError):
    """A feature needs a library that is an optional extra (the message says what to
    install)."""


class MissingExtraError(OptionalDependencyError):
    """A feature needs a package of the ``demo`` extra (the built-in photos, the blur
    synthesis, the demo): ``pip install "sp-adapter[demo]"``."""


class UnknownConventionError(SPAdapterError, ValueError):
    """A metric convention name that does not exist (the message lists those that do)."""


class AlignmentError(SPAdapterError, RuntimeError):
    """The RealBlur protocol could not align a restored image to its sharp one."""


# -- files -----------------------------------------------------------------------------
class ImageFileError(SPAdapterError, ValueError):
    """An image file cannot be read (not an image, truncated, corrupt) or written in the
    format its name asks for."""


class DiskFullError(SPAdapterError, OSError):
    """The disk filled up while a file was written (the file was left as it was)."""


# -- training and the CLI --------------------------------------------------------------
class CacheMismatchError(SPAdapterError, RuntimeError):
    """A key came back with a different sharp crop than the one cached under it."""


class RunFolderError(SPAdapterError, ValueError):
    """A training run folder holds a run that would be overwritten, or no run to resume."""


class ReportFolderError(SPAdapterError, RuntimeError):
    """The report folder is not empty and overwriting was not asked for."""


class CLIError(SPAdapterError):
    """A command-line mistake, said in terms of the command's flags."""


class DistillError(SPAdapterError, ValueError):
    """Distilling a wrapped network into its bare backbone cannot go on as asked (no data,
    a state file from another distillation, an output file that exists)."""
