"""`fedranklite sweep`: a real tiny grid through the CLI, skipping and resuming, hostile specs, the Slurm
launcher (fake sbatch) and `compare`'s warning about runs that differ in more than the scheduler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli
from fedranklite.study import sweep
from fedranklite.study.sweep import state as sweep_state

ROOT = Path(__file__).resolve().parents[1]
CELLS = {"fixed": {"federation.scheduler.type": "fixed"}, "lite": {"federation.scheduler.type": "lite"}}


def write_spec(folder: Path, name: str = "spec", **spec) -> Path:
    base = folder / "tiny.yaml"
    if not base.exists():
        base.write_text(yaml.safe_dump(tiny_tree(folder)))
    body = {"base": "tiny.yaml", "output_dir": str(folder / name), "seeds": 3, "schedulers": CELLS, **spec}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in body.items() if v is not None}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """2 cells x 3 seeds of the tiny model, 2 rounds each, run through the command line with 2 workers."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = write_spec(folder, set={"federation.num_rounds": 2, "evaluation.target": 0.5})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "fedranklite", "sweep", str(spec), "--workers", "2"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    return spec, folder / "spec", proc


def no_subprocess(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a run was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)


def test_grid_runs_end_to_end(grid):
    spec, out, proc = grid
    assert proc.returncode == 0, proc.stderr + proc.stdout
    progress = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert len(progress) == 6 and progress[-1].startswith("[6/6]")
    assert all("final 0." in ln and "wall" in ln and "ETA" in ln for ln in progress)
    plan = json.loads((out / "sweep.json").read_text())
    assert [r["folder"] for r in plan["runs"]] == [f"{c}/seed{s}" for c in CELLS for s in range(3)]
    assert plan["reference"] == "fixed" and plan["seeds"] == [0, 1, 2]
    for run in plan["runs"]:
        folder = out / run["folder"]
        metrics = json.loads((folder / "metrics.json").read_text())
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert metrics["rounds_completed"] == 2 and (folder / "done.json").is_file()
        assert config["seed"] == run["seed"] and config["federation"]["scheduler"]["type"] == run["cell"]
        assert config["evaluation"]["target"] == 0.5
        assert Path(config["output_dir"]) / config["experiment_name"] == folder


def test_second_invocation_skips_every_finished_run(grid, monkeypatch, capsys):
    spec, out, _ = grid
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(spec), "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "6 runs, 6 already finished" in text and "all 6 runs finished" in text


