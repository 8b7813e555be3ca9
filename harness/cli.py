"""`harness` command line: parse, call one function per command, print.

User mistakes (`HarnessError`) print one line and exit 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import dataclasses
import sys

import click

from harness.bench.data import data_command
from harness.bench.embeddings import embeddings_command
from harness.bench.memory import memory_command
from harness.bench.optimizers import optimizers_command
from harness.bench.probes import probes_command
from harness.bench.shifts import shifts_command
from harness.errors import HarnessError
from harness.optim.methods import METHODS as _METHODS

METHOD_NAMES = tuple(_METHODS)

STORAGE_HELP = ("Optuna storage URL: sqlite:///path.db, journal:///path.log for several workers "
                "on one host, or postgresql://user[:password]@host[:port]/db for several hosts. "
                "Default: sqlite:///$HARNESS_HOME/optuna.db.")
TRACKING_HELP = ("MLflow tracking URI: sqlite:///path.db, postgresql://…, or http://HOST:PORT of "
                 "`harness server`. Default: sqlite:///$HARNESS_HOME/mlflow.db.")


class HarnessGroup(click.Group):
    def invoke(self, ctx):
        from harness import interrupt

        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            # the records were closed on the way out (runs KILLED, trials FAIL)
            click.echo("interrupted: finished work is kept; run the same command to resume",
                       err=True)
            sys.exit(interrupt.exit_code())


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Does sharpness-aware training (SAM, ASAM) make Segment Anything more robust?

    Everything is written under $HARNESS_HOME (default ./runs): mlflow.db and mlartifacts/
    (MLflow), optuna.db (Optuna), cache/ (datasets, corrupted sets, per-model cell scores).

    \b
    Start with:  harness study run asam-vs-adamw --preset smoke
    Then:        harness study status asam-vs-adamw --preset smoke
                 harness report asam-vs-adamw --preset smoke
                 harness ui asam-vs-adamw --preset smoke --open
    Studies:     asam-vs-adamw (headline), optimizers-under-shift (AdamW, SAM, ASAM,
                 SAM-E), rho-sweep (SAM/ASAM over a grid of rho), real-shift
                 (LiteMedSAM on real nuclei; VOC/ARC as cross-dataset shift)
    Zero-shot:   harness eval --pretrained litemedsam --data builtin:nuclei
    """


@cli.group()
def study():
    """Run and inspect Optuna studies (one MLflow parent run per study, a child per trial)."""


@study.command("run")
@click.argument("name")
@click.option("--preset", help="Preset from the study YAML (e.g. smoke, cpu, gpu).")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--n-trials", type=click.IntRange(min=1),
              help="Override tuning.trials_per_method (the same for every method).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes sharing the study, on a journal file "
                   "($HARNESS_HOME/optuna.log unless --storage; SQLite is refused).")
def study_run(name, preset, storage, tracking_uri, n_trials, quiet, workers):
    """Run (or resume) study NAME: a name in studies/ or a path to a YAML file.

    Phase `tune` gives every method the same number of Optuna trials (objective: clean
    validation mIoU); phase `final` trains each method's best config with every final seed
    and evaluates on the test split. Re-running resumes: finished trials are kept.

    Several workers may run the same study on one storage. Each stamps its running trial
    every tuning.heartbeat_seconds (study YAML, default 30); a trial silent for
    tuning.grace_seconds (default 120) is a killed worker's and is run again.
    --workers N starts N such workers here and waits for them (one display, exit code 1 if
    one failed); a study run with --workers is resumed from its journal file either way.
    """
    from harness import interrupt
    from harness.config import load_study
    from harness.experiment.parallel import recorded_storage, run_parallel
    from harness.experiment.study import run_study, study_key

    cfg = load_study(name, preset)
    if n_trials is not None:
        cfg.tuning.trials_per_method = n_trials
    interrupt.install()
    if workers == 1:
        summary = run_study(cfg, recorded_storage(cfg, storage), tracking_uri,
                            progress=not quiet)
        click.echo(f"study {study_key(cfg)} done")
        _print_status(summary)
        return
    result = run_parallel(cfg, workers, name, storage, tracking_uri, progress=not quiet,
                          echo=click.echo)
    for line in result.failed:
        click.echo(line, err=True)
    if not (result.failed or result.interrupted):
        click.echo(f"study {study_key(cfg)} done ({workers} workers, {result.storage_url})")
    _print_status(result.summary)
    if result.interrupted:
        raise KeyboardInterrupt  # the group's one line and exit code (130 / 143)
    if result.failed:
        sys.exit(1)


