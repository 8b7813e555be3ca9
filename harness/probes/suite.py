"""Every probe a trial logs, in one call: :func:`run_probes` turns a :class:`ProbeConfig` into
MLflow-ready metrics, figures and tables.

The suite is bookkeeping only. Each number comes straight from one probe of this package called
with the configured arguments — ``probe/sharpness`` *is* ``sharpness(model, loss_fn, batches,
rho=cfg.sharpness_rho).sharpness`` — so a logged value can always be reproduced, or questioned,
by calling that probe by hand.

Metrics (absent when the probe is switched off, see below):

==================================  ==========================================================
``probe/loss``                      L(w) on the probe batches (always)
``probe/sharpness``                 worst-case rise in the plain ρ-ball, one SAM step
                                    (``sharpness_rho``)
``probe/asam_sharpness``            the same in ASAM's ball ``‖ε/(|w|+η)‖ ≤ ρ`` (``asam_rho``,
                                    ``asam_eta``)
``probe/avg_sharpness[_stderr]``    E[L(w+δ)] − L(w), ``δ = σ·|w|·z``: σ is *relative* to
                                    each weight (``average_sigma``, ``average_samples``,
                                    η = 0)
``probe/hessian_eig1`` … ``eigK``   the K = ``hessian_k`` largest Hessian eigenvalues
                                    (Lanczos, ``hessian_iters``)
``probe/hessian_trace[_stderr]``    Hutchinson estimate of tr(H) (``trace_samples``)
``probe/landscape_1d/max_rise``     max loss on the 1-D slice − L(w) (``landscape_points``,
                                    ``landscape_span``)
``probe_cost/<probe>/seconds``      wall time of that probe
``probe_cost/<probe>/fb``           its forward-backward equivalents (``Cost.fb_equivalents``,
                                    per batch pass: divide by the number of batches for
                                    "training steps over the probe batches")
``probe_cost/total_seconds``        wall time of the whole suite, plots included
==================================  ==========================================================

A probe whose size or count is 0 in the config (``sharpness_rho``, ``asam_rho``,
``average_sigma`` or ``average_samples``, ``hessian_k``, ``trace_samples``,
``landscape_points``, ``landscape_2d_points``) is switched off: nothing is computed or logged
for it. Other out-of-range values (``average_samples=1``, even landscape points,
``hessian_iters < hessian_k``) are passed through and rejected by the probe itself.

Figures and tables: ``landscape_1d.png`` / ``.csv`` (columns ``alpha, loss``; ``points`` rows)
and ``landscape_2d.png`` / ``.csv`` (long format, columns ``alpha, beta, loss``; ``points²``
rows, ``table.pivot(index="alpha", columns="beta", values="loss")`` gives the grid back).

Seeds: every randomised probe gets ``cfg.seed`` itself rather than a derived seed, so that the
direct call above reproduces it. The price is that probes drawing Gaussians (average sharpness,
the Lanczos start vector, the landscape directions) start from the same draw ``z``, each scaled
differently; every estimate is still unbiased on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from harness.config import ProbeConfig
from harness.tracking import schema

from ._objective import Cost, LossFn, Objective
from ._params import probe_session
from .hessian import hessian_top_eigenvalues, hessian_trace
from .landscape import (
    Landscape1D,
    Landscape2D,
    landscape_1d,
    landscape_2d,
    plot_landscape_1d,
    plot_landscape_2d,
)
from .sharpness import average_sharpness, sharpness


@dataclass
class ProbeReport:
    """What one :func:`run_probes` call produced, ready to log.

    ``metrics`` are MLflow metric names → values; ``figures`` and ``tables`` are artifact file
    names → objects (save with ``fig.savefig(path)`` / ``table.to_csv(path, index=False)``);
    ``seconds`` is the suite's wall time (also ``metrics["probe_cost/total_seconds"]``).
    """

    metrics: dict[str, float]
    figures: dict[str, Figure]
    tables: dict[str, pd.DataFrame]
    seconds: float


@dataclass(frozen=True)
class LossResult:
    """L(w) on the probe batches, with what it cost (the probes' result shape)."""

    loss: float
    cost: Cost


def center_loss(model: nn.Module, loss_fn: LossFn, batches: Sequence[Any]) -> LossResult:
    """L(w): the mean of ``loss_fn`` over ``batches`` in eval mode, under the probe contract.

    The same :class:`Objective` every probe evaluates, so this value is bit for bit the
    ``loss`` field of :func:`average_sharpness` and the centre of :func:`landscape_1d`.
    """
    with probe_session(model) as (params, _):
        objective = Objective(model, loss_fn, batches, params)
        return LossResult(loss=objective.loss(), cost=objective.cost())


def probe_batches(dataset, cfg: ProbeConfig) -> list:
    """The batches a trial probes: ``cfg.batches`` × ``cfg.batch_size``, drawn with ``cfg.seed``.

    Fixed batches with tight boxes, so that repeated probes measure the same function.
    """
    # Imported here: the rest of the suite works on any model and loss, and importing the
    # trainer would pull in segment_anything (and torchvision) for everyone.
    from harness.train.batches import fixed_batches

    return fixed_batches(dataset, cfg.batches, cfg.batch_size, cfg.seed)


# A probe's outputs: metrics, figures, tables (the three dicts of a ProbeReport).
Outputs = tuple[dict[str, float], dict[str, Figure], dict[str, pd.DataFrame]]


@dataclass(frozen=True)
class _Probe:
    """One entry of the plan: ``run(model, loss_fn, batches)`` returns a result with ``.cost``,
    ``outputs(result)`` turns it into what gets logged."""

    name: str
    run: Callable[[nn.Module, LossFn, Sequence[Any]], Any]
    outputs: Callable[[Any], Outputs]


def _metric(key: str, field: str, stderr: bool = False) -> Callable[[Any], Outputs]:
    """Outputs of a scalar probe: ``result.<field>`` as ``key`` (and ``result.stderr``)."""

    def outputs(result: Any) -> Outputs:
        metrics = {key: getattr(result, field)}
        if stderr:
            metrics[f"{key}_stderr"] = result.stderr
        return metrics, {}, {}

    return outputs


def _eigenvalue_outputs(result: Any) -> Outputs:
    # Numbered from 1 and descending, as EigenResult orders them: eig1 is the sharpest. Each
    # comes with its Lanczos residual bound and whether the iteration converged: a λ₁ from
    # too few iterations is a lower bound, not an eigenvalue, and must be readable as such.
    metrics = {}
    for i, (value, residual) in enumerate(zip(result.eigenvalues, result.residuals), 1):
        metrics[schema.probe_eig_metric(i)] = value
        metrics[schema.probe_eig_metric(i) + "_residual"] = residual
    metrics[schema.PROBE_LANCZOS_CONVERGED] = float(result.converged)
    metrics[schema.PROBE_LANCZOS_ITERATIONS] = float(result.iterations)
    return metrics, {}, {}


def _landscape_1d_outputs(result: Landscape1D) -> Outputs:
    return (
        {schema.PROBE_LANDSCAPE_RISE: float(result.losses.max()) - result.center_loss},
        {"landscape_1d.png": plot_landscape_1d(result)},
        {"landscape_1d.csv": pd.DataFrame({"alpha": result.alphas, "loss": result.losses})},
    )


def _landscape_2d_outputs(result: Landscape2D) -> Outputs:
    # "ij" indexing puts (alphas[i], betas[j]) at [i, j], where the probe put losses[i, j].
    alpha, beta = np.meshgrid(result.alphas, result.betas, indexing="ij")
    table = pd.DataFrame({"alpha": alpha.ravel(), "beta": beta.ravel(),
                          "loss": result.losses.ravel()})
    return {}, {"landscape_2d.png": plot_landscape_2d(result)}, {"landscape_2d.csv": table}


def _plan(cfg: ProbeConfig) -> list[_Probe]:
    """The probes ``cfg`` asks for, in the order of the metrics table, bound to their arguments."""
    seed = cfg.seed
    plan = [_Probe("loss", center_loss, _metric(schema.PROBE_LOSS, "loss"))]
    if cfg.sharpness_rho:
        plan.append(_Probe("sharpness", partial(sharpness, rho=cfg.sharpness_rho),
                           _metric(schema.PROBE_SHARPNESS, "sharpness")))
    if cfg.asam_rho:
        plan.append(_Probe(
            "asam_sharpness",
            partial(sharpness, rho=cfg.asam_rho, adaptive=True, eta=cfg.asam_eta),
            _metric(schema.PROBE_ASAM_SHARPNESS, "sharpness"),
        ))
    if cfg.average_sigma and cfg.average_samples:
        # adaptive with η = 0: δ = σ·|w|·z, so σ = 0.01 moves every weight by about 1 % of
        # itself — comparable across layers and models of different scale, unlike a fixed σ.
        plan.append(_Probe(
            "avg_sharpness",
            partial(average_sharpness, sigma=cfg.average_sigma, adaptive=True,
                    samples=cfg.average_samples, seed=seed),
            _metric(schema.PROBE_AVG_SHARPNESS, "mean", stderr=True),
        ))
    if cfg.hessian_k:
        plan.append(_Probe(
            "hessian_eig",
            partial(hessian_top_eigenvalues, k=cfg.hessian_k, iters=cfg.hessian_iters, seed=seed),
            _eigenvalue_outputs,
        ))
    if cfg.trace_samples:
        plan.append(_Probe("hessian_trace",
                           partial(hessian_trace, samples=cfg.trace_samples, seed=seed),
                           _metric(schema.PROBE_HESSIAN_TRACE, "trace", stderr=True)))
    if cfg.landscape_points:
        plan.append(_Probe(
            "landscape_1d",
            partial(landscape_1d, span=cfg.landscape_span, points=cfg.landscape_points, seed=seed),
            _landscape_1d_outputs,
        ))
    if cfg.landscape_2d_points:
        plan.append(_Probe(
            "landscape_2d",
            partial(landscape_2d, span=cfg.landscape_span, points=cfg.landscape_2d_points,
                    seed=seed),
            _landscape_2d_outputs,
        ))
    return plan


def run_probes(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    cfg: ProbeConfig,
    progress: bool = False,
) -> ProbeReport:
    """Run every probe ``cfg`` switches on (see the module docstring for names and switches).

    ``batches`` are the fixed probe batches (:func:`probe_batches`); ``cfg.enabled`` is the
    caller's switch and is not consulted here. Like each probe, the suite leaves the model
    exactly as it found it: parameters, buffers, gradients, train/eval flags, global RNG.
    Same model, batches, config and machine → the same metrics, apart from the timings.
    """
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    figures: dict[str, Figure] = {}
    tables: dict[str, pd.DataFrame] = {}
    plan = _plan(cfg)
    with tqdm(plan, desc="probes", disable=not progress, leave=False) as bar:
        for probe in bar:
            bar.set_postfix_str(probe.name)
            result = probe.run(model, loss_fn, batches)
            new_metrics, new_figures, new_tables = probe.outputs(result)
            metrics.update(new_metrics)
            figures.update(new_figures)
            tables.update(new_tables)
            metrics[schema.probe_cost_metric(probe.name, "seconds")] = result.cost.seconds
            metrics[schema.probe_cost_metric(probe.name, "fb")] = result.cost.fb_equivalents
    seconds = time.perf_counter() - started
    metrics[schema.PROBE_TOTAL_SECONDS] = seconds
    return ProbeReport(metrics=metrics, figures=figures, tables=tables, seconds=seconds)
