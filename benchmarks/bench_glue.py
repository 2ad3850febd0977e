"""GLUE suite at laptop budgets: the ten configs (cvx and lite per task), seeds, centralized references,
trivial baselines, and SmolLM2-135M (scored through its LM head: configs/experiments/glue/smollm2/) next to
MiniLM, with its zero-shot score (round 0), in fp32 and with 4-bit / 8-bit weights.

    FEDRANKLITE_GLUE_DIR=../shared/data/glue python benchmarks/bench_glue.py \\
        [--out benchmarks/results/glue.json] [--seeds 3] [--set key=value ...] [--tasks rte,stsb]
        [--smollm2 | --only-smollm2] [--smollm2-runs lite,cvx,centralized,4bit,8bit] [--smollm2-seeds 0,1,2]
        [--rerun NAME,...] [--merge COPY ... | --backfill-curves]

Every run goes through the same engine as `fedranklite run` (configs/experiments/glue/*.yaml), with
`--set` overrides applied to every run (the defaults below shrink evaluation so the whole suite fits a
2-core CPU; what was capped is recorded per run under `budget`). RTE, MRPC and STS-B (3 clients) run
`--seeds` seeds, SST-2 and QNLI (12 clients) one. The centralized reference of each task (one client, all
the clients' rows, the same model, rank and number of training samples) runs seed 0; SmolLM2's runs
`--smollm2-seeds` (default 0), its centralized reference seed 0. Results are written
after every run (JSON) and as a Markdown table next to it (`.md`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, mean_sd, script_name, stamp  # noqa: E402

from fedranklite.core.results_io import write_text_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "experiments" / "glue"
TASKS = ["sst2", "qnli", "mrpc", "stsb", "rte"]
SMALL = {"mrpc", "stsb", "rte"}
DEFAULT_SETS = ["evaluation.max_samples=400", "evaluation.eval_every=2"]
# --quick: a check that the suite runs end to end (RTE, seed 0, cvx and lite, no centralized reference), not a result
QUICK_SETS = ["federation.num_rounds=1", "training.max_local_steps=2", "evaluation.max_samples=32"]


def run_config(config: Path, sets: list[str], centralized: bool = False):
    """The Config of one run: a quantized run's name gets `_4bit` / `_8bit`, a centralized reference
    `_centralized` (its name is what the results JSON records and what a resumed benchmark skips)."""
    from fedranklite.config.files import load_config
    from fedranklite.run.centralized import centralized_config

    cfg = load_config(config, sets)
    if cfg.model.quantization != "none":
        cfg = load_config(config, [*sets, f"experiment_name={cfg.experiment_name}_{cfg.model.quantization}"])
    return centralized_config(cfg) if centralized else cfg


def fp32_profile(config: Path, sets: list[str]) -> Path:
    """The shipped fp32 CPU rank profile of `config`'s setting. Quantized runs price their steps with it, as the
    GPU rows do (bench_slm_cuda.py): no 4-bit profile ships, and one measured under whatever load a machine has put
    a 4-bit step slower than an fp32 one while the runs went as fast, so the deadline cut 17-19 more steps of the
    4-bit arm (experiments/slm_budget/slm_lr_pilots.md). With one clock both arms train the same steps and their gap
    is the quantization's."""
    from fedranklite.config.files import load_config
    from fedranklite.run.rank_profile import SHIPPED_DIR, key_file_name, profile_key

    cfg = load_config(config, [*sets, "model.quantization=none"])
    path = SHIPPED_DIR / key_file_name({**profile_key(cfg), "device": "cpu"})
    if not path.is_file():
        raise SystemExit(f"{config}: no shipped fp32 CPU rank profile for its quantized runs ({path.name})")
    return path


def run_settings(cfg) -> dict:
    """What a run was run with, flattened to dotted keys, less where its files went and its seed (recorded
    beside it). A recorded run is run again when a key it recorded now has another value (e.g. a larger
    budget); keys added to the schema since it ran do not count, so a new option does not redo the suite.
    A profile inside the repository is recorded relative to it, so a clone elsewhere does not rerun the suite."""

    from fedranklite.config.files import flatten

    tree = {k: v for k, v in cfg.to_dict().items() if k not in ("output_dir", "seed")}
    flat = json.loads(json.dumps(flatten(tree), default=str))
    profile = flat.get("timing.profile")
    if profile and Path(profile).resolve().is_relative_to(ROOT):
        flat["timing.profile"] = Path(profile).resolve().relative_to(ROOT).as_posix()
    return flat


