"""A procedural sagittal T2-weighted lumbar spine MR phantom with MRSpineSeg labels.

The phantom stands in for MRSpineSeg so that the whole benchmark runs offline, deterministically
and in seconds. It is built to be learnable but not trivial: every vertebra looks like its
neighbours, so a network must identify a level by counting from the sacrum (class identity is
positional), and the top of the field of view moves between T8 and T11 so the highest classes
are partly or wholly absent, as in the real data.

Geometry is modelled in millimetres on a sagittal (AP x SI) plane, with the lateral coordinate
of each slice deciding how much of each structure it cuts: vertebral bodies and discs are
elliptic in the axial plane, so their sagittal sections shrink laterally; the canal and the
spinous processes exist only in the central slices; pedicles and facet pillars only laterally.
Everything is vectorised with numpy (bounding boxes for per-level shapes); one 12x128x128
case takes about 0.1-0.2 s on one core.

Intensities are in arbitrary scanner-like units (a per-case gain of roughly 500-2000), so
pipelines must normalise per case just as they must for real MR.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree
from scipy.special import ndtr

from spinebench.atomic import write_atomic
from spinebench.data.classmap import mrspineseg_class_map

PHANTOM_VERSION = "1"
"""Bump whenever the generated arrays change for a given seed: it keys the dataset cache."""

__all__ = [
    "PHANTOM_VERSION",
    "PhantomCase",
    "case_seed",
    "generate_case",
    "save_montage",
    "write_dataset",
]

_F32 = np.float32
_ALL = (slice(None), slice(None))  # paint on the whole (ny, nz) plane

# Anatomy tables by level counted from the sacrum (index 0 = S, 1 = L5, ..., 5 = L1, 6 = T12,
# ..., 9 = T9, 10 = T8, ..., 14 = T4). Adult means in mm, scaled per case. Columns: body height,
# body half depth (AP), body half width (LR), canal depth (AP).
_LEVELS = {
    "S": (0.0, 18.0, 32.0, 14.0),
    "L5": (25.5, 18.0, 23.0, 17.0),
    "L4": (26.0, 17.5, 22.5, 16.0),
    "L3": (25.5, 17.0, 22.0, 15.0),
    "L2": (25.0, 16.5, 21.0, 15.0),
    "L1": (24.0, 16.0, 20.0, 15.0),
    "T12": (22.5, 15.0, 18.5, 14.0),
    "T11": (21.0, 14.0, 17.0, 14.0),
    "T10": (19.5, 13.5, 16.0, 13.5),
    "T9": (18.5, 13.0, 15.0, 13.5),
    "T8": (18.0, 12.5, 14.5, 13.0),
    "T7": (17.5, 12.5, 14.0, 13.0),
    "T6": (17.0, 12.0, 13.5, 13.0),
    "T5": (16.5, 12.0, 13.0, 13.0),
    "T4": (16.0, 11.5, 13.0, 13.0),
}
# Disc k lies between level k and level k + 1. Columns: height at the centre, probability of
# degeneration (commonest at the lowest lumbar levels).
_DISCS = {
    "L5/S": (10.5, 0.35),
    "L4/L5": (11.0, 0.35),
    "L3/L4": (10.5, 0.2),
    "L2/L3": (9.5, 0.15),
    "L1/L2": (8.5, 0.1),
    "T12/L1": (7.0, 0.08),
    "T11/T12": (6.0, 0.06),
    "T10/T11": (5.5, 0.05),
    "T9/T10": (5.0, 0.05),
    "T8/T9": (4.5, 0.05),
    "T7/T8": (4.5, 0.05),
    "T6/T7": (4.5, 0.05),
    "T5/T6": (4.5, 0.05),
    "T4/T5": (4.5, 0.05),
}
_LEVEL_TABLE = np.array(list(_LEVELS.values()))
_DISC_TABLE = np.array(list(_DISCS.values()))
_N_LEVELS = len(_LEVELS)
_LABELLED_LEVELS = 10  # S, L5..L1, T12..T9 carry labels 1..10; T8 and above are background
_TOP_LEVEL_CHOICES = (7, 8, 9, 10)  # T11, T10, T9, T8: the highest (partly) visible vertebra
_SACRUM_MARGIN_MM = 40.0  # the S1 endplate stays at least this far above the bottom edge

# T2 intensities relative to CSF = 1 (before per-case jitter, gamma, bias and gain).
_TISSUE = {
    "fat": 0.80,
    "muscle": 0.24,
    "csf": 1.0,
    "cord": 0.42,
    "nucleus": 0.86,
    "annulus": 0.30,
    "dark_nucleus": 0.20,
    "marrow": 0.55,
    "cortex": 0.07,
    "ligament": 0.12,
    "flow_void": 0.05,
    "ivc": 0.45,
    "liver": 0.26,
    "lung": 0.03,
    "bowel_fluid": 0.88,
    "bowel_wall": 0.34,
    "gas": 0.03,
    "mesentery": 0.66,
    "urine": 0.97,
    "skin": 0.40,
    "epidural_fat": 0.70,
    "root": 0.28,
    "heart": 0.20,
    "modic": 0.78,
}


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


# ----------------------------------------------------------------------------------------------
# Small geometric helpers


def _smooth_step(s: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """0 -> 1 step of Gaussian width: spreads a total bend over an arc around ``mu``."""
    return ndtr((s - mu) / sigma)


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


# ----------------------------------------------------------------------------------------------
# Anatomy sampling


@dataclass
class _Anatomy:
    """Everything random about one case, in image millimetres (y anterior, z superior)."""

    s: np.ndarray  # centreline arc length samples (0 = S1 endplate centre, + superior)
    pos: np.ndarray  # (m, 2) centreline points (y, z)
    phi: np.ndarray  # tangent angle from +z towards anterior (rad)
    centre: np.ndarray  # (L, 2) body centres (level 0: S1 endplate centre)
    frame_phi: np.ndarray  # (L,) body axis angles
    s_centre: np.ndarray
    h: np.ndarray  # half heights
    a: np.ndarray  # half depths
    w: np.ndarray  # half widths (LR)
    cd: np.ndarray  # canal depth
    tau_top: np.ndarray  # endplate slopes in the body frame
    tau_bot: np.ndarray
    concavity: np.ndarray
    disc_degenerate: np.ndarray
    disc_bulge: np.ndarray
    disc_cleft: np.ndarray
    modic: np.ndarray  # (L, 2) bright endplate bands (bottom, top)
    haemangioma: np.ndarray  # (L, 3): present, u fraction, v fraction
    sacrum_length: float
    sacral_joints: np.ndarray
    conus_s: float
    x0: float
    back_fat: float
    front_fat: float
    outline: np.ndarray  # (3, k): z, back skin y, front skin y control points
    diaphragm: tuple[float, float, float]  # z at spine, dome height, spine-front y
    tissue: dict[str, float]
    scale: float


def _sample_anatomy(rng: np.random.Generator, fov_y: float, fov_z: float) -> _Anatomy:
    scale = rng.uniform(0.9, 1.07)
    jitter = rng.uniform(0.96, 1.04, (_N_LEVELS, 3))
    h = _LEVEL_TABLE[:, 0] / 2 * scale * jitter[:, 0]
    a = _LEVEL_TABLE[:, 1] * scale * jitter[:, 1]
    w = _LEVEL_TABLE[:, 2] * scale * jitter[:, 2]
    cd = _LEVEL_TABLE[:, 3] * scale * rng.uniform(0.9, 1.1)

    n_disc = _N_LEVELS - 1
    degenerate = rng.random(n_disc) < _DISC_TABLE[:, 1]
    disc = _DISC_TABLE[:, 0] * scale * rng.uniform(0.88, 1.12, n_disc)
    disc = np.where(degenerate, disc * rng.uniform(0.4, 0.65, n_disc), disc)
    bulge = np.where(degenerate, rng.uniform(1.0, 5.0, n_disc), rng.uniform(0.0, 1.5, n_disc))
    cleft = rng.uniform(0.0, 0.6, n_disc)

    # Arc positions along the centreline: sacrum top at s = 0, bodies stacked with discs.
    s_bot = np.zeros(_N_LEVELS)
    s_top = np.zeros(_N_LEVELS)
    for k in range(1, _N_LEVELS):
        s_bot[k] = s_top[k - 1] + disc[k - 1]
        s_top[k] = s_bot[k] + 2 * h[k]
    s_centre = (s_bot + s_top) / 2
    s_centre[0] = 0.0
    sacrum_length = 100.0 * scale * rng.uniform(0.9, 1.1)

    # Curvature: lordosis (concave back), thoracic kyphosis, sacral kyphosis; no scoliosis.
    ds = 0.5
    s = np.arange(-sacrum_length - 80.0, s_top[-1] + 120.0, ds)
    lordosis = np.radians(rng.uniform(35.0, 52.0))
    lumbosacral = np.radians(rng.uniform(8.0, 18.0))  # the wedged L5/S disc takes a share
    kyphosis = np.radians(rng.uniform(30.0, 50.0))
    sacral = np.radians(rng.uniform(30.0, 50.0))
    phi = (
        -lordosis * _smooth_step(s, rng.uniform(50.0, 85.0), rng.uniform(45.0, 60.0))
        - lumbosacral * _smooth_step(s, 0.5 * disc[0], 7.0)
        + kyphosis * _smooth_step(s, rng.uniform(300.0, 360.0), rng.uniform(70.0, 90.0))
        + sacral * _smooth_step(s, -0.55 * sacrum_length, 0.2 * sacrum_length)
    )
    phi0 = np.radians(rng.uniform(28.0, 45.0))  # sacral slope, includes patient tilt
    i0 = int(np.argmin(np.abs(s)))
    phi = phi - phi[i0] + phi0
    step = np.stack([np.sin(phi), np.cos(phi)], axis=1) * ds
    pos = np.cumsum(step, axis=0)
    pos -= pos[i0]

    def at(arr: np.ndarray, sv: np.ndarray) -> np.ndarray:
        return np.interp(sv, s, arr)

    phi_c = at(phi, s_centre)
    centre = np.stack([at(pos[:, 0], s_centre), at(pos[:, 1], s_centre)], axis=1)
    frame_phi = phi_c + np.radians(rng.normal(0.0, 1.5, _N_LEVELS))
    frame_phi[0] = phi_c[0]
    wedge_share = rng.uniform(0.3, 0.5)
    tilt = np.radians(rng.normal(0.0, 1.0, (_N_LEVELS, 2)))
    tau_top = np.tan(wedge_share * (at(phi, s_top) - phi_c) + tilt[:, 0])
    tau_bot = np.tan(wedge_share * (at(phi, s_bot) - phi_c) + tilt[:, 1])
    tau_top[0] = tau_bot[0] = 0.0
    concavity = rng.uniform(0.02, 0.08, _N_LEVELS)

    modic = np.zeros((_N_LEVELS, 2), dtype=bool)
    for k in map(int, np.flatnonzero(degenerate)):
        if rng.random() < 0.5:
            modic[k, 1] = True  # top of the body below the disc
            modic[k + 1, 0] = rng.random() < 0.7
    haem = np.stack(
        [
            rng.random(_N_LEVELS) < 0.08,
            rng.uniform(-0.5, 0.5, _N_LEVELS),
            rng.uniform(-0.5, 0.5, _N_LEVELS),
        ],
        axis=1,
    )
    joints = np.sort(np.array([0.27, 0.48, 0.66, 0.82]) + rng.normal(0.0, 0.02, 4))
    conus_s = rng.uniform(s_centre[4], s_centre[6])  # conus tip between T12 and L2

    # Field of view: the top edge falls inside a randomly chosen vertebra T11..T8, unless that
    # would push the sacrum out of view (the sacrum must always be visible).
    top = int(rng.choice(_TOP_LEVEL_CHOICES))
    z_top_local = centre[top, 1] + rng.uniform(-0.45, 0.6) * h[top]
    z0 = fov_z - z_top_local
    z0 = max(z0, _SACRUM_MARGIN_MM)

    # AP: the patient lies supine, so the back skin is nearly flat against the table (lifted
    # a little under the lordosis) and the spine curves inside the body; the spinous tips
    # sit just under the subcutaneous fat where they come closest to the skin.
    back_fat = rng.uniform(8.0, 30.0) * scale
    zc = np.linspace(-80.0, fov_z + 80.0, 11)
    z_l3 = centre[3, 1] + z0
    back = rng.uniform(3.0, 18.0) + rng.uniform(0.0, 15.0) * np.exp(-(((zc - z_l3) / 80.0) ** 2))
    back += rng.normal(0.0, 1.5, zc.size)
    ext = _posterior_extent(h, a, cd)
    depth = np.interp(
        s,
        np.concatenate([[-sacrum_length, -0.5 * sacrum_length], s_centre[1:]]),
        np.concatenate([[12.0, a[0] + cd[0] + 8.0], ext[1:]]),
    )
    normal = np.stack([np.cos(phi), -np.sin(phi)], axis=1)
    tips = pos + np.array([0.0, z0]) - depth[:, None] * normal
    visible = (tips[:, 1] > -20.0) & (tips[:, 1] < fov_z + 20.0)
    need = np.interp(tips[visible, 1], zc, back) + back_fat + rng.uniform(3.0, 10.0)
    y0 = float(np.max(need - tips[visible, 0]))
    shift = np.array([y0, z0])

    front_fat = rng.uniform(8.0, 35.0) * scale
    spine_front = np.interp(zc, pos[:, 1] + z0, pos[:, 0] + y0) + a[3] + 90.0
    front = back + rng.uniform(200.0, 250.0) * scale + rng.normal(0.0, 6.0, zc.size)
    front += rng.uniform(0.0, 40.0) * np.exp(-(((zc - z_l3 + 30.0) / 110.0) ** 2))
    front = np.maximum(front, spine_front)
    dia_z = centre[5, 1] + z0 + rng.uniform(-10.0, 25.0)
    dia_y = np.interp(dia_z, pos[:, 1] + z0, pos[:, 0] + y0) + a[6]
    diaphragm = (dia_z, rng.uniform(35.0, 70.0), dia_y)

    tissue = {k: v * rng.uniform(0.9, 1.1) for k, v in _TISSUE.items()}
    tissue["csf"] = _TISSUE["csf"] * rng.uniform(0.95, 1.05)

    return _Anatomy(
        s=s,
        pos=pos + shift,
        phi=phi,
        centre=centre + shift,
        frame_phi=frame_phi,
        s_centre=s_centre,
        h=h,
        a=a,
        w=w,
        cd=cd,
        tau_top=tau_top,
        tau_bot=tau_bot,
        concavity=concavity,
        disc_degenerate=degenerate,
        disc_bulge=bulge,
        disc_cleft=cleft,
        modic=modic,
        haemangioma=haem,
        sacrum_length=sacrum_length,
        sacral_joints=joints,
        conus_s=conus_s,
        x0=rng.uniform(-2.5, 2.5),
        back_fat=back_fat,
        front_fat=front_fat,
        outline=np.stack([zc, back, front]),
        diaphragm=diaphragm,
        tissue=tissue,
        scale=scale,
    )


def _posterior_extent(h: np.ndarray, a: np.ndarray, cd: np.ndarray) -> np.ndarray:
    """Depth (mm behind the body centre line) of each vertebra's spinous process tip."""
    thoracic = np.clip((np.arange(h.size) - 5.5) / 1.5, 0.0, 1.0)
    length = 27.0 + 5.0 * thoracic
    slant = np.radians(12.0 + 38.0 * thoracic)
    return a + cd + 6.0 + length * np.cos(slant)


