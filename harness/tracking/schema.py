"""Every name a study writes into MLflow and Optuna, and reads back: one place, no literals.

Runs are found by tags, sections of the report by metric names. A name spelled twice drifts
(a renamed metric silently empties a report section), so writers and readers both import it
from here; `tests/test_layout.py` refuses a ``"harness.`` tag literal anywhere else.
Parsers (``parse_*``) are the inverse of the builders next to them.
"""

from __future__ import annotations

import re

# ------------------------------------------------------------------ MLflow tags
STUDY = "harness.study"  # the study's name (= its MLflow experiment)
PRESET = "harness.preset"  # the preset applied ("" for none)
STUDY_KEY = "harness.study_key"  # name@preset, on the parent run
ROLE = "harness.role"  # study | trial | ensemble
METHOD = "harness.method"
PHASE = "harness.phase"  # tune | final | single
SEED = "harness.seed"
STATUS = "harness.status"  # ok | diverged | collapsed (absent while running or when killed)
FAIL_REASON = "harness.fail_reason"
MEMBERS = "harness.members"  # an ensemble's member run ids, comma-separated, in seed order
ENSEMBLE_KEY = "harness.ensemble_key"  # what makes two ensemble runs the same ensemble
NO_FINAL_PREFIX = "harness.no_final."  # on the parent run: why a method has no final runs
DEVICE = "harness.device"  # where a trial trained: cpu, cuda (what its cost metrics mean)
TUNE_TRIAL = "harness.tune_trial"  # a final run: the tuning trial whose hyperparameters it used
# a final or ensemble run that is no longer a result (its method's best tuned configuration
# changed since): why. Kept in the store, left out of status, summaries and reports.
SUPERSEDED = "harness.superseded"

# MLflow's own tags, and the Optuna study a trial run belongs to
PARENT_RUN = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"
OPTUNA_STUDY = "optuna.study"

ROLE_STUDY, ROLE_TRIAL, ROLE_ENSEMBLE = "study", "trial", "ensemble"
RUN_ROLES = (ROLE_TRIAL, ROLE_ENSEMBLE)  # the roles that carry results of trained models
# References every comparison needs, scored exactly like final runs (phase "final", one run
# each, deterministic): prompt-only priors that ignore the image (method = the prior's name),
# and the pretrained model before any fine-tuning (method "zero-shot").
ROLE_BASELINE, ROLE_ZERO_SHOT = "baseline", "zero-shot"
REFERENCE_ROLES = (ROLE_BASELINE, ROLE_ZERO_SHOT)
ROLE_BASE = "base"  # pretraining of a tiny preset's base model (its own run, browsable)
STATUS_OK, STATUS_DIVERGED, STATUS_COLLAPSED = "ok", "diverged", "collapsed"
PHASE_TUNE, PHASE_FINAL, PHASE_SINGLE = "tune", "final", "single"
PHASES = (PHASE_TUNE, PHASE_FINAL)  # the phases of a method's Optuna studies
PHASE_ENSEMBLE = "ensemble"  # an ensemble's Optuna study: one queued trial, run once
PHASE_REFERENCE = "reference"  # a reference run's Optuna study: the same, for exactly-once


def no_final(method: str) -> str:
    return f"{NO_FINAL_PREFIX}{method}"


def tag_column(tag: str) -> str:
    """The column of `tag` in ``MlflowClient.search_runs`` → pandas frames."""
    return f"tags.{tag}"


def metric_column(metric: str) -> str:
    return f"metrics.{metric}"


