"""Fault injection: real runs in subprocesses, interrupted or starved, and the input faults of each class.

After every fault, either the run resumes to results bit-identical to an uninterrupted run, or it stops with
one line (and exit 2 or 3); in both cases no file in the results folder is left half-written: every JSON file
parses, every line of rounds.jsonl is a whole record, the checkpoint loads.

- interruptions: SIGKILL and SIGTERM at seeded random moments of a run;
- a full disk, simulated by RLIMIT_FSIZE (SIGXFSZ ignored, so a write fails with EFBIG as with ENOSPC);
- a read-only results folder, before a resume and in the middle of a run;
- two runs started together into one folder;
- the input classes: a data file changed before --resume, labels mixing ids and names, a trace listing some
  clients, 50 MB of garbage as a trace, a checkpoint of an earlier (pickle-based) version.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_tree

from fedranklite.run.checkpoint import CHECKPOINT_NAME, load_checkpoint
from fedranklite.run.folder_lock import LOCK_NAME

pytestmark = pytest.mark.slow

MEASURED = {"wall_seconds", "throughput", "peak_memory_mb", "wall_time_total"}
ROUNDS = 5


def deterministic(obj):
    if isinstance(obj, dict):
        return {k: deterministic(v) for k, v in obj.items() if k not in MEASURED}
    if isinstance(obj, list):
        return [deterministic(v) for v in obj]
    return obj


def write_config(where: Path, out: Path, **sections) -> Path:
    """Rounds of a second or more (so a kill lands inside one), clients with hidden deviations and availability
    (so telemetry and lost clients are resumed too), the deterministic analytic time model."""
    hetero = {"speed_sigma": 0.3, "jitter_sigma": 0.1, "availability": 0.8}
    tree = tiny_tree(
        where,
        experiment_name="run",
        output_dir=str(out),
        federation={"num_rounds": ROUNDS, "clients_per_round": 3},
        training={"max_local_steps": 30, "batch_size": 8},
        data={"embedded_train_size": 600},
        tiers={"fast": hetero, "slow": hetero},
    )
    from fedranklite.config.files import deep_merge

    tree = deep_merge(tree, sections)
    where.mkdir(parents=True, exist_ok=True)
    path = where / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fedranklite", "run", "-q", "--config", str(config), *args]


def run(config: Path, *args: str, preexec_fn=None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(config, *args), capture_output=True, text=True, timeout=timeout, env=env(), preexec_fn=preexec_fn
    )


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return messages(proc.stderr)


def messages(stderr: str) -> list[str]:
    """stderr without the log lines (they start with a date), the run's opening lines (`run: ...` and the
    indented lines under it) and blank lines: what is left is what the run said about a fault."""
    return [
        ln for ln in stderr.splitlines() if ln.strip() and not ln[:4].isdigit() and not ln.startswith(("run: ", " "))
    ]


def assert_whole(folder: Path, temporaries_allowed: bool = False) -> int:
    """Every result file in `folder` is whole; returns the round the checkpoint holds (0: none)."""
    for path in folder.iterdir():
        if path.name.endswith(".tmp"):
            assert temporaries_allowed, f"{path.name} left behind"
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict)
    lines = (folder / "rounds.jsonl").read_text().splitlines() if (folder / "rounds.jsonl").exists() else []
    rounds = [json.loads(line)["round"] for line in lines]  # a torn line fails here
    assert rounds == list(range(1, len(rounds) + 1)), rounds
    if (folder / CHECKPOINT_NAME).exists():
        return load_checkpoint(folder / CHECKPOINT_NAME)["round_idx"]
    return 0


def assert_same_results(ref: Path, out: Path) -> None:
    a, b = load_checkpoint(ref / CHECKPOINT_NAME), load_checkpoint(out / CHECKPOINT_NAME)
    assert a["round_idx"] == b["round_idx"] == ROUNDS
    for name, tensor in a["global_state"].items():
        assert torch.equal(tensor, b["global_state"][name]), name
    assert a["scheduler"] == b["scheduler"] and a["telemetry"] == b["telemetry"]
    assert deterministic(json.loads((ref / "metrics.json").read_text())) == deterministic(
        json.loads((out / "metrics.json").read_text())
    )
    ref_rounds = [json.loads(x) for x in (ref / "rounds.jsonl").read_text().splitlines()]
    new_rounds = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]
    assert deterministic(ref_rounds) == deterministic(new_rounds)
    assert not (out / LOCK_NAME).exists() and not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run's results folder."""
    base = tmp_path_factory.mktemp("reference")
    proc = run(write_config(base, base / "results"))
    assert proc.returncode == 0, proc.stderr
    return base / "results" / "run"


def wait_for_rounds(folder: Path, n: int, child: subprocess.Popen, limit: float = 300) -> None:
    end = time.time() + limit
    while time.time() < end and child.poll() is None:
        path = folder / "rounds.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)


