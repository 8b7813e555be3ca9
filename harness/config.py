"""Typed study configuration: YAML in, validated dataclasses out.

A study YAML holds the base configuration plus named `presets` (e.g. `smoke`, `cpu`, `gpu`)
whose fields are deep-merged over it. Every key is checked against the dataclasses below: an
unknown or ill-typed key is a `HarnessError` naming the dotted key and the file.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.data.shifts import resolve_shifts
from harness.data.sources import SOURCES, domain_problems
from harness.data.synthetic import DOMAINS
from harness.errors import HarnessError
from harness.evaluate.ensemble import AGGREGATIONS
from harness.evaluate.priors import PRIORS
from harness.model import PRESETS, TRAINABLE, LoraSpec, has_pretrained_weights
from harness.optim.methods import METHODS, bound_problem, hparam_names
from harness.tracking.store import GRACE_S, HEARTBEAT_S

SAMPLERS = ("tpe", "grid")
STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"

Fail = Callable[[str, str], None]  # fail(dotted key, message) raises a HarnessError


@dataclass
class BaseConfig:
    """How to pretrain a tiny preset once on a source domain (AdamW), before any study."""
    domain: str = "shapes"  # the source domain: not the study's target
    train_size: int = 400
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0


@dataclass
class LoraConfig:
    """Adapters on the image encoder's attention (``model.trainable: lora``)."""
    rank: int = 8
    alpha: float = 8.0
    targets: list[str] = field(default_factory=lambda: ["qkv"])


