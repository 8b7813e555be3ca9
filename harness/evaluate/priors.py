"""Prompt-only priors: "models" that segment from the prompt alone and never look at the image.

A prior answers the question a trained segmenter must beat: how much of the mask does the
prompt already give away? Each prior is a ``torch.nn.Module`` with a ``chunk_logits`` method,
the hook :func:`harness.evaluate.segment.predict_dataset` asks for a chunk's mask logits (the
SAM-E :class:`~harness.evaluate.ensemble.Ensemble` uses the same hook), so a prior is scored by
the very code that scores trained models: clean splits, the shift suite, the per-cell score
cache (whose key digests the class, ``extra_repr`` and ``state_dict``; each prior has a distinct
``extra_repr`` and holds its disc area as a frozen parameter, which also gives
``next(model.parameters())`` a device).

Geometry. Boxes are ``(x0, y0, x1, y1)`` as :func:`harness.data.prompts.mask_boxes` makes them:
the pixel indices of the first and last mask column / row, *inclusive*. A box therefore covers
the continuous rectangle ``[x0 - ½, x1 + ½] × [y0 - ½, y1 + ½]`` (pixel ``j`` spans
``[j - ½, j + ½]``), and a pixel belongs to a shape when its centre does. For a tight box this
fills exactly the columns ``x0..x1`` and rows ``y0..y1``; a jittered (float) box always covers at
least one pixel per side. Points are ``(x, y)`` pixel indices (:func:`interior_points`).

- ``box-fill`` (:class:`BoxFill`): every pixel of the box.
- ``ellipse-in-box`` (:class:`EllipseInBox`): the ellipse inscribed in that rectangle (centre
  ``((x0+x1)/2, (y0+y1)/2)``, semi-axes ``(x1-x0)/2 + ½`` and ``(y1-y0)/2 + ½``); a 1-pixel-wide
  box gives its full column, a 1×1 box its one pixel.
- ``point-disc`` (:class:`PointDisc`): a disc of ``area`` pixels (by default the median
  training-object area, :func:`median_object_area`) centred on the point, clipped to the image.

Prompt kinds. With box prompts every prior does its box-based thing; the point-disc prior,
given a box, puts its disc at the box centre and clips it to the box (the disc prior told where
the object is and how far it may reach). With point prompts there is no box, so the box priors
fall back to the disc of their own ``area``: on the shift suite's ``prompt:point`` cell all
three priors score the same, which is the honest answer (a point alone says nothing about
extent beyond the typical object size).

Logits are ``+LOGIT`` inside and ``-LOGIT`` outside, so ``> 0`` is the mask and mean-logit
ensembling with a prior behaves like a vote.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from harness.data import SegDataset

LOGIT = 10.0
"""Magnitude of a prior's logits: +LOGIT inside its mask, -LOGIT outside."""


def median_object_area(dataset: SegDataset) -> float:
    """Median instance area of ``dataset`` in pixels (0.0 for a dataset without instances)."""
    if len(dataset.masks) == 0:
        return 0.0
    return float(np.median(dataset.masks.sum(axis=(1, 2))))


def _grid(image_size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ys (1, H, 1) and xs (1, 1, W), float32."""
    h, w = image_size
    ys = torch.arange(h, device=device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, w)
    return ys, xs


def _sides(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x0, y0, x1, y1 as (k, 1, 1) float32, each pair sorted (a flipped box is the same box)."""
    b = boxes.float()
    x0, x1 = torch.minimum(b[:, 0], b[:, 2]), torch.maximum(b[:, 0], b[:, 2])
    y0, y1 = torch.minimum(b[:, 1], b[:, 3]), torch.maximum(b[:, 1], b[:, 3])
    return tuple(t.view(-1, 1, 1) for t in (x0, y0, x1, y1))


def box_fill_masks(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(k, H, W) bool: the pixels whose centres lie in ``[x0-½, x1+½] × [y0-½, y1+½]``."""
    ys, xs = _grid(image_size, boxes.device)
    x0, y0, x1, y1 = _sides(boxes)
    return (xs >= x0 - 0.5) & (xs <= x1 + 0.5) & (ys >= y0 - 0.5) & (ys <= y1 + 0.5)


def ellipse_masks(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(k, H, W) bool: the ellipse inscribed in each box's pixel rectangle."""
    ys, xs = _grid(image_size, boxes.device)
    x0, y0, x1, y1 = _sides(boxes)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = (x1 - x0) / 2 + 0.5, (y1 - y0) / 2 + 0.5
    return ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 <= 1.0


def disc_masks(centres: torch.Tensor, area: float | torch.Tensor,
               image_size: tuple[int, int]) -> torch.Tensor:
    """(k, H, W) bool: discs of ``area`` pixels (radius √(area/π)) centred on (k, 2) xy.

    A pixel belongs when its centre is within the radius; the pixel nearest the centre always
    does (when inside the image), so a tiny disc between pixel centres is not empty.
    """
    ys, xs = _grid(image_size, centres.device)
    c = centres.float()
    cx, cy = c[:, 0].view(-1, 1, 1), c[:, 1].view(-1, 1, 1)
    r2 = torch.as_tensor(area, dtype=torch.float32, device=centres.device) / torch.pi
    nearest = (xs == torch.floor(cx + 0.5)) & (ys == torch.floor(cy + 0.5))
    return ((xs - cx) ** 2 + (ys - cy) ** 2 <= r2) | nearest


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    """(k, 2) xy centres of (k, 4) xyxy boxes."""
    b = boxes.float()
    return torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], dim=1)


