"""`fedranklite sweep` and `fedranklite report`: a grid of runs over one base config, and its statistics."""

from __future__ import annotations

import argparse
import sys


def cmd_sweep(args: argparse.Namespace) -> int:
    from fedranklite.study.sweep import main as sweep_main

    spec = args.config or args.spec
    if spec is None or (args.config and args.spec and args.config != args.spec):
        print("error: sweep needs one spec: SPEC or --config SPEC", file=sys.stderr)
        return 2
    return sweep_main(
        spec, args.workers, args.launcher, args.dry_run, args.seeds, args.mark_only, args.retries, args.set or ()
    )


def cmd_report(args: argparse.Namespace) -> int:
    from fedranklite.study.report import main as report_main

    return report_main(args.sweep_dir, args.out, args.reference, args.resamples, args.seed)
