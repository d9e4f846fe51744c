"""``leaderboard.tex``: a paper's tables (booktabs). Per board, the main board (one row per
method at its defaults, the labeled fractions as column groups) and the studies; mean ± std,
the best of a column in bold, and footnote symbols for the tests: * differs from supervised,
† not significantly different from the best (both Holm-corrected paired Wilcoxon, alpha 0.05).
``\\input`` it into a document that loads booktabs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from spinebench.atomic import write_atomic
from spinebench.leaderboard.boards import ALPHA, BASELINE, Board, BoardCell, Row, studies_group
from spinebench.leaderboard.records import Checkpoint
from spinebench.leaderboard.tables import column_name, fmt_stat

_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "…": r"\ldots{}",
    "–": "--",
    "±": r"$\pm$",
    "≈": r"$\approx$",
}
#: Footnote symbols (inside math, as superscripts) and how the legend shows them.
DIFFERS, TIED = "*", r"\dagger"
_SYMBOL = {DIFFERS: r"$^{*}$", TIED: r"$^{\dagger}$"}


def escape(text: str) -> str:
    """Text as LaTeX typesets it literally."""
    return "".join(_ESCAPES.get(c, c) for c in text)


def _value(board: Board, cell: BoardCell, metric: str, checkpoint: Checkpoint, marks: str,
           best: bool) -> str:  # fmt: skip
    """``$mean \\pm std^{marks}$``, bold when best, with n where below the full count."""
    stat = cell.stat(metric, checkpoint)
    if stat.n == 0:
        return "--"
    text = fmt_stat(stat, metric).replace(" ± ", r" \pm ")
    text = rf"\mathbf{{{text}}}" if best else text
    text = f"${text}^{{{marks}}}$" if marks else f"${text}$"
    return text + (rf"\,(n={stat.n})" if stat.n < board.min_seeds else "")


def _row_cells(board: Board, row: Row, fractions: Sequence[float], group: str) -> list[str]:
    cells = []
    for fraction in fractions:
        cell = board.cell(row, fraction)
        for metric, checkpoint in _columns(board):
            if cell is None:
                cells.append("--")
                continue
            best = board.is_best(row, fraction, metric, checkpoint, group)
            primary = (metric, checkpoint) == ("dice", board.checkpoint)
            marks = _marks(row, cell, group, best) if primary else ""
            cells.append(_value(board, cell, metric, checkpoint, marks, best))
    return cells


def _marks(row: Row, cell: BoardCell, group: str, best: bool) -> str:
    """The footnote symbols of a Dice cell (NaN p-values never reject)."""
    if group != "main":
        return DIFFERS if cell.p_default < ALPHA else ""
    marks = DIFFERS if row.method != BASELINE and cell.p_supervised < ALPHA else ""
    return marks + (TIED if cell.tied and not best else "")


def _columns(board: Board) -> list[tuple[str, Checkpoint]]:
    return [(m, c) for m, c in board.columns() if m != "assd"]


def _tabular(
    board: Board, fractions: Sequence[float], lines: list[tuple[str, list[str], bool]]
) -> list[str]:
    cols = _columns(board)
    width = len(cols)
    out = [
        rf"\begin{{tabular}}{{l{'c' * width * len(fractions)}}}",
        r"\toprule",
        " & ".join(["", *(rf"\multicolumn{{{width}}}{{c}}{{labeled {f:g}}}" for f in fractions)])
        + r" \\",
        " ".join(
            rf"\cmidrule(lr){{{2 + i * width}-{1 + (i + 1) * width}}}"
            for i in range(len(fractions))
        ),
        " & ".join(
            ["Method", *(escape(column_name(m, c, board)) for _ in fractions for m, c in cols)]
        )
        + r" \\",
        r"\midrule",
    ]
    for label, cells, rule_before in lines:
        if rule_before:
            out.append(r"\midrule")
        out.append(" & ".join([label, *cells]) + r" \\")
    return [*out, r"\bottomrule", r"\end{tabular}"]


def _legend(board: Board) -> str:
    return (
        r"\par\smallskip\footnotesize "
        f"Test split, mean $\\pm$ std over seeds (n shown where below {board.min_seeds}); "
        "bold: best of the column among rows with the full seed count; "
        f"{_SYMBOL[DIFFERS]} Holm-corrected paired Wilcoxon p $<$ {ALPHA} against {BASELINE}; "
        f"{_SYMBOL[TIED]} not significantly different from the best (p $\\geq$ {ALPHA})."
    )


def _main_table(board: Board) -> list[str]:
    lines = [(escape(r.label), _row_cells(board, r, board.fractions, "main"), False)
             for r in board.main]  # fmt: skip
    if board.upper is not None:
        span = len(_columns(board)) * len(board.fractions)
        stat = board.upper.stat("dice", board.checkpoint)
        value = fmt_stat(stat, "dice").replace(" ± ", r" \pm ")
        text = rf"\multicolumn{{{span}}}{{c}}{{Dice ${value}$ (n={stat.n})}}"
        lines.append((rf"\textit{{upper bound: {BASELINE} @ 1}}", [text], True))
    which = "last checkpoint" if board.checkpoint == "last" else "checkpoint selected on validation"
    caption = (
        f"{escape(board.dataset)}, profile {escape(board.profile)}: methods at their defaults "
        f"({which})."
    )
    return [
        r"\begin{table}[tbp]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:spinebench-{board.slug}}}",
        *_tabular(board, board.fractions, lines),
        _legend(board),
        r"\end{table}",
    ]


def _studies_table(board: Board) -> list[str]:
    fractions = board.study_fractions
    lines: list[tuple[str, list[str], bool]] = []
    for method in dict.fromkeys(r.method for r in board.studies):
        group = studies_group(method)
        for i, row in enumerate(board.study_group(method)):
            label = (
                rf"\textit{{{escape(row.label)}}}" if row.main else rf"\quad {escape(row.label)}"
            )
            lines.append((label, _row_cells(board, row, fractions, group), i == 0 and bool(lines)))
    caption = (
        f"{escape(board.dataset)}, profile {escape(board.profile)}: other settings, each under "
        f"its method at its defaults and the base it runs on, if another method "
        f"({_SYMBOL[DIFFERS]}: differs from its method's defaults, Holm-corrected)."
    )
    return [
        r"\begin{table}[tbp]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:spinebench-{board.slug}-studies}}",
        *_tabular(board, fractions, lines),
        r"\end{table}",
    ]


def write_latex(boards: Sequence[Board], path: Path) -> Path:
    lines = ["% spinebench leaderboard: \\input this file; it needs \\usepackage{booktabs}.", ""]
    for board in boards:
        lines += [f"% {board.title}", *_main_table(board), ""]
        if board.studies:
            lines += [*_studies_table(board), ""]
    write_atomic(path, "\n".join(lines))
    return path
