"""Peers side by side: diffusers' own schedulers, run through real diffusers stepping on a solversearch model.

Each peer is a diffusers scheduler class plus a config.  :func:`run_peer` drives it the way a pipeline does
(``set_timesteps``, then per timestep: model output -> ``scheduler.step(...).prev_sample``) on a
:class:`~solversearch.models.ModelEntry`, from the same noise, labels and guidance as an
:class:`~solversearch.evaluation.harness.EvalSet`; :func:`peer_rows` scores it into rows of the
:func:`~solversearch.evaluation.harness.score` form (``solver = "diffusers:<Class>"``, ``grid`` = the spacing /
sigma option, ``nfe`` = the model calls actually made, counted).

Conventions (:mod:`solversearch.conventions`):

* **VP** peers are discrete DDPM schedulers (``beta_schedule="linear"``, 1e-4 .. 0.02 over 1000 steps).  On a
  model with solversearch's ``ddpm`` schedule (:func:`gmm_ddpm_entry`) they are exact: DDPM timestep ``n`` is
  table entry ``n``, solver time ``t = (n + 1) / 1000``, which is what the model is fed (a fractional timestep
  is read with the same ``t = (n + 1) / 1000``, where ``DDPMDiscrete`` interpolates ``log alpha`` linearly).  On
  the continuous ``vp-linear`` schedule (``gmm-vp``) the same mapping is used and is an approximation (the
  table and the continuous schedule agree up to discretisation); such rows carry ``note``.  The VP peers end at
  ``final_sigmas_type="sigma_min"`` (DDIM: ``set_alpha_to_one=False``), i.e. at DDPM timestep 0 = ``t = 1e-3``,
  the data end of solversearch's VP schedules where the exact target lives; diffusers' default ``"zero"`` would
  end at ``sigma = 0``, another point.
* **Flow** peers run sigma from 1 to 0 with ``timestep = 1000 sigma`` and model output ``noise - data``:
  solversearch's rectified-flow time is ``t = 1 - sigma`` and its velocity ``dx/dt`` is ``-(noise - data)``.
* The model is fed **the timestep diffusers hands the pipeline** (``time_source="timestep"``, as a pipeline
  does; DPM-Solver/UniPC cast their timesteps to int64, so with Karras / Lu / flow sigmas the network sees a
  rounded or truncated timestep while the update uses the exact sigma).  ``time_source="sigma"`` feeds instead the
  time of the scheduler's own sigma (what a pipeline with float timesteps would do).

:func:`step_overhead_us` times ``scheduler.step`` alone (a cached model output, no model), for diffusers and for
:class:`~solversearch.integrations.diffusers_scheduler.SolverScheduler`, and the native runner with a model that
does nothing.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch

from ..conventions import DDPMDiscrete, Schedule
from ..models import ModelEntry
from ..models.gmm import GaussianMixture
from ..models.wrapper import to_x0_eps
from .harness import EvalSet, rmse

VP_BETAS = {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "num_train_timesteps": 1000}
_VP_PREDICTION = {"epsilon": "epsilon", "v": "v_prediction", "x0": "sample"}


@dataclass(frozen=True)
class Peer:
    """A diffusers scheduler class and config; ``set_kw`` builds extra ``set_timesteps`` arguments from NFE."""

    cls: str  # diffusers class name, e.g. "DPMSolverMultistepScheduler"
    grid: str  # the spacing / sigma option, as it appears in rows
    config: dict = field(default_factory=dict, hash=False)
    flow: bool = False
    set_kw: object = None  # callable nfe -> dict, or None

    @property
    def name(self) -> str:
        base = self.cls[: -len("Scheduler")] if self.cls.endswith("Scheduler") else self.cls
        return f"diffusers:{base}"

    @property
    def label(self) -> str:
        return f"{self.name}[{self.grid}]"


def _flux_sigmas(nfe: int) -> dict:
    import numpy as np

    return {"sigmas": np.linspace(1.0, 1.0 / nfe, nfe)}


VP_PEERS: tuple[Peer, ...] = (
    Peer("DPMSolverMultistepScheduler", "linspace", {"final_sigmas_type": "sigma_min"}),
    Peer("DPMSolverMultistepScheduler", "karras", {"final_sigmas_type": "sigma_min", "use_karras_sigmas": True}),
    Peer("DPMSolverMultistepScheduler", "lu-lambdas", {"final_sigmas_type": "sigma_min", "use_lu_lambdas": True}),
    Peer("UniPCMultistepScheduler", "linspace", {"final_sigmas_type": "sigma_min"}),
    Peer("DEISMultistepScheduler", "linspace", {}),  # DEIS always ends at sigma_min
    # DDIM's default clip_sample=True clips x0 to [-1, 1] (pixel models); off, as latent pipelines configure it
    Peer("DDIMScheduler", "trailing", {"timestep_spacing": "trailing", "set_alpha_to_one": False,
                                       "clip_sample": False}),
    Peer("DDIMScheduler", "leading", {"timestep_spacing": "leading", "set_alpha_to_one": False,
                                      "clip_sample": False}),
    Peer("DDIMScheduler", "linspace", {"timestep_spacing": "linspace", "set_alpha_to_one": False,
                                       "clip_sample": False}),
)

_FLOW_DPM = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 1.0}
FLOW_PEERS: tuple[Peer, ...] = (
    Peer("FlowMatchEulerDiscreteScheduler", "shift=1", {"shift": 1.0}, flow=True),
    Peer("FlowMatchEulerDiscreteScheduler", "shift=3", {"shift": 3.0}, flow=True),
    Peer("FlowMatchEulerDiscreteScheduler", "shift=1,sigmas=linspace(1,1/N)", {"shift": 1.0}, flow=True,
         set_kw=_flux_sigmas),
    Peer("DPMSolverMultistepScheduler", "flow-sigmas,shift=1", _FLOW_DPM, flow=True),
    Peer("UniPCMultistepScheduler", "flow-sigmas,shift=1", _FLOW_DPM, flow=True),
)


def peers_for(entry: ModelEntry) -> tuple[Peer, ...]:
    """The peers that fit the model's kind: flow-matching schedulers for rectified flow, DDPM ones for VP."""
    return FLOW_PEERS if entry.schedule.name == "rf" else VP_PEERS


