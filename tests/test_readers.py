"""Real-data readers: every layout trains and is tracked, orientation comes from the affine,
class maps follow each scheme, and every bad input fails in one line before anything is kept."""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fake_layouts import (
    RAW,
    SPACING,
    draw_case,
    labels_of,
    oriented,
    write_layout,
    write_mha,
    write_nifti,
)
from mlflow.tracking import MlflowClient

from spinebench import plugins
from spinebench.builtin.metrics import hd95
from spinebench.builtin.readers import spine_class
from spinebench.config import resolve
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.data.slices import build_or_load
from spinebench.engine.prepare import prepare
from spinebench.errors import ConfigError, DataError
from spinebench.runinfo import RunRequest

DATASET = {"mrspineseg": "mrspineseg", "spider": "spider", "nnunet": "nnunet", "msd": "nnunet"}
SMALL = [
    "--set",
    "data.image_size=32",
    "--set",
    "train.iterations=4",
    "--set",
    "train.val_every=2",
    "--set",
    "train.log_every=2",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "train.batch_size=4",
    "--set",
    "eval.overlays=1",
]


@pytest.fixture
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A cache of this test alone, so what a failure leaves behind can be inspected."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPINEBENCH_CACHE", str(cache))
    return cache


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """The real entry point, in-process: exit code, stdout, stderr."""
    from spinebench.cli import main

    monkeypatch.setattr(sys, "argv", ["spinebench", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def tracked_runs(runs_dir: Path) -> list:
    db = runs_dir / "mlflow.db"
    if not db.is_file():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def config(**data: object) -> dict:
    return resolve(
        method="supervised",
        method_options={},
        method_defaults={},
        overrides={"data.image_size": 32, **{f"data.{k}": v for k, v in data.items()}},
    )


def dataset(layout: str, root: Path, **data: object):  # type: ignore[no-untyped-def]
    return plugins.datasets()[DATASET[layout]](root, config(**data))


@pytest.mark.parametrize("layout", list(DATASET))
def test_each_layout_trains_and_is_tracked(
    layout: str,
    tmp_path: Path,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    data = tmp_path / layout
    drawn = write_layout(data, layout, axcodes=("P", "S", "L"))
    name = DATASET[layout]
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "run",
        "--dataset",
        name,
        "--data-dir",
        str(data),
        "--method",
        "supervised",
        "--labeled",
        "0.5",
        *SMALL,
    )
    assert code == 0, err
    assert "test/dice" in out
    (run,) = tracked_runs(isolated_env)
    assert run.info.status == "FINISHED"
    assert run.data.tags["spinebench.dataset"] == name
    assert run.data.params["data.dir"] == str(data.resolve())
    assert {"test/dice", "test/hd95", "test/assd", "val/dice"} <= run.data.metrics.keys()
    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    classes = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "class_map.json", str(tmp_path))
        ).read_text()
    )
    assert [c["id"] for c in classes["classes"]] == list(range(1, len(classes["classes"]) + 1))
    split = json.loads(
        Path(client.download_artifacts(run.info.run_id, "split.json", str(tmp_path))).read_text()
    )
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(drawn)


@pytest.mark.parametrize("layout", list(DATASET))
def test_permuted_axes_with_a_matching_affine_give_the_same_slices(
    layout: str, tmp_path: Path, own_cache: Path
):
    plain = write_layout(tmp_path / "plain", layout, cases=3, axcodes=("L", "P", "S"))
    write_layout(tmp_path / "permuted", layout, cases=3, axcodes=("L", "P", "S"), perm=(2, 0, 1))
    a = dataset(layout, tmp_path / "plain")
    b = dataset(layout, tmp_path / "permuted")
    assert a.class_map() == b.class_map()
    for case_a, case_b in zip(a.cases(), b.cases(), strict=True):
        va, vb = a.load(case_a), b.load(case_b)
        drawn = plain[case_a.case_id]
        np.testing.assert_array_equal(va.label, vb.label)
        np.testing.assert_array_equal(va.image, vb.image)
        np.testing.assert_allclose(va.image, drawn.image, atol=1.0)  # int16 storage for .mha
        assert va.spacing == vb.spacing
        np.testing.assert_allclose(va.spacing, SPACING, rtol=1e-6)
        # the reader's class ids are the drawing's structures, superior row 0 at the top
        assert (va.label > 0).sum() == (labels_of(drawn, RAW[layout]) > 0).sum()
    cfg = config()
    ca, cb = build_or_load("a", a, cfg), build_or_load("b", b, cfg)
    np.testing.assert_array_equal(ca.images, cb.images)
    np.testing.assert_array_equal(ca.labels, cb.labels)


