"""Reliability: malformed solver files are always rejected cleanly, writes are atomic under SIGKILL, a diverging
search keeps its best solver, sampling is re-entrant, and nothing in a file can run code or pick a path."""

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solversearch.models import get_model
from solversearch.search.search import SearchConfig, SearchDiverged, search
from solversearch.solvers import classic, io, presets
from solversearch.solvers.solver import sample

N_FUZZ = 1500  # per file/dict property test (3000 generated bad inputs), plus 500 bad scheduler configs


def _valid() -> dict:
    return io.to_dict(presets.load_preset("sit-xl-2-256", 6))


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=8),
                         st.floats(allow_nan=True, allow_infinity=True))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(st.text(max_size=6), inner,
                                                                                max_size=3)), max_leaves=8)
BAD_NUMBERS = st.one_of(st.sampled_from([float("nan"), float("inf"), -float("inf")]), st.text(max_size=3),
                        st.none(), st.booleans(), st.lists(st.integers(), max_size=2))


@st.composite
def malformed(draw):
    """A solver dict with one defect that the format forbids (each branch is invalid by construction)."""
    d = _valid()
    n = len(d["times"]) - 1
    defect = draw(st.sampled_from([
        "drop_key", "format", "version", "kind", "form", "schedule", "times_type", "times_len", "times_order",
        "times_number", "times_end", "coef_rows", "coef_len", "coef_number", "coef_sum", "nfe", "order",
        "meta", "prediction", "root"]))
    if defect == "drop_key":
        del d[draw(st.sampled_from(["format", "format_version", "kind", "form", "schedule", "times",
                                    "coefficients"]))]
    elif defect == "format":
        d["format"] = draw(JSON_VALUES.filter(lambda v: v != io.FORMAT))
    elif defect == "version":
        d["format_version"] = draw(JSON_VALUES.filter(lambda v: v != 1 or isinstance(v, bool)))
    elif defect == "kind":
        d["kind"] = draw(JSON_VALUES.filter(lambda v: v not in ("linear", "heun", "unipc")))
    elif defect == "form":
        d["form"] = draw(JSON_VALUES.filter(lambda v: v not in ("velocity", "data", "noise")))
    elif defect == "schedule":
        d["schedule"] = draw(st.one_of(JSON_SCALARS, st.fixed_dictionaries(
            {"name": JSON_VALUES.filter(lambda v: v not in ("rf", "vp-linear", "ddpm"))})))
    elif defect == "times_type":
        d["times"] = draw(st.one_of(JSON_SCALARS, st.dictionaries(st.text(max_size=3), JSON_SCALARS)))
    elif defect == "times_len":
        d["times"] = d["times"][: draw(st.integers(0, 1))]
    elif defect == "times_order":
        i = draw(st.integers(1, n - 1))
        d["times"][i] = d["times"][i - 1] - draw(st.floats(0, 0.5))
    elif defect == "times_number":
        d["times"][draw(st.integers(0, n))] = draw(BAD_NUMBERS)
    elif defect == "times_end":
        d["times"][-1] = draw(st.floats(-2, 0.99) | st.floats(1.01, 5))
    elif defect == "coef_rows":
        d["coefficients"] = d["coefficients"][: draw(st.integers(0, n - 1))]
    elif defect == "coef_len":
        i = draw(st.integers(0, n - 1))
        d["coefficients"][i] = d["coefficients"][i] + [0.0] * draw(st.integers(1, 3))
    elif defect == "coef_number":
        i = draw(st.integers(0, n - 1))
        d["coefficients"][i][draw(st.integers(0, i))] = draw(BAD_NUMBERS)
    elif defect == "coef_sum":
        i = draw(st.integers(0, n - 1))
        d["coefficients"][i][0] += draw(st.floats(1e-3, 100) | st.floats(-100, -1e-3))
    elif defect == "nfe":
        d["nfe"] = draw(st.integers().filter(lambda v: v != n))
    elif defect == "order":
        d["order"] = draw(st.one_of(st.integers().filter(lambda v: not 1 <= v <= 4), st.text(max_size=3)))
    elif defect == "meta":
        d["meta"] = draw(st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=2)))
    elif defect == "prediction":
        d["meta"] = {"prediction": draw(JSON_VALUES.filter(lambda v: v not in ("velocity", "epsilon", "x0", "v")))}
    else:
        return draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
    return d


@settings(max_examples=N_FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(malformed())
def test_every_malformed_solver_dict_is_rejected_with_the_validation_error(d):
    with pytest.raises(io.SolverFileError) as info:
        io.from_dict(d, "fuzz.json")
    assert str(info.value).startswith("fuzz.json: field '")


@settings(max_examples=N_FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 malformed().map(lambda d: json.dumps(d, allow_nan=True).encode())))
def test_every_malformed_file_is_rejected_with_the_validation_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "solver.json"
    path.write_bytes(blob)
    with pytest.raises(io.SolverFileError) as info:
        io.load(path)
    assert str(path) in str(info.value)