# ------------------------------------------------------------------ Optuna
# user attrs of trials
ATTR_RUN_ID = "mlflow_run_id"
ATTR_SEED = "seed"
ATTR_SEEDS = "seeds"  # a tuning trial's training seeds (its objective is their median)
ATTR_RUN_IDS = "mlflow_run_ids"  # every MLflow run of a trial, in seed order
ATTR_HPARAMS = "hparams"
ATTR_FAIL_REASON = "fail_reason"
ATTR_TUNE_TRIAL = "tune_trial"  # a final trial: the tuning trial whose hyperparameters it uses
ATTR_MEMBERS = "member_run_ids"  # an ensemble trial: the final runs it combines
# user attrs of the final phase's Optuna study
ATTR_BEST_TUNE_TRIAL = "best_tune_trial"
ATTR_QUEUED = "queued"  # set on a phase's study once its creator queued every slot
# queued trials (see harness.experiment.queue)
ATTR_SLOT = "slot"  # which unit of work: a tuning budget index, a final seed
ATTR_QUEUED_WITH = "queued_with"  # the attrs a retry of the slot inherits
ATTR_QUEUED_PARAMS = "queued_params"  # fixed Optuna params of the slot (a grid point)
ATTR_HEARTBEAT = "heartbeat"  # journal files: the worker's last sign of life (unix time)
ATTR_SAMPLER = "sampler"


def study_key(name: str, preset: str | None) -> str:
    """A study's key: its name, with the preset when one was applied (``name@preset``)."""
    return f"{name}@{preset}" if preset else name


def optuna_study_name(key: str, phase: str, method: str) -> str:
    """The Optuna study holding one phase of one method of the study with `key`."""
    return f"{key}/{phase}/{method}"


def parse_optuna_study_name(name: str) -> tuple[str, str]:
    """(study key, "<phase>/<method>") of an Optuna study name."""
    key, _, rest = name.partition("/")
    return key, rest


# ------------------------------------------------------------------ artifacts
CONFIG_ARTIFACT = "config.yaml"  # a run's resolved study config (and its trial / ensemble)
STUDY_ARTIFACT = "study.yaml"  # the parent run's study config
MODEL_DIR, MODEL_FILE = "model", "state_dict.pt"
MODEL_ARTIFACT = f"{MODEL_DIR}/{MODEL_FILE}"
SHIFTS_ARTIFACT = "shifts.csv"
# the parent run's copy of the latest `harness report`: report.pdf and tables/*.csv|md|tex
REPORT_DIR = "report"
# per-mask clean scores of one split (columns: mask, image, iou, dice, biou), in mask order:
# every run of a study scores the same masks in the same order, so rows pair across runs
SCORES_DIR = "scores"


def scores_artifact(split: str) -> str:
    return f"{SCORES_DIR}/{split}.csv"

PROBES_DIR = "probes"

# ------------------------------------------------------------------ params
# The parent run holds the flattened study config (dotted keys); these may change between
# runs of one study without invalidating what was recorded.
RESUMABLE_PARAMS = ("tuning.trials_per_method", "final_seeds", "description", "ensembles",
                    "tuning.heartbeat_seconds", "tuning.grace_seconds")
# an ensemble run's own params
PARAM_MEMBERS, PARAM_ENSEMBLE_SIZE, PARAM_AGGREGATION = "members", "ensemble_size", "aggregation"


def param_column(param: str) -> str:
    return f"params.{param}"

# ------------------------------------------------------------------ metrics
TRAIN_LOSS, TRAIN_LR, TRAIN_EPOCH = "train/loss", "train/lr", "train/epoch"
TRAIN_FINAL_LOSS = "train/final_loss"
TRAIN_MIOU = "train/miou"  # on as many training images as the test split has (probes)
MODEL_PARAMS, MODEL_TRAINABLE = "model/params", "model/trainable_params"
COST_TRAIN = "cost/train_seconds"
COST_STEP = "cost/step_seconds"
COST_PASSES = "cost/forward_backward_passes"  # the training budget, in passes over a batch
COST_VALIDATION = "cost/validation_seconds"  # per-epoch validation, not in train_seconds
COST_WALL = "cost/wall_seconds"
COST_MEMORY = "cost/peak_memory_mb"
COST_INFER = "cost/infer_ms_per_image"
COST_INFER_MEMORY = "cost/infer_peak_memory_mb"
COST_MEMBER_INFER = "cost/member_infer_ms_per_image"
COST_INFER_RATIO = "cost/infer_ratio_vs_member"
GAP_TRAIN_TEST = "gap/train_minus_test_miou"
GAP_CLEAN_SHIFT = "gap/clean_minus_shift_miou"
SHIFT_MEAN_MIOU = "shift/mean/miou"
SHIFT_RELATIVE = "shift/relative"


