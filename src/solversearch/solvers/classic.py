"""Hand-made solvers, written as data in the same form as the searched solver, behind one registry.

``build(name, nfe, schedule, grid)`` returns a :class:`Solver`; ``SOLVERS`` says what each name is.  Linear
multistep solvers are expressed by their coefficient matrix on the actual grid, which is also how a search can
start from any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..conventions import Schedule, is_flow
from .grids import GRIDS, make_grid
from .solver import LAMBDA_CLAMP, Solver, SolverError, make_solver

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


def default_form(schedule: Schedule) -> str:
    """The paper's searched form: velocity for rectified flow, data prediction for VP."""
    return "velocity" if is_flow(schedule) else "data"


def lam_np(schedule: Schedule, times) -> np.ndarray:
    return schedule.lam(torch.as_tensor(times, dtype=torch.float64)).clamp(-LAMBDA_CLAMP, LAMBDA_CLAMP).numpy()


def adams_matrix(times, order: int, form: str, schedule: Schedule, *, final_order1_at_zero: bool = True):
    """Adams-Bashforth coefficients on a non-uniform grid, for any form.

    Step i integrates the Lagrange polynomial through the last ``k = min(order, i + 1)`` predictions over
    ``[u_i, u_{i+1}]`` with the form's weight: ``u = t`` and weight 1 (velocity form, classic AB);
    ``u = lambda`` and weight ``e^lambda`` (data form) or ``e^-lambda`` (noise form), the exponential
    integrators.  Dividing by the integral of the weight gives a row that sums to 1.
    """
    times = np.asarray(times, dtype=np.float64)
    n = len(times) - 1
    sig = schedule.sigma(torch.as_tensor(times)).numpy()
    u = times if form == "velocity" else lam_np(schedule, times)
    M = np.zeros((n, n))
    for i in range(n):
        k = min(order, i + 1)
        if final_order1_at_zero and form != "velocity" and sig[i + 1] == 0.0:
            k = 1  # the exponential weight makes higher orders blow up on an infinite log-SNR step
        nodes = u[i - k + 1: i + 1]
        lo, hi = u[i], u[i + 1]
        s = 0.5 * (hi - lo) * _GL_NODES + 0.5 * (hi + lo)
        w = 0.5 * (hi - lo) * _GL_WEIGHTS
        if form == "data":
            w = w * np.exp(s - hi)
        elif form == "noise":
            w = w * np.exp(lo - s)
        for a, ja in enumerate(range(i - k + 1, i + 1)):
            basis = np.ones_like(s)
            for b, _ in enumerate(range(i - k + 1, i + 1)):
                if b != a:
                    basis = basis * (s - nodes[b]) / (nodes[a] - nodes[b])
            M[i, ja] = (w * basis).sum() / w.sum()
    return M


def dpmpp_matrix(times, order: int, schedule: Schedule, *, lower_order_final: bool = True):
    """DPM-Solver++ multistep (2M/3M, data prediction) as rows of the data form (Lu et al. 2022, dpm-solver code).

    Lower orders at the start; with ``lower_order_final`` the last steps drop order when fewer than 10 steps are
    taken (dpm-solver's rule); a step onto sigma = 0 is first order (diffusers' rule for flow sigmas).
    """
    times = np.asarray(times, dtype=np.float64)
    n = len(times) - 1
    lam = lam_np(schedule, times)
    sig = schedule.sigma(torch.as_tensor(times)).numpy()
    M = np.zeros((n, n))
    for i in range(n):
        k = min(order, i + 1)
        if lower_order_final and n < 10:
            k = min(k, n - i)
        if sig[i + 1] == 0.0:
            k = 1
        h = lam[i + 1] - lam[i]
        if k == 1:
            M[i, i] = 1.0
        elif k == 2:
            r0 = (lam[i] - lam[i - 1]) / h
            M[i, i], M[i, i - 1] = 1 + 0.5 / r0, -0.5 / r0
        else:
            r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            phi1 = np.expm1(-h)
            phi2 = phi1 / h + 1.0
            phi3 = phi2 / h - 0.5
            # D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1, D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0+r1)
            d10 = np.array([1 / r0, -1 / r0, 0.0])
            d11 = np.array([0.0, 1 / r1, -1 / r1])
            d1 = d10 + r0 / (r0 + r1) * (d10 - d11)
            d2 = (d10 - d11) / (r0 + r1)
            row = np.array([1.0, 0.0, 0.0]) - (phi2 / phi1) * d1 + (phi3 / phi1) * d2
            M[i, i], M[i, i - 1], M[i, i - 2] = row
    return M


