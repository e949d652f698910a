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

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..conventions import Schedule
from ..evaluation.harness import rmse, run_solver
from ..models import ModelEntry
from ..models.wrapper import ModelError
from ..solvers import classic
from ..solvers.grids import GRIDS, make_grid
from ..solvers.solver import FORMS, Solver, make_solver, run_linear
from .parameterization import (coeffs_from_matrix, logits_from_times, matrix_from_coeffs, order_limit_mask,
                               times_from_logits)
from . import checkpoint as ckpt
from . import distributed as dd
from .cache import ReferenceCache, _strided
from .checkpoint import SearchInterrupted
from .reference import Reference, reference_for

PRESETS = ("paper", "ours")
START_SAMPLES = 64  # validation samples every warm-start candidate is scored on (the best three: on all)


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
    form: str | None = None  # searched form: auto (the start's) | velocity | data | noise; paper: velocity / data
    order_limit: bool | None = None  # default: True when nfe <= 6
    keep_start: bool | None = None  # the starting solver competes in validation selection
    guidance: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    grad_checkpoint: bool = False  # recompute each model call in backward: memory flat in NFE
    amp: str | None = None  # bf16 | fp16 autocast of the model calls (GPU)
    ref_stride: int = 1  # keep every k-th reference state (memory / cache size)
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0: only on SIGTERM/SIGINT)

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
        c.form = c.form or (classic.default_form(schedule) if paper else "auto")
        if c.form not in ("auto", *FORMS):
            raise ValueError(f"unknown form {c.form!r}; known: auto, {', '.join(FORMS)}")
        c.lr_schedule = c.lr_schedule or ("constant" if paper else "cosine")
        if c.order_limit is None:
            c.order_limit = c.nfe <= 6
        if c.keep_start is None:
            c.keep_start = not paper
        return c


    def identity(self) -> dict:
        """The fields that define the search's outcome (a checkpoint must match them to be resumed)."""
        d = asdict(self)
        d.pop("checkpoint_every")
        return d


@dataclass
class SearchResult:
    solver: Solver
    start: Solver
    history: list = field(default_factory=list)  # one dict per epoch: epoch, train_loss, val_rmse, lr
    seconds: dict = field(default_factory=dict)
    # rows through the network (a guided pair counts 2) by stage: warm_start, search (training + validation)
    evaluations: dict = field(default_factory=dict)


# --- pieces -------------------------------------------------------------------------------------------------

class _CountingNet:
    """The network with a count of the rows it has evaluated: the search's cost in model evaluations, measured
    rather than estimated (the warm start, the training batches and the validation passes all go through it)."""

    def __init__(self, net):
        self.net, self.rows = net, 0

    def __call__(self, x, t, **kw):
        self.rows += int(x.shape[0])
        return self.net(x, t, **kw)


def search_evaluations(cfg: SearchConfig, schedule: Schedule, world: int = 1) -> dict:
    """Rows the search sends through the network (a guided pair counts 2), references excluded.

    The same count :func:`search` measures, from the configuration alone: it prices searches whose results were
    cached before the count existed.  Training runs a backward pass through each of its rows too (about twice a
    forward's cost); validation and the warm start do not.
    """
    cfg = cfg.resolved(schedule)
    g = 1 if cfg.guidance == 1.0 else 2
    per_sample = cfg.nfe * g
    val = cfg.val_samples  # each rank scores its slice; together the whole set
    warm = 0
    if cfg.init == "auto":
        n = len(start_candidates(schedule, cfg.nfe, cfg.form))
        rough = min(val, world * math.ceil(START_SAMPLES / world))
        warm = (n * rough + min(3, n) * val) * per_sample
    train = cfg.epochs * cfg.samples * per_sample
    validation = (1 + cfg.epochs) * val * per_sample  # the start's score, then one pass per epoch
    return {"warm_start": warm, "search": train + validation, "train": train, "validation": validation}


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def evaluate(solver: Solver, entry: ModelEntry, noise, labels, target, guidance: float, batch: int) -> float:
    """RMSE of the solver's final samples against ``target``."""
    return rmse(run_solver(solver, entry, noise, labels, guidance, batch), target)


@dataclass
class References:
    """Noises, labels and reference trajectories of the training and validation sets."""

    train_noise: torch.Tensor
    train_labels: torch.Tensor | None
    train: Reference
    val_noise: torch.Tensor
    val_labels: torch.Tensor | None
    val: Reference
    seconds: float = 0.0  # spent in this call (loading, when cached)
    build_seconds: float | None = None  # spent computing them, in this call or when they were cached


