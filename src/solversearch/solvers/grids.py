"""Time grids: N+1 points in schedule time from the noise end to the data end.

* ``uniform-t``: equal steps in the schedule's time (rectified flow: equal velocity steps; VP: DDIM's "uniform").
* ``uniform-lambda``: equal steps in log-SNR (dpm-solver's ``logSNR``).
* ``karras``: EDM's rho = 7 spacing in ``sigma/alpha`` between the schedule's (clipped) ends.
* ``quadratic``: dpm-solver's ``time_quadratic`` -- equal steps in sqrt(distance to the data end).

The log-SNR based grids span the schedule's own sigma/alpha range. Rectified flow's is infinite at both ends, so
there they place their interior points between sigma/alpha = 80 and 0.002 (EDM's range) and keep the exact ends
t = 0 and t = 1.
"""

from __future__ import annotations

import math

import torch

from ..conventions import Schedule

GRIDS = ("uniform-t", "uniform-lambda", "karras", "quadratic")
SIGMA_RATIO_RANGE = (0.002, 80.0)  # EDM's (sigma_min, sigma_max), used where the schedule's own ends are infinite


def _ratio_range(schedule: Schedule) -> tuple[float, float]:
    """The schedule's own sigma/alpha range; EDM's range only replaces an end that is infinite or zero."""
    hi = float(schedule.sigma(schedule.t_noise) / schedule.alpha(schedule.t_noise))
    lo = float(schedule.sigma(schedule.t_data) / schedule.alpha(schedule.t_data))
    if not 0.0 < lo < float("inf"):
        lo = SIGMA_RATIO_RANGE[0]
    if not 0.0 < hi < float("inf"):
        hi = SIGMA_RATIO_RANGE[1]
    return lo, hi


def make_grid(name: str, steps: int, schedule: Schedule, rho: float = 7.0) -> torch.Tensor:
    """The ``steps + 1`` times of a named grid (float64), first = ``schedule.t_noise``, last = ``schedule.t_data``."""
    if steps < 1:
        raise ValueError(f"a grid needs at least 1 step, got {steps}")
    t0, t1 = schedule.t_noise, schedule.t_data
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if name == "uniform-t":
        grid = t0 + (t1 - t0) * u
    elif name == "quadratic":
        grid = t1 + (t0 - t1) * (1.0 - u) ** 2
    elif name in ("uniform-lambda", "karras"):
        lo, hi = _ratio_range(schedule)
        if name == "uniform-lambda":
            log_ratio = math.log(hi) + u * math.log(lo / hi)
        else:
            log_ratio = rho * torch.log(hi ** (1 / rho) + u * (lo ** (1 / rho) - hi ** (1 / rho)))
        grid = schedule.t_of_lam(-log_ratio)
    else:
        raise ValueError(f"unknown time grid {name!r}; known: {', '.join(GRIDS)}")
    grid = grid.clone()
    grid[0], grid[-1] = t0, t1
    return grid
