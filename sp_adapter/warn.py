"""Warnings that point at the caller's line, not at the library's or torch's frames."""

from __future__ import annotations

import os
import sys
import warnings

import torch

_SKIPPED = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
)
"""Frames in these folders (this library, torch) are never the user's line."""


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller name the first frame
    outside this library and torch: the user's own line, not the torch internals (module
    hooks, optimiser step hooks) the library is called from."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_SKIPPED):
        frame, level = frame.f_back, level + 1
    return level


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` at the user's line (:func:`user_stacklevel`)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
