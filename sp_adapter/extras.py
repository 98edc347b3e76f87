"""Imports of the optional ``demo`` extra, made where a feature needs them.

The core install (``wrap``, ``prior_loss``, ``from_pretrained``, training on a paired
dataset) never imports these packages; the built-in photos, the blur synthesis and the
demo do, through :func:`import_extra`, so a missing package says which extra brings it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sp_adapter.errors import MissingExtraError

DEMO_EXTRA = 'pip install "sp-adapter[demo]"'
"""The command that installs the built-in photos' and the blur synthesis' packages."""

DEMO_PACKAGES: dict[str, str] = {
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "scipy": "scipy",
}
"""The import name of each package of the ``demo`` extra, and its name on PyPI."""


def import_extra(module: str, feature: str) -> ModuleType:
    """Import ``module`` (a package of the ``demo`` extra, or a submodule of one), or raise
    :class:`~sp_adapter.errors.MissingExtraError` naming ``feature`` and the install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.partition(".")[0]
        package = DEMO_PACKAGES.get(top, top)
        raise MissingExtraError(
            f"{feature} needs {package}, which is not installed (the demo extra brings it, the "
            f"core install does not): {DEMO_EXTRA}"
        ) from err


def require_demo_extra(feature: str) -> None:
    """Raise :class:`~sp_adapter.errors.MissingExtraError` unless every package of the
    ``demo`` extra imports (checked before a long run starts, not halfway through it)."""
    for module in DEMO_PACKAGES:
        import_extra(module, feature)
