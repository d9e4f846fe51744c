"""Which tracking store a command uses, and the checks made before anything touches it.

The default store is ``sqlite:///spinebench-runs/mlflow.db`` with artifacts in
``spinebench-runs/artifacts``. Only stores that are, or will become, spinebench's own are
opened: an in-memory database (everything lost at exit) and unsupported schemes are refused,
and an existing sqlite file that is not an MLflow store is never written to (MLflow would add
its tables to another application's database), nor is an MLflow store of another schema version
(MLflow would migrate it, and the MLflow that made it could no longer read it). An empty file is
no store yet: the read-only commands do not turn it into one. Opening a sqlite store is
serialised per file: MLflow 3 creates and migrates a new database without a lock, and two
processes doing it at once fail ("duplicate column name", seen with MLflow 3.17; hydraflow
issue #245 reports the same).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock

from spinebench.errors import SpinebenchError
from spinebench.paths import check_writable, runs_dir

#: URI forms spinebench opens (MLflow's database and server stores, and its file store).
SUPPORTED = "sqlite:///PATH, http(s)://HOST:PORT, postgresql://..., mysql://..., or a folder"
_DB_SCHEMES = ("postgresql", "mysql", "mssql")
#: Tables every MLflow tracking database has; a file with other tables is not one.
_MLFLOW_TABLES = {"experiments", "runs", "alembic_version"}


def source_commit() -> str | None:
    """The git commit of the installed source tree (``Tag.GIT_COMMIT``), when it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def resolve_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the sqlite file in the runs dir."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{runs_dir() / 'mlflow.db'}"


def experiment_name(dataset: str, experiment: str | None) -> str:
    return experiment or f"spinebench/{dataset}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def _scheme(uri: str) -> str:
    head = uri.split("://", 1)[0] if "://" in uri else ""
    return head.split("+", 1)[0].lower()


def check_uri(uri: str) -> None:
    """Refuse URIs that cannot hold spinebench's runs, with the forms that can."""
    db = sqlite_file(uri)
    if uri.startswith("sqlite:") and (db is None or str(db) in ("", ":memory:")):
        raise SpinebenchError(
            f"tracking URI {uri!r} is an in-memory database: every run would be lost when the "
            f"command exits; use a file, e.g. sqlite:///spinebench-runs/mlflow.db ({SUPPORTED})"
        )
    scheme = _scheme(uri)
    if scheme and scheme not in ("sqlite", "http", "https", "file", *_DB_SCHEMES):
        raise SpinebenchError(
            f"tracking URI scheme {scheme!r} ({uri}) is not supported; use {SUPPORTED}"
        )


def check_sqlite_store(db: Path, uri: str) -> None:
    """An existing sqlite file must be an MLflow store (or an empty database): never add
    MLflow's tables to another application's file. Reads it without changing a byte."""
    if not db.exists():
        return
    if not db.is_file():
        raise SpinebenchError(f"tracking store {uri}: {db} is not a file; fix --tracking-uri")
    if db.stat().st_size == 0:
        return
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute("select name from sqlite_master where type='table'")
            tables = {row[0] for row in rows}
    except sqlite3.DatabaseError as exc:
        raise SpinebenchError(
            f"tracking store {uri}: {db} is not a sqlite database ({exc}); pass a new file or "
            "an existing spinebench store"
        ) from None
    if tables and not tables >= _MLFLOW_TABLES:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise SpinebenchError(
            f"tracking store {uri}: {db} is another application's database (tables {shown}), "
            "not an MLflow store; spinebench leaves it untouched: pass a new file or a "
            "spinebench store"
        )
    if tables:
        _check_schema(db, uri)


def _check_schema(db: Path, uri: str) -> None:
    """An MLflow store whose schema is not this MLflow's: MLflow would migrate it on open (or
    refuse it with advice that reads like a connection failure); spinebench changes no store it
    did not make, so it says so and leaves the upgrade to the user."""
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute("select version_num from alembic_version").fetchall()
    except sqlite3.DatabaseError:
        rows = []
    found = rows[0][0] if len(rows) == 1 else None
    head = _get_latest_schema_revision()
    if found != head:
        raise SpinebenchError(
            f"tracking store {uri} has MLflow schema {found or 'unknown'}, and MLflow "
            f"{mlflow.__version__} here expects {head}; spinebench does not migrate a store: "
            f"back it up and run `mlflow db upgrade {uri}`, or use the MLflow that made it"
        )


def store_exists(uri: str) -> bool:
    """False for a sqlite store whose file is missing or empty (MLflow would create its tables
    there) and a file store whose folder is missing (a server is checked on use)."""
    db = sqlite_file(uri)
    if db is not None:
        return db.is_file() and db.stat().st_size > 0
    folder = _file_store(uri)
    return folder is None or folder.is_dir()


def _file_store(uri: str) -> Path | None:
    """The folder of MLflow's file store (``file:`` URI or a plain path), else None."""
    if uri.startswith("file:"):
        return Path(urlparse(uri).path)
    return Path(uri) if "://" not in uri else None


def probe(uri: str) -> None:
    """Fail with one line when the store cannot be used, reached or created; leaves nothing
    behind (a sqlite store is created only once the run's data has been checked)."""
    check_uri(uri)
    db = sqlite_file(uri)
    if db is not None:
        check_sqlite_store(db, uri)
        _check_creatable(db, uri)
        return
    folder = _file_store(uri)
    if folder is not None:
        check_writable(folder, "tracking store", "fix --tracking-uri or MLFLOW_TRACKING_URI")
        return
    if _scheme(uri) not in ("http", "https", *_DB_SCHEMES):
        return
    from mlflow.tracking import MlflowClient

    try:
        with fail_fast_http():
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        raise unreachable(uri, exc) from None


def unreachable(uri: str, exc: Exception) -> SpinebenchError:
    """The one-line error for a store that did not answer, with the cause in a few words (the
    operating system's reason where MLflow's message wraps one)."""
    text = " ".join(str(exc).split())
    if "out-of-date database schema" in text:
        return SpinebenchError(
            f"tracking store {uri} has an MLflow schema older than this MLflow's; spinebench "
            f"does not migrate a store: back it up and run `mlflow db upgrade {uri}`"
        )
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    reason = errno.group(1).strip().lower() if errno else f"{type(exc).__name__}: {text}"
    if len(reason) > 160:
        reason = reason[:157].rsplit(" ", 1)[0] + " ..."
    return SpinebenchError(
        f"tracking store {uri} is unreachable ({reason}); start the server or fix "
        "--tracking-uri (or MLFLOW_TRACKING_URI)"
    )


def _check_creatable(db: Path, uri: str) -> None:
    """A sqlite store exists, or its nearest existing folder takes a new file."""
    folder = db if db.exists() else db.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if db.exists():
            return
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SpinebenchError(
            f"tracking store {uri} cannot be created under {folder} "
            f"({exc.strerror or exc}); fix --tracking-uri or MLFLOW_TRACKING_URI"
        ) from None


def opening(uri: str) -> FileLock | nullcontext[None]:
    """A lock next to a sqlite store, so one process at a time creates or migrates it."""
    db = sqlite_file(uri)
    if db is None:
        return nullcontext()
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{db}.lock")


@contextmanager
def fail_fast_http() -> Iterator[None]:
    """One try with a short timeout while probing the store: MLflow's defaults (7 retries with
    backoff, 120 s timeout) would make a wrong ``--tracking-uri`` hang for minutes."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
