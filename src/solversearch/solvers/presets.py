"""The paper's published solvers (Wang et al., ICML 2025, official code MCG-NJU/NeuralSolver) as presets.

The data file ships with the package (``presets/paper_solvers.json``, extracted from the official repository).
Conventions of that release, converted here once:

* rectified-flow sets (searched on SiT-XL/2 and FlowDCN-B/2) multiply velocities; the times start at 0 and step
  by ``timedeltas`` (renormalised: they are rounded to 4 decimals and sum to 1 +- 2e-4) to exactly 1;
* the DiT-XL/2 set multiplies data predictions in the omega = alpha/sigma update on the continuous linear VP
  schedule (beta 0.1 -> 20), its times start at 0.999 and step down by ``timedeltas``, the last clamped to 1e-3
  (the paper's clamp).  It is the single-update form (paper Eq. 19), not the double update of the released
  ``ddpm/neuralsolver.py``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from ..conventions import RectifiedFlow, VPLinear
from .solver import Solver, SolverError, make_solver

PRESETS = {"sit-xl-2-256": "sit_xl2", "flowdcn-b-2-256": "flowdcn_b2", "dit-xl-2-256": "dit_xl2"}


@lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(resources.files("solversearch").joinpath("presets/paper_solvers.json").read_text())


def preset_nfes(name: str) -> list[int]:
    key = PRESETS.get(name)
    if key is None:
        raise SolverError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return sorted(int(k) for k in _data()[key])


def load_preset(name: str, nfe: int) -> Solver:
    """A published solver by preset name and NFE, e.g. ``load_preset("dit-xl-2-256", 8)``."""
    nfes = preset_nfes(name)
    if nfe not in nfes:
        raise SolverError(f"preset {name!r} has no NFE {nfe}; it has {', '.join(map(str, nfes))}")
    entry = _data()[PRESETS[name]][str(nfe)]
    dt = np.asarray(entry["timedeltas"], dtype=np.float64)
    c = np.tril(np.asarray(entry["coeffs"], dtype=np.float64), -1)
    M = c + np.diag(1.0 - c.sum(1))
    meta = {"preset": name, "source": "Wang et al. ICML 2025, MCG-NJU/NeuralSolver released parameters"}
    if name == "dit-xl-2-256":
        times = np.concatenate([[0.999], np.maximum(0.999 - np.cumsum(dt), 1e-3)])
        return make_solver("linear", "data", times, VPLinear(), coeffs=M, name=name, meta=meta)
    times = np.concatenate([[0.0], np.cumsum(dt / dt.sum())])
    times[-1] = 1.0
    return make_solver("linear", "velocity", times, RectifiedFlow(), coeffs=M, name=name, meta=meta)
