"""Reliability (issue 10): kills and resumes, concurrent runs, failures, safe loading.

RELIABILITY.md quotes the figures these tests measure. Two test methods are installed through
a real entry point (a ``*.dist-info`` folder on the path, as pip leaves one), so subprocesses
find them exactly as a third party's plugin: ``twostage`` (a non-segmenting warm-up stage, then
an SSL stage with an EMA teacher and the backbone's dropout) and ``nanat`` (a NaN at a chosen
iteration, in one loss term or in the input).
"""

from __future__ import annotations

import ast
import errno
import math
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path

import pytest
import torch
from conftest import TINY
from filelock import FileLock
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from spinebench import plugins
from spinebench.cli import main
from spinebench.config import config_hash
from spinebench.data.dataset import inside
from spinebench.engine import checkpoint
from spinebench.engine.prepare import resolve_request
from spinebench.engine.run import execute
from spinebench.engine.stages import StageCache
from spinebench.engine.trainer import Interrupted
from spinebench.errors import ConfigError, DataError, SpinebenchError
from spinebench.method import Stage
from spinebench.runinfo import RunRequest

REPO = Path(__file__).resolve().parents[1]
# A small net on one thread: on a shared 2-core machine two torch threads thrash (50x slower).
FAST = ["--set", "model.channels=[4,8,16,32,64]", "--set", "train.threads=1"]
METHODS = """
import copy

import torch

from spinebench.builtin.supervised import Supervised
from spinebench.hookspecs import hookimpl
from spinebench.method import Stage, StepOutput, frozen
from spinebench.semisupervised import ema_update


class TwoStage(Supervised):
    options = {"warmup_iterations": 8, "cache_warmup": False}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.teacher = copy.deepcopy(self.net)
        frozen(self.teacher.parameters())

    def stages(self):
        return [
            Stage("warmup", int(self.ctx.options["warmup_iterations"]), prefix="warmup/",
                  segments=False,
                  cache_key={"test": 1} if self.ctx.options["cache_warmup"] else None),
            Stage("ssl", int(self.ctx.config["train"]["iterations"]), unlabeled=True),
        ]

    def training_step(self, stage, batch, step):
        supervised = self.loss(self.net(batch.image), batch.label)
        if stage.name == "warmup":
            return StepOutput({"loss": supervised})
        student = self.net(batch.unlabeled_weak).softmax(1)
        with torch.no_grad():
            teacher = self.teacher(batch.unlabeled_strong[0]).softmax(1)
        consistency = ((student - teacher) ** 2).mean()
        return StepOutput({"loss": supervised + consistency, "consistency": consistency})

    def after_optimizer_step(self, stage, step):
        if stage.name == "ssl":
            ema_update(self.teacher, self.net, 0.9, step.iteration)

    def validate_stage(self, stage, images, labels):
        return {"loss": float(self.loss(self.net(images), labels))}


class NanAt(Supervised):
    options = {"at": 2, "where": "term"}

    def training_step(self, stage, batch, step):
        now = step.iteration == self.ctx.options["at"]
        where = self.ctx.options["where"]
        image = batch.image * float("nan") if now and where == "input" else batch.image
        supervised = self.loss(self.net(image), batch.label)
        aux = supervised.detach() * (float("nan") if now and where == "term" else 0.0)
        return StepOutput({"loss": supervised + aux, "supervised": supervised, "aux": aux})


@hookimpl
def spinebench_register_methods(register):
    register("twostage", TwoStage)
    register("nanat", NanAt)
"""


def install_methods(site: Path) -> None:
    """Module ``sbrel_methods`` and the dist-info declaring it a ``spinebench`` entry point."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "sbrel_methods.py").write_text(textwrap.dedent(METHODS))
    info = site / "spinebench_reltest-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: spinebench-reltest\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[spinebench]\nreltest = sbrel_methods\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test methods, importable here and (through PYTHONPATH) in subprocesses."""
    folder = tmp_path / "site"
    install_methods(folder)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(REPO)]))
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets it
    plugins.reset()
    yield folder
    plugins.reset()
    sys.modules.pop("sbrel_methods", None)