def make_scheduler(peer: Peer, entry: ModelEntry | None = None):
    """A fresh diffusers scheduler for ``peer`` (VP: the linear DDPM betas and the model's prediction type)."""
    import diffusers

    cls = getattr(diffusers, peer.cls)
    cfg = dict(peer.config)
    if not peer.flow:
        cfg = {**VP_BETAS, **cfg}
        if entry is not None:
            cfg.setdefault("prediction_type", _VP_PREDICTION.get(entry.prediction, "epsilon"))
    return cls(**cfg)


def gmm_ddpm_entry(dim: int = 64) -> ModelEntry:
    """``gmm-ddpm``: gmm-vp's mixture on the discrete DDPM table (``DDPMDiscrete``), epsilon prediction.

    The same means/scales/weights as ``gmm-vp`` (same seed), so only the schedule differs; diffusers' VP
    schedulers are exact on it.
    """
    schedule = DDPMDiscrete()
    net = GaussianMixture(schedule, "epsilon", dim=dim, num_classes=10, per_class=3, seed=0)
    return ModelEntry("gmm-ddpm", net, schedule, "epsilon", (dim,), num_classes=10, null_label=10, exact=True,
                      description=f"exact {dim}-D class-conditional Gaussian mixture, ddpm (discrete DDPM "
                                  "table), epsilon prediction")


def exact_eval_set(entry: ModelEntry, n: int, seed: int = 10_000, guidance: float = 1.0, batch: int = 512,
                   rtol: float = 1e-7, atol: float = 1e-9) -> EvalSet:
    """:func:`~solversearch.evaluation.harness.make_eval_set` with ``target="exact"``, made fast on the DDPM table.

    The DDPM table's ``log alpha`` is piecewise linear in ``t``, so ``dx/dt`` jumps at each of the 1000 entries
    and an adaptive dopri5 in ``t`` crawls (minutes per 256 samples).  For a Gaussian mixture the
    probability-flow ODE depends on the schedule only through ``lambda = log(alpha / sigma)`` (``alpha^2 =
    sigmoid(2 lambda)`` on every VP schedule), so the same mixture on the smooth ``vp-linear`` schedule, solved
    between the times of equal ``lambda``, gives the exact same endpoint.  Same noises and labels as
    ``make_eval_set(entry, n, seed)``; other entries go straight to ``make_eval_set``.
    """
    import copy

    from ..conventions import VPLinear
    from ..search.reference import ode_solve

    if not (isinstance(entry.schedule, DDPMDiscrete) and isinstance(entry.net, GaussianMixture)):
        from .harness import make_eval_set

        return make_eval_set(entry, n, seed=seed, guidance=guidance, batch=batch, target="exact")
    twin_schedule = VPLinear()
    twin_net = copy.deepcopy(entry.net)
    twin_net.schedule = twin_schedule
    twin = ModelEntry(entry.name + "-vp-twin", twin_net, twin_schedule, entry.prediction, entry.shape,
                      num_classes=entry.num_classes, null_label=entry.null_label, label_key=entry.label_key,
                      exact=True)
    s = entry.schedule
    lam = s.lam(torch.tensor([s.t_noise, s.t_data], dtype=torch.float64))
    ends = twin_schedule.t_of_lam(lam)
    noise, labels = entry.draw(n, seed=seed)
    outs = []
    for k in range(0, n, batch):
        lab = None if labels is None else labels[k:k + batch]
        outs.append(ode_solve(twin.wrap(lab, guidance), noise[k:k + batch].to(torch.float64), ends, rtol, atol)[-1])
    final = torch.cat(outs).to(torch.float32)
    kind = (f"exact (dopri5, rtol {rtol:g}, atol {atol:g}, float64; solved on the vp-linear twin between equal "
            "log-SNR)")
    return EvalSet(noise, labels, final, guidance, kind, float(final.max() - final.min()))


