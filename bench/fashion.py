"""The bundled image models: searched solver vs the classic solvers at equal NFE and at 1.5x and 2x the NFE.

    .venv/bin/python bench/fashion.py                       # both models, guidance 1 and 1.5, NFE 5,6,8,10
    .venv/bin/python bench/fashion.py --models fashion-rf --guidance 1.5 --nfe 6    # a quick look

For each model and guidance scale: an evaluation set (same noises and labels for every solver) with a 100-step
high-order target for RMSE; each classic solver's grid is chosen per NFE by RMSE on a small subset (cheap), then
the solver is scored on the whole set on that grid (FD and RMSE); the searched solver (preset 'ours', the model's
CLI sizes) and the paper's presets likewise; finally the three best classic solvers at each NFE N are scored at
round(1.5 N) and 2 N.  Rows are cached in runs/bench-fashion/ so an interrupted run resumes.  Writes
docs/results-fashion.md, docs/results-fashion.json and docs/results-fashion-<model>.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from solversearch import atomic
from solversearch.cli import UserError, _preset_rows, parse_nfes
from solversearch.evaluation import harness, peers, plots
from solversearch.models import get_model, run_sizes
from solversearch.search.search import SearchConfig, prepare_references, search
from solversearch.solvers import classic, io

ROOT = Path(__file__).resolve().parent.parent
TARGET = {"rf": "ab4:100", "ddpm": "dpm++3m:100:uniform-lambda"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cached(path: Path, make):
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    atomic.write_text(path, json.dumps(value))
    return value


def eval_set(entry, n: int, guidance: float, cache: Path) -> harness.EvalSet:
    """The cached evaluation set of ``n`` samples, or the first ``n`` of a larger cached one (same noises)."""
    from safetensors.torch import load_file, save_file

    f = cache / f"eval-{entry.name}-g{guidance}-n{n}.safetensors"
    sizes = [int(p.stem.rsplit("-n", 1)[1]) for p in cache.glob(f"eval-{entry.name}-g{guidance}-n*.safetensors")]
    larger = min((k for k in sizes if k > n), default=None)
    if not f.exists() and larger:
        ev = eval_set(entry, larger, guidance, cache)
        return harness.EvalSet(ev.noise[:n], None if ev.labels is None else ev.labels[:n], ev.target[:n],
                               ev.guidance, ev.target_kind, ev.data_range, harness.model_metrics(entry, ev.target[:n]))
    if f.exists():
        t = load_file(str(f))
        kind = json.loads(f.with_suffix(".json").read_text())
        return harness.EvalSet(t["noise"], t.get("labels"), t["target"], guidance, kind["target"],
                               kind["data_range"], harness.model_metrics(entry, t["target"]))
    ev = harness.make_eval_set(entry, n, guidance=guidance, target=TARGET[entry.schedule.name], batch=256,
                               progress=True)
    tensors = {"noise": ev.noise.contiguous(), "target": ev.target.contiguous()}
    if ev.labels is not None:
        tensors["labels"] = ev.labels.contiguous()
    with atomic.atomic_path(f) as tmp:
        save_file(tensors, str(tmp))
    atomic.write_text(f.with_suffix(".json"), json.dumps({"target": ev.target_kind, "data_range": ev.data_range}))
    return ev


def fd_to_model(solver, entry, ev: harness.EvalSet) -> float:
    """FD of the solver's samples to the model's own 100-step samples from the same noises and labels (the
    ``fd_model`` metric of :func:`solversearch.models.fashion.fd_metrics`), for rows cached without it."""
    return ev.metrics["fd_model"](harness.run_solver(solver, entry, ev.noise, ev.labels, ev.guidance, 256))


def add_fd_to_model(rows: list[dict], entry, ev, nfes, tag: str, cache: Path) -> None:
    """``fd_model`` on the searched row and the three most accurate classic rows (by RMSE) at each NFE, where a
    row cached before the metric existed lacks it."""
    for nfe in nfes:
        classic_at = sorted((r for r in rows if r["nfe"] == nfe and r["solver"] in classic.SOLVERS),
                            key=lambda r: r["rmse"])[:3]
        for r in [r for r in rows if r["nfe"] == nfe and r["solver"] == "searched"] + classic_at:
            if "fd_model" in r:
                continue
            if r["solver"] == "searched":
                solver = io.load(cache / f"{tag}-solver-nfe{nfe}.json")
            else:
                solver = classic.build(r["solver"], nfe, entry.schedule, r["grid"])
            r["fd_model"] = cached(cache / f"{tag}-fdmodel-{r['solver']}-{r['grid']}-{nfe}.json",
                                   lambda: fd_to_model(solver, entry, ev))


def run(name: str, guidance: float, nfes: list[int], n_eval: int, n_select: int, cache: Path,
        search_sizes: dict, diffusers: bool = True, top: int = 3, search_missing: bool = True) -> list[dict]:
    entry = get_model(name)
    tag = f"{name}-g{guidance}-n{n_eval}"  # rows are scores on this evaluation set
    t0 = time.perf_counter()
    ev = eval_set(entry, n_eval, guidance, cache)
    log(f"{tag}: evaluation set ({ev.n}, target {ev.target_kind}) in {time.perf_counter() - t0:.0f} s")
    quality = {"model": name, "solver": f"reference {ev.target_kind}", "nfe": int(ev.target_kind.split(":")[1]),
               "guidance": guidance, "samples": ev.n, "fd": float(ev.metrics["fd"](ev.target))}

    def twice():  # the issue's quality figure is FD of 200-step samples: the target's solver at twice the steps
        from solversearch.search.reference import reference_for

        spec = ev.target_kind.replace(":100", ":200", 1)
        x = reference_for(entry, ev.noise, ev.labels, spec, guidance, 256).final
        return {"solver": f"reference {spec}", "fd": float(ev.metrics["fd"](x)),
                "rmse_to_target": harness.rmse(x, ev.target)}

    quality["steps200"] = cached(cache / f"{tag}-quality200.json", twice)

    def grids(at):  # each classic solver's grid per NFE, by RMSE on the first n_select samples
        rows = harness.classic_rows(entry, harness.subset(ev, n_select), at, progress=True)
        return {f"{r['solver']}@{r['nfe']}": r["grid"] for r in harness.best_rows(rows)}

    grid_file = cache / f"{name}-g{guidance}-s{n_select}-grids.json"
    best_grid = json.loads(grid_file.read_text()) if grid_file.exists() else {}
    missing = [n for n in nfes if f"euler@{n}" not in best_grid]  # euler exists at every NFE (Heun only at some)
    if missing:  # a cached file holds the NFEs of earlier runs; add the new ones
        best_grid.update(grids(missing))
        atomic.write_text(grid_file, json.dumps(best_grid))
    best_grid = {k: v for k, v in best_grid.items() if int(k.split("@")[1]) in nfes}
    rows = []
    jobs = []  # (solver, NFE, grid, the row's cache file)
    for key, grid in best_grid.items():
        solver_name, nfe = key.split("@")
        jobs.append((solver_name, nfe, grid, cache / f"{tag}-{solver_name}-{grid}-{nfe}.json"))
    fresh = sum(not f.exists() for *_, f in jobs)  # a bar only for real work
    for solver_name, nfe, grid, f in tqdm(jobs, desc=f"{tag}: classic solvers on their best grids", leave=False,
                                          disable=fresh == 0):
        rows.append(cached(f, lambda: harness.score(
            classic.build(solver_name, int(nfe), entry.schedule, grid), entry, ev, solver_name, grid)))
    for nfe in nfes:
        rows += cached(cache / f"{tag}-presets-{nfe}.json", lambda: _preset_rows(entry, ev, nfe))
        if diffusers:
            def score_peers(nfe=nfe):  # a bar: a guided pair's schedulers take ~1 min per NFE
                return [{k: v for k, v in r.items() if k != "config"}
                        for r in peers.peer_rows(entry, ev, [nfe], batch=256, progress=True)]
            rows += [dict(r, config=None) for r in cached(cache / f"{tag}-diffusers-{nfe}.json", score_peers)]
    log(f"{tag}: classic solvers, presets{' and diffusers schedulers' if diffusers else ''} scored")

    sizes = search_sizes
    refs = None
    for nfe in nfes:
        f = cache / f"{tag}-searched-{nfe}.json"
        if not f.exists() and not search_missing:
            log(f"{tag}: no cached search at NFE {nfe} (--no-search-missing)")
            continue
        if not f.exists():
            cfg = SearchConfig(nfe=nfe, guidance=guidance, **sizes)
            refs = refs or prepare_references(entry, cfg, cache_dir=cache / "references", progress=True)
            t1 = time.perf_counter()
            res = search(entry, cfg, references=refs, progress=True, log=lambda m: None)
            io.save(res.solver, cache / f"{tag}-solver-nfe{nfe}.json")
            row = harness.score(res.solver, entry, ev, "searched", "searched")
            built = refs.build_seconds  # what computing the references cost, also when this run only loaded them
            row.update(search_seconds=round(time.perf_counter() - t1, 1),
                       reference_seconds=None if built is None else round(built, 1),
                       evaluations=res.evaluations, start=f"{res.start.name}:{res.start.meta.get('grid')}")
            atomic.write_text(f, json.dumps(row))
            log(f"{tag}: searched NFE {nfe}: FD {row['fd']:.4g}, RMSE {row['rmse']:.4g} "
                f"({row['search_seconds']} s, start {row['start']})")
        rows.append(json.loads(f.read_text()))

    add_fd_to_model(rows, entry, ev, nfes, tag, cache)
    for nfe in nfes:  # the best classic solvers at N (by FD), at 1.5 N and 2 N on the same grid
        best = [r for r in harness.best_rows(rows, "fd") if r["nfe"] == nfe and r["solver"] in classic.SOLVERS][:top]
        for r in best:
            for m in sorted({round(1.5 * nfe), 2 * nfe}):
                s = classic.build(r["solver"], m, entry.schedule, r["grid"])
                if s.nfe == m:
                    rows.append(cached(cache / f"{tag}-{r['solver']}-{r['grid']}-{m}.json",
                                       lambda s=s, r=r: harness.score(s, entry, ev, r["solver"], r["grid"])))
    log(f"{tag}: done in {time.perf_counter() - t0:.0f} s")
    return rows, quality, ev


def data_floor(n: int, draws: int = 3) -> list[float]:
    """FD of ``n`` real training images to the test set: what a perfect model scores at this sample count."""
    from solversearch.data.fashion import load_fashion
    from solversearch.models.fashion import fd_metrics

    x, fd = load_fashion("train")[0], fd_metrics()["fd"]
    return [fd(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(k))[:n]]) for k in range(draws)]


def summary(rows: list[dict], nfes) -> str:
    def at(n):  # the best classic row at NFE n by FD (any grid scored there)
        return harness.best_classic(rows, n, metric="fd")

    head = ["NFE", "searched FD", "best classic at N (FD)", "best classic at 1.5 N", "best classic at 2 N",
            "best diffusers scheduler at N (FD)", "searched FD to model", "best classic FD to model",
            "searched RMSE", "best classic RMSE at N", "search s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in nfes:
        ours = next((r for r in rows if r["solver"] == "searched" and r["nfe"] == n), None)
        if ours is None:
            continue
        cells = [str(n), f"**{ours['fd']:.3g}**" if at(n) and ours["fd"] < at(n)["fd"] else f"{ours['fd']:.3g}"]
        for m in (n, round(1.5 * n), 2 * n):
            b = at(m)
            cells.append(f"{b['fd']:.3g} ({b['solver']} {b['grid']}, NFE {m})" if b else "")
        dif = min((r for r in rows if r["solver"].startswith("diffusers:") and r["nfe"] == n),
                  key=lambda r: r["fd"], default=None)
        cells.append(f"{dif['fd']:.3g} ({dif['solver'][10:]} {dif['grid']})" if dif else "")
        fm = min((r for r in rows if r["nfe"] == n and r["solver"] in classic.SOLVERS and "fd_model" in r),
                 key=lambda r: r["fd_model"], default=None)
        cells += [(f"**{ours['fd_model']:.3g}**" if fm and ours["fd_model"] < fm["fd_model"] else
                   f"{ours['fd_model']:.3g}") if "fd_model" in ours else "",
                  f"{fm['fd_model']:.3g} ({fm['solver']} {fm['grid']})" if fm else ""]
        b_rmse = harness.best_classic(rows, n)
        cells += [f"{ours['rmse']:.4g}", f"{b_rmse['rmse']:.4g} ({b_rmse['solver']} {b_rmse['grid']})",
                  f"{ours.get('search_seconds', '')}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="fashion-rf,fashion-ddpm")
    ap.add_argument("--guidance", default="1,1.5")
    ap.add_argument("--nfe", default="5,6,8,10")
    ap.add_argument("--eval-samples", type=int, default=512)
    ap.add_argument("--select-samples", type=int, default=64, help="samples that pick each classic solver's grid")
    ap.add_argument("--top", type=int, default=3, help="best classic solvers at N also scored at 1.5 N and 2 N")
    ap.add_argument("--diffusers", action=argparse.BooleanOptionalAction, default=True,
                    help="also score diffusers' own schedulers")
    ap.add_argument("--diffusers-guidance", default="", help="only at these guidance scales (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--search", default="", help="search size overrides, e.g. samples=64,epochs=1 (smoke tests)")
    ap.add_argument("--search-missing", action=argparse.BooleanOptionalAction, default=True,
                    help="search where no searched solver is cached (--no-search-missing: report cached ones only)")
    ap.add_argument("--skip", default="", help="model:guidance pairs left out, e.g. fashion-ddpm:1")
    ap.add_argument("--nfe-for", default="", help="other NFEs for some model:guidance pairs, e.g. "
                                                   "fashion-rf:1=3-10 (several separated by ';')")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench-fashion")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nfes = parse_nfes(args.nfe)
    args.cache.mkdir(parents=True, exist_ok=True)
    sizes = {k: v for k, v in run_sizes("fashion-rf").items() if k not in ("eval_samples", "select_samples")}
    sizes.update({k: int(v) for k, v in (kv.split("=") for kv in args.search.split(",") if kv)})
    t0 = time.perf_counter()
    all_rows, sections = [], []
    skip = {(m, float(g)) for m, g in (pair.split(":") for pair in args.skip.split(",") if pair)}
    nfe_for = {}
    for item in (x for x in args.nfe_for.split(";") if x):
        pair, _, spec = item.partition("=")
        m, _, g = pair.partition(":")
        try:
            nfe_for[(m, float(g))] = parse_nfes(spec)
        except (ValueError, UserError) as e:
            ap.error(f"--nfe-for {item!r}: expected MODEL:GUIDANCE=NFES, e.g. fashion-rf:1=3-10 ({e})")
    for name in args.models.split(","):
        model_rows = []
        for g in (float(x) for x in args.guidance.split(",")):
            if (name, g) in skip:
                sections += [f"### {name}, guidance {g:g}", "", "Not run (`--skip`).", ""]
                continue
            g_nfes = nfe_for.get((name, g), nfes)
            rows, quality, ev = run(name, g, g_nfes, args.eval_samples, args.select_samples, args.cache, sizes,
                                    args.diffusers and (not args.diffusers_guidance or g in
                                                        [float(x) for x in args.diffusers_guidance.split(",")]),
                                    args.top, args.search_missing)
            for r in rows:
                r["guidance"] = g
            model_rows += rows
            grid = args.out / f"results-fashion-{name}-g{g:g}-reference.png"
            k = 10
            plots.plot_image_grid({f"{j}": ev.target[j * k:(j + 1) * k].numpy() for j in range(3)}, grid,
                                  f"{name}, guidance {g:g}: the {quality['solver']} samples (the model's quality)")
            sections += [f"### {name}, guidance {g:g}", "",
                         f"The model itself: FD of its {quality['solver']} samples = {quality['fd']:.3g} "
                         f"({quality['samples']} samples; [picture](results-fashion-{name}-g{g:g}-reference.png)); "
                         f"of its {quality['steps200']['solver']} samples = {quality['steps200']['fd']:.3g} (RMSE "
                         f"{quality['steps200']['rmse_to_target']:.2g} to the 100-step ones). "
                         "A perfect solver reaches this FD, not 0.", "", summary(rows, g_nfes), "",
                         "<details><summary>every solver (FD, best grid per NFE)</summary>", "",
                         harness.table(rows, "fd"), "", "</details>", ""]
        all_rows += model_rows
        plot_rows = [dict(r, solver=f"{r['solver']} (w={r['guidance']:g})") for r in model_rows
                     if r["solver"] in ("searched", "ab2", "ab3", "dpm++2m", "dpm++3m", "ipndm", "unipc", "euler",
                                        "ddim")]
        plots.plot_error_vs_nfe(plot_rows, args.out / f"results-fashion-{name}.png", "fd",
                                title=f"{name}: FD vs NFE (each solver on its best grid)")
        sections += [f"![{name}](results-fashion-{name}.png)", ""]
    floor = data_floor(args.eval_samples)
    text = ["# Bundled image models: searched solver vs classic solvers", "",
            f"FD (classifier features, {args.eval_samples} samples against the 10k test images; biased upward at "
            f"this count: {args.eval_samples} real training images score {min(floor):.2f}-{max(floor):.2f} over "
            f"3 draws; compare rows) and RMSE to a 100-step high-order solution from the same noise "
            f"({TARGET['rf']} on fashion-rf, {TARGET['ddpm']} on fashion-ddpm). Classic solvers: grid chosen per "
            f"NFE by RMSE on {args.select_samples} samples; at 1.5 N and 2 N the {args.top} best classic solvers "
            f"at N (by FD) on their grid, besides every classic solver where 1.5 N or 2 N is itself one of the "
            f"NFEs. FD to model: FD of a solver's samples to the model's own 100-step samples from the same noises "
            f"(0 for a perfect solver, whatever the model's quality), on the searched solver and the three most "
            f"accurate classic solvers (by RMSE) at each NFE. Searched: preset 'ours', seed 0, "
            f"{sizes['samples']} training + {sizes['val_samples']} validation samples, {sizes['epochs']} epochs, "
            f"batch {sizes['batch_size']}, searched at the guidance it is scored at. Bold: the searched solver "
            f"beats the best classic solver at equal NFE (by FD; by FD to model). diffusers' own schedulers: "
            + ("not run" if not args.diffusers else f"at guidance {args.diffusers_guidance}"
               if args.diffusers_guidance else "at every guidance") + ".", "",
            f"Regenerate: `{' '.join(['.venv/bin/python bench/fashion.py', *sys.argv[1:]])}` "
            f"({time.perf_counter() - t0:.0f} s for this run, cached rows excluded).", ""] + sections
    atomic.write_text(args.out / "results-fashion.md", "\n".join(text))
    atomic.write_text(args.out / "results-fashion.json", json.dumps(all_rows, indent=1) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
