"""Training speed of every method's steps, this tree against another, measured side by side.

Each method runs as ``spinebench run`` (the whole engine loop: data, augmentation, step,
logging) for a short budget from each source tree, in alternating order within each round, one
process at a time; the figure is the median over rounds of each run's median logged
``perf/<stage>/iter_per_s`` window after the first (which holds warm-up). The other tree is
typically a ``git worktree`` of an older commit: its bundled plugins are put on ``PYTHONPATH``
under their package names, so both trees run with this virtual environment.

    python -m benchmarks.steps --baseline-tree /path/to/old/checkout [--iterations 120]
        [--rounds 3] [--threads 2] [--methods supervised,mean_teacher,unimatch,clipseg,cps4]
        [--set KEY=VALUE ...]

``--set`` goes to both trees, e.g. ``--set model.norm=batch`` to compare the steps alone when
the two trees' quick profiles differ.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from spinebench.engine.tracking import MlflowTracker

METHODS = "supervised,mean_teacher,unimatch,clipseg,cps4"
PLUGINS = ("cps4", "mean_teacher", "unimatch", "clipseg")
HERE = Path(__file__).resolve().parents[1]


def tree_env(tree: Path, links: Path, base: dict[str, str]) -> dict[str, str]:
    """An environment in which ``spinebench`` and its bundled plugins import from ``tree``."""
    links.mkdir(parents=True, exist_ok=True)
    for name in PLUGINS:
        link = links / f"spinebench_{name}"
        if not link.exists():
            link.symlink_to(tree / "plugins" / name)
    return {**base, "PYTHONPATH": f"{tree}{os.pathsep}{links}"}


def run_once(method: str, env: dict[str, str], uri: str, args: argparse.Namespace) -> str:
    n = args.iterations
    sets = [
        f"train.iterations={n}",
        f"train.log_every={max(n // 4, 1)}",
        f"train.val_every={10 * n}",
        f"train.checkpoint_every={10 * n}",
        f"train.threads={args.threads}",
        "eval.overlays=0",
        *args.set,
    ]
    if method == "cps4":
        sets.append(f"cps4.pretrain_iterations={n}")
    cmd = [sys.executable, "-m", "spinebench", "run", "--method", method, "--labeled", "0.05"]
    cmd += [a for s in sets for a in ("--set", s)]
    cmd += ["--tracking-uri", uri, "--no-resume"]
    # cwd outside both trees: `python -m` puts the working directory first on sys.path, which
    # would shadow the tree on PYTHONPATH
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=3600, cwd=env["SPINEBENCH_RUNS"]
    )
    if proc.returncode:
        raise SystemExit(f"{method} failed: {proc.stderr.strip().splitlines()[-1:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("tracked as run"))
    return line.split()[3]


def speeds(tracker: MlflowTracker, run_id: str) -> dict[str, float]:
    """Stage -> median iterations/s of the logged windows after the first."""
    run = tracker.get_run(run_id)
    assert run is not None
    out = {}
    for key in sorted(k for k in run.metrics if k.startswith("perf/") and k.endswith("iter_per_s")):
        values = [v for _, v in tracker.metric_history(run_id, key)]
        out[key.split("/")[1]] = statistics.median(values[1:] or values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "runs").mkdir()
        base = {**os.environ, "SPINEBENCH_RUNS": str(root / "runs")}
        base.setdefault("SPINEBENCH_CACHE", str(root / "cache"))
        trees = {
            "baseline": tree_env(args.baseline_tree.resolve(), root / "links-baseline", base),
            "current": tree_env(HERE, root / "links-current", base),
        }
        uri = f"sqlite:///{root / 'runs' / 'mlflow.db'}"
        results: dict[str, dict[str, dict[str, list[float]]]] = {}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for method in methods:
                for name in order:
                    run_id = run_once(method, trees[name], uri, args)
                    tracker = MlflowTracker(uri, "spinebench/synthetic", create=False)
                    for stage, value in speeds(tracker, run_id).items():
                        cell = results.setdefault(method, {}).setdefault(stage, {})
                        cell.setdefault(name, []).append(value)
                        print(
                            f"round {r} {method:13s} {stage:8s} {name:8s} {value:6.2f} it/s",
                            flush=True,
                        )
        rows = []
        for method, stages in results.items():
            for stage, by_tree in stages.items():
                old, new = (statistics.median(by_tree[k]) for k in ("baseline", "current"))
                rows.append({"method": method, "stage": stage, "baseline": old, "current": new})
        print(
            f"\nmedian of {args.rounds} rounds, {args.iterations} iterations, "
            f"{args.threads} threads (it/s):"
        )
        for row in rows:
            print(
                f"{row['method']:13s} {row['stage']:8s} baseline {row['baseline']:6.2f} "
                f"current {row['current']:6.2f} ratio {row['current'] / row['baseline']:.2f}"
            )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
