"""Bad input at every door of ``spinebench run``: one line that names the problem and the fix,
exit code 2, no traceback, and nothing half-written (no run, no checkpoint) in the store.

The cases run through the real entry point (``spinebench.cli.main``) in this process, which is
what the console script calls; one case also runs as a fresh process to pin the exit code.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY
from mlflow.tracking import MlflowClient

from spinebench import plugins
from spinebench.cli import main
from spinebench.config import config_hash
from spinebench.engine.prepare import resolve_request
from spinebench.engine.tracking import MlflowTracker, resolve_uri
from spinebench.errors import SpinebenchError
from spinebench.runinfo import RunRequest

FAST = ["--set", "model.channels=[4,8,16,32,64]", "--set", "train.threads=1"]
BASE = ["run", "--method", "supervised", "--labeled", "0.5", *TINY, *FAST]
CONFIG_FILES = {
    "syntax.yaml": "train:\n  lr: 0.1\n  iterations: [4, 5\n",
    "list.yaml": "- train.lr: 0.1\n",
    "unknown.yaml": "train:\n  iteratons: 5\n",
    "type.yaml": "train:\n  iterations: many\n",
    "tag.yaml": "train: !!python/object/apply:os.system ['true']\n",
}
RAISER = """
from spinebench.hookspecs import hookimpl


@hookimpl
def spinebench_register_methods(register):
    raise RuntimeError("model zoo unreachable")
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _install_raiser(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp / "site"
    info = site / "spinebench_raiser-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "sbbad_raiser.py").write_text(RAISER)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: spinebench-raiser\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[spinebench]\nraiser = sbbad_raiser\n")
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()


