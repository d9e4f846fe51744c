"""The plugin manager: default plugins plus the ``spinebench`` entry-point group.

Built-in methods, datasets and metrics are ordinary plugins (datasette's DEFAULT_PLUGINS
pattern); the core never imports the bundled method plugins, which are found by entry point
exactly as a third party's would be.
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import pluggy

from spinebench import hookspecs
from spinebench.errors import PluginError, SpinebenchError

ENTRY_POINT_GROUP = "spinebench"
DISABLE_ENV = "SPINEBENCH_DISABLE_PLUGINS"
DEFAULT_PLUGINS = (
    "spinebench.builtin.supervised",
    "spinebench.builtin.synthetic",
    "spinebench.builtin.mrspineseg",
    "spinebench.builtin.spider",
    "spinebench.builtin.nnunet",
    "spinebench.builtin.metrics",
)


@dataclass(frozen=True)
class PluginInfo:
    """What ``spinebench list plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """``distribution==version``, as a run records the plugin that defined its method."""
        return f"{self.distribution}=={self.version}"


class Registry(dict[str, Any]):
    """Registered objects by name, and the plugin that registered each (tox's registries)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.owners: dict[str, PluginInfo] = {}

    def owner(self, name: str) -> PluginInfo:
        return self.owners[name]


_failed: dict[str, str] = {}
_dist_of: dict[str, tuple[str, str]] = {}
_blocked: set[str] = set()  # plugins the environment variable kept out, by name


def _disabled() -> set[str]:
    return {p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()}


@cache
def get_plugin_manager() -> pluggy.PluginManager:
    """Load default and entry-point plugins once per process; failures warn and are skipped."""
    pm = pluggy.PluginManager("spinebench")
    pm.add_hookspecs(hookspecs)
    blocked = _disabled()
    from spinebench import __version__

    known = set()
    for module_name in DEFAULT_PLUGINS:
        short = module_name.rsplit(".", 1)[-1]
        known |= {short, module_name}
        if short in blocked or module_name in blocked:
            _blocked.add(short)
            continue
        pm.register(importlib.import_module(module_name), name=short)
        _dist_of[short] = ("spinebench", __version__)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        known.add(ep.name)
        if ep.name in blocked:
            _blocked.add(ep.name)
            continue
        if pm.has_plugin(ep.name):
            if pm.has_plugin(ep.name):
                warnings.warn(
                    f"plugin {ep.name!r} is installed twice; keeping the first", stacklevel=2
                )
            continue
        dist = ep.dist.name if ep.dist else "?"
        ver = ep.dist.version if ep.dist else "?"
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not break the CLI
            _failed[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"spinebench plugin {ep.name!r} ({dist} {ver}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                stacklevel=2,
            )
            continue
        _dist_of[ep.name] = (dist, ver)
    unknown = sorted(blocked - known)
    if unknown:
        warnings.warn(
            f"{DISABLE_ENV} names {', '.join(unknown)}, which no installed plugin is called; "
            f"plugins: {', '.join(sorted(n for n in known if '.' not in n))}",
            stacklevel=2,
        )
    pm.check_pending()
    return pm


def list_plugins() -> list[PluginInfo]:
    """Every registered plugin with its distribution, version and implemented hooks."""
    pm = get_plugin_manager()
    infos = []
    for name, plugin in pm.list_name_plugin():
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or []))
        dist, ver = _dist_of.get(name, ("?", "?"))
        infos.append(PluginInfo(name=name, distribution=dist, version=ver, hooks=hooks))
    return sorted(infos, key=lambda p: (p.distribution != "spinebench", p.name))


def failed_plugins() -> dict[str, str]:
    """Entry points that failed to import, by name, with the error."""
    get_plugin_manager()
    return dict(_failed)


def _collect(hook_name: str, kind: str) -> Registry:
    pm = get_plugin_manager()
    found = Registry(kind)
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin_name = impl.plugin_name
        dist, ver = _dist_of.get(plugin_name, ("?", "?"))
        info = PluginInfo(plugin_name, dist, ver)

        def register(name: str, obj: Any, _info: PluginInfo = info) -> None:
            if name in found:
                first = found.owners[name]
                raise PluginError(
                    f"{kind} {name!r} is registered by both {first.distribution} (plugin "
                    f"{first.name}) and {_info.distribution} (plugin {_info.name}); uninstall "
                    f"one or block it with {DISABLE_ENV}={_info.name}"
                )
            found[name] = obj
            found.owners[name] = _info

        try:
            impl.function(register=register)
        except SpinebenchError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {plugin_name!r} ({dist}) raised while registering {kind}s: "
                f"{type(exc).__name__}: {exc}; fix or block it with {DISABLE_ENV}={plugin_name}"
            ) from exc
    return found


@cache
def methods() -> Registry:
    """All registered methods (``Method`` subclasses) by name."""
    return _collect("spinebench_register_methods", "method")


@cache
def datasets() -> Registry:
    """All registered datasets (``Dataset`` subclasses) by name."""
    return _collect("spinebench_register_datasets", "dataset")


@cache
def metrics() -> Registry:
    """All registered metrics (:data:`spinebench.hookspecs.MetricFn`) by name."""
    return _collect("spinebench_register_metrics", "metric")


def lookup(registry: dict[str, Any], name: str, kind: str) -> Any:
    """Fetch ``name`` or fail with the closest registered name suggested."""
    if name in registry:
        return registry[name]
    get_plugin_manager()
    if name in _blocked:  # a plugin registers a method under its own name
        raise SpinebenchError(
            f"{kind} {name!r} belongs to plugin {name!r}, which {DISABLE_ENV}="
            f"{os.environ.get(DISABLE_ENV, '')} blocks; remove it from that variable"
        )
    close = difflib.get_close_matches(name, list(registry), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SpinebenchError(
        f"unknown {kind} {name!r}: {hint}available: {', '.join(sorted(registry)) or 'none'} "
        f"(`spinebench list {kind}s`)"
    )


def reset() -> None:
    """Forget loaded plugins (tests that install or block plugins in-process)."""
    for fn in (get_plugin_manager, methods, datasets, metrics):
        fn.cache_clear()
    _failed.clear()
    _dist_of.clear()
    _blocked.clear()