# ----------------------------------------------------------------------------------------------
# Rendering


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


def _draw_background(sc: _Scene) -> None:
    """Skin, subcutaneous fat, back muscles, abdomen/pelvis/thorax: what the spine sits in."""
    an, ts = sc.anat, sc.anat.tissue
    s, t = sc.s, sc.t
    a_s, _ = _column_profile(an, s)
    back = CubicSpline(an.outline[0], an.outline[1])(sc.Z)
    front = CubicSpline(an.outline[0], an.outline[2])(sc.Z)
    sd_body = np.maximum(back - sc.Y, sc.Y - front).astype(_F32)[None]
    sc.paint(*_ALL, sc.alpha(sd_body), ts["skin"])
    sc.paint(*_ALL, sc.alpha(sd_body + 2.0), ts["fat"] * (1 + 0.04 * sc.tex_mid))

    # Back muscles: from under the subcutaneous fat to the front of the vertebral column.
    inner = back + an.back_fat
    sd_mus = np.maximum(inner - sc.Y, t - a_s).astype(_F32)[None]
    striation = np.clip(sc.tex_streak - 1.6, 0.0, 1.0) * 0.3
    muscle = ts["muscle"] * (1 + 0.08 * sc.tex_fine) + striation * (ts["fat"] - ts["muscle"])
    sc.paint(*_ALL, sc.alpha(sd_mus), muscle)

    # Anterior abdominal wall (rectus) and the viscera inside it.
    wall_in = front - an.front_fat
    sd_rect = np.maximum(sc.Y - wall_in, wall_in - 10.0 - sc.Y).astype(_F32)[None]
    sd_rect = np.maximum(sd_rect, (a_s - t)[None])
    sc.paint(*_ALL, sc.alpha(sd_rect), ts["muscle"] * (1 + 0.06 * sc.tex_fine))
    sd_visc = np.maximum(sc.Y - (wall_in - 11.0), a_s + 9.0 - t).astype(_F32)[None]
    # Bowel: loops of fluid with thin walls in mesenteric fat, a few gas pockets.
    b = sc.tex_big + 0.35 * sc.tex_mid
    lumen = np.clip((b - 0.1) * 3.0, 0.0, 1.0)
    gas = np.clip((sc.tex_mid - 1.6) * 3.0, 0.0, 1.0) * lumen
    wall = np.exp(-(((b - 0.1) / 0.15) ** 2))
    fluid = ts["bowel_fluid"] * (0.75 + 0.15 * np.clip(sc.tex_mid, -1.5, 1.5))
    bowel = ts["mesentery"] * (1 - lumen) + fluid * lumen
    bowel = bowel * (1 - gas) + ts["gas"] * gas
    bowel = bowel * (1 - 0.7 * wall) + ts["bowel_wall"] * 0.7 * wall
    sc.paint(*_ALL, sc.alpha(sd_visc), bowel)
    # Retroperitoneal fat strip in front of the column (vessels are drawn into it).
    sd_retro = np.maximum(
        np.maximum(a_s + 1.0 - t, t - (a_s + 9.0)), sc.Y - (wall_in - 11.0)
    ).astype(_F32)[None]
    sc.paint(*_ALL, sc.alpha(sd_retro), ts["mesentery"] * (1 + 0.05 * sc.tex_fine))

    # Thorax/upper abdomen: liver below the diaphragm, lung and heart above it.
    dz0, dome, dy0 = an.diaphragm
    zdia = dz0 + dome * (1.0 - np.exp(-np.maximum(sc.Y - dy0, 0.0) / 35.0))
    anterior = np.maximum(a_s + 4.0 - t, sc.Y - (wall_in - 8.0))
    liver_h = 110.0 - 0.35 * np.maximum(sc.Y - dy0, 0.0)[None] + 1.2 * sc.xi
    sd_liver = np.maximum(
        np.maximum((sc.Z - zdia)[None], (zdia - sc.Z)[None] - liver_h), anterior[None]
    )
    vessels = (np.abs(sc.tex_mid) < 0.08) * 0.5
    liver = ts["liver"] * (1 + 0.05 * sc.tex_fine) * (1 - vessels) + ts["ivc"] * vessels
    sc.paint(*_ALL, sc.alpha(sd_liver.astype(_F32)), liver)
    sd_lung = np.maximum(zdia + 3.0 - sc.Z, anterior).astype(_F32)[None]
    sc.paint(*_ALL, sc.alpha(sd_lung), ts["lung"] * (1 + 0.6 * np.abs(sc.tex_fine)))
    hy, hz = dy0 + 95.0, dz0 + dome + 60.0
    sd_heart = (np.hypot((sc.Y - hy) / 65.0, (sc.Z - hz) / 55.0) - 1.0) * 55.0
    sd_heart = np.maximum(sd_heart, sc.Y - (wall_in - 12.0)).astype(_F32)[None]
    heart = ts["heart"] * (1 + 0.3 * sc.tex_mid)
    sc.paint(*_ALL, sc.alpha(sd_heart), heart)

    # Pelvis: bladder in front of the lower sacrum when the FOV reaches it.
    prom = an.centre[0]
    by, bz = prom[0] + 95.0, prom[1] - 105.0
    sd_bl = (np.hypot((sc.Y - by) / 38.0, (sc.Z - bz) / 30.0) - 1.0) * 30.0
    sd_bl = np.maximum(sd_bl, sc.Y - (wall_in - 12.0)).astype(_F32)[None]
    sc.paint(*_ALL, sc.alpha(sd_bl), ts["urine"])

    # Psoas muscles beside the lumbar bodies (lateral slices only).
    grow = np.clip((an.s_centre[6] - s) / (an.s_centre[6] - an.s_centre[1]), 0.0, 1.0)
    grow = np.where(s < -10.0, 0.0, grow)
    ps_front = a_s + 4.0 + 22.0 * grow
    sd_ps = np.maximum(np.maximum(-a_s * 0.6 - t, t - ps_front), (0.05 - grow) * 40.0)
    lat = _lateral(sc.xi, 10.0)
    sc.paint(
        *_ALL,
        sc.alpha(sd_ps.astype(_F32)[None]) * (1 - lat),
        ts["muscle"] * (1 + 0.06 * sc.tex_fine),
    )

    # Aorta (left, flow void, bifurcates at L4) and IVC (right).
    rise = np.clip((s - an.s_centre[5]) / 100.0, 0.0, 1.0)
    for xc, r, t_off, s_lo, val in (
        (-9.0 - 10.0 * rise, 10.0 * an.scale, 3.0 - 10.0 * rise, an.s_centre[2], "flow_void"),
        (15.0, 9.0 * an.scale, 2.0, an.s_centre[1], "ivc"),
    ):
        tc = a_s + t_off + r
        end_taper = np.sqrt(np.clip((s - s_lo) / (1.5 * r), 0.0, 1.0))  # rounded lower end
        half = r * _chord(sc.xi - xc, r) * end_taper
        sd_v = np.maximum(np.abs(t - tc)[None] - half, (s_lo - s)[None])
        sd_v = np.where(half > 0.3, sd_v, 99.0).astype(_F32)
        sc.paint(*_ALL, sc.alpha(sd_v), ts[val])


