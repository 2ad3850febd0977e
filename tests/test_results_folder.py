"""What a run does with its results folder (issue 15, items 1 and 2): --overwrite and --new-folder, folders the
sweep made, a copied folder that resumes, stale temporary files, and the checkpoint's own round trip."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli
from fedranklite.config.schema import unsafe_name
from fedranklite.run import folder_lock
from fedranklite.run.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    ResumeError,
    config_differences,
    list_keys,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from fedranklite.run.outfolder import OutputFolderError, free_name, prepare_results_folder

ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, **sections) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(folder, federation={"num_rounds": 1}, **sections)))
    return path


def run(*args) -> int:
    root = logging.getLogger()
    handlers = root.handlers[:]
    root.handlers[:] = []  # main's basicConfig logs to the current test's stderr
    try:
        return cli.main(["run", *args])
    finally:
        root.handlers[:] = handlers


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("finished")
    assert run("--config", str(write_config(base)), "--quiet") == 0
    return base / "results"


def copy_of(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "results")
    return write_config(tmp_path)


def test_overwrite_replaces_the_old_results(finished, tmp_path):
    config = copy_of(finished, tmp_path)
    folder = tmp_path / "results" / "tiny"
    (folder / "metrics.json").write_text('{"old": true}')
    assert run("--config", str(config), "--quiet", "--overwrite") == 0
    assert json.loads((folder / "metrics.json").read_text())["rounds_completed"] == 1
    assert load_checkpoint(folder / CHECKPOINT_NAME)["round_idx"] == 1


def test_new_folder_picks_the_next_free_suffix_and_leaves_the_old_run(finished, tmp_path, capsys):
    config = copy_of(finished, tmp_path)
    results = tmp_path / "results"
    before = (results / "tiny" / "metrics.json").read_bytes()
    assert run("--config", str(config), "--quiet", "--new-folder") == 0
    assert "writes to" in capsys.readouterr().err and "tiny-2" in str(list(results.iterdir()))
    assert run("--config", str(config), "--quiet", "--new-folder") == 0
    assert (results / "tiny" / "metrics.json").read_bytes() == before
    for name in ("tiny-2", "tiny-3"):
        metrics = json.loads((results / name / "metrics.json").read_text())
        assert metrics["experiment_name"] == name and metrics["rounds_completed"] == 1


def test_new_folder_without_earlier_results_keeps_the_name(tmp_path):
    assert run("--config", str(write_config(tmp_path)), "--quiet", "--new-folder") == 0
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["tiny"]


def test_resume_overwrite_and_new_folder_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run("--config", str(write_config(tmp_path)), "--resume", "--overwrite")
    assert stop.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize(
    "files",
    [[], ["sweep_run.log"], ["sweep_run.log", "sweep_error.log"], ["done.json"], ["config.yaml", "sweep_run.log"]],
)
def test_a_folder_without_results_is_fresh(tmp_path, files):
    """A run folder the sweep made (its log, an error log, a done marker) but no results is accepted as fresh."""
    folder = tmp_path / "results" / "tiny"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text("x\n")
    assert run("--config", str(write_config(tmp_path)), "--quiet") == 0
    assert json.loads((folder / "metrics.json").read_text())["rounds_completed"] == 1
    for name in files:
        if name != "config.yaml":
            assert (folder / name).read_text() == "x\n"


def test_a_sweep_folder_killed_before_its_first_checkpoint_starts_afresh(tmp_path):
    """The sweep starts a run afresh (no --resume) in a folder with its log, a round log and no checkpoint
    (killed between the round and its checkpoint): that folder is the sweep's to restart."""
    folder = tmp_path / "results" / "tiny"
    folder.mkdir(parents=True)
    (folder / "sweep_run.log").write_text("== sweep: start\n")
    (folder / "rounds.jsonl").write_text('{"round": 1}\n')
    assert run("--config", str(write_config(tmp_path)), "--quiet") == 0
    assert json.loads((folder / "metrics.json").read_text())["rounds_completed"] == 1


def test_a_copied_results_folder_resumes_and_stale_temporaries_are_removed(finished, tmp_path):
    """output_dir is left out of the comparison: a folder copied elsewhere resumes; the temporary files a
    killed writer left are removed when the run starts."""
    shutil.copytree(finished, tmp_path / "moved")
    config = write_config(tmp_path, output_dir=str(tmp_path / "moved"))
    folder = tmp_path / "moved" / "tiny"
    stale = [
        folder / f".{CHECKPOINT_NAME}.abc123.tmp",
        folder / ".checkpoint.pt.abc.tmp",
        folder / ".metrics.json.x1.tmp",
        folder / ".rounds.jsonl.y.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half a file")
    other = folder / ".unrelated.tmp"
    other.write_text("not ours")
    assert run("--config", str(config), "--quiet", "--resume") == 0
    assert not any(p.exists() for p in stale) and other.exists()
    assert json.loads((folder / "metrics.json").read_text())["rounds_completed"] == 1


