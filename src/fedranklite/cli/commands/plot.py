"""`fedranklite plot`: PNG figures of finished (or running) runs."""

from __future__ import annotations

import argparse

from fedranklite.cli.display import cannot_write, error


def cmd_plot(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fedranklite.study.plots import ResultsError, plot_run

    console = Console(stderr=True)
    for folder in args.results:
        try:
            paths = plot_run(folder, args.out)
        except ResultsError as exc:
            return error(console, exc)
        except OSError as exc:
            return cannot_write(console, "--out", exc)
        for path in paths:
            print(path)
    return 0
