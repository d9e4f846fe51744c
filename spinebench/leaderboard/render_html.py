"""``leaderboard.html``: one self-contained page (inline CSS/JS, figures embedded) with the same
tables as the markdown. It reads at 1400 px without horizontal scrolling: one table per labeled
fraction, classes as lines of the per-class table, labels that wrap; a click on a column header
of a main or per-class table sorts its rows by it."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from spinebench.atomic import write_atomic
from spinebench.leaderboard.boards import Board
from spinebench.leaderboard.plots import Figures
from spinebench.leaderboard.tables import (
    AVERAGING,
    CONVENTIONS,
    Cell,
    Table,
    main_notes,
    main_tables,
    per_class_tables,
    study_notes,
    study_tables,
)

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1300px; }
p, li { max-width: 70em; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; max-width: 22em;
  overflow-wrap: anywhere; }
thead th { background: #f0f3f7; }
thead th[data-col] { cursor: pointer; }
thead th[data-col]:hover { background: #dde6f0; }
thead th[data-dir=asc]::after { content: " \\25B2"; }
thead th[data-dir=desc]::after { content: " \\25BC"; }
td.best { font-weight: bold; background: #e6f4e6; }
tr.reference td { font-style: italic; color: #555; background: #fafafa; }
caption { text-align: left; font-weight: 600; padding: 0.2em 0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""

# Sort a table's body by a column's data-v (numbers; empty = missing, always last); reference
# rows stay where they are.
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
_CLASS = {
    "main": "sortable leaderboard",
    "studies": "studies",
    "per-class": "sortable per-class",
}


def _text(markdown: str) -> str:
    """Escaped text with ``code`` spans."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(markdown))


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _td(cell: Cell) -> str:
    cls = ' class="best"' if cell.best else ""
    value = "" if cell.value is None else repr(float(cell.value))
    return f'<td{cls} data-v="{value}">{html.escape(cell.text)}</td>'


def _table(table: Table, caption: str = "") -> str:
    """A sortable table keeps its reference rows (the upper bound) in a second body, which
    sorting leaves alone; a studies table keeps its order (each method's studies under its
    main row) and does not sort."""
    sortable = table.kind != "studies"
    head = "".join(
        f'<th data-col="{i}">{html.escape(name)}</th>'
        if sortable
        else f"<th>{html.escape(name)}</th>"
        for i, name in enumerate(table.header)
    )
    body: list[str] = []
    references: list[str] = []
    for line in table.lines:
        title = f' title="{html.escape(line.hint)}"' if line.hint else ""
        cells = f"<td{title}>{html.escape(line.label)}</td>" + "".join(map(_td, line.cells))
        if line.reference:
            (references if sortable else body).append(f'<tr class="reference">{cells}</tr>')
        else:
            body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f'<table class="{_CLASS[table.kind]}">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody><tbody>{''.join(references)}</tbody></table>"
    )


def write_html(
    boards: Sequence[Board],
    chosen: dict[str, float | None],
    figures: dict[str, Figures],
    path: Path,
) -> Path:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>spinebench leaderboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>spinebench leaderboard</h1>",
        f"<p>{_text(CONVENTIONS)}</p>",
    ]
    for board in boards:
        fig = figures[board.slug]
        parts += [f"<h2>{html.escape(board.title)}</h2>", "<h3>Methods at their defaults</h3>"]
        parts += [f"<p>{_text(' '.join(main_notes(board)))}</p>"]
        parts += [_table(t, t.caption) for t in main_tables(board)]
        parts.append(_img(fig.dice_vs_labeled, "Dice vs labeled fraction"))
        fraction = chosen[board.slug]
        if fraction is not None:
            parts += [f"<h3>Per-class test Dice at labeled {fraction:g}</h3>"]
            parts += [f"<p>{_text(AVERAGING)}</p>"]
            parts += [_table(t) for t in per_class_tables(board, fraction)]
            parts.append(_img(fig.per_class, "per-class Dice heat map"))
            parts.append(_img(fig.per_case, "per-case Dice box plots"))
        studies = study_tables(board)
        if studies:
            notes = study_notes(board)
            parts += [
                "<h3>Studies: other settings of the methods</h3>",
                f"<p>{_text(notes[0])}</p>",
            ]
            parts += ["<ul>", *(f"<li>{_text(n)}</li>" for n in notes[1:]), "</ul>"]
            parts += [_table(t, t.caption) for t in studies]
    parts.append(f"<script>{_JS}</script></body></html>")
    write_atomic(path, "\n".join(parts) + "\n")
    return path
