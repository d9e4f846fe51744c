"""End-to-end check of the CUDA path: a tracked cps4 run, predict, torchrun with a process group.

Three commands, each as a user types it, in fresh processes sharing one time budget:

1. ``spinebench run --method cps4 --labeled 0.05 --profile paper --set cps4.pretrained=null``
   with small caps on both stages (``cps4.pretrain_iterations``, ``train.iterations``) and few
   cases (``data.cases``): training under the paper profile's precision and memory layout,
   validation, test evaluation, tracking into a sqlite store, the final model;
2. ``spinebench predict --run ID --input DIR --output DIR --device ...`` on phantom volumes
   written by ``spinebench data synth``: the label maps must have the inputs' shapes;
3. ``torchrun --standalone --nproc_per_node 1 -m spinebench run --method supervised ...`` with
   ``SPINEBENCH_DISTRIBUTED=1``: the process group (NCCL on a GPU, gloo on the CPU), the
   gradient all-reduce and, on a GPU, the SyncBatchNorm conversion run once. One rank cannot
   show that several ranks agree: that needs several GPUs.

Writes ``e2e.json`` (each step: ok, seconds, what was checked) into ``--out`` after every step,
so a run cut short keeps what it checked; exits 1 when a step failed.

    python -m benchmarks.gpu_e2e --device cuda --out DIR
    python -m benchmarks.gpu_e2e --device cpu --image-size 32 --iterations 2 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_ID = re.compile(r"tracked as run\s+([0-9a-f]{32})")
PROCESS_GROUP = re.compile(r"process group (\w+) initialised, world size (\d+)")
TEST_DICE = re.compile(r"test/dice\s*│?\s*([0-9.]+|nan)")
SPINEBENCH = [sys.executable, "-m", "spinebench"]


@dataclass
class Runner:
    """Runs the commands with what is left of one time budget, logging each to one file."""

    env: dict[str, str]
    log: Path
    deadline: float

    def __call__(self, name: str, command: list[str]) -> tuple[bool, str, float]:
        """(exit 0, its output, seconds) of ``command``; running out of the budget fails."""
        t0 = time.perf_counter()
        timeout = max(self.deadline - t0, 1.0)
        # its own session, so a timeout ends torchrun's workers too, not only torchrun
        with subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as proc:
            try:
                text, _ = proc.communicate(timeout=timeout)
                ok, status = proc.returncode == 0, f"exit {proc.returncode}"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                text, _ = proc.communicate()
                ok, status = False, f"timed out after {timeout:.0f} s (the budget)"
        seconds = time.perf_counter() - t0
        with self.log.open("a") as f:
            f.write(f"\n===== {name}: {' '.join(command)}\n{text}\n")
            f.write(f"===== {name}: {status}, {seconds:.1f} s\n")
        print(f"{name}: {status}, {seconds:.1f} s", flush=True)
        return ok, text, seconds


def caps(args: argparse.Namespace) -> list[str]:
    """``--set`` options that keep a run short: few cases, small slices, capped stages."""
    n = args.iterations
    sets = [
        f"data.cases={args.cases}",
        f"data.image_size={args.image_size}",
        f"train.iterations={n}",
        f"train.val_every={n}",
        f"train.log_every={max(n // 2, 1)}",
        f"train.checkpoint_every={n}",
        "eval.overlays=1",
        f"train.threads={args.threads}",
    ]
    return [arg for s in sets for arg in ("--set", s)]


def check_cps4(run: Runner, args: argparse.Namespace, uri: str) -> dict[str, Any]:
    command = [
        *SPINEBENCH,
        *("run", "--method", "cps4", "--labeled", "0.05", "--profile", "paper"),
        *("--device", args.device, "--tracking-uri", uri, "--no-resume"),
        *("--set", "cps4.pretrained=null", "--set", f"cps4.pretrain_iterations={args.iterations}"),
        *caps(args),
    ]
    ok, text, seconds = run("cps4 run", command)
    found, dice = RUN_ID.search(text), TEST_DICE.search(text)
    return {
        "ok": ok and found is not None,
        "seconds": round(seconds, 1),
        "run_id": found.group(1) if found else None,
        "test_dice": dice.group(1) if dice else None,
        "device_line": next((ln.strip() for ln in text.splitlines() if "| device" in ln), None),
    }


def check_predict(run: Runner, args: argparse.Namespace, uri: str, run_id: str) -> dict[str, Any]:
    work = args.work
    synth, pred = work / "synth", work / "pred"
    for folder in (synth, pred):
        shutil.rmtree(folder, ignore_errors=True)
    made, _, _ = run(
        "data synth",
        [*SPINEBENCH, "data", "synth", "--out", str(synth), "--cases", "3", "--seed", "7"],
    )
    command = [
        *SPINEBENCH,
        *("predict", "--run", run_id, "--input", str(synth / "images")),
        *("--output", str(pred), "--tracking-uri", uri, "--device", args.device),
    ]
    ok, _, seconds = run("predict", command)
    shapes = same_shapes(synth / "images", pred) if ok and made else None
    return {"ok": bool(shapes), "seconds": round(seconds, 1), "outputs_match_inputs": shapes}


def check_torchrun(run: Runner, args: argparse.Namespace, uri: str) -> dict[str, Any]:
    command = [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"),
        *("-m", "spinebench", "run", "--method", "supervised", "--labeled", "0.5"),
        *("--profile", "paper", "--device", args.device, "--tracking-uri", uri, "--no-resume"),
        *caps(args),
    ]
    forced = Runner({**run.env, "SPINEBENCH_DISTRIBUTED": "1"}, run.log, run.deadline)
    ok, text, seconds = forced("torchrun supervised", command)
    group = PROCESS_GROUP.search(text)
    ran = "the process group and the gradient all-reduce"
    if args.device == "cuda":
        ran += " and the SyncBatchNorm conversion"
    return {
        "ok": ok and group is not None and RUN_ID.search(text) is not None,
        "seconds": round(seconds, 1),
        "process_group": f"{group.group(1)}, world size {group.group(2)}" if group else None,
        "note": f"one rank: {ran} ran; agreement across ranks is not tested (one device)",
    }


def same_shapes(inputs: Path, outputs: Path, classes: int = 19) -> bool:
    """Every input volume has a label map of its shape, with labels 0..``classes``."""
    import nibabel as nib
    import numpy as np

    files = sorted(p for p in inputs.iterdir() if p.name.endswith(".nii.gz"))
    for path in files:
        out = outputs / path.name
        if not out.is_file():
            return False
        image: Any = nib.load(path)
        label_map: Any = nib.load(out)
        labels = np.asarray(label_map.dataobj)
        if labels.shape != image.shape or labels.min() < 0 or labels.max() > classes:
            return False
    return bool(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=20, help="each stage's cap")
    parser.add_argument("--budget-s", type=float, default=160, help="all three commands")
    parser.add_argument("--threads", type=int, default=0, help="CPU: torch threads (0: all)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="runs and data (default: temp)")
    args = parser.parse_args(argv)
    keep = args.work is not None
    args.work = args.work or Path(tempfile.mkdtemp(prefix="spinebench-e2e-"))
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "e2e.log"
    log.write_text("")
    env = {
        **os.environ,
        "SPINEBENCH_RUNS": str(args.work / "runs"),
        "SPINEBENCH_CACHE": os.environ.get("SPINEBENCH_CACHE", str(args.work / "cache")),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SPINEBENCH_DISTRIBUTED", None)
    uri = f"sqlite:///{args.work / 'runs' / 'mlflow.db'}"
    run = Runner(env, log, time.perf_counter() + args.budget_s)
    summary: dict[str, Any] = {
        **{k: getattr(args, k) for k in ("device", "image_size", "cases", "iterations")},
        "budget_s": args.budget_s,
        "steps": {},
    }

    def record(name: str, step: dict[str, Any]) -> None:
        summary["steps"][name] = step
        summary["ok"] = all(s["ok"] for s in summary["steps"].values())
        (args.out / "e2e.json").write_text(json.dumps(summary, indent=2) + "\n")

    record("cps4_run", check_cps4(run, args, uri))
    run_id = summary["steps"]["cps4_run"]["run_id"]
    if run_id is None:
        record("predict", {"ok": False, "skipped": "no run id from the cps4 run"})
    else:
        record("predict", check_predict(run, args, uri, run_id))
    record("torchrun_supervised", check_torchrun(run, args, uri))
    print(json.dumps(summary, indent=2))
    if not keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
