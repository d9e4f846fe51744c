"""Hook implementations of the clipseg plugin."""

from __future__ import annotations

from spinebench.api import Register, hookimpl

from .method import ClipSeg


@hookimpl
def spinebench_register_methods(register: Register) -> None:
    register("clipseg", ClipSeg)
