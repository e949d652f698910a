"""RMSE of candidate reference specs against the exact (dopri5) eval targets."""
import sys, time
sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from common import eval_set
from solversearch.models import get_model
from solversearch.search.reference import reference_for
from solversearch.evaluation.harness import rmse
for model, specs in [("gmm-rf", ["euler:100", "ab4:100", "ab4:200", "ab4:400", "dpm++3m:100:uniform-lambda", "ab4:100:karras", "ab4:200:quadratic", "dopri5"]),
                     ("gmm-vp", ["ddim:100", "dpm++3m:100:uniform-lambda", "dpm++3m:200:uniform-lambda", "dpm++3m:100:quadratic", "ab4:100:uniform-lambda", "dpm++3m:400:uniform-lambda", "dopri5"])]:
    e = get_model(model); ev = eval_set(model)
    n = 1024
    for spec in specs:
        t0 = time.time()
        ref = reference_for(e, ev.noise[:n], ev.labels[:n], spec, 1.0, 512)
        print(model, spec, f"{rmse(ref.final, ev.target[:n]):.3g}", f"{time.time()-t0:.1f}s", flush=True)
