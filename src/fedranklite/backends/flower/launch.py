"""Running the Flower app: in Flower's simulation engine (simulation.py), or on a SuperLink and SuperNodes on
this machine (deployment.py). Command line:

    python -m fedranklite.backends.flower.launch --config X [--set k=v ...] [--mode simulation|deployment]

`FlowerRun` is what `engine.backend: flower` runs (the backend registry names it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable, Optional, Sequence

from fedranklite.backends.flower.deployment import Deployment, deploy
from fedranklite.backends.flower.processes import alive, free_port, wait_port
from fedranklite.backends.flower.simulation import simulate
from fedranklite.config.schema import Config
from fedranklite.core.records import RunSummary

__all__ = ["Deployment", "FlowerRun", "alive", "deploy", "free_port", "main", "simulate", "wait_port"]


class FlowerRun:
    """engine.backend: flower as the CLI starts it (backends.py): the simulation reports every round
    as it ends; a deployment reports the summary when the submitted run finishes."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def run(self, on_round: Optional[Callable[..., None]] = None, resume: bool = False) -> RunSummary:
        if self.cfg.engine.flower.mode == "simulation":
            return simulate(self.cfg, on_round=on_round, resume=resume)[1]
        return deploy(self.cfg, resume=resume)


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
