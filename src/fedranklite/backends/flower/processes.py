"""Processes of a Flower deployment: their environment, ports, and stopping them (and their children) by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


def flower_env(home: Path) -> dict[str, str]:
    """Environment for Flower processes: telemetry off, FLWR_HOME in the run folder, this venv first on PATH."""
    env = dict(os.environ)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_HOME"] = str(home)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def project_root() -> Path:
    """The folder with the pyproject.toml that holds [tool.flwr.app] (the Flower app `flwr run` builds)."""
    return Path(__file__).resolve().parents[4]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group `proc` leads (started with start_new_session: pgid == its pid)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_pids(pids: Sequence[int], timeout: float) -> None:
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=timeout)


def alive(pids: Sequence[int]) -> list[int]:
    """The pids among `pids` that still run (zombies count as stopped)."""
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


def kill_family(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
    """Signal a process, its group and every descendant; wait for it."""
    family = descendants(proc.pid)
    signal_group(proc, sig)
    for pid in family:
        signal_pid(pid, sig)
    proc.wait(timeout)


def stop_all(procs: Sequence[subprocess.Popen], grace: float = 10.0, log=None) -> list[int]:
    """SIGTERM every process (its group and descendants), SIGKILL what is left after `grace` s; return the
    pids stopped."""
    family = sorted({pid for p in procs if p.poll() is None for pid in descendants(p.pid)})
    for p in procs:
        signal_group(p, signal.SIGTERM)
    for pid in family:
        signal_pid(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    wait_pids(family, max(0.5, end - time.monotonic()))
    for p in procs:  # SIGKILL what is left: the group even when its leader exited, then every child
        signal_group(p, signal.SIGKILL)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            if log is not None:
                log.error("process %d did not stop", p.pid)
    for pid in family:
        signal_pid(pid, signal.SIGKILL)
    wait_pids(family, 5)
    return [p.pid for p in procs] + family
