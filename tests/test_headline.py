"""Headline figures on hand-made rows whose answers are known: worst seed counts, the smallest matching NFE,
families kept apart, and the flag for a metric that rewards solver error."""

import pytest

from solversearch.evaluation.headline import best_of, equal_quality_nfe, rewards_error, searched_value


def row(solver, nfe, rmse, grid="uniform-t", **kw):
    return {"solver": solver, "nfe": nfe, "rmse": rmse, "grid": grid, **kw}


ROWS = [
    row("ab3", 10, 0.020), row("ab3", 10, 0.018, grid="karras"), row("unipc", 10, 0.025),
    row("ab3", 5, 0.060), row("dpm++2m", 5, 0.050),
    row("diffusers:UniPCMultistep", 10, 0.001), row("preset:sit-xl-2-256", 10, 0.002),
    # searched over two seeds: the worst seed decides
    row("searched-ours", 5, 0.017, seed=0), row("searched-ours", 5, 0.019, seed=1),
    row("searched-ours", 6, 0.015, seed=0), row("searched-ours", 6, 0.016, seed=1),
    row("searched-ours", 10, 0.010, seed=0), row("searched-ours", 10, 0.011, seed=1),
    row("searched-paper", 4, 0.001),  # the paper preset is not "the searched solver"
]


def test_worst_seed_and_families():
    assert searched_value(ROWS, 5, "rmse") == 0.019
    assert searched_value(ROWS, 4, "rmse") is None
    assert best_of(ROWS, 10, "rmse")["grid"] == "karras"  # any grid, never a diffusers or paper row
    assert best_of(ROWS, 10, "rmse", "diffusers")["rmse"] == 0.001
    assert best_of(ROWS, 10, "rmse", "paper")["rmse"] == 0.002
    assert best_of(ROWS, 5, "rmse")["solver"] == "dpm++2m"
    with pytest.raises(ValueError, match="unknown kind"):
        best_of(ROWS, 5, "rmse", "mine")


def test_equal_quality_nfe():
    n, best = equal_quality_nfe(ROWS, "rmse")
    assert (n, best["rmse"]) == (6, 0.018)  # NFE 5's worst seed 0.019 > 0.018; NFE 6's 0.016 <= 0.018
    n, _ = equal_quality_nfe([r for r in ROWS if r["nfe"] != 6], "rmse")
    assert n == 10
    n, best = equal_quality_nfe([r for r in ROWS if r["nfe"] == 5], "rmse")  # nothing classic at 10
    assert (n, best) == (None, None)
    worse = [dict(r, rmse=1.0) if r["solver"] == "searched-ours" else r for r in ROWS]
    n, best = equal_quality_nfe(worse, "rmse")
    assert n is None and best["rmse"] == 0.018


def test_rewards_error_flags_a_metric_better_at_fewer_steps():
    assert not rewards_error(ROWS, "rmse")  # classic error falls with NFE
    fd = [dict(r, fd=r["rmse"]) for r in ROWS] + [row("ab2", 8, 0.5, fd=0.010)]
    assert rewards_error(fd, "fd")
