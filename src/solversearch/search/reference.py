"""Reference trajectories: what the searched solver is taught to match.

A reference is a dense trajectory ``(times, states)`` from the same noise.  Two kinds:

* a registry solver with many steps -- ``euler:100`` / ``ddim:100`` are the paper's (cheap but only first order:
  on a smooth model Euler-100 is *less* accurate than a good 10-step solver), ``dpm++3m:100`` an accurate one;
* ``dopri5`` -- the probability-flow ODE solved adaptively (torchdiffeq) in float64 at tight tolerance: the
  exact solution up to ~1e-7, affordable on small models, used as ground truth for the exact test models.

``state_at`` reads a reference at any time by linear interpolation between its stored states, so the solver's
grid can move freely during the search (the paper rounds to the nearest reference index instead; that is kept
for the paper preset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..conventions import Schedule
from ..solvers import classic
from ..solvers.solver import sample

DEFAULT_DOPRI_TOL = (1e-7, 1e-9)


@dataclass
class Reference:
    times: torch.Tensor  # (L+1,) float64, noise end first
    states: torch.Tensor  # (L+1, B, ...) on the model's device
    spec: str

    @property
    def final(self) -> torch.Tensor:
        return self.states[-1]

    def state_at(self, t: torch.Tensor, mode: str = "interp") -> torch.Tensor:
        """The reference state at schedule time ``t`` (a scalar tensor).

        ``interp`` interpolates linearly between stored states and is differentiable in ``t``; ``nearest`` takes
        the closest stored state (the paper's rounding of ``t * L``), with no gradient.
        """
        increasing = bool(self.times[-1] > self.times[0])
        ts = self.times if increasing else self.times.flip(0)
        t = t.to(torch.float64).reshape(())
        hi = int(torch.searchsorted(ts, t.detach().reshape(1)).clamp(1, len(ts) - 1))
        lo = hi - 1
        w = ((t - ts[lo]) / (ts[hi] - ts[lo])).clamp(0.0, 1.0)
        if not increasing:
            lo, hi = len(ts) - 1 - lo, len(ts) - 1 - hi
        if mode == "nearest":
            return self.states[hi] if float(w.detach()) >= 0.5 else self.states[lo]
        if mode != "interp":
            raise ValueError(f"unknown alignment {mode!r}; known: interp, nearest")
        w = w.to(self.states.dtype)
        return self.states[lo] + w * (self.states[hi] - self.states[lo])

    def index(self, idx) -> "Reference":
        return Reference(self.times, self.states[:, idx], self.spec)


def ode_solve(model, noise: torch.Tensor, times: torch.Tensor, rtol: float = DEFAULT_DOPRI_TOL[0],
              atol: float = DEFAULT_DOPRI_TOL[1]) -> torch.Tensor:
    """Solve the probability-flow ODE ``dx/dt = alpha' x0 + sigma' eps`` at ``times`` (float64, dopri5).

    Returns the states at every requested time, shape ``(len(times), *noise.shape)``.
    """
    from torchdiffeq import odeint

    schedule: Schedule = model.schedule

    def f(t, x):
        x0, eps = model(x, t)
        return schedule.d_alpha(t) * x0.to(torch.float64) + schedule.d_sigma(t) * eps.to(torch.float64)

    with torch.no_grad():
        out = odeint(f, noise.to(torch.float64), times.to(torch.float64), rtol=rtol, atol=atol, method="dopri5",
                     options={"step_t": times.to(torch.float64)})
    return out.to(noise.dtype)


def parse_spec(spec: str) -> tuple[str, int]:
    """``"euler:100"`` -> ("euler", 100); ``"dopri5"`` -> ("dopri5", 0)."""
    if spec == "dopri5" or spec.startswith("dopri5:"):
        return "dopri5", int(spec.split(":")[1]) if ":" in spec else 200
    name, _, steps = spec.partition(":")
    if not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"reference {spec!r}: expected NAME:STEPS (e.g. euler:100, dpm++3m:100) or dopri5")
    if name not in classic.SOLVERS:
        raise ValueError(f"reference {spec!r}: unknown solver {name!r}; known: {', '.join(classic.SOLVERS)}")
    return name, int(steps)


def make_reference(model, noise: torch.Tensor, spec: str, grid: str = "uniform-t") -> Reference:
    """Compute a reference trajectory from ``noise`` (no gradients)."""
    name, steps = parse_spec(spec)
    schedule = model.schedule
    if name == "dopri5":
        from ..solvers.grids import make_grid

        times = make_grid(grid, steps, schedule)
        return Reference(times, ode_solve(model, noise, times), spec)
    solver = classic.build(name, steps * classic.SOLVERS[name].calls_per_step, schedule, grid)
    with torch.no_grad():
        _, states = sample(solver, model, noise, trajectory=True)
    return Reference(solver.time_tensor(), torch.stack(states), spec)


def reference_for(entry, noise, labels, spec: str, guidance: float, batch: int, progress: bool = False) -> Reference:
    """Reference trajectories for a set of noises, computed batch by batch."""
    from tqdm.auto import tqdm

    parts = spec.split(":")
    grid = parts[2] if len(parts) > 2 else "uniform-t"
    spec_core = ":".join(parts[:2])
    refs = []
    for k in tqdm(range(0, noise.shape[0], batch), desc=f"reference {spec} ({noise.shape[0]} samples)",
                  disable=not progress, leave=False):
        lab = None if labels is None else labels[k:k + batch]
        refs.append(make_reference(entry.wrap(lab, guidance), noise[k:k + batch], spec_core, grid))
    return Reference(refs[0].times, torch.cat([r.states for r in refs], 1), spec)
