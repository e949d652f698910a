"""Shared helpers for the tuning experiments: cached eval sets (exact dopri5 targets) and classic tables."""
import json, os, sys, time
import torch
import fastgmm  # noqa: F401  (exact-math speed patch of the GMM model, see fastgmm.py)
from solversearch.models import get_model
from solversearch.evaluation.harness import make_eval_set, EvalSet, classic_rows, best_classic, score

CACHE = "/tmp/solversearch_tuning"
EVAL_N = int(os.environ.get("EVAL_N", 4096))
EVAL_SEED = 777_001  # differs from every search seed (search uses 2*seed, 2*seed+1 with seed in 0..2)
NFES = list(range(3, 11))


def eval_set(model: str) -> EvalSet:
    os.makedirs(CACHE, exist_ok=True)
    path = f"{CACHE}/eval_{model}_{EVAL_N}_{EVAL_SEED}.pt"
    entry = get_model(model)
    if os.path.exists(path):
        d = torch.load(path)
        return EvalSet(d["noise"], d["labels"], d["target"], d["guidance"], d["kind"], d["range"])
    t0 = time.time()
    ev = make_eval_set(entry, EVAL_N, seed=EVAL_SEED, target="exact")
    torch.save({"noise": ev.noise, "labels": ev.labels, "target": ev.target, "guidance": ev.guidance,
                "kind": ev.target_kind, "range": ev.data_range}, path)
    print(f"[{model}] eval set n={EVAL_N} built in {time.time() - t0:.1f}s -> {path}", flush=True)
    return ev


def classic_table(model: str) -> list[dict]:
    path = f"{CACHE}/classic_{model}_{EVAL_N}_{EVAL_SEED}.json"
    if os.path.exists(path):
        return json.load(open(path))
    ev = eval_set(model)
    rows = classic_rows(get_model(model), ev, NFES, progress=False)
    json.dump(rows, open(path, "w"))
    return rows


def bests(model: str) -> dict:
    rows = classic_table(model)
    return {n: best_classic(rows, n) for n in NFES}
