"""Peers: spinebench against the script people run today, SSL4MIS's one-file 2D trainers.

Given a user's own checkout of SSL4MIS (``--ssl4mis PATH``; nothing of it is copied here and
none of its files is written), the phantom is written in its ACDC h5 layout
(:mod:`benchmarks.peers_layout`) and its script runs through a launcher that adapts, from
outside, only what stops it running here (:mod:`benchmarks.peers_launcher`, every adaptation
listed there and in BENCHMARKS.md). Beside it, ``spinebench run`` trains the same method with
the same network (UNet 16-256 with BatchNorm and dropout: the paper profile; both up-sample by
a 1x1 convolution and a bilinear resize, the peer's with ``align_corners=True``,
``networks/unet.py`` l.65-78, as its ``Decoder``, l.129-136, never passes its ``bilinear``
parameter on), batch halves (12 labeled + 12 unlabeled), optimiser (SGD 0.01, momentum 0.9, poly
0.9), image size, class count, fp32 and torch threads, interleaved run by run, for
``--rounds`` rounds.

Timed phase: iterations after the first fifth (warm-up), with the consistency term on in both
(the peer's first-1000-iterations gate is moved to 0 by the launcher; spinebench runs with
``mean_teacher.start_fraction=0``; CPS has no gate in either). The peer's iterations per second
come from its own log timestamps, spinebench's from its logged ``perf/train/iter_per_s``
windows; wall time is each whole process for the same iteration count.

    python -m benchmarks.peers --ssl4mis PATH [--methods mean_teacher,cps]
        [--image-size 64,256] [--iterations 100] [--rounds 2] [--threads 2]
        [--peer-workers 0,4] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks.common import bench_env, report_load
from benchmarks.peers_layout import Layout, write_layout
from spinebench.data.slices import build_or_load
from spinebench.engine.prepare import prepare
from spinebench.engine.tracking import MlflowTracker
from spinebench.runinfo import RunRequest

HERE = Path(__file__).resolve().parents[1]
LAUNCHER = Path(__file__).resolve().with_name("peers_launcher.py")
#: The phantom: spinebench's default case count, and a labeled fraction giving 11 labeled cases
#: of 12 slices (132), close to SSL4MIS's ACDC setting of 7 labeled patients = 136 slices
#: (train_mean_teacher_2D.py l.70; code/train_acdc_unet_semi_seg.sh passes --labeled_num 7), so
#: the peer's loader epochs (labeled slices / 12 iterations) are as long as its users' are.
CASES = 60
LABELED = 0.3
PROFILE = "paper"  # SSL4MIS's network size, optimiser and 12 + 12 batches
SEED = 0
_TIMESTAMP = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\.(\d{3})\] (.*)$")
_ITERATION = re.compile(r"^iteration (\d+) : ")


@dataclass(frozen=True)
class PeerMethod:
    """A spinebench method and the SSL4MIS script that trains it."""

    script: str  # inside the checkout
    gated: bool  # the script has no consistency term before iteration 1000 (adaptation 5)
    sets: tuple[str, ...]  # spinebench overrides that time the same phase


METHODS = {
    "mean_teacher": PeerMethod(
        "code/train_mean_teacher_2D.py", True, ("mean_teacher.start_fraction=0",)
    ),
    "cps": PeerMethod("code/train_cross_pseudo_supervision_2D.py", False, ()),
}


@dataclass(frozen=True)
class Phantom:
    """The phantom at one image size, written for the peer, and what both runs share."""

    layout: Layout
    size: int
    num_classes: int
    train: dict  # the paper profile's train.* (batch halves, learning rate)


@dataclass(frozen=True)
class Timing:
    it_s: float  # iterations per second after warm-up
    wall_s: float  # the whole process


def peer_rate(log: str, warmup: int) -> float:
    """Iterations/s from SSL4MIS's ``log.txt`` (``[HH:MM:SS.mmm] iteration N : ...`` after every
    step, train_mean_teacher_2D.py l.194-196, l.279-280) after iteration ``warmup``. Intervals
    holding another line (its validation every 200 iterations, a checkpoint) are left out."""
    last: tuple[int, float] | None = None  # the previous training line: (iteration, time)
    steps, seconds, day, previous = 0, 0.0, 0.0, 0.0
    for raw in log.splitlines():
        m = _TIMESTAMP.match(raw.strip())
        if m is None:
            continue
        h, mi, s, ms = (int(m[i]) for i in range(1, 5))
        t = day + 3600 * h + 60 * mi + s + ms / 1000
        if t < previous:  # past midnight
            day += 86400
            t += 86400
        previous = t
        step = _ITERATION.match(m[5])
        if step is None or "mean_dice" in m[5]:
            last = None
            continue
        it = int(step[1])
        if last is not None and it == last[0] + 1 and it > warmup:
            steps, seconds = steps + 1, seconds + t - last[1]
        last = (it, t)
    if steps == 0 or seconds <= 0:
        raise SystemExit(f"the peer's log has no timed iterations after {warmup}")
    return steps / seconds


def engine_rate(history: list[tuple[int, float]]) -> float:
    """Iterations/s over the logged ``iter_per_s`` windows after the first (the warm-up):
    their iterations over their summed durations."""
    windows = [(b[0] - a[0], b[1]) for a, b in itertools.pairwise(history)]
    seconds = sum(n / rate for n, rate in windows if rate > 0)
    if not windows or seconds <= 0:
        raise SystemExit("spinebench logged fewer than two iter_per_s windows")
    return sum(n for n, _ in windows) / seconds


def _env(threads: int) -> dict[str, str]:
    threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return {**os.environ, **threads_env, "COLUMNS": "200"}


def _check(proc: subprocess.CompletedProcess, what: str, output: Path) -> None:
    if proc.returncode:
        tail = output.read_text(errors="replace").strip().splitlines()[-15:]
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def run_peer(
    checkout: Path,
    method: str,
    phantom: Phantom,
    workers: int,
    args: argparse.Namespace,
    work: Path,
    launcher_options: tuple[str, ...] = (),
) -> Timing:
    """One run of the peer's script through the launcher, in a fresh working folder
    (``launcher_options``: the launcher's own, e.g. ``--profile FILE``)."""
    layout, train = phantom.layout, phantom.train
    code = work / "code"  # the script writes ../model/<exp>... (l.270-277) next to it
    code.mkdir(parents=True)
    configs = checkout / "code" / "configs"  # read at import (networks/net_factory.py l.32)
    if configs.is_dir():
        (code / "configs").symlink_to(configs)
    spec = METHODS[method]
    cmd = [sys.executable, str(LAUNCHER), "--script", str(checkout / spec.script)]
    cmd += ["--workers", str(workers), "--image-size", str(phantom.size)]
    cmd += ["--threads", str(args.threads)]
    cmd += ["--labeled-slices", str(layout.labeled_slices)]
    cmd += ["--consistency-from-start"] if spec.gated else []
    cmd += launcher_options
    batch = int(train["batch_size"]) + int(train["unlabeled_batch_size"])
    cmd += ["--", "--root_path", str(layout.root), "--exp", f"peers/{method}"]
    cmd += ["--model", "unet", "--max_iterations", str(args.iterations)]
    cmd += ["--batch_size", str(batch), "--labeled_bs", str(train["batch_size"])]
    cmd += ["--labeled_num", str(layout.labeled_cases)]
    cmd += ["--num_classes", str(phantom.num_classes)]
    cmd += ["--base_lr", str(train["lr"])]
    output = work / "output.txt"
    start = time.perf_counter()
    with output.open("w") as handle:
        proc = subprocess.run(
            cmd, cwd=code, env=_env(args.threads), stdout=handle, stderr=subprocess.STDOUT
        )
    wall = time.perf_counter() - start
    _check(proc, f"the peer's {spec.script}", output)
    logs = sorted(work.glob("model/**/log.txt"))
    if len(logs) != 1:
        raise SystemExit(f"expected one log.txt under {work / 'model'}, found {len(logs)}")
    return Timing(peer_rate(logs[0].read_text(), args.warmup), wall)


def _tree_env(links: Path, threads: int) -> dict[str, str]:
    """This tree's spinebench and bundled plugins first on the path of a child process."""
    links.mkdir(parents=True, exist_ok=True)
    for plugin in sorted(p for p in (HERE / "plugins").iterdir() if p.is_dir()):
        link = links / f"spinebench_{plugin.name}"
        if not link.exists():
            link.symlink_to(plugin)
    path = os.pathsep.join([str(HERE), str(links), os.environ.get("PYTHONPATH", "")])
    return {**_env(threads), "PYTHONPATH": path.rstrip(os.pathsep)}


def engine_overrides(method: str, size: int, args: argparse.Namespace) -> list[str]:
    """spinebench's settings beside the peer: its phantom and image size, the budget, a rate
    logged every ``args.warmup`` iterations, no validation or checkpoint inside the budget, the
    threads, fp32 and the method's timed phase."""
    n = args.iterations
    return [
        f"data.cases={CASES}",
        f"data.image_size={size}",
        f"train.iterations={n}",
        f"train.log_every={args.warmup}",
        f"train.val_every={10 * n}",
        f"train.checkpoint_every={10 * n}",
        f"train.threads={args.threads}",
        "train.precision=fp32",  # the peer's precision on any device
        "eval.overlays=0",
        *METHODS[method].sets,
    ]


def run_spinebench(method: str, size: int, args: argparse.Namespace, work: Path) -> Timing:
    """One ``spinebench run`` of the method, timed like the peer."""
    sets = engine_overrides(method, size, args)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "spinebench", "run", "--method", method, "--labeled", str(LABELED)]
    cmd += ["--profile", PROFILE, "--seed", str(SEED), "--tracking-uri", uri, "--no-resume"]
    cmd += [a for s in sets for a in ("--set", s)]
    output = work / "output.txt"
    work.mkdir(parents=True)
    start = time.perf_counter()
    # cwd outside the tree: `python -m` would put it first on sys.path, before PYTHONPATH
    with output.open("w") as handle:
        proc = subprocess.run(
            cmd,
            cwd=work,
            env=_tree_env(work.parent / "links", args.threads),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    wall = time.perf_counter() - start
    _check(proc, f"spinebench run --method {method}", output)
    line = next(ln for ln in output.read_text().splitlines() if ln.startswith("tracked as run"))
    history = MlflowTracker(uri, None, create=False).metric_history(
        line.split()[3], "perf/train/iter_per_s"
    )
    return Timing(engine_rate(history), wall)


def write_phantom(size: int, root: Path) -> Phantom:
    """The phantom at ``size`` px, built into spinebench's cache and written for the peer."""
    prepared = prepare(
        RunRequest(
            method="supervised",
            labeled=LABELED,
            seed=SEED,
            profile=PROFILE,
            overrides=[f"data.cases={CASES}", f"data.image_size={size}"],
        )
    )
    cache = build_or_load("synthetic", prepared.dataset, prepared.config)
    layout = write_layout(root, cache, prepared.split)
    return Phantom(layout, size, prepared.class_map.num_classes, prepared.config["train"])


def records(
    peer: dict[tuple[str, int, int], list[Timing]],
    engine: dict[tuple[str, int], list[Timing]],
) -> list[dict]:
    """One record per (method, image size, peer workers): medians over rounds, and their ratio."""
    out = []
    for (method, size, workers), timings in peer.items():
        peer_it_s = statistics.median(t.it_s for t in timings)
        ours = statistics.median(t.it_s for t in engine[(method, size)])
        out.append(
            {
                "method": method,
                "image_size": size,
                "peer_workers": workers,
                "peer_it_s": peer_it_s,
                "spinebench_it_s": ours,
                "ratio": ours / peer_it_s,
            }
        )
    return out


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssl4mis", type=Path, required=True, help="a checkout of SSL4MIS")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--image-size", type=_ints, default=[64], help="comma list, e.g. 64,256")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both")
    parser.add_argument("--peer-workers", type=_ints, default=[0, 4], help="comma list")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    for m in args.methods:
        if not (args.ssl4mis / METHODS[m].script).is_file():
            parser.error(f"{args.ssl4mis / METHODS[m].script} not found: is it SSL4MIS?")
    args.warmup = max(args.iterations // 5, 1)
    if args.iterations < 2 * args.warmup or args.rounds < 1:
        parser.error("--iterations must be at least 2 and --rounds at least 1")
    return args


def _commit(checkout: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or "unknown (not a git checkout)"


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    checkout = args.ssl4mis.resolve()
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    with bench_env() as tmp:
        phantoms = {size: write_phantom(size, tmp / f"ACDC-{size}px") for size in args.image_size}
        peer: dict[tuple[str, int, int], list[Timing]] = {}
        engine: dict[tuple[str, int], list[Timing]] = {}
        for r in range(args.rounds):
            for method in args.methods:
                for size in args.image_size:
                    jobs = [None, *args.peer_workers]  # None: spinebench
                    for workers in jobs if r % 2 == 0 else jobs[::-1]:
                        work = tmp / "runs-of" / f"r{r}-{method}-{size}-{workers}"
                        if workers is None:
                            t = run_spinebench(method, size, args, work)
                            engine.setdefault((method, size), []).append(t)
                            who = "spinebench"
                        else:
                            t = run_peer(checkout, method, phantoms[size], workers, args, work)
                            peer.setdefault((method, size, workers), []).append(t)
                            who = f"SSL4MIS workers {workers}"
                        print(
                            f"round {r} {method:12s} {size:4d}px {who:18s} {t.it_s:7.3f} it/s "
                            f"wall {t.wall_s:7.1f} s",
                            flush=True,
                        )
        rows = records(peer, engine)
    print(
        f"\nSSL4MIS {_commit(checkout)}; median over {args.rounds} round(s); {args.iterations} "
        f"iterations timed after {args.warmup}, consistency term on in both; {args.threads} "
        f"threads; {datetime.now():%Y-%m-%d %H:%M}"
    )
    print(
        f"{'method':12s} {'size':>5s} {'peer workers':>12s} {'peer it/s':>10s} "
        f"{'spinebench it/s':>16s} {'ratio':>6s} {'peer wall s':>12s} {'spinebench wall s':>18s}"
    )
    for row in rows:
        key = (row["method"], row["image_size"])
        peer_wall = statistics.median(t.wall_s for t in peer[(*key, row["peer_workers"])])
        our_wall = statistics.median(t.wall_s for t in engine[key])
        print(
            f"{row['method']:12s} {row['image_size']:5d} {row['peer_workers']:12d} "
            f"{row['peer_it_s']:10.3f} {row['spinebench_it_s']:16.3f} {row['ratio']:6.2f} "
            f"{peer_wall:12.1f} {our_wall:18.1f}"
        )
    print(f"whole benchmark: {time.perf_counter() - began:.0f} s")
    report_load(load_before, os.getloadavg()[0], args.threads)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