def test_a_killed_run_is_resumed_from_its_checkpoint(grid, capsys):
    spec, out, _ = grid
    folder = out / "lite" / "seed1"
    (folder / "done.json").unlink()
    (folder / "metrics.json").unlink()  # killed before its summary: only the checkpoint says how far it got
    stamp = (folder / "checkpoint.safetensors").stat().st_mtime_ns
    assert cli.main(["sweep", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "1 to resume" in text and "lite seed 1 (resumed)" in text and "[6/6]" in text
    assert json.loads((folder / "done.json").read_text())["resumed"] is True
    assert json.loads((folder / "metrics.json").read_text())["rounds_completed"] == 2
    assert (folder / "checkpoint.safetensors").stat().st_mtime_ns == stamp  # continued after round 2, not restarted
    assert len((folder / "rounds.jsonl").read_text().splitlines()) == 2


def test_a_changed_spec_does_not_reuse_finished_runs(grid, monkeypatch, capsys, tmp_path):
    spec, out, _ = grid
    changed = tmp_path / "changed.yaml"
    body = yaml.safe_load(spec.read_text())
    body["base"] = str(spec.parent / body["base"])
    body["set"]["federation.num_rounds"] = 3
    changed.write_text(yaml.safe_dump(body))
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(changed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another config" in err[0] and "federation.num_rounds" in err[0]


def test_report_of_the_grid(grid, capsys):
    _, out, _ = grid
    assert cli.main(["report", str(out), "--resamples", "500"]) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "report" / "report.json").read_text())
    assert [(c["cell"], c["n"]) for c in report["cells"]] == [("fixed", 3), ("lite", 3)]
    assert report["runs"] == {"total": 6, "finished": 6, "missing": []}
    assert {p["cell"] for p in report["paired"]} == {"lite"} and all(p["n"] <= 3 for p in report["paired"])
    for name in ("report.md", "ttt.png", "curves.png"):
        assert (out / "report" / name).stat().st_size > 1000
    assert "| fixed | 3 |" in text and "| lite | 3 |" in text


def test_compare_warns_when_runs_differ_in_more_than_the_scheduler(grid, capsys):
    _, out, _ = grid
    assert cli.main(["compare", str(out / "fixed/seed0"), str(out / "lite/seed0")]) == 0
    assert "warning" not in capsys.readouterr().err  # same seed: only the scheduler (and the folder) differ
    assert cli.main(["compare", str(out / "fixed/seed0"), str(out / "lite/seed2"), str(out / "fixed/seed0")]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 1 and "lite/seed2" in warnings[0] and "seed=2 (vs 0)" in warnings[0]
    assert "output_dir" not in warnings[0] and "scheduler" not in warnings[0].split(":", 1)[1].split("scheduler:")[1]
    assert "FedRankLite runs" in captured.out


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"sedes": 3}, "unknown key 'sedes'"),
        ({"base": "missing.yaml"}, "base: "),
        ({"schedulers": {"lite": {"federation.num_rounds": "many"}}}, "cell lite: --set: federation.num_rounds"),
        ({"schedulers": {}}, "schedulers: need at least one"),
        ({"seeds": 0}, "seeds: 0"),
        ({"output_dir": ""}, "output_dir: must be a path"),
        ({"schedulers": {"lite": {"seed": 3}}}, "schedulers.lite: seed: set by the sweep"),
        ({"axes": {"deadline.seconds": []}}, "axes.deadline.seconds"),
        ({"reference": "cvx"}, "reference: 'cvx'"),
        ({"axes": {"deadline.seconds": [1, "1"]}}, "deadline.seconds=1 and deadline.seconds='1' make the same"),
        ({"axes": {"evaluation.metric": ["a/b", "a_b"]}}, "make the same run folder fixed/evaluation.metric=a_b/"),
        ({"axes": {"deadline.seconds": [0.1, "0.1"]}}, "make the same run folder fixed/deadline.seconds=0.1/"),
        ({"seeds": [1, 1]}, "seeds: seeds must be distinct"),
        ({"seeds": "many"}, "seeds: 'many': an int n >= 1"),
        ({"slurm": ["gpu"]}, "slurm: must be a mapping"),
        ({"slurm": {"partitoin": "gpu"}}, "slurm: unknown key 'partitoin'"),
        ({"slurm": {"cluster": "pbs"}}, "slurm.cluster: 'pbs': slurm or local"),
        ({"slurm": {"retries": -1}}, "slurm.retries: -1: an integer >= 0"),
        ({"slurm": {"timeout_min": True}}, "slurm.timeout_min: True"),
        ({"slurm": {"mem_gb": "16G"}}, "slurm.mem_gb: '16G'"),
        ({"slurm": {"setup": "module load cuda"}}, "slurm.setup: must be a list"),
        ({"slurm": {"additional": {"account": ["a"]}}}, "slurm.additional: must map"),
    ],
)
def test_hostile_specs_are_one_line_and_start_nothing(tmp_path, monkeypatch, capsys, change, expected):
    spec = write_spec(tmp_path, **change)
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and err[0].startswith(str(spec)), err
    assert not (tmp_path / "spec").exists()


HUGE = {
    "seeds": ({"seeds": 10**9}, [], "seeds: the plan would hold 2,000,000,000 runs (2 cells x 1 axis points"),
    "axes": (
        {"axes": {f"x.k{i}": list(range(20)) for i in range(6)}},
        [],
        "axes.x.k0: the plan would hold 384,000,000 runs (2 cells x 64,000,000 axis points x 3 seeds)",
    ),
    "seed_list": ({"seeds": list(range(60_000))}, [], "seeds: the plan would hold 120,000 runs"),
    "cli_seeds": ({}, ["--seeds", str(10**9)], "--seeds: the plan would hold 2,000,000,000 runs"),
}