def _client(runs: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")


def _runs(runs: Path, experiment: str = "spinebench/synthetic") -> list[Run]:
    client = _client(runs)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _request(args: list[str], **kw: object) -> RunRequest:
    """The RunRequest that ``spinebench run --method M --labeled L <args>`` makes."""
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    sets = [v for k, v in zip(args[::2], args[1::2], strict=True) if k == "--set"]
    return RunRequest(
        method=pairs["--method"], labeled=float(pairs["--labeled"]), overrides=sets, **kw
    )  # type: ignore[arg-type]


def _cli_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["spinebench", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


def _test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("test/") and not math.isnan(v)}


# -- 1. resume after SIGKILL, five times, across both stages of cps4 ------------------------
PRETRAIN, SSL = 8, 10
KILL_SEED = 20261129
KILL_ARGS = [
    "--method", "cps4", "--labeled", "0.5", *TINY, *FAST,
    "--set", f"cps4.pretrain_iterations={PRETRAIN}", "--set", f"train.iterations={SSL}",
    "--set", "train.checkpoint_every=1", "--set", "train.val_every=5",
    "--set", "train.log_every=5",
]  # fmt: skip


def kill_targets(seed: int) -> list[int]:
    """Five global iterations to kill at: two in stage 1 (VLM pretraining), three in stage 2."""
    rng = random.Random(seed)
    first = sorted(rng.sample(range(2, PRETRAIN), 2))
    second = sorted(rng.sample(range(PRETRAIN + 2, PRETRAIN + SSL - 1), 3))
    return first + second


def _progress(checkpoints: Path) -> int | None:
    """Global iteration of the latest checkpoint of the (single) run being killed; the tensors
    are memory-mapped, not read, so polling stays cheap."""
    for path in checkpoints.glob("*/last.pt"):
        try:
            state = torch.load(path, mmap=True, weights_only=True)["state"]
        except (OSError, RuntimeError, EOFError):  # replaced while we opened it
            return None
        return (0, PRETRAIN, PRETRAIN + SSL)[state["stage_index"]] + state["iteration"]
    return None


@pytest.mark.slow  # ~3 min: six cold starts of the CLI; run with `pytest -m slow`
def test_five_sigkills_across_both_stages_of_cps4_resume_into_one_run_with_the_same_metrics(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPINEBENCH_CACHE", str(tmp_path / "cache"))  # stage 1 not cached yet
    args = [sys.executable, "-m", "spinebench", "run", "--deterministic", *KILL_ARGS]
    kills: list[int] = []
    for target in kill_targets(KILL_SEED):
        target = max(target, kills[-1] + 1) if kills else target
        log = tmp_path / f"kill{len(kills)}.log"
        with log.open("w") as handle:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=handle)
            deadline = time.monotonic() + 300
            while (reached := _progress(isolated_env / "checkpoints")) is None or reached < target:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no progress within 300 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL  # it was still training when killed
        kills.append(reached)
        (run,) = _runs(isolated_env)
        assert run.info.status == "RUNNING"
    print(f"\nkilled after global iterations {kills} (stage 1: 1..{PRETRAIN}, stage 2: "
          f"{PRETRAIN + 1}..{PRETRAIN + SSL})")  # fmt: skip
    assert any(k <= PRETRAIN for k in kills) and any(k > PRETRAIN for k in kills)
    final = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert "resumed at stage" in final.stderr
    (run,) = _runs(isolated_env)
    assert run.info.status == "FINISHED" and run.data.tags["spinebench.resumed"] == "true"
    assert run.data.params["train.deterministic"] == "True"
    assert not list((isolated_env / "checkpoints").glob("*/*.pt"))  # cleaned up when finished
    # Uninterrupted, same seed (its stage 1 comes from the cache the killed run left, which
    # must not change the result either).
    deterministic = ["--set", "train.deterministic=true"]  # what --deterministic stands for
    uninterrupted = execute(_request(KILL_ARGS + deterministic, experiment="uninterrupted"))
    assert _test_metrics(run.data.metrics) == _test_metrics(uninterrupted.metrics)


# -- 2. SIGTERM, a corrupt latest checkpoint, EMA and dropout: still the same result ---------
def test_sigterm_and_a_corrupt_last_checkpoint_resume_mean_teacher_exactly(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--method", "mean_teacher", "--labeled", "0.5", *TINY, *FAST,
            "--set", "train.iterations=8", "--set", "train.checkpoint_every=2",
            "--set", "train.val_every=4", "--set", "train.log_every=4"]  # fmt: skip
    reference = execute(_request(args, experiment="reference"))
    method_cls = plugins.methods()["mean_teacher"]
    original = method_cls.after_optimizer_step

    def sigterm_after_step_5(self, stage, step):  # type: ignore[no-untyped-def]
        original(self, stage, step)
        if step.iteration == 4:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(method_cls, "after_optimizer_step", sigterm_after_step_5)
    with pytest.raises(Interrupted, match="iteration 5"):
        execute(_request(args))
    monkeypatch.setattr(method_cls, "after_optimizer_step", original)
    (run,) = _runs(isolated_env)
    assert run.info.status == "KILLED"
    folder = isolated_env / "checkpoints" / run.info.run_id
    assert checkpoint.load_file(folder / "last.pt")["state"]["iteration"] == 5
    assert checkpoint.load_file(folder / "prev.pt")["state"]["iteration"] == 4
    data = (folder / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 2])  # torn by a crash or a bad disk
    with pytest.warns(UserWarning, match="last.pt is corrupt or truncated"):
        resumed = execute(_request(args))
    assert resumed.resumed and resumed.info.run_id == run.info.run_id
    assert _test_metrics(resumed.metrics) == _test_metrics(reference.metrics)
    assert [r.info.status for r in _runs(isolated_env)] == ["FINISHED"]