def _draw_canal(sc: _Scene) -> None:
    """Canal contents in curvilinear coordinates: fat, ligaments, CSF sac, cord and roots."""
    an, ts = sc.anat, sc.anat.tissue
    s, t, xi = sc.s[None], sc.t[None], sc.xi
    L = an.sacrum_length
    a_s, cd_s = _column_profile(an, sc.s)
    q = np.clip(-sc.s / L, 0.0, 1.0)
    lumbar = np.clip((an.s_centre[6] - sc.s) / 40.0, 0.0, 1.0)
    wc = (8.5 + 2.5 * lumbar) * an.scale * np.where(sc.s < 0, 1.0 - 0.5 * q, 1.0)
    t_ant = (-a_s - 0.5).astype(_F32)[None]
    t_post = (-a_s - cd_s).astype(_F32)[None]
    wb = np.interp(sc.s, an.s_centre[1:], an.w[1:]).astype(_F32)[None]
    end = (-0.9 * L - s).astype(_F32)  # sacral hiatus

    zone = np.maximum(np.maximum(t - (t_ant + 2.0), t_post - t), end)
    sc.paint(
        *_ALL,
        sc.alpha(zone) * _lateral(xi, wb),
        ts["epidural_fat"] * (1 + 0.06 * sc.tex_fine),
    )
    lf = np.maximum(np.maximum(t - (t_post + 3.0), t_post - 0.5 - t), end)
    sc.paint(*_ALL, sc.alpha(lf) * _lateral(xi, wc[None] + 3.0), ts["ligament"])
    pll = np.maximum(np.maximum(t - (t_ant + 2.0), t_ant - 1.0 - t), end)
    sc.paint(*_ALL, sc.alpha(pll) * _lateral(xi, wc[None]), ts["ligament"])

    # Thecal sac: ends at S2; elliptic in the axial plane so it narrows laterally.
    epi = (1.0 + 2.5 * lumbar).astype(_F32)[None]
    sac_ant, sac_post = t_ant - 0.5, t_post + 2.5 + epi
    taper = np.sqrt(np.clip((s + 0.3 * L) / 15.0, 0.0, 1.0))
    half = (sac_ant - sac_post) / 2 * _chord(xi, wc[None]) * taper
    mid = (sac_ant + sac_post) / 2
    sd_sac = np.abs(t - mid) - half
    sd_sac = np.where(half > 0.2, sd_sac, 99.0).astype(_F32)
    # Cauda equina: thin roots lying dorsally in the sac below the conus.
    strands = np.sin((t - mid) * 2.2 + 0.6 * np.sin(s / 17.0)) > 0.55
    dorsal = np.clip((mid - t) / np.maximum(half, 1e-3), 0.0, 1.0)
    below = np.clip((an.conus_s - s) / 10.0, 0.0, 1.0)
    roots = strands * dorsal * below * 0.45
    csf = ts["csf"] * (1 + 0.03 * sc.tex_fine) * (1 - roots) + ts["root"] * roots
    sc.paint(*_ALL, sc.alpha(sd_sac), csf)

    # Cord, tapering to the conus medullaris.
    r = 4.2 * an.scale * np.clip((s - an.conus_s) / 18.0, 0.0, 1.0) ** 0.6
    cmid = mid + 0.1 * (sac_ant - sac_post)
    half_c = r * _chord(xi, 5.5 * an.scale)
    sd_cord = np.where(half_c > 0.2, np.abs(t - cmid) - half_c, 99.0).astype(_F32)
    sc.paint(*_ALL, sc.alpha(sd_cord), ts["cord"] * (1 + 0.04 * sc.tex_fine))


