"""Which runs are a method "at its defaults" and what every other setting is called.

A run is at its method's defaults when its config differs from the config that method resolves
to today (for the run's profile and dataset) only in what may differ between the runs of one
row (seed, fraction, thread count, data location) and in keys that every run on its board
shares with one value (a grid's common ``set:`` list, e.g. a smaller image size for a quick
study). A run lacking a key that today's defaults have (an option added later) differs, unless
the method declares the option in ``Method.options_added`` with the value earlier runs behaved
under; a run made under an older default differs. Method options (``method.*``) are never excused as
shared: they are what distinguishes a method's settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from spinebench import plugins
from spinebench.config import params_of, resolve
from spinebench.errors import SpinebenchError
from spinebench.leaderboard.records import PER_RUN_PARAMS, RunRecord

#: How a key missing from one side of a comparison is shown.
UNSET = "(unset)"
#: Differences shown in a label before it is cut short (all of them are in the CSV).
SHOWN = 3


@cache
def default_params(method: str, profile: str, dataset: str) -> dict[str, str] | None:
    """The params a run of ``method`` has today with no overrides; None when the method's
    plugin is not installed or the profile is unknown (its defaults cannot be known here)."""
    cls = plugins.methods().get(method)
    if cls is None:
        return None
    try:
        config = resolve(
            method=method,
            method_options=cls.options,
            method_defaults=cls.default_config(profile),
            profile=profile,
            run={"dataset": dataset},
        )
    except SpinebenchError:
        return None
    return {k: v for k, v in params_of(config).items() if k not in PER_RUN_PARAMS}


@cache
def added_options(method: str) -> dict[str, str]:
    """``method.<name>`` params a record made before each option existed is read with."""
    cls = plugins.methods().get(method)
    added = cls.options_added if cls is not None else {}
    return {f"method.{k}": str(v) for k, v in added.items()}


def base_method(method: str, setting: dict[str, str]) -> str | None:
    """The other method whose procedure this setting runs (``Method.base_option``), if any."""
    cls = plugins.methods().get(method)
    option = cls.base_option if cls is not None else None
    base = setting.get(f"method.{option}") if option else None
    return base if base is not None and base != method else None


def completed(setting: dict[str, str], method: str) -> dict[str, str]:
    """A record's setting with the options added since it was made, at their old behaviour."""
    return {**added_options(method), **setting}


def shared_params(runs: Sequence[RunRecord]) -> dict[str, str]:
    """Keys (outside ``method.*`` and ``run.*``) every run of a board has, with one value."""
    if not runs:
        return {}
    first = runs[0].setting
    return {
        k: v
        for k, v in first.items()
        if not k.startswith(("method.", "run.")) and all(r.setting.get(k) == v for r in runs)
    }


def differences(
    setting: dict[str, str], defaults: dict[str, str], shared: dict[str, str]
) -> dict[str, str]:
    """Keys of a setting that differ from today's defaults and are not excused as shared, with
    the setting's value (:data:`UNSET` for a key the setting lacks)."""
    keys = (setting.keys() | defaults.keys()) - shared.keys()
    return {k: setting.get(k, UNSET) for k in sorted(keys) if setting.get(k) != defaults.get(k)}


def describe(diffs: dict[str, str], limit: int = SHOWN) -> str:
    """``k=v, k2=v2, ...`` for a label (the first ``limit`` differences)."""
    items = [f"{k}={v}" for k, v in diffs.items()]
    return ", ".join(items[:limit]) + (", …" if len(items) > limit else "")
