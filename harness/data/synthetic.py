"""Procedural segmentation domains, deterministic from a seed.

`shapes`: several textured objects (ellipses, polygons, irregular blobs) with soft edges on a
textured, cluttered background; later objects occlude earlier ones, so each instance mask is
its *visible* part. `lesions`: ultrasound-like images (multiplicative speckle, depth-dependent
gain) with low-contrast, soft-edged hypoechoic blobs. `shapes-restyled`: the `shapes` geometry
with another palette, lower contrast and coarser texture (a style shift with the same masks'
statistics).

The *glyph* domains are made so that the mask is not implied by its box: `glyphs` holds
non-convex and holed shapes (stars, rings, C-shapes), thin curved strokes, small objects inside
a ring's hole and overlapping glyphs, in solid textured colours on a textured background — a
box-fill or ellipse-in-box prior (:mod:`harness.evaluate.priors`) scores well under 0.6 mIoU
on it. `glyphs-texture` has the same geometry with boundaries defined by texture alone: each
object has nearly the background's mean colour and differs in stripe orientation and
frequency (a style shift of `glyphs` with the same masks' statistics).

Every domain returns uint8 images (N, H, W, 3) and boolean instance masks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Bump when generation changes: cached datasets are keyed by it.
GENERATOR_VERSION = 4
# Append only: a domain's index seeds its images, so reordering would change every dataset.
DOMAINS = ("shapes", "shapes-restyled", "lesions", "glyphs", "glyphs-texture")
MIN_COLOUR_GAP = 0.4  # RGB distance between an object's colour and the background's
MAX_OVERLAP = 0.3  # an object may hide at most this share of the objects drawn before it
MIN_VISIBLE_FRACTION = 0.02  # instances smaller than this share of the image are dropped


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to [0, 1] (a cheap fractal-ish texture)."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=scale, mode="wrap")
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-12)


def _shape_alpha(rng: np.random.Generator, size: int, kind: str,
                 radius_range: tuple[float, float] = (0.12, 0.28)) -> np.ndarray:
    """A soft (0..1) silhouette of one object, centred somewhere in the image."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = rng.uniform(0.15, 0.85, size=2) * size
    radius = rng.uniform(*radius_range) * size
    dy, dx = yy - cy, xx - cx
    angle = np.arctan2(dy, dx)
    dist = np.hypot(dy, dx)
    if kind == "ellipse":
        theta, aspect = rng.uniform(0, np.pi), rng.uniform(0.45, 1.0)
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / aspect
        signed = np.hypot(u, v) - radius
    elif kind == "polygon":
        n = int(rng.integers(3, 8))
        offset = rng.uniform(0, 2 * np.pi)
        # Distance to a regular n-gon's edge along each direction.
        sector = np.mod(angle - offset, 2 * np.pi / n) - np.pi / n
        edge = radius * np.cos(np.pi / n) / np.cos(sector)
        signed = dist - edge
    else:  # blob: radius modulated by a few random harmonics
        harmonics = sum(
            rng.uniform(0.05, 0.2) / k * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
            for k in range(2, 6)
        )
        signed = dist - radius * (1 + harmonics)
    softness = rng.uniform(0.6, 2.0)
    return 1.0 / (1.0 + np.exp(np.clip(signed / softness, -50, 50)))


