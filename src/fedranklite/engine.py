"""The round loop, written once for every backend.

    1 select clients (seeded)            5 deadline policy -> accepted updates
    2 scheduler.assign -> ranks          6 aggregate -> new global adapter
    3 runner trains the clients          7 evaluate every k rounds, record the round
    4 simulated time per client          8 scheduler.observe(reports)

Step 3 is the only backend-specific part: a `ClientRunner` receives the global adapter and one
`ClientTask` per client and returns `ClientResult`s. The local runner trains them one after another
on a single resident model; the Flower runner sends them as messages; the surrogate runner
(surrogate.py) replaces training by a calibrated model. Step 7 calls an `Evaluator` (global adapter ->
scores), the model's dev-set evaluation in real runs.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from .aggregation import AGGREGATORS, Contribution
from .diagnostics import rank_energy
from .budget import budget_report
from .checkpoint import CHECKPOINT_NAME, ResumeError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .client import ClientResult, TrainSettings, evaluate, train_client
from .config import Config, dump_config
from .data import LoadedData
from .metrics import (SCORE_METRICS, RoundLog, default_metric, fairness, reached, rewrite_round_log, summarize,
                      write_json_atomic)
from .prepare import Prepared, adapter_bytes, pick_device, prepare, tier_rank_caps  # noqa: F401 (re-exported)
from .ranks import State
from .schedulers import Clients, Reports, build_scheduler
from .stragglers import STRAGGLER_POLICIES
from .timing import TimeModel, comm_seconds
from .tracking import open_trackers
from .validation import reject_reasons

log = logging.getLogger(__name__)


# ================================================================== tasks and the deadline gate
@dataclass(frozen=True)
class DeadlineGate:
    """Decides before each local step whether the step still fits in the round deadline (simulated
    seconds). Plain data, so it can travel to a remote client in a message."""

    deadline: float
    comm_seconds: float
    compute_factor: float
    mode: str  # "analytic" | "measured"
    sec_per_step: float = 0.0  # analytic: simulated seconds of one full batch at this rank

    def __call__(self, steps_done: int, wall_seconds: float) -> bool:
        if self.mode == "analytic":
            return self.comm_seconds + (steps_done + 1) * self.sec_per_step <= self.deadline
        if steps_done == 0:
            return self.comm_seconds < self.deadline
        per_step = wall_seconds / steps_done
        return self.comm_seconds + (wall_seconds + per_step) / self.compute_factor <= self.deadline


@dataclass(frozen=True)
class ClientTask:
    cid: int
    rank: int
    seed: int
    gate: Optional[DeadlineGate] = None


class ClientRunner(Protocol):
    def run(self, round_idx: int, global_state: State, tasks: Sequence[ClientTask]) -> list[ClientResult]: ...


class LocalRunner:
    """Step 3 in this process: one resident model, clients trained one after another."""

    def __init__(self, prepared: Prepared):
        self.model, self.train, self.partitions = prepared.model, prepared.train, prepared.partitions
        self.settings, self.device = prepared.settings, prepared.device

    def run(self, round_idx: int, global_state: State, tasks: Sequence[ClientTask]) -> list[ClientResult]:
        return [train_client(self.model, global_state, t.cid, t.rank, self.train, self.partitions[t.cid],
                             self.settings, self.device, t.seed, t.gate) for t in tasks]


def client_seed(seed: int, round_idx: int, cid: int) -> int:
    """A seed for one (round, client): independent of execution order and process."""
    return int(np.random.SeedSequence([seed, round_idx, cid]).generate_state(1)[0])


def select_clients(seed: int, round_idx: int, num_clients: int, per_round: int) -> np.ndarray:
    rng = np.random.default_rng([seed, round_idx, 7919])
    return np.sort(rng.choice(num_clients, size=per_round, replace=False))


# ================================================================== the engine
@dataclass
class Federation:
    """Everything static about a run: config, clients, tiers, partitions, memory caps."""

    cfg: Config
    data: Optional[LoadedData]  # None for the surrogate backend (no text is read)
    partitions: Optional[list[np.ndarray]]  # rows of each client (None: the surrogate knows only counts)
    tier_of: list[str]
    max_rank: np.ndarray  # per client: largest rank its tier memory holds (0: none)
    bytes_fixed: int  # bytes of the head (moves every round, both ways)
    bytes_per_rank: int  # bytes of one rank slice of all LoRA factors (one way)
    rows: Optional[np.ndarray] = None  # training rows per client (default: the partition sizes)

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = np.array([len(p) for p in self.partitions], dtype=np.int64)

    @property
    def num_clients(self) -> int:
        return len(self.tier_of)


@dataclass
class RunState:
    """What changes from round to round (and is checkpointed)."""

    global_state: State
    round_idx: int = 0  # rounds completed
    sim_time: float = 0.0
    records: list[dict] = field(default_factory=list)
    reached_at: Optional[int] = None


# step 7: the global adapter -> {"score": ..., "loss": ..., <metric>: ...}
Evaluator = Callable[[State], dict]


class Engine:
    def __init__(self, cfg: Config, runner: ClientRunner, federation: Federation, evaluator: Evaluator,
                 global_state: State, model_info: dict, task: str):
        """`model_info`: what the summary says about the model (backbone, pooling, memory profile);
        `task`: classification | regression."""
        self.cfg, self.runner, self.fed, self.evaluator, self.model_info = \
            cfg, runner, federation, evaluator, model_info
        self.scheduler = build_scheduler(cfg)
        self.aggregate = AGGREGATORS[cfg.federation.aggregation]
        self.policy = STRAGGLER_POLICIES[cfg.deadline.straggler_policy]
        t = cfg.timing
        self.time_model = TimeModel(t.mode, t.sec_per_sample, t.sec_per_sample_per_rank)
        self.metric = cfg.evaluation.metric or default_metric(task)
        self.higher_is_better = SCORE_METRICS[self.metric].higher_is_better
        self.settings = TrainSettings.from_config(cfg, task == "regression")
        # the server's copy lives on the CPU, like the updates clients send back
        self.state = RunState(global_state={k: v.cpu() for k, v in global_state.items()})

    # ---- step 2 inputs: what the scheduler knows about each selected client
    def describe(self, selected: np.ndarray) -> Clients:
        cfg, fed = self.cfg, self.fed
        n = len(selected)
        cf, intercept, slope = np.zeros(n), np.zeros(n), np.zeros(n)
        for k, c in enumerate(selected):
            tier = cfg.tiers[fed.tier_of[c]]
            rows = int(fed.rows[c])
            samples = min(rows, self.settings.planned_steps(rows) * self.settings.batch_size)
            cf[k] = tier.compute_factor
            intercept[k], slope[k] = self.time_model.predict(samples, tier.compute_factor, tier.bandwidth_mbps,
                                                             2 * fed.bytes_fixed, 2 * fed.bytes_per_rank)
        return Clients.of(selected, fed.max_rank[selected], cf, intercept, slope)

    def _gate(self, cid: int, rank: int) -> Optional[DeadlineGate]:
        deadline = self.cfg.deadline.seconds
        if deadline is None or not self.policy.stops_at_deadline:
            return None
        tier = self.cfg.tiers[self.fed.tier_of[cid]]
        comm = comm_seconds(2 * (self.fed.bytes_fixed + rank * self.fed.bytes_per_rank), tier.bandwidth_mbps)
        # analytic mode: the time model's own cost of one full batch (measured mode times steps as they run)
        per_step = self.time_model.compute_seconds(self.settings.batch_size, rank, tier.compute_factor) \
            if self.time_model.mode == "analytic" else 0.0
        return DeadlineGate(deadline, comm, tier.compute_factor, self.time_model.mode, per_step)

    def run_round(self) -> dict:
        cfg, fed, st = self.cfg, self.fed, self.state
        r = st.round_idx + 1
        wall_start = time.perf_counter()
        selected = select_clients(cfg.seed, r, fed.num_clients, cfg.federation.clients_per_round)
        fits = fed.max_rank[selected] > 0
        runnable = selected[fits]
        out_of_memory = [int(c) for c in selected[~fits]]
        clients = self.describe(runnable)
        ranks = self.scheduler.assign(clients) if len(runnable) else np.zeros(0, dtype=np.int64)
        tasks = [ClientTask(int(c), int(k), client_seed(cfg.seed, r, int(c)), self._gate(int(c), int(k)))
                 for c, k in zip(runnable, ranks)]
        results = self.runner.run(r, st.global_state, tasks)

        # step 4: simulated time of every client
        # (throughput the scheduler sees is that of the simulated hardware: samples / simulated compute s)
        sim, sim_throughput = np.zeros(len(results)), np.zeros(len(results))
        for i, res in enumerate(results):
            tier = cfg.tiers[fed.tier_of[res.cid]]
            compute = self.time_model.compute_seconds(res.num_samples, res.rank, tier.compute_factor,
                                                      res.wall_seconds)
            sim[i] = comm_seconds(res.bytes_down + res.bytes_up, tier.bandwidth_mbps) + compute
            sim_throughput[i] = res.num_samples / compute if compute > 0 else np.nan
            self.time_model.observe(res.wall_seconds, res.num_samples)
        # step 5: deadline policy, then the update checks (NaN/Inf, shapes, ranks, norm outliers)
        outcome = self.policy.resolve(sim, [res.finished for res in results], [res.steps > 0 for res in results],
                                      cfg.deadline.seconds)
        # a client a remote runner never heard back from (extra["lost"]: timeout, dead node) is a straggler
        # without an update, whatever the policy; the update checks see only the others
        lost = np.array([bool(res.extra.get("lost")) for res in results], dtype=bool)
        if lost.any():
            outcome.straggler[lost] = True
            outcome.accepted[lost] = False
        kept = [i for i in range(len(results)) if not lost[i]]
        rejected: list = [None] * len(results)
        for i, reason in zip(kept, reject_reasons([results[i].update for i in kept], [results[i].rank for i in kept],
                                                  st.global_state, cfg.federation.max_update_norm_ratio)):
            rejected[i] = reason
        for res, reason in zip(results, rejected):
            if reason is not None:
                log.warning("round %d: update of client %d rejected: %s", r, res.cid, reason)
        # step 6: aggregation over accepted updates
        accepted = [Contribution(res.update, res.rank, res.num_samples)
                    for res, ok, reason in zip(results, outcome.accepted, rejected) if ok and reason is None]
        if accepted:
            st.global_state = self.aggregate(st.global_state, accepted)
        # step 7: evaluation and the round record
        evaluation = None
        if r % cfg.evaluation.eval_every == 0 or r == cfg.federation.num_rounds:
            evaluation = self.evaluator(st.global_state)
        st.sim_time += outcome.round_time
        st.round_idx = r
        record = self._record(r, results, sim, sim_throughput, outcome, rejected, out_of_memory, evaluation,
                              time.perf_counter() - wall_start)
        st.records.append(record)
        if st.reached_at is None and reached(record["score"], cfg.evaluation.target, self.higher_is_better):
            st.reached_at = r
        # step 8: the scheduler learns from the round
        self.scheduler.observe(Reports.of([res.cid for res in results], [res.rank for res in results],
                                          [res.loss_drop for res in results], sim_throughput,
                                          outcome.straggler))
        return record

    def _record(self, r, results, sim, sim_throughput, outcome, rejected, out_of_memory, evaluation, wall) -> dict:
        status = []
        for i, res in enumerate(results):
            st = "accepted" if outcome.accepted[i] else "dropped"
            if outcome.accepted[i] and not res.finished:
                st = "partial"
            if rejected[i] is not None:
                st = "rejected"
            if res.extra.get("lost"):
                st = "lost"
            status.append(st)
        tier_of = self.fed.tier_of
        columns = {
            "cid": [res.cid for res in results], "tier": [tier_of[res.cid] for res in results],
            "rank": [res.rank for res in results], "status": status,
            "straggler": [bool(x) for x in outcome.straggler], "steps": [res.steps for res in results],
            "planned_steps": [res.planned_steps for res in results], "samples": [res.num_samples for res in results],
            "loss_before": [_finite(res.loss_before) for res in results],
            "loss_after": [_finite(res.loss_after) for res in results],
            "loss_drop": [_finite(res.loss_drop) for res in results],
            "throughput": [_finite(res.throughput) for res in results],
            "sim_throughput": [_finite(x) for x in sim_throughput.tolist()],
            "wall_seconds": [res.wall_seconds for res in results], "sim_seconds": sim.tolist(),
            "bytes_down": [res.bytes_down for res in results], "bytes_up": [res.bytes_up for res in results],
            "peak_memory_mb": [res.peak_memory_mb for res in results], "reject_reason": list(rejected),
        }
        straggler_ids = [res.cid for res, s in zip(results, outcome.straggler) if s]
        record = {"round": r, "selected": columns["cid"] + out_of_memory}
        if self.cfg.metrics.client_records == "full":
            keys = list(columns)
            clients = []
            for i, res in enumerate(results):
                c = {k: columns[k][i] for k in keys}
                if res.extra.get("lost"):
                    c["lost"] = res.extra["lost"]
                clients.append(c)
            record.update(ranks={str(c["cid"]): c["rank"] for c in clients}, clients=clients)
        else:  # columns: one array per field (thousands of clients per round, see metrics.client_columns)
            record["client_columns"] = {k: _column_array(v) for k, v in columns.items()}
        record.update({
            "out_of_memory": out_of_memory,
            "rejected": {str(res.cid): reason for res, reason in zip(results, rejected) if reason is not None},
            "stragglers": straggler_ids,
            "compliant": not straggler_ids,
            "round_sim_seconds": float(outcome.round_time),
            "sim_time": float(self.state.sim_time),
            "fairness": fairness(columns["loss_before"], self.cfg.metrics.fairness_percentiles),
            "eval": evaluation,
            "score": None if evaluation is None else evaluation["score"],
            "bytes_up": int(sum(columns["bytes_up"])),
            "bytes_down": int(sum(columns["bytes_down"])),
            "wall_seconds": wall,
            "scheduler_notes": list(self.scheduler.notes),
            # per LoRA module group: energy of each rank block of the global adapter, effective ranks
            "rank_energy": rank_energy(self.state.global_state),
        })
        return record

    def summary(self) -> dict:
        cfg = self.cfg
        return summarize(self.state.records, target=cfg.evaluation.target, metric=self.metric,
                         higher_is_better=self.higher_is_better, percentiles=cfg.metrics.fairness_percentiles,
                         extra={"experiment_name": cfg.experiment_name, "scheduler": cfg.federation.scheduler.type,
                                "aggregation": cfg.federation.aggregation,
                                "straggler_policy": cfg.deadline.straggler_policy,
                                "deadline_seconds": cfg.deadline.seconds, "time_mode": cfg.timing.mode,
                                **self.model_info,
                                "num_clients": self.fed.num_clients,
                                "clients_per_round": cfg.federation.clients_per_round,
                                "tier_rank_caps": {n: int(self.fed.max_rank[self.fed.tier_of.index(n)])
                                                   for n in cfg.tiers},
                                "final_eval": self.state.records[-1]["eval"] if self.state.records else None,
                                "budget": self.budget()})

    def budget(self) -> Optional[dict]:
        data = self.fed.data
        return None if data is None else budget_report(self.cfg, len(data.train), len(data.eval), self.fed.partitions)

    # ---- checkpoints
    def checkpoint_payload(self) -> dict:
        st = self.state
        return {"round_idx": st.round_idx, "sim_time": st.sim_time, "reached_at": st.reached_at,
                "global_state": st.global_state, "records": st.records,
                "scheduler": self.scheduler.state_dict(), "time_model": self.time_model.state_dict(),
                "rng": rng_state(), "config": self.cfg.to_dict()}

    def restore(self, payload: dict) -> None:
        if payload["config"] != self.cfg.to_dict():
            raise ResumeError(f"{self.cfg.results_dir / CHECKPOINT_NAME}: the checkpoint was written with a "
                              f"different configuration; resume with the same config and --set values")
        self.state = RunState(global_state=payload["global_state"], round_idx=payload["round_idx"],
                              sim_time=payload["sim_time"], records=payload["records"],
                              reached_at=payload["reached_at"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.time_model.load_state_dict(payload["time_model"])
        set_rng_state(payload["rng"])

    def run(self, on_round: Optional[Callable[[dict], None]] = None, resume: bool = False) -> dict:
        cfg = self.cfg
        out = cfg.results_dir
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.restore(load_checkpoint(out / CHECKPOINT_NAME))
            # rounds.jsonl may hold a round finished after the last checkpoint: rewrite it from the checkpoint
            rewrite_round_log(out / "rounds.jsonl", self.state.records)
            log.info("resuming %s after round %d", cfg.experiment_name, self.state.round_idx)
        else:
            (out / CHECKPOINT_NAME).unlink(missing_ok=True)
        dump_config(cfg, out / "config.yaml")
        trackers = open_trackers(cfg.metrics.tracking, out, cfg.to_dict())
        rounds_log = RoundLog(out / "rounds.jsonl", append=resume)
        try:
            while self.state.round_idx < cfg.federation.num_rounds and not self._target_stop():
                record = self.run_round()
                rounds_log.write(record)
                if cfg.metrics.checkpoint:
                    save_checkpoint(out / CHECKPOINT_NAME, self.checkpoint_payload())
                if self.state.round_idx % cfg.metrics.summary_every == 0:
                    write_json_atomic(out / "metrics.json", self.summary())
                for tracker in trackers:
                    tracker.log_round(record)
                if on_round is not None:
                    on_round(record)
            if self._target_stop():
                log.info("target %s reached at round %d: stopped", cfg.evaluation.target, self.state.reached_at)
        finally:
            rounds_log.close()
            for tracker in trackers:
                tracker.close()
        summary = self.summary()
        write_json_atomic(out / "metrics.json", summary)
        return summary

    def _target_stop(self) -> bool:
        return self.cfg.evaluation.stop_at_target and self.state.reached_at is not None


def _column_array(values: list) -> np.ndarray:
    """A compact column: numbers as a numpy array (missing floats as NaN), anything else as objects."""
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.asarray(values, dtype=bool)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    if all(v is None or isinstance(v, (int, float, np.number)) for v in values):
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.asarray(values, dtype=object)


def _finite(x: float) -> Optional[float]:
    return float(x) if x is not None and np.isfinite(x) else None


def _secondary_metrics(data: LoadedData) -> list[str]:
    if data.task == "regression":
        return ["pearson", "spearman", "mse"]
    return ["accuracy", "f1"] if data.num_labels == 2 else ["accuracy", "f1_macro"]


# step 3 for `build_engine`: a runner built from the prepared run (LocalRunner itself is one)
RunnerFactory = Callable[[Prepared], ClientRunner]


def build_engine(cfg: Config, runner_factory: Optional[RunnerFactory] = None) -> Engine:
    """Load data and model as the config says (`prepare`, shared with every backend) and wire the engine."""
    prep = prepare(cfg)
    fed = Federation(cfg, prep.data, prep.partitions, prep.plan.tier_of, prep.max_rank, prep.head_bytes,
                     prep.bytes_per_rank)
    runner = (runner_factory or LocalRunner)(prep)
    model, settings, device, task = prep.model, prep.settings, prep.device, prep.data.task
    metric = cfg.evaluation.metric or default_metric(task)
    extra = _secondary_metrics(prep.data)
    eval_enc = prep.eval

    def evaluator(state: State) -> dict:
        return evaluate(model, state, eval_enc, metric, cfg.evaluation.batch_size, device, settings.regression,
                        extra)

    info = {"backbone": model.source, "pooling": model.pooling, "pair_encoding": "siamese" if model.siamese else
            "cross", "memory_profile": dataclasses.asdict(prep.profile)}
    engine = Engine(cfg, runner, fed, evaluator, model.adapter_state(), info, task)
    engine.model = model  # for inspection (notebooks, tests); the round loop only uses the evaluator
    engine.prepared = prep
    return engine
