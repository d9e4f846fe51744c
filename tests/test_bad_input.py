"""Bad input at every door of ``spinebench run``: one line that names the problem and the fix,
exit code 2, no traceback, and nothing half-written (no run, no checkpoint) in the store.

The cases run through the real entry point (``spinebench.cli.main``) in this process, which is
what the console script calls; one case also runs as a fresh process to pin the exit code.
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable
from contextlib import closing
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
    "duplicate.yaml": "train:\n  lr: 0.1\n  lr: 0.2\n",
    "bomb.yaml": "\n".join(
        ["train:", "  a: &a [x, x, x, x, x, x, x, x, x]"]
        + [
            f"  {c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ]
        + ["  lr: *i", ""]
    ),
    "scientific.yaml": "train:\n  lr: 1e-3\n",
    "section.yaml": "train: 5\n",
    "seed.yaml": "run:\n  seed: 3\n",
    "long.yaml": "train:\n  iterations: [" + ", ".join(map(str, range(100_000))) + "]\n",
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


def _runs_under_a_file(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEBENCH_RUNS", str(tmp / "list.yaml" / "runs"))


def _cache_in_proc(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEBENCH_CACHE", "/proc/spinebench-cache")


def _foreign_sqlite(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(sqlite3.connect(tmp / "other-app.db")) as conn:
        conn.execute("create table users (id integer primary key, name text)")
        conn.commit()


def _block_mean_teacher(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEBENCH_DISABLE_PLUGINS", "mean_teacher")
    plugins.reset()


def _hostile_weights(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved CLIPSeg whose weights file is a pickle that would run a shell command."""
    from spinebench.models import vlm

    folder = tmp / "hostile"
    vlm.build_clipseg(None, image_size=32).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Shell()))


