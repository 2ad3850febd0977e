"""Backends: who runs step 3 of the round loop (client training), chosen by `engine.backend`.

    local      in this process, one resident model, clients one after another (engine.py)
    flower     as Flower messages to ClientApps, in Flower's simulation engine or on a SuperLink with
               SuperNodes (flower/, needs the `flower` extra)
    surrogate  a calibrated what-if model instead of training, for 100k-client questions (surrogate.py)

Each backend's parameters are its config class here; its implementation is named by a "module:attr"
string and imported when a run starts, because the implementations import the config loader (a cycle
if this module imported them) and Flower is an optional dependency. A backend's `start(cfg)` returns
an object with `run(on_round, resume) -> summary dict` and the `metric` it scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from .registry import PluginConfig, Registry, Section


class BackendParams(PluginConfig):
    """Parameters of the local backend (none); the other backends add theirs."""


BACKENDS: Registry[Any] = Registry("backend", key="backend", base=BackendParams)
BACKENDS.add("local", "fedranklite.engine:build_engine")


class FlowerConfig(Section):
    """engine.backend: flower (see src/fedranklite/flower/ and the README's "Running on Flower")."""

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


BACKENDS.add("flower", "fedranklite.flower.launch:FlowerRun", FlowerParams)


class SurrogateConfig(Section):
    """engine.backend: surrogate (what-if simulation, see src/fedranklite/surrogate.py)."""

    calibration: Optional[str] = None  # surrogate.json from `fedranklite calibrate <results dir>`
    rows_per_client: Optional[int] = Field(None, ge=1)  # default: the sizes of the config's real data partition


class SurrogateParams(BackendParams):
    surrogate: SurrogateConfig = SurrogateConfig()

    def problems(self, cfg: Any) -> list[tuple[str, str]]:
        calibration = self.surrogate.calibration
        if not calibration:
            return [
                (
                    "surrogate.calibration",
                    "required for engine.backend: surrogate (a surrogate.json written "
                    "by `fedranklite calibrate <results dir of a real run>`)",
                )
            ]
        if not (Path(calibration).is_file() or (Path(calibration) / "surrogate.json").is_file()):
            return [
                (
                    "surrogate.calibration",
                    f"not found: {calibration} (make it with `fedranklite calibrate <results dir of a real run>`)",
                )
            ]
        return []


BACKENDS.add("surrogate", "fedranklite.surrogate:build_surrogate_engine", SurrogateParams)


def start(cfg: Any) -> Any:
    """The run object of the config's backend: `.run(on_round=..., resume=...)` returns the summary."""
    return BACKENDS[cfg.engine.backend](cfg)