def prepare_references(entry: ModelEntry, cfg: SearchConfig, cache_dir=None, progress: bool = False) -> References:
    """Draw the train/validation noises from the seed and compute (or load) their reference trajectories.

    They depend on the model, reference, guidance, seed and sample counts -- not on the NFE -- so one set serves
    searches at every NFE; with ``cache_dir`` they are also kept on disk for later runs.
    """
    cfg = cfg.resolved(entry.schedule)
    dtype = _dtype(cfg.dtype)
    t0 = time.perf_counter()
    out, build = [], 0.0
    cache = ReferenceCache(cache_dir) if cache_dir is not None else None
    for n, seed in ((cfg.samples, 2 * cfg.seed), (cfg.val_samples, 2 * cfg.seed + 1)):
        noise, labels = entry.draw(n, seed=seed, dtype=dtype, device=cfg.device)

        def compute(lo, hi, noise=noise, labels=labels):
            lab = None if labels is None else labels[lo:hi]
            return noise[lo:hi], lab, reference_for(entry, noise[lo:hi], lab, cfg.reference, cfg.guidance,
                                                    cfg.batch_size, progress=progress and dd.is_main())

        if cache is not None:
            key = (entry, cfg.reference, cfg.guidance, seed, n, dtype, cfg.ref_stride)
            ref = cache.get(*key, compute)
            ref = Reference(ref.times, ref.states.to(cfg.device), ref.spec)
            cost = cache.compute_seconds(*key)
            build = None if build is None or cost is None else build + cost
        else:
            if dd.world() > 1:
                raise ValueError("a multi-process search needs a reference cache folder (--cache DIR) that "
                                 "every process can read")
            ref = _strided(compute(0, n)[2], cfg.ref_stride)
        out += [noise, labels, ref]
    seconds = time.perf_counter() - t0
    return References(*out, seconds=seconds, build_seconds=seconds if cache is None else build)


def start_candidates(schedule: Schedule, nfe: int, form: str = "auto") -> list[tuple[str, str]]:
    """Classic solvers that are exactly representable as a searched solver (one call a step, a coefficient
    matrix) in ``form`` (``auto``: any form), with every grid."""
    out = []
    for name in classic.SOLVERS:
        for grid in GRIDS:
            s = classic.build(name, nfe, schedule, grid)
            if s.kind == "linear" and s.nfe == nfe and form in ("auto", s.form):
                out.append((name, grid))
    return out


def choose_start(schedule: Schedule, cfg: SearchConfig, val_rmse, log) -> Solver:
    """The solver the search starts from: zero init, a named classic solver, or the best one on validation.

    The searched form is the start's: with ``form="auto"`` every classic linear solver competes (e.g. iPNDM in
    EDM's noise form can beat every data-form solver on a VP model, and a search that may only start from
    data-form solvers could then never reach it).
    """
    form = cfg.form
    if cfg.init == "zero":
        form = classic.default_form(schedule) if form == "auto" else form
        # c = 0, uniform steps: Euler (velocity form), DDIM (data form), or EDM's Euler (noise form)
        return make_solver("linear", form, make_grid("uniform-t", cfg.nfe, schedule), schedule,
                           coeffs=torch.eye(cfg.nfe, dtype=torch.float64),
                           name={"velocity": "euler", "data": "ddim"}.get(form, "euler-noise"),
                           meta={"grid": "uniform-t"})
    if cfg.init != "auto":
        name, _, grid = cfg.init.partition(":")
        s = classic.build(name, cfg.nfe, schedule, grid or "uniform-t")
        if s.kind != "linear" or form not in ("auto", s.form):
            raise ValueError(f"init {cfg.init!r}: {name} is not expressible in the searched ({form}) form; "
                             f"candidates: {', '.join(sorted({n for n, _ in start_candidates(schedule, cfg.nfe, form)}))}")
        return s
    # every candidate on a part of the validation set, the three best on all of it: a few dozen candidates
    # would otherwise cost as many model calls as the reference trajectories on an expensive model
    cands = [classic.build(name, cfg.nfe, schedule, grid) for name, grid in start_candidates(schedule, cfg.nfe, form)]
    rough = [val_rmse(s, START_SAMPLES) for s in cands]
    top = sorted(range(len(cands)), key=lambda i: rough[i])[:3]
    errs = {i: val_rmse(cands[i]) for i in top}
    best = min(top, key=lambda i: errs[i])
    log(f"warm start: {cands[best].name} on {cands[best].meta['grid']} grid (val RMSE {errs[best]:.4g})")
    return cands[best]


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


def _autocast(cfg: SearchConfig):
    if cfg.amp is None:
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    if dtype is None:
        raise ValueError(f"unknown amp {cfg.amp!r}; known: bf16, fp16")
    return torch.autocast(device_type=torch.device(cfg.device).type, dtype=dtype)


# --- the search ---------------------------------------------------------------------------------------------

