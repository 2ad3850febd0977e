"""A Flower deployment over several hosts, planned from the config: one folder per host, each holding the
credentials that host needs and a start script with the exact `flower-superlink` / `flower-supernode` /
worker command lines (docs/flower-multihost.md says what to copy where and what a real deployment adds).

    write_plan(cfg, out)  ->  out/superlink/    start.sh (the SuperLink), register.sh (the node keys -> nodes.json),
                                                submit.sh (`flwr run`), experiment.yaml, ca.crt, server.pem,
                                                server.key, supernode<i>.pub
                              out/supernode<i>/ start.sh (SuperNode i, partition i, and its resident ClientApp
                                                worker), ca.crt, supernode<i> (its private key), superexec.secret

The SuperNodes dial `engine.flower.superlink_host`:`superlink_port` (the SuperLink's address as the nodes see
it; its TLS certificate names it, plus `extra_names`). TLS and SuperNode authentication are required unless
every address is loopback. Each script is run from its own folder, which may be copied anywhere: the
scripts name no path outside it except the project (submit.sh, FEDRANKLITE_PROJECT) and the programs on PATH.
Command line: `python -m fedranklite.backends.flower.plan -c CONFIG --out DIR [--set k=v ...]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from fedranklite.backends.flower import commands
from fedranklite.backends.flower.params import _loopback
from fedranklite.backends.flower.processes import project_root
from fedranklite.config.files import dump_config
from fedranklite.config.schema import Config

SCRIPT_HEAD = """#!/bin/sh
# {what}
# Written by `python -m fedranklite.backends.flower.plan` from the experiment's config. Run it from anywhere:
# it works in its own folder (copy the whole folder to the host).
set -eu
cd "$(dirname "$0")"
export FLWR_HOME="$PWD/flwr_home" FLWR_TELEMETRY_ENABLED=0 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
export FEDRANKLITE_CACHE="${{FEDRANKLITE_CACHE:-$PWD/cache}}"
PYTHON="${{PYTHON:-{python}}}"
"""


@dataclass
class Plan:
    folder: Path
    superlink: Path  # the SuperLink host's folder
    supernodes: list[Path] = field(default_factory=list)  # SuperNode i's folder
    address: str = ""  # host:port the SuperNodes dial
    tls: bool = True
    auth: bool = True


def write_plan(
    cfg: Config,
    out: Path,
    runtime_hosts: Optional[Sequence[str]] = None,
    extra_names: Sequence[str] = (),
    python: str = "python3",
    project: Optional[Path] = None,
) -> Plan:
    """Write the per-host folders of a deployment of `cfg` (engine.flower.*) under `out` (made fresh).

    `runtime_hosts[i]`: the loopback address SuperNode i's Runtime API binds on its host (default 127.0.0.1;
    only its worker on the same host connects to it). `extra_names`: more names or addresses the SuperLink's
    certificate is valid for. `python`: the interpreter with fedranklite installed on the SuperNode hosts
    (the scripts' PYTHON variable overrides it). `project`: the project folder `flwr run` builds the app from,
    on the host that runs submit.sh (FEDRANKLITE_PROJECT overrides it)."""
    fl = cfg.engine.flower
    n = fl.num_supernodes or cfg.num_clients
    host, port = fl.superlink_host, fl.superlink_port
    if port == 0 or fl.supernode_base_port == 0:
        raise ValueError("a multi-host plan needs fixed ports: engine.flower.superlink_port and supernode_base_port")
    if not fl.tls and not _loopback(host):
        raise ValueError(f"{host!r} is not a loopback address: the plan needs engine.flower.tls: true")
    if host in ("0.0.0.0", "::"):
        raise ValueError("superlink_host is the address the SuperNodes dial, not a wildcard: give the host's address")
    runtime_hosts = list(runtime_hosts or ["127.0.0.1"] * n)
    if len(runtime_hosts) != n or not all(_loopback(h) for h in runtime_hosts):
        raise ValueError(f"give {n} loopback addresses for the SuperNodes' Runtime APIs")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    address = f"{host}:{port}"
    plan = Plan(out, out / "superlink", address=address, tls=fl.tls, auth=fl.tls and fl.supernode_auth)

    creds = None
    if fl.tls:
        from fedranklite.backends.flower.credentials import make_credentials

        creds = make_credentials(out / "credentials", [host, *extra_names], n)
    link = plan.superlink
    link.mkdir(mode=0o700)
    if creds:
        for f in (creds.ca_cert, creds.server_cert, creds.server_key):
            shutil.copy2(f, link / f.name)
        if plan.auth:
            for i in range(n):
                shutil.copy2(creds.public_key(i), link / creds.public_key(i).name)
    dump_config(cfg, link / "experiment.yaml")
    ca = Path("ca.crt") if creds else None
    _script(
        link / "start.sh",
        "The SuperLink: Fleet, Control and Runtime APIs on " + address,
        python,
        "exec "
        + commands.shell(
            commands.superlink(host, port, ca, ca and Path("server.pem"), ca and Path("server.key"), plan.auth)
        ),
    )
    register = _flwr_config_lines(address, fl.tls)
    if plan.auth:
        register += [
            "# each SuperNode's public key -> the node id it will have; nodes.json binds partition i to it",
            'echo "{" > nodes.json.tmp',
        ]
        for i in range(n):
            sep = "," if i < n - 1 else ""
            register += [
                f"id=$(flwr supernode register supernode{i}.pub fedranklite --format json | "
                '"$PYTHON" -c \'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("{"):])["node-id"])\')',
                f'echo "  \\"{i}\\": $id{sep}" >> nodes.json.tmp',
            ]
        register += ['echo "}" >> nodes.json.tmp', "mv nodes.json.tmp nodes.json", "cat nodes.json"]
    else:
        register += ["# SuperNode authentication is off: nothing to register", "echo '{}' > nodes.json"]
    _script(link / "register.sh", "Register the SuperNodes' keys with the running SuperLink", python, *register)
    submit = commands.submit_command(Path("EXPERIMENT"), Path("NODES") if plan.auth else None, project=Path("PROJECT"))
    run_config = submit[submit.index("--run-config") + 1]
    run_config = run_config.replace('"EXPERIMENT"', '\\"$PWD/experiment.yaml\\"').replace(
        '"NODES"', '\\"$PWD/nodes.json\\"'
    )
    _script(
        link / "submit.sh",
        "Submit the experiment (the ServerApp runs on the SuperLink's host, results under its output_dir)",
        python,
        *_flwr_config_lines(address, fl.tls),
        f'PROJECT="${{FEDRANKLITE_PROJECT:-{project or project_root()}}}"',
        f'exec flwr run "$PROJECT" fedranklite --run-config "{run_config}" --stream',
    )

    for i in range(n):
        node = out / f"supernode{i}"
        node.mkdir(mode=0o700)
        key = None
        if creds:
            shutil.copy2(creds.ca_cert, node / "ca.crt")
            if plan.auth:
                shutil.copy2(creds.node_keys[i], node / f"supernode{i}")
                key = Path(f"supernode{i}")
        from fedranklite.backends.flower.credentials import make_superexec_secret

        make_superexec_secret(node / "superexec.secret")
        rport = fl.supernode_base_port + i
        supernode = commands.supernode(
            address, i, n, rport, ca, key, Path("superexec.secret"), runtime_hosts[i], python="PYTHON"
        )
        worker = commands.worker(rport, Path("superexec.secret"), python="PYTHON", runtime_host=runtime_hosts[i])
        worker_line = commands.shell(worker[1:])
        _script(
            node / "start.sh",
            f"SuperNode {i} (partition {i} of {n}) and its resident ClientApp worker; stops both when either ends",
            python,
            '"$PYTHON" ' + commands.shell(supernode[1:]) + " &",
            "node=$!",
            'worker=""',
            "trap 'kill \"$node\" $worker 2>/dev/null || true' EXIT INT TERM",
            f'"$PYTHON" {worker_line} --parent-pid "$node" &',
            "worker=$!",
            'while kill -0 "$node" 2>/dev/null && kill -0 "$worker" 2>/dev/null; do sleep 1; done',
            'if ! kill -0 "$node" 2>/dev/null; then wait "$node"; exit $?; fi',
            f'echo "the ClientApp worker ended: stopping SuperNode {i}, whose messages no one would run" >&2',
            "exit 1",
        )
        plan.supernodes.append(node)
    if creds:
        shutil.rmtree(creds.folder)  # every file is in the folder of the host that needs it
    (out / "PLAN.json").write_text(
        json.dumps(
            {
                "superlink": {"address": address, "folder": "superlink", "tls": fl.tls, "supernode_auth": plan.auth},
                "supernodes": [
                    {
                        "folder": p.name,
                        "partition-id": i,
                        "num-partitions": n,
                        "runtime-api": f"{runtime_hosts[i]}:{fl.supernode_base_port + i}",
                    }
                    for i, p in enumerate(plan.supernodes)
                ],
                "order": [
                    "superlink/start.sh",
                    "superlink/register.sh",
                    "supernode<i>/start.sh on each node host",
                    "superlink/submit.sh",
                ],
            },
            indent=2,
        )
    )
    return plan


def _flwr_config_lines(address: str, tls: bool) -> list[str]:
    """Shell lines writing FLWR_HOME/config.toml for the flwr CLI (the CA named by its absolute path)."""
    security = 'root-certificates = \\"$PWD/ca.crt\\"' if tls else "insecure = true"
    return [
        'mkdir -p "$FLWR_HOME"',
        f"printf '%s\\n' '[superlink]' 'default = \"fedranklite\"' '' '[superlink.fedranklite]' "
        f'\'address = "{address}"\' "{security}" > "$FLWR_HOME/config.toml"',
    ]


def _script(path: Path, what: str, python: str, *lines: str) -> None:
    path.write_text(SCRIPT_HEAD.format(what=what, python=python) + "\n".join(lines) + "\n")
    path.chmod(0o755)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from fedranklite.config.files import load_config

    parser = argparse.ArgumentParser(
        prog="python -m fedranklite.backends.flower.plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("--out", required=True, help="folder for the per-host folders (replaced)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", action="append", default=[], help="another name or address of the SuperLink")
    parser.add_argument("--python", default="python3", help="interpreter with fedranklite on the SuperNode hosts")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, ["engine.backend=flower", "engine.flower.mode=deployment", *args.set])
    plan = write_plan(cfg, Path(args.out), extra_names=args.name, python=args.python)
    print(f"SuperLink {plan.address}: copy {plan.superlink} to its host")
    for p in plan.supernodes:
        print(f"  copy {p} to a SuperNode host")
    print("then: superlink/start.sh, superlink/register.sh, each supernode<i>/start.sh, superlink/submit.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
