"""What a worker process's log says about its cell: the engine's latest plain progress line.

A ``--workers`` sweep sends each ``spinebench run`` to its own log file, where the engine writes
a plain line per tenth of a stage and at least every ``SPINEBENCH_PROGRESS_EVERY`` seconds;
reading the newest one back is how the sweep can say where each running cell is without any
channel of its own between the processes.
"""

from __future__ import annotations

from pathlib import Path

from spinebench.engine.progress import StageLine, clock, parse_line

#: Bytes read from the end of a log: progress lines are short and the newest is near the end.
TAIL_BYTES = 16384


def last_stage_line(log: Path) -> StageLine | None:
    """The newest progress line in ``log``, or None before the first one (or without a log)."""
    try:
        with log.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - TAIL_BYTES, 0))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        parsed = parse_line(line)
        if parsed is not None:
            return parsed
    return None


def cell_state(log: Path, seconds: float) -> str:
    """``<stage> <iteration>/<total> eta <h:mm:ss>`` from the log; ``starting`` with the time
    since the worker started while it prepares (cache, model) before its first line; ``done``
    once a stage reached its budget (the worker validates, tests or starts its next stage)."""
    line = last_stage_line(log)
    if line is None:
        return f"starting ({clock(seconds)})"
    if line.iteration >= line.total:
        return f"{line.stage} {line.iteration}/{line.total} done ({clock(seconds)})"
    return f"{line.stage} {line.iteration}/{line.total} eta {line.eta}"