@study.command("status")
@click.argument("name")
@click.option("--preset")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--tracking-uri", help=TRACKING_HELP)
def study_status_cmd(name, preset, storage, tracking_uri):
    """Trials of study NAME by method × phase × state (ensemble runs by run status)."""
    from harness.config import load_study
    from harness.experiment.parallel import recorded_storage
    from harness.experiment.study import study_status

    cfg = load_study(name, preset)
    _print_status(study_status(cfg, recorded_storage(cfg, storage), tracking_uri))


@study.command("list")
@click.option("--storage", help=STORAGE_HELP)
def study_list(storage):
    """Studies recorded in the Optuna storage, with their trial counts."""
    from harness.experiment.study import list_studies

    studies = list_studies(storage)
    if not studies:
        click.echo("no studies recorded yet")
    for key, parts in sorted(studies.items()):
        counts = ", ".join(f"{part}: {n}" for part, n in sorted(parts.items()))
        click.echo(f"{key}  ({counts})")


def _print_status(summary: dict) -> None:
    width = max([len("method"), *map(len, summary)])
    click.echo(f"{'method':<{width}} {'phase':<6} trials")
    for method, phases in summary.items():
        for phase, counts in phases.items():
            text = ", ".join(f"{state.lower()} {n}" for state, n in sorted(counts.items()))
            click.echo(f"{method:<{width}} {phase:<6} {text or '-'}")


def _option_type(kind):
    return {"int": int, "bool": click.BOOL}.get(getattr(kind, "__name__", kind), float)


def _hparam_options(command):
    """--<key> options for every hyper-parameter of any registered method (help from the
    method table), so a new method's settings reach `harness train` without editing here."""
    from harness.optim.methods import METHODS

    seen: dict[str, tuple[type, str, list[str]]] = {}
    for method in METHODS.values():
        for f in dataclasses.fields(method.hparams):
            kind, doc, users = seen.setdefault(f.name, (f.type, f.metadata.get("doc", ""), []))
            users.append(method.name)
    for name, (kind, doc, users) in reversed(seen.items()):
        applies = "" if len(users) == len(METHODS) else f" ({', '.join(users)})"
        option = click.option(f"--{name.replace('_', '-')}", name,
                              type=_option_type(kind),
                              help=f"{doc}{applies}; default: the study's.")
        command = option(command)
    return command


@cli.command()
@click.option("--config", "config_name", default="asam-vs-adamw", show_default=True,
              help="Study name or YAML whose model/data/train settings to use.")
@click.option("--preset", help="Preset of that study (e.g. smoke).")
@click.option("--method", type=click.Choice(list(METHOD_NAMES)), default="adamw",
              show_default=True)
