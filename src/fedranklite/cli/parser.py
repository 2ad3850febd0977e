"""The command line's arguments: one sub-parser per command, the same spelling for the same idea.

--config/-c FILE   the YAML a command reads (run, profile; sweep reads its spec so, or as SPEC)
--set KEY=VALUE    a config override, repeatable, on every command that reads a run config
--out PATH         where the command writes what it makes: a folder for commands that write several
                   files (plot, report), a file for those that write one (calibrate, profile, compare's
                   figure). `run` writes to <output_dir>/<experiment_name>/ (--set output_dir=...).
"""

from __future__ import annotations

import argparse

from fedranklite.cli.commands.calibrate import cmd_calibrate
from fedranklite.cli.commands.compare import cmd_compare
from fedranklite.cli.commands.flower import cmd_flower_plan
from fedranklite.cli.commands.init import cmd_init
from fedranklite.cli.commands.plot import cmd_plot
from fedranklite.cli.commands.plugins import KINDS, cmd_list
from fedranklite.cli.commands.profile import cmd_profile
from fedranklite.cli.commands.run import cmd_run
from fedranklite.cli.commands.sweep import cmd_report, cmd_sweep

DESCRIPTION = """Federated LoRA fine-tuning with a per-client rank each round.

  fedranklite init my_study                          a starter config, sweep spec and example data
  fedranklite run --config my_study/config.yaml --dry-run
  fedranklite run --config my_study/config.yaml
  fedranklite list schedulers                        every plugin with its parameters
"""

