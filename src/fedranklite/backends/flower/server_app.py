"""The ServerApp: the project's own Engine, with the FlowerRunner bound to Flower's Grid.

`flwr run` (deployment, or Flower's simulation runtime) reads the experiment from the run config
(`[tool.flwr.app.config]` in pyproject.toml, overridable with `--run-config`):

    config    = path of the experiment YAML (absolute, or relative to the current directory / the project)
    overrides = extra `--set` values, separated by ';' (e.g. "federation.num_rounds=2;seed=1")
    resume    = continue from results/<experiment_name>/checkpoint.safetensors

`fedranklite run --set engine.backend=flower` (launch.py) hands its already-loaded config over in-process
instead (`REQUEST`), in simulation mode, and through a resolved YAML file in deployment mode.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedranklite.backends import BACKENDS
from fedranklite.backends.flower.runner import FlowerRunner
from fedranklite.config.files import load_config

log = logging.getLogger(__name__)

app = ServerApp()

# set by launch.simulate in this process: {"cfg", "on_round", "resume", "result"}; the ServerApp's thread
# reads it, so `fedranklite run` shows its progress bar and gets the summary back
REQUEST: dict = {}


def _project_root() -> Path:
    return Path(__file__).resolve().parents[4]


def config_from_run_config(run_config) -> "object":
    path = Path(str(run_config.get("config", "")))
    if not path.is_absolute() and not path.exists():
        path = _project_root() / path
    overrides = [s.strip() for s in str(run_config.get("overrides", "")).split(";") if s.strip()]
    return load_config(path, overrides)


def read_binding(run_config) -> Optional[dict[int, int]]:
    """The deployment's partition -> registered node id map (run config `nodes`: a JSON file), or None."""
    path = str(run_config.get("nodes", "") or "")
    if not path:
        return None
    return {int(k): int(v) for k, v in json.loads(Path(path).read_text()).items()}


def serve(
    grid: Grid,
    cfg,
    on_round: Optional[Callable[[dict], None]] = None,
    resume: bool = False,
    binding: Optional[dict[int, int]] = None,
):
    """Build the Engine with the Flower runner on `grid`, wait for the SuperNodes, run every round."""
    from fedranklite.run.engine import build_engine

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    fl = cfg.engine.flower
    engine = build_engine(cfg, runner_factory=FlowerRunner.factory(cfg, grid))
    runner: FlowerRunner = engine.runner  # type: ignore[assignment]
    runner.binding = binding
    expected = fl.num_supernodes or cfg.num_clients
    holder = runner.refresh_nodes(wait_for=expected, timeout=fl.startup_timeout)
    missing = sorted(set(range(cfg.num_clients)) - set(holder))
    if missing:
        log.warning("no SuperNode holds clients %s: they will be stragglers whenever selected", missing)
    summary = engine.run(on_round=on_round, resume=resume)
    report = {
        "mode": fl.mode,
        "nodes": {str(n): {"partition-id": p, "num-partitions": m} for n, (p, m) in runner.node_partition.items()},
        "lost": runner.lost,
        "refused": {str(n): why for n, why in runner.refused.items()},
        "authenticated": binding is not None,
        "client_timings": runner.client_timings,
    }
    out = cfg.results_dir / "flower.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    return engine, summary


@app.main()
def main(grid: Grid, context: Context) -> None:
    request = REQUEST.pop("request", None)
    if request is not None:
        engine, summary = serve(grid, request["cfg"], request.get("on_round"), request.get("resume", False))
        request["result"] = (engine, summary)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = config_from_run_config(context.run_config)
    if cfg.engine.backend != "flower":
        cfg = cfg.model_copy(update={"engine": BACKENDS.parse({"backend": "flower"})})
    resume = bool(context.run_config.get("resume", False))
    _, summary = serve(grid, cfg, resume=resume, binding=read_binding(context.run_config))
    log.info(
        "%s: final %s=%s after %d rounds, results in %s",
        cfg.experiment_name,
        summary.metric,
        summary.final_score,
        summary.rounds_completed,
        cfg.results_dir,
    )
