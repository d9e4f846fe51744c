"""The whole plugin contract of spinebench, one hook per function.

A plugin is a module (or object) with functions decorated by ``spinebench.hookimpl`` whose names
match the specifications below. Built-in plugins (the ``supervised`` method, the ``synthetic``
dataset, the Dice/HD95/ASSD metrics) are ordinary plugins registered the same way; third-party
ones are found through the ``spinebench`` entry-point group of their distribution::

    [project.entry-points.spinebench]
    my_method = "my_package.plugin"

Registration hooks receive a ``register`` callable (tox's and llm's registry-object pattern) so a
plugin can register any number of things and spinebench can record which plugin registered what.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pluggy

from spinebench.runinfo import RunInfo

if TYPE_CHECKING:
    import typer

hookspec = pluggy.HookspecMarker("spinebench")
hookimpl = pluggy.HookimplMarker("spinebench")

MetricFn = Callable[[np.ndarray, np.ndarray, Sequence[int], Sequence[float]], dict[int, float]]
"""``metric_fn(pred, truth, class_ids, spacing) -> {class id: value}``, see
:func:`spinebench_register_metrics`."""

Register = Callable[[str, Any], None]
"""The ``register(name, obj)`` callable every registration hook receives."""


@hookspec
def spinebench_register_methods(register: Register) -> None:
    """Register segmentation methods.

    :param register: call ``register(name, MethodClass)`` once per method. ``MethodClass``
        subclasses :class:`spinebench.method.Method`; ``name`` is what users pass to
        ``--method`` (lowercase, ``[a-z0-9_]+``, unique across all plugins).

    Called once, when the method registry is first needed (``run``, ``sweep``, ``list``).
    """


@hookspec
def spinebench_register_datasets(register: Register) -> None:
    """Register dataset readers.

    :param register: call ``register(name, DatasetClass)``; ``DatasetClass`` subclasses
        :class:`spinebench.data.dataset.Dataset` and is what users pass to ``--dataset``.

    Called once, when the dataset registry is first needed.
    """


@hookspec
def spinebench_register_metrics(register: Register) -> None:
    """Register evaluation metrics.

    :param register: call ``register(name, metric_fn)`` with
        ``metric_fn(pred, truth, class_ids, spacing) -> dict[int, float]``: integer label
        volumes of equal shape, the foreground class ids to score, voxel spacing in mm.
        Return NaN for a class that is absent from both volumes. Every metric is logged as
        ``test/<name>`` (mean over cases of the per-case foreground mean) and
        ``test/<name>/<class name>``.

    Called once, when evaluation first needs the metric registry.
    """


@hookspec
def spinebench_add_commands(app: typer.Typer) -> None:
    """Add Typer sub-commands to the ``spinebench`` command line.

    :param app: the root Typer application; call ``app.command()(fn)`` or ``app.add_typer``.

    Called once while the CLI is built. Keep imports inside the command functions so
    ``spinebench --help`` stays fast.
    """


@hookspec
def spinebench_run_started(run: RunInfo) -> None:
    """Observe the start of a tracked run.

    :param run: method, dataset, seed, labeled fraction, resolved config and tracking run id.

    Called after the run is created in the tracking store and before the first stage trains.
    Observers must not change the run; an exception here fails the run.
    """


@hookspec
def spinebench_run_finished(run: RunInfo, results: dict[str, float]) -> None:
    """Observe the end of a successful run.

    :param run: as in :func:`spinebench_run_started`.
    :param results: the final test metrics, by their tracked name (``test/dice`` ...).

    Called after test evaluation is logged and before the run is marked FINISHED.
    """
