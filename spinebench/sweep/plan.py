"""A sweep's plan: every cell prepared (so a bad option fails before anything runs) and
looked up by config hash: a cell with a FINISHED run is skipped unless forced, and an
interrupted cell continues its own run (the engine resumes unfinished runs by config hash).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import dataclass, replace

from spinebench.engine.prepare import Prepared, prepare
from spinebench.engine.tracking import (
    MlflowTracker,
    Tag,
    Tracker,
    experiment_name,
    probe,
    resolve_uri,
    sweep_note,
)
from spinebench.errors import ConfigError
from spinebench.runinfo import RunRequest
from spinebench.sweep.grid import Grid, GridCell


@dataclass
class PlannedCell:
    cell: GridCell
    prepared: Prepared
    finished_run: str | None  # an existing FINISHED run with this config hash

    @property
    def request(self) -> RunRequest:
        return self.prepared.request

    @property
    def config_hash(self) -> str:
        return self.prepared.config_hash


@dataclass
class Plan:
    uri: str
    experiment: str
    tracker: MlflowTracker
    cells: list[PlannedCell]
    force: bool = False
    #: The sweep's parent run in MLflow; every cell is its child.
    parent_run: str = ""

    def to_run(self) -> list[PlannedCell]:
        return [c for c in self.cells if self.force or c.finished_run is None]


def plan(grid: Grid, template: RunRequest, force: bool = False) -> Plan:
    """Prepare every cell (validating it) and find the ones that already finished."""
    uri = resolve_uri(template.tracking_uri)
    probe(uri)  # a server that is down fails before any cell's data is built
    experiment = experiment_name(template.dataset, template.experiment)
    prepared: list[tuple[GridCell, Prepared]] = []
    seen: dict[str, GridCell] = {}
    for cell in grid.cells():
        overrides = [*grid.overrides, *template.overrides, *cell.variant.overrides]
        req = replace(
            template,
            method=cell.method,
            labeled=cell.labeled,
            seed=cell.seed,
            overrides=overrides,
            tracking_uri=uri,
            experiment=experiment,
        )
        p = prepare(req)
        if p.config_hash in seen:
            raise ConfigError(
                f"cells {seen[p.config_hash].name} and {cell.name} resolve "
                "to the same config; drop the variant that changes nothing"
            )
        seen[p.config_hash] = cell
        prepared.append((cell, p))
    tracker = MlflowTracker(uri, experiment)  # creates the experiment before any worker starts
    finished = tracker.finished_runs()
    keys = sorted(f"{p.config_hash}/{p.split.hash()}" for _, p in prepared)
    digest = hashlib.sha256(json.dumps([experiment, keys]).encode()).hexdigest()[:16]
    parent = tracker.parent_run(
        digest,
        f"sweep-{digest[:8]}",
        sweep_note([c.name for c, _ in prepared], shlex.join(["spinebench", *sys.argv[1:]])),
    )
    planned = []
    for cell, p in prepared:
        p.request = replace(p.request, parent_run=parent)
        planned.append(PlannedCell(cell, p, finished.get((p.config_hash, p.split.hash()))))
    for pc in planned:
        if pc.finished_run and pc.cell.variant.name:
            tag_variant(tracker, pc.finished_run, pc.cell.variant.name)
    return Plan(uri, experiment, tracker, planned, force, parent)


def tag_variant(tracker: Tracker, run_id: str, variant: str) -> None:
    """The variant name keys the leaderboard row; it is not part of the config."""
    tracker.tag_run(run_id, Tag.VARIANT, variant)