IPNDM_ROWS = {1: [1.0], 2: [-1 / 2, 3 / 2], 3: [5 / 12, -16 / 12, 23 / 12], 4: [-9 / 24, 37 / 24, -59 / 24, 55 / 24]}


def ipndm_matrix(n: int, order: int = 4):
    """iPNDM (Zhang & Chen 2022): Adams-Bashforth coefficients of *uniform* steps, applied on any grid."""
    M = np.zeros((n, n))
    for i in range(n):
        row = IPNDM_ROWS[min(order, i + 1)]
        M[i, i - len(row) + 1: i + 1] = row
    return M


@dataclass(frozen=True)
class SolverSpec:
    """A registry entry: how to build the solver and what one step costs."""

    name: str
    description: str
    build: Callable[[torch.Tensor, Schedule], Solver]
    calls_per_step: int = 1
    default_grid: dict | None = None  # per schedule family ("rf" / "vp"), the grid the literature uses

    def steps_for_nfe(self, nfe: int, schedule: Schedule) -> int:
        if self.calls_per_step == 2:  # Heun: 2 calls per step, the step onto sigma = 0 is Euler
            return (nfe + 1) // 2 if is_flow(schedule) else nfe // 2
        return nfe


def _linear(name, form_fn, matrix_fn):
    def build(times, schedule):
        form = form_fn(schedule)
        return make_solver("linear", form, times, schedule, coeffs=matrix_fn(times, form, schedule), name=name)
    return build


def _flow_or(flow_form, vp_form):
    return lambda s: flow_form if is_flow(s) else vp_form


SOLVERS: dict[str, SolverSpec] = {}


def register(spec: SolverSpec) -> SolverSpec:
    SOLVERS[spec.name] = spec
    return spec


register(SolverSpec("euler", "Euler in schedule time (velocity form); the rectified-flow baseline",
                    _linear("euler", lambda s: "velocity", lambda t, f, s: np.eye(len(t) - 1))))
register(SolverSpec("ddim", "DDIM = first-order DPM-Solver++ (data form); equals Euler on rectified flow",
                    _linear("ddim", lambda s: "data", lambda t, f, s: np.eye(len(t) - 1))))
for _k in (2, 3, 4):
    register(SolverSpec(
        f"ab{_k}", f"Adams-Bashforth order {_k} on the actual grid (velocity form on RF, exponential/data on VP)",
        _linear(f"ab{_k}", default_form, lambda t, f, s, k=_k: adams_matrix(t, k, f, s))))
for _k in (2, 3):
    register(SolverSpec(
        f"dpm++{_k}m", f"DPM-Solver++ {_k}M multistep, data prediction (works on RF models too)",
        _linear(f"dpm++{_k}m", lambda s: "data", lambda t, f, s, k=_k: dpmpp_matrix(t, k, s))))
register(SolverSpec("ipndm", "iPNDM order 4 (uniform-step AB coefficients; velocity on RF, EDM noise form on VP)",
                    _linear("ipndm", _flow_or("velocity", "noise"), lambda t, f, s: ipndm_matrix(len(t) - 1))))
register(SolverSpec("heun", "Heun / EDM 2nd order, 2 calls per step (velocity on RF, EDM noise form on VP)",
                    lambda t, s: make_solver("heun", "velocity" if is_flow(s) else "noise", t, s, name="heun"),
                    calls_per_step=2))
register(SolverSpec("unipc", "UniPC-2 (bh2), data prediction, predictor-corrector at 1 call per step",
                    lambda t, s: make_solver("unipc", "data", t, s, name="unipc", order=2)))


def build(name: str, nfe: int, schedule: Schedule, grid: str | torch.Tensor = "uniform-t") -> Solver:
    """The named classic solver with ``nfe`` model calls on the named grid (or on explicit times)."""
    spec = SOLVERS.get(name)
    if spec is None:
        raise SolverError(f"unknown solver {name!r}; known: {', '.join(SOLVERS)}")
    if nfe < 1:
        raise SolverError(f"NFE must be at least 1, got {nfe}")
    steps = spec.steps_for_nfe(nfe, schedule)
    if steps < 1:
        raise SolverError(f"{name} needs at least {spec.calls_per_step} model calls, got NFE {nfe}")
    times = grid if torch.is_tensor(grid) else make_grid(grid, steps, schedule)
    solver = spec.build(times, schedule)
    return solver.replace(meta={"grid": grid if isinstance(grid, str) else "custom"})


__all__ = ["SOLVERS", "GRIDS", "build", "adams_matrix", "dpmpp_matrix", "ipndm_matrix", "default_form",
           "SolverSpec", "register"]
