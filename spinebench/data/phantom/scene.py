"""The canvas the phantom is drawn on, and the geometry every structure shares.

``_Scene`` holds the image and label buffers, the pixel grids in millimetres, the curvilinear
coordinates along the spine's centreline and the smooth random textures; beside it are the
primitives the drawings are built from: signed distances, the lateral fraction of a thick
slice, axial-ellipse chords, body frames, endplate surfaces and the column's profile. They are
kept apart from the structures themselves so that each ``_draw_*`` function reads as anatomy
and the partial-volume machinery has one home.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from spinebench.data.phantom.anatomy import _Anatomy

_F32 = np.float32


def _box_sd(x: np.ndarray, y: np.ndarray, bx: Any, by: Any, r: Any) -> np.ndarray:
    """Signed distance (mm, negative inside) to a centred box with rounded corners."""
    bx = np.maximum(bx, 0.0)
    by = np.maximum(by, 0.0)
    r = np.minimum(np.minimum(r, bx), by)
    qx = np.abs(x) - bx + r
    qy = np.abs(y) - by + r
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def _lateral(xi: np.ndarray, half_width: Any, soft: float = 4.0) -> np.ndarray:
    """Fraction of a thick slice at lateral offset ``xi`` inside a band |x| < half_width."""
    return np.clip((half_width - np.abs(xi)) / soft + 0.5, 0.0, 1.0)


def _chord(xi: np.ndarray, half_width: Any) -> np.ndarray:
    """Sagittal chord fraction of an axial ellipse: why lateral slices show smaller sections."""
    return np.sqrt(np.clip(1.0 - (xi / half_width) ** 2, 0.0, 1.0))


class _Scene:
    """Image/label buffers plus the grids every structure is drawn on."""

    def __init__(
        self,
        anat: _Anatomy,
        rng: np.random.Generator,
        n: int,
        ny: int,
        nz: int,
        spacing: tuple[float, float, float],
    ) -> None:
        self.anat = anat
        self.dx, self.dy, self.dz = spacing
        self.px = 0.5 * (self.dy + self.dz)
        self.n, self.ny, self.nz = n, ny, nz
        self.yv = ((np.arange(ny) + 0.5) * self.dy).astype(_F32)
        self.zv = ((np.arange(nz) + 0.5) * self.dz).astype(_F32)
        offsets = (np.arange(n) - (n - 1) / 2) * self.dx - anat.x0
        self.xi = offsets.astype(_F32)[:, None, None]
        self.image = np.zeros((n, ny, nz), _F32)
        self.label = np.zeros((n, ny, nz), np.uint8)
        self.tex_fine = _texture(rng, (n, ny, nz), spacing, 1.2)
        self.tex_mid = _texture(rng, (n, ny, nz), spacing, 3.5)
        self.tex_big = _texture(rng, (n, ny, nz), spacing, 7.0)
        self.tex_streak = _texture(rng, (n, ny, nz), spacing, (2.0, 1.2, 9.0))

        # Curvilinear coordinates (s along the centreline, t towards anterior) for every pixel.
        Y, Z = np.meshgrid(self.yv, self.zv, indexing="ij")
        pts = np.stack([Y.ravel(), Z.ravel()], axis=1)
        _, idx = cKDTree(anat.pos).query(pts)
        d = pts - anat.pos[idx]
        sp, cp = np.sin(anat.phi[idx]), np.cos(anat.phi[idx])
        self.s = (anat.s[idx] + d[:, 0] * sp + d[:, 1] * cp).reshape(ny, nz).astype(_F32)
        self.t = (d[:, 0] * cp - d[:, 1] * sp).reshape(ny, nz).astype(_F32)
        self.Y, self.Z = Y, Z

    def alpha(self, sd: np.ndarray) -> np.ndarray:
        """Soft coverage of a pixel by a shape from its signed distance: partial volume."""
        return np.clip(0.5 - sd / self.px, 0.0, 1.0)

    def window(
        self, centre: np.ndarray, radius: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """Index slices and local grids of a square around ``centre`` (y, z), or None if
        off-image."""
        cy, cz = float(centre[0]), float(centre[1])
        j0 = max(int((cy - radius) / self.dy), 0)
        j1 = min(int((cy + radius) / self.dy) + 2, self.ny)
        k0 = max(int((cz - radius) / self.dz), 0)
        k1 = min(int((cz + radius) / self.dz) + 2, self.nz)
        if j0 >= j1 or k0 >= k1:
            return None
        sj, sk = slice(j0, j1), slice(k0, k1)
        return sj, sk, self.yv[sj][None, :, None], self.zv[sk][None, None, :]

    def paint(self, sj: slice, sk: slice, alpha: np.ndarray, value: Any) -> None:
        view = self.image[:, sj, sk]
        view += alpha * (value - view)

    def mark(self, sj: slice, sk: slice, mask: np.ndarray, class_id: int) -> None:
        view = self.label[:, sj, sk]
        view[np.broadcast_to(mask, view.shape)] = class_id


def _texture(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    sigma_mm: float | tuple[float, float, float],
) -> np.ndarray:
    """Unit-variance smooth random field with correlation lengths in millimetres."""
    noise = rng.standard_normal(shape, dtype=_F32)
    sig = np.broadcast_to(np.asarray(sigma_mm, dtype=float), (3,))
    sigma = [float(sm / sp) for sm, sp in zip(sig, spacing, strict=True)]
    field = ndimage.gaussian_filter(noise, sigma=sigma, mode="reflect")
    return field / max(float(field.std()), 1e-6)


def _frame(Y: np.ndarray, Z: np.ndarray, c: np.ndarray, phi: float) -> tuple[np.ndarray, ...]:
    """Local body coordinates: u along the body axis (superior), v towards anterior."""
    dy, dz = Y - _F32(c[0]), Z - _F32(c[1])
    sp, cp = _F32(np.sin(phi)), _F32(np.cos(phi))
    return dy * sp + dz * cp, dy * cp - dz * sp


def _section(anat: _Anatomy, k: int, xi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sagittal section of body k at lateral offset xi: (AP centre shift, half depth)."""
    f = _chord(xi, anat.w[k])
    return -0.6 * anat.a[k] * (1.0 - f), anat.a[k] * f