def _draw_posterior_elements(sc: _Scene) -> None:
    """Pedicles, facet pillars, laminae, spinous processes and exiting roots (all unlabelled)."""
    an, ts = sc.anat, sc.anat.tissue
    xi = sc.xi
    marrow = ts["marrow"] * 0.95
    for k in range(1, _N_LEVELS):
        h, a, cd, w = an.h[k], an.a[k], an.cd[k], an.w[k]
        c, ph = an.centre[k], an.frame_phi[k]
        anterior = np.array([np.cos(ph), -np.sin(ph)])
        win = sc.window(c - anterior * (a + cd + 20.0), 50.0 * an.scale)
        if win is None:
            continue
        sj, sk, Y, Z = win
        u, v = _frame(Y, Z, c, ph)
        thoracic = float(np.clip((k - 5.5) / 1.5, 0.0, 1.0))
        wc = (8.5 + 2.5 * (1 - thoracic)) * an.scale
        P = a + cd
        disc_up = (
            (an.s_centre[k + 1] - an.h[k + 1] - an.s_centre[k] - h) if k + 1 < _N_LEVELS else 4.0
        )
        disc_dn = an.s_centre[k] - h - (an.s_centre[k - 1] + an.h[k - 1])

        def bone(sd: np.ndarray, lat: np.ndarray, sj: slice = sj, sk: slice = sk) -> None:
            sc.paint(sj, sk, sc.alpha(sd) * lat, ts["cortex"])
            sc.paint(sj, sk, sc.alpha(sd + 1.6) * lat, marrow * (1 + 0.1 * sc.tex_fine[:, sj, sk]))

        # Facet pillars: a column of bony blocks lateral to the canal, joints at disc level.
        lo, hi = -h - 0.5 * disc_dn + 0.8, h + 0.5 * disc_up - 0.8
        slope = 0.45
        uu = u - slope * (v + P + 6.0)
        sd = _box_sd(uu - (lo + hi) / 2, v + P + 5.0, (hi - lo) / 2, 7.5, 2.5)
        lat = _lateral(xi - np.sign(xi) * (wc + 7.0), 6.0) * (np.abs(xi) > wc * 0.5)
        bone(sd, lat)
        # Pedicles: bridge the canal laterally in the upper half of the body.
        sd = _box_sd(u - 0.45 * h, v + a + cd / 2, 0.38 * h, cd / 2 + 3.0, 3.0)
        lat = _lateral(np.abs(xi) - 0.6 * w, 0.2 * w)
        bone(sd, lat)
        # Exiting nerve root in the foramen below the pedicle.
        sd = (np.hypot((u + 0.35 * h) / 3.2, (v + a + 0.45 * cd) / 3.0) - 1.0) * 3.0
        lat = _lateral(np.abs(xi) - 0.5 * (wc + w), 0.5 * (w - wc))
        sc.paint(sj, sk, sc.alpha(sd) * lat, ts["root"])
        # Lamina: the posterior roof of the canal.
        sd = _box_sd(u - 0.1 * h + 0.3 * (v + P), v + P + 4.5, 0.8 * h, 4.5, 2.0)
        bone(sd, _lateral(xi, wc + 4.0))
        # Spinous process: horizontal and stout in the lumbar spine, long and steep above.
        slant = np.radians(12.0 + 38.0 * thoracic)
        length = (27.0 + 5.0 * thoracic) * an.scale
        half_h = (0.62 - 0.3 * thoracic) * h
        u0, v0 = 0.1 * h, -(P + 2.0)
        along = (u - u0) * -np.sin(slant) + (v - v0) * -np.cos(slant)
        across = (u - u0) * np.cos(slant) - (v - v0) * np.sin(slant)
        taper = 1.0 - 0.25 * np.clip(along / length, 0.0, 1.0)
        sd = _box_sd(along - length / 2, across / taper, length / 2, half_h, 3.5)
        bone(sd, _lateral(xi, 5.0 * an.scale))