@dataclass
class ModelConfig:
    preset: str = "tiny-64"
    checkpoint: str | None = None
    base: BaseConfig | None = None  # pretrain the preset first (see harness.experiment.base)
    trainable: str = "all"  # all | decoder | prompt+decoder | lora
    lora: LoraConfig = field(default_factory=LoraConfig)

    @property
    def pretrained(self) -> bool:
        """Whether trials start from weights worth scoring on their own (zero-shot)."""
        return (self.checkpoint is not None or self.base is not None
                or (self.preset in PRESETS and has_pretrained_weights(self.preset)))

    def lora_spec(self) -> LoraSpec | None:
        if self.trainable != "lora":
            return None
        return LoraSpec(self.lora.rank, self.lora.alpha, tuple(self.lora.targets))

    def validate(self, fail: Fail) -> None:
        if self.preset not in PRESETS:
            fail("model.preset", f"is {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.trainable not in TRAINABLE:
            fail("model.trainable", f"must be one of {', '.join(TRAINABLE)}")
        if self.base is not None and self.checkpoint is not None:
            fail("model.base", "and model.checkpoint both give starting weights; keep one")
        if self.trainable != "all" and not self.pretrained:
            fail("model.trainable", f"is {self.trainable!r} but {self.preset} has no weights of "
                 "its own and neither model.checkpoint nor model.base is set: a frozen, "
                 "randomly initialised encoder would learn nothing")
        if self.lora.rank < 1 or self.lora.alpha <= 0 or not self.lora.targets:
            fail("model.lora", "needs rank ≥ 1, alpha > 0 and at least one target module")
        if self.base is not None:
            if self.base.domain not in DOMAINS:
                fail("model.base.domain", f"is {self.base.domain!r}; choose one of "
                     f"{', '.join(DOMAINS)}")
            for key in ("train_size", "epochs", "batch_size"):
                if getattr(self.base, key) < 1:
                    fail(f"model.base.{key}", "must be ≥ 1")
            if self.base.lr <= 0:
                fail("model.base.lr", "must be > 0")


@dataclass
class DataConfig:
    source: str = "synthetic"  # a key of harness.data.sources.SOURCES
    domain: str = "shapes"
    image_size: int = 64
    train_size: int = 200  # images; each holds several instances
    val_size: int = 40
    test_size: int = 40
    max_objects: int = 4
    seed: int = 0  # the datasets are the same for every trial, so methods see the same data
    # Real sources (folder, coco, sa1b, builtin; see harness.data.sources). Synthetic ignores
    # these. path: folder root | COCO JSON (may hold {split}) | SA-1B folder | builtin name;
    # relative paths are relative to the working directory.
    path: str | None = None
    images: str | None = None  # coco: the image folder (default: the JSON's folder)
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train, val, test
    min_area: int = 16  # instances with fewer pixels after the resize are dropped (counted)
    categories: list[str] = field(default_factory=list)  # coco: keep these categories only
    max_images: int | None = None  # per split: a fixed pseudo-random subset; None: all
    # Loose box prompts: each side pushed out by box_margin × the box side, plus
    # box_margin_noise × side × N(0, 1) (never inward), drawn once per split from data.seed.
    # Tight boxes nearly imply a blob's mask (an ellipse in the box scores high without the
    # image); loose ones leave the object's extent to be found in the image.
    box_margin: float = 0.0
    box_margin_noise: float = 0.0
    # Annotation noise on the training split only (harness.data.label_noise): each training
    # mask's boundary moves by up to label_noise_boundary pixels, in or out, and a mask is
    # left out with probability label_noise_drop. Validation and test masks stay clean.
    label_noise_boundary: int = 0
    label_noise_drop: float = 0.0

    def validate(self, fail: Fail) -> None:
        if self.source not in SOURCES:
            fail("data.source", f"is {self.source!r}; choose one of {', '.join(SOURCES)}")
        for key in ("box_margin", "box_margin_noise"):
            if not 0 <= getattr(self, key) <= 2:
                fail(f"data.{key}", "must be between 0 and 2 (a fraction of the box side)")
        if self.label_noise_boundary < 0:
            fail("data.label_noise_boundary", "must be ≥ 0 (pixels)")
        if not 0 <= self.label_noise_drop < 1:
            fail("data.label_noise_drop", "must be in [0, 1) (a probability)")
        for key, message in SOURCES[self.source].problems(self):
            fail(f"data.{key}", message)


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    warmup_steps: int = 20
    box_jitter: float = 0.1  # std of box noise as a fraction of the box side (SAM paper)
    # share of training instances prompted by 1..max_points positive clicks instead of a box
    point_prompts: float = 0.5
    max_points: int = 3
    grad_clip: float | None = 1.0
    eval_batch_size: int = 64
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    # Stop a run as collapsed when an epoch (from the 2nd) ends with a mean loss not at least
    # this fraction below the first steps' loss; None: only NaN/inf losses stop a run.
    min_loss_drop: float | None = None
    # ... and as collapsed when validation mIoU (from the 2nd epoch) stays below this: the
    # run never left the "predict nothing" plateau (a finite loss does not show that)
    min_val_miou: float | None = None
    # layer-wise lr decay over encoder blocks (block i of L: lr·decay^(L−i)); None: off
    layer_decay: float | None = None
    # validate every this many epochs (and after the last): runs of many one-step epochs
    # (a few labelled images) would otherwise spend their time validating
    val_every: int = 1
    # processes training one run data-parallel (torchrun; gloo on CPU, NCCL on GPU): each
    # takes every nproc-th image of a batch; the gradient is the whole batch's
    nproc: int = 1

    def validate(self, fail: Fail) -> None:
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            fail("train.layer_decay", "must be in (0, 1] (or null)")
        for key in ("epochs", "batch_size", "eval_batch_size", "nproc", "val_every"):
            if getattr(self, key) < 1:
                fail(f"train.{key}", "must be ≥ 1")
        if self.min_val_miou is not None and not 0 < self.min_val_miou < 1:
            fail("train.min_val_miou", "must be a fraction between 0 and 1 (or null)")
        if not 0 <= self.point_prompts <= 1:
            fail("train.point_prompts", "must be a fraction between 0 and 1")
        if self.max_points < 1:
            fail("train.max_points", "must be ≥ 1")
        if self.min_loss_drop is not None and not 0 < self.min_loss_drop < 1:
            fail("train.min_loss_drop", "must be a fraction between 0 and 1 (or null)")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            fail("train.device", f"is {self.device!r}; use auto, cpu, cuda or cuda:N")


@dataclass
class SearchParam:
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list | None = None


@functools.cache
def method_config_class(method: str) -> type:
    """The ``methods.<method>`` section: the method's typed hyper-parameters (defaults from
    the method table) plus its tuning ``search`` space."""
    return dataclasses.make_dataclass(
        f"{METHODS[method].display}Config",
        [("search", dict[str, SearchParam], field(default_factory=dict))],
        bases=(METHODS[method].hparams,), namespace={"method": method})


def method_config(method: str, **values: Any):
    """A ``methods.<method>`` section with the method's defaults, and `values`."""
    return method_config_class(method)(**values)


def hparams_of(method_cfg) -> Any:
    """The typed hyper-parameters of a ``methods.<name>`` section (without its search)."""
    spec = METHODS[method_cfg.method]
    return spec.hparams(**{k: getattr(method_cfg, k) for k in hparam_names(spec.hparams)})


def _validate_method(name: str, method_cfg, fail: Fail) -> None:
    spec = METHODS[name]
    for key, message in hparams_of(method_cfg).problems():
        fail(f"methods.{name}.{key}", message)
    for pname, space in method_cfg.search.items():
        key = f"methods.{name}.search.{pname}"
        if pname not in spec.tunable:
            fail(key, f"is not tunable for {name} (tunable: {', '.join(spec.tunable)})")
        if space.choices is None and (space.low is None or space.high is None
                                      or space.low >= space.high):
            fail(key, "needs low < high (or choices)")
        if space.log and space.choices is None and space.low <= 0:
            fail(key, "has log: true and needs low > 0")
        for value in space.choices or [space.low]:
            if (message := bound_problem(spec.hparams, pname, value)) is not None:
                fail(key, f"would try {pname} = {value!r}, which {message.split(',')[0]}")


@dataclass
class TuningConfig:
    # tpe: Optuna's TPE over low/high ranges; grid: every combination of the search choices
    # once (trials_per_method must equal the grid size), e.g. a rho sweep.
    # trials_per_method 0: no tuning; the finals train each method's configured values (an
    # arm of a sweep that holds everything but one setting fixed).
    sampler: str = "tpe"
    trials_per_method: int = 2
    seed: int = 0  # the training seed of every tuning trial (kept out of the search space)
    # several training seeds per tuning trial (objective: the median val mIoU); [] = [seed]
    seeds: list[int] = field(default_factory=list)
    sampler_seed: int = 0
    n_startup_trials: int = 4
    multivariate: bool = False
    constant_liar: bool = False
    # Workers sharing a storage stamp their running trial every heartbeat_seconds; a trial
    # silent for grace_seconds is a dead worker's and is run again. Every worker of a study
    # reads them from the same YAML: a worker with a shorter grace would fail live trials.
    heartbeat_seconds: int = HEARTBEAT_S
    grace_seconds: int = GRACE_S

    def validate(self, fail: Fail) -> None:
        if self.trials_per_method < 0:
            fail("tuning.trials_per_method", "must be ≥ 0 (0: no tuning, the finals train "
                 "the configured values)")
        if self.trials_per_method == 0 and self.sampler == "grid":
            fail("tuning.trials_per_method", "is 0 but tuning.sampler is grid: a grid runs "
                 "each point once")
        if self.heartbeat_seconds < 1:
            fail("tuning.heartbeat_seconds", "must be ≥ 1")
        if self.grace_seconds < 2 * self.heartbeat_seconds:
            # a live worker's last stamp is up to one interval old, plus any delay in writing it
            fail("tuning.grace_seconds", f"is {self.grace_seconds}; must be ≥ 2 × "
                 f"tuning.heartbeat_seconds ({2 * self.heartbeat_seconds})")
        if len(set(self.seeds)) != len(self.seeds):
            fail("tuning.seeds", "must be distinct seeds")
        if self.sampler not in SAMPLERS:
            fail("tuning.sampler", f"is {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")


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
    # prompt-only baselines recorded next to the final runs (harness.evaluate.priors)
    priors: list[str] = field(default_factory=lambda: ["box-fill", "ellipse-in-box",
                                                       "point-disc"])
    # Shifts and probes describe the models that are compared, i.e. the final phase (and
    # `harness train`); tuning trials only need their validation mIoU.
    in_tuning: bool = False

    def validate(self, fail: Fail, data: DataConfig) -> None:
        for split in self.splits:
            if split not in ("train", "val", "test"):
                fail("evaluate.splits", f"has {split!r}; use train, val, test")
        if "val" not in self.splits:
            fail("evaluate.splits", "must include val: it is the tuning objective")
        for sev in self.severities:
            if not 1 <= sev <= 5:
                fail("evaluate.severities", f"has {sev}; severities are 1..5")
        for prior in self.priors:
            if prior not in PRIORS:
                fail("evaluate.priors", f"has {prior!r}; choose from {', '.join(PRIORS)}")
        for domain in self.domains:
            for problem in domain_problems(data, domain):
                fail("evaluate.domains", problem)
        try:
            resolve_shifts(self.shifts)
        except HarnessError as exc:
            fail("evaluate.shifts", str(exc))


@dataclass
class EnsembleConfig:
    """An ensemble of final-phase runs (SAM-E): no training of its own."""
    members: str = "adamw"  # the method whose final runs are the members
    size: int | None = None  # K: the members of the first K final seeds (None: every seed)
    aggregation: str = "mean-logit"  # mean-logit | mean-prob | vote

    def validate(self, key: str, fail: Fail) -> None:
        if self.aggregation not in AGGREGATIONS:
            fail(f"{key}.aggregation", f"is {self.aggregation!r}; choose one of "
                 f"{', '.join(AGGREGATIONS)}")


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

    def validate(self, fail: Fail) -> None:
        for key in ("landscape_points", "landscape_2d_points"):
            n = getattr(self, key)
            if n < 0 or n % 2 == 0 and n:
                fail(f"probes.{key}", "must be odd (the centre is w itself) or 0")
        for key in ("sharpness_rho", "asam_rho", "asam_eta", "average_sigma", "landscape_span"):
            if getattr(self, key) < 0:
                fail(f"probes.{key}", "must be ≥ 0 (0 disables the probe)")
        for key in ("average_samples", "trace_samples"):
            if getattr(self, key) == 1 or getattr(self, key) < 0:
                fail(f"probes.{key}", "must be 0 (off) or ≥ 2 (a standard error needs two "
                     "samples)")
        if self.hessian_k and self.hessian_iters < self.hessian_k:
            fail("probes.hessian_iters", f"must be ≥ probes.hessian_k ({self.hessian_k})")
        if self.batches < 1 or self.batch_size < 1:
            fail("probes.batches", "and probes.batch_size must be ≥ 1")


@dataclass
class StudyConfig:
    name: str = "study"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # name → method_config_class(name); parsed by _parse_methods, defined below
    methods: dict[str, Any] = field(default_factory=dict,
                                    metadata={"parse": lambda *a: _parse_methods(*a)})
    ensembles: dict[str, EnsembleConfig] = field(default_factory=dict)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    final_seeds: list[int] = field(default_factory=lambda: [1, 2])
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    presets: dict[str, dict] = field(default_factory=dict)
    preset: str | None = None  # which preset was applied (filled in by load_study)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, fail: Fail) -> None:
        """Each section checks itself; what spans sections is checked here."""
        for section in (self.model, self.data, self.train, self.tuning, self.probes):
            section.validate(fail)
        self.evaluate.validate(fail, self.data)  # shift datasets are made like the study's
        if not self.methods:
            fail("methods", "must name at least one method")
        for name, method_cfg in self.methods.items():
            _validate_method(name, method_cfg, fail)
        self._validate_grid(fail)
        if not self.final_seeds or len(set(self.final_seeds)) != len(self.final_seeds):
            fail("final_seeds", "must be a non-empty list of distinct seeds")
        self._validate_ensembles(fail)

    def _validate_grid(self, fail: Fail) -> None:
        if self.tuning.sampler != "grid":
            return
        for name, method_cfg in self.methods.items():
            size = 1
            for pname, space in method_cfg.search.items():
                if space.choices is None:
                    fail(f"methods.{name}.search.{pname}", "needs choices: tuning.sampler is grid")
                size *= len(space.choices)
            if size != self.tuning.trials_per_method:
                fail("tuning.trials_per_method", f"is {self.tuning.trials_per_method} but the "
                     f"grid of methods.{name}.search has {size} points: a grid runs each point "
                     "once")

    def _validate_ensembles(self, fail: Fail) -> None:
        for name, ens in self.ensembles.items():
            key = f"ensembles.{name}"
            if name in METHODS or name in self.methods:
                fail(key, "reuses an optimizer method's name; call it e.g. sam-e or asam-e")
            if ens.members not in self.methods:
                fail(f"{key}.members", f"is {ens.members!r}, not one of this study's methods "
                     f"({', '.join(self.methods)})")
            ens.validate(key, fail)
            if ens.size is not None and not 2 <= ens.size <= len(self.final_seeds):
                fail(f"{key}.size", f"is {ens.size}; an ensemble needs 2 to "
                     f"{len(self.final_seeds)} members (one per final seed)")
            if ens.size is None and len(self.final_seeds) < 2:
                fail(key, "needs at least 2 final_seeds: its members are the final runs")


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
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise HarnessError(
                f"{source}: unknown key '{dotted}' (expected one of: {', '.join(sorted(fields))})"
            )
        parse = fields[key].metadata.get("parse", _convert)
        kwargs[key] = parse(value, hints[key], dotted, source)
    return cls(**kwargs)


def _parse_methods(value: Any, tp: Any, key: str, source: str) -> dict:
    """``methods:``: each entry is typed by its own method's hyper-parameters."""
    if not isinstance(value, dict):
        raise HarnessError(f"{source}: key '{key}' must be a mapping, got {value!r}")
    out = {}
    for name, section in value.items():
        dotted = f"{key}.{name}"
        if name not in METHODS:
            raise HarnessError(f"{source}: key '{dotted}' is not a method; choose from "
                               f"{', '.join(METHODS)}")
        section = section or {}
        cls = method_config_class(name)
        allowed = [f.name for f in dataclasses.fields(cls)]
        extra = [k for k in section if k not in allowed] if isinstance(section, dict) else []
        if extra:
            raise HarnessError(f"{source}: key '{dotted}' has {', '.join(map(str, extra))}, "
                               f"which {name} does not take (its keys: {', '.join(allowed)})")
        out[str(name)] = _convert(section, cls, dotted, source)
    return out


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    if "statements" in data and "arms" in data:
        raise HarnessError(f"{source}: a claims file, not a study: run it with "
                           f"`harness claims {data.get('name', Path(source).stem)}`")
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

    def fail(key: str, message: str) -> None:
        raise HarnessError(f"{source_key}: key '{key}' {message}")

    cfg.validate(fail)
    return cfg


def read_yaml(path: Path) -> Any:
    """The YAML file at `path`; a one-line error naming it when it does not parse."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None


def load_study(name_or_path: str | Path, preset: str | None = None) -> StudyConfig:
    path = resolve_study_path(name_or_path)
    return study_from_dict(read_yaml(path), preset, str(path))


def dump_yaml(cfg: StudyConfig | dict) -> str:
    data = cfg.to_dict() if isinstance(cfg, StudyConfig) else cfg
    return yaml.safe_dump(data, sort_keys=False)
