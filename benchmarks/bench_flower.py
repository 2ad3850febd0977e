"""Per-round overhead of the Flower backend (simulation engine) vs our local engine, same experiment.

Both runs use the same config (bundled MiniLM, lite scheduler, IID, the base.yaml budget) in one process,
one after the other: the local engine (`engine.backend: local`) and Flower's simulation engine
(`engine.backend: flower`, one Ray worker using every CPU, model resident in it). The ratio is taken over
rounds 2..N (steady state; round 1 on Flower also builds the ClientApp's model in the Ray worker) from the
engine's own per-round wall seconds (training + evaluation + bookkeeping); round 1 and the whole run
including set-up (Ray start, model builds) are reported too. Target: <= 1.5x.

    python benchmarks/bench_flower.py [--rounds 4] [--model bundled:minilm-l6]
Writes benchmarks/results/flower.json.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

from common import ROOT, write


def run(backend: str, rounds: int, model: str, out: str):
    from fedranklite.configfile import load_config
    from fedranklite.engine import build_engine

    cfg = load_config(ROOT / "configs" / "experiments" / "lite_iid.yaml",
                      [f"federation.num_rounds={rounds}", f"model.name={model}", f"output_dir={out}",
                       f"experiment_name=bench_{backend}", f"engine.backend={backend}"])
    start = time.perf_counter()
    if backend == "local":
        engine = build_engine(cfg)
        engine.run()
    else:
        from fedranklite.flower.launch import simulate

        engine, _ = simulate(cfg)
    total = time.perf_counter() - start
    walls = [r["wall_seconds"] for r in engine.state.records]
    return {"round_wall_seconds": walls, "total_seconds": total,
            "ranks": [r["ranks"] for r in engine.state.records],
            "final_score": engine.state.records[-1]["score"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--model", default="bundled:minilm-l6")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as out:
        local = run("local", args.rounds, args.model, out)
        flower = run("flower", args.rounds, args.model, out)
    steady = lambda r: statistics.mean(r["round_wall_seconds"][1:])  # noqa: E731
    ratio = steady(flower) / steady(local)
    payload = {
        "experiment": "configs/experiments/lite_iid.yaml", "model": args.model, "rounds": args.rounds,
        "local": local, "flower_simulation": flower,
        "steady_round_seconds": {"local": steady(local), "flower": steady(flower)},
        "overhead_ratio_per_round": ratio,
        "overhead_ratio_round1": flower["round_wall_seconds"][0] / local["round_wall_seconds"][0],
        "overhead_ratio_total_with_setup": flower["total_seconds"] / local["total_seconds"],
        "same_ranks": local["ranks"] == flower["ranks"],
        "target": 1.5, "met": ratio <= 1.5,
    }
    write("flower", payload)
    print(f"per-round (rounds 2..{args.rounds}): local {steady(local):.2f} s, Flower simulation {steady(flower):.2f} s "
          f"-> {ratio:.2f}x (target <= 1.5x); with set-up {payload['overhead_ratio_total_with_setup']:.2f}x")


if __name__ == "__main__":
    main()
