"""`fedranklite flower plan`: the multi-host Flower deployment of a config, one folder per host
(backends/flower/plan.py; docs/flower-multihost.md says what to copy where)."""

from __future__ import annotations

import argparse
import sys


def cmd_flower_plan(args: argparse.Namespace) -> int:
    from fedranklite.backends.flower.plan import main as plan_main
    from fedranklite.config.schema import ConfigError

    argv = ["--config", args.config, "--out", args.out, "--python", args.python]
    argv += [x for item in args.set or () for x in ("--set", item)]
    argv += [x for name in args.name or () for x in ("--name", name)]
    try:
        return plan_main(argv)
    except (ConfigError, ValueError, OSError) as exc:  # one line, naming the file or key
        print(f"error: {exc}", file=sys.stderr)
        return 2
