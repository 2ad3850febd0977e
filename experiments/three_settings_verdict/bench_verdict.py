"""The scheduler verdict: `fedranklite report` over the three verdict sweeps, condensed into one table.

    fedranklite sweep experiments/three_settings_verdict/sweeps/a_headline.yaml --workers 2   # and b_comm, c_hidden
    python experiments/three_settings_verdict/bench_verdict.py   # -> verdict.{md,json} beside it

Each sweep's full report (every metric, every paired difference, figures) goes to
experiments/three_settings_verdict/reports/<setting>/; verdict.md holds the condensed table: per scheduler the final
accuracy, how many seeds reached the target, time-to-target, simulated seconds per round and bytes, each a
mean over seeds with a 95 % bootstrap CI, and the paired difference against the seed's `lite` (same seed:
same data split, client selection and hidden client speeds). A sweep still running is reported as far as
it has got, and says so.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import portable, script_name, stamp  # noqa: E402

from fedranklite.core.results_io import write_json_atomic, write_text_atomic  # noqa: E402
from fedranklite.study.report import build, markdown, plot_curves, plot_ttt  # noqa: E402

OUT = HERE
SPECS = HERE.relative_to(ROOT) / "sweeps"
SETTINGS = {
    "a": ("headline: MiniLM, Dirichlet 0.1, 90 s deadline, profiled cost model", "verdict_a", "a_headline.yaml"),
    "b": ("communication-bound: all-linear adapters, every client on a 9.3 Mbit/s uplink", "verdict_b", "b_comm.yaml"),
    "c": (
        "hidden heterogeneity: speed/bandwidth sigma 0.8, jitter 0.3, availability 0.8",
        "verdict_c",
        "c_hidden.yaml",
    ),
}


def _ci(est: dict, digits: int, scale: float = 1.0) -> str:
    if not est or est.get("mean") is None:
        return "–"
    mean = est["mean"] * scale
    if not est.get("ci"):
        return f"{mean:.{digits}f}"
    lo, hi = (v * scale for v in est["ci"])
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _paired(report: dict, cell: str, metric: str) -> dict:
    for row in report["paired"]:
        if row["cell"] == cell and row["metric"] == metric:
            return row
    return {}


def _delta(row: dict, digits: int) -> str:
    if not row or row.get("mean") is None:
        return "–"
    star = "*" if row.get("excludes_zero") else ""
    text = _ci(row, digits)
    return f"{'+' if row['mean'] > 0 else ''}{text}{star}"


def _wlt(row: dict) -> str:
    text = f"{row.get('wins', 0)}/{row.get('losses', 0)}/{row.get('ties', 0)}"
    return text + (f" (p={row['sign_p']:.2f})" if row.get("sign_p") is not None else "")


def condensed(report: dict) -> str:
    header = [
        "scheduler",
        "seeds",
        "final accuracy",
        "reached target",
        "time to target, sim s (reached runs)",
        "median (unreached = ∞)",
        "Δ time to target vs lite (both reached)",
        "W/L/T vs lite (sooner wins; sign test p)",
        "sim s per round",
        "Δ sim s per round vs lite",
        "KB up per client-round",
    ]
    rows = []
    for cell in report["cells"]:
        m, name = cell["metrics"], cell["group"]
        ttt, spr = _paired(report, name, "ttt_seconds"), _paired(report, name, "sec_per_round")
        median = cell.get("ttt_median_censored")
        rows.append(
            [
                f"**{name}**" if name == report["reference"] else name,
                f"{cell['n']}/{cell['planned']}",
                _ci(m["final_score"], 3),
                f"{cell['reached']}/{cell['n']}",
                _ci(m["ttt_seconds"], 1),
                "not reached" if median is None and cell["n"] else ("–" if median is None else f"{median:.1f}"),
                "reference" if name == report["reference"] else _delta(ttt, 1),
                "–" if name == report["reference"] else _wlt(ttt),
                _ci(m["sec_per_round"], 2),
                "reference" if name == report["reference"] else _delta(spr, 2),
                _ci(m["kb_up"], 0),
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resamples", type=int, default=10000)
    args = ap.parse_args()
    sections, everything = [], {}
    for key, (title, folder, spec) in SETTINGS.items():
        sweep_dir = ROOT / "results" / "sweeps" / folder
        if not (sweep_dir / "sweep.json").exists():
            sections.append(f"## ({key}) {title}\n\nNot run yet: `fedranklite sweep {SPECS.as_posix()}/{spec}`.\n")
            continue
        report, finished = build(sweep_dir, None, args.resamples, 0)
        report = portable(report)  # the sweep folder repository-relative, as in the committed reports
        out = OUT / "reports" / key
        write_text_atomic(out / "report.md", markdown(report) + f"\nWritten by `{script_name(__file__)}`.\n")
        write_json_atomic(out / "report.json", stamp(report, __file__))
        if finished:
            plot_ttt(report, out / "ttt.png")
            plot_curves(report, finished, out / "curves.png", min(args.resamples, 1000), 0)
        everything[key] = report
        runs, budget = report["runs"], report["budget"]
        wall = sum(f.summary.wall_time_total for f in finished)
        state = (
            f"all {runs['total']} runs finished"
            if not runs["missing"]
            else f"**incomplete: {runs['finished']} of {runs['total']} runs finished**"
        )
        sections.append(
            f"## ({key}) {title}\n\n"
            f"Spec `{SPECS.as_posix()}/{spec}`; {state}; seeds {budget['seeds'][0]}-{budget['seeds'][-1]} "
            f"paired across schedulers; {', '.join(map(str, budget['rounds']))} rounds of "
            f"{', '.join(map(str, budget['clients_per_round']))} of {', '.join(map(str, budget['clients']))} "
            f"clients; target {report['target']} {report['metric']}; {wall / 3600:.1f} h of round wall time "
            f"(one torch thread per run, 2 runs at a time on 2 cores). Full report, every metric and figures: "
            f"`{(OUT / 'reports').relative_to(ROOT).as_posix()}/{key}/`.\n\n{condensed(report)}\n"
        )
    text = (
        "# Which scheduler reaches the target soonest? The verdict\n\n"
        "Means over seeds with 95 % percentile-bootstrap CIs (10,000 resamples). Δ columns: paired difference "
        "cell − lite over seeds, paired bootstrap CI, `*` when the CI excludes 0, at least 8 pairs entered it and, "
        "for time to target, no pair had an unreached run (negative = sooner / shorter). Percentile-bootstrap CIs "
        "over 10 seeds under-cover (about 91 % for nominal 95 % in simulation): a star near the edge is weak "
        "evidence. "
        "Time to target is the simulated seconds until the global model first scores the target; a run that "
        "never reaches it is counted in 'reached' and as ∞ in the median and in W/L/T, and left out of the means. "
        f"Machine: {platform.machine()}, {platform.python_version()}; simulated time is deterministic (profile "
        f"mode), so the machine's load changes wall time only. Generated by `{script_name(__file__)}`.\n\n"
        + "\n".join(sections)
    )
    write_text_atomic(OUT / "verdict.md", text + f"\nWritten by `{script_name(__file__)}`.\n")
    write_json_atomic(
        OUT / "verdict.json",
        stamp({"settings": {k: v[0] for k, v in SETTINGS.items()}, "reports": everything}, __file__),
    )
    print(text)


if __name__ == "__main__":
    main()
