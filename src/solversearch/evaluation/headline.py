"""Headline figures from benchmark rows (the ``bench --json`` form): what a user deciding on a solver asks.

*Equal-quality speed-up*: the smallest NFE at which the searched solver is at least as good as the best classic
solver at NFE 10 -- 10 / that NFE is how much faster it samples at the quality users get now.  Searched rows over
several seeds count by their worst seed, so a headline never rests on a lucky seed.
"""

from __future__ import annotations

from ..solvers import classic

# how pages name the metrics of benchmark rows
METRIC_LABEL = {"rmse": "RMSE", "fd": "FD to test set", "fd_model": "FD to model", "fid": "Inception FID"}
# the solver families the paper compares against, by classic-solver name
FAMILIES = {"Adams (ab2-4, iPNDM)": ("ab2", "ab3", "ab4", "ipndm"),
            "DPM-Solver++ / UniPC": ("dpm++2m", "dpm++3m", "unipc")}

KINDS = {
    "classic": lambda s: s in classic.SOLVERS,
    "diffusers": lambda s: s.startswith("diffusers:"),
    "paper": lambda s: s.startswith("preset:"),
}


def is_searched(row: dict) -> bool:
    """The searched solver of the default preset (``searched`` from the CLI and bench/fashion, ``searched-ours``
    from bench/core; the paper preset's rows are compared separately)."""
    return row["solver"] in ("searched", "searched-ours")


def searched_value(rows: list[dict], nfe: int, metric: str) -> float | None:
    """The searched solver's ``metric`` at ``nfe``: the worst seed where there are several."""
    vals = [r[metric] for r in rows if is_searched(r) and r["nfe"] == nfe]
    return max(vals) if vals else None


def best_of(rows: list[dict], nfe: int, metric: str, kind: str = "classic") -> dict | None:
    """The best row at ``nfe`` among the classic solvers (any grid), diffusers' schedulers or the paper's solvers."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    cands = [r for r in rows if r["nfe"] == nfe and KINDS[kind](r["solver"]) and r.get(metric) is not None]
    return min(cands, key=lambda r: r[metric]) if cands else None


def equal_quality_nfe(rows: list[dict], metric: str, at: int = 10) -> tuple[int | None, dict | None]:
    """The smallest searched NFE whose ``metric`` is at most the best classic solver's at NFE ``at`` (None if no
    searched NFE reaches it), and that best classic row (None if nothing classic was scored at ``at``)."""
    best = best_of(rows, at, metric)
    if best is None:
        return None, None
    nfes = sorted({r["nfe"] for r in rows if is_searched(r)})
    ok = [n for n in nfes if searched_value(rows, n, metric) <= best[metric]]
    return (ok[0] if ok else None), best


def rewards_error(rows: list[dict], metric: str, at: int = 10) -> bool:
    """True when the best classic solver scores better at some NFE below ``at`` than at ``at``: the metric is not
    monotone in solver accuracy on this model (FD to a test set on a small model), so a speed-up read in it
    overstates."""
    best = best_of(rows, at, metric)
    return best is not None and any((b := best_of(rows, k, metric)) is not None and b[metric] < best[metric]
                                    for k in range(1, at))


__all__ = ["is_searched", "searched_value", "best_of", "equal_quality_nfe", "rewards_error", "KINDS",
           "METRIC_LABEL", "FAMILIES"]
