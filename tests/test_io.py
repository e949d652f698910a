"""Solver files: exact round trips, one clear error (file + field) per defect, atomic writes."""

import json
import os

import pytest

from solversearch.conventions import DDPMDiscrete, RectifiedFlow, VPLinear
from solversearch.solvers import io, presets
from solversearch.solvers.classic import SOLVERS, build
from solversearch.solvers.io import SolverFileError


def _solvers():
    out = []
    for sched in (RectifiedFlow(), VPLinear(), DDPMDiscrete()):
        for name in SOLVERS:
            for grid in ("uniform-t", "karras"):
                out.append(build(name, 7, sched, grid))
    out.append(presets.load_preset("dit-xl-2-256", 8))
    out.append(presets.load_preset("sit-xl-2-256", 5))
    return out


def test_save_load_round_trip_is_exact(tmp_path):
    solvers = _solvers()
    assert {s.kind for s in solvers} == {"linear", "heun", "unipc"}
    for k, s in enumerate(solvers):
        path = tmp_path / f"s{k}.json"
        io.save(s, path)
        back = io.load(path)
        assert back == s, s.name
        assert back.times == s.times and back.coeffs == s.coeffs  # bit-exact floats, not approximately
        assert back.meta == s.meta
        assert back.nfe == s.nfe
    # and from_dict(to_dict(.)) without the file
    for s in solvers:
        assert io.from_dict(json.loads(json.dumps(io.to_dict(s)))) == s


def test_saved_file_is_the_documented_format(tmp_path):
    s = presets.load_preset("flowdcn-b-2-256", 6)
    path = io.save(s, tmp_path / "x.json")
    d = json.loads(path.read_text())
    assert d["format"] == "solversearch.solver" and d["format_version"] == 1
    assert d["kind"] == "linear" and d["form"] == "velocity" and d["schedule"]["name"] == "rf"
    assert d["nfe"] == 6 and len(d["times"]) == 7
    assert [len(r) for r in d["coefficients"]] == [1, 2, 3, 4, 5, 6]  # lower triangle only


# --- malformed files ---------------------------------------------------------------------------------------

def _base() -> dict:
    return io.to_dict(presets.load_preset("sit-xl-2-256", 6))


def _edit(fn):
    d = _base()
    fn(d)
    return json.dumps(d)


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _swap_times(d):
    d["times"][2], d["times"][3] = d["times"][3], d["times"][2]


def _bump_row(d):
    d["coefficients"][3][0] += 0.01


def _long_row(d):
    d["coefficients"][2].append(0.0)


def _short_row(d):
    d["coefficients"][4] = d["coefficients"][4][1:]


BAD = [
    ("invalid-json", '{"format": "solversearch.solver", "format_version": 1, ', "<json>", "invalid JSON"),
    ("not-an-object", "[1, 2, 3]", "<root>", "expected a JSON object"),
    ("format-version", _edit(_set("format_version", 2)), "format_version", "unsupported version 2"),
    ("format-version-bool", _edit(_set("format_version", True)), "format_version", "unsupported version"),
    ("format", _edit(_set("format", "something.else")), "format", "something.else"),
    ("non-monotone-times", _edit(_swap_times), "times[3]", "monotonically"),
    ("time-past-data-end", _edit(lambda d: d["times"].__setitem__(-1, 1.5)), "times[6]", "got 1.5"),
    ("time-short-of-data-end", _edit(lambda d: d["times"].__setitem__(-1, 0.97)), "times[6]", "got 0.97"),
    ("time-far-from-noise-end", _edit(lambda d: d["times"].__setitem__(0, 0.03)), "times[0]", "got 0.03"),
    ("time-not-a-number", _edit(lambda d: d["times"].__setitem__(1, "0.1")), "times[1]", "expected a number"),
    ("row-sum", _edit(_bump_row), "coefficients[3]", "must sum to 1"),
    ("row-too-long", _edit(_long_row), "coefficients[2]", "expected 3 numbers"),
    ("row-too-short", _edit(_short_row), "coefficients[4]", "expected 5 numbers"),
    ("missing-row", _edit(lambda d: d["coefficients"].pop()), "coefficients", "expected 6 rows"),
    ("unknown-schedule", _edit(_set("schedule", {"name": "cosine"})), "schedule.name", "unknown schedule 'cosine'"),
    ("bad-schedule-param", _edit(_set("schedule", {"name": "rf", "shift": 3.0})), "schedule", "bad parameters"),
    ("unknown-kind", _edit(_set("kind", "rk4")), "kind", "unknown kind 'rk4'"),
    ("unknown-form", _edit(_set("form", "score")), "form", "unknown form 'score'"),
    ("nfe-mismatch", _edit(_set("nfe", 7)), "nfe", "says 7"),
    ("heun-with-coefficients", _edit(_set("kind", "heun")), "coefficients", "must be null"),
    ("order", _edit(_set("order", 9)), "order", "expected an integer 1..4"),
    ("meta", _edit(_set("meta", [1])), "meta", "expected an object"),
]


