"""End to end: a tiny sweep is interrupted and restarted, then its leaderboard is checked against
the MLflow records (recomputed here with scipy); the same against a real ``mlflow server`` with
worker processes and a grid of variants; cells as tasks on a local Ray instance. (The HTML page
in headless Chromium: tests/test_leaderboard_pages.py; MLflow's own UI: tests/test_mlflow_ui.py.)"""

from __future__ import annotations

import csv
import math
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_runs import TINY, cell_runs, cell_statuses, cli, cli_env, interrupt, mlflow_server
from mlflow.tracking import MlflowClient
from scipy.stats import wilcoxon

from spinebench.commands.leaderboard import make_leaderboard
from spinebench.commands.sweep import sweep_and_report
from spinebench.runinfo import RunRequest
from spinebench.sweep import Grid, Variant, plan

# Several minutes of CLI runs, an MLflow server and a Ray instance: run with `pytest -m slow`.
pytestmark = pytest.mark.slow

GRID = ["--methods", "supervised,mean_teacher", "--labeled", "0.25,0.5", "--seeds", "0,1"]
SWEEP = ["sweep", *GRID, *TINY]


@dataclass
class Swept:
    root: Path
    env: dict[str, str]
    uri: str
    interrupted: subprocess.CompletedProcess
    statuses_after_interrupt: list[str]
    restarted: subprocess.CompletedProcess
    leaderboard: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Swept:
    """One sweep, interrupted (SIGINT, as Ctrl-C) once a cell finished and the next is running,
    then restarted with the same command, then its leaderboard built with --check."""
    root = tmp_path_factory.mktemp("sweep")
    env = cli_env(root, shared_cache)
    db = root / "runs" / "mlflow.db"

    def next_cell_started(statuses: list[tuple[str, int]]) -> bool:
        """A finished cell, and the next one past its start (it has logged a metric)."""
        return (
            any(s == "FINISHED" for s, _ in statuses)
            and ("RUNNING", 0) not in statuses
            and any(s == "RUNNING" for s, _ in statuses)
        )

    interrupted = interrupt(SWEEP, root, env, next_cell_started)
    after = [status for status, _ in cell_statuses(db)]
    restarted = cli(SWEEP, root, env)
    board = cli(
        ["leaderboard", "--check", "--seeds", "0,1", "--min-seeds", "2", "--out", "lb"], root, env
    )
    return Swept(root, env, f"sqlite:///{db}", interrupted, after, restarted, board)


def test_interrupted_sweep_restarts_where_it_stopped(swept: Swept):
    assert swept.interrupted.returncode == 130, swept.interrupted.stderr[-2000:]
    assert "run the same command again" in swept.interrupted.stderr
    finished = swept.statuses_after_interrupt.count("FINISHED")
    assert 1 <= finished < 8
    assert swept.statuses_after_interrupt.count("KILLED") == 1  # the cell that was running
    assert swept.restarted.returncode == 0, swept.restarted.stderr[-2000:]
    assert f"8 cells, {finished} already finished, {8 - finished} to run" in swept.restarted.stderr
    assert swept.restarted.stdout.count(" skipped ") == finished
    assert swept.restarted.stdout.count(" finished ") == 8 - finished
    client = MlflowClient(swept.uri)
    runs = cell_runs(client)
    assert len(runs) == 8  # the killed cell continued its own run
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["spinebench.config_hash"] for r in runs}) == 8
    assert sum(r.data.tags.get("spinebench.resumed") == "true" for r in runs) == 1


def _expected(client: MlflowClient, tmp: Path) -> tuple[dict, dict, dict]:
    """Straight from MLflow: metric lists and per-case Dice (averaged over seeds) per cell."""
    metrics: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    cases: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[tuple, set[int]] = defaultdict(set)
    for exp in client.search_experiments():
        for run in cell_runs(client, exp.name, "attributes.status = 'FINISHED'"):
            tags = run.data.tags
            key = (
                tags["spinebench.method"]
                + (f"[{tags['spinebench.variant']}]" if "spinebench.variant" in tags else ""),
                float(tags["spinebench.labeled"]),
            )
            seeds[key].add(int(tags["spinebench.seed"]))
            for name, value in run.data.metrics.items():
                if name.startswith(("test/", "test_last/")):
                    metrics[key][name].append(value)
            path = client.download_artifacts(run.info.run_id, "per_case.csv", str(tmp))
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    cases[key][row["case"]].append(float(row["dice"]))
    pooled = {k: {c: statistics.mean(v) for c, v in per.items()} for k, per in cases.items()}
    return metrics, pooled, seeds


