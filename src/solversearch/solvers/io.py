"""Solver files: versioned JSON, validated field by field on load.

Format (``format: "solversearch.solver"``, ``format_version: 1``)::

    {
      "format": "solversearch.solver", "format_version": 1,
      "name": "searched", "kind": "linear", "form": "velocity",     # kind: linear | heun | unipc
      "schedule": {"name": "rf", ...},                                # see conventions.schedule_config
      "nfe": 6,
      "times": [t_0, ..., t_N],                                       # schedule time, noise end first
      "coefficients": [[M00], [M10, M11], ...],                       # lower triangle of M, rows sum to 1
      "order": null,                                                  # unipc only
      "meta": {"model": ..., "guidance": ..., "prediction": ..., "search": {...}, "metrics": {...}}
    }

Nothing is unpickled and nothing is executed: the file is parsed with ``json`` and every number is checked.
Every problem is one :class:`SolverFileError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .. import atomic
from ..conventions import SCHEDULES, get_schedule
from ..models.wrapper import PREDICTION_TYPES
from .solver import FORMS, KINDS, Solver

FORMAT = "solversearch.solver"
FORMAT_VERSION = 1
ROW_SUM_TOL = 1e-6  # |sum of a coefficient row - 1|, relative to the row's magnitude
END_TOL = 1e-6  # the grid must end at the data end (steps cover the whole span)
START_TOL = 0.01  # and start near the noise end (the paper's VP solvers start at 0.999, not 1)
MAX_STEPS = 1000


class SolverFileError(ValueError):
    """A solver file or config that cannot be used; the message names the file and the field."""

    def __init__(self, source: str, field: str, problem: str):
        super().__init__(f"{source}: field '{field}': {problem}")
        self.source, self.field, self.problem = source, field, problem


def to_dict(solver: Solver) -> dict:
    coeffs = None if solver.coeffs is None else [list(row[: i + 1]) for i, row in enumerate(solver.coeffs)]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": solver.name,
        "kind": solver.kind,
        "form": solver.form,
        "schedule": dict(solver.schedule),
        "nfe": solver.nfe,
        "times": list(solver.times),
        "coefficients": coeffs,
        "order": solver.order,
        "meta": solver.meta,
    }


def _number(src, field, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SolverFileError(src, field, f"expected a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise SolverFileError(src, field, f"must be finite, got {v}")
    return float(v)


def from_dict(d, source: str = "<solver>", expect_nfe: int | None = None) -> Solver:
    """Validate a parsed solver file and build the :class:`Solver`; raise :class:`SolverFileError` if bad."""
    src = source
    if not isinstance(d, dict):
        raise SolverFileError(src, "<root>", f"expected a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise SolverFileError(src, "format", f"expected {FORMAT!r}, got {d.get('format')!r}")
    version = d.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise SolverFileError(src, "format_version",
                              f"unsupported version {d.get('format_version')!r} (this reader knows {FORMAT_VERSION})")
    kind = d.get("kind")
    if kind not in KINDS:
        raise SolverFileError(src, "kind", f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    form = d.get("form")
    if form not in FORMS:
        raise SolverFileError(src, "form", f"unknown form {form!r}; known: {', '.join(FORMS)}")
    name = d.get("name", "custom")
    if not isinstance(name, str) or len(name) > 200:
        raise SolverFileError(src, "name", "expected a string of at most 200 characters")

    sched = d.get("schedule")
    if not isinstance(sched, dict) or sched.get("name") not in SCHEDULES:
        got = sched.get("name") if isinstance(sched, dict) else sched
        raise SolverFileError(src, "schedule.name", f"unknown schedule {got!r}; known: {', '.join(SCHEDULES)}")
    params = {k: v for k, v in sched.items() if k != "name"}
    for k, v in params.items():
        _number(src, f"schedule.{k}", v)
    try:
        schedule = get_schedule(sched["name"], **params)
    except TypeError as e:
        raise SolverFileError(src, "schedule", f"bad parameters: {e}") from None

    times = d.get("times")
    if not isinstance(times, list) or not 2 <= len(times) <= MAX_STEPS + 1:
        raise SolverFileError(src, "times", f"expected a list of 2 to {MAX_STEPS + 1} numbers")
    times = [_number(src, f"times[{i}]", t) for i, t in enumerate(times)]
    n = len(times) - 1
    direction = 1.0 if schedule.t_data > schedule.t_noise else -1.0
    for i in range(n):
        if (times[i + 1] - times[i]) * direction <= 0:
            raise SolverFileError(src, f"times[{i + 1}]", "step sizes must be positive: times must move "
                                  f"monotonically from the noise end ({schedule.t_noise}) to the data end "
                                  f"({schedule.t_data})")
    span = abs(schedule.t_data - schedule.t_noise)
    if abs(times[-1] - schedule.t_data) > END_TOL * span:
        raise SolverFileError(src, f"times[{n}]", f"the last time must be the data end {schedule.t_data} "
                              f"(tolerance {END_TOL} of the span), got {times[-1]}")
    if not schedule.contains(times[0], tol=1e-9) or abs(times[0] - schedule.t_noise) > START_TOL * span:
        raise SolverFileError(src, "times[0]", f"the first time must be within {START_TOL} of the span from the "
                              f"noise end {schedule.t_noise}, got {times[0]}")

    coeffs = d.get("coefficients")
    if kind == "linear":
        if not isinstance(coeffs, list) or len(coeffs) != n:
            raise SolverFileError(src, "coefficients", f"expected {n} rows (one per step)")
        rows = []
        for i, row in enumerate(coeffs):
            if not isinstance(row, list) or len(row) != i + 1:
                raise SolverFileError(src, f"coefficients[{i}]", f"expected {i + 1} numbers (lower triangle)")
            vals = [_number(src, f"coefficients[{i}][{j}]", v) for j, v in enumerate(row)]
            if abs(sum(vals) - 1.0) > ROW_SUM_TOL * max(1.0, sum(abs(v) for v in vals)):
                raise SolverFileError(src, f"coefficients[{i}]",
                                      f"row sums to {sum(vals):.9g}, must sum to 1 (tolerance {ROW_SUM_TOL})")
            rows.append(tuple(vals) + (0.0,) * (n - i - 1))
        coeffs = tuple(rows)
    elif coeffs is not None:
        raise SolverFileError(src, "coefficients", f"must be null for kind {kind!r}")

    order = d.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 4):
        raise SolverFileError(src, "order", f"expected an integer 1..4 or null, got {order!r}")
    meta = d.get("meta", {})
    if not isinstance(meta, dict):
        raise SolverFileError(src, "meta", f"expected an object, got {type(meta).__name__}")
    if "prediction" in meta and meta["prediction"] not in PREDICTION_TYPES:
        raise SolverFileError(src, "meta.prediction", f"unknown prediction type {meta['prediction']!r}; "
                              f"known: {', '.join(PREDICTION_TYPES)}")

    solver = Solver(kind=kind, form=form, times=tuple(times), schedule=dict(sched), coeffs=coeffs, name=name,
                    order=order, meta=meta)
    if "nfe" in d and (isinstance(d["nfe"], bool) or d["nfe"] != solver.nfe):
        raise SolverFileError(src, "nfe", f"says {d['nfe']!r} but the times and kind give {solver.nfe}")
    if expect_nfe is not None and solver.nfe != expect_nfe:
        raise SolverFileError(src, "nfe", f"solver has NFE {solver.nfe}, but NFE {expect_nfe} was asked for")
    return solver


def save(solver: Solver, path: str | os.PathLike) -> Path:
    """Write the solver as JSON (atomically: a crash never leaves a half-written file)."""
    path = Path(path)
    atomic.write_text(path, json.dumps(to_dict(solver), indent=1, allow_nan=False) + "\n")
    return path


def load(path: str | os.PathLike, expect_nfe: int | None = None) -> Solver:
    path = Path(path)
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SolverFileError(src, "<file>", "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SolverFileError(src, "<file>", f"cannot read: {e}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as e:
        raise SolverFileError(src, "<json>", f"invalid JSON: {e}") from None
    except RecursionError:
        raise SolverFileError(src, "<json>", "invalid JSON: nested too deeply") from None
    return from_dict(data, src, expect_nfe)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid number")