def search(entry: ModelEntry, config: SearchConfig, *, progress: bool = True, log=print,
           references: References | None = None, cache_dir=None, checkpoint_path=None,
           resume: bool = False) -> SearchResult:
    """Search a ``config.nfe``-step solver for ``entry``'s model. Deterministic for a given ``config.seed``.

    ``references`` reuses precomputed trajectories (several NFEs in one run); ``cache_dir`` keeps them on disk.
    ``checkpoint_path`` saves the state every ``checkpoint_every`` steps and on SIGTERM/SIGINT (then raises
    :class:`SearchInterrupted`); ``resume=True`` continues from it.  Under ``torchrun`` every rank runs this
    with the same arguments: each takes its slice of every global batch (``batch_size`` per rank) and of the
    validation set, and gradients are averaged, so all ranks hold the same solver.
    """
    schedule = entry.schedule
    cfg = config.resolved(schedule)
    clock = {}
    refs = references or prepare_references(entry, cfg, cache_dir, progress)
    counter = _CountingNet(entry.net)
    entry = replace(entry, net=counter)
    evaluations = {}
    clock["reference"] = 0.0 if references is not None else refs.seconds
    mine_val = dd.my_slice(cfg.val_samples)
    v_noise, v_target = refs.val_noise[mine_val], refs.val.final[mine_val]
    v_labels = None if refs.val_labels is None else refs.val_labels[mine_val]

    def val_rmse(solver: Solver, limit: int | None = None) -> float:
        """RMSE over the validation set, or its first ``limit`` samples (each rank scores its slice); inf if the
        model faults."""
        k = v_noise.shape[0] if limit is None else min(v_noise.shape[0], math.ceil(limit / dd.world()))
        target = v_target[:k]
        try:
            x = run_solver(solver, entry, v_noise[:k], None if v_labels is None else v_labels[:k], cfg.guidance,
                           cfg.batch_size)
            sq = float(((x.to(torch.float64) - target.to(torch.float64)) ** 2).sum())
        except ModelError:
            sq = math.inf
        total, count = dd.sum_scalars(sq, float(target.numel()))
        return math.sqrt(total / count) if math.isfinite(total) else math.inf

    t0 = time.perf_counter()
    start = choose_start(schedule, cfg, val_rmse, log if dd.is_main() else (lambda m: None))
    clock["warm_start"] = time.perf_counter() - t0
    evaluations["warm_start"] = dd.sum_scalars(float(counter.rows))[0]
    counter.rows = 0
    form = start.form

    start_M = start.matrix()
    mask = order_limit_mask(cfg.nfe, cfg.order_limit)
    mask = torch.maximum(mask, (coeffs_from_matrix(start_M) != 0).to(torch.float64))
    r = torch.nn.Parameter(logits_from_times(start.time_tensor()))
    c = torch.nn.Parameter(coeffs_from_matrix(start_M))
    opt = _optimizer(cfg, [r, c])

    def solver_of(r_, c_) -> Solver:
        with torch.no_grad():
            return make_solver("linear", form, times_from_logits(r_, schedule), schedule,
                               coeffs=matrix_from_coeffs(c_, mask), name="searched")

    t0 = time.perf_counter()
    identity = cfg.identity()
    gen = torch.Generator().manual_seed(cfg.seed)
    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        st = ckpt.load(checkpoint_path, identity)
        with torch.no_grad():
            r.copy_(st["r"])
            c.copy_(st["c"])
        opt.load_state_dict(st["optimizer"])
        log(f"resumed from {checkpoint_path} at epoch {st['epoch']}, optimizer step {st['step']}")
    else:
        start_err = val_rmse(start)
        keep = cfg.keep_start
        st = {"epoch": 1, "batch": 0, "step": 0, "gen": gen.get_state(), "losses": [],
              "best_r": r.detach().clone(), "best_c": c.detach().clone(),
              "best_err": start_err if keep else math.inf, "has_best": keep, "start_err": start_err,
              "history": [{"epoch": 0, "train_loss": None, "val_rmse": start_err, "lr": None}]}

    def snapshot() -> dict:
        return dict(st, r=r.detach().clone(), c=c.detach().clone(), optimizer=opt.state_dict())

    def best_solver() -> Solver | None:
        return solver_of(st["best_r"], st["best_c"]) if st["has_best"] else None

    global_batch = cfg.batch_size * dd.world()
    batches = math.ceil(cfg.samples / global_batch)
    total = cfg.epochs * batches
    bar = tqdm(total=total, initial=st["step"], desc=f"search NFE {cfg.nfe}", disable=not (progress and dd.is_main()),
               leave=False)
    stop = ckpt.StopFlag()
    try:
        with stop:
            while st["epoch"] <= cfg.epochs:
                gen.set_state(st["gen"])
                perm = torch.randperm(cfg.samples, generator=gen)
                while st["batch"] < batches:
                    k = st["batch"]
                    chunk = perm[k * global_batch:(k + 1) * global_batch]
                    idx = chunk[dd.my_slice(len(chunk))].to(refs.train_noise.device)
                    lr = _lr_at(cfg, st["step"], total)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    loss = _loss(entry, cfg, refs, idx, r, c, mask, form, st, best_solver)
                    opt.zero_grad()
                    loss.backward()
                    dd.average_gradients([r, c])
                    opt.step()
                    st["step"] += 1
                    st["batch"] += 1
                    st["losses"].append(float(loss.detach()))
                    bar.update(1)
                    bar.set_postfix(loss=f"{st['losses'][-1]:.4g}", best_val=f"{st['best_err']:.4g}")
                    if checkpoint_path is not None and dd.is_main() and (
                            stop or (cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0)):
                        ckpt.save(checkpoint_path, snapshot(), identity)
                    if stop:
                        raise ckpt.SearchInterrupted(
                            f"stopped by signal {stop.signal} at optimizer step {st['step']}; state saved to "
                            f"{checkpoint_path}, continue with resume" if checkpoint_path else
                            f"stopped by signal {stop.signal} at optimizer step {st['step']} (no checkpoint path)")
                err = val_rmse(solver_of(r, c))
                st["history"].append({"epoch": st["epoch"], "train_loss": sum(st["losses"]) / len(st["losses"]),
                                      "val_rmse": err, "lr": lr})
                if err < st["best_err"]:
                    st.update(best_r=r.detach().clone(), best_c=c.detach().clone(), best_err=err, has_best=True)
                st.update(epoch=st["epoch"] + 1, batch=0, losses=[], gen=gen.get_state())
                if checkpoint_path is not None and dd.is_main() and cfg.checkpoint_every:
                    ckpt.save(checkpoint_path, snapshot(), identity)
    finally:
        bar.close()
    clock["search"] = time.perf_counter() - t0
    evaluations["search"] = dd.sum_scalars(float(counter.rows))[0]
    evaluations = {k: int(v) for k, v in evaluations.items()}

    meta = {
        "model": entry.name,
        "nfe": cfg.nfe,
        "guidance": cfg.guidance,
        "prediction": entry.prediction,
        "search": asdict(cfg),
        "start": {"solver": start.name, "grid": start.meta.get("grid"), "val_rmse": st["start_err"]},
        "metrics": {"val_rmse": st["best_err"], "val_samples": cfg.val_samples, "reference": cfg.reference},
        "seconds": clock,
        "evaluations": evaluations,
        "processes": dd.world(),
    }
    best = best_solver() or solver_of(r, c)
    if dd.is_main():
        log(f"NFE {cfg.nfe}: val RMSE {st['start_err']:.4g} ({start.name}) -> {st['best_err']:.4g} (searched) "
            f"in {sum(clock.values()):.1f} s")
    return SearchResult(best.replace(meta=meta), start, st["history"], clock, evaluations)