def _p(a: dict[str, float], b: dict[str, float]) -> float:
    common = sorted(a.keys() & b.keys())
    x, y = [a[c] for c in common], [b[c] for c in common]
    return math.nan if x == y else float(wilcoxon(x, y).pvalue)


def _md_line(md: str, fraction: float, name: str) -> str:
    """The line of ``name`` in the markdown table of one labeled fraction (main, else studies)."""
    sections = md.split(f"#### labeled {fraction:g}\n")[1:]
    for section in sections:
        table = section.strip().split("\n\n", 1)[0]
        for line in table.splitlines():
            label = line.split(" | ")[0].strip("| *").removesuffix(" (lower bound)")
            if label == name:
                return line
    raise AssertionError(f"{name} at {fraction:g} is in no table")


def _assert_leaderboard_matches(client: MlflowClient, out: Path, tmp: Path) -> None:
    """Every number of leaderboard.csv (made with --min-seeds 2) recomputed from MLflow: plain
    cells are main rows (best and p vs best among them), variants are studies (best within the
    variant and its method's main row, p against that row)."""
    metrics, pooled, seeds = _expected(client, tmp)
    with (out / "leaderboard.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["table"] in ("main", "studies")]
    assert {(r["row"], float(r["labeled"])) for r in rows} == set(metrics)
    md = (out / "leaderboard.md").read_text()
    for r in rows:
        name, fraction = r["row"], float(r["labeled"])
        method = name.split("[")[0]
        if r["table"] == "main":
            group = [n for (n, f) in metrics if f == fraction and "[" not in n]
        else:
            group = [n for (n, f) in metrics if f == fraction and n.split("[")[0] == method]
        best = max(group, key=lambda n: statistics.mean(metrics[(n, fraction)]["test/dice"]))
        for metric in ("dice", "hd95", "assd"):
            values = metrics[(name, fraction)][f"test/{metric}"]
            assert float(r[f"{metric}_mean"]) == pytest.approx(statistics.mean(values))
            assert float(r[f"{metric}_std"]) == pytest.approx(statistics.stdev(values))
        last = metrics[(name, fraction)]["test_last/dice"]
        assert float(r["last_dice_mean"]) == pytest.approx(statistics.mean(last))
        assert int(r["n_seeds"]) == len(seeds[(name, fraction)]) == 2
        assert ("dice" in r["best"].split(";")) == (name == best), (name, fraction)
        if r["table"] == "main":
            others = [n for n in group if n != "supervised"]
            assert len(others) <= 1  # a Holm family of one: adjusted = raw
            checks = (("p_vs_supervised", "supervised"), ("p_vs_best", best))
        else:
            checks = (("p_vs_defaults", method),)
        for field, reference in checks:
            expected = (
                math.nan
                if name == reference
                else _p(pooled[(name, fraction)], pooled[(reference, fraction)])
            )
            got = float(r[field]) if r[field] else math.nan
            assert got == pytest.approx(expected, nan_ok=True), (name, fraction, field)
        dice = metrics[(name, fraction)]["test/dice"]
        line = _md_line(md, fraction, name)
        assert f"{statistics.mean(dice):.4f} ± {statistics.stdev(dice):.4f}" in line
    with (out / "leaderboard_per_class.csv").open(newline="") as f:
        per_class = list(csv.DictReader(f))
    assert per_class
    for r in per_class:
        values = metrics[(r["row"], float(r["labeled"]))].get(f"test/dice/{r['class']}", [])
        assert int(r["n_seeds"]) == len(values)
        if values:
            assert float(r["dice_mean"]) == pytest.approx(statistics.mean(values))
        assert r["test_cases_with_class"] != "unknown"


def test_leaderboard_matches_the_mlflow_records(swept: Swept, tmp_path: Path):
    assert swept.leaderboard.returncode == 0, swept.leaderboard.stderr[-2000:]
    assert "check passed" in swept.leaderboard.stdout
    out = swept.root / "lb"
    for name in (
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.html",
        "synthetic-quick-dice_vs_labeled.png",
        "synthetic-quick-per_class_dice.png",
        "synthetic-quick-per_case_dice.png",
    ):
        assert (out / name).stat().st_size > 0, name
    _assert_leaderboard_matches(MlflowClient(swept.uri), out, tmp_path)


def test_check_refuses_a_cell_with_missing_seeds(swept: Swept, capsys: pytest.CaptureFixture):
    code = make_leaderboard(
        tracking_uri=swept.uri,
        experiment=None,
        formats=[],
        out=swept.root / "lb-check",
        class_fraction=None,
        check_first=True,
        seeds=[0, 1, 2],
    )
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "mean_teacher labeled 0.25: 2 of 3 seeds (missing 2)" in err
    assert not (swept.root / "lb-check").exists()


def test_a_failed_cell_is_recorded_and_the_sweep_goes_on(isolated_env: Path):
    grid = Grid(
        methods=("supervised",),
        labeled=(0.5,),
        variants=(Variant("stable", ("train.lr=0.01",)),),
    )  # the plain cell diverges and fails first; the variant after it still runs
    # a learning rate the config accepts (positive, finite) but that SGD diverges with
    huge_lr = [*TINY[1::2], "train.optimizer=sgd", "train.lr=1.0e+30"]
    template = RunRequest(method="", labeled=0.0, overrides=huge_lr)
    assert sweep_and_report(grid, template) == 1
    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    runs = cell_runs(client)
    statuses = {r.data.tags.get("spinebench.variant", ""): r for r in runs}
    assert statuses["stable"].info.status == "FINISHED"
    assert statuses[""].info.status == "FAILED"
    assert "NonFiniteLossError" in statuses[""].data.tags["spinebench.error"]
    # the next sweep retries only the failed cell; --force reruns every cell
    assert [pc.cell.variant.name for pc in plan(grid, template).to_run()] == [""]
    assert len(plan(grid, template, force=True).to_run()) == 2


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` with its own sqlite store and artifact root."""
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path) as uri:
        yield uri


def test_sweep_and_leaderboard_through_an_mlflow_server(
    server: str, tmp_path: Path, shared_cache: Path
):
    env = cli_env(tmp_path, shared_cache)
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "methods: [supervised]\nlabeled: [0.5]\nseeds: [0, 1]\n"
        "variants:\n  - {name: fast_lr, set: [train.lr=0.05]}\n"
    )
    common = [
        "sweep",
        "--grid",
        str(grid),
        "--tracking-uri",
        server,
        "--workers",
        "2",
        *TINY,
    ]
    first = cli([*common, "--seeds", "0"], tmp_path, env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "2 cells, 0 already finished, 2 to run (local, 2 at a time)" in first.stderr
    second = cli(common, tmp_path, env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "4 cells, 2 already finished, 2 to run" in second.stderr
    assert second.stdout.count(" skipped ") == 2
    board = cli(
        [
            "leaderboard",
            "--check",
            "--min-seeds",
            "2",
            "--tracking-uri",
            server,
            "--out",
            "lb",
        ],
        tmp_path,
        env,
    )
    assert board.returncode == 0, board.stderr[-2000:]
    client = MlflowClient(server)
    runs = cell_runs(client)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    variants = sorted(r.data.tags.get("spinebench.variant", "") for r in runs)
    assert variants == ["", "", "fast_lr", "fast_lr"]
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing went to the default store
    _assert_leaderboard_matches(client, tmp_path / "lb", tmp_path / "downloads")


def test_cells_run_as_tasks_on_a_ray_cluster(
    tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    # Ray's single-machine mode: every address is 127.0.0.1 (read when ray is imported).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'spinebench[ray]'")
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024**2,
        logging_level="WARNING",
    )
    try:
        address = context.address_info["gcs_address"]
        assert address.startswith("127.0.0.1:")
        cells = ["--methods", "supervised", "--labeled", "0.5", "--seeds", "0,1"]
        proc = cli(
            ["sweep", *cells, "--executor", "ray", "--ray-address", address, *TINY],
            tmp_path,
            cli_env(tmp_path, shared_cache),
        )
    finally:
        ray.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 to run (ray, 2 at a time)" in proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = cell_runs(client)
    assert sorted(r.data.tags["spinebench.seed"] for r in runs) == ["0", "1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["train.threads"] for r in runs} == {"1"}  # the cell's CPU request