def test_superior_is_row_zero_and_left_is_slice_zero(tmp_path: Path):
    """A lone voxel at the top-left-posterior corner lands at index (0, 0, 0)."""
    image = np.zeros((6, 32, 32), np.float32)
    image[0, 0, 0] = 1.0
    for axcodes in (("R", "A", "S"), ("L", "P", "S"), ("S", "A", "L"), ("A", "I", "R")):
        stored, affine = oriented(image, axcodes)
        (root := tmp_path / "".join(axcodes)).mkdir()
        write_nifti(root / "MR" / "Case1.nii.gz", stored, affine)
        write_nifti(root / "Mask" / "mask_case1.nii.gz", stored.astype(np.uint8), affine)
        ds = dataset("mrspineseg", root)
        volume = ds.load(ds.cases()[0])
        assert volume.image[0, 0, 0] == 1.0 and volume.image.sum() == 1.0, axcodes
        assert nib.aff2axcodes(affine) == axcodes


def test_spacing_in_slice_order_reaches_the_cache_and_the_metrics(tmp_path: Path, own_cache: Path):
    write_layout(tmp_path, "nnunet", cases=3, axcodes=("S", "L", "A"))
    ds = dataset("nnunet", tmp_path)
    cache = build_or_load("nnunet", ds, config())
    case = ds.cases()[0]
    np.testing.assert_allclose(cache.cases[case.case_id].spacing, SPACING, rtol=1e-6)
    spacing = cache.cases[case.case_id].spacing
    truth = np.zeros(cache.native_label(case.case_id).shape, np.uint8)
    truth[2, 10, 10] = 1
    for axis, mm in enumerate(SPACING):  # one voxel off along each axis is that axis's mm
        moved = np.roll(truth, 1, axis=axis)
        assert hd95(moved, truth, [1], spacing)[1] == pytest.approx(mm, rel=1e-5)


def test_spider_maps_its_scheme_and_picks_the_series(tmp_path: Path, own_cache: Path):
    drawn = write_layout(tmp_path, "spider", cases=3, series=("t1", "t2", "t2_SPACE"))
    t1 = dataset("spider", tmp_path, sequence="t1")
    assert [c.case_id for c in t1.cases()] == ["1_t1", "2_t1", "3_t1"]
    assert [c.case_id for c in dataset("spider", tmp_path, sequence="space").cases()] == [
        "1_t2_SPACE",
        "2_t2_SPACE",
        "3_t2_SPACE",
    ]
    cm = t1.class_map()
    assert cm.names == ["L5", "L4", "L3", "spinal canal", "L5/S1", "L4/L5", "L3/L4"]
    assert [c.kind for c in cm.classes] == ["vertebra"] * 3 + ["canal"] + ["disc"] * 3
    case = t1.cases()[0]
    volume = t1.load(case)
    raw = labels_of(drawn[case.case_id], RAW["spider"])
    assert 103 in raw and 3 not in raw  # the top vertebra is only partly visible ...
    assert (volume.label == cm.names.index("L3") + 1).sum() == (raw == 103).sum()  # ... still L3
    assert list(own_cache.glob("spider-labels/*.json")), "the label scan is cached"
    with pytest.raises(ConfigError, match=r"data\.sequence 'flair'"):
        dataset("spider", tmp_path, sequence="flair")


def test_spider_missing_series_names_the_ones_found(tmp_path: Path):
    write_layout(tmp_path, "spider", cases=3, series=("t1",))
    with pytest.raises(DataError, match=r"no t2 series \(found t1\)"):
        dataset("spider", tmp_path, sequence="t2").cases()


def test_class_names_become_kinds_and_prompts():
    assert mrspineseg_class_map().classes == tuple(
        spine_class(c.id, c.name) for c in mrspineseg_class_map().classes
    )
    assert spine_class(1, "L1").prompt_name == "L1 vertebra"
    assert spine_class(1, "L1-L2").prompt_name == "L1-L2 intervertebral disc"
    assert spine_class(1, "vertebrae_L1") == spine_class(1, "vertebrae_L1")
    assert (spine_class(1, "vertebrae_L1").kind, spine_class(1, "vertebrae_L1").prompt_name) == (
        "vertebra",
        "vertebrae L1",
    )
    assert spine_class(2, "spinal cord").kind == "other"


def test_a_tiny_fraction_still_labels_one_case(tmp_path: Path):
    """A fraction never yields zero labeled cases: the split keeps at least one."""
    write_layout(tmp_path, "mrspineseg")
    prepared = prepare(
        RunRequest(method="supervised", labeled=0.001, dataset="mrspineseg", data_dir=tmp_path)
    )
    assert len(prepared.split.labeled) == 1


# -- bad inputs: one line naming the file and the fix, exit 2, nothing kept -----------------