def _texture(rng: np.random.Generator, size: int, colour: np.ndarray, contrast: float,
             grain: float) -> np.ndarray:
    """Colour times (stripes × smooth noise) texture, (H, W, 3) in 0..1."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    freq, phase, theta = rng.uniform(3, 12), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta))
                                 + phase)
    noise = _smooth_noise(rng, size, grain)
    pattern = 1 - contrast + contrast * (0.5 * stripes + 0.5 * noise)
    return np.clip(colour[None, None, :] * pattern[..., None], 0, 1)


def _placed_shape(rng: np.random.Generator, size: int, kind: str,
                  earlier: list[np.ndarray], tries: int = 10) -> np.ndarray | None:
    """A silhouette that hides at most MAX_OVERLAP of any earlier object (partial occlusion,
    not slivers), or None when no such placement was found."""
    for _ in range(tries):
        alpha = _shape_alpha(rng, size, kind)
        inside = alpha > 0.5
        if all((inside & (e > 0.5)).sum() <= MAX_OVERLAP * (e > 0.5).sum() for e in earlier):
            return alpha
    return None


def _shapes_image(rng: np.random.Generator, size: int, max_objects: int, restyled: bool):
    # The restyled domain: muted colours from a narrow range, weak and coarse texture, objects
    # barely distinct from the background. The base domain keeps every object's colour at
    # least MIN_COLOUR_GAP from the background's, so the boundary is visible but textured.
    contrast, grain, gap = (0.25, 6.0, 0.12) if restyled else (0.5, 2.0, MIN_COLOUR_GAP)

    def colour(avoid=None):
        while True:
            c = rng.uniform(0.25, 0.6, 3) if restyled else rng.uniform(0.05, 1.0, 3)
            if avoid is None or np.linalg.norm(c - avoid) >= gap:
                return c

    background = colour()
    image = _texture(rng, size, background, contrast, grain * 2)
    # Clutter: small unlabelled shapes so "anything that is not background" is not the answer.
    for _ in range(int(rng.integers(2, 6))):
        alpha = _shape_alpha(rng, size, "blob", (0.04, 0.1)) * 0.8
        alpha = alpha * (ndimage.zoom(rng.uniform(size=(4, 4)), size / 4, order=1)[:size, :size] > 0.5)
        image = image * (1 - alpha[..., None]) + colour() * alpha[..., None]
    alphas: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        kind = ("ellipse", "polygon", "blob")[int(rng.integers(3))]
        alpha = _placed_shape(rng, size, kind, alphas)
        if alpha is None:
            continue
        tex = _texture(rng, size, colour(avoid=background), contrast, grain)
        image = image * (1 - alpha[..., None]) + tex * alpha[..., None]
        alphas.append(alpha)
    image = image + rng.normal(0, 0.02, image.shape)
    return image, _visible_masks(alphas)


def _lesions_image(rng: np.random.Generator, size: int, max_objects: int):
    yy = np.mgrid[0:size, 0:size][0] / size
    tissue = 0.35 + 0.35 * _smooth_noise(rng, size, 4.0) - 0.15 * yy  # depth attenuation
    alphas = []
    for _ in range(int(rng.integers(1, max(2, max_objects // 2 + 1)))):
        alpha = _shape_alpha(rng, size, ("ellipse", "blob")[int(rng.integers(2))])
        alpha = ndimage.gaussian_filter(alpha, sigma=1.0)  # extra-soft lesion border
        darkness = rng.uniform(0.35, 0.7)
        tissue = tissue * (1 - darkness * alpha)
        alphas.append(alpha)
    speckle = rng.rayleigh(scale=0.8, size=(size, size))
    speckle = ndimage.gaussian_filter(speckle, sigma=0.7)
    gray = np.clip(tissue * speckle, 0, 1)
    return np.repeat(gray[..., None], 3, axis=2), _visible_masks(alphas)


GLYPH_KINDS = ("star", "ring", "c-shape", "curve")
GLYPH_COLOUR_GAP = 0.3  # RGB distance between any two glyphs' colours (in `glyphs`)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy, xx


def _soft(signed: np.ndarray, softness: float) -> np.ndarray:
    """Signed distance (negative inside) → a soft 0..1 silhouette."""
    return 1.0 / (1.0 + np.exp(np.clip(signed / softness, -50, 50)))


def _ring_signed(rng: np.random.Generator, size: int, cy: float, cx: float, radius: float):
    """Signed distance to an (elliptical) ring of outer radius `radius`, its ring coordinates
    (angle, radius) and its inner radius."""
    yy, xx = _grid(size)
    theta, aspect = rng.uniform(0, np.pi), rng.uniform(0.6, 1.0)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / aspect
    r = np.hypot(u, v)
    thickness = rng.uniform(0.3, 0.5) * radius
    mid = radius - thickness / 2
    return np.abs(r - mid) - thickness / 2, np.arctan2(v, u), r, (radius - thickness) * aspect


def _polyline_distance(size: int, points: np.ndarray, reach: float) -> np.ndarray:
    """Distance of every pixel centre to the polyline through `points` (n, 2) as (y, x),
    exact within `reach` of the polyline's bounding box and `reach` beyond it."""
    out = np.full((size, size), float(reach))
    lo = np.clip(np.floor(points.min(axis=0) - reach), 0, size).astype(int)
    hi = np.clip(np.ceil(points.max(axis=0) + reach) + 1, 0, size).astype(int)
    if (hi <= lo).any():
        return out
    yy, xx = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]].astype(np.float64)
    a, b = points[:-1, :, None, None], points[1:, :, None, None]
    ab = b - a
    length2 = np.maximum((ab ** 2).sum(axis=1), 1e-12)
    t = np.clip(((yy - a[:, 0]) * ab[:, 0] + (xx - a[:, 1]) * ab[:, 1]) / length2, 0, 1)
    near = np.hypot(yy - a[:, 0] - t * ab[:, 0], xx - a[:, 1] - t * ab[:, 1]).min(axis=0)
    out[lo[0]:hi[0], lo[1]:hi[1]] = np.minimum(near, reach)
    return out


