"""``spinebench new-plugin``: write a pip-installable method plugin that passes the kit.

The files come from ``spinebench/templates/plugin/*.tmpl`` (``string.Template``: ``$name``
placeholders, so the Python in them needs no brace escaping). The scaffold imports only the
public API, ``spinebench.api``, so what it shows a plugin author is exactly what a plugin may
rely on.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

import typer

from spinebench import __version__, plugins
from spinebench.atomic import atomic_folder
from spinebench.errors import SpinebenchError
from spinebench.paths import check_writable

NAME = re.compile(r"^[a-z][a-z0-9_]*$")

# template file -> path in the new project (formatted with the names below)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/{package}/__init__.py",
    "plugin.py.tmpl": "src/{package}/plugin.py",
    "method.py.tmpl": "src/{package}/method.py",
    "test_method.py.tmpl": "tests/test_{name}.py",
}


@dataclass(frozen=True)
class PluginNames:
    """Every name a plugin called ``name`` uses, derived one way."""

    name: str  # the method name users pass to --method, and the entry-point name
    package: str  # the import package
    distribution: str  # the pip name
    class_name: str
    spinebench_version: str  # lowest spinebench the plugin declares it needs

    @classmethod
    def of(cls, name: str) -> PluginNames:
        if not NAME.match(name):
            raise SpinebenchError(
                f"plugin name {name!r} is invalid; use lowercase letters, "
                "digits and '_', starting with a letter (e.g. entmin)"
            )
        release = ".".join(__version__.split("+")[0].split(".")[:2])
        return cls(
            name=name,
            package=f"spinebench_{name}",
            distribution=f"spinebench-{name.replace('_', '-')}",
            class_name="".join(part.title() for part in name.split("_")),
            spinebench_version=release,
        )


def scaffold(name: str, directory: Path | None = None) -> tuple[PluginNames, list[Path]]:
    """Write the plugin project into ``directory`` (default ``./spinebench-<name>``)."""
    names = PluginNames.of(name)
    taken = plugins.methods().get(name)
    if taken is not None:
        raise SpinebenchError(
            f"a method named {name!r} already exists ({taken.__module__}); choose another name"
        )
    target = directory if directory is not None else Path(names.distribution)
    check_writable(target, "--dir", "choose another --dir")
    if target.exists() and any(target.iterdir()):
        raise SpinebenchError(
            f"{target} already exists and is not an empty folder; choose another --dir"
        )
    templates = files("spinebench").joinpath("templates", "plugin")
    values = asdict(names)
    with atomic_folder(target) as folder:  # all files or none
        for template, destination in FILES.items():
            path = folder / destination.format(**values)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(templates.joinpath(template).read_text()).substitute(values))
    return names, [target / destination.format(**values) for destination in FILES.values()]


def create_and_report(name: str, directory: Path | None) -> None:
    names, written = scaffold(name, directory)
    root = written[0].parent
    typer.echo(f"wrote {names.distribution} to {root}:")
    for path in written:
        typer.echo(f"  {path.relative_to(root)}")
    typer.echo(
        f"next:\n  pip install -e {root}\n"
        f"  spinebench run --method {names.name} --labeled 0.05\n"
        f"  pytest {root / 'tests'}"
    )
