"""Hook implementations of the cps plugin."""

from __future__ import annotations

from spinebench.api import Register, hookimpl

from .method import CPS


@hookimpl
def spinebench_register_methods(register: Register) -> None:
    register("cps", CPS)
