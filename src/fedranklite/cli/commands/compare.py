"""`fedranklite compare`: a table of the headline metrics of several runs (and their curves in one figure)."""

from __future__ import annotations

import argparse
import sys

from fedranklite.cli.display import cannot_write, error


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fedranklite.study.plots import ResultsError, compare_rows, config_differences, plot_compare

    console = Console(width=None if sys.stdout.isatty() else 200)  # files and pipes get the whole table
    try:
        header, rows = compare_rows(args.results)
    except ResultsError as exc:
        return error(Console(stderr=True), exc)
    for line in config_differences(args.results):  # a scheduler comparison should change only the scheduler
        print(line, file=sys.stderr)
    table = Table(title="FedRankLite runs")
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i < 3 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if args.out:
        try:
            print(plot_compare(args.results, args.out))
        except OSError as exc:
            return cannot_write(Console(stderr=True), "--out/--plot", exc)
    return 0
