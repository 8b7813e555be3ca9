"""Procedural segmentation domains, deterministic from a seed.

`shapes`: several textured objects (ellipses, polygons, irregular blobs) with soft edges on a
textured, cluttered background; later objects occlude earlier ones, so each instance mask is
its *visible* part. `lesions`: ultrasound-like images (multiplicative speckle, depth-dependent
gain) with low-contrast, soft-edged hypoechoic blobs. `shapes-restyled`: the `shapes` geometry
with another palette, lower contrast and coarser texture (a style shift with the same masks'
statistics). Every domain returns uint8 images (N, H, W, 3) and boolean instance masks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Bump when generation changes: cached datasets are keyed by it.
GENERATOR_VERSION = 4
DOMAINS = ("shapes", "shapes-restyled", "lesions")
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
            else:
                image, inst = _shapes_image(rng, size, max_objects, domain == "shapes-restyled")
            if inst:  # an image whose objects were all occluded or tiny is redrawn
                break
        images.append(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
        masks.extend(inst)
        owner.extend([i] * len(inst))
    return (np.stack(images), np.stack(masks).astype(bool), np.asarray(owner, dtype=np.int64))
