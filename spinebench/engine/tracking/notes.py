"""The descriptions MLflow's UI shows (``mlflow.note.content``): of an experiment, of a run
(its results table, as the terminal prints it) and of a sweep's parent run. Markdown text only;
nothing here talks to a store."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

from spinebench.runinfo import RunRequest

HEADLINE = (("dice", "Dice", ""), ("hd95", "HD95", " (mm)"), ("assd", "ASSD", " (mm)"))


def experiment_note(experiment: str) -> str:
    return (
        f"spinebench runs of `{experiment}`: one run per (method, labeled fraction, seed), "
        "named `<method>-l<fraction>-s<seed>`; a sweep is a parent run with its cells as "
        "children. The result of a run is `test/dice` (mean foreground Dice over the test "
        "cases, with the checkpoint chosen on the validation split); `test_last/dice` is the "
        "last checkpoint's, `test/hd95` and `test/assd` are in mm, `test/dice/<class>` per "
        "class. Tags `spinebench.method`, `spinebench.labeled` and `spinebench.seed` name a "
        "run's cell; `spinebench leaderboard` turns the runs into tables with paired tests."
    )


def command_line(req: RunRequest) -> str:
    """The ``spinebench run`` command of a request (its config file by path)."""
    args = [
        "spinebench", "run", "--method", req.method, "--labeled", f"{req.labeled:g}",
        "--seed", str(req.seed), "--profile", req.profile,
    ]  # fmt: skip
    if req.dataset != "synthetic":
        args += ["--dataset", req.dataset]
    if req.data_dir is not None:
        args += ["--data-dir", str(req.data_dir)]
    if req.config_file is not None:
        args += ["--config", str(req.config_file)]
    for override in req.overrides:
        args += ["--set", override]
    return shlex.join(args)


def _value(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key, math.nan)
    return "-" if math.isnan(value) else f"{value:.4f}"


def run_note(
    req: RunRequest,
    run_id: str,
    split_sizes: dict[str, int],
    metrics: dict[str, float] | None,
) -> str:
    """A run's description: what it is, its split, its results (``None`` while it trains) and
    the commands that re-create it."""
    title = f"**{req.method}**, labeled {req.labeled:g}, seed {req.seed}, {req.dataset} "
    title += f"({req.profile} profile)"
    sizes = ", ".join(f"{n} {part}" for part, n in split_sizes.items())
    lines = [title, "", f"Split (cases): {sizes}.", ""]
    if metrics is None:
        lines += ["Training; the results table appears here when the run finishes.", ""]
    else:
        lines += _results(metrics)
    lines += [
        "Re-create:",
        "",
        "```",
        command_line(req),
        f"spinebench reproduce {run_id}",
        "```",
    ]
    return "\n".join(lines)


def _results(metrics: dict[str, float]) -> list[str]:
    rows = [
        "| test split | " + " | ".join(f"{name}{unit}" for _, name, unit in HEADLINE) + " |",
        "| --- | " + " | ".join("---:" for _ in HEADLINE) + " |",
    ]
    for prefix, label in (("test", "best-validation checkpoint"), ("test_last", "last checkpoint")):
        if f"{prefix}/dice" in metrics:
            values = " | ".join(_value(metrics, f"{prefix}/{key}") for key, _, _ in HEADLINE)
            rows.append(f"| {label} | {values} |")
    classes = [k.removeprefix("test/dice/") for k in metrics if k.startswith("test/dice/")]
    out = [*rows, ""]
    if classes:
        out += [
            "| class | Dice (best) | Dice (last) | test cases with it |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name in classes:
            cases = metrics.get(f"test/coverage/{name}", math.nan)
            shown = "-" if math.isnan(cases) else f"{cases:.0f}"
            out.append(
                f"| {name} | {_value(metrics, f'test/dice/{name}')} | "
                f"{_value(metrics, f'test_last/dice/{name}')} | {shown} |"
            )
        out.append("")
    return out


def sweep_note(cells: Sequence[str], command: str) -> str:
    """A sweep parent's description: its cells and how to continue it."""
    shown = "\n".join(f"- {c}" for c in cells)
    return (
        f"A spinebench sweep of {len(cells)} cells (the child runs):\n\n{shown}\n\n"
        f"Continue or re-check it with the same command:\n\n```\n{command}\n```"
    )
