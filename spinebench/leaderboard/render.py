"""Leaderboard files: the chosen formats (``leaderboard.md``, ``.csv`` with
``leaderboard_per_class.csv``, ``.html``, ``.tex``) and every board's figures (PNG and PDF).
Nothing written depends on the time it is written: the same runs give the same bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from spinebench.errors import SpinebenchError
from spinebench.leaderboard import plots
from spinebench.leaderboard.boards import Board
from spinebench.leaderboard.render_csv import write_csv
from spinebench.leaderboard.render_html import write_html
from spinebench.leaderboard.render_latex import write_latex
from spinebench.leaderboard.render_md import write_md
from spinebench.leaderboard.tables import class_fraction_of

FORMATS = ("md", "csv", "html", "latex")


def write(
    boards: Sequence[Board],
    out: Path,
    formats: Sequence[str] = FORMATS,
    class_fraction: float | None = None,
) -> list[Path]:
    """Write the chosen formats and the figures of every board into ``out``."""
    if not boards:
        raise SpinebenchError(
            "no FINISHED spinebench runs found; run `spinebench sweep` first "
            "or check --experiment/--tracking-uri/--records"
        )
    chosen = {b.slug: class_fraction_of(b, class_fraction) for b in boards}
    if class_fraction is not None and not any(v is not None for v in chosen.values()):
        raise SpinebenchError(
            f"--class-fraction {class_fraction:g} is no fraction of a main board; use one of "
            + ", ".join(sorted({f"{f:g}" for b in boards for f in b.fractions}))
        )
    out.mkdir(parents=True, exist_ok=True)
    figures = {b.slug: plots.figures(b, chosen[b.slug], out) for b in boards}
    written = [p for f in figures.values() for p in f.files()]
    if "md" in formats:
        written.append(write_md(boards, chosen, figures, out / "leaderboard.md"))
    if "csv" in formats:
        written += write_csv(boards, chosen, out)
    if "html" in formats:
        written.append(write_html(boards, chosen, figures, out / "leaderboard.html"))
    if "latex" in formats:
        written.append(write_latex(boards, out / "leaderboard.tex"))
    return written
