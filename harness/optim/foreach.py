"""Small reductions over lists of tensors, built on the fused `torch._foreach_*` kernels.

Sharpness-aware optimizers need *global* quantities (‖g‖ over every parameter, g·g_s) but the
fused kernels work on one list of same-device, same-dtype tensors at a time. The helpers here
reduce one such list to a 0-dim tensor and then combine the handful of per-list results, so the
number of Python-level operations scales with the number of lists, not of parameters.

Nothing here calls `.item()`: results stay on the device, so a CUDA step does not wait for the
GPU unless the caller asks for a number.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

TINY = 1e-12
"""Added to denominators (‖g‖, ‖T g‖, ‖g_v‖) so a zero gradient gives a zero step, not NaN."""


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are carried out in: fp32 for half-precision tensors, else their own."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def norm(tensors: Sequence[Tensor]) -> Tensor:
    """‖concat(tensors)‖₂ of one same-device, same-dtype list, as a 0-dim tensor."""
    acc = accumulation_dtype(tensors[0].dtype)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors, 2, dtype=acc)))


def dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Σᵢ ⟨xᵢ, yᵢ⟩ of two same-device, same-dtype lists, as a 0-dim tensor.

    torch has no `_foreach_sum`, but it has the 1-norm: with p = x·y element-wise,
    Σp = 2·Σmax(p, 0) − Σ|p|. The rounding error is of order eps·Σ|p|, the same bound as a plain
    summation, and only one temporary list (p) is allocated.
    """
    acc = accumulation_dtype(xs[0].dtype)
    products = torch._foreach_mul(xs, ys)
    total_abs = torch.stack(torch._foreach_norm(products, 1, dtype=acc)).sum()
    torch._foreach_clamp_min_(products, 0.0)
    positive = torch.stack(torch._foreach_norm(products, 1, dtype=acc)).sum()
    return 2 * positive - total_abs


def _common(values: Sequence[Tensor]) -> Tensor:
    """Stack 0-dim tensors from possibly different devices/dtypes onto the first one's device."""
    dtype = values[0].dtype
    for v in values[1:]:
        dtype = torch.promote_types(dtype, v.dtype)
    device = values[0].device
    return torch.stack([v.to(device=device, dtype=dtype) for v in values])


def combine_norms(norms: Sequence[Tensor]) -> Tensor:
    """√(Σ nᵢ²) of per-list norms; zero (on CPU) when there are none."""
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(_common(norms))


def combine_sums(sums: Sequence[Tensor]) -> Tensor:
    """Σ sᵢ of per-list sums; zero (on CPU) when there are none."""
    if not sums:
        return torch.zeros(())
    return _common(sums).sum()
