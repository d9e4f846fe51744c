"""Hook implementations of the unimatch plugin."""

from __future__ import annotations

from spinebench.api import Register, hookimpl

from .method import UniMatch


@hookimpl
def spinebench_register_methods(register: Register) -> None:
    register("unimatch", UniMatch)
