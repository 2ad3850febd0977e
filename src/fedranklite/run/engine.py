"""The round loop, written once for every backend.

    1 select clients (seeded)            5 deadline policy -> accepted updates
    2 scheduler.assign -> ranks          6 aggregate (+ server optimizer) -> new global adapter
    3 runner trains the clients          7 evaluate every k rounds, record the round
    4 simulated time per client          8 scheduler.observe(reports)

Step 3 is the only backend-specific part: a `ClientRunner` receives the global adapter and one
`ClientTask` per client and returns `ClientResult`s. The local runner trains them one after another
on a single resident model; the Flower runner sends them as messages; the surrogate runner
(backends/surrogate/) replaces training by a calibrated model. Step 7 calls an `Evaluator` (global adapter ->
scores), the model's dev-set evaluation in real runs. Running the rounds to the end with the results on disk
(lock, round log, checkpoints, resume, summary) is run_loop.py, which `Engine` inherits.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from fedranklite.config.schema import Config
from fedranklite.core.records import ClientReport, ClientTable, RoundRecord, RunSummary
from fedranklite.data.load import LoadedData
from fedranklite.data.scoring import SCORE_METRICS, default_metric, trivial_baseline
from fedranklite.federation.aggregation import AGGREGATORS, Contribution
from fedranklite.federation.diagnostics import live_rank, rank_energy
from fedranklite.federation.hardware import (
    Hardware,
    Telemetry,
    draw_hardware,
    read_trace,
    round_conditions,
    tier_arrays,
)
from fedranklite.federation.ranks import State
from fedranklite.federation.schedulers import Clients, Reports, build_scheduler
from fedranklite.federation.server_optimizer import SERVER_OPTIMIZERS
from fedranklite.federation.stragglers import STRAGGLER_POLICIES
from fedranklite.federation.timing import TIMING_MODES, comm_seconds
from fedranklite.federation.validation import (
    clip_bounds,
    clip_update,
    reject_reasons,
    sample_problem,
    server_weight,
    update_distance,
)
from fedranklite.run.budget import budget_report
from fedranklite.run.client import ClientResult, TrainSettings, evaluate
from fedranklite.run.fingerprint import input_fingerprints
from fedranklite.run.prepare import prepare
from fedranklite.run.run_loop import RunLoop, RunState
from fedranklite.run.runners import (
    ClientRunner,
    ClientTask,
    DeadlineGate,
    LocalRunner,
    RunnerFactory,
    client_seed,
    lost_result,
)
from fedranklite.run.summary import fairness, reached, run_warnings, summarize
from fedranklite.run.viability import RunRefused, refusals, stop_message

log = logging.getLogger(__name__)


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
    hardware: Optional[Hardware] = None  # each client's hidden hardware (default: drawn from the config)

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = np.array([len(p) for p in self.partitions], dtype=np.int64)
        if self.hardware is None:
            trace = self.cfg.federation.client_trace
            self.hardware = draw_hardware(
                self.cfg, self.tier_of, read_trace(trace, len(self.tier_of)) if trace else None
            )

    @property
    def num_clients(self) -> int:
        return len(self.tier_of)


# step 7: the global adapter -> {"score": ..., "loss": ..., <metric>: ...}
Evaluator = Callable[[State], dict]


class Engine(RunLoop):
    def __init__(
        self,
        cfg: Config,
        runner: ClientRunner,
        federation: Federation,
        evaluator: Evaluator,
        global_state: State,
        model_info: dict,
        task: str,
    ):
        """`model_info`: what the summary says about the model (backbone, pooling, memory profile);
        `task`: classification | regression."""
        self.cfg, self.runner, self.fed, self.evaluator, self.model_info = (
            cfg,
            runner,
            federation,
            evaluator,
            model_info,
        )
        self.scheduler = build_scheduler(cfg)
        self.aggregate = AGGREGATORS.build(cfg.federation.aggregation)
        # step 6 after the aggregator: `none` passes the aggregate through untouched
        self.server_optimizer = SERVER_OPTIMIZERS.build(cfg.federation.server_optimizer)
        self.policy = STRAGGLER_POLICIES.build(cfg.deadline.straggler_policy)
        self.time_model = TIMING_MODES.build(cfg.timing, cfg=cfg)
        # what the server knows of each client: its tier's figures, then the telemetry of its reports
        self.prior = tier_arrays(cfg, federation.tier_of)
        self.telemetry = Telemetry(cfg.federation.telemetry_ema)
        self.metric = cfg.evaluation.metric or default_metric(task)
        self.higher_is_better = SCORE_METRICS[self.metric].higher_is_better
        self.settings = TrainSettings.from_config(cfg, task == "regression")
        # the server's copy lives on the CPU, like the updates clients send back
        self.state = RunState(global_state={k: v.cpu() for k, v in global_state.items()})
        self._resumed = False  # resume_from_checkpoint has restored the state
        # rank slices of the global adapter that can still train (None until the first aggregation: all can)
        self._live_rank: Optional[int] = None
        self._dead_warned = False  # the dead-slice warning is logged once per run
        self._fingerprints: Optional[dict] = None
        self._saved_round: Optional[int] = None  # the round the checkpoint on disk holds (None: none written)

    def fingerprints(self) -> dict:
        """What the results depend on beyond the config (fingerprint.py), computed once per run."""
        if self._fingerprints is None:
            self._fingerprints = input_fingerprints(self.cfg, self.fed.data)
        return self._fingerprints

    # ---- step 2 inputs: what the scheduler knows about each selected client
    def describe(self, selected: np.ndarray) -> Clients:
        """What every scheduler knows about the selected clients: predicted time t_i(r) = a_i + b_i r from the
        time model, the tier prior and the telemetry of earlier reports (never the hidden hardware)."""
        fed = self.fed
        known = self.telemetry.estimate(selected, self.prior)
        n = len(selected)
        intercept, slope = np.zeros(n), np.zeros(n)
        for k, c in enumerate(selected):
            samples = self.settings.planned_samples(int(fed.rows[c]))  # all local epochs, not one pass
            a, b = self.time_model.predict(samples, float(known["compute_factor"][k]), None, 0, 0)
            down, up = known["downlink_mbps"][k], known["uplink_mbps"][k]
            intercept[k] = a + comm_seconds(fed.bytes_fixed, down) + comm_seconds(fed.bytes_fixed, up)
            slope[k] = b + comm_seconds(fed.bytes_per_rank, down) + comm_seconds(fed.bytes_per_rank, up)
        return Clients.of(selected, fed.max_rank[selected], known["compute_factor"], intercept, slope)

    def _gate(self, cid: int, rank: int, speed: float) -> Optional[DeadlineGate]:
        """The client's own clock against the deadline (its real hardware: `speed` is its compute factor
        this round, jitter included)."""
        deadline = self.cfg.deadline.seconds
        if deadline is None or not self.policy.stops_at_deadline:
            return None
        hw, size = self.fed.hardware, self.fed.bytes_fixed + rank * self.fed.bytes_per_rank
        comm = comm_seconds(size, hw.downlink_mbps[cid]) + comm_seconds(size, hw.uplink_mbps[cid])
        # a deterministic time model prices one full batch itself (measured mode times steps as they run)
        per_step = (
            self.time_model.compute_seconds(self.settings.batch_size, rank, speed)
            if self.time_model.deterministic
            else 0.0
        )
        return DeadlineGate(deadline, comm, speed, self.time_model.mode, per_step)

    def _unavailable(self, task: ClientTask) -> ClientResult:
        """A selected client that did not answer this round (tier availability): no work, no update."""
        planned = self.settings.planned_steps(int(self.fed.rows[task.cid]))
        return lost_result(task, planned, 0, "unavailable this round")

    def run_round(self) -> RoundRecord:
        cfg, fed, st = self.cfg, self.fed, self.state
        r = st.round_idx + 1
        wall_start = time.perf_counter()
        selected = select_clients(cfg.seed, r, fed.num_clients, cfg.federation.clients_per_round)
        fits = fed.max_rank[selected] > 0
        runnable = selected[fits]
        out_of_memory = [int(c) for c in selected[~fits]]
        clients = self.describe(runnable)
        ranks = self.scheduler.assign(clients) if len(runnable) else np.zeros(0, dtype=np.int64)
        self._warn_dead_slices(r, ranks)
        # the clients' real conditions this round (hidden from the scheduler): jitter and who answers
        jitter, answers = round_conditions(fed.hardware, cfg.seed, r, runnable)
        speed = fed.hardware.compute_factor[runnable] / jitter
        tasks = [
            ClientTask(int(c), int(k), client_seed(cfg.seed, r, int(c)), self._gate(int(c), int(k), float(v)))
            for c, k, v in zip(runnable, ranks, speed)
        ]
        ran = self.runner.run(r, st.global_state, [t for t, ok in zip(tasks, answers) if ok])
        by_cid = {res.cid: res for res in ran}
        results = [by_cid[t.cid] if ok else self._unavailable(t) for t, ok in zip(tasks, answers)]
        # a sample count is the client's claim: the server caps it at the work it planned for the client, and
        # an update whose count it cannot use (<= 0, NaN, not a number) is rejected below; simulated time and
        # aggregation weights use the capped count
        claim_problems = {}
        for res in results:
            if res.lost or res.steps <= 0:
                continue
            problem = sample_problem(res.num_samples)
            if problem:
                claim_problems[res.cid] = problem
                res.num_samples = 0
            else:
                res.num_samples = server_weight(res.num_samples, self.settings.planned_samples(int(fed.rows[res.cid])))
        speed_of = dict(zip(runnable.tolist(), speed.tolist()))

        # step 4: simulated time of every client, on its own hardware
        # (throughput the scheduler sees is that of the simulated hardware: samples / simulated compute s)
        hw, deadline = fed.hardware, cfg.deadline.seconds
        sim, sim_throughput = np.zeros(len(results)), np.full(len(results), np.nan)
        seen_cf, seen_up, seen_down = (np.full(len(results), np.nan) for _ in range(3))
        for i, res in enumerate(results):
            if res.lost:  # never answered: the server waited for it until the deadline (if there is one)
                sim[i] = deadline or 0.0
                continue
            compute = self.time_model.compute_seconds(res.num_samples, res.rank, speed_of[res.cid], res.wall_seconds)
            sim[i] = (
                comm_seconds(res.bytes_down, hw.downlink_mbps[res.cid])
                + comm_seconds(res.bytes_up, hw.uplink_mbps[res.cid])
                + compute
            )
            if compute > 0:
                sim_throughput[i] = res.num_samples / compute
                # the server's view of the client's speed: the time model's nominal cost / the time it took
                seen_cf[i] = self.time_model.compute_seconds(res.num_samples, res.rank, 1.0, res.wall_seconds) / compute
            if res.bytes_down and np.isfinite(hw.downlink_mbps[res.cid]):
                seen_down[i] = hw.downlink_mbps[res.cid]  # bytes / transfer time, as the server measures it
            if res.bytes_up and np.isfinite(hw.uplink_mbps[res.cid]):
                seen_up[i] = hw.uplink_mbps[res.cid]
            self.time_model.observe(res.wall_seconds, res.num_samples)
        self.telemetry.observe(np.array([res.cid for res in results], dtype=np.int64), seen_cf, seen_up, seen_down)
        # step 5: deadline policy, then the update checks (NaN/Inf, shapes, ranks, norm outliers)
        outcome = self.policy.resolve(
            sim, [res.finished for res in results], [res.steps > 0 for res in results], cfg.deadline.seconds
        )
        # a client a remote runner never heard back from (`lost`: timeout, dead node) is a straggler
        # without an update, whatever the policy; the update checks see only the others
        lost = np.array([bool(res.lost) for res in results], dtype=bool)
        if lost.any():
            outcome.straggler[lost] = True
            outcome.accepted[lost] = False
        kept = [i for i in range(len(results)) if not lost[i]]
        rejected: list = [None] * len(results)
        for i, reason in zip(
            kept,
            reject_reasons(
                [results[i].update for i in kept],
                [results[i].rank for i in kept],
                st.global_state,
                cfg.federation.max_update_norm_ratio,
            ),
        ):
            rejected[i] = reason
        for i in kept:
            if rejected[i] is None:
                rejected[i] = claim_problems.get(results[i].cid)
        for res, reason in zip(results, rejected):
            if reason is not None:
                log.warning("round %d: update of client %d rejected: %s", r, res.cid, reason)
        # step 6: aggregation over accepted updates (weights: the capped sample counts), optionally clipped
        accepted = [
            Contribution(res.update, res.rank, res.num_samples)
            for res, ok, reason in zip(results, outcome.accepted, rejected)
            if ok and reason is None
        ]
        accepted = self._clipped(r, accepted)
        if accepted:  # (a round without updates moves neither the adapter nor the server optimizer)
            st.global_state = self.server_optimizer.step(st.global_state, self.aggregate(st.global_state, accepted))
            self._live_rank = live_rank(st.global_state)
        # step 7: evaluation and the round record
        evaluation = None
        if r % cfg.evaluation.eval_every == 0 or r == cfg.federation.num_rounds:
            evaluation = self.evaluator(st.global_state)
        st.sim_time += outcome.round_time
        st.round_idx = r
        record = self._record(
            r,
            results,
            sim,
            sim_throughput,
            outcome,
            rejected,
            out_of_memory,
            evaluation,
            time.perf_counter() - wall_start,
        )
        st.records.append(record)
        if st.reached_at is None and reached(record.score, cfg.evaluation.target, self.higher_is_better):
            st.reached_at = r
        # step 8: the scheduler learns from the round
        self.scheduler.observe(
            Reports.of(
                [res.cid for res in results],
                [res.rank for res in results],
                [res.loss_drop for res in results],
                sim_throughput,
                outcome.straggler,
                [res.loss_rms for res in results],
                [res.num_samples for res in results],
            )
        )
        return record

    def _record(
        self, r, results, sim, sim_throughput, outcome, rejected, out_of_memory, evaluation, wall
    ) -> RoundRecord:
        reports = []
        for i, res in enumerate(results):
            status = "accepted" if outcome.accepted[i] else "dropped"
            if outcome.accepted[i] and not res.finished:
                status = "partial"
            if rejected[i] is not None:
                status = "rejected"
            if res.lost:
                status = "lost"
            reports.append(
                ClientReport(
                    cid=res.cid,
                    tier=self.fed.tier_of[res.cid],
                    rank=res.rank,
                    status=status,
                    straggler=bool(outcome.straggler[i]),
                    steps=res.steps,
                    planned_steps=res.planned_steps,
                    samples=res.num_samples,
                    loss_before=_finite(res.loss_before),
                    loss_after=_finite(res.loss_after),
                    loss_drop=_finite(res.loss_drop),
                    loss_rms=_finite(res.loss_rms),
                    throughput=_finite(res.throughput),
                    sim_throughput=_finite(sim_throughput[i]),
                    wall_seconds=res.wall_seconds,
                    sim_seconds=float(sim[i]),
                    bytes_down=res.bytes_down,
                    bytes_up=res.bytes_up,
                    peak_memory_mb=res.peak_memory_mb,
                    reject_reason=rejected[i],
                    lost=res.lost,
                )
            )
        table = ClientTable.from_reports(reports)
        return RoundRecord(
            round=r,
            selected=[rep.cid for rep in reports] + out_of_memory,
            clients=table,
            out_of_memory=out_of_memory,
            rejected={str(rep.cid): rep.reject_reason for rep in reports if rep.reject_reason is not None},
            stragglers=[rep.cid for rep in reports if rep.straggler],
            compliant=not any(rep.straggler for rep in reports),
            round_sim_seconds=float(outcome.round_time),
            sim_time=float(self.state.sim_time),
            fairness=fairness([rep.loss_before for rep in reports], self.cfg.metrics.fairness_percentiles),
            eval=evaluation,
            score=None if evaluation is None else evaluation["score"],
            bytes_up=int(sum(rep.bytes_up for rep in reports)),
            bytes_down=int(sum(rep.bytes_down for rep in reports)),
            wall_seconds=wall,
            scheduler_notes=list(self.scheduler.notes),
            rank_energy=rank_energy(self.state.global_state),
        )

    def summary(self) -> RunSummary:
        cfg = self.cfg
        run = {
            "experiment_name": cfg.experiment_name,
            "scheduler": cfg.federation.scheduler.type,
            "aggregation": cfg.federation.aggregation.type,
            "straggler_policy": cfg.deadline.straggler_policy.type,
            "deadline_seconds": cfg.deadline.seconds,
            "time_mode": cfg.timing.mode,
            "time_model": {
                "sec_per_sample": self.time_model.sec_per_sample,
                "sec_per_sample_per_rank": self.time_model.sec_per_sample_per_rank,
            },
            "pricing": self.pricing(),
            **self.model_info,
            "num_clients": self.fed.num_clients,
            "clients_per_round": cfg.federation.clients_per_round,
            "tier_rank_caps": {n: int(self.fed.max_rank[self.fed.tier_of.index(n)]) for n in cfg.tiers},
            "initial_eval": self.state.initial_eval,
            "final_eval": self.state.records[-1].eval if self.state.records else None,
            "budget": self.budget(),
        }
        final = self.state.records[-1] if self.state.records else None
        changed = [f"resumed with changed inputs: {c}" for c in self.state.accepted_changes]
        run["warnings"] = (
            ([f"stopped early: {self.state.stopped}"] if self.state.stopped else [])
            + changed
            + self.dead_slice_warning()
            + run_warnings(
                run["final_eval"],
                None if final is None else final.score,
                self.model_info.get("trivial_baseline"),
                self.higher_is_better,
            )
        )
        return summarize(
            self.state.records,
            target=cfg.evaluation.target,
            metric=self.metric,
            higher_is_better=self.higher_is_better,
            percentiles=cfg.metrics.fairness_percentiles,
            run=run,
            per_client_maps=cfg.metrics.client_records == "full",
        )

    def _warn_dead_slices(self, r: int, ranks: np.ndarray) -> None:
        """Say once when a round assigns ranks above the slices that can still train: slices zero in both factors
        get no gradient (what zero-padding aggregators leave where no client trained a slice in a round), so
        those ranks send bytes that carry nothing."""
        live = self._live_rank
        if live is None or not len(ranks) or int(ranks.max()) <= live or self._dead_warned:
            return
        self._dead_warned = True
        log.warning(
            "round %d: ranks up to %d assigned, but LoRA slices %d-%d of the global adapter are zero in both "
            "factors (a round in which no client trained them, under %s's zero padding): they cannot train again, "
            "so ranks above %d carry nothing; blockwise aggregation keeps such slices",
            r,
            int(ranks.max()),
            live + 1,
            self.cfg.r_max,
            self.cfg.federation.aggregation.type,
            live,
        )

    def dead_slice_warning(self) -> list[str]:
        """The run summary's line when clients were assigned ranks the global adapter could no longer use."""
        live = live_rank(self.state.global_state)
        assigned = max(
            (int(np.max(rec.clients.rank)) for rec in self.state.records if len(rec.clients.rank)), default=0
        )
        if not live or assigned <= live:
            return []
        return [
            f"the global adapter ends with LoRA slices {live + 1}-{self.cfg.r_max} zero in both factors (dead: "
            f"they cannot train), yet clients were assigned ranks up to {assigned}; with ranks that vary, use "
            "blockwise aggregation, which keeps a slice no client trained in a round"
        ]

    def pricing(self) -> dict:
        """Per tier, where its simulated compute prices come from (run/pricing.py), worked out once per run."""
        if getattr(self, "_pricing", None) is None:
            from fedranklite.run.pricing import pricing

            self._pricing = pricing(self.cfg)
        return self._pricing

    def budget(self) -> Optional[dict]:
        data = self.fed.data
        return None if data is None else budget_report(self.cfg, len(data.train), len(data.eval), self.fed.partitions)

    def _clipped(self, r: int, contributions: list[Contribution]) -> list[Contribution]:
        """`federation.clip_update_norm_ratio` / `clip_update_norm`: every update's distance from the global
        adapter scaled down to the round's bound before aggregation."""
        fed_cfg, g = self.cfg.federation, self.state.global_state
        if fed_cfg.clip_update_norm_ratio is None and fed_cfg.clip_update_norm is None:
            return contributions
        distances = [update_distance(c.state, c.rank, g) for c in contributions]
        bound = clip_bounds(distances, fed_cfg.clip_update_norm_ratio, fed_cfg.clip_update_norm)
        out, clipped = [], 0
        for c, distance in zip(contributions, distances):
            state, scale = clip_update(c.state, c.rank, g, bound, distance)
            clipped += scale < 1.0
            out.append(Contribution(state, c.rank, c.weight))
        if clipped:
            log.info("round %d: %d update(s) clipped to norm %.3g", r, clipped, bound)
        return out

    def _empty_rounds_stop(self) -> Optional[str]:
        k = self.cfg.federation.stop_after_empty_rounds
        return None if k is None else stop_message(self.state.records, k)

    def _target_stop(self) -> bool:
        return self.cfg.evaluation.stop_at_target and self.state.reached_at is not None