def test_a_crash_right_after_a_stage_boundary_resumes_from_the_boundary_exactly(
    site: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--method", "twostage", "--labeled", "0.5", *TINY, *FAST,
            "--set", "method.warmup_iterations=4", "--set", "train.iterations=4",
            "--set", "train.checkpoint_every=100", "--set", "train.val_every=2",
            "--set", "train.log_every=2"]  # fmt: skip
    reference = execute(_request(args, experiment="reference"))
    method_cls = plugins.methods()["twostage"]
    original = method_cls.training_step

    def crash_in_ssl(self, stage, batch, step):  # type: ignore[no-untyped-def]
        if stage.name == "ssl":
            raise RuntimeError("power cut")
        return original(self, stage, batch, step)

    monkeypatch.setattr(method_cls, "training_step", crash_in_ssl)
    with pytest.raises(RuntimeError, match="power cut"):
        execute(_request(args))
    monkeypatch.setattr(method_cls, "training_step", original)
    (run,) = _runs(isolated_env)
    assert run.info.status == "FAILED"
    boundary = checkpoint.load_latest(isolated_env / "checkpoints" / run.info.run_id)
    assert boundary is not None and boundary["optimizer"] is None
    assert (boundary["state"]["stage_index"], boundary["state"]["iteration"]) == (1, 0)
    resumed = execute(_request(args))
    assert resumed.resumed and resumed.info.run_id == run.info.run_id
    assert _test_metrics(resumed.metrics) == _test_metrics(reference.metrics)


def test_a_stage_loaded_from_cache_leaves_the_same_result_as_one_trained(
    site: Path, isolated_env: Path
) -> None:
    args = ["--method", "twostage", "--labeled", "0.5", *TINY, *FAST,
            "--set", "method.warmup_iterations=4", "--set", "method.cache_warmup=true",
            "--set", "train.iterations=4", "--set", "train.val_every=2",
            "--set", "train.log_every=2"]  # fmt: skip
    trained = execute(_request(args, experiment="cold"))
    cached = execute(_request(args, experiment="warm"))
    (cold,), (warm,) = _runs(isolated_env, "cold"), _runs(isolated_env, "warm")
    assert cold.data.tags["spinebench.stage_cache.warmup"] == "miss"
    assert warm.data.tags["spinebench.stage_cache.warmup"] == "hit"
    assert _test_metrics(cached.metrics) == _test_metrics(trained.metrics)


def test_a_stage_cached_at_another_cpu_thread_count_is_not_loaded() -> None:
    """CPU reductions depend on the thread count: a cache hit must be what this run trains."""
    stage = Stage("warmup", 4, cache_key={"lr": 0.1})
    at = {n: StageCache("twostage", "split", "data", n).path(stage) for n in (1, 2, None)}
    assert at[1] != at[2] and None not in (at[1], at[2])
    assert at[1] == StageCache("twostage", "split", "data", 1).path(stage)
    assert at[None] not in (at[1], at[2])  # on a GPU the count is not part of the key


