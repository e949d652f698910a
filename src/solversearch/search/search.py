"""The differentiable solver search: fit step sizes and coefficients so the solver tracks a reference.

Two presets, both runnable from the CLI (``--preset``):

* ``paper`` -- the published recipe (Wang et al., ICML 2025 and its official code): Euler-100 / DDIM-100
  reference, nearest-index alignment, zero init (Euler / DDIM), Lion at a constant lr 0.01, MSE on every state plus
  ``1000 * Huber(delta=1e-3)`` on the final one, the order limit for N <= 6, best epoch on validation.
* ``ours`` -- the same objective made reliable: an accurate reference (high-order solver, many steps), the target
  read at the solver's exact time (interpolated), a warm start from the best classic solver written in the searched
  form (picked on validation), a cosine-decayed learning rate so the last steps settle instead of jumping by
  +-lr, and selection on validation that *includes the starting solver* -- so the result is never worse on
  validation than where it started.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..conventions import Schedule, schedule_config
from ..models import ModelEntry
from ..models.wrapper import ModelError
from ..solvers import classic
from ..solvers.grids import GRIDS
from ..solvers.solver import Solver, make_solver, run_linear
from .parameterization import (coeffs_from_matrix, logits_from_times, matrix_from_coeffs, order_limit_mask,
                               times_from_logits)
from ..evaluation.harness import rmse, run_solver
from .reference import Reference, reference_for

PRESETS = ("paper", "ours")


class SearchDiverged(RuntimeError):
    """The loss became NaN/inf; ``best`` is the best solver found before that."""

    def __init__(self, message: str, best: Solver | None):
        super().__init__(message)
        self.best = best


@dataclass
class SearchConfig:
    nfe: int
    preset: str = "ours"
    reference: str | None = None  # NAME:STEPS[:GRID] or dopri5; default depends on preset and schedule
    samples: int = 1024
    val_samples: int = 256
    batch_size: int = 128
    epochs: int = 12
    lr: float = 0.01
    lr_schedule: str | None = None  # constant | cosine
    optimizer: str = "lion"  # lion | adam
    huber_weight: float = 1000.0
    huber_delta: float = 1e-3
    align: str | None = None  # nearest (paper) | interp
    init: str | None = None  # zero | auto | NAME[:GRID]
    order_limit: bool | None = None  # default: True when nfe <= 6
    keep_start: bool | None = None  # the starting solver competes in validation selection
    guidance: float = 1.0
    seed: int = 0
    dtype: str = "float32"

    def resolved(self, schedule: Schedule) -> "SearchConfig":
        """Fill preset defaults; returns a copy in which nothing is ``None``."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        if self.nfe < 2:
            raise ValueError(f"the searched solver needs NFE >= 2, got {self.nfe}")
        c = copy.copy(self)
        paper = c.preset == "paper"
        flow = schedule.name == "rf"
        if c.reference is None:
            c.reference = ("euler:100" if flow else "ddim:100") if paper else (
                "ab4:100" if flow else "dpm++3m:100:uniform-lambda")
        c.align = c.align or ("nearest" if paper else "interp")
        c.init = c.init or ("zero" if paper else "auto")
        c.lr_schedule = c.lr_schedule or ("constant" if paper else "cosine")
        if c.order_limit is None:
            c.order_limit = c.nfe <= 6
        if c.keep_start is None:
            c.keep_start = not paper
        return c


@dataclass
class SearchResult:
    solver: Solver
    start: Solver
    history: list = field(default_factory=list)  # one dict per epoch: epoch, train_loss, val_rmse, lr
    seconds: dict = field(default_factory=dict)


# --- pieces -------------------------------------------------------------------------------------------------

def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def evaluate(solver: Solver, entry: ModelEntry, noise, labels, target, guidance: float, batch: int) -> float:
    """RMSE of the solver's final samples against ``target``."""
    return rmse(run_solver(solver, entry, noise, labels, guidance, batch), target)


