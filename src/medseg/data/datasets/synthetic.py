"""Synthetic fundus-like vessel images: the built-in default input (no files needed).

Each image is a pure function of ``(seed, split, index)``: it is drawn from
``np.random.default_rng([seed, split_index, index])`` with ``split_index`` 0 for "train" and 1 for
"test", so the two splits come from disjoint seed streams and never share an image.

What is drawn (lengths in units of the FOV radius R, widths in pixels at 128 px, scaled by
``sqrt(min(H, W) / 128)`` for other sizes):

* **Field of view**: a disc of radius about 0.47 min(H, W) centred in the image; outside it the
  image is dark (about 0.02 on a 0..1 scale), like a fundus camera's black surround.
* **Background** (green-channel-like, 0..1): a base level 0.40-0.55, a smooth random
  illumination field, radial vignetting, a bright optic-disc-like blob at 0.60-0.78 R to the left
  or right of the centre, a darker macula near the centre, fine blob texture, a few wide faint
  curvilinear "choroidal" streaks and small dark round spots and bright spots (none of which are
  vessels), and Gaussian noise.
* **Vessel trees**: two vein/artery pairs leaving the optic disc as the upper and lower arcades
  (curving around the macula), two nasal vessels and one or two thin macular vessels, all joined
  at the disc; plus at least two trees growing inward from random points of the FOV border, which
  stop short of existing vessels (so they stay separate connected components), added until the
  vessel fraction inside the FOV reaches a target drawn in 9-12 %. Every vessel is a random walk
  (curvature, slow drift and a tortuous wiggle whose amplitude varies per tree) that branches
  recursively (children 55-80 % of the parent's width, 25-75 degrees off its heading, up to 3
  levels) and tapers; widths range from 1 px to about 4 px. Vessels are darker than the
  background with a Gaussian cross-section (the vessel profile model of Chaudhuri et al.,
  IEEE TMI 8(3):263-269, 1989); the contrast varies per tree, per branch and slowly
  along each vessel (relative darkening about 0.05-0.45), and a slight blur makes the thinnest
  vessels faint.
* **Mask** = FOV pixels within the vessel radius of a centreline (exact distance to the
  polyline); **fov** = the disc. The layout (disc to one side, arcades, dark surround) follows
  DRIVE-like fundus photographs; no real image is used.

The result is learnable by a small network in minutes of CPU but not by a global threshold (the
dark spots, streaks, illumination and faint thin vessels overlap the vessel intensities).
Generating 24 images of 128x128 takes well under a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.signal import lfilter

from medseg.data.base import Case, CaseDataset, register_dataset, zscore_in_fov
from medseg.errors import ConfigError

_SPLIT_INDEX = {"train": 0, "test": 1}
_DEFAULT_N = {"train": 16, "test": 8}
_MIN_RADIUS = 0.5  # px: 1 px wide vessels


@dataclass
class _Canvas:
    """Accumulators for rendering: max over strokes of (radius - distance) and of darkening."""

    h: int
    w: int
    depth: np.ndarray = field(init=False)
    dark: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.depth = np.full(self.h * self.w, -np.inf, dtype=np.float32)
        self.dark = np.zeros(self.h * self.w, dtype=np.float32)


def _render_strokes(
    canvas: _Canvas, strokes: list[tuple[np.ndarray, np.ndarray, np.ndarray]], update_depth: bool = True
) -> None:
    """Rasterise polylines with per-point radius and contrast as chains of tapered capsules.

    ``strokes``: list of (points (n, 2) as (y, x) pixel-centre coordinates, radius (n,),
    contrast (n,)). For every pixel near a capsule, the exact distance ``d`` to the segment and
    the interpolated radius ``r`` give ``r - d`` (>= 0 inside the vessel; max-accumulated into
    ``canvas.depth``) and a Gaussian cross-section ``c * exp(-d^2 / (2 (0.8 r)^2))``
    (max-accumulated into ``canvas.dark``). Vectorised over all capsules at once.
    """
    segs = [s for s in strokes if len(s[0]) >= 2]
    if not segs:
        return
    a = np.concatenate([p[:-1] for p, _, _ in segs]).astype(np.float32)
    b = np.concatenate([p[1:] for p, _, _ in segs]).astype(np.float32)
    ra = np.concatenate([r[:-1] for _, r, _ in segs]).astype(np.float32)
    rb = np.concatenate([r[1:] for _, r, _ in segs]).astype(np.float32)
    ca = np.concatenate([0.5 * (c[:-1] + c[1:]) for _, _, c in segs]).astype(np.float32)
    seg_len = np.hypot(*(b - a).T)
    # Window half-size per capsule (Gaussian tail to 2 sigma); capsules are processed in groups
    # of equal window size so thin vessels do not pay for the widest one.
    halves = np.ceil(2.0 * 0.8 * np.maximum(np.maximum(ra, rb), _MIN_RADIUS) + 0.5 * seg_len + 1.0).astype(int)
    for half in np.unique(halves):
        sel = halves == half
        _render_group(canvas, a[sel], b[sel], ra[sel], rb[sel], ca[sel], int(half), update_depth)


def _render_group(
    canvas: _Canvas,
    a: np.ndarray,
    b: np.ndarray,
    ra: np.ndarray,
    rb: np.ndarray,
    ca: np.ndarray,
    half: int,
    update_depth: bool,
) -> None:
    off = np.arange(-half, half + 1, dtype=np.float32)
    base = np.floor(0.5 * (a + b))  # (M, 2), integer-valued
    py = base[:, 0, None, None] + off[None, :, None]  # (M, K, 1)
    px = base[:, 1, None, None] + off[None, None, :]  # (M, 1, K)
    ab = b - a
    l2 = (ab**2).sum(1) + 1e-9
    ay, ax = a[:, 0, None, None], a[:, 1, None, None]
    aby, abx = ab[:, 0, None, None], ab[:, 1, None, None]
    t = np.clip(((py - ay) * aby + (px - ax) * abx) / l2[:, None, None], 0.0, 1.0)
    d = np.hypot(py - (ay + t * aby), px - (ax + t * abx))
    r = ra[:, None, None] + t * (rb - ra)[:, None, None]
    sigma = 0.8 * np.maximum(r, _MIN_RADIUS)
    dark = ca[:, None, None] * np.exp(-0.5 * (d / sigma) ** 2)
    yi = np.broadcast_to(py, d.shape).astype(np.int64)
    xi = np.broadcast_to(px, d.shape).astype(np.int64)
    ok = (yi >= 0) & (yi < canvas.h) & (xi >= 0) & (xi < canvas.w)
    idx = (yi * canvas.w + xi)[ok]
    np.maximum.at(canvas.dark, idx, dark[ok])
    if update_depth:
        np.maximum.at(canvas.depth, idx, (r - d)[ok])


class _TreeGrower:
    """Grows branching random-walk vessels inside a circular FOV."""

    def __init__(self, rng: np.random.Generator, cy: float, cx: float, radius: float, wscale: float):
        self.rng = rng
        self.cy, self.cx, self.R = cy, cx, radius
        self.wscale = wscale
        self.strokes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        #: distance (px) to vessels of earlier trees; a walk stops before getting this close
        self.avoid: np.ndarray | None = None
        self.clearance = 2.5 * wscale
        # vessels cannot get thinner than 1 px, so small images keep fewer branches
        self.branch_keep = min(1.0, radius / 60.0)

    def walk(
        self,
        y0: float,
        x0: float,
        theta0: float,
        length: float,
        curvature: float,
        tortuosity: float,
        decay: float | None = None,
    ) -> np.ndarray:
        """Random path of unit steps: the heading turns at ``curvature`` rad/px (decaying as
        ``exp(-l / decay)`` when ``decay`` is given), drifts slowly (random walk, 0.01 rad/px) and
        wiggles around that (stationary AR(1), std ``0.25 * tortuosity`` rad, ~7 px memory).
        Returns (n, 2) points every 2 px, cut where the path leaves the FOV."""
        n = max(2, int(length))
        k = curvature if decay is None else curvature * np.exp(-np.arange(n) / decay)
        drift = np.cumsum(self.rng.normal(0.0, 0.01, n))
        a = 0.85
        wiggle = lfilter([np.sqrt(1 - a * a)], [1.0, -a], self.rng.normal(0.0, 1.0, n)) * 0.25 * tortuosity
        theta = theta0 + np.cumsum(np.broadcast_to(k, (n,))) + drift + wiggle
        steps = np.stack([np.sin(theta), np.cos(theta)], axis=1)
        pts = np.array([y0, x0]) + np.concatenate([[[0.0, 0.0]], np.cumsum(steps, axis=0)])
        rho = np.hypot(pts[:, 0] - self.cy, pts[:, 1] - self.cx)
        outside = np.flatnonzero(rho > self.R - 0.5)
        # A vessel may start on the border; cut where it (re-)leaves the FOV after entering.
        first_in = np.flatnonzero(rho <= self.R - 0.5)
        if len(first_in) == 0:
            return pts[:1]
        outside = outside[outside > first_in[0]]
        end = outside[0] if len(outside) else len(pts)
        if self.avoid is not None:  # stop short of other trees: trees stay separate components
            iy = np.clip(np.rint(pts[:end, 0]).astype(int), 0, self.avoid.shape[0] - 1)
            ix = np.clip(np.rint(pts[:end, 1]).astype(int), 0, self.avoid.shape[1] - 1)
            near = np.flatnonzero(self.avoid[iy, ix] < self.clearance)
            if len(near):
                end = min(end, near[0])
        pts = pts[first_in[0] : end]
        # capsules of 2 px: half the rendering work, still smooth at these curvatures
        return pts if len(pts) < 3 else np.concatenate([pts[:-1:2], pts[-1:]])

    def grow(
        self,
        y0: float,
        x0: float,
        theta0: float,
        r0: float,
        c0: float,
        length: float,
        curvature: float,
        tortuosity: float,
        depth: int = 0,
        max_depth: int = 3,
        decay: float | None = None,
    ) -> None:
        """Grow one vessel and, recursively, its branches, appending them to ``self.strokes``."""
        rng = self.rng
        pts = self.walk(y0, x0, theta0, length, curvature, tortuosity, decay)
        n = len(pts)
        if n < 3:
            return
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
        taper = rng.uniform(0.25, 0.55)
        radius = np.maximum(r0 * (1.0 - taper * arc / max(length, 1.0)), _MIN_RADIUS)
        # slow contrast modulation along the vessel
        mod = ndimage.gaussian_filter1d(rng.normal(0, 1, n), sigma=max(2.0, 0.08 * self.R), mode="nearest")
        mod = mod / (mod.std() + 1e-9)
        contrast = np.clip(c0 * (1.0 + 0.18 * mod), 0.03, 0.6)
        if depth < max_depth:  # branch points; the parent gets thinner after each
            pos = rng.uniform(0.12, 0.30) * self.R
            side = rng.choice([-1.0, 1.0])
            while pos < arc[-1] - 4:
                i = min(int(np.searchsorted(arc, pos)), n - 2)
                child_r = radius[i] * rng.uniform(0.55, 0.8)
                if child_r >= 0.4 * max(self.wscale, 1.0) and rng.random() < self.branch_keep:
                    child_r = max(child_r, _MIN_RADIUS)
                    j = max(i - 1, 0)
                    heading = np.arctan2(pts[i + 1, 0] - pts[j, 0], pts[i + 1, 1] - pts[j, 1])
                    ang = heading + side * np.deg2rad(rng.uniform(25, 75))
                    side = -side if rng.random() < 0.75 else side
                    self.grow(
                        pts[i, 0],
                        pts[i, 1],
                        ang,
                        child_r,
                        contrast[i] * rng.uniform(0.7, 1.05),
                        self.R * rng.uniform(0.25, 0.6) * 0.85**depth,
                        rng.normal(0.0, 0.006),
                        tortuosity * rng.uniform(0.8, 1.4),
                        depth + 1,
                        max_depth,
                    )
                    radius[i:] = np.maximum(radius[i:] * rng.uniform(0.86, 0.96), _MIN_RADIUS)
                pos += rng.uniform(0.15, 0.35) * self.R * (0.85**depth)
        self.strokes.append((pts, radius, contrast))


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency random field (unit std) by cubic upsampling of a cells x cells grid."""
    g = rng.normal(0.0, 1.0, (cells, cells))
    f = ndimage.zoom(g, (h / cells, w / cells), order=3, mode="nearest")[:h, :w]
    if f.shape != (h, w):  # zoom rounding
        f = np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1])), mode="edge")
    return (f - f.mean()) / (f.std() + 1e-9)


