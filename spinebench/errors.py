"""User-facing errors: one line that names the problem and the fix, never a traceback.

A message quotes what the user gave through :func:`shown` or :func:`clipped`, so the line stays
short whatever was given (a pasted file, a list of 100 000 numbers).
"""

from __future__ import annotations

import reprlib
from typing import Any


class SpinebenchError(Exception):
    """A mistake the user can fix (bad option, bad file, missing data). The CLI prints it alone."""


class ConfigError(SpinebenchError):
    """An invalid configuration key, value or file."""


class DataError(SpinebenchError):
    """A dataset that cannot be read as its layout promises."""


class PluginError(SpinebenchError):
    """A plugin that failed to load or registered something invalid."""


class NonFiniteLossError(SpinebenchError):
    """Training produced NaN/Inf; the message names stage, iteration and loss term."""


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8
_SHORT.maxlevel = 3


def shown(value: Any, limit: int = 100) -> str:
    """``repr(value)`` cut to about ``limit`` characters, so an error stays one short line
    whatever the user gave (a long list, a pasted file); cheap even for huge values."""
    return clipped(_SHORT.repr(value), limit)


def clipped(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
