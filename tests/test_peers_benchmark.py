"""The peers benchmark without SSL4MIS: its harness end to end against a small stand-in for
``code/train_mean_teacher_2D.py`` (its command line, the statements the launcher adapts and its
log format), its rate arithmetic, the launcher's adaptations and the h5 layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import peers, peers_layout, profile_step
from benchmarks.peers_launcher import AdaptationError, adapt_globals, split_script
from spinebench.data.slices import build_or_load
from spinebench.engine.prepare import prepare
from spinebench.runinfo import RunRequest

# Written for these tests, not taken from SSL4MIS: the same command-line options, module-level
# `args`, `patients_to_slices`, `DataLoader` and `iter_num < 1000`, `.cuda()` calls, the
# `__main__` block with its ../model snapshot folder and its log format. It reports what it saw
# (after the launcher's adaptations) to the file named by FAKE_PEER_OBSERVED.
FAKE_PEER = """
import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

parser = argparse.ArgumentParser()
parser.add_argument("--root_path", type=str, default="../data/ACDC")
parser.add_argument("--exp", type=str, default="ACDC/Mean_Teacher")
parser.add_argument("--model", type=str, default="unet")
parser.add_argument("--max_iterations", type=int, default=30000)
parser.add_argument("--batch_size", type=int, default=24)
parser.add_argument("--labeled_bs", type=int, default=12)
parser.add_argument("--labeled_num", type=int, default=7)
parser.add_argument("--num_classes", type=int, default=4)
parser.add_argument("--base_lr", type=float, default=0.01)
parser.add_argument("--patch_size", type=list, default=[256, 256])
args = parser.parse_args()


def patients_to_slices(dataset, patients):
    return {"3": 68, "7": 136}[str(patients)]


class Slices(Dataset):
    def __init__(self, root):
        self.root = root
        with open(root + "/train_slices.list") as f:
            self.names = [line.strip() for line in f]

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        path = self.root + "/data/slices/" + self.names[i] + ".h5"
        try:
            import h5py

            with h5py.File(path, "r") as f:
                image, label = f["image"][:], f["label"][:]
        except ImportError:
            with np.load(path) as f:
                image, label = f["image"], f["label"]
        return {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)}


def train(args, snapshot_path):
    db = Slices(args.root_path)
    labeled_slice = patients_to_slices(args.root_path, args.labeled_num)
    half = args.batch_size - args.labeled_bs
    batch = list(range(args.labeled_bs)) + list(range(labeled_slice, labeled_slice + half))
    loader = DataLoader(db, batch_sampler=[batch] * args.max_iterations, num_workers=4)
    torch.nn.Linear(1, 1).cuda()
    seen = {"workers": loader.num_workers, "patch_size": args.patch_size,
            "labeled_slice": labeled_slice, "slices": len(db), "threads": torch.get_num_threads(),
            "classes": args.num_classes, "consistency_from": None}
    iter_num = 0
    for sampled in loader:
        volume = sampled["image"].cuda()
        seen["shape"] = list(volume.shape)
        if iter_num < 1000:
            consistency = 0.0
        else:
            consistency = float(volume[args.labeled_bs:].mean())
            if seen["consistency_from"] is None:
                seen["consistency_from"] = iter_num
        time.sleep(0.02)
        iter_num = iter_num + 1
        logging.info("iteration %d : loss : %f, loss_ce: %f, loss_dice: %f"
                     % (iter_num, 0.5 + consistency, 0.25, 0.25))
        if iter_num >= args.max_iterations:
            break
    with open(os.environ["FAKE_PEER_OBSERVED"], "a") as f:
        f.write(json.dumps(seen) + "\\n")


