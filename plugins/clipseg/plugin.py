"""Hook implementations of the clipseg plugin."""

from __future__ import annotations

from collections.abc import Callable

from spinebench_clipseg.method import ClipSeg

from spinebench.hookspecs import hookimpl


@hookimpl
def spinebench_register_methods(register: Callable[[str, type], None]) -> None:
    register("clipseg", ClipSeg)