# --- time conversions at the diffusers edge -------------------------------------------------------------------

def _t_of_kd_sigma(schedule: Schedule, sigma: torch.Tensor) -> torch.Tensor:
    """Schedule time of a k-diffusion sigma (``sigma / alpha``), exact on the DDPM table's piecewise-linear
    ``log alpha`` (``alpha^2 = 1 / (1 + sigma^2)``)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if isinstance(schedule, DDPMDiscrete):
        la = -0.5 * torch.log1p(sigma**2)
        from ..conventions import interp

        # log alpha decreases with t: interpolate on the flipped (increasing) table
        return interp(la.reshape(-1), schedule.log_alpha_table.flip(0), schedule.t_table.flip(0)).reshape(la.shape)
    return schedule.t_of_lam(-torch.log(sigma))


def solver_time(peer: Peer, entry: ModelEntry, scheduler, i: int, timestep, time_source: str = "timestep"):
    """Solversearch schedule time (float64 0-dim) at which the model is evaluated for step ``i``."""
    n_train = scheduler.config.num_train_timesteps
    if time_source == "sigma" and getattr(scheduler, "sigmas", None) is not None:
        sigma = scheduler.sigmas[i].to(torch.float64)
        return 1.0 - sigma if peer.flow else _t_of_kd_sigma(entry.schedule, sigma)
    ts = torch.as_tensor(timestep).to(torch.float64).reshape(())
    if peer.flow:
        return 1.0 - ts / n_train
    return (ts + 1.0) / n_train  # DDPM timestep n sits at t = (n + 1) / N (DDPMDiscrete; vp-linear: approx.)


def peer_times(peer: Peer, entry: ModelEntry, nfe: int) -> torch.Tensor:
    """The schedule times the peer's states sit at (``steps + 1`` points, noise end first), for cross-checks.

    Sigma-based schedulers: from ``scheduler.sigmas``; DDIM: from its timesteps and its final ``alpha`` (a
    ``ValueError`` where DDIM's step targets are not its next timesteps, e.g. trailing at 6 steps: 999 -> 833 but
    the next model call is labelled 832).  With ``time_source="timestep"`` a scheduler whose timesteps are rounded
    (Karras, Lu, flow sigmas) evaluates the model slightly off these times.
    """
    sch = make_scheduler(peer, entry)
    sch.set_timesteps(**_set_kwargs(peer, nfe))
    if peer.cls == "DDIMScheduler":
        if sch.config.set_alpha_to_one:
            raise ValueError("peer_times: DDIM with set_alpha_to_one=True ends at alpha = 1, outside the schedule")
        # DDIM steps each state to prev = timestep - N // steps, whatever the next timestep is: a consistent grid
        # only when prev equals the next timestep (trailing spacing with steps dividing N)
        n_train = sch.config.num_train_timesteps
        ts = sch.timesteps.to(torch.float64)
        prev = ts - n_train // sch.num_inference_steps
        if not torch.equal(prev[:-1], ts[1:]):
            raise ValueError(f"{peer.label} at {nfe} steps is not a grid: it steps to timesteps "
                             f"{prev[:-1].long().tolist()} but evaluates the model at {ts[1:].long().tolist()}")
        last = (prev[-1].clamp(min=0.0) + 1.0) / n_train
        return torch.cat([(ts + 1.0) / n_train, last.reshape(1)])
    sig = sch.sigmas.to(torch.float64)
    return 1.0 - sig if peer.flow else _t_of_kd_sigma(entry.schedule, sig)


def _set_kwargs(peer: Peer, nfe: int) -> dict:
    kw = peer.set_kw(nfe) if callable(peer.set_kw) else {}
    if "sigmas" in kw or "timesteps" in kw:
        return kw
    return {"num_inference_steps": nfe, **kw}


# --- the loop ---------------------------------------------------------------------------------------------------

class _Caller:
    """The network call of a pipeline: CFG applied, output in the scheduler's convention, calls counted."""

    def __init__(self, peer: Peer, entry: ModelEntry, labels, guidance: float):
        self.peer, self.entry = peer, entry
        self.model = entry.wrap(labels, guidance)
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        pred = self.model.raw(x, t)
        p, s = self.entry.prediction, self.entry.schedule
        if self.peer.flow:
            if p == "velocity":
                return -pred  # noise - data = -dx/dt (t = 0 noise)
            x0, eps = to_x0_eps(pred, x, t, s, p)
            return eps - x0
        if p in _VP_PREDICTION:
            return pred  # the scheduler is configured with the model's own prediction type
        return to_x0_eps(pred, x, t, s, p)[1]  # a velocity model on a VP schedule: hand diffusers epsilon


