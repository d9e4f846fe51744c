"""Hook implementations of the mean_teacher plugin."""

from __future__ import annotations

from collections.abc import Callable

from spinebench_mean_teacher.method import MeanTeacher

from spinebench.hookspecs import hookimpl


@hookimpl
def spinebench_register_methods(register: Callable[[str, type], None]) -> None:
    register("mean_teacher", MeanTeacher)
