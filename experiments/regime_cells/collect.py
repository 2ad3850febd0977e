"""Collect the real-training regime cells' finished runs into the repository and report each cell.

    python experiments/regime_cells/collect.py               # every cell: copy finished runs, summary, reports
    python experiments/regime_cells/collect.py --no-report
    python experiments/regime_cells/collect.py --restore     # on a fresh clone: the committed runs back into the
                                                             # work folders, marked finished (the sweeps skip them)

Each cell is one sweep spec `experiments/regime_cells/<cell>.yaml`, run by `fedranklite sweep` into the
git-ignored `_work/<cell>/<arm>/seed<k>/`. For every finished run (its `done.json` written by the sweep) this copies
metrics.json, rounds.jsonl and config.yaml into `runs/<cell>/<arm>/seed<k>/` with machine paths replaced (the
repository root by nothing, so paths become repository-relative; any other absolute path by `<path>`), writes
`summary.json` / `summary.md` (per run: final accuracy, mean round time, accepted share, compliance, mean rank per
tier) and, for each cell whose every arm has at least two finished seeds, runs `fedranklite report` on the cell's
sweep folder into `report/<cell>/` (paths replaced the same way). Spec: SPEC.md.

`collect_sweep` is the part any sweep-based study can reuse (the positive control does).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPT = "experiments/regime_cells/collect.py"
TIERS = ("gpu_fast", "gpu_medium", "cpu_slow")
FILES = ("metrics.json", "rounds.jsonl", "config.yaml")
# absolute paths of this machine (after the repository root is made relative): a path under a top-level folder
OTHER_PATH = re.compile(r"(?<![\w.<])/(?:tmp|work|root|home|usr|opt|var|mnt|scratch)(?:/[^\s\"',:;)\]}]*)?")


def scrub(text: str) -> str:
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    return OTHER_PATH.sub("<path>", text)


def spec_arms(spec: Path) -> tuple[list[str], Path]:
    """The arms (sweep cells, in order) of a sweep spec and its output folder (relative to the repository)."""
    data = yaml.safe_load(spec.read_text())
    return list(data["schedulers"]), ROOT / data["output_dir"]


def finished_runs(sweep: Path, arms: list[str]) -> list[tuple[str, int, Path]]:
    out = []
    for arm in arms:
        for folder in sorted((sweep / arm).glob("seed*")):
            if (folder / "done.json").is_file() and all((folder / f).is_file() for f in FILES):
                out.append((arm, int(folder.name[4:]), folder))
    return out


def copy_run(folder: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (dest / name).write_text(scrub((folder / name).read_text()))
    return dest


def summarize(arm: str, seed: int, dest: Path) -> dict:
    metrics = json.loads((dest / "metrics.json").read_text())
    records = [json.loads(x) for x in (dest / "rounds.jsonl").read_text().splitlines() if x.strip()]
    clients = [c for r in records for c in r["clients"]]
    rounds = metrics["rounds_completed"]
    tiers = {}
    for t in TIERS:
        mine = [c for c in clients if c["tier"] == t]
        tiers[t] = {
            "accepted_pct": 100.0 * sum(c["status"] == "accepted" for c in mine) / max(len(mine), 1),
            "mean_rank": sum(c["rank"] for c in mine) / max(len(mine), 1),
        }
    return {
        "arm": arm,
        "seed": seed,
        "rounds": rounds,
        "final_accuracy": metrics["final_score"],
        "best_accuracy": metrics["best_score"],
        "trivial_baseline": metrics.get("trivial_baseline"),
        "sim_time_total_s": metrics["sim_time_total"],
        "mean_round_s": metrics["sim_time_total"] / rounds,
        "accepted_pct": 100.0 * sum(c["status"] == "accepted" for c in clients) / len(clients),
        "client_compliance_pct": metrics["client_compliance_pct"],
        "mean_rank": sum(c["rank"] for c in clients) / len(clients),
        "tiers": tiers,
        "scores": [r.get("score") for r in records],
    }


def summary_lines(title: str, rows: list[dict]) -> list[str]:
    lines = [
        f"# {title}",
        "",
        "| arm | seed | final acc. | s / round | accepted % | compliance % | mean rank | "
        "accepted %, mean rank: gpu_fast / gpu_medium / cpu_slow |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_tier = " / ".join(f"{r['tiers'][t]['accepted_pct']:.0f}, {r['tiers'][t]['mean_rank']:.1f}" for t in TIERS)
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['final_accuracy']:.3f} | {r['mean_round_s']:.3f} | "
            f"{r['accepted_pct']:.0f} | {r['client_compliance_pct']:.0f} | {r['mean_rank']:.2f} | {per_tier} |"
        )
    return lines


def report(sweep: Path, out: Path, script: str) -> None:
    """`fedranklite report` on a sweep folder, written into `out` with machine paths replaced."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fedranklite", "report", str(sweep), "--out", tmp, "--seed", "0"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        out.mkdir(parents=True, exist_ok=True)
        for f in Path(tmp).iterdir():
            if f.suffix == ".json":
                data = json.loads(scrub(f.read_text()))
                (out / f.name).write_text(json.dumps({"script": script, **data}, indent=1) + "\n")
            elif f.suffix == ".md":
                (out / f.name).write_text(scrub(f.read_text()).rstrip("\n") + f"\n\nWritten by `{script}`.\n")
            elif f.is_file():
                shutil.copy(f, out / f.name)


