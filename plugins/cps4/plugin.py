"""Hook implementations of the cps4 plugin."""

from __future__ import annotations

from spinebench.api import Register, hookimpl

from .method import CPS4


@hookimpl
def spinebench_register_methods(register: Register) -> None:
    register("cps4", CPS4)