@dataclass
class _Fundus:
    """The geometry of one synthetic fundus image (pixels): FOV circle, optic disc, macula."""

    h: int
    w: int
    wscale: float  # vessel width scale, sqrt(min(H, W) / 128)
    cy: float
    cx: float
    R: float  # FOV radius
    yy: np.ndarray
    xx: np.ndarray
    rho: np.ndarray  # distance to the FOV centre
    fov: np.ndarray
    side: float  # optic disc right (+1) or left (-1) of the centre
    od_y: float
    od_x: float
    od_r: float
    mac_y: float
    mac_x: float


def _fundus_geometry(rng: np.random.Generator, h: int, w: int) -> _Fundus:
    """Draw the FOV circle, the optic disc and the macula."""
    wscale = (min(h, w) / 128.0) ** 0.5
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    R = 0.47 * min(h, w) * rng.uniform(0.97, 1.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rho = np.hypot(yy - cy, xx - cx)
    fov = rho <= R

    side = rng.choice([-1.0, 1.0])  # optic disc right (+1) or left (-1) of the centre
    od_y = cy + rng.uniform(-0.08, 0.08) * R
    od_x = cx + side * rng.uniform(0.6, 0.78) * R
    od_r = rng.uniform(0.11, 0.14) * R
    mac_y, mac_x = cy + rng.uniform(-0.06, 0.06) * R, cx - side * rng.uniform(-0.05, 0.1) * R

    return _Fundus(h, w, wscale, cy, cx, R, yy, xx, rho, fov, side, od_y, od_x, od_r, mac_y, mac_x)


def _grow_vessel_trees(rng: np.random.Generator, g: _Fundus) -> tuple[_TreeGrower, float]:
    """Grow the arcades (a vein and an artery above and below the disc), the nasal and the macular
    vessels from the optic disc; returns the grower holding their strokes and the tortuosity."""
    wscale, cy, cx, R, side, od_y, od_x, od_r = g.wscale, g.cy, g.cx, g.R, g.side, g.od_y, g.od_x, g.od_r
    grower = _TreeGrower(rng, cy, cx, R, wscale)
    r_main = rng.uniform(1.25, 1.6) * wscale
    c_main = rng.uniform(0.22, 0.38)
    temporal = np.pi if side > 0 else 0.0
    tort = rng.uniform(0.4, 1.2)
    for up in (-1.0, 1.0):  # upper (-1) and lower (+1) arcade: vein and artery
        base_theta = up * np.pi / 2 + up * side * np.deg2rad(rng.uniform(-5, 20))
        decay = rng.uniform(0.45, 0.7) * R
        turn = rng.uniform(1.5, 2.0) / decay  # turns about 85-115 degrees, mostly near the disc
        curv = -side * turn if up < 0 else side * turn
        for rk, ck in ((1.0, 1.0), (0.75, 0.7)):  # vein, then the thinner, fainter artery
            theta = base_theta + np.deg2rad(rng.uniform(-12, 12))
            y0 = od_y + rng.normal(0, 0.25) * od_r
            x0 = od_x + rng.normal(0, 0.25) * od_r
            grower.grow(
                y0,
                x0,
                theta,
                r_main * rk * rng.uniform(0.9, 1.05),
                c_main * ck * rng.uniform(0.85, 1.1),
                R * rng.uniform(1.3, 1.7),
                curv * rng.uniform(0.85, 1.15),
                tort * rng.uniform(0.8, 1.2),
                decay=decay,
            )
    nasal = 0.0 if side > 0 else np.pi
    for up in (-1.0, 1.0):  # nasal vessels, away from the macula
        theta = nasal + up * side * np.deg2rad(rng.uniform(30, 65))
        grower.grow(
            od_y,
            od_x,
            theta,
            r_main * rng.uniform(0.6, 0.8),
            c_main * rng.uniform(0.7, 1.0),
            R * rng.uniform(0.5, 0.8),
            rng.normal(0, 0.004),
            tort,
            max_depth=2,
        )
    for _ in range(int(rng.integers(1, 3))):  # thin macular vessels
        theta = temporal + np.deg2rad(rng.uniform(-25, 25))
        grower.grow(
            od_y,
            od_x,
            theta,
            r_main * rng.uniform(0.3, 0.45),
            c_main * rng.uniform(0.5, 0.8),
            R * rng.uniform(0.4, 0.7),
            rng.normal(0, 0.005),
            tort,
            max_depth=2,
        )

    return grower, tort


def _render_vessels(
    rng: np.random.Generator, g: _Fundus, grower: _TreeGrower, tort: float
) -> tuple[np.ndarray, np.ndarray]:
    """Render the trees, then add trees growing inward from the FOV border until the vessel
    fraction reaches a target of 9-12 % of the FOV; returns ``(vessel darkening (H, W) float,
    vessel mask (H, W) bool)``."""
    wscale, cy, cx, R, fov = g.wscale, g.cy, g.cx, g.R, g.fov
    h, w = g.h, g.w
    canvas = _Canvas(h, w)
    _render_strokes(canvas, grower.strokes)
    target = rng.uniform(0.09, 0.12)
    n_border, max_border = 0, int(12 * max(1.0, min(h, w) / 128.0))
    while n_border < 2 or (
        n_border < max_border and float((canvas.depth.reshape(h, w)[fov] >= 0).mean()) < target
    ):  # trees growing inward from the FOV border
        grower.strokes = []
        grower.avoid = ndimage.distance_transform_edt(canvas.depth.reshape(h, w) < 0)
        phi = rng.uniform(0, 2 * np.pi)
        y0, x0 = cy + (R - 1.0) * np.sin(phi), cx + (R - 1.0) * np.cos(phi)
        theta = phi + np.pi + np.deg2rad(rng.uniform(-35, 35))
        grower.grow(
            y0,
            x0,
            theta,
            rng.uniform(0.8, 1.4) * wscale,
            rng.uniform(0.10, 0.30),
            R * rng.uniform(0.5, 0.9),
            rng.normal(0, 0.006),
            tort * rng.uniform(0.8, 1.3),
            max_depth=3,
        )
        _render_strokes(canvas, grower.strokes)
        n_border += 1
    grower.avoid = None
    vessel_dark = ndimage.gaussian_filter(canvas.dark.reshape(h, w), 0.6)
    mask = (canvas.depth.reshape(h, w) >= 0) & fov

    return vessel_dark, mask


def _background(rng: np.random.Generator, g: _Fundus, grower: _TreeGrower) -> np.ndarray:
    """The green-channel-like background (H, W) float: illumination, optic disc, macula, texture
    and distractors that are not vessels (wide faint streaks, dark and bright spots)."""
    wscale, cy, cx, R, yy, xx, rho, od_y, od_x, od_r, mac_y, mac_x = (
        g.wscale,
        g.cy,
        g.cx,
        g.R,
        g.yy,
        g.xx,
        g.rho,
        g.od_y,
        g.od_x,
        g.od_r,
        g.mac_y,
        g.mac_x,
    )
    h, w = g.h, g.w
    # --- background (green-channel-like) ---
    bg = np.full((h, w), rng.uniform(0.40, 0.55), dtype=np.float32)
    bg *= 1.0 + rng.uniform(0.04, 0.09) * _smooth_field(rng, h, w, 5)
    bg *= 1.0 - rng.uniform(0.15, 0.30) * (rho / R) ** 2
    d_od = np.hypot(yy - od_y, xx - od_x) / od_r
    bg += rng.uniform(0.18, 0.32) * np.exp(-(d_od**4)) + rng.uniform(0.05, 0.12) * np.exp(-((d_od / 0.45) ** 2))
    d_mac = np.hypot(yy - mac_y, xx - mac_x) / (0.25 * R)
    bg -= rng.uniform(0.04, 0.10) * np.exp(-(d_mac**2))
    tex = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), rng.uniform(1.0, 2.0) * wscale)
    bg += rng.uniform(0.012, 0.028) / (tex.std() + 1e-9) * tex
    # distractors: wide faint streaks, dark round spots, bright spots (not vessels)
    distract = _Canvas(h, w)
    grower.strokes = []
    for _ in range(int(rng.integers(1, 5))):
        phi = rng.uniform(0, 2 * np.pi)
        rr = rng.uniform(0.1, 0.8) * R
        pts = grower.walk(
            cy + rr * np.sin(phi),
            cx + rr * np.cos(phi),
            rng.uniform(0, 2 * np.pi),
            R * rng.uniform(0.3, 0.8),
            rng.normal(0, 0.01),
            rng.uniform(0.5, 1.5),
        )
        n = len(pts)
        grower.strokes.append((pts, np.full(n, rng.uniform(2.5, 4.0) * wscale), np.full(n, rng.uniform(0.03, 0.07))))
    for _ in range(int(rng.integers(0, 4))):
        phi, rr = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0.02, 0.8)) * R
        p = np.array([[cy + rr * np.sin(phi), cx + rr * np.cos(phi)]] * 2) + [[0, 0], [0, 0.01]]
        rad = rng.uniform(1.2, 2.5) * wscale
        grower.strokes.append((p, np.full(2, rad), np.full(2, rng.uniform(0.12, 0.3))))
    _render_strokes(distract, grower.strokes, update_depth=False)
    bg *= 1.0 - ndimage.gaussian_filter(distract.dark.reshape(h, w), 1.0)
    for _ in range(int(rng.integers(0, 4))):
        phi, rr = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0.02, 0.8)) * R
        dd = np.hypot(yy - (cy + rr * np.sin(phi)), xx - (cx + rr * np.cos(phi))) / (rng.uniform(1.0, 2.2) * wscale)
        bg += rng.uniform(0.05, 0.15) * np.exp(-(dd**2))

    return bg


