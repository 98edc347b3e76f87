"""The library's errors: one family, so callers (and the CLI) can catch them all at once.

Every error the library raises on purpose is one of these classes: each derives from
:class:`SPAdapterError` and keeps the builtin parent that says what kind of failure it is
(``ValueError`` for bad input, ``TypeError`` for input of the wrong type,
``FileNotFoundError`` for a missing file, ``RuntimeError`` for a failed run), so
``except ValueError`` in a caller's code still catches what it caught before, as PEFT's
errors do. ``tests/test_errors.py`` scans the package for raises of bare builtin errors.
This module is the lowest layer: it imports nothing from the package.
"""

from __future__ import annotations

import pickle


class SPAdapterError(Exception):
    """Base class of every error this library raises on purpose."""


# -- options ---------------------------------------------------------------------------
class OptionError(SPAdapterError, ValueError):
    """An option has a value it cannot take, or options that exclude each other were given
    together: a field of ``PriorConfig``, ``TeacherSpec``, ``TrainConfig`` or a blur
    config, or an argument of a network, dataset, metric, loss or helper (the message names
    the option, what was given and what is allowed)."""


class OptionTypeError(OptionError, TypeError):
    """An option of the wrong type (a string where a list of names is expected, a teacher
    that is no ``TeacherSpec``, name or timm feature network, a function that returns no
    tensor). Also a ``TypeError``, as Python's own error for a wrong argument type is."""


# -- levels and wrapping ---------------------------------------------------------------
class LevelNotFoundError(SPAdapterError, ValueError):
    """A level names a module the network does not have (the message lists close names)."""


class AutoLevelsError(LevelNotFoundError):
    """No skip join could be found (or chosen) automatically; the message lists the joins
    and feature modules seen and the ``levels=[...]`` to pass by hand."""


class WrapError(SPAdapterError, ValueError):
    """``wrap`` was given something it cannot attach the prior to (the message says what)."""


class LevelError(WrapError, TypeError):
    """A level does not fit the network: an item of ``levels=`` in none of the accepted
    forms (a malformed tuple), or, at the wrapped model's forward, a level whose module
    gives no 4-D tensor, or a feature with other channels than declared, another shape than
    its skip or another batch than the input. Also a ``TypeError`` (a level of the wrong
    type)."""


class ForwardError(SPAdapterError, RuntimeError):
    """A forward went against what the prior was built for: a level's module ran outside a
    forward of the wrapped model, before its skip module, after its skip's output was
    modified in place, or more times than its regions; or the student gave another number
    of levels than the learner has."""


class ProbeError(WrapError, TypeError):
    """The probe given to ``find_levels`` is not one image tensor (the message says how to
    search a network that takes more inputs)."""


class UnknownOptionError(WrapError, TypeError):
    """An option or :class:`~sp_adapter.attach.levels.Level` field name that does not exist (the
    message lists the valid names, closest first). Also a ``TypeError``, as Python's own
    error for an unexpected keyword is."""


# -- inputs of a wrapped model and of the prior loss -------------------------------------
class PriorStrengthError(SPAdapterError, ValueError):
    """A prior strength that is not a finite number in ``[0, MAX_STRENGTH]``."""


class ImageInputError(SPAdapterError, ValueError):
    """An image given to the library has the wrong shape, size, precision or pixel range:
    the input of a wrapped model, of a twin network, of ``prior_loss``, of a metric or of
    the padded and tiled runners (the message says what was seen and what is expected)."""


class ImageTypeError(ImageInputError, TypeError):
    """An image of the wrong type: not a tensor (or, for a multi-scale network, not a list
    of them), no image at all, or of an integer type where floats are expected."""


class PriorLossError(SPAdapterError, RuntimeError):
    """``prior_loss`` cannot be computed from the model's last forward (none ran, it failed,
    it ran without gradients or under DataParallel replicas, or there is no teacher)."""


# -- checkpoints -----------------------------------------------------------------------
class CheckpointError(SPAdapterError, ValueError):
    """Base class of the errors raised while reading a checkpoint (the key/shape mismatch,
    ``sp_adapter.files.checkpoints.CheckpointMismatchError``, is one)."""


class PartialPriorStateError(CheckpointError, RuntimeError):
    """A state dict loaded strictly into a wrapped model holds only some of the prior's
    tensors (the message names the parts of the prior missing). Also a ``RuntimeError``,
    as torch's own error for missing keys is."""


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
    """A saved prior's files (or the strength saved beside a checkpoint) are unreadable,
    from a newer format, or do not fit together."""


