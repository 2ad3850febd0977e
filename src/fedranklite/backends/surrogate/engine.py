"""What-if simulation: the real engine, schedulers, straggler policies, tiers, aggregation and metrics, with
step 3 (client training) replaced by a surrogate calibrated from a short real run.

    fedranklite run -c configs/experiments/lite_noniid_deadline.yaml --set federation.num_rounds=4
    fedranklite calibrate results/lite_noniid_hard                  # -> results/lite_noniid_hard/surrogate.json
    fedranklite run -c configs/experiments/whatif_100k.yaml \\
        --set engine.surrogate.calibration=results/lite_noniid_hard/surrogate.json

The surrogate (`SurrogateFit`, all numbers fitted by `calibrate` from rounds.jsonl):

- time: compute seconds of a client = samples * (a + b * rank) / compute_factor, (a, b) by least squares
  on the real clients' compute seconds (sim seconds minus communication, times compute_factor, per sample).
  On an analytic-time run this recovers the configured constants exactly.
- bytes and memory: exact, from the real model's memory profile (head + rank x bytes of one rank slice).
- global progress: the global adapter is one number, the score gap G = S* - S to the score the run
  tends to (S + G for lower-is-better metrics). A client that ran s of its p planned steps at rank r
  proposes G * (1 - k * (r / r_max)^beta * s / p), and the engine's own aggregator averages the accepted
  proposals (sample-weighted): dropped stragglers and partial updates act through the same code as in
  real runs. (S_0, S*, k) by least squares between the real run's dev scores and the trajectory this rule
  simulates with the real run's ranks, steps and acceptances (a trend fit: a non-IID run whose score
  oscillates gets its average progress). The score, not the eval loss, is modelled: it is what
  time-to-target needs, and a non-IID run's cross-entropy swings far more than its accuracy.
- client telemetry: client i's loss before training is l(S) * u_i: l(S) = a + b * S, the median client
  loss of a real round vs the score of the global model it started from (least squares), u_i ~
  lognormal(sigma_u) fixed per client (data heterogeneity; sigma_u = the log-spread of loss_before across
  the clients of a round); its local loss drop is phi * (its loss) * (r / r_max)^beta * s / p *
  exp(noise), noise ~ N(0, sigma_noise): (phi, beta, sigma_noise) by least squares on log(drop) over the
  real clients with a positive drop. The lite scheduler sees these drops and the simulated throughput
  exactly as it sees real ones.

Limits, said plainly: one scalar stands in for the model, so effects that need the adapter's direction
(rank collapse, which aggregator wins) are not simulated; non-IID acts through u_i and the fitted trend only.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import yaml

from fedranklite.config.files import validate
from fedranklite.config.schema import Config
from fedranklite.core.results_io import ResultsError, json_ready, read_run
from fedranklite.data.scoring import SCORE_METRICS
from fedranklite.federation.memory import MemoryProfile
from fedranklite.federation.ranks import State
from fedranklite.federation.timing import comm_seconds
from fedranklite.run.client import ClientResult, TrainSettings, samples_in_steps

log = logging.getLogger(__name__)

STATE_KEY = "surrogate.score_gap"  # the surrogate's whole "adapter": no rank axis, averaged like a head
FIT_FILE = "surrogate.json"


class CalibrationError(ValueError):
    """A run that cannot calibrate the surrogate (too few rounds, no evaluations...)."""


@dataclass
class SurrogateFit:
    metric: str
    higher_is_better: bool
    r_max: int
    sec_per_sample: float  # compute seconds per sample at compute_factor 1 and rank 0
    sec_per_sample_per_rank: float
    head_bytes: int  # bytes of the non-rank tensors (the head), one way
    bytes_per_rank: int  # bytes of one rank slice of every LoRA factor, one way
    memory_profile: dict
    score_start: float  # S_0: score of the initial global model
    score_limit: float  # S*: the score the run tends to
    rate: float  # k: fraction of the gap one full-rank, full-step round closes
    rank_exponent: float  # beta
    drop_fraction: float  # phi
    client_sigma: float  # sigma_u
    noise_sigma: float
    loss_intercept: float  # client loss level l(S) = loss_intercept + loss_slope * S
    loss_slope: float
    score_range: tuple[float, float]
    source: dict = field(default_factory=dict)  # what it was fitted on, residuals, sizes

    @property
    def sign(self) -> float:
        """+1: the score rises to S* (accuracy, F1, Pearson); -1: it falls to S* (mse)."""
        return 1.0 if self.higher_is_better else -1.0

    def score(self, gap: float) -> float:
        lo, hi = self.score_range
        return float(min(max(self.score_limit - self.sign * gap, lo), hi))

    def client_loss(self, score: float) -> float:
        return max(self.loss_intercept + self.loss_slope * score, 1e-6)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(json_ready(asdict(self)), indent=2, allow_nan=False))  # strict JSON: inf -> null
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SurrogateFit":
        path = Path(path)
        if path.is_dir():
            path = path / FIT_FILE
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise CalibrationError(
                f"{path}: cannot read the surrogate calibration ({exc}); make one with "
                f"`fedranklite calibrate <results dir of a real run>`"
            ) from None
        lo, hi = data["score_range"]
        data["score_range"] = (-math.inf if lo is None else lo, math.inf if hi is None else hi)
        return cls(**data)


# ================================================================== calibration (pure: records in, fit out)
_SCORE_RANGES = {
    "accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "f1_macro": (0.0, 1.0),
    "pearson": (-1.0, 1.0),
    "spearman": (-1.0, 1.0),
    "mse": (0.0, math.inf),
}


def fit_time(ranks, per_sample_seconds) -> tuple[float, float, float]:
    """(a, b, r2) of per-sample compute seconds = a + b * rank, b >= 0 (b = 0 if the data say less)."""
    r = np.asarray(ranks, dtype=np.float64)
    y = np.asarray(per_sample_seconds, dtype=np.float64)
    if np.ptp(r) > 0:
        b, a = np.polyfit(r, y, 1)
    else:
        a, b = float(y.mean()), 0.0
    if b < 0:
        a, b = float(y.mean()), 0.0
    resid = y - (a + b * r)
    r2 = 1.0 - float(resid @ resid) / max(float(((y - y.mean()) ** 2).sum()), 1e-300)
    return float(a), float(b), r2


def fit_progress(
    scores: Sequence[Optional[float]],
    efficiencies: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    score_range: tuple[float, float],
    higher_is_better: bool = True,
) -> tuple[float, float, float, float]:
    """(S_0, S*, k, rmse): the score trajectory S_t = S* - G_t, G_t = G_{t-1} * mean_w(1 - k * eff_i) (the
    aggregator's sample-weighted mean of the clients' proposals; S* + G_t when lower is better), simulated
    over every round and scored on the rounds with an evaluation (`scores[t]` None: not evaluated). A trend
    fit, so an oscillating non-IID run gets its average progress. Grid search over S_0, S*, closed-ish k."""
    g = np.array(
        [float(np.average(e, weights=w)) if len(e) and np.sum(w) > 0 else 0.0 for e, w in zip(efficiencies, weights)]
    )
    seen = np.array([x is not None for x in scores])
    y = np.array([x for x in scores if x is not None], dtype=np.float64)
    sign = 1.0 if higher_is_better else -1.0
    lo, hi = score_range
    lo = max(lo, float(y.min()) - 2 * (float(np.ptp(y)) + 0.05))
    hi = min(hi, float(y.max()) + 2 * (float(np.ptp(y)) + 0.05))
    ks = np.linspace(0.0, 1.0, 101)
    decay = np.cumprod(1.0 - ks[:, None] * g[None, :], axis=1)[:, seen]  # (k, evaluated rounds)
    best = (float(y[0]), float(y[-1]), 0.0, math.inf)
    for s0 in np.linspace(lo, hi, 61):
        for s_lim in np.linspace(lo, hi, 61):
            gap0 = sign * (s_lim - s0)
            if gap0 < 0:
                continue
            pred = s_lim - sign * gap0 * decay  # (k, rounds)
            rmse = np.sqrt(np.mean((pred - y[None, :]) ** 2, axis=1))
            i = int(np.argmin(rmse))
            if rmse[i] < best[3] - 1e-12:
                best = (float(s0), float(s_lim), float(ks[i]), float(rmse[i]))
    return best


def fit_drops(drops, level, rel_rank, step_frac) -> tuple[float, float, float, int]:
    """(phi, beta, sigma_noise, points) of drop = phi * level * rel_rank^beta * step_frac * exp(noise), `level`
    being the client's loss before training, by least squares on log(drop) over the positive drops; beta
    clipped to [0, 2], 0.5 when the ranks did not vary enough to tell."""
    d, e, q, f = (np.asarray(x, dtype=np.float64) for x in (drops, level, rel_rank, step_frac))
    ok = (d > 0) & (e > 0) & (q > 0) & (f > 0)
    if ok.sum() < 3:
        return 0.1, 0.5, 0.5, int(ok.sum())
    y = np.log(d[ok] / (e[ok] * f[ok]))
    x = np.log(q[ok])
    if np.ptp(x) > 0.1 and ok.sum() >= 5:
        beta = float(np.clip(np.polyfit(x, y, 1)[0], 0.0, 2.0))
    else:
        beta = 0.5
    log_phi = float(np.mean(y - beta * x))
    sigma = float(np.std(y - beta * x - log_phi))
    return float(math.exp(log_phi)), beta, sigma, int(ok.sum())


def calibrate(results_dir: str | Path) -> SurrogateFit:
    """Fit the surrogate on a real run's results folder (config.yaml, rounds.jsonl, metrics.json)."""
    folder = Path(results_dir)
    try:
        cfg = validate(yaml.safe_load((folder / "config.yaml").read_text()), origin=str(folder / "config.yaml"))
        summary, records = read_run(folder)
    except (OSError, ResultsError) as exc:
        raise CalibrationError(f"{folder}: not a finished run's results folder ({exc})") from None
    if cfg.engine.backend == "surrogate":
        raise CalibrationError(f"{folder}: a surrogate run; calibrate on a real run")
    if len(records) < 2:
        raise CalibrationError(f"{folder}: needs at least 2 finished rounds, found {len(records)}")
    if "memory_profile" not in summary.run:
        raise CalibrationError(f"{folder}/metrics.json has no memory_profile; rerun the experiment to record it")
    r_max = cfg.r_max
    profile = summary.run["memory_profile"]
    head_bytes, per_rank = 4 * int(profile["head_params"]), 4 * int(profile["lora_params_per_rank"])

    # time: per-sample compute seconds at compute_factor 1. A client's simulated seconds are its compute plus its
    # download at the tier's downlink and its upload at the uplink; the hidden per-client deviations are not in
    # the records, so with any of them on the fit averages over them (said once)
    hidden = sorted(
        {k for t in cfg.tiers.values() for k in ("speed_sigma", "bandwidth_sigma", "jitter_sigma") if getattr(t, k)}
    )
    if hidden:
        log.warning(
            "%s: the run's tiers have hidden per-client deviations (%s); the surrogate's time fit averages over them "
            "(calibrate on a run with them at 0 for an exact price)",
            folder,
            ", ".join(hidden),
        )
    ranks, per_sample = [], []
    for rec in records:
        cols = rec.clients
        for tier, rank, samples, sim, down, up in zip(
            cols.tier, cols.rank, cols.samples, cols.sim_seconds, cols.bytes_down, cols.bytes_up
        ):
            t = cfg.tiers[tier]
            if samples:
                compute = sim - comm_seconds(down, t.downlink) - comm_seconds(up, t.uplink)
                ranks.append(rank)
                per_sample.append(compute * t.compute_factor / samples)
    a, b, time_r2 = fit_time(ranks, per_sample)

    # score trajectory, client losses and drops (rounds without an evaluation are simulated through)
    before0 = [x for x in records[0].clients.floats("loss_before") if np.isfinite(x)]
    evaluated = [r for r in records if r.eval]
    if len(evaluated) < 2 or not before0:
        raise CalibrationError(
            f"{folder}: needs evaluations in at least 2 rounds and client losses (set evaluation.eval_every: 1)"
        )
    start = float(np.median(before0))  # the initial model's loss on the clients' rows
    effs, wts, spreads, medians = [], [], [], []
    drops, level, rel, frac = [], [], [], []
    for rec in records:
        cols = rec.clients
        accepted = np.array([s in ("accepted", "partial") for s in cols.status])
        q = np.asarray(cols.rank, dtype=np.float64) / r_max
        f = np.asarray(cols.steps, dtype=np.float64) / np.maximum(np.asarray(cols.planned_steps, float), 1)
        effs.append((q, f))
        wts.append(np.asarray(cols.samples, dtype=np.float64) * accepted)
        lb = cols.floats("loss_before")
        good = lb[np.isfinite(lb) & (lb > 0)]
        if good.size >= 2:  # spread of the clients' losses within a round (data heterogeneity), log scale
            spreads.append(float(np.std(np.log(good))))
        medians.append(float(np.median(good)) if good.size else None)
        for lbv, dv, qi, fi in zip(lb, cols.floats("loss_drop"), q, f):
            if np.isfinite(lbv) and np.isfinite(dv):
                drops.append(dv)
                level.append(lbv)
                rel.append(qi)
                frac.append(fi)
    client_sigma = float(np.mean(spreads)) if spreads else 0.0
    phi, beta, noise, points = fit_drops(drops, level, rel, frac)
    metric = summary.metric
    higher = SCORE_METRICS[metric].higher_is_better
    score_range = _SCORE_RANGES.get(metric, (-math.inf, math.inf))
    scores = [rec.eval["score"] if rec.eval else None for rec in records]
    s0, s_lim, k, rmse = fit_progress(scores, [(q**beta) * f for q, f in effs], wts, score_range, higher)
    # client loss level vs the score of the global model a round started from (S_0 for round 1)
    prev_score = np.array([s0] + scores[:-1], dtype=object)
    xs = [float(p) for p, m in zip(prev_score, medians) if p is not None and m is not None]
    ys = [m for p, m in zip(prev_score, medians) if p is not None and m is not None]
    if len(xs) >= 2 and np.ptp(xs) > 0:
        loss_slope, loss_intercept = (float(v) for v in np.polyfit(xs, ys, 1))
    else:
        loss_slope, loss_intercept = 0.0, float(np.mean(ys)) if ys else start
    return SurrogateFit(
        metric=metric,
        higher_is_better=higher,
        r_max=r_max,
        sec_per_sample=a,
        sec_per_sample_per_rank=b,
        head_bytes=head_bytes,
        bytes_per_rank=per_rank,
        memory_profile=profile,
        score_start=s0,
        score_limit=s_lim,
        rate=k,
        rank_exponent=beta,
        drop_fraction=phi,
        client_sigma=client_sigma,
        noise_sigma=noise,
        loss_intercept=loss_intercept,
        loss_slope=loss_slope,
        score_range=score_range,
        source={
            "results_dir": str(folder),
            "experiment": cfg.experiment_name,
            "rounds": len(records),
            "client_rounds": len(ranks),
            "time_r2": time_r2,
            "score_rmse": rmse,
            "drop_points": points,
            "evaluations": len([x for x in scores if x is not None]),
            "time_mode": cfg.timing.mode,
        },
    )