def test_a_huge_plan_is_refused_before_it_is_built(tmp_path):
    """seeds: 10**9 or axes whose product is 64 million: refused in one line naming the spec and the key, in a
    process whose address space is capped 1 GiB above what the imports take (building the plan would not fit)."""
    specs = {}
    for name, (change, _, _) in HUGE.items():
        specs[name] = write_spec(tmp_path, name, **change)
    script = (
        "import resource, sys\n"
        "from fedranklite.cli import main as cli\n"
        "vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:')][0]\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))\n"
        "for spec, extra in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    print('==', file=sys.stderr, flush=True)\n"
        "    assert cli.main(['sweep', spec, *extra.split()]) == 2\n"
    )
    args = [x for name in HUGE for x in (str(specs[name]), " ".join(HUGE[name][1]))]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = proc.stderr.split("==\n")[1:]
    for (name, (_, _, expected)), answer in zip(HUGE.items(), answers):
        lines = answer.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{specs[name]}: ") and expected in lines[0], (name, lines)
        assert len(lines[0]) < 400  # a list of seeds is not echoed back
    assert len(answers) == len(HUGE)
    assert not any((tmp_path / name).exists() for name in HUGE)


def test_a_plan_at_the_cap_is_built_and_one_above_it_is_not(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep.spec, "MAX_RUNS", 6)
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(write_spec(tmp_path, seeds=3)), "--dry-run"]) == 0  # 2 cells x 3 seeds
    assert len(capsys.readouterr().out.splitlines()) == 6
    assert cli.main(["sweep", str(write_spec(tmp_path, seeds=3)), "--dry-run", "--seeds", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds: the plan would hold 8 runs" in err[0] and "more than the 6 a sweep" in err[0]
    assert sweep.plan_size(3, [2, 5], 10) == 300 and sweep.plan_size(1, [], 1) == 1


def test_duplicate_cell_names_are_refused(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("schedulers:", "schedulers:\n  lite: {federation.scheduler.type: cvx}", 1))
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "duplicate key 'lite' on lines" in err[0]


def test_axes_make_one_folder_per_value(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, seeds=[4, 7], axes={"deadline.seconds": [5, 7.5]}, reference="lite")
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(spec), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(ln.split()[0] == "new" for ln in lines)
    assert "lite/deadline.seconds=7.5/seed7:" in lines[-1] and "--set deadline.seconds=7.5" in lines[-1]
    assert not (tmp_path / "spec").exists()  # a local dry run writes nothing


def fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def test_slurm_script_runs_one_config_with_its_arguments_as_words(tmp_path):
    """`sbatch scripts/run_slurm.sh CONFIG [--set ...]`: every argument reaches `fedranklite run` as one word,
    never evaluated (a command substitution, a glob, spaces stay literal); a runs list (@FILE) is refused."""
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "fedranklite", 'printf "%s\\n" "$@"\n')
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(tmp_path)}
    hostile = "configs/my dir/$(touch pwned)*.yaml"
    (tmp_path / "configs" / "my dir").mkdir(parents=True)
    (tmp_path / "configs" / "my dir" / "x.yaml").write_text("")

    def job(*args: str, **extra) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "scripts" / "run_slurm.sh"), *args],
            capture_output=True,
            text=True,
            env={**env, **extra},
            cwd=tmp_path,
            timeout=30,
        )

    proc = job(hostile, "--set", "x=a b; $(touch pwned2)", "--resume")
    assert proc.returncode == 0, proc.stderr
    words = ["run", "--config", hostile, "--quiet", "--set", "x=a b; $(touch pwned2)", "--resume"]
    assert proc.stdout.splitlines() == words
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    # an array over seeds: the task id is the seed unless the arguments set one
    got = job("c.yaml", SLURM_ARRAY_TASK_ID="3", FEDRANKLITE_SEED_FROM_ARRAY="1").stdout.splitlines()
    assert got == ["run", "--config", "c.yaml", "--quiet", "--set", "seed=3"]
    got = job("c.yaml", "--set", "seed=7", SLURM_ARRAY_TASK_ID="3", FEDRANKLITE_SEED_FROM_ARRAY="1")
    assert got.stdout.splitlines() == ["run", "--config", "c.yaml", "--quiet", "--set", "seed=7"]
    (tmp_path / "runs.txt").write_text("fedranklite run --config $(touch pwned3)\n")
    for args in ([f"@{tmp_path / 'runs.txt'}"], [], ["--set", "x=1"]):
        proc = job(*args, SLURM_ARRAY_TASK_ID="1")
        assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "fedranklite sweep SPEC.yaml --launcher slurm" in job(f"@{tmp_path / 'runs.txt'}").stderr
    assert not (tmp_path / "pwned3").exists()


