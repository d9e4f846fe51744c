"""What a sweep varies: methods x labeled fractions x seeds, plus named variants.

A cell is (method, labeled fraction, seed, variant); a variant is a named list of ``--set``
overrides (ablations) applied to some methods' cells. A grid comes from ``--methods/--labeled/
--seeds`` or a ``--grid`` YAML file (keys: methods, labeled, seeds, set, variants).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinebench.config import load_yaml_file
from spinebench.errors import ConfigError

GRID_KEYS = ("methods", "labeled", "seeds", "set", "variants")
VARIANT_KEYS = ("name", "set", "methods")


@dataclass(frozen=True)
class Variant:
    """Named overrides added to the cells of some methods (all when ``methods`` is empty)."""

    name: str
    overrides: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()

    def applies_to(self, method: str) -> bool:
        return not self.methods or method in self.methods


BASE = Variant("")


@dataclass(frozen=True)
class GridCell:
    method: str
    labeled: float
    seed: int
    variant: Variant = BASE

    @property
    def name(self) -> str:
        tag = f"[{self.variant.name}]" if self.variant.name else ""
        return f"{self.method}{tag} l={self.labeled:g} s={self.seed}"


@dataclass(frozen=True)
class Grid:
    """What a sweep varies; ``overrides`` apply to every cell."""

    methods: tuple[str, ...]
    labeled: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()

    def cells(self) -> list[GridCell]:
        """Seed-major order, so a complete one-seed table exists as early as possible."""
        return [
            GridCell(m, f, s, v)
            for s in self.seeds
            for f in self.labeled
            for m in self.methods
            for v in (BASE, *self.variants)
            if v is BASE or v.applies_to(m)
        ]


def _as_list(value: Any, key: str, origin: str) -> list[str]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        items = [str(value)]
    elif isinstance(value, list | tuple):
        items = [str(v).strip() for v in value]
    else:
        raise ConfigError(f"{origin}: {key} must be a list or a comma-separated string")
    if not items or any(not v for v in items):
        example = f"{key} a,b" if key.startswith("--") else f"{key}: [a, b]"
        raise ConfigError(f"{origin}: {key} has an empty entry; write e.g. {example}")
    return items


def _overrides(value: Any, origin: str) -> tuple[str, ...]:
    """``set:`` entries, one ``key=value`` each (never split on commas: values may hold them)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{origin}: set must be a list of key=value strings")
    return tuple(items)


def _numbers(items: list[str], kind: type, key: str, origin: str) -> tuple:
    try:
        values = tuple(kind(v) for v in items)
    except ValueError:
        raise ConfigError(f"{origin}: {key} must hold {kind.__name__}s, got {items}") from None
    if len(set(values)) != len(values):
        raise ConfigError(f"{origin}: {key} lists a value twice ({items}); list each once")
    return values


def _variants(raw: Any, origin: str) -> tuple[Variant, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{origin}: variants must be a list of {{name, set, methods}} mappings")
    out = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(
                f"{origin}: each variant needs a name, e.g. "
                "{name: no_token_loss, set: [cps4.token_loss=false]}"
            )
        unknown = set(entry) - set(VARIANT_KEYS)
        if unknown:
            raise ConfigError(
                f"{origin}: variant {entry['name']!r} has unknown keys "
                f"{sorted(unknown)}; valid: {', '.join(VARIANT_KEYS)}"
            )
        sets = _overrides(entry.get("set"), origin)
        methods = _as_list(entry["methods"], "methods", origin) if entry.get("methods") else []
        out.append(Variant(entry["name"], sets, tuple(methods)))
    names = [v.name for v in out]
    if len(set(names)) != len(names) or "" in names:
        raise ConfigError(f"{origin}: variant names must be unique and non-empty, got {names}")
    return tuple(out)


def make_grid(
    grid_file: Path | None = None,
    methods: str | None = None,
    labeled: str | None = None,
    seeds: str | None = None,
) -> Grid:
    """The grid of a ``--grid`` file, with ``--methods/--labeled/--seeds`` replacing its lists."""
    raw: dict[str, Any] = load_yaml_file(grid_file) if grid_file else {}
    origin = str(grid_file) if grid_file else "command line"
    unknown = set(raw) - set(GRID_KEYS)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown grid keys {sorted(unknown)}; valid: {', '.join(GRID_KEYS)}"
        )
    for key, given in (("methods", methods), ("labeled", labeled), ("seeds", seeds)):
        if given is not None:
            raw[key] = _as_list(given, f"--{key}", "command line")
        elif key in raw:
            raw[key] = _as_list(raw[key], key, origin)
    for key in ("methods", "labeled"):
        if key not in raw:
            raise ConfigError(f"no {key} to sweep; pass --{key} a,b or list them in a --grid file")
    variants_methods = _variants(raw.get("variants", []), origin)
    unknown_methods = {m for v in variants_methods for m in v.methods} - set(raw["methods"])
    if unknown_methods:
        raise ConfigError(
            f"{origin}: variants name methods not in the sweep: {sorted(unknown_methods)}"
        )
    return Grid(
        methods=tuple(dict.fromkeys(raw["methods"])),
        labeled=_numbers(raw["labeled"], float, "labeled", origin),
        seeds=_numbers(raw.get("seeds", ["0"]), int, "seeds", origin),
        overrides=_overrides(raw.get("set"), origin),
        variants=variants_methods,
    )
