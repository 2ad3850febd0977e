"""Parameters of the Flower backend (`engine.backend: flower`), checked when the config loads."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from fedranklite.backends.registry import BACKENDS, BackendParams
from fedranklite.core.registry import Section


class FlowerConfig(Section):
    """engine.backend: flower (see src/fedranklite/backends/flower/ and docs/flower.md)."""

    mode: Literal["simulation", "deployment"] = "simulation"
    num_supernodes: Optional[int] = Field(None, ge=1)  # default: one SuperNode per client (partition-id = cid)
    # wall seconds the server waits for the replies of a round (null: until every client answered or its
    # SuperNode is reported offline); a client that has not answered by then is a straggler
    round_timeout: Optional[float] = Field(None, gt=0)
    # simulation: CPUs per virtual client (null: every CPU, so one Ray worker keeps the model resident)
    client_cpus: Optional[float] = Field(None, gt=0)
    # deployment: where the SuperLink listens (its HTTP API) and the first SuperNode runtime port
    superlink_host: str = "127.0.0.1"
    superlink_port: int = Field(9300, ge=0, le=65535)  # 0: a free port
    supernode_base_port: int = Field(9310, ge=0, le=65535)  # SuperNode i: base + i (0: free ports)
    startup_timeout: float = Field(120.0, gt=0)  # deployment: seconds to wait for the SuperLink / SuperNodes
    # deployment: TLS with a throw-away CA made for the run (launch.py, credentials.py), and only SuperNodes
    # whose key was registered may connect, each bound to the partition its key was registered for
    tls: bool = True
    supernode_auth: bool = True


class FlowerParams(BackendParams):
    flower: FlowerConfig = FlowerConfig()

    def problems(self, cfg: Any) -> list[tuple[str, str]]:
        fl, out = self.flower, []
        if fl.mode != "deployment":
            return out
        if fl.supernode_auth and not fl.tls:
            out.append(("flower.supernode_auth", "needs flower.tls: true (Flower authenticates nodes over TLS only)"))
        if not fl.tls and not _loopback(fl.superlink_host):
            out.append(
                (
                    "flower.superlink_host",
                    f"{fl.superlink_host!r} is reachable from other machines: refused without flower.tls "
                    "(the global adapter and the config would travel in clear)",
                )
            )
        return out


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


BACKENDS.add("flower", "fedranklite.backends.flower.launch:FlowerRun", FlowerParams)
