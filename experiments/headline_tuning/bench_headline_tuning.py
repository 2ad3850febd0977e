"""How the headline experiment's training settings were chosen, scheduler-blind.

The seed's `lite_noniid_deadline` (Dirichlet alpha 0.1, 90 s deadline) ended at the majority class. This
script runs candidate training settings with the `fixed` scheduler only (FedAvg-style: every client at
r_bar) on seeds 100-101, which the verdict (seeds 0-9) never uses, and records final / best accuracy,
the majority rate and whether the final model predicts a single class. The settings are picked on
learning alone (final and best clearly above the majority class, no end-of-run collapse, wall time), never
on which scheduler they favour. Resumable: finished (candidate, seed) pairs are kept in the JSON. The
candidates `sgd` and `adam_small_lr` were stopped unfinished once full participation had been chosen.

    python experiments/headline_tuning/bench_headline_tuning.py [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import run_fedranklite, run_outcome, stamp  # noqa: E402

OUT = HERE / "headline_tuning.json"
CONFIG = ROOT / "configs" / "experiments" / "lite_noniid_deadline.yaml"
SEEDS = (100, 101)
ONLY = os.environ.get("TUNING_ONLY", "").split(",") if os.environ.get("TUNING_ONLY") else None
# the headline config as it was when these runs were made (the seed's settings); candidates override them
BEFORE = [
    "federation.clients_per_round=5",
    "federation.num_rounds=8",
    "training.max_local_steps=8",
    "training.lr=0.001",
    "training.head_lr=null",
    "evaluation.target=0.9",
    *(f"tiers.{t}.availability=0.9" for t in ("gpu_fast", "gpu_medium", "cpu_slow")),
]
STEPS4_R12 = ["training.max_local_steps=4", "federation.num_rounds=12"]
GLUE_LRS = ["training.lr=0.002", "training.head_lr=0.01"]
CANDIDATES: dict[str, list[str]] = {
    "seed_settings": [],
    "glue_lrs": GLUE_LRS,
    "slow_head": ["training.head_lr=0.0001"],
    "fewer_steps_more_rounds": STEPS4_R12,
    "fewer_steps_more_rounds_glue_lrs": STEPS4_R12 + GLUE_LRS,
    "full_participation_glue_lrs": ["federation.clients_per_round=10"] + STEPS4_R12 + GLUE_LRS,
    "two_steps_16_rounds_glue_lrs": ["training.max_local_steps=2", "federation.num_rounds=16"] + GLUE_LRS,
    "sgd": STEPS4_R12 + ["training.optimizer=sgd", "training.lr=0.05", "training.head_lr=0.05"],
    "adam_small_lr": STEPS4_R12 + ["training.lr=0.0003", "training.head_lr=0.003"],
}


def run_one(name: str, seed: int) -> dict:
    folder = f"tuning/{name}/seed{seed}"
    sets = [
        "federation.scheduler.type=fixed",
        f"seed={seed}",
        f"experiment_name=seed{seed}",  # one folder name
        f"output_dir=/tmp/fedranklite_tuning/tuning/{name}",
    ]
    proc, wall = run_fedranklite(CONFIG, sets + BEFORE + CANDIDATES[name])
    if proc.returncode:
        return {"candidate": name, "seed": seed, "error": proc.stderr[-2000:]}
    summary = json.loads((Path("/tmp/fedranklite_tuning") / folder / "metrics.json").read_text())
    outcome = run_outcome(summary, baseline_key="majority")
    return {"candidate": name, "seed": seed, "overrides": CANDIDATES[name], **outcome, "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    done = json.loads(OUT.read_text())["runs"] if OUT.exists() else []
    have = {(d["candidate"], d["seed"]) for d in done if "error" not in d}
    todo = [(n, s) for n in CANDIDATES for s in SEEDS if (n, s) not in have and (ONLY is None or n in ONLY)]
    with ThreadPoolExecutor(args.workers) as pool:
        for res in pool.map(lambda job: run_one(*job), todo):
            done = [d for d in done if (d["candidate"], d["seed"]) != (res["candidate"], res["seed"])] + [res]
            OUT.write_text(json.dumps(stamp({"runs": done}, __file__), indent=1))
            print(json.dumps({k: v for k, v in res.items() if k not in ("scores", "overrides")}), flush=True)


if __name__ == "__main__":
    main()
