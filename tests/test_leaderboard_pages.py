"""The exports a paper and a reader need: the LaTeX table's structure (and that it compiles,
where pdflatex is installed), the figures as PDF besides PNG, and the HTML page at 1400 px in
headless Chromium: no horizontal overflow, and its tables sort."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from browser import dump_dom, require_chromium, widths
from leaderboard_data import readme_like, seeds

from spinebench.leaderboard import build_boards, write
from spinebench.leaderboard.records import record_of
from spinebench.leaderboard.render_latex import escape

#: A `--set` study whose value LaTeX would misread if it were not escaped.
AWKWARD = {"method.template": "50% of {name} & #1_x ~ $"}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README-like store plus an awkward and a long study label, every format."""
    docs = readme_like() + seeds("cps4", 0.05, sets=AWKWARD)
    long = {f"augment.{k}": "0.123456789" for k in ("translate", "jitter", "jitter_p", "blur_p")}
    docs += seeds("unimatch", 0.05, sets={**long, "train.lr": "0.000123456789"})
    out = tmp_path_factory.mktemp("page")
    write(build_boards([record_of(d) for d in docs]), out)
    return out


def _columns(line: str) -> int:
    """Columns a tabular line fills (a \\multicolumn{n} counts n)."""
    cells = re.split(r"(?<!\\)&", line.removesuffix(r"\\").strip())
    return sum(int(m[1]) if (m := re.match(r"\s*\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)


def _tabulars(tex: str) -> list[list[str]]:
    return [
        block.strip().splitlines()
        for block in re.findall(r"\\begin\{tabular\}.*?\\end\{tabular\}", tex, re.S)
    ]


def test_latex_is_a_booktabs_table_with_one_row_per_method(page: Path):
    tex = (page / "leaderboard.tex").read_text()
    main, studies = _tabulars(tex)
    spec = re.match(r"\\begin\{tabular\}\{(lc*)\}", main[0])
    assert spec, main[0]
    width = len(spec[1])
    assert width == 1 + 2 * 3  # method + (Dice, last Dice, HD95) at 0.05 and 0.2
    assert main[1] == r"\toprule" and main[-2] == r"\bottomrule"
    assert main.count(r"\midrule") == 2  # under the header, above the upper bound
    body = main[main.index(r"\midrule") + 1 : -2]
    rows = [line for line in body if line.endswith(r"\\")]
    assert [r.split(" & ")[0] for r in rows] == [
        "supervised",
        "clipseg",
        "cps4",
        r"mean\_teacher",
        "unimatch",
        r"\textit{upper bound: supervised @ 1}",
    ]
    for line in main[2:]:
        if line.endswith(r"\\"):
            assert _columns(line) == width, line
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 2
    mean_teacher = rows[3]
    assert r"\mathbf" not in mean_teacher.split(" & ")[1]  # one seed at 0.05: never bold
    assert r"(n=1)" in mean_teacher
    assert r"\dagger" in rows[2]  # cps4: tied with the best at 0.05
    assert r"\mathbf" in rows[4]  # unimatch: the best
    for line in studies:
        if line.endswith(r"\\"):
            assert _columns(line) == len(re.match(r"\\begin\{tabular\}\{(lc*)\}", studies[0])[1])
    assert escape("50% of {name} & #1_x ~ $") in tex
    assert r"50\% of \{name\} \& \#1\_x \textasciitilde{} \$" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(page: Path, tmp_path: Path):
    shutil.copy(page / "leaderboard.tex", tmp_path)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\input{leaderboard.tex}\n\\end{document}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "paper.pdf").read_bytes().startswith(b"%PDF")


def test_figures_come_as_png_and_pdf(page: Path):
    for name in ("dice_vs_labeled", "per_class_dice", "per_case_dice"):
        assert (page / f"synthetic-quick-{name}.png").read_bytes().startswith(b"\x89PNG")
        pdf = (page / f"synthetic-quick-{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf


def test_html_reads_at_1400px_without_horizontal_scrolling(page: Path):
    require_chromium()
    html = (page / "leaderboard.html").read_text()
    assert html.count("<table") == 4  # two main tables, the per-class table, the studies
    scroll, client = widths(page / "leaderboard.html", width=1400)
    assert 1300 <= client <= 1400
    assert scroll <= client, f"the page is {scroll} px wide at a {client} px window"
    # the check can fail: the same page squeezed into 900 px overflows
    scroll, client = widths(page / "leaderboard.html", width=900)
    assert scroll > client


def test_html_tables_sort_by_a_clicked_column(page: Path, tmp_path: Path):
    require_chromium()
    clicked = tmp_path / "clicked.html"
    click = "document.querySelector('table.leaderboard th[data-col=\"1\"]').click();"
    source = (page / "leaderboard.html").read_text()
    clicked.write_text(source.replace("</body>", f"<script>{click * 2}</script></body>"))
    dom = dump_dom(clicked.as_uri())
    body = re.search(r'<table class="sortable leaderboard">.*?<tbody>(.*?)</tbody>', dom, re.S)
    assert body
    values = [float(v) for v in re.findall(r'<tr><td>[^<]*</td><td[^>]*data-v="([^"]+)"', body[1])]
    assert len(values) == 5 and values == sorted(values, reverse=True)
    assert 'data-dir="desc"' in dom
