"""A Flower deployment on this machine: a SuperLink, N SuperNodes and one resident ClientApp worker per
SuperNode, each a separate process started and stopped by PID (each in its own process group, with its
children); the app is submitted with `flwr run`.

Flower stays inside the project's environment: runtime dependency installation is disabled (no `uv sync`,
torch is never reinstalled), FLWR_HOME lives in the run's folder and telemetry is off. Each SuperNode runs
with `--isolation process` and its worker (worker.py) runs every ClientApp message in one long-lived process,
so imports and the model build happen once per node, not once per message.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from fedranklite.backends.flower import commands
from fedranklite.backends.flower.processes import (
    flower_env,
    free_port,
    kill_family,
    stop_all,
    wait_port,
)
from fedranklite.config.files import dump_config
from fedranklite.config.schema import Config
from fedranklite.core.records import RunSummary

log = logging.getLogger(__name__)


class Deployment:
    """A SuperLink and N SuperNodes (with their ClientApp workers) on this machine.

    with Deployment(cfg, run_dir) as dep:      # starts them, waits until they listen
        dep.submit()                          # `flwr run <project> fedranklite --stream`, waits
    # every process stopped here (SIGTERM to its process group, SIGKILL after a grace period)
    """

    def __init__(self, cfg: Config, run_dir: Optional[Path] = None, num_supernodes: Optional[int] = None):
        fl = cfg.engine.flower
        self.cfg = cfg
        self.run_dir = Path(run_dir or (cfg.results_dir / "flower_deployment")).resolve()
        self.home = self.run_dir / "flwr_home"
        self.logs = self.run_dir / "logs"
        self.host = fl.superlink_host
        self.port = fl.superlink_port or free_port(self.host)
        self.num_supernodes = num_supernodes or fl.num_supernodes or cfg.num_clients
        base = fl.supernode_base_port
        self.node_ports = [base + i if base else free_port("127.0.0.1") for i in range(self.num_supernodes)]
        self.env = flower_env(self.home)
        self.superlink: Optional[subprocess.Popen] = None
        self.supernodes: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []  # worker i serves SuperNode i
        self.run_proc: Optional[subprocess.Popen] = None
        self.others: list[subprocess.Popen] = []  # extra SuperNodes (start_supernode with a name)
        self.stopped_pids: list[int] = []
        self._files: list = []
        self.tls, self.auth = fl.tls, fl.supernode_auth
        self.credentials = None  # credentials.Credentials once started with TLS
        self.secrets: list[Path] = []  # SuperNode i's SuperExec secret (its worker holds it too)
        self.node_ids: dict[int, int] = {}  # partition id -> the node id its registered key got
        self.nodes_file = self.run_dir / "nodes.json"  # node_ids for the ServerApp (run config `nodes`)

    # ---- processes
    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "ab")
        self._files.append(out)
        exe = shutil.which(args[0], path=self.env["PATH"])
        if exe is None:
            raise FileNotFoundError(f"{args[0]} not found: pip install -e '.[flower]' in this environment")
        proc = subprocess.Popen(
            [exe, *args[1:]],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.run_dir,
            start_new_session=True,
        )
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(args))
        return proc

    def start(self) -> "Deployment":
        """SuperLink, then (with auth) every SuperNode's key registered, then the SuperNodes and their workers,
        each checked: listening, and with auth accepted by the SuperLink (a refused node exits, and says why
        in its log)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        timeout = self.cfg.engine.flower.startup_timeout
        try:
            from fedranklite.backends.flower.credentials import make_credentials, make_superexec_secret

            c = None
            if self.tls:
                hosts = [self.host, "127.0.0.1", "localhost"]
                self.credentials = c = make_credentials(self.run_dir / "credentials", hosts, self.num_supernodes)
            secrets = self.run_dir / "credentials"
            secrets.mkdir(parents=True, exist_ok=True)
            secrets.chmod(0o700)
            self.secrets = [
                make_superexec_secret(secrets / f"supernode{i}.superexec") for i in range(self.num_supernodes)
            ]
            self.superlink = self._spawn(
                "superlink",
                commands.superlink(
                    self.host,
                    self.port,
                    c.ca_cert if c else None,
                    c.server_cert if c else None,
                    c.server_key if c else None,
                    self.auth,
                ),
            )
            wait_port(self.host, self.port, timeout, self.superlink)
            self._write_flower_config()  # the flwr CLI (register, run) talks to the SuperLink through it
            if self.auth:
                for i in range(self.num_supernodes):
                    self.node_ids[i] = self.register(self.credentials.public_key(i))
                self.nodes_file.write_text(json.dumps({str(k): v for k, v in self.node_ids.items()}))
            for i in range(self.num_supernodes):
                self.supernodes.append(self.start_supernode(i))
            experiment = self.run_dir / "experiment.yaml"  # what submit() sends: the workers build it now
            dump_config(self.cfg, experiment)
            for i, (proc, port) in enumerate(zip(self.supernodes, self.node_ports)):
                wait_port("127.0.0.1", port, timeout, proc)
                worker = commands.worker(port, self.secrets[i], parent_pid=proc.pid, prepare=experiment)
                self.workers.append(self._spawn(f"clientapp{i}", worker))
            if self.auth:
                self.wait_online(list(self.node_ids.values()), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_supernode(
        self, i: int, key: Optional[Path] = None, port: Optional[int] = None, name: Optional[str] = None
    ) -> subprocess.Popen:
        """SuperNode i (partition-id i). `key`: its private key (default: the one registered for i); `port`
        and `name` (its log file): for an extra node (e.g. a test's rogue, which gets no worker), which
        stop() stops too."""
        c = self.credentials
        proc = self._spawn(
            name or f"supernode{i}",
            commands.supernode(
                f"{self.host}:{self.port}",
                i,
                self.num_supernodes,
                port or self.node_ports[i],
                ca_cert=c.ca_cert if self.tls else None,
                auth_key=(key or c.node_keys[i]) if self.tls and self.auth else None,
                superexec_secret=self.secrets[i] if name is None else None,
            ),
        )
        if name is not None:
            self.others.append(proc)
        return proc

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run the flwr CLI against this deployment (output to a log file: its children may hold pipes open)."""
        out = self.logs / "flwr_cli.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(out, "ab") as f:
            start = f.tell()
            proc = subprocess.run(
                [shutil.which("flwr", path=self.env["PATH"]) or "flwr", *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.run_dir,
                timeout=timeout,
            )
        text = out.read_bytes()[start:].decode(errors="replace")
        return subprocess.CompletedProcess(proc.args, proc.returncode, text, "")

    def register(self, public_key: Path) -> int:
        """Register a SuperNode's public key with the SuperLink -> the node id it will have."""
        done = self.flwr("supernode", "register", str(public_key), "fedranklite", "--format", "json")
        return parse_register(done.stdout, public_key.name)

    def online_nodes(self) -> dict[int, str]:
        """node id -> status (registered, online, offline, ...) as the SuperLink lists them."""
        return parse_node_list(self.flwr("supernode", "list", "fedranklite", "--format", "json").stdout)

    def wait_online(self, node_ids: Sequence[int], timeout: float) -> None:
        import time

        end = time.monotonic() + timeout
        while True:
            for i, proc in enumerate(self.supernodes):
                if proc.poll() is not None:
                    tail = (self.logs / f"supernode{i}.log").read_text(errors="replace")[-600:]
                    raise RuntimeError(f"SuperNode {i} exited (code {proc.returncode}): {' '.join(tail.split())}")
            status = self.online_nodes()
            if all(status.get(n) == "online" for n in node_ids):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"SuperNodes not online after {timeout:.0f} s: {status}")
            time.sleep(1.0)

    def _write_flower_config(self) -> None:
        ca = self.credentials.ca_cert if self.tls else None
        (self.home / "config.toml").write_text(commands.flwr_config(f"{self.host}:{self.port}", ca))

    def submit(self, resume: bool = False, wait: bool = True, timeout: Optional[float] = None) -> int:
        """Submit the experiment with `flwr run` (the resolved config goes in as a YAML file)."""
        path = self.run_dir / "experiment.yaml"
        dump_config(self.cfg, path)
        self.run_proc = self._spawn(
            "flwr_run", commands.submit_command(path, self.nodes_file if self.auth else None, resume=resume)
        )
        if not wait:
            return 0
        return self.wait(timeout)

    def wait(self, timeout: Optional[float] = None) -> int:
        assert self.run_proc is not None
        return self.run_proc.wait(timeout)

    def kill_supernode(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Kill SuperNode i and its ClientApp worker — the fault test's node death."""
        kill_family(self.supernodes[i], sig)
        if i < len(self.workers):
            kill_family(self.workers[i], sig)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process this deployment started, and the ones they started, by PID."""
        self.stopped_pids = stop_all(self._procs(), grace, log)
        for f in self._files:
            f.close()
        self._files.clear()

    def _procs(self) -> list[subprocess.Popen]:
        procs = [self.run_proc, *self.workers, *self.supernodes, *self.others, self.superlink]
        return [p for p in procs if p is not None]

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs()]

    def __enter__(self) -> "Deployment":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_register(stdout: str, what: str = "the key") -> int:
    """The node id in `flwr supernode register ... --format json` output."""
    try:
        return int(json.loads(stdout[stdout.index("{") :])["node-id"])
    except (ValueError, KeyError):
        raise RuntimeError(f"flwr supernode register {what} failed: {stdout.strip()[-300:]}") from None


def parse_node_list(stdout: str) -> dict[int, str]:
    try:
        reply = json.loads(stdout[stdout.index("{") :])
    except ValueError:
        return {}
    nodes = reply.get("nodes", reply.get("supernodes", []))
    return {int(n.get("node-id", n.get("node_id", -1))): str(n.get("status", "")) for n in nodes}


def deploy(cfg: Config, resume: bool = False) -> RunSummary:
    """Run the experiment on a SuperLink + SuperNodes on this machine; return metrics.json's summary."""
    cfg = absolute_output(cfg)
    with Deployment(cfg) as dep:
        rc = dep.submit(resume=resume)
    metrics = cfg.results_dir / "metrics.json"
    if rc != 0 or not metrics.exists():
        raise RuntimeError(f"`flwr run` exited with {rc}; logs in {dep.logs}")
    return RunSummary.from_json(json.loads(metrics.read_text()))


def absolute_output(cfg: Config) -> Config:
    out = str(Path(cfg.output_dir).resolve())
    return cfg if out == cfg.output_dir else cfg.model_copy(update={"output_dir": out})
