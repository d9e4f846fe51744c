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

Opt = typer.Option
MethodOpt = Annotated[str, Opt("--method", "-m", help="Method (`spinebench list methods`).")]
LabeledOpt = Annotated[
    str, Opt("--labeled", "-l", help="Fraction of training cases labeled, in (0, 1].")
]
DatasetOpt = Annotated[str, Opt(help="Dataset name (`spinebench list datasets`).")]
DataDirOpt = Annotated[Path | None, Opt(help="Dataset folder (default: the dataset's own).")]
SeedOpt = Annotated[int, Opt(help="Seed of the labeled subset and of training.")]
ProfileOpt = Annotated[str, Opt(help="quick (CPU, minutes) or paper (GPU, sources' budgets).")]
ConfigOpt = Annotated[Path | None, Opt("--config", help="YAML file of config overrides.")]
SetOpt = Annotated[
    list[str] | None, Opt("--set", help="Dotted override, e.g. train.lr=0.01 (repeatable).")
]
UriOpt = Annotated[
    str | None,
    Opt(
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
        "sqlite:///spinebench-runs/mlflow.db)."
    ),
]
ExperimentOpt = Annotated[
    str | None, Opt(help="MLflow experiment (default: spinebench/<dataset>).")
]
DeviceOpt = Annotated[str, Opt(help="auto, cpu or cuda.")]
ResumeOpt = Annotated[
    bool | None,
    Opt(
        "--resume/--no-resume",
        help="Continue the unfinished run with this config (default: when there is one).",
    ),
]
DeterministicOpt = Annotated[
    bool | None,
    Opt(
        "--deterministic/--no-deterministic",
        help="Same config and seed give the same metrics (train.deterministic; default: on for "
        "CPU).",
    ),
]


def deterministic_override(flag: bool | None) -> list[str]:
    """``--deterministic``/``--no-deterministic`` as the config override it stands for."""
    return [] if flag is None else [f"train.deterministic={str(flag).lower()}"]


def parse_fraction(text: str) -> float:
    """``--labeled`` as a float, or a one-line error."""
    try:
        return float(text)
    except ValueError:
        raise SpinebenchError(
            f"--labeled {text!r} is not a number; use a fraction like 0.05"
        ) from None


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
    deterministic: DeterministicOpt = None,
    parent_run: Annotated[
        str | None, Opt(hidden=True, help="A sweep's parent run (set by sweep workers).")
    ] = None,
) -> None:
    """Train and evaluate one method; the run is tracked in MLflow."""
    from spinebench.commands.run import run_and_report
    from spinebench.runinfo import RunRequest

    req = RunRequest(
        method=method,
        labeled=parse_fraction(labeled),
        dataset=dataset,
        data_dir=data_dir,
        seed=seed,
        profile=profile,
        config_file=config,
        overrides=[*(set_ or []), *deterministic_override(deterministic)],
        tracking_uri=tracking_uri,
        experiment=experiment,
        device=device,
        resume=resume,
        parent_run=parent_run,
    )
    run_and_report(req)


MethodsOpt = Annotated[
    str | None, typer.Option(help="Comma-separated methods, e.g. supervised,mean_teacher.")
]
FractionsOpt = Annotated[
    str | None,
    typer.Option("--labeled", "-l", help="Comma-separated labeled fractions, e.g. 0.05,0.1."),
]
GridOpt = Annotated[
    Path | None,
    typer.Option(
        help="YAML grid (methods, labeled, seeds, set, variants); --methods/--labeled/--seeds "
        "replace its lists."
    ),
]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        help="local (this machine) or ray (a Ray cluster; pip install 'spinebench\\[ray]')."
    ),
]
WorkersOpt = Annotated[
    int, typer.Option(help="local: cells at once, as processes (one GPU each when GPUs exist).")
]
RayAddressOpt = Annotated[
    str | None, typer.Option(help="Ray cluster address (default: a local Ray instance).")
]
GpusPerCellOpt = Annotated[
    float | None, typer.Option(help="ray: GPUs per cell (default: 1 when the cluster has GPUs).")
]


