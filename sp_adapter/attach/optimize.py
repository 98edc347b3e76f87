"""Faster wrapped models: the prior's path compiled, with an eager fallback.

The prior adds a nearly fixed cost per forward on a GPU: the launches of the student's
many small kernels and of each level's MLA/SAT convolutions, all at the prior's (low)
resolution. :func:`compile_prior` compiles exactly that part, the prior learner and every
SPE's maps (Eq. 5 and the convolutions of Eq. 6), with ``torch.compile`` (CUDA graphs on
a GPU: ``mode="reduce-overhead"``); the network itself and the full-resolution
modulation stay as they are. :func:`optimize_for_inference` is the one-line switch for
deployment. Where compiling fails, the prior runs eagerly after a one-line warning, so
the output is the eager one either way.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from sp_adapter.attach.state import get_hook, get_prior
from sp_adapter.errors import LevelNotFoundError
from sp_adapter.prior.embedding import SemanticPriorEmbedding


class PriorCompileWarning(UserWarning):
    """Compiling the prior's path failed; it runs eagerly (same output, no speed-up)."""


class _Guarded:
    """A compiled callable that falls back to ``eager`` for good if compiling fails.

    When the compiled call raises, the eager call runs: if it raises too, the input was
    at fault and its error propagates (compiling stays on); if it succeeds, compiling was
    at fault: one warning, and every later call is eager."""

    def __init__(self, compiled: Callable, eager: Callable, what: str) -> None:
        self.compiled: Callable | None = compiled
        self.eager = eager
        self.what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any compiler failure means eager
            out = self.eager(*args, **kwargs)
            self.compiled = None
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            warnings.warn(
                f"sp_adapter: compiling {self.what} failed ({type(error).__name__}: "
                f"{first_line}); it runs eagerly",
                PriorCompileWarning, stacklevel=2,
            )
            return out


def _compile(fn: Callable, what: str, options: dict) -> Callable:
    try:
        compiled = torch.compile(fn, **options)
    except Exception as error:  # noqa: BLE001 - e.g. no compiler for this Python
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"sp_adapter: compiling {what} failed ({type(error).__name__}: "
                      f"{first_line}); it runs eagerly", PriorCompileWarning, stacklevel=3)
        return fn
    return _Guarded(compiled, fn, what)


def compile_prior(
    model: nn.Module, *, mode: str | None = None, backend: str = "inductor", **options: Any
) -> nn.Module:
    """Compile the prior's path of a wrapped ``model`` in place and return ``model``.

    The prior learner and each SPE's :meth:`~sp_adapter.prior.embedding.SemanticPriorEmbedding.maps`
    are compiled with ``torch.compile(backend=backend, mode=mode, **options)``; ``mode``
    defaults to ``"reduce-overhead"`` (CUDA graphs) when the prior's parameters are on a
    GPU and to the compiler's default elsewhere. Works in training and inference; a
    failure to compile gives one :class:`PriorCompileWarning` and the eager path. Copies
    of the model (``copy.deepcopy``) and saved priors are plain eager modules;
    :func:`decompile_prior` undoes this.
    """
    prior = get_prior(model)
    if mode is None:
        on_gpu = any(p.is_cuda for p in prior.parameters())
        mode = "reduce-overhead" if on_gpu and backend == "inductor" else None
    kwargs = dict(options, backend=backend)
    if mode is not None:
        kwargs["mode"] = mode
    decompile_prior(model)
    learner = prior.learner
    learner._compiled_call_impl = _compile(learner._call_impl, "the prior learner", kwargs)
    for name, embedding in prior.embeddings.items():
        embedding.fast_maps = _compile(embedding.reference_maps, f"the maps of level {name!r}",
                                       kwargs)
    return model


def decompile_prior(model: nn.Module) -> nn.Module:
    """Undo :func:`compile_prior`: the prior's path runs eagerly again."""
    prior = get_prior(model)
    prior.learner._compiled_call_impl = None
    for embedding in prior.embeddings.values():
        if isinstance(embedding, SemanticPriorEmbedding):
            embedding.fast_maps = None
    return model


def is_prior_compiled(model: nn.Module) -> bool:
    """Whether the prior's path of ``model`` is compiled (and has not fallen back)."""
    impl = get_prior(model).learner._compiled_call_impl
    return isinstance(impl, _Guarded) and impl.compiled is not None


def optimize_for_inference(model: nn.Module, *, compile: bool | None = None,
                           recompute_skips: bool | Sequence[str] = False,
                           **options: Any) -> nn.Module:
    """Ready a wrapped ``model`` for fast inference, in place; returns ``model``.

    Sets eval mode and, where it is safe and pays (``compile=None``: the prior's
    parameters are on a CUDA GPU), compiles the prior's path with CUDA graphs
    (:func:`compile_prior`, ``options`` go to it). ``compile=True`` compiles on any
    device, ``False`` never. The memory-lean modulation needs no switch: every wrapped
    model uses it wherever nothing needs a gradient.

    ``recompute_skips`` (``True``: every level with a skip, or level names): a level
    whose skip module's inputs are much smaller than its output (DeepDeblur's head conv)
    recomputes ``f_en`` at its site instead of holding it through the forward, where
    nothing needs a gradient. The first forward checks that recomputing gives the
    captured output exactly; where not (keyword arguments, inputs changed in place
    later), one warning and the level holds its skip as usual.
    """
    prior = get_prior(model)
    model.eval()
    if recompute_skips:
        hook = get_hook(model)
        with_skip = [name for name, level in hook.levels.items() if level.skip]
        names = with_skip if recompute_skips is True else list(recompute_skips)
        for name in names:
            if name not in with_skip:
                close = difflib.get_close_matches(name, with_skip, n=len(with_skip), cutoff=0)
                raise LevelNotFoundError(
                    f"recompute_skips: {name!r} is not a level with a skip module; levels "
                    f"with one: {close or 'none'}")
        hook.recompute_skips = dict.fromkeys(names, False)  # False: not verified yet
    if compile is None:
        compile = any(p.is_cuda for p in prior.parameters())
    if compile:
        compile_prior(model, **options)
    return model
