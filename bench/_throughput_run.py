"""Helper of bench/scaleout.py, run under torchrun: times the search steps (references excluded)."""

import json
import os
import tempfile

import torch

from solversearch.search import distributed as dd
from solversearch.search.search import SearchConfig, prepare_references, search

import scaleout  # noqa: E402  (bench/ is the script's folder, so it is on sys.path)

dd.init_from_env("gloo")
entry = scaleout.entry_by_name(os.environ.get("SCALEOUT_MODEL", "convnet"))
cfg = SearchConfig(nfe=6, samples=256, val_samples=64, batch_size=64 // dd.world(), epochs=2, init="zero",
                   reference="euler:25")
refs = prepare_references(entry, cfg, cache_dir=os.path.join(tempfile.gettempdir(), "solversearch-bench-cache"))
res = search(entry, cfg, references=refs, progress=False, log=lambda m: None)
dt = res.seconds["search"]
if dd.is_main():
    print(json.dumps({"samples_per_s": round(cfg.epochs * cfg.samples / dt, 1), "search_s": round(dt, 2)}))
