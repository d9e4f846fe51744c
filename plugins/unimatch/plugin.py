"""Hook implementations of the unimatch plugin."""

from __future__ import annotations

from collections.abc import Callable

from spinebench_unimatch.method import UniMatch

from spinebench.hookspecs import hookimpl


@hookimpl
def spinebench_register_methods(register: Callable[[str, type], None]) -> None:
    register("unimatch", UniMatch)
