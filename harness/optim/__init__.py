"""Sharpness-aware optimizers for the harness.

- :data:`METHODS` (``methods.py``) — the one method table: name → optimizer class, typed
  hyper-parameters and their defaults, tunable keys, cost in passes, display name, colour.
- :class:`SAM`, :class:`ASAM` (``sam.py``) and every other registered optimizer class, by
  its class name (``harness.optim.GSAM``); cheaper ``every_k`` / LookSAM variants via their
  keywords (``efficient.py``).
- :func:`build_optimizer`, :func:`needs_closure` — by name, with free keywords (``factory.py``).
- :func:`frozen_bn_stats` and friends — keep BatchNorm statistics out of the perturbed pass
  (``bn.py``).
"""

from harness.optim.bn import disable_running_stats, enable_running_stats, frozen_bn_stats
from harness.optim.factory import build_optimizer, needs_closure
from harness.optim.methods import METHODS, Hparams, Method, get_method
from harness.optim.sam import ASAM, SAM


def __getattr__(name: str):
    # Registering a method in methods.py is enough to export its class here.
    for method in METHODS.values():
        if method.optimizer.__name__ == name:
            return method.optimizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ASAM",
    "METHODS",
    "SAM",
    "Hparams",
    "Method",
    "build_optimizer",
    "disable_running_stats",
    "enable_running_stats",
    "frozen_bn_stats",
    "get_method",
    "needs_closure",
]