def test_a_crafted_pickle_never_runs_through_the_command_line(finished, tmp_path):
    """The whole command as a user types it: a checkpoint whose unpickling would create a marker file."""
    config = copy_of(finished, tmp_path)
    marker = tmp_path / "MARKER"
    ckpt = tmp_path / "results" / "tiny" / CHECKPOINT_NAME
    ckpt.unlink()
    code = (
        "import os, pickle, sys, torch\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'format_version': 2, 'meta': Evil()}}, {str(ckpt)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not marker.exists()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "fedranklite", "run", "--config", str(config), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "never loaded" in proc.stderr and CHECKPOINT_NAME in proc.stderr
    assert not marker.exists()


# ---- units
def test_checkpoint_round_trip_keeps_every_value(tmp_path):
    np.random.seed(5)
    torch.manual_seed(5)
    np.random.normal()  # a cached gaussian in numpy's state
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5, dtype=torch.float64)}
    payload = {
        "round_idx": 2,
        "sim_time": 1.25,
        "reached_at": None,
        "global_state": state,
        "records": [{"round": 1, "x": float("nan")}, {"round": 2, "v": np.arange(3)}],
        "scheduler": {"gain_ema": [float("nan"), 0.1]},
        "time_model": {"observed_sec_per_sample": None},
        "telemetry": {"weight": 0.5},
        "rng": rng_state(),
        "config": {"seed": 1, "output_dir": "x"},
    }
    expected_next = (torch.rand(2), np.random.rand(2))
    save_checkpoint(tmp_path / "c.safetensors", payload)
    from safetensors import safe_open

    with safe_open(tmp_path / "c.safetensors", "pt") as f:
        info = f.metadata()
        assert sorted(f.keys()) == ["global_state/a.weight", "global_state/b.bias", "rng_torch"]
    assert info["format_version"] == str(FORMAT_VERSION) and len(info["sha256"]) == 64
    assert b"\x80\x02" not in (tmp_path / "c.safetensors").read_bytes()[:16]  # no pickle anywhere near the start
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert back["round_idx"] == 2 and back["records"][1]["v"] == [0, 1, 2]
    assert np.isnan(back["records"][0]["x"]) and np.isnan(back["scheduler"]["gain_ema"][0])
    for k, v in state.items():
        assert torch.equal(back["global_state"][k], v) and back["global_state"][k].dtype == v.dtype
    set_rng_state(back["rng"])
    again = (torch.rand(2), np.random.rand(2))
    assert torch.equal(expected_next[0], again[0]) and np.array_equal(expected_next[1], again[1])


def test_config_differences_ignore_where_the_results_live():
    a = {"output_dir": "a", "experiment_name": "x", "seed": 0, "training": {"lr": 0.1, "epochs": 1}}
    b = {"output_dir": "b", "experiment_name": "y", "seed": 0, "training": {"lr": 0.2, "epochs": 1}, "new": 1}
    assert config_differences(a, b) == ["new", "training.lr"]
    assert list_keys([f"k{i:02d}" for i in range(13)]).endswith("k09 and 3 more")


@pytest.mark.parametrize("name", ["lite_iid", "seed0", "a.b", "run-2", "Ünïcode", "n" * 100])
def test_safe_names_pass(name):
    assert unsafe_name(name) is None


@pytest.mark.parametrize("name", ["", " ", "..", ".", "../x", "/abs", "a/b", "a\\b", ".x", "a\x00", "\t", "n" * 101])
def test_unsafe_names_fail(name):
    assert unsafe_name(name)


def test_free_name_skips_existing_folders_and_files(tmp_path):
    (tmp_path / "x-2").mkdir()
    (tmp_path / "x-3").write_text("")
    assert free_name(tmp_path, "x") == "x-4"


def test_prepare_refuses_before_creating_anything(tmp_path):
    cfg = write_config(tmp_path)
    from fedranklite.config.files import load_config

    loaded = load_config(cfg)
    folder = loaded.results_dir
    folder.mkdir(parents=True)
    (folder / "rounds.jsonl").write_text("")
    with pytest.raises(OutputFolderError, match="already holds"):
        prepare_results_folder(loaded)
    assert not (tmp_path / "results" / "tiny-2").exists()
    assert prepare_results_folder(loaded, new_folder=True).experiment_name == "tiny-2"
    assert prepare_results_folder(loaded, overwrite=True).experiment_name == "tiny"


