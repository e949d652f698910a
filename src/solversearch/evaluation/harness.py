"""The one harness every comparison runs through: same noise, same labels, same target, every solver.

Rows are plain dicts (the ``bench --json`` form): ``model, solver, nfe, grid, guidance, samples, rmse, psnr``
plus ``steps`` and ``seconds``.  Classic solvers are run on every time grid; ``best_rows`` keeps each solver's
best grid per NFE (chosen on the evaluation set itself, which flatters the classic solvers, never ours).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..models import ModelEntry, for_solver
from ..search.reference import ode_solve, reference_for
from ..solvers import classic
from ..solvers.grids import GRIDS
from ..solvers.solver import Solver, SolverError, sample


@dataclass
class EvalSet:
    """Noises, labels and the target each solver is scored against."""

    noise: torch.Tensor
    labels: torch.Tensor | None
    target: torch.Tensor
    guidance: float
    target_kind: str  # "exact (dopri5 ...)" or the reference spec
    data_range: float  # for PSNR: peak-to-peak of the target
    # extra metrics on the final samples, by name (e.g. ``fd`` for image models): fn(samples) -> float
    metrics: dict[str, Callable] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.noise.shape[0]


def model_metrics(entry: ModelEntry, target: torch.Tensor) -> dict[str, Callable]:
    """The model's own sample-quality metrics against ``target`` (``entry.extra["metrics"]``; none if it has none)."""
    factory = entry.extra.get("metrics")
    return dict(factory(target)) if factory else {}


def make_eval_set(entry: ModelEntry, n: int, seed: int = 10_000, guidance: float = 1.0, batch: int = 512,
                  target: str | None = None, metrics: bool = True, progress: bool = False) -> EvalSet:
    """The evaluation set: ``target`` is ``exact`` (dopri5, float64) or a reference spec like ``ab4:200``.

    Defaults to ``exact`` for exact models and to a 100-step high-order solver otherwise (its error is orders of
    magnitude below a 10-step solver's on a smooth network, at half the cost of 200 steps).  With ``metrics`` the
    model's own sample-quality metrics (``entry.extra["metrics"]``, a factory called with the target samples
    that returns ``{name: fn}``, e.g. the Fréchet distance of an image model to its data and to the target) are
    scored on every row too.
    """
    noise, labels = entry.draw(n, seed=seed)
    if target is None:
        target = "exact" if entry.exact else ("ab4:100" if entry.schedule.name == "rf" else
                                               "dpm++3m:100:uniform-lambda")
    s = entry.schedule
    if target == "exact":
        ends = torch.tensor([s.t_noise, s.t_data], dtype=torch.float64)
        outs = []
        for k in range(0, n, batch):
            lab = None if labels is None else labels[k:k + batch]
            outs.append(ode_solve(entry.wrap(lab, guidance), noise[k:k + batch].to(torch.float64), ends)[-1])
        final = torch.cat(outs).to(torch.float32)
        kind = "exact (dopri5, rtol 1e-7, atol 1e-9, float64)"
    else:
        final = reference_for(entry, noise, labels, target, guidance, batch, progress=progress).final
        kind = target
    data_range = float(final.max() - final.min())
    return EvalSet(noise, labels, final, guidance, kind, data_range, model_metrics(entry, final) if metrics else {})


def run_solver(solver: Solver, entry: ModelEntry, noise, labels, guidance: float = 1.0,
               batch: int = 512) -> torch.Tensor:
    """Final samples of ``solver`` from ``noise`` (batched, no gradients)."""
    entry = for_solver(entry, solver.schedule)
    outs = []
    with torch.no_grad():
        for k in range(0, noise.shape[0], batch):
            lab = None if labels is None else labels[k:k + batch]
            outs.append(sample(solver, entry.wrap(lab, guidance), noise[k:k + batch]))
    return torch.cat(outs)


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.to(torch.float64) - b.to(torch.float64)) ** 2).mean())
    return math.sqrt(mse) if math.isfinite(mse) else float("inf")


def score(solver: Solver, entry: ModelEntry, ev: EvalSet, label: str | None = None, grid: str | None = None,
          batch: int = 512) -> dict:
    t0 = time.perf_counter()
    x = run_solver(solver, entry, ev.noise, ev.labels, ev.guidance, batch)
    seconds = time.perf_counter() - t0
    err = rmse(x, ev.target)
    psnr = 20 * math.log10(ev.data_range / err) if 0 < err < math.inf else float("inf")
    return {"model": entry.name, "solver": label or solver.name, "nfe": solver.nfe,
            "grid": grid or solver.meta.get("grid", "searched"), "guidance": ev.guidance, "samples": ev.n,
            "rmse": err, "psnr": psnr, "steps": solver.steps, "seconds": round(seconds, 4),
            "target": ev.target_kind, **{name: float(fn(x)) for name, fn in ev.metrics.items()}}


