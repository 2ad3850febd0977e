"""Collect the positive control's finished runs into the repository and report them.

    python experiments/positive_control/collect.py            # copy finished runs, write summary, report
    python experiments/positive_control/collect.py --no-report

The sweep (`fedranklite sweep experiments/positive_control/sweep.yaml --workers 1`) writes its runs into the
git-ignored `_work/sweep/<arm>/seed<k>/`. For every finished run (its `done.json` written by the sweep) this copies
metrics.json, rounds.jsonl and config.yaml into `runs/<arm>/seed<k>/`, with machine paths replaced
(the repository root by nothing: paths become repository-relative; any other absolute path by `<path>`), writes
`summary.json` / `summary.md` (per run: final accuracy, mean round time, accepted share, compliance, mean rank per
tier) and, once every arm has at least two finished seeds, runs `fedranklite report` on the sweep folder into
`report/` (report.md, report.json and the figures, paths replaced the same way). Spec: SPEC.md.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SWEEP = HERE / "_work" / "sweep"
RUNS = HERE / "runs"
REPORT = HERE / "report"
SCRIPT = "experiments/positive_control/collect.py"
ARMS = ("fixed8_drop", "cvx", "fixed8_wait", "fixed2_drop", "uniform", "lite")
TIERS = ("gpu_fast", "gpu_medium", "cpu_slow")
FILES = ("metrics.json", "rounds.jsonl", "config.yaml")
# absolute paths of this machine (after the repository root is made relative): a path under a top-level folder
OTHER_PATH = re.compile(r"(?<![\w.<])/(?:tmp|work|root|home|usr|opt|var|mnt|scratch)(?:/[^\s\"',:;)\]}]*)?")


def scrub(text: str) -> str:
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    return OTHER_PATH.sub("<path>", text)


def finished_runs() -> list[tuple[str, int, Path]]:
    out = []
    for arm in ARMS:
        for folder in sorted((SWEEP / arm).glob("seed*")):
            if (folder / "done.json").is_file() and all((folder / f).is_file() for f in FILES):
                out.append((arm, int(folder.name[4:]), folder))
    return out


def copy_run(arm: str, seed: int, folder: Path) -> Path:
    dest = RUNS / arm / f"seed{seed}"
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


def write_summary(rows: list[dict]) -> None:
    (HERE / "summary.json").write_text(
        json.dumps({"script": SCRIPT, "spec": "experiments/positive_control/SPEC.md", "runs": rows}, indent=1) + "\n"
    )
    lines = [
        f"Written by `{SCRIPT}` from runs/ (spec: SPEC.md).",
        "",
        "# Positive control with real training: per run",
        "",
        "| arm | seed | final acc. | s / round | accepted % | compliance % | mean rank | fast tier: accepted %, rank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fast = r["tiers"]["gpu_fast"]
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['final_accuracy']:.3f} | {r['mean_round_s']:.3f} | "
            f"{r['accepted_pct']:.0f} | {r['client_compliance_pct']:.0f} | {r['mean_rank']:.2f} | "
            f"{fast['accepted_pct']:.0f}, {fast['mean_rank']:.1f} |"
        )
    lines += ["", f"Written by `{SCRIPT}`."]
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")


def report() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fedranklite", "report", str(SWEEP), "--out", tmp, "--seed", "0"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        REPORT.mkdir(exist_ok=True)
        for f in Path(tmp).iterdir():
            if f.suffix == ".json":
                data = json.loads(scrub(f.read_text()))
                (REPORT / f.name).write_text(json.dumps({"script": SCRIPT, **data}, indent=1) + "\n")
            elif f.suffix == ".md":
                (REPORT / f.name).write_text(scrub(f.read_text()).rstrip("\n") + f"\n\nWritten by `{SCRIPT}`.\n")
            elif f.is_file():
                shutil.copy(f, REPORT / f.name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for arm, seed, folder in finished_runs():
        rows.append(summarize(arm, seed, copy_run(arm, seed, folder)))
    rows.sort(key=lambda r: (r["seed"], ARMS.index(r["arm"])))
    write_summary(rows)
    per_arm = {a: sum(r["arm"] == a for r in rows) for a in ARMS}
    print(f"{len(rows)} finished runs: {per_arm}")
    if not args.no_report and min(per_arm.values()) >= 2:
        report()
        print(f"report written to {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