def probe_metric(name: str) -> str:
    """A sharpness probe's result: ``probe/sharpness``, ``probe/hessian_eig1``, ..."""
    return f"probe/{name}"


def probe_cost_metric(probe: str, what: str) -> str:
    """``probe_cost/<probe>/seconds`` or ``/fb`` (forward–backward equivalents)."""
    return f"probe_cost/{probe}/{what}"


PROBE_PREFIX = probe_metric("")
PROBE_COST_PREFIX = "probe_cost/"
PROBE_TOTAL_SECONDS = f"{PROBE_COST_PREFIX}total_seconds"
PROBE_LOSS = probe_metric("loss")
PROBE_SHARPNESS = probe_metric("sharpness")
PROBE_ASAM_SHARPNESS = probe_metric("asam_sharpness")
PROBE_AVG_SHARPNESS = probe_metric("avg_sharpness")
PROBE_HESSIAN_TRACE = probe_metric("hessian_trace")
PROBE_LANDSCAPE_RISE = probe_metric("landscape_1d/max_rise")
PROBE_LANCZOS_CONVERGED = probe_metric("hessian_lanczos/converged")  # 1.0 or 0.0
PROBE_LANCZOS_ITERATIONS = probe_metric("hessian_lanczos/iterations")


def probe_eig_metric(index: int) -> str:
    """The `index`-th (1-based) largest Hessian eigenvalue."""
    return probe_metric(f"hessian_eig{index}")


def split_metric(split: str, metric: str) -> str:
    """``val/miou``, ``test/biou``, ...: a clean metric on one split."""
    return f"{split}/{metric}"


VAL_MIOU = split_metric("val", "miou")
TEST_MIOU = split_metric("test", "miou")


def parent_metric(method: str, what: str) -> str:
    """The parent run's glance at a method's finals: ``final/<method>/<what>``."""
    return f"final/{method}/{what}"


# shift suite: one builder per cell kind, and its parser
def shift_metric(path: str, metric: str) -> str:
    """``shift/<path>/<metric>``: ``path`` a corruption, ``mean``, ``s3``, ``clean``, ..."""
    return f"shift/{path}/{metric}"


def corruption_metric(corruption: str, severity: int, metric: str) -> str:
    return shift_metric(f"{corruption}/s{severity}", metric)


def domain_metric(domain: str, metric: str) -> str:
    return shift_metric(f"domain/{domain}", metric)


def jitter_metric(level_index: int, metric: str) -> str:
    """Box jitter at the `level_index`-th (1-based) level of ``evaluate.box_jitter_levels``."""
    return shift_metric(f"prompt/box_jitter/l{level_index}", metric)


def point_metric(metric: str) -> str:
    return shift_metric("prompt/point", metric)


_CORRUPTION = re.compile(r"^shift/([^/]+)/s(\d+)/([^/]+)$")
_DOMAIN = re.compile(r"^shift/domain/([^/]+)/([^/]+)$")
_JITTER = re.compile(r"^shift/prompt/box_jitter/l(\d+)/([^/]+)$")


def parse_corruption_metric(name: str) -> tuple[str, int, str] | None:
    """(corruption, severity, metric) of a :func:`corruption_metric` name, else None."""
    match = _CORRUPTION.match(name)
    return (match.group(1), int(match.group(2)), match.group(3)) if match else None


def parse_domain_metric(name: str) -> tuple[str, str] | None:
    """(domain, metric) of a :func:`domain_metric` name, else None."""
    match = _DOMAIN.match(name)
    return (match.group(1), match.group(2)) if match else None


def parse_jitter_metric(name: str) -> tuple[int, str] | None:
    """(level index, metric) of a :func:`jitter_metric` name, else None."""
    match = _JITTER.match(name)
    return (int(match.group(1)), match.group(2)) if match else None
