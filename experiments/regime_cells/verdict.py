"""The real-training verdict of the regime map: one table over its real-training cells (the positive control and
the regime cells, `experiments/regime_cells/*.yaml`), from their `fedranklite report` outputs.

    python experiments/regime_cells/verdict.py [--out DIR]   # -> DIR/verdict.md, DIR/verdict.json
                                                                # (default DIR: benchmarks/results)

`benchmarks/run_all.py verdict` runs it too: it reads the committed reports only (no training), so the verdict
sits with the benchmark results while each cell's spec, notes and runs stay with its study.

Per cell and arm, against the cell's reference (`fixed` at r_bar 8): the primary metric (accuracy averaged over the
cell's common simulated horizon), round time and final accuracy as mean paired differences with their BCa 95 % CI,
wins/losses/ties, Wilcoxon p after Holm over the cell's comparisons and the paired-t minimum detectable effect
(alpha 0.05, power 0.8). A difference is *shown* when its Holm p < 0.05 and its CI excludes 0; otherwise it is
read as "no difference larger than the MDE". Cells with fewer than 10 paired seeds are marked as unfinished.
verdict.json keeps every per-seed paired difference (`differences`: seed -> arm minus reference).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPT = "experiments/regime_cells/verdict.py"
OUT = ROOT / "benchmarks" / "results"
PLANNED_SEEDS = 10
METRICS = (("auc", "AUC / horizon"), ("sec_per_round", "s / round"), ("final_score", "final acc."))


def cells() -> dict[str, Path]:
    """Cell name -> its report.json (the positive control first, then the regime cells in file order)."""
    out = {"positive_control": ROOT / "experiments/positive_control/report/report.json"}
    for spec in sorted(HERE.glob("*.yaml")):
        out[spec.stem] = HERE / "report" / spec.stem / "report.json"
    return out


def shown(p: dict) -> bool:
    return p.get("holm_p") is not None and p["holm_p"] < 0.05 and p["ci"][0] * p["ci"][1] > 0


def cell_rows(report: dict) -> list[dict]:
    """One row per non-reference arm: {arm, n, <metric>: {mean, ci, wins, losses, ties, holm_p, mde, shown}}."""
    per_arm: dict[str, dict] = {}
    for p in report["paired"]:
        if p["metric"] not in dict(METRICS) or p.get("mean") is None:
            continue
        row = per_arm.setdefault(p["cell"], {"arm": p["cell"], "n": p["n"]})
        row[p["metric"]] = {
            "mean": p["mean"],
            "ci": p["ci"],
            "wins": p["wins"],
            "losses": p["losses"],
            "ties": p["ties"],
            "holm_p": p.get("holm_p"),
            "mde": p.get("mde"),
            "shown": shown(p),
            "lower_is_better": p["lower_is_better"],
            "differences": p.get("differences"),  # seed -> arm minus reference
        }
    return list(per_arm.values())


def reference_means(report: dict) -> dict[str, float]:
    ref = next(c for c in report["cells"] if c["cell"] == report["reference"])
    return {k: ref["metrics"][k]["mean"] for k, _ in METRICS if k in ref["metrics"]}


def reading(rows: list[dict], finished: bool) -> str:
    """The cell's answer on the primary metric: the arms shown better than the reference (best first), or none."""
    better = [r for r in rows if "auc" in r and r["auc"]["shown"] and r["auc"]["mean"] > 0]
    worse = [r for r in rows if "auc" in r and r["auc"]["shown"] and r["auc"]["mean"] < 0]
    parts = []
    if better:
        better.sort(key=lambda r: -r["auc"]["mean"])
        parts.append("better than the reference: " + ", ".join(f"`{r['arm']}` {r['auc']['mean']:+.3f}" for r in better))
    if worse:
        parts.append("worse: " + ", ".join(f"`{r['arm']}` {r['auc']['mean']:+.3f}" for r in worse))
    nulls = [r for r in rows if "auc" in r and not r["auc"]["shown"]]
    if nulls:
        parts.append(
            ("no difference larger than the MDE: " if finished else "not shown yet: ")
            + ", ".join(f"`{r['arm']}` (MDE {r['auc']['mde']:.3f})" for r in nulls if r["auc"]["mde"] is not None)
        )
    return "; ".join(parts) or "no paired comparison yet"


def fmt(m: dict | None, digits: int = 3) -> str:
    if m is None:
        return "-"
    star = "**" if m["shown"] else ""
    lo, hi = m["ci"]
    holm = "-" if m["holm_p"] is None else f"{m['holm_p']:.2g}"
    return (
        f"{star}{m['mean']:+.{digits}f}{star} [{lo:+.{digits}f}, {hi:+.{digits}f}] "
        f"{m['wins']}/{m['losses']}/{m['ties']}, Holm p {holm}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="folder for verdict.md and verdict.json")
    folder = ap.parse_args(argv).out
    folder.mkdir(parents=True, exist_ok=True)
    out = {"script": SCRIPT, "planned_seeds": PLANNED_SEEDS, "cells": {}}
    lines = [
        "# Real-training verdict of the regime map",
        "",
        "Paired differences against `fixed` at r_bar 8 in each cell (d = arm - reference, mean over seeds, BCa 95 %",
        "CI, wins/losses/ties, Wilcoxon p after Holm over the cell's comparisons); **bold** = shown (Holm p < 0.05",
        "and the CI excludes 0). Primary metric: accuracy averaged over the cell's common simulated horizon. Specs:",
        "`experiments/positive_control/SPEC.md`, `experiments/regime_cells/SPEC.md`; runs and notes beside them.",
        "Every per-seed paired difference: `verdict.json` (`differences`).",
        "",
    ]
    for name, path in cells().items():
        if not path.is_file():
            lines += [f"## {name}", "", "No report yet.", ""]
            continue
        report = json.loads(path.read_text())
        rows = cell_rows(report)
        n = max((r["n"] for r in rows), default=0)
        ref = reference_means(report)
        finished = n >= PLANNED_SEEDS
        state = "" if finished else f" (unfinished: {n} of {PLANNED_SEEDS} paired seeds)"
        out["cells"][name] = {
            "reference": report["reference"],
            "reference_means": ref,
            "horizon_sim_seconds": report.get("horizon_sim_seconds"),
            "pairs": n,
            "reading": reading(rows, finished),
            "arms": rows,
        }
        lines += [
            f"## {name}{state}",
            "",
            f"Reference `{report['reference']}`: AUC / horizon {ref.get('auc', float('nan')):.3f}, "
            f"{ref.get('sec_per_round', float('nan')):.3f} s / round, final accuracy "
            f"{ref.get('final_score', float('nan')):.3f}; horizon {report.get('horizon_sim_seconds', 0):.2f} "
            f"simulated s. Reading: {reading(rows, finished)}.",
            "",
            "| arm | pairs | d AUC / horizon | MDE | d s / round | d final accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            mde = r.get("auc", {}).get("mde")
            lines.append(
                f"| {r['arm']} | {r['n']} | {fmt(r.get('auc'))} | {'-' if mde is None else f'{mde:.3f}'} | "
                f"{fmt(r.get('sec_per_round'))} | {fmt(r.get('final_score'))} |"
            )
        lines.append("")
    lines.append(f"Written by `{SCRIPT}`.")
    (folder / "verdict.md").write_text("\n".join(lines) + "\n")
    (folder / "verdict.json").write_text(json.dumps(out, indent=1) + "\n")
    shown_as = folder.resolve().relative_to(ROOT) if folder.resolve().is_relative_to(ROOT) else folder
    print(f"wrote {shown_as / 'verdict.md'} and verdict.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