@pytest.mark.parametrize("text, field, needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_file_names_file_and_field(tmp_path, text, field, needle):
    path = tmp_path / "bad solver.json"
    path.write_text(text)
    with pytest.raises(SolverFileError) as info:
        io.load(path)
    err = info.value
    msg = str(err)
    assert str(path) in msg
    assert err.field == field and f"field '{field}'" in msg
    assert needle in msg


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_rejected(tmp_path, literal):
    text = json.dumps(_base()).replace('"times": [0.0,', f'"times": [{literal},', 1)
    assert literal in text
    path = tmp_path / "nan.json"
    path.write_text(text)
    with pytest.raises(SolverFileError) as info:
        io.load(path)
    msg = str(info.value)
    # the parser refuses the literal itself (before any field is read), naming it
    assert str(path) in msg and literal.lstrip("-") in msg and "not a valid number" in msg


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_in_a_parsed_dict_name_the_field(value):
    d = _base()
    d["coefficients"][2][1] = value
    with pytest.raises(SolverFileError) as info:
        io.from_dict(d, "mem.json")
    assert info.value.field == "coefficients[2][1]" and "must be finite" in str(info.value)
    assert str(info.value).startswith("mem.json: ")


def test_expect_nfe_mismatch(tmp_path):
    path = io.save(presets.load_preset("sit-xl-2-256", 6), tmp_path / "s.json")
    assert io.load(path, expect_nfe=6).nfe == 6
    with pytest.raises(SolverFileError) as info:
        io.load(path, expect_nfe=8)
    assert info.value.field == "nfe" and str(path) in str(info.value) and "NFE 8 was asked for" in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(SolverFileError) as info:
        io.load(path)
    assert info.value.field == "<file>" and str(path) in str(info.value)


def test_heun_file_nfe_is_checked_against_its_schedule(tmp_path):
    s = build("heun", 9, RectifiedFlow())  # 5 steps, the last onto sigma = 0 is Euler: 9 calls
    d = io.to_dict(s)
    assert d["nfe"] == 9
    d["nfe"] = 10
    with pytest.raises(SolverFileError, match="says 10 but the times and kind give 9"):
        io.from_dict(d, "h.json")


# --- atomic saving -------------------------------------------------------------------------------------------

def test_save_leaves_only_the_file(tmp_path):
    folder = tmp_path / "out" / "nested"
    for k in range(3):
        io.save(build("ab3", 5 + k, VPLinear()), folder / "solver.json")
    assert sorted(os.listdir(folder)) == ["solver.json"]
    assert io.load(folder / "solver.json").nfe == 7


def test_failed_save_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "solver.json"
    old = build("euler", 4, RectifiedFlow())
    io.save(old, path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        io.save(build("euler", 9, RectifiedFlow()), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["solver.json"]
    assert io.load(path) == old


def test_unserialisable_solver_writes_nothing(tmp_path):
    s = build("euler", 4, RectifiedFlow()).replace(meta={"x": float("nan")})
    with pytest.raises(ValueError):
        io.save(s, tmp_path / "s.json")
    assert os.listdir(tmp_path) == []