def run_peer(peer: Peer, entry: ModelEntry, noise: torch.Tensor, labels=None, guidance: float = 1.0, nfe: int = 6,
             batch: int = 512, time_source: str = "timestep") -> tuple[torch.Tensor, int, int]:
    """Final samples of the peer at ``nfe`` steps, the model calls per sample path (counted) and the steps.

    One fresh scheduler per batch, driven as a pipeline drives it.
    """
    if peer.flow != (entry.schedule.name == "rf"):
        raise ValueError(f"peer {peer.label} is for {'flow' if peer.flow else 'VP'} models, but {entry.name!r} "
                         f"uses the {entry.schedule.name!r} schedule")
    outs, calls, steps = [], None, 0
    with torch.no_grad():
        for k in range(0, noise.shape[0], batch):
            lab = None if labels is None else labels[k:k + batch]
            call = _Caller(peer, entry, lab, guidance)
            sch = make_scheduler(peer, entry)
            sch.set_timesteps(**_set_kwargs(peer, nfe))
            x = noise[k:k + batch] * getattr(sch, "init_noise_sigma", 1.0)  # flow schedulers have none
            scale = getattr(sch, "scale_model_input", None)
            for i, ts in enumerate(sch.timesteps):
                x_in = x if scale is None else scale(x, ts)
                out = call(x_in, solver_time(peer, entry, sch, i, ts, time_source))
                x = sch.step(out, ts, x).prev_sample
            steps = len(sch.timesteps)
            if calls is not None and call.calls != calls:
                raise RuntimeError(f"{peer.label}: {call.calls} model calls in one batch, {calls} in another")
            calls = call.calls
            outs.append(x)
    return torch.cat(outs), int(calls or 0), steps


def peer_row(peer: Peer, entry: ModelEntry, ev: EvalSet, nfe: int, batch: int = 512,
             time_source: str = "timestep") -> dict:
    """One row in :func:`~solversearch.evaluation.harness.score`'s form; ``nfe`` = counted model calls."""
    t0 = time.perf_counter()
    x, calls, steps = run_peer(peer, entry, ev.noise, ev.labels, ev.guidance, nfe, batch, time_source)
    seconds = time.perf_counter() - t0
    err = rmse(x, ev.target)
    psnr = 20 * math.log10(ev.data_range / err) if 0 < err < math.inf else float("inf")
    grid = peer.grid if time_source == "timestep" else f"{peer.grid},time=sigma"
    row = {"model": entry.name, "solver": peer.name, "nfe": calls, "grid": grid, "guidance": ev.guidance,
           "samples": ev.n, "rmse": err, "psnr": psnr, "steps": steps, "seconds": round(seconds, 4),
           "target": ev.target_kind, "config": dict(peer.config),
           **{name: float(fn(x)) for name, fn in ev.metrics.items()}}
    if not peer.flow and entry.schedule.name != "ddpm":
        row["note"] = (f"discrete DDPM scheduler on the {entry.schedule.name!r} schedule: timestep n fed as "
                       "t = (n + 1) / 1000 (approximate; exact on a 'ddpm' model)")
    return row


