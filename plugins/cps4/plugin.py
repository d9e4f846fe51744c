"""Hook implementations of the cps4 plugin."""

from __future__ import annotations

from collections.abc import Callable

from spinebench_cps4.method import CPS4

from spinebench.hookspecs import hookimpl


@hookimpl
def spinebench_register_methods(register: Callable[[str, type], None]) -> None:
    register("cps4", CPS4)
