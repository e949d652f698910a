"""Noise schedules and time conventions: the one place where time is defined.

Every model in this project is a Gaussian path ``x_t = alpha(t) * x_data + sigma(t) * noise``.  The time ``t``
is *the schedule's own time* and every solver grid is written in it, ordered from the noise end to the data end:

* ``rf`` (rectified flow, SiT/FlowDCN/SD3/Flux): ``alpha = t``, ``sigma = 1 - t``; ``t = 0`` is noise, ``t = 1`` data.
  The model's velocity is ``dx/dt = x_data - noise``.
* ``vp-linear`` (continuous VP-SDE, linear beta 0.1 -> 20, as score-SDE and the paper's DiT solvers):
  ``t = 1`` is noise, ``t = 1e-3`` is the data end (the usual clamp).
* ``ddpm`` (the discrete DDPM table, beta linear 1e-4 -> 0.02 over 1000 steps, as DiT/ADM): the table entry n sits
  at ``t = (n + 1) / 1000`` and ``log alpha`` is interpolated linearly between entries (dpm-solver's convention),
  so ``t`` runs from 1 (timestep 999) to 1e-3 (timestep 0).

Conversions to other conventions live here too, each with a round-trip test: diffusers' flow sigma (``1 - t``),
model time inputs (``t``, ``1000 t``, integer DDPM timesteps).  All schedule arithmetic is done in float64; it is
differentiable in ``t`` so that a search can move the time grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCHEDULES = ("rf", "vp-linear", "ddpm")


def _as_t(t) -> torch.Tensor:
    return t.to(torch.float64) if torch.is_tensor(t) else torch.as_tensor(t, dtype=torch.float64)


def interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (``numpy.interp`` for increasing ``xp``), differentiable in ``x``."""
    idx = torch.searchsorted(xp, x.detach().contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return f0 + (f1 - f0) * (x - x0) / (x1 - x0)


class Schedule:
    """A Gaussian path ``x_t = alpha(t) x0 + sigma(t) eps`` with the derivatives the solvers need."""

    name: str
    t_noise: float  # where sampling starts
    t_data: float  # where sampling ends

    def alpha(self, t) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t) -> torch.Tensor:
        raise NotImplementedError

    def d_alpha(self, t) -> torch.Tensor:
        raise NotImplementedError

    def d_sigma(self, t) -> torch.Tensor:
        raise NotImplementedError

    def lam(self, t) -> torch.Tensor:
        """Half log-SNR ``lambda = log(alpha / sigma)``; increases from the noise end to the data end."""
        t = _as_t(t)
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def t_of_lam(self, lam) -> torch.Tensor:
        raise NotImplementedError

    def model_time(self, t) -> torch.Tensor:
        """The time value the network was trained with (its own convention)."""
        raise NotImplementedError

    @property
    def span(self) -> tuple[float, float]:
        return (self.t_noise, self.t_data)

    def contains(self, t: float, tol: float = 1e-9) -> bool:
        lo, hi = min(self.span), max(self.span)
        return lo - tol <= t <= hi + tol

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, repr=False)
class RectifiedFlow(Schedule):
    """``x_t = t x_data + (1 - t) noise``; the model sees ``t`` itself (SiT) or ``time_scale * t``."""

    time_scale: float = 1.0
    name: str = "rf"
    t_noise: float = 0.0
    t_data: float = 1.0

    def alpha(self, t):
        return _as_t(t)

    def sigma(self, t):
        return 1.0 - _as_t(t)

    def d_alpha(self, t):
        return torch.ones_like(_as_t(t))

    def d_sigma(self, t):
        return -torch.ones_like(_as_t(t))

    def t_of_lam(self, lam):
        return torch.sigmoid(_as_t(lam))

    def model_time(self, t):
        return _as_t(t) * self.time_scale


