"""Data-parallel runs under torchrun: two gloo processes on CPU train exactly what one process
trains on the same global batch, and only rank 0 tracks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spinebench.config import _packaged
from spinebench.data.augment import random_affine, strong_view
from spinebench.engine.distributed import Distributed
from spinebench.losses import SupervisedLoss

ARGS = [
    "run",
    "--method",
    "supervised",
    "--labeled",
    "0.5",
    "--no-resume",
    *("--set", "data.cases=8", "--set", "data.image_size=32"),
    *("--set", "train.iterations=4", "--set", "train.val_every=4"),
    *("--set", "train.log_every=2", "--set", "train.checkpoint_every=2"),
    *("--set", "train.batch_size=4", "--set", "train.optimizer=sgd", "--set", "train.lr=0.05"),
    *("--set", "train.threads=1", "--set", "eval.overlays=0"),
    # per-image normalisation and no dropout: nothing in the model depends on the batch split
    *("--set", "model.norm=instance", "--set", "model.dropout=[0,0,0,0,0]"),
]


def _spinebench(runs: Path, *launcher: str) -> str:
    env = {**os.environ, "SPINEBENCH_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *launcher, "-m", "spinebench", *ARGS],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _finished_runs(runs: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [(client, r) for r in found]


def _weights(client, run) -> dict[str, torch.Tensor]:
    path = client.download_artifacts(run.info.run_id, "checkpoint/model.pt")
    return torch.load(path, weights_only=False)["method"]


def test_two_gloo_processes_train_like_one(tmp_path: Path) -> None:
    _spinebench(tmp_path / "single")
    out = _spinebench(
        tmp_path / "ddp",
        *("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
    )
    assert out.count("tracked as run") == 1, "only rank 0 reports"
    ((single_client, single),) = _finished_runs(tmp_path / "single")
    ddp_runs = _finished_runs(tmp_path / "ddp")
    assert len(ddp_runs) == 1, "only rank 0 may track"
    ddp_client, ddp = ddp_runs[0]
    assert ddp.info.status == single.info.status == "FINISHED"
    a, b = _weights(single_client, single), _weights(ddp_client, ddp)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    assert ddp.data.metrics["test/dice"] == pytest.approx(
        single.data.metrics["test/dice"], abs=1e-4
    )


def test_shards_of_a_batch_augment_like_the_whole_batch() -> None:
    cfg = _packaged("defaults")["augment"]
    image = torch.rand(4, 1, 16, 16)
    label = torch.randint(0, 3, (4, 16, 16))
    whole = random_affine(image, label, cfg, torch.Generator().manual_seed(1))
    strong = strong_view(image, cfg, torch.Generator().manual_seed(2))
    for index in range(2):
        part = slice(index * 2, index * 2 + 2)
        shard = (index, 2)
        img, lab = random_affine(
            image[part], label[part], cfg, torch.Generator().manual_seed(1), shard
        )
        torch.testing.assert_close(img, whole[0][part])
        assert torch.equal(lab, whole[1][part])
        s = strong_view(image[part], cfg, torch.Generator().manual_seed(2), shard)
        torch.testing.assert_close(s, strong[part])


def test_supervised_loss_is_monai_dice_ce_with_pooled_statistics() -> None:
    from monai.losses import DiceCELoss

    logits = torch.randn(3, 4, 8, 8)
    labels = torch.randint(0, 4, (3, 8, 8))
    monai_loss = DiceCELoss(
        include_background=True,
        to_onehot_y=True,
        softmax=True,
        squared_pred=True,
        batch=True,
        lambda_dice=0.5,
        lambda_ce=0.5,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )
    torch.testing.assert_close(
        SupervisedLoss()(logits, labels), monai_loss(logits, labels[:, None])
    )


def test_a_single_process_needs_no_process_group() -> None:
    single = Distributed()
    assert single.main and not single.enabled and single.shard == (0, 1)
    assert single.broadcast("x") == "x" and single.any(True) and not single.any(False)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    single.average_gradients([p])
    assert np.allclose(p.grad.numpy(), 3.0)


GRADIENT_SCRIPT = """
import torch
from spinebench.engine.distributed import from_environment

dist = from_environment("cpu")
params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
params[0].grad = torch.full((2,), float(dist.rank + 1))  # every rank: mean 1.5
if dist.rank == 1:
    params[1].grad = torch.full((2,), 4.0)  # one rank only: mean 2.0
dist.average_gradients(params)  # params[2]: no rank has one
result = f"{params[0].grad.tolist()} {params[1].grad.tolist()} {params[2].grad}"
with open(f"rank{dist.rank}.txt", "w") as out:  # not stdout: the ranks' prints interleave
    out.write(result)
dist.close()
"""


def test_gradient_average_counts_missing_as_zero_and_keeps_absent_ones_absent(
    tmp_path: Path,
) -> None:
    script = tmp_path / "grads.py"
    script.write_text(GRADIENT_SCRIPT)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "[1.5, 1.5] [2.0, 2.0] None"
