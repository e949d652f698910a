"""solversearch: differentiable solver search for fast diffusion and rectified-flow sampling.

The core (``conventions``, ``models``, ``solvers``, ``search``, ``evaluation``, ``cli``) needs only PyTorch;
``SolverScheduler`` (diffusers pipelines) is imported lazily so that diffusers stays optional.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "SolverScheduler":  # lazy: only this import needs diffusers
        from .integrations.diffusers_scheduler import SolverScheduler

        return SolverScheduler
    raise AttributeError(f"module 'solversearch' has no attribute {name!r}")