def changed_settings(recorded: dict, cfg) -> list[str]:
    now = run_settings(cfg)
    return sorted(k for k, v in recorded.items() if k in now and now[k] != v)


def curve(rounds: list[dict]) -> list[dict]:
    """The evaluated rounds of a run (rounds.jsonl records, or RoundRecord.to_json()): round, simulated time and
    every metric of that evaluation, so a curve quoted anywhere has a committed source."""
    return [{"round": r["round"], "sim_time": r.get("sim_time"), **r["eval"]} for r in rounds if r.get("eval")]


def save_results(out: Path, results: dict) -> None:
    """glue.json and its Markdown table, each written whole then renamed: a run killed mid-write, or a reader
    beside it, never sees half a file."""
    write_text_atomic(out, json.dumps(stamp(results, __file__), indent=1, default=float))
    write_text_atomic(out.with_suffix(".md"), markdown(results) + f"\nWritten by `{script_name(__file__)}`.\n")


def read_results(path: Path) -> dict:
    """A glue.json (or a copy of one), checked enough that a wrong file is one clear error, not a traceback."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and {"experiment", "seed"} <= r.keys() for r in runs):
        raise ValueError(
            f"{path}: not a bench_glue results file (needs a 'runs' list of rows with experiment and seed)"
        )
    if not isinstance(data.get("superseded", []), list):
        raise ValueError(f"{path}: 'superseded' must be a list")
    return data


def merge_copies(base: dict, copies: list[dict]) -> dict:
    """Fold into `base` (glue.json as committed) what each copy changed: runs run in parallel each write their own
    copy of the whole file (`--out /tmp/x.json`), and a copy's other rows are the base's as it was when that copy
    started, possibly older than another copy's. So only rows a copy changed or added are taken, together with
    the rows it moved to `superseded` for them; two copies that changed the same (experiment, seed) differently
    are an error rather than a silent choice. A copy's row that `base` has already retired to `superseded` is
    stale, not a change: merging copies one at a time (a later copy started from the same old file as an earlier
    one) must not bring back the rows the earlier merge replaced."""

    def key(row: dict) -> tuple:
        return (row["experiment"], row["seed"])

    merged = copy.deepcopy(base)
    merged.setdefault("superseded", [])
    base_rows = {key(r): r for r in base["runs"]}
    retired = base.get("superseded", [])
    taken: dict[tuple, dict] = {}
    for other in copies:
        changed_here = [row for row in other["runs"] if base_rows.get(key(row)) != row and row not in retired]
        for row in changed_here:
            k = key(row)
            if k in taken and taken[k] != row:
                raise ValueError(f"copies disagree on {k[0]} seed {k[1]}: run it in one copy only")
            taken[k] = row
        replaced_here = {key(row) for row in changed_here}
        for old in other.get("superseded", []):
            # only a replacement this copy recorded retires a row (a copy killed mid-rerun retires nothing)
            if key(old) in replaced_here and old not in merged["superseded"]:
                merged["superseded"].append(old)
    merged["runs"] = [taken.pop(key(r), r) for r in merged["runs"]] + list(taken.values())
    return merged


def backfill_curves(results: dict, runs_root: Path) -> int:
    """Add `curve` to recorded rows that lack it, from their run folder (runs_root/seed<N>/<experiment>), but
    only where that folder still holds the recorded run: its metrics.json must have the row's final score and
    wall time (a folder rerun since holds another run). Returns how many rows were filled."""
    filled = 0
    for row in [*results["runs"], *results.get("superseded", [])]:
        if "curve" in row:
            continue
        folder = runs_root / f"seed{row['seed']}" / row["experiment"]
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
            lines = (folder / "rounds.jsonl").read_text().splitlines()
            rounds = [json.loads(line) for line in lines if line.strip()]
        except (OSError, ValueError):  # gone, or a damaged file: no curve rather than a wrong one
            continue
        if metrics.get("final_score") != row["final_score"] or metrics.get("wall_time_total") != row.get(
            "wall_time_total"
        ):
            continue
        row["curve"] = curve(rounds)
        filled += 1
    return filled


def run_one(config: Path, sets: list[str], centralized: bool = False) -> dict:
    import torch

    from fedranklite.run.budget import budget_report
    from fedranklite.run.checkpoint import CHECKPOINT_NAME, ResumeError
    from fedranklite.run.engine import build_engine

    cfg = run_config(config, sets, centralized)
    quant = cfg.model.quantization
    start = time.perf_counter()
    engine = build_engine(cfg)
    setup = time.perf_counter() - start
    # a run this benchmark started before (killed, or finished but not recorded) continues from its checkpoint
    resume = (cfg.results_dir / CHECKPOINT_NAME).is_file()
    try:
        summary = engine.run(resume=resume).to_json()  # as metrics.json holds it
    except ResumeError as exc:
        print(f"{cfg.experiment_name}: not resumed ({exc}); running afresh", flush=True)
        engine = build_engine(cfg)
        summary = engine.run().to_json()
    data = engine.fed.data
    clients = [c for r in engine.state.records for c in r.clients]
    steps = sum(c.steps for c in clients)
    train_wall = sum(c.wall_seconds for c in clients)
    return {
        "config": str(config.relative_to(ROOT)),
        "experiment": cfg.experiment_name,
        "seed": cfg.seed,
        "centralized": centralized,
        "scheduler": summary["scheduler"],
        "backbone": summary["backbone"],
        "metric": summary["metric"],
        "final_score": summary["final_score"],
        "best_score": summary["best_score"],
        "final_eval": summary["final_eval"],
        "initial_score": (summary.get("initial_eval") or {}).get("score"),
        "head": summary.get("head", "linear"),
        "quantization": quant,
        "memory_profile": summary.get("memory_profile"),
        "target": summary["target"],
        "time_to_target": summary["time_to_target"],
        "deadline_compliance_pct": summary["deadline_compliance_pct"],
        "stragglers_total": summary["stragglers_total"],
        "bytes_up_per_client_round": summary["bytes"]["up_per_client_per_round"],
        "bytes_down_per_client_round": summary["bytes"]["down_per_client_per_round"],
        "fairness_final": summary["fairness_final"],
        "sim_time_total": summary["sim_time_total"],
        "wall_time_total": summary["wall_time_total"],
        "setup_seconds": setup,
        "train_steps": steps,
        "train_steps_per_s": steps / train_wall if train_wall else None,
        "train_samples_per_s": sum(c.samples for c in clients) / train_wall if train_wall else None,
        "peak_memory_mb": max(summary["peak_memory_mb"].values()) if summary["peak_memory_mb"] else None,
        "budget": budget_report(cfg, len(data.train), len(data.eval), engine.fed.partitions),
        "torch_threads": torch.get_num_threads(),
        "settings": run_settings(cfg),
        "pricing": summary.get("pricing"),  # the tiers' prices (since the device-true clock; older rows lack it)
        "curve": curve([r.to_json() for r in engine.state.records]),
    }


def baselines(tasks, glue_dir) -> dict:
    from fedranklite.data.glue import load_glue, trivial_baseline

    out = {}
    for t in tasks:
        train, dev = load_glue(t, glue_dir)
        out[t] = trivial_baseline(t, dev.labels)
    return out


def _fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def _baseline(b: dict) -> str:
    """The trivial baseline's cell: a constant has no Pearson correlation (NaN), read as 0."""
    score = b.get("score", float("nan"))
    what = b.get("predictor") or b.get("what", "")
    if score != score:
        return f"0 ({what}: no correlation; reference bar 0.5)"
    return f"{score:.3f} ({what})"


