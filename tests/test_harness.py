"""The comparison harness: grid choice on a subset, extra metrics on every row, best rows by any metric."""

import pytest
import torch

from solversearch.evaluation import harness
from solversearch.models import get_model
from solversearch.solvers import classic
from solversearch.solvers.grids import GRIDS


@pytest.fixture(scope="module")
def setup():
    entry = get_model("gmm-rf")
    ev = harness.make_eval_set(entry, 96, seed=5, target="ab4:50")
    return entry, ev


def test_grid_is_chosen_on_the_subset_and_scored_on_all(setup):
    entry, ev = setup
    rows = harness.classic_rows_on_best_grid(entry, ev, [4], select=24, solvers=["ab2", "euler"], progress=False)
    assert sorted(r["solver"] for r in rows) == ["ab2", "euler"] and all(r["samples"] == 96 for r in rows)
    sub = harness.subset(ev, 24)
    for r in rows:
        errs = {g: harness.score(classic.build(r["solver"], 4, entry.schedule, g), entry, sub)["rmse"] for g in GRIDS}
        assert r["grid"] == min(errs, key=errs.get)
        full = harness.score(classic.build(r["solver"], 4, entry.schedule, r["grid"]), entry, ev)
        assert r["rmse"] == pytest.approx(full["rmse"], rel=1e-12)


def test_extra_metrics_land_on_every_row_and_rank_rows(setup):
    entry, ev = setup
    mean_abs = {"meanabs": lambda x: float(x.abs().mean())}
    ev2 = harness.EvalSet(ev.noise, ev.labels, ev.target, ev.guidance, ev.target_kind, ev.data_range, mean_abs)
    rows = harness.classic_rows(entry, ev2, [3], solvers=["euler", "ab2"], grids=["uniform-t"], progress=False)
    for r in rows:
        x = harness.run_solver(classic.build(r["solver"], 3, entry.schedule, "uniform-t"), entry, ev.noise,
                               ev.labels)
        assert r["meanabs"] == pytest.approx(float(x.abs().mean()))
    by_metric = harness.best_rows(rows, "meanabs")
    assert [r["meanabs"] for r in by_metric] == sorted(r["meanabs"] for r in rows)
    assert harness.best_classic(rows, 3, metric="meanabs")["meanabs"] == min(r["meanabs"] for r in rows)
