"""A PNG preview of generated cases for people to look at: mid slice, labels, lateral slice.

It shows the sagittal planes in the radiological display convention and is the only part of
the phantom that needs matplotlib (imported when a montage is saved, through its
object-oriented API so the caller's pyplot backend is untouched); nothing in the benchmark
depends on it, so it is kept out of the generation and writing code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinebench.data.phantom.generate import generate_case
from spinebench.data.phantom.writing import case_seed

# Radiological convention for sagittal MR: the patient faces the viewer's left, i.e. anterior
# is on the left and superior at the top (DICOM rows run anterior -> posterior).
_ANTERIOR_ON_LEFT = True


def _display(plane: np.ndarray) -> np.ndarray:
    """A (ny, nz) sagittal plane as rows = superior->inferior, columns per the convention."""
    out = plane.T[::-1]
    return out[:, ::-1] if _ANTERIOR_ON_LEFT else out


def save_montage(path: Path, seed: int = 0, cases: int = 4) -> None:
    """Save a PNG showing, per case, the mid slice, its label overlay and a lateral slice."""
    # The object-oriented API renders with Agg without touching the caller's pyplot backend.
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    colours = colormaps["tab20"](np.linspace(0, 1, 20))
    cmap = ListedColormap(colours[np.r_[0:20:2, 1:20:2]][:19])
    fig = Figure(figsize=(9, 3.1 * cases))
    axes = fig.subplots(cases, 3, squeeze=False)
    for row in range(cases):
        case = generate_case(case_seed(seed, row))
        n = case.image.shape[0]
        mid, lateral = n // 2, max(n // 2 - 4, 0)
        aspect = case.affine[2, 2] / case.affine[1, 1]
        lo, hi = np.percentile(case.image, [0.5, 99.5])
        img = _display(case.image[mid])
        lab = _display(case.label[mid]).astype(float)
        ax = axes[row]
        ax[0].imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        ax[1].imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        ax[1].imshow(
            np.ma.masked_equal(lab, 0),
            cmap=cmap,
            vmin=0.5,
            vmax=19.5,
            alpha=0.5,
            aspect=aspect,
            interpolation="nearest",
        )
        ax[2].imshow(_display(case.image[lateral]), cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        ax[0].set_title(f"case {row}: mid slice {mid}", fontsize=9)
        ax[1].set_title("labels (ids 1-19)", fontsize=9)
        ax[2].set_title(f"lateral slice {lateral}", fontsize=9)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
        ax[0].set_ylabel("superior up, anterior left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
