"""Leaderboard figures (matplotlib, PNG): Dice vs labeled fraction, per-class heat map, per-case
box plots. Each function draws one board and returns the file it wrote."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.atomic import write_atomic
from spinebench.leaderboard.boards import Board


def _save(fig: Any, path: Path) -> None:
    png = io.BytesIO()
    fig.savefig(png, format="png")
    write_atomic(path, png.getvalue())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dice_vs_labeled(board: Board, path: Path) -> Path:
    """Mean test Dice per method over the labeled fractions, with a +-1 std band over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=120)
    for row, label in board.rows.items():
        points = [
            (f, c.stat("dice"))
            for f in board.fractions
            if (c := board.cell(row, f)) is not None and c.stat("dice").n
        ]
        if not points:
            continue
        x = np.array([f for f, _ in points])
        y = np.array([s.mean for _, s in points])
        sd = np.array([0.0 if math.isnan(s.std) else s.std for _, s in points])
        (line,) = ax.plot(x, y, marker="o", label=label)
        ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.18, linewidth=0)
    if board.upper is not None:
        stat = board.upper[1].stat("dice")
        ax.axhline(
            stat.mean,
            color="0.3",
            linestyle="--",
            linewidth=1,
            label=f"upper bound (supervised @ {board.upper[0]:g})",
        )
    ax.set_xscale("log")
    ax.set_xticks(board.fractions, [f"{f:g}" for f in board.fractions])
    ax.minorticks_off()
    ax.set_xlabel("labeled fraction of training cases")
    ax.set_ylabel("test Dice (mean over seeds)")
    ax.set_title(f"{board.dataset} | profile {board.profile}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def per_class_heatmap(board: Board, fraction: float, path: Path) -> Path:
    """Mean test Dice per class (columns, class-map order) and method (rows) at one fraction."""
    plt = _pyplot()
    rows = [r for r in board.rows if board.cell(r, fraction) is not None]
    values = np.array(
        [[board.cells[(r, fraction)].class_stat(c).mean for c in board.classes] for r in rows]
    )
    fig, ax = plt.subplots(
        figsize=(max(6, 0.55 * len(board.classes) + 2), 0.5 * len(rows) + 2.2), dpi=120
    )
    image = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(
        range(len(board.classes)),
        [c.split(" ")[0] for c in board.classes],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    ax.set_yticks(range(len(rows)), [board.rows[r] for r in rows], fontsize=8)
    for i in range(len(rows)):
        for j in range(len(board.classes)):
            if not math.isnan(values[i, j]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if values[i, j] < 0.6 else "black",
                )
    fig.colorbar(image, ax=ax, label="Dice")
    ax.set_title(f"per-class test Dice at labeled {fraction:g} ({board.dataset})")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def per_case_boxplot(board: Board, fraction: float, path: Path) -> Path:
    """Distribution of per-case test Dice (each case averaged over seeds) per method."""
    plt = _pyplot()
    rows = [r for r in board.rows if board.cell(r, fraction) is not None]
    data = [list(board.cells[(r, fraction)].pooled_cases().values()) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows) + 2), 4.5), dpi=120)
    ax.boxplot(data, showmeans=True)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(
            i + rng.uniform(-0.12, 0.12, len(values)),
            values,
            s=10,
            alpha=0.6,
            color="0.2",
            zorder=3,
        )
    ax.set_xticks(
        range(1, len(rows) + 1), [board.rows[r] for r in rows], rotation=20, ha="right", fontsize=8
    )
    ax.set_ylabel("per-case test Dice (mean over seeds)")
    ax.set_title(f"per-case Dice at labeled {fraction:g} ({board.dataset})")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