class _Shell:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


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
     "data.val_fraction + data.test_fraction must be below 1", None),
    ("device", ["--device", "tpu"], "--device 'tpu' is unknown; use auto, cpu or cuda", None),
    ("store down", ["--tracking-uri", "http://127.0.0.1:{port}"],
     "tracking store http://127.0.0.1:{port} is unreachable", None),
    ("store not writable", ["--tracking-uri", "sqlite:////proc/spinebench/mlflow.db"],
     "tracking store sqlite:////proc/spinebench/mlflow.db cannot be created under /proc", None),
    ("plugin raises in register", [],
     "plugin 'raiser' (spinebench-raiser) raised while registering methods: RuntimeError: "
     "model zoo unreachable", _install_raiser),
    ("resume with nothing to resume", ["--resume"],
     "--resume: no unfinished run 'supervised-l0.5-s0' with this config", None),
    ("resume with a changed config", ["--resume"],
     "was started with another config (train.iterations: 7 -> 6)",
     _unfinished_run_with_other_config),
    # what a hostile-but-realistic user tried (issue 17)
    ("seed beyond 64 bits", ["--seed", str(2**70)],
     "config key 'run.seed' must be at least 0 and at most 4294967295", None),
    ("threads negative", ["--set", "train.threads=-3"],
     "config key 'train.threads' must be at least 0 (0 means every core), got -3", None),
    ("image size too small", ["--set", "data.image_size=2"],
     "config key 'data.image_size' must be at least 16 (the UNet halves a slice four times)",
     None),
    ("clip percentiles reversed", ["--set", "data.clip_percentiles=[99.5,0.5]"],
     "'data.clip_percentiles' must be a pair [low, high] with low <= high", None),
    ("clip percentiles equal", ["--set", "data.clip_percentiles=[50,50]"],
     "needs low < high", None),
    ("clip percentile above 100", ["--set", "data.clip_percentiles=[0.5,120]"],
     "'data.clip_percentiles' must be at least 0 and at most 100", None),
    ("too few synthetic cases", ["--set", "data.cases=1"],
     "'data.cases' must be at least 3 (the split needs a train, a val and a test case)", None),
    ("dropout of one", ["--set", "model.dropout=[0,0,0,0,1]"],
     "'model.dropout' must be at least 0 and below 1", None),
    ("dropout per level", ["--set", "model.dropout=[0,0]"], "need the same length", None),
    ("probability above one", ["--set", "augment.blur_p=1.5"],
     "'augment.blur_p' must be at least 0 and at most 1", None),
    ("config is a folder", ["--config", "{tmp}/empty"], "--config {tmp}/empty is a folder", None),
    ("data dir is a file", ["--data-dir", "{tmp}/list.yaml"],
     "--data-dir {tmp}/list.yaml is a file, not a folder", None),
    ("other method's option", ["--set", "mean_teacher.ema_decay=0.9"],
     "mean_teacher.ema_decay is an option of method 'mean_teacher', and this run's method is "
     "'supervised'", None),
    ("blocked method", ["--method", "mean_teacher"],
     "method 'mean_teacher' belongs to plugin 'mean_teacher', which "
     "SPINEBENCH_DISABLE_PLUGINS=mean_teacher blocks", _block_mean_teacher),
    ("unknown section lists the sections", ["--set", "zzz.qqq=1"],
     "valid sections: augment, data, eval, method, model, run, train", None),
    ("cps4 template", ["--method", "cps4", "--set", "cps4.template=a spine"],
     "cps4.template 'a spine' has no {{name}} placeholder", None),
    ("cps4 small-model key", ["--method", "cps4", "--set", "cps4.small={{layers: 2}}"],
     "cps4.small: unknown small-model keys ['layers']", None),
    ("cps4 patch that does not tile", ["--method", "cps4", "--set", "cps4.small={{patch_size: 5}}"],
     "cps4.small: image size 32 must be a multiple of the patch size 5", None),
    ("cps4 hostile pretrained weights",
     ["--method", "cps4", "--set", "cps4.pretrained={tmp}/hostile"],
     "were refused: they are a pickle holding more than tensors", _hostile_weights),
    # what a careless-but-realistic and mildly hostile user tried (issue 27)
    ("config key given twice", ["--config", "{tmp}/duplicate.yaml"],
     "duplicate.yaml at line 3, column 3: key 'lr' is given twice in one mapping (lines 2 and "
     "3) and YAML would silently keep the last", None),
    ("--set value with a key given twice", ["--set", "cps4.small={{a: 1, a: 2}}"],
     "key 'a' is given twice", None),
    ("config alias bomb", ["--config", "{tmp}/bomb.yaml"],
     "its aliases expand to more than 10000 values (a YAML alias bomb?)", None),
    ("config value too long to quote", ["--config", "{tmp}/long.yaml"],
     "config key 'train.iterations' expects int (default 1000), got [0, 1, 2, 3, 4, 5, 6, 7, ...]",
     None),
    ("--set value too long to quote", ["--set", "train.lr=" + "9" * 20_000 + "x"],
     "config key 'train.lr' expects float (default 0.01), got '9999", None),
    ("config scientific float", ["--config", "{tmp}/scientific.yaml"],
     "YAML 1.1 reads 1e-3 as text (a float needs a dot and a signed exponent): write 1.0e-3",
     None),
    ("--set scientific float", ["--set", "train.lr=5e-4"], "write 5.0e-4", None),
    ("--set scientific integer", ["--set", "train.val_every=1e2"],
     "it is read as text: write 100", None),
    ("--set a section", ["--set", "train=3"],
     "config key 'train' (from --set) is a section, not a key: give one of its keys a value",
     None),
    ("config section given a value", ["--config", "{tmp}/section.yaml"],
     "config key 'train' (from --config file) is a section, not a key", None),
    ("config run.seed against --seed", ["--config", "{tmp}/seed.yaml"],
     "config key 'run.seed' is 3 (from --config file), but --seed is 0 and sets it; pass "
     "--seed 3 instead", None),
    ("--set run.labeled against --labeled", ["--set", "run.labeled=0.2"],
     "config key 'run.labeled' is 0.2 (from --set), but --labeled is 0.5", None),
    ("store in memory", ["--tracking-uri", "sqlite://"],
     "tracking URI 'sqlite://' is an in-memory database: every run would be lost", None),
    ("store in memory, spelt out", ["--tracking-uri", "sqlite:///:memory:"],
     "use a file, e.g. sqlite:///spinebench-runs/mlflow.db (sqlite:///PATH, http(s)://", None),
    ("store of an unsupported scheme", ["--tracking-uri", "ftp://127.0.0.1/runs"],
     "tracking URI scheme 'ftp' (ftp://127.0.0.1/runs) is not supported; use sqlite:///PATH",
     None),
    ("store of another application", ["--tracking-uri", "sqlite:///{tmp}/other-app.db"],
     "other-app.db is another application's database (tables users), not an MLflow store",
     _foreign_sqlite),
    ("store folder under a file", ["--tracking-uri", "{tmp}/list.yaml/mlruns"],
     "tracking store {tmp}/list.yaml/mlruns is under {tmp}/list.yaml, which is a file", None),
    ("runs folder under a file", [],
     "SPINEBENCH_RUNS {tmp}/list.yaml/runs is under {tmp}/list.yaml, which is a file",
     _runs_under_a_file),
    ("cache folder in /proc", [],
     "SPINEBENCH_CACHE /proc/spinebench-cache cannot be written: /proc takes no new files",
     _cache_in_proc),
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
    store_before = (isolated_env / "mlflow.db").exists()
    cache = Path(os.environ["SPINEBENCH_CACHE"])
    cache_before = sorted(p.relative_to(cache) for p in cache.glob("*/*"))
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
    assert len(errors[0]) < 1000, "an error line quotes a short excerpt at most"
    assert "Traceback" not in err
    assert _store_runs(isolated_env) == before  # no run started, none finished
    assert (isolated_env / "mlflow.db").exists() == store_before  # no store created
    assert sorted(p.relative_to(cache) for p in cache.glob("*/*")) == cache_before  # no cache
    assert not (isolated_env / "checkpoints").exists()
    assert not (isolated_env / "locks").exists()


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