def _glyph_alpha(rng: np.random.Generator, size: int, kind: str) -> tuple[np.ndarray, tuple | None]:
    """A soft silhouette of one glyph, and for holed glyphs (centre y, x, hole radius)."""
    yy, xx = _grid(size)
    cy, cx = rng.uniform(0.2, 0.8, size=2) * size
    radius = rng.uniform(0.16, 0.32) * size
    softness = rng.uniform(0.5, 1.2)
    hole = None
    if kind == "star":
        n = int(rng.integers(4, 8))
        inner = rng.uniform(0.3, 0.5)
        offset = rng.uniform(0, 2 * np.pi)
        angle = np.arctan2(yy - cy, xx - cx)
        # 1 at the tips, 0 half-way between them: the edge runs from R·inner out to R
        sector = np.mod(angle - offset, 2 * np.pi / n) / (2 * np.pi / n)
        edge = radius * (inner + (1 - inner) * np.abs(2 * sector - 1))
        signed = np.hypot(yy - cy, xx - cx) - edge
    elif kind in ("ring", "c-shape"):
        signed, angle, r, inner_radius = _ring_signed(rng, size, cy, cx, radius)
        if kind == "c-shape":
            gap = rng.uniform(1.0, 2.2)  # radians
            centre = rng.uniform(-np.pi, np.pi)
            off = np.abs(np.angle(np.exp(1j * (angle - centre))))  # angular distance to gap
            signed = np.maximum(signed, (gap / 2 - off) * np.maximum(r, 1.0))
        hole = (cy, cx, inner_radius)
    else:  # curve: a thick stroke along a circular arc or a sine wave
        width = rng.uniform(0.06, 0.09) * size
        t = np.linspace(0, 1, 33)
        if rng.uniform() < 0.5:
            rho = rng.uniform(0.25, 0.5) * size
            start, sweep = rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 3.5)
            a = start + sweep * t
            # centre the arc's midpoint at (cy, cx)
            mid = start + sweep / 2
            points = np.stack([cy + rho * (np.sin(a) - np.sin(mid)),
                               cx + rho * (np.cos(a) - np.cos(mid))], axis=1)
        else:
            length = rng.uniform(0.5, 0.8) * size
            amplitude = rng.uniform(0.08, 0.16) * size
            cycles, phase = rng.uniform(0.6, 1.4), rng.uniform(0, 2 * np.pi)
            theta = rng.uniform(0, np.pi)
            along = (t - 0.5) * length
            across = amplitude * np.sin(2 * np.pi * cycles * t + phase)
            points = np.stack([cy + along * np.sin(theta) + across * np.cos(theta),
                               cx + along * np.cos(theta) - across * np.sin(theta)], axis=1)
        # beyond width/2 + 12 px the silhouette is 0 whatever the softness (≤ 1.2)
        signed = _polyline_distance(size, points, width / 2 + 12) - width / 2
    return _soft(signed, softness), hole


def _hole_filler(rng: np.random.Generator, size: int, hole: tuple) -> np.ndarray:
    """A small disc inside a ring's hole (a second object inside the ring's box)."""
    yy, xx = _grid(size)
    cy, cx, inner = hole
    radius = rng.uniform(0.45, 0.7) * inner
    shift = (inner - radius) * 0.5 * rng.uniform(-1, 1, size=2)
    signed = np.hypot(yy - cy - shift[0], xx - cx - shift[1]) - radius
    return _soft(signed, rng.uniform(0.5, 1.0))