def test_a_missing_checkpoint_is_a_resume_error(tmp_path):
    with pytest.raises(ResumeError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")


def test_a_run_that_ends_before_writing_leaves_no_folder(tmp_path):
    """prepare_results_folder creates the folder to lock it; released without results (a set-up that failed, the
    process exiting), the folder it created goes again, and no probe file is left."""
    from fedranklite.config.files import load_config

    cfg = load_config(write_config(tmp_path, output_dir=str(tmp_path / "new" / "deeper")))
    assert prepare_results_folder(cfg) is cfg
    assert (cfg.results_dir / folder_lock.LOCK_NAME).is_file() and folder_lock.held(cfg.results_dir)
    folder_lock.release_all()
    assert not (tmp_path / "new").exists() and not list(tmp_path.rglob(".fedranklite-write-test*"))


HOLD = (
    "import sys, time\n"
    "from fedranklite.run import folder_lock\n"
    "folder_lock.acquire(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def held_by_another(tmp_path):
    """A second process holding the lock of results/tiny (killed at the end of the test)."""
    folder = tmp_path / "results" / "tiny"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_folder_another_run_holds_is_refused_naming_its_process(held_by_another, tmp_path, capsys):
    folder, proc = held_by_another
    config = write_config(tmp_path)
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert run("--config", str(config), "--quiet", *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{folder} is in use by another run (process {proc.pid}" in err[0], err
    assert sorted(p.name for p in folder.iterdir()) == [folder_lock.LOCK_NAME]  # nothing written there
    assert run("--config", str(config), "--quiet", "--new-folder") == 0  # moves on to the next free name
    assert json.loads((tmp_path / "results" / "tiny-2" / "metrics.json").read_text())["rounds_completed"] == 1
    assert not (tmp_path / "results" / "tiny-2" / folder_lock.LOCK_NAME).exists()  # freed when the run ended


def test_the_lock_of_a_killed_holder_is_free(held_by_another, tmp_path):
    folder, proc = held_by_another
    assert folder_lock.holder(folder) == proc.pid
    proc.kill()
    proc.wait()
    assert (folder / folder_lock.LOCK_NAME).exists()  # left behind by the SIGKILL, but nobody holds it
    assert folder_lock.holder(folder) is None
    assert run("--config", str(write_config(tmp_path)), "--quiet") == 0
    assert not (folder / folder_lock.LOCK_NAME).exists()


def test_the_lock_is_reentrant_in_a_process_and_inherited_by_children(tmp_path):
    folder = tmp_path / "f"
    folder_lock.acquire(folder)
    folder_lock.acquire(folder)
    folder_lock.release(folder)
    assert folder_lock.held(folder)
    child = (
        "import sys; from fedranklite.run import folder_lock as f; f.acquire(sys.argv[1]); print(f.holder(sys.argv[1]))"
    )
    out = subprocess.run([sys.executable, "-c", child, str(folder)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"  # a process this one started writes under this process's lock
    env = {k: v for k, v in os.environ.items() if k != folder_lock.HELD_ENV}
    refused = subprocess.run([sys.executable, "-c", child, str(folder)], capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and f"process {os.getpid()}" in refused.stderr
    folder_lock.release(folder)
    assert not folder_lock.held(folder) and not folder.exists()


@pytest.mark.skipif(folder_lock.fcntl is None, reason="no advisory locks on this platform")
def test_a_run_refused_while_the_holder_is_still_writing_its_pid_names_that_pid(tmp_path):
    """The holder takes the lock and then writes its process id; a run refused in between reads the file again
    for a moment, so its one line names the holder instead of 'another process'."""
    import fcntl
    import threading

    folder = tmp_path / "run"
    folder.mkdir()
    fd = os.open(folder / folder_lock.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, the file still empty
        late = threading.Timer(0.15, lambda: os.pwrite(fd, b"424242\n", 0))
        late.start()
        with pytest.raises(folder_lock.FolderInUse, match=r"process 424242 holds its lock"):
            folder_lock.acquire(folder)
        late.join()
        assert folder_lock.holder(folder) == 424242
        os.ftruncate(fd, 0)  # a holder that never writes one: named as unknown after the short wait
        with pytest.raises(folder_lock.FolderInUse, match=r"another process holds its lock"):
            folder_lock.acquire(folder)
    finally:
        os.close(fd)
    assert not folder_lock.held(folder)
