"""`harness study run NAME --workers N`: N local worker processes share one study.

The parent first makes what must exist once: the MLflow store (created and migrated by one
process), the experiment and the study's parent run, the Optuna storage, a tiny preset's base
weights and the reference runs (priors, zero-shot: not queued, so workers would each record
them). Then it starts N ``harness study run NAME --quiet`` processes on that storage, each
with its share of the CPU's threads and its output in a log file. The workers claim queued
trials (:mod:`harness.experiment.queue`), so every budget is exact however they interleave.

The parent shows one display, read from the stores every few seconds; forwards SIGINT and
SIGTERM to the workers once (they close their records like a single run: trial FAIL, run
KILLED) and waits for all of them; its exit code says whether any failed.

Storage: a journal file, ``$HARNESS_HOME/optuna.log`` unless ``--storage`` names another
(or a PostgreSQL URL). SQLite is refused: its one write lock is not meant for parallel
writers (Optuna's documentation), and ``harness study run`` without ``--workers`` on a home
whose journal holds the study reads that journal (:func:`recorded_storage`), so a study
started in parallel is never resumed into a second, empty storage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from tqdm.auto import tqdm

from harness import interrupt
from harness.config import StudyConfig
from harness.errors import HarnessError
from harness.experiment.base import starting_weights
from harness.experiment.reference import reference_names
from harness.experiment.study import (open_study, record_references, study_key, study_status,
                                      tuning_budget)
from harness.home import harness_home
from harness.tracking import schema
from harness.tracking.store import (default_storage_url, default_tracking_uri, local_file,
                                    optuna_storage)

JOURNAL = "optuna.log"  # the workers' journal file under HARNESS_HOME
POLL_S = 2.0  # how often the parent reads the stores for its display
DONE_STATES = ("COMPLETE", "PRUNED", "FINISHED", "FAILED")  # Optuna's, then MLflow's
BAR_FORMAT = "{desc} {bar:30} {n_fmt}/{total_fmt} {unit} done [{elapsed}]"


@dataclass
class ParallelResult:
    storage_url: str
    summary: dict  # what `harness study status` shows
    failed: list[str] = field(default_factory=list)  # one line per failed worker
    interrupted: bool = False


def default_journal_url() -> str:
    return f"journal://{harness_home() / JOURNAL}"


def _holds(url: str, cfg: StudyConfig) -> bool:
    """Whether the storage at `url` (a local file that exists) records study `cfg`."""
    path = local_file(url)
    if path is None or not path.is_file():
        return False
    prefix = f"{study_key(cfg)}/"
    return any(s.study_name.startswith(prefix)
               for s in optuna.get_all_study_summaries(optuna_storage(url)))


def recorded_storage(cfg: StudyConfig, storage_url: str | None) -> str | None:
    """The storage a command on `cfg` uses: `storage_url` when given; else the workers'
    journal file when it holds the study (it was run with --workers); else None, the
    default."""
    if storage_url is None and _holds(default_journal_url(), cfg):
        return default_journal_url()
    return storage_url


def shared_storage(cfg: StudyConfig, storage_url: str | None, workers: int) -> str:
    """The storage `workers` processes share; a one-line error for one they cannot."""
    if storage_url is None:
        if _holds(default_storage_url(), cfg):
            raise HarnessError(
                f"study {study_key(cfg)!r} is recorded in {default_storage_url()}, which "
                f"{workers} workers cannot share (SQLite); resume it without --workers, or "
                "run it afresh in another HARNESS_HOME")
        return default_journal_url()
    if storage_url.startswith("sqlite"):
        raise HarnessError(
            f"--storage {storage_url}: SQLite is not for {workers} parallel workers; use "
            "journal:///path/optuna.log on one host or postgresql://… (or drop --storage)")
    return storage_url


def threads_per_worker(workers: int) -> int:
    """The CPU cores this process may use, split between `workers` (at least 1 each)."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def worker_command(name: str, cfg: StudyConfig, storage_url: str,
                   tracking_uri: str) -> list[str]:
    """`harness study run` as the parent was asked, without --workers, quiet."""
    command = [sys.executable, "-c", "from harness.cli import main; main()",
               "study", "run", name, "--storage", storage_url, "--tracking-uri", tracking_uri,
               "--n-trials", str(cfg.tuning.trials_per_method), "--quiet"]
    return command + (["--preset", cfg.preset] if cfg.preset else [])


