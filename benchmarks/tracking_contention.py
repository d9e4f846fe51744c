"""Several processes on one sqlite tracking store: how many fail, with and without spinebench.

    python -m benchmarks.tracking_contention [--processes 4] [--rounds 3] [--writes 200]

Cold: each round, N processes open a store that does not exist yet, create the experiment and
log one run, through plain ``MlflowClient`` and through spinebench's ``Tracker``. Warm: N
processes each do ``--writes`` rounds of (20 metrics, a tag, a search) on one existing store.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

EXPERIMENT = "contention"


def _open_plain(uri: str) -> tuple[object, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client, exp.experiment_id if exp else client.create_experiment(EXPERIMENT)


def _open_tracker(uri: str) -> tuple[object, str]:
    from spinebench.engine.tracking import MlflowTracker

    tracker = MlflowTracker(uri, EXPERIMENT)
    return tracker.client, tracker.experiment_id


OPENERS: dict[str, Callable[[str], tuple[object, str]]] = {
    "plain": _open_plain,
    "tracker": _open_tracker,
}


def cold_start(opener: str, uri: str) -> str | None:
    """Open a store (maybe not there yet) and log one run; the error, or None."""
    try:
        client, experiment_id = OPENERS[opener](uri)
        run = client.create_run(experiment_id)  # type: ignore[attr-defined]
        client.log_metric(run.info.run_id, "m", 1.0)  # type: ignore[attr-defined]
        client.set_terminated(run.info.run_id)  # type: ignore[attr-defined]
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    return None


def warm_writes(uri: str, writes: int) -> int:
    """Errors over ``writes`` rounds of metrics, a tag and a search on an existing store."""
    from mlflow.entities import Metric

    client, experiment_id = _open_tracker(uri)
    run = client.create_run(experiment_id)  # type: ignore[attr-defined]
    errors = 0
    for i in range(writes):
        now = int(time.time() * 1000)
        try:
            client.log_batch(  # type: ignore[attr-defined]
                run.info.run_id, metrics=[Metric(f"m{j}", i, now, i) for j in range(20)]
            )
            client.set_tag(run.info.run_id, "i", str(i))  # type: ignore[attr-defined]
            client.search_runs([experiment_id], max_results=5)  # type: ignore[attr-defined]
        except Exception:
            errors += 1
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    n = args.processes
    with (
        tempfile.TemporaryDirectory() as tmp,
        ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool,
    ):
        for opener in OPENERS:
            ok = 0
            for r in range(args.rounds):
                uri = f"sqlite:///{Path(tmp) / opener / str(r) / 'mlflow.db'}"
                results = list(pool.map(cold_start, [opener] * n, [uri] * n))
                ok += sum(e is None for e in results)
                for error in {e for e in results if e}:
                    print(f"  {opener}: {error}")
            print(f"cold store, {opener}: {ok}/{n * args.rounds} processes succeeded")
        uri = f"sqlite:///{Path(tmp) / 'warm' / 'mlflow.db'}"
        _open_tracker(uri)
        errors = sum(pool.map(warm_writes, [uri] * n, [args.writes] * n))
        print(f"warm store: {n} processes x {args.writes} rounds (20 metrics + tag + search): "
              f"{errors} errors")  # fmt: skip


if __name__ == "__main__":
    main()
