"""Best classic solver (any solver, best grid chosen on the eval set) vs the exact ODE solution, NFE 3..10."""
import sys
sys.path.insert(0, __file__.rsplit("/", 1)[0])
import time
from common import NFES, EVAL_N, bests, classic_table
from solversearch.evaluation.harness import best_rows

for model in sys.argv[1:] or ["gmm-rf", "gmm-vp"]:
    t0 = time.time()
    rows = classic_table(model)
    b = bests(model)
    print(f"\n## {model} (eval n={EVAL_N}, exact target)   [{time.time()-t0:.0f}s]")
    print("| NFE | best classic | grid | RMSE | 2nd best (solver/grid/RMSE) |")
    print("|---|---|---|---|---|")
    for n in NFES:
        br = [r for r in best_rows(rows) if r["nfe"] == n]
        s = br[1] if len(br) > 1 else None
        print(f"| {n} | {b[n]['solver']} | {b[n]['grid']} | {b[n]['rmse']:.4g} | "
              f"{s['solver']}/{s['grid']}/{s['rmse']:.4g} |")
