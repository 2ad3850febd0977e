"""Learner-stability pilots: does FedAvg with every client in every round learn stably, before any scheduler
is compared? (experiments/learner_stability/SPEC.md holds the rule, the seeds, the arms and their order.)

Each run is `fedranklite run` of configs/experiments/lite_noniid_deadline.yaml with the `fixed` scheduler at
r_bar 8 (every client every round, the headline's 90 s deadline, which rank 8 never misses) and the arm's
--set overrides, in a subprocess, one at a time. A finished run's metrics.json, rounds.jsonl and config.yaml
are copied to runs/<arm>/seed<k>/; finished runs are skipped, a killed run resumes from its checkpoint
(kept in _work/, which git ignores). An arm stops once it cannot reach the rule on 9 of the 10 seeds (two
failures); an arm that meets it runs all 10 seeds and the cell's later arms are skipped. After every run
results.json and results.md are rewritten from runs/.

    OMP_NUM_THREADS=1 python experiments/learner_stability/run_pilots.py [--commit] [--summary-only] [--arms A,B]

--commit: after each finished run, commit its three files and the results (pathspec commit of this folder).
--arms: run only these arms (in plan order), e.g. to run two arms of one amendment at once, one process each;
the plan order, not which finishes first, still decides the learner.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py: portable paths)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIG = ROOT / "configs" / "experiments" / "lite_noniid_deadline.yaml"
WORK = HERE / "_work"
RUNS = HERE / "runs"
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "results.md"
SCRIPT = "experiments/learner_stability/run_pilots.py"

TUNING_SEEDS = tuple(range(200, 210))
NUM_ROUNDS = 12
MARGIN = 0.10  # final score must exceed the trivial baseline by more than this
MAX_DROP = 0.10  # largest allowed loss between consecutive evaluations after round DROP_AFTER
DROP_AFTER = 3
NEED = 9  # seeds of 10 meeting the rule (>= 90 %)

COMMON = ["federation.scheduler.type=fixed", "federation.scheduler.r_bar=8", "federation.clients_per_round=10"]
ALPHA05 = ["data.partition.alpha=0.5"]
HEADLR003 = ["training.head_lr=0.003"]
EVAL2000 = ["data.embedded_eval_size=2000", "evaluation.max_samples=2000"]

# (arm, cell, overrides) in the order they are run; SPEC.md states the same order
ARMS: list[tuple[str, str, list[str]]] = [
    ("shipped", "drift", []),
    ("alpha05", "headline", ALPHA05),
    ("headlr003", "drift", HEADLR003),
    ("eval2000", "drift", EVAL2000),
    ("alpha05_headlr003", "headline", ALPHA05 + HEADLR003),
    ("alpha05_eval2000", "headline", ALPHA05 + EVAL2000),
    ("headlr003_eval2000", "drift", HEADLR003 + EVAL2000),
    ("alpha05_headlr003_eval2000", "headline", ALPHA05 + HEADLR003 + EVAL2000),
    # SPEC.md, amendment 1: smaller client steps for the Dirichlet 0.1 cell
    ("lrhalf", "drift", ["training.lr=0.001", "training.head_lr=0.005"]),
    ("lrquarter", "drift", ["training.lr=0.0005", "training.head_lr=0.0025"]),
    # SPEC.md, amendment 2: remedies with code for the Dirichlet 0.1 cell, values fixed before their runs
    ("fedprox", "drift", ["training.proximal_mu=0.1"]),
    ("servermom", "drift", ["federation.server_optimizer={type: momentum, lr: 1.0, momentum: 0.9}"]),
    # SPEC.md, amendment 3: logit-adjusted local training and a larger FedProx mu, run at the same time
    ("logitadj", "drift", ["training.logit_adjustment=1.0"]),
    ("fedprox05", "drift", ["training.proximal_mu=0.5"]),
    # SPEC.md, amendment 4: a frozen head (FedBABU) and one local step, run at the same time
    ("fedbabu", "drift", ["training.freeze_head=true"]),
    ("local1", "drift", ["training.max_local_steps=1"]),
]
KEPT = ("metrics.json", "rounds.jsonl", "config.yaml")


def judge(metrics: dict) -> dict:
    """The stability rule for one finished run."""
    scores = {int(r["round"]): r["score"] for r in metrics["rounds"] if r.get("score") is not None}
    baseline = metrics["trivial_baseline"]["score"]
    final = metrics["final_score"]
    after = [scores[k] for k in sorted(scores) if k > DROP_AFTER]
    drops = [a - b for a, b in zip(after, after[1:])]
    max_drop = max(drops) if drops else 0.0
    final_ok = final is not None and final > baseline + MARGIN
    drop_ok = max_drop <= MAX_DROP + 1e-12
    fe = metrics.get("final_eval") or {}
    return {
        "final_score": final,
        "best_score": metrics.get("best_score"),
        "trivial_baseline": baseline,
        "threshold": round(baseline + MARGIN, 6),
        "scores": [scores[k] for k in sorted(scores)],
        "max_drop_after_round_3": round(max_drop, 6),
        "final_above_threshold": final_ok,
        "no_drop_over_0.10": drop_ok,
        "meets_rule": bool(final_ok and drop_ok),
        "final_eval_loss": fe.get("loss"),
        "final_predicted_classes": fe.get("predicted_classes"),
        "eval_rows": fe.get("num_samples"),
        "stragglers_total": metrics.get("stragglers_total"),
        "wall_seconds": metrics.get("wall_time_total"),
    }


def finished(arm: str, seed: int) -> dict | None:
    path = RUNS / arm / f"seed{seed}" / "metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    return m if m.get("rounds_completed") == NUM_ROUNDS else None


def run_one(arm: str, overrides: list[str], seed: int) -> dict:
    name = f"{arm}_seed{seed}"
    out = WORK / name
    sets = COMMON + overrides + [f"seed={seed}", f"experiment_name={name}", f"output_dir={WORK}"]
    cmd = ["fedranklite", "run", "--config", str(CONFIG), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    if (out / "checkpoint.safetensors").exists():
        cmd.append("--resume")
    else:
        cmd.append("--overwrite")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {name}: {' '.join(cmd[4:])}", flush=True)
    with open(WORK / f"{name}.log", "a") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    m = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    if rc != 0 or m.get("rounds_completed") != NUM_ROUNDS:
        raise RuntimeError(f"{name}: exit {rc}, rounds {m.get('rounds_completed')} (log {WORK / name}.log)")
    dest = RUNS / arm / f"seed{seed}"
    dest.mkdir(parents=True, exist_ok=True)
    for f in KEPT:  # machine paths (the results folder, the backbone's files) made repository-relative or <tmp>
        copy_portable(out / f, dest / f)
    print(f"   done in {time.time() - t0:.0f} s: {judge(m)}", flush=True)
    return m


def summary() -> dict:
    arms = {}
    for arm, cell, overrides in ARMS:
        runs = {}
        for seed in TUNING_SEEDS:
            m = finished(arm, seed)
            if m is not None:
                runs[str(seed)] = judge(m)
        n_ok = sum(r["meets_rule"] for r in runs.values())
        n_fail = len(runs) - n_ok
        status = (
            "meets the rule" if n_ok >= NEED else "fails the rule" if n_fail > len(TUNING_SEEDS) - NEED else "undecided"
        )
        arms[arm] = {
            "cell": cell,
            "overrides": COMMON + overrides,
            "seeds_run": len(runs),
            "seeds_meeting_rule": n_ok,
            "fraction_meeting_rule": round(n_ok / len(runs), 4) if runs else None,
            "status": status,
            "runs": runs,
        }
    winners = {}
    for cell in ("headline", "drift"):
        winners[cell] = None
        for arm, c, _ in ARMS:
            if c != cell:
                continue
            st = arms[arm]["status"]
            if st == "meets the rule":
                winners[cell] = arm
                break
            if st == "undecided":
                winners[cell] = f"undecided (next: {arm})"
                break
        else:
            winners[cell] = "none: no arm of the plan meets the rule"
    for arm, a in arms.items():
        w = winners[a["cell"]]
        if a["seeds_run"] == 0 and w and not w.startswith(("undecided", "none")) and w != arm:
            a["status"] = f"not run ({w} met the rule first)"
    return {
        "script": SCRIPT,
        "spec": "experiments/learner_stability/SPEC.md",
        "config": "configs/experiments/lite_noniid_deadline.yaml",
        "tuning_seeds": list(TUNING_SEEDS),
        "rule": (
            f"final score > trivial baseline (majority-class accuracy of the evaluation rows) + {MARGIN}, and no loss "
            f"of more than {MAX_DROP} between consecutive evaluations after round {DROP_AFTER} (rounds 4-12); "
            f"an arm meets it when >= {NEED} of {len(TUNING_SEEDS)} seeds do"
        ),
        "winners": winners,
        "arms": arms,
    }


def copy_portable(src: Path, dest: Path) -> None:
    """A run's record file copied with this machine's paths replaced (benchmarks/common.py `portable`)."""
    text = src.read_text()
    if src.suffix == ".jsonl":
        text = "".join(json.dumps(common.portable(json.loads(line))) + "\n" for line in text.splitlines() if line)
    elif src.suffix == ".json":
        text = json.dumps(common.portable(json.loads(text)), indent=2) + "\n"
    else:  # config.yaml
        text = common.portable(text)
    dest.write_text(text)


def write_results(s: dict) -> None:
    RESULTS_JSON.write_text(json.dumps(s, indent=1) + "\n")
    lines = [
        "# Learner stability pilots: results",
        "",
        f"Written by `python {SCRIPT}` from runs/ (spec: SPEC.md). `fixed` at r_bar 8, all 10 clients every",
        "round, the headline config otherwise; tuning seeds 200-209. Rule per run: final accuracy > majority-class",
        "accuracy + 0.10 and no drop > 0.10 between consecutive evaluations in rounds 4-12. An arm meets the rule",
        "when >= 9 of 10 seeds do; an arm stops after its second failing seed.",
        "",
        f"Decision so far: headline cell (Dirichlet 0.5): {s['winners']['headline']}; Dirichlet 0.1 cell (`drift`): "
        f"{s['winners']['drift']}.",
        "",
        "| arm | cell | seeds run | meeting rule | status | final accuracy per seed (threshold) |",
        "|---|---|---|---|---|---|",
    ]
    for arm, a in s["arms"].items():
        cells = ", ".join(
            f"{k}: {r['final_score']:.3f}{'' if r['meets_rule'] else '*'} ({r['threshold']:.3f})"
            for k, r in a["runs"].items()
        )
        lines.append(
            f"| {arm} | {a['cell']} | {a['seeds_run']} | {a['seeds_meeting_rule']} | {a['status']} | {cells or '-'} |"
        )
    lines += ["", "`*`: the run fails the rule. Per-round scores and the largest drop are in results.json.", ""]
    lines += [
        "## Per run",
        "",
        "| arm | seed | final | best | max drop r4-12 | classes predicted | eval loss | rule |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in s["arms"].items():
        for k, r in a["runs"].items():
            lines.append(
                f"| {arm} | {k} | {r['final_score']:.3f} | {r['best_score']:.3f} | {r['max_drop_after_round_3']:.3f} | "
                f"{r['final_predicted_classes']} | {r['final_eval_loss']:.2f} | "
                f"{'meets' if r['meets_rule'] else 'fails'} |"
            )
    RESULTS_MD.write_text("\n".join(lines) + f"\n\nWritten by `{SCRIPT}`.\n")


def commit(paths: list[Path], message: str) -> None:
    rel = [str(p.relative_to(ROOT)) for p in paths]
    for _ in range(30):
        if not (ROOT / ".git" / "index.lock").exists():
            a = subprocess.run(["git", "add", *rel], cwd=ROOT)
            if a.returncode == 0:
                c = subprocess.run(["git", "commit", *rel, "-m", message], cwd=ROOT)
                if c.returncode == 0:
                    return
        time.sleep(10)
    print(f"commit failed: {message}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--arms", help="comma-separated arms to run (default: the whole plan, in order)")
    args = ap.parse_args()
    known = [arm for arm, _, _ in ARMS]
    only = set(args.arms.split(",")) if args.arms else set(known)
    if only - set(known):
        ap.error(f"--arms: unknown arm(s) {sorted(only - set(known))}; the plan has {known}")
    if args.summary_only:
        write_results(summary())
        return
    for arm, cell, overrides in ARMS:
        if arm not in only:
            continue
        for seed in TUNING_SEEDS:
            s = summary()
            if s["arms"][arm]["status"] == "fails the rule":
                break  # cannot reach 9 of 10 any more
            w = s["winners"][cell]
            if w is not None and not w.startswith("undecided") and w != arm:
                break  # an earlier arm of this cell already met the rule (the winning arm runs all 10 seeds)
            if finished(arm, seed) is not None:
                continue
            run_one(arm, overrides, seed)
            s = summary()
            write_results(s)
            if args.commit:
                r = s["arms"][arm]["runs"][str(seed)]
                commit(
                    [RUNS / arm / f"seed{seed}" / f for f in KEPT] + [RESULTS_JSON, RESULTS_MD],
                    f"learner_stability: {arm} seed {seed} (final {r['final_score']:.3f}, "
                    f"{'meets' if r['meets_rule'] else 'fails'} the rule)",
                )
    write_results(summary())


if __name__ == "__main__":
    main()
