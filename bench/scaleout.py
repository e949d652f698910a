"""Scale-out figures of the search (issue: multi-process search, cache, resume, flat memory).

    .venv/bin/python bench/scaleout.py            # prints a markdown table per figure

Models: ``gmm-rf`` (bundled, exact, cheap per call) and ``fashion-rf`` (the bundled 0.9 M-parameter diffusers
UNet, so that model calls cost what they cost in practice; ``convnet``, a random-weight stand-in, where its
weights are missing).  Ratios are measured within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from solversearch.conventions import RectifiedFlow
from solversearch.models import ModelEntry, get_model
from solversearch.search.search import SearchConfig, prepare_references, search
from solversearch.solvers import classic
from solversearch.solvers.solver import run_linear


class ConvNet(torch.nn.Module):
    def __init__(self, ch=48):
        super().__init__()
        self.inp = torch.nn.Conv2d(1, ch, 3, padding=1)
        self.emb = torch.nn.Linear(1, ch)
        self.body = torch.nn.Sequential(*[m for _ in range(4) for m in (
            torch.nn.GroupNorm(8, ch), torch.nn.SiLU(), torch.nn.Conv2d(ch, ch, 3, padding=1))])
        self.out = torch.nn.Conv2d(ch, 1, 3, padding=1)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x, t, class_labels=None):
        h = self.inp(x) + self.emb(t.reshape(-1, 1).to(x.dtype))[:, :, None, None]
        return 0.1 * self.out(self.body(h))


def convnet_entry() -> ModelEntry:
    torch.manual_seed(0)
    return ModelEntry("convnet", ConvNet(), RectifiedFlow(), "velocity", (1, 28, 28),
                      extra={"fingerprint": "convnet-seed0"})


def entry_by_name(name):
    return convnet_entry() if name == "convnet" else get_model(name)


def image_model() -> str:
    """The bundled image model when its weights are there, else the random stand-in."""
    try:
        get_model("fashion-rf")
        return "fashion-rf"
    except FileNotFoundError:
        return "convnet"


def _cond(entry, n):
    labels = entry.draw(n, seed=0)[1]
    return {} if labels is None else {entry.label_key: labels}


def small_cfg(nfe, **kw):
    base = dict(nfe=nfe, samples=128, val_samples=64, batch_size=32, epochs=2, init="zero",
                reference="euler:25")
    base.update(kw)
    return SearchConfig(**base)


def overhead(name: str) -> dict:
    """Search wall time vs the same forward+backward model calls timed alone."""
    entry = entry_by_name(name)
    cfg = small_cfg(6)
    refs = prepare_references(entry, cfg)
    t0 = time.perf_counter()
    res = search(entry, cfg, references=refs, progress=False, log=lambda m: None)
    t_search = res.seconds["search"]
    # the same calls alone: per optimizer step one forward+backward through nfe model calls, per epoch one
    # validation pass of nfe forwards, plus one validation pass of the start solver
    steps = cfg.epochs * (cfg.samples // cfg.batch_size)
    x = torch.randn(cfg.batch_size, *entry.shape, requires_grad=True)
    t = torch.full((cfg.batch_size,), 0.5)
    net, cond = entry.net, _cond(entry, cfg.batch_size)
    t0 = time.perf_counter()
    for _ in range(steps * cfg.nfe):
        net(x, t, **cond).sum().backward()
    xv = torch.randn(cfg.batch_size, *entry.shape)
    with torch.no_grad():
        for _ in range((cfg.epochs + 1) * cfg.nfe * (cfg.val_samples // cfg.batch_size)):
            net(xv, t, **cond)
    t_calls = time.perf_counter() - t0
    return {"model": name, "search_s": round(t_search, 2), "calls_alone_s": round(t_calls, 2),
            "ratio": round(t_search / t_calls, 3)}


def multi_nfe(name: str, **kw) -> dict:
    """NFE 4-10 in one run (shared references) vs NFE 6 alone, both including reference generation.

    The references are computed once for all NFEs; each NFE's search costs about epochs x NFE x 3 network
    calls per sample, so the ratio is (refs + sum over NFE 4..10) / (refs + NFE 6): near 2 only where the
    references dominate (a 100-step reference and one pass over the samples), larger with more epochs.
    """
    entry = entry_by_name(name)
    t0 = time.perf_counter()
    refs = prepare_references(entry, small_cfg(6, **kw))
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    search(entry, small_cfg(6, **kw), references=refs, progress=False, log=lambda m: None)
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    for nfe in range(4, 11):
        search(entry, small_cfg(nfe, **kw), references=refs, progress=False, log=lambda m: None)
    t_all = time.perf_counter() - t0
    cfg = small_cfg(6, **kw)
    return {"model": name, "reference": cfg.reference, "epochs": cfg.epochs, "references_s": round(t_ref, 2),
            "nfe6_alone_s": round(t_ref + t_one, 2), "nfe4to10_s": round(t_ref + t_all, 2),
            "ratio": round((t_ref + t_all) / (t_ref + t_one), 2)}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(name: str, nfe: int, ckpt: bool) -> None:
    """One loss.backward through nfe calls; prints the peak RSS growth (MiB) over the RSS just before it.

    Linux: writing 5 to /proc/self/clear_refs resets the peak (VmHWM), so the peak is that of this step alone.
    """
    entry = entry_by_name(name)
    torch.set_num_threads(1)
    solver = classic.build("ab2", nfe, entry.schedule, "uniform-t")
    times = solver.time_tensor().requires_grad_(True)
    M = solver.matrix().requires_grad_(True)
    x = torch.randn(64, *entry.shape)
    labels = entry.draw(64, seed=0)[1]
    model = entry.wrap(labels)
    run_linear(entry.wrap(None if labels is None else labels[:2]), x[:2], times, M, solver.form,
               entry.schedule)  # warm up allocator paths
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    out = run_linear(model, x, times, M, solver.form, entry.schedule, grad_checkpoint=ckpt)
    (out**2).mean().backward()
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_growth_mib": round((peak - before) / 1024, 1)}))


def memory(name: str) -> list[dict]:
    """Peak RSS growth per NFE.  The children run with glibc's mmap threshold at 64 KiB, so freed activations
    go back to the OS: with the default heap the peak RSS also counts fragmentation left by the recomputations
    (measured: +40 MiB per NFE with checkpointing that is not live memory)."""
    rows = []
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for nfe in (2, 4, 6, 8, 10, 16):
        row = {"model": name, "nfe": nfe}
        for ckpt in (False, True):
            out = subprocess.run([sys.executable, __file__, "--memory-child", name, str(nfe), str(int(ckpt))],
                                 capture_output=True, text=True, check=True, env=env).stdout
            row["checkpointing" if ckpt else "plain"] = json.loads(out.strip().splitlines()[-1])["peak_growth_mib"]
        rows.append(row)
    return rows


def throughput(name: str) -> list[dict]:
    """Training samples per second: 1 process x 2 threads vs 2 gloo processes x 1 thread (torchrun)."""
    rows = []
    script = os.path.join(os.path.dirname(__file__), "_throughput_run.py")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    for procs in (1, 2):
        env = dict(os.environ, OMP_NUM_THREADS=str(2 // procs), SCALEOUT_MODEL=name)
        cmd = [torchrun, "--nproc-per-node", str(procs), "--master-port", "29541", script]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        rows.append(dict(json.loads(out.strip().splitlines()[-1]), processes=procs, threads=2 // procs))
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] +
                     ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory-child", nargs=3)
    args = ap.parse_args()
    if args.memory_child:
        name, nfe, ck = args.memory_child
        return memory_child(name, int(nfe), bool(int(ck)))
    torch.set_num_threads(2)
    img = image_model()
    t0 = time.perf_counter()
    out = ["# Scale-out figures of the search", "",
           f"`.venv/bin/python bench/scaleout.py` on {os.cpu_count()} CPU cores, torch {torch.__version__}; search "
           "settings: 128 training + 64 validation samples, batch 32, 2 epochs, zero init, Euler-25 reference "
           "unless a row says otherwise. Ratios are measured within this one run.", "",
           "## Search overhead (search wall time / the same model calls alone)", "",
           table([overhead("gmm-rf"), overhead(img)]), "",
           "## Several NFEs in one run (shared references) vs one NFE", "",
           table([multi_nfe("gmm-rf"), multi_nfe(img), multi_nfe(img, reference="ab4:100", epochs=1)]), "",
           f"## Peak memory growth of one backward pass through NFE calls (MiB), batch 64, {img}", "",
           table(memory(img)), "",
           f"## Throughput, {img}, NFE 6 (training samples per second; gloo)", "",
           table(throughput(img)), ""]
    out.insert(3, f"Run time: {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(out)
    from solversearch import atomic

    atomic.write_text(os.path.join(os.path.dirname(__file__), "..", "docs", "results-scaleout.md"), text)
    print(text)


if __name__ == "__main__":
    main()