def _draw_discs(sc: _Scene) -> None:
    """Discs fill exactly the gap between the facing endplates of two neighbouring bodies."""
    an, ts = sc.anat, sc.anat.tissue
    xi = sc.xi
    for k in range(_N_LEVELS - 1):
        lo, hi = k, k + 1
        mid_c = (an.centre[lo] + an.centre[hi]) / 2
        win = sc.window(mid_c, 40.0 * an.scale)
        if win is None:
            continue
        sj, sk, Y, Z = win
        u1, v1 = _frame(Y, Z, an.centre[lo], an.frame_phi[lo])
        u2, v2 = _frame(Y, Z, an.centre[hi], an.frame_phi[hi])
        top, _ = _surfaces(an, lo, v1, xi)
        _, bot = _surfaces(an, hi, v2, xi)
        d1, d2 = u1 - top, bot - u2
        sd_u = np.maximum(-d1 - 1.0, -d2 - 1.0)
        w_frac = (d1 - d2) / np.maximum(d1 + d2, 0.5)
        dome = np.clip(1.0 - w_frac**2, 0.0, 1.0)
        vm = (v1 + v2) / 2
        ad = 0.5 * (an.a[lo] + an.a[hi]) if lo > 0 else an.a[hi]
        wd = an.w[hi] + 0.5
        f = _chord(xi, wd)
        vc, ha = -0.6 * ad * (1 - f), ad * f
        post = an.disc_bulge[k] * dome * np.exp(-((xi / 12.0) ** 2))
        sd_v = np.maximum(vm - vc - ha - 0.8 * dome, vc - vm - ha - post)
        sd = np.maximum(sd_u, sd_v)
        sd = np.where(ha > 0.2, sd, 99.0)
        nuc_val = ts["dark_nucleus"] if an.disc_degenerate[k] else ts["nucleus"]
        ell = np.hypot((vm - vc + 0.08 * ad) / np.maximum(0.72 * ha, 0.5), w_frac / 0.8)
        nuc = np.clip((1.0 - ell) * 2.5, 0.0, 1.0)
        nuc = nuc * (1.0 - an.disc_cleft[k] * np.exp(-((w_frac / 0.14) ** 2)))
        val = ts["annulus"] + (nuc_val - ts["annulus"]) * nuc
        val = val * (1 + 0.04 * sc.tex_fine[:, sj, sk])
        sc.paint(sj, sk, sc.alpha(sd) * _lateral(xi, wd + 1.5), val)
        class_id = 11 + k if k < _LABELLED_LEVELS - 1 else 0
        sc.mark(sj, sk, sd < 0, class_id)


