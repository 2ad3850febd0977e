"""Flower's simulation engine in this process: the ServerApp runs in a thread here (our Engine), the ClientApps
in Ray workers (virtual SuperNodes), each keeping the model resident."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from fedranklite.config.schema import Config


def _set_flower_env(home: Path) -> None:
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_HOME"] = str(home)


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