if __name__ == "__main__":
    snapshot_path = "../model/{}_{}_labeled/{}".format(args.exp, args.labeled_num, args.model)
    os.makedirs(snapshot_path, exist_ok=True)
    logging.basicConfig(filename=snapshot_path + "/log.txt", level=logging.INFO,
                        format="[%(asctime)s.%(msecs)03d] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))
    logging.info(str(args))
    train(args, snapshot_path)
"""


def _npz_instead_of_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    with open(path, "wb") as f:  # same path and keys; np.load tells the format by its header
        np.savez(f, image=image.astype(np.float32), label=label.astype(np.uint8))


def _fake_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(an SSL4MIS folder holding the stand-in, the file it reports to) on a small phantom."""
    checkout = tmp_path / "SSL4MIS"
    (checkout / "code").mkdir(parents=True)
    (checkout / peers.METHODS["mean_teacher"].script).write_text(FAKE_PEER)
    observed = tmp_path / "observed.jsonl"
    monkeypatch.setenv("FAKE_PEER_OBSERVED", str(observed))
    monkeypatch.setattr(peers, "CASES", 8)
    monkeypatch.setattr(peers, "LABELED", 0.5)
    try:
        import h5py  # noqa: F401
    except ImportError:  # the h5 files themselves: test_layout_is_what_ssl4mis_reads
        monkeypatch.setattr(peers_layout, "write_h5", _npz_instead_of_h5)
    return checkout, observed


def test_the_harness_times_both_and_writes_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    checkout, observed = _fake_checkout(tmp_path, monkeypatch)
    out = tmp_path / "peers.json"
    argv = ["--ssl4mis", str(checkout), "--methods", "mean_teacher", "--image-size", "32"]
    argv += ["--iterations", "10", "--rounds", "1", "--threads", "1", "--peer-workers", "0,1"]
    rows = peers.main([*argv, "--json", str(out)])

    assert json.loads(out.read_text()) == rows
    assert [(r["method"], r["image_size"], r["peer_workers"]) for r in rows] == [
        ("mean_teacher", 32, 0),
        ("mean_teacher", 32, 1),
    ]
    for r in rows:
        assert set(r) == {
            "method",
            "image_size",
            "peer_workers",
            "peer_it_s",
            "spinebench_it_s",
            "ratio",
        }
        assert 0 < r["peer_it_s"] < 50  # the stand-in sleeps 20 ms an iteration
        assert r["spinebench_it_s"] > 0
        assert r["ratio"] == pytest.approx(r["spinebench_it_s"] / r["peer_it_s"])
    assert rows[0]["spinebench_it_s"] == rows[1]["spinebench_it_s"]  # one run, two peers
    printed = capsys.readouterr().out
    assert "SSL4MIS workers 0" in printed and "SSL4MIS workers 1" in printed
    assert "consistency term on in both" in printed and "whole benchmark:" in printed

    prepared = prepare(
        RunRequest(
            method="supervised",
            labeled=0.5,
            profile="paper",
            overrides=["data.cases=8", "data.image_size=32"],
        )
    )
    cache = build_or_load("synthetic", prepared.dataset, prepared.config)
    seen = [json.loads(line) for line in observed.read_text().splitlines()]
    assert sorted(s["workers"] for s in seen) == [0, 1]  # adaptation 2
    for s in seen:
        assert s["patch_size"] == [32, 32]  # 3
        assert s["labeled_slice"] == len(cache.slice_indices(list(prepared.split.labeled)))  # 4
        assert s["slices"] == len(cache.slice_indices(list(prepared.split.train)))
        assert s["consistency_from"] == 0  # 5
        assert s["threads"] == 1  # 6
        assert s["shape"] == [24, 1, 32, 32]  # the paper profile's 12 + 12 slices
        assert s["classes"] == prepared.class_map.num_classes


def test_the_step_profile_shows_both_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    checkout, observed = _fake_checkout(tmp_path, monkeypatch)
    argv = ["--ssl4mis", str(checkout), "--image-size", "32", "--iterations", "10"]
    profile_step.main([*argv, "--threads", "1", "--top", "5"])
    printed = capsys.readouterr().out
    for side in ("spinebench, deterministic: ", "spinebench, not deterministic: "):
        assert side in printed and "s/step after 2" in printed.split(side)[1].splitlines()[0]
    peer = printed.split("SSL4MIS code/train_mean_teacher_2D.py, loader workers 0: ")[1]
    assert "s/step after 2 (from its log)" in peer.splitlines()[0]
    assert printed.count("Self CPU time total") == 3  # the launcher profiled the peer
    assert "aten::" in peer
    assert [json.loads(line)["workers"] for line in observed.read_text().splitlines()] == [0]


def test_peer_rate_reads_its_log_after_warm_up_and_skips_validation():
    log = "\n".join(
        [
            "[23:59:58.000] Namespace(root_path='x')",
            "[23:59:58.500] iteration 1 : loss : 1.0",
            "[23:59:59.000] iteration 2 : loss : 1.0",  # warm-up ends here
            "[23:59:59.500] iteration 3 : loss : 1.0",
            "[23:59:59.800] iteration 4 : loss : 1.0",
            "[00:00:09.000] iteration 4 : mean_dice : 0.5 mean_hd95 : 3.0",  # validation
            "[00:00:09.250] iteration 5 : loss : 1.0",  # past midnight
            "[00:00:09.750] iteration 6 : model1 loss : 1.0 model2 loss : 1.0",
            "[00:00:10.000] iteration 7 : loss : 1.0",
        ]
    )
    assert peers.peer_rate(log, warmup=2) == pytest.approx(4 / 1.55)  # 3, 4, 6 and 7
    with pytest.raises(SystemExit, match="no timed iterations"):
        peers.peer_rate(log, warmup=7)


def test_engine_rate_and_records_are_medians_and_their_ratio():
    # windows of 10 iterations: the first (warm-up) is left out; 20 iterations in 2 + 4 s
    assert peers.engine_rate([(10, 1.0), (20, 5.0), (30, 2.5)]) == pytest.approx(20 / 6)
    T = peers.Timing
    rows = peers.records(
        {("cps", 64, 4): [T(2.0, 9.0), T(4.0, 9.0), T(3.0, 9.0)]},
        {("cps", 64): [T(6.0, 9.0), T(5.0, 9.0), T(9.0, 9.0)]},
    )
    assert rows == [
        {
            "method": "cps",
            "image_size": 64,
            "peer_workers": 4,
            "peer_it_s": 3.0,
            "spinebench_it_s": 6.0,
            "ratio": 2.0,
        }
    ]


def test_the_launcher_finds_what_it_adapts_or_refuses():
    gated = (
        "def train(args):\n    iter_num = 0\n    return iter_num < 1000\n"
        "if __name__ == '__main__':\n    skipped = train(None)\n"
    )
    body, guard = split_script(gated, "gated.py", consistency_from_start=True)
    namespace: dict = {"__name__": "__main__"}
    exec(body, namespace)
    assert "skipped" not in namespace  # the __main__ block runs only after the adaptations
    exec(guard, namespace)
    assert namespace["skipped"] is False  # iteration 0 already has its consistency term
    with pytest.raises(AdaptationError, match="expected one `iter_num < N`"):
        split_script(gated.replace("< 1000", "<= 1000"), "cps.py", consistency_from_start=True)
    split_script(gated.replace("< 1000", "<= 1000"), "cps.py", consistency_from_start=False)
    with pytest.raises(AdaptationError, match="not `if __name__"):
        split_script("x = 1\n", "plain.py", consistency_from_start=False)
    with pytest.raises(AdaptationError, match="no global 'patients_to_slices'"):
        adapt_globals({"args": object(), "DataLoader": object()}, 64, 136, 0)


def test_layout_is_what_ssl4mis_reads(tmp_path: Path):
    h5py = pytest.importorskip(
        "h5py",
        reason="h5py is not installed (pip install 'spinebench[peers]'): the h5 files "
        "themselves are not checked; the rest of the layout is, by the harness test",
    )
    prepared = prepare(
        RunRequest(
            method="supervised",
            labeled=0.5,
            profile="paper",
            overrides=["data.cases=8", "data.image_size=32"],
        )
    )
    cache = build_or_load("synthetic", prepared.dataset, prepared.config)
    split = prepared.split
    layout = peers_layout.write_layout(tmp_path / "ACDC", cache, split)
    names = (tmp_path / "ACDC" / "train_slices.list").read_text().splitlines()
    assert len(names) == layout.train_slices == len(cache.slice_indices(list(split.train)))
    labeled = names[: layout.labeled_slices]
    assert {n.rsplit("_slice_", 1)[0] for n in labeled} == set(split.labeled)
    with h5py.File(tmp_path / "ACDC" / "data" / "slices" / f"{names[0]}.h5", "r") as f:
        assert set(f) == {"image", "label"}
        assert f["image"].shape == f["label"].shape == (32, 32)
        assert f["image"].dtype == np.float32 and f["label"].dtype == np.uint8
        first = cache.slice_indices([split.labeled[0]])[0]
        np.testing.assert_array_equal(f["image"][:], cache.images[first])
    val = (tmp_path / "ACDC" / "val.list").read_text().splitlines()
    assert val == list(split.val)
    with h5py.File(tmp_path / "ACDC" / "data" / f"{val[0]}.h5", "r") as f:
        rows = cache.slice_indices([val[0]])
        assert f["image"].shape == f["label"].shape == (len(rows), 32, 32)


def test_the_harness_refuses_a_folder_that_is_not_ssl4mis(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    with pytest.raises(SystemExit):
        peers.parse_args(["--ssl4mis", str(tmp_path), "--methods", "cps"])
    assert (
        "train_cross_pseudo_supervision_2D.py not found: is it SSL4MIS?" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        peers.parse_args(["--ssl4mis", str(tmp_path), "--methods", "unimatch"])
    assert "unknown method(s) ['unimatch']" in capsys.readouterr().err
