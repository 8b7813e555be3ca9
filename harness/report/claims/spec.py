"""A claims file: the statements to test, and the arms (variants of one study) that test them.

```yaml
name: article-claims
study: asam-vs-adamw          # every arm is this study at the same preset, plus its changes
study_preset: smoke           # ... or at this preset of it (default: the claims preset's name)
set: {final_seeds: [1, 2, 3]} # changes every arm makes, before its own
arms:
  main: {}                    # the study as it is; its report and parent run hold the claims
  labels-half:
    methods: [asam]           # the study's methods this arm runs (default: all)
    set: {data: {train_size: 100}, tuning: {trials_per_method: 0}}
statements:
  - id: 1
    text: ASAM costs +20–30 % training compute
    test: ratio               # a measure of harness.report.claims.measures, and its keys
    arm: main
    method: asam
    metric: cost/train_seconds
    claimed: [1.2, 1.3]
  - id: 4
    text: ...
    parts: [{test: ..., ...}, {test: ..., ...}]   # several measures, one verdict
presets:
  smoke: {arms: {labels-half: {set: {data: {train_size: 50}}}}}   # deep-merged, as in studies
```

Each arm is recorded as its own study, named ``<name>.<arm>``, so runs are resumed and shared
across `harness claims` calls exactly like `harness study run`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from harness.config import (StudyConfig, _deep_merge, read_yaml, resolve_study_path,
                             study_from_dict)
from harness.errors import HarnessError
from harness.report.claims.measures import check_part  # each measure checks its keys

TOP_KEYS = ("name", "description", "study", "study_preset", "set", "arms", "statements",
            "presets")
ARM_KEYS = ("methods", "set")
STATEMENT_KEYS = ("id", "text", "parts", "test")


@dataclass
class Statement:
    id: str
    text: str
    parts: list[dict]  # each: {"test": measure name, ...its keys}


@dataclass
class ClaimsSpec:
    name: str
    description: str
    study: Path
    preset: str | None
    study_preset: str | None  # the study's preset every arm starts from
    common: dict  # changes every arm makes, before its own
    arms: dict[str, dict]
    statements: list[Statement]
    source: str

    def arm_name(self, arm: str) -> str:
        return f"{self.name}.{arm}"

    @property
    def main_arm(self) -> str:
        """The arm whose full report is built and whose parent run holds the claims files:
        the one named ``main``, else the first (a YAML writer may sort the keys)."""
        return "main" if "main" in self.arms else next(iter(self.arms))

    def arm_config(self, arm: str) -> StudyConfig:
        """Arm `arm` as a study config: the base study at `study_preset`, then the file's
        common `set`, then the arm's own `set` deep-merged over it; only the arm's methods
        (and ensembles of them) kept. Recorded under the claims preset's name."""
        spec = self.arms[arm]
        where = f"{self.source}: arms.{arm}"
        base = read_yaml(self.study)
        if not isinstance(base, dict):
            raise HarnessError(f"{self.study}: a study must be a YAML mapping")
        presets = base.pop("presets", None) or {}
        if self.study_preset is not None:
            if self.study_preset not in presets:
                raise HarnessError(f"{self.source}: key 'study_preset' is "
                                   f"{self.study_preset!r}, not a preset of {self.study.name} "
                                   f"(its presets: {', '.join(presets) or 'none'})")
            base = _deep_merge(base, presets[self.study_preset])
        data = _deep_merge(_deep_merge(base, self.common), spec.get("set") or {})
        methods = spec.get("methods")
        if methods is not None:
            unknown = [m for m in methods if m not in (data.get("methods") or {})]
            if unknown:
                raise HarnessError(f"{where}.methods: {', '.join(map(str, unknown))} not among "
                                   f"the methods of {self.study.name}")
            data["methods"] = {m: data["methods"][m] for m in methods}
            data["ensembles"] = {n: e for n, e in (data.get("ensembles") or {}).items()
                                 if (e or {}).get("members") in methods}
        data["name"] = self.arm_name(arm)
        data["description"] = (f"Arm '{arm}' of the claims file {self.name}: "
                               f"{(data.get('description') or '').strip()}")
        data["presets"] = {self.preset: {}} if self.preset else {}
        return study_from_dict(data, self.preset, where)


def _fail(source: str, key: str, message: str) -> None:
    raise HarnessError(f"{source}: key '{key}' {message}")


def _unknown(source: str, where: str, mapping: dict, allowed: tuple[str, ...]) -> None:
    extra = [k for k in mapping if k not in allowed]
    if extra:
        prefix = f"{where}." if where else ""
        _fail(source, f"{prefix}{extra[0]}", f"is not known (allowed: {', '.join(allowed)})")


def resolve_claims_path(name_or_path: str | Path) -> Path:
    return resolve_study_path(name_or_path)  # claims files live with the studies


def claims_from_dict(raw: dict, preset: str | None, source: str) -> ClaimsSpec:
    if not isinstance(raw, dict):
        raise HarnessError(f"{source}: a claims file must be a YAML mapping")
    _unknown(source, "", raw, TOP_KEYS)
    for key in ("name", "study", "arms", "statements"):
        if key not in raw:
            _fail(source, key, "is required")
    presets = raw.get("presets") or {}
    if preset is not None:
        if preset not in presets:
            raise HarnessError(f"{source}: no preset {preset!r} (defined: "
                               f"{', '.join(presets) or 'none'})")
        raw = _deep_merge(raw, presets[preset])
    study = resolve_study_path(raw["study"])
    arms = copy.deepcopy(raw["arms"] or {})
    if not isinstance(arms, dict) or not arms:
        _fail(source, "arms", "must map at least one arm name to its changes")
    for arm, spec in arms.items():
        arms[arm] = spec = spec or {}
        _unknown(source, f"arms.{arm}", spec, ARM_KEYS)
    statements = []
    for i, item in enumerate(raw["statements"] or []):
        where = f"statements[{i}]"
        if not isinstance(item, dict):
            _fail(source, where, "must be a mapping with id, text and a test")
        for key in ("id", "text"):
            if key not in item:
                _fail(source, f"{where}.{key}", "is required")
        if "parts" in item:
            parts = item["parts"]
            extra = [k for k in item if k not in STATEMENT_KEYS]
            if extra:
                _fail(source, f"{where}.{extra[0]}", "belongs in one of its parts")
        else:
            parts = [{k: v for k, v in item.items() if k not in ("id", "text")}]
        for j, part in enumerate(parts):
            check_part(part, arms, source, f"{where}.parts[{j}]" if "parts" in item else where)
        statements.append(Statement(str(item["id"]), str(item["text"]).strip(), parts))
    study_preset = raw.get("study_preset", preset)
    if study_preset is not None and not isinstance(study_preset, str):
        _fail(source, "study_preset", "must be the name of one of the study's presets")
    spec = ClaimsSpec(str(raw["name"]), str(raw.get("description") or "").strip(), study,
                      preset, study_preset, raw.get("set") or {}, arms, statements, source)
    for arm in arms:
        spec.arm_config(arm)  # a bad arm fails now, before anything runs
    return spec


def load_claims(name_or_path: str | Path, preset: str | None = None) -> ClaimsSpec:
    path = resolve_claims_path(name_or_path)
    return claims_from_dict(read_yaml(path), preset, str(path))