def start_candidates(schedule: Schedule, nfe: int, form: str) -> list[tuple[str, str]]:
    """Classic solvers that are exactly representable in the searched form, with every grid."""
    names = ["euler", "ab2", "ab3", "ab4", "ipndm"] if form == "velocity" else [
        "ddim", "ab2", "ab3", "ab4", "dpm++2m", "dpm++3m"]
    out = []
    for name in names:
        for grid in GRIDS:
            s = classic.build(name, nfe, schedule, grid)
            if s.kind == "linear" and s.form == form:
                out.append((name, grid))
    return out


def choose_start(entry: ModelEntry, cfg: SearchConfig, val, log) -> tuple[Solver, float | None]:
    """The solver the search starts from: zero init, a named classic solver, or the best one on validation."""
    schedule = entry.schedule
    form = classic.default_form(schedule)
    if cfg.init == "zero":
        return classic.build("euler" if form == "velocity" else "ddim", cfg.nfe, schedule, "uniform-t"), None
    if cfg.init != "auto":
        name, _, grid = cfg.init.partition(":")
        s = classic.build(name, cfg.nfe, schedule, grid or "uniform-t")
        if s.kind != "linear" or s.form != form:
            raise ValueError(f"--init {cfg.init}: {name} is not expressible in the searched ({form}) form; "
                             f"candidates: {', '.join(n for n, _ in start_candidates(schedule, cfg.nfe, form))}")
        return s, None
    best, best_err = None, math.inf
    noise, labels, target = val
    for name, grid in start_candidates(schedule, cfg.nfe, form):
        s = classic.build(name, cfg.nfe, schedule, grid)
        err = evaluate(s, entry, noise, labels, target, cfg.guidance, cfg.batch_size)
        if math.isfinite(err) and err < best_err:
            best, best_err = s, err
    log(f"warm start: {best.name} on {best.meta['grid']} grid (val RMSE {best_err:.4g})")
    return best, best_err


def _lr_at(cfg: SearchConfig, step: int, total: int) -> float:
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / max(total, 1))))
    raise ValueError(f"unknown lr schedule {cfg.lr_schedule!r}; known: constant, cosine")


