"""Hook implementations of the bcp plugin."""

from __future__ import annotations

from spinebench.api import Register, hookimpl

from .method import BCP


@hookimpl
def spinebench_register_methods(register: Register) -> None:
    register("bcp", BCP)