def run_parallel(cfg: StudyConfig, workers: int, name: str, storage_url: str | None = None,
                 tracking_uri: str | None = None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> ParallelResult:
    """Run (or resume) study `cfg` — loaded from `name`, a study name or YAML path that the
    workers load again — with `workers` local processes; returns once all have ended."""
    url = shared_storage(cfg, storage_url, workers)
    uri = tracking_uri or default_tracking_uri()
    ctx = open_study(cfg, url, uri, progress)
    try:
        starting_weights(cfg, ctx.client, progress)
        record_references(ctx, echo)
        logs = harness_home() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        threads = threads_per_worker(workers)
        echo(f"{workers} workers on {url}, {threads} torch thread(s) each; logs in {logs}")
        codes, paths = _supervise(worker_command(name, cfg, url, uri), workers, threads,
                                  logs / study_key(cfg).replace("/", "_"),
                                  _Display(cfg, url, uri, progress))
    except BaseException:
        ctx.client.set_terminated(ctx.parent_run_id, "KILLED")
        raise
    interrupted = interrupt.requested()
    failed = [] if interrupted else [
        f"worker {i} exited with code {code}: {_last_line(path)} (log: {path})"
        for i, (code, path) in enumerate(zip(codes, paths)) if code != 0]
    if interrupted or failed:
        ctx.client.set_terminated(ctx.parent_run_id, "KILLED" if interrupted else "FAILED")
    return ParallelResult(url, study_status(cfg, url, uri), failed, interrupted)


def _supervise(command: list[str], workers: int, threads: int, log_stem: Path,
               display: "_Display") -> tuple[list[int], list[Path]]:
    """Start the workers, update `display` until all have exited, forwarding SIGINT/SIGTERM
    to them once; their exit codes and log files."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen] = []
    signalled: set[int] = set()
    received: list[int] = []
    paths = [Path(f"{log_stem}-worker{i}.log") for i in range(workers)]

    def forward() -> None:
        for proc in procs:
            if proc.pid not in signalled and proc.poll() is None:
                signalled.add(proc.pid)
                proc.send_signal(received[0])

    def on_signal(signum, frame) -> None:
        if not received:  # once: a second signal could break their clean-up
            received.append(signum)
            interrupt.request(signum)
            forward()

    previous = {signum: signal.getsignal(signum) for signum in interrupt.SIGNALS}
    for signum in interrupt.SIGNALS:
        signal.signal(signum, on_signal)
    try:
        for path in paths:
            if received:
                break
            with open(path, "w") as log:
                # a session of their own: a Ctrl+C in the terminal reaches them once, from us
                procs.append(subprocess.Popen(command, env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        while any(proc.poll() is None for proc in procs):
            if received:
                forward()  # those started while the signal came in
            display.update()
            time.sleep(POLL_S)
        display.update()
    finally:
        for proc in procs:  # only after a bug above: never leave workers unsupervised
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        display.close()
    return [proc.returncode for proc in procs], paths[:len(procs)]


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


class _Display:
    """One bar per phase — tuning trials, final trials, ensemble and reference runs — filled
    from what the stores say is done."""

    def __init__(self, cfg: StudyConfig, storage_url: str, tracking_uri: str, progress: bool):
        self.cfg, self.storage_url, self.tracking_uri = cfg, storage_url, tracking_uri
        totals = {schema.PHASE_TUNE: sum(tuning_budget(cfg, m) for m in cfg.methods),
                  schema.PHASE_FINAL: len(cfg.methods) * len(cfg.final_seeds),
                  "other": len(cfg.ensembles) + len(reference_names(cfg))}
        labels = {schema.PHASE_TUNE: "tune", schema.PHASE_FINAL: "final",
                  "other": "ensembles, references"}
        self.bars = {phase: tqdm(total=n, desc=f"{labels[phase]:<21}", position=i,
                                 disable=not progress, unit="runs" if phase == "other"
                                 else "trials", bar_format=BAR_FORMAT)
                     for i, (phase, n) in enumerate((p, n) for p, n in totals.items() if n)}

    def update(self) -> None:
        if not any(not bar.disable for bar in self.bars.values()):
            return
        try:
            summary = study_status(self.cfg, self.storage_url, self.tracking_uri)
        except Exception:  # noqa: BLE001 - a busy store: the next look will do; workers go on
            return
        done = dict.fromkeys(self.bars, 0)
        for name, phases in summary.items():
            for phase, counts in phases.items():
                key = phase if name in self.cfg.methods else "other"
                if key in done:
                    done[key] += sum(n for state, n in counts.items() if state in DONE_STATES)
        for phase, bar in self.bars.items():
            bar.n = done[phase]
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
