"""spinebench: a plugin-based benchmark for semi-supervised spine segmentation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spinebench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