def test_value_text_round_trips_through_set():
    from fedranklite.config.files import parse_override

    for value in [60, 7.5, 1e-05, "fixed", "60", "a: b", True, None, [1, 2], {"type": "cvx", "r_bar": 4}, "/x y/z"]:
        assert parse_override(f"k={sweep.value_text(value)}")[1] == value


def test_a_failed_run_is_logged_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, seeds=2)
    real = sweep_state.command

    def command(plan, run, resume, program=None):  # the fixed cell's seed 0 crashes, every other run succeeds
        code = "import sys; print('boom at start', file=sys.stderr); sys.exit(3)" if run.folder == "fixed/seed0" else ""
        return [sys.executable, "-c", code] if program is None else real(plan, run, resume, program)

    monkeypatch.setattr(sweep_state, "command", command)
    assert cli.main(["sweep", str(spec), "--workers", "2"]) == 1
    captured = capsys.readouterr()
    assert "[4/4]" in captured.out and "fixed seed 0: FAILED (exit 3" in captured.out
    assert "1 of 4 runs failed" in captured.err and "fixed/seed0" in captured.err
    log = (tmp_path / "spec" / "fixed" / "seed0" / "sweep_error.log").read_text()
    assert log.startswith("exit 3: ") and "boom at start" in log
    assert not (tmp_path / "spec" / "fixed" / "seed0" / "done.json").exists()
    assert all((tmp_path / "spec" / f / "done.json").exists() for f in ("fixed/seed1", "lite/seed0", "lite/seed1"))


@pytest.mark.xfail(
    strict=False, reason="races with process start-up on a loaded 2-core machine (seen in CI); to be made deterministic"
)
def test_ctrl_c_stops_the_children(tmp_path):
    spec = write_spec(tmp_path, seeds=1, set={"federation.num_rounds": 50})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedranklite", "sweep", str(spec), "--workers", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    logs = [tmp_path / "spec" / c / "seed0" / "sweep_run.log" for c in CELLS]
    deadline = time.monotonic() + 60
    while not all(p.exists() for p in logs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(p.exists() for p in logs), "the runs never started"
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the sweep (its children have their own sessions)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: stopped 2 running run(s)" in err, err
    marker = str(tmp_path / "spec")
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                alive.append(cmdline.parent.name)
        except OSError:
            continue
    assert not alive, f"children left running: {alive}"
    assert not any((tmp_path / "spec" / c / "seed0" / "done.json").exists() for c in CELLS)


def copy_of(out: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(out, where)
    return where


def spec_for(spec: Path, where: Path, output_dir: Path, **changes) -> Path:
    body = yaml.safe_load(spec.read_text())
    body["base"] = str(spec.parent / body["base"])
    body["output_dir"] = str(output_dir)
    body.update(changes)
    path = where / f"{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_a_moved_sweep_folder_is_not_stale(grid, monkeypatch, capsys, tmp_path):
    spec, out, _ = grid
    moved = copy_of(out, tmp_path / "moved")  # its config.yaml files still name the old output_dir
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(spec_for(spec, tmp_path, moved))]) == 0
    assert "6 runs, 6 already finished" in capsys.readouterr().out


