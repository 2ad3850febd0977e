"""The command lines of a Flower deployment's processes, one place for both the deployment on this machine
(deployment.py) and the per-host plan of a deployment over several hosts (plan.py).

A SuperNode runs with `--isolation process`: it starts no SuperExec and no `flwr-clientapp` per message;
its resident ClientApp worker (worker.py) acquires the node's tasks from the node's Runtime API, which
listens on loopback, and only with the node's SuperExec secret."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

WORKER_MODULE = "fedranklite.backends.flower.worker"
SUPERNODE_MODULE = "fedranklite.backends.flower.supernode"


def superlink(
    host: str,
    port: int,
    ca_cert: Optional[Path] = None,
    cert: Optional[Path] = None,
    key: Optional[Path] = None,
    supernode_auth: bool = False,
) -> list[str]:
    """`flower-superlink`: TLS when given a certificate (Fleet, Control and Runtime APIs share host:port)."""
    if cert is None:
        security = ["--insecure"]
    else:
        security = ["--ssl-ca-certfile", str(ca_cert), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        security += ["--enable-supernode-auth"] if supernode_auth else []
    return [
        "flower-superlink",
        *security,
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]


def supernode(
    superlink_address: str,
    partition: int,
    num_partitions: int,
    runtime_port: int,
    ca_cert: Optional[Path] = None,
    auth_key: Optional[Path] = None,
    superexec_secret: Optional[Path] = None,
    runtime_host: str = "127.0.0.1",
    python: Optional[str] = None,
) -> list[str]:
    """`flower-supernode` for partition `partition`; its Runtime API (for its worker only) on
    `runtime_host`:`runtime_port`, a loopback address. Run through supernode.py (the same program with its
    idle pull and reply poll shortened) with `python` (default: this interpreter); `python=""`: plain
    `flower-supernode`."""
    if ca_cert is None:
        security = ["--insecure"]
    else:
        security = ["--root-certificates", str(ca_cert)]
        security += ["--auth-supernode-private-key", str(auth_key)] if auth_key is not None else []
    secret = ["--superexec-auth-secret-file", str(superexec_secret)] if superexec_secret is not None else []
    program = ["flower-supernode"] if python == "" else [python or sys.executable, "-m", SUPERNODE_MODULE]
    return [
        *program,
        *security,
        "--superlink",
        superlink_address,
        "--isolation",
        "process",
        *secret,
        "--node-config",
        f"partition-id={partition} num-partitions={num_partitions}",
        "--host",
        runtime_host,
        "--port",
        str(runtime_port),
    ]


def worker(
    runtime_port: int,
    superexec_secret: Optional[Path] = None,
    parent_pid: Optional[int] = None,
    python: Optional[str] = None,
    runtime_host: str = "127.0.0.1",
    prepare: Optional[Path] = None,
) -> list[str]:
    """The SuperNode's resident ClientApp worker (python -m fedranklite.backends.flower.worker)."""
    address = f"{runtime_host}:{runtime_port}"
    out = [python or sys.executable, "-m", WORKER_MODULE, "--runtime-api-address", address]
    out += ["--insecure"]  # the Runtime API listens on loopback only (commands.supernode)
    if superexec_secret is not None:
        out += ["--superexec-auth-secret-file", str(superexec_secret)]
    if parent_pid is not None:
        out += ["--parent-pid", str(parent_pid)]
    if prepare is not None:
        out += ["--prepare", str(prepare)]
    return out


def flwr_config(address: str, ca_cert: Optional[Path]) -> str:
    """FLWR_HOME/config.toml naming the SuperLink `fedranklite` for the flwr CLI (register, run, list)."""
    import json

    # json.dumps: a TOML basic string with any quote or backslash escaped
    security = f"root-certificates = {json.dumps(str(ca_cert))}\n" if ca_cert else "insecure = true\n"
    head = '[superlink]\ndefault = "fedranklite"\n\n[superlink.fedranklite]\n'
    return f"{head}address = {json.dumps(address)}\n{security}"


def submit_command(experiment: Path, nodes: Optional[Path], resume: bool = False, project: Optional[Path] = None):
    """`flwr run` of this project on the SuperLink `fedranklite`; `experiment` and `nodes` are paths on the
    SuperLink's host (the ServerApp reads them there)."""
    import json

    from fedranklite.backends.flower.processes import project_root

    run_config = f"config={json.dumps(str(experiment))} resume={'true' if resume else 'false'}"
    if nodes is not None:  # the ServerApp accepts a partition only from the node registered for it
        run_config += f" nodes={json.dumps(str(nodes))}"
    return ["flwr", "run", str(project or project_root()), "fedranklite", "--run-config", run_config, "--stream"]


def shell(args: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in args)
