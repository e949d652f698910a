"""One wrapper between a user's network and every solver (the role of dpm-solver's ``model_wrapper``).

A network is any callable ``net(x, t_model, **cond) -> prediction`` whose prediction type is declared:

* ``"velocity"``: ``dx/dt`` along the schedule's path (rectified flow: ``x_data - noise``);
* ``"epsilon"``: the noise;
* ``"x0"`` (alias ``"sample"``): the clean data;
* ``"v"``: diffusers/Imagen v-prediction ``alpha * noise - sigma * x_data``.

The wrapper applies classifier-free guidance on the raw prediction (conditional and unconditional halves in one
batch) and returns the pair ``(x0, eps)`` that every solver form can use: data-prediction solvers read ``x0``,
velocity-form solvers read ``alpha' x0 + sigma' eps``.  Each conversion is exact algebra, so a velocity network
on rectified flow gives back its own velocity up to rounding.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..conventions import Schedule

PREDICTION_TYPES = ("velocity", "epsilon", "x0", "v")
_ALIASES = {"sample": "x0", "eps": "epsilon", "flow": "velocity"}


class ModelError(RuntimeError):
    """The network returned something no solver can use (wrong shape or dtype, NaN/inf)."""


def canonical_prediction(prediction: str) -> str:
    p = _ALIASES.get(prediction, prediction)
    if p not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction!r}; known: {', '.join(PREDICTION_TYPES)} "
                         f"(aliases: {', '.join(_ALIASES)})")
    return p


def to_x0_eps(pred: torch.Tensor, x: torch.Tensor, t, schedule: Schedule, prediction: str):
    """Convert a raw prediction at ``(x, t)`` into ``(x0, eps)`` with ``x = alpha x0 + sigma eps``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    a, s = schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype)
    if prediction == "epsilon":
        return (x - s * pred) / a, pred
    if prediction == "x0":
        return pred, (x - a * pred) / s
    if prediction == "v":
        n = a * a + s * s
        return (a * x - s * pred) / n, (s * x + a * pred) / n
    if prediction == "velocity":
        da, ds = schedule.d_alpha(t).to(x.dtype), schedule.d_sigma(t).to(x.dtype)
        det = a * ds - s * da
        return (ds * x - s * pred) / det, (a * pred - da * x) / det
    raise ValueError(f"unknown prediction type {prediction!r}")


def from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, t, schedule: Schedule, prediction: str) -> torch.Tensor:
    """The inverse of :func:`to_x0_eps`: what a network of that prediction type would return."""
    t = torch.as_tensor(t, dtype=torch.float64)
    a, s = schedule.alpha(t).to(x0.dtype), schedule.sigma(t).to(x0.dtype)
    if prediction == "epsilon":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return a * eps - s * x0
    if prediction == "velocity":
        return schedule.d_alpha(t).to(x0.dtype) * x0 + schedule.d_sigma(t).to(x0.dtype) * eps
    raise ValueError(f"unknown prediction type {prediction!r}")


class WrappedModel:
    """``model(x, t) -> (x0, eps)`` at solver time ``t`` (a float or 0-dim tensor), guidance applied.

    ``cond`` holds the keyword arguments of the conditional call (e.g. ``{"class_labels": y}``) and ``uncond``
    those of the unconditional one (e.g. the null label); both must be batch-aligned with ``x``.  With
    ``guidance == 1`` the unconditional pass is skipped.  ``time_fn`` maps solver time to the network's time
    input; it defaults to the schedule's own convention.
    """

    def __init__(self, net: Callable, schedule: Schedule, prediction: str, *, cond: Mapping | None = None,
                 uncond: Mapping | None = None, guidance: float = 1.0, time_fn: Callable | None = None,
                 check: bool = True):
        self.net, self.schedule = net, schedule
        self.prediction = canonical_prediction(prediction)
        self.cond, self.uncond = dict(cond or {}), dict(uncond or {})
        self.guidance = float(guidance)
        if self.guidance != 1.0 and not self.uncond:
            raise ValueError("classifier-free guidance needs the unconditional inputs (uncond=...)")
        self.time_fn = time_fn or schedule.model_time
        self.check = check
        self.calls = 0  # network evaluations, counted per solver step (a guided pair counts once)

    def with_cond(self, cond: Mapping | None = None, uncond: Mapping | None = None) -> "WrappedModel":
        """The same model with other conditioning (used to run batches of a larger label set)."""
        return WrappedModel(self.net, self.schedule, self.prediction, cond=cond, uncond=uncond,
                            guidance=self.guidance, time_fn=self.time_fn, check=self.check)

    def raw(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        t_in = self.time_fn(t).to(x.dtype).expand(x.shape[0])
        if self.guidance == 1.0:
            return self.net(x, t_in, **self.cond)
        both = {k: torch.cat([self.cond[k], self.uncond[k]]) for k in self.cond}
        out = self.net(torch.cat([x, x]), torch.cat([t_in, t_in]), **both)
        out_c, out_u = out.chunk(2)
        return out_u + self.guidance * (out_c - out_u)

    def __call__(self, x: torch.Tensor, t):
        pred = self.raw(x, t)
        self.calls += 1
        if self.check:
            _check_output(pred, x, t)
        return to_x0_eps(pred, x, t, self.schedule, self.prediction)


def _check_output(pred, x, t) -> None:
    tv = float(torch.as_tensor(t).detach())
    if not torch.is_tensor(pred):
        raise ModelError(f"model returned {type(pred).__name__}, expected a tensor (at t={tv:.6g})")
    if pred.shape != x.shape:
        raise ModelError(f"model returned shape {tuple(pred.shape)} for input {tuple(x.shape)} (at t={tv:.6g})")
    if pred.dtype != x.dtype:
        raise ModelError(f"model returned dtype {pred.dtype} for input {x.dtype} (at t={tv:.6g})")
    if not torch.isfinite(pred).all():
        raise ModelError(f"model returned non-finite values (NaN or inf) at t={tv:.6g}")