def _synthesise(rng: np.random.Generator, h: int, w: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image. Returns raw float32 (C, H, W) in [0, 1], mask uint8 (H, W), fov bool (H, W).

    The random draws happen in a fixed order (geometry, trees, border trees, background, noise),
    so a seed gives the same image on every machine.
    """
    g = _fundus_geometry(rng, h, w)
    grower, tort = _grow_vessel_trees(rng, g)
    vessel_dark, mask = _render_vessels(rng, g, grower, tort)
    bg = _background(rng, g, grower)
    R, rho, fov = g.R, g.rho, g.fov
    green = bg * (1.0 - vessel_dark) + rng.normal(0, rng.uniform(0.010, 0.022), (h, w))
    edge = np.clip(R + 0.5 - rho, 0.0, 1.0)  # anti-aliased FOV rim
    outside = 0.02 + rng.normal(0, 0.004, (h, w))
    green = edge * green + (1 - edge) * outside
    if channels == 1:
        raw = green[None]
    else:
        red = edge * (np.clip(0.35 + 1.1 * bg, 0, 1) * (1.0 - 0.45 * vessel_dark) + rng.normal(0, 0.012, (h, w))) + (
            1 - edge
        ) * (0.03 + outside)
        blue = edge * (0.35 * bg * (1.0 - 0.6 * vessel_dark) + rng.normal(0, 0.02, (h, w))) + (1 - edge) * outside
        raw = np.stack([red, green, blue])
    return np.clip(raw, 0.0, 1.0).astype(np.float32), mask.astype(np.uint8), fov


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 32 for v in hw):
        raise ConfigError(f"synthetic_vessels size must be an int or (H, W) of ints >= 32, got {size!r}")
    return int(hw[0]), int(hw[1])


def generate_vessel_case(
    seed: int = 0, split: str = "train", index: int = 0, size: int | tuple[int, int] = 128, channels: int = 1
) -> Case:
    """Generate synthetic image ``index`` of ``split`` (see the module docstring).

    Args:
        seed: non-negative int; with ``split`` and ``index`` it fully determines the image.
        split: "train" or "test" (disjoint random streams).
        index: non-negative image number.
        size: H = W, or (H, W); at least 32.
        channels: 1 (green-channel-like) or 3 (RGB fundus-like, vessels darkest in green).

    Returns:
        Case with id ``f"{split}_{index:03d}"``, image float32 (C, H, W) z-scored over the FOV,
        mask uint8 (H, W) {0, 1}, fov bool (H, W) (a disc), display uint8 (H, W) or (H, W, 3),
        path None.

    Raises:
        ConfigError: bad split, size, channels, or a negative seed/index.
    """
    if split not in _SPLIT_INDEX:
        raise ConfigError(f"synthetic_vessels split must be 'train' or 'test', got {split!r}")
    if channels not in (1, 3):
        raise ConfigError(f"synthetic_vessels channels must be 1 or 3, got {channels!r}")
    if int(seed) < 0 or int(index) < 0:
        raise ConfigError(f"synthetic_vessels seed and index must be >= 0, got {seed}, {index}")
    h, w = _check_size(size)
    rng = np.random.default_rng([int(seed), _SPLIT_INDEX[split], int(index)])
    raw, mask, fov = _synthesise(rng, h, w, channels)
    display = np.rint(raw * 255).astype(np.uint8)
    display = display[0] if channels == 1 else np.ascontiguousarray(np.moveaxis(display, 0, -1))
    return Case(
        id=f"{split}_{index:03d}", image=zscore_in_fov(raw, fov), mask=mask, fov=fov, display=display, path=None
    )


@register_dataset("synthetic_vessels")
class SyntheticVessels(CaseDataset):
    """Generated fundus-like vessel images (the default input; see the module docstring).

    Args:
        root: ignored (accepted so every dataset has the same signature); nothing is read.
        split: "train" or "test".
        n_images: number of images; default 16 for "train", 8 for "test".
        size: H = W, or (H, W), at least 32 (default 128).
        seed: non-negative int; same seed -> identical arrays.
        channels: 1 or 3.
        centerline: also give each case a centerline target (skeleton of the vessel mask), for
            networks with a centerline head (OCTA-Net).
        classes: 2 (vessel / background) or 3 (label 2 = vessel core: vessel pixels more than
            1 px from the background, Euclidean; label 1 = the rest of the vessel), a small
            multi-class task for testing the multi-class engine.

    Raises:
        ConfigError: invalid option.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        n_images: int | None = None,
        size: int | tuple[int, int] = 128,
        seed: int = 0,
        channels: int = 1,
        centerline: bool = False,
        classes: int = 2,
    ) -> None:
        if split not in _SPLIT_INDEX:
            raise ConfigError(f"synthetic_vessels split must be 'train' or 'test', got {split!r}")
        n = _DEFAULT_N[split] if n_images is None else n_images
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"synthetic_vessels n_images must be a positive int, got {n_images!r}")
        self.size = _check_size(size)
        self.seed = int(seed)
        if classes not in (2, 3):
            raise ConfigError(f"synthetic_vessels classes must be 2 or 3, got {classes!r}")
        cases = [generate_vessel_case(seed, split, i, self.size, channels) for i in range(int(n))]
        if centerline:
            from medseg.data.files import skeleton_centerline

            for c in cases:
                c.centerline = skeleton_centerline(c.mask)
        if classes == 3:
            from scipy.ndimage import distance_transform_edt

            for c in cases:
                core = distance_transform_edt(c.mask > 0) > 1.0
                c.mask = (c.mask > 0).astype(np.uint8) + core.astype(np.uint8)
                c.num_classes = 3
        super().__init__(cases, name="synthetic_vessels", split=split)


__all__ = ["SyntheticVessels", "generate_vessel_case"]