def _stripes(rng: np.random.Generator, size: int, colour: np.ndarray, contrast: float,
             freq: float, theta: float, grain: float) -> np.ndarray:
    """Colour times (stripes of frequency `freq` at angle `theta` × smooth noise), (H, W, 3)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta))
                                 + phase)
    noise = _smooth_noise(rng, size, grain)
    pattern = 1 - contrast + contrast * (0.8 * stripes + 0.2 * noise)
    return np.clip(colour[None, None, :] * pattern[..., None], 0, 1)


def _glyphs_image(rng: np.random.Generator, size: int, max_objects: int, textured: bool):
    """`glyphs` (solid colours, visible edges) or `glyphs-texture` (edges by texture alone)."""
    background = rng.uniform(0.3, 0.8, 3) if textured else rng.uniform(0.05, 1.0, 3)
    bg_freq, bg_theta = rng.uniform(3, 6), rng.uniform(0, np.pi)
    if textured:
        image = _stripes(rng, size, background, 0.6, bg_freq, bg_theta, 2.0)
    else:
        image = _texture(rng, size, background, 0.5, 4.0)
    used: list[np.ndarray] = []

    def colour() -> np.ndarray:
        if textured:  # nearly the background's mean colour: only the texture tells them apart
            return np.clip(background + rng.uniform(-0.06, 0.06, 3), 0, 1)
        for _ in range(50):
            c = rng.uniform(0.05, 1.0, 3)
            if np.linalg.norm(c - background) >= MIN_COLOUR_GAP and all(
                    np.linalg.norm(c - u) >= GLYPH_COLOUR_GAP for u in used):
                break
        used.append(c)
        return c

    def paint(alpha: np.ndarray) -> None:
        nonlocal image
        if textured:  # stripes turned ≥ 45° from the background's, at another frequency
            theta = bg_theta + rng.uniform(np.pi / 4, 3 * np.pi / 4)
            freq = bg_freq * rng.uniform(1.8, 2.6)
            tex = _stripes(rng, size, colour(), 0.6, freq, theta, 1.5)
        else:
            tex = _texture(rng, size, colour(), 0.3, 2.0)
        image = image * (1 - alpha[..., None]) + tex * alpha[..., None]

    # Clutter: a few small unlabelled blobs, so "anything not background" is not the answer.
    for _ in range(int(rng.integers(1, 4))):
        paint(_shape_alpha(rng, size, "blob", (0.03, 0.07)))
    alphas: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        kind = GLYPH_KINDS[int(rng.integers(len(GLYPH_KINDS)))]
        for _ in range(10):
            alpha, hole = _glyph_alpha(rng, size, kind)
            inside = alpha > 0.5
            if all((inside & (e > 0.5)).sum() <= MAX_OVERLAP * (e > 0.5).sum() for e in alphas):
                break
        else:
            continue
        paint(alpha)
        alphas.append(alpha)
        if hole is not None and rng.uniform() < 0.5:
            filler = _hole_filler(rng, size, hole)
            paint(filler)
            alphas.append(filler)
    image = image + rng.normal(0, 0.02, image.shape)
    return image, _visible_masks(alphas)


def _visible_masks(alphas: list[np.ndarray]) -> list[np.ndarray]:
    """Binary instance masks where each later object hides what it covers of earlier ones."""
    masks, covered = [], np.zeros_like(alphas[0], dtype=bool) if alphas else None
    for alpha in reversed(alphas):
        mask = (alpha > 0.5) & ~covered
        covered |= alpha > 0.5
        if mask.mean() >= MIN_VISIBLE_FRACTION:
            masks.append(mask)
    return masks[::-1]


def generate(domain: str, n_images: int, size: int, seed: int, max_objects: int = 4):
    """`n_images` images of `domain`: (images uint8 (N,H,W,3), masks bool (K,H,W), owner (K,))."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    images, masks, owner = [], [], []
    for i in range(n_images):
        # One generator per image: image i is the same whatever n_images is.
        rng = np.random.default_rng([seed, i, DOMAINS.index(domain)])
        while True:
            if domain == "lesions":
                image, inst = _lesions_image(rng, size, max_objects)
            elif domain.startswith("glyphs"):
                image, inst = _glyphs_image(rng, size, max_objects, domain == "glyphs-texture")
            else:
                image, inst = _shapes_image(rng, size, max_objects, domain == "shapes-restyled")
            if inst:  # an image whose objects were all occluded or tiny is redrawn
                break
        images.append(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
        masks.extend(inst)
        owner.extend([i] * len(inst))
    return (np.stack(images), np.stack(masks).astype(bool), np.asarray(owner, dtype=np.int64))