def _loss(entry, cfg, refs, idx, r, c, mask, form, st, best_solver) -> torch.Tensor:
    """Alignment MSE of every state + Huber on the final one, for this rank's part of the batch."""
    schedule = entry.schedule
    labels = None if refs.train_labels is None else refs.train_labels[idx]
    model = entry.wrap(labels, cfg.guidance)
    ref = refs.train.index(idx)
    times = times_from_logits(r, schedule)
    M = matrix_from_coeffs(c, mask)
    try:
        with _autocast(cfg):
            _, states = run_linear(model, refs.train_noise[idx], times, M, form, schedule, trajectory=True,
                                   grad_checkpoint=cfg.grad_checkpoint)
    except ModelError as e:
        raise SearchDiverged(f"search diverged at epoch {st['epoch']}, optimizer step {st['step']}: {e}; "
                             f"keeping the best solver so far", best_solver()) from None
    states = [s.float() for s in states]
    loss = sum(torch.nn.functional.mse_loss(states[i], ref.state_at(times[i], cfg.align).float())
               for i in range(1, cfg.nfe + 1))
    if cfg.huber_weight:
        loss = loss + cfg.huber_weight * torch.nn.functional.huber_loss(states[-1], ref.final.float(),
                                                                        delta=cfg.huber_delta)
    if not torch.isfinite(loss):
        raise SearchDiverged(f"search loss became {float(loss)} at epoch {st['epoch']}, optimizer step "
                             f"{st['step']}; keeping the best solver so far", best_solver())
    return loss


__all__ = ["SearchConfig", "SearchResult", "SearchDiverged", "SearchInterrupted", "References", "search",
           "prepare_references", "evaluate", "search_evaluations", "PRESETS"]
