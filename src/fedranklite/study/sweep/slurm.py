"""The Slurm launcher (`fedranklite sweep SPEC --launcher slurm`), through submitit: the sweep's unfinished runs
as one array job, at most `slurm.array_parallelism` (else `--workers`) of them running at once, each a
`fedranklite run` of its folder.

- Logs per run: each run's output goes to <run folder>/sweep_run.log (headed by its job id and attempt), and
  submitit's own job logs to <output_dir>/slurm_logs/<job id>_*.
- Resubmission: the sweep follows its jobs; a run that fails (non-zero exit, killed, out of time) is
  resubmitted up to `slurm.retries` times, resuming from its checkpoint when it has one. A job that reaches
  its time limit or is preempted is requeued by submitit and resumes from the run's checkpoint.
- Leaving: Ctrl-C stops following, not the jobs (they run on); `fedranklite sweep SPEC --mark-only` marks the
  runs that finished and the same `--launcher slurm` command later resubmits only the unfinished runs. The
  submitted job ids are kept in <output_dir>/slurm_jobs.json, and a sweep whose earlier jobs are still queued
  or running is refused rather than submitting its runs twice.
- `slurm.cluster: local` runs the same jobs with submitit's local executor (processes on this machine).

submitit is an optional dependency (`pip install 'fedranklite[slurm]'`), imported only here.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fedranklite.core.results_io import write_json_atomic
from fedranklite.study.sweep import state
from fedranklite.study.sweep.local import duration, tail
from fedranklite.study.sweep.spec import Plan, Run, SlurmSettings
from fedranklite.study.sweep.state import CHILD_ENV, ERROR_FILE, LOG_FILE, final_score, mark_done

JOBS_FILE = "slurm_jobs.json"
LOGS_DIR = "slurm_logs"
ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING")
MISSING = "the slurm launcher needs submitit: pip install 'fedranklite[slurm]' (or pip install submitit)"


class LauncherError(RuntimeError):
    """The launcher cannot start (one line)."""


class RunFailed(RuntimeError):
    """A run's `fedranklite run` exited non-zero (the job fails with this message)."""


def _submitit():
    try:
        import submitit
    except ImportError:
        raise LauncherError(MISSING) from None
    return submitit


