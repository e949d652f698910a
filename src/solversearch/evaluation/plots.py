"""Pictures people would rather look at than read: the solver's matrix and grid, error against NFE."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import atomic  # noqa: E402
from ..solvers.solver import Solver  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_solver(solver: Solver, path, reference: Solver | None = None) -> None:
    """Left: the coefficient matrix as a heatmap. Right: the time grid against the uniform one."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if solver.coeffs is not None:
        M = np.array(solver.coeffs)
        M = np.where(np.tril(np.ones_like(M)) > 0, M, np.nan)
        lim = np.nanmax(np.abs(M))
        im = ax1.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim)
        for (i, j), v in np.ndenumerate(M):
            if np.isfinite(v):
                ax1.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax1, shrink=0.8)
        ax1.set_xlabel("prediction j")
        ax1.set_ylabel("step i")
        ax1.set_title(f"coefficients M (rows sum to 1), {solver.form} form")
    n = solver.steps
    ax2.plot(range(n + 1), np.linspace(solver.times[0], solver.times[-1], n + 1), "k--", label="uniform")
    if reference is not None:
        ax2.plot(range(len(reference.times)), reference.times, "s-", alpha=0.6, label=f"start: {reference.name}")
    ax2.plot(range(n + 1), solver.times, "o-", label=solver.name)
    ax2.set_xlabel("step")
    ax2.set_ylabel(f"t ({solver.schedule.get('name')} time)")
    ax2.set_title("time grid")
    ax2.legend()
    fig.suptitle(f"{solver.name}, NFE {solver.nfe}")
    _save(fig, path)


def plot_error_vs_nfe(rows: list[dict], path, metric: str = "rmse", title: str = "") -> None:
    """One line per solver (its best grid at each NFE), log scale."""
    from .harness import best_rows

    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = best_rows(rows, metric)
    names = sorted({r["solver"] for r in best}, key=lambda s: (s.startswith("searched"), s))
    colors = plt.cm.tab20(np.linspace(0, 1, 20))
    for k, name in enumerate(names):
        pts = sorted((r["nfe"], r[metric]) for r in best if r["solver"] == name)
        style = dict(lw=2.5, color="k", marker="o") if name.startswith("searched") else dict(
            lw=1, marker=".", color=colors[k % 20])
        if len(pts) == 1 and name.startswith("searched"):  # one NFE: a level line shows where classics meet it
            ax.axhline(pts[0][1], color="k", ls=":", lw=1)
        ax.plot(*zip(*pts), label=name, **style)
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel(metric.upper())
    ax.set_title(title or f"{metric.upper()} vs NFE (each solver on its best grid)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    _save(fig, path)


def plot_samples_2d(samples: dict[str, np.ndarray], path, title: str = "") -> None:
    """Scatter plots of 2-D samples, one panel per solver."""
    k = len(samples)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.2), squeeze=False)
    for ax, (name, x) in zip(axes[0], samples.items()):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
    fig.suptitle(title)
    _save(fig, path)


def plot_image_grid(rows: dict[str, "np.ndarray"], path, title: str = "", value_range=(-1.0, 1.0)) -> None:
    """Images side by side, one row per solver (same noises and labels in every row), labelled on the left."""
    names = list(rows)
    k = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), k, figsize=(0.9 * k + 1.6, 0.95 * len(names)), squeeze=False)
    lo, hi = value_range
    for r, name in enumerate(names):
        imgs = np.asarray(rows[name])
        for c in range(k):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(imgs):
                img = np.clip((imgs[c] - lo) / (hi - lo), 0, 1)
                ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.04, hspace=0.08)
    _save(fig, path)
