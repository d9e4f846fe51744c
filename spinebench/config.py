"""YAML profiles plus dotted overrides resolved into one validated config.

Layers, later wins: engine defaults, the profile (quick|paper), the method's defaults for that
profile, a user ``--config`` file, then ``--set key=value`` overrides. Every key must exist in
the defaults (or the method's ``options``); values keep the default's type. The config hash keys
every cache and identifies a run for resume and sweeps.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from spinebench import strict_yaml
from spinebench.errors import ConfigError, clipped, shown

PROFILES = ("quick", "paper")
# Keys that change nothing a run computes: excluded from the hash.
UNHASHED = {"train.threads"}
# Keys with a closed set of values, checked before anything runs ("auto" keys take true/false).
CHOICES: dict[str, tuple[str | bool, ...]] = {
    "train.optimizer": ("sgd", "adamw"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.channels_last": ("auto", True, False),
    "train.deterministic": ("auto", True, False),
    "model.norm": ("batch", "instance", "group"),
    "train.ssl_forward": ("joint", "separate"),
}
#: Seeds seed NumPy (32 bits) and torch, and are offset per stage and stream: they must fit.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Bounds:
    """Allowed values of a number: ``low``/``high`` (None: open), each included or not."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def admits(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (
            value > self.high or (self.high_open and value == self.high)
        )

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'above' if self.low_open else 'at least'} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"{'below' if self.high_open else 'at most'} {_number(self.high)}")
        return " and ".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE = Bounds(0, None, low_open=True)
FRACTION = Bounds(0, 1, low_open=True, high_open=True)
PROBABILITY = Bounds(0, 1)
SEED = Bounds(0, MAX_SEED)
#: The bounds of every numeric key (each element of a list key), checked when a config resolves.
BOUNDS: dict[str, Bounds] = {
    **dict.fromkeys(
        (
            "data.cases", "eval.batch_size", "train.batch_size", "train.checkpoint_every",
            "train.iterations", "train.log_every", "train.lr", "train.unlabeled_batch_size",
            "train.val_every", "model.channels",
        ),
        POSITIVE,
    ),
    "data.cases": Bounds(3, why="the split needs a train, a val and a test case"),
    "data.image_size": Bounds(16, why="the UNet halves a slice four times"),
    "data.val_fraction": FRACTION,
    "data.test_fraction": FRACTION,
    "data.clip_percentiles": Bounds(0, 100),
    "data.split_seed": SEED,
    "data.generator_seed": SEED,
    "run.seed": SEED,
    "model.dropout": Bounds(0, 1, high_open=True),
    "train.momentum": Bounds(0, 1, high_open=True),
    "train.weight_decay": Bounds(0),
    "train.poly_power": Bounds(0),
    "train.threads": Bounds(0, why="0 means every core"),
    "augment.rotate_degrees": Bounds(0, 180),
    "augment.scale": Bounds(0, None, low_open=True),
    "augment.translate": Bounds(0, 1, high_open=True),
    "augment.jitter": Bounds(0, 1),
    "augment.jitter_p": PROBABILITY,
    "augment.blur_p": PROBABILITY,
    "augment.blur_sigma": Bounds(0, None, low_open=True),
    "eval.overlays": Bounds(0),
}  # fmt: skip
#: List keys that hold a (low, high) pair.
PAIRS = ("data.clip_percentiles", "augment.scale", "augment.blur_sigma")


def _load_yaml_text(text: str, origin: str) -> dict[str, Any]:
    try:
        data = strict_yaml.load(text)
    except RecursionError:
        raise ConfigError(f"{origin}: YAML nested too deeply; fix the file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if isinstance(exc, strict_yaml.Refused):
            raise ConfigError(f"{origin}{where}: {problem}") from None
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            raise ConfigError(
                f"{origin}: YAML tag not allowed{where} (config files hold plain "
                "values only); remove the '!!' tag"
            ) from None
        kind = (
            "YAML error"
            if isinstance(exc, yaml.constructor.ConstructorError)
            else "YAML syntax error"
        )
        raise ConfigError(f"{origin}: {kind}{where}: {clipped(problem)}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def _packaged(name: str) -> dict[str, Any]:
    text = files("spinebench.profiles").joinpath(f"{name}.yaml").read_text()
    return _load_yaml_text(text, f"profile {name}")


def load_yaml_file(path: Path) -> dict[str, Any]:
    """Read a user config file safely; errors name the file and line."""
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; pass a YAML file of config overrides")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the --config path")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is unreadable ({type(exc).__name__}); pass a YAML "
                          "text file") from None  # fmt: skip
    return _load_yaml_text(text, str(path))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"train.lr": 0.01, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def params_of(config: dict[str, Any]) -> dict[str, str]:
    """The config as tracked parameters: flattened, values as text; an empty section (a method
    without options) is no parameter at all, so no parameter reads ``{}``."""
    return {k: str(v) for k, v in flatten(config).items() if not (isinstance(v, dict) and not v)}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _choose(key: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """A value of a closed-choice key, or a one-line error listing the choices."""
    if any(type(value) is type(c) and value == c for c in choices):
        return value
    names = [str(c).lower() for c in choices]
    close = difflib.get_close_matches(clipped(str(value), 60), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"config key {key!r} got {shown(value)}; {hint}use one of {', '.join(names)}")


def _coerce(key: str, value: Any, default: Any, choices: dict[str, tuple[Any, ...]]) -> Any:
    """Keep the default's type; ints are fine where floats are expected."""
    if key in choices:
        return _choose(key, value, choices[key])
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list):
        if isinstance(value, list | tuple):
            return list(value)
    elif isinstance(default, dict) and isinstance(value, dict):
        return value
    raise ConfigError(
        f"config key {key!r} expects {type(default).__name__} (default {shown(default)}), "
        f"got {shown(value)}; {_spelling_hint(value, default)}"
    )