@app.command()
def sweep(
    methods: MethodsOpt = None,
    labeled: FractionsOpt = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default: 0).")] = None,
    grid: GridOpt = None,
    dataset: DatasetOpt = "synthetic",
    data_dir: DataDirOpt = None,
    profile: ProfileOpt = "quick",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
    experiment: ExperimentOpt = None,
    device: DeviceOpt = "auto",
    resume: ResumeOpt = None,
    deterministic: DeterministicOpt = None,
    force: Annotated[bool, typer.Option(help="Rerun cells that have a FINISHED run.")] = False,
    executor: ExecutorOpt = "local",
    workers: WorkersOpt = 1,
    ray_address: RayAddressOpt = None,
    cpus_per_cell: Annotated[float, typer.Option(help="ray: CPUs per cell.")] = 1.0,
    gpus_per_cell: GpusPerCellOpt = None,
) -> None:
    """Run every (method, fraction, seed) cell as a tracked run; finished cells are skipped."""
    from spinebench.commands.sweep import sweep_and_report
    from spinebench.runinfo import RunRequest
    from spinebench.sweep import make_grid

    cells = make_grid(grid, methods, labeled, seeds)
    template = RunRequest(
        method="",
        labeled=0.0,
        dataset=dataset,
        data_dir=data_dir,
        profile=profile,
        config_file=config,
        overrides=[*(set_ or []), *deterministic_override(deterministic)],
        tracking_uri=tracking_uri,
        experiment=experiment,
        device=device,
        resume=resume,
    )
    raise typer.Exit(
        sweep_and_report(
            cells,
            template,
            force=force,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            cpus_per_cell=cpus_per_cell,
            gpus_per_cell=gpus_per_cell,
        )
    )


FormatOpt = Annotated[
    list[str] | None,
    typer.Option("--format", help="md, csv, html or latex (repeatable; default: all four)."),
]
ClassFractionOpt = Annotated[
    float | None,
    typer.Option(help="Labeled fraction of the per-class table and plots (default: the smallest)."),
]
CheckOpt = Annotated[
    bool,
    typer.Option(
        "--check", help="Exit 1, writing nothing, if a cell lacks seeds or mixes configs."
    ),
]
CheckSeedsOpt = Annotated[
    str | None, typer.Option(help="--check: seeds every cell must have (default: every seed seen).")
]
RecordsOpt = Annotated[
    Path | None,
    typer.Option(help="Read record files (`spinebench export`) instead of the tracking store."),
]
CheckpointOpt = Annotated[
    str,
    typer.Option(
        help="best (selected on validation), last, or both (best ranked, last Dice beside it)."
    ),
]
MinSeedsOpt = Annotated[
    int, typer.Option(help="Seeds a row needs to be eligible as a column's best.")
]