EARLIER_CLOCK_NOTE = (
    "Clock: rows marked `earlier` carry no `pricing` in the JSON: they were measured before the device-true clock "
    "(MiniLM rows under the analytic time model, SmolLM2 rows under CPU rank profiles with tier factors 1.0 / 0.7 / "
    "0.15 of the profile's own device). Their time-to-target and deadline compliance, and the training steps a "
    "deadline cut (`use_partial`), belong to that clock: the shipped configs now price tiers against an NVIDIA H100 "
    "(1.2 / 0.23 / 0.15, `pricing` in metrics.json), so running a config again does not reproduce those columns. "
    "Rows measured since record their `pricing` and are marked `current`."
)


def clock(rows: list[dict]) -> str:
    """`current` when every row records the tiers' pricing it ran under, `earlier` when one does not."""
    return "current" if all(r.get("pricing") for r in rows) else "earlier"


def markdown(results: dict) -> str:
    runs, base = results["runs"], results["baselines"]
    lines = [EARLIER_CLOCK_NOTE, ""] if any(not r.get("pricing") for r in runs) else []
    lines += [
        "| task | run | backbone | seeds | clock | before training | final dev metric (mean ± sd) | secondary | "
        "trivial baseline | time-to-target (sim s; reached/seeds) | deadline compliance % | "
        "bytes up/down per client-round | fairness p10/p50/p90 (client loss) | train samples/s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict = {}
    for r in runs:
        task = r["experiment"].split("_")[1]
        kind = "centralized" if r["centralized"] else r["scheduler"]
        bb = "SmolLM2-135M" if "smollm2" in r["experiment"] else "MiniLM-L6"
        if r.get("head") == "verbalizer":
            bb += " (LM head" + ("" if r.get("quantization", "none") == "none" else f", {r['quantization']}") + ")"
        groups.setdefault((task, bb, kind), []).append(r)
    for (task, bb, kind), rs in sorted(
        groups.items(), key=lambda kv: (TASKS.index(kv[0][0]), kv[0][1] != "MiniLM-L6", kv[0][2])
    ):
        metric = rs[0]["metric"]
        sec_names = [k for k in ("accuracy", "f1", "spearman") if k != metric and k in (rs[0]["final_eval"] or {})]
        sec = ", ".join(f"{k} {mean_sd([(r['final_eval'] or {}).get(k) for r in rs])}" for k in sec_names[:1])
        ttt = [r["time_to_target"]["sim_seconds"] for r in rs]
        reached = [t for t in ttt if t is not None]
        ttt_txt = f"{np.mean(reached):.0f} ({len(reached)}/{len(rs)})" if reached else f"not reached (0/{len(rs)})"
        fair = [r["fairness_final"] or {} for r in rs]
        fair_txt = "/".join(
            _fmt(
                np.mean([f.get(p) for f in fair if f.get(p) is not None])
                if any(f.get(p) is not None for f in fair)
                else None,
                2,
            )
            for p in ("p10", "p50", "p90")
        )
        b = base.get(task, {})
        lines.append(
            f"| {task} | {kind} | {bb} | {len(rs)} | {clock(rs)} | {mean_sd([r.get('initial_score') for r in rs])} | "
            f"{metric} {mean_sd([r['final_score'] for r in rs])} | {sec or '-'} | "
            f"{_baseline(b)} | {ttt_txt} | "
            f"{np.mean([r['deadline_compliance_pct'] for r in rs]):.0f} | "
            f"{np.mean([r['bytes_up_per_client_round'] for r in rs]) / 1e3:.0f} kB / "
            f"{np.mean([r['bytes_down_per_client_round'] for r in rs]) / 1e3:.0f} kB | {fair_txt} | "
            f"{_fmt(np.mean([r['train_samples_per_s'] or 0 for r in rs]), 1)} | "
            f"{_fmt(np.mean([r['peak_memory_mb'] or 0 for r in rs]), 0)} |"
        )
    budgets = sorted(
        {
            f"{r['experiment']}: {r['budget']['label']}; eval {r['budget']['eval']['eval_rows_used']}/"
            f"{r['budget']['eval']['eval_rows_available']} dev rows; at most "
            f"{r['budget']['total']['max_training_samples']} training samples"
            for r in runs
            if r["seed"] == 0
        }
    )
    return "\n".join(lines) + "\n\nBudgets (seed 0 runs):\n\n" + "\n".join(f"- {b}" for b in budgets) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS / "glue.json"))
    ap.add_argument("--glue-dir", default=None, help="GLUE TSV folder (default: $FEDRANKLITE_GLUE_DIR, else the hub)")
    ap.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="where the runs' folders go (default results/bench_glue; --quick: results/bench_glue_quick)",
    )
    ap.add_argument("--quick", action="store_true", help=f"RTE, seed 0, no centralized, {' '.join(QUICK_SETS)}")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds for RTE, MRPC, STS-B (SST-2, QNLI: 1)")
    ap.add_argument("--no-centralized", action="store_true")
    ap.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M (seed 0), see --smollm2-runs")
    ap.add_argument(
        "--smollm2-seeds",
        default="0",
        help="seeds of the SmolLM2 runs, comma-separated (default 0; the centralized reference: seed 0 only)",
    )
    ap.add_argument("--only-smollm2", action="store_true")
    ap.add_argument(
        "--backfill-curves",
        action="store_true",
        help="add each recorded row's per-round curve from results/bench_glue/ (where the folder still holds that "
        "run), rewrite --out and its .md, and run nothing",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        metavar="COPY",
        help="fold into --out the rows each COPY (a glue.json written by a parallel run) changed or added, rewrite "
        "--out and its .md, and run nothing",
    )
    ap.add_argument(
        "--smollm2-runs",
        default="lite,cvx,centralized,4bit,8bit",
        help="which SmolLM2 runs, in this order per kind: lite, cvx, centralized (every task), 4bit / 8bit (lite "
        "on SST-2 and RTE)",
    )
    ap.add_argument(
        "--rerun",
        default="",
        metavar="NAME[,NAME]",
        help="run these experiments (e.g. glue_rte_lite_smollm2_4bit) again for the selected seeds even where a row "
        "is recorded with the same settings or none; the old rows move to `superseded` (to resume a rerun cut "
        "short, leave this out: the rows it already wrote count as recorded)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help=f"override for every run (default: {' '.join(DEFAULT_SETS)})",
    )
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.seeds, args.no_centralized = "rte", 1, True
        args.set = [*(DEFAULT_SETS if args.set is None else args.set), *QUICK_SETS]
    runs_dir = args.runs_dir or ROOT / "results" / ("bench_glue_quick" if args.quick else "bench_glue")

    def read_or_exit(flag: str, *paths: Path) -> list[dict]:
        try:
            return [read_results(path) for path in paths]
        except (OSError, ValueError) as exc:
            ap.error(f"{flag}: {exc}")

    if args.merge:
        out = Path(args.out)
        base, *copies = read_or_exit("--merge", out, *map(Path, args.merge))
        merged = merge_copies(base, copies)
        save_results(out, merged)
        print(f"{out}: {len(merged['runs'])} runs, {len(merged['superseded'])} superseded")
        return 0
    if args.backfill_curves:
        out = Path(args.out)
        (results,) = read_or_exit("--backfill-curves", out)
        filled = backfill_curves(results, runs_dir)
        save_results(out, results)
        missing = sum("curve" not in r for r in [*results["runs"], *results.get("superseded", [])])
        print(f"{out}: {filled} curves added; {missing} rows without one (their run folder is gone or was rerun)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.glue_dir:
        os.environ["FEDRANKLITE_GLUE_DIR"] = args.glue_dir
    if os.environ.get("FEDRANKLITE_GLUE_DIR"):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    sets = list(DEFAULT_SETS if args.set is None else args.set)
    tasks = [t for t in args.tasks.split(",") if t]
    try:
        smol_seeds = sorted({int(x) for x in args.smollm2_seeds.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--smollm2-seeds: {args.smollm2_seeds!r}: comma-separated seeds, e.g. 0,1,2")
    if not smol_seeds or min(smol_seeds) < 0:
        ap.error(f"--smollm2-seeds: {args.smollm2_seeds!r}: at least one seed, each >= 0")
    out = Path(args.out)
    old = None
    if out.exists():  # resume: keep runs done already (e.g. the SmolLM2 runs added later); read before any work
        (old,) = read_or_exit("--out", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # order: every task once (seed 0, both schedulers, centralized), then SmolLM2, then the other seeds,
    # so a run cut short still has a row for every task
    plan = []
    if not args.only_smollm2:
        for t in tasks:
            plan += [(CONFIGS / f"{t}_{sched}.yaml", 0, False) for sched in ("cvx", "lite")]
            if not args.no_centralized:
                plan.append((CONFIGS / f"{t}_lite.yaml", 0, True))
    smol: list = []  # (config, seed, centralized, extra --set values)
    if args.smollm2 or args.only_smollm2:
        for kind in args.smollm2_runs.split(","):
            for t in tasks:
                lite_config = CONFIGS / "smollm2" / f"{t}_lite.yaml"
                quantized = kind in ("4bit", "8bit") and t in ("sst2", "rte")
                if quantized:  # one clock for every seed: the fp32 profile
                    quant = [f"model.quantization={kind}", f"timing.profile={fp32_profile(lite_config, sets)}"]
                for seed in smol_seeds:
                    if kind in ("lite", "cvx"):
                        smol.append((CONFIGS / "smollm2" / f"{t}_{kind}.yaml", seed, False, []))
                    elif kind == "centralized" and seed == 0:
                        smol.append((lite_config, 0, True, []))
                    elif quantized:
                        smol.append((lite_config, seed, False, quant))
    if not args.only_smollm2:
        plan += [
            (CONFIGS / f"{t}_{sched}.yaml", s, False)
            for s in range(1, args.seeds)
            for t in tasks
            if t in SMALL
            for sched in ("cvx", "lite")
        ]
    # SmolLM2 runs keep their configs' evaluation schedule (round 0, 5, 10); only the dev sample is capped
    smol_sets = [x for x in sets if not x.startswith("evaluation.eval_every")]
    jobs = [(c, s, central, sets) for c, s, central in plan] + [
        (c, s, central, [*smol_sets, *x]) for c, s, central, x in smol
    ]
    runs = []
    for config, seed, central, job_sets in jobs:
        run_sets = [*job_sets, f"seed={seed}", f"output_dir={runs_dir / f'seed{seed}'}"]
        runs.append((config, seed, central, run_sets, run_config(config, run_sets, central)))
    rerun = {x.strip() for x in args.rerun.split(",") if x.strip()}
    unknown = sorted(rerun - {cfg.experiment_name for *_, cfg in runs})
    if unknown:  # a typo would otherwise rerun nothing and say nothing
        ap.error(f"--rerun: {', '.join(unknown)}: not among the selected runs (check --tasks, --smollm2-runs)")
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "overrides": sets,
        "baselines": baselines(tasks, os.environ.get("FEDRANKLITE_GLUE_DIR")),
        "runs": [],
        "superseded": [],  # rows whose config changed after they were recorded (kept, not shown in glue.md)
    }
    if old is not None:
        # SmolLM2 runs recorded before the LM-head (verbalizer) recipe had a fresh linear head: superseded
        results["runs"] = [r for r in old.get("runs", []) if "smollm2" not in r["experiment"] or "head" in r]
        results["superseded"] = old.get("superseded", [])
    # (experiment, seed) -> the settings it ran with (None: recorded before they were kept)
    done = {(r["experiment"], r["seed"]): r.get("settings") for r in results["runs"]}
    for config, seed, central, run_sets, cfg in runs:
        key = (cfg.experiment_name, seed)
        changed = changed_settings(done[key], cfg) if done.get(key) else []
        forced = cfg.experiment_name in rerun
        if key in done and not changed and not forced:
            continue
        if key in done:  # its config changed since it was recorded (or --rerun): the old row is superseded
            why = f"{', '.join(changed)} changed since it was recorded" if changed else "--rerun"
            print(f"{cfg.experiment_name} seed {seed}: {why}; running again")
            results["superseded"] += [r for r in results["runs"] if (r["experiment"], r["seed"]) == key]
            results["runs"] = [r for r in results["runs"] if (r["experiment"], r["seed"]) != key]
        t0 = time.perf_counter()
        rec = run_one(config, run_sets, central)
        print(
            f"{rec['experiment']} seed {seed}: {rec['metric']}={rec['final_score']:.3f} "
            f"({time.perf_counter() - t0:.0f}s, {rec['train_samples_per_s']:.1f} samples/s)",
            flush=True,
        )
        results["runs"].append(rec)
        save_results(out, results)
    save_results(out, results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
