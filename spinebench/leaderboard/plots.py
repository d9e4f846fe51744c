"""Leaderboard figures (matplotlib, PNG for the page and PDF for a paper): Dice vs labeled
fraction, per-class heat map, per-case box plots, of the main board's rows under the names the
tables use. Each function draws one board and returns the PNG it wrote (the PDF lies beside
it)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.atomic import write_atomic
from spinebench.leaderboard.boards import Board

#: No creation date in a PDF: the same runs give the same bytes.
_PDF_METADATA = {"CreationDate": None, "ModDate": None}


@dataclass(frozen=True)
class Figures:
    """The PNGs of one board (each with a PDF of the same name beside it)."""

    dice_vs_labeled: Path
    per_class: Path | None
    per_case: Path | None

    def files(self) -> list[Path]:
        pngs = [p for p in (self.dice_vs_labeled, self.per_class, self.per_case) if p]
        return [f for p in pngs for f in (p, p.with_suffix(".pdf"))]


def figures(board: Board, fraction: float | None, out: Path) -> Figures:
    """Every figure of a board; the per-class and per-case ones at ``fraction``."""
    lines = dice_vs_labeled(board, out / f"{board.slug}-dice_vs_labeled.png")
    if fraction is None:
        return Figures(lines, None, None)
    return Figures(
        lines,
        per_class_heatmap(board, fraction, out / f"{board.slug}-per_class_dice.png"),
        per_case_boxplot(board, fraction, out / f"{board.slug}-per_case_dice.png"),
    )


def _save(fig: Any, path: Path) -> None:
    for suffix, metadata in ((".png", None), (".pdf", _PDF_METADATA)):
        data = io.BytesIO()
        fig.savefig(data, format=suffix[1:], metadata=metadata)
        write_atomic(path.with_suffix(suffix), data.getvalue())


_CHECKPOINT = {"best": "checkpoint selected on validation", "last": "last checkpoint"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dice_vs_labeled(board: Board, path: Path) -> Path:
    """Mean test Dice per method over the labeled fractions, with a +-1 std band over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=120)
    for row in board.main:
        points = [
            (f, c.stat("dice", board.checkpoint))
            for f in board.fractions
            if (c := board.cell(row, f)) is not None and c.stat("dice", board.checkpoint).n
        ]
        if not points:
            continue
        x = np.array([f for f, _ in points])
        y = np.array([s.mean for _, s in points])
        sd = np.array([0.0 if math.isnan(s.std) else s.std for _, s in points])
        few = [f"{s.n} at {f:g}" for f, s in points if s.n < board.min_seeds]
        label = row.label + (f" (seeds: {', '.join(few)})" if few else "")
        (line,) = ax.plot(x, y, marker="o", label=label)
        ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.18, linewidth=0)
    if board.upper is not None:
        stat = board.upper.stat("dice", board.checkpoint)
        ax.axhline(
            stat.mean,
            color="0.3",
            linestyle="--",
            linewidth=1,
            label="upper bound (supervised @ 1)",
        )
    ax.set_xscale("log")
    ax.set_xticks(board.fractions, [f"{f:g}" for f in board.fractions])
    ax.minorticks_off()
    ax.set_xlabel("labeled fraction of training cases")
    ax.set_ylabel(f"test Dice, {_CHECKPOINT[board.checkpoint]} (mean over seeds)")
    ax.set_title(f"{board.dataset} | profile {board.profile} | methods at their defaults")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def per_class_heatmap(board: Board, fraction: float, path: Path) -> Path:
    """Mean test Dice per class (columns, class-map order) and method (rows) at one fraction."""
    plt = _pyplot()
    rows = [r for r in board.main if board.cell(r, fraction) is not None]
    values = np.array(
        [
            [board.cells[(r, fraction)].class_stat(c, board.checkpoint).mean for c in board.classes]
            for r in rows
        ]
    ).reshape(len(rows), len(board.classes))
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
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
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
    rows = [r for r in board.main if board.cell(r, fraction) is not None]
    data = [list(board.cells[(r, fraction)].pooled_cases(board.checkpoint).values()) for r in rows]
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
        range(1, len(rows) + 1), [r.label for r in rows], rotation=20, ha="right", fontsize=8
    )
    ax.set_ylabel("per-case test Dice (mean over seeds)")
    ax.set_title(f"per-case Dice at labeled {fraction:g} ({board.dataset})")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