def _draw_bodies(sc: _Scene) -> None:
    """Vertebral bodies: rounded wedges along the local tangent, cortex rim, marrow texture."""
    an, ts = sc.anat, sc.anat.tissue
    xi = sc.xi
    for k in range(1, _N_LEVELS):
        h, a = an.h[k], an.a[k]
        win = sc.window(an.centre[k], (h + a) * 1.1 + 5.0)
        if win is None:
            continue
        sj, sk, Y, Z = win
        u, v = _frame(Y, Z, an.centre[k], an.frame_phi[k])
        top, bot = _surfaces(an, k, v, xi)
        vc, ha = _section(an, k, xi)
        m, hh = (top + bot) / 2, (top - bot) / 2
        uu = (u - m) * (h / np.maximum(hh, 1e-3))
        waist = 1.0 - 0.04 * (1.0 - np.clip(uu / h, -1.0, 1.0) ** 2)
        sd = _box_sd(uu, (v - vc) / waist, h, ha, 3.5 * an.scale)
        sd = np.where(ha > 0.2, sd, 99.0)
        lat = _lateral(xi, an.w[k] + 1.0)
        tex = sc.tex_fine[:, sj, sk]
        val = ts["marrow"] * (1 + 0.1 * tex + 0.06 * sc.tex_mid[:, sj, sk])
        band = 4.0 * an.scale
        if an.modic[k, 1]:
            val = val + (ts["modic"] - val) * np.clip(1.0 - (top - u) / band, 0.0, 1.0)
        if an.modic[k, 0]:
            val = val + (ts["modic"] - val) * np.clip(1.0 - (u - bot) / band, 0.0, 1.0)
        if an.haemangioma[k, 0]:
            spot = np.hypot(u - an.haemangioma[k, 1] * h, v - an.haemangioma[k, 2] * a) - 4.0
            val = val + (ts["modic"] - val) * sc.alpha(spot)
        # Basivertebral vein notch at mid height of the posterior wall (central slices).
        vein = _box_sd(u - m, v + a - 3.0, 1.2, 3.5, 0.5)
        val = val + (0.8 * ts["csf"] - val) * sc.alpha(vein) * _lateral(xi, 4.0)
        sc.paint(sj, sk, sc.alpha(sd) * lat, ts["cortex"])
        sc.paint(sj, sk, sc.alpha(sd + 1.8) * lat, val)
        class_id = k + 1 if k < _LABELLED_LEVELS else 0
        sc.mark(sj, sk, sd < 0, class_id)