EPILOG = """Options mean the same on every command: --config/-c is the YAML the command reads, --set KEY=VALUE
overrides a config value (repeatable), --out is where the command writes: a folder when it writes several
files, a file when it writes one. Exit status: 0 done, 1 failed, 2 refused input, 3 run stopped."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help texts with their defaults ("(default: 10)"), left out where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


def _config_options(p: argparse.ArgumentParser, what: str = "experiment YAML (may inherit with _base_)") -> None:
    p.add_argument("--config", "-c", required=True, metavar="FILE", help=what)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.num_rounds=3 (repeatable)",
    )


def _run_parser(sub) -> None:
    run = sub.add_parser("run", help="run one experiment from a YAML config", formatter_class=HelpFormatter)
    _config_options(run)
    run.add_argument("--quiet", "-q", action="store_true", help="log lines instead of a progress bar")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config, where compute prices come from, every client's rows and labels and "
        "an estimate of simulated and wall time; loads the data but no model, writes nothing",
    )
    start_as = run.add_mutually_exclusive_group()
    start_as.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run from <output_dir>/<experiment_name>/checkpoint.safetensors (same config, inputs)",
    )
    start_as.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if the results folder holds an earlier run's results (they are replaced)",
    )
    start_as.add_argument(
        "--new-folder",
        action="store_true",
        help="if the results folder holds an earlier run's results, write to <experiment_name>-2 (-3, ...) instead",
    )
    run.add_argument(
        "--allow-changed",
        action="append",
        default=[],
        metavar="KEY",
        help="with --resume: an input the checkpoint recorded (data, rank_profile, client_trace, backbone, package, "
        "libraries) that may have changed since; the run continues on the changed input (repeatable)",
    )
    run.add_argument(
        "--centralized",
        action="store_true",
        help="the centralized reference of this config: one client with all the training data, "
        "same model, rank and sample budget (results under <experiment_name>_centralized)",
    )
    run.set_defaults(func=cmd_run)


def _result_parsers(sub) -> None:
    plot = sub.add_parser(
        "plot", help="write PNG figures of a finished (or running) experiment", formatter_class=HelpFormatter
    )
    plot.add_argument("results", nargs="+", help="results folder(s), e.g. results/lite_iid")
    plot.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: <results>/plots)")
    plot.set_defaults(func=cmd_plot)

    cal = sub.add_parser(
        "calibrate",
        help="fit the what-if surrogate (engine.backend: surrogate) on a real run",
        formatter_class=HelpFormatter,
    )
    cal.add_argument("results", help="results folder of a finished real run, e.g. results/lite_noniid_deadline")
    cal.add_argument("--out", metavar="FILE", help="where to write the fit (default: <results>/surrogate.json)")
    cal.set_defaults(func=cmd_calibrate)

    compare = sub.add_parser("compare", help="table of headline metrics of several runs", formatter_class=HelpFormatter)
    compare.add_argument("results", nargs="+", help="results folders")
    compare.add_argument(
        "--out", "--plot", dest="out", metavar="PNG", help="also plot every run's score vs simulated time here"
    )
    compare.set_defaults(func=cmd_compare)


def _profile_parser(sub) -> None:
    prof = sub.add_parser(
        "profile",
        help="measure what a LoRA rank costs on this machine (time, memory, bytes)",
        formatter_class=HelpFormatter,
    )
    _config_options(prof, "experiment YAML: its backbone, batch size, sequence length and device")
    prof.add_argument("--ranks", default="1,2,4,8,16,32", help="comma-separated ranks (r_max is always added)")
    prof.add_argument("--repeats", type=int, default=10, help="timed steps per rank (the median is used)")
    prof.add_argument("--warmup", type=int, default=3, help="untimed steps per rank first")
    prof.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice; recorded in the profile)"
    )
    prof.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the profile JSON (default: the cache that timing.mode: profile reads, "
        "in $FEDRANKLITE_CACHE or the user's cache folder)",
    )
    prof.set_defaults(func=cmd_profile)


def _study_parsers(sub) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="run a grid (cells x axes x seeds) over one base config",
        formatter_class=HelpFormatter,
    )
    sweep.add_argument(
        "spec", nargs="?", help="sweep spec YAML: base, seeds, schedulers, optional set/axes/output_dir/reference"
    )
    sweep.add_argument("--config", "-c", metavar="SPEC", help="the sweep spec, as an option (same as SPEC)")
    sweep.add_argument("--workers", type=int, help="parallel runs (local: default 1; slurm: array throttle %%N)")
    sweep.add_argument("--launcher", choices=("local", "slurm"), default="local", help="where the runs execute")
    sweep.add_argument(
        "--dry-run", action="store_true", help="print the runs (local) or the runs and submitit parameters (slurm)"
    )
    sweep.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a config override for every run, after the spec's own set (repeatable)",
    )
    sweep.add_argument("--seeds", type=int, help="seeds 0..N-1 instead of the spec's")
    sweep.add_argument(
        "--retries", type=int, help="slurm launcher: resubmissions of a failed run (default: the spec's slurm.retries)"
    )
    sweep.add_argument(
        "--mark-only",
        action="store_true",
        help="mark runs finished (metrics.json complete, e.g. after Slurm); run nothing",
    )
    sweep.set_defaults(func=cmd_sweep)

    report = sub.add_parser(
        "report",
        help="per-cell statistics and paired differences of a sweep (md, json, png)",
        formatter_class=HelpFormatter,
    )
    report.add_argument("sweep_dir", help="the sweep's output_dir (holds sweep.json)")
    report.add_argument("--out", metavar="DIR", help="output folder (default: SWEEP_DIR/report)")
    report.add_argument("--reference", help="the cell to pair against (default: the spec's reference)")
    report.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples")
    report.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    report.set_defaults(func=cmd_report)


def _setup_parsers(sub) -> None:
    lst = sub.add_parser(
        "list",
        help="every plugin of each kind with its parameters, types and defaults",
        formatter_class=HelpFormatter,
    )
    lst.add_argument("kind", nargs="?", help=f"one kind only: {', '.join(KINDS)}")
    lst.set_defaults(func=cmd_list)

    init = sub.add_parser(
        "init",
        help="write a commented starter config, a sweep spec and example data (never replaces a file)",
        formatter_class=HelpFormatter,
    )
    init.add_argument("dir", nargs="?", default=".", metavar="DIR", help="folder to write into (default: .)")
    init.set_defaults(func=cmd_init)

    flower = sub.add_parser("flower", help="Flower deployment across hosts", formatter_class=HelpFormatter)
    flower_sub = flower.add_subparsers(dest="flower_command", required=True, metavar="FLOWER_COMMAND")
    plan = flower_sub.add_parser(
        "plan",
        help="one folder per host (SuperLink, each SuperNode) with its credentials and start scripts",
        formatter_class=HelpFormatter,
    )
    plan.add_argument("--config", "-c", required=True, help="the experiment YAML")
    plan.add_argument("--out", required=True, help="folder for the per-host folders (replaced)")
    plan.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (repeatable)")
    plan.add_argument("--name", action="append", help="another name or address of the SuperLink (repeatable)")
    plan.add_argument("--python", default="python3", help="interpreter with fedranklite on the SuperNode hosts")
    plan.set_defaults(func=cmd_flower_plan)


def build_parser() -> argparse.ArgumentParser:
    from fedranklite import __version__

    parser = argparse.ArgumentParser(
        prog="fedranklite", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fedranklite {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _setup_parsers(sub)
    _run_parser(sub)
    _profile_parser(sub)
    _result_parsers(sub)
    _study_parsers(sub)
    return parser
