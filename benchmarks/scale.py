"""Scale: preprocessing time, cache size and training memory for growing synthetic datasets.

For each size a fresh process generates the phantom cases and builds the slice cache (timed,
its peak RSS recorded); a second fresh process then trains the ``supervised`` method on that
cache for a fixed number of engine steps and reports its peak RSS. The slice cache is
memory-mapped, so training memory should not grow with the number of cases (target: the
largest dataset's training RSS within 10% of the smallest's).

    python -m benchmarks.scale [--sizes 50,200,800] [--iterations 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import make_bench
from spinebench.engine.perf import peak_rss_mb


def _overrides(cases: int, image_size: int, iterations: int) -> list[str]:
    return [
        f"data.cases={cases}",
        f"data.image_size={image_size}",
        f"train.iterations={iterations}",
        f"train.log_every={iterations}",
        f"train.val_every={iterations + 1}",
        f"train.checkpoint_every={iterations + 1}",
    ]


def child_preprocess(cases: int, image_size: int) -> dict[str, float]:
    t0 = time.perf_counter()
    bench = make_bench("supervised", _overrides(cases, image_size, 1), device="cpu")
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in bench.cache.root.rglob("*") if f.is_file())
    return {
        "preprocess_s": seconds,
        "slices": int(bench.cache.images.shape[0]),
        "cache_mb": size / 2**20,
        "preprocess_peak_rss_mb": peak_rss_mb(),
    }


def child_train(cases: int, image_size: int, iterations: int) -> dict[str, float]:
    bench = make_bench("supervised", _overrides(cases, image_size, iterations), device="cpu")
    method = bench.method()
    stage = method.stages()[-1]
    before = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bench.run_engine_stage(method, stage, bench.streams(), Path(tmp))
        seconds = time.perf_counter() - t0
    return {
        "train_peak_rss_mb": peak_rss_mb(),
        "rss_before_train_mb": before,
        "train_iter_per_s": iterations / seconds,
    }


def _in_child(args: list[str], env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,800")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--child", choices=["preprocess", "train"])
    parser.add_argument("--cases", type=int)
    args = parser.parse_args()
    if args.child == "preprocess":
        print(json.dumps(child_preprocess(args.cases, args.image_size)))
        return
    if args.child == "train":
        print(json.dumps(child_train(args.cases, args.image_size, args.iterations)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "SPINEBENCH_CACHE": str(Path(tmp) / "cache"),
            "SPINEBENCH_RUNS": str(Path(tmp) / "runs"),
        }
        common = ["--image-size", str(args.image_size), "--iterations", str(args.iterations)]
        for cases in sizes:
            pre = _in_child(["--child", "preprocess", "--cases", str(cases), *common], env)
            train = _in_child(["--child", "train", "--cases", str(cases), *common], env)
            rows.append({"cases": cases, **pre, **train})
            r = rows[-1]
            print(
                f"{cases:5d} cases: {r['slices']:6d} slices, preprocess {r['preprocess_s']:7.1f} s "
                f"(peak RSS {r['preprocess_peak_rss_mb']:6.0f} MB), cache {r['cache_mb']:7.1f} MB, "
                f"training peak RSS {r['train_peak_rss_mb']:6.0f} MB "
                f"({r['train_iter_per_s']:.1f} it/s)",
                flush=True,
            )
    growth = rows[-1]["train_peak_rss_mb"] / rows[0]["train_peak_rss_mb"]
    print(
        f"training peak RSS, {sizes[-1]} vs {sizes[0]} cases: {growth:.3f}x "
        f"(target <= 1.10; {args.iterations} supervised steps at {args.image_size}px, CPU)"
    )


if __name__ == "__main__":
    main()
