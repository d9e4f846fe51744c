"""Hook implementations of the mean_teacher plugin."""

from __future__ import annotations

from spinebench.api import Register, hookimpl

from .method import MeanTeacher


@hookimpl
def spinebench_register_methods(register: Register) -> None:
    register("mean_teacher", MeanTeacher)