@_hparam_options
@click.option("--epochs", type=click.IntRange(min=1))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tracking-uri", help=TRACKING_HELP)
def train(config_name, preset, method, epochs, seed, tracking_uri, **given):
    """Train and evaluate one model; logs one MLflow run (experiment `<study>-train`)."""
    from harness.config import load_study, method_config
    from harness.experiment.trial import TrialSpec, method_hparams, run_trial
    from harness.optim.methods import METHODS, hparam_names
    from harness.tracking import schema
    from harness.tracking.store import get_experiment_id, tracking_client

    given = {k: v for k, v in given.items() if v is not None}
    spec = METHODS[method]
    foreign = [k for k in given if k not in hparam_names(spec.hparams)]
    if foreign:
        users = [m for m in METHODS if foreign[0] in hparam_names(METHODS[m].hparams)]
        raise click.UsageError(f"--{foreign[0].replace('_', '-')} applies to "
                               f"{', '.join(users)} only, not {method}")
    cfg = load_study(config_name, preset)
    cfg.methods.setdefault(method, method_config(method))
    if epochs is not None:
        cfg.train.epochs = epochs
    hparams = method_hparams(cfg, method, given)
    for key, problem in hparams.problems():  # the same rules as a study's YAML
        raise click.UsageError(f"--{key.replace('_', '-')} {problem}")
    client = tracking_client(tracking_uri)
    experiment_id = get_experiment_id(client, f"{cfg.name}-train")
    ids = []
    metrics = run_trial(cfg, TrialSpec(method, hparams, seed, schema.PHASE_SINGLE), client,
                        experiment_id, on_run_created=ids.append)
    click.echo(f"run {ids[0]}")
    _print_metrics(metrics)


@cli.command("eval")
@click.argument("run_id", required=False)
@click.option("--pretrained", metavar="PRESET",
              help="Instead of a run: score this preset's pretrained weights, untrained "
                   "(litemedsam; vit_b/l/h/vit_t with --checkpoint).")
@click.option("--data", metavar="SOURCE:PATH",
              help="With --pretrained: the dataset, e.g. builtin:nuclei, folder:/data/cells, "
                   "coco:/data/ann.json, sa1b:/data/sa1b. Every image is scored.")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="With --pretrained: the weights file (official layouts).")
@click.option("--shifts", default=None,
              help="Comma-separated: common, all, noise, blur, weather, digital, extra, a "
                   "corruption name, domain, prompt. Default: common for a run, none with "
                   "--pretrained.")
@click.option("--recompute", is_flag=True,
              help="Predict every cell again instead of reading back the cell scores these "
                   "weights already have in the cache.")
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_cmd(run_id, pretrained, data, checkpoint, shifts, recompute, tracking_uri, quiet):
    """Evaluate the model logged by RUN_ID under distribution shift; log into that run.

    A run that already has a shift table keeps it: the requested shifts are added to the
    study's, and cells these exact weights were already scored on are read back from
    HARNESS_HOME/cache/scores, so extending `common` to `all` only computes the new cells.
    An ensemble run (SAM-E) is rebuilt from its member runs' weights.

    With --pretrained PRESET --data SOURCE:PATH instead of RUN_ID: score pretrained weights
    with no training on a dataset, recorded as a zero-shot run (experiment `zero-shot`).

    \b
    Example:  harness eval --pretrained litemedsam --data builtin:nuclei
    """
    from harness.data.shifts import resolve_shifts
    from harness.experiment.ondemand import evaluate_pretrained, evaluate_run

    if (run_id is None) == (pretrained is None):
        raise click.UsageError("give either RUN_ID or --pretrained PRESET --data SOURCE:PATH")
    if pretrained is not None and data is None:
        raise click.UsageError("--pretrained needs --data SOURCE:PATH")
    if run_id is not None and (data or checkpoint):
        raise click.UsageError("--data and --checkpoint go with --pretrained, not a RUN_ID")
    spec = [s for s in (shifts or ("common" if run_id else "")).split(",") if s]
    resolve_shifts(spec)  # a bad name fails before any model is loaded
    if pretrained is not None:
        run, metrics = evaluate_pretrained(pretrained, data, checkpoint, spec, tracking_uri,
                                           progress=not quiet)
        click.echo(f"run {run}")
    else:
        metrics = evaluate_run(run_id, shifts=spec, tracking_uri=tracking_uri,
                               progress=not quiet, reuse_scores=not recompute)
    _print_metrics({k: v for k, v in metrics.items() if k.count("/") <= 2})