#: A number in scientific notation as YAML 1.1 (PyYAML) reads it: a dot and a signed exponent.
_SCIENTIFIC = re.compile(r"([-+]?)(\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)")


def _spelling_hint(value: Any, default: Any) -> str:
    """The fix for a number YAML read as text: PyYAML follows YAML 1.1, where ``1e-3`` is a
    string and ``1.0e-3`` a float (most users expect YAML 1.2 or Python)."""
    if not isinstance(value, str) or not isinstance(default, int | float):
        return "fix the value"
    match = _SCIENTIFIC.fullmatch(value.strip())
    if match is None:
        return "fix the value"
    sign, whole, fraction, exp_sign, exponent = match.groups()
    number = float(value)
    if isinstance(default, int) and not isinstance(default, bool):
        if number.is_integer() and abs(number) < 1e15:
            return f"it is read as text: write {int(number)}"
        return "fix the value"
    spelled = f"{sign}{whole}.{fraction or '0'}e{exp_sign or '+'}{exponent}"
    return (
        f"YAML 1.1 reads {value} as text (a float needs a dot and a signed exponent): "
        f"write {spelled}"
    )


def check_values(config: dict[str, Any]) -> None:
    """Ranges, pairs and relations of the resolved values, one line per problem."""
    flat = flatten(config)
    for key, bounds in BOUNDS.items():
        value = flat.get(key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            if not math.isfinite(item) or not bounds.admits(item):
                why = f" ({bounds.why})" if bounds.why else ""
                raise ConfigError(
                    f"config key {key!r} must be {bounds.describe()}{why}, got {shown(value)}; "
                    "fix the value"
                )
    for key, value in flat.items():  # method options have no bounds here: NaN passes `x < 0`
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            raise ConfigError(
                f"config key {key!r} must be a finite number, got {shown(value)}; fix the value"
            )
    for key in PAIRS:
        pair = flat.get(key)
        if not isinstance(pair, list) or len(pair) != 2 or not pair[0] <= pair[1]:
            raise ConfigError(
                f"config key {key!r} must be a pair [low, high] with low <= high, got "
                f"{shown(pair)}; fix the value"
            )
    if flat["data.clip_percentiles"][0] == flat["data.clip_percentiles"][1]:
        raise ConfigError(
            "config key 'data.clip_percentiles' needs low < high (equal bounds clip every image "
            "to one value); fix the value"
        )
    if flat["data.val_fraction"] + flat["data.test_fraction"] >= 1:
        raise ConfigError(
            "data.val_fraction + data.test_fraction must be below 1, so training cases remain; "
            "lower one of them"
        )
    if len(flat["model.channels"]) != len(flat["model.dropout"]):
        raise ConfigError(
            f"model.channels {shown(flat['model.channels'])} and model.dropout "
            f"{shown(flat['model.dropout'])} need the same length (one dropout per level)"
        )


def parse_overrides(pairs: list[str], method_name: str) -> dict[str, Any]:
    """``["train.lr=0.1", "cps4.token_loss=false"]`` -> flat dict; ``cps4.x`` = ``method.x``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {shown(pair)} is not key=value; write e.g. --set train.lr=0.01"
            )
        if key.startswith(f"{method_name}."):
            key = "method." + key[len(method_name) + 1 :]
        try:
            value = strict_yaml.load(raw) if raw.strip() else ""
        except strict_yaml.Refused as exc:
            raise ConfigError(f"--set {shown(key)}: {exc.problem}") from None
        except (yaml.YAMLError, RecursionError):
            value = raw
        out[key] = value
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``extra`` wins; neither input is modified."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(
    *,
    method: str,
    method_options: dict[str, Any],
    method_defaults: dict[str, Any],
    profile: str = "quick",
    file_config: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge the layers and validate every key and value against the defaults.

    A method option whose default is a tuple declares its allowed values; the first is the
    default (``"predict_with": ("student", "teacher")``).
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {shown(profile)}; use one of {', '.join(PROFILES)}")
    defaults = _packaged("defaults")
    defaults["method"], method_choices = option_defaults(method_options)
    choices = {**CHOICES, **{f"method.{k}": v for k, v in method_choices.items()}}
    valid = flatten(defaults)
    layers: list[tuple[str, dict[str, Any]]] = [
        (f"profile {profile}", flatten(_packaged(profile))),
        (f"method {method} defaults", flatten(method_defaults)),
        ("--config file", flatten(file_config or {})),
        ("--set", dict(overrides or {})),
        ("command line", {f"run.{k}": v for k, v in (run or {}).items() if v is not None}),
    ]
    given = {**(run or {}), "method": method, "profile": profile}
    for origin, flat in layers[2:4]:
        _refuse_run_keys(flat, given, origin)
    _notice_overridden(layers[2][1], layers[3][1])
    resolved = copy.deepcopy(defaults)
    for origin, flat in layers:
        for key, value in flat.items():
            if value == {}:  # an empty section overrides nothing
                continue
            if key not in valid:
                raise ConfigError(_unknown_key_message(key, valid, origin))
            _set(resolved, key, _coerce(key, value, valid[key], choices))
    resolved["run"]["method"] = method
    resolved["run"]["profile"] = profile
    check_values(resolved)
    return resolved


#: The command-line flag that sets each ``run.*`` key.
RUN_FLAGS = {
    "method": "--method",
    "dataset": "--dataset",
    "labeled": "--labeled",
    "seed": "--seed",
    "profile": "--profile",
}
#: Flags that stand for a config key (the key is otherwise given with ``--set``).
KEY_FLAGS = {
    "train.deterministic": "--deterministic/--no-deterministic",
    "data.dir": "--data-dir",
}


def _refuse_run_keys(flat: dict[str, Any], given: dict[str, Any], origin: str) -> None:
    """``run.*`` keys come from the command line (``--seed`` has a default, so it is always
    given): a file or ``--set`` value that differs would be silently replaced."""
    for key, value in flat.items():
        name = key.removeprefix("run.")
        if key == name or name not in RUN_FLAGS or given.get(name) is None:
            continue
        if value != given[name]:
            flag = RUN_FLAGS[name]
            raise ConfigError(
                f"config key {key!r} is {shown(value)} (from {origin}), but {flag} is "
                f"{shown(given[name])} and sets it; pass {flag} {shown(value)} instead"
            )


def _notice_overridden(file_flat: dict[str, Any], overrides: dict[str, Any]) -> None:
    """One warning per key that the ``--config`` file and the command line both give with
    different values: the command line wins, and a user who edited the file should know."""
    for key in sorted(file_flat.keys() & overrides.keys()):
        ours, theirs = file_flat[key], overrides[key]
        if key == "data.dir" and ours and theirs:
            ours, theirs = os.path.abspath(str(ours)), os.path.abspath(str(theirs))
        if ours == theirs or ours == {} or theirs == {}:
            continue
        flag = f"{KEY_FLAGS[key]} or --set" if key in KEY_FLAGS else "--set"
        warnings.warn(
            f"config key {key!r} is {shown(file_flat[key])} in the --config file and "
            f"{shown(overrides[key])} on the command line ({flag}); the command line wins",
            stacklevel=3,
        )


def option_defaults(
    options: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, tuple[Any, ...]]]:
    """A method's ``options`` as (default values, allowed values of the declared choices)."""
    choices = {k: v for k, v in options.items() if isinstance(v, tuple)}
    for key, allowed in choices.items():
        if not allowed:
            raise ValueError(f"option {key!r} declares no allowed values")
    defaults = {k: (v[0] if k in choices else v) for k, v in options.items()}
    return defaults, choices


def _unknown_key_message(key: str, valid: dict[str, Any], origin: str) -> str:
    section = key.split(".")[0]
    same = sorted(k for k in valid if k.startswith(section + "."))
    if key == section and same:  # `--set train=3`, or `train: 5` in a file
        return (
            f"config key {key!r} (from {origin}) is a section, not a key: give one of its keys "
            f"a value, e.g. {same[0]}=... (valid {section} keys: {', '.join(same)})"
        )
    close = difflib.get_close_matches(clipped(key, 200), list(valid), n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]!r}?"
    elif same:
        hint = f"valid {section} keys: " + ", ".join(same)
    else:
        sections = sorted({k.split(".")[0] for k in valid})
        hint = f"valid sections: {', '.join(sections)} (e.g. train.iterations)"
    return f"unknown config key {shown(key)} (from {origin}); {hint}"


def config_hash(config: dict[str, Any]) -> str:
    """Stable 16-hex digest of what a run computes (everything but ``UNHASHED``)."""
    flat = {k: v for k, v in flatten(config).items() if k not in UNHASHED}
    payload = json.dumps(flat, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def short_summary(config: dict[str, Any]) -> str:
    """One line for the console: what this run is."""
    r, t, d = config["run"], config["train"], config["data"]
    return (
        f"{r['method']} on {r['dataset']} | labeled {r['labeled']} | seed {r['seed']} | "
        f"profile {r['profile']} | {d['image_size']}px | {t['iterations']} it x batch "
        f"{t['batch_size']} | {t['optimizer']} lr {t['lr']}"
    )
