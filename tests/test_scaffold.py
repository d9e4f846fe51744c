"""`spinebench new-plugin` writes a plugin that installs, is found through its entry point,
trains in a real run, and passes its own conformance tests."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import TINY
from mlflow.tracking import MlflowClient

from spinebench.commands.new_plugin import scaffold
from spinebench.errors import SpinebenchError

BIN = Path(sys.executable).parent


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        timeout=600,
    )


def test_scaffold_writes_a_lint_clean_package(tmp_path: Path) -> None:
    names, written = scaffold("entmin", tmp_path / "plugin")
    root = tmp_path / "plugin"
    assert {p.relative_to(root).as_posix() for p in written} == {
        "pyproject.toml",
        "README.md",
        "src/spinebench_entmin/__init__.py",
        "src/spinebench_entmin/plugin.py",
        "src/spinebench_entmin/method.py",
        "tests/test_entmin.py",
    }
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == names.distribution == "spinebench-entmin"
    assert project["project"]["entry-points"]["spinebench"] == {
        "entmin": "spinebench_entmin.plugin"
    }
    method = (root / "src/spinebench_entmin/method.py").read_text()
    assert "class Entmin(Method)" in method and "$" not in method
    lint = _run(BIN / "ruff", "check", "--no-cache", root, cwd=root)
    assert lint.returncode == 0, lint.stdout
    fmt = _run(BIN / "ruff", "format", "--check", "--no-cache", root, cwd=root)
    assert fmt.returncode == 0, fmt.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Bad-Name", "plugin name 'Bad-Name' is invalid"),
        (
            "supervised",
            "a method named 'supervised' already exists (spinebench.builtin.supervised)",
        ),
    ],
)
def test_scaffold_refuses_bad_names(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(SpinebenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scaffold(name, tmp_path / "plugin")
    assert not (tmp_path / "plugin").exists()


def test_scaffold_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "notes.txt").write_text("mine")
    with pytest.raises(SpinebenchError, match="already exists and is not an empty folder"):
        scaffold("entmin", tmp_path / "plugin")


def test_cli_new_plugin_then_install_discover_run_and_test(
    tmp_path: Path, isolated_env: Path
) -> None:
    """The whole journey of a plugin author, in fresh processes, against the real venv."""
    name = f"scaffold{os.getpid()}"  # unique: concurrent test sessions share the venv
    root = tmp_path / "plugin"
    made = _run(BIN / "spinebench", "new-plugin", name, "--dir", root, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert f"pip install -e {root}" in made.stdout
    pip = [sys.executable, "-m", "pip"]
    installed = _run(
        *pip,
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-q",
        "-e",
        root,
        cwd=tmp_path,
    )
    try:
        assert installed.returncode == 0, installed.stderr
        importlib.invalidate_caches()
        assert name in {ep.name for ep in entry_points(group="spinebench")}
        listed = _run(BIN / "spinebench", "list", "methods", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if f" {name} " in line)
        assert f"spinebench-{name}==0.1.0" in row and "template" in row  # its description
        run = _run(
            BIN / "spinebench",
            "run",
            "--method",
            name,
            "--labeled",
            "0.5",
            *TINY,
            "--set",
            "train.iterations=4",
            "--device",
            "cpu",
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr
        assert "test/dice" in run.stdout
        client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
        (tracked,) = client.search_runs(
            [client.get_experiment_by_name("spinebench/synthetic").experiment_id]
        )
        assert tracked.info.status == "FINISHED"
        assert tracked.data.tags["spinebench.plugin"] == f"spinebench-{name}==0.1.0"
        assert "train/entropy" in tracked.data.metrics
        own_tests = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=root)
        assert own_tests.returncode == 0, own_tests.stdout
        assert "2 passed" in own_tests.stdout
    finally:
        removed = _run(*pip, "uninstall", "-y", "-q", f"spinebench-{name}", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    importlib.invalidate_caches()
    assert name not in {ep.name for ep in entry_points(group="spinebench")}