class PriorFolderError(SPAdapterError, FileExistsError):
    """``save_pretrained`` would write over files it did not write (or into a non-empty
    folder without ``overwrite=True``); the message names them."""


class IncompatiblePriorError(SPAdapterError, ValueError):
    """A prior does not fit the network (or the teacher) it is attached to: other levels,
    channels or shapes than the teacher's features or statistics."""


class HubError(SPAdapterError, RuntimeError):
    """A Hugging Face Hub operation (an upload) failed: the server refused or erred, the Hub
    was unreachable, or uploads are disabled (the message says which and what to do)."""


# -- pretrained feature networks -------------------------------------------------------
class TeacherWeightsError(SPAdapterError, RuntimeError):
    """The teacher's pretrained weights could not be found or loaded."""


class PerceptualWeightsError(SPAdapterError, RuntimeError):
    """The pretrained weights of the feature network of the perceptual loss or of the
    LPIPS metric are unavailable, or its package (``lpips``) is missing or failed to build
    (the message says what to install or where to put the file)."""


# -- metrics and optional libraries ---------------------------------------------------
class OptionalDependencyError(SPAdapterError, ImportError):
    """A feature needs a library that is an optional extra (the message says what to
    install)."""


class MissingExtraError(OptionalDependencyError):
    """A feature needs a package of the ``demo`` extra (the built-in photos, the blur
    synthesis, the demo): ``pip install "sp-adapter[demo]"``."""


class MetricInputError(SPAdapterError, ValueError):
    """Images given to a metric hold non-finite values, or values far outside the
    ``[0, data_range]`` scale they claim (the message names the ``data_range`` that fits)."""


class UnknownConventionError(SPAdapterError, ValueError):
    """A metric convention name that does not exist (the message lists those that do)."""


class AlignmentError(SPAdapterError, RuntimeError):
    """The RealBlur protocol could not align a restored image to its sharp one."""


# -- files -----------------------------------------------------------------------------
class PathNotFoundError(SPAdapterError, FileNotFoundError):
    """A file or folder the library was pointed at does not exist: an image, a dataset's
    folder or list file, or a file such a list names (the message gives the layout
    expected)."""


class ImageFileError(SPAdapterError, ValueError):
    """An image file cannot be read (not an image, truncated, corrupt) or written in the
    format its name asks for."""


class ImageTooLargeError(ImageFileError):
    """An image file claims more pixels than the reading limit (a guard against
    decompression bombs); the message names the file, its pixel count and how to raise
    the limit."""


class MultiFrameImageError(ImageFileError):
    """An image file holds several frames (an animated GIF, a multi-page TIFF) and no frame
    was chosen: deblurring one would silently drop the others."""


class DiskFullError(SPAdapterError, OSError):
    """The disk filled up while a file was written (the file was left as it was)."""


# -- data ------------------------------------------------------------------------------
class DatasetError(SPAdapterError, ValueError):
    """A dataset's files do not make pairs the library can use: an image without its
    partner, a list file that is malformed or lists nothing, a pair of different sizes, an
    image smaller than the crop asked for, no sample at all."""


class DatasetIndexError(DatasetError, IndexError):
    """An index past the end of a dataset (an ``IndexError``, so iterating by index stops
    there as Python expects)."""


class PhotoError(SPAdapterError, RuntimeError):
    """The built-in photos cannot give what was asked: none (or not the needed ones) are
    installed here, or a photo has no crop as detailed as ``min_detail`` asks."""


class PhotoNotFoundError(PhotoError, KeyError):
    """A photo name that is not available here (also a ``KeyError``, as a missing name in a
    mapping is)."""

    def __str__(self) -> str:
        # KeyError would show the message quoted, as a key; this one is a sentence.
        return Exception.__str__(self)


# -- training and the CLI --------------------------------------------------------------
class CacheMismatchError(SPAdapterError, RuntimeError):
    """A key came back with a different sharp crop than the one cached under it."""


class RunFolderError(SPAdapterError, ValueError):
    """A training run folder holds a run that would be overwritten, no run to resume, or a
    run written with other options or data than those it is resumed with; or checkpoints
    were asked for without a run folder."""


class ReportFolderError(SPAdapterError, RuntimeError):
    """The report folder is not empty and overwriting was not asked for."""


class CLIError(SPAdapterError, ValueError):
    """A command-line mistake, said in terms of the command's flags (a ``ValueError``: a
    value given on the command line that cannot be used)."""


class DistillError(SPAdapterError, ValueError):
    """Distilling a wrapped network into its bare backbone cannot go on as asked (no data,
    a state file from another distillation, an output file that exists)."""
