"""SAM-E: K segmenters evaluated as one.

Each member predicts mask logits for the same prompts; :func:`aggregate` turns the K logit maps
into one *score* map whose sign is the ensemble's mask (> 0 is foreground):

- ``mean-logit`` (default): the mean of the logits;
- ``mean-prob``: the logit of the mean sigmoid probability (foreground where the mean
  probability exceeds 1/2). It differs from mean-logit where members disagree with unequal
  confidence: one member at +8 and two at −2 give mean logit +4/3 (foreground) but mean
  probability 0.41 (background);
- ``vote``: the per-pixel majority of the members' binary masks, as (votes − K/2) / K; a tie
  (even K) is background.

:class:`Ensemble` is a ``torch.nn.Module`` holding the members, so the evaluation code treats
it as one model (:func:`harness.evaluate.segment.predict_dataset` asks it for each chunk's
logits); members are run one after the other per chunk of images, so memory grows with one
chunk's logits × K, not with the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

AGGREGATIONS = ("mean-logit", "mean-prob", "vote")

_EPS = 1e-6  # keeps logit(mean prob) finite where every member is certain


def aggregate(logits: torch.Tensor, rule: str = "mean-logit") -> torch.Tensor:
    """(K, ...) member logits → (...) ensemble scores, foreground where > 0."""
    if rule == "mean-logit":
        return logits.mean(0)
    if rule == "mean-prob":
        return torch.logit(torch.sigmoid(logits).mean(0).clamp(_EPS, 1 - _EPS))
    if rule == "vote":
        k = logits.shape[0]
        return ((logits > 0).sum(0) - k / 2) / k
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {rule!r}")


class Ensemble(torch.nn.Module):
    """K segmenters whose mask logits are aggregated by ``aggregation``."""

    def __init__(self, members: Sequence[torch.nn.Module], aggregation: str = "mean-logit"):
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.members = torch.nn.ModuleList(members)
        self.aggregation = aggregation

    def extra_repr(self) -> str:
        return f"k={len(self.members)}, aggregation={self.aggregation}"

    def chunk_logits(self, images: torch.Tensor, prompts: dict, image_index: torch.Tensor,
                     image_size: tuple[int, int],
                     embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Ensemble scores for one chunk (same signature as the single-model path).
        `embeddings` are given only when every member shares one frozen encoder."""
        from harness.evaluate.segment import chunk_logits

        return aggregate(torch.stack([chunk_logits(m, images, prompts, image_index, image_size,
                                                   embeddings)
                                      for m in self.members]), self.aggregation)


__all__ = ["AGGREGATIONS", "Ensemble", "aggregate"]
