"""What training budget (and learning rate) does SmolLM2-135M need to learn a GLUE pair task? Chosen on the
TRAIN split only: a seeded part of train.tsv is held out as the "dev" set and the rest is the training data, so
the GLUE dev files are never read here.

Each candidate runs the task's SmolLM2 lite config as its centralized reference (one client, all the training
data, the federation's steps per round, full rank, no deadline: the most a budget can buy) for
`--rounds` rounds, evaluating the held-out rows every `--eval-every` rounds, and records the learning curve
against the number of training samples seen. The federated runs of benchmarks/bench_glue.py then take the
smallest budget at which the curve is clearly above the held-out rows' trivial baseline.

    python experiments/slm_budget/bench_slm_budget.py --task qnli --lr 0.001 [--rounds 20] [--eval-every 4]

Resumable: a killed candidate continues from its checkpoint; finished candidates are kept in the JSON.
`--continue-from R` starts a candidate from its own finished R-round run (the folder copied, then resumed with
more rounds: its rounds 1-R are the same as run afresh, tests/test_resume.py), so a longer budget costs only the
rounds it adds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import stamp  # noqa: E402

from fedranklite.core.results_io import write_text_atomic  # noqa: E402

OUT = HERE / "slm_budget.json"
WORK = Path("/tmp/fedranklite_slm_budget")
HELD_OUT = 300  # train rows held out as the "dev" set
SPLIT_SEED = 1234  # not a training seed: the held-out rows are the same for every candidate


def write_held_out(glue_dir: Path, task: str) -> Path:
    """<WORK>/<task>/<FOLDER>/{train,dev}.tsv: dev = HELD_OUT seeded rows of train.tsv, train = the rest (the
    GLUE TSV layout, header kept; QUOTE_NONE as the loader reads it)."""
    from fedranklite.data.glue import get_task

    folder = get_task(task).folder
    src = (glue_dir / folder / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = src[0], src[1:]
    order = list(range(len(rows)))
    random.Random(SPLIT_SEED).shuffle(order)
    held = set(order[:HELD_OUT])
    out = WORK / task / folder
    out.mkdir(parents=True, exist_ok=True)
    # written whole, then renamed: candidates of one task run in parallel (bench_slm_cuda.py) and must never read
    # a file another is still writing
    write_text_atomic(out / "dev.tsv", header + "".join(rows[i] for i in sorted(held)))
    write_text_atomic(out / "train.tsv", header + "".join(r for i, r in enumerate(rows) if i not in held))
    return WORK / task


def start_from(short, long, error) -> None:
    """Copy the finished run of Config `short` into `long`'s folder, where run_one resumes it with long's rounds
    (a copied folder resumes: its name is not compared). A folder `long` already has (a continuation cut short)
    is left as it is."""
    import shutil

    from fedranklite.run.checkpoint import CHECKPOINT_NAME, ResumeError, check_config, load_checkpoint

    if (long.results_dir / CHECKPOINT_NAME).is_file():
        return
    ckpt = short.results_dir / CHECKPOINT_NAME
    saved = load_checkpoint(ckpt) if ckpt.is_file() else {"round_idx": 0}
    if saved["round_idx"] != short.federation.num_rounds:
        error(
            f"--continue-from: {short.results_dir}: {saved['round_idx']} of {short.federation.num_rounds} rounds "
            "done; finish it"
        )
    try:  # refused here, not by run_one, which would start the copy afresh and the row would claim a continuation
        check_config(ckpt, saved["config"], long.to_dict(), saved["round_idx"])
    except ResumeError as exc:
        error(f"--continue-from: {exc}")
    if long.results_dir.exists():
        error(f"--continue-from: {long.results_dir} exists without a checkpoint; move it away to continue into it")
    tmp = long.results_dir.with_name(long.results_dir.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(short.results_dir, tmp)
    tmp.rename(long.results_dir)  # whole or not at all: a copy cut short is never taken for a run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True, choices=["sst2", "qnli", "mrpc", "stsb", "rte"])
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--local-steps", type=int, default=4, help="training.max_local_steps (_smollm2.yaml: 4)")
    ap.add_argument(
        "--federated", action="store_true", help="the federated lite run itself, not its centralized reference"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a further override (needs --tag)")
    ap.add_argument("--tag", default="", help="names the candidate's --set values in its record name")
    ap.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    ap.add_argument(
        "--continue-from",
        type=int,
        default=None,
        metavar="ROUNDS",
        help="start from this candidate's finished ROUNDS-round run and train on to --rounds",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.set and not args.tag:
        ap.error("--set needs --tag (the candidate's name must say what it changed)")
    if args.continue_from is not None and not 0 < args.continue_from < args.rounds:
        ap.error(f"--continue-from: {args.continue_from}: fewer rounds than --rounds ({args.rounds}) and at least 1")

    from bench_glue import run_config, run_one

    data_dir = write_held_out(args.glue_dir, args.task)

    def candidate(rounds: int) -> tuple[str, list[str]]:
        """The record name and --set values of this candidate at `rounds` rounds."""
        name = (
            f"slm_budget_{args.task}_lr{args.lr:g}_r{rounds}_s{args.local_steps}"
            + ("_federated" if args.federated else "")
            + (f"_{args.tag}" if args.tag else "")
        )
        return name, [
            f"data.data_dir={data_dir}",
            f"experiment_name={name}",
            f"output_dir={WORK / 'results'}",
            f"training.lr={args.lr}",
            f"federation.num_rounds={rounds}",
            f"evaluation.eval_every={args.eval_every}",
            f"evaluation.max_samples={HELD_OUT}",
            f"training.max_local_steps={args.local_steps}",
            "evaluation.eval_initial=true",
            *args.set,
        ]

    name, sets = candidate(args.rounds)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}}
    if name in results["runs"]:
        print(f"{name}: already recorded")
        return
    config = ROOT / "configs" / "experiments" / "glue" / "smollm2" / f"{args.task}_lite.yaml"
    cfg = run_config(config, sets, centralized=not args.federated)  # the Config run_one runs
    continued_from = None
    if args.continue_from is not None:
        continued_from, short_sets = candidate(args.continue_from)
        start_from(run_config(config, short_sets, centralized=not args.federated), cfg, ap.error)
    batch_size = cfg.training.batch_size
    row = run_one(config, sets, centralized=not args.federated)
    metrics = json.loads((WORK / "results" / row["experiment"] / "metrics.json").read_text())
    # samples trained per round on average (a federated client cut by the deadline trains fewer than planned)
    samples_per_round = row["train_steps"] * batch_size // args.rounds
    curve = [{"round": 0, "score": row["initial_score"], "samples": 0}] + [
        {"round": r["round"], "score": r["score"], "samples": r["round"] * samples_per_round}
        for r in metrics["rounds"]
        if r.get("score") is not None
    ]
    results["runs"][name] = {
        "task": args.task,
        "lr": args.lr,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "federated": args.federated,
        "overrides": args.set,
        "continued_from": continued_from,
        "held_out_rows": HELD_OUT,
        "split_seed": SPLIT_SEED,
        "initial_score": row["initial_score"],
        "final_score": row["final_score"],
        "best_score": row["best_score"],
        "curve": curve,
        "train_steps": row["train_steps"],
        "batch_size": batch_size,
        "trivial_baseline": metrics["trivial_baseline"],
        "train_samples_per_s": row["train_samples_per_s"],
        "wall_time_total": row["wall_time_total"],
        "samples_per_round": samples_per_round,
        # every metric of each evaluation (F1, accuracy, loss, ...): a recipe may be chosen by a metric other
        # than the task's score (MRPC's is chosen by held-out loss, slm_mrpc_pilots.md)
        "metrics_curve": row.get("curve"),
        "initial_eval": metrics.get("initial_eval"),  # round 0 (zero-shot): every metric
    }
    # re-read before writing: another process may have recorded its candidate meanwhile
    latest = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}}
    latest["runs"][name] = results["runs"][name]
    # written whole, then renamed: a parallel reader never sees half a file
    write_text_atomic(args.out, json.dumps(stamp(latest, __file__), indent=2))
    print(json.dumps(results["runs"][name], indent=2, default=str))


if __name__ == "__main__":
    main()