def _draw_sacrum(sc: _Scene) -> None:
    """Sacrum (tilted, tapering, fused S1-S5 with remnant discs), its dorsal wall, coccyx."""
    an, ts = sc.anat, sc.anat.tissue
    L, a0 = an.sacrum_length, an.a[0]
    s, t, xi = sc.s[None], sc.t[None], sc.xi
    q = np.clip(-s / L, 0.0, 1.0)
    a_q, cd_q = (p[None] for p in _column_profile(an, sc.s))
    f = _chord(xi, an.w[0])
    tn = (t + 0.4 * a_q * (1 - f)) * (a0 / np.maximum(a_q * f, 1e-3))
    sd = _box_sd(s + L / 2, tn, L / 2, a0, 6.0) * np.maximum(a_q / a0, 0.35)
    marrow = ts["marrow"] * (1 + 0.1 * sc.tex_fine + 0.06 * sc.tex_mid)
    # Fused segments: dark lines at the joints; S1/S2 keeps a thin remnant disc.
    val = marrow
    for i, qj in enumerate(an.sacral_joints):
        d = np.abs(s + qj * L)
        dark = np.exp(-((d / (2.0 if i == 0 else 1.2)) ** 2)) * (0.85 if i == 0 else 0.6)
        val = val + (ts["cortex"] * 2.0 - val) * dark
        if i == 0:
            core = np.exp(-((d / 0.9) ** 2)) * 0.8 * _chord(t, a_q * 0.8)
            val = val + (ts["nucleus"] * 0.8 - val) * core

    # Dorsal wall and lateral masses: bone behind the sacral canal (unlabelled).
    t_post = -a_q - cd_q
    crest = np.exp(-((np.sin(np.pi * (s / (0.19 * L))) / 0.5) ** 2)) * 5.0 * _lateral(xi, 4.0)
    below = np.maximum(s - 2.0, -0.88 * L - s)
    sd_wall = np.maximum(np.maximum(t - t_post, t_post - 6.5 - crest - t), below)
    sd_mass = np.maximum(np.maximum(t - (-a_q + 1.0), t_post - 6.5 - t), below)
    lateral_mass = 1.0 - _lateral(xi, 10.0 * (1 - 0.5 * q))
    for sd_b, weight in ((sd_wall, 1.0), (sd_mass, lateral_mass)):
        sc.paint(*_ALL, sc.alpha(sd_b) * weight, ts["cortex"])
        sc.paint(*_ALL, sc.alpha(sd_b + 1.6) * weight, marrow * 0.95)

    sc.paint(*_ALL, sc.alpha(sd), ts["cortex"])
    sc.paint(*_ALL, sc.alpha(sd + 1.8), val)
    sc.mark(*_ALL, sd < 0, 1)

    # Coccyx: three small segments curling on below the sacral tip.
    for i in range(3):
        sm = -L - 6.0 - 9.0 * i * an.scale
        half = (4.0 - 0.6 * i) * an.scale
        sd_c = _box_sd(s - sm, t, half, (6.5 - 1.5 * i) * an.scale, 2.0)
        sd_c = np.maximum(sd_c, np.abs(xi) - 10.0)
        sc.paint(*_ALL, sc.alpha(sd_c), ts["cortex"])
        sc.paint(*_ALL, sc.alpha(sd_c + 1.5), marrow)


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


