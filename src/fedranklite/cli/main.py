"""Command line: `fedranklite COMMAND ...` (cli/parser.py lists the commands and their options).

Every command ends in an exit status and, on bad input, one line naming the option, key or file; an error
no command anticipated is one line too, with `--debug` to see the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

# the display and run helpers under the names their users import from here
from fedranklite.cli.display import (  # noqa: F401
    ClientProgress,
    RoundLines,
    describe_run,
    print_summary,
    run_with_progress,
)
from fedranklite.cli.offline import offline_defaults
from fedranklite.cli.parser import build_parser

_ClientProgress, _run_with_progress = ClientProgress, run_with_progress


def main(argv: Optional[Sequence[str]] = None) -> int:
    offline_defaults()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "quiet", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the promise is one line, never a traceback: this is the net under every command
        return unexpected(exc)


def unexpected(exc: BaseException) -> int:
    """One line for an error no command anticipated, with where it came from (the package's file and line)
    and how to see the rest."""
    import traceback

    from fedranklite.core.messages import one_line

    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "fedranklite" in Path(f.filename).parts] or frames
    where = f" (at {_package_path(ours[-1].filename)}:{ours[-1].lineno})" if ours else ""
    if isinstance(exc, MemoryError):
        what = "out of memory"
    elif isinstance(exc, OSError) and exc.filename:
        what = f"{exc.filename}: {exc.strerror or exc}"
    else:
        what = f"{type(exc).__name__}: {exc}"
    print(f"error: {one_line(what)}{where}; run with fedranklite --debug ... for the traceback", file=sys.stderr)
    return 1


def _package_path(filename: str) -> str:
    """`fedranklite/cli/commands/plot.py` for a file of the package, the bare file name otherwise."""
    parts = Path(filename).parts
    if "fedranklite" in parts:
        i = len(parts) - 1 - parts[::-1].index("fedranklite")
        return "/".join(parts[i:])
    return Path(filename).name


_unexpected = unexpected

if __name__ == "__main__":
    sys.exit(main())
