"""Everything random about one case's body, decided before anything is drawn.

The adult anatomy tables (vertebral levels, discs, T2 tissue intensities) and the sampler that
turns them and the case's generator into an ``_Anatomy``: sizes, curvature, degeneration,
the field of view and the body outline, all in image millimetres. It is kept apart from the
rendering so that what a case *is* can be read, and changed (with a ``PHANTOM_VERSION`` bump),
without wading through how it is painted; its draws come first from the generator that the
scene and the acquisition then share, so their order here is part of every seed's arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

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


def _smooth_step(s: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """0 -> 1 step of Gaussian width: spreads a total bend over an arc around ``mu``."""
    return ndtr((s - mu) / sigma)


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