# -- 3. concurrency --------------------------------------------------------------------------
def test_two_runs_at_once_on_a_cold_store_and_cache_build_it_once_and_both_finish(
    isolated_env: Path, tmp_path: Path
) -> None:
    cold = tmp_path / "cold-cache"
    env = {**os.environ, "SPINEBENCH_CACHE": str(cold)}
    base = [
        sys.executable,
        "-m",
        "spinebench",
        "run",
        "--method",
        "supervised",
        "--labeled",
        "0.5",
        *TINY,
        *FAST,
    ]
    procs = [
        subprocess.Popen(
            [*base, "--seed", str(seed)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    runs = _runs(isolated_env)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert sorted(r.data.tags["spinebench.seed"] for r in runs) == ["0", "1"]
    assert sorted(r.data.tags["spinebench.data_cache"] for r in runs) == ["built", "reused"]
    client = _client(isolated_env)
    for run in runs:
        assert "test/dice" in run.data.metrics and "val/dice" in run.data.metrics
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "split.json", "per_case.csv", "checkpoint"} <= names
    slices = [p for p in (cold / "slices").iterdir() if p.is_dir()]
    phantoms = [p for p in (cold / "synthetic").iterdir() if p.is_dir()]
    assert len(slices) == 1 and len(phantoms) == 1, (slices, phantoms)  # no leftover temp dirs


def test_a_second_start_of_a_config_in_progress_elsewhere_is_refused(isolated_env: Path) -> None:
    req = _request(["--method", "supervised", "--labeled", "0.5", *TINY])
    lock = isolated_env / "locks" / f"{config_hash(resolve_request(req).config)}.lock"
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock)), pytest.raises(ConfigError, match="in progress in another process"):
        execute(req)
    assert _runs(isolated_env) == []


# -- 4. failures -----------------------------------------------------------------------------
def test_nonfinite_loss_fails_the_run_naming_stage_iteration_and_term(
    site: Path,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = _cli_in_process(
        monkeypatch,
        capsys,
        "run",
        "--method",
        "nanat",
        "--labeled",
        "0.5",
        *TINY,
        *FAST,
        "--set",
        "method.at=2",
    )
    message = (
        "non-finite loss in stage 'train' at iteration 2 (terms: aux); lower train.lr "
        "or set train.skip_nonfinite=true"
    )
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {message}"
    (run,) = _runs(isolated_env)
    assert run.info.status == "FAILED" and message in run.data.tags["spinebench.error"]


def test_skip_nonfinite_skips_the_step_counts_it_and_keeps_the_model_finite(
    site: Path, isolated_env: Path, tmp_path: Path
) -> None:
    args = [
        "--method",
        "nanat",
        "--labeled",
        "0.5",
        *TINY,
        *FAST,
        "--set",
        "method.at=2",
        "--set",
        "method.where=input",
        "--set",
        "train.skip_nonfinite=true",
    ]
    result = execute(_request(args))
    (run,) = _runs(isolated_env)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["train/skipped_nonfinite_steps"] == 1
    assert math.isfinite(result.metrics["test/dice"])
    model = _client(isolated_env).download_artifacts(
        run.info.run_id, "checkpoint/model.pt", str(tmp_path)
    )
    state = checkpoint.load_file(Path(model))["method"]
    assert all(torch.isfinite(v.float()).all() for v in state.values())  # BatchNorm stats too


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_http_store_fails_fast_before_any_cache_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "untouched-cache"
    monkeypatch.setenv("SPINEBENCH_CACHE", str(cache))
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    code, err = _cli_in_process(
        monkeypatch,
        capsys,
        "run",
        "--method",
        "supervised",
        "--labeled",
        "0.5",
        *TINY,
        "--tracking-uri",
        uri,
    )
    seconds = time.monotonic() - start
    print(f"\nunreachable {uri}: exit {code} after {seconds:.1f} s")
    assert code == 2 and f"error: tracking store {uri} is unreachable" in err
    assert seconds < 30  # MLflow's own retries would take minutes
    assert not cache.exists()  # no phantom generated, no slices built
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the probe's setting is undone


class PowerCut(BaseException):
    """The process stops here: nothing after it runs (not even ``except OSError``)."""


@pytest.mark.parametrize("renames_done", [0, 1, 2])  # a save renames three times
def test_a_crash_at_any_point_of_a_save_leaves_an_intact_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renames_done: int
) -> None:
    for version in (1, 2):
        checkpoint.save({"version": torch.tensor(version)}, tmp_path)
    real, calls = os.replace, {"n": 0}

    def replace(src: object, dst: object) -> None:
        calls["n"] += 1
        if calls["n"] > renames_done:
            raise PowerCut
        real(src, dst)  # type: ignore[arg-type]

    with monkeypatch.context() as m, pytest.raises(PowerCut):
        m.setattr(os, "replace", replace)
        checkpoint.save({"version": torch.tensor(3)}, tmp_path)
    latest = checkpoint.load_latest(tmp_path)
    assert latest is not None and int(latest["version"]) in (2, 3)
    checkpoint.save({"version": torch.tensor(4)}, tmp_path)  # and saving goes on
    assert int(checkpoint.load_latest(tmp_path)["version"]) == 4  # type: ignore[index]


