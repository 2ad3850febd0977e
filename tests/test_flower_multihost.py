"""The multi-host plan (backends/flower/plan.py, docs/flower-multihost.md): per-host folders from the config,
and the deployment run from them on one machine, the SuperLink and each SuperNode on its own loopback address
and in its own folder (a copy, as onto another host), with TLS and SuperNode authentication."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")
pytest.importorskip("cryptography")

from conftest import tiny_tree  # noqa: E402

from fedranklite.config.files import validate  # noqa: E402

LINK = "127.0.0.2"
NODES = ["127.0.0.3", "127.0.0.4", "127.0.0.5"]


def loopback_works(host: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def plan_config(tmp_path, **flower):
    base = free_port("127.0.0.1")
    return validate(
        tiny_tree(
            tmp_path,
            experiment_name="multihost",
            output_dir="results",  # relative: under the SuperLink's folder, where the ServerApp runs
            federation={"num_rounds": 2, "clients_per_round": 3},
            tiers={
                "fast": {"compute_factor": 1.0, "num_clients": 2, "memory_gb": 8, "bandwidth_mbps": 100},
                "slow": {"compute_factor": 0.25, "num_clients": 1, "memory_gb": 8, "bandwidth_mbps": 10},
            },
            engine={
                "backend": "flower",
                "flower": {
                    "mode": "deployment",
                    "superlink_host": LINK,
                    "superlink_port": free_port(LINK) if loopback_works(LINK) else 9300,
                    "supernode_base_port": base,
                    "num_supernodes": 3,
                    **flower,
                },
            },
        )
    )


def test_plan_gives_each_host_only_its_own_credentials(tmp_path):
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    from fedranklite.backends.flower.plan import write_plan

    plan = write_plan(plan_config(tmp_path), tmp_path / "plan", runtime_hosts=NODES)
    link = plan.superlink
    assert sorted(p.name for p in link.iterdir()) == sorted(
        ["ca.crt", "server.pem", "server.key", "experiment.yaml", "start.sh", "register.sh", "submit.sh"]
        + [f"supernode{i}.pub" for i in range(3)]
    )
    assert not (tmp_path / "plan" / "credentials").exists()  # no folder holding every key
    for i, node in enumerate(plan.supernodes):
        expected = ["ca.crt", f"supernode{i}", "superexec.secret", "start.sh"]
        assert sorted(p.name for p in node.iterdir()) == sorted(expected)
        for private in (node / f"supernode{i}", node / "superexec.secret"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert stat.S_IMODE(node.stat().st_mode) == 0o700
        pair = load_ssh_private_key((node / f"supernode{i}").read_bytes(), None).public_key()
        assert pair.public_numbers() == load_ssh_public_key((link / f"supernode{i}.pub").read_bytes()).public_numbers()
        script = (node / "start.sh").read_text()
        assert f"partition-id={i} num-partitions=3" in script and f"{LINK}:" in script
        assert "--root-certificates ca.crt" in script and f"--auth-supernode-private-key supernode{i}" in script
        assert f"--host {NODES[i]}" in script and "--isolation process" in script
        assert str(tmp_path) not in script  # nothing outside the node's own folder
    assert stat.S_IMODE((link / "server.key").stat().st_mode) == 0o600
    assert "--enable-supernode-auth" in (link / "start.sh").read_text()
    assert str(tmp_path) not in (link / "start.sh").read_text() + (link / "register.sh").read_text()
    # a second plan: fresh keys (no reuse across deployments)
    again = write_plan(plan_config(tmp_path), tmp_path / "plan2", runtime_hosts=NODES)
    assert (again.superlink / "supernode0.pub").read_bytes() != (link / "supernode0.pub").read_bytes()


@pytest.mark.parametrize(
    "flower,runtime_hosts,expect",
    [
        ({"tls": False, "supernode_auth": False, "superlink_host": "192.168.1.5"}, None, "reachable from other"),
        ({"superlink_port": 0}, None, "fixed ports"),
        ({"superlink_host": "0.0.0.0"}, None, "not a wildcard"),
        ({}, ["10.0.0.3", "127.0.0.1", "127.0.0.1"], "loopback addresses"),
    ],
)
def test_plan_refuses(tmp_path, flower, runtime_hosts, expect):
    from fedranklite.backends.flower.plan import write_plan
    from fedranklite.config.schema import ConfigError

    with pytest.raises((ValueError, ConfigError), match=expect):
        write_plan(plan_config(tmp_path, **flower), tmp_path / "plan", runtime_hosts=runtime_hosts)


class Hosts:
    """The plan's folders copied into separate 'host' folders, each script started in its own process group."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env.get("PATH", "")
        self.env.pop("FLWR_HOME", None)
        self.env.pop("FEDRANKLITE_CACHE", None)  # each host its own cache (the scripts default to their folder)

    def copy(self, folder: Path, host: str) -> Path:
        dest = self.tmp / "hosts" / host
        shutil.copytree(folder, dest)
        return dest

    def start(self, name: str, script: Path) -> subprocess.Popen:
        out = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen(
            ["sh", str(script)], stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        out.close()
        self.procs[name] = proc
        return proc

    def run(self, script: Path, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(script)], capture_output=True, text=True, env=self.env, timeout=timeout)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{host}:{port}")


