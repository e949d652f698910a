"""Tables from /tmp/solversearch_tuning/results.jsonl: best classic vs paper vs ours (mean, min..max over seeds)."""
import sys, json, statistics as st
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import bests, NFES, CACHE
rows = [json.loads(l) for l in open(f"{CACHE}/results.jsonl")]
ours_tag, paper_tag = (sys.argv[1:3] if len(sys.argv) > 2 else ("ours-final", "paper-final"))
def agg(model, tag, n, key="rmse"):
    v = [r[key] for r in rows if r["model"] == model and r["tag"] == tag and r["nfe"] == n]
    return v
def fmt(v):
    return f"{st.mean(v):.4g} [{min(v):.4g}..{max(v):.4g}] (n={len(v)})" if v else "-"
for model in ["gmm-rf", "gmm-vp"]:
    B = bests(model)
    print(f"\n## {model}  (RMSE vs exact, eval n=4096 seed 777001; ours/paper: mean [min..max] over seeds)")
    print("| NFE | best classic (grid) | RMSE | paper preset | ours | ours/classic (worst seed) | ours<=start all seeds | ours s/NFE-search |")
    print("|---|---|---|---|---|---|---|---|")
    for n in NFES:
        o = [r for r in rows if r["model"] == model and r["tag"] == ours_tag and r["nfe"] == n]
        p = agg(model, paper_tag, n)
        ov = [r["rmse"] for r in o]
        worst = f"{max(ov) / B[n]['rmse']:.3f}" if ov else "-"
        ok = all(r["rmse"] <= r["start_rmse"] * 1.0001 for r in o) if o else "-"
        secs = f"{st.mean(r['seconds'] for r in o):.0f}" if o else "-"
        print(f"| {n} | {B[n]['solver']} ({B[n]['grid']}) | {B[n]['rmse']:.4g} | {fmt(p)} | {fmt(ov)} | {worst} | {ok} | {secs} |")
    o5 = agg(model, ours_tag, 5)
    if o5:
        print(f"ours NFE5 worst seed {max(o5):.4g} / mean {st.mean(o5):.4g} vs best classic NFE8 {B[8]['rmse']:.4g}, NFE10 {B[10]['rmse']:.4g}")
    ps = [r["seconds"] for r in rows if r["model"] == model and r["tag"] == paper_tag]
    if ps: print(f"paper preset mean search seconds {st.mean(ps):.0f}")