# ================================================================== step 3: the surrogate runner
def gated_steps(gate, planned: int) -> int:
    """How many of `planned` steps an analytic DeadlineGate lets a client run (closed form, then checked
    against the gate itself so float rounding agrees with a real client asking it step by step)."""
    if gate.sec_per_step <= 0:
        return planned if gate(0, 0.0) else 0
    steps = max(0, min(planned, int((gate.deadline - gate.comm_seconds) / gate.sec_per_step)))
    while steps > 0 and not gate(steps - 1, 0.0):
        steps -= 1
    while steps < planned and gate(steps, 0.0):
        steps += 1
    return steps


class SurrogateRunner:
    """A ClientRunner whose clients follow the fitted surrogate instead of training a model."""

    def __init__(self, fit: SurrogateFit, cfg: Config, rows: np.ndarray, settings: TrainSettings):
        self.fit, self.cfg, self.rows, self.settings = fit, cfg, rows, settings
        self.profile = MemoryProfile(**fit.memory_profile)
        rng = np.random.default_rng([cfg.seed, 4242])
        s = fit.client_sigma
        self.client_factor = np.exp(s * rng.standard_normal(len(rows)) - s * s / 2)  # u_i, mean 1

    def run(self, round_idx: int, global_state: State, tasks) -> list[ClientResult]:
        fit, st = self.fit, self.settings
        gap = float(global_state[STATE_KEY][0])
        level = fit.client_loss(fit.score(gap))  # clients' loss level under the current global model
        noise = np.random.default_rng([self.cfg.seed, round_idx, 77]).standard_normal(len(tasks))
        out = []
        for j, t in enumerate(tasks):
            rows = int(self.rows[t.cid])
            planned = st.planned_steps(rows)
            steps = planned
            gate = t.gate
            if gate is not None:  # analytic gate (the surrogate's time is analytic): the steps it lets run
                steps = gated_steps(gate, planned)
            samples = samples_in_steps(steps, rows, st.batch_size, st.local_epochs)
            eff = (t.rank / fit.r_max) ** fit.rank_exponent * (steps / max(planned, 1))
            before = level * self.client_factor[t.cid]
            drop = fit.drop_fraction * before * eff * math.exp(fit.noise_sigma * noise[j] - fit.noise_sigma**2 / 2)
            drop = min(drop, 0.99 * before)  # a local loss cannot go below zero
            proposal = gap * (1.0 - fit.rate * eff)
            nbytes = fit.head_bytes + t.rank * fit.bytes_per_rank
            compute_cf1 = samples * (fit.sec_per_sample + fit.sec_per_sample_per_rank * t.rank)
            out.append(
                ClientResult(
                    cid=t.cid,
                    rank=t.rank,
                    update={STATE_KEY: torch.tensor([proposal], dtype=torch.float64)},
                    num_samples=samples,
                    steps=steps,
                    planned_steps=planned,
                    loss_before=before,
                    loss_after=before - drop,
                    loss_rms=before - drop / 2,  # the training batches' losses run from before to after
                    wall_seconds=compute_cf1,
                    peak_memory_mb=self.profile.bytes_at(t.rank, st.batch_size, self.cfg.model.max_length) / 2**20,
                    bytes_down=nbytes,
                    bytes_up=nbytes,
                )
            )
        return out


