"""Run every maintained benchmark (each bench_*.py here, in its own process) and write summary.md.

    python benchmarks/run_all.py                    # every benchmark, full budgets -> benchmarks/results/
    python benchmarks/run_all.py overhead memory    # a subset, by name
    python benchmarks/run_all.py --quick            # every benchmark at a toy budget -> results/benchmarks_quick/
    python benchmarks/run_all.py --list             # name, script, what it measures, its quick arguments
    python benchmarks/run_all.py --summary-only     # rewrite summary.md from the results already there

BENCHES names every bench_*.py in this folder (tests/test_results_files.py checks it against the folder). Each
benchmark writes its JSON (with the "script" that wrote it) into the results folder, which its process gets as
$FEDRANKLITE_BENCH_RESULTS; summary.md there names, for each figure, the script that produced it. `--quick` is a
check that every benchmark runs end to end, not a result (33 min on a 2-core CPU shared with other work, load
average ~10; GLUE, surrogate and Flower ~6 min each): it writes elsewhere (default results/benchmarks_quick/,
ignored by git) so the recorded numbers stay. The full run takes hours (the GLUE suite ~2 h, the aggregators
~2.5 core-hours, the surrogate's cost at 1k-100k clients ~10 min). The GLUE benchmarks read the TSVs from
$FEDRANKLITE_GLUE_DIR (else ../shared/data/glue beside the repository) and are skipped, and said so, where
neither exists. One-off studies are not benchmarks: they live in experiments/.

Scheduler quality reports simulated time, so its table is shown only from a quality.json that records the tiers'
pricing it was measured under (written since the device-true clock); an older file is named as superseded
instead of being summarised.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
QUICK_RESULTS = ROOT / "results" / "benchmarks_quick"


@dataclass(frozen=True)
class Bench:
    script: str  # in this folder, or a path from the repository root (a study's script that only reads its runs)
    about: str
    quick: tuple[str, ...] = ("--quick",)  # arguments of a quick run ({results}: the results folder)
    full: tuple[str, ...] = ()  # arguments of a full run
    glue: tuple[str, ...] = ()  # the modes ("full", "quick") that need the GLUE TSVs


BENCHES: dict[str, Bench] = {
    "schedulers": Bench("bench_schedulers.py", "assign time: lite, cvx (bisect, greedy, cvxpy), N = 10..100k"),
    "aggregation": Bench("bench_aggregation.py", "fedavg / blockwise over 10, 100, 1,000 updates", quick=()),
    "memory": Bench("bench_memory.py", "peak RSS of a 10- vs a 100-client simulation", quick=()),
    "overhead": Bench("bench_overhead.py", "client throughput vs a bare transformers+peft loop"),
    "round_cost": Bench("bench_round.py", "one engine round vs a plain FedAvg loop"),
    "quality": Bench(
        "bench_quality.py", "scheduler quality: lite / fixed / cvx, Dirichlet 0.5 and IID, 3 seeds, reduced budget"
    ),
    "kill_resume": Bench("bench_kill_resume.py", "kill -9 at random moments + --resume: bit-identical adapter?"),
    "aggregators": Bench(
        "bench_aggregators.py", "aggregators x schedulers x seeds, rank-collapse diagnostics", glue=("full",)
    ),
    "glue": Bench(
        "bench_glue.py", "GLUE suite: MiniLM lite / cvx / centralized, seeds, trivial baselines", glue=("full", "quick")
    ),
    "surrogate": Bench(
        "bench_surrogate.py",
        "what-if surrogate: cost (CPU s per round, peak RSS) at N = 1k to 100k clients",
        quick=("--quick", "--out", "{results}/surrogate.json", "--work", "{results}/surrogate_work"),
        full=("--out", "{results}/surrogate.json"),
    ),
    "surrogate_scale": Bench(
        "bench_surrogate_scale.py",
        "surrogate backend at N = 1,000,000 clients: setup, round and scheduler seconds, peak RSS",
        quick=("--clients", "10000", "--per-round", "100", "--rounds", "5", "--profile-rounds", "0"),
    ),
    "regime_map": Bench(
        "experiments/regime_map/analyze.py",
        "time-only regime map: per cell, each scheduler against fixed on round time and compliance, from its records",
        quick=("--out", "{results}"),
        full=("--out", "{results}"),
    ),
    "verdict": Bench(
        "experiments/regime_cells/verdict.py",
        "scheduler verdict over the real-training cells of the regime map, from their committed reports",
        quick=("--out", "{results}"),
        full=("--out", "{results}"),
    ),
    "flower": Bench(
        "bench_flower.py",
        "per-round cost: local engine vs Flower simulation vs Flower deployment",
        quick=("--rounds", "2", "--no-before"),  # 2: its steady-state figure needs a round after the first
    ),
}


def glue_dir() -> Path | None:
    """The GLUE TSV folder the GLUE benchmarks read: $FEDRANKLITE_GLUE_DIR, else ../shared/data/glue."""
    env = os.environ.get("FEDRANKLITE_GLUE_DIR")
    if env:
        return Path(env)
    default = ROOT.parent / "shared" / "data" / "glue"
    return default if default.is_dir() else None


def command(name: str, quick: bool, results: Path) -> list[str]:
    bench = BENCHES[name]
    args = bench.quick if quick else bench.full
    script = ROOT / bench.script if "/" in bench.script else HERE / bench.script
    return [sys.executable, str(script), *(a.format(results=results) for a in args)]


def script_of(name: str) -> str:
    script = BENCHES[name].script
    return script if "/" in script else f"benchmarks/{script}"


def load(results: Path, name: str):
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def yes(flag) -> str:
    return "met" if flag else "**not met**"


def summary_markdown(results: Path = RESULTS, quick: bool = False) -> str:
    """One row per figure: what, measured, target, verdict and the script that produced it (from the results
    files in `results`; a benchmark without results there has no row)."""
    lines = [
        "# FedRankLite benchmarks",
        "",
        "Written by `benchmarks/run_all.py` from the JSON each benchmark wrote beside this file (each names its "
        "script and records the machine and its load average); the last column names the script of each figure.",
        "",
    ]
    if quick:
        lines += ["**Quick run (`--quick`): toy budgets, a check that every benchmark runs, not a result.**", ""]
    lines += ["| figure | measured | target | verdict | script |", "|---|---|---|---|---|"]

    def row(name: str, figure: str, measured: str, target: str, verdict: str) -> None:
        lines.append(f"| {figure} | {measured} | {target} | {verdict} | `{script_of(name)}` |")

    o = load(results, "overhead")
    if o:
        m = o["median_samples_per_s"]
        row(
            "overhead",
            "harness overhead: client vs bare transformers+peft loop (samples/s)",
            f"ours {m['ours_probe32']:.1f} (probe 32) / {m['ours_probe0']:.1f} (probe 0) vs bare {m['bare']:.1f}: "
            f"ratio {o['ratio_ours_vs_bare_probe32']:.2f} / {o['ratio_ours_vs_bare_probe0']:.2f}",
            o.get("target", ""),
            f"{yes(o['met_probe32'])} / {yes(o['met_probe0'])}",
        )
    r = load(results, "round_cost")
    if r:
        m = r["median_seconds_per_round"]
        row(
            "round_cost",
            "round cost: engine (10 clients, fixed rank 8) vs plain FedAvg loop (s/round)",
            f"ours {m['ours_probe32']:.1f} (probe 32) / {m['ours_probe0']:.1f} (probe 0) vs plain {m['plain']:.1f}: "
            f"ratio {r['ratio_ours_vs_plain_probe32']:.2f} / {r['ratio_ours_vs_plain_probe0']:.2f}",
            r.get("target", ""),
            f"{yes(r['met_probe32'])} / {yes(r['met_probe0'])}",
        )
    s = load(results, "schedulers")
    if s:
        lite = {row_["n"]: row_["assign_ms"] for row_ in s["lite"]}
        cvx = s.get("cvx", [])
        cvxpy_1k = [x["assign_ms"] for x in cvx if x["n"] == 1000 and x["method_used"] == "cvxpy"]
        greedy_1k = [x["assign_ms"] for x in cvx if x["n"] == 1000 and x["method_used"] == "greedy"]
        if 10000 in lite:
            row(
                "schedulers",
                "lite assign time at N = 10,000",
                f"{lite[10000]:.3f} ms",
                "<= 1 ms",
                yes(lite[10000] <= 1),
            )
        per_1k = {n: lite[n] / n * 1000 for n in lite}
        row(
            "schedulers",
            "lite time per 1,000 clients, N = " + ", ".join(f"{n:,}" for n in sorted(lite)),
            ", ".join(f"{per_1k[n]:.3f}" for n in sorted(lite)) + " ms",
            "linear in N",
            "see the JSON",
        )
        if cvxpy_1k and 1000 in lite:
            ratio = cvxpy_1k[0] / lite[1000]
            row(
                "schedulers",
                "lite vs cvx at N = 1,000",
                f"lite {lite[1000]:.3f} ms, cvx {cvxpy_1k[0]:.1f} ms (cvxpy) / "
                f"{greedy_1k[0] if greedy_1k else float('nan'):.1f} ms (greedy): {ratio:.0f}x faster than cvxpy",
                ">= 300x",
                yes(ratio >= 300),
            )
    a = load(results, "aggregation")
    if a:
        per = a["per_client_cost_ratio_1000_vs_100"]
        secs = {(x["aggregator"], x["clients"]): x["seconds"] for x in a["rows"]}
        for name in ("fedavg", "blockwise"):
            row(
                "aggregation",
                f"{name} over 10 / 100 / 1,000 updates",
                " / ".join(f"{secs[(name, k)] * 1000:.0f} ms" for k in (10, 100, 1000))
                + f" (per-client cost 1000 vs 100: {per[name]:.2f}x)",
                "linear",
                yes(0.5 <= per[name] <= 2.0),
            )
    mem = load(results, "memory")
    if mem:
        p = mem["peak_rss_mb"]
        row(
            "memory",
            "peak RSS, 100 vs 10 clients",
            f"{p['100_clients']:.0f} MB vs {p['10_clients']:.0f} MB: {mem['ratio']:.3f}",
            "<= 1.2",
            yes(mem["met"]),
        )
    k = load(results, "kill_resume")
    if k:
        row(
            "kill_resume",
            f"kill -9 at {len(k['kills'])} random moments, then --resume ({k['rounds']} rounds, seed {k['seed']})",
            f"final adapter bit-identical: {k['final_adapter_bit_identical']}; scheduler state identical: "
            f"{k['scheduler_state_identical']}",
            "bit-identical",
            yes(k["final_adapter_bit_identical"] and k["scheduler_state_identical"]),
        )
    for name, stem, what in (
        ("glue", "glue", "GLUE suite (every task, run and seed)"),
        ("aggregators", "aggregators", "aggregators x schedulers x seeds, rank collapse"),
        ("surrogate", "surrogate", "what-if surrogate: cost at N = 1k to 100k clients"),
        ("surrogate_scale", "surrogate_million", "surrogate backend at N = 1,000,000 clients"),
        ("flower", "flower", "per-round cost on the local engine, Flower simulation and deployment"),
    ):
        data = load(results, stem)
        if data:
            runs = data.get("runs")
            count = f"{len(runs)} runs; " if isinstance(runs, list) else ""
            if name in ("glue", "aggregators") and isinstance(runs, list):  # runs priced since record `pricing`
                earlier = sum(not r.get("pricing") for r in runs)
                count += f"{earlier} measured under an earlier clock (marked in the table); " if earlier else ""
            where = f"`{stem}.md`" if (results / f"{stem}.md").is_file() else f"`{stem}.json`"
            row(name, what, f"{count}tables in {where}", "-", "-")
    v = load(results, "verdict")
    if v and v.get("cells"):
        cells = v["cells"]
        pairs = min(c["pairs"] for c in cells.values())
        row(
            "verdict",
            "scheduler verdict: the positive control and the regime map's real-training cells",
            f"{len(cells)} cells, >= {pairs} paired seeds each; tables and readings in `verdict.md`, every per-seed "
            "difference in `verdict.json`",
            "a Holm-corrected paired answer or an MDE per comparison",
            "met" if pairs >= v.get("planned_seeds", 10) else "**not met**",
        )
    m = load(results, "regime_map")
    if m and m.get("cells"):
        done = sum(c["complete"] for c in m["cells"])
        control = m.get("positive_control", {}).get("passes")
        row(
            "regime_map",
            "regime map, time only: link speed x heterogeneity x deadline x straggler policy (surrogate)",
            f"{done} of {len(m['cells'])} cells complete; positive control passes: {control}; tables in "
            "`regime_map.md`, every per-seed value in `regime_map.json`",
            "positive control shows the expected winner",
            yes(bool(control)),
        )
    q = load(results, "quality")
    if q and not q.get("pricing"):
        lines += [
            "",
            f"`quality.json` records no pricing: it was measured under an earlier clock and is not summarised "
            f"here; `{script_of('quality')}` measures it again.",
        ]
    elif q:
        lines += [
            "",
            "## Scheduler quality (mean over seeds " + ", ".join(map(str, q["settings"]["seeds"])) + ")",
            "",
            f"From `{script_of('quality')}`.",
            "",
            "| experiment | scheduler | final score | reached target | sim s to target | compliance % | "
            "sim s total | KB up / client-round | client loss p50 / p90 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in q["table"]:
            ttt = "-" if t["ttt_sim_seconds_mean"] is None else f"{t['ttt_sim_seconds_mean']:.0f}"
            lines.append(
                f"| {t['experiment']} | {t['scheduler']} | {t['final_score_mean']:.3f} ± "
                f"{t['final_score_std']:.3f} | {t['reached_target']} | {ttt} | {t['compliance_pct_mean']:.0f} | "
                f"{t['sim_time_total_mean']:.0f} | {t['kb_up_per_client_round']:.0f} | "
                f"{t['client_loss_p50_mean']:.3f} / {t['client_loss_p90_mean']:.3f} |"
            )
    lines += ["", "Written by `benchmarks/run_all.py`."]
    return "\n".join(lines) + "\n"


def listing() -> str:
    width = max(map(len, BENCHES))
    out = []
    for name, b in BENCHES.items():
        quick = " ".join(b.quick) or "(same as full)"
        glue = f"; needs GLUE TSVs ({', '.join(b.glue)})" if b.glue else ""
        out.append(f"{name:<{width}}  {script_of(name)}: {b.about} [quick: {quick}{glue}]")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"a subset: {', '.join(BENCHES)}")
    ap.add_argument("--list", action="store_true", help="print every benchmark and its script, run nothing")
    ap.add_argument("--summary-only", action="store_true", help="rewrite summary.md from the results, run nothing")
    ap.add_argument("--quick", action="store_true", help="each benchmark at a toy budget (a check, not a result)")
    ap.add_argument(
        "--results", type=Path, help="results folder (default: benchmarks/results, --quick: results/benchmarks_quick)"
    )
    args = ap.parse_args(argv)
    if args.list:
        print(listing())
        return 0
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    results = (args.results or (QUICK_RESULTS if args.quick else RESULTS)).resolve()
    results.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        (results / "summary.md").write_text(summary_markdown(results, args.quick))
        print(f"wrote {results / 'summary.md'}")
        return 0
    mode = "quick" if args.quick else "full"
    glue = glue_dir()
    env = {
        **os.environ,
        "FEDRANKLITE_BENCH_RESULTS": str(results),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    if glue:
        env["FEDRANKLITE_GLUE_DIR"] = str(glue)
    start = time.perf_counter()
    failed, skipped = [], []
    for name in args.names or list(BENCHES):
        if mode in BENCHES[name].glue and glue is None:
            print(f"== {name}: skipped (no GLUE TSVs: set FEDRANKLITE_GLUE_DIR)", flush=True)
            skipped.append(name)
            continue
        t = time.perf_counter()
        cmd = command(name, args.quick, results)
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.perf_counter() - t:.0f} s", flush=True)
    (results / "summary.md").write_text(summary_markdown(results, args.quick))
    print(f"wrote {results / 'summary.md'} ({time.perf_counter() - start:.0f} s in all)")
    if skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