@pytest.mark.parametrize("failing_write", [1, 2])  # 1: the checkpoint itself, 2: its digest
def test_out_of_disk_while_checkpointing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    checkpoint.save({"version": torch.tensor(1)}, tmp_path)
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == failing_write:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    with (
        monkeypatch.context() as m,
        pytest.raises(
            SpinebenchError, match=r"No space left on device.*previous checkpoint is kept"
        ),
    ):
        m.setattr(os, "fsync", fsync)
        checkpoint.save({"version": torch.tensor(2)}, tmp_path)
    assert int(checkpoint.load_latest(tmp_path)["version"]) == 1  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.sha256"]


def test_corrupt_checkpoints_fall_back_to_the_previous_then_to_none(tmp_path: Path) -> None:
    for version in (1, 2):
        checkpoint.save({"version": torch.tensor(version)}, tmp_path)
    (tmp_path / "last.pt").write_bytes(b"\0" * 64)
    with pytest.warns(UserWarning, match="corrupt"):
        assert int(checkpoint.load_latest(tmp_path)["version"]) == 1  # type: ignore[index]
    (tmp_path / "prev.pt").write_bytes((tmp_path / "prev.pt").read_bytes()[:-10])
    with pytest.warns(UserWarning, match="corrupt"):
        assert checkpoint.load_latest(tmp_path) is None


# -- 6. safe loading ---------------------------------------------------------------------------
class _RunsShell:
    """Unpickling this calls os.system: what a tampered checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_crafted_to_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    crafted = tmp_path / "ckpt" / "last.pt"
    crafted.parent.mkdir()
    torch.save({"method": _RunsShell(marker), "state": {}}, crafted)
    (crafted.parent / "last.sha256").write_text(sha256(crafted.read_bytes()).hexdigest())
    with pytest.raises(SpinebenchError, match=r"last.pt was refused: .*GLOBAL posix.system"):
        checkpoint.load_file(crafted)
    with pytest.raises(SpinebenchError, match="was refused"):
        checkpoint.load_latest(crafted.parent)
    assert not marker.exists()


def _unsafe_calls(path: Path) -> list[str]:
    """Calls that could run code from data: torch.load without weights_only=True, yaml.load,
    pickle/marshal/dill loads, eval, exec."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        safe_torch = any(
            k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords
        )
        if (
            (name == "torch.load" and not safe_torch)
            or name in ("eval", "exec", "yaml.load", "yaml.unsafe_load", "yaml.full_load")
            or name.split(".")[0] in ("pickle", "marshal", "dill", "cloudpickle")
        ):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
        found += [
            f"{path.relative_to(REPO)}:{node.lineno}: allow_pickle=True"
            for k in node.keywords
            if k.arg == "allow_pickle"
        ]
    return found


def test_no_code_path_can_execute_data() -> None:
    files = sorted([*(REPO / "spinebench").rglob("*.py"), *(REPO / "plugins").rglob("*.py")])
    assert len(files) > 30
    assert [hit for f in files for hit in _unsafe_calls(f)] == []


def test_yaml_config_cannot_construct_python_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    code, err = _cli_in_process(
        monkeypatch,
        capsys,
        "run",
        "--method",
        "supervised",
        "--labeled",
        "0.5",
        "--config",
        str(config),
    )
    assert code == 2 and "YAML tag not allowed at line 1" in err
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["../outside.nii.gz", "/etc/passwd", "a/../../outside.nii.gz"])
def test_manifest_paths_cannot_leave_the_data_dir(tmp_path: Path, entry: str) -> None:
    with pytest.raises(DataError, match="points outside the data folder"):
        inside(tmp_path / "data", entry)
    assert inside(tmp_path / "data", "imagesTr/./a.nii.gz") == tmp_path / "data/imagesTr/a.nii.gz"
