"""The GPU check of the paper profile, rehearsed on the CPU so device time goes to measuring.

The default suite checks the pieces in this process at tiny sizes: the plain loop, the engine's
stage rows (cps4 loading a saved CLIPSeg of the rd64-refined architecture, as on the device),
CLIPSeg alone, the plan and the report, the rd64-refined config against transformers', the
process group at world size 1 (``SPINEBENCH_DISTRIBUTED=1``) and the wheel checker. The
commands themselves run in the slow tests (minutes on a CPU):

    pytest -m slow tests/test_gpu_rehearsal.py
    GPU_REHEARSAL_PYTHON=/path/to/python3.12 pytest -m slow tests/test_gpu_rehearsal.py

The second form also installs ``.whl/`` offline with that interpreter into a temporary target,
as the device does (an interpreter with torch but without mlflow, monai, nibabel,
open-clip-torch). Nothing here downloads.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import math
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import gpu, gpu_wheels
from benchmarks.gpu_clipseg import (
    CLIPSEG_RD64_REFINED,
    FOLDER_NAME,
    IMAGENET_MEAN,
    clipseg_alone,
    rd64_folder,
    vlm_overrides,
)
from benchmarks.gpu_plain import plain_mean_teacher
from benchmarks.gpu_report import Report, format_row
from benchmarks.gpu_stages import method_rows
from benchmarks.gpu_timing import VARIANTS
from spinebench import plugins
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.engine import distributed
from spinebench.errors import ConfigError
from spinebench.models import vlm

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
TINY = [
    "data.cases=8",
    "data.image_size=32",
    "train.val_every=100000",
    "train.checkpoint_every=100000",
    "train.log_every=1",
    "eval.overlays=0",
    "train.threads=1",
]


def _tiny_rd64() -> dict[str, Any]:
    """The rd64-refined config with small towers; patch 16, the refined decoder and three
    tapped layers kept, so the methods' loading path is the device's."""
    config = copy.deepcopy(CLIPSEG_RD64_REFINED)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    config["text_config"].update(small, num_hidden_layers=2)
    config["vision_config"].update(small, num_hidden_layers=4)
    config.update(
        projection_dim=32, extract_layers=[1, 2, 3], reduce_dim=16, decoder_intermediate_size=32
    )
    return config


def test_rd64_refined_config_is_what_transformers_converts() -> None:
    """The written-out config equals transformers' get_clipseg_config("rd64-refined"):
    library defaults, patch 16 and the complex transposed convolution."""
    from transformers import CLIPSegConfig

    ours: Any = CLIPSegConfig(**copy.deepcopy(CLIPSEG_RD64_REFINED))
    theirs = CLIPSegConfig(
        vision_config={"patch_size": 16}, use_complex_transposed_convolution=True
    )

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    for key, value in CLIPSEG_RD64_REFINED.items():
        if key.endswith("_config"):
            for sub, sub_value in value.items():
                assert plain(getattr(getattr(theirs, key), sub)) == sub_value, (key, sub)
                assert plain(getattr(getattr(ours, key), sub)) == sub_value, (key, sub)
        else:
            assert plain(getattr(theirs, key)) == value, key
    assert ours.vision_config.patch_size == 16 and list(ours.extract_layers) == [3, 6, 9]


def test_plain_loop_runs_each_variant_on_cpu() -> None:
    for name in ("fp32", "bf16+cl"):
        speed = plain_mean_teacher(32, 4, 20, VARIANTS[name], warmup=1, steps=1, device=CPU)
        assert math.isfinite(speed) and speed > 0, name


def test_cps4_stages_and_clipseg_load_the_saved_rd64_architecture(tmp_path: Path) -> None:
    """As on the device: the hub id is swapped for a saved CLIPSeg folder (here with small
    towers), which cps4 loads through ``cps4.pretrained``; every stage gives a row."""
    folder = rd64_folder(tmp_path, _tiny_rd64())
    model = vlm.build_clipseg(str(folder), image_size=32)
    assert vlm.pixel_stats(model)[0] == pytest.approx(IMAGENET_MEAN)  # preprocessor_config read
    sets, note = vlm_overrides("cps4", 0.25, "rd64", 0, tmp_path)
    assert sets == [f"cps4.pretrained={tmp_path / FOLDER_NAME}"] and "rd64" in note
    assert vlm_overrides("supervised", 0.25, "rd64", 0, tmp_path) == ([], "")
    small, _ = vlm_overrides("clipseg", 0.25, "small", 32, tmp_path)
    assert small == ["clipseg.pretrained=null", "clipseg.vlm_image_size=32"]

    rows = method_rows("cps4", VARIANTS["fp32"], [*TINY, *sets], "cpu", 0.25, warmup=1, steps=2)
    assert [r["name"] for r in rows] == ["cps4/pretrain", "cps4/ssl"]
    for row in rows:
        assert row["it_per_s"] > 0 and 0 <= row["data_wait_frac"] < 1, row
        assert row["timed_iterations"] == 2 and row["peak_gpu_mem_mb"] is None
    assert (rows[0]["labeled_batch"], rows[0]["unlabeled_batch"]) == (12, 0)  # the paper profile
    assert rows[1]["unlabeled_batch"] == 12

    alone = clipseg_alone(
        mrspineseg_class_map(), folder, 32, VARIANTS["bf16+cl"], warmup=1, steps=1, device=CPU
    )
    assert alone["prompts"] == 19 and alone["it_per_s"] > 0


def test_mean_teacher_rows_under_bf16_channels_last() -> None:
    (row,) = method_rows("mean_teacher", VARIANTS["bf16+cl"], TINY, "cpu", 0.25, warmup=1, steps=1)
    assert row["name"] == "mean_teacher/train" and row["it_per_s"] > 0
    assert (row["labeled_batch"], row["unlabeled_batch"]) == (12, 12)  # the plain loop's 24


def test_plan_runs_reference_first_and_compile_last(tmp_path: Path) -> None:
    args = gpu.parse_args(["--device", "cpu", "--iterations", "7", "--warmup", "5"])
    assert args.iterations == 10  # whole windows of --warmup steps
    methods = sorted(plugins.methods())
    jobs = gpu.plan(args, methods, mrspineseg_class_map(), [], tmp_path)
    order = [(j.kind, j.name, j.variant.name) for j in jobs]
    assert order[:2] == [
        ("plain", "plain mean teacher b24", "fp32"),
        ("plain", "plain mean teacher b24", "bf16+cl"),
    ]
    eager = {(name, v) for kind, name, v in order if kind == "method" and "compile" not in v}
    assert eager == {(m, v) for m in methods for v in ("fp32", "bf16+cl")}  # every method
    assert ("vlm", "clipseg rd64 352px alone", "bf16+cl") in order
    compiled = [o for o in order if "compile" in o[2]]
    assert order[-len(compiled) :] == compiled  # compiling takes minutes: last
    assert compiled == [
        ("plain", "plain mean teacher b24", "bf16+cl+compile"),
        ("method", "mean_teacher", "bf16+cl+compile"),
        ("method", "mean_teacher", "bf16+cl+compile-nets"),
        ("plain", "plain mean teacher b16", "bf16+cl+compile"),
    ]
    no_compile = gpu.parse_args(["--device", "cpu", "--no-compile"])
    assert not any(
        "compile" in j.variant.name
        for j in gpu.plan(no_compile, methods, mrspineseg_class_map(), [], tmp_path)
    )
    with pytest.raises(SystemExit):
        gpu.parse_args(["--variants", "fp16"])


def test_report_ratios_and_a_file_after_every_row(tmp_path: Path) -> None:
    path = tmp_path / "gpu.json"
    report = Report(path, {"device": "test"}, reference_batch=24)
    report.add({"kind": "plain", "name": "plain", "variant": "fp32", "it_per_s": 10.0, "batch": 24})
    assert json.loads(path.read_text())["rows"][0]["ratio_to_plain_fp32"] == 1.0
    for variant, speed in (("bf16+cl", 25.0), ("bf16+cl+compile", 30.0)):
        report.add(
            {"kind": "plain", "name": "p", "variant": variant, "it_per_s": speed, "batch": 24}
        )
    report.add({"kind": "plain", "name": "p16", "variant": "fp32", "it_per_s": 20.0, "batch": 16})
    report.add({"kind": "method", "name": "mt/train", "variant": "bf16+cl", "it_per_s": 24.0})
    report.add(
        {"kind": "method", "name": "mt", "variant": "bf16+cl+compile-nets", "it_per_s": 27.0}
    )
    report.add({"kind": "vlm", "name": "clipseg", "variant": "fp32", "it_per_s": 3.0})
    report.add({"kind": "method", "name": "cps", "variant": "fp32", "error": "OutOfMemoryError"})
    report.add({"kind": "method", "name": "abd", "variant": "fp32", "skipped": "budget spent"})
    data = json.loads(path.read_text())
    rows = {(r["name"], r["variant"]): r for r in data["rows"]}
    assert rows[("p", "bf16+cl")]["ratio_to_plain_fp32"] == 2.5
    assert rows[("p16", "fp32")]["ratio_to_plain_fp32"] == 1.0  # against its own batch
    engine = rows[("mt/train", "bf16+cl")]
    assert engine["ratio_to_plain_fp32"] == 2.4
    assert engine["ratio_to_plain_same_variant"] == pytest.approx(0.96)  # the >= 0.95 criterion
    assert rows[("mt", "bf16+cl+compile-nets")]["ratio_to_plain_same_variant"] == 0.9
    assert "ratio_to_plain_fp32" not in rows[("clipseg", "fp32")]
    assert data["errors"] == 1 and data["device"] == "test"
    assert "0.96x" in format_row(engine)
    assert "OutOfMemoryError" in format_row(rows[("cps", "fp32")])
    assert "budget spent" in format_row(rows[("abd", "fp32")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_distributed_switch_joins_a_group_of_one(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for name in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK", distributed.FORCE_ENV):
        monkeypatch.delenv(name, raising=False)
    assert distributed.from_environment("cpu") is distributed.SINGLE
    monkeypatch.setenv(distributed.FORCE_ENV, "1")
    with pytest.raises(ConfigError, match="torchrun"):  # the switch alone starts no group
        distributed.from_environment("cpu")
    for name, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port()))):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    joined = distributed.from_environment("cpu")  # what torchrun --nproc_per_node 1 gives
    try:
        assert joined.enabled and joined.forced and joined.main and joined.world == 1
        assert torch.distributed.is_initialized()
        p = torch.nn.Parameter(torch.zeros(2))
        p.grad = torch.full((2,), 3.0)
        joined.average_gradients([p])  # the all-reduce runs, and a world of one changes nothing
        assert p.grad.tolist() == [3.0, 3.0]
        assert joined.broadcast({"a": 1}) == {"a": 1} and joined.any(True)
    finally:
        joined.close()
    assert not torch.distributed.is_initialized()
    assert "process group gloo initialised, world size 1" in capfd.readouterr().err
    assert not distributed.Distributed().enabled


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    dist = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", meta)


def test_wheel_check_finds_gaps_and_shadowing(tmp_path: Path) -> None:
    for spec in gpu_wheels.WHEELS:  # a complete set, as fakes without requirements
        name, version = spec.split("==")
        _fake_wheel(tmp_path, name, version, [])
    assert gpu_wheels.check(tmp_path, "3.12") == []
    _fake_wheel(tmp_path, "nibabel", "9.9", [])
    _fake_wheel(tmp_path, "numpy", "2.0.0", [])
    requires = ["missing>=1", "numpy<3", "tomli; python_version < '3.11'", "extra1; extra == 'x'"]
    _fake_wheel(tmp_path, "newdep", "1.0", requires)
    problems = "\n".join(gpu_wheels.check(tmp_path, "3.12"))
    assert "two versions of nibabel" in problems
    assert "numpy is on the device already" in problems
    assert "newdep requires missing" in problems
    assert "tomli" not in problems and "extra1" not in problems


def test_pinned_wheels_close_over_their_requirements(tmp_path: Path) -> None:
    """The real requirements of the pinned versions (from this environment's installed
    metadata, so nothing downloads) are carried or on the device."""
    for spec in gpu_wheels.WHEELS:
        name, version = spec.split("==")
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here")
        if installed.version != version:
            pytest.skip(f"{name} {installed.version} is installed here, {version} is pinned")
        _fake_wheel(tmp_path, name, version, installed.requires or [])
    assert gpu_wheels.check(tmp_path, "3.12") == []


def test_carried_wheels_if_downloaded() -> None:
    """The real ``.whl/`` (``python -m benchmarks.gpu_wheels`` downloads it): closure, no
    shadowing, size within what a device call carries."""
    if not any((ROOT / ".whl").glob("*.whl")):
        pytest.skip(".whl/ is absent; python -m benchmarks.gpu_wheels downloads it")
    assert gpu_wheels.check(ROOT / ".whl", "3.12") == []


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_benchmark_command_measures_every_method_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = _python(
        *("-m", "benchmarks.gpu", "--device", "cpu", "--image-size", "32"),
        *("--iterations", "1", "--warmup", "1", "--cases", "8", "--vlm", "small"),
        *("--vlm-size", "32", "--no-compile", "--threads", "1", "--budget-s", "1500"),
        *("--out", str(out)),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("device", "torch", "cuda", "date", "settings", "clipseg_rd64_refined"):
        assert key in report
    assert report["command"].startswith("python -m benchmarks.gpu --device cpu")
    assert report["errors"] == 0
    rows = report["rows"]
    measured = {(r["name"], r["variant"]) for r in rows if r.get("it_per_s", 0) > 0}
    assert len(measured) == len(rows)  # nothing skipped or failed
    for variant in ("fp32", "bf16+cl"):
        for plain in ("plain mean teacher b24", "plain mean teacher b16"):
            assert (plain, variant) in measured
        assert ("clipseg small 32px alone", variant) in measured
        for method in plugins.methods():  # a method registered later is measured too
            assert any(n.startswith(f"{method}/") and v == variant for n, v in measured), method
    stages = [r for r in rows if r["kind"] == "method"]
    assert {"cps4/pretrain", "cps4/ssl"} <= {r["name"] for r in stages}
    for row in stages:
        assert 0 <= row["data_wait_frac"] < 1 and row["ratio_to_plain_same_variant"] > 0
    assert "cps4/ssl" in proc.stdout, "the table is printed"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_e2e_check_runs_on_cpu(tmp_path: Path) -> None:
    proc = _python(
        *("-m", "benchmarks.gpu_e2e", "--device", "cpu", "--image-size", "32", "--cases", "8"),
        *("--iterations", "2", "--threads", "1", "--budget-s", "1200"),
        *("--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "e2e.json").read_text())
    steps = summary["steps"]
    assert summary["ok"] and all(step["ok"] for step in steps.values())
    assert set(steps) == {"cps4_run", "predict", "torchrun_supervised"}
    assert steps["predict"]["outputs_match_inputs"] is True
    assert steps["torchrun_supervised"]["process_group"] == "gloo, world size 1"
    assert "device cpu fp32" in steps["cps4_run"]["device_line"]
    assert "cps4 run: exit 0" in (tmp_path / "out" / "e2e.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(3300)
def test_wrapper_rehearses_the_device_call(tmp_path: Path) -> None:
    """``bash benchmarks/gpu.sh --cpu``: install (with GPU_REHEARSAL_PYTHON and ``.whl/``),
    the machine report, the benchmark, the end-to-end check; at most 8 files in ``$OUT``."""
    python = os.environ.get("GPU_REHEARSAL_PYTHON")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": python or sys.executable,
        "SITE": str(tmp_path / "site"),
        "SPINEBENCH_CACHE": str(tmp_path / "cache"),
    }
    if python is None or not any((ROOT / ".whl").glob("*.whl")):
        env["WHEELS"] = str(tmp_path / "no-wheels")  # use the interpreter's packages
    proc = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = {p.name for p in out.iterdir()}
    assert len(files) <= 8, files
    assert {"install.log", "env.txt", "gpu.log", "e2e.json", "e2e.log", "summary.txt"} <= files
    (report,) = out.glob("gpu-*.json")
    assert json.loads(report.read_text())["errors"] == 0
    assert json.loads((out / "e2e.json").read_text())["ok"]
    env_txt = (out / "env.txt").read_text()
    assert "SimpleITK imported with the engine, predict and the plugins: False" in env_txt
    assert "open_clip imported with the engine, predict and the plugins: False" in env_txt
    summary = (out / "summary.txt").read_text()
    assert "bench: exit 0" in summary and "e2e: exit 0" in summary
    if "WHEELS" not in env:
        assert "wheels and spinebench into" in summary