def test_a_run_to_resume_with_another_config_is_refused_up_front(grid, monkeypatch, capsys, tmp_path):
    import shutil

    spec, out, _ = grid
    copy = copy_of(out, tmp_path / "copy")
    for seed in (0, 2):
        shutil.rmtree(copy / "lite" / f"seed{seed}")  # new runs: nothing to compare
    for name in ("done.json", "metrics.json"):
        (copy / "lite" / "seed1" / name).unlink()  # a killed run: resumed from its checkpoint
    lite = {"federation.scheduler.type": "lite", "federation.scheduler.r_bar": 3}
    changed = spec_for(spec, tmp_path, copy, schedulers={**CELLS, "lite": lite})
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(changed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run to resume lite/seed1" in err[0] and "federation.scheduler.r_bar" in err[0], err
    keys = err[0].split("another config (")[1].split(")")[0]
    assert keys == "federation.scheduler.r_bar"  # not output_dir, experiment_name: the copy lives elsewhere


def test_a_spec_that_would_drop_finished_runs_from_sweep_json_is_refused(grid, monkeypatch, capsys, tmp_path):
    spec, out, _ = grid
    copy = copy_of(out, tmp_path / "copy")
    before = (copy / "sweep.json").read_text()
    no_subprocess(monkeypatch)
    fewer = spec_for(spec, tmp_path, copy, seeds=2)  # seed 2 of both cells is finished
    for extra in ([], ["--dry-run"], ["--launcher", "slurm", "--dry-run"]):
        assert cli.main(["sweep", str(fewer), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "lists 2 finished run(s) this spec does not make" in err[0], err
        assert "fixed/seed2" in err[0] and "new output_dir" in err[0]
    assert (copy / "sweep.json").read_text() == before
    # runs it lists that never finished may go
    for cell in CELLS:
        for name in ("done.json", "metrics.json"):
            (copy / cell / "seed2" / name).unlink()
    assert cli.main(["sweep", str(fewer), "--dry-run"]) == 0
    assert cli.main(["sweep", str(spec_for(spec, tmp_path, copy, seeds=4)), "--dry-run"]) == 0  # a bigger plan


def test_mark_only_marks_finished_runs_and_starts_nothing(grid, monkeypatch, capsys, tmp_path):
    spec, out, _ = grid
    copy = copy_of(out, tmp_path / "copy")
    (copy / "fixed" / "seed1" / "done.json").unlink()  # finished as a Slurm task leaves it: metrics.json only
    (copy / "lite" / "seed2" / "done.json").unlink()
    for name in ("done.json", "metrics.json"):
        (copy / "lite" / "seed0" / name).unlink()  # still running (or killed): not finished
    path = spec_for(spec, tmp_path, copy)
    no_subprocess(monkeypatch)
    assert cli.main(["sweep", str(path), "--mark-only"]) == 0
    text = capsys.readouterr().out
    assert "marked 2 run(s) finished from metrics.json; 5 of 6 runs finished, 1 not (yet)" in text
    assert json.loads((copy / "fixed" / "seed1" / "done.json").read_text())["from"] == "metrics.json"
    assert (copy / "lite" / "seed2" / "done.json").is_file()
    assert not (copy / "lite" / "seed0" / "done.json").exists()


def test_a_resumed_run_keeps_its_earlier_log(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, seeds=1, schedulers={"fixed": CELLS["fixed"]})
    flag = tmp_path / "second"

    def command(plan, run, resume, program=None):  # fails the first time, succeeds the second
        code = (
            f"import pathlib, sys; p = pathlib.Path({str(flag)!r}); print('attempt', 2 if p.exists() else 1); "
            "sys.exit(0 if p.exists() else 3)"
        )
        return [sys.executable, "-c", code]

    monkeypatch.setattr(sweep_state, "command", command)
    assert cli.main(["sweep", str(spec)]) == 1
    flag.write_text("")
    assert cli.main(["sweep", str(spec)]) == 0
    log = (tmp_path / "spec" / "fixed" / "seed0" / "sweep_run.log").read_text()
    assert "attempt 1" in log and "attempt 2" in log and log.index("attempt 1") < log.index("attempt 2")
    assert log.count("sweep: start") == 2


@pytest.mark.xfail(
    strict=False, reason="races with process start-up on a loaded 2-core machine (seen in CI); to be made deterministic"
)
def test_a_second_ctrl_c_during_the_stop_wait_prints_no_traceback(tmp_path):
    spec = write_spec(tmp_path, seeds=1)
    started = tmp_path / "started"
    driver = tmp_path / "driver.py"
    # runs that ignore SIGTERM, so the sweep's stop waits its 10 s for them, and a second Ctrl-C comes then
    child = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(started)!r} + str(os.getpid()), 'w').close(); time.sleep(120)"
    )
    driver.write_text(
        "import sys\n"
        "from fedranklite.cli import main as cli\nfrom fedranklite.study.sweep import state\n"
        f"state.command = lambda plan, run, resume, program=None: [sys.executable, '-c', {child!r}]\n"
        f"sys.exit(cli.main(['sweep', {str(spec)!r}, '--workers', '2']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, str(driver)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("started*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int(p.name.removeprefix("started")) for p in tmp_path.glob("started*")]
    assert len(pids) == 2, "the runs never started"
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None  # still waiting for the children that ignore SIGTERM
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted: stopped 2" in err, err
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


