"""``spinebench predict``: segment NIfTI volumes with a tracked run and time each file."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from spinebench.predict import (
    Predictor,
    check_input,
    input_files,
    output_paths,
    staged_outputs,
)


def predict_and_report(
    run_id: str, source: Path, output_dir: Path, tracking_uri: str | None, device: str
) -> list[Path]:
    """Check the paths and every input, load the run's model, then segment and time every
    input; the label maps appear together at the end, or not at all."""
    console = Console()
    inputs = input_files(source)
    targets = output_paths(inputs, output_dir)
    for path in inputs:
        check_input(path)
    t0 = time.perf_counter()
    predictor = Predictor.from_run(run_id, tracking_uri, device)
    console.print(
        f"run {run_id}: {predictor.config['run']['method']} on "
        f"{predictor.config['run']['dataset']}, {len(predictor.class_map)} classes, "
        f"device {predictor.runtime.device} (loaded in {time.perf_counter() - t0:.2f} s)"
    )
    with staged_outputs(output_dir) as stage:
        for src, dst in zip(inputs, targets, strict=True):
            start = time.perf_counter()
            shape = predictor.segment_file(src, stage / dst.name)
            seconds = time.perf_counter() - start
            console.print(f"{src.name} -> {dst}  {'x'.join(map(str, shape))}  {seconds:.2f} s")
    console.print(
        f"wrote {len(targets)} label map(s) to {output_dir} in {time.perf_counter() - t0:.2f} s"
    )
    return targets
