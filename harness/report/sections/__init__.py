"""The report's sections, in order; each module has `TITLE` and `build(ctx) -> Section`.

A section's number is its place in `ORDER` (`base.new_section`): reorder here to renumber.
"""

from harness.report.sections import (
    cost,
    curves,
    domain,
    heatmap,
    provenance,
    severity,
    sharpness,
    summary,
    tuning,
)

ORDER = (summary, severity, heatmap, domain, sharpness, curves, tuning, cost, provenance)
TITLES = tuple(module.TITLE for module in ORDER)

__all__ = ["ORDER", "TITLES"]
