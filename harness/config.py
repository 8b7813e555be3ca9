"""Typed study configuration: YAML in, validated dataclasses out.

A study YAML holds the base configuration plus named `presets` (e.g. `smoke`, `cpu`, `gpu`)
whose fields are deep-merged over it. Every key is checked against the dataclasses below: an
unknown or ill-typed key is a `HarnessError` naming the dotted key and the file.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

METHODS = ("adamw", "sam", "asam")
SAMPLERS = ("tpe", "grid")
STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"


@dataclass
class ModelConfig:
    preset: str = "tiny-64"
    checkpoint: str | None = None
    trainable: str = "all"  # all | decoder | prompt+decoder


@dataclass
class DataConfig:
    domain: str = "shapes"
    image_size: int = 64
    train_size: int = 200  # images; each holds several instances
    val_size: int = 40
    test_size: int = 40
    max_objects: int = 4
    seed: int = 0  # the datasets are the same for every trial, so methods see the same data


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    warmup_steps: int = 20
    box_jitter: float = 0.1  # std of box noise as a fraction of the box side (SAM paper)
    grad_clip: float | None = 1.0
    eval_batch_size: int = 64
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    # Stop a run as collapsed when an epoch (from the 2nd) ends with a mean loss not at least
    # this fraction below the first steps' loss; None: only NaN/inf losses stop a run.
    min_loss_drop: float | None = None


@dataclass
class SearchParam:
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list | None = None


@dataclass
class MethodConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    rho: float | None = None  # sam / asam only
    eta: float | None = None  # asam only
    every_k: int = 1  # ascend every k-th step (efficient variants)
    search: dict[str, SearchParam] = field(default_factory=dict)


@dataclass
class TuningConfig:
    # tpe: Optuna's TPE over low/high ranges; grid: every combination of the search choices
    # once (trials_per_method must equal the grid size), e.g. a rho sweep.
    sampler: str = "tpe"
    trials_per_method: int = 2
    seed: int = 0  # the training seed of every tuning trial (kept out of the search space)
    sampler_seed: int = 0
    n_startup_trials: int = 4
    multivariate: bool = False
    constant_liar: bool = False


@dataclass
class EvalConfig:
    splits: list[str] = field(default_factory=lambda: ["val", "test"])
    # Shift suite on the test split: corruption groups or names (common, all, noise, blur,
    # weather, digital, extra, gaussian_noise, ...), "domain", "prompt". Empty: clean only.
    shifts: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    shift_images: int | None = None  # evaluate shifts on the first N test images (None: all)
    domains: list[str] = field(default_factory=lambda: ["lesions", "shapes-restyled"])
    box_jitter_levels: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.4])
    workers: int | None = None  # processes generating corrupted sets (None: all cores)
    # Shifts and probes describe the models that are compared, i.e. the final phase (and
    # `harness train`); tuning trials only need their validation mIoU.
    in_tuning: bool = False


@dataclass
class EnsembleConfig:
    """An ensemble of final-phase runs (SAM-E): no training of its own."""
    members: str = "adamw"  # the method whose final runs are the members
    size: int | None = None  # K: the members of the first K final seeds (None: every seed)
    aggregation: str = "mean-logit"  # mean-logit | mean-prob | vote


@dataclass
class ProbeConfig:
    """Sharpness probes run after training on `batches` fixed training batches."""
    enabled: bool = False
    batches: int = 2
    batch_size: int = 8
    sharpness_rho: float = 0.05  # SAM-style worst-case sharpness radius
    asam_rho: float = 0.5  # adaptive (ASAM-style) sharpness radius
    asam_eta: float = 0.01
    average_sigma: float = 0.01  # Gaussian average sharpness (adaptive: relative to |w|)
    average_samples: int = 8
    hessian_k: int = 1
    hessian_iters: int = 20
    trace_samples: int = 8
    landscape_points: int = 11  # 1-D slice points (odd; 0 disables)
    landscape_span: float = 1.0
    landscape_2d_points: int = 0  # 2-D slice points per axis (odd; 0 disables)
    seed: int = 0


@dataclass
class StudyConfig:
    name: str = "study"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: dict[str, MethodConfig] = field(default_factory=dict)
    ensembles: dict[str, EnsembleConfig] = field(default_factory=dict)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    final_seeds: list[int] = field(default_factory=lambda: [1, 2])
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    presets: dict[str, dict] = field(default_factory=dict)
    preset: str | None = None  # which preset was applied (filled in by load_study)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- generic typed conversion
def _describe(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check / coerce `value` against the annotation `tp`; errors name `key` and `source`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except HarnessError:
                continue
        raise HarnessError(f"{source}: key '{key}' must be {_describe(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise HarnessError(f"{source}: key '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise HarnessError(f"{source}: key '{key}' must be a mapping, got {value!r}")
        _, vtype = typing.get_args(tp)
        return {str(k): _convert(v, vtype, f"{key}.{k}", source) for k, v in value.items()}
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise HarnessError(f"{source}: key '{key}' must be a list, got {value!r}")
        (itype,) = typing.get_args(tp) or (Any,)
        return [_convert(v, itype, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 as a string; accept it as the number it obviously is
            return float(value)
        except ValueError:
            pass
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise HarnessError(f"{source}: key '{key}' must be {_describe(tp)}, got {value!r}")


def _build(cls, data: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise HarnessError(
                f"{source}: unknown key '{dotted}' (expected one of: {', '.join(sorted(names))})"
            )
        kwargs[key] = _convert(value, hints[key], dotted, source)
    return cls(**kwargs)


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- semantic checks
def _validate(cfg: StudyConfig, source: str) -> None:
    from harness.data.synthetic import DOMAINS
    from harness.model import PRESETS, TRAINABLE

    def fail(key: str, msg: str):
        raise HarnessError(f"{source}: key '{key}' {msg}")

    if cfg.model.preset not in PRESETS:
        fail("model.preset", f"is {cfg.model.preset!r}; choose one of {', '.join(PRESETS)}")
    if cfg.model.trainable not in TRAINABLE:
        fail("model.trainable", f"must be one of {', '.join(TRAINABLE)}")
    if cfg.model.trainable != "all" and cfg.model.checkpoint is None:
        fail("model.trainable", f"is {cfg.model.trainable!r} but model.checkpoint is not set: "
             "a frozen, randomly initialised encoder would learn nothing")
    if cfg.data.domain not in DOMAINS:
        fail("data.domain", f"is {cfg.data.domain!r}; choose one of {', '.join(DOMAINS)}")
    for key in ("image_size", "train_size", "val_size", "test_size", "max_objects"):
        if getattr(cfg.data, key) < 1:
            fail(f"data.{key}", "must be ≥ 1")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg.train, key) < 1:
            fail(f"train.{key}", "must be ≥ 1")
    if not cfg.methods:
        fail("methods", "must name at least one method")
    for name, method in cfg.methods.items():
        if name not in METHODS:
            fail(f"methods.{name}", f"is not a method; choose from {', '.join(METHODS)}")
        if name == "adamw" and (method.rho is not None or method.eta is not None):
            fail(f"methods.{name}", "has rho/eta, which only sam and asam use")
        if name == "sam" and method.eta is not None:
            fail(f"methods.{name}.eta", "is an asam parameter")
        if method.every_k < 1:
            fail(f"methods.{name}.every_k", "must be ≥ 1")
        tunable = {"lr", "weight_decay"} | ({"rho"} if name != "adamw" else set()) | (
            {"eta"} if name == "asam" else set())
        for pname, space in method.search.items():
            key = f"methods.{name}.search.{pname}"
            if pname not in tunable:
                fail(key, f"is not tunable for {name} (tunable: {', '.join(sorted(tunable))})")
            if space.choices is None and (space.low is None or space.high is None
                                          or space.low >= space.high):
                fail(key, "needs low < high (or choices)")
            if space.log and space.choices is None and space.low <= 0:
                fail(key, "has log: true and needs low > 0")
    if cfg.tuning.trials_per_method < 1:
        fail("tuning.trials_per_method", "must be ≥ 1")
    if cfg.train.min_loss_drop is not None and not 0 < cfg.train.min_loss_drop < 1:
        fail("train.min_loss_drop", "must be a fraction between 0 and 1 (or null)")
    if cfg.train.device != "auto" and cfg.train.device.split(":")[0] not in ("cpu", "cuda"):
        fail("train.device", f"is {cfg.train.device!r}; use auto, cpu, cuda or cuda:N")
    _validate_sampler(cfg, fail)
    if not cfg.final_seeds or len(set(cfg.final_seeds)) != len(cfg.final_seeds):
        fail("final_seeds", "must be a non-empty list of distinct seeds")
    _validate_ensembles(cfg, fail)
    for split in cfg.evaluate.splits:
        if split not in ("train", "val", "test"):
            fail("evaluate.splits", f"has {split!r}; use train, val, test")
    if "val" not in cfg.evaluate.splits:
        fail("evaluate.splits", "must include val: it is the tuning objective")
    for sev in cfg.evaluate.severities:
        if not 1 <= sev <= 5:
            fail("evaluate.severities", f"has {sev}; severities are 1..5")
    for domain in cfg.evaluate.domains:
        if domain not in DOMAINS:
            fail("evaluate.domains", f"has {domain!r}; choose from {', '.join(DOMAINS)}")
    if cfg.evaluate.shifts:
        from harness.evaluate.shifts import resolve_shifts

        try:
            resolve_shifts(cfg.evaluate.shifts)
        except HarnessError as exc:
            fail("evaluate.shifts", str(exc))
    probes = cfg.probes
    for key in ("landscape_points", "landscape_2d_points"):
        n = getattr(probes, key)
        if n < 0 or n % 2 == 0 and n:
            fail(f"probes.{key}", "must be odd (the centre is w itself) or 0")
    for key in ("sharpness_rho", "asam_rho", "asam_eta", "average_sigma", "landscape_span"):
        if getattr(probes, key) < 0:
            fail(f"probes.{key}", "must be ≥ 0 (0 disables the probe)")
    for key in ("average_samples", "trace_samples"):
        if getattr(probes, key) == 1 or getattr(probes, key) < 0:
            fail(f"probes.{key}", "must be 0 (off) or ≥ 2 (a standard error needs two samples)")
    if probes.hessian_k and probes.hessian_iters < probes.hessian_k:
        fail("probes.hessian_iters", f"must be ≥ probes.hessian_k ({probes.hessian_k})")
    if probes.batches < 1 or probes.batch_size < 1:
        fail("probes.batches", "and probes.batch_size must be ≥ 1")


def _validate_sampler(cfg: StudyConfig, fail) -> None:
    if cfg.tuning.sampler not in SAMPLERS:
        fail("tuning.sampler", f"is {cfg.tuning.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if cfg.tuning.sampler != "grid":
        return
    for name, method in cfg.methods.items():
        size = 1
        for pname, space in method.search.items():
            if space.choices is None:
                fail(f"methods.{name}.search.{pname}", "needs choices: tuning.sampler is grid")
            size *= len(space.choices)
        if size != cfg.tuning.trials_per_method:
            fail("tuning.trials_per_method", f"is {cfg.tuning.trials_per_method} but the grid "
                 f"of methods.{name}.search has {size} points: a grid runs each point once")


def _validate_ensembles(cfg: StudyConfig, fail) -> None:
    from harness.evaluate.ensemble import AGGREGATIONS

    for name, ens in cfg.ensembles.items():
        key = f"ensembles.{name}"
        if name in METHODS or name in cfg.methods:
            fail(key, "reuses an optimizer method's name; call it e.g. sam-e or asam-e")
        if ens.members not in cfg.methods:
            fail(f"{key}.members", f"is {ens.members!r}, not one of this study's methods "
                 f"({', '.join(cfg.methods)})")
        if ens.aggregation not in AGGREGATIONS:
            fail(f"{key}.aggregation", f"is {ens.aggregation!r}; choose one of "
                 f"{', '.join(AGGREGATIONS)}")
        if ens.size is not None and not 2 <= ens.size <= len(cfg.final_seeds):
            fail(f"{key}.size", f"is {ens.size}; an ensemble needs 2 to "
                 f"{len(cfg.final_seeds)} members (one per final seed)")
        if ens.size is None and len(cfg.final_seeds) < 2:
            fail(key, "needs at least 2 final_seeds: its members are the final runs")


# ---------------------------------------------------------------- loading
def resolve_study_path(name_or_path: str | Path) -> Path:
    """A path to a YAML, or a study name looked up in ./studies then the package's studies/."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise HarnessError(f"study file not found: {candidate}")
        return candidate
    for folder in (Path.cwd() / "studies", STUDIES_DIR):
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))
    raise HarnessError(f"no study named {name_or_path!r} (known: {', '.join(known)})")


def study_from_dict(data: dict, preset: str | None = None, source: str = "<dict>") -> StudyConfig:
    if not isinstance(data, dict):
        raise HarnessError(f"{source}: a study must be a YAML mapping")
    presets = data.get("presets") or {}
    if preset is not None:
        if preset not in presets:
            raise HarnessError(
                f"{source}: no preset {preset!r} (defined: {', '.join(presets) or 'none'})"
            )
        if "presets" in presets[preset] or "preset" in presets[preset]:
            raise HarnessError(f"{source}: preset {preset!r} may not define presets")
        data = _deep_merge(data, presets[preset])
    source_key = f"{source} (preset {preset})" if preset else source
    cfg = _build(StudyConfig, {**data, "preset": preset}, "", source_key)
    _validate(cfg, source_key)
    return cfg


def load_study(name_or_path: str | Path, preset: str | None = None) -> StudyConfig:
    path = resolve_study_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    return study_from_dict(data, preset, str(path))


def dump_yaml(cfg: StudyConfig | dict) -> str:
    data = cfg.to_dict() if isinstance(cfg, StudyConfig) else cfg
    return yaml.safe_dump(data, sort_keys=False)
