"""Running an engine's rounds to the end with its results on disk: the results folder's lock, rounds.jsonl line by
line, the checkpoint after every round (and resuming from it, refused when the config or an input changed),
metrics.json, trackers, the stop rules, and one line when a results file cannot be written.

`Engine` (engine.py) is the round itself; it inherits this loop, so `engine.run()` runs and persists a whole run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import yaml

from fedranklite.core.records import RoundRecord, RunSummary
from fedranklite.core.results_io import (
    ROUNDS_FILE,
    SUMMARY_FILE,
    RoundLog,
    rewrite_round_log,
    write_json_atomic,
    write_text_atomic,
)
from fedranklite.federation.ranks import State
from fedranklite.run.checkpoint import (
    CHECKPOINT_NAME,
    LEGACY_CHECKPOINT_NAME,
    ResumeError,
    check_adapter,
    check_config,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from fedranklite.run.fingerprint import check_fingerprints
from fedranklite.run.folder_lock import acquire, release
from fedranklite.run.tracking import open_trackers
from fedranklite.run.viability import RunStopped

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What changes from round to round (and is checkpointed)."""

    global_state: State
    round_idx: int = 0  # rounds completed
    sim_time: float = 0.0
    records: list[RoundRecord] = field(default_factory=list)
    reached_at: Optional[int] = None
    stopped: Optional[str] = None  # why the run stopped early (viability.stop_message), if it did
    initial_eval: Optional[dict] = None  # the untrained global model's evaluation (evaluation.eval_initial)
    accepted_changes: list[str] = field(default_factory=list)  # inputs a resume accepted as changed (--allow-changed)