class Prior(torch.nn.Module):
    """A prompt-only segmenter; subclasses say what to draw for a box (:meth:`box_masks`).

    ``area``: the disc used for point prompts, in pixels. Held as a frozen parameter so that
    ``next(model.parameters())`` finds a device and the score cache keys on it.
    """

    name = "prior"

    def __init__(self, area: float):
        super().__init__()
        if not area >= 0:
            raise ValueError(f"area must be ≥ 0 pixels, got {area!r}")
        self.area = torch.nn.Parameter(torch.tensor(float(area)), requires_grad=False)

    def extra_repr(self) -> str:
        return f"prior={self.name}, area={float(self.area):g}, logit={LOGIT:g}"

    def box_masks(self, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def point_masks(self, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(k, 2) xy points → the disc of ``area`` around each."""
        return disc_masks(points, self.area, image_size)

    def masks(self, prompts: dict, image_size: tuple[int, int]) -> torch.Tensor:
        """(k, H, W) bool for ``prompts``: ``boxes`` (k, 4) or ``points`` ((k, n, 2), labels);
        of several points, the first is used."""
        if prompts.get("boxes") is not None:
            return self.box_masks(prompts["boxes"], image_size)
        if prompts.get("points") is not None:
            coords = prompts["points"][0]
            return self.point_masks(coords[:, 0] if coords.dim() == 3 else coords, image_size)
        raise ValueError("prompts must hold boxes or points")

    @torch.no_grad()
    def chunk_logits(self, images: torch.Tensor, prompts: dict, image_index: torch.Tensor,
                     image_size: tuple[int, int],
                     embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """(k, H, W) float logits, ±LOGIT — the hook ``predict_dataset`` calls (a prior
        ignores the image and so its embeddings)."""
        inside = self.masks(prompts, tuple(image_size)).to(images.device)
        return torch.where(inside, LOGIT, -LOGIT).float()

    def forward(self, images: torch.Tensor, prompts: dict, image_index: torch.Tensor,
                image_size: tuple[int, int]) -> torch.Tensor:
        return self.chunk_logits(images, prompts, image_index, image_size)


class BoxFill(Prior):
    """Foreground = the whole prompt box (the disc of ``area`` for point prompts)."""

    name = "box-fill"

    def box_masks(self, boxes, image_size):
        return box_fill_masks(boxes, image_size)


class EllipseInBox(Prior):
    """Foreground = the ellipse inscribed in the prompt box (the disc for point prompts)."""

    name = "ellipse-in-box"

    def box_masks(self, boxes, image_size):
        return ellipse_masks(boxes, image_size)


class PointDisc(Prior):
    """Foreground = a disc of ``area`` pixels at the point; for a box, at the box centre and
    clipped to the box."""

    name = "point-disc"

    def box_masks(self, boxes, image_size):
        return disc_masks(box_centres(boxes), self.area, image_size) & box_fill_masks(
            boxes, image_size)


PRIORS: dict[str, Callable[[SegDataset], Prior]] = {
    "box-fill": lambda train: BoxFill(median_object_area(train)),
    "ellipse-in-box": lambda train: EllipseInBox(median_object_area(train)),
    "point-disc": lambda train: PointDisc(median_object_area(train)),
}
"""Prior name → factory taking the *training* dataset (its median object area sizes the disc)."""


def build_prior(name: str, train: SegDataset) -> Prior:
    """The prior called ``name`` (a key of :data:`PRIORS`) sized on ``train``."""
    try:
        factory = PRIORS[name]
    except KeyError:
        raise ValueError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}") from None
    return factory(train)


__all__ = [
    "LOGIT", "PRIORS", "BoxFill", "EllipseInBox", "PointDisc", "Prior", "box_centres",
    "box_fill_masks", "build_prior", "disc_masks", "ellipse_masks", "median_object_area",
]