def peer_rows(entry: ModelEntry, ev: EvalSet, nfes, peers=None, batch: int = 512, progress: bool = False,
              time_source: str = "timestep") -> list[dict]:
    """Every peer that fits the model at every NFE (a peer that fails is skipped with a ``RuntimeWarning``)."""
    import warnings

    from tqdm.auto import tqdm

    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise ValueError("the diffusers peers need diffusers: pip install 'solversearch[diffusers]'") from None
    peers = tuple(peers) if peers is not None else peers_for(entry)
    jobs = [(p, n) for n in nfes for p in peers]
    rows = []
    for peer, nfe in tqdm(jobs, desc=f"diffusers peers on {entry.name}", disable=not progress, leave=False):
        try:
            rows.append(peer_row(peer, entry, ev, nfe, batch, time_source))
        except Exception as e:  # a scheduler option this diffusers version lacks: report it, keep the rest
            warnings.warn(f"{peer.label} at NFE {nfe} failed: {type(e).__name__}: {e}", RuntimeWarning,
                          stacklevel=2)
    return rows


# --- per-step overhead ------------------------------------------------------------------------------------------

class _NullModel:
    """A model that does nothing: returns cached ``(x0, eps)`` (native-runner overhead)."""

    def __init__(self, schedule: Schedule, like: torch.Tensor):
        self.schedule = schedule
        self.x0, self.eps = torch.zeros_like(like), torch.zeros_like(like)

    def __call__(self, x, t):
        return self.x0, self.eps


def _median_us(fn, steps: int, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / steps * 1e6


def scheduler_step_us(scheduler, nfe: int, shape, reps: int = 50, dtype=torch.float32, set_kw=None) -> float:
    """Median microseconds per ``scheduler.step`` over full runs (``set_timesteps`` excluded), cached output."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=g, dtype=dtype)
    out = torch.randn(shape, generator=g, dtype=dtype) * 0.1
    kw = set_kw or {"num_inference_steps": nfe}
    total = [0.0]

    def once():
        scheduler.set_timesteps(**kw)
        x = x0
        t0 = time.perf_counter()
        for ts in scheduler.timesteps:
            x = scheduler.step(out, ts, x).prev_sample
        total[0] = time.perf_counter() - t0

    for _ in range(3):
        once()
    times = []
    for _ in range(reps):
        once()
        times.append(total[0])
    return statistics.median(times) / len(scheduler.timesteps) * 1e6


def native_step_us(solver, schedule: Schedule, shape, reps: int = 50, dtype=torch.float32) -> float:
    """Median microseconds per step of :func:`solversearch.solvers.solver.sample` with a model that does nothing
    (the whole call, including its per-call setup, divided by the steps)."""
    from ..solvers.solver import sample

    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    model = _NullModel(schedule, x0)
    with torch.no_grad():
        return _median_us(lambda: sample(solver, model, x0), solver.steps, reps)


def step_overhead_us(solver, nfe: int, shapes, reps: int = 50) -> list[dict]:
    """µs per step, no model: ours native, ours SolverScheduler (``solver``), diffusers DPM-Solver++ 2M and UniPC.

    ``solver`` is a linear solversearch solver for a VP schedule with the linear DDPM betas (``ddpm`` or
    ``vp-linear``); the diffusers peers run on the same table, ``nfe`` steps each.
    """
    from ..conventions import get_schedule
    from ..integrations.diffusers_scheduler import SolverScheduler

    schedule = get_schedule(**solver.schedule)
    out = []
    with torch.no_grad():
        for shape in shapes:
            ours_sched = SolverScheduler.from_solvers([solver])
            dpm = make_scheduler(VP_PEERS[0])
            unipc = make_scheduler(VP_PEERS[3])
            row = {"shape": tuple(shape), "nfe": nfe, "solver": solver.name,
                   "ours native": native_step_us(solver, schedule, shape, reps),
                   "ours SolverScheduler": scheduler_step_us(ours_sched, nfe, shape, reps),
                   "diffusers DPM-Solver++ 2M": scheduler_step_us(dpm, nfe, shape, reps),
                   "diffusers UniPC": scheduler_step_us(unipc, nfe, shape, reps)}
            out.append(row)
    return out


__all__ = ["Peer", "VP_PEERS", "FLOW_PEERS", "peers_for", "make_scheduler", "gmm_ddpm_entry", "run_peer",
           "peer_row", "peer_rows", "peer_times", "solver_time", "step_overhead_us", "scheduler_step_us",
           "native_step_us", "VP_BETAS"]