@settings(max_examples=N_FUZZ // 3, deadline=None, suppress_health_check=list(HealthCheck))
@given(malformed(), st.integers(0, 2))
def test_every_malformed_scheduler_config_is_rejected_with_the_validation_error(d, pos):
    """A diffusers scheduler config carries solver dicts: a bad one (among good ones) is named by its index."""
    pytest.importorskip("diffusers")
    from solversearch.integrations.diffusers_scheduler import SolverScheduler

    good = [io.to_dict(presets.load_preset("sit-xl-2-256", n)) for n in (5, 7)]
    solvers = good[:pos] + [d] + good[pos:]
    with pytest.raises(io.SolverFileError) as info:
        SolverScheduler.from_config({"solvers": solvers})
    assert f"config solvers[{pos}]: field '" in str(info.value)


def test_a_valid_file_still_loads_after_fuzzing_setup(tmp_path):
    # guards the fuzz tests: the base document they mutate is itself accepted
    s = io.from_dict(_valid(), "ok.json")
    assert s.nfe == 6


def test_solver_file_cannot_run_code_or_choose_paths(tmp_path):
    d = _valid()
    d["name"] = "../../escape"
    d["meta"] = {"__reduce__": "os.system('touch pwned')", "path": "/etc/passwd"}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d))
    s = io.load(path)
    out = tmp_path / "out"
    io.save(s, out / "solver.json")
    # the solver's own fields never become file names: only what the caller names is written
    assert sorted(p.name for p in out.iterdir()) == ["solver.json"]
    assert not (tmp_path / "pwned").exists() and not (tmp_path.parent / "escape").exists()


WRITER = r"""
import sys
from solversearch.solvers import io, presets
base = presets.load_preset("flowdcn-b-2-256", 10)
path, i = sys.argv[1], 0
while True:
    i += 1
    io.save(base.replace(meta={"i": i, "pad": "x" * 200_000}), path)
"""


def test_sigkill_mid_write_leaves_old_or_new_file_never_a_truncated_one(tmp_path):
    path = tmp_path / "solver.json"
    kills = 0
    for delay in (0.05, 0.11, 0.17, 0.23, 0.31, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        try:
            deadline = time.time() + 30
            while not path.exists() and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        finally:
            proc.wait()
        s = io.load(path)  # raises on a truncated file
        assert s.nfe == 10 and len(s.meta["pad"]) == 200_000
    assert kills == 6


def test_diverging_search_stops_and_keeps_the_best_solver(tmp_path):
    """A network that blows up as soon as the search trains (grad mode) stops the search cleanly."""
    from solversearch.models import ModelEntry

    base = get_model("gmm2d-rf")

    def fragile(x, t, **kw):
        out = base.net(x, t, **kw)
        return out * float("nan") if torch.is_grad_enabled() and x.requires_grad else out

    entry = ModelEntry("fragile", fragile, base.schedule, base.prediction, base.shape, num_classes=10,
                       null_label=10)
    cfg = SearchConfig(nfe=3, samples=64, val_samples=32, batch_size=32, epochs=3, init="ab2")
    with pytest.raises(SearchDiverged, match="search diverged at epoch 1, optimizer step 0: step 1: model returned "
                                             "non-finite values") as info:
        search(entry, cfg, progress=False, log=lambda m: None)
    best = info.value.best
    start = classic.build("ab2", 3, entry.schedule, "uniform-t")
    assert best is not None
    assert torch.allclose(best.time_tensor(), start.time_tensor(), atol=1e-12)
    assert torch.allclose(best.matrix(), start.matrix(), atol=1e-12)


def test_model_fault_names_step_and_time():
    entry = get_model("gmm2d-vp")
    calls = {"n": 0}

    def bad_net(x, t, **kw):
        calls["n"] += 1
        out = entry.net(x, t, **kw)
        return out[:, :1] if calls["n"] == 3 else out

    from solversearch.models.wrapper import ModelError, WrappedModel

    model = WrappedModel(bad_net, entry.schedule, entry.prediction)
    solver = classic.build("dpm++2m", 5, entry.schedule, "uniform-lambda")
    with pytest.raises(ModelError, match=r"step 2: model returned shape \(4, 1\) for input \(4, 2\) \(at t="):
        sample(solver, model, torch.randn(4, 2))


@pytest.mark.parametrize("threads", [2, 8])
def test_sampling_from_many_threads_matches_sequential(threads):
    entry = get_model("gmm-vp")
    solver = presets.load_preset("dit-xl-2-256", 6)
    jobs = [entry.draw(32, seed=s) for s in range(threads)]
    sequential = [sample(solver, entry.wrap(lab), x) for x, lab in jobs]
    results = [None] * threads

    def work(k):
        x, lab = jobs[k]
        results[k] = sample(solver, entry.wrap(lab), x)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for a, b in zip(results, sequential):
        assert torch.equal(a, b)


def test_solver_is_frozen_data():
    s = presets.load_preset("sit-xl-2-256", 5)
    with pytest.raises(Exception):
        s.times = (0.0, 1.0)
    assert copy.deepcopy(s) == s and hash(s) == hash(copy.deepcopy(s))


def test_no_unpickling_anywhere_in_the_package():
    """Static guard: the package never imports pickle and every torch.load passes weights_only=True."""
    import pathlib
    import re

    import solversearch

    root = pathlib.Path(solversearch.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        if re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M):
            offenders.append(f"{path}: imports a pickle module")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                offenders.append(f"{path}: {call}")
    assert not offenders, offenders
