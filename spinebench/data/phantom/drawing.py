"""The structures painted into a ``_Scene``, one function per anatomical group.

Background (skin, fat, muscles, viscera, vessels), the canal's contents, the posterior
elements, the discs, the sacrum and the vertebral bodies: each paints its intensities with
partial volume and marks its labels (MRSpineSeg ids counted from the sacrum). They live
together, apart from the scene's machinery and the acquisition, because later paint wins where
structures overlap: ``generate_case`` calls them in one fixed order, and that order is part of
the image and the label map.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

from spinebench.data.phantom.anatomy import _LABELLED_LEVELS, _N_LEVELS
from spinebench.data.phantom.scene import (
    _F32,
    _box_sd,
    _chord,
    _column_profile,
    _frame,
    _lateral,
    _Scene,
    _section,
    _surfaces,
)

_ALL = (slice(None), slice(None))  # paint on the whole (ny, nz) plane


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
