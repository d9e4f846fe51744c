"""Every registered method passes the conformance kit, so each method is covered as it lands."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from spinebench import plugins
from spinebench.testing import RULES, Report


@pytest.mark.parametrize("name", sorted(plugins.methods()))
def test_method_conforms(name: str, spinebench_conformance: Callable[..., Report]) -> None:
    report = spinebench_conformance(plugins.methods()[name])
    assert report.rules == tuple(RULES)
    assert report.seconds < 30, f"the kit took {report.seconds:.1f} s for {name}; keep it quick"