OTHER_COMMANDS: list[tuple[str, list[str], str]] = [
    ("predict into the input file",
     ["predict", "--run", "0" * 32, "--input", "{tmp}/scan.nii.gz",
      "--output", "{tmp}/scan.nii.gz"],
     "--output {tmp}/scan.nii.gz is the input file"),
    ("predict into a file", ["predict", "--run", "0" * 32, "--input", "{tmp}/scan.nii.gz",
                             "--output", "{tmp}/list.yaml"], "--output {tmp}/list.yaml is a file"),
    ("synth into a file", ["data", "synth", "--out", "{tmp}/list.yaml"],
     "--out {tmp}/list.yaml is a file"),
    ("leaderboard into a file", ["leaderboard", "--out", "{tmp}/list.yaml"],
     "--out {tmp}/list.yaml is a file"),
    ("sweep with an empty method list", ["sweep", "--methods", "", "--labeled", "0.5"],
     "--methods has an empty entry; write e.g. --methods a,b"),
    ("reproduce a run that is not there", ["reproduce", "0" * 32],
     "no tracking store at"),
    # issue 27: every output path is checked before work starts
    ("synth under a file", ["data", "synth", "--out", "{tmp}/list.yaml/phantom"],
     "--out {tmp}/list.yaml/phantom is under {tmp}/list.yaml, which is a file"),
    ("synth into /proc", ["data", "synth", "--out", "/proc/spinebench-phantom"],
     "--out /proc/spinebench-phantom cannot be written: /proc takes no new files"),
    ("synth with too few cases", ["data", "synth", "--out", "{tmp}/new", "--cases", "2"],
     "--cases 2 is below 3"),
    ("synth with a negative seed", ["data", "synth", "--out", "{tmp}/new", "--seed", "-1"],
     "--seed -1 is outside 0..4294967295"),
    ("synth with a seed beyond 32 bits",
     ["data", "synth", "--out", "{tmp}/new", "--seed", str(2**32)],
     f"--seed {2**32} is outside 0..4294967295"),
    ("leaderboard under a file", ["leaderboard", "--out", "{tmp}/list.yaml/board"],
     "--out {tmp}/list.yaml/board is under {tmp}/list.yaml, which is a file"),
    ("leaderboard into /proc", ["leaderboard", "--out", "/proc/spinebench-board"],
     "--out /proc/spinebench-board cannot be written"),
    ("predict under a file", ["predict", "--run", "0" * 32, "--input", "{tmp}/scan.nii.gz",
                              "--output", "{tmp}/list.yaml/labels"],
     "--output {tmp}/list.yaml/labels is under {tmp}/list.yaml, which is a file"),
    ("predict into /proc", ["predict", "--run", "0" * 32, "--input", "{tmp}/scan.nii.gz",
                            "--output", "/proc/spinebench-labels"],
     "--output /proc/spinebench-labels cannot be written"),
    ("predict from a named pipe", ["predict", "--run", "0" * 32, "--input", "{tmp}/pipe.nii.gz",
                                   "--output", "{tmp}/labels"],
     "--input {tmp}/pipe.nii.gz is a named pipe (FIFO)"),
    ("new-plugin into a file", ["new-plugin", "entmin", "--dir", "{tmp}/list.yaml"],
     "--dir {tmp}/list.yaml is a file, not a folder"),
    ("new-plugin under a file", ["new-plugin", "entmin", "--dir", "{tmp}/list.yaml/entmin"],
     "--dir {tmp}/list.yaml/entmin is under {tmp}/list.yaml, which is a file"),
    ("new-plugin into /proc", ["new-plugin", "entmin", "--dir", "/proc/spinebench-entmin"],
     "--dir /proc/spinebench-entmin cannot be written"),
    # issue 27: only our stores
    ("leaderboard from an in-memory store", ["leaderboard", "--tracking-uri", "sqlite://"],
     "tracking URI 'sqlite://' is an in-memory database"),
    ("reproduce from an in-memory store", ["reproduce", "0" * 32, "--tracking-uri", "sqlite://"],
     "tracking URI 'sqlite://' is an in-memory database"),
    ("leaderboard from an unsupported scheme", ["leaderboard", "--tracking-uri", "s3://bucket/x"],
     "tracking URI scheme 's3' (s3://bucket/x) is not supported"),
    ("leaderboard from an empty file", ["leaderboard", "--tracking-uri", "sqlite:///{tmp}/empty.db"],
     "no tracking store at sqlite:///{tmp}/empty.db"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in OTHER_COMMANDS],
                         ids=[c[0] for c in OTHER_COMMANDS])  # fmt: skip
