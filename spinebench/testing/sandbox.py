"""The kit's sandbox: a method under test may write no file and touch no shared state.

Writes are caught three ways, because no single one sees them all:

- a Python audit hook (PEP 578) refuses every write-mode ``open``, ``mkdir``, rename, removal
  or link made through Python (builtins, ``os``, ``shutil``, ``numpy.save``, ``tempfile``),
  wherever the path points;
- ``torch.save`` to a path writes through a C++ file writer that Python's hooks never see, so
  the writer refuses paths (writing to a buffer stays allowed) while the sandbox is active;
- any other C extension writing a relative path (SimpleITK, OpenCV) lands in the sandbox's
  own working directory, whose contents are compared before and after.

Afterwards the environment variables, the imported modules (MLflow, the engine's tracking and
checkpoint modules) and MLflow's active run are compared too. The audit hook is installed once
per process (hooks cannot be removed) and does nothing while no sandbox is active.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import torch

from spinebench.method import Method
from spinebench.testing.rules import ConformanceError

FORBIDDEN_MODULES = ("mlflow", "spinebench.engine.tracking", "spinebench.engine.checkpoint")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = {
    "os.mkdir": "created the directory",
    "os.rename": "renamed",
    "os.remove": "removed",
    "os.rmdir": "removed the directory",
    "os.symlink": "linked",
    "os.link": "linked",
    "os.truncate": "truncated",
    "shutil.rmtree": "removed the tree",
}
_BYTECODE = "__pycache__"
_FIX = (
    "a method never writes files (the engine owns every output: checkpoints, artifacts, "
    "tracking); return numbers as diagnostics instead"
)

_active: list[_Sandbox] = []
_hook_installed = False


class _Sandbox:
    def __init__(self, method: str) -> None:
        self.method = method
        self.violations: list[str] = []

    def refuse(self, what: str) -> ConformanceError:
        self.violations.append(what)
        return ConformanceError("side_effects", self.method, f"{what}; {_FIX}")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _active or (event not in _WRITE_EVENTS and event != "open"):
        return
    if (
        args
        and isinstance(args[0], str | bytes | os.PathLike)
        and _BYTECODE in os.fsdecode(args[0])
    ):
        return  # Python caching a module it imports for the first time
    sandbox = _active[-1]
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int) or not isinstance(flags, int) or not flags & _WRITE_FLAGS:
            return
        how = f"with mode {mode!r}" if mode else "for writing"
        raise sandbox.refuse(f"it opened {os.fsdecode(path)!r} {how}")
    if event in _WRITE_EVENTS:
        raise sandbox.refuse(f"it {_WRITE_EVENTS[event]} {args[0]!r}")


def _guarded_torch_writer(real: Any, sandbox: _Sandbox) -> Any:
    def writer(target: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(target, str | os.PathLike):
            raise sandbox.refuse(f"it wrote {os.fsdecode(target)!r} with torch.save")
        return real(target, *args, **kwargs)

    return writer


@contextmanager
def no_side_effects(method: str) -> Iterator[None]:
    """Refuse file writes while the method runs; afterwards compare environment and modules."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    sandbox = _Sandbox(method)
    env_before = dict(os.environ)
    modules_before = set(sys.modules)
    mlflow_run_before = _mlflow_active_run()
    cwd, tempdir = os.getcwd(), tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="spinebench-kit-sandbox-") as scratch:
        os.chdir(scratch)
        tempfile.tempdir = scratch
        writer = _guarded_torch_writer(torch._C.PyTorchFileWriter, sandbox)
        _active.append(sandbox)
        try:
            with mock.patch.object(torch._C, "PyTorchFileWriter", writer):
                yield
        finally:
            _active.remove(sandbox)
            tempfile.tempdir = tempdir
            os.chdir(cwd)
        left = sorted(p.name for p in Path(scratch).iterdir())
    if sandbox.violations:  # a method that swallowed the refusal still fails
        raise sandbox.refuse(sandbox.violations[0])
    if left:
        raise sandbox.refuse(f"it wrote {', '.join(left[:5])} into its working directory")
    changed = sorted(
        k for k in env_before.keys() | os.environ.keys() if env_before.get(k) != os.environ.get(k)
    )
    if changed:
        raise ConformanceError(
            "side_effects", method, f"environment variables changed: {', '.join(changed)}"
        )
    imported = sorted(m for m in set(sys.modules) - modules_before if _is_forbidden(m))
    if imported:
        raise ConformanceError(
            "side_effects", method, f"it imported {', '.join(imported)} while it ran"
        )
    if mlflow_run_before is None and _mlflow_active_run() is not None:
        raise ConformanceError("side_effects", method, "it started an MLflow run")


def forbidden_references(method_cls: type[Method]) -> list[str]:
    """Forbidden modules the method's own code holds a reference to (``import mlflow`` ...)."""
    top = method_cls.__module__.split(".")[0]
    if top == "spinebench":  # a built-in method: its module only, not the whole core
        names = [c.__module__ for c in method_cls.__mro__ if c.__module__.startswith("spinebench.")]
    else:
        names = [n for n in sys.modules if n == top or n.startswith(top + ".")]
    found = set()
    for module_name in names:
        module = sys.modules.get(module_name)
        for attr, value in vars(module).items() if module else ():
            origin = (
                value.__name__
                if isinstance(value, ModuleType)
                else getattr(value, "__module__", None)
            )
            if isinstance(origin, str) and _is_forbidden(origin):
                found.add(f"{module_name}.{attr} -> {origin}")
    return sorted(found)


def _is_forbidden(module_name: str) -> bool:
    return any(module_name == f or module_name.startswith(f + ".") for f in FORBIDDEN_MODULES)


def _mlflow_active_run() -> Any:
    mlflow = sys.modules.get("mlflow")
    return mlflow.active_run() if mlflow is not None else None