@app.command()
def leaderboard(
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: all).")
    ] = None,
    tracking_uri: UriOpt = None,
    format_: FormatOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for tables and figures.")] = Path("leaderboard"),
    class_fraction: ClassFractionOpt = None,
    check: CheckOpt = False,
    seeds: CheckSeedsOpt = None,
    records: RecordsOpt = None,
    checkpoint: CheckpointOpt = "both",
    min_seeds: MinSeedsOpt = 3,
) -> None:
    """Tables (md, csv, html, latex), significance tests and figures (PNG, PDF) from the tracked
    runs or from record files."""
    from spinebench.commands.leaderboard import make_leaderboard, parse_seeds

    raise typer.Exit(
        make_leaderboard(
            tracking_uri=tracking_uri,
            experiment=experiment,
            formats=format_ or [],
            out=out,
            class_fraction=class_fraction,
            check_first=check,
            seeds=parse_seeds(seeds),
            records=records,
            checkpoint=checkpoint,
            min_seeds=min_seeds,
        )
    )


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="Folder for the record files (one per run).")],
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: all).")
    ] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Finished runs as small record files (tags, config, test metrics, per-case scores, split;
    no checkpoints) that `spinebench leaderboard --records` reads. The store is not changed."""
    from spinebench.commands.leaderboard import export_records

    export_records(tracking_uri=tracking_uri, experiment=experiment, out=out)


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="methods, datasets, metrics or plugins")] = "methods",
) -> None:
    """List registered methods, datasets, metrics or plugins."""
    from spinebench.commands.listing import show

    show(what)


@app.command()
def predict(
    run_id: Annotated[str, typer.Option("--run", help="MLflow run id of a finished run.")],
    input_: Annotated[Path, typer.Option("--input", help="A NIfTI file or a folder of them.")],
    output: Annotated[Path, typer.Option(help="Folder for the label maps (not the input's).")],
    tracking_uri: UriOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Segment NIfTI volumes with a run's final model; label maps keep the input's header."""
    from spinebench.commands.predict import predict_and_report

    predict_and_report(run_id, input_, output, tracking_uri, device)


@app.command()
def reproduce(
    run_ids: Annotated[
        list[str], typer.Argument(metavar="RUN_ID...", help="Finished runs to re-run.")
    ],
    tracking_uri: UriOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Re-run tracked runs from their records (config, split, seed) into '<experiment>/reproduce'
    and compare every test metric; exit 1 if any differs."""
    from spinebench.commands.reproduce import reproduce_and_report

    raise typer.Exit(reproduce_and_report(run_ids, tracking_uri, device))


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write images/ and labels/ into.")],
    cases: Annotated[int, typer.Option(help="Number of cases (at least 3).")] = 60,
    seed: Annotated[int, typer.Option(help="Generator seed (0 to 4294967295).")] = 0,
) -> None:
    """Write the synthetic spine phantom as NIfTI (images/, labels/, dataset.json)."""
    from spinebench.atomic import atomic_folder
    from spinebench.config import MAX_SEED
    from spinebench.data.phantom import write_dataset
    from spinebench.paths import check_writable

    if cases < 3:
        raise SpinebenchError(
            f"--cases {cases} is below 3: a train/val/test split needs 3 cases; use --cases 3 "
            "or more"
        )
    if not 0 <= seed <= MAX_SEED:
        raise SpinebenchError(f"--seed {seed} is outside 0..{MAX_SEED}; use a seed in that range")
    check_writable(out, "--out", "choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise SpinebenchError(f"{out} exists and is not empty; choose a new --out folder")
    with atomic_folder(out) as folder:  # all cases or none
        pairs = write_dataset(folder, cases=cases, seed=seed)
    typer.echo(f"wrote {len(pairs)} cases to {out}")


@app.command("new-plugin")
def new_plugin(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Method name: lowercase letters, digits, _.")
    ],
    dir_: Annotated[
        Path | None, typer.Option("--dir", help="Project folder (default: ./spinebench-NAME).")
    ] = None,
) -> None:
    """Write a pip-installable method plugin: package, entry point, README, conformance tests."""
    from spinebench.commands.new_plugin import create_and_report

    create_and_report(name, dir_)


BUILTIN_COMMANDS = {
    "run", "sweep", "leaderboard", "export", "list", "data", "new-plugin", "predict",
    "reproduce",
}  # fmt: skip


def _install_plugin_commands() -> None:
    """Sub-commands contributed by plugins (``spinebench_add_commands``)."""
    if len(sys.argv) <= 1 or sys.argv[1] in BUILTIN_COMMANDS | {"--help", "-h"}:
        return  # built-ins need no plugin import; keeps their start-up fast
    from spinebench.plugins import get_plugin_manager

    get_plugin_manager().hook.spinebench_add_commands(app=app)


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
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
