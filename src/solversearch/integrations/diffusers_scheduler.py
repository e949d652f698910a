"""A diffusers scheduler that plays searched or published linear solvers: :class:`SolverScheduler`.

Usage (the pipeline's own loop does the rest: CFG is applied by the pipeline before ``step`` sees the output)::

    from solversearch.integrations.diffusers_scheduler import SolverScheduler

    pipe.scheduler = SolverScheduler.from_preset("dit-xl-2-256")          # DiTPipeline, NFE 5..10
    image = pipe(class_labels=[207], num_inference_steps=6, guidance_scale=4.0).images[0]

    pipe.scheduler = SolverScheduler.from_preset("sit-xl-2-256")          # SD3 / Flux (flow matching)
    pipe.scheduler = SolverScheduler.from_files(["searched-nfe6.json"])   # a solver from ``solversearch search``
    pipe.scheduler = SolverScheduler.from_config(pipe.scheduler.config)   # default preset for the pipeline's kind

How a solver maps onto a pipeline (see :mod:`solversearch.conventions`):

* **Flow matching** (``prediction_type="flow"``; SD3, Flux, any pipeline whose model predicts ``noise - data``
  and runs sigma from 1 to 0): the model is fed ``timesteps = num_train_timesteps * sigma`` with
  ``sigma = 1 - t`` (so the first is 1000); Flux pipelines divide that by 1000 themselves.  The model output is
  ``noise - data = -dx/dt`` in solversearch's rectified-flow time, so it is negated and used as the velocity.
* **VP** (``prediction_type`` ``"epsilon"``, ``"v_prediction"`` or ``"sample"``; DiT, UNet2DModel pipelines): the
  model is fed the schedule's own model time: ``1000 t`` for ``vp-linear`` solvers (the paper's DiT preset),
  the fractional DDPM timestep ``N t - 1`` for ``ddpm`` solvers.  The output is converted to ``(x0, eps)`` with
  the solver's schedule.  The pipeline's beta schedule must be the one the solvers were made for (linear
  ``beta_start``..``beta_end``): this is checked against the config unless ``check_schedule=False``.

**The searched time grid is used as it is.**  Flow pipelines compute their own sigmas (Flux passes
``sigmas=linspace(1, 1/N, N)``, SD3/Flux may pass ``mu`` for resolution-dependent shifting, SD3's scheduler
config has ``shift=3``): those values are *ignored*.  Only their count picks the solver (``len(sigmas)`` or
``len(timesteps)`` is the NFE); no shift is re-applied, as in the paper's text-to-image code.  A solver is searched
for one grid; shifting it would give a different, unsearched solver.

**State and threads.**  A scheduler holds the state of one sampling run (the step index and the model
predictions of the previous steps, which the multistep rule mixes).  ``set_timesteps`` starts a new run and
discards everything; ``step`` must then be called once per timestep, in order.  One scheduler serves one pipeline
call at a time: do not share a scheduler between threads or between concurrently running pipelines (give each
its own, e.g. ``SolverScheduler.from_config(pipe.scheduler.config)``).  A run is never restarted by looking at the
timestep value; a timestep that does not match the current step raises instead of silently mixing two runs.
Image-to-image (starting mid-way, ``set_begin_index(k > 0)``) is not supported: a searched solver is one path
from the noise end to the data end.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable

import torch

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput
except ImportError as e:  # pragma: no cover - exercised only without diffusers
    raise ImportError("solversearch's diffusers integration needs diffusers: "
                      "pip install 'solversearch[diffusers]' (or pip install diffusers)") from e

from ..conventions import flow_sigma_from_t, get_schedule
from ..models.wrapper import to_x0_eps
from ..solvers import io
from ..solvers.presets import PRESETS, load_preset, preset_nfes
from ..solvers.solver import Solver, form_prediction, step_factors

log = logging.getLogger(__name__)

# diffusers' prediction_type -> solversearch prediction of what the scheduler feeds the solver
PREDICTION_TYPES = {"flow": "velocity", "epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}
_PREDICTION_ALIASES = {"flow_prediction": "flow", "velocity": "flow", "eps": "epsilon", "v": "v_prediction",
                       "x0": "sample"}
# a searched VP solver remembers its model's prediction type in meta.prediction
_FROM_META = {"epsilon": "epsilon", "v": "v_prediction", "x0": "sample"}
DEFAULT_PRESETS = {"flow": "sit-xl-2-256", "vp": "dit-xl-2-256"}


class SchedulerStateError(RuntimeError):
    """``step`` called out of order: before ``set_timesteps``, after the last step, or at another timestep."""


def _prediction_type(value) -> str | None:
    if value is None:
        return None
    p = _PREDICTION_ALIASES.get(value, value)
    if p not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {value!r}; known: {', '.join(PREDICTION_TYPES)} "
                         f"(flow: the model outputs noise - data, as SD3/Flux)")
    return p


def _translate_foreign_config(d: dict) -> dict:
    """What another scheduler's config says about the pipeline: flow matching or VP, prediction, betas."""
    name = str(d.get("_class_name") or "")
    has_betas = "beta_start" in d or "beta_schedule" in d or d.get("trained_betas") is not None
    flow = (name.startswith("FlowMatch") or bool(d.get("use_flow_sigmas"))
            or d.get("prediction_type") in ("flow_prediction", "flow")
            or (not has_betas and ("shift" in d or "use_dynamic_shifting" in d)))
    out = {}
    if "num_train_timesteps" in d:
        out["num_train_timesteps"] = d["num_train_timesteps"]
    if flow:
        out["prediction_type"] = "flow"
    elif has_betas:
        out["prediction_type"] = d.get("prediction_type") or "epsilon"
        for k in ("beta_schedule", "beta_start", "beta_end"):
            if k in d:
                out[k] = d[k]
        if d.get("trained_betas") is not None:
            out["beta_schedule"] = "trained_betas"
    return out


