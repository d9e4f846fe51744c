"""Conformance kit: check that a method keeps every promise the engine relies on.

A plugin's own test suite calls :func:`check_method` (or the ``spinebench_conformance``
fixture that :mod:`spinebench.testing.pytest_plugin` provides through the ``pytest11`` entry
point). The kit runs the method through the engine's own pieces (config resolution, the
preprocessing cache, the training streams and the stage runner) on a tiny in-memory phantom
inside a sandbox, and checks each rule from outside. A broken promise fails here, with the
rule's name, instead of surfacing hours into a run as a crash, a wrong resume or an
irreproducible number.

- :mod:`~spinebench.testing.rules`: the rules and their checks;
- :mod:`~spinebench.testing.sandbox`: no file writes, environment or tracking side effects;
- :mod:`~spinebench.testing.harness`: the tiny pipeline;
- :mod:`~spinebench.testing.kit`: :func:`check_method`.
"""

from spinebench.testing.harness import Harness, PhantomDataset, make_harness
from spinebench.testing.kit import Report, check_method
from spinebench.testing.rules import RULES, ConformanceError

__all__ = [
    "RULES",
    "ConformanceError",
    "Harness",
    "PhantomDataset",
    "Report",
    "check_method",
    "make_harness",
]
