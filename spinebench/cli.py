"""The ``spinebench`` command line. Thin: parse, call, render. Heavy imports stay inside the
commands so ``spinebench --help`` is fast."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from spinebench.errors import SpinebenchError

app = typer.Typer(
    name="spinebench",
    help="Benchmark semi-supervised spine segmentation methods on identical splits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Generate or inspect data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

MethodOpt = Annotated[str, typer.Option("--method", "-m", help="Method name (`spinebench list methods`).")]
LabeledOpt = Annotated[str, typer.Option("--labeled", "-l", help="Fraction of training cases labeled, in (0, 1].")]
DatasetOpt = Annotated[str, typer.Option(help="Dataset name (`spinebench list datasets`).")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Dataset folder (default: the dataset's own).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the labeled subset and of training.")]
ProfileOpt = Annotated[str, typer.Option(help="quick (CPU, minutes) or paper (GPU, sources' budgets).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of config overrides.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Dotted override, e.g. train.lr=0.01 (repeatable).")]
UriOpt = Annotated[str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///spinebench-runs/mlflow.db).")]
ExperimentOpt = Annotated[str | None, typer.Option(help="MLflow experiment (default: spinebench/<dataset>).")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
ResumeOpt = Annotated[bool | None, typer.Option("--resume/--no-resume", help="Continue the unfinished run with this config (default: when there is one).")]


def parse_fraction(text: str) -> float:
    """``--labeled`` as a float, or a one-line error."""
    try:
        return float(text)
    except ValueError:
        raise SpinebenchError(f"--labeled {text!r} is not a number; use a fraction like 0.05") from None


@app.command()
def run(
    method: MethodOpt,
    labeled: LabeledOpt,
    dataset: DatasetOpt = "synthetic",
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    profile: ProfileOpt = "quick",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
    experiment: ExperimentOpt = None,
    device: DeviceOpt = "auto",
    resume: ResumeOpt = None,
) -> None:
    """Train and evaluate one method; the run is tracked in MLflow."""
    from spinebench.commands.run import run_and_report
    from spinebench.engine.run import RunRequest

    req = RunRequest(method=method, labeled=parse_fraction(labeled), dataset=dataset,
                     data_dir=data_dir, seed=seed, profile=profile, config_file=config,
                     overrides=list(set_ or []), tracking_uri=tracking_uri,
                     experiment=experiment, device=device, resume=resume)
    run_and_report(req)


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="methods, datasets, metrics or plugins")] = "methods",
) -> None:
    """List registered methods, datasets, metrics or plugins."""
    from spinebench.commands.listing import show

    show(what)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write images/ and labels/ into.")],
    cases: Annotated[int, typer.Option(min=3, help="Number of cases.")] = 60,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
) -> None:
    """Write the synthetic spine phantom as NIfTI (images/, labels/, dataset.json)."""
    from spinebench.data.phantom import write_dataset

    if out.exists() and any(out.iterdir()):
        raise SpinebenchError(f"{out} exists and is not empty; choose a new --out folder")
    pairs = write_dataset(out, cases=cases, seed=seed)
    typer.echo(f"wrote {len(pairs)} cases to {out}")


BUILTIN_COMMANDS = {"run", "list", "data"}


def _install_plugin_commands() -> None:
    """Sub-commands contributed by plugins (``spinebench_add_commands``)."""
    if len(sys.argv) <= 1 or sys.argv[1] in BUILTIN_COMMANDS | {"--help", "-h"}:
        return  # built-ins need no plugin import; keeps their start-up fast
    from spinebench.plugins import get_plugin_manager

    get_plugin_manager().hook.spinebench_add_commands(app=app)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # type: ignore[no-untyped-def]
    return f"warning: {message}\n"


def main() -> None:
    """Entry point: user mistakes print one line and exit 2, never a traceback."""
    warnings.formatwarning = _one_line_warning
    try:
        _install_plugin_commands()
        app()
    except SpinebenchError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