class RunJob:
    """One run as a submitit job: `fedranklite run` of its folder, its output appended to sweep_run.log.
    Picklable (plain data); submitit calls `checkpoint` when the job reaches its time limit or is preempted,
    and requeues the run to resume from its checkpoint."""

    def __init__(self, fresh: list[str], resume: list[str], folder: str, resuming: bool, attempt: int = 1):
        self.fresh, self.resume, self.folder, self.resuming, self.attempt = fresh, resume, folder, resuming, attempt

    def argv(self) -> list[str]:
        return self.resume if self.resuming else self.fresh

    def __call__(self) -> dict:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        threads = os.environ.get("SLURM_CPUS_PER_TASK", "1")
        env = {**os.environ, **{k: threads for k in CHILD_ENV}}
        try:  # the id submitit and Slurm know this job by (array jobs: <array id>_<task>)
            from submitit import JobEnvironment

            job = JobEnvironment().job_id
        except Exception:  # noqa: BLE001 - called outside a submitit job (a test, a debug call)
            job = os.environ.get("SLURM_JOB_ID") or str(os.getpid())
        began = time.monotonic()
        with open(folder / LOG_FILE, "a") as log:  # a resumed or resubmitted run keeps its earlier output
            log.write(
                f"== {time.strftime('%Y-%m-%dT%H:%M:%S')} sweep: {'resume' if self.resuming else 'start'} "
                f"(job {job}, attempt {self.attempt})\n"
            )
            log.flush()
            rc = subprocess.run(self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if rc.returncode != 0:
            raise RunFailed(f"exit {rc.returncode}: {shlex.join(self.argv())} (output: {folder / LOG_FILE})")
        return {"wall_seconds": time.monotonic() - began, "resumed": self.resuming}

    def checkpoint(self) -> Any:
        from submitit.helpers import DelayedSubmission

        resuming = state.has_checkpoint(Path(self.folder))
        return DelayedSubmission(RunJob(self.fresh, self.resume, self.folder, resuming, self.attempt))


@dataclass
class Launch:
    """What `prepare` checked and `run_slurm` submits."""

    plan: Plan
    todo: list[Run]
    states: dict[str, str]
    settings: SlurmSettings
    parallelism: Optional[int]
    executor: Any = None  # the submitit executor (None for a dry run)
    attempts: dict[str, int] = field(default_factory=dict)


def executor_parameters(settings: SlurmSettings, parallelism: Optional[int], name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters of the spec's slurm section (cluster-specific ones prefixed)."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": settings.timeout_min,
        "cpus_per_task": settings.cpus_per_task,
        "gpus_per_node": settings.gpus_per_node,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    prefix = settings.cluster
    if settings.setup:
        params[f"{prefix}_setup"] = list(settings.setup)
    if prefix == "slurm":
        if settings.partition:
            params["slurm_partition"] = settings.partition
        if parallelism:
            params["slurm_array_parallelism"] = parallelism
        if settings.additional:
            params["slurm_additional_parameters"] = dict(settings.additional)
    return params


def executor(plan: Plan, settings: SlurmSettings, parallelism: Optional[int]):
    submitit = _submitit()
    try:
        ex = submitit.AutoExecutor(folder=plan.output_dir / LOGS_DIR / "%j", cluster=settings.cluster)
    except RuntimeError as exc:  # no srun on PATH: not a Slurm machine
        raise LauncherError(
            f"cannot submit to {settings.cluster} here ({exc}); slurm.cluster: local runs the jobs on this machine"
        ) from None
    ex.update_parameters(**executor_parameters(settings, parallelism, f"fedranklite-{plan.output_dir.name}"))
    return ex


def recorded_jobs(plan: Plan) -> dict[str, str]:
    """folder -> job id of the runs an earlier sweep submitted (slurm_jobs.json; {} when there is none)."""
    try:
        data = json.loads((plan.output_dir / JOBS_FILE).read_text())
        return {str(k): str(v) for k, v in data.get("jobs", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def active_jobs(plan: Plan, job_ids: list[str]) -> list[str]:
    """The job ids that Slurm still holds as queued or running (asked through submitit's sacct watcher)."""
    submitit = _submitit()
    folder = plan.output_dir / LOGS_DIR / "%j"
    return [j for j in job_ids if submitit.SlurmJob(folder=folder, job_id=j).state.upper() in ACTIVE]


def prepare(plan: Plan, states: dict[str, str], workers: Optional[int], dry_run: bool) -> Launch:
    """The runs to submit and how; `--dry-run` prints them and the executor's parameters. LauncherError (one
    line) when submitit is missing or the sweep's earlier jobs still hold some of its runs."""
    settings = plan.slurm
    todo = [r for r in plan.runs if states[r.folder] != "done"]
    parallelism = settings.array_parallelism or workers
    launch = Launch(plan, todo, states, settings, parallelism)
    if dry_run:  # writes nothing and needs no submitit
        print(f"{len(todo)} of {len(plan.runs)} runs to submit (dry run: nothing submitted):")
        for run in todo:
            argv = state.command(plan, run, states[run.folder] == "resume")
            print(f"{states[run.folder]:>6}  {run.folder}: {shlex.join(argv)}")
        params = executor_parameters(settings, parallelism, f"fedranklite-{plan.output_dir.name}")
        print(f"submitit {settings.cluster} executor, retries {settings.retries}: {json.dumps(params)}")
        return launch
    if not todo:
        return launch
    _submitit()
    if settings.cluster == "slurm":
        earlier = recorded_jobs(plan)
        ids = sorted({earlier[r.folder] for r in todo if r.folder in earlier})
        busy = active_jobs(plan, ids) if ids else []
        if busy:
            raise LauncherError(
                f"{len(busy)} job(s) of an earlier submission of this sweep are still queued or running "
                f"({', '.join(busy[:5])}{' ...' if len(busy) > 5 else ''}); wait for them (then --mark-only) "
                "or cancel them with scancel"
            )
    launch.executor = executor(plan, settings, parallelism)
    return launch


def _job(plan: Plan, run: Run, resuming: bool, attempt: int) -> RunJob:
    fresh, resume = state.command(plan, run, False), state.command(plan, run, True)
    return RunJob(fresh, resume, str(plan.output_dir / run.folder), resuming, attempt)


def submit(launch: Launch, runs: list[Run]) -> dict[str, Any]:
    """Submit `runs` as one array job (throttled); folder -> submitit job, recorded in slurm_jobs.json."""
    plan, ex = launch.plan, launch.executor
    batch = []
    for run in runs:
        attempt = launch.attempts.get(run.folder, 0) + 1
        launch.attempts[run.folder] = attempt
        resuming = state.has_checkpoint(plan.output_dir / run.folder)
        batch.append((run, _job(plan, run, resuming, attempt)))
    with ex.batch():
        pending = [ex.submit(job) for _, job in batch]
    jobs = {run.folder: job for (run, _), job in zip(batch, pending)}
    record = recorded_jobs(plan)
    record.update({folder: str(job.job_id) for folder, job in jobs.items()})
    write_json_atomic(plan.output_dir / JOBS_FILE, {"cluster": launch.settings.cluster, "jobs": record})
    return jobs


def _stop_following(launch: Launch, jobs: dict[str, Any], mark_command: list[str]) -> int:
    ids = sorted({str(job.job_id).split("_")[0] for job in jobs.values()})
    if launch.settings.cluster == "local":  # local jobs would outlive the sweep unwatched: stop them
        for job in jobs.values():
            job.cancel(check=False)
        print(
            f"interrupted: stopped {len(jobs)} running run(s); run the same command again to resume them",
            file=sys.stderr,
        )
    else:
        print(
            f"interrupted: {len(jobs)} run(s) go on as Slurm job(s) {', '.join(ids)}; when they end, "
            f"{shlex.join(mark_command)} marks the finished ones (scancel {' '.join(ids)} stops them)",
            file=sys.stderr,
        )
    return 130


def run_slurm(launch: Launch, mark_command: list[str], poll_seconds: Optional[float] = None) -> int:
    """Submit the unfinished runs, follow them to the end, resubmit the failed ones (up to slurm.retries)."""
    plan, settings = launch.plan, launch.settings
    total = len(plan.runs)
    if not launch.todo:
        print(f"all {total} runs are finished; nothing to submit")
        return 0
    poll = poll_seconds if poll_seconds is not None else (1.0 if settings.cluster == "local" else 15.0)
    by_folder = {r.folder: r for r in launch.todo}
    jobs = submit(launch, launch.todo)
    first = next(iter(jobs.values()))
    throttle = f"at most {launch.parallelism} at once" if launch.parallelism else "no throttle"
    print(
        f"sweep {plan.output_dir}: {total} runs, {total - len(launch.todo)} already finished; submitted "
        f"{len(launch.todo)} as {settings.cluster} job {str(first.job_id).split('_')[0]} ({throttle}); "
        f"logs: <run folder>/{LOG_FILE}, {plan.output_dir / LOGS_DIR}",
        flush=True,
    )
    finished = total - len(launch.todo)
    failures: dict[str, str] = {}
    began = time.monotonic()
    ended_here = 0
    try:
        while jobs:
            time.sleep(poll)
            retry = []
            for folder in [f for f, job in jobs.items() if job.done()]:
                job = jobs.pop(folder)
                run = by_folder[folder]
                where = plan.output_dir / folder
                error = job.exception()
                attempt = launch.attempts[folder]
                if error is None:
                    info = job.result()
                    finished += 1
                    ended_here += 1
                    score = final_score(where)
                    mark_done(where, {**info, "job": str(job.job_id), "attempt": attempt, "final_score": score})
                    (where / ERROR_FILE).unlink(missing_ok=True)
                    outcome = f"final {'-' if score is None else f'{score:.4f}'}"
                    failures.pop(folder, None)
                else:
                    message = str(error).strip().splitlines()
                    reason = next((ln for ln in reversed(message) if "RunFailed" in ln), message[-1] if message else "")
                    where.mkdir(parents=True, exist_ok=True)
                    log = tail(where / LOG_FILE)
                    (where / ERROR_FILE).write_text(f"job {job.job_id}, attempt {attempt}: {reason}\n{log}\n")
                    failures[folder] = reason
                    if attempt <= settings.retries:
                        retry.append(run)
                        outcome = f"FAILED (attempt {attempt}; resubmitted, see {where / ERROR_FILE})"
                    else:
                        finished += 1
                        ended_here += 1
                        outcome = f"FAILED (attempt {attempt}, see {where / ERROR_FILE})"
                left = len(jobs) + len(retry)
                eta = (time.monotonic() - began) / max(ended_here, 1) * left
                print(
                    f"[{finished}/{total}] {run.group} seed {run.seed}: {outcome}  "
                    f"ETA {duration(eta) if left and ended_here else '-'}",
                    flush=True,
                )
            if retry:
                jobs.update(submit(launch, retry))
    except KeyboardInterrupt:
        return _stop_following(launch, jobs, mark_command)
    if failures:
        print(f"{len(failures)} of {total} runs failed:", file=sys.stderr)
        for folder, reason in failures.items():
            print(f"  {plan.output_dir / folder}: {reason} (see {ERROR_FILE})", file=sys.stderr)
        return 1
    print(f"all {total} runs finished: fedranklite report {shlex.quote(str(plan.output_dir))}", flush=True)
    return 0