def resume_or_restart(config: Path, folder: Path) -> subprocess.CompletedProcess:
    """--resume; when the fault came before the first checkpoint, that is one line, and a fresh run follows."""
    proc = run(config, "--resume")
    if not (folder / CHECKPOINT_NAME).exists():
        assert proc.returncode == 2 and len(error_lines(proc)) == 1 and "no checkpoint" in proc.stderr, proc.stderr
        proc = run(config, "--overwrite")
    return proc


# ---------------------------------------------------------------------------------------------- interruptions
@pytest.mark.parametrize("sig, seed", [(signal.SIGKILL, 1), (signal.SIGKILL, 2), (signal.SIGTERM, 3)])
def test_killed_at_a_random_moment_resumes_bit_identical(reference, tmp_path, sig, seed):
    rng = random.Random(seed)
    config = write_config(tmp_path, tmp_path / "results")
    folder = tmp_path / "results" / "run"
    child = subprocess.Popen(command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    wait_for_rounds(folder, rng.randint(0, ROUNDS - 2), child)
    time.sleep(rng.uniform(0.0, 1.5))  # anywhere in the next round: training, writing, checkpointing
    assert child.poll() is None, "the run ended before the fault: make rounds longer"
    child.send_signal(sig)
    child.wait(timeout=60)
    assert child.returncode == -sig
    assert_whole(folder, temporaries_allowed=True)  # a killed atomic writer leaves only its temporary file
    assert folder_free(folder)
    proc = resume_or_restart(config, folder)
    assert proc.returncode == 0, proc.stderr
    assert_same_results(reference, folder)


def folder_free(folder: Path) -> bool:
    from fedranklite.run.folder_lock import holder

    return holder(folder) is None  # the kernel freed the dead run's lock, whatever file it left


# ---------------------------------------------------------------------------------------------- a full disk
def file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def test_a_full_disk_at_the_checkpoint_stops_with_one_line_then_resumes(reference, tmp_path):
    config = write_config(tmp_path, tmp_path / "results")
    folder = tmp_path / "results" / "run"
    limit = (reference / CHECKPOINT_NAME).stat().st_size - 1  # the checkpoint of some round no longer fits
    proc = run(config, preexec_fn=file_size_limit(limit))
    lines = error_lines(proc)
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert "cannot write" in lines[0] and CHECKPOINT_NAME in lines[0] and "File too large" in lines[0], lines[0]
    saved = assert_whole(folder)
    assert 1 <= saved < ROUNDS and f"its checkpoint holds round {saved}" in lines[0]
    assert not (folder / LOCK_NAME).exists()
    proc = run(config, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert_same_results(reference, folder)


def test_a_full_disk_in_the_round_log_leaves_whole_lines(reference, tmp_path):
    """No checkpoints and no summary until the end: the round log is the file that fills the disk, mid-line."""
    sections = {"metrics": {"checkpoint": False, "summary_every": 1000}}
    config = write_config(tmp_path, tmp_path / "results", **sections)
    folder = tmp_path / "results" / "run"
    ref_lines = (reference / "rounds.jsonl").read_bytes().splitlines(keepends=True)
    limit = len(b"".join(ref_lines[:2])) + len(ref_lines[2]) // 2
    proc = run(config, preexec_fn=file_size_limit(limit))
    lines = error_lines(proc)
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert "stopped after round 3: cannot write" in lines[0] and "rounds.jsonl" in lines[0], lines[0]
    assert "rerun" in lines[0]
    assert_whole(folder)
    got = [json.loads(x) for x in (folder / "rounds.jsonl").read_text().splitlines()]
    assert deterministic(got) == deterministic([json.loads(x) for x in ref_lines[:2]])  # round 3's half line is gone


# ---------------------------------------------------------------------------------------------- a read-only folder
def make_read_only(folder: Path, on: bool) -> None:
    """Nothing can be created or renamed in `folder` (root ignores permissions: the immutable flag then)."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: a read-only folder cannot be made")
        done = subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr is not supported here: {done.stderr.decode().strip()}")
    else:
        folder.chmod(0o555 if on else 0o755)


def test_a_read_only_folder_is_refused_before_a_resume(reference, tmp_path):
    shutil.copytree(reference, tmp_path / "results" / "run")
    folder = tmp_path / "results" / "run"
    config = write_config(tmp_path, tmp_path / "results", federation={"num_rounds": ROUNDS + 1})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    make_read_only(folder, True)
    try:
        proc = run(config, "--resume")
    finally:
        make_read_only(folder, False)
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"output_dir: cannot write the results to {folder}" in lines[0], lines[0]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_folder_made_read_only_mid_run_stops_with_one_line_then_resumes(reference, tmp_path):
    config = write_config(tmp_path, tmp_path / "results")
    folder = tmp_path / "results" / "run"
    child = subprocess.Popen(command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(), text=True)
    wait_for_rounds(folder, 2, child)
    make_read_only(folder, True)
    try:
        _, err = child.communicate(timeout=300)
    finally:
        make_read_only(folder, False)
    lines = messages(err)
    assert child.returncode == 3 and len(lines) == 1, err
    assert "cannot write" in lines[0] and "continue with --resume" in lines[0], lines[0]
    # a temporary file whose writer could neither rename nor remove it in the read-only folder may be left (never
    # read; the next start removes it); every result file is whole
    assert assert_whole(folder, temporaries_allowed=True) >= 1  # round 2, or round 1 if caught between the two
    proc = run(config, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert_same_results(reference, folder)


# ---------------------------------------------------------------------------------------------- one writer
def test_two_runs_started_together_one_writes_the_other_is_refused(reference, tmp_path):
    config = write_config(tmp_path, tmp_path / "results")
    folder = tmp_path / "results" / "run"
    procs = [
        subprocess.Popen(command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(), text=True)
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], errs
    loser = next(i for i, p in enumerate(procs) if p.returncode == 2)
    lines = messages(errs[loser])
    assert len(lines) == 1 and f"{folder} is in use by another run (process {procs[1 - loser].pid}" in lines[0], lines
    assert_same_results(reference, folder)


# ---------------------------------------------------------------------------------------------- input faults
def test_resume_after_the_training_file_changed_is_one_line(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text(
        "text,label\n" + "".join(f"film {i} was {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(80))
    )
    config = write_config(tmp_path, tmp_path / "results", data={"source": "files", "train_file": str(train)})
    config_text = yaml.safe_load(config.read_text())
    config_text["federation"]["num_rounds"] = 1
    config.write_text(yaml.safe_dump(config_text))
    assert run(config).returncode == 0
    folder = tmp_path / "results" / "run"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    train.write_text(train.read_text().replace("film 7 ", "film 8 "))
    config_text["federation"]["num_rounds"] = 2
    config.write_text(yaml.safe_dump(config_text))
    proc = run(config, "--resume")
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "changed since the checkpoint: data (" in lines[0] and "train_file:" in lines[0], lines[0]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def _mixed_labels(tmp: Path) -> dict:
    path = tmp / "train.csv"
    path.write_text("text,label\n" + "".join(f"a film {i},{['0', '1', 'neg', 'pos'][i % 4]}\n" for i in range(80)))
    return {"data": {"source": "files", "train_file": str(path)}}


def _partial_trace(tmp: Path) -> dict:
    path = tmp / "trace.csv"
    path.write_text("cid,compute_factor\n0,1.0\n2,0.5\n")
    return {"federation": {"client_trace": str(path)}}


def _garbage_trace(tmp: Path) -> dict:
    path = tmp / "trace.csv"
    with open(path, "wb") as fh:
        fh.write(random.Random(0).randbytes(2**20) * 50)  # 50 MB
    return {"federation": {"client_trace": str(path)}}


def _small_garbage_trace(tmp: Path) -> dict:
    path = tmp / "trace.jsonl"
    path.write_bytes(random.Random(0).randbytes(5000))
    return {"federation": {"client_trace": str(path)}}


@pytest.mark.parametrize(
    "make, expect",
    [
        (_mixed_labels, "column 'label' mixes integer labels (0, 1) and label names ('neg', 'pos')"),
        (_partial_trace, "trace.csv: no row for client(s) 1, 3; a trace lists every client"),
        (_garbage_trace, "trace.csv: 52,428,800 bytes; a client trace is at most 16 MiB"),
        (_small_garbage_trace, "trace.jsonl: line "),
    ],
    ids=["labels_mixed", "trace_partial", "trace_50mb_garbage", "trace_garbage"],
)
def test_bad_inputs_stop_with_one_line_naming_the_file(tmp_path, make, expect):
    config = write_config(tmp_path, tmp_path / "results", **make(tmp_path))
    proc = run(config)
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert expect in lines[0] and "Traceback" not in proc.stderr, lines[0]
    assert not (tmp_path / "results" / "run").exists()  # nothing was written


def test_a_checkpoint_of_an_earlier_version_says_to_rerun(reference, tmp_path):
    folder = tmp_path / "results" / "run"
    shutil.copytree(reference, folder)
    (folder / CHECKPOINT_NAME).unlink()
    torch.save({"format_version": 2, "meta": "{}"}, folder / "checkpoint.pt")
    proc = run(write_config(tmp_path, tmp_path / "results"), "--resume")
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "checkpoint.pt: a checkpoint of an earlier FedRankLite version" in lines[0] and "rerun" in lines[0]