def _unfinished_run_with_other_config(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KILLED ``supervised-l0.5-s0`` that was started with train.iterations=7."""
    sets = [v for k, v in zip(BASE[5::2], BASE[6::2], strict=True) if k == "--set"]
    config = resolve_request(
        RunRequest("supervised", 0.5, overrides=[*sets, "train.iterations=7"])
    ).config
    tracker = MlflowTracker(resolve_uri(None), "spinebench/synthetic")
    tracker.start("supervised-l0.5-s0", {"spinebench.config_hash": config_hash(config)}, config)
    tracker.end("KILLED")


Setup = Callable[[Path, pytest.MonkeyPatch], None] | None
CASES: list[tuple[str, list[str], str, Setup]] = [
    ("fraction zero", ["--labeled", "0"], "--labeled 0.0 is outside (0, 1]", None),
    ("fraction negative", ["--labeled", "-0.2"], "--labeled -0.2 is outside (0, 1]", None),
    ("fraction above one", ["--labeled", "1.5"], "--labeled 1.5 is outside (0, 1]", None),
    ("fraction nan", ["--labeled", "nan"], "--labeled nan is outside (0, 1]", None),
    ("fraction text", ["--labeled", "lots"], "--labeled 'lots' is not a number", None),
    ("fraction empty", ["--labeled", ""], "--labeled '' is not a number", None),
    ("seed negative", ["--seed", "-1"], "--seed -1 is negative", None),
    ("method typo", ["--method", "mean_teachr"],
     "unknown method 'mean_teachr': did you mean 'mean_teacher'?", None),
    ("dataset typo", ["--dataset", "synthetik"],
     "unknown dataset 'synthetik': did you mean 'synthetic'?", None),
    ("key typo", ["--set", "train.iteratons=5"],
     "unknown config key 'train.iteratons' (from --set); did you mean 'train.iterations'?", None),
    ("key in no section", ["--set", "optim.lr=1"], "unknown config key 'optim.lr'", None),
    ("value type", ["--set", "train.batch_size=many"],
     "config key 'train.batch_size' expects int (default 8), got 'many'", None),
    ("value zero", ["--set", "train.val_every=0"],
     "config key 'train.val_every' must be above 0, got 0", None),
    ("not key=value", ["--set", "train.lr"], "--set 'train.lr' is not key=value", None),
    ("choice typo", ["--set", "train.optimizer=adam"],
     "config key 'train.optimizer' got 'adam'; did you mean 'adamw'? use one of sgd, adamw", None),
    ("choice of auto/true/false", ["--set", "train.deterministic=sometimes"],
     "use one of auto, true, false", None),
    ("precision", ["--set", "train.precision=fp8"], "use one of auto, fp32, bf16", None),
    ("method option typo", ["--method", "mean_teacher", "--set", "mean_teacher.ema_decy=0.9"],
     "unknown config key 'method.ema_decy' (from --set); did you mean 'method.ema_decay'?", None),
    ("method option type", ["--method", "mean_teacher", "--set", "method.ema_decay=high"],
     "config key 'method.ema_decay' expects float", None),
    ("method option value", ["--method", "mean_teacher", "--set", "method.predict_with=both"],
     "config key 'method.predict_with' got 'both'; use one of student, teacher", None),
    ("profile", ["--profile", "huge"], "unknown profile 'huge'; use one of quick, paper", None),
    ("config file missing", ["--config", "{tmp}/missing.yaml"], "missing.yaml does not exist",
     None),
    ("config YAML syntax", ["--config", "{tmp}/syntax.yaml"],
     "syntax.yaml: YAML syntax error at line 4", None),
    ("config not a mapping", ["--config", "{tmp}/list.yaml"],
     "expected a mapping of config keys, got list", None),
    ("config unknown key", ["--config", "{tmp}/unknown.yaml"],
     "unknown config key 'train.iteratons' (from --config file)", None),
    ("config value type", ["--config", "{tmp}/type.yaml"],
     "config key 'train.iterations' expects int", None),
    ("config python tag", ["--config", "{tmp}/tag.yaml"], "tag.yaml: YAML tag not allowed", None),
    ("data dir missing", ["--data-dir", "/nonexistent/spine"],
     "data folder /nonexistent/spine does not exist", None),
    ("data dir empty", ["--data-dir", "{tmp}/empty"], "holds no .nii.gz files", None),
    ("split leaves no training case", ["--set", "data.val_fraction=0.5",
                                       "--set", "data.test_fraction=0.5"],
     "leave none for training", None),
    ("device", ["--device", "tpu"], "--device 'tpu' is unknown; use auto, cpu or cuda", None),
    ("store down", ["--tracking-uri", "http://127.0.0.1:{port}"],
     "tracking store http://127.0.0.1:{port} is unreachable", None),
    ("store not writable", ["--tracking-uri", "sqlite:////proc/spinebench/mlflow.db"],
     "tracking store sqlite:////proc/spinebench/mlflow.db is unreachable", None),
    ("plugin raises in register", [],
     "plugin 'raiser' (spinebench-raiser) raised while registering methods: RuntimeError: "
     "model zoo unreachable", _install_raiser),
    ("resume with nothing to resume", ["--resume"],
     "--resume: no unfinished run 'supervised-l0.5-s0' with this config", None),
    ("resume with a changed config", ["--resume"],
     "was started with another config (train.iterations: 7 -> 6)",
     _unfinished_run_with_other_config),
]  # fmt: skip


def _store_runs(runs: Path) -> list[tuple[str, str]]:
    db = runs / "mlflow.db"
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    return [
        (r.info.run_id, r.info.status)
        for exp in client.search_experiments()
        for r in client.search_runs([exp.experiment_id])
    ]


@pytest.fixture
def tmp_inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    (folder / "empty").mkdir(parents=True)
    for name, text in CONFIG_FILES.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(("args", "message", "setup"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(
    args: list[str], message: str, setup: Setup, tmp_inputs: Path, isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets it
    plugins.reset()
    if setup is not None:
        setup(tmp_inputs, monkeypatch)
    before = _store_runs(isolated_env)
    port = _closed_port()
    fill = {"tmp": tmp_inputs, "port": port}
    monkeypatch.setattr(sys, "argv", ["spinebench", *BASE, *(a.format(**fill) for a in args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    plugins.reset()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2, err
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert message.format(**fill) in errors[0], err
    assert "Traceback" not in err
    assert _store_runs(isolated_env) == before  # no run started, none finished
    assert not any((isolated_env / "checkpoints").glob("*/*"))


def test_bad_input_exits_2_from_a_fresh_process(tmp_inputs: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench", *BASE, "--config", str(tmp_inputs / "syntax.yaml")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_inputs / 'syntax.yaml'}: YAML syntax error at line 4, column 1: "
        "expected ',' or ']', but got '<stream end>'; fix the file"
    ]


def test_an_unknown_metric_name_gets_the_closest_one_suggested() -> None:
    with pytest.raises(SpinebenchError, match=re.escape("metric 'dise': did you mean 'dice'?")):
        plugins.lookup(plugins.metrics(), "dise", "metric")