@cli.command()
@click.argument("run_id")
@click.option("--tracking-uri", help=TRACKING_HELP)
def probe(run_id, tracking_uri):
    """Run the sharpness probes on the model logged by RUN_ID; log into that run.

    Which probes and their settings come from the run's study config (`probes:`).
    """
    from harness.experiment.ondemand import evaluate_run

    _print_metrics(evaluate_run(run_id, probes=True, tracking_uri=tracking_uri))


def _print_metrics(metrics: dict) -> None:
    for key, value in sorted(metrics.items()):
        click.echo(f"{key:<40} {value:.4f}")


@cli.command()
@click.argument("study", required=False)
@click.option("--preset", help="Which recorded preset of STUDY (needed when several were run).")
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--open", "open_browser", is_flag=True,
              help="Open the page in a web browser once the UI answers.")
@click.option("--dry-run", is_flag=True, help="Print the command instead of starting it.")
def ui(study, preset, tracking_uri, port, host, open_browser, dry_run):
    """Open the MLflow UI on the harness store at STUDY's training runs (Ctrl+C stops it).

    STUDY is a recorded study's name or its YAML file; without it the UI opens on the list
    of experiments. The printed URL asks for MLflow's model-training view (MLflow 3 would
    otherwise open on its GenAI traces page).

    \b
    Example:  harness ui asam-vs-adamw --preset smoke --open
    """
    from harness.tracking.ui import plan_ui, serve_ui

    plan = plan_ui(tracking_uri, host, port, _study_name(study), preset)
    click.echo(f"MLflow UI for {plan.tracking_uri} at {plan.url}")
    if dry_run:
        click.echo(" ".join(plan.command))
        return
    sys.exit(serve_ui(plan, open_browser, echo=click.echo))


@cli.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def dashboard(storage, port, host):
    """Open optuna-dashboard on the studies' Optuna storage (Ctrl+C stops it).

    Every phase of every method is one Optuna study there (`<study>@<preset>/<phase>/<method>`):
    history, parameter importances and slices of the tuning.
    """
    from harness.tracking.dashboard import serve_dashboard

    sys.exit(serve_dashboard(storage, host, port, echo=click.echo))


def _study_name(study: str | None) -> str | None:
    """A study's name (its MLflow experiment) from its name or its YAML file."""
    from pathlib import Path

    if study is not None and Path(study).suffix in (".yaml", ".yml"):
        from harness.config import load_study

        return load_study(study).name
    return study


@cli.command()
@click.option("--backend-store-uri", metavar="URL",
              help="Database of runs: sqlite:///path.db or postgresql://user@host/db. "
                   "Default: sqlite:///$HARNESS_HOME/mlflow.db.")
@click.option("--artifacts-destination", metavar="PATH|URI",
              help="Where uploaded artifacts are kept (a folder, or s3://… etc.). "
                   "Default: $HARNESS_HOME/mlartifacts.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 for workers on other hosts.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1),
              help="Server processes (MLflow's default: 4).")
def server(backend_store_uri, artifacts_destination, host, port, workers):
    """Run an MLflow tracking server for workers on several hosts (Ctrl+C stops it).

    Workers pass the printed `--tracking-uri http://HOST:PORT` and upload their artifacts
    through the server; the Optuna storage they share is a PostgreSQL URL (--storage).
    """
    from harness.tracking.server import serve

    sys.exit(serve(backend_store_uri, artifacts_destination, host, port, workers,
                   echo=click.echo))


def _comma_list(ctx, param, values):
    """Repeatable option that also takes comma-separated values: `--methods adamw,asam`."""
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return items or None


@cli.command()
@click.argument("study")
@click.option("--preset", help="Which recorded preset of STUDY (needed when several were run).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder. Default: reports/<study key>, e.g. reports/asam-vs-adamw@cpu.")
@click.option("--format", "formats", multiple=True, callback=_comma_list,
              help="Outputs to write, comma-separated or repeated: pdf, png, csv, md, tex. "
                   "Default: all.")
