"""Per-method Optuna history, the chosen hyperparameters, and whether every method
got the same tuning budget (the comparison is only fair if it did)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report import style
from harness.report.document import FigureItem, Section, Table
from harness.report.loaders import optuna_trials
from harness.report.sections.base import Context, new_section
from harness.tracking import schema
from harness.tracking.schema import PHASE_TUNE

TITLE = "Tuning"
FINISHED = ("COMPLETE", "PRUNED")  # a diverged (pruned) trial is a result and uses budget


def _fmt(hparams: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in hparams.items()) or "–"


def _chosen(trials: pd.DataFrame, method: str) -> tuple[dict, float, object]:
    tune = trials[(trials["method"] == method) & (trials["phase"] == PHASE_TUNE)
                  & (trials["state"] == "COMPLETE")]
    if tune.empty:
        return {}, float("nan"), None
    best = tune.loc[tune["value"].idxmax()]
    return best["hparams"] or best["params"], best["value"], best["number"]


def _budget_sentences(ctx: Context, counts: dict[str, int]) -> list[str]:
    tuning = ctx.data.config.get("tuning") or {}
    budget = tuning.get("trials_per_method")
    if tuning.get("sampler") == "grid":
        sampler = "a grid over each method's choices (every point once)"
    else:
        sampler = (f"TPE (sampler seed {tuning.get('sampler_seed')}, n_startup_trials "
                   f"{tuning.get('n_startup_trials')}, multivariate "
                   f"{tuning.get('multivariate')}, constant_liar "
                   f"{tuning.get('constant_liar')})" if tuning else "TPE")
    used = ", ".join(f"{m} {n}" for m, n in counts.items())
    if counts and len(set(counts.values())) == 1 and (budget is None or
                                                       set(counts.values()) == {budget}):
        head = (f"Equal budget: every method received the same tuning budget of "
                f"{next(iter(counts.values()))} Optuna trials")
    else:
        head = (f"UNEQUAL budget: finished tuning trials per method were {used or 'none'} "
                f"against a budget of {budget} per method")
    seeds = ctx.data.config.get("final_seeds")
    return [f"{head}, searched with {sampler} on the clean validation mIoU; diverged trials "
            "count against the budget. Each method's best configuration was then trained "
            f"with every final seed ({', '.join(map(str, seeds or [])) or 'unknown'}) and "
            "compared on the test split."]


def build(ctx: Context) -> Section:
    section = new_section(__name__)
    trials = optuna_trials(ctx.data)
    if trials.empty:
        return section.say(f"No Optuna trials of study {ctx.data.key!r} were found in "
                           f"{ctx.data.storage_url}; the tuning history is unavailable.")
    tuned = [m for m in ctx.methods if ((trials["method"] == m) & (trials["phase"] == PHASE_TUNE))
             .any()]
    counts = {m: int(((trials["method"] == m) & (trials["phase"] == PHASE_TUNE)
                      & trials["state"].isin(FINISHED)).sum()) for m in tuned}
    for sentence in _budget_sentences(ctx, counts):
        section.say(sentence)
    for m in (m for m in ctx.methods if m not in tuned):
        section.say(f"{m}: no tuning trials (an ensemble, or a method tuned elsewhere).")
    if not tuned:
        return section.say("No method was tuned (tuning.trials_per_method: 0): every final "
                           "run trained the configured hyperparameters.")
    rows, shown = [], []
    for m in tuned:
        mine = trials[(trials["method"] == m) & (trials["phase"] == PHASE_TUNE)]
        states = mine["state"].value_counts()
        hparams, value, number = _chosen(trials, m)
        seconds = (mine["complete"] - mine["start"]).dt.total_seconds().sum()
        runs = ctx.data.runs[(ctx.data.runs["method"] == m)
                             & (ctx.data.runs["phase"] == PHASE_TUNE)]
        passes = float(ctx.data.column(runs, schema.COST_PASSES).sum())
        row = {"method": m, "best_trial": number, "best_val_miou": value,
               "complete": int(states.get("COMPLETE", 0)),
               "diverged": int(states.get("PRUNED", 0)), "failed": int(states.get("FAIL", 0)),
               "tuning_seconds": seconds, "tuning_passes": passes,
               **{f"hp.{k}": v for k, v in hparams.items()}}
        rows.append(row)
        shown.append({"method": m, "best trial": "–" if number is None else str(number),
                      "best val mIoU": "–" if number is None else f"{value:.4f}",
                      "trials ok / diverged / failed":
                          f"{row['complete']}/{row['diverged']}/{row['failed']}",
                      "tuning time (s)": f"{seconds:.3g}",
                      # equal trials are not equal compute when a step costs two passes
                      "forward–backward passes": f"{passes:.3g}" if passes else "–",
                      "chosen hyperparameters": _fmt(hparams) if hparams else
                      "none (every trial diverged)"})
    section.add(Table("tuning", pd.DataFrame(rows), pd.DataFrame(shown),
                      "Tuning: the chosen configuration per method."))
    section.add(_trials_table(trials, tuned))
    if ctx.draw and tuned:
        section.add(FigureItem("tuning_history", _figure(ctx, trials, tuned),
                               "Optuna history per method: objective of each tuning trial "
                               "(dots), best so far (line); × marks a diverged trial."))
    return section


def _trials_table(trials: pd.DataFrame, methods: list[str]) -> Table:
    """Every tuning trial with what it tried and how it ended (why, for a diverged one)."""
    tune = trials[trials["method"].isin(methods) & (trials["phase"] == PHASE_TUNE)]
    tune = tune.sort_values(["method", "number"], key=lambda c: c.map(
        {m: i for i, m in enumerate(methods)}) if c.name == "method" else c)
    data = pd.DataFrame({
        "method": tune["method"], "trial": tune["number"], "state": tune["state"],
        "val_miou": tune["value"], "params": tune["params"].map(_fmt),
        "reason": tune["fail_reason"].fillna("")})
    shown = data.assign(
        val_miou=data["val_miou"].map(lambda v: "–" if pd.isna(v) else f"{v:.4f}"),
        state=data["state"].replace({"PRUNED": "DIVERGED"}))
    return Table("tuning_trials", data, shown.rename(columns={"val_miou": "val mIoU"}),
                 "Every tuning trial: sampled parameters, objective, and why a diverged one "
                 "stopped.")


def _figure(ctx: Context, trials: pd.DataFrame, methods: list[str]):
    fig = style.new_figure()
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    for ax, m in zip(axes, methods):
        mine = trials[(trials["method"] == m) & (trials["phase"] == PHASE_TUNE)].sort_values(
            "number")
        ok = mine[mine["state"] == "COMPLETE"]
        color = ctx.colors[m]
        ax.plot(ok["number"], ok["value"], "o", color=color, label=m)
        best = mine["value"].where(mine["state"] == "COMPLETE").cummax()
        ax.step(mine["number"], best, where="post", color=color, linewidth=1.2)
        bad = mine[mine["state"] == "PRUNED"]
        if len(bad):
            y = np.nanmin(ok["value"]) if len(ok) else 0.0
            ax.plot(bad["number"], [y] * len(bad), "x", color="0.3", markersize=8,
                    label="diverged")
        ax.set(title=m, xlabel="tuning trial (Optuna number)")
        ax.set_xticks(mine["number"].tolist())
        ax.legend(loc="lower right")
    axes[0].set_ylabel("objective: validation mIoU (fraction, 0–1)")
    return fig
