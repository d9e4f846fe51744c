"""One case end to end, and the version that keys every cached copy of its arrays.

``generate_case`` samples the anatomy, draws the scene, then simulates the MR acquisition
(``_finish``: coil sensitivity and bias field, contrast, Rician noise, a per-case gain) and
returns a ``PhantomCase`` in RAS voxel order. ``PHANTOM_VERSION`` lives here, beside the code
whose output it versions, so a change that alters the arrays and the bump it needs sit in one
place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinebench.data.phantom.anatomy import _sample_anatomy
from spinebench.data.phantom.drawing import (
    _draw_background,
    _draw_bodies,
    _draw_canal,
    _draw_discs,
    _draw_posterior_elements,
    _draw_sacrum,
)
from spinebench.data.phantom.scene import _F32, _Scene

PHANTOM_VERSION = "1"
"""Bump whenever the generated arrays change for a given seed: it keys the dataset cache."""


@dataclass(frozen=True)
class PhantomCase:
    """One generated case, in RAS voxel order so readers treat it like real NIfTI data.

    ``image`` is float32 and ``label`` uint8 (MRSpineSeg ids 0..19), both shaped
    (n_slices, ny, nz): axis 0 Left->Right (sagittal slices), axis 1 Posterior->Anterior,
    axis 2 Inferior->Superior. ``affine`` is 4x4 float64 RAS+ with the spacing on its diagonal
    and the origin chosen so the volume is centred on (0, 0, 0).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


def _finish(sc: _Scene, rng: np.random.Generator) -> np.ndarray:
    """MR acquisition: coil sensitivity and bias field, contrast, Rician noise, gain."""
    img = sc.image
    n, ny, nz = img.shape
    yn = np.linspace(-1.0, 1.0, ny, dtype=_F32)[None, :, None]
    zn = np.linspace(-1.0, 1.0, nz, dtype=_F32)[None, None, :]
    xn = np.linspace(-1.0, 1.0, n, dtype=_F32)[:, None, None]
    c = rng.normal(0.0, 0.12, 6)
    coil = rng.uniform(0.25, 0.7)  # posterior spine-array coil: signal falls off anteriorly
    log_bias = (
        -coil * (yn + 1.0)
        + c[0] * yn
        + c[1] * zn
        + c[2] * zn**2
        + c[3] * yn * zn
        + c[4] * xn
        - abs(c[5]) * zn**4
    )
    img = np.clip(img, 0.0, None) ** _F32(rng.uniform(0.85, 1.2))
    img = img * np.exp(log_bias).astype(_F32)
    img = img / max(float(np.percentile(img, 99.5)), 1e-3)
    sigma = rng.uniform(0.012, 0.035)
    n1 = rng.standard_normal(img.shape, dtype=_F32) * _F32(sigma)
    n2 = rng.standard_normal(img.shape, dtype=_F32) * _F32(sigma)
    img = np.sqrt((img + n1) ** 2 + n2**2)
    gain = float(np.exp(rng.uniform(np.log(500.0), np.log(2000.0))))
    return (img * _F32(gain)).astype(_F32)


def generate_case(
    seed: int,
    *,
    n_slices: int = 12,
    size: tuple[int, int] = (128, 128),
    spacing: tuple[float, float, float] = (4.4, 2.5, 2.5),
) -> PhantomCase:
    """Generate one sagittal lumbar T2 phantom; the same seed gives bit-identical arrays.

    ``size`` is (ny, nz) in-plane voxels and ``spacing`` (LR, AP, SI) in mm; the anatomy is in
    millimetres, so a different size/spacing changes the field of view, not the anatomy. The
    defaults (320 mm FOV) fit the sacrum and the top level T8..T11 as designed.
    """
    if n_slices < 1 or min(size) < 8 or min(spacing) <= 0:
        raise ValueError(
            f"need n_slices >= 1, size >= 8 and positive spacing, got {n_slices}, {size}, {spacing}"
        )
    ny, nz = int(size[0]), int(size[1])
    sp = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    rng = np.random.default_rng(seed)
    anat = _sample_anatomy(rng, ny * sp[1], nz * sp[2])
    sc = _Scene(anat, rng, n_slices, ny, nz, sp)
    _draw_background(sc)
    _draw_canal(sc)
    _draw_posterior_elements(sc)
    _draw_discs(sc)
    _draw_sacrum(sc)
    _draw_bodies(sc)
    image = _finish(sc, rng)
    shape = np.array([n_slices, ny, nz], dtype=float)
    affine = np.diag([sp[0], sp[1], sp[2], 1.0])
    affine[:3, 3] = -np.array(sp) * (shape - 1) / 2
    return PhantomCase(image=image, label=sc.label, affine=affine)
