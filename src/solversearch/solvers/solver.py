"""A solver is data: a time grid, a coefficient matrix and the form they are applied in, plus one runner.

Every linear multistep solver in this project -- Euler, DDIM, Adams-Bashforth, DPM-Solver++, iPNDM and the
searched solver -- is one update rule with different numbers::

    x_{i+1} = a_i * x_i + b_i * sum_{j<=i} M[i, j] * P_j

where ``P_j`` is what the model predicted at ``(x_j, t_j)`` and ``(a_i, b_i, P)`` depend only on the *form*:

* ``velocity``: ``a = 1``, ``b = t_{i+1} - t_i``, ``P = dx/dt`` (the paper's rectified-flow solver; Euler, AB);
* ``data``: ``a = sigma_{i+1}/sigma_i``, ``b = alpha_{i+1} - sigma_{i+1} alpha_i/sigma_i`` (= sigma_{i+1}
  (omega_{i+1} - omega_i), omega = alpha/sigma), ``P = x0`` (the paper's VP solver, Eq. 19; DDIM, DPM-Solver++);
* ``noise``: ``a = alpha_{i+1}/alpha_i``, ``b = sigma_{i+1} - alpha_{i+1} sigma_i/alpha_i``, ``P = eps``
  (EDM's sigma-space view; iPNDM and Heun on VP models).

Rows of M sum to 1 (a constant prediction is integrated exactly). Two solvers are not of this linear kind and
get their own loop: Heun (two model calls per step) and UniPC (a corrector that reuses the next prediction).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.utils.checkpoint

from ..conventions import Schedule, get_schedule, schedule_config
from ..models.wrapper import ModelError

FORMS = ("velocity", "data", "noise")
KINDS = ("linear", "heun", "unipc")


class SolverError(ValueError):
    """A solver that cannot be used as asked (wrong schedule, malformed numbers)."""


@dataclass(frozen=True)
class Solver:
    """An N-step sampler as plain numbers. ``times`` holds N+1 points in schedule time, noise end first."""

    kind: str
    form: str
    times: tuple[float, ...]
    schedule: dict = field(hash=False)  # conventions.schedule_config(...)
    coeffs: tuple[tuple[float, ...], ...] | None = None
    name: str = "custom"
    order: int | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @property
    def nfe(self) -> int:
        """Model evaluations per sample (a guided evaluation counts once, as in the literature's NFE)."""
        if self.kind == "heun":
            ends_at_zero = float(get_schedule(**self.schedule).sigma(self.times[-1])) == 0.0
            return 2 * self.steps - (1 if ends_at_zero else 0)
        return self.steps

    def replace(self, **changes) -> "Solver":
        return dataclasses.replace(self, **changes)

    def matrix(self) -> torch.Tensor:
        if self.coeffs is None:
            raise SolverError(f"solver {self.name!r} of kind {self.kind!r} has no coefficient matrix")
        return torch.tensor(self.coeffs, dtype=torch.float64)

    def time_tensor(self) -> torch.Tensor:
        return torch.tensor(self.times, dtype=torch.float64)


def make_solver(kind: str, form: str, times, schedule: Schedule, coeffs=None, **kw) -> Solver:
    """Build a :class:`Solver` from tensors or sequences (stored as plain floats, so it is hashable data)."""
    times = tuple(float(t) for t in (times.tolist() if torch.is_tensor(times) else times))
    if coeffs is not None:
        rows = coeffs.tolist() if torch.is_tensor(coeffs) else coeffs
        coeffs = tuple(tuple(float(c) for c in row) for row in rows)
    return Solver(kind=kind, form=form, times=times, schedule=schedule_config(schedule), coeffs=coeffs, **kw)


# --- the runner ---------------------------------------------------------------------------------------------

def step_factors(schedule: Schedule, form: str, t_i: torch.Tensor, t_n: torch.Tensor):
    """``(a, b)`` of one step ``t_i -> t_n`` in the given form (float64, differentiable in the times)."""
    if form == "velocity":
        return torch.ones_like(t_i), t_n - t_i
    a_i, s_i, a_n, s_n = schedule.alpha(t_i), schedule.sigma(t_i), schedule.alpha(t_n), schedule.sigma(t_n)
    if form == "data":
        return s_n / s_i, a_n - s_n * a_i / s_i
    if form == "noise":
        return a_n / a_i, s_n - a_n * s_i / a_i
    raise SolverError(f"unknown solver form {form!r}; known: {', '.join(FORMS)}")


def form_prediction(schedule: Schedule, form: str, t, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    if form == "data":
        return x0
    if form == "noise":
        return eps
    return schedule.d_alpha(t).to(x0.dtype) * x0 + schedule.d_sigma(t).to(x0.dtype) * eps


def _evaluate(model, x, t, step: int):
    try:
        return model(x, t)
    except ModelError as e:
        raise ModelError(f"step {step}: {e}") from None


def run_linear(model: Callable, x: torch.Tensor, times: torch.Tensor, M: torch.Tensor, form: str,
               schedule: Schedule, *, trajectory: bool = False, callback: Callable | None = None,
               grad_checkpoint: bool = False):
    """Integrate with the linear multistep rule; differentiable in ``times`` and ``M`` (the search uses this).

    Returns the final state, or ``(final, [x_0, ..., x_N])`` with ``trajectory=True``.  With
    ``grad_checkpoint`` each model call keeps no activations for backward and is recomputed there instead, so
    the memory of backpropagating through N calls does not grow with N (the network runs twice per step).
    """
    n = times.shape[0] - 1
    states, preds = [x], []
    use_ckpt = grad_checkpoint and torch.is_grad_enabled()
    for i in range(n):
        if use_ckpt:
            x0, eps = torch.utils.checkpoint.checkpoint(_evaluate, model, x, times[i], i, use_reentrant=False)
        else:
            x0, eps = _evaluate(model, x, times[i], i)
        preds.append(form_prediction(schedule, form, times[i], x0, eps))
        a, b = step_factors(schedule, form, times[i], times[i + 1])
        row = M[i, : i + 1].to(x.dtype)
        mix = preds[i] * row[i]
        for j in range(i):
            mix = mix + preds[j] * row[j]
        x = a.to(x.dtype) * x + b.to(x.dtype) * mix
        states.append(x)
        if callback is not None:
            callback({"i": i, "t": times[i + 1], "x": x, "x0": x0})
    return (x, states) if trajectory else x


def run_heun(model, x, times, form, schedule, *, trajectory=False, callback=None):
    """Heun's method (trapezoid predictor-corrector) in the given form; the step onto sigma = 0 is Euler (EDM)."""
    states = [x]
    for i in range(times.shape[0] - 1):
        t, tn = times[i], times[i + 1]
        a, b = (f.to(x.dtype) for f in step_factors(schedule, form, t, tn))
        p = form_prediction(schedule, form, t, *_evaluate(model, x, t, i))
        x_e = a * x + b * p
        if float(schedule.sigma(tn)) == 0.0:
            x = x_e
        else:
            p2 = form_prediction(schedule, form, tn, *_evaluate(model, x_e, tn, i))
            x = a * x + b * 0.5 * (p + p2)
        states.append(x)
        if callback is not None:
            callback({"i": i, "t": tn, "x": x})
    return (x, states) if trajectory else x


def run_unipc(model, x, times, schedule, order: int = 2, *, lower_order_final: bool = True,
              trajectory=False, callback=None):
    """UniPC (variant bh2, data prediction), multistep: UniP predictor + UniC corrector, one call per step.

    Follows ``uni_pc.py``'s ``multistep_uni_pc_bh_update`` (Zhao et al. 2023): the corrector uses the model
    output at the predicted point, and that same output is reused by the next step, so NFE = steps.
    """
    lam = _lam(schedule, times)
    alpha, sigma = schedule.alpha(times), schedule.sigma(times)
    n = times.shape[0] - 1
    m_prev = [_evaluate(model, x, times[0], 0)[0]]
    idx_prev = [0]
    states = [x]
    for step in range(1, n + 1):
        k = min(order, step, n + 1 - step) if lower_order_final else min(order, step)
        if float(sigma[step]) == 0.0:
            k = 1
        use_corrector = step < n
        i0 = idx_prev[-1]
        h = lam[step] - lam[i0]
        rks, d1s = [], []
        for q in range(1, k):
            iq = idx_prev[-(q + 1)]
            rk = (lam[iq] - lam[i0]) / h
            rks.append(rk)
            d1s.append((m_prev[-(q + 1)] - m_prev[-1]) / rk.to(x.dtype))
        rks.append(torch.ones((), dtype=torch.float64))
        rks_t = torch.stack(rks)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = torch.expm1(hh)  # bh2
        fact, R, bvec = 1, [], []
        for q in range(1, k + 1):
            R.append(rks_t ** (q - 1))
            bvec.append(h_phi_k * fact / b_h)
            fact *= q + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        R, bvec = torch.stack(R), torch.stack(bvec)
        x_base = (sigma[step] / sigma[i0]).to(x.dtype) * x - (alpha[step] * h_phi_1).to(x.dtype) * m_prev[-1]
        ab = (alpha[step] * b_h).to(x.dtype)
        if d1s:
            rhos_p = torch.tensor([0.5], dtype=torch.float64) if k == 2 else torch.linalg.solve(R[:-1, :-1], bvec[:-1])
            pred_res = sum(r.to(x.dtype) * d for r, d in zip(rhos_p, d1s))
            x_new = x_base - ab * pred_res
        else:
            x_new = x_base
        if use_corrector:
            m_t = _evaluate(model, x_new, times[step], step)[0]
            rhos_c = torch.tensor([0.5], dtype=torch.float64) if k == 1 else torch.linalg.solve(R, bvec)
            corr = sum((r.to(x.dtype) * d for r, d in zip(rhos_c[:-1], d1s)), torch.zeros_like(x))
            x_new = x_base - ab * (corr + rhos_c[-1].to(x.dtype) * (m_t - m_prev[-1]))
            m_prev.append(m_t)
            idx_prev.append(step)
        x = x_new
        states.append(x)
        if callback is not None:
            callback({"i": step - 1, "t": times[step], "x": x})
    return (x, states) if trajectory else x


LAMBDA_CLAMP = 40.0


def _lam(schedule: Schedule, times: torch.Tensor) -> torch.Tensor:
    """log-SNR clamped to +-40: rectified flow reaches +-inf at its ends, and e^-40 is below float64 noise."""
    return schedule.lam(times).clamp(-LAMBDA_CLAMP, LAMBDA_CLAMP)


def check_compatible(solver: Solver, schedule: Schedule) -> None:
    """Refuse a solver written for another noise schedule.

    The coefficients and the time grid are fitted to one schedule's alpha and sigma (paper App. D: they do not
    transfer), so every parameter that shapes them must match, not only the name.  The network time scale only
    changes what the network is fed, so it may differ (the paper's SiT solvers run on any rectified flow).
    """
    if solver.schedule.get("name") != schedule.name:
        raise SolverError(f"solver {solver.name!r} is for the {solver.schedule.get('name')!r} schedule, "
                          f"but the model uses {schedule.name!r}")
    own = schedule_config(schedule)
    for key, value in solver.schedule.items():
        if key in ("name", "time_scale") or key not in own:
            continue
        if not math.isclose(float(value), float(own[key]), rel_tol=1e-6):
            raise SolverError(f"solver {solver.name!r} was made for {schedule.name} with {key}={value}, but the "
                              f"model's schedule has {key}={own[key]}; coefficients do not transfer across noise "
                              f"schedules: search a solver for this model")
    for t in (solver.times[0], solver.times[-1]):
        if not schedule.contains(t):
            raise SolverError(f"solver {solver.name!r} has time {t} outside the schedule's range {schedule.span}")


def sample(solver: Solver, model, noise: torch.Tensor, *, trajectory: bool = False,
           callback: Callable | None = None):
    """Run ``solver`` from ``noise`` with a wrapped model (:class:`~solversearch.models.wrapper.WrappedModel`).

    This is the one runner every comparison in the project goes through.
    """
    schedule = model.schedule
    check_compatible(solver, schedule)
    times = solver.time_tensor()
    if solver.kind == "linear":
        return run_linear(model, noise, times, solver.matrix(), solver.form, schedule,
                          trajectory=trajectory, callback=callback)
    if solver.kind == "heun":
        return run_heun(model, noise, times, solver.form, schedule, trajectory=trajectory, callback=callback)
    if solver.kind == "unipc":
        return run_unipc(model, noise, times, schedule, order=solver.order or 2, trajectory=trajectory,
                         callback=callback)
    raise SolverError(f"unknown solver kind {solver.kind!r}; known: {', '.join(KINDS)}")

