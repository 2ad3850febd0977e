"""Does a bring-your-own sentence-pair task, configured from the README alone, learn with default training settings?

Takes the README's "Bring your own data" YAML block verbatim (only `_base_` is made absolute and `label_names`
set to the task's two labels), writes GLUE QNLI (question / sentence / entailment | not_entailment) as the
README's JSON-lines layout (premise / hypothesis / label), and runs it with candidate training settings on
seeds 0-2: `old_defaults` (base.yaml's training section before this benchmark changed it), `glue_lrs` (the GLUE
presets' lr 2e-3 / head 1e-2), `fedavg_glue_lrs` (+ fedavg), `headline_training` (the headline experiment's
settings: every client every round, 4 local steps, 12 rounds, fedavg, GLUE lrs; base.yaml's since) and
`readme_defaults` (nothing overridden: today's base.yaml, which must reproduce headline_training). Records
final / best accuracy next to the trivial baseline (majority class of the dev
rows) and the run's warnings. Resumable: finished (candidate, seed) pairs are kept in the JSON.

    python experiments/byo_defaults/bench_byo_defaults.py [--glue-dir ../shared/data/glue] [--workers 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import run_fedranklite, run_outcome, write  # noqa: E402

OUT = HERE / "byo_defaults.json"
WORK = Path("/tmp/fedranklite_byo")
SEEDS = (0, 1, 2)
# base.yaml's training settings before this benchmark changed them (commit 431eb60), written out so every
# candidate below means today what it meant when it ran: 8 rounds of 5 of 10 clients, 8 local steps, lr 1e-3,
# blockwise. (The runs recorded before the change list only the overrides after OLD.)
OLD = [
    "federation.num_rounds=8",
    "federation.clients_per_round=5",
    "federation.aggregation=blockwise",
    "training.max_local_steps=8",
    "training.lr=0.001",
    "training.head_lr=null",
]
CANDIDATES: dict[str, list[str]] = {
    "old_defaults": OLD,  # recorded as `readme_defaults` before the change (then: nothing overridden)
    "readme_defaults": [],  # nothing changed: today's base.yaml (since the change: headline_training's settings)
    "glue_lrs": [*OLD, "training.lr=0.002", "training.head_lr=0.01"],
    # the aggregation the headline tuning found learning under label skew (blockwise averages a high rank
    # slice over the few clients that train it), with the GLUE presets' learning rates
    "fedavg_glue_lrs": [*OLD, "federation.aggregation=fedavg", "training.lr=0.002", "training.head_lr=0.01"],
    # the headline experiment's training settings (experiments/headline_tuning/bench_headline_tuning.py, chosen
    # with `fixed` on seeds the verdict never uses): every client every round, 4 local steps, 12 rounds, fedavg,
    # GLUE lrs
    "headline_training": [
        *OLD,
        "federation.aggregation=fedavg",
        "training.lr=0.002",
        "training.head_lr=0.01",
        "federation.clients_per_round=10",
        "training.max_local_steps=4",
        "federation.num_rounds=12",
    ],
}


def readme_config() -> str:
    """The YAML block of the README's "Bring your own data" section, as a user would copy it."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bring your own data", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def write_task(glue_dir: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.jsonl"), ("dev", "dev.jsonl")):
        with open(glue_dir / "QNLI" / f"{split}.tsv", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        with open(folder / name, "w") as out:
            for r in rows:
                out.write(json.dumps({"premise": r["question"], "hypothesis": r["sentence"], "label": r["label"]}))
                out.write("\n")
    config = readme_config()
    config = config.replace("_base_: ../configs/base.yaml", f"_base_: {ROOT / 'configs' / 'base.yaml'}")
    config = re.sub(r"label_names: \[[^\]]*\]", "label_names: [entailment, not_entailment]", config)
    (folder / "experiment.yaml").write_text(config)


def run_one(name: str, seed: int) -> dict:
    out_dir = WORK / "results" / name
    sets = [f"seed={seed}", f"output_dir={out_dir}", f"experiment_name=seed{seed}", *CANDIDATES[name]]
    proc, wall = run_fedranklite(WORK / "my_task" / "experiment.yaml", sets, "--overwrite")
    if proc.returncode:
        return {"candidate": name, "seed": seed, "error": proc.stderr[-2000:]}
    summary = json.loads((out_dir / f"seed{seed}" / "metrics.json").read_text())
    outcome = run_outcome(summary)
    return {"candidate": name, "seed": seed, "overrides": CANDIDATES[name], **outcome, "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--candidates", nargs="*", choices=list(CANDIDATES), help="default: all, in order")
    args = ap.parse_args()
    write_task(args.glue_dir, WORK / "my_task")
    done = json.loads(OUT.read_text())["runs"] if OUT.exists() else []
    have = {(d["candidate"], d["seed"]) for d in done if "error" not in d}
    todo = [(n, s) for n in args.candidates or CANDIDATES for s in SEEDS if (n, s) not in have]
    with ThreadPoolExecutor(args.workers) as pool:
        for res in pool.map(lambda job: run_one(*job), todo):
            done = [d for d in done if (d["candidate"], d["seed"]) != (res["candidate"], res["seed"])] + [res]
            payload = {
                "task": "GLUE QNLI written as the README's JSON-lines pair task (premise/hypothesis/label)",
                "config": (WORK / "my_task" / "experiment.yaml").read_text(),
                "runs": done,
            }
            write("byo_defaults", payload, folder=HERE)
            print(json.dumps({k: v for k, v in res.items() if k not in ("scores", "overrides")}), flush=True)


if __name__ == "__main__":
    main()
