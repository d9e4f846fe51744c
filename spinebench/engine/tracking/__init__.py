"""MLflow tracking, laid out as DESIGN.md says; only this package imports ``mlflow``.

Everything else reaches the store through :class:`Tracker`: the engine logs one run, sweeps
look up finished cells and keep their parent run, the leaderboard reads finished runs and their
``per_case.csv``, predict and reproduce fetch a run's record and artifacts. :class:`NullTracker`
is the same interface for what must not track. :mod:`.stores` decides which stores may be
opened, :mod:`.notes` writes the descriptions MLflow's UI shows.
"""

from spinebench.engine.tracking.mlflow_store import MlflowTracker
from spinebench.engine.tracking.notes import command_line, run_note, sweep_note
from spinebench.engine.tracking.null import NullTracker
from spinebench.engine.tracking.stores import (
    experiment_name,
    probe,
    resolve_uri,
    source_commit,
    sqlite_file,
    store_exists,
)
from spinebench.engine.tracking.tags import (
    DataInput,
    NoSuchExperiment,
    Tag,
    TrackedRun,
    Tracker,
)

__all__ = [
    "DataInput",
    "MlflowTracker",
    "NoSuchExperiment",
    "NullTracker",
    "Tag",
    "TrackedRun",
    "Tracker",
    "command_line",
    "experiment_name",
    "probe",
    "resolve_uri",
    "run_note",
    "source_commit",
    "sqlite_file",
    "store_exists",
    "sweep_note",
]
