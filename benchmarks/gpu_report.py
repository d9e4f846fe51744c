"""The GPU benchmark's output: one JSON file rewritten after every row, and a printed table.

Rewriting after every row means a run cut short by its time limit keeps what it measured.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_timing import VARIANTS

NOTES = (
    "it/s: timed steps after warm-up; stage rows come from the engine's own stage loop "
    "(perf/<stage>/iter_per_s over the windows after the first); ratio_to_plain_fp32 and "
    "ratio_to_plain_same_variant: it/s over the plain loop's at the reference batch (plain rows: "
    "at their own batch); data_wait_frac: the engine's host time producing batches over wall "
    "time; peak GPU memory: torch.cuda.max_memory_allocated over the row; VLM weights are random "
    "(speed only)"
)


def environment(device: torch.device) -> dict[str, Any]:
    """Where the figures come from: device, versions, commit, date and the command."""
    try:  # the device's copy of the tree may come without git or .git
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else platform.processor()
    return {
        "benchmark": "benchmarks/gpu.py",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.gpu", *sys.argv[1:]]),
        "device": name or device.type,
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "git_commit": commit or None,
        "cpu_count": os.cpu_count(),
        "tf32": {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        },
        "notes": NOTES,
    }


class Report:
    """The rows measured so far, with their ratios to the plain loop, saved after each."""

    def __init__(self, path: Path, header: dict[str, Any], reference_batch: int) -> None:
        self.path = path
        self.reference_batch = reference_batch
        self.data: dict[str, Any] = {**header, "rows": []}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.data["rows"]
        return rows

    def plain_speed(self, batch: int, variant: str) -> float | None:
        """The plain loop's it/s at ``batch`` under ``variant``, once measured."""
        for row in self.rows:
            if (row["kind"], row.get("batch"), row["variant"]) == ("plain", batch, variant):
                return float(row["it_per_s"]) if row.get("it_per_s") else None
        return None

    def add(self, row: dict[str, Any]) -> None:
        """Add ``row`` with its ratios to the plain loop, save, print its line."""
        self.rows.append(row)  # first: a plain fp32 row is its own reference
        speed = row.get("it_per_s")
        if speed and row["kind"] != "vlm":
            batch = row["batch"] if row["kind"] == "plain" else self.reference_batch
            fp32 = self.plain_speed(batch, "fp32")
            same = self.plain_speed(batch, VARIANTS[row["variant"]].reference)
            if fp32:
                row["ratio_to_plain_fp32"] = speed / fp32
            if same and row["kind"] != "plain":
                row["ratio_to_plain_same_variant"] = speed / same
        row["elapsed_s"] = round(self.elapsed(), 1)
        self.save()
        print(format_row(row), flush=True)

    def save(self) -> None:
        """Write the JSON file atomically (a kill never leaves half a file)."""
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.data["errors"] = sum("error" in row for row in self.rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)


def table_header() -> str:
    return (
        f"{'row':28s} {'variant':20s} {'it/s':>8s} {'vs fp32':>7s} {'vs same':>7s} "
        f"{'data_w':>6s} {'peak MiB':>9s}"
    )


def format_row(row: dict[str, Any]) -> str:
    """One line of the table: a measured row, or why it has no figure."""
    name = str(row["name"])[:28]
    if "it_per_s" not in row:
        why = row.get("error") or row.get("skipped") or "no figure"
        return f"{name:28s} {row['variant']:20s} {'-':>8s}  {why}"

    def cell(key: str, spec: str, width: int, suffix: str = "") -> str:
        value = row.get(key)
        return f"{value:{spec}}{suffix}" if value is not None else "-".rjust(width)

    return (
        f"{name:28s} {row['variant']:20s} {row['it_per_s']:8.2f} "
        f"{cell('ratio_to_plain_fp32', '6.2f', 7, 'x')} "
        f"{cell('ratio_to_plain_same_variant', '6.2f', 7, 'x')} "
        f"{cell('data_wait_frac', '6.3f', 6)} {cell('peak_gpu_mem_mb', '9.0f', 9)}"
    )