@click.option("--methods", multiple=True, callback=_comma_list,
              help="Show only these methods, e.g. adamw,asam (AdamW stays the reference for "
                   "ratios and Δ).")
@click.option("--shifts", multiple=True, callback=_comma_list,
              help="Show only these shifts: corruption names or groups (noise, blur, weather, "
                   "digital, extra, common, all), domain, prompt.")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--tracking-uri", help=TRACKING_HELP)
def report(study, preset, out, formats, methods, shifts, storage, tracking_uri):
    """Build the report of recorded study STUDY from MLflow and Optuna; never retrains.

    STUDY is the study's name (its MLflow experiment), or its YAML file. The folder gets
    report.pdf (summary table, robustness under shift, sharpness vs generalisation,
    training curves, tuning, cost vs claims, provenance), tables/*.csv|md|tex and
    figures/*.png. The PDF and tables are also logged on the study's parent MLflow run,
    under report/ (replacing an earlier build's).

    \b
    Example:  harness report asam-vs-adamw --preset cpu
              harness report asam-vs-adamw --preset cpu --format pdf --methods adamw,asam
    """
    from harness.report import build_report

    folder = build_report(_study_name(study), preset, out, formats, methods, shifts,
                          tracking_uri, storage)
    click.echo(f"report written to {folder}")


@cli.command()
@click.argument("name")
@click.option("--preset", help="Preset of the claims file (and of its study), e.g. smoke, cpu.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder. Default: reports/<name>@<preset>.")
@click.option("--no-run", is_flag=True,
              help="Judge what is recorded; run nothing (arms not run fail with one line).")
@click.option("--no-report", is_flag=True, help="Skip the main arm's full report.")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def claims(name, preset, out, no_run, no_report, storage, tracking_uri, quiet):
    """Test the statements of an article, one verdict per statement.

    NAME is a claims file in studies/ (e.g. article-claims) or a path to one. Each of its
    arms is a variant of one study (another training-set size, label noise, LoRA, a rho
    grid, ...), run or resumed as its own study `<name>.<arm>`; then every statement is
    measured on the recorded runs and judged against the range it claims: supported (95 %
    interval inside the claimed range), contradicted (outside), inconclusive (overlapping,
    or fewer than 3 runs), or not tested here (with the preset that tests it).

    Writes claims.csv / .md / .tex / .pdf and the main arm's full report under
    reports/<name>@<preset>/, and logs them on the main arm's parent MLflow run.

    \b
    Example:  harness claims article-claims --preset smoke
              harness claims article-claims --preset cpu --no-run
    """
    from harness import interrupt
    from harness.experiment.study import run_study
    from harness.report.claims import judge_claims, load_claims

    spec = load_claims(name, preset)  # every arm checked before anything runs
    interrupt.install()
    if not no_run:
        for arm in spec.arms:
            click.echo(f"arm {arm} ({spec.arm_name(arm)}): running or resuming")
            run_study(spec.arm_config(arm), storage, tracking_uri, progress=not quiet)
    folder, table = judge_claims(spec, out, storage, tracking_uri, click.echo,
                                 report=not no_report)
    for row in table.itertuples():
        click.echo(f"{row.id:>3}  {row.verdict:<15} {row.estimate:<28} {row.statement}")
    click.echo(f"claims written to {folder}")


@cli.group()
def bench():
    """Measured ratios, side by side in one process (never absolute times alone)."""


bench.add_command(data_command, "data")
bench.add_command(embeddings_command, "embeddings")
bench.add_command(memory_command, "memory")
bench.add_command(optimizers_command, "optimizers")
bench.add_command(probes_command, "probes")
bench.add_command(shifts_command, "shifts")


def main() -> None:
    from harness.memory import apply_from_environment

    apply_from_environment()
    cli(prog_name="harness")


if __name__ == "__main__":
    main()