def collect_sweep(
    sweep: Path, arms: list[str], runs_dir: Path, report_dir: Path, script: str, make_report: bool = True
) -> tuple[list[dict], bool]:
    """Copy a sweep's finished runs into `runs_dir/<arm>/seed<k>/` and summarise them; once every arm that has
    started has at least two finished seeds (and `make_report`), report the sweep into `report_dir`. Returns the
    per-run rows (seed by seed, arms in spec order) and whether a report was written."""
    rows = [
        summarize(arm, seed, copy_run(folder, runs_dir / arm / f"seed{seed}"))
        for arm, seed, folder in finished_runs(sweep, arms)
    ]
    rows.sort(key=lambda r: (r["seed"], arms.index(r["arm"])))
    per_arm = {a: sum(r["arm"] == a for r in rows) for a in arms}
    started = [n for n in per_arm.values() if n]  # an arm added later (a spec amendment) joins once it has run
    reported = make_report and len(started) >= 2 and min(started) >= 2
    if reported:
        report(sweep, report_dir, script)
    return rows, reported


def restore_sweep(runs_dir: Path, sweep: Path, spec: Path) -> int:
    """Copy committed runs (`runs_dir/<arm>/seed<k>/`) into a sweep's work folder where it lacks them, then let
    `fedranklite sweep --mark-only` mark them finished, so that a sweep on a fresh clone runs only what is
    missing. Their config.yaml differs from the sweep's only in output_dir, which the sweep allows."""
    restored = 0
    for run in sorted(runs_dir.glob("*/seed*")):
        dest = sweep / run.parent.name / run.name
        if all((run / f).is_file() for f in FILES) and not (dest / "metrics.json").is_file():
            dest.mkdir(parents=True, exist_ok=True)
            for name in FILES:
                shutil.copy(run / name, dest / name)
            restored += 1
    cmd = [sys.executable, "-m", "fedranklite", "sweep", str(spec), "--mark-only"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return restored


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--restore", action="store_true", help="committed runs back into the work folders; no collecting")
    args = ap.parse_args(argv)
    if args.restore:
        for spec in sorted(HERE.glob("*.yaml")):
            _, sweep = spec_arms(spec)
            print(f"{spec.stem}: {restore_sweep(HERE / 'runs' / spec.stem, sweep, spec)} runs restored")
        return 0
    cells = {}
    lines = [f"Written by `{SCRIPT}` from runs/ (spec: SPEC.md).", ""]
    for spec in sorted(HERE.glob("*.yaml")):
        arms, sweep = spec_arms(spec)
        rows, reported = collect_sweep(
            sweep, arms, HERE / "runs" / spec.stem, HERE / "report" / spec.stem, SCRIPT, not args.no_report
        )
        cells[spec.stem] = rows
        seeds = sorted({r["seed"] for r in rows})
        state = "written" if reported else "not yet"
        print(f"{spec.stem}: {len(rows)} finished runs over {len(seeds)} seeds; report {state}")
        lines += summary_lines(f"{spec.stem}: per run", rows) + [""]
    (HERE / "summary.json").write_text(
        json.dumps({"script": SCRIPT, "spec": "experiments/regime_cells/SPEC.md", "cells": cells}, indent=1) + "\n"
    )
    lines.append(f"Written by `{SCRIPT}`.")
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