def classic_rows(entry: ModelEntry, ev: EvalSet, nfes, solvers=None, grids=GRIDS, progress=True) -> list[dict]:
    """Every classic solver on every grid at every NFE (skipping combinations that cannot be built)."""
    solvers = list(solvers or classic.SOLVERS)
    jobs = [(name, nfe, grid) for nfe in nfes for name in solvers for grid in grids]
    rows = []
    for name, nfe, grid in tqdm(jobs, desc=f"classic solvers on {entry.name}", disable=not progress, leave=False):
        try:
            solver = classic.build(name, nfe, entry.schedule, grid)
        except SolverError:
            continue  # e.g. Heun at NFE 1
        if solver.nfe > nfe:
            continue
        rows.append(score(solver, entry, ev, name, grid))
    return rows


def subset(ev: EvalSet, k: int) -> EvalSet:
    """The first ``k`` samples of an evaluation set, without its extra metrics (for cheap choices)."""
    lab = None if ev.labels is None else ev.labels[:k]
    return EvalSet(ev.noise[:k], lab, ev.target[:k], ev.guidance, ev.target_kind, ev.data_range, {})


def classic_rows_on_best_grid(entry: ModelEntry, ev: EvalSet, nfes, select: int | None = None, solvers=None,
                              progress=True) -> list[dict]:
    """Every classic solver at every NFE on its best grid, scored on the whole set.

    With ``select`` the grid is chosen by RMSE on the first ``select`` samples (each solver runs on every grid
    there, and on one grid over the whole set): on a model where a call costs milliseconds per sample this is
    what keeps a full comparison affordable.  Without it every grid is scored on the whole set.
    """
    if select is None or select >= ev.n:
        return classic_rows(entry, ev, nfes, solvers, progress=progress)
    rough = classic_rows(entry, subset(ev, select), nfes, solvers, progress=progress)
    chosen = [(r["solver"], r["nfe"], r["grid"]) for r in best_rows(rough)]
    return [score(classic.build(name, nfe, entry.schedule, grid), entry, ev, name, grid)
            for name, nfe, grid in tqdm(chosen, desc=f"classic solvers on {entry.name} (best grids)",
                                        disable=not progress, leave=False)]


def aggregate_seeds(rows: list[dict]) -> list[dict]:
    """Rows that differ only by search seed become one row with the mean metric and its spread (min, max)."""
    groups: dict[tuple, list[dict]] = {}
    plain = []
    for r in rows:
        (groups.setdefault((r["solver"], r["nfe"], r["grid"]), []) if "seed" in r else plain).append(r)
    for group in groups.values():
        agg = dict(group[0])
        for metric in [k for k in ("rmse", "psnr", "fd", "fid") if k in group[0]]:
            vals = [g[metric] for g in group]
            agg[metric] = sum(vals) / len(vals)
            agg[f"{metric}_min"], agg[f"{metric}_max"] = min(vals), max(vals)
        agg["seeds"] = [g["seed"] for g in group]
        agg.pop("seed")
        plain.append(agg)
    return plain


def best_rows(rows: list[dict], metric: str = "rmse") -> list[dict]:
    """Each (solver, nfe)'s best grid by ``metric`` (searched rows over several seeds count by their mean)."""
    best: dict[tuple, dict] = {}
    for r in aggregate_seeds(rows):
        key = (r["solver"], r["nfe"])
        if key not in best or r[metric] < best[key][metric]:
            best[key] = r
    return sorted(best.values(), key=lambda r: (r["nfe"], r[metric]))


def best_classic(rows: list[dict], nfe: int, exclude=("searched",), metric: str = "rmse") -> dict | None:
    cands = [r for r in best_rows(rows, metric) if r["nfe"] == nfe and r["solver"] not in exclude
             and not r["solver"].startswith(("searched", "preset", "diffusers:"))]
    return min(cands, key=lambda r: r[metric]) if cands else None


def table(rows: list[dict], metric: str = "rmse") -> str:
    """A markdown table: one line per solver, one column per NFE (best grid by ``metric``)."""
    rows = best_rows(rows, metric)
    nfes = sorted({r["nfe"] for r in rows})
    names = sorted({r["solver"] for r in rows}, key=lambda s: (s.startswith("searched"), s))
    cell = {(r["solver"], r["nfe"]): r for r in rows}
    lines = ["| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|" + "---|" * len(nfes)]
    for name in names:
        vals = []
        for n in nfes:
            r = cell.get((name, n))
            best = min((cell[(s, n)][metric] for s in names if (s, n) in cell and not s.startswith("searched")),
                       default=None)
            if r is None:
                vals.append("")
            else:
                v = f"{r[metric]:.4g}"
                vals.append(f"**{v}**" if name.startswith("searched") and best is not None and r[metric] < best
                            else v)
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