class RunLoop:
    """The run loop and checkpoints of an Engine (mixed into it: it uses the engine's config, state,
    scheduler, time model, telemetry, evaluator, summary() and run_round())."""

    # ---- checkpoints
    def checkpoint_payload(self) -> dict:
        st = self.state
        return {
            "round_idx": st.round_idx,
            "sim_time": st.sim_time,
            "reached_at": st.reached_at,
            "global_state": st.global_state,
            "records": [rec.to_json("columns") for rec in st.records],
            "scheduler": self.scheduler.state_dict(),
            "time_model": self.time_model.state_dict(),
            "telemetry": self.telemetry.state_dict(),
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "initial_eval": st.initial_eval,
            "fingerprints": self.fingerprints(),
            "accepted_changes": list(st.accepted_changes) or None,
            "server_optimizer": self.server_optimizer.state_dict(),  # empty unless momentum / adam has stepped
        }

    def restore(self, payload: dict, allow_changed: Sequence[str] = ()) -> None:
        """Continue from a loaded checkpoint (checkpoint.load_checkpoint): the config must be the same (other
        than where the results live), the adapter must fit the model, and the inputs the results depend on
        (fingerprint.py) must be unchanged unless their key is in `allow_changed`; any other problem is one
        ResumeError."""
        path = self.cfg.results_dir / CHECKPOINT_NAME
        check_config(path, payload["config"], self.cfg.to_dict(), payload.get("round_idx"))
        check_adapter(path, payload["global_state"], self.state.global_state)
        accepted = check_fingerprints(path, payload.get("fingerprints"), self.fingerprints(), allow_changed)
        for change in accepted:
            log.warning("resuming on a changed input (--allow-changed): %s", change)
        try:
            state = RunState(
                global_state=dict(payload["global_state"]),
                round_idx=payload["round_idx"],
                sim_time=float(payload["sim_time"]),
                records=[RoundRecord.from_json(rec) for rec in payload["records"]],
                reached_at=payload["reached_at"],
                initial_eval=payload.get("initial_eval"),
                accepted_changes=[*(payload.get("accepted_changes") or []), *accepted],
            )
            self.scheduler.load_state_dict(payload["scheduler"])
            self.time_model.load_state_dict(payload["time_model"])
            self.telemetry.load_state_dict(payload["telemetry"])
            self.server_optimizer.load_state_dict(payload.get("server_optimizer") or {}, state.global_state)
            set_rng_state(payload["rng"])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
            text = " ".join(str(exc).split())[:120]
            raise ResumeError(
                f"{path}: its round records or plugin states cannot be restored ({type(exc).__name__}: {text}); "
                "cannot resume from it (start afresh with --overwrite)"
            ) from None
        self.state = state

    def resume_from_checkpoint(self, allow_changed: Sequence[str] = ()) -> None:
        """Load and restore the results folder's checkpoint now (the CLI calls it before the run starts, so a
        refused resume is its only line); `run(resume=True)` does it when it has not been done. `allow_changed`:
        fingerprint keys (data, backbone, ...) whose change since the checkpoint is accepted."""
        if not self._resumed:
            self.restore(load_checkpoint(self.cfg.results_dir / CHECKPOINT_NAME), allow_changed)
            self._resumed = True

    def run(
        self,
        on_round: Optional[Callable[[RoundRecord], None]] = None,
        resume: bool = False,
        allow_changed: Sequence[str] = (),
    ) -> RunSummary:
        """The round loop, holding the results folder's lock (folder_lock.py) until it ends; the lock is freed at
        the end, also when prepare_results_folder took it for this process."""
        out = self.cfg.results_dir
        acquire(out)  # FolderInUse (one line) when another run writes there
        try:
            return self._run(on_round, resume, allow_changed)
        except OSError as exc:  # a full disk, a folder made read-only: one line, and the files stay whole
            raise RunStopped(self._write_failure(exc, exc.filename or out)) from None
        finally:
            release(out, everything=True)

    def _write_failure(self, exc: OSError, what) -> str:
        """One line for a results file that could not be written: what, why, and what the folder still holds."""
        out, done = self.cfg.results_dir, self._saved_round
        why = exc.strerror or type(exc).__name__
        if done is None or not self.cfg.metrics.checkpoint:
            after = "rerun it once the folder can be written (--overwrite)"
        else:
            after = f"its checkpoint holds round {done}: free space or make it writable, then continue with --resume"
        return f"stopped after round {self.state.round_idx}: cannot write {what} ({why}); {out}: {after}"

    def _persist(self, out, rounds_log: RoundLog, record: RoundRecord) -> None:
        """The round's line in rounds.jsonl, the checkpoint and the summary. A failed write leaves no part of a
        file: the round log is cut back to its last whole line, the others are written atomically."""
        cfg, path = self.cfg, out / ROUNDS_FILE
        try:
            rounds_log.write(record)  # a failed write is cut back to the last whole line by RoundLog itself
        except OSError as exc:
            raise RunStopped(self._write_failure(exc, path)) from None
        try:
            if cfg.metrics.checkpoint:
                save_checkpoint(out / CHECKPOINT_NAME, self.checkpoint_payload())
                self._saved_round = self.state.round_idx
            if self.state.round_idx % cfg.metrics.summary_every == 0:
                write_json_atomic(out / SUMMARY_FILE, self.summary().to_json())
        except OSError as exc:
            name = out / (CHECKPOINT_NAME if self._saved_round != self.state.round_idx else SUMMARY_FILE)
            raise RunStopped(self._write_failure(exc, name)) from None

    def _run(self, on_round, resume: bool, allow_changed: Sequence[str]) -> RunSummary:
        cfg = self.cfg
        out = cfg.results_dir
        out.mkdir(parents=True, exist_ok=True)
        # temporary files of atomic writes that a killed run left behind (never read: only the renamed file is)
        remove_stale_temporaries(
            out, (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, SUMMARY_FILE, ROUNDS_FILE, "config.yaml")
        )
        if resume:
            self.resume_from_checkpoint(allow_changed)
            self._saved_round = self.state.round_idx
            # rounds.jsonl may hold a round finished after the last checkpoint: rewrite it from the checkpoint
            rewrite_round_log(out / ROUNDS_FILE, self.state.records, cfg.metrics.client_records)
            log.info("resuming %s after round %d", cfg.experiment_name, self.state.round_idx)
        else:
            (out / CHECKPOINT_NAME).unlink(missing_ok=True)
            (out / LEGACY_CHECKPOINT_NAME).unlink(missing_ok=True)
            if cfg.evaluation.eval_initial:  # round 0: e.g. a verbalizer's zero-shot score, before any training
                self.state.initial_eval = self.evaluator(self.state.global_state)
                log.info("before training: %s %.4f", self.metric, self.state.initial_eval["score"])
        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        trackers = open_trackers(cfg.metrics.tracking, out, cfg.to_dict())
        rounds_log = RoundLog(out / ROUNDS_FILE, append=resume, layout=cfg.metrics.client_records)
        # a scheduler's notice (cvx: "cvxpy is not installed ...; greedy fallback used") is logged once per
        # run, not every round; every round's record keeps its notes (scheduler_notes in rounds.jsonl)
        scheduler_log, once = logging.getLogger(type(self.scheduler).__module__), OncePerRun()
        scheduler_log.addFilter(once)
        try:
            while self.state.round_idx < cfg.federation.num_rounds and not self._target_stop():
                record = self.run_round()
                self._persist(out, rounds_log, record)
                for tracker in trackers:
                    tracker.log_round(record)
                if on_round is not None:
                    on_round(record)
                stop = self._empty_rounds_stop()
                if stop:
                    self.state.stopped = stop
                    write_json_atomic(out / SUMMARY_FILE, self.summary().to_json())
                    raise RunStopped(f"stopped after round {self.state.round_idx}: {stop}; results so far in {out}")
            if self._target_stop():
                log.info("target %s reached at round %d: stopped", cfg.evaluation.target, self.state.reached_at)
        finally:
            scheduler_log.removeFilter(once)
            try:
                rounds_log.close()
            except OSError:
                pass  # a failed write already stopped the run; its message says so
            for tracker in trackers:
                tracker.close()
        summary = self.summary()
        write_json_atomic(out / SUMMARY_FILE, summary.to_json())
        return summary


class OncePerRun(logging.Filter):
    """Lets each kind of message through once: the text before its first " (" (the varying detail)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage().split(" (", 1)[0]
        if key in self.seen:
            return False
        self.seen.add(key)
        return True