# ----------------------------------------------------------------------------------------------
# Writing


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset: independent of the number of cases written."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 with qform and sform set; mtime 0 keeps files byte-reproducible."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(array.dtype)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def write_dataset(
    out_dir: Path, cases: int, seed: int = 0, **case_kwargs: Any
) -> list[tuple[Path, Path]]:
    """Write ``cases`` phantoms as NIfTI pairs plus dataset.json; returns (image, label) paths.

    dataset.json is written last, so its presence means the folder is complete.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(cases):
        case = generate_case(case_seed(seed, i), **case_kwargs)
        image_path = out_dir / "images" / f"case_{i:03d}.nii.gz"
        label_path = out_dir / "labels" / f"case_{i:03d}.nii.gz"
        write_atomic(image_path, _nifti_bytes(case.image.astype(np.float32), case.affine))
        write_atomic(label_path, _nifti_bytes(case.label.astype(np.uint8), case.affine))
        pairs.append((image_path, label_path))
    meta = {
        "generator": "spinebench-phantom",
        "version": PHANTOM_VERSION,
        "cases": cases,
        "seed": seed,
        "class_map": mrspineseg_class_map().to_dict(),
    }
    write_atomic(out_dir / "dataset.json", (json.dumps(meta, indent=2) + "\n").encode())
    return pairs


# ----------------------------------------------------------------------------------------------
# Montage

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
