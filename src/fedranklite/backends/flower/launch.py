"""Running the Flower app: in Flower's simulation engine, or on a SuperLink and SuperNodes on this machine.

    simulate(cfg)            flwr.simulation.run_simulation in this process: the ServerApp runs in a
                             thread here (our Engine), the ClientApps in Ray workers (virtual SuperNodes)
    Deployment(cfg, ...)     starts `flower-superlink` and N `flower-supernode`s (partition-id=i) as separate
                             processes on 127.0.0.1, submits the app with `flwr run`, and stops every process
                             it started by PID (each in its own process group, with its children)

Both keep Flower inside the project's environment: the SuperLink/SuperNodes run with runtime dependency
installation disabled (no `uv sync`, torch is never reinstalled), FLWR_HOME lives in the run's folder and
telemetry is off. Command line: `python -m fedranklite.backends.flower.launch --config X [--set k=v ...]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from fedranklite.config.files import dump_config
from fedranklite.config.schema import Config
from fedranklite.core.records import RunSummary

log = logging.getLogger(__name__)


def flower_env(home: Path) -> dict[str, str]:
    """Environment for Flower processes: telemetry off, FLWR_HOME in the run folder, this venv first on PATH."""
    env = dict(os.environ)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_HOME"] = str(home)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # each SuperNode's SuperExec polls for ClientApp tasks every second by default: a message then waits
    # 0.5 s on average before its process starts (a cheap local poll; the SuperNode's own 3 s pull is fixed)
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")
    return env


def _set_flower_env(home: Path) -> None:
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_HOME"] = str(home)


# ================================================================== simulation
def simulate(cfg: Config, on_round: Optional[Callable[[dict], None]] = None, resume: bool = False):
    """Run the experiment in Flower's simulation engine; return (engine, summary)."""
    fl = cfg.engine.flower
    home = (cfg.results_dir / "flwr_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("FLWR_TELEMETRY_ENABLED", "FLWR_HOME")}
    _set_flower_env(home)
    from flwr.simulation import run_simulation

    from fedranklite.backends.flower import client_app, server_app

    cpus = os.cpu_count() or 1
    per_client = fl.client_cpus or cpus
    backend_config = {
        "client_resources": {"num_cpus": per_client, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cpus,
            "include_dashboard": False,
            "logging_level": "warning",
            "log_to_driver": True,
            "configure_logging": True,
        },
    }
    request = {"cfg": cfg, "on_round": on_round, "resume": resume}
    server_app.REQUEST["request"] = request
    try:
        run_simulation(
            server_app=server_app.app,
            client_app=client_app.app,
            num_supernodes=fl.num_supernodes or cfg.num_clients,
            backend_config=backend_config,
        )
    finally:
        server_app.REQUEST.pop("request", None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if "result" not in request:
        raise RuntimeError("the Flower simulation ended without a result (see the log above)")
    return request["result"]


# ================================================================== deployment on this machine
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


def project_root() -> Path:
    """The folder with the pyproject.toml that holds [tool.flwr.app] (the Flower app `flwr run` builds)."""
    return Path(__file__).resolve().parents[4]


class Deployment:
    """A SuperLink and N SuperNodes on this machine, each a separate process started and stopped by PID.

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
        self.node_ports = [base + i if base else free_port(self.host) for i in range(self.num_supernodes)]
        self.env = flower_env(self.home)
        self.superlink: Optional[subprocess.Popen] = None
        self.supernodes: list[subprocess.Popen] = []
        self.run_proc: Optional[subprocess.Popen] = None
        self.others: list[subprocess.Popen] = []  # extra SuperNodes (start_supernode with a name)
        self.stopped_pids: list[int] = []
        self._files: list = []
        self.tls, self.auth = fl.tls, fl.supernode_auth
        self.credentials = None  # credentials.Credentials once started with TLS
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
        """SuperLink, then (with auth) every SuperNode's key registered, then the SuperNodes, each checked:
        listening, and with auth accepted by the SuperLink (a refused node exits, and says why in its log)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        timeout = self.cfg.engine.flower.startup_timeout
        try:
            security = ["--insecure"]
            if self.tls:
                from fedranklite.backends.flower.credentials import make_credentials

                hosts = [self.host, "127.0.0.1", "localhost"]
                self.credentials = make_credentials(self.run_dir / "credentials", hosts, self.num_supernodes)
                c = self.credentials
                security = ["--ssl-ca-certfile", str(c.ca_cert), "--ssl-certfile", str(c.server_cert)]
                security += ["--ssl-keyfile", str(c.server_key)] + (["--enable-supernode-auth"] if self.auth else [])
            self.superlink = self._spawn(
                "superlink",
                [
                    "flower-superlink",
                    *security,
                    "--isolation",
                    "subprocess",
                    "--disable-runtime-dependency-installation",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                ],
            )
            wait_port(self.host, self.port, timeout, self.superlink)
            self._write_flower_config()  # the flwr CLI (register, run) talks to the SuperLink through it
            if self.auth:
                for i in range(self.num_supernodes):
                    self.node_ids[i] = self.register(self.credentials.public_key(i))
                self.nodes_file.write_text(json.dumps({str(k): v for k, v in self.node_ids.items()}))
            for i in range(self.num_supernodes):
                self.supernodes.append(self.start_supernode(i))
            for proc, port in zip(self.supernodes, self.node_ports):
                wait_port("127.0.0.1", port, timeout, proc)
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
        and `name` (its log file): for an extra node (e.g. a test's rogue), which stop() stops too."""
        if self.tls:
            security = ["--root-certificates", str(self.credentials.ca_cert)]
            if self.auth:
                security += ["--auth-supernode-private-key", str(key or self.credentials.node_keys[i])]
        else:
            security = ["--insecure"]
        proc = self._spawn(
            name or f"supernode{i}",
            [
                "flower-supernode",
                *security,
                "--superlink",
                f"{self.host}:{self.port}",
                "--isolation",
                "subprocess",
                "--node-config",
                f"partition-id={i} num-partitions={self.num_supernodes}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port or self.node_ports[i]),
            ],
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
        try:
            reply = json.loads(done.stdout[done.stdout.index("{") :])
            return int(reply["node-id"])
        except (ValueError, KeyError):
            raise RuntimeError(
                f"flwr supernode register {public_key.name} failed: {done.stdout.strip()[-300:]}"
            ) from None

    def online_nodes(self) -> dict[int, str]:
        """node id -> status (registered, online, offline, ...) as the SuperLink lists them."""
        done = self.flwr("supernode", "list", "fedranklite", "--format", "json")
        try:
            reply = json.loads(done.stdout[done.stdout.index("{") :])
        except ValueError:
            return {}
        nodes = reply.get("nodes", reply.get("supernodes", []))
        return {int(n.get("node-id", n.get("node_id", -1))): str(n.get("status", "")) for n in nodes}

    def wait_online(self, node_ids: Sequence[int], timeout: float) -> None:
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
        # json.dumps: a TOML basic string with any quote or backslash in the path escaped
        if self.tls:
            security = f"root-certificates = {json.dumps(str(self.credentials.ca_cert))}\n"
        else:
            security = "insecure = true\n"
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "fedranklite"\n\n[superlink.fedranklite]\n'
            f"address = {json.dumps(f'{self.host}:{self.port}')}\n{security}"
        )

    def submit(self, resume: bool = False, wait: bool = True, timeout: Optional[float] = None) -> int:
        """Submit the experiment with `flwr run` (the resolved config goes in as a YAML file)."""
        path = self.run_dir / "experiment.yaml"
        dump_config(self.cfg, path)
        run_config = f"config={json.dumps(str(path))} resume={'true' if resume else 'false'}"
        if self.auth:  # the ServerApp accepts a partition only from the node registered for it
            run_config += f" nodes={json.dumps(str(self.nodes_file))}"
        self.run_proc = self._spawn(
            "flwr_run", ["flwr", "run", str(project_root()), "fedranklite", "--run-config", run_config, "--stream"]
        )
        if not wait:
            return 0
        return self.wait(timeout)

    def wait(self, timeout: Optional[float] = None) -> int:
        assert self.run_proc is not None
        return self.run_proc.wait(timeout)

    def kill_supernode(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Kill SuperNode i and the ClientApp processes it started — the fault test's node death."""
        proc = self.supernodes[i]
        family = _descendants(proc.pid)
        _signal_group(proc, sig)
        for pid in family:
            _signal_pid(pid, sig)
        proc.wait(30)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process this deployment started, and the ones they started, by PID."""
        procs = self._procs()
        family = sorted({pid for p in procs if p.poll() is None for pid in _descendants(p.pid)})
        for p in procs:
            _signal_group(p, signal.SIGTERM)
        for pid in family:
            _signal_pid(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _wait_pids(family, max(0.5, end - time.monotonic()))
        for p in procs:  # SIGKILL what is left: the group even when its leader exited, then every child
            _signal_group(p, signal.SIGKILL)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                log.error("process %d did not stop", p.pid)
        for pid in family:
            _signal_pid(pid, signal.SIGKILL)
        _wait_pids(family, 5)
        self.stopped_pids = [p.pid for p in procs] + family
        for f in self._files:
            f.close()
        self._files.clear()

    def _procs(self) -> list[subprocess.Popen]:
        return [p for p in [self.run_proc, *self.supernodes, *self.others, self.superlink] if p is not None]

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs()]

    def __enter__(self) -> "Deployment":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_pids(pids: Sequence[int], timeout: float) -> None:
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


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group `proc` leads (started with start_new_session: pgid == its pid)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def deploy(cfg: Config, resume: bool = False) -> RunSummary:
    """Run the experiment on a SuperLink + SuperNodes on this machine; return metrics.json's summary."""
    cfg = _absolute_output(cfg)
    with Deployment(cfg) as dep:
        rc = dep.submit(resume=resume)
    metrics = cfg.results_dir / "metrics.json"
    if rc != 0 or not metrics.exists():
        raise RuntimeError(f"`flwr run` exited with {rc}; logs in {dep.logs}")
    return RunSummary.from_json(json.loads(metrics.read_text()))


def _absolute_output(cfg: Config) -> Config:
    out = str(Path(cfg.output_dir).resolve())
    return cfg if out == cfg.output_dir else cfg.model_copy(update={"output_dir": out})


def main(argv: Optional[Sequence[str]] = None) -> int:
    from fedranklite.config.files import load_config

    parser = argparse.ArgumentParser(
        prog="python -m fedranklite.backends.flower.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--mode", choices=["simulation", "deployment"], help="overrides engine.flower.mode")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    sets = ["engine.backend=flower", *args.set] + ([f"engine.flower.mode={args.mode}"] if args.mode else [])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, sets)
    if cfg.engine.flower.mode == "simulation":
        _, summary = simulate(cfg, resume=args.resume)
    else:
        summary = deploy(cfg, resume=args.resume)
    print(
        json.dumps(
            {
                "experiment_name": cfg.experiment_name,
                "final_score": summary.final_score,
                "rounds_completed": summary.rounds_completed,
                "stragglers_total": summary.stragglers_total,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


class FlowerRun:
    """engine.backend: flower as the CLI starts it (backends.py): the simulation reports every round
    as it ends; a deployment reports the summary when the submitted run finishes."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def run(self, on_round: Optional[Callable[..., None]] = None, resume: bool = False) -> RunSummary:
        if self.cfg.engine.flower.mode == "simulation":
            return simulate(self.cfg, on_round=on_round, resume=resume)[1]
        return deploy(self.cfg, resume=resume)
