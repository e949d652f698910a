"""Core figures: searched solver vs every classic solver on the exact models, NFE 3-10, 3 seeds, both presets.

    .venv/bin/python bench/core.py                 # all: gmm-rf and gmm-vp (about an hour on 2 cores)
    .venv/bin/python bench/core.py --models gmm-rf --nfe 4-6 --seeds 0   # a quick look

Writes docs/results-core.md (tables + verdicts), docs/results-core.json (every row in the `bench --json` form) and
docs/results-core-<model>.png (RMSE vs NFE).  Rows are cached in runs/bench-core/ so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from solversearch import atomic
from solversearch.cli import parse_nfes
from solversearch.evaluation import harness, plots
from solversearch.models import get_model
from solversearch.search.search import SearchConfig, prepare_references, search

ROOT = Path(__file__).resolve().parent.parent
SEARCH_SIZES = dict(samples=2048, val_samples=4096, batch_size=256, epochs=40)  # every search of this bench


def run_model(name, nfes, seeds, presets, eval_samples, cache: Path, search_kw) -> list[dict]:
    entry = get_model(name)
    ev = harness.make_eval_set(entry, eval_samples)
    f = cache / f"{name}-classic.json"
    if f.exists():
        rows = json.loads(f.read_text())
    else:
        rows = harness.classic_rows(entry, ev, nfes)
        for nfe in nfes:
            from solversearch.cli import _preset_rows

            rows += _preset_rows(entry, ev, nfe)
        atomic.write_text(f, json.dumps(rows))
    for preset in presets:
        for seed in seeds:
            refs = None
            for nfe in nfes:
                f = cache / f"{name}-{preset}-s{seed}-n{nfe}.json"
                if f.exists():
                    rows.append(json.loads(f.read_text()))
                    continue
                cfg = SearchConfig(nfe=nfe, preset=preset, seed=seed, **search_kw)
                if refs is None:
                    refs = prepare_references(entry, cfg)
                t0 = time.perf_counter()
                res = search(entry, cfg, references=refs, progress=False, log=lambda m: None)
                row = harness.score(res.solver, entry, ev, f"searched-{preset}", "searched")
                row.update(seed=seed, preset=preset, search_seconds=round(time.perf_counter() - t0, 2),
                           reference_seconds=round(refs.seconds, 2), evaluations=res.evaluations,
                           start=f"{res.start.name}:{res.start.meta.get('grid')}",
                           start_val_rmse=res.solver.meta["start"]["val_rmse"],
                           val_rmse=res.solver.meta["metrics"]["val_rmse"])
                atomic.write_text(f, json.dumps(row))
                rows.append(row)
                print(f"{name} {preset} seed {seed} NFE {nfe}: RMSE {row['rmse']:.4g} "
                      f"({row['search_seconds']} s, start {row['start']})", flush=True)
    return rows


def summary(name: str, rows: list[dict], nfes, presets) -> str:
    best = {n: harness.best_classic(rows, n) for n in nfes}
    head = ["NFE", "best classic (grid)", "RMSE"] + [f"{p}: mean [min, max]" for p in presets] + [
        "ours / best classic", "search s (ours, per seed)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdict = []
    for n in nfes:
        cells = [str(n), f"{best[n]['solver']} ({best[n]['grid']})", f"{best[n]['rmse']:.4g}"]
        means = {}
        for p in presets:
            vals = [r["rmse"] for r in rows if r.get("preset") == p and r["nfe"] == n]
            if not vals:
                cells.append("")
                continue
            means[p] = statistics.mean(vals)
            cells.append(f"{means[p]:.4g} [{min(vals):.4g}, {max(vals):.4g}]")
        ours = [r for r in rows if r.get("preset") == "ours" and r["nfe"] == n]
        if ours:
            worst = max(r["rmse"] for r in ours)
            cells.append(f"{means['ours'] / best[n]['rmse']:.2f}")
            cells.append(f"{statistics.mean(r['search_seconds'] for r in ours):.0f}")
            verdict.append((n, worst < best[n]["rmse"]))
        lines.append("| " + " | ".join(cells) + " |")
    out = [f"### {name}", "", "\n".join(lines), ""]
    if verdict:
        won = [n for n, ok in verdict if ok]
        lost = [n for n, ok in verdict if not ok]
        out.append(f"- Searched (`ours`, every seed) beats the best classic solver at NFE {won or 'none'}"
                   + (f"; **misses at NFE {lost}**." if lost else "."))
        ours5 = [r["rmse"] for r in rows if r.get("preset") == "ours" and r["nfe"] == 5]
        for k in (8, 10):
            if ours5 and k in best:
                ok = max(ours5) <= best[k]["rmse"]
                out.append(f"- NFE 5 searched (worst seed {max(ours5):.4g}) vs best classic at NFE {k} "
                           f"({best[k]['rmse']:.4g}): {'as good or better' if ok else '**worse**'}.")
        starts = [r for r in rows if r.get("preset") == "ours"]
        worse = [r for r in starts if r["val_rmse"] > r["start_val_rmse"] + 1e-12]
        out.append(f"- Never worse than its start on validation: {len(starts) - len(worse)}/{len(starts)} runs.")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gmm-rf,gmm-vp")
    ap.add_argument("--nfe", default="3-10")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--presets", default="paper,ours")
    ap.add_argument("--eval-samples", type=int, default=4096)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--cache", default=str(ROOT / "runs" / "bench-core"))
    args = ap.parse_args()
    nfes, seeds = parse_nfes(args.nfe), [int(s) for s in args.seeds.split(",")]
    presets = args.presets.split(",")
    cache, out = Path(args.cache), Path(args.out)
    cache.mkdir(parents=True, exist_ok=True)
    search_kw = SEARCH_SIZES
    all_rows, sections = [], []
    for name in args.models.split(","):
        rows = run_model(name, nfes, seeds, presets, args.eval_samples, cache, search_kw)
        all_rows += rows
        sections.append(summary(name, rows, nfes, presets))
        sections.append(f"All solvers (best grid each; searched rows: mean over seeds):\n\n{harness.table(rows)}\n")
        plots.plot_error_vs_nfe(rows, out / f"results-core-{name}.png", title=f"{name}: RMSE vs NFE")
        sections.append(f"![{name}](results-core-{name}.png)\n")
    text = ["# Core results: exact Gaussian-mixture models", "",
            f"RMSE of final samples against the exact ODE solution (dopri5, float64), {args.eval_samples} held-out "
            f"samples per model, guidance 1. Classic solvers on their best grid (chosen on the evaluation set "
            f"itself, which flatters them). Searched: {len(seeds)} seeds, {search_kw['samples']} training + "
            f"{search_kw['val_samples']} validation samples, {search_kw['epochs']} epochs, batch "
            f"{search_kw['batch_size']}. Search seconds exclude reference generation (shared by all NFEs).",
            "", "Regenerate: `.venv/bin/python bench/core.py`", ""] + sections
    atomic.write_text(out / "results-core.md", "\n".join(text))
    atomic.write_text(out / "results-core.json", json.dumps(all_rows, indent=1) + "\n")
    print((out / "results-core.md").read_text())


if __name__ == "__main__":
    main()