@pytest.mark.slow
def test_multihost_plan_runs_on_separate_loopback_hosts(tmp_path):
    if not all(loopback_works(h) for h in [LINK, *NODES]):
        pytest.skip("this machine cannot bind 127.0.0.2-5")
    from fedranklite.backends.flower.plan import write_plan
    from fedranklite.core.results_io import RoundLog
    from fedranklite.run.engine import build_engine

    cfg = plan_config(tmp_path)
    plan = write_plan(cfg, tmp_path / "plan", runtime_hosts=NODES, python=sys.executable)
    hosts = Hosts(tmp_path)
    link = hosts.copy(plan.superlink, "linkhost")
    nodes = [hosts.copy(p, f"nodehost{i}") for i, p in enumerate(plan.supernodes)]
    shutil.rmtree(tmp_path / "plan")  # only the copies exist from here on
    port = cfg.engine.flower.superlink_port
    try:
        wait_port(LINK, port, 120, hosts.start("superlink", link / "start.sh"))
        done = hosts.run(link / "register.sh", 120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        binding = json.loads((link / "nodes.json").read_text())
        assert sorted(binding) == ["0", "1", "2"] and len(set(binding.values())) == 3
        for i, node in enumerate(nodes):
            hosts.start(f"supernode{i}", node / "start.sh")
        done = hosts.run(link / "submit.sh", 600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        for i in range(3):  # each SuperNode dialled the SuperLink's address and ran its worker
            text = hosts.log(f"supernode{i}")
            assert "resident ClientApp worker" in text, text[-2000:]
    finally:
        hosts.stop()
    out = link / "results" / "multihost"
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads((out / "flower.json").read_text())
    records = RoundLog.read(out / "rounds.jsonl")
    assert metrics["rounds_completed"] == 2 == len(records)
    assert report["authenticated"] and report["refused"] == {} and report["lost"] == []
    assert {int(n): v["partition-id"] for n, v in report["nodes"].items()} == {v: int(k) for k, v in binding.items()}
    assert all(c.status == "accepted" and c.steps > 0 for r in records for c in r.clients)
    timings = report["client_timings"]
    assert len({t["pid"] for t in timings}) == 3 and sum(t["built"] for t in timings) == 3  # resident workers
    for i, node in enumerate(nodes):  # each host tokenised into its own cache folder
        assert (node / "cache").is_dir(), sorted(p.name for p in node.iterdir())
    local = build_engine(cfg.model_copy(update={"output_dir": str(tmp_path / "local")}))
    local.run()
    assert [r.ranks for r in records] == [r.ranks for r in local.state.records]
    assert metrics["final_score"] == pytest.approx(local.state.records[-1].score)
