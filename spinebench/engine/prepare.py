"""From a request to a run that can start: every check that needs no training, in order.

:func:`resolve_request` checks names, fraction, seed, device and config and reads nothing;
:func:`load_data` opens the dataset (building a generated one) and splits its cases. Both run
before the tracking store is touched, so a refused request leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinebench import plugins
from spinebench.config import config_hash, flatten, load_yaml_file, parse_overrides, resolve
from spinebench.data.classmap import ClassMap
from spinebench.data.dataset import Dataset
from spinebench.data.slices import SliceCache, build_or_load, warn_background_only_labeled
from spinebench.data.splits import Split, check_fraction, make_split
from spinebench.engine.runtime import pick_device
from spinebench.errors import ConfigError, SpinebenchError
from spinebench.method import Method, MethodContext
from spinebench.runinfo import RunRequest


@dataclass
class Resolved:
    """A request whose names and config are valid; no data read, nothing written yet."""

    request: RunRequest
    method_cls: type[Method]
    dataset_cls: type[Dataset]
    config: dict[str, Any]


@dataclass
class Prepared:
    """A resolved run with its data opened and split, before anything is trained or tracked."""

    request: RunRequest
    method_cls: type[Method]
    dataset: Dataset
    class_map: ClassMap
    split: Split
    config: dict[str, Any]
    config_hash: str


def prepare(req: RunRequest) -> Prepared:
    """Validate everything the user gave before any work starts."""
    return load_data(resolve_request(req))


def resolve_request(req: RunRequest) -> Resolved:
    """The checks that need no data and write nothing: names, fraction, device, config."""
    check_fraction(req.labeled)
    if req.seed < 0:
        raise ConfigError(f"--seed {req.seed} is negative; use 0 or a positive integer")
    pick_device(req.device)
    method_cls = plugins.lookup(plugins.methods(), req.method, "method")
    dataset_cls = plugins.lookup(plugins.datasets(), req.dataset, "dataset")
    file_config = load_yaml_file(req.config_file) if req.config_file else {}
    overrides = parse_overrides(req.overrides, req.method)
    _refuse_other_methods_options([*flatten(file_config), *overrides], req.method)
    if req.data_dir is not None:
        overrides["data.dir"] = str(Path(req.data_dir).resolve())
    config = resolve(
        method=req.method,
        method_options=method_cls.options,
        method_defaults=method_cls.default_config(req.profile),
        profile=req.profile,
        file_config=file_config,
        overrides=overrides,
        run={"dataset": req.dataset, "labeled": req.labeled, "seed": req.seed},
    )
    method_cls.validate_config(config)
    return Resolved(req, method_cls, dataset_cls, config)


def build_cache(prepared: Prepared) -> SliceCache:
    """The preprocessed slices (built once, then reused); building reads and checks every
    case's files, so a bad one is refused before the run is tracked. Labeled cases whose
    mask is all background are warned of: the split does not look at the masks."""
    cache = build_or_load(prepared.request.dataset, prepared.dataset, prepared.config)
    warn_background_only_labeled(cache, prepared.split.labeled)
    return cache


def build_method(prepared: Prepared) -> Method:
    """The method of a prepared run, on the CPU, as its plugin builds it."""
    config = prepared.config
    ctx = MethodContext(
        class_map=prepared.class_map,
        image_size=int(config["data"]["image_size"]),
        options=dict(config["method"]),
        config=config,
    )
    return prepared.method_cls(ctx)


def _refuse_other_methods_options(keys: list[str], method: str) -> None:
    """``mean_teacher.ema_decay`` given to a unimatch run: say whose option it is."""
    for key in keys:
        owner = key.split(".")[0]
        if owner != method and owner in plugins.methods():
            options = sorted(plugins.methods()[method].options)
            raise ConfigError(
                f"{key} is an option of method {owner!r}, and this run's method is {method!r}; "
                f"drop it (options of {method}: {', '.join(options) or 'none'})"
            )


def load_data(resolved: Resolved) -> Prepared:
    """Open the dataset (a generated one is built here) and split its cases."""
    req, config = resolved.request, resolved.config
    data_dir = Path(config["data"]["dir"]) if config["data"]["dir"] else None
    dataset = resolved.dataset_cls(data_dir, config)
    class_map = dataset.class_map()
    if not class_map.is_contiguous():
        raise SpinebenchError(
            f"dataset {req.dataset!r} must map its labels to 1..N (got ids {class_map.ids})"
        )
    d = config["data"]
    split = make_split(
        [c.case_id for c in dataset.cases()],
        labeled=req.labeled,
        seed=req.seed,
        split_seed=d["split_seed"],
        val_fraction=d["val_fraction"],
        test_fraction=d["test_fraction"],
    )
    return Prepared(
        req, resolved.method_cls, dataset, class_map, split, config, config_hash(config)
    )