@dataclass(frozen=True, repr=False)
class VPLinear(Schedule):
    """Continuous VP-SDE with ``beta(t) = beta_min + t (beta_max - beta_min)``; model input ``time_scale * t``."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    time_scale: float = 1000.0
    name: str = "vp-linear"
    t_noise: float = 1.0
    t_data: float = 1e-3

    def log_alpha(self, t):
        t = _as_t(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        return torch.exp(self.log_alpha(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def d_alpha(self, t):
        t = _as_t(t)
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        return -0.5 * beta * self.alpha(t)

    def d_sigma(self, t):
        t = _as_t(t)
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def lam(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2.0 * la))

    def t_of_lam(self, lam):
        # closed form from dpm-solver's NoiseScheduleVP.inverse_lambda
        lam = _as_t(lam)
        tmp = 2.0 * (self.beta_max - self.beta_min) * torch.logaddexp(-2.0 * lam, torch.zeros_like(lam))
        delta = self.beta_min**2 + tmp
        return tmp / (torch.sqrt(delta) + self.beta_min) / (self.beta_max - self.beta_min)

    def model_time(self, t):
        return _as_t(t) * self.time_scale


class DDPMDiscrete(Schedule):
    """The discrete DDPM table seen as a continuous schedule (dpm-solver's ``NoiseScheduleVP('discrete')``).

    Entry ``n`` (``n = 0..N-1``) sits at ``t_n = (n + 1) / N``; ``log alpha`` is linear in ``t`` between entries.
    The network is fed the (fractional) timestep ``N t - 1``, which is the integer ``n`` on the table.
    """

    name = "ddpm"

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000):
        self.beta_start, self.beta_end, self.N = beta_start, beta_end, num_train_timesteps
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        self.log_alpha_table = 0.5 * torch.cumsum(torch.log1p(-betas), 0)
        self.t_table = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
        self.t_noise, self.t_data = 1.0, 1.0 / num_train_timesteps

    def __repr__(self) -> str:
        return f"DDPMDiscrete(beta_start={self.beta_start}, beta_end={self.beta_end}, N={self.N})"

    def __eq__(self, other) -> bool:
        return isinstance(other, DDPMDiscrete) and (self.beta_start, self.beta_end, self.N) == (
            other.beta_start, other.beta_end, other.N)

    def __hash__(self) -> int:
        return hash((self.beta_start, self.beta_end, self.N))

    def log_alpha(self, t):
        return interp(_as_t(t), self.t_table, self.log_alpha_table)

    def alpha(self, t):
        return torch.exp(self.log_alpha(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def d_alpha(self, t):
        t = _as_t(t)
        idx = torch.searchsorted(self.t_table, t.detach().contiguous()).clamp(1, self.N - 1)
        slope = (self.log_alpha_table[idx] - self.log_alpha_table[idx - 1]) / (self.t_table[idx] - self.t_table[idx - 1])
        return slope * self.alpha(t)

    def d_sigma(self, t):
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def lam(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2.0 * la))

    def t_of_lam(self, lam):
        # through log alpha, which is linear in t between entries (lambda is not): exact inverse of lam()
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(_as_t(lam)), -2.0 * _as_t(lam))
        # log alpha decreases with t: flip both to interpolate on an increasing abscissa
        return interp(log_alpha, self.log_alpha_table.flip(0), self.t_table.flip(0))

    def model_time(self, t):
        return _as_t(t) * self.N - 1.0

    def alphas_cumprod(self) -> torch.Tensor:
        return torch.exp(2.0 * self.log_alpha_table)


def get_schedule(name: str, **kwargs) -> Schedule:
    """Look a schedule up by the name stored in solver files and model configs."""
    if name == "rf":
        return RectifiedFlow(**kwargs)
    if name == "vp-linear":
        return VPLinear(**kwargs)
    if name == "ddpm":
        return DDPMDiscrete(**kwargs)
    raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")


def schedule_config(schedule: Schedule) -> dict:
    """The JSON-able description stored in solver files; ``get_schedule(**config)`` rebuilds it."""
    if isinstance(schedule, RectifiedFlow):
        return {"name": "rf", "time_scale": schedule.time_scale}
    if isinstance(schedule, VPLinear):
        return {"name": "vp-linear", "beta_min": schedule.beta_min, "beta_max": schedule.beta_max,
                "time_scale": schedule.time_scale}
    if isinstance(schedule, DDPMDiscrete):
        return {"name": "ddpm", "beta_start": schedule.beta_start, "beta_end": schedule.beta_end,
                "num_train_timesteps": schedule.N}
    raise TypeError(f"not a known schedule: {schedule!r}")


# --- conversions at the edges --------------------------------------------------------------------------------

def flow_sigma_from_t(t):
    """diffusers' flow-matching sigma (1 = noise, 0 = data) from rectified-flow time."""
    return 1.0 - _as_t(t)


def t_from_flow_sigma(sigma):
    return 1.0 - _as_t(sigma)


def ddpm_timestep_from_t(t, num_train_timesteps: int = 1000):
    """Fractional DDPM timestep (0 .. N-1) of continuous time on the discrete schedule."""
    return _as_t(t) * num_train_timesteps - 1.0


def t_from_ddpm_timestep(timestep, num_train_timesteps: int = 1000):
    return (_as_t(timestep) + 1.0) / num_train_timesteps


def sigma_ratio(schedule: Schedule, t) -> torch.Tensor:
    """``sigma / alpha`` (the EDM/k-diffusion "sigma"), infinite at the rectified-flow noise end."""
    t = _as_t(t)
    return schedule.sigma(t) / schedule.alpha(t)


def t_of_sigma_ratio(schedule: Schedule, s) -> torch.Tensor:
    s = _as_t(s)
    return schedule.t_of_lam(-torch.log(s))


def is_flow(schedule: Schedule) -> bool:
    return schedule.name == "rf"


__all__ = [
    "Schedule", "RectifiedFlow", "VPLinear", "DDPMDiscrete", "get_schedule", "SCHEDULES", "interp",
    "flow_sigma_from_t", "t_from_flow_sigma", "ddpm_timestep_from_t", "t_from_ddpm_timestep",
    "sigma_ratio", "t_of_sigma_ratio", "is_flow", "schedule_config",
]
