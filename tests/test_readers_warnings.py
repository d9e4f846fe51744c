"""Legal but suspicious data (issue 27, item 5): one warning line each and the data still
loads; what stands where a file belongs is one error line."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from fake_layouts import write_layout
from test_readers import _mask, _rewrite, config, dataset, own_cache  # noqa: F401 (a fixture)

from spinebench.data.slices import build_or_load, warn_background_only_labeled
from spinebench.errors import DataError

pytestmark = pytest.mark.usefixtures("own_cache")  # each test's cache is its own


def test_volumes_a_reader_leaves_unread_are_one_warning(tmp_path: Path):
    root = tmp_path / "data"
    write_layout(root, "mrspineseg")
    (root / "MR" / "Case9.nii").write_bytes(b"exported uncompressed")
    with pytest.warns(UserWarning, match=r"1 file\(s\) not read \(Case9.nii\): only \*.nii.gz"):
        cases = dataset("mrspineseg", root).cases()
    assert "Case9" not in {c.case_id for c in cases}


def test_a_case_whose_mask_is_all_background_is_one_warning(tmp_path: Path):
    root = tmp_path / "data"
    write_layout(root, "mrspineseg")
    _rewrite(_mask(root), lambda d, a: (np.zeros_like(d), a))
    with pytest.warns(UserWarning, match=r"1 of 5 cases have a mask that is all background \("):
        cache = build_or_load("mrspineseg", dataset("mrspineseg", root), config())
    assert cache.background_only == ("Case2",)
    assert not cache.has_foreground("Case2") and cache.has_foreground("Case1")


def test_a_labeled_case_without_foreground_is_warned_of(tmp_path: Path):
    root = tmp_path / "data"
    write_layout(root, "mrspineseg")
    _rewrite(_mask(root), lambda d, a: (np.zeros_like(d), a))
    with pytest.warns(UserWarning):
        cache = build_or_load("mrspineseg", dataset("mrspineseg", root), config())
    with pytest.warns(UserWarning, match=r"1 of the 2 labeled cases have a mask that is all"):
        warn_background_only_labeled(cache, ["Case1", "Case2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_background_only_labeled(cache, ["Case1", "Case3"])  # no warning


def test_a_class_dataset_json_names_but_no_mask_holds_is_one_warning(tmp_path: Path):
    root = tmp_path / "data"
    write_layout(root, "nnunet", cases=3)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"]["typo_vertebra"] = max(int(v) for v in meta["labels"].values()) + 1
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"1 of \d+ classes named in .*dataset.json occur in no "
                      r"mask: typo_vertebra \(\d+\)"):  # fmt: skip
        build_or_load("nnunet", dataset("nnunet", root), config())


def test_a_named_pipe_where_a_mask_belongs_is_one_line(tmp_path: Path):
    root = tmp_path / "data"
    write_layout(root, "mrspineseg")
    _mask(root).unlink()
    os.mkfifo(_mask(root))  # reading it would wait forever
    with pytest.raises(DataError, match=r"mask_case2.nii.gz: is a named pipe \(FIFO\), not a file"):
        build_or_load("mrspineseg", dataset("mrspineseg", root), config())