def _mask(root: Path, n: int = 2) -> Path:
    return root / "Mask" / f"mask_case{n}.nii.gz"


def _image(root: Path, n: int = 2) -> Path:
    return root / "MR" / f"Case{n}.nii.gz"


def _rewrite(path: Path, change: Callable[[np.ndarray, np.ndarray], tuple]) -> None:
    img = nib.load(path)
    data, affine = change(np.asarray(img.dataobj), img.affine.copy())
    write_nifti(path, data, affine)


def _truncate(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))


def _unoriented(path: Path) -> None:
    img = nib.load(path)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, path)


def _empty_masks(root: Path) -> None:
    for mask in (root / "Mask").glob("*.nii.gz"):
        _rewrite(mask, lambda d, a: (np.zeros_like(d), a))


def _nan(d: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = d.astype(np.float32)
    d[0, 0, 0] = np.nan
    return d, a


def _shifted(d: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a[:3, 3] += 5.0
    return d, a


def _with_value_42(d: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = d.copy()
    d[0, 0, 0] = 42
    return d, a


def _half_label(d: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mask resampled with linear interpolation: a voxel between background and class 1."""
    d = d.astype(np.float32)
    d[0, 0, 0] = 0.5
    return d, a


def _link_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path)


def _dangling_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.with_name("gone.nii.gz"))


BAD_INPUTS = {
    "missing folder": (lambda r: None, "does not exist", "nowhere"),
    "image without mask": (lambda r: _mask(r).unlink(), "no mask at", "Case2.nii.gz"),
    "mask without image": (
        lambda r: _image(r).unlink(),
        "mask without an image",
        "mask_case2.nii.gz",
    ),
    "unreadable file": (
        lambda r: _image(r).write_bytes(b"not a nifti"),
        "not a readable NIfTI file",
        "Case2.nii.gz",
    ),
    "truncated file": (lambda r: _truncate(_image(r)), "truncated or unreadable", "Case2.nii.gz"),
    "shape mismatch": (
        lambda r: _rewrite(_mask(r), lambda d, a: (d[:, :-2], a)),
        "differs from its image",
        "mask_case2.nii.gz",
    ),
    "affine mismatch": (
        lambda r: _rewrite(_mask(r), _shifted),
        "affine differs",
        "mask_case2.nii.gz",
    ),
    "label outside the class map": (
        lambda r: _rewrite(_mask(r), _with_value_42),
        "[42] are outside the class map",
        "mask_case2.nii.gz",
    ),
    "empty mask set": (_empty_masks, "is empty", "/data is empty"),
    "NaN voxels": (lambda r: _rewrite(_image(r), _nan), "NaN or Inf", "Case2.nii.gz"),
    "unknown orientation": (
        lambda r: _unoriented(_image(r)),
        "orientation unknown",
        "Case2.nii.gz",
    ),
    "fractional mask values": (
        lambda r: _rewrite(_mask(r), _half_label),
        "mask values must be whole class numbers, found 0.5",
        "mask_case2.nii.gz",
    ),
    "symbolic link loop": (lambda r: _link_loop(_image(r)), "symbolic link loop", "Case2.nii.gz"),
    "dangling symbolic link": (
        lambda r: _dangling_link(_mask(r)),
        "symbolic link to a missing file",
        "mask_case2.nii.gz",
    ),
    "data folder is a file": (lambda r: None, "is a file, not a folder", "notes.txt"),
}


@pytest.mark.parametrize("problem", list(BAD_INPUTS))
def test_bad_input_fails_in_one_line_and_leaves_nothing(
    problem: str,
    tmp_path: Path,
    isolated_env: Path,
    own_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    spoil, message, names = BAD_INPUTS[problem]
    root = tmp_path / "data"
    write_layout(root, "mrspineseg")
    spoil(root)
    data_dir = tmp_path / "nowhere" if problem == "missing folder" else root
    if problem == "data folder is a file":
        data_dir = tmp_path / "notes.txt"
        data_dir.write_text("not a dataset")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "run",
        "--dataset",
        "mrspineseg",
        "--data-dir",
        str(data_dir),
        "--method",
        "supervised",
        "--labeled",
        "0.5",
        *SMALL,
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0] and names in lines[0], lines[0]
    assert "Traceback" not in err
    slices = own_cache / "slices"
    assert not slices.exists() or not [p for p in slices.iterdir() if p.is_dir()]
    assert tracked_runs(isolated_env) == []
    assert not (isolated_env / "mlflow.db").exists()  # refused before the store is created


def test_a_constant_image_is_one_warning_not_an_error(tmp_path: Path, own_cache: Path):
    root = tmp_path / "data"
    write_layout(root, "mrspineseg")
    _rewrite(_image(root), lambda d, a: (np.zeros_like(d), a))
    with pytest.warns(UserWarning, match=r"Case2.nii.gz: every voxel is 0: a constant image"):
        build_or_load("mrspineseg", dataset("mrspineseg", root), config())


@pytest.mark.parametrize(
    ("layout", "spoil", "message"),
    [
        (
            "spider",
            lambda r: (r / "masks" / "2_t2.mha").write_bytes(
                (r / "masks" / "2_t2.mha").read_bytes()[:300]
            ),
            "2_t2.mha: truncated or unreadable",
        ),
        ("spider", lambda r: (r / "images" / "3_t2.mha").unlink(), "3_t2.mha: mask without"),
        ("nnunet", lambda r: (r / "dataset.json").write_text("{labels"), "not valid JSON"),
        (
            "nnunet",
            lambda r: (r / "labelsTr" / "spine_002.nii.gz").unlink(),
            "spine_002_0000.nii.gz: no mask at",
        ),
        (
            "msd",
            lambda r: (r / "imagesTr" / "spine_002.nii.gz").unlink(),
            "spine_002.nii.gz: listed in dataset.json but missing",
        ),
    ],
)
def test_other_layouts_name_the_bad_file(
    layout: str,
    spoil: Callable[[Path], object],
    message: str,
    tmp_path: Path,
    own_cache: Path,
    capfd: pytest.CaptureFixture[str],
):
    write_layout(tmp_path, layout)
    spoil(tmp_path)
    capfd.readouterr()
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        ds = dataset(layout, tmp_path)
        ds.class_map()
        build_or_load(layout, ds, config())
    assert capfd.readouterr().err == ""  # ITK prints nothing of its own before our line
    assert not (own_cache / "slices").exists() or not [
        p for p in (own_cache / "slices").iterdir() if p.is_dir()
    ]


def test_spider_mask_value_outside_its_scheme_is_an_error(tmp_path: Path, own_cache: Path):
    write_layout(tmp_path, "spider", cases=3)
    label = labels_of(draw_case(seed=2), RAW["spider"]).astype(np.uint8)
    label[0, 0, 0] = 150
    stored, affine = oriented(label, ("P", "S", "L"))
    write_mha(tmp_path / "masks" / "2_t2.mha", stored, affine)
    with pytest.raises(DataError, match=r"2_t2.mha: label values \[150\] are outside"):
        dataset("spider", tmp_path).class_map()


def test_nnunet_v1_listing_and_itk_file_endings_read_the_same_cases(tmp_path: Path):
    write_layout(tmp_path / "v2", "nnunet", cases=3)
    reference = dataset("nnunet", tmp_path / "v2")
    v1 = tmp_path / "v1"
    write_layout(v1, "msd", cases=3)
    for image in (v1 / "imagesTr").glob("*.nii.gz"):  # v1 lists case.nii.gz, stores case_0000
        image.rename(image.with_name(image.name.replace(".nii.gz", "_0000.nii.gz")))
    assert [c.image.name for c in dataset("msd", v1).cases()] == [
        f"spine_00{n}_0000.nii.gz" for n in (1, 2, 3)
    ]
    mha = tmp_path / "mha"
    for case in reference.cases():
        for path, folder in ((case.image, "imagesTr"), (case.label, "labelsTr")):
            img = nib.load(path)
            name = path.name.replace(".nii.gz", ".mha")
            write_mha(mha / folder / name, np.asarray(img.dataobj), img.affine)
    meta = json.loads((tmp_path / "v2" / "dataset.json").read_text())
    (mha / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".mha"}))
    converted = dataset("nnunet", mha)
    for a, b in zip(reference.cases(), converted.cases(), strict=True):
        va, vb = reference.load(a), converted.load(b)
        np.testing.assert_array_equal(va.label, vb.label)
        np.testing.assert_allclose(va.image, vb.image)
        np.testing.assert_allclose(va.spacing, vb.spacing, rtol=1e-6)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"background": 0, "L1": [1, 2]}, "region-based labels are not supported"),
        ({"background": 0, "L1": 1, "ignore": 2}, "'ignore' label is not supported"),
        ({"background": 0, "L1": 1, "L2": 1}, "gives a value to two classes"),
        ({"background": 0}, "holds only background"),
    ],
)
def test_nnunet_labels_it_cannot_train_on_are_named(labels: dict, message: str, tmp_path: Path):
    write_layout(tmp_path, "nnunet", cases=3)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    (tmp_path / "dataset.json").write_text(json.dumps({**meta, "labels": labels}))
    with pytest.raises(DataError, match=re.escape(message)):
        dataset("nnunet", tmp_path)
