"""``spinebench list``: registries and plugins as rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from spinebench import plugins
from spinebench.errors import SpinebenchError


def show(what: str) -> None:
    console = Console()
    if what == "plugins":
        table = Table("plugin", "distribution", "version", "hooks")
        for info in plugins.list_plugins():
            table.add_row(
                info.name,
                info.distribution,
                info.version,
                ", ".join(h.removeprefix("spinebench_") for h in info.hooks),
            )
        for name, error in plugins.failed_plugins().items():
            table.add_row(name, "[red]failed to load[/]", "", error)
        console.print(table)
        return
    registries = {
        "methods": plugins.methods,
        "datasets": plugins.datasets,
        "metrics": plugins.metrics,
    }
    if what not in registries:
        raise SpinebenchError(f"cannot list {what!r}; use methods, datasets, metrics or plugins")
    registry = registries[what]()
    if what == "methods":
        table = Table("method", "what it is", "plugin")
        for name, cls in sorted(registry.items()):
            owner = registry.owner(name)
            table.add_row(name, getattr(cls, "description", "") or "-", owner.requirement)
        console.print(table)
        return
    table = Table(what[:-1], "defined in")
    for name, obj in sorted(registry.items()):
        table.add_row(name, getattr(obj, "__module__", "?"))
    console.print(table)
