"""User-facing errors: one line that names the problem and the fix, never a traceback."""


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