def _finite(x: float) -> Optional[float]:
    return float(x) if x is not None and np.isfinite(x) else None


def _secondary_metrics(data: LoadedData) -> list[str]:
    if data.task == "regression":
        return ["pearson", "spearman", "mse"]
    return ["accuracy", "f1"] if data.num_labels == 2 else ["accuracy", "f1_macro"]


def build_engine(cfg: Config, runner_factory: Optional[RunnerFactory] = None) -> Engine:
    """Load data and model as the config says (`prepare`, shared with every backend) and wire the engine."""
    prep = prepare(cfg)
    fed = Federation(
        cfg, prep.data, prep.partitions, prep.plan.tier_of, prep.max_rank, prep.head_bytes, prep.bytes_per_rank
    )
    runner = (runner_factory or LocalRunner)(prep)
    model, settings, device, task = prep.model, prep.settings, prep.device, prep.data.task
    metric = cfg.evaluation.metric or default_metric(task)
    extra = _secondary_metrics(prep.data)
    eval_enc = prep.eval

    def evaluator(state: State) -> dict:
        return evaluate(model, state, eval_enc, metric, cfg.evaluation.batch_size, device, settings.regression, extra)

    info = {
        "backbone": model.source,
        "pooling": model.pooling,
        "pair_encoding": "siamese" if model.siamese else "cross",
        "head": "linear" if model.verbalizer is None else "verbalizer",
        **({} if model.verbalizer is None else {"verbalizer": dataclasses.asdict(model.verbalizer)}),
        "memory_profile": dataclasses.asdict(prep.profile),
        "trivial_baseline": trivial_baseline(eval_enc.labels, metric, settings.regression),
    }
    engine = Engine(cfg, runner, fed, evaluator, model.adapter_state(), info, task)
    problems = refusals(engine, prep.data.train.labels, prep.data.num_labels, prep.rank_caps)
    if problems:
        raise RunRefused("this run cannot train: " + "; ".join(problems))
    engine.model = model  # for inspection (notebooks, tests); the round loop only uses the evaluator
    engine.prepared = prep
    return engine
