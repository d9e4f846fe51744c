"""Plugin management through real entry points: a tiny distribution (a ``*.dist-info`` folder
with ``entry_points.txt``, as pip leaves it) is put on the path, in-process or in a fresh
process via PYTHONPATH, and found by ``importlib.metadata`` exactly as an installed one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from spinebench import plugins
from spinebench.cli import main
from spinebench.errors import PluginError

ECHO = """
from spinebench.builtin.supervised import Supervised
from spinebench.hookspecs import hookimpl


class Echo(Supervised):
    pass


@hookimpl
def spinebench_register_methods(register):
    register("echo", Echo)


@hookimpl
def spinebench_run_started(run):
    pass
"""
BROKEN = "import spinebench_no_such_dependency\n"
DUPLICATE = """
from spinebench.builtin.supervised import Supervised
from spinebench.hookspecs import hookimpl


@hookimpl
def spinebench_register_methods(register):
    register("supervised", Supervised)
"""
RAISER = """
from spinebench.hookspecs import hookimpl


@hookimpl
def spinebench_register_methods(register):
    raise RuntimeError("model zoo unreachable")
"""


def distribution(site: Path, dist: str, version: str, plugin: str, source: str) -> str:
    """Write module ``sbtest_<plugin>`` and the dist-info that declares it as a spinebench
    entry point; returns the module name."""
    module = f"sbtest_{plugin}"
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[spinebench]\n{plugin} = {module}\n")
    return module


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for test distributions; the plugin manager reloads around the test."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets it
    plugins.reset()
    yield folder
    plugins.reset()
    for name in [m for m in sys.modules if m.startswith("sbtest_")]:
        del sys.modules[name]


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["spinebench", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_entry_point_plugin_is_listed_with_distribution_version_and_hooks(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    distribution(site, "spinebench-echo", "0.3.1", "echo", ECHO)
    (info,) = [p for p in plugins.list_plugins() if p.name == "echo"]
    assert (info.distribution, info.version) == ("spinebench-echo", "0.3.1")
    assert info.hooks == ("spinebench_register_methods", "spinebench_run_started")
    assert plugins.methods()["echo"].__module__ == "sbtest_echo"
    code, out, _ = cli(monkeypatch, capsys, "list", "plugins")
    assert code == 0
    (row,) = [line for line in out.splitlines() if "spinebench-echo" in line]
    assert "0.3.1" in row and "register_methods, run_started" in row


def test_disable_env_blocks_entry_point_and_default_plugins(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distribution(site, "spinebench-echo", "0.3.1", "echo", ECHO)
    monkeypatch.setenv(plugins.DISABLE_ENV, "echo, supervised")
    names = {p.name for p in plugins.list_plugins()}
    assert "echo" not in names and "supervised" not in names
    assert "echo" not in plugins.methods() and "supervised" not in plugins.methods()
    assert "sbtest_echo" not in sys.modules  # blocked plugins are never imported


def test_plugin_that_fails_to_import_warns_and_listing_still_works(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    distribution(site, "spinebench-broken", "1.0", "broken", BROKEN)
    distribution(site, "spinebench-echo", "0.3.1", "echo", ECHO)
    with pytest.warns(
        UserWarning,
        match=r"plugin 'broken' \(spinebench-broken 1.0\) failed to "
        r"load and is skipped: ModuleNotFoundError",
    ):
        plugins.get_plugin_manager()
    assert "ModuleNotFoundError" in plugins.failed_plugins()["broken"]
    assert "echo" in plugins.methods()
    code, out, _ = cli(monkeypatch, capsys, "list", "plugins")
    assert code == 0
    assert any("broken" in line and "failed to load" in line for line in out.splitlines())
    assert "spinebench-echo" in out


def test_taken_name_errors_naming_both_distributions(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    distribution(site, "spinebench-dup", "2.0", "dup", DUPLICATE)
    with pytest.raises(PluginError) as info:
        plugins.methods()
    message = str(info.value)
    assert "method 'supervised' is registered by both" in message
    assert "spinebench (plugin supervised)" in message
    assert "spinebench-dup (plugin dup)" in message
    assert f"{plugins.DISABLE_ENV}=" in message
    plugins.reset()
    code, _, err = cli(monkeypatch, capsys, "list", "methods")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: method 'supervised'")


def test_plugin_raising_in_register_fails_with_one_line_and_exit_2_in_a_fresh_process(
    site: Path,
) -> None:
    distribution(site, "spinebench-raiser", "0.1", "raiser", RAISER)
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench", "list", "methods"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("warning:")]
    assert errors == [
        "error: plugin 'raiser' (spinebench-raiser) raised while registering methods: "
        f"RuntimeError: model zoo unreachable; fix or block it with {plugins.DISABLE_ENV}=raiser"
    ]


def test_fresh_process_lists_a_plugin_found_through_pythonpath(site: Path) -> None:
    distribution(site, "spinebench-echo", "0.3.1", "echo", ECHO)
    distribution(site, "spinebench-broken", "1.0", "broken", BROKEN)
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench", "list", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "spinebench-echo" in proc.stdout and "failed to load" in proc.stdout
    (warning,) = [ln for ln in proc.stderr.splitlines() if "'broken'" in ln]
    assert warning.startswith("warning: spinebench plugin 'broken' (spinebench-broken 1.0) failed")
