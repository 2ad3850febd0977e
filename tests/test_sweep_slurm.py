"""`fedranklite sweep --launcher slurm` through submitit: a real tiny grid on submitit's local executor that
`report` reads, the resubmission of a failed run, the array job's throttle and options as sbatch receives them
(fake sbatch), the refusal to submit runs that earlier jobs still hold, and submitit missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli
from fedranklite.study.sweep import load_spec, run_state
from fedranklite.study.sweep import slurm as sweep_slurm
from fedranklite.study.sweep import state as sweep_state

pytest.importorskip("submitit")

ROOT = Path(__file__).resolve().parents[1]
CELLS = {"fixed": {"federation.scheduler.type": "fixed"}, "lite": {"federation.scheduler.type": "lite"}}


def write_spec(folder: Path, **spec) -> Path:
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_tree(folder)))
    body = {
        "base": "tiny.yaml",
        "output_dir": str(folder / "out"),
        "seeds": 2,
        "set": {"federation.num_rounds": 1},
        "schedulers": CELLS,
        "slurm": {"cluster": "local", "timeout_min": 20},
        **spec,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    """2 cells x 2 seeds of the tiny model, 1 round each, as submitit local jobs, through the command line."""
    folder = tmp_path_factory.mktemp("slurm_local")
    spec = write_spec(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "fedranklite", "sweep", str(spec), "--launcher", "slurm", "--workers", "2"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return spec, folder / "out", proc


def test_local_executor_runs_the_grid_and_report_reads_it(local_grid, capsys):
    spec, out, proc = local_grid
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "submitted 4 as local job" in proc.stdout and "all 4 runs finished" in proc.stdout
    progress = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert len(progress) == 4 and all("final 0." in ln for ln in progress)
    jobs = json.loads((out / "slurm_jobs.json").read_text())
    assert sorted(jobs["jobs"]) == [f"{c}/seed{s}" for c in CELLS for s in range(2)]
    for folder, job_id in jobs["jobs"].items():
        run = out / folder
        assert json.loads((run / "metrics.json").read_text())["rounds_completed"] == 1
        done = json.loads((run / "done.json").read_text())
        assert done["job"] == job_id and done["attempt"] == 1
        log = (run / "sweep_run.log").read_text()
        assert log.startswith("== ") and f"sweep: start (job {job_id}, attempt 1)" in log  # the run's own log
    assert any((out / "slurm_logs").iterdir())  # submitit's job logs
    assert cli.main(["report", str(out), "--resamples", "200"]) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert [(c["cell"], c["n"]) for c in report["cells"]] == [("fixed", 2), ("lite", 2)]
    assert report["runs"] == {"total": 4, "finished": 4, "missing": []}


def test_a_second_submission_submits_nothing(local_grid, capsys):
    spec, out, _ = local_grid
    assert cli.main(["sweep", str(spec), "--launcher", "slurm"]) == 0
    assert "all 4 runs are finished; nothing to submit" in capsys.readouterr().out


def flaky_command(flag_dir: Path):
    """A run command that fails on its first attempt, after writing a checkpoint, and succeeds on the next (a
    flag file per run); it prints whether it was asked to resume."""

    def command(plan, run, resume, program=None):
        flag = flag_dir / run.folder.replace("/", "_")
        ckpt = plan.output_dir / run.folder / "checkpoint.safetensors"
        code = (
            f"import pathlib, sys; p = pathlib.Path({str(flag)!r}); again = p.exists(); p.touch(); "
            f"pathlib.Path({str(ckpt)!r}).touch(); "
            f"print('attempt', 2 if again else 1, 'resume' if {resume} else 'fresh'); sys.exit(0 if again else 3)"
        )
        return [sys.executable, "-c", code]

    return command


@pytest.mark.parametrize("retries", [1, 0])
def test_a_failed_run_is_resubmitted_up_to_retries(tmp_path, monkeypatch, capsys, retries):
    spec = write_spec(tmp_path, seeds=1, schedulers={"fixed": CELLS["fixed"]})
    body = yaml.safe_load(spec.read_text())
    body["slurm"]["retries"] = retries
    spec.write_text(yaml.safe_dump(body))
    monkeypatch.setattr(sweep_state, "command", flaky_command(tmp_path))
    monkeypatch.setattr(sweep_slurm, "run_slurm", _fast(sweep_slurm.run_slurm))
    code = cli.main(["sweep", str(spec), "--launcher", "slurm"])
    captured = capsys.readouterr()
    run = tmp_path / "out" / "fixed" / "seed0"
    log = (run / "sweep_run.log").read_text()
    assert "fixed seed 0: FAILED (attempt 1" in captured.out
    if retries:
        assert code == 0 and "resubmitted" in captured.out and "all 1 runs finished" in captured.out
        assert "attempt 1 fresh" in log and "attempt 2 resume" in log  # the retry resumes from the checkpoint
        assert log.index("attempt 1") < log.index("attempt 2") and "sweep: resume" in log
        assert json.loads((run / "done.json").read_text())["attempt"] == 2
        assert not (run / "sweep_error.log").exists()
    else:
        assert code == 1 and "1 of 1 runs failed" in captured.err and "exit 3" in captured.err
        assert "attempt 2" not in log and not (run / "done.json").exists()
        assert (run / "sweep_error.log").read_text().startswith("job ")


def _fast(run_slurm):
    def faster(launch, mark_command, poll_seconds=None):
        return run_slurm(launch, mark_command, poll_seconds=0.2)

    return faster


def fake_sbatch(tmp_path: Path, monkeypatch) -> Path:
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch_script.sh"
    bin_dir.mkdir()
    tool = bin_dir / "sbatch"
    tool.write_text(f'#!/usr/bin/env bash\ncp "${{@: -1}}" {record}\necho "Submitted batch job 4242"\n')
    tool.chmod(0o755)
    (bin_dir / "srun").write_text("#!/usr/bin/env bash\nexit 1\n")  # submitit looks for srun to detect Slurm
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_slurm_array_job_is_throttled_and_carries_the_spec_options(tmp_path, monkeypatch):
    record = fake_sbatch(tmp_path, monkeypatch)
    slurm = {"cluster": "slurm", "partition": "gpu", "timeout_min": 30, "mem_gb": 12, "gpus_per_node": 1}
    spec = write_spec(tmp_path, slurm={**slurm, "additional": {"account": "proj"}, "setup": ["module load cuda"]})
    plan = load_spec(spec)
    states = {r.folder: run_state(plan, r) for r in plan.runs}
    launch = sweep_slurm.prepare(plan, states, 2, dry_run=False)
    jobs = sweep_slurm.submit(launch, launch.todo)
    script = record.read_text()
    for line in ("--array=0-3%2", "--partition=gpu", "--time=30", "--account=proj", "--gpus-per-node=1"):
        assert f"#SBATCH {line}" in script, script
    assert "#SBATCH --mem=12GB" in script and "module load cuda" in script
    assert (
        f"#SBATCH --output={tmp_path / 'out' / 'slurm_logs'}/%A_%a/%A_%a_0_log.out" in script
    )  # one log folder per task
    assert sorted(str(j.job_id) for j in jobs.values()) == [f"4242_{i}" for i in range(4)]
    recorded = json.loads((tmp_path / "out" / "slurm_jobs.json").read_text())
    assert recorded["jobs"] == {f: str(j.job_id) for f, j in jobs.items()}
    # each array task runs its own run's command: fresh, or resuming from its checkpoint
    job = jobs["lite/seed1"].submission().function
    assert job.argv()[-1] == "--overwrite" and "seed=1" in job.argv() and job.resume[-1] == "--resume"


def test_runs_held_by_earlier_jobs_are_not_submitted_twice(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, slurm={"cluster": "slurm"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "slurm_jobs.json").write_text(json.dumps({"cluster": "slurm", "jobs": {"lite/seed1": "4242_3"}}))
    monkeypatch.setattr(sweep_slurm, "active_jobs", lambda plan, ids: [i for i in ids if i == "4242_3"])

    def refuse(*args, **kwargs):
        raise AssertionError("submitted")

    monkeypatch.setattr(sweep_slurm, "submit", refuse)
    assert cli.main(["sweep", str(spec), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "still queued or running (4242_3)" in err[0] and err[0].startswith(str(spec))
    assert not (out / "sweep.json").exists()


def test_missing_submitit_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, slurm={"cluster": "slurm"})
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    assert cli.main(["sweep", str(spec), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs submitit" in err[0] and "pip install" in err[0]
    assert not (tmp_path / "out").exists()
    # a dry run needs no submitit: it prints the runs and the executor's parameters
    assert cli.main(["sweep", str(spec), "--launcher", "slurm", "--dry-run", "--workers", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "4 of 4 runs to submit (dry run: nothing submitted):"
    assert '"slurm_array_parallelism": 3' in out[-1] and not (tmp_path / "out").exists()


def test_retries_from_the_command_line_override_the_spec(tmp_path, capsys):
    from fedranklite.study import sweep

    spec = write_spec(tmp_path, slurm={"cluster": "local", "retries": 2})
    assert sweep.main(str(spec), None, "slurm", True, None) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("submitit local executor, retries 2:")
    assert sweep.main(str(spec), None, "slurm", True, None, retries=0) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("submitit local executor, retries 0:")
    assert sweep.main(str(spec), None, "slurm", True, None, retries=-1) == 2
    assert capsys.readouterr().err.strip() == f"{spec}: --retries: need 0 or more"


def test_the_local_launcher_never_imports_submitit(tmp_path):
    code = (
        "import sys\nfrom fedranklite.cli import main as cli\n"
        f"code = cli.main(['sweep', {str(write_spec(tmp_path))!r}, '--dry-run'])\n"
        "assert code == 0 and 'submitit' not in sys.modules, code\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 0, proc.stderr
