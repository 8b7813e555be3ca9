"""Shift specs: the names a study's ``evaluate.shifts`` may use, and what they expand to.

A spec is a list of names: ImageNet-C corruptions and groups of
:data:`harness.data.corruptions.CORRUPTION_GROUPS` (``gaussian_noise``, ``noise``, ``common``,
``all``, ...), ``domain`` (other datasets) and ``prompt`` (worse prompts). This is the registry
config validation checks against; :mod:`harness.evaluate.shifts` evaluates what it expands to.
"""

from __future__ import annotations

from harness.data.corruptions import CORRUPTION_GROUPS, resolve_corruptions
from harness.errors import HarnessError

SHIFT_GROUPS = ("domain", "prompt")
"""Shift spec names accepted besides corruption groups and names. Never implied by ``all``."""


def resolve_shifts(spec: list[str] | str) -> dict:
    """Validate a shift spec and expand it: ``{"corruptions": [...], "domain": bool,
    "prompt": bool}``.

    ``spec`` is a list of names or a comma-separated string. Corruption groups expand in
    ImageNet-C order without duplicates; an empty spec means clean only. An unknown name
    raises :class:`HarnessError` naming it (config validation prefixes the message with
    ``key 'evaluate.shifts'``).
    """
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    tokens = [token.strip() for token in tokens if token.strip()]
    known_corruptions = set(CORRUPTION_GROUPS) | set(CORRUPTION_GROUPS["all"])
    for token in tokens:
        if token not in known_corruptions and token not in SHIFT_GROUPS:
            raise HarnessError(
                f"has unknown shift {token!r}; use a corruption "
                f"({', '.join(CORRUPTION_GROUPS['all'])}), a corruption group "
                f"({', '.join(CORRUPTION_GROUPS)}), or {' / '.join(SHIFT_GROUPS)}"
            )
    corruption_tokens = [token for token in tokens if token not in SHIFT_GROUPS]
    return {
        # resolve_corruptions refuses an empty spec; here "no corruptions" is legitimate
        "corruptions": resolve_corruptions(corruption_tokens) if corruption_tokens else [],
        **{group: group in tokens for group in SHIFT_GROUPS},
    }
