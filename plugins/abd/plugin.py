"""Hook implementations of the abd plugin."""

from __future__ import annotations

from spinebench.api import Register, hookimpl

from .method import ABD


@hookimpl
def spinebench_register_methods(register: Register) -> None:
    register("abd", ABD)
