"""Integrations with other libraries; each submodule imports its library only when it is imported itself.

* :mod:`solversearch.integrations.diffusers_scheduler` -- :class:`SolverScheduler`, a diffusers scheduler that
  plays searched or published (preset) linear solvers inside diffusers pipelines.
* :mod:`solversearch.integrations.diffusers_models` -- adapters that turn diffusers networks (``UNet2DModel``,
  ``DiTTransformer2DModel``, ``SD3Transformer2DModel``, ``FluxTransformer2DModel``) into
  :class:`~solversearch.models.ModelEntry` objects for search and native sampling.

Both need ``diffusers`` (``pip install "solversearch[diffusers]"``); the core package does not.
"""

from __future__ import annotations

__all__ = ["SolverScheduler"]


def __getattr__(name: str):
    if name == "SolverScheduler":
        from .diffusers_scheduler import SolverScheduler

        return SolverScheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