def _surfaces(
    anat: _Anatomy, k: int, v: np.ndarray, xi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Superior and inferior endplate height (u) of body k as a function of v."""
    h = anat.h[k]
    if h <= 0:  # the sacrum: a flat S1 endplate at u = 0
        zero = np.zeros(np.broadcast_shapes(v.shape, xi.shape), _F32)
        return zero, zero
    vc, ha = _section(anat, k, xi)
    f = _chord(xi, anat.w[k])
    rel = np.clip((v - vc) / np.maximum(ha, 1e-3), -1.0, 1.0)
    conc = anat.concavity[k] * (1.0 - rel**2)
    tt, tb = anat.tau_top[k], anat.tau_bot[k]
    hh = (h - v * (tt - tb) / 2) * (0.9 + 0.1 * f) * (1.0 - conc)
    m = -v * (tt + tb) / 2
    return m + hh, m - hh


def _column_profile(an: _Anatomy, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half depth of the column and canal depth along the centreline (sacrum tapering)."""
    L = an.sacrum_length
    q = np.clip(-s / L, 0.0, 1.0)
    a_s = np.interp(s, an.s_centre[1:], an.a[1:])
    a_s = np.where(s < 0, an.a[0] * (1.0 - 0.65 * q**1.3), a_s)
    cd_s = np.interp(s, an.s_centre[1:], an.cd[1:])
    cd_s = np.where(s < 0, (an.cd[0] * (1 - q) + 3.0) * (1 - 0.2 * q), cd_s)
    return a_s.astype(_F32), cd_s.astype(_F32)