def test_other_commands_refuse_bad_paths_in_one_line(
    args: list[str], message: str, tmp_inputs: Path, isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (tmp_inputs / "scan.nii.gz").write_bytes(b"\x1f\x8b")
    (tmp_inputs / "empty.db").write_bytes(b"")
    os.mkfifo(tmp_inputs / "pipe.nii.gz")
    before = (tmp_inputs / "list.yaml").read_bytes()
    tree = _tree(isolated_env.parent)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(sys, "argv", ["spinebench", *(a.format(tmp=tmp_inputs) for a in args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.format(tmp=tmp_inputs) in lines[0], err
    assert (tmp_inputs / "list.yaml").read_bytes() == before
    assert (tmp_inputs / "empty.db").read_bytes() == b""  # no store made in an empty file
    assert not (isolated_env / "mlflow.db").exists()
    assert _tree(isolated_env.parent) == tree  # nothing created: no folder, store or lock


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


WORK_FOLDERS = {
    "runs folder under a file": (
        "SPINEBENCH_RUNS", "{tmp}/list.yaml/runs", "is under {tmp}/list.yaml, which is a file"
    ),
    "cache folder in /proc": (
        "SPINEBENCH_CACHE", "/proc/spinebench-cache", "cannot be written: /proc takes no new"
    ),
    "runs folder is a file": ("SPINEBENCH_RUNS", "{tmp}/list.yaml", "is a file, not a folder"),
}  # fmt: skip
TRAINING_COMMANDS = {
    "run": BASE,
    "sweep": ["sweep", "--methods", "supervised", "--labeled", "0.5", *TINY],
    "reproduce": ["reproduce", "0" * 32],
}


@pytest.mark.parametrize("folder", list(WORK_FOLDERS))
@pytest.mark.parametrize("command", list(TRAINING_COMMANDS))
def test_training_commands_refuse_an_unwritable_work_folder_first(
    command: str, folder: str, tmp_inputs: Path, isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    variable, value, message = (v.format(tmp=tmp_inputs) for v in WORK_FOLDERS[folder])
    monkeypatch.setenv(variable, value)
    tree = _tree(isolated_env.parent)
    monkeypatch.setattr(sys, "argv", ["spinebench", *TRAINING_COMMANDS[command]])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.strip().splitlines() == [
        f"error: {variable} {value} {message}"
        + err.strip().split(message, 1)[-1]  # the rest: the fix
    ], err
    assert f"point {variable} at a writable folder" in err
    assert _tree(isolated_env.parent) == tree


def test_unknown_names_in_the_disable_variable_are_warned_of(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPINEBENCH_DISABLE_PLUGINS", "mean_teacher,meanteacher")
    plugins.reset()
    with pytest.warns(UserWarning, match="names meanteacher, which no installed plugin is called"):
        methods = plugins.methods()
    assert "mean_teacher" not in methods and "supervised" in methods
    plugins.reset()