def partition_sizes(cfg: Config) -> np.ndarray:
    """Rows per client of the config's real data partition (stage 1 of `prepare`: labels and texts, never a
    model)."""
    from fedranklite.run.prepare import PartitionError, plan

    try:
        return plan(cfg).rows
    except PartitionError as exc:
        raise CalibrationError(
            f"{exc}; for more clients than the data can be split into, set engine.surrogate.rows_per_client"
        ) from None


def surrogate_config(cfg: Config, fit: SurrogateFit) -> Config:
    """The run's config with the calibrated (analytic) time model and the fitted run's metric (the only
    score the surrogate predicts)."""
    tree = cfg.to_dict()
    tree["timing"] = {
        "mode": "analytic",
        "sec_per_sample": fit.sec_per_sample,
        "sec_per_sample_per_rank": fit.sec_per_sample_per_rank,
    }
    tree["evaluation"]["metric"] = fit.metric
    return validate(tree, origin=f"surrogate run of {cfg.experiment_name}")


def build_surrogate_engine(cfg: Config):
    """An Engine whose step 3 is the SurrogateRunner and whose evaluation reads the surrogate's score gap."""
    from fedranklite.run.engine import Engine, Federation
    from fedranklite.run.prepare import tier_rank_caps

    sur = cfg.engine.surrogate
    if not sur.calibration:
        raise CalibrationError(
            "engine.backend: surrogate needs engine.surrogate.calibration (a surrogate.json "
            "from `fedranklite calibrate <results dir>`)"
        )
    fit = SurrogateFit.load(sur.calibration)
    if fit.r_max != cfg.r_max:
        raise CalibrationError(f"the calibration was fitted at r_max {fit.r_max}, this config has {cfg.r_max}")
    cfg = surrogate_config(cfg, fit)
    tier_of = cfg.client_tiers()
    n = len(tier_of)
    if sur.rows_per_client is not None:
        rows = np.full(n, sur.rows_per_client, dtype=np.int64)
    else:  # the real partition's sizes (labels only, no model): what the real run of this config would use
        rows = partition_sizes(cfg)
    profile = MemoryProfile(**fit.memory_profile)
    caps = tier_rank_caps(cfg, profile)
    # per-client rank caps by tier, vectorised: a million clients are a few tiers repeated
    tier_names = list(cfg.tiers)
    tier_caps = np.array([caps[t] for t in tier_names], dtype=np.int64)
    counts = [cfg.tiers[t].num_clients for t in tier_names]
    fed = Federation(
        cfg,
        None,
        None,
        tier_of,
        np.repeat(tier_caps, counts),
        fit.head_bytes,
        fit.bytes_per_rank,
        rows=rows,
    )
    regression = SCORE_METRICS[fit.metric].task == "regression"
    settings = TrainSettings.from_config(cfg, regression)
    runner = SurrogateRunner(fit, cfg, rows, settings)

    def evaluator(state: State) -> dict:
        score = fit.score(float(state[STATE_KEY][0]))
        return {"loss": fit.client_loss(score), fit.metric: score, "score": score, "num_samples": 0}

    start = {STATE_KEY: torch.tensor([fit.sign * (fit.score_limit - fit.score_start)], dtype=torch.float64)}
    info = {
        "backbone": f"surrogate of {fit.source.get('experiment')} ({fit.source.get('results_dir')})",
        "surrogate": {k: v for k, v in asdict(fit).items() if k not in ("memory_profile",)},
        "memory_profile": fit.memory_profile,
    }
    return Engine(cfg, runner, fed, evaluator, start, info, "regression" if regression else "classification")