class SolverScheduler(SchedulerMixin, ConfigMixin):
    """Plays linear-kind solversearch solvers (searched or preset), one per NFE, in diffusers pipelines.

    Config:
        solvers: solver dicts in the solver-file form (:func:`solversearch.solvers.io.to_dict`), one per NFE;
            each is validated on load.  ``None``: all NFEs of ``preset``.
        preset: name of a published preset (``sit-xl-2-256``, ``flowdcn-b-2-256``, ``dit-xl-2-256``), used when
            ``solvers`` is ``None``; ``None`` picks ``sit-xl-2-256`` for flow and ``dit-xl-2-256`` for VP.
        num_train_timesteps: the pipeline's timestep scale (flow timesteps are ``num_train_timesteps * sigma``).
        prediction_type: ``flow`` (model output = noise - data), ``epsilon``, ``v_prediction`` or ``sample``;
            ``None`` infers it from the solvers (``flow`` for rectified flow, else the prediction the solver was
            searched with, else ``epsilon``).
        beta_schedule, beta_start, beta_end: the VP pipeline's training betas; VP solvers must match them
            (``ddpm`` solvers exactly, ``vp-linear`` solvers as ``beta_min = N beta_start``,
            ``beta_max = N beta_end``).  Ignored for flow solvers.
        check_schedule: set ``False`` to skip that check.

    See the module docstring for the timestep conventions, the ignored ``sigmas``/``mu`` and thread safety.
    """

    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(self, solvers: list | None = None, preset: str | None = None, num_train_timesteps: int = 1000,
                 prediction_type: str | None = None, beta_schedule: str = "linear", beta_start: float = 0.0001,
                 beta_end: float = 0.02, check_schedule: bool = True):
        ptype = _prediction_type(prediction_type)
        if solvers is None:
            if preset is None:
                preset = DEFAULT_PRESETS["flow" if ptype in (None, "flow") else "vp"]
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
            parsed = [load_preset(preset, n) for n in preset_nfes(preset)]
        else:
            if isinstance(solvers, (dict, Solver)) or not isinstance(solvers, (list, tuple)):
                raise ValueError("solvers: expected a list of solver dicts (one per NFE), "
                                 f"got {type(solvers).__name__}")
            if not solvers:
                raise ValueError("solvers: the list is empty; give at least one solver")
            parsed = []
            for i, d in enumerate(solvers):
                d = io.to_dict(d) if isinstance(d, Solver) else d
                parsed.append(io.from_dict(d, source=f"{type(self).__name__} config solvers[{i}]"))

        by_nfe: dict[int, Solver] = {}
        for s in parsed:
            if s.kind != "linear":
                raise ValueError(f"solver {s.name!r} (NFE {s.nfe}) is of kind {s.kind!r}; SolverScheduler plays "
                                 "linear multistep solvers only (searched solvers, presets, Euler/DDIM/AB/DPM++)")
            if s.nfe in by_nfe:
                raise ValueError(f"two solvers for NFE {s.nfe} ({by_nfe[s.nfe].name!r} and {s.name!r}); "
                                 "give one solver per NFE")
            by_nfe[s.nfe] = s
        flows = {s.schedule.get("name") == "rf" for s in parsed}
        if len(flows) > 1:
            raise ValueError("solvers mix rectified-flow and VP schedules; one scheduler serves one kind of model")
        flow = flows.pop()

        if ptype is None:
            meta_pred = parsed[0].meta.get("prediction") if isinstance(parsed[0].meta, dict) else None
            ptype = "flow" if flow else _FROM_META.get(meta_pred, "epsilon")
        if flow and ptype != "flow":
            raise ValueError(f"prediction_type {ptype!r} does not fit rectified-flow solvers: flow-matching "
                             "pipelines (SD3, Flux) need prediction_type='flow' (model output = noise - data)")
        if not flow and ptype == "flow":
            raise ValueError("prediction_type 'flow' needs rectified-flow solvers, but these are for the "
                             f"{parsed[0].schedule.get('name')!r} schedule")
        if not flow and check_schedule:
            for s in parsed:
                self._check_vp_schedule(s, beta_schedule, beta_start, beta_end, num_train_timesteps)

        self._solvers = dict(sorted(by_nfe.items()))
        self._flow = flow
        self._prediction = PREDICTION_TYPES[ptype]
        self.init_noise_sigma = 1.0
        # resolved values go into the config, so save_pretrained / from_config reproduce this scheduler exactly
        used_defaults = [k for k in self.config.get("_use_default_values", [])
                         if k not in ("solvers", "preset", "prediction_type")]
        self.register_to_config(solvers=[io.to_dict(s) for s in self._solvers.values()], preset=preset,
                                prediction_type=ptype, _use_default_values=used_defaults)
        self._reset(None)
        self.timesteps = None
        self.sigmas = None
        self.num_inference_steps = None

    # --- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """ConfigMixin's ``from_config``; a config of another scheduler (``pipe.scheduler.config``) is read for
        the pipeline's kind (flow matching or VP), its prediction type and betas, which then pick the default
        preset and the schedule check.  Keyword arguments (``preset=``, ``solvers=``, ...) override.
        """
        if config is not None and not isinstance(config, (str, os.PathLike)) and "solvers" not in config:
            kwargs = {**_translate_foreign_config(dict(config)), **kwargs}
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def from_preset(cls, name: str, nfe: int | Iterable[int] | None = None, **config) -> "SolverScheduler":
        """A published preset's solvers: all its NFEs (``nfe=None``), one NFE, or a list of NFEs."""
        nfes = preset_nfes(name) if nfe is None else ([int(nfe)] if isinstance(nfe, int) else [int(n) for n in nfe])
        return cls.from_solvers([load_preset(name, n) for n in nfes], preset=name, **config)

    @classmethod
    def from_solvers(cls, solvers, **config) -> "SolverScheduler":
        """From :class:`~solversearch.solvers.solver.Solver` objects (or solver dicts), one per NFE."""
        items = [solvers] if isinstance(solvers, (Solver, dict)) else list(solvers)
        return cls(solvers=[io.to_dict(s) if isinstance(s, Solver) else s for s in items], **config)

    @classmethod
    def from_files(cls, paths, **config) -> "SolverScheduler":
        """From solver files written by ``solversearch search`` / :func:`solversearch.solvers.io.save`."""
        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        return cls.from_solvers([io.load(p) for p in items], **config)

    @staticmethod
    def _check_vp_schedule(solver: Solver, beta_schedule, beta_start, beta_end, num_train_timesteps) -> None:
        sched = solver.schedule
        hint = ("; pass check_schedule=False to use it anyway (the samples will be wrong if the schedules differ)")
        if beta_schedule != "linear":
            raise ValueError(f"solver {solver.name!r} is for a linear beta schedule ({sched}), but the config has "
                             f"beta_schedule={beta_schedule!r}" + hint)
        n = num_train_timesteps
        if sched["name"] == "ddpm":
            want = (float(beta_start), float(beta_end), int(n))
            got = (float(sched.get("beta_start", 1e-4)), float(sched.get("beta_end", 0.02)),
                   int(sched.get("num_train_timesteps", 1000)))
            ok = abs(want[0] - got[0]) <= 1e-9 and abs(want[1] - got[1]) <= 1e-9 and want[2] == got[2]
        else:  # vp-linear: beta(t) = N * beta_n in the continuous limit
            want = (float(beta_start) * n, float(beta_end) * n)
            got = (float(sched.get("beta_min", 0.1)), float(sched.get("beta_max", 20.0)))
            ok = all(abs(w - g) <= 1e-6 * max(1.0, abs(w)) for w, g in zip(want, got))
        if not ok:
            raise ValueError(f"solver {solver.name!r} is for the schedule {sched}, but the config has linear betas "
                             f"{beta_start}..{beta_end} over {n} steps" + hint)

    # --- what a pipeline calls --------------------------------------------------------------------------------

    @property
    def nfes(self) -> list[int]:
        """The NFEs (``num_inference_steps`` values) this scheduler holds a solver for."""
        return list(self._solvers)

    @property
    def solver(self) -> Solver | None:
        """The solver of the current run (set by :meth:`set_timesteps`)."""
        return self._solver

    def solver_for(self, nfe: int) -> Solver:
        if nfe not in self._solvers:
            raise ValueError(f"{type(self).__name__} has no solver for {nfe} steps (NFE {nfe}); it holds NFE "
                             f"{', '.join(map(str, self._solvers))}. Pass one of these as num_inference_steps, or "
                             "add a solver searched for that NFE (SolverScheduler.from_files / from_solvers).")
        return self._solvers[nfe]

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return 0 if self._solver is not None else None

    def set_begin_index(self, begin_index: int = 0):
        if begin_index != 0:
            raise NotImplementedError("SolverScheduler runs a searched solver from the noise end only; starting at "
                                      f"step {begin_index} (image-to-image, strength < 1) is not supported")

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas=None, timesteps=None, mu: float | None = None, **kwargs):
        """Pick the solver for this many steps and start a new run (all state of a previous run is dropped).

        ``sigmas`` / ``timesteps`` (as flow pipelines pass them) only give the number of steps: their values, and
        ``mu`` (resolution-dependent shift), are ignored, because the searched grid is used unshifted.
        """
        counts = {}
        if num_inference_steps is not None:
            counts["num_inference_steps"] = int(num_inference_steps)
        if sigmas is not None:
            counts["len(sigmas)"] = len(sigmas)
        if timesteps is not None:
            counts["len(timesteps)"] = len(timesteps)
        if not counts:
            raise ValueError("set_timesteps needs num_inference_steps (or sigmas / timesteps, whose length gives it)")
        if len(set(counts.values())) > 1:
            raise ValueError(f"set_timesteps got conflicting step counts: {counts}")
        n = next(iter(counts.values()))
        solver = self.solver_for(n)
        if sigmas is not None or timesteps is not None or mu is not None:
            log.debug("SolverScheduler: using the searched %d-step grid; the given sigmas/timesteps/mu are ignored", n)

        schedule = get_schedule(**solver.schedule)
        times = solver.time_tensor()
        if self._flow:
            sig = flow_sigma_from_t(times)
            ts = sig[:-1] * self.config.num_train_timesteps
        else:  # k-diffusion's sigma = sigma / alpha, for information (the update does not use it)
            sig = schedule.sigma(times) / schedule.alpha(times)
            ts = schedule.model_time(times[:-1])
        self.timesteps = ts.to(device=device, dtype=torch.float32)
        self._timestep_values = ts.to(torch.float32).tolist()  # for the order check, without device syncs
        self.sigmas = sig.to(device=device, dtype=torch.float32)
        self.num_inference_steps = n
        self._reset(solver, schedule)

    def _reset(self, solver: Solver | None, schedule=None) -> None:
        self._solver, self._schedule = solver, schedule
        self._step_index = None
        self._preds: list = []
        self._last_use: list[int] = []
        if solver is not None:
            self._step_index = 0
            self._times = solver.time_tensor()
            self._M = solver.matrix()
            n = solver.steps
            self._preds = [None] * n
            # the last step whose row uses prediction j; after it the prediction is dropped (memory)
            nz = self._M != 0
            self._last_use = [max([j] + [k for k in range(j, n) if bool(nz[k, j])]) for j in range(n)]
            self._plan = self._step_plan(solver, schedule)

    def _step_plan(self, solver: Solver, schedule) -> list[tuple]:
        """Every per-step scalar as a Python float, computed once per run (float64 schedule arithmetic here, not in
        ``step``, keeps the per-step cost to a few tensor ops -- below diffusers' own multistep schedulers).

        Step i is ``P_i = cx x_i + co out_i`` (the form's prediction is linear in the sample and the model output)
        and ``x_{i+1} = a x_i + b sum_j M_ij P_j``.
        """
        one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        sign = -1.0 if self._flow else 1.0  # flow pipelines: output = noise - data = -dx/dt in solver time
        plan = []
        M = self._M.tolist()
        for i in range(solver.steps):
            t_i, t_n = self._times[i], self._times[i + 1]

            def prediction(x, out, t_i=t_i):
                x0, eps = to_x0_eps(out, x, t_i, schedule, self._prediction)
                return float(form_prediction(schedule, solver.form, t_i, x0, eps))

            cx, co = prediction(one, zero), sign * prediction(zero, one)
            a, b = (float(v) for v in step_factors(schedule, solver.form, t_i, t_n))
            row = [(j, M[i][j]) for j in range(i) if M[i][j] != 0.0]
            plan.append((cx, co, a, b, M[i][i], row))
        return plan

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def _check_timestep(self, timestep, i: int) -> None:
        if timestep is None:
            return
        if torch.is_tensor(timestep):
            if timestep.numel() == 0:
                return
            timestep = timestep.detach().flatten()[0]
        expected = self._timestep_values[i]
        value = float(timestep)
        if abs(value - expected) > max(1.0, 1e-2 * abs(expected)):
            raise SchedulerStateError(
                f"step() got timestep {value:g}, but step {i} of this {self.num_inference_steps}-step run is at "
                f"timestep {expected:g}. Pass the values of scheduler.timesteps in order; one scheduler drives one "
                "denoising loop at a time (call set_timesteps() to start a new run)")

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True,
             **kwargs) -> SchedulerOutput | tuple:
        """One step ``x_{i+1} = a_i x_i + b_i sum_j M_ij P_j`` of the current solver.

        ``model_output`` is the (guided) network output in the pipeline's ``prediction_type``.  Extra keyword
        arguments of other schedulers (``generator``, ``eta``, ...) are accepted and ignored: the solver is
        deterministic.
        """
        if self._solver is None:
            raise SchedulerStateError("step() called before set_timesteps(): call "
                                      "scheduler.set_timesteps(num_inference_steps) to start a sampling run")
        n = self.num_inference_steps
        i = self._step_index
        if i >= n:
            raise SchedulerStateError(f"all {n} steps of this run are done; call set_timesteps() to start a new run")
        self._check_timestep(timestep, i)
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(model_output.shape)} but the sample has "
                             f"{tuple(sample.shape)} (split a learned-variance output before calling step)")
        wdtype = sample.dtype if sample.dtype in (torch.float32, torch.float64) else torch.float32
        x = sample.to(wdtype)
        out = model_output.to(wdtype)
        cx, co, a, b, m_ii, row = self._plan[i]
        pred = out * co if cx == 0.0 else torch.add(out * co, x, alpha=cx)
        self._preds[i] = pred
        mix = pred * m_ii  # same order of operations as solversearch's run_linear
        for j, m_ij in row:
            mix.add_(self._preds[j], alpha=m_ij)
        x_next = torch.add(x * a, mix, alpha=b)
        for j in range(i + 1):
            if self._last_use[j] <= i:
                self._preds[j] = None
        self._step_index = i + 1
        prev_sample = x_next.to(sample.dtype)
        if not return_dict:
            return (prev_sample,)
        return SchedulerOutput(prev_sample=prev_sample)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


__all__ = ["SolverScheduler", "SchedulerStateError", "PREDICTION_TYPES"]