VERDICT_SPECS = sorted((ROOT / "experiments" / "three_settings_verdict" / "sweeps").glob("*.yaml"))


def test_the_verdict_specs_are_found():
    assert len(VERDICT_SPECS) == 3  # the parametrised test below would pass silently over none


@pytest.mark.parametrize("spec", VERDICT_SPECS, ids=lambda p: p.stem)
def test_verdict_specs_compare_schedulers_only(spec):
    """Each verdict spec loads, runs 10 paired seeds against `lite`, and its cells differ from the reference
    only in the scheduler's settings: anything else (data, tiers, budget) would make the comparison unfair."""
    plan = sweep.load_spec(spec)
    assert plan.reference == "lite" and plan.seeds == list(range(10))

    def setup(run) -> dict:
        cfg = {k: v for k, v in run.config.items() if k not in ("output_dir", "experiment_name")}
        cfg["federation"] = {k: v for k, v in cfg["federation"].items() if k != "scheduler"}
        return cfg

    by_cell_seed = {(run.cell, run.seed): run for run in plan.runs}
    assert len(by_cell_seed) == len(plan.cells) * 10
    for (cell, seed), run in by_cell_seed.items():
        assert setup(run) == setup(by_cell_seed[("lite", seed)]), f"{cell} seed {seed} differs beyond the scheduler"


@pytest.mark.parametrize("bad", ["x", "-1", ","])
def test_bench_glue_rejects_a_bad_smollm2_seed_list(bad, tmp_path):
    """`bench_glue.py --smollm2-seeds` with no seed, a negative one or a word: one argparse line, exit 2, no
    results file written."""
    out = tmp_path / "glue.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_glue.py"), f"--smollm2-seeds={bad}", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("bench_glue.py: error: --smollm2-seeds:")
    assert not out.exists()


def test_set_on_the_command_line_reaches_every_run_after_the_spec_set(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, seeds=2, set={"federation.num_rounds": 2})
    no_subprocess(monkeypatch)
    args = ["sweep", str(spec), "--dry-run", "--set", "federation.num_rounds=5", "--set", "training.lr=0.01"]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all("--set federation.num_rounds=5" in ln and "training.lr=0.01" in ln for ln in lines)
    assert not any("federation.num_rounds=2" in ln for ln in lines)  # the command line wins over the spec's set
    for bad, expected in (("seed=3", "--set: seed: set by the sweep"), ("nokey", "expected KEY=VALUE")):
        assert cli.main(["sweep", str(spec), "--dry-run", "--set", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_a_second_sweep_into_a_folder_in_use_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """Another process holds the sweep's output folder (a sweep of the same spec still running): refused, nothing
    written there; once that process is gone, the sweep starts."""
    spec = write_spec(tmp_path, seeds=1)
    out = tmp_path / "spec"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from fedranklite.run.folder_lock import acquire; acquire(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        no_subprocess(monkeypatch)
        assert cli.main(["sweep", str(spec)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by another run" in err[0] and f"process {holder.pid}" in err[0]
        assert not (out / "sweep.json").exists()
    finally:
        holder.kill()
        holder.wait()
