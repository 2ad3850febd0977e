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
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "regime_cells"))
from collect import collect_sweep, restore_sweep, spec_arms, summary_lines  # noqa: E402  (the regime cells' collector, shared)

SCRIPT = "experiments/positive_control/collect.py"
ARMS, SWEEP = spec_arms(HERE / "sweep.yaml")  # the arms and work folder the sweep spec names, in its order


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--restore", action="store_true", help="committed runs back into the work folder; no collecting")
    args = ap.parse_args(argv)
    if args.restore:
        print(f"{restore_sweep(HERE / 'runs', SWEEP, HERE / 'sweep.yaml')} runs restored")
        return 0
    rows, reported = collect_sweep(SWEEP, ARMS, HERE / "runs", HERE / "report", SCRIPT, not args.no_report)
    (HERE / "summary.json").write_text(
        json.dumps({"script": SCRIPT, "spec": "experiments/positive_control/SPEC.md", "runs": rows}, indent=1) + "\n"
    )
    lines = [f"Written by `{SCRIPT}` from runs/ (spec: SPEC.md).", ""]
    lines += summary_lines("Positive control with real training: per run", rows)
    (HERE / "summary.md").write_text("\n".join([*lines, "", f"Written by `{SCRIPT}`."]) + "\n")
    per_arm = {a: sum(r["arm"] == a for r in rows) for a in ARMS}
    print(f"{len(rows)} finished runs: {per_arm}; report {'written' if reported else 'not yet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
