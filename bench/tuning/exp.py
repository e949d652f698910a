"""One experiment: search at given NFEs/seeds with SearchConfig overrides, score on the cached eval set.

usage: exp.py MODEL NFES SEEDS TAG [field=value ...]    e.g. exp.py gmm-rf 3,5,8 0,1,2 base lr=0.003 samples=2048
Appends one JSON line per (nfe, seed) to /tmp/solversearch_tuning/results.jsonl.
"""
import sys, json, time, os
sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
if os.environ.get("THREADS"):
    torch.set_num_threads(int(os.environ["THREADS"]))
from common import eval_set, bests, CACHE
from solversearch.models import get_model
from solversearch.search.search import SearchConfig, search
from solversearch.evaluation.harness import score
from dataclasses import fields

model, nfes, seeds, tag = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], \
    [int(x) for x in sys.argv[3].split(",")], sys.argv[4]
types = {f.name: f.type for f in fields(SearchConfig)}
over = {}
for kv in sys.argv[5:]:
    k, v = kv.split("=", 1)
    t = types[k]
    if "bool" in t:
        v = {"true": True, "false": False, "none": None}[v.lower()]
    elif "int" in t:
        v = int(v)
    elif "float" in t:
        v = float(v)
    elif v.lower() == "none":
        v = None
    over[k] = v
entry = get_model(model)
ev = eval_set(model)
B = bests(model)
for nfe in nfes:
    for seed in seeds:
        cfg = SearchConfig(nfe=nfe, seed=seed, **over)
        t0 = time.time()
        res = search(entry, cfg, progress=False, log=lambda *a: None)
        secs = time.time() - t0
        r = score(res.solver, entry, ev, "searched")["rmse"]
        rs = score(res.start, entry, ev, "start")["rmse"]
        h = [round(x["val_rmse"], 5) for x in res.history]
        best_ep = min(range(len(h)), key=lambda i: h[i])
        out = {"tag": tag, "model": model, "nfe": nfe, "seed": seed, "over": over, "rmse": r, "start_rmse": rs,
               "start": f"{res.start.name}/{res.start.meta.get('grid')}", "classic": B[nfe]["rmse"],
               "classic8": B[8]["rmse"], "classic10": B[10]["rmse"], "seconds": secs, "clock": res.seconds,
               "val_hist": h, "best_epoch": best_ep}
        with open(f"{CACHE}/results.jsonl", "a") as f:
            f.write(json.dumps(out) + "\n")
        flag = ("W" if r < B[nfe]["rmse"] else "L") + ("" if r <= rs * 1.0001 else "!start")
        print(f"{tag} {model} N{nfe} s{seed}: {r:.4g} (start {res.start.name}/{res.start.meta.get('grid')} {rs:.4g}, "
              f"classic {B[nfe]['rmse']:.4g}) {flag} ratio={r / B[nfe]['rmse']:.3f} {secs:.0f}s best_ep={best_ep} "
              f"val={h}", flush=True)
