"""Peers side by side: diffusers' own schedulers vs solversearch, per-step overhead and quality, in one run.

    .venv/bin/python bench/peers.py                       # NFE 5,6,8,10, 2048 exact samples (~15-30 min, 2 cores)
    .venv/bin/python bench/peers.py --eval-samples 512 --epochs 4   # a quick look

(a) Per-step overhead, no model (µs per step, median of full runs, 1 intra-op thread): ours native
    (``solver.sample`` with a model that returns cached tensors, whole call / steps), ours ``SolverScheduler.step``,
    diffusers DPM-Solver++ 2M and UniPC ``step`` (cached model output; ``set_timesteps`` excluded), at NFE 10 on a
    (4, 4, 32, 32) latent and on the evaluation batch (512, 64).
(b) Quality at NFE 5, 6, 8, 10 on the exact mixtures, RMSE against the exact ODE solution: gmm-rf (flow) and
    gmm-ddpm (the same mixture on the discrete DDPM table, where diffusers' VP schedulers are exact): every diffusers
    peer (real diffusers stepping, fed the timesteps diffusers hands the pipeline; also fed its own sigma where its
    timesteps are rounded), our classic solvers on their best grid, and the searched solver.

Writes docs/results-peers.md and docs/results-peers.json; searched solvers are kept in runs/bench-peers/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from solversearch import atomic
from solversearch.cli import parse_nfes
from solversearch.evaluation import harness, peers
from solversearch.models import get_model
from solversearch.search.search import SearchConfig, prepare_references, search
from solversearch.solvers import io
from solversearch.solvers.presets import load_preset

ROOT = Path(__file__).resolve().parent.parent
SIGMA_FED = {"karras", "lu-lambdas", "flow-sigmas,shift=1"}  # peers whose int64 timesteps round their sigmas


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- (a) overhead -----------------------------------------------------------------------------------------------

def overhead(solvers: dict, nfe: int, reps: int) -> tuple[str, list[dict]]:
    shapes = [(4, 4, 32, 32), (512, 64)]
    rows = []
    for label, solver in solvers.items():
        for r in peers.step_overhead_us(solver, nfe, shapes, reps):
            r["solver"] = label
            rows.append(r)
    cols = ["ours native", "ours SolverScheduler", "diffusers DPM-Solver++ 2M", "diffusers UniPC"]
    lines = ["| our solver | batch | " + " | ".join(cols) + " | native / DPM++ | SolverScheduler / DPM++ |",
             "|---|---|" + "---|" * (len(cols) + 2)]
    for r in rows:
        dpm = r["diffusers DPM-Solver++ 2M"]
        lines.append(f"| {r['solver']} | {tuple(r['shape'])} | " + " | ".join(f"{r[c]:.0f}" for c in cols)
                     + f" | {r['ours native'] / dpm:.2f} | {r['ours SolverScheduler'] / dpm:.2f} |")
    return "\n".join(lines), rows


# --- (b) quality ------------------------------------------------------------------------------------------------

def quality(entry, nfes, eval_samples, search_kw, cache: Path, quick_log=log) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    ev = peers.exact_eval_set(entry, eval_samples)
    quick_log(f"{entry.name}: exact eval set ({ev.n}) in {time.perf_counter() - t0:.0f} s")
    rows = peers.peer_rows(entry, ev, nfes)
    sigma_peers = [p for p in peers.peers_for(entry) if p.grid in SIGMA_FED]
    rows += peers.peer_rows(entry, ev, nfes, peers=sigma_peers, time_source="sigma")
    quick_log(f"{entry.name}: {len(rows)} diffusers rows")
    rows += harness.classic_rows(entry, ev, nfes, progress=False)
    quick_log(f"{entry.name}: classic rows done")
    searched = {}
    refs = None
    for nfe in nfes:
        f = cache / f"{entry.name}-nfe{nfe}.json"
        if f.exists():
            solver = io.load(f)
        else:
            cfg = SearchConfig(nfe=nfe, **search_kw)
            refs = refs or prepare_references(entry, cfg)
            t1 = time.perf_counter()
            solver = search(entry, cfg, progress=False, log=lambda m: None, references=refs).solver
            io.save(solver, f)
            quick_log(f"{entry.name}: searched NFE {nfe} in {time.perf_counter() - t1:.0f} s")
        searched[nfe] = solver
        rows.append(harness.score(solver, entry, ev, "searched", "searched"))
    return rows, {"target": ev.target_kind, "samples": ev.n, "searched": searched}


def quality_table(rows: list[dict], nfes) -> str:
    def cell(r):
        return f"{r['rmse']:.4g}" if r else ""

    peer_keys = sorted({(r["solver"], r["grid"]) for r in rows if r["solver"].startswith("diffusers:")})
    by = {(r["solver"], r["grid"], r["nfe"]): r for r in rows}
    head = "| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    lines = [head, "|---|" + "---|" * len(nfes)]
    for s, g in peer_keys:
        lines.append(f"| {s} [{g}] | " + " | ".join(cell(by.get((s, g, n))) for n in nfes) + " |")
    best_peer = {n: min((r for r in rows if r["solver"].startswith("diffusers:") and r["nfe"] == n),
                        key=lambda r: r["rmse"], default=None) for n in nfes}
    classic_rows = [r for r in rows if not r["solver"].startswith("diffusers:")]
    best_cl = {n: harness.best_classic(classic_rows, n) for n in nfes}
    ours = {n: next((r for r in rows if r["solver"] == "searched" and r["nfe"] == n), None) for n in nfes}
    lines.append("| **best diffusers** | " + " | ".join(
        f"{cell(best_peer[n])} ({best_peer[n]['solver'][10:]} [{best_peer[n]['grid']}])" if best_peer[n] else ""
        for n in nfes) + " |")
    lines.append("| **best of our classic solvers** | " + " | ".join(
        f"{cell(best_cl[n])} ({best_cl[n]['solver']} [{best_cl[n]['grid']}])" if best_cl[n] else ""
        for n in nfes) + " |")
    def mine(n):  # bold where the searched solver beats every other row at that NFE
        r = ours[n]
        if r is None:
            return ""
        wins = all(o is None or r["rmse"] < o["rmse"] for o in (best_peer[n], best_cl[n]))
        return f"**{cell(r)}**" if wins else cell(r)

    def ratio(n, other):
        return f"{ours[n]['rmse'] / other[n]['rmse']:.3f}" if ours[n] and other[n] else ""

    lines.append("| searched (ours) | " + " | ".join(mine(n) for n in nfes) + " |")
    lines.append("| searched / best diffusers | " + " | ".join(ratio(n, best_peer) for n in nfes) + " |")
    lines.append("| searched / best of our classic | " + " | ".join(ratio(n, best_cl) for n in nfes) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nfe", default="5,6,8,10")
    ap.add_argument("--eval-samples", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--val-samples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=50, help="timed runs per overhead cell")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench-peers")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results-peers.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nfes = parse_nfes(args.nfe)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    search_kw = dict(samples=args.samples, val_samples=args.val_samples, batch_size=args.batch_size,
                     epochs=args.epochs)
    t_start = time.perf_counter()

    all_rows, tables, meta = [], {}, {}
    models = [("flow", get_model("gmm-rf")), ("VP, discrete DDPM table", peers.gmm_ddpm_entry())]
    for kind, entry in models:
        rows, info = quality(entry, nfes, args.eval_samples, search_kw, args.cache)
        all_rows += rows
        tables[entry.name] = quality_table(rows, nfes)
        meta[entry.name] = info
        print(f"\n## {entry.name} ({kind})\n\n{tables[entry.name]}\n", flush=True)

    log("overhead ...")
    n_over = 10
    over_solvers = {}
    if n_over in meta["gmm-ddpm"]["searched"]:
        over_solvers[f"searched gmm-ddpm NFE {n_over}"] = meta["gmm-ddpm"]["searched"][n_over]
    over_solvers[f"preset dit-xl-2-256 NFE {n_over}"] = load_preset("dit-xl-2-256", n_over)
    over_table, over_rows = overhead(over_solvers, n_over, args.reps)
    print(f"\n## per-step overhead (µs per step, NFE {n_over})\n\n{over_table}\n", flush=True)

    import diffusers

    cmd = (f".venv/bin/python bench/peers.py --nfe {args.nfe} --eval-samples {args.eval_samples} --samples "
           f"{args.samples} --val-samples {args.val_samples} --batch-size {args.batch_size} --epochs {args.epochs} "
           f"--reps {args.reps} --threads {args.threads}")
    md = ["# Peers side by side: diffusers' own schedulers vs solversearch", "",
          f"Command: `{cmd}` ({time.perf_counter() - t_start:.0f} s; torch {torch.__version__}, diffusers "
          f"{diffusers.__version__}, {platform.processor() or platform.machine()}, {args.threads} intra-op "
          "thread(s)).", "",
          "## Per-step overhead (no model)", "",
          f"µs per step at NFE {n_over}, median over {args.reps} full runs, measured in one process. Ours native: "
          "`solver.sample` with a model that returns cached tensors (whole call / steps). SolverScheduler, "
          "DPM-Solver++ 2M (`DPMSolverMultistepScheduler`, defaults + `final_sigmas_type='sigma_min'`) and UniPC "
          "(`UniPCMultistepScheduler`, bh2): `scheduler.step` alone with a cached model output (`set_timesteps` "
          "excluded; SolverScheduler computes its per-step scalars there, once per run). Target: SolverScheduler / "
          "DPM-Solver++ <= 0.5. Ours native is the differentiable runner the search also uses (float64 schedule "
          "arithmetic every step).", "", over_table, "",
          "## Quality: RMSE against the exact solution", "",
          "Same noises, labels (guidance 1) and exact target for every row. diffusers peers run through real "
          "diffusers stepping (`set_timesteps`, then `scheduler.step(model_output, t, x).prev_sample`), fed the "
          "timestep diffusers hands the pipeline; `time=sigma` rows feed instead the time of the scheduler's own "
          "sigma (DPM-Solver/UniPC cast timesteps to int64, so with Karras / Lu / flow sigmas the network sees a "
          "rounded or truncated timestep). NFE = model calls counted. VP peers use the linear DDPM betas "
          "(1e-4..0.02, 1000 steps) and end at DDPM timestep 0 (`final_sigmas_type='sigma_min'`, DDIM "
          "`set_alpha_to_one=False`, `clip_sample=False`), the data end where the target lives. Our classic "
          "solvers: each on its best of 4 grids (chosen on the evaluation set). Searched: "
          f"`SearchConfig(nfe=n, samples={args.samples}, val_samples={args.val_samples}, batch_size="
          f"{args.batch_size}, epochs={args.epochs})`, preset 'ours', seed 0. Bold: the searched solver beats every "
          "other row at that NFE.", ""]
    for _, entry in models:
        m = meta[entry.name]
        md += [f"### {entry.name}", "", f"{m['samples']} samples, target: {m['target']}.", "", tables[entry.name],
               ""]
    atomic.write_text(args.out, "\n".join(md))
    for r in all_rows:
        r.pop("config", None)
    atomic.write_text(args.out.with_suffix(".json"),
                      json.dumps({"overhead": over_rows, "quality": all_rows}, indent=1, default=str) + "\n")
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
