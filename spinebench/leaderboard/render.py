"""Leaderboard files: ``leaderboard.md``, ``leaderboard.csv`` (+ ``leaderboard_per_class.csv``)
and a self-contained, sortable ``leaderboard.html`` (inline CSS/JS, figures embedded), plus PNGs.

Tables: rows = methods, column groups = labeled fractions; best value per column marked; the
supervised lower and upper bounds as reference rows; Holm-corrected Wilcoxon p-values.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinebench.atomic import write_atomic
from spinebench.errors import SpinebenchError
from spinebench.leaderboard import plots
from spinebench.leaderboard.boards import BASELINE, HEADLINE, Board, BoardCell, RowKey
from spinebench.stats import Stat

FORMATS = ("md", "csv", "html")
_UNIT = {"dice": "", "hd95": " (mm)", "assd": " (mm)"}
_NAME = {"dice": "Dice", "hd95": "HD95", "assd": "ASSD"}
_DIGITS = {"dice": 4, "hd95": 2, "assd": 2}
CONVENTIONS = (
    "Test split; mean ± sample std (ddof=1) over seeds; n = seeds. "
    f"p: two-sided paired Wilcoxon signed-rank test on per-case Dice (cases averaged over seeds) "
    f"against `{BASELINE}` and against the best Dice of the column, Holm-corrected within each "
    "labeled fraction; '-' = not applicable or no case differs. Best per column in bold. "
    "HD95/ASSD in mm (a class present in only one of prediction and truth scores the image "
    "diagonal). Only FINISHED runs; runs of different settings are never averaged. Every cell "
    "re-derives with `spinebench reproduce RUN_ID...` (its run ids: column `run_ids` of "
    "leaderboard.csv)."
)


@dataclass(frozen=True)
class Figures:
    dice_vs_labeled: Path
    per_class: Path | None
    per_case: Path | None


def fmt_stat(stat: Stat, metric: str) -> str:
    if stat.n == 0:
        return "-"
    digits = _DIGITS[metric]
    if math.isnan(stat.std):
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def fmt_p(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.3g}"


def class_fraction_of(board: Board, requested: float | None) -> float | None:
    """The fraction of the per-class table: the requested one, else the smallest column."""
    if requested is None:
        return board.fractions[0] if board.fractions else None
    return requested if any(f == requested for _, f in board.cells) else None


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
            "or check --experiment/--tracking-uri"
        )
    chosen = {b.slug: class_fraction_of(b, class_fraction) for b in boards}
    if class_fraction is not None and not any(v is not None for v in chosen.values()):
        raise SpinebenchError(
            f"--class-fraction {class_fraction:g} has no runs; use one of "
            + ", ".join(sorted({f"{f:g}" for b in boards for _, f in b.cells}))
        )
    out.mkdir(parents=True, exist_ok=True)
    figures = {b.slug: _figures(b, chosen[b.slug], out) for b in boards}
    written = [
        p
        for f in figures.values()
        for p in (f.dice_vs_labeled, f.per_class, f.per_case)
        if p is not None
    ]
    if "md" in formats:
        written.append(_write_md(boards, chosen, figures, out / "leaderboard.md"))
    if "csv" in formats:
        written += _write_csv(boards, chosen, out)
    if "html" in formats:
        written.append(_write_html(boards, chosen, figures, out / "leaderboard.html"))
    return written


def _figures(board: Board, fraction: float | None, out: Path) -> Figures:
    lines = plots.dice_vs_labeled(board, out / f"{board.slug}-dice_vs_labeled.png")
    if fraction is None:
        return Figures(lines, None, None)
    return Figures(
        lines,
        plots.per_class_heatmap(board, fraction, out / f"{board.slug}-per_class_dice.png"),
        plots.per_case_boxplot(board, fraction, out / f"{board.slug}-per_case_dice.png"),
    )


def _title(board: Board) -> str:
    return f"{board.experiment}: {board.dataset}, profile {board.profile}"


def _references(board: Board) -> list[tuple[str, float, BoardCell]]:
    refs = []
    if board.lower is not None:
        refs.append(("lower bound", *board.lower))
    if board.upper is not None:
        refs.append(("upper bound", *board.upper))
    return refs


def _cell_texts(board: Board, row: RowKey, fraction: float) -> list[tuple[str, float, bool]]:
    """(text, sort value, is best) for Dice, HD95, ASSD, n, p vs supervised, p vs best."""
    cell = board.cell(row, fraction)
    if cell is None:
        return [("-", math.nan, False)] * 6
    out = []
    for metric in HEADLINE:
        stat = cell.stat(metric)
        out.append((fmt_stat(stat, metric), stat.mean, board.is_best(row, fraction, metric)))
    out.append((str(len(cell.runs)), float(len(cell.runs)), False))
    out.append((fmt_p(cell.p_supervised), cell.p_supervised, False))
    out.append((fmt_p(cell.p_best), cell.p_best, False))
    return out


def _reference_texts(cell: BoardCell) -> list[str]:
    return [fmt_stat(cell.stat(m), m) for m in HEADLINE] + [str(len(cell.runs)), "", ""]


_SUBCOLUMNS = ["Dice", "HD95 (mm)", "ASSD (mm)", "n", "p vs supervised", "p vs best"]


# -- markdown -------------------------------------------------------------------------------------


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _write_md(
    boards: Sequence[Board],
    chosen: dict[str, float | None],
    figures: dict[str, Figures],
    path: Path,
) -> Path:
    lines = ["# spinebench leaderboard", "", CONVENTIONS, ""]
    for board in boards:
        lines += [f"## {_title(board)}", ""]
        header = ["method"] + [f"{f:g} {s}" for f in board.fractions for s in _SUBCOLUMNS]
        lines += [_md_row(header), _md_row(["---"] + ["---:"] * (len(header) - 1))]
        for row, label in board.rows.items():
            texts = [label]
            for fraction in board.fractions:
                texts += [
                    f"**{t}**" if best else t for t, _, best in _cell_texts(board, row, fraction)
                ]
            lines.append(_md_row(texts))
        for name, fraction, cell in _references(board):
            texts = [f"*{name}: {BASELINE} @ {fraction:g}*"]
            for _ in board.fractions:
                texts += _reference_texts(cell)
            lines.append(_md_row(texts))
        fig = figures[board.slug]
        lines += ["", f"![Dice vs labeled fraction]({fig.dice_vs_labeled.name})", ""]
        class_fraction = chosen[board.slug]
        if class_fraction is not None:
            lines += [f"### Per-class test Dice at labeled {class_fraction:g}", ""]
            lines += [
                _md_row(["method", *board.classes]),
                _md_row(["---"] + ["---:"] * len(board.classes)),
            ]
            for label, per_class in _per_class_rows(board, class_fraction):
                lines.append(_md_row([label, *(f"**{t}**" if b else t for t, _, b in per_class)]))
            lines += [
                "",
                f"![per-class Dice]({fig.per_class.name})" if fig.per_class else "",
                "",
                f"![per-case Dice]({fig.per_case.name})" if fig.per_case else "",
                "",
            ]
    write_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path


def _per_class_rows(
    board: Board, fraction: float
) -> list[tuple[str, list[tuple[str, float, bool]]]]:
    """Per method: (text, mean, is best of the class) for each class."""
    rows = [r for r in board.rows if board.cell(r, fraction) is not None]
    stats = {(r, c): board.cells[(r, fraction)].class_stat(c) for r in rows for c in board.classes}
    tops = {
        c: max((stats[(r, c)].mean for r in rows if stats[(r, c)].n), default=math.nan)
        for c in board.classes
    }
    return [
        (
            board.rows[r],
            [
                (fmt_stat(stats[(r, c)], "dice"), stats[(r, c)].mean, stats[(r, c)].mean == tops[c])
                for c in board.classes
            ],
        )
        for r in rows
    ]


# -- csv ------------------------------------------------------------------------------------------


@contextmanager
def _csv_file(path: Path) -> Iterator[Any]:
    """A csv writer whose rows reach ``path`` atomically when the block ends."""
    text = io.StringIO()
    yield csv.writer(text)
    write_atomic(path, text.getvalue())


def _write_csv(boards: Sequence[Board], chosen: dict[str, float | None], out: Path) -> list[Path]:
    """Long format: one line per (board, row, fraction), reference rows marked by ``role``."""
    main = out / "leaderboard.csv"
    with _csv_file(main) as writer:
        writer.writerow(
            [
                "experiment",
                "dataset",
                "profile",
                "row",
                "role",
                "method",
                "variant",
                "setting",
                "labeled",
                "n_seeds",
                "seeds",
                *[f"{m}_{s}" for m in HEADLINE for s in ("mean", "std")],
                "p_vs_supervised",
                "p_vs_best",
                "best",
                "run_ids",
            ]
        )
        for board in boards:
            lines = [
                (label, "method", row, f)
                for row, label in board.rows.items()
                for f in board.fractions
                if board.cell(row, f) is not None
            ]
            lines += [
                (f"{BASELINE} @ {f:g}", name.replace(" ", "_"), board.baseline, f)
                for name, f, _ in _references(board)
                if board.baseline is not None
            ]
            for label, role, row, fraction in lines:
                cell = board.cells[(row, fraction)]
                best = [m for m in HEADLINE if role == "method" and board.is_best(row, fraction, m)]
                stats = [v for m in HEADLINE for v in (cell.stat(m).mean, cell.stat(m).std)]
                p = (cell.p_supervised, cell.p_best) if role == "method" else (math.nan,) * 2
                writer.writerow(
                    [
                        board.experiment,
                        board.dataset,
                        board.profile,
                        label,
                        role,
                        row.method,
                        row.variant,
                        row.setting,
                        f"{fraction:g}",
                        len(cell.runs),
                        ";".join(map(str, cell.seeds)),
                        *map(_num, stats),
                        *map(_num, p),
                        ";".join(best),
                        " ".join(r.run_id for r in cell.runs),
                    ]
                )
    per_class = out / "leaderboard_per_class.csv"
    with _csv_file(per_class) as writer:
        writer.writerow(
            [
                "experiment",
                "dataset",
                "profile",
                "row",
                "labeled",
                "class",
                "dice_mean",
                "dice_std",
                "n_seeds",
            ]
        )
        for board in boards:
            class_fraction = chosen[board.slug]
            if class_fraction is None:
                continue
            for row, label in board.rows.items():
                row_cell = board.cell(row, class_fraction)
                if row_cell is None:
                    continue
                for c in board.classes:
                    stat = row_cell.class_stat(c)
                    writer.writerow(
                        [
                            board.experiment,
                            board.dataset,
                            board.profile,
                            label,
                            f"{class_fraction:g}",
                            c,
                            _num(stat.mean),
                            _num(stat.std),
                            stat.n,
                        ]
                    )
    return [main, per_class]


def _num(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


# -- html -----------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f3f7; }
thead tr:first-child th[colspan] { text-align: center; }
th.group, td.group { border-left: 2px solid #888; }
div.scroll { overflow-x: auto; }
thead th[data-col] { cursor: pointer; }
thead th[data-col]:hover { background: #dde6f0; }
thead th[data-dir=asc]::after { content: " \\25B2"; }
thead th[data-dir=desc]::after { content: " \\25BC"; }
td.best { font-weight: bold; background: #e6f4e6; }
tbody.reference td { font-style: italic; color: #555; background: #fafafa; }
p.note { max-width: 60em; color: #444; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""

# Sort the first tbody by a column's data-v (numbers; empty = missing, always last).
_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th[data-col]").forEach(function (th) {
    th.addEventListener("click", function () {
      var col = +th.dataset.col, dir = th.dataset.dir === "asc" ? "desc" : "asc";
      table.querySelectorAll("thead th[data-col]").forEach(function (h) {
        delete h.dataset.dir; });
      th.dataset.dir = dir;
      var body = table.tBodies[0], sign = dir === "asc" ? 1 : -1;
      var key = function (row) {
        var cell = row.cells[col], v = cell.dataset.v;
        return v === undefined ? cell.textContent : (v === "" ? null : parseFloat(v)); };
      Array.from(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) return 1; if (y === null) return -1;
        return (typeof x === "number" ? x - y : x.localeCompare(y)) * sign;
      }).forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _td(text: str, value: float | None = None, best: bool = False, group: bool = False) -> str:
    names = [n for n, on in (("best", best), ("group", group)) if on]
    cls = f' class="{" ".join(names)}"' if names else ""
    v = "" if value is None else f' data-v="{_num(value)}"'
    return f"<td{cls}{v}>{html.escape(text)}</td>"


def _write_html(
    boards: Sequence[Board],
    chosen: dict[str, float | None],
    figures: dict[str, Figures],
    path: Path,
) -> Path:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>spinebench leaderboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>spinebench leaderboard</h1>",
        f'<p class="note">{html.escape(CONVENTIONS)}</p>',
    ]
    for board in boards:
        parts.append(f"<h2>{html.escape(_title(board))}</h2>")
        parts.append(
            '<div class="scroll"><table class="sortable leaderboard"><thead><tr>'
            '<th rowspan="2" data-col="0">method</th>'
        )
        parts += [
            f'<th class="group" colspan="{len(_SUBCOLUMNS)}">labeled {f:g}</th>'
            for f in board.fractions
        ]
        parts.append("</tr><tr>")
        col = 1
        for _ in board.fractions:
            for i, sub in enumerate(_SUBCOLUMNS):
                group = ' class="group"' if i == 0 else ""
                parts.append(f'<th{group} data-col="{col}">{html.escape(sub)}</th>')
                col += 1
        parts.append("</tr></thead><tbody>")
        for row, label in board.rows.items():
            parts.append("<tr>" + _td(label))
            for fraction in board.fractions:
                parts += [
                    _td(t, v, b, i == 0)
                    for i, (t, v, b) in enumerate(_cell_texts(board, row, fraction))
                ]
            parts.append("</tr>")
        parts.append('</tbody><tbody class="reference">')
        for name, fraction, cell in _references(board):
            parts.append("<tr>" + _td(f"{name}: {BASELINE} @ {fraction:g}"))
            parts += [
                _td(t, group=i == 0)
                for _ in board.fractions
                for i, t in enumerate(_reference_texts(cell))
            ]
            parts.append("</tr>")
        parts.append("</tbody></table></div>")
        fig = figures[board.slug]
        parts.append(_img(fig.dice_vs_labeled, "Dice vs labeled fraction"))
        class_fraction = chosen[board.slug]
        if class_fraction is not None:
            parts.append(f"<h3>Per-class test Dice at labeled {class_fraction:g}</h3>")
            parts.append(
                '<div class="scroll"><table class="sortable per-class"><thead><tr>'
                '<th data-col="0">method</th>'
            )
            parts += [
                f'<th data-col="{i}">{html.escape(c)}</th>'
                for i, c in enumerate(board.classes, start=1)
            ]
            parts.append("</tr></thead><tbody>")
            for label, per_class in _per_class_rows(board, class_fraction):
                parts.append("<tr>" + _td(label) + "".join(_td(*t) for t in per_class) + "</tr>")
            parts.append("</tbody></table></div>")
            parts.append(_img(fig.per_class, "per-class Dice heat map"))
            parts.append(_img(fig.per_case, "per-case Dice box plots"))
    parts.append(f"<script>{_JS}</script></body></html>")
    write_atomic(path, "\n".join(parts) + "\n")
    return path
