"""Sharpness-aware optimizers for the harness.

- :class:`SAM`, :class:`ASAM` — wrap any ``torch.optim`` optimizer class (``sam.py``); cheaper
  ``every_k`` / LookSAM variants via their keywords (``efficient.py``).
- :func:`build_optimizer`, :func:`needs_closure` — what the training loop uses (``factory.py``).
- :func:`frozen_bn_stats` and friends — keep BatchNorm statistics out of the perturbed pass
  (``bn.py``).
"""

from harness.optim.bn import disable_running_stats, enable_running_stats, frozen_bn_stats
from harness.optim.factory import METHODS, build_optimizer, needs_closure
from harness.optim.sam import ASAM, SAM

__all__ = [
    "ASAM",
    "METHODS",
    "SAM",
    "build_optimizer",
    "disable_running_stats",
    "enable_running_stats",
    "frozen_bn_stats",
    "needs_closure",
]