def _optimizer(cfg: SearchConfig, params):
    if cfg.optimizer == "lion":
        from lion_pytorch import Lion

        return Lion(params, lr=cfg.lr, weight_decay=0.0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: lion, adam")


# --- the search ---------------------------------------------------------------------------------------------

def search(entry: ModelEntry, config: SearchConfig, *, progress: bool = True, log=print) -> SearchResult:
    """Search an ``config.nfe``-step solver for ``entry``'s model. Deterministic for a given ``config.seed``."""
    schedule = entry.schedule
    cfg = config.resolved(schedule)
    dtype = _dtype(cfg.dtype)
    form = classic.default_form(schedule)
    clock = {}
    torch.manual_seed(cfg.seed)

    t0 = time.perf_counter()
    train_noise, train_labels = entry.draw(cfg.samples, seed=2 * cfg.seed, dtype=dtype)
    val_noise, val_labels = entry.draw(cfg.val_samples, seed=2 * cfg.seed + 1, dtype=dtype)
    train_ref = reference_for(entry, train_noise, train_labels, cfg.reference, cfg.guidance, cfg.batch_size)
    val_ref = reference_for(entry, val_noise, val_labels, cfg.reference, cfg.guidance, cfg.batch_size)
    clock["reference"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    val = (val_noise, val_labels, val_ref.final)
    start, _ = choose_start(entry, cfg, val, log)
    clock["warm_start"] = time.perf_counter() - t0

    start_M = start.matrix()
    mask = order_limit_mask(cfg.nfe, cfg.order_limit)
    mask = torch.maximum(mask, (coeffs_from_matrix(start_M) != 0).to(torch.float64))
    r = torch.nn.Parameter(logits_from_times(start.time_tensor()))
    c = torch.nn.Parameter(coeffs_from_matrix(start_M))
    opt = _optimizer(cfg, [r, c])

    def current() -> Solver:
        with torch.no_grad():
            return make_solver("linear", form, times_from_logits(r, schedule), schedule,
                               coeffs=matrix_from_coeffs(c, mask), name="searched")

    def validate() -> float:
        try:
            return evaluate(current(), entry, val_noise, val_labels, val_ref.final, cfg.guidance, cfg.batch_size)
        except ModelError:  # the solver drove the model out of its domain: as bad as it gets
            return math.inf

    t0 = time.perf_counter()
    start_err = validate()
    best_err = start_err if cfg.keep_start else math.inf
    best = current() if cfg.keep_start else None
    history = [{"epoch": 0, "train_loss": None, "val_rmse": start_err, "lr": None}]
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = math.ceil(cfg.samples / cfg.batch_size)
    total = cfg.epochs * batches
    step = 0
    bar = tqdm(total=total, desc=f"search NFE {cfg.nfe}", disable=not progress, leave=False)
    try:
        for epoch in range(1, cfg.epochs + 1):
            perm = torch.randperm(cfg.samples, generator=gen)
            losses = []
            for k in range(batches):
                idx = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                lr = _lr_at(cfg, step, total)
                for group in opt.param_groups:
                    group["lr"] = lr
                labels = None if train_labels is None else train_labels[idx]
                model = entry.wrap(labels, cfg.guidance)
                ref = train_ref.index(idx)
                times = times_from_logits(r, schedule)
                M = matrix_from_coeffs(c, mask)
                try:
                    _, states = run_linear(model, train_noise[idx], times, M, form, schedule, trajectory=True)
                except ModelError as e:
                    raise SearchDiverged(f"search diverged at epoch {epoch}, optimizer step {step}: {e}; "
                                         f"keeping the best solver so far", best) from None
                loss = sum(torch.nn.functional.mse_loss(states[i], _target(ref, times[i], cfg.align))
                           for i in range(1, cfg.nfe + 1))
                if cfg.huber_weight:
                    loss = loss + cfg.huber_weight * torch.nn.functional.huber_loss(
                        states[-1], ref.final, delta=cfg.huber_delta)
                if not torch.isfinite(loss):
                    raise SearchDiverged(f"search loss became {float(loss)} at epoch {epoch}, optimizer step {step}; "
                                         f"keeping the best solver so far", best)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4g}", best_val=f"{best_err:.4g}")
            err = validate()
            history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_rmse": err, "lr": lr})
            if math.isfinite(err) and err < best_err:
                best, best_err = current(), err
    finally:
        bar.close()
    clock["search"] = time.perf_counter() - t0

    settings = {k: v for k, v in asdict(cfg).items()}
    meta = {
        "model": entry.name,
        "nfe": cfg.nfe,
        "guidance": cfg.guidance,
        "prediction": entry.prediction,
        "search": settings,
        "start": {"solver": start.name, "grid": start.meta.get("grid"), "val_rmse": start_err},
        "metrics": {"val_rmse": best_err, "val_samples": cfg.val_samples, "reference": cfg.reference},
        "seconds": clock,
    }
    solver = best.replace(meta=meta) if best is not None else current().replace(meta=meta)
    log(f"NFE {cfg.nfe}: val RMSE {start_err:.4g} ({start.name}) -> {best_err:.4g} (searched) "
        f"in {sum(clock.values()):.1f} s")
    return SearchResult(solver, start, history, clock)


def _target(ref: Reference, t: torch.Tensor, align: str) -> torch.Tensor:
    return ref.state_at(t, mode=align)


__all__ = ["SearchConfig", "SearchResult", "SearchDiverged", "search", "evaluate", "PRESETS",
           "schedule_config"]
